//! `recoup report`: what the service's own log says about it.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;

/// Reports from the decision log `recoup serve --decision-log DIR` keeps.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ReportCommand,
}

/// `recoup report` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// The holdout experiment, measured: per arm (the model, and the control schedule of
    /// `recoup serve --holdout-share`), the payments whose dunning window has closed, their
    /// recovery rate, recovered amount and net per payment (recovered − attempt and message
    /// costs, the engine's defaults), with bootstrap 95 % intervals, and the model's arm
    /// minus each control arm. Recovery counts the outcomes reported with ReportAttempts.
    #[command(
        after_help = "Examples:\n  recoup report live decision-log/\n  recoup report live decision-log/ --as-of 2026-12-01T00:00:00Z --json"
    )]
    Live(LiveArgs),
}

/// Arguments of `recoup report live`.
#[derive(Debug, clap::Args)]
pub struct LiveArgs {
    /// The decision log directory (it holds decisions/ and outcomes/).
    #[arg(env = "RECOUP_REPORT_LOG")]
    pub log: PathBuf,
    /// Count payments whose window closed by this time (RFC 3339; default: the log's latest).
    #[arg(long, value_name = "TIME", env = "RECOUP_REPORT_AS_OF")]
    pub as_of: Option<DateTime<Utc>>,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 1000, env = "RECOUP_REPORT_RESAMPLES")]
    pub resamples: usize,
    /// Print the report as JSON.
    #[arg(long, env = "RECOUP_REPORT_JSON")]
    pub json: bool,
}

/// Run `recoup report`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        ReportCommand::Live(a) => live(a),
    }
}

fn live(a: &LiveArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((10..=100_000).contains(&a.resamples), "--resamples {}: expected 10 to 100000", a.resamples);
    let (decisions, outcomes) =
        crate::decision_log::read(&a.log).with_context(|| format!("reading the decision log {}", a.log.display()))?;
    let cfg = crate::engine::EngineConfig::default();
    let r = crate::decision_log::live_report(&decisions, &outcomes, &cfg, a.as_of, a.resamples);
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &r)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{} payments whose {}-day window closed by {} ({} still open, left out); money in minor units, mixed currencies; 95 % bootstrap intervals",
        r.closed_payments,
        r.window_days,
        r.as_of.to_rfc3339(),
        r.open_payments
    )?;
    writeln!(
        out,
        "{:<28} {:>8} {:>22} {:>28} {:>28} {:>7} {:>6}",
        "arm", "payments", "recovered", "revenue per payment", "net per payment", "tries", "msgs"
    )?;
    let e = |x: crate::backtest::Estimate, pct: bool| {
        let k = if pct { 100.0 } else { 1.0 };
        format!("{:.1}{} [{:.1}, {:.1}]", k * x.value, if pct { " %" } else { "" }, k * x.lo, k * x.hi)
    };
    for arm in &r.arms {
        writeln!(
            out,
            "{:<28} {:>8} {:>22} {:>28} {:>28} {:>7.2} {:>6.2}",
            arm.arm,
            arm.payments,
            e(arm.recovery_rate, true),
            e(arm.revenue_per_payment, false),
            e(arm.net_per_payment, false),
            arm.retries_per_payment,
            arm.messages_per_payment
        )?;
    }
    for (control, net, rate) in &r.model_minus_control {
        writeln!(out, "model − {control}: net per payment {}, recovery {}", e(*net, false), e(*rate, true))?;
    }
    if r.arms.is_empty() {
        writeln!(out, "no payment's window has closed yet: nothing to compare")?;
    }
    Ok(ExitCode::SUCCESS)
}
