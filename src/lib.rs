//! recoup: an open, transparent, ML-assisted payment-retry optimizer.
//!
//! The workspace has two crates. **`recoup-core`** (`crates/recoup-core`) is the
//! pure core: the decline vocabulary, network rules, calendars, features, model
//! scoring and the decision engine, with no I/O, no clock and no I/O crates (the
//! compiler enforces it; its own lib.rs has its code map). Its modules are
//! re-exported here under the same paths (`recoup::engine`, `recoup::rules`…).
//! This crate adds the learning layer and the edges; each module's doc ends with
//! its side.
//!
//! Code map, in reading order.
//!
//! Learning (fitting and evaluation over a loaded history or the simulator):
//! - [`sim`]: the simulated payment world with ground truth; runs any policy, writes history; the zoo of worlds.
//! - [`train`]: batch features, fit, time-split evaluation against baselines.
//! - [`trees`]: fitting the gradient-boosted trees (the trees and their scoring are core).
//! - [`failed_retries`]: fitting the failed-retries correction.
//! - [`attrition`]: estimating how many payers a message loses, from the log's randomized channels.
//! - [`asks`]: estimating how likely a payer asked for a new payment method provides one, per channel.
//! - [`policy_calibration`]: the per-class calibration refitted on the logged retries nearest the policy's choices.
//! - [`backtest`]: retry strategies run inside the simulated world, with paired-bootstrap intervals.
//! - [`offpolicy`]: the same strategies estimated on logged history from its propensities.
//! - [`export`]: the calibrated recovery forecast of payments open at a cut-off.
//! - [`learning_curve`]: sampling payers by a stable hash, and test log loss against sample size.
//! - [`drift`]: the key features' population in training and live, compared by PSI.
//! - [`residuals`]: where a model is wrong on a history, per feature level and finer than its levels.
//!
//! Edges:
//! - [`history`]: loads and validates payment-attempt history (polars) per contract v1.
//! - [`report`]: the backtest's HTML report with SVG plots.
//! - [`registry`]: model versions on disk and the `CURRENT` pointer.
//! - [`model_store`]: where the registry lives: a local directory or an S3 prefix, one interface.
//! - [`s3`]: object storage (`s3://` URLs on S3-compatible servers); histories mirrored into a local cache.
//! - [`digest`]: what training reads from a history, built per shard of payers, written, read back and merged exactly.
//! - [`pipeline`]: the training pipeline from a history file to a registry version (`recoup train`, the trainer service).
//! - [`decision_log`]: every decision served and every outcome reported, in Parquet files; their join back into history.
//! - [`api`]: the `recoup.v1` protobuf types and their mapping to engine types (request validation).
//! - [`hyperswitch`]: hyperswitch's recovery decider and trainer contracts, mapped onto the engine and registry.
//! - [`metrics`]: a per-server Prometheus registry and the `/metrics` endpoint.
//! - [`serve`]: the gRPC service: connections and TLS, the guard (access, deadlines, panics, metrics), handlers, hot reload.
//! - [`cli`]: the `recoup` subcommands.

// The pure core is its own crate (crates/recoup-core: the compiler keeps I/O out of
// it); its modules are re-exported here under the same paths.
pub use recoup_core::{attempt, calendar, checked, declines, domain, engine, features, imputation, limits, model, payday, rules, support};

pub mod api;
pub mod asks;
pub mod attrition;
pub mod backtest;
pub mod cli;
pub mod decision_log;
pub mod digest;
pub mod drift;
pub mod export;
pub mod failed_retries;
pub mod history;
pub mod hyperswitch;
pub mod learning_curve;
pub mod metrics;
pub mod model_store;
pub mod offpolicy;
pub mod pipeline;
pub mod policy_calibration;
pub mod registry;
pub mod report;
pub mod residuals;
pub mod s3;
pub mod serve;
pub mod sim;
pub mod train;
pub mod trees;
