//! `recoup history`: validate a history and summarize it.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::history::{load, summarize, LoadOptions, Summary};

/// Fewer retries after an update than this are worth a line in `history check`: where they
/// succeed about 0.9 of the time, 100 of them carry about 90 % of the replaced method's weight
/// and its prior the rest (`train::updated_prior`; training says the exact share).
const FEW_UPDATED_RETRIES: u64 = 100;

/// Inspect and validate payment-attempt history.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: HistoryCommand,
}

/// `recoup history` subcommands.
#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Load a history (Parquet file, CSV file, or a directory of Parquet/CSV files,
    /// hive partitions included), check it against contract v1 and print a summary.
    #[command(
        after_help = "Examples:\n  recoup history check data/sample/\n  recoup history check history.csv --skip-bad-rows --rejects rejects.csv\n  recoup history check exports/ --json | jq .decline_codes"
    )]
    Check(CheckArgs),
    /// Rebuild contract-v1 history from a decision log (`recoup serve --decision-log DIR|URL`):
    /// per payment, the facts and earlier attempts of its latest decision's request and the
    /// attempts reported with ReportAttempts; a retry that followed a decision (its hour
    /// and message) carries that decision's propensity, others none. The result is checked
    /// by the contract loader before this answers, so `recoup train` can read it.
    #[command(
        after_help = "Examples:\n  recoup history from-log decision-log/ --out history.parquet\n  recoup train --history history.parquet\n  recoup backtest --history history.parquet"
    )]
    FromLog(FromLogArgs),
}

/// Arguments of `recoup history from-log`.
#[derive(Debug, clap::Args)]
pub struct FromLogArgs {
    /// The decision log: its directory (it holds decisions/ and outcomes/), or the
    /// postgres:// URL `recoup serve --decision-log` wrote to.
    #[arg(env = "RECOUP_HISTORY_LOG", value_name = "DIR|URL")]
    pub log: String,
    /// Where the history goes (.parquet or .csv).
    #[arg(long, short, value_name = "FILE", env = "RECOUP_HISTORY_OUT")]
    pub out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long, env = "RECOUP_HISTORY_JSON")]
    pub json: bool,
}

/// Arguments of `recoup history check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// History file or directory, or `s3://bucket/prefix` (mirrored into the local cache).
    #[arg(env = "RECOUP_HISTORY_PATH")]
    pub path: PathBuf,
    /// Write rows that break the contract to the reject file and go on, instead of stopping at the first.
    #[arg(long, env = "RECOUP_HISTORY_SKIP_BAD_ROWS")]
    pub skip_bad_rows: bool,
    /// Where rejected rows go (CSV, with file, row, column, value and reason columns).
    #[arg(long, value_name = "FILE", default_value = "rejects.csv", env = "RECOUP_HISTORY_REJECTS")]
    pub rejects: PathBuf,
    /// Print the summary as JSON.
    #[arg(long, env = "RECOUP_HISTORY_JSON")]
    pub json: bool,
}

/// Run `recoup history`.
pub fn run(args: &Args, quiet: bool) -> anyhow::Result<ExitCode> {
    match &args.command {
        HistoryCommand::Check(a) => check(a, quiet),
        HistoryCommand::FromLog(a) => from_log(a, quiet),
    }
}

