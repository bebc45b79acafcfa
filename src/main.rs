//! The `recoup` binary: parse flags, run, turn any error into one line and an exit code.

use clap::Parser;

/// mimalloc instead of glibc malloc: loading and simulating allocate and free
/// large column buffers slice after slice, and glibc hands those pages back to the
/// kernel each time (measured: a third of the load time in page faults).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = recoup::cli::Cli::parse();
    match recoup::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: "loading x.csv: row 3: …".
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
