//! The `recoup` binary: parse flags, run, turn any error into one line and an exit code.

use clap::Parser;

/// mimalloc instead of glibc malloc: loading and simulating allocate and free
/// large column buffers slice after slice, and glibc hands those pages back to the
/// kernel each time (measured: a third of the load time in page faults).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = recoup::cli::Cli::parse();
    // `recoup models list | head`: a closed pipe ends the program quietly, as it
    // does any Unix filter, instead of a panic in println!. Not for the server,
    // whose sockets must see EPIPE as an error, not a signal.
    if !matches!(cli.command, recoup::cli::Command::Serve(_)) {
        sigpipe::reset();
    }
    match recoup::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: "loading x.csv: row 3: …".
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
