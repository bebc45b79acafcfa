//! How much history does a model need (#25)? `recoup train --sample-payers S`
//! trains on a stable share of the payers, and `recoup train --learning-curve`
//! fits on growing shares and scores every fit on the same held-out test split.
//!
//! A payer's place in the sample is a documented stable hash, not the process's
//! hasher: the first 8 bytes of SHA-256(`recoup-sample/v1:` + customer id),
//! big-endian, over 2⁶⁴. A payer is in a sample of share `s` when that is below
//! `s`, so every sample holds the smaller ones and any tool can recompute it.
//! The curve's test split is the latest `test_fraction` of the full history's
//! retries, all payers (what a model trained on more data would be judged on);
//! each share trains on its payers' earlier retries, with its own calibration
//! split, exactly as `recoup train` would.
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

use serde::Serialize;

use crate::history::History;
use crate::train::{build, split_points, train, FitError, TrainConfig};

/// The shares of payers the learning curve fits on.
pub const SHARES: [f64; 6] = [1.0 / 32.0, 1.0 / 16.0, 0.125, 0.25, 0.5, 1.0];

/// A payer's place in [0, 1) for sampling (see the module documentation).
pub fn payer_fraction(customer_id: &str) -> f64 {
    place_fraction(crate::history::payer_place(customer_id))
}

/// A [`crate::history::payer_place`] as a share of its range.
pub fn place_fraction(place: u64) -> f64 {
    place as f64 / 2f64.powi(64)
}

/// Keep the attempts of the payers whose place is below `share`; returns (payers kept, payers).
pub fn sample_payers(h: &mut History, share: f64) -> (usize, usize) {
    let keep: Vec<bool> = (0..h.customer_ids.len() as u32).map(|c| payer_fraction(h.customer_ids.get(c)) < share).collect();
    h.attempts.retain(|a| keep.get(a.customer.0 as usize).copied().unwrap_or(false));
    (keep.iter().filter(|k| **k).count(), keep.len())
}

/// One point of the curve.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    /// Share of the payers trained on.
    pub share: f64,
    /// Their retries before the test split (fit and calibration).
    pub train_examples: usize,
    /// The common test split.
    pub test_examples: usize,
    pub log_loss: f64,
    pub auc: f64,
    /// Expected calibration error over 10 bins.
    pub ece: f64,
    pub fit_seconds: f64,
}

/// Fit on each of `shares` of the payers and score on the full history's test split.
/// A share with too few examples to fit is left out and named in the returned notes.
pub fn curve(
    h: &History,
    cfg: &TrainConfig,
    shares: &[f64],
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<CurvePoint>, Vec<String>), FitError> {
    let set = build(h);
    let n = set.len();
    if n < 100 {
        return Err(FitError::TooFewExamples(n));
    }
    let (_, test_start) = split_points(n, cfg);
    let place: Vec<f64> = (0..test_start).map(|i| place_fraction(set.payers[i])).collect();
    let test: Vec<usize> = (test_start..n).collect();
    let (mut points, mut notes) = (Vec::new(), Vec::new());
    for &share in shares {
        let mut idx: Vec<usize> = (0..test_start).filter(|&i| place[i] < share).collect();
        let train_examples = idx.len();
        idx.extend_from_slice(&test);
        // The test split of the subset is exactly the common one.
        let mut params = cfg.params().clone();
        params.test_fraction = (test.len() as f64 + 0.5) / idx.len() as f64;
        let sub_cfg = match params.check() {
            Ok(c) if train_examples >= 200 => c,
            _ => {
                notes.push(format!("share {share}: {train_examples} retries to learn from, too few beside {} test retries", test.len()));
                continue;
            }
        };
        let sub = set.select(&idx);
        let t = train(&sub, &sub_cfg, &mut |_| {})?;
        let m = &t.report.model;
        progress(&format!(
            "share {:.4}: {train_examples} retries → test log loss {:.4}, AUC {:.4}, ECE {:.4} ({:.1} s)",
            share, m.log_loss, m.auc, m.ece, t.fit_seconds
        ));
        points.push(CurvePoint {
            share,
            train_examples,
            test_examples: m.examples,
            log_loss: m.log_loss,
            auc: m.auc,
            ece: m.ece,
            fit_seconds: t.fit_seconds,
        });
    }
    Ok((points, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payer_hash_is_the_documented_one_and_samples_nest() {
        // SHA-256("recoup-sample/v1:cus_1") starts 9111f7b3de66590a (Python's hashlib):
        // 0x9111f7b3de66590a / 2^64.
        assert!((payer_fraction("cus_1") - 0.5666804136402787).abs() < 1e-15);
        let places: Vec<f64> = (0..10_000).map(|i| payer_fraction(&format!("cus_{i}"))).collect();
        assert!(places.iter().all(|p| (0.0..1.0).contains(p)));
        let share = |s: f64| places.iter().filter(|p| **p < s).count() as f64 / places.len() as f64;
        assert!((share(0.25) - 0.25).abs() < 0.02 && (share(0.5) - 0.5).abs() < 0.02, "uniform");
    }
}
