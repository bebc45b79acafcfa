//! `recoup models`: list, show and promote model versions.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;

use crate::model_store::ModelStore;

/// Manage the model registry (`models/<version>/` and the `CURRENT` pointer).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model registry: a directory, or `s3://bucket/prefix` (`--models`, as the other
    /// subcommands spell it, works too).
    #[arg(long, visible_alias = "models", value_name = "DIR", default_value = "models/", global = true, env = "RECOUP_MODELS_DIR")]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: ModelsCommand,
}

/// `recoup models` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List versions, oldest first; `*` marks the current one.
    List,
    /// Print a version's data, settings and held-out metrics (`current` for the current one).
    Show {
        /// Version name, or `current`.
        #[arg(value_name = "VERSION", env = "RECOUP_MODELS_NAME")]
        name: String,
    },
    /// Make a version the current one (the served model). Atomic; the model must load.
    Promote {
        /// Version name (see `recoup models list`).
        #[arg(value_name = "VERSION", env = "RECOUP_MODELS_NAME")]
        name: String,
    },
    /// Where a version is wrong on a history: the history's retries scored as the model
    /// serves them, predicted against realised success per decline class, cut by every
    /// feature level and finer than the model's levels; cells beyond their noise flagged.
    #[command(after_help = RESIDUALS_HELP)]
    Residuals {
        /// Version name, or `current`.
        #[arg(value_name = "VERSION", env = "RECOUP_MODELS_NAME")]
        name: String,
        /// History to score: a Parquet/CSV file, a directory of them, or an s3:// URL (the
        /// one the version was trained on, or a newer one).
        #[arg(long, value_name = "PATH", env = "RECOUP_RESIDUALS_HISTORY")]
        history: PathBuf,
        /// Score the retries from this time on (RFC 3339 or YYYY-MM-DD), or `all`. Default:
        /// the version's test split start, so only retries it neither fitted nor calibrated on.
        #[arg(long, value_name = "TIME|all", env = "RECOUP_RESIDUALS_SINCE")]
        since: Option<String>,
        /// And before this time (RFC 3339 or YYYY-MM-DD). Default: the history's end.
        #[arg(long, value_name = "TIME", value_parser = super::export::parse_as_of, env = "RECOUP_RESIDUALS_UNTIL")]
        until: Option<DateTime<Utc>>,
        /// Also print every value of this cut (repeatable): a feature group
        /// (`card_funding`, `day_of_month`…) or a finer cut (`day_of_month_exact`,
        /// `local_hour_exact`, `hours_since_last_6h`).
        #[arg(long, value_name = "CUT", env = "RECOUP_RESIDUALS_CUT", value_delimiter = ',')]
        cut: Vec<String>,
        /// Print everything as JSON instead.
        #[arg(long, env = "RECOUP_RESIDUALS_JSON")]
        json: bool,
        /// Also write plots of each decline class's success by exact day of month, local
        /// hour and spacing, predicted against observed (`DIR/index.html` and SVG files).
        #[arg(long, value_name = "DIR", env = "RECOUP_RESIDUALS_PLOT")]
        plot: Option<PathBuf>,
    },
    /// Copy another registry's current version if this one lacks it, and make it current
    /// when this one has none (a fresh model store gets the image's bundled model; a store
    /// that has a current model keeps it).
    Seed {
        /// The local registry to copy from (the image's bundled `models/`).
        #[arg(long, value_name = "DIR", env = "RECOUP_MODELS_FROM")]
        from: PathBuf,
    },
}

const RESIDUALS_HELP: &str = "\
Every retry is scored at its logged time and channel with everything the engine uses
(the failed-retries correction, the per-class calibration). Per decline class, each cell
is observed − predicted success over its retries, with a standard error clustered by
payer; cells of at least 30 retries (and 5 expected successes and failures) that
are 4 standard errors and 2 points off are flagged: a class by its own error, any
other cell by how far its error lies from its class's.

The finer cuts check an assumption of the model: that every value inside one of its
levels behaves alike (days 11 to 15 share `day_of_month=11-15`, hours 7 to 9 share
`local_hour=7-9`). Per level, a chi-square test says whether its exact values agree;
a level that fails holds structure the model cannot see, and the engine, which picks
the best hour inside a level, may act on the wrong part of it.

Exit code 0 whatever is flagged (it is a report); 2 on a bad version or history.

Examples:
  recoup models residuals current --history data/sample/
  recoup models residuals 20261205-042820-c553afb8 --history new-month.parquet --since all
  recoup models residuals current --history h.parquet --cut day_of_month_exact --json
  recoup models residuals current --history h.parquet --plot residuals/   # then open residuals/index.html";

