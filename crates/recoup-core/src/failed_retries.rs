//! What a payment's own failed retries say beyond how many there were (core, pure).
//!
//! The success model knows how many retries a payment has had, and learns from
//! the log how much each failure lowers the next retry's chance. But that
//! lesson is the log's: its failures happened where its logging policy put them,
//! mostly at ordinary times. A retry that failed at a time the model rated well
//! (the payer's pay day, say) says more: the payer is short of money for longer,
//! or the pay day was inferred wrongly. A learned policy retries at the times
//! the model rates best, so its failures are exactly those, and without this
//! correction it over-predicts every retry after its first (#20: chosen-retry
//! P 0.34 against 0.22 realised on later retries of the default world).
//!
//! The correction is a per-payment random effect read to first order: a failure
//! of a retry the model gave P = p moves the payment's log-odds by about
//! `−τ²·p` (the derivative of `log(1 − σ(z))`). So the retry after `k` failed
//! retries gets
//!
//! `z += γ[class] · (E − mean[class][k])`, `E = Σ p` over the earlier failed retries,
//!
//! where `mean` is the log's own average `E` for that decline class and retry
//! number (the model's retry-number terms already price the average failure),
//! and `γ ≤ 0` is fitted per decline class on the calibration split (where the
//! model's logit is out of sample, as when serving) with the model's
//! logit as an offset. Assumptions, written in the model card: the first retry
//! needs none (the original charge is not a retry the model scored); a failure
//! never makes the next retry likelier (`γ` is clamped to `[−8, 0]`); a class
//! with few later retries in the log is held near the bound of the fit's prior
//! alone (`γ = −2`, below), with no cliff at a row count.
//!
//! **Pessimism where the log cannot pin `γ` down.** The model holds `γ` =
//! the fit minus [`PESSIMISM_SE`] standard errors (clamped as above), and keeps the
//! fit and its standard error beside it for the model card. `γ` is identified only by
//! how much `E` varies around the log's mean, and a log that retries at ordinary
//! times varies it little (a standard error of 0.15–0.6 on a few thousand later
//! retries). The learned policy's own failed retries lie beyond that range (it
//! retries where the model is most hopeful, so its failures carry the model's
//! overestimates), and there the fitted line under-states the drop: later retries
//! came out over-predicted by 0.04–0.14 on zoo logs where the fit gave −0.1 to
//! −0.4. The direction is known (a selected failure says more, never less); the
//! size is not, so the bound leans the way that cannot make the policy chase. The
//! fit's weak ridge (0.5·γ², a prior of standard deviation 1) bounds the standard
//! error: a log whose failed retries all had the same P holds `γ = −2`.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use serde::{Deserialize, Serialize};

use crate::declines::DeclineClass;

/// The most negative `γ` a fit gives and a model may hold (a failure never raises the next P: `γ ≤ 0`).
pub const MIN_GAMMA: f64 = -8.0;

/// `γ` is held this many standard errors below its fit (see the module documentation):
/// a one-sided bound at about 98 %, the usual choice, not tuned to a world.
pub const PESSIMISM_SE: f64 = 2.0;

/// Retry numbers with their own mean; later ones share the last.
pub const RETRY_CELLS: usize = 5;

/// `E` sums the most recent this many failed retries, in training and scoring alike: a
/// payment with more is past every network's cap, and it bounds what a request at the
/// attempt limit costs (each counted retry is scored again).
pub const MAX_COUNTED: usize = 32;

/// The fitted correction (empty: none, e.g. a model trained before it existed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailedRetries {
    /// Per decline class (by index): logit change per expected success of the earlier failed
    /// retries, as the engine applies it (the fit less [`PESSIMISM_SE`] standard errors).
    pub gamma: Vec<f64>,
    /// Per decline class: the fitted `γ` and its standard error (empty in a model trained
    /// before they were kept; 0 ± 1 for a class without later retries: the prior alone).
    #[serde(default)]
    pub fitted: Vec<f64>,
    #[serde(default)]
    pub se: Vec<f64>,
    /// `mean[class][k − 1]`: the log's mean expected successes of the failed retries before a retry
    /// made after `k` retries (`k` from 1; the last cell holds `k ≥` [`RETRY_CELLS`]).
    pub mean: Vec<Vec<f64>>,
    /// Later retries of each class it was fitted on.
    pub rows: Vec<u64>,
}

impl FailedRetries {
    /// True when there is no correction.
    pub fn is_empty(&self) -> bool {
        self.gamma.is_empty()
    }

    /// The log's mean expected successes of the failed retries before a retry answering `class`
    /// after `retries` retries (0 for the first retry or an empty correction).
    pub fn mean_for(&self, class: DeclineClass, retries: u32) -> f64 {
        if retries == 0 {
            return 0.0;
        }
        let k = (retries as usize).min(RETRY_CELLS) - 1;
        self.mean.get(class as usize).and_then(|m| m.get(k)).copied().unwrap_or(0.0)
    }

    /// The logit change for a retry answering `class` after `retries` retries whose failures
    /// had `expected` successes in all (0 for the first retry or an empty correction).
    pub fn shift(&self, class: DeclineClass, retries: u32, expected: f64) -> f64 {
        if retries == 0 {
            return 0.0;
        }
        let Some(&g) = self.gamma.get(class as usize) else { return 0.0 };
        let s = g * (expected - self.mean_for(class, retries));
        if s.is_finite() {
            s
        } else {
            0.0
        }
    }
}
