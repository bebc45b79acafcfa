//! `recoup train`: fit the success model on a history and write a model version.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::history::LoadOptions;
use crate::pipeline::{to_registry, Job};
use crate::train::{Family, TrainParams};
use crate::trees::BoostConfig;

/// Train the retry-success model on history, evaluate it on the latest months and
/// write `OUT/<version>/` (model, feature schema, metrics, data fingerprint, model card).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  recoup train                                   # data/sample/ → models/\n  recoup train --history exports/ --out models/ --promote\n  recoup train --learning-curve                  # test log loss against the share of payers\n  recoup train --sample-payers 0.1 --out trial/  # a tenth of the payers\n  recoup train --features-only --shard 3/8 --features feat/   # sharded: one of 8 jobs\n  recoup train --features feat/ --out models/    # sharded: the fit step, after all 8\n  recoup train --name 2026-11-churn-fix\n  recoup train --history s3://billing/attempts/ --out s3://billing/recoup-models --promote   # AWS_* env\n  recoup models list"
)]
pub struct Args {
    /// History to learn from (Parquet/CSV file or directory, contract v1), or
    /// `s3://bucket/prefix`: its .parquet/.pq/.csv objects are mirrored into the local cache
    /// (RECOUP_CACHE_DIR, else ~/.cache/recoup) and read from there.
    #[arg(long, value_name = "PATH", default_value = "data/sample/", env = "RECOUP_TRAIN_HISTORY")]
    pub history: PathBuf,
    /// Model registry: a directory (the new version goes into a subdirectory) or
    /// `s3://bucket/prefix` (uploaded there, `manifest.json` last; CURRENT is one object).
    #[arg(long, value_name = "DIR", default_value = "models/", env = "RECOUP_TRAIN_OUT")]
    pub out: PathBuf,
    /// Also make the new version the current one.
    #[arg(long, env = "RECOUP_TRAIN_PROMOTE")]
    pub promote: bool,
    /// Name of the new version (1–64 of A–Z a–z 0–9 . _ -); default: creation time + model digest.
    #[arg(long, value_name = "NAME", env = "RECOUP_TRAIN_NAME")]
    pub name: Option<String>,
    /// Share of the latest retries held out for the test metrics.
    #[arg(long, default_value_t = 0.25, value_parser = fraction, env = "RECOUP_TRAIN_TEST_FRACTION")]
    pub test_fraction: f64,
    /// Worker threads (default: all cores).
    #[arg(long, env = "RECOUP_TRAIN_THREADS")]
    pub threads: Option<usize>,
    /// Model family: `logistic` (one-hot columns and crosses; the default), `trees`
    /// (boosted trees over the payment and the retry time, with the channel's logistic
    /// terms on top), or `auto`: trees from 100,000 fit examples up. Trees predict held-out
    /// retries better but score a decision 2–3× slower, and where the policy acts they were
    /// the less calibrated and netted less on the zoo's logs, with their bootstrap lower
    /// bound as without it (README, model families)
    #[arg(long, value_enum, default_value_t = Family::Logistic, env = "RECOUP_TRAIN_FAMILY")]
    pub family: Family,
    /// Most boosted trees (family trees; early stopping on the calibration split usually ends sooner).
    #[arg(long, value_name = "N", default_value_t = BoostConfig::default().max_trees, value_parser = max_trees, env = "RECOUP_TRAIN_MAX_TREES")]
    pub max_trees: usize,
    /// Leaves per boosted tree.
    #[arg(long, value_name = "N", default_value_t = BoostConfig::default().leaves, value_parser = leaves, env = "RECOUP_TRAIN_LEAVES")]
    pub leaves: usize,
    /// Learning rate of the boosted trees.
    #[arg(long, value_name = "RATE", default_value_t = BoostConfig::default().learning_rate, value_parser = share, env = "RECOUP_TRAIN_LEARNING_RATE")]
    pub learning_rate: f64,
    /// Also write the exact fit/calibration and test feature tables to
    /// DIR/train.parquet and DIR/test.parquet, and this run's held-out metrics and
    /// timings to DIR/recoup.json, for peer pipelines (benches/peer/).
    #[arg(long, value_name = "DIR", env = "RECOUP_TRAIN_EXPORT_FEATURES")]
    pub export_features: Option<PathBuf>,
    /// Skip rows that break the history contract instead of stopping: they are
    /// written to --rejects with the reason, and counted.
    #[arg(long, env = "RECOUP_TRAIN_SKIP_BAD_ROWS")]
    pub skip_bad_rows: bool,
    /// Where skipped rows go (CSV), with --skip-bad-rows (a --features-only job: FILE.shardK.csv).
    #[arg(long, value_name = "FILE", default_value = "rejects.csv", env = "RECOUP_TRAIN_REJECTS")]
    pub rejects: PathBuf,
    /// Train on this share of the payers only (0 < SHARE ≤ 1), chosen by a stable hash of
    /// the customer id: SHA-256("recoup-sample/v1:" + id), first 8 bytes big-endian over
    /// 2^64, below SHARE. Smaller samples are subsets of larger ones.
    #[arg(long, value_name = "SHARE", value_parser = share, env = "RECOUP_TRAIN_SAMPLE_PAYERS")]
    pub sample_payers: Option<f64>,
    /// Write no version: fit on 1/32, 1/16, 1/8, 1/4, 1/2 and all of the payers (by the same
    /// hash) and print each fit's test log loss, AUC and ECE on one common test split (the
    /// latest --test-fraction of the retries, all payers): how much history the model needs.
    #[arg(long, env = "RECOUP_TRAIN_LEARNING_CURVE")]
    pub learning_curve: bool,
    /// With --features-only: the shard of the payers to read, K of N (0 ≤ K < N), by the
    /// payer's stable hash (SHA-256 as for --sample-payers; shard K holds the payers whose
    /// place lies in [K/N, (K+1)/N)). In a Kubernetes Indexed Job: `--shard
    /// $(JOB_COMPLETION_INDEX)/N`.
    #[arg(long, value_name = "K/N", value_parser = shard, env = "RECOUP_TRAIN_SHARD")]
    pub shard: Option<(u64, u64)>,
    /// Sharded training, first step: read the --shard's payers of --history and write
    /// what training estimates from (examples, retries, counts) to --features DIR, with
    /// about 1/N of the memory of a whole train. Fits nothing, writes no version.
    #[arg(long, requires_all = ["shard", "features"], env = "RECOUP_TRAIN_FEATURES_ONLY")]
    pub features_only: bool,
    /// Sharded training's directory of shards. With --features-only a shard is written
    /// there; without, the fit step reads every shard there (all N must be finished, from
    /// one history and one build) instead of --history, and writes the version to --out:
    /// the same model a single train on the whole history writes.
    #[arg(long, value_name = "DIR", env = "RECOUP_TRAIN_FEATURES")]
    pub features: Option<PathBuf>,
}

