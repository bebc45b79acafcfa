//! `recoup backtest`: retry strategies side by side inside the simulated world.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::backtest::{self, Learned, Oracle, PayDayHeuristic, RandomPolicy, Strategy};
use crate::sim::World;

/// Run retry strategies on the same failed payments of a simulated world and
/// compare recovery, revenue net of costs, days to recovery, attempts,
/// messages, cancellations and rule violations, with paired-bootstrap 95 %
/// intervals and the share of the oracle's uplift each captures.
///
/// Strategies: the fixed schedules (data/strategies.toml or --schedules), a
/// pay-day heuristic, the learned policy (the registry's current model or
/// --model), the oracle (true probabilities) and a random floor.
///
/// With --history, off-policy instead: the fixed schedules, the pay-day heuristic
/// and the learned policy estimated on a logged history from its `propensity`
/// column (replay, IPS, self-normalized IPS and doubly robust for the first
/// retry; per-decision IS and sequential doubly robust for recovery), with
/// episode-bootstrap intervals, effective sample sizes and support warnings.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  recoup backtest                                   # 20,000 payers, seed 2\n  recoup backtest --payers 200000 --seed 11 --json > backtest.json\n  recoup backtest --report report/                 # HTML with plots\n  recoup backtest --schedules my-schedules.toml --model 20261123-144759-d1f5aa63"
)]
pub struct Args {
    /// Payers to simulate; each one's first failed charge is dunned by every strategy.
    #[arg(long, default_value_t = 20_000, env = "RECOUP_BACKTEST_PAYERS")]
    pub payers: u32,
    /// Seed of the world (use one other than the training data's).
    #[arg(long, default_value_t = 2, env = "RECOUP_BACKTEST_SEED")]
    pub seed: u64,
    /// Months simulated (the period in which first failures are found).
    #[arg(long, default_value_t = 12, env = "RECOUP_BACKTEST_MONTHS")]
    pub months: u32,
    /// World parameters (TOML); fields not given keep their defaults.
    #[arg(long, value_name = "TOML", env = "RECOUP_BACKTEST_WORLD")]
    pub world: Option<PathBuf>,
    /// A world from the zoo (see `recoup simulate --list-presets`); use the same one the model's history came from.
    #[arg(long, value_name = "NAME", conflicts_with = "world", env = "RECOUP_BACKTEST_PRESET")]
    pub preset: Option<String>,
    /// Fixed schedules (TOML, see data/strategies.toml); default: the four shipped ones.
    #[arg(long, value_name = "TOML", env = "RECOUP_BACKTEST_SCHEDULES")]
    pub schedules: Option<PathBuf>,
    /// Model registry: a directory or `s3://bucket/prefix`.
    #[arg(long, value_name = "DIR", default_value = "models/", env = "RECOUP_BACKTEST_MODELS")]
    pub models: PathBuf,
    /// Model version of the learned policy (default: the current one).
    #[arg(long, value_name = "VERSION", env = "RECOUP_BACKTEST_MODEL")]
    pub model: Option<String>,
    /// Channels the learned policy may message on (comma-separated: none, email, sms,
    /// push, in_app); default: all.
    #[arg(long, value_name = "LIST", value_delimiter = ',', env = "RECOUP_BACKTEST_LEARNED_CHANNELS")]
    pub learned_channels: Vec<crate::domain::Channel>,
    /// Engine settings of the learned policy (TOML), as for `recoup serve`, e.g.
    /// `channel_pessimism = 0` to value channel lifts as estimated.
    #[arg(long, value_name = "TOML", env = "RECOUP_BACKTEST_ENGINE")]
    pub engine: Option<PathBuf>,
    /// Also report per segment (comma-separated; default with --json: all of them).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_enum, env = "RECOUP_BACKTEST_BY")]
    pub by: Vec<backtest::SegmentBy>,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 500, env = "RECOUP_BACKTEST_RESAMPLES")]
    pub resamples: usize,
    /// Also write an HTML report with plots (recovery curves, by decline class, by
    /// pay day) to DIR/index.html (segments: all of them unless --by says).
    #[arg(long, value_name = "DIR", env = "RECOUP_BACKTEST_REPORT")]
    pub report: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long, env = "RECOUP_BACKTEST_JSON")]
    pub json: bool,
    /// Off-policy instead: estimate the strategies on this logged history (Parquet/CSV
    /// file or directory, or `s3://bucket/prefix`; contract v1, with `propensity`), not in
    /// the simulated world.
    #[arg(long, value_name = "PATH", env = "RECOUP_BACKTEST_HISTORY")]
    pub history: Option<PathBuf>,
    /// One job of a sharded backtest (#25; a Kubernetes Indexed Job: `--shard
    /// $(JOB_COMPLETION_INDEX)/N`): only the payers of shard K of N (the stable hash of
    /// their customer id, `cus_` + 8 digits, as `train --shard`), every strategy, written to
    /// --out DIR as part-KKKKK-of-NNNNN.json. The merge step prints the backtest.
    #[arg(long, value_name = "K/N", value_parser = super::train::shard, requires = "out", conflicts_with_all = ["history", "merge", "report", "json"], env = "RECOUP_BACKTEST_SHARD")]
    pub shard: Option<(u64, u64)>,
    /// With --shard: the directory the part goes to.
    #[arg(long, value_name = "DIR", requires = "shard", env = "RECOUP_BACKTEST_OUT")]
    pub out: Option<PathBuf>,
    /// The merge step of a sharded backtest: read every part in DIR (all N, run with the
    /// same world, payers, seed, months, schedules and model as this command's) and print,
    /// report or write JSON exactly as one process over all the payers would.
    #[arg(long, value_name = "DIR", conflicts_with = "history", env = "RECOUP_BACKTEST_MERGE")]
    pub merge: Option<PathBuf>,
    /// With --history: only each payer's first failed payment.
    #[arg(long, requires = "history", env = "RECOUP_BACKTEST_FIRST_PER_PAYER")]
    pub first_per_payer: bool,
}

