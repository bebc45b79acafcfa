//! recoup: an open, transparent, ML-assisted payment-retry optimizer.
//!
//! Code map, in reading order. The **core** has no I/O and never fails on
//! outside input (it only receives typed values); the **edges** talk to files,
//! the network and the terminal, and turn outside input into core types.
//!
//! Core (pure):
//! - [`limits`]: the one set of bounds (times, counts, sizes) every route holds input to.
//! - [`domain`]: plain types — payment methods, channels, money, the attempt record.
//! - [`declines`]: the normalized decline vocabulary, raw-code mappings, retry classes.
//! - [`rules`]: network retry rules (Visa/Mastercard caps, ACH/SEPA, hard declines).
//! - [`calendar`]: bank holidays, business days, pay schedules, default time zones.
//! - [`sim`]: the simulated payment world with ground truth; runs any policy, writes history; the zoo of worlds.
//! - [`payday`]: pay-schedule inference from funds declines and recoveries.
//! - [`support`]: where the training log holds evidence; the engine decides only there.
//! - [`features`]: the one feature definition shared by training and scoring.
//! - [`model`]: the success model (sparse logistic regression + Platt scaling) and scoring.
//! - [`trees`]: gradient-boosted trees over the feature groups' levels, added to the model's logit on large logs.
//! - [`train`]: batch features, fit, time-split evaluation against baselines.
//! - [`failed_retries`]: what a payment's own failed retries say beyond their number (a per-payment random effect).
//! - [`attrition`]: how many payers a message loses, from the log's randomized channels.
//! - [`asks`]: how likely a payer asked for a new payment method provides one, per channel.
//! - [`engine`]: the decision: candidate grid, rules and constraints, scoring, value, exploration.
//!
//! - [`backtest`]: retry strategies run inside the simulated world, with paired-bootstrap intervals.
//! - [`offpolicy`]: the same strategies estimated on logged history from its propensities.
//! - [`export`]: the calibrated recovery forecast of payments open at a cut-off.
//!
//! Edges:
//! - [`history`]: loads and validates payment-attempt history (polars) per contract v1.
//! - [`report`]: the backtest's HTML report with SVG plots.
//! - [`registry`]: model versions on disk and the `CURRENT` pointer.
//! - [`decision_log`]: every decision served and every outcome reported, in Parquet files; their join back into history.
//! - [`api`]: the `recoup.v1` protobuf types and their mapping to engine types (request validation).
//! - [`hyperswitch`]: hyperswitch's recovery decider and trainer contracts, mapped onto the engine and registry.
//! - [`metrics`]: a per-server Prometheus registry and the `/metrics` endpoint.
//! - [`serve`]: the gRPC service: connections and TLS, the guard (access, deadlines, panics, metrics), handlers, hot reload.
//! - [`cli`]: the `recoup` subcommands.

pub mod api;
pub mod asks;
pub mod attrition;
pub mod backtest;
pub mod calendar;
pub mod cli;
pub mod decision_log;
pub mod declines;
pub mod domain;
pub mod engine;
pub mod export;
pub mod failed_retries;
pub mod features;
pub mod history;
pub mod hyperswitch;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod offpolicy;
pub mod payday;
pub mod registry;
pub mod report;
pub mod rules;
pub mod serve;
pub mod sim;
pub mod support;
pub mod train;
pub mod trees;
