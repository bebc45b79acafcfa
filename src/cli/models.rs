//! `recoup models`: list, show and promote model versions.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::registry;

/// Manage the model registry (`models/<version>/` and the `CURRENT` pointer).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model registry directory (`--models`, as the other subcommands spell it, works too).
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
        /// The registry to copy from.
        #[arg(long, value_name = "DIR", env = "RECOUP_MODELS_FROM")]
        from: PathBuf,
    },
}

/// Run `recoup models`.
pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    match &a.command {
        ModelsCommand::List => {
            let current = registry::current(&a.dir).ok();
            let versions = registry::list(&a.dir)?;
            if versions.is_empty() {
                eprintln!("no model versions in {} (train one with `recoup train`)", a.dir.display());
            }
            for v in versions {
                let (m, r) = registry::describe(&a.dir, &v)?;
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
            let v = if name == "current" { registry::current(&a.dir)? } else { name.clone() };
            registry::describe(&a.dir, &v)?;
            let card = std::fs::read_to_string(a.dir.join(&v).join("MODEL_CARD.md"))?;
            print!("{card}");
            match registry::load_version(&a.dir, &v) {
                Ok(_) => println!("\nloads with this build: yes"),
                Err(e) => println!("\nloads with this build: NO — {e}"),
            }
        }
        ModelsCommand::Seed { from } => {
            let copied = registry::seed(&a.dir, from)?;
            println!(
                "{} {}; current: {}",
                if copied { "copied the current version of" } else { "nothing to copy from" },
                from.display(),
                registry::current(&a.dir)?
            );
        }
        ModelsCommand::Promote { name } => {
            registry::promote(&a.dir, name)?;
            println!("{name} is now the current model in {}", a.dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
