//! The `recoup` command line: one binary, one file per subcommand, each with a
//! `run` function. Edge side: parses flags, sets up logging, calls the library
//! and prints for humans (`--json` for machines).
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod backtest;
pub mod decide;
pub mod export;
pub mod history;
pub mod models;
pub mod report;
pub mod serve;
pub mod simulate;
pub mod token;
pub mod train;

/// recoup: decide when to retry a failed recurring payment and how to tell the payer,
/// learned from your own payment history. Open, transparent, measurable.
#[derive(Debug, Parser)]
#[command(name = "recoup", version, propagate_version = true, arg_required_else_help = true)]
#[command(after_help = "Examples:\n  recoup history check data/sample/\n  recoup history check exports/ --skip-bad-rows --rejects bad.csv")]
pub struct Cli {
    /// Print only errors.
    #[arg(short, long, global = true, env = "RECOUP_QUIET")]
    pub quiet: bool,
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log lines as human text or as JSON objects (one per line, for log pipelines).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "RECOUP_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and validate payment-attempt history (contract v1).
    History(history::Args),
    /// Generate payment history from a simulated world with known ground truth.
    Simulate(simulate::Args),
    /// Train the retry-success model on history and write a model version.
    Train(train::Args),
    /// Serve retry decisions over gRPC (health, reflection, hot model reload).
    Serve(serve::Args),
    /// Decide the next retry of one failed payment from a JSON request.
    Decide(decide::Args),
    /// Backtest retry strategies side by side in the simulated world.
    Backtest(backtest::Args),
    /// Export predicted recovery of every open payment, or per segment (finance's forecast).
    Export(export::Args),
    /// List, show and promote model versions.
    Models(models::Args),
    /// Make a bearer token (with scopes) for `recoup serve --tokens`.
    Token(token::Args),
    /// Reports from the service's decision log: the holdout experiment, measured.
    Report(report::Args),
}

/// Format of a table the CLI writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Apache Parquet (preferred by the contract).
    Parquet,
    /// CSV with a header row, RFC 3339 timestamps.
    Csv,
}

impl Format {
    /// `given`, or the format `path`'s extension names (.parquet, .pq, .csv).
    pub fn of(path: &std::path::Path, given: Option<Format>) -> anyhow::Result<Format> {
        if let Some(f) = given {
            return Ok(f);
        }
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Ok(Format::Csv),
            Some("parquet" | "pq") => Ok(Format::Parquet),
            _ => anyhow::bail!("cannot tell the format of {}: use a .parquet or .csv name, or --format", path.display()),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn init_logging(cli: &Cli) {
    // A service logs its lifecycle (serving, reloads, refused models) by default.
    let service = matches!(cli.command, Command::Serve(_));
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) if service => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(ansi);
    let _ = match cli.log_format {
        LogFormat::Text => fmt.try_init(),
        LogFormat::Json => fmt.json().flatten_event(true).try_init(),
    };
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging(&cli);
    match &cli.command {
        Command::History(args) => history::run(args, cli.quiet),
        Command::Simulate(args) => simulate::run(args, cli.quiet),
        Command::Train(args) => train::run(args, cli.quiet),
        Command::Models(args) => models::run(args, cli.quiet),
        Command::Serve(args) => serve::run(args),
        Command::Decide(args) => decide::run(args),
        Command::Backtest(args) => backtest::run(args, cli.quiet),
        Command::Export(args) => export::run(args, cli.quiet),
        Command::Token(args) => token::run(args),
        Command::Report(args) => report::run(args),
    }
}

/// For an `s3://` history: mirror it into the local cache now, saying what was
/// downloaded (the loader then finds the mirror fresh and only lists the prefix again).
pub fn mirror_history(path: &std::path::Path, say: &dyn Fn(&str)) -> anyhow::Result<()> {
    let Some(url) = crate::s3::S3Url::of_path(path) else { return Ok(()) };
    let url = url?;
    say(&format!("mirroring {url} into {}", crate::s3::cache_dir().display()));
    let m = crate::s3::mirror(&url, &crate::s3::cache_dir())?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    say(&format!(
        "{url}: {} history files, {:.1} MiB; downloaded {} ({:.1} MiB){}",
        m.objects,
        mib(m.bytes),
        m.downloaded,
        mib(m.downloaded_bytes),
        if m.removed > 0 { format!("; removed {} the bucket no longer has", m.removed) } else { String::new() }
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_definition_is_consistent() {
        // clap's own checks (unique argument names, valid defaults) for every subcommand.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
