//! The training pipeline, from a history file to a new model version in a registry:
//! load and check the history, build the examples, fit and evaluate, estimate the
//! learned quantities beside the success model (attrition, asks, support), write the
//! version with its model card, promote it if asked. What `recoup train` and
//! hyperswitch's trainer service both run.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::path::PathBuf;
use std::time::Instant;

use crate::digest::Digest;
use crate::history::{load, LoadOptions};
use crate::model::SuccessModel;
use crate::model_store::ModelStore;
use crate::registry::{self, Manifest};
use crate::train::{train, TrainConfig, TrainingSet};

/// Why a training run wrote no version.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The version name is not allowed, or taken.
    #[error("{0}")]
    Version(String),
    /// The history could not be loaded (the message names the file, row and field).
    #[error("loading history: {source}")]
    History { path: PathBuf, source: crate::history::LoadError },
    #[error(transparent)]
    Fit(#[from] crate::train::FitError),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// Writing or reading shards of the features ([`crate::digest`]).
    #[error(transparent)]
    Shards(#[from] crate::digest::DigestError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parquet { path: PathBuf, source: polars::prelude::PolarsError },
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |source| PipelineError::Io { path: path.to_path_buf(), source }
}

/// Open the job's registry (a directory or `s3://…`, before any long work: a wrong URL or
/// missing credentials fail now), and check the version name is allowed and not taken.
fn open_out(job: &Job) -> Result<ModelStore, PipelineError> {
    let store = ModelStore::open(&job.out)?;
    if let Some(v) = &job.version {
        registry::check_version_name(v).map_err(PipelineError::Version)?;
        if store.has(v)? {
            return Err(PipelineError::Version(format!("{}/{v} already exists; model versions are immutable", store.name().display())));
        }
    }
    Ok(store)
}

/// One training run into a registry (what `recoup train` and the trainer service do).
#[derive(Debug, Clone)]
pub struct Job {
    pub history: PathBuf,
    pub out: PathBuf,
    /// Version name; `None`: creation time + model digest.
    pub version: Option<String>,
    pub promote: bool,
    pub cfg: TrainConfig,
    pub export_features: Option<PathBuf>,
    /// How to load the history (`--skip-bad-rows`, `--rejects`).
    pub load: LoadOptions,
    /// Train on this share of the payers only ([`crate::learning_curve::sample_payers`]).
    pub sample_payers: Option<f64>,
}

/// A version written by [`to_registry`].
#[derive(Debug)]
pub struct Written {
    pub version: String,
    /// Where: the version's directory, or its `s3://` URL.
    pub dir: PathBuf,
    pub report: crate::train::TrainReport,
}

/// Load the history, fit, evaluate and write a new version (promoting it if
/// asked), reporting each step to `progress`.
pub fn to_registry(job: &Job, progress: &mut dyn FnMut(&str)) -> Result<Written, PipelineError> {
    let store = open_out(job)?;
    let started = Instant::now();
    let mut history = load(&job.history, &job.load).map_err(|source| PipelineError::History { path: job.history.clone(), source })?;
    progress(&format!("loaded {} attempts from {}", history.attempts.len(), job.history.display()));
    if let Some(share) = job.sample_payers {
        let (kept, payers) = crate::learning_curve::sample_payers(&mut history, share);
        progress(&format!(
            "sampled {kept} of {payers} payers (share {share}, stable hash of the customer id): {} attempts",
            history.attempts.len()
        ));
    }
    if history.report.rows_rejected > 0 {
        let to = job.load.reject_path.as_deref().map_or("rejects.csv".into(), |p| p.display().to_string());
        progress(&format!("skipped {} rows that break the contract (written to {to})", history.report.rows_rejected));
    }
    let fingerprint = registry::fingerprint(&history.files)?;
    let source = Source {
        files: history.files.iter().map(|f| crate::s3::source_name(f)).collect(),
        fingerprint,
        rows: history.attempts.len() as u64,
    };
    let digest = Digest::of_history(&history);
    // The calibration window's logged retries, as serving would have seen them, for the
    // refit where the policy acts (crate::policy_calibration).
    let replays = replay_windows(&digest.set, &job.cfg).map(|windows| window_replays(&history, windows));
    // The fit needs only the digest and those: the history's memory goes back before it.
    drop(history);
    fit_and_write(job, &store, digest, Ok(replays.unwrap_or_default()), source, started, progress)
}

/// A time window of retries and the shards of payers its replay cuts them into.
type Window = (std::ops::Range<chrono::DateTime<chrono::Utc>>, u64);

/// The calibration window and the test window.
type Windows = (Window, Window);

/// The time windows of the calibration and the test split's retries (the examples are in
/// time order), and the shards of payers the replay cuts them into
/// ([`crate::policy_calibration::replay_shards`]).
fn replay_windows(set: &TrainingSet, cfg: &TrainConfig) -> Option<Windows> {
    // Below train's minimum the fit refuses the set (with the clear error) before any replay.
    if set.len() < crate::train::MIN_EXAMPLES {
        return None;
    }
    let (fit_end, test_start) = crate::train::split_points(set.len(), cfg);
    let (cal_from, test_from, last) = (*set.times.get(fit_end)?, *set.times.get(test_start)?, *set.times.last()?);
    let shards = crate::policy_calibration::replay_shards;
    Some((
        (cal_from..test_from, shards(test_start - fit_end)),
        (test_from..last + chrono::Duration::seconds(1), shards(set.len() - test_start)),
    ))
}

/// The calibration window's replays (refitted on) and the test window's (checked on).
type Replays = (Vec<crate::policy_calibration::Replay>, Vec<crate::policy_calibration::Replay>);

/// Sharded training's replays: the fit step reads the payers of shard 0 of the replay's
/// shards from the history the shard jobs read (the same payers and retries a single
/// process replays, so the same model). A history it cannot read skips the refit, saying why.
fn sharded_replays(
    digest: &Digest,
    cfg: &TrainConfig,
    history: &std::path::Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Replays, String> {
    let Some((cal, test)) = replay_windows(&digest.set, cfg) else { return Ok(Default::default()) };
    // Shard 0 of the smaller count holds the payers of both windows' shard 0.
    let shards = cal.1.min(test.1);
    // Rows that break the contract were reported by the shard jobs: skipped here too (as a
    // single process with --skip-bad-rows does), into a scratch file.
    let rejects = std::env::temp_dir().join(format!("recoup-replay-rejects-{}.csv", std::process::id()));
    let opts = LoadOptions {
        shard: (shards > 1).then_some((0, shards)),
        skip_bad_rows: true,
        reject_path: Some(rejects.clone()),
        parquet_slice_rows: Some(1 << 17),
    };
    let loaded = load(history, &opts);
    let _ = std::fs::remove_file(&rejects);
    let h = loaded.map_err(|e| format!("reading {} for the replay: {e}", history.display()))?;
    progress(&format!(
        "read {} attempts of shard 0 of {shards} of the payers from {} to replay the policy",
        h.attempts.len(),
        history.display()
    ));
    Ok(window_replays(&h, (cal, test)))
}

/// Both windows' replays from `h` (one index of its payers serves both).
fn window_replays(h: &crate::history::History, (cal, test): Windows) -> Replays {
    let payers = crate::export::Payers::new(h);
    (crate::policy_calibration::replays(h, &payers, cal.0, cal.1), crate::policy_calibration::replays(h, &payers, test.0, test.1))
}

/// The history a version was trained on, for its manifest.
#[derive(Debug, Clone)]
pub struct Source {
    pub files: Vec<String>,
    pub fingerprint: String,
    pub rows: u64,
}

/// Build the digest of shard `k` of `n` of the job's history (its payers by
/// [`crate::history::shard_of`]) and write it under `dir` (#25's `--features-only`).
pub fn features_only(
    job: &Job,
    shard: (u64, u64),
    dir: &std::path::Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, PipelineError> {
    let (k, n) = shard;
    // A shard keeps 1/n of the rows but decodes all of them: smaller slices keep the
    // decoded columns from dominating its memory (as export's passes do).
    // Each shard job writes its own reject file (jobs may share a volume): FILE.shardK.csv.
    let reject_path = job.load.reject_path.as_ref().map(|p| crate::history::reject_file_for(p, &format!("shard{k}")));
    let load_opts = LoadOptions { shard: Some((k, n)), parquet_slice_rows: Some(1 << 17), reject_path, ..job.load.clone() };
    let history = load(&job.history, &load_opts).map_err(|source| PipelineError::History { path: job.history.clone(), source })?;
    let r = &history.report;
    progress(&format!(
        "shard {k} of {n}: {} attempts of this shard's payers from {} ({} rows of other shards' payers skipped)",
        history.attempts.len(),
        job.history.display(),
        r.rows_other_shards
    ));
    let fingerprint = registry::fingerprint(&history.files)?;
    let digest = Digest::of_history(&history);
    progress(&format!("built {} retry examples", digest.set.len()));
    let meta = crate::digest::ShardMeta {
        format: crate::digest::FORMAT.to_string(),
        recoup_version: env!("CARGO_PKG_VERSION").to_string(),
        active_columns: crate::features::ACTIVE,
        schema_columns: crate::features::SCHEMA.len(),
        shard: k,
        shards: n,
        history: job.history.display().to_string(),
        files: history.files.iter().map(|f| crate::s3::source_name(f)).collect(),
        fingerprint,
        rows_read: r.rows_read,
        rows_rejected: r.rows_rejected,
        rows_other_shards: r.rows_other_shards,
        attempts: digest.attempts,
        payments: digest.payments,
        examples: digest.set.len() as u64,
        attrition: digest.attrition.clone(),
        population: digest.population.clone(),
        last_attempt: digest.asks.end,
        update_triggered_payments: digest.asks.update_triggered,
    };
    drop(history);
    Ok(crate::digest::write_shard(dir, &digest, &meta)?)
}

/// Read every shard under `dir`, merge them and fit, as [`to_registry`] does on a history
/// (`job.history` is not read).
pub fn from_shards(job: &Job, dir: &std::path::Path, progress: &mut dyn FnMut(&str)) -> Result<Written, PipelineError> {
    let store = open_out(job)?;
    let started = Instant::now();
    let shards = crate::digest::find_shards(dir)?;
    let first = shards[0].1.clone();
    let mut parts = Vec::with_capacity(shards.len());
    for (path, meta) in &shards {
        parts.push(crate::digest::read_shard(path, meta)?);
        progress(&format!("read shard {} of {}: {} retry examples", meta.shard, meta.shards, meta.examples));
    }
    let rejected: u64 = shards.iter().map(|(_, m)| m.rows_rejected).sum();
    if rejected > 0 {
        progress(&format!("the shard jobs skipped {rejected} rows that break the contract (each job's reject file, FILE.shardK.csv)"));
    }
    let digest = Digest::merge(parts);
    let source = Source { files: first.files.clone(), fingerprint: first.fingerprint.clone(), rows: digest.attempts };
    let replays = sharded_replays(&digest, &job.cfg, std::path::Path::new(&first.history), progress);
    fit_and_write(job, &store, digest, replays, source, started, progress)
}

/// Fit on a digest and write the version (what [`to_registry`] and [`from_shards`] share).
fn fit_and_write(
    job: &Job,
    store: &ModelStore,
    digest: Digest,
    replays: Result<Replays, String>,
    source: Source,
    started: Instant,
    progress: &mut dyn FnMut(&str),
) -> Result<Written, PipelineError> {
    let set = &digest.set;
    progress(&format!(
        "built {} retry examples × {} active of {} feature columns",
        set.len(),
        crate::features::ACTIVE,
        crate::features::SCHEMA.len()
    ));
    let built_at = started.elapsed();
    let mut trained = train(set, &job.cfg, progress)?;
    let fit_seconds = trained.fit_seconds;
    trained.model.attrition = crate::attrition::from_sums(&digest.attrition);
    trained.report.population = digest.population.clone();
    if trained.model.attrition.is_empty() {
        progress("message attrition: no retries with randomized channels (propensity < 1, `none` among them) after soft declines; email and in-app are not charged for the payers they lose, and SMS and push are not used");
        // Prices every channel at 0 as the empty estimate did (the ask fit below reads rates only).
        trained.model.attrition = crate::attrition::Attrition::unmeasured();
    } else {
        let a = &trained.model.attrition;
        let rates: Vec<String> = a
            .channels
            .iter()
            .map(|c| format!("{} {:.1} % + {:.1} %/earlier message", <&str>::from(c.channel), 100.0 * c.base, 100.0 * c.per_message))
            .collect();
        progress(&format!("message attrition from {} randomized retries: {}", a.retries, rates.join(", ")));
    }
    trained.model.asks = crate::asks::estimate_from(&digest.asks, &trained.model.attrition);
    trained.model.support = crate::support::estimate(&digest.observed);
    for c in &trained.model.support.classes {
        progress(&format!("support after {}: {}", c.class.map_or("any decline", |c| c.into()), c.describe()));
    }
    let asks = &trained.model.asks;
    let rates: Vec<String> =
        asks.channels.iter().map(|c| format!("{} {:.1} % ± {:.1}", <&str>::from(c.channel), 100.0 * c.rate, 196.0 * c.se)).collect();
    progress(&format!(
        "response to an ask for a new payment method ({}): {}; on their own {:.2} %/day",
        asks.method,
        rates.join(", "),
        100.0 * asks.spontaneous_per_day
    ));
    for n in &asks.notes {
        progress(&format!("  asks: {n}"));
    }
    // Calibration where the policy acts: the model must be whole (support, asks, attrition)
    // for the engine to choose as it will when serving.
    trained.report.acting_calibration = match replays {
        Ok((cal, test)) => {
            let engine = crate::engine::EngineConfig::default();
            let mut acting = crate::policy_calibration::refit(&mut trained.model, &engine, &cal);
            trained.rescore_test(set, &job.cfg);
            acting.test = crate::policy_calibration::check(&trained.model, &engine, &test);
            acting
        }
        Err(why) => crate::policy_calibration::ActingCalibration::skipped(&why),
    };
    for line in trained.report.acting_calibration.lines() {
        progress(&line);
    }
    updated_prior(&mut trained, set, &job.cfg, &digest, progress);
    // Where the final model is wrong on the test split, finer than its levels when the
    // examples carry their local times (built from a history or read from v2 shards, they do).
    let test_start = crate::train::split_points(set.len(), &job.cfg).1;
    let finer = set.stamps.len() == set.len();
    let residuals = crate::train::residuals_of(set, &trained.test_examples, &trained.model, test_start..set.len()).summary(finer);
    for line in residuals.lines() {
        progress(&line);
    }
    trained.report.residuals = Some(residuals);
    if let Some(dir) = &job.export_features {
        export_features(set, &job.cfg, &trained.model, dir)?;
        let summary = serde_json::json!({
            "pipeline": "recoup",
            "examples": set.len(),
            "threads": rayon::current_num_threads(),
            "load_and_features_seconds": built_at.as_secs_f64(),
            "fit_seconds": fit_seconds,
            "fit_note": if trained.report.trees > 0 {
                "from the examples to the calibrated model: boosted trees (early stopping on the calibration split) + the channel's terms on top along the L2 path + Platt calibration + weight variances (not the test evaluation, like the peer's)"
            } else {
                "from the examples to the calibrated model: coordinate-Newton fits along the L2 path (search on the calibration split) + Platt calibration + weight variances (not the test evaluation, like the peer's)"
            },
            "trees": trained.report.trees,
            "test": trained.report.model,
        });
        let path = dir.join("recoup.json");
        std::fs::write(&path, format!("{summary:#}")).map_err(io(&path))?;
        progress(&format!("exported feature tables and recoup.json to {}", dir.display()));
    }
    let manifest = Manifest {
        version: job.version.clone().unwrap_or_default(),
        created_at: chrono::Utc::now(),
        recoup_version: env!("CARGO_PKG_VERSION").to_string(),
        data_fingerprint: source.fingerprint,
        data_files: source.files,
        data_rows: source.rows,
        config: job.cfg.params(),
    };
    let version = store.write_version(&trained.model, &trained.report, manifest)?;
    if job.promote {
        store.promote(&version)?;
    }
    let dir = store.name().join(&version);
    Ok(Written { version, dir, report: trained.report })
}

/// A replaced method's P from a prior and the log's retries after an update, where it has
/// any ([`crate::train::updated_prior`]; after the scalings, which the prior is centred
/// through), and the test split rescored when it moved the weight: a payment's failed
/// retries after an update count at the new weight too.
fn updated_prior(
    trained: &mut crate::train::Trained,
    set: &TrainingSet,
    cfg: &TrainConfig,
    digest: &Digest,
    progress: &mut dyn FnMut(&str),
) {
    let (fit_end, test_start) = crate::train::split_points(set.len(), cfg);
    trained.report.updated_priors = crate::train::REPLACED_CLASSES
        .iter()
        .filter_map(|&class| {
            crate::train::updated_prior(&mut trained.model, set, digest.payments, digest.population.payments, 0..fit_end, class)
        })
        .collect();
    for u in trained.report.updated_priors.iter().filter(|u| u.partly_prior()) {
        progress(&u.describe());
    }
    if trained.report.updated_priors.iter().any(|u| u.weight != u.fitted_weight) {
        trained.test_examples = crate::train::failed_retry_examples(set, &trained.model).split_off(test_start);
        trained.rescore_test(set, cfg);
    }
}

/// Write the exact feature tables a training run uses, for peer pipelines
/// (`benches/peer/`): `train.parquet` (the fit and calibration examples, column
/// `split` = `fit`/`calibration`) and `test.parquet`. One small-integer column
/// per feature group holds its level (Int32) (see the schema for level names; crosses
/// are left to the peer to learn), then `recoup_logit` (`model`'s raw logit, for
/// stacking experiments; not a feature), `label` and `retry_at`.
pub fn export_features(set: &TrainingSet, cfg: &TrainConfig, model: &SuccessModel, dir: &std::path::Path) -> Result<(), PipelineError> {
    use polars::prelude::*;
    if set.len() < 100 {
        return Err(PipelineError::Fit(crate::train::FitError::TooFewExamples(set.len())));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (fit_end, test_start) = crate::train::split_points(set.len(), cfg);
    let names = crate::features::group_names();
    let write = |range: std::ops::Range<usize>, file: &str| -> Result<(), PipelineError> {
        let n = range.len();
        let mut cols: Vec<Column> = names
            .iter()
            .enumerate()
            .map(|(g, name)| {
                let v: Vec<i32> = range.clone().map(|i| crate::features::group_level(set.row(i), g) as i32).collect();
                Column::new((*name).into(), v)
            })
            .collect();
        if file == "train.parquet" {
            let split: Vec<&str> = range.clone().map(|i| if i < fit_end { "fit" } else { "calibration" }).collect();
            cols.push(Column::new("split".into(), split));
        }
        cols.push(Column::new("recoup_logit".into(), range.clone().map(|i| model.logit(set.row(i))).collect::<Vec<f64>>()));
        cols.push(Column::new("label".into(), range.clone().map(|i| set.labels[i]).collect::<Vec<_>>()));
        let ms: Vec<i64> = range.clone().map(|i| set.times[i].timestamp_millis()).collect();
        let path = dir.join(file);
        let parquet = |source| PipelineError::Parquet { path: path.clone(), source };
        let t =
            Column::new("retry_at".into(), ms).cast(&DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC))).map_err(parquet)?;
        cols.push(t);
        let mut df = DataFrame::new(n, cols).map_err(parquet)?;
        let f = std::fs::File::create(&path).map_err(io(&path))?;
        ParquetWriter::new(f).finish(&mut df).map_err(parquet)?;
        Ok(())
    };
    write(0..test_start, "train.parquet")?;
    write(test_start..set.len(), "test.parquet")?;
    Ok(())
}
