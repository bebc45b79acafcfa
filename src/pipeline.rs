//! The training pipeline, from a history file to a new model version in a registry:
//! load and check the history, build the examples, fit and evaluate, estimate the
//! learned quantities beside the success model (attrition, asks, support), write the
//! version with its model card, promote it if asked. What `recoup train` and
//! hyperswitch's trainer service both run.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use crate::history::{load, LoadOptions};
use crate::registry::{self, Manifest};
use crate::train::{build, train, TrainConfig};

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
}

/// A version written by [`to_registry`].
#[derive(Debug)]
pub struct Written {
    pub version: String,
    pub dir: PathBuf,
    pub report: crate::train::TrainReport,
}

/// Load the history, fit, evaluate and write a new version (promoting it if
/// asked), reporting each step to `progress`.
pub fn to_registry(job: &Job, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Written> {
    if let Some(v) = &job.version {
        registry::check_version_name(v).map_err(anyhow::Error::msg)?;
        let dir = job.out.join(v);
        anyhow::ensure!(!dir.exists(), "{} already exists; model versions are immutable", dir.display());
    }
    let started = Instant::now();
    let history = load(&job.history, &job.load).with_context(|| format!("loading history {}", job.history.display()))?;
    progress(&format!("loaded {} attempts from {}", history.attempts.len(), job.history.display()));
    if history.report.rows_rejected > 0 {
        let to = job.load.reject_path.as_deref().map_or("rejects.csv".into(), |p| p.display().to_string());
        progress(&format!("skipped {} rows that break the contract (written to {to})", history.report.rows_rejected));
    }
    let fingerprint = registry::fingerprint(&history.files)?;
    let set = build(&history);
    progress(&format!(
        "built {} retry examples × {} active of {} feature columns",
        set.len(),
        crate::features::ACTIVE,
        crate::features::SCHEMA.len()
    ));
    let built_at = started.elapsed();
    let mut trained = train(&set, &job.cfg, progress)?;
    let fit_seconds = trained.fit_seconds;
    trained.model.attrition = crate::attrition::estimate(&history);
    if trained.model.attrition.is_empty() {
        progress("message attrition: no retries with randomized channels (propensity < 1, `none` among them) after soft declines; messages are not charged for the payers they lose");
    } else {
        let a = &trained.model.attrition;
        let rates: Vec<String> = a
            .channels
            .iter()
            .map(|c| format!("{} {:.1} % + {:.1} %/earlier message", <&str>::from(c.channel), 100.0 * c.base, 100.0 * c.per_message))
            .collect();
        progress(&format!("message attrition from {} randomized retries: {}", a.retries, rates.join(", ")));
    }
    trained.model.asks = crate::asks::estimate(&history, &trained.model.attrition);
    trained.model.support = crate::support::estimate(&crate::train::observed_retries(&history));
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
    if let Some(dir) = &job.export_features {
        crate::train::export_features(&set, &job.cfg, &trained.model, dir)?;
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
        std::fs::write(&path, serde_json::to_string_pretty(&summary)?).with_context(|| format!("writing {}", path.display()))?;
        progress(&format!("exported feature tables and recoup.json to {}", dir.display()));
    }
    let manifest = Manifest {
        version: job.version.clone().unwrap_or_default(),
        created_at: chrono::Utc::now(),
        recoup_version: env!("CARGO_PKG_VERSION").to_string(),
        data_fingerprint: fingerprint,
        data_files: history.files.iter().map(|f| f.display().to_string()).collect(),
        data_rows: history.attempts.len() as u64,
        config: job.cfg.clone(),
    };
    let dir = registry::write_version(&job.out, &trained.model, &trained.report, manifest)?;
    let version = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if job.promote {
        registry::promote(&job.out, &version)?;
    }
    Ok(Written { version, dir, report: trained.report })
}
