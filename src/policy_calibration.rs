//! Calibration where the policy acts (#20): the per-class Platt scalings are refitted on
//! the calibration window's logged retries, each weighted by how close it came to the
//! retry the learned policy would have made from the same state.
//!
//! **Why.** The per-class scalings ([`crate::train::fit_class_platt`]) make the model
//! calibrated on the log's own retries. The engine does not retry where the log did: it
//! retries where the model is most hopeful, and there a model that is wrong in a way the
//! log's spread of retries averages out (terms that fit noise, a level that is flat where
//! the truth still rises) is wrong in one direction: the chosen retries' predictions were
//! 0.03–0.05 off per class and stage on zoo worlds whose whole calibration split was fine.
//! Calibrating on the distribution where the model is used is the usual answer to a
//! shift between where a model is fitted and where it is used (importance weighting).
//!
//! **How.** For each logged retry `k` of a failed payment inside the calibration window
//! (the same time window the scalings were fitted on: the model's logit is out of sample
//! there), the engine decides from the payment as it stood after attempt `k − 1` (its
//! attempts, the payer's earlier payments, whether the method was updated before `k`),
//! with the default engine settings and no exploration. The logged retry gets the weight
//! `exp(−Δ² / 2h²)`, `Δ` the hours between it and the engine's chosen time, `h` =
//! [`BANDWIDTH_HOURS`]; 0 when the engine would not retry. Per decline class and retry
//! stage, the scaling then moves by an offset fitted on the weighted retries (the logit as
//! the engine scores it, failed-retries shift included; [`crate::engine::retry_logit`]),
//! ridge-shrunk by [`RIDGE`] (in units of weight: a cell with little weight near the
//! policy's choices keeps its scaling). Only the offset moves: near the chosen times the
//! predictions span too narrow a range to tell a slope.
//!
//! **Assumptions**, written in the model card: a logged retry within a few hours of the
//! policy's choice has the success rate the policy's retry would have (the kernel's
//! bias); the policy's choices are those of the default engine settings (a deployment
//! with other costs chooses other times); one pass (the refitted scalings move the
//! choices a little, not refitted again). Sharded training's fit step keeps no history:
//! it reads the payers of shard 0 of [`replay_shards`] back from the history the shard
//! jobs read (the same retries a single process replays), and where it cannot read it,
//! skips this step and says why in the model card.
//!
//! Beside the refit, the refitted model is checked the same way on the test window's
//! logged retries ([`check`]): held-out calibration where the policy acts, in the model card,
//! each cell with its standard error and its distance from the refit ([`disagreement`]).
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use strum::VariantArray;

use crate::declines::DeclineClass;
use crate::domain::{Channel, Outcome};
use crate::engine::{self, EngineConfig, Request};
use crate::export::{self, Open, Payers};
use crate::history::History;
use crate::model::{Platt, SuccessModel};
pub use crate::train::{disagreement, ActingCalibration, ActingCell, ActingCheck, DISAGREE_SE};

/// The kernel's bandwidth: a logged retry this many hours from the policy's choice weighs
/// e^(−1/2) ≈ 0.61; one a day away, 0.14.
pub const BANDWIDTH_HOURS: f64 = 12.0;

/// About this many logged retries are replayed per window at most: above it, only the
/// payers of one shard of [`replay_shards`] (by [`crate::history::shard_of`], the same
/// payers in every run, sharded or not). A replay costs about 0.5 ms of CPU (a decision
/// and a scoring), so this bounds the step to about 2.5 s of wall time on 2 cores for
/// both windows; it still leaves hundreds of weight per cell (a logged retry's mean
/// weight was 0.25–0.28 on the zoo's logs).
pub const MAX_REPLAYS: usize = 10_000;

/// Ridge on a cell's offset, in units of weight (about that many retries at the policy's choice).
pub const RIDGE: f64 = 4.0;

/// A logged retry, as serving would have seen its payment just before it.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The payment after attempt `k − 1`, `now` at that attempt.
    pub req: Request,
    /// The logged retry: when, with which message, and whether it succeeded.
    pub at: DateTime<Utc>,
    pub channel: Channel,
    pub succeeded: bool,
}

/// Into how many shards of payers the replay cuts a window of `retries` logged retries:
/// it replays shard 0 of them. Shard 0 of more shards is a subset of shard 0 of fewer, so
/// one load of shard 0 of the smaller count serves both windows.
pub fn replay_shards(retries: usize) -> u64 {
    retries.div_ceil(MAX_REPLAYS).max(1) as u64
}