/// Run `recoup backtest`.
pub fn run(a: &Args, quiet: bool) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.payers > 0, "--payers must be at least 1");
    anyhow::ensure!(a.resamples >= 50, "--resamples must be at least 50");
    let started = Instant::now();
    let say = |m: &str| {
        if !quiet {
            eprintln!("[{:>6.1}s] {m}", started.elapsed().as_secs_f64());
        }
    };
    let cfg = crate::cli::simulate::world_config(a.world.as_deref(), a.preset.as_deref())?;
    let world = World::new(cfg, a.seed, a.months);
    let schedules = match &a.schedules {
        Some(p) => backtest::parse_schedules(&std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("schedules {}", p.display()))?,
        None => backtest::parse_schedules(backtest::DEFAULT_SCHEDULES)?,
    };
    let store = crate::model_store::ModelStore::open(&a.models)?;
    let (version, model) = match &a.model {
        Some(v) => (v.clone(), store.load_version(v)?),
        None => store.load_current()?,
    };
    let engine = crate::cli::serve::engine_config(a.engine.as_ref())?;
    let learned = Learned { model, version, cfg: engine, channels: a.learned_channels.clone() };
    if let Some(path) = &a.history {
        crate::cli::mirror_history(path, &say)?;
        return off_policy(a, path, &schedules, &learned, &say);
    }
    let mut strategies: Vec<&dyn Strategy> = schedules.iter().map(|s| s as &dyn Strategy).collect();
    let fixed: Vec<usize> = (0..schedules.len()).collect();
    strategies.extend([&PayDayHeuristic as &dyn Strategy, &learned, &Oracle, &RandomPolicy]);
    let oracle = strategies.len() - 2;
    let names: Vec<String> = strategies.iter().map(|s| s.name()).collect();

    if let Some((k, n)) = a.shard {
        let ids: Vec<u32> = (0..a.payers).filter(|&id| crate::history::shard_of(&format!("cus_{id:08}"), n) == k).collect();
        let cases = backtest::cases_of(&world, &ids);
        say(&format!("shard {k} of {n}: {} of {} payers, {} with a failed charge", ids.len(), a.payers, cases.len()));
        let out = backtest::run_all(&world, &cases, &strategies, &|_| {});
        let dir = a.out.as_deref().context("--shard needs --out DIR")?;
        let part = parts::Part::new(a, (k, n), &learned.version, &names, &cases, &out);
        let path = part.write(dir)?;
        println!("shard {k} of {n}: {} payments × {} strategies written to {}", cases.len(), names.len(), path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let cases = backtest::cases(&world, 0..a.payers);
    say(&format!(
        "{} payers, {} with a failed charge in {} months (seed {}); {} strategies",
        a.payers,
        cases.len(),
        a.months,
        a.seed,
        strategies.len()
    ));
    anyhow::ensure!(!cases.is_empty(), "no failed charge among {} payers: simulate more payers", a.payers);
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(cases.len() as u64) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} payments {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let out = match &a.merge {
        Some(dir) => {
            bar.finish_and_clear();
            let out = parts::merge(dir, a, &learned.version, &names, &cases)?;
            say(&format!("merged the shards' parts in {}", dir.display()));
            out
        }
        None => {
            let out = backtest::run_all(&world, &cases, &strategies, &|i| bar.set_position(i as u64));
            bar.finish_and_clear();
            say("dunned every payment with every strategy");
            out
        }
    };
    let lineup = backtest::Lineup { names, fixed, oracle: Some(oracle) };
    let summaries = backtest::summarize(&lineup, &out, a.resamples, a.seed);
    let by: Vec<backtest::SegmentBy> =
        if a.by.is_empty() && (a.json || a.report.is_some()) { backtest::SegmentBy::ALL.to_vec() } else { a.by.clone() };
    let segments: Vec<backtest::Segment> =
        by.iter().flat_map(|b| backtest::summarize_segments(*b, &cases, &lineup, &out, a.resamples.min(200), a.seed)).collect();
    say("bootstrap done");
    if let Some(dir) = &a.report {
        let title = format!("recoup backtest: {} failed payments, world seed {}, learned = model {}", cases.len(), a.seed, learned.version);
        let report = crate::report::Report {
            title,
            lineup: &lineup,
            cases: &cases,
            out: &out,
            summaries: &summaries,
            segments: &segments,
            window_days: world.cfg.dunning_window_days,
        };
        let path = crate::report::write(dir, &report)?;
        say(&format!("report written to {}", path.display()));
    }

    if a.json {
        let doc = serde_json::json!({
            "world_seed": a.seed,
            "months": a.months,
            "payers": a.payers,
            "payments": cases.len(),
            "resamples": a.resamples,
            "money": "minor units of each payment's currency, summed across currencies",
            "strategies": summaries,
            "segments": segments,
            "learned_chosen_retry_calibration": backtest::chosen_calibration(&out[oracle - 1]),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_summary(a, cases.len(), &learned.version, &lineup, &out[oracle - 1], &summaries, &segments);
    Ok(ExitCode::SUCCESS)
}

/// The backtest as a table: every strategy's recovery, net, timing and oracle share, the
/// learned policy's calibration where it acted, and the `--by` segments.
fn print_summary(
    a: &Args,
    payments: usize,
    version: &str,
    lineup: &backtest::Lineup,
    learned_out: &[backtest::Outcome1],
    summaries: &[backtest::Summary],
    segments: &[backtest::Segment],
) {
    let oracle = lineup.oracle.unwrap_or(0);
    println!(
        "{} failed payments (first failure of each payer), world seed {}; learned = model {}; 95 % paired-bootstrap intervals ({} resamples)",
        payments,
        a.seed,
        version,
        a.resamples
    );
    println!("money: minor units per payment, mixed currencies; net = recovered − attempt, message and penalty costs\n");
    println!(
        "{:<26} {:>21} {:>27} {:>8} {:>6} {:>6} {:>11} {:>5} {:>17}",
        "strategy", "recovered", "net per payment", "days p50", "tries", "msgs", "cancelled", "viol", "oracle uplift"
    );
    for s in summaries {
        let pct = |e: &backtest::Estimate| format!("{:.1} % [{:.1}, {:.1}]", 100.0 * e.value, 100.0 * e.lo, 100.0 * e.hi);
        let share = s
            .oracle_uplift_share
            .as_ref()
            .map_or("–".into(), |e| format!("{:.0} % [{:.0}, {:.0}]", 100.0 * e.value, 100.0 * e.lo, 100.0 * e.hi));
        println!(
            "{:<26} {:>21} {:>27} {:>8} {:>6.2} {:>6.2} {:>11} {:>5} {:>17}",
            s.strategy.split(" (").next().unwrap_or_default(),
            pct(&s.recovery_rate),
            format!("{:.1} [{:.1}, {:.1}]", s.net_per_payment.value + 0.0, s.net_per_payment.lo + 0.0, s.net_per_payment.hi + 0.0),
            s.median_days_to_recovery.map_or("–".into(), |d| format!("{d:.1}")),
            s.attempts_per_payment,
            s.messages_per_payment,
            format!("{:.1} %", 100.0 * s.cancellation_rate.value),
            s.rule_violations,
            share,
        );
    }
    let calibration = backtest::chosen_calibration(learned_out);
    if !calibration.is_empty() {
        println!(
            "\nlearned: calibration of the retries it chose (predicted P(success) against what happened, ECE over 10 bins; \
             and against the world's own P, which has none of the outcomes' noise)"
        );
        for c in &calibration {
            println!(
                "  {:<12} {:>7} retries  predicted {:.3}  realised {:.3}  ECE {:.3}  world's P {:.3}  ECE against it {:.3}",
                c.segment, c.retries, c.mean_predicted, c.realised, c.ece, c.truth, c.ece_truth
            );
        }
    }
    if !a.by.is_empty() {
        println!("\nper segment: best fixed schedule | learned | oracle — recovered / net per payment [95 %]");
    }
    for seg in segments.iter().filter(|s| a.by.contains(&s.by)) {
        let best_fixed = lineup
            .fixed
            .iter()
            .copied()
            .max_by(|x, y| seg.strategies[*x].net_per_payment.value.total_cmp(&seg.strategies[*y].net_per_payment.value))
            .unwrap_or(0);
        let show = |i: usize| {
            let s = &seg.strategies[i];
            format!(
                "{} {:.1} % / {:.1} [{:.1}, {:.1}]",
                s.strategy.split(" (").next().unwrap_or_default(),
                100.0 * s.recovery_rate.value,
                s.net_per_payment.value + 0.0,
                s.net_per_payment.lo + 0.0,
                s.net_per_payment.hi + 0.0
            )
        };
        println!(
            "{:<13} {:<12} n={:<7} {} | {} | {}",
            seg.by.as_str(),
            seg.value,
            seg.payments,
            show(best_fixed),
            show(oracle - 1),
            show(oracle)
        );
    }
}

/// `recoup backtest --history`: off-policy estimates on a logged history.
fn off_policy(
    a: &Args,
    path: &std::path::Path,
    schedules: &[backtest::Schedule],
    learned: &Learned,
    say: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<ExitCode> {
    use crate::offpolicy::{self, LoggedStrategy};
    let h = crate::history::load(path, &crate::history::LoadOptions::default())
        .with_context(|| format!("loading history {}", path.display()))?;
    let logged = h.attempts.iter().filter(|x| x.attempt_number > 0).count();
    let with_propensity = h.attempts.iter().filter(|x| x.attempt_number > 0 && x.propensity.is_some()).count();
    anyhow::ensure!(with_propensity > 0, "{}: no retry has a `propensity`: off-policy estimates need the logging policy's propensities (history contract v1, optional column)", path.display());
    say(&format!("loaded {} attempts; {with_propensity} of {logged} retries carry a propensity", h.attempts.len()));
    let mut strategies: Vec<&dyn LoggedStrategy> = schedules.iter().map(|s| s as &dyn LoggedStrategy).collect();
    strategies.extend([&PayDayHeuristic as &dyn LoggedStrategy, learned]);
    let opts =
        offpolicy::Options { first_per_payer: a.first_per_payer, resamples: a.resamples, seed: a.seed, ..offpolicy::Options::default() };
    let (coverage, est) =
        offpolicy::estimate(&h, &learned.model, &strategies, &opts, &|i| say(&format!("strategy {}/{}", i + 1, strategies.len())));
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "history": path, "coverage": coverage, "strategies": est }))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "off-policy on {}: {} failed payments ({} needs-update payments left out: the log retries them only after an update; {} without propensities); 95 % episode-bootstrap intervals",
        path.display(),
        coverage.episodes,
        coverage.needs_update_left_out,
        coverage.without_propensity
    );
    println!(
        "\n{:<26} {:>8} {:>7} {:>21} {:>21} {:>21} {:>21}",
        "strategy", "matched", "ESS", "first retry: SNIPS", "first retry: DR", "recovery: PDIS", "recovery: seq. DR"
    );
    let pct = |e: &backtest::Estimate| {
        if e.value.is_finite() {
            format!("{:.1} % [{:.1}, {:.1}]", 100.0 * e.value, 100.0 * e.lo, 100.0 * e.hi)
        } else {
            "–".into()
        }
    };
    for e in &est {
        println!(
            "{:<26} {:>8} {:>7.0} {:>21} {:>21} {:>21} {:>21}",
            e.strategy,
            e.matched_first,
            e.ess_first,
            pct(&e.first_retry_snips),
            pct(&e.first_retry_dr),
            pct(&e.recovery_pdis),
            pct(&e.recovery_sdr)
        );
    }
    for e in est.iter().filter(|e| e.warning.is_some()) {
        println!("warning: {}: {}", e.strategy, e.warning.as_deref().unwrap_or_default());
    }
    println!("\nreplay and plain IPS are in --json. After the log's last retry nothing is observed: strategies that dunn longer than the log did are estimated low.");
    Ok(ExitCode::SUCCESS)
}

/// A sharded backtest's parts: every strategy's outcome on the payments of one shard's
/// payers, with what the run was, so the merge refuses parts of another run.
mod parts {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use anyhow::Context;
    use serde::{Deserialize, Serialize};

    use crate::backtest::{Case, Outcome1, Prediction, PREDICTIONS_KEPT};

    /// The part file format this build writes and reads.
    const FORMAT: &str = "recoup-backtest-part/v3";

    /// What a part was run with; every part of one merge must agree, and with the merge's own arguments.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Run {
        format: String,
        shards: u64,
        payers: u32,
        seed: u64,
        months: u32,
        world: Option<String>,
        preset: Option<String>,
        schedules: Option<String>,
        engine: Option<String>,
        learned_channels: Vec<String>,
        model: String,
        strategies: Vec<String>,
    }

    impl Run {
        fn of(a: &super::Args, shards: u64, model: &str, strategies: &[String]) -> Run {
            let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
            Run {
                format: FORMAT.into(),
                shards,
                payers: a.payers,
                seed: a.seed,
                months: a.months,
                world: path(&a.world),
                preset: a.preset.clone(),
                schedules: path(&a.schedules),
                engine: path(&a.engine),
                learned_channels: a.learned_channels.iter().map(|c| <&str>::from(*c).to_string()).collect(),
                model: model.into(),
                strategies: strategies.to_vec(),
            }
        }
    }

    /// One outcome as stored (with the predictions the calibration table reads).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Stored {
        recovered: bool,
        first_retry_success: bool,
        revenue: f64,
        days_to_recovery: Option<f64>,
        attempts: u32,
        messages: u32,
        cost: f64,
        cancelled: bool,
        violations: u32,
        forbidden_proposals: u32,
        /// (predicted, class, retry number, succeeded, the world's own P, hours after the attempt before).
        predictions: Vec<(f32, u8, u8, bool, f32, f32)>,
    }

    impl From<&Outcome1> for Stored {
        fn from(o: &Outcome1) -> Stored {
            Stored {
                recovered: o.recovered,
                first_retry_success: o.first_retry_success,
                revenue: o.revenue,
                days_to_recovery: o.days_to_recovery,
                attempts: o.attempts,
                messages: o.messages,
                cost: o.cost,
                cancelled: o.cancelled,
                violations: o.violations,
                forbidden_proposals: o.forbidden_proposals,
                predictions: o.predictions[..(o.predicted as usize).min(PREDICTIONS_KEPT)]
                    .iter()
                    .map(|p| (p.p, p.class, p.retry, p.succeeded, p.truth, p.spacing_h))
                    .collect(),
            }
        }
    }

    impl From<&Stored> for Outcome1 {
        fn from(s: &Stored) -> Outcome1 {
            let mut predictions = [Prediction::default(); PREDICTIONS_KEPT];
            for (slot, &(p, class, retry, succeeded, truth, spacing_h)) in predictions.iter_mut().zip(&s.predictions) {
                *slot = Prediction { p, class, retry, succeeded, truth, spacing_h };
            }
            Outcome1 {
                recovered: s.recovered,
                first_retry_success: s.first_retry_success,
                revenue: s.revenue,
                days_to_recovery: s.days_to_recovery,
                attempts: s.attempts,
                messages: s.messages,
                cost: s.cost,
                cancelled: s.cancelled,
                violations: s.violations,
                forbidden_proposals: s.forbidden_proposals,
                predictions,
                predicted: s.predictions.len().min(PREDICTIONS_KEPT) as u8,
            }
        }
    }

    /// One shard's part file.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct Part {
        run: Run,
        shard: u64,
        /// Per payment (by payer id): each strategy's outcome, in the run's strategy order.
        payments: Vec<(u32, Vec<Stored>)>,
    }

    impl Part {
        pub fn new(a: &super::Args, (k, n): (u64, u64), model: &str, strategies: &[String], cases: &[Case], out: &[Vec<Outcome1>]) -> Part {
            let payments =
                cases.iter().enumerate().map(|(c, case)| (case.payer.id, out.iter().map(|s| Stored::from(&s[c])).collect())).collect();
            Part { run: Run::of(a, n, model, strategies), shard: k, payments }
        }

        /// Write to `dir/part-KKKKK-of-NNNNN.json` (through a temporary name).
        pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(format!("part-{:05}-of-{:05}.json", self.shard, self.run.shards));
            let tmp = path.with_extension("json.partial");
            std::fs::write(&tmp, serde_json::to_vec(self)?).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("renaming {}", tmp.display()))?;
            Ok(path)
        }
    }

    /// Every part in `dir`, checked against this run, as `out[s][c]` over `cases` (all payers, in order).
    pub fn merge(dir: &Path, a: &super::Args, model: &str, strategies: &[String], cases: &[Case]) -> anyhow::Result<Vec<Vec<Outcome1>>> {
        let mut parts: Vec<Part> = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = e.with_context(|| format!("reading {}", dir.display()))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !(name.starts_with("part-") && name.ends_with(".json")) {
                continue;
            }
            let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let part: Part =
                serde_json::from_slice(&text).with_context(|| format!("{}: not a backtest part of this build", path.display()))?;
            let want = Run::of(a, part.run.shards, model, strategies);
            anyhow::ensure!(
                part.run == want,
                "{}: run with other settings than this merge (part: {:?}; this merge: {:?}): parts of different runs are mixed, or the merge's arguments differ",
                path.display(),
                part.run,
                want
            );
            parts.push(part);
        }
        let Some(n) = parts.first().map(|p| p.run.shards) else {
            anyhow::bail!("{}: no part-KKKKK-of-NNNNN.json (from `recoup backtest --shard K/N --out {}`)", dir.display(), dir.display());
        };
        let have: Vec<u64> = parts.iter().map(|p| p.shard).collect();
        if let Some(missing) = crate::history::shards_incomplete(&have, n) {
            anyhow::bail!(
                "{}: {} of {n} parts are there; missing: {missing} (their jobs have not finished, or failed)",
                dir.display(),
                parts.len()
            );
        }
        let mut by_payer: HashMap<u32, Vec<Stored>> = HashMap::new();
        for p in parts {
            by_payer.extend(p.payments);
        }
        let mut out: Vec<Vec<Outcome1>> = vec![Vec::with_capacity(cases.len()); strategies.len()];
        for c in cases {
            let stored = by_payer.get(&c.payer.id).with_context(|| format!("payer cus_{:08}'s payment is in no part", c.payer.id))?;
            anyhow::ensure!(
                stored.len() == strategies.len(),
                "payer cus_{:08}: {} outcomes for {} strategies",
                c.payer.id,
                stored.len(),
                strategies.len()
            );
            for (s, o) in stored.iter().enumerate() {
                out[s].push(Outcome1::from(o));
            }
        }
        anyhow::ensure!(
            by_payer.len() == cases.len(),
            "the parts hold {} payments, this world {}: parts of another world",
            by_payer.len(),
            cases.len()
        );
        Ok(out)
    }
}
