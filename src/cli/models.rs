//! `recoup models`: list, show and promote model versions.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Copy another registry's current version if this one lacks it, and make it current
    /// when this one has none (a fresh model store gets the image's bundled model; a store
    /// that has a current model keeps it).
    Seed {
        /// The local registry to copy from (the image's bundled `models/`).
        #[arg(long, value_name = "DIR", env = "RECOUP_MODELS_FROM")]
        from: PathBuf,
    },
}

/// Run `recoup models`.
pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
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
        ModelsCommand::Promote { name: version } => {
            store.promote(version)?;
            println!("{version} is now the current model in {}", name.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
