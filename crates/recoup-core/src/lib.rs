//! recoup's core: everything a decision needs, and nothing that talks to the
//! outside world. No file or network I/O, no clock (a request says what "now"
//! is), no global randomness, no polars, tokio, tonic, clap or anyhow: the
//! compiler enforces it, because this crate does not depend on them, and a tidy
//! test (`tests/it/tidy.rs` in the workspace root) fails if one is added.
//!
//! Code map, in reading order (each module's doc starts with its side of the boundary):
//! - [`limits`]: the one set of bounds (times, counts, sizes) every route holds input to.
//! - [`checked`]: settings checked once into the only form their users take (linfa's params → check → config).
//! - [`domain`]: plain types: payment methods, channels, money, countries, raw codes.
//! - [`declines`]: the normalized decline vocabulary, raw-code mappings, retry classes.
//! - [`attempt`]: one vocabulary for a charge attempt: the history record and the views rules, features and requests read.
//! - [`rules`]: network retry rules (Visa/Mastercard caps, ACH/SEPA, hard declines).
//! - [`calendar`]: bank holidays, business days, pay schedules, default time zones.
//! - [`payday`]: pay-schedule inference from funds declines and recoveries.
//! - [`features`]: the one feature definition shared by training and scoring.
//! - [`support`]: where the training log holds evidence; the engine decides only there.
//! - [`imputation`]: an optional field a request leaves out that the training log always had.
//! - [`trees`]: boosted trees over the feature groups' levels and their scoring.
//! - [`failed_retries`]: what a payment's own failed retries say beyond their number.
//! - [`attrition`]: how many payers a message loses (the learned quantity and its use).
//! - [`asks`]: how likely a payer asked for a new payment method provides one.
//! - [`model`]: the success model (logistic terms, trees, calibration) and its scoring.
//! - [`engine`]: the decision: request → grid → value → choose → explain.

pub mod asks;
pub mod attempt;
pub mod attrition;
pub mod calendar;
pub mod checked;
pub mod declines;
pub mod domain;
pub mod engine;
pub mod failed_retries;
pub mod features;
pub mod imputation;
pub mod limits;
pub mod model;
pub mod payday;
pub mod rules;
pub mod support;
pub mod trees;
