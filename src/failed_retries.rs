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
//! and `γ ≤ 0` is fitted per decline class on the fit split with the model's
//! logit as an offset. Assumptions, written in the model card: the first retry
//! needs none (the original charge is not a retry the model scored); a failure
//! never makes the next retry likelier (`γ` is clamped to `[−8, 0]`); a class
//! with fewer than [`MIN_ROWS`] later retries in the log gets `γ = 0`.

use serde::{Deserialize, Serialize};
use strum::VariantArray;

use crate::declines::DeclineClass;

/// Later retries (after at least one failed retry) a class needs for its own `γ`.
pub const MIN_ROWS: usize = 200;

/// The most negative `γ` a fit gives and a model may hold (a failure never raises the next P: `γ ≤ 0`).
pub const MIN_GAMMA: f64 = -8.0;

/// Retry numbers with their own mean; later ones share the last.
pub const RETRY_CELLS: usize = 5;

/// `E` sums the most recent this many failed retries, in training and scoring alike: a
/// payment with more is past every network's cap, and it bounds what a request at the
/// attempt limit costs (each counted retry is scored again).
pub const MAX_COUNTED: usize = 32;

/// The fitted correction (empty: none, e.g. a model trained before it existed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailedRetries {
    /// Per decline class (by index): logit change per expected success of the earlier failed retries.
    pub gamma: Vec<f64>,
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

/// One retry example for [`fit`]: its class, the retries before it, the expected successes of
/// their failures, the model's raw logit, and the outcome.
#[derive(Debug, Clone, Copy)]
pub struct Example {
    pub class: DeclineClass,
    pub retries: u32,
    pub expected: f64,
    pub logit: f64,
    pub succeeded: bool,
}

/// Fit the correction on `rows` (the fit split), with calibration `p = σ(a·z + b)` applied to
/// the shifted logit. Per class: the means, then `γ` by Newton's method on the log-likelihood
/// with a weak ridge (0.5·γ²); `γ = 0` where a class has fewer than [`MIN_ROWS`] later retries.
pub fn fit(rows: &[Example], platt: (f64, f64)) -> FailedRetries {
    let n_class = DeclineClass::VARIANTS.len();
    let mut sums = vec![vec![(0.0f64, 0u64); RETRY_CELLS]; n_class];
    for r in rows.iter().filter(|r| r.retries > 0) {
        let cell = &mut sums[r.class as usize][(r.retries as usize).min(RETRY_CELLS) - 1];
        cell.0 += r.expected;
        cell.1 += 1;
    }
    let mean: Vec<Vec<f64>> =
        sums.iter().map(|cells| cells.iter().map(|&(s, n)| if n > 0 { s / n as f64 } else { 0.0 }).collect()).collect();
    let mut out = FailedRetries { gamma: vec![0.0; n_class], mean, rows: vec![0; n_class] };
    let (a, b) = platt;
    for class in DeclineClass::VARIANTS {
        let c = *class as usize;
        let xs: Vec<(f64, f64, bool)> = rows
            .iter()
            .filter(|r| r.retries > 0 && r.class == *class)
            .map(|r| {
                let k = (r.retries as usize).min(RETRY_CELLS) - 1;
                (a * r.logit + b, a * (r.expected - out.mean[c][k]), r.succeeded)
            })
            .collect();
        out.rows[c] = xs.len() as u64;
        if xs.len() < MIN_ROWS {
            continue;
        }
        let mut g = 0.0f64;
        for _ in 0..30 {
            let (mut grad, mut hess) = (-0.5 * 2.0 * g, 0.5 * 2.0);
            for &(z, x, y) in &xs {
                let p = crate::model::sigmoid(z + g * x);
                grad += (y as u8 as f64 - p) * x;
                hess += p * (1.0 - p) * x * x;
            }
            let step = grad / hess;
            g = (g + step).clamp(MIN_GAMMA, 0.0);
            if step.abs() < 1e-9 {
                break;
            }
        }
        out.gamma[c] = g;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Payments whose success odds carry a per-payment random effect: the fitted γ is negative,
    /// and a payment whose earlier retries had high P is shifted down against the mean.
    #[test]
    fn recovers_a_random_effect_from_sequences() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut rows = Vec::new();
        for _ in 0..20_000 {
            let u: f64 = rng.random::<f64>() * 2.0 - 1.0;
            let frailty = 1.5 * u; // payment-level log-odds the model does not see
            let mut expected = 0.0;
            for retries in 0..4u32 {
                let logit = rng.random::<f64>() * 3.0 - 2.0; // what the model sees
                let y = rng.random::<f64>() < crate::model::sigmoid(logit + frailty);
                rows.push(Example { class: DeclineClass::SoftFunds, retries, expected, logit, succeeded: y });
                if y {
                    break;
                }
                expected += crate::model::sigmoid(logit);
            }
        }
        let f = fit(&rows, (1.0, 0.0));
        let g = f.gamma[DeclineClass::SoftFunds as usize];
        assert!(g < -0.3, "γ = {g}");
        assert_eq!(f.gamma[DeclineClass::Technical as usize], 0.0, "a class without rows gets none");
        let m = f.mean[DeclineClass::SoftFunds as usize][0];
        assert!(f.shift(DeclineClass::SoftFunds, 1, m + 0.5) < 0.0);
        assert!(f.shift(DeclineClass::SoftFunds, 1, (m - 0.3).max(0.0)) > 0.0);
        assert_eq!(f.shift(DeclineClass::SoftFunds, 0, 3.0), 0.0);
    }
}