/// Parse `K/N` (0 ≤ K < N ≤ 99,999).
pub(crate) fn shard(s: &str) -> Result<(u64, u64), String> {
    let (k, n) = s.split_once('/').ok_or_else(|| format!("expected K/N (e.g. 3/8), got {s:?}"))?;
    let k: u64 = k.trim().parse().map_err(|_| format!("shard index is not a whole number: {k:?}"))?;
    let n: u64 = n.trim().parse().map_err(|_| format!("shard count is not a whole number: {n:?}"))?;
    if !(1..=99_999).contains(&n) {
        return Err(format!("shard count must be in 1..=99999, got {n}"));
    }
    if k >= n {
        return Err(format!("shard index must be below the count (0 ≤ K < N), got {k}/{n}"));
    }
    Ok((k, n))
}

/// A number in (0, 1] (a share of the payers, a learning rate).
fn share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err("must be in (0, 1]".into())
    }
}

/// `--learning-curve`: load, fit per share, print the curve.
fn learning_curve(a: &Args, cfg: &crate::train::TrainConfig, say: &dyn Fn(&str)) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let load = LoadOptions { skip_bad_rows: a.skip_bad_rows, reject_path: Some(a.rejects.clone()), ..LoadOptions::default() };
    let history = crate::history::load(&a.history, &load).with_context(|| format!("loading {}", a.history.display()))?;
    say(&format!("loaded {} attempts from {}", history.attempts.len(), a.history.display()));
    let (points, notes) = crate::learning_curve::curve(&history, cfg, &crate::learning_curve::SHARES, &mut |m| say(m))?;
    println!("learning curve: test split = the latest {:.0} % of the retries, all payers; money-free metrics", 100.0 * a.test_fraction);
    println!("{:>8} {:>14} {:>9} {:>9} {:>7} {:>7} {:>8}", "payers", "train retries", "test", "log loss", "AUC", "ECE", "fit s");
    for p in &points {
        println!(
            "{:>7.2}% {:>14} {:>9} {:>9.4} {:>7.4} {:>7.4} {:>8.1}",
            100.0 * p.share,
            p.train_examples,
            p.test_examples,
            p.log_loss,
            p.auc,
            p.ece,
            p.fit_seconds
        );
    }
    for n in &notes {
        println!("left out: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

fn max_trees(s: &str) -> Result<usize, String> {
    let v: usize = s.parse().map_err(|_| format!("not a whole number: {s}"))?;
    if v >= 1 {
        Ok(v)
    } else {
        Err("must be at least 1".into())
    }
}

fn leaves(s: &str) -> Result<usize, String> {
    let v: usize = s.parse().map_err(|_| format!("not a whole number: {s}"))?;
    if (2..=4096).contains(&v) {
        Ok(v)
    } else {
        Err("must be in 2..=4096".into())
    }
}

fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    if v > 0.0 && v < 0.9 {
        Ok(v)
    } else {
        Err("must be in (0, 0.9)".into())
    }
}

/// Run `recoup train`.
pub fn run(a: &Args, quiet: bool) -> anyhow::Result<ExitCode> {
    if let Some(n) = a.threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        // Fails only if the pool was already built (e.g. in a test process): then it is reused.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    let started = Instant::now();
    let say = |msg: &str| {
        if !quiet {
            eprintln!("[{:>6.1}s] {msg}", started.elapsed().as_secs_f64());
        }
    };
    let cfg = TrainParams {
        test_fraction: a.test_fraction,
        family: a.family,
        boost: BoostConfig { max_trees: a.max_trees, leaves: a.leaves, learning_rate: a.learning_rate, ..BoostConfig::default() },
        ..TrainParams::default()
    }
    .check()?;
    if a.shard.is_some() && !a.features_only {
        anyhow::bail!("--shard goes with --features-only (sharded training's first step); the fit step reads every shard of --features");
    }
    if a.features.is_some() && (a.sample_payers.is_some() || a.learning_curve || a.export_features.is_some()) {
        anyhow::bail!("sharded training (--features) takes none of --sample-payers, --learning-curve, --export-features");
    }
    if a.features.is_none() || a.features_only {
        crate::cli::mirror_history(&a.history, &say)?;
    }
    if a.learning_curve {
        anyhow::ensure!(
            a.sample_payers.is_none() && !a.promote && a.name.is_none(),
            "--learning-curve writes no version: it takes none of --sample-payers, --promote, --name"
        );
        return learning_curve(a, &cfg, &say);
    }
    let job = Job {
        history: a.history.clone(),
        out: a.out.clone(),
        version: a.name.clone(),
        promote: a.promote,
        cfg,
        export_features: a.export_features.clone(),
        load: LoadOptions { skip_bad_rows: a.skip_bad_rows, reject_path: Some(a.rejects.clone()), ..LoadOptions::default() },
        sample_payers: a.sample_payers,
    };
    let done = match (&a.features, a.shard) {
        (Some(dir), Some(shard)) if a.features_only => {
            let written = crate::pipeline::features_only(&job, shard, dir, &mut |m| say(m))?;
            println!("shard {} of {} written to {}", shard.0, shard.1, written.display());
            say("done");
            return Ok(ExitCode::SUCCESS);
        }
        (Some(dir), _) => crate::pipeline::from_shards(&job, dir, &mut |m| say(m))?,
        (None, _) => to_registry(&job, &mut |m| say(m))?,
    };
    let r = &done.report;
    println!("model {} written to {}{}", done.version, done.dir.display(), if a.promote { " and promoted" } else { "" });
    println!("test split: {} retries from {}", r.test_examples, r.test_from.map(|t| t.to_rfc3339()).unwrap_or_default());
    println!("{:<44} {:>9} {:>7} {:>7} {:>7}", "", "log loss", "AUC", "Brier", "ECE");
    for (name, m) in [
        ("model", &r.model),
        ("baseline: rate per decline code", &r.baseline_code),
        ("baseline: code × days since pay day", &r.baseline_code_payday),
    ] {
        println!("{name:<44} {:>9.4} {:>7.4} {:>7.4} {:>7.4}", m.log_loss, m.auc, m.brier, m.ece);
    }
    if let Some(small) = r.small_history() {
        tracing::warn!("{small}");
    }
    say("done");
    Ok(ExitCode::SUCCESS)
}
