//! Fitting the failed-retries correction (learning side); the correction and how the
//! engine applies it are core: [`recoup_core::failed_retries`] (re-exported here).
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

pub use recoup_core::failed_retries::*;

use strum::VariantArray;

use crate::declines::DeclineClass;

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

/// Fit the correction on `rows` (the calibration split: the model's logit out of sample), with calibration `p = σ(a·z + b)` applied to
/// the shifted logit. Per class: the means, then `γ` by Newton's method on the log-likelihood
/// with a weak ridge (0.5·γ²), its standard error from the curvature there, and the `γ` the
/// model holds [`PESSIMISM_SE`] standard errors below the fit. Every class is fitted: one
/// with few later retries has a wide standard error and is held near the prior's bound
/// (none at all: `0 ± 1`, held at `−2`, and its mean `E` is 0).
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
    let mut out =
        FailedRetries { gamma: vec![0.0; n_class], fitted: vec![0.0; n_class], se: vec![0.0; n_class], mean, rows: vec![0; n_class] };
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
        // The log-likelihood's gradient and curvature in γ (with the ridge's).
        let slope = |g: f64| {
            xs.iter().fold((-0.5 * 2.0 * g, 0.5 * 2.0), |(grad, hess), &(z, x, y)| {
                let p = crate::model::sigmoid(z + g * x);
                (grad + (y as u8 as f64 - p) * x, hess + p * (1.0 - p) * x * x)
            })
        };
        let mut g = 0.0f64;
        for _ in 0..30 {
            let (grad, hess) = slope(g);
            let step = grad / hess;
            g = (g + step).clamp(MIN_GAMMA, 0.0);
            if step.abs() < 1e-9 {
                break;
            }
        }
        let se = 1.0 / slope(g).1.sqrt();
        (out.fitted[c], out.se[c]) = (g, se);
        out.gamma[c] = (g - PESSIMISM_SE * se).clamp(MIN_GAMMA, 0.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `payments` failed payments of `class` whose success odds carry a per-payment random
    /// effect (uniform in ±1.5 logit, unseen by the model), each retried up to `retries` times
    /// until it succeeds, every retry at a model logit uniform in `low .. low + width`.
    fn sequences(seed: u64, payments: usize, retries: u32, class: DeclineClass, (low, width): (f64, f64)) -> Vec<Example> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut rows = Vec::new();
        for _ in 0..payments {
            let frailty = 1.5 * (rng.random::<f64>() * 2.0 - 1.0);
            let mut expected = 0.0;
            for k in 0..retries {
                let logit = low + width * rng.random::<f64>();
                let y = rng.random::<f64>() < crate::model::sigmoid(logit + frailty);
                rows.push(Example { class, retries: k, expected, logit, succeeded: y });
                if y {
                    break;
                }
                expected += crate::model::sigmoid(logit);
            }
        }
        rows
    }

    /// Payments whose success odds carry a per-payment random effect: the fitted γ is negative,
    /// and a payment whose earlier retries had high P is shifted down against the mean.
    #[test]
    fn recovers_a_random_effect_from_sequences() {
        let rows = sequences(7, 20_000, 4, DeclineClass::SoftFunds, (-2.0, 3.0));
        let f = fit(&rows, (1.0, 0.0));
        let g = f.gamma[DeclineClass::SoftFunds as usize];
        assert!(g < -0.3, "γ = {g}");
        let t = DeclineClass::Technical as usize;
        assert_eq!((f.fitted[t], f.se[t]), (0.0, 1.0), "a class without rows: the prior alone");
        assert!((f.gamma[t] + PESSIMISM_SE).abs() < 1e-12, "held at the prior's bound: {}", f.gamma[t]);
        let m = f.mean[DeclineClass::SoftFunds as usize][0];
        assert!(f.shift(DeclineClass::SoftFunds, 1, m + 0.5) < 0.0);
        assert!(f.shift(DeclineClass::SoftFunds, 1, (m - 0.3).max(0.0)) > 0.0);
        assert_eq!(f.shift(DeclineClass::SoftFunds, 0, 3.0), 0.0);
        let (fitted, se) = (f.fitted[DeclineClass::SoftFunds as usize], f.se[DeclineClass::SoftFunds as usize]);
        assert!(se > 0.0 && se < 0.2, "se {se}");
        assert!((g - (fitted - PESSIMISM_SE * se)).abs() < 1e-12, "γ {g} held two standard errors below the fit {fitted} ± {se}");
    }

    /// Random-effect sequences whose failed retries all had about the same P (a log that
    /// retries at ordinary times): the fit cannot tell γ, its standard error is wide, and the
    /// γ held leans toward a larger drop by that much; a class with a handful of later retries
    /// is held near the prior's bound, with no cliff at a row count.
    #[test]
    fn an_unidentified_gamma_leans_toward_a_larger_drop() {
        // Every retry at an ordinary time: the P of the failed ones hardly varies.
        let mut rows = sequences(11, 600, 3, DeclineClass::SoftIssuer, (-0.6, 0.05));
        rows.extend(sequences(13, 12, 3, DeclineClass::Technical, (-1.0, 2.0)));
        let f = fit(&rows, (1.0, 0.0));
        let c = DeclineClass::SoftIssuer as usize;
        assert!(f.rows[c] >= 200, "{} later retries", f.rows[c]);
        assert!(f.se[c] > 0.4, "a narrow spread of E leaves γ loose: se {}", f.se[c]);
        assert!(f.gamma[c] <= f.fitted[c] - 0.8, "held {} against fitted {}", f.gamma[c], f.fitted[c]);
        assert!(f.gamma[c] >= MIN_GAMMA && f.gamma[c] <= 0.0);
        let t = DeclineClass::Technical as usize;
        assert!(f.rows[t] > 0 && f.rows[t] < 30, "{} later retries", f.rows[t]);
        assert!(f.se[t] > 0.7 && f.se[t] <= 1.0, "the prior's SD bounds a thin fit's: se {}", f.se[t]);
        assert!(f.gamma[t] < -1.3, "a handful of rows: near the prior's bound, held {}", f.gamma[t]);
    }
}