/// The logged retries of `h` made in `window` (a failed payment's attempts after its
/// original charge) by the payers of shard 0 of `shards` (`payers`: [`Payers::new`] of `h`), in time order (ties by payment id:
/// the same order whether `h` holds every payer or only that shard's).
pub fn replays(h: &History, payers: &Payers, window: std::ops::Range<DateTime<Utc>>, shards: u64) -> Vec<Replay> {
    let mut at: Vec<(DateTime<Utc>, &str, &[crate::attempt::Attempt], usize)> = Vec::new();
    for p in h.payments().filter(|p| p[0].outcome == Outcome::Failed) {
        if shards > 1 && crate::history::shard_of(h.customer_id(&p[0]), shards) != 0 {
            continue;
        }
        for k in 1..p.len() {
            if window.contains(&p[k].attempted_at) {
                at.push((p[k].attempted_at, h.payment_id(&p[0]), p, k));
            }
        }
    }
    at.sort_by(|x, y| (x.0, x.1, x.3).cmp(&(y.0, y.1, y.3)));
    at.iter()
        .map(|&(t, _, p, k)| {
            let mut req = export::request(h, payers, &Open { attempts: &p[..k] }, p[k - 1].attempted_at);
            // An update recorded on retry k happened before it: serving would have been told.
            req.payment_method_updated = p[k].method_updated();
            Replay { req, at: t, channel: p[k].channel.unwrap_or(Channel::None), succeeded: p[k].outcome == Outcome::Succeeded }
        })
        .collect()
}

/// One replayed retry, scored: its cell, calibrated logit under the current scaling, outcome, weight.
struct Scored {
    class: DeclineClass,
    later: bool,
    x: f64,
    succeeded: bool,
    weight: f64,
}

/// The scored retries of one decline class at one stage that carry weight.
fn cell(scored: &[Scored], class: DeclineClass, later: bool) -> Vec<&Scored> {
    scored.iter().filter(|s| s.class == class && s.later == later && s.weight > 1e-6 && s.x.is_finite()).collect()
}

fn stage(later: bool) -> String {
    if later { "later retries" } else { "first retry" }.to_string()
}

fn score(model: &SuccessModel, cfg: &EngineConfig, r: &Replay) -> Option<Scored> {
    let last = r.req.attempts.last()?;
    let class = last.decline.class();
    let retries = r.req.attempts.len() as u32 - 1;
    let d = engine::decide(model, cfg, &r.req, (1.0, 0.0)).ok()?;
    let weight = match d.chosen.filter(|_| d.action == engine::Action::Retry) {
        Some(c) => {
            let hours = (r.at - c.retry_at).num_seconds() as f64 / 3600.0;
            (-hours * hours / (2.0 * BANDWIDTH_HOURS * BANDWIDTH_HOURS)).exp()
        }
        None => 0.0,
    };
    let z = engine::retry_logit(model, &r.req, r.at, r.channel).ok()?;
    let platt = model.platt_for(class, retries);
    Some(Scored { class, later: retries > 0, x: platt.a * z + platt.b, succeeded: r.succeeded, weight })
}

/// Refit `model`'s per-class scalings where the policy acts (see the module documentation).
pub fn refit(model: &mut SuccessModel, cfg: &EngineConfig, replays: &[Replay]) -> ActingCalibration {
    if replays.is_empty() {
        return ActingCalibration::skipped("no logged retries of failed payments in the calibration window");
    }
    let scored: Vec<Scored> = replays.par_iter().filter_map(|r| score(model, cfg, r)).collect();
    let n_class = DeclineClass::VARIANTS.len();
    if model.class_platt.len() != n_class {
        model.class_platt = vec![[model.platt(); 2]; n_class];
    }
    let mut out = ActingCalibration {
        replayed: replays.len(),
        policy_retries: scored.iter().filter(|s| s.weight > 0.0).count(),
        bandwidth_hours: BANDWIDTH_HOURS,
        cells: Vec::new(),
        skipped: None,
        test: Vec::new(),
    };
    for class in DeclineClass::VARIANTS {
        for later in [false, true] {
            let xs: Vec<(f64, bool, f64)> = cell(&scored, *class, later).iter().map(|s| (s.x, s.succeeded, s.weight)).collect();
            if xs.is_empty() {
                continue;
            }
            let (d, _) = crate::train::fit_departure(&xs, RIDGE, false);
            let base: Platt = model.class_platt[*class as usize][later as usize];
            model.class_platt[*class as usize][later as usize] = crate::train::departure(base, (d, 0.0));
            let weight: f64 = xs.iter().map(|x| x.2).sum();
            let mean = |f: &dyn Fn(&(f64, bool, f64)) -> f64| xs.iter().map(|x| x.2 * f(x)).sum::<f64>() / weight;
            let se = residual_se(xs.iter().map(|x| (x.2, x.1, crate::model::sigmoid(x.0 + d))));
            out.cells.push(ActingCell {
                class: <&str>::from(*class).to_string(),
                stage: stage(later),
                retries: xs.len(),
                weight,
                predicted_before: mean(&|x| crate::model::sigmoid(x.0)),
                predicted_after: mean(&|x| crate::model::sigmoid(x.0 + d)),
                observed: mean(&|x| x.1 as u8 as f64),
                offset: d,
                se,
            });
        }
    }
    out
}