/// Run `recoup models`.
pub fn run(a: &Args, quiet: bool) -> anyhow::Result<ExitCode> {
    let store = ModelStore::open(&a.dir)?;
    let name = store.name();
    match &a.command {
        ModelsCommand::List => {
            let current = store.current().ok();
            let versions = store.list()?;
            if versions.is_empty() {
                eprintln!("no model versions in {} (train one with `recoup train`)", name.display());
            }
            for v in versions {
                let (m, r) = store.describe(&v)?;
                let mark = if current.as_deref() == Some(v.as_str()) { "*" } else { " " };
                println!(
                    "{mark} {v}  {} retries  test log loss {:.4}  AUC {:.4}  ECE {:.4}  data {}",
                    r.examples,
                    r.model.log_loss,
                    r.model.auc,
                    r.model.ece,
                    &m.data_fingerprint[..12]
                );
            }
        }
        ModelsCommand::Show { name } => {
            let v = if name == "current" { store.current()? } else { name.clone() };
            store.describe(&v)?;
            print!("{}", store.read(&v, "MODEL_CARD.md")?);
            match store.load_version(&v) {
                Ok(_) => println!("\nloads with this build: yes"),
                Err(e) => println!("\nloads with this build: NO — {e}"),
            }
        }
        ModelsCommand::Seed { from } => {
            let copied = store.seed(from)?;
            println!(
                "{} {}; current: {}",
                if copied { "copied the current version of" } else { "nothing to copy from" },
                from.display(),
                store.current()?
            );
        }
        ModelsCommand::Residuals { name, history, since, until, cut, json, plot } => {
            let v = if name == "current" { store.current()? } else { name.clone() };
            residuals(&store, &v, history, (since.as_deref(), *until), cut, (*json, plot.as_deref()), quiet)?;
        }
        ModelsCommand::Promote { name: version } => {
            store.promote(version)?;
            println!("{version} is now the current model in {}", name.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `recoup models residuals`.
fn residuals(
    store: &ModelStore,
    version: &str,
    path: &std::path::Path,
    (since, until): (Option<&str>, Option<DateTime<Utc>>),
    cuts: &[String],
    (json, plot): (bool, Option<&std::path::Path>),
    quiet: bool,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let started = std::time::Instant::now();
    let say = |m: &str| {
        if !quiet {
            eprintln!("[{:>6.1}s] {m}", started.elapsed().as_secs_f64());
        }
    };
    let known = crate::residuals::cut_names();
    for c in cuts {
        anyhow::ensure!(known.iter().any(|k| k == c), "--cut {c:?}: not a cut; one of {}", known.join(", "));
    }
    let (_, report) = store.describe(version)?;
    let model = store.load_version(version)?;
    let from: Option<DateTime<Utc>> = match since {
        Some("all") => None,
        Some(s) => Some(super::export::parse_as_of(s).map_err(|e| anyhow::anyhow!("--since: {e}"))?),
        None => report.test_from,
    };
    super::mirror_history(path, &say)?;
    let h = crate::history::load(path, &crate::history::LoadOptions::default())
        .with_context(|| format!("loading history {}", path.display()))?;
    say(&format!("loaded {} attempts from {}", h.attempts.len(), path.display()));
    let set = crate::train::build(&h);
    let start = from.map_or(0, |t| set.times.partition_point(|x| *x < t));
    let end = until.map_or(set.len(), |t| set.times.partition_point(|x| *x < t));
    let window = match (from, until) {
        (Some(f), Some(u)) => format!("from {} to {}", f.to_rfc3339(), u.to_rfc3339()),
        (Some(f), None) => format!("at or after {}", f.to_rfc3339()),
        (None, Some(u)) => format!("before {}", u.to_rfc3339()),
        (None, None) => "at all".to_string(),
    };
    anyhow::ensure!(
        start < end,
        "{}: no retry {window} ({} retries in all){}",
        path.display(),
        set.len(),
        if since.is_none() { "; the default is the version's test split start: --since all scores every retry" } else { "" }
    );
    say(&format!("scoring {} retries with model {version}", end - start));
    let r = crate::train::residuals(&set, &model, start..end);
    if let Some(dir) = plot {
        let html = crate::report::write_residuals(dir, &format!("Model {version}: {} retries {window}", r.retries), &r)?;
        say(&format!("plots written: {}", html.display()));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "version": version, "history": path, "since": from, "until": until, "flag_z": crate::residuals::FLAG_Z,
                "min_retries": crate::residuals::MIN_RETRIES, "min_expected": crate::residuals::MIN_EXPECTED,
                "min_error": crate::residuals::MIN_ERROR, "residuals": r,
            }))?
        );
        return Ok(());
    }
    print!("{}", crate::residuals::text(&r, version, &window, cuts));
    Ok(())
}
