//! The `recoup` binary: parse flags, run, turn any error into one line and an exit code.

use clap::Parser;

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