/// `model` (refitted) on held-out `replays` (the test window's), weighted as the refit
/// weighs: per decline class and stage, the weighted mean predicted against realised.
pub fn check(model: &SuccessModel, cfg: &EngineConfig, replays: &[Replay]) -> Vec<ActingCheck> {
    let scored: Vec<Scored> = replays.par_iter().filter_map(|r| score(model, cfg, r)).collect();
    let mut out = Vec::new();
    for class in DeclineClass::VARIANTS {
        for later in [false, true] {
            let cell = cell(&scored, *class, later);
            if cell.is_empty() {
                continue;
            }
            let weight: f64 = cell.iter().map(|s| s.weight).sum();
            out.push(ActingCheck {
                class: <&str>::from(*class).to_string(),
                stage: stage(later),
                retries: cell.len(),
                weight,
                predicted: cell.iter().map(|s| s.weight * crate::model::sigmoid(s.x)).sum::<f64>() / weight,
                observed: cell.iter().map(|s| s.weight * s.succeeded as u8 as f64).sum::<f64>() / weight,
                se: residual_se(cell.iter().map(|s| (s.weight, s.succeeded, crate::model::sigmoid(s.x)))),
            });
        }
    }
    out
}

/// The standard error of a weighted mean residual `Σw(y − p) / Σw` over `(w, y, p)`: √Σw²(y − p)² / Σw
/// (the sandwich form: no assumption that `p` is right, only that the retries are independent).
fn residual_se(rows: impl Iterator<Item = (f64, bool, f64)>) -> f64 {
    let (mut sw, mut s2) = (0.0, 0.0);
    for (w, y, p) in rows {
        let r = y as u8 as f64 - p;
        sw += w;
        s2 += w * w * r * r;
    }
    if sw > 0.0 {
        s2.sqrt() / sw
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_residual_standard_error_is_the_weighted_sandwich_and_ignores_the_weights_scale() {
        // Four retries at p = 0.5, weight 1: each residual ±0.5, so √(4 · 0.25) / 4 = 0.25.
        let rows = [(1.0, true, 0.5), (1.0, false, 0.5), (1.0, true, 0.5), (1.0, false, 0.5)];
        assert!((residual_se(rows.into_iter()) - 0.25).abs() < 1e-12);
        // Scaling every weight leaves it; weighting one retry more moves it toward that retry alone.
        assert!((residual_se(rows.iter().map(|&(w, y, p)| (3.0 * w, y, p))) - 0.25).abs() < 1e-12);
        let skewed = residual_se([(9.0, true, 0.9), (1.0, false, 0.9)].into_iter());
        assert!((skewed - (81.0f64 * 0.01 + 0.81).sqrt() / 10.0).abs() < 1e-12, "{skewed}");
        assert_eq!(residual_se(std::iter::empty()), 0.0);
    }

    #[test]
    fn disagreement_counts_both_windows_noise_and_is_none_without_it() {
        let cell = ActingCell {
            class: "soft_funds".into(),
            stage: "first retry".into(),
            retries: 300,
            weight: 100.0,
            predicted_before: 0.40,
            predicted_after: 0.45,
            observed: 0.45,
            offset: 0.2,
            se: 0.03,
        };
        let test = ActingCheck {
            class: "soft_funds".into(),
            stage: "first retry".into(),
            retries: 600,
            weight: 200.0,
            predicted: 0.45,
            observed: 0.35,
            se: 0.04,
        };
        // −0.10 over √(0.03² + 0.04²) = 0.05.
        let z = disagreement(&cell, &test).unwrap();
        assert!((z + 2.0).abs() < 1e-9, "{z}");
        // A model trained before the standard errors were kept says nothing, not "0 SE".
        assert_eq!(disagreement(&ActingCell { se: 0.0, ..cell.clone() }, &test), None);
        assert_eq!(disagreement(&cell, &ActingCheck { se: 0.0, ..test }), None);
    }
}
