//! The `recoup` binary: parse flags, run, turn any error into one line and an exit code.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

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
            // The whole chain on one line: "loading history: x.csv: row 3: …".
            eprintln!("error: {}", one_line(&err));
            std::process::ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause once: typed errors often say their
/// source in their own message already ("{path}: {source}"), and anyhow's `{:#}` would
/// then repeat it.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        if !line.contains(&msg) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&msg);
        }
    }
    line
}
