//! `recoup report`: what the service's own log says about it.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;

/// Reports from the decision log `recoup serve --decision-log DIR|URL` keeps.
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
    /// Then the live model against its held-out test split: predicted and realised success of
    /// the retries it chose whose outcome was reported, per decline class, with the test split's
    /// figures from the answering version's metrics.json; and population drift of six key
    /// features of the log's payments against that version's training data (PSI: < 0.1 stable,
    /// 0.1–0.25 moderate, > 0.25 major: retrain on recent history).
    #[command(
        after_help = "Examples:\n  recoup report live decision-log/\n  recoup report live decision-log/ --as-of 2026-12-01T00:00:00Z --json\n  recoup report live decision-log/ --models /srv/recoup/models/"
    )]
    Live(LiveArgs),
}

/// Arguments of `recoup report live`.
#[derive(Debug, clap::Args)]
pub struct LiveArgs {
    /// The decision log: its directory (it holds decisions/ and outcomes/), or the
    /// postgres:// URL `recoup serve --decision-log` wrote to.
    #[arg(env = "RECOUP_REPORT_LOG", value_name = "DIR|URL")]
    pub log: String,
    /// Count payments whose window closed by this time (RFC 3339; default: the log's latest).
    #[arg(long, value_name = "TIME", env = "RECOUP_REPORT_AS_OF")]
    pub as_of: Option<DateTime<Utc>>,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 1000, env = "RECOUP_REPORT_RESAMPLES")]
    pub resamples: usize,
    /// Print the report as JSON.
    #[arg(long, env = "RECOUP_REPORT_JSON")]
    pub json: bool,
    /// Model registry holding the versions the log names (for their held-out figures and
    /// training population): a directory or `s3://bucket/prefix`.
    #[arg(long, value_name = "DIR", default_value = "models/", env = "RECOUP_REPORT_MODELS")]
    pub models: PathBuf,
}

/// The live model against its held-out split and its training population.
#[derive(Debug, serde::Serialize)]
struct Checks {
    /// The version compared against (the one that answered most payments).
    version: Option<String>,
    /// Why the held-out figures or the training population are missing, if they are.
    note: Option<String>,
    calibration: Vec<crate::decision_log::LiveCalibration>,
    drift: Vec<crate::drift::FeatureDrift>,
}

fn checks(a: &LiveArgs, decisions: &[crate::decision_log::DecisionRecord], outcomes: &[crate::decision_log::OutcomeRecord]) -> Checks {
    let (version, live) = crate::decision_log::live_population(decisions);
    let described = version.as_deref().map(|v| crate::model_store::ModelStore::open(&a.models).and_then(|s| s.describe(v)));
    let (report, note) = match described {
        Some(Ok((_, r))) => {
            let note = (r.population.payments == 0)
                .then(|| "the model's metrics.json has no training population (trained before it existed): no drift figures".to_string());
            (Some(r), note)
        }
        Some(Err(e)) => (None, Some(format!("model {}: {e}: no held-out figures or drift", version.as_deref().unwrap_or("")))),
        None => (None, Some("no decision with a request in the log".to_string())),
    };
    Checks {
        calibration: crate::decision_log::live_calibration(decisions, outcomes, report.as_ref().map(|r| r.class_calibration.as_slice())),
        drift: report.as_ref().map(|r| r.population.drift(&live)).unwrap_or_default(),
        version,
        note,
    }
}

fn print_checks(out: &mut impl Write, c: &Checks) -> std::io::Result<()> {
    let version = c.version.as_deref().unwrap_or("?");
    writeln!(out, "\nlive calibration: retries the model chose whose outcome was reported, against model {version}'s held-out test split")?;
    writeln!(
        out,
        "{:<14} {:>8} {:>10} {:>9} {:>7}   {:>9} {:>10} {:>9}",
        "class", "retries", "predicted", "realised", "ECE", "held-out", "predicted", "realised"
    )?;
    for k in &c.calibration {
        let (m, hp, hr) = k
            .held_out
            .map_or(("-".to_string(), "-".to_string(), "-".to_string()), |(m, p, r)| (m.to_string(), format!("{p:.3}"), format!("{r:.3}")));
        writeln!(
            out,
            "{:<14} {:>8} {:>10.3} {:>9.3} {:>7.3}   {:>9} {:>10} {:>9}",
            k.class, k.retries, k.predicted, k.realised, k.ece, m, hp, hr
        )?;
    }
    if c.calibration.is_empty() {
        writeln!(out, "no reported outcome of a retry the model chose yet")?;
    }
    writeln!(out, "\npopulation drift against model {version}'s training data (PSI: < 0.1 stable, 0.1–0.25 moderate, > 0.25 major)")?;
    for d in &c.drift {
        let moved: Vec<String> =
            d.largest.iter().map(|l| format!("{} {:.1} % → {:.1} %", l.level, 100.0 * l.train, 100.0 * l.live)).collect();
        writeln!(out, "{:<17} {:>6.3}  {:<15} {}", d.feature, d.psi, d.verdict, moved.join(", "))?;
    }
    if let Some(n) = &c.note {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}

/// Run `recoup report`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        ReportCommand::Live(a) => live(a),
    }
}

fn live(a: &LiveArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((10..=100_000).contains(&a.resamples), "--resamples {}: expected 10 to 100000", a.resamples);
    let (decisions, outcomes) = crate::decision_log::read_target(&crate::decision_log::LogTarget::parse(&a.log))
        .with_context(|| format!("reading the decision log {}", crate::decision_log::LogTarget::parse(&a.log).describe()))?;
    let cfg = crate::engine::EngineConfig::default();
    let r = crate::decision_log::live_report(&decisions, &outcomes, &cfg, a.as_of, a.resamples);
    let checks = checks(a, &decisions, &outcomes);
    let mut out = std::io::stdout().lock();
    if a.json {
        #[derive(serde::Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            live: &'a crate::decision_log::LiveReport,
            #[serde(flatten)]
            checks: &'a Checks,
        }
        serde_json::to_writer_pretty(&mut out, &Json { live: &r, checks: &checks })?;
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
    print_checks(&mut out, &checks)?;
    Ok(ExitCode::SUCCESS)
}