fn from_log(a: &FromLogArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let (decisions, outcomes) = crate::decision_log::read_target(&crate::decision_log::LogTarget::parse(&a.log))
        .with_context(|| format!("reading the decision log {}", crate::decision_log::LogTarget::parse(&a.log).describe()))?;
    let (mut df, report) = crate::decision_log::to_history(&decisions, &outcomes)?;
    crate::history::write_frame(&mut df, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
    let history = load(&a.out, &LoadOptions::default()).with_context(|| format!("checking {} against contract v1", a.out.display()))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else if !quiet {
        writeln!(
            out,
            "{} decisions, {} reported outcomes → {} attempts of {} payments in {}",
            report.decisions,
            report.outcomes,
            history.attempts.len(),
            report.payments,
            a.out.display()
        )?;
        writeln!(
            out,
            "retries with recoup's propensity (they followed its decision): {}; without (made otherwise): {}",
            report.retries_following_a_decision, report.retries_without_a_decision
        )?;
        if report.asks_as_messages > 0 {
            writeln!(
                out,
                "asks the platform sent, kept as the message before the next attempt (its channel): {}",
                report.asks_as_messages
            )?;
        }
        if report.update_triggered > 0 {
            writeln!(
                out,
                "retries after the payer updated the payment method, marked update_triggered (left out of the time-to-update fit): {}",
                report.update_triggered
            )?;
        }
        if report.outcomes_without_a_decision > 0 {
            writeln!(
                out,
                "left out: {} outcomes of payments recoup never decided on (no payment facts)",
                report.outcomes_without_a_decision
            )?;
        }
        if report.conflicting_reports > 0 {
            writeln!(
                out,
                "{} reports differ in time or outcome from an earlier copy of the same attempt: the latest report kept",
                report.conflicting_reports
            )?;
        }
        if let Some(why) = &report.first_inconsistency {
            writeln!(out, "left out: {} payments whose attempts contradict each other (first: {why})", report.inconsistent_payments)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(a: &CheckArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let opts = LoadOptions { skip_bad_rows: a.skip_bad_rows, reject_path: Some(a.rejects.clone()), ..LoadOptions::default() };
    let started = std::time::Instant::now();
    let history = load(&a.path, &opts).with_context(|| format!("checking history {}", a.path.display()))?;
    let elapsed = started.elapsed();
    let summary = summarize(&history);
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else if !quiet {
        print_summary(&mut out, &summary, elapsed)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn pct(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

fn print_summary(out: &mut impl Write, s: &Summary, elapsed: std::time::Duration) -> std::io::Result<()> {
    let l = &s.load;
    writeln!(out, "history: {} file(s), {} rows read in {:.2?}", l.files.len(), l.rows_read, elapsed)?;
    writeln!(out, "  accepted   {:>10}", l.rows_accepted)?;
    writeln!(
        out,
        "  rejected   {:>10}{}",
        l.rows_rejected,
        match &l.reject_file {
            Some(p) => format!("  → {}", p.display()),
            None => String::new(),
        }
    )?;
    for (col, n) in &l.rejects_by_column {
        writeln!(out, "    {col:<24} {n:>8}")?;
    }
    writeln!(out, "  payments   {:>10}   customers {}", s.payments, s.customers)?;
    if let (Some(a), Some(b)) = (s.first_attempt, s.last_attempt) {
        writeln!(out, "  from       {a}\n  to         {b}")?;
    }
    if l.pages_verified + l.pages_without_checksum > 0 {
        writeln!(
            out,
            "  Parquet pages: {} checked against their CRC-32, {} carry no checksum (their writer stored none)",
            l.pages_verified, l.pages_without_checksum
        )?;
    }
    writeln!(
        out,
        "  failed payments {} · recovered {} ({:.1} %)",
        s.failed_payments,
        s.recovered_payments,
        pct(s.recovered_payments, s.failed_payments)
    )?;
    writeln!(out, "outcomes:")?;
    for (k, n) in &s.outcomes {
        writeln!(out, "  {k:<32} {n:>10}  {:>5.1} %", pct(*n, s.rows))?;
    }
    writeln!(out, "payment methods:")?;
    for (k, n) in &s.payment_methods {
        writeln!(out, "  {k:<32} {n:>10}  {:>5.1} %", pct(*n, s.rows))?;
    }
    let failed: u64 = s.decline_codes.values().sum();
    writeln!(out, "decline classes (failed attempts):")?;
    for (k, n) in &s.decline_classes {
        writeln!(out, "  {k:<32} {n:>10}  {:>5.1} %", pct(*n, failed))?;
    }
    writeln!(out, "decline codes (failed attempts):")?;
    let mut codes: Vec<_> = s.decline_codes.iter().collect();
    codes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (k, n) in codes {
        writeln!(out, "  {k:<32} {n:>10}  {:>5.1} %", pct(*n, failed))?;
    }
    if l.derived_decline_codes > 0 {
        writeln!(out, "  ({} decline codes derived from network/advice codes)", l.derived_decline_codes)?;
    }
    if !l.unknown_codes.is_empty() {
        writeln!(out, "unknown codes mapped to `other`:")?;
        for (k, n) in &l.unknown_codes {
            writeln!(out, "  {k:<32} {n:>10}")?;
        }
    }
    if !l.naive_timestamp_files.is_empty() {
        writeln!(
            out,
            "attempted_at without a time zone in {} file(s) (e.g. {}), read as UTC: if they hold local times, every hour is off",
            l.naive_timestamp_files.len(),
            l.naive_timestamp_files[0].display()
        )?;
    }
    let needs_update = s.decline_classes.get("needs_update").is_some_and(|&n| n > 0);
    if needs_update && s.updated_retries == 0 {
        writeln!(
            out,
            "no retry follows an update (no payment_method_updated flags, no change of payment_method_id): training cannot learn \
             what a replaced payment method does, and scores a needs-update payment's retry on one at a prior (README: what recoup \
             assumes about your history)"
        )?;
    } else if needs_update && s.updated_retries < FEW_UPDATED_RETRIES {
        writeln!(
            out,
            "only {} retries follow an update: what a replaced payment method does is a prior that training updates with \
             them (it says how far they moved it; README: what recoup assumes about your history)",
            s.updated_retries
        )?;
    }
    if l.updates_from_method_id > 0 {
        writeln!(
            out,
            "{} retries charged to another payment_method_id than the attempt before them read as payment_method_updated",
            l.updates_from_method_id
        )?;
    }
    if l.defaulted_timezones > 0 {
        writeln!(out, "time zone derived from country for {} rows", l.defaulted_timezones)?;
    }
    if let Some(warning) = l.without_original_warning(s.payments) {
        writeln!(out, "{warning}")?;
    }
    if !l.unknown_columns.is_empty() {
        writeln!(out, "ignored columns not in the contract: {}", l.unknown_columns.join(", "))?;
    }
    Ok(())
}
