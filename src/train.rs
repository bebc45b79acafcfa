//! Training: the batch feature path over a whole history, the fit, the
//! calibration and the honest, time-split evaluation.
//!
//! Every retry attempt (attempt_number ≥ 1) is one example: the payment's
//! earlier attempts, the payer's pay-day evidence from *earlier* payments, and
//! the retry's own time and channel are the features; its outcome is the label.
//! Examples are split by time: the last `test_fraction` of retry times is the
//! test set, and within the rest the last `calibration_fraction` calibrates.
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use strum::VariantArray;

use crate::attempt::Attempt;
use crate::declines::{DeclineClass, DeclineCode};
use crate::domain::{Channel, CustomerIx, Outcome};
use crate::features::{
    channel_slots, evidence_with_retries, group_levels, payment_evidence, Candidate, EarlierAttempt, GroupLevels, PaymentFacts,
    PaymentState, ACTIVE, SCHEMA,
};
use crate::history::History;
use crate::model::{logit_loss, sigmoid, Platt, SuccessModel, TREE_GROUPS};
use crate::payday::Evidence;
use crate::trees::{BoostConfig, Forest};

/// The examples of a history, one per retry attempt, in time order.
#[derive(Debug, Default, Clone)]
pub struct TrainingSet {
    /// Active columns, [`ACTIVE`] per example.
    pub columns: Vec<u16>,
    /// Whether the retry succeeded.
    pub labels: Vec<bool>,
    /// When the retry was made.
    pub times: Vec<DateTime<Utc>>,
    /// The decline the retry answered.
    pub declines: Vec<DeclineCode>,
    /// The payer's [`crate::history::payer_place`] (the stable hash that samples and shards cut).
    pub payers: Vec<u64>,
    /// The example's place among its payer's examples: with the time and the payer, the
    /// key that orders examples the same however the history was split or stored.
    pub seq: Vec<u32>,
    /// The payment of the retry: an id unique within the set (in one history, its
    /// [`crate::domain::PaymentIx`]).
    pub payments: Vec<u32>,
    /// The retry's time finer than the model's levels (what [`crate::residuals`] cuts by;
    /// shards keep them too); empty when unknown (a set made by hand), and then the
    /// residuals have the feature groups' cuts only.
    pub stamps: Vec<Stamp>,
}

pub use crate::residuals::Stamp;

/// Where `model` is wrong on the examples `range` of `set` ([`crate::residuals`]): each
/// scored as served. `set` holds the examples before the range too, since a retry's
/// failed-retries correction reads its payment's earlier retries.
pub fn residuals(set: &TrainingSet, model: &SuccessModel, range: std::ops::Range<usize>) -> crate::residuals::Residuals {
    let examples = failed_retry_examples(set, model);
    residuals_of(set, &examples[range.clone()], model, range)
}

/// [`residuals`] from the range's examples already made by [`failed_retry_examples`]
/// (training keeps the test split's: [`Trained::test_examples`]). Their logits and
/// failed-retries inputs do not depend on the per-class scalings, so a refit of those
/// after they were made does not stale them.
pub fn residuals_of(
    set: &TrainingSet,
    part: &[crate::failed_retries::Example],
    model: &SuccessModel,
    range: std::ops::Range<usize>,
) -> crate::residuals::Residuals {
    assert_eq!(part.len(), range.len(), "one example per retry of the range");
    let p = calibrated(model, part);
    let classes: Vec<DeclineClass> = part.iter().map(|e| e.class).collect();
    let succeeded: Vec<bool> = part.iter().map(|e| e.succeeded).collect();
    crate::residuals::residuals(&crate::residuals::Scored {
        columns: &set.columns[range.start * ACTIVE..range.end * ACTIVE],
        p: &p,
        classes: &classes,
        succeeded: &succeeded,
        payers: set.payers.get(range.clone()).unwrap_or_default(),
        stamps: set.stamps.get(range).unwrap_or_default(),
    })
}

impl TrainingSet {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The active columns of example `i`.
    pub fn row(&self, i: usize) -> &[u16] {
        &self.columns[i * ACTIVE..(i + 1) * ACTIVE]
    }
}

/// The payment facts as of an attempt.
pub fn facts_of(a: &Attempt) -> PaymentFacts {
    PaymentFacts {
        amount_minor: a.amount.minor,
        currency: a.amount.currency,
        method: a.method,
        card_brand: a.card_brand,
        card_funding: a.card_funding,
        country: a.country,
        timezone: a.timezone,
        billing_interval: a.billing_interval,
        tenure_days: a.tenure_days,
    }
}

/// Evidence known strictly before `cutoff`.
pub fn evidence_before(events: &[(DateTime<Utc>, Evidence)], cutoff: DateTime<Utc>) -> Vec<Evidence> {
    events.iter().filter(|(t, _)| *t < cutoff).map(|(_, e)| *e).collect()
}

/// Every retry of the history as the support counts it ([`crate::support`]).
pub fn observed_retries(h: &History) -> Vec<crate::support::Observed> {
    let mut out = Vec::new();
    for p in h.payments() {
        for (k, w) in p.windows(2).enumerate() {
            let Some(class) = w[0].decline.map(|d| d.class()) else { break };
            out.push(crate::support::Observed {
                class,
                spacing_hours: (w[1].attempted_at - w[0].attempted_at).num_minutes() as f64 / 60.0,
                hours_since_failure: (w[1].attempted_at - p[0].attempted_at).num_minutes() as f64 / 60.0,
                retry_number: k as u32 + 1,
                local_hour: w[1].attempted_at.with_timezone(&w[1].timezone).hour(),
                channel: w[1].channel.unwrap_or(crate::domain::Channel::None),
            });
        }
    }
    out
}

/// Build the examples of `h` (the batch feature path), in parallel over payers.
pub fn build(h: &History) -> TrainingSet {
    build_placed(h, &h.payer_places())
}

/// [`build`] with the history's [`History::payer_places`] already computed.
pub fn build_placed(h: &History, places: &[u64]) -> TrainingSet {
    // Payments grouped by payer, in the order of their first attempt.
    let payments: Vec<&[Attempt]> = h.payments().collect();
    let mut by_customer: HashMap<CustomerIx, Vec<usize>> = HashMap::new();
    for (i, p) in payments.iter().enumerate() {
        by_customer.entry(p[0].customer).or_default().push(i);
    }
    let mut customers: Vec<Vec<usize>> = by_customer.into_values().collect();
    customers.sort_unstable_by_key(|ps| ps[0]);
    let parts: Vec<TrainingSet> = customers
        .par_iter()
        .map(|ps| {
            let mut out = TrainingSet::default();
            let mut ps: Vec<&[Attempt]> = ps.iter().map(|&i| payments[i]).collect();
            ps.sort_by_key(|p| p[0].attempted_at);
            let tz = ps[0][0].timezone;
            let payer = places[ps[0][0].customer.0 as usize];
            let mut events: Vec<(DateTime<Utc>, Evidence)> =
                ps.iter().flat_map(|p| payment_evidence(tz, &p.iter().map(|a| (a.attempted_at, a.decline)).collect::<Vec<_>>())).collect();
            events.sort_by_key(|(t, e)| (*t, *e));
            for p in ps {
                if p.len() < 2 {
                    continue;
                }
                let evidence = evidence_before(&events, p[0].attempted_at);
                let payday = crate::payday::infer(p[0].country, &evidence);
                let earlier: Vec<EarlierAttempt> = p.iter().map(EarlierAttempt::from).collect();
                // The inference with this payment's own funds retries: redone only when one is added.
                let mut own_payday = payday;
                for k in 1..p.len() {
                    let a = &p[k];
                    let updated = a.payment_method_updated.unwrap_or(false);
                    // After a failed retry its own funds declines are pay-day evidence too.
                    if k > 1 && earlier[k - 1].decline.class() == DeclineClass::SoftFunds {
                        own_payday = crate::payday::infer(p[0].country, &evidence_with_retries(&evidence, tz, &earlier[..k]));
                    }
                    let payday = own_payday;
                    let Some(state) = PaymentState::with_payday(facts_of(&p[k - 1]), &earlier[..k], updated, payday) else {
                        continue;
                    };
                    out.columns.extend_from_slice(state.fixed());
                    state.candidate_columns(
                        &Candidate { at: a.attempted_at, channel: a.channel.unwrap_or(Channel::None) },
                        &mut out.columns,
                    );
                    out.labels.push(a.outcome == Outcome::Succeeded);
                    out.times.push(a.attempted_at);
                    out.declines.push(earlier[k - 1].decline);
                    out.payers.push(payer);
                    out.seq.push(out.seq.len() as u32);
                    out.payments.push(a.payment.0);
                    let local = a.attempted_at.with_timezone(&tz);
                    let since = (a.attempted_at - p[k - 1].attempted_at).num_hours().clamp(0, u16::MAX as i64) as u16;
                    out.stamps.push(Stamp { day_of_month: local.day() as u8, local_hour: local.hour() as u8, hours_since_last: since });
                }
            }
            out
        })
        .collect();
    TrainingSet::merge(parts)
}

impl TrainingSet {
    /// Concatenate sets (payment ids must already be distinct across them) and put the
    /// examples in the canonical order: by time, ties by payer place and place among the
    /// payer's examples. Splits are by time, and the order is the same however the
    /// payers were spread over the parts (shards give the single-process set exactly).
    pub fn merge(parts: Vec<TrainingSet>) -> TrainingSet {
        let mut all = TrainingSet::default();
        for p in parts {
            all.columns.extend(p.columns);
            all.labels.extend(p.labels);
            all.times.extend(p.times);
            all.declines.extend(p.declines);
            all.payers.extend(p.payers);
            all.seq.extend(p.seq);
            all.payments.extend(p.payments);
            all.stamps.extend(p.stamps);
        }
        // Stamps are kept only when every part has them.
        if all.stamps.len() != all.labels.len() {
            all.stamps.clear();
        }
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.par_sort_unstable_by_key(|&i| (all.times[i], all.payers[i], all.seq[i]));
        all.select(&order)
    }
}

impl TrainingSet {
    /// The examples at `ix`, in that order.
    pub fn select(&self, ix: &[usize]) -> TrainingSet {
        let mut columns = Vec::with_capacity(ix.len() * ACTIVE);
        for &i in ix {
            columns.extend_from_slice(self.row(i));
        }
        TrainingSet {
            columns,
            labels: ix.iter().map(|&i| self.labels[i]).collect(),
            times: ix.iter().map(|&i| self.times[i]).collect(),
            declines: ix.iter().map(|&i| self.declines[i]).collect(),
            payers: ix.iter().map(|&i| self.payers.get(i).copied().unwrap_or(0)).collect(),
            seq: ix.iter().map(|&i| self.seq.get(i).copied().unwrap_or(0)).collect(),
            payments: ix.iter().map(|&i| self.payments.get(i).copied().unwrap_or(u32::MAX)).collect(),
            stamps: if self.stamps.len() == self.len() { ix.iter().map(|&i| self.stamps[i]).collect() } else { Vec::new() },
        }
    }

    /// The examples in `range` (by time order).
    pub fn range(&self, r: std::ops::Range<usize>) -> TrainingSet {
        self.select(&r.collect::<Vec<_>>())
    }
}

/// Training settings as written (flags, code, a manifest's record); unchecked.
/// [`TrainParams::check`] makes the [`TrainConfig`] training takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// Share of the latest examples held out for testing.
    pub test_fraction: f64,
    /// Share of the latest training examples used to calibrate (Platt scaling).
    pub calibration_fraction: f64,
    /// L2 penalty candidates; the one with the best calibration-split log loss is kept.
    pub l2: Vec<f64>,
    /// Cap on coordinate-Newton sweeps per fit (each visits every feature slot once).
    pub max_sweeps: u64,
    /// Which model family to fit.
    #[serde(default)]
    pub family: Family,
    /// The trees' settings (family `trees`).
    #[serde(default)]
    pub boost: BoostConfig,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            test_fraction: 0.25,
            calibration_fraction: 0.15,
            l2: vec![1e-5, 1e-4, 1e-3],
            max_sweeps: 100,
            family: Family::Logistic,
            boost: BoostConfig::default(),
        }
    }
}

impl TrainParams {
    /// Refuse settings no fit can be made with (shares that leave no fit split, an empty
    /// or negative L2 path, boosting settings out of range), naming the setting.
    pub fn check(self) -> Result<TrainConfig, FitError> {
        recoup_core::checked::Params::check(self)
    }
}

impl recoup_core::checked::Params for TrainParams {
    type Error = FitError;

    fn problem(&self) -> Result<(), FitError> {
        let bad = |why: String| Err(FitError::Invalid(why));
        let share = |v: f64| v > 0.0 && v < 1.0;
        // The test split is the latest `test_fraction`; calibration the latest
        // `calibration_fraction` of the rest; the fit gets what remains.
        let fit_share = (1.0 - self.test_fraction) * (1.0 - self.calibration_fraction);
        if !share(self.test_fraction) || !share(self.calibration_fraction) || fit_share < 0.05 {
            return bad(format!(
                "test_fraction {} and calibration_fraction {} must each be in (0, 1) and leave at least 5 % to fit on",
                self.test_fraction, self.calibration_fraction
            ));
        }
        if self.l2.is_empty() || self.l2.iter().any(|l| !(l.is_finite() && *l >= 0.0)) {
            return bad(format!("l2 {:?}: give at least one non-negative penalty", self.l2));
        }
        if self.max_sweeps == 0 {
            return bad("max_sweeps must be at least 1".into());
        }
        let b = &self.boost;
        if !(b.learning_rate > 0.0 && b.learning_rate.is_finite() && b.l2 >= 0.0 && b.l2.is_finite() && b.leaves >= 2 && b.max_trees >= 1) {
            return bad(format!("boosting settings out of range: {b:?}"));
        }
        Ok(())
    }
}

/// Checked training settings (from [`TrainParams::check`]): the only form training takes.
pub type TrainConfig = recoup_core::checked::Checked<TrainParams>;

/// The model family `recoup train` fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `trees` when the fit split has at least [`TREES_MIN_EXAMPLES`] examples, else
    /// `logistic` (measured: on the 40 k-example sample trees gain 0.002 nats of test log
    /// loss for 2–3× the scoring time; on 1.1 M, 0.0066 nats and a faster fit). The
    /// default until 2026-12-02; see [`Family::Logistic`] for why it is no longer.
    Auto,
    /// L2-regularized logistic regression over the one-hot columns and crosses: the
    /// default at every size. Where the policy acts, trees on a 100,000-payer zoo log
    /// were the less calibrated and netted less (chosen-retry ECE 0.023 / 0.038 against
    /// 0.011 / 0.027 on the default and careless-log worlds; 63 % / 51 % of the oracle's
    /// uplift against 68 % / 52 %), though their held-out log loss is lower; at 20,000
    /// payers they netted less in all seven zoo worlds. Their bootstrap lower bound
    /// ([`crate::trees::bootstrap_spread`]) did not change that.
    #[default]
    Logistic,
    /// Boosted trees over the payment's and the retry time's groups, then the
    /// channel's logistic terms on top of them (the trees as a fixed offset).
    Trees,
}

/// Fewest fit examples for which `--family auto` fits trees.
pub const TREES_MIN_EXAMPLES: usize = 100_000;

/// The sparse logistic-regression objective: mean log loss + l2/2 · |w|² (intercept unpenalized).
struct Objective<'a> {
    set: &'a TrainingSet,
    l2: f64,
}

/// The smallest strided subset a warm-up fit uses: fits on fewer than 4 × this
/// many examples start cold (a warm-up would save too little to matter).
const WARM_UP_MIN: usize = 50_000;

/// Examples per parallel chunk; chunk results are summed in order, so the fit is
/// identical for any thread count.
const CHUNK: usize = 1 << 15;

impl Objective<'_> {
    fn dim(&self) -> usize {
        SCHEMA.len() + 1
    }

    /// (loss, gradient) at `w` (last element: intercept).
    fn eval(&self, w: &[f64], want_grad: bool) -> (f64, Vec<f64>) {
        let d = self.dim();
        let n = self.set.len();
        let parts: Vec<(f64, Vec<f64>)> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut loss = 0.0;
                let mut g = if want_grad { vec![0.0; d] } else { Vec::new() };
                for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                    let row = self.set.row(i);
                    let z = w[d - 1] + row.iter().map(|&k| w[k as usize]).sum::<f64>();
                    let y = self.set.labels[i];
                    loss += logit_loss(z, y);
                    if want_grad {
                        let r = sigmoid(z) - y as u8 as f64;
                        for &k in row {
                            g[k as usize] += r;
                        }
                        g[d - 1] += r;
                    }
                }
                (loss, g)
            })
            .collect();
        let mut loss = 0.0;
        let mut grad = vec![0.0; if want_grad { d } else { 0 }];
        for (l, g) in parts {
            loss += l;
            for (a, b) in grad.iter_mut().zip(g) {
                *a += b;
            }
        }
        let nf = n.max(1) as f64;
        loss /= nf;
        loss += 0.5 * self.l2 * w[..d - 1].iter().map(|x| x * x).sum::<f64>();
        for (k, gk) in grad.iter_mut().enumerate() {
            *gk /= nf;
            if k < d - 1 {
                *gk += self.l2 * w[k];
            }
        }
        (loss, grad)
    }
}

impl argmin::core::CostFunction for Objective<'_> {
    type Param = ndarray::Array1<f64>;
    type Output = f64;
    fn cost(&self, w: &Self::Param) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(w.as_slice().expect("contiguous"), false).0)
    }
}

impl argmin::core::Gradient for Objective<'_> {
    type Param = ndarray::Array1<f64>;
    type Gradient = ndarray::Array1<f64>;
    fn gradient(&self, w: &Self::Param) -> Result<Self::Gradient, argmin::core::Error> {
        Ok(ndarray::Array1::from(self.eval(w.as_slice().expect("contiguous"), true).1))
    }
}

/// Where a fit starts: `warm` (weights, intercept) when given, else zero
/// weights and the intercept at the (smoothed) base rate.
fn start_point(set: &TrainingSet, warm: Option<(&[f64], f64)>) -> Result<(Vec<f64>, f64), FitError> {
    let d = SCHEMA.len();
    match warm {
        Some((w, b)) => {
            if w.len() != d {
                return Err(FitError::Invalid(format!("warm start has {} weights, the schema {d}", w.len())));
            }
            Ok((w.to_vec(), b))
        }
        None => {
            let rate = (set.labels.iter().filter(|&&y| y).count() as f64 + 0.5) / (set.len() as f64 + 1.0);
            Ok((vec![0.0; d], (rate / (1.0 - rate)).ln()))
        }
    }
}

/// Fit the logistic regression on `set` with penalty `l2` by cyclic block
/// coordinate Newton steps, the fast path training uses.
///
/// Every example has exactly one active column in each slot (group or cross) of
/// the encoding, so within a slot the Hessian is diagonal and one exact Newton
/// step per column solves the slot's quadratic model. A sweep visits every slot
/// (and the intercept) once; each visit is one pass over the examples that
/// applies the previous slot's step to the cached logits and gathers the next
/// slot's gradient and curvature. Sweeps stop when the objective gains less
/// than `1e-6` nats per example, or after `max_sweeps`. Chunk sums are added in
/// order, so the fit is identical for any thread count. [`fit_logistic_lbfgs`]
/// (argmin) minimises the same objective and a test checks they agree.
///
/// Starts from `warm` (weights, intercept) when given, else from the base rate.
/// Returns (weights, intercept, sweeps).
pub fn fit_logistic(set: &TrainingSet, l2: f64, max_sweeps: u64, warm: Option<(&[f64], f64)>) -> Result<(Vec<f64>, f64, u64), FitError> {
    fit_logistic_on(set, l2, max_sweeps, warm, None, None)
}

/// [`fit_logistic`] with a fixed `offset` added to every example's logit (the
/// trees' part of a hybrid model) and only the slots in `only` (indices into an
/// encoded vector) fitted: the other weights stay where they start.
pub fn fit_logistic_on(
    set: &TrainingSet,
    l2: f64,
    max_sweeps: u64,
    warm: Option<(&[f64], f64)>,
    offset: Option<&[f64]>,
    only: Option<&[usize]>,
) -> Result<(Vec<f64>, f64, u64), FitError> {
    if set.is_empty() {
        return Err(FitError::NoExamples);
    }
    if offset.is_some_and(|o| o.len() != set.len()) {
        return Err(FitError::Invalid("offset has a length other than the examples'".into()));
    }
    let n = set.len();
    let nf = n as f64;
    let slots = SCHEMA.slot_ranges();
    let (mut w, mut b) = start_point(set, warm)?;
    let off = |i: usize| offset.map_or(0.0, |o| o[i]);
    let mut z: Vec<f64> = (0..n).into_par_iter().map(|i| b + off(i) + set.row(i).iter().map(|&k| w[k as usize]).sum::<f64>()).collect();
    // The slots visited, then the intercept (slot ACTIVE).
    let visit: Vec<usize> = only.map_or_else(|| (0..ACTIVE).collect(), <[usize]>::to_vec).into_iter().chain([ACTIVE]).collect();
    // Slot-major copy of the design, as offsets into the slot's range: a visit
    // reads two slots, not every row's whole vector (10× less memory traffic).
    let by_slot: Vec<Vec<u16>> = (0..ACTIVE)
        .into_par_iter()
        .map(
            |k| if visit.contains(&k) { (0..n).map(|i| set.columns[i * ACTIVE + k] - slots[k].start as u16).collect() } else { Vec::new() },
        )
        .collect();
    let labels: Vec<f64> = set.labels.iter().map(|&y| y as u8 as f64).collect();
    let objective = |z: &[f64], w: &[f64]| -> f64 {
        let parts: Vec<f64> = z
            .par_chunks(CHUNK)
            .enumerate()
            .map(|(c, zc)| zc.iter().zip(&set.labels[c * CHUNK..]).map(|(&z, &y)| logit_loss(z, y)).sum::<f64>())
            .collect();
        parts.iter().sum::<f64>() / nf + 0.5 * l2 * w.iter().map(|x| x * x).sum::<f64>()
    };
    let mut last = objective(&z, &w);
    // The step still to be applied to `z`: (slot, per-column deltas) or the intercept's.
    let mut pending: Option<(usize, Vec<f64>)> = None;
    let mut pending_b = 0.0;
    let mut sweeps = 0;
    while sweeps < max_sweeps {
        sweeps += 1;
        let (w0, b0, z0) = (w.clone(), b, z.clone());
        for &slot in &visit {
            let range = if slot < ACTIVE { slots[slot].clone() } else { 0..1 };
            let width = range.len();
            let prev = pending.take();
            let db = std::mem::take(&mut pending_b);
            let (g, h) = slot_gradient(&mut z, &labels, &by_slot, slot, width, prev.as_ref(), db);
            if slot < ACTIVE {
                let delta: Vec<f64> = (0..width)
                    .map(|k| {
                        let wk = w[range.start + k];
                        let step = -(g[k] / nf + l2 * wk) / (h[k] / nf + l2);
                        step.clamp(-2.0, 2.0)
                    })
                    .collect();
                for (k, dk) in delta.iter().enumerate() {
                    w[range.start + k] += dk;
                }
                pending = Some((slot, delta));
            } else {
                pending_b = (-(g[0] / nf) / (h[0] / nf).max(1e-12)).clamp(-2.0, 2.0);
                b += pending_b;
            }
        }
        // Apply the intercept's step, then measure.
        let db = std::mem::take(&mut pending_b);
        z.par_iter_mut().for_each(|zi| *zi += db);
        let now = objective(&z, &w);
        // Coordinate descent crawls along correlated slots (a group and its
        // crosses): try the sweep's whole step stretched (see `stretch_sweep`).
        let now = stretch_sweep((&w0, b0, &z0), (&mut w, &mut b, &mut z), now, &objective);
        let gain = last - now;
        last = now;
        if gain.abs() < 1e-6 {
            break;
        }
    }
    Ok((w, b, sweeps))
}

/// One coordinate-Newton visit's gradient and hessian per column of `slot` (the
/// intercept when `slot` is ACTIVE), applying first the previous visit's pending step
/// (`prev`: its slot and per-column deltas; `db`: the intercept's) to the logits `z`.
/// Chunks are added in order, so the sums do not depend on the thread count.
fn slot_gradient(
    z: &mut [f64],
    labels: &[f64],
    by_slot: &[Vec<u16>],
    slot: usize,
    width: usize,
    prev: Option<&(usize, Vec<f64>)>,
    db: f64,
) -> (Vec<f64>, Vec<f64>) {
    let parts: Vec<(Vec<f64>, Vec<f64>)> = z
        .par_chunks_mut(CHUNK)
        .enumerate()
        .map(|(c, zc)| {
            let mut g = vec![0.0; width];
            let mut h = vec![0.0; width];
            let lo = c * CHUNK;
            let ys = &labels[lo..lo + zc.len()];
            if let Some((ps, delta)) = prev {
                for (zi, &l) in zc.iter_mut().zip(&by_slot[*ps][lo..]) {
                    *zi += delta[l as usize];
                }
            }
            if db != 0.0 {
                zc.iter_mut().for_each(|zi| *zi += db);
            }
            if slot < ACTIVE {
                for ((zi, &l), &y) in zc.iter().zip(&by_slot[slot][lo..]).zip(ys) {
                    let p = sigmoid(*zi);
                    g[l as usize] += p - y;
                    h[l as usize] += p * (1.0 - p);
                }
            } else {
                for (zi, &y) in zc.iter().zip(ys) {
                    let p = sigmoid(*zi);
                    g[0] += p - y;
                    h[0] += p * (1.0 - p);
                }
            }
            (g, h)
        })
        .collect();
    let (mut g, mut h) = (vec![0.0; width], vec![0.0; width]);
    for (pg, ph) in parts {
        for k in 0..width {
            g[k] += pg[k];
            h[k] += ph[k];
        }
    }
    (g, h)
}

/// The logits are linear in the weights, so trying a sweep's whole step (from
/// `start` to `at`) stretched by t = 2, 4, 8… 64 costs one pass each; the best t is
/// kept (several-fold faster in the tail). Returns the objective at the point kept.
fn stretch_sweep(
    start: (&[f64], f64, &[f64]),
    at: (&mut Vec<f64>, &mut f64, &mut Vec<f64>),
    mut now: f64,
    objective: &dyn Fn(&[f64], &[f64]) -> f64,
) -> f64 {
    let ((w0, b0, z0), (w, b, z)) = (start, at);
    let stretch = |t: f64| -> (Vec<f64>, Vec<f64>) {
        let wt: Vec<f64> = w0.iter().zip(w.iter()).map(|(a, c)| a + t * (c - a)).collect();
        let zt: Vec<f64> = z0.par_iter().zip(z.par_iter()).map(|(a, c)| a + t * (c - a)).collect();
        (wt, zt)
    };
    let mut t = 2.0;
    let mut best_t = 1.0;
    while t <= 64.0 {
        let (wt, zt) = stretch(t);
        let ft = objective(&zt, &wt);
        if ft >= now {
            break;
        }
        (now, best_t) = (ft, t);
        t *= 2.0;
    }
    if best_t > 1.0 {
        let (wt, zt) = stretch(best_t);
        (*w, *z) = (wt, zt);
        *b = b0 + best_t * (*b - b0);
    }
    now
}

/// The least prior precision of a weight in [`weight_variances`] (a standard
/// deviation of at most 1 in logit: a level moving the odds by more than e² ≈
/// 7.4 times is implausible before any data). The fit's own prior, n · l2, is
/// weaker than that where n · l2 < 1: on small logs (a 20,000-payer foreign
/// log picks L2 = 1e-4 on 37,112 fit examples: 3.7; the zoo's 21 draws are
/// unchanged by it). There,
/// without it, a level a few
/// retries have gets a variance of up to 1 / (n · l2) (6.5 on a 240-retry
/// history), the engine's lower bound sank every slot's P toward 0, and the
/// model gave up payments the log recovered.
pub const MIN_PRIOR_PRECISION: f64 = 1.0;

/// Posterior variance of each weight of a fit on `set` with penalty `l2`, by
/// the diagonal Laplace approximation: n × the objective (Σ log loss +
/// n · l2/2 · |w|²) is the negative log posterior under a Gaussian prior, so a
/// column's precision is Σ p(1 − p) over the examples where it is active, plus
/// the prior's: n · l2, but at least [`MIN_PRIOR_PRECISION`]. A column no
/// example has gets the prior's variance: the data says nothing.
pub fn weight_variances(set: &TrainingSet, w: &[f64], b: f64, l2: f64, offset: Option<&[f64]>) -> Vec<f64> {
    let d = w.len();
    let parts: Vec<Vec<f64>> = (0..set.len().div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut h = vec![0.0; d];
            for i in c * CHUNK..((c + 1) * CHUNK).min(set.len()) {
                let row = set.row(i);
                let p = sigmoid(b + offset.map_or(0.0, |o| o[i]) + row.iter().map(|&k| w[k as usize]).sum::<f64>());
                for &k in row {
                    h[k as usize] += p * (1.0 - p);
                }
            }
            h
        })
        .collect();
    let prior = (set.len() as f64 * l2).max(MIN_PRIOR_PRECISION);
    let mut h = vec![prior; d];
    for part in parts {
        h.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    h.into_iter().map(|x| 1.0 / x.max(f64::MIN_POSITIVE)).collect()
}

/// Fit the logistic regression on `set` with penalty `l2` (L-BFGS, argmin).
/// Starts from `warm` (weights, intercept) when given, else from the base rate.
/// Returns (weights, intercept, iterations).
pub fn fit_logistic_lbfgs(
    set: &TrainingSet,
    l2: f64,
    max_iterations: u64,
    warm: Option<(&[f64], f64)>,
) -> Result<(Vec<f64>, f64, u64), FitError> {
    use argmin::core::{Executor, State};
    use argmin::solver::linesearch::MoreThuenteLineSearch;
    use argmin::solver::quasinewton::LBFGS;
    if set.is_empty() {
        return Err(FitError::NoExamples);
    }
    let optimizer = |e: argmin::core::Error| FitError::Optimizer(e.to_string());
    let obj = Objective { set, l2 };
    let d = obj.dim();
    let (mut init, b0) = start_point(set, warm)?;
    init.push(b0);
    let init = ndarray::Array1::from(init);
    // The cost tolerance stops once an iteration gains less than 1e-9 nats per
    // example: far below what the held-out log loss can tell apart.
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(1e-7)
        .map_err(optimizer)?
        .with_tolerance_cost(1e-9)
        .map_err(optimizer)?;
    let res = Executor::new(obj, solver).configure(|s| s.param(init).max_iters(max_iterations)).run().map_err(optimizer)?;
    let state = res.state();
    let w = state.get_best_param().ok_or_else(|| FitError::Optimizer("L-BFGS returned no parameters".into()))?;
    let w = w.to_vec();
    Ok((w[..d - 1].to_vec(), w[d - 1], state.get_iter()))
}

/// Platt scaling: fit `p = σ(a·z + b)` on raw logits `z` with linfa's logistic regression.
pub fn fit_platt(z: &[f64], y: &[bool]) -> Result<(f64, f64), FitError> {
    use linfa::prelude::*;
    use linfa_logistic::LogisticRegression;
    if y.iter().all(|&v| v) || y.iter().all(|&v| !v) {
        // One class only: nothing to calibrate against; keep the raw logit.
        return Ok((1.0, 0.0));
    }
    let platt = |e: String| FitError::Optimizer(format!("Platt scaling: {e}"));
    let x = ndarray::Array2::from_shape_vec((z.len(), 1), z.to_vec()).map_err(|e| platt(e.to_string()))?;
    let t = ndarray::Array1::from_iter(y.iter().map(|&v| v as usize));
    let ds = Dataset::new(x, t);
    let fitted = LogisticRegression::default().alpha(0.0).max_iterations(200).fit(&ds).map_err(|e| platt(e.to_string()))?;
    let (a, b) = (fitted.params()[0], fitted.intercept());
    // linfa orders the two classes itself: make the probability the one of success (1).
    Ok(if fitted.labels().pos.class == 1 { (a, b) } else { (-a, -b) })
}

/// Ridge on a decline class's departure from the global Platt scaling (slope and offset,
/// per class and retry stage): about the weight of a few dozen retries.
pub const CLASS_PLATT_RIDGE: f64 = 4.0;

/// Per decline class and retry stage (`[first retry, later retries]`), the Platt scaling of
/// the calibration split's retries `(class, retries before, raw logit with every correction,
/// succeeded)`, as a departure from `global`: `a·z + b → (1 + e)·(a·z + b) + d`, fitted by
/// Newton's method with a ridge [`CLASS_PLATT_RIDGE`]·(d² + e²)/2. A cell with few retries
/// stays near the global scaling, one with none keeps it; the slope factor stays in [0.2, 3].
///
/// Why: one global scaling leaves a class whose predictions spread too wide (or too
/// narrow) on later data as it is, and the engine acts where a class's predictions are
/// highest, so that is where the error shows (#20: soft-issuer slopes 0.2–0.4 on the
/// calibration split of every zoo world).
pub fn fit_class_platt(rows: &[(DeclineClass, u32, f64, bool)], global: Platt) -> Vec<[Platt; 2]> {
    let mut out = vec![[global; 2]; DeclineClass::VARIANTS.len()];
    for class in DeclineClass::VARIANTS {
        for later in [false, true] {
            let xs: Vec<(f64, bool, f64)> = rows
                .iter()
                .filter(|r| r.0 == *class && (r.1 > 0) == later && r.2.is_finite())
                .map(|r| (global.a * r.2 + global.b, r.3, 1.0))
                .collect();
            out[*class as usize][later as usize] = departure(global, fit_departure(&xs, CLASS_PLATT_RIDGE, true));
        }
    }
    out
}

/// `base` followed by the departure `(d, e)` of [`fit_departure`]: `(1 + e)·(a·z + b) + d`.
pub fn departure(base: Platt, (d, e): (f64, f64)) -> Platt {
    Platt { a: (1.0 + e) * base.a, b: (1.0 + e) * base.b + d }
}

/// The departure `x → (1 + e)·x + d` from calibrated logits `x` that maximizes the weighted
/// log-likelihood of `(x, succeeded, weight)` less `ridge`·(d² + e²)/2, by Newton's method;
/// the slope factor stays in [0.2, 3]. Without `slope`, `e` stays 0 (the offset alone).
/// No rows (or no weight): `(0, 0)`, no departure.
pub fn fit_departure(xs: &[(f64, bool, f64)], ridge: f64, slope: bool) -> (f64, f64) {
    let (mut d, mut e) = (0.0f64, 0.0f64);
    for _ in 0..50 {
        let (mut g0, mut g1) = (-ridge * d, -ridge * e);
        let (mut h00, mut h01, mut h11) = (ridge, 0.0, ridge);
        for &(x, y, weight) in xs {
            let p = sigmoid(x + d + e * x);
            let (r, w) = (weight * (y as u8 as f64 - p), weight * p * (1.0 - p));
            g0 += r;
            g1 += r * x;
            h00 += w;
            h01 += w * x;
            h11 += w * x * x;
        }
        let (s0, s1) = if slope {
            let det = h00 * h11 - h01 * h01;
            ((h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det)
        } else {
            (g0 / h00, 0.0)
        };
        if !(s0.is_finite() && s1.is_finite()) {
            break;
        }
        d += s0;
        e = (e + s1).clamp(-0.8, 2.0);
        if s0.abs() + s1.abs() < 1e-9 {
            break;
        }
    }
    (d, e)
}

/// The calibrated P of `examples` with `model`'s calibration as it is now: the failed-retries
/// shift, then the scaling of the example's decline class and retry stage.
pub fn calibrated(model: &SuccessModel, examples: &[crate::failed_retries::Example]) -> Vec<f64> {
    examples
        .iter()
        .map(|e| model.platt_for(e.class, e.retries).calibrate(e.logit + model.failed_retries.shift(e.class, e.retries, e.expected)))
        .collect()
}

impl Trained {
    /// Score the test split again with the model's calibration as it is now (after a refit
    /// of the per-class scalings outside [`train`]): the report's `model` metrics and
    /// `class_calibration`. The examples' logits and failed-retries inputs do not depend on
    /// those scalings, so the ones [`train`] kept are reused.
    pub fn rescore_test(&mut self, set: &TrainingSet, cfg: &TrainConfig) {
        let (_, test_start) = split_points(set.len(), cfg);
        let p = calibrated(&self.model, &self.test_examples);
        self.report.model = metrics(&p, &set.labels[test_start..], &set.declines[test_start..]);
        self.report.class_calibration = class_calibration(&self.test_examples, &p);
    }
}

/// Held-out quality of a set of predictions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub examples: usize,
    pub positives: usize,
    pub log_loss: f64,
    pub auc: f64,
    pub brier: f64,
    /// Expected calibration error over 10 equal-width bins.
    pub ece: f64,
    /// (bin lower edge, examples, mean predicted, observed rate).
    pub calibration: Vec<(f64, usize, f64, f64)>,
    /// AUC within each decline class (NaN-free: classes with one label only are left out).
    pub auc_by_class: Vec<(String, usize, f64)>,
}

/// Area under the ROC curve (ties count half).
pub fn auc(p: &[f64], y: &[bool]) -> f64 {
    let mut ix: Vec<usize> = (0..p.len()).collect();
    ix.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    let pos = y.iter().filter(|&&v| v).count() as f64;
    let neg = y.len() as f64 - pos;
    while i < ix.len() {
        let mut j = i;
        while j < ix.len() && p[ix[j]] == p[ix[i]] {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0; // ranks are 1-based
        rank_sum += ix[i..j].iter().filter(|&&k| y[k]).count() as f64 * avg_rank;
        i = j;
    }
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Metrics of predictions `p` for labels `y`, with the decline of each example.
pub fn metrics(p: &[f64], y: &[bool], declines: &[DeclineCode]) -> Metrics {
    let n = p.len();
    let eps = 1e-12;
    let log_loss = p
        .iter()
        .zip(y)
        .map(|(&q, &t)| {
            let q = q.clamp(eps, 1.0 - eps);
            if t {
                -q.ln()
            } else {
                -(1.0 - q).ln()
            }
        })
        .sum::<f64>()
        / n.max(1) as f64;
    let brier = p.iter().zip(y).map(|(&q, &t)| (q - t as u8 as f64).powi(2)).sum::<f64>() / n.max(1) as f64;
    let mut bins = vec![(0usize, 0.0f64, 0.0f64); 10];
    for (&q, &t) in p.iter().zip(y) {
        let b = ((q * 10.0) as usize).min(9);
        bins[b].0 += 1;
        bins[b].1 += q;
        bins[b].2 += t as u8 as f64;
    }
    let calibration: Vec<(f64, usize, f64, f64)> = bins
        .iter()
        .enumerate()
        .map(|(b, &(k, sp, sy))| (b as f64 / 10.0, k, if k > 0 { sp / k as f64 } else { 0.0 }, if k > 0 { sy / k as f64 } else { 0.0 }))
        .collect();
    let ece = calibration.iter().map(|&(_, k, mp, my)| k as f64 * (mp - my).abs()).sum::<f64>() / n.max(1) as f64;
    let mut auc_by_class = Vec::new();
    for class in <DeclineClass as strum::VariantArray>::VARIANTS {
        let ix: Vec<usize> = (0..n).filter(|&i| declines[i].class() == *class).collect();
        let (pc, yc): (Vec<f64>, Vec<bool>) = ix.iter().map(|&i| (p[i], y[i])).unzip();
        let a = auc(&pc, &yc);
        if a.is_finite() {
            auc_by_class.push((<&str>::from(*class).to_string(), ix.len(), a));
        }
    }
    Metrics { examples: n, positives: y.iter().filter(|&&v| v).count(), log_loss, auc: auc(p, y), brier, ece, calibration, auc_by_class }
}

/// A rate table baseline: success rate per key, shrunk toward the overall rate (m-estimate).
pub fn rate_baseline<K: std::hash::Hash + Eq + Copy>(train_keys: &[K], train_y: &[bool], test_keys: &[K]) -> Vec<f64> {
    const M: f64 = 20.0;
    let overall = (train_y.iter().filter(|&&v| v).count() as f64 + 0.5) / (train_y.len() as f64 + 1.0);
    let mut counts: HashMap<K, (f64, f64)> = HashMap::new();
    for (k, &y) in train_keys.iter().zip(train_y) {
        let e = counts.entry(*k).or_default();
        e.0 += y as u8 as f64;
        e.1 += 1.0;
    }
    test_keys
        .iter()
        .map(|k| {
            let (s, n) = counts.get(k).copied().unwrap_or_default();
            (s + M * overall) / (n + M)
        })
        .collect()
}

/// Everything a training run produces.
#[derive(Debug, Clone)]
pub struct Trained {
    pub model: SuccessModel,
    pub report: TrainReport,
    /// Seconds from the examples to the calibrated model (what a peer's fit
    /// time measures), without the held-out evaluation and the reports.
    pub fit_seconds: f64,
    /// The test split's examples as the failed-retries correction reads them (for
    /// [`Trained::rescore_test`]).
    pub test_examples: Vec<crate::failed_retries::Example>,
}

/// What a training run measured: goes to `metrics.json` and the model card.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainReport {
    pub examples: usize,
    pub fit_examples: usize,
    pub calibration_examples: usize,
    pub test_examples: usize,
    pub data_from: Option<DateTime<Utc>>,
    pub data_to: Option<DateTime<Utc>>,
    /// First retry time in the test set: everything before it trained or calibrated.
    pub test_from: Option<DateTime<Utc>>,
    /// (l2, calibration-split log loss) for every candidate penalty.
    pub l2_search: Vec<(f64, f64)>,
    pub l2: f64,
    /// Coordinate-Newton sweeps of the chosen fit.
    pub sweeps: u64,
    /// Boosted trees in the model (0: purely logistic).
    #[serde(default)]
    pub trees: usize,
    /// Test metrics of the model before Platt scaling (to show what calibration did).
    pub uncalibrated: Metrics,
    /// Test metrics of the model.
    pub model: Metrics,
    /// Base rate per decline code.
    pub baseline_code: Metrics,
    /// Base rate per decline code × days-since-pay-day bucket.
    pub baseline_code_payday: Metrics,
    /// What each message channel adds over no message, per decline class, on the test split.
    pub channel_lift: Vec<ChannelLift>,
    /// Mean predicted against observed success per decline class and retry stage, test split.
    #[serde(default)]
    pub class_calibration: Vec<CellCalibration>,
    /// The failed payments' key features, counted (what `recoup report live` measures drift
    /// against); empty for a model trained before it existed.
    #[serde(default)]
    pub population: crate::drift::Population,
    /// The per-class scalings' refit where the policy acts ([`crate::policy_calibration`]);
    /// `model` and `class_calibration` are of the refitted model.
    #[serde(default)]
    pub acting_calibration: ActingCalibration,
    /// Where the final model is wrong on the test split ([`crate::residuals`]); `None` for a
    /// model trained before it existed.
    #[serde(default)]
    pub residuals: Option<crate::residuals::Summary>,
    /// The replaced method's weight from a prior and the log's retries after an update, per
    /// class whose declines need a new method ([`updated_prior`], [`REPLACED_CLASSES`]); a
    /// class is left out where its weight stayed as fitted (no retry of the class, a scaling
    /// that inverts the logit, or trees with such retries to learn from).
    #[serde(default)]
    pub updated_priors: Vec<UpdatedPrior>,
    /// What a model trained before the prior covered hard declines wrote (needs-update only);
    /// read, never written ([`TrainReport::replaced_priors`]).
    #[serde(default, skip_serializing)]
    pub updated_prior: Option<UpdatedPrior>,
}

impl TrainReport {
    /// The replaced method's priors, whichever field the model was written with.
    pub fn replaced_priors(&self) -> impl Iterator<Item = &UpdatedPrior> {
        self.updated_priors.iter().chain(self.updated_prior.as_ref().filter(|_| self.updated_priors.is_empty()))
    }
}

/// The P a replaced method's retry is scored at where the log has no update and does not show
/// its original charges' success rate either: about what card-not-present recurring charges
/// are approved at (0.85–0.95 is typical; the lower end, so as not to over-promise).
pub const DEFAULT_REPLACED_SUCCESS: f64 = 0.85;

/// What sets the P a retry on a replaced method is scored at, after a decline of a class in
/// [`REPLACED_CLASSES`]: a prior, updated by the log's retries after an update where it has some (`payment_method_updated` flags or
/// `payment_method_id` changes; [`updated_prior`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpdatedPrior {
    /// The decline class whose retry on a replaced method this is.
    #[serde(default = "needs_update")]
    pub class: DeclineClass,
    /// The share of the log's payments whose original charge succeeded (or
    /// [`DEFAULT_REPLACED_SUCCESS`] where the log holds too few of them): the prior's mean P
    /// for the log's retries of the class, had their method been replaced.
    pub original_success: f64,
    /// Where `original_success` came from, in words.
    #[serde(default)]
    pub source: String,
    /// The logit put on `decline_class=<class>&method_updated=true`.
    pub weight: f64,
    /// The class's retries it was centred on.
    pub examples: usize,
    /// The fit split's retries of the class after an update: the evidence (0: none).
    #[serde(default)]
    pub updated_retries: usize,
    /// Of them, those that succeeded.
    #[serde(default)]
    pub updated_succeeded: usize,
    /// The evidence's share of the weight: its precision (the log-likelihood's curvature) over
    /// its own and the prior's together (0 without evidence; near 1 where the log has many).
    #[serde(default)]
    pub evidence_share: f64,
    /// The weight the fit gave the column before the prior.
    #[serde(default)]
    pub fitted_weight: f64,
    /// The prior's mean weight: the one at which the examples average `original_success`.
    #[serde(default)]
    pub prior_weight: f64,
    /// What the examples average at `weight`.
    #[serde(default)]
    pub mean_p: f64,
}

fn needs_update() -> DeclineClass {
    DeclineClass::NeedsUpdate
}

/// The classes whose declines a retry clears only on a replaced payment method: an expired or
/// mistyped card, and a lost, stolen or revoked one (the rules allow its retry only then).
pub const REPLACED_CLASSES: [DeclineClass; 2] = [DeclineClass::NeedsUpdate, DeclineClass::Hard];

/// Below this evidence share the prior is said in the training output and the model card
/// (a share above it is the log's own estimate, nudged).
pub const UPDATED_PRIOR_SAID_BELOW: f64 = 0.9;

impl UpdatedPrior {
    /// Whether the log holds no retry after an update at all.
    pub fn unlearned(&self) -> bool {
        self.updated_retries == 0
    }

    /// Whether the prior sets a good part of the weight: worth saying.
    pub fn partly_prior(&self) -> bool {
        self.evidence_share < UPDATED_PRIOR_SAID_BELOW
    }

    /// One line for the training output and the model card.
    pub fn describe(&self) -> String {
        let class = <&str>::from(self.class);
        let column = format!("decline_class={class}&method_updated=true");
        if self.unlearned() {
            format!(
                "no retry after a {class} decline followed an update (no payment_method_updated flags, no change of \
                 payment_method_id), so what a replaced method does is not learned: such a retry on a replaced method is \
                 scored at {}, {:.3} on average over the log's {} {class} retries (logit {:+.2} on {column}), a prior, not an \
                 estimate",
                self.source, self.original_success, self.examples, self.weight
            )
        } else {
            format!(
                "only {} retries after a {class} decline followed an update ({} succeeded), too few to learn alone what a \
                 replaced method does, so they update a prior: that it is charged like the log's original charges, {}, {:.3} \
                 on average over the log's {} {class} retries (logit {:+.2} on {column}). With them: {:.3} on average (logit \
                 {:+.2}; {:.0} % the log's evidence; the fit, which shrinks every weight toward 0, had {:+.2})",
                self.updated_retries,
                self.updated_succeeded,
                self.source,
                self.original_success,
                self.examples,
                self.prior_weight,
                self.mean_p,
                self.weight,
                100.0 * self.evidence_share,
                self.fitted_weight
            )
        }
    }
}

/// A needs-update decline says the method cannot be charged (a hard one, that it must not be),
/// so the log's retries of the dead card say nothing of a replaced one, and what a replaced
/// method does is learned only from retries after an update. `class` is one of
/// [`REPLACED_CLASSES`]; the figures here are of needs-update declines. Where the log has none, the model has no weight for it and an
/// expired card's retry after the payer replaced it was scored as the dead card's (0.29
/// against 0.94 realised on the foreign world's log without flags); where it has a few, the
/// fit's penalty, which shrinks every weight toward 0 ("like the dead card"), kept it there
/// (the foreign log with 30 of its 4,752 updated payments: 0.05 against 0.92).
///
/// So the class × updated column gets a prior of its own: a replaced method is charged like
/// a payment's original charge, `original_success` (the log's share of original charges that
/// succeeded, identifiable from any history). `mu` is the column's weight at which the
/// class's examples, re-encoded as updated and scored with the class's scaling, average
/// it (the time terms keep their shape), and the prior is normal around `mu` with a standard
/// deviation of 1 in logit ([`MIN_PRIOR_PRECISION`]: it is a guess; on our simulator's
/// careless log updated retries succeed 0.57 where originals do 0.91, 2 logits apart). The
/// column's weight is its maximum a posteriori on the fit split's updated retries of the
/// class (`fit_rows`), scored as served (with their scaling; the other weights held):
/// exactly `mu` without such retries, the log's own estimate where it has many. `None` (and
/// the model unchanged) when no example is of the class, a scaling does not increase with
/// the logit, or trees (which do not fit the column) have some evidence to learn from.
///
/// `payments` and `failed`: the log's payments and those whose original charge failed. A log
/// where fewer than half the original charges succeeded (an export of failed payments holds
/// none) does not show the merchant's rate: [`DEFAULT_REPLACED_SUCCESS`] then, said so.
pub fn updated_prior(
    model: &mut SuccessModel,
    set: &TrainingSet,
    payments: u64,
    failed: u64,
    fit_rows: std::ops::Range<usize>,
    class: DeclineClass,
) -> Option<UpdatedPrior> {
    use crate::features::{class_updated_column, group_level, with_level, RETRIES_GROUP, UPDATED_GROUP};
    let succeeded = payments.saturating_sub(failed);
    let (p0, source) = if payments > 0 && succeeded as f64 >= 0.5 * payments as f64 {
        (
            (succeeded as f64 / payments as f64).min(0.99),
            format!("the log's original-charge success rate ({succeeded} of {payments} payments)"),
        )
    } else {
        (
            DEFAULT_REPLACED_SUCCESS,
            format!(
                "a default rate: only {succeeded} of the log's {payments} payments succeeded on their original charge (an export of \
                 failed payments?), so it does not show how a working method is charged"
            ),
        )
    };
    let column = class_updated_column(class) as usize;
    let fitted_weight = model.weights[column];
    let scored: Vec<(f64, Platt)> = (0..set.len())
        .filter(|&i| set.declines[i].class() == class)
        .map(|i| {
            let updated = with_level(set.row(i), UPDATED_GROUP, 1);
            let z = model.logit(&updated) - fitted_weight;
            (z, model.platt_for(class, group_level(set.row(i), RETRIES_GROUP) as u32))
        })
        .collect();
    // Increasing in w only where every scaling's slope is positive (a fit that inverts the
    // logit has nothing to centre).
    if scored.is_empty() || scored.iter().any(|(z, p)| !(p.a > 0.0 && z.is_finite())) {
        return None;
    }
    let mean_p = |w: f64| scored.iter().map(|(z, p)| p.calibrate(z + w)).sum::<f64>() / scored.len() as f64;
    let mu = bisect_increasing(mean_p, p0);
    // The evidence: logits without the column, each with its scaling (as served), and the outcomes.
    let evidence: Vec<(f64, Platt, bool)> = fit_rows
        .filter(|&i| set.declines[i].class() == class && group_level(set.row(i), UPDATED_GROUP) == 1)
        .map(|i| {
            let platt = model.platt_for(class, group_level(set.row(i), RETRIES_GROUP) as u32);
            (model.logit(set.row(i)) - fitted_weight, platt, set.labels[i])
        })
        .collect();
    // Trees learn the updated level from its rows without a penalty toward 0 on it (and the
    // column is not among the weights they fit): only a log without any is given the prior.
    if !model.trees.is_empty() && !evidence.is_empty() {
        return None;
    }
    let precision = MIN_PRIOR_PRECISION;
    // The penalized log-likelihood in w is concave: Newton from the prior's mean.
    let mut w = mu;
    let mut curvature = 0.0;
    for _ in 0..50 {
        let (mut grad, mut hess) = (-precision * (w - mu), 0.0);
        for &(z, platt, y) in &evidence {
            let p = platt.calibrate(z + w);
            grad += platt.a * (f64::from(u8::from(y)) - p);
            hess += platt.a * platt.a * p * (1.0 - p);
        }
        curvature = hess;
        let step = grad / (hess + precision);
        w = (w + step).clamp(-crate::model::MAX_ABS_PARAMETER, crate::model::MAX_ABS_PARAMETER);
        if step.abs() < 1e-10 {
            break;
        }
    }
    if !w.is_finite() {
        return None;
    }
    model.weights[column] = w;
    Some(UpdatedPrior {
        class,
        original_success: p0,
        source,
        weight: w,
        examples: scored.len(),
        updated_retries: evidence.len(),
        updated_succeeded: evidence.iter().filter(|e| e.2).count(),
        evidence_share: curvature / (curvature + precision),
        fitted_weight,
        prior_weight: mu,
        mean_p: mean_p(w),
    })
}

/// The `w` at which an increasing `f` reaches `target`, by bisection over the model's range.
fn bisect_increasing(f: impl Fn(f64) -> f64, target: f64) -> f64 {
    let (mut lo, mut hi) = (-crate::model::MAX_ABS_PARAMETER, crate::model::MAX_ABS_PARAMETER);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if f(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Fewer retry examples than this make a small history: training says so
/// ([`TrainReport::small_history`]). On `data/sample/`'s learning curve
/// (README) the test ECE still moves by 0.01 between 1,439 and 2,899 training
/// retries; a 240-retry foreign log scored 0.124.
pub const SMALL_HISTORY_RETRIES: usize = 1_000;

impl TrainReport {
    /// A warning when the history had fewer than [`SMALL_HISTORY_RETRIES`]
    /// retries, for the train command's output and the model card.
    pub fn small_history(&self) -> Option<String> {
        (self.examples < SMALL_HISTORY_RETRIES).then(|| {
            format!(
                "a small history: {} retries to learn from (fewer than {SMALL_HISTORY_RETRIES}). The model's probabilities are rough \
                 (test-split ECE {:.3}); the engine decides only where the log retried, at its lower bound. `recoup train \
                 --learning-curve` shows what more history buys",
                self.examples, self.model.ece
            )
        })
    }
}

/// Calibration where the policy acts (`src/policy_calibration.rs`), one decline class at one
/// retry stage: what the weighted retries showed and what the refit changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActingCell {
    pub class: String,
    /// `first retry` or `later retries`.
    pub stage: String,
    /// Logged retries with weight (the policy would retry within a few bandwidths of them).
    pub retries: usize,
    /// Their total weight.
    pub weight: f64,
    /// Weighted mean predicted success before and after the refit, and realised.
    pub predicted_before: f64,
    pub predicted_after: f64,
    pub observed: f64,
    /// The offset added to the scaling's logit.
    pub offset: f64,
    /// Standard error of `observed` around the refitted predictions (the weighted residuals'
    /// sandwich: √Σw²(y − p)² / Σw); 0 in models trained before it was kept.
    #[serde(default)]
    pub se: f64,
}

/// What the refit did, for the model card (a model trained before it existed reads as skipped).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActingCalibration {
    /// Logged retries replayed; those from which the policy would retry.
    pub replayed: usize,
    pub policy_retries: usize,
    pub bandwidth_hours: f64,
    pub cells: Vec<ActingCell>,
    /// Why it was not done, when it was not.
    pub skipped: Option<String>,
    /// The refitted model on the test window's logged retries, weighted the same way: held-out
    /// calibration where the policy acts ([`crate::policy_calibration::check`]).
    #[serde(default)]
    pub test: Vec<ActingCheck>,
}

/// Held-out calibration of one decline class at one retry stage, near the policy's choices.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActingCheck {
    pub class: String,
    pub stage: String,
    pub retries: usize,
    pub weight: f64,
    /// Weighted mean predicted success and realised.
    pub predicted: f64,
    pub observed: f64,
    /// Standard error of `observed − predicted` (√Σw²(y − p)² / Σw); 0 in models trained
    /// before it was kept.
    #[serde(default)]
    pub se: f64,
}

/// How far the held-out window's realised rate lies from the refitted model's prediction in
/// a cell, in standard errors of that difference: the test window's own noise and the
/// refit's (its offset was fitted on the calibration window's weighted retries) together.
/// Beyond about 2 the two windows disagree by more than their noise: drift between them, or
/// one window's bad luck, and the policy's retries in that cell may be off by about as much.
/// `None` for a model trained before the standard errors were kept.
pub fn disagreement(cell: &ActingCell, test: &ActingCheck) -> Option<f64> {
    let se = (cell.se * cell.se + test.se * test.se).sqrt();
    (cell.se > 0.0 && test.se > 0.0 && se.is_finite()).then(|| (test.observed - test.predicted) / se)
}

/// Held-out cells whose [`disagreement`] exceeds this many standard errors are named in the model card.
pub const DISAGREE_SE: f64 = 2.0;

impl Default for ActingCalibration {
    fn default() -> Self {
        ActingCalibration::skipped("a model trained before this step existed")
    }
}

impl ActingCalibration {
    /// Not done, and why.
    pub fn skipped(why: &str) -> ActingCalibration {
        ActingCalibration {
            replayed: 0,
            policy_retries: 0,
            bandwidth_hours: 0.0,
            cells: Vec::new(),
            skipped: Some(why.to_string()),
            test: Vec::new(),
        }
    }

    /// [`disagreement`] of a held-out cell with its refit cell (the same class and stage).
    pub fn disagreement(&self, test: &ActingCheck) -> Option<f64> {
        let cell = self.cells.iter().find(|r| r.class == test.class && r.stage == test.stage)?;
        disagreement(cell, test)
    }

    /// The held-out cells whose [`disagreement`] with the refit exceeds [`DISAGREE_SE`], each
    /// named `class stage (observed − predicted)`.
    pub fn beyond_noise(&self) -> Vec<String> {
        self.test
            .iter()
            .filter(|c| self.disagreement(c).is_some_and(|z| z.abs() > DISAGREE_SE))
            .map(|c| format!("{} {} ({:+.3})", c.class, c.stage, c.observed - c.predicted))
            .collect()
    }

    /// Training's progress output: a summary line, then one per cell refitted and held out,
    /// then the cells where the windows disagree beyond their noise, if any.
    pub fn lines(&self) -> Vec<String> {
        if let Some(why) = &self.skipped {
            return vec![format!("calibration where the policy acts: skipped ({why})")];
        }
        let mut out = vec![format!(
            "calibration where the policy acts: {} logged retries of the calibration window replayed, the policy retries from {} (kernel {} h)",
            self.replayed, self.policy_retries, self.bandwidth_hours
        )];
        out.extend(self.cells.iter().map(|c| {
            format!(
                "  refit {} {}: weight {:.0}, predicted {:.3} → {:.3}, observed {:.3}",
                c.class, c.stage, c.weight, c.predicted_before, c.predicted_after, c.observed
            )
        }));
        out.extend(self.test.iter().map(|c| {
            let z = self.disagreement(c);
            format!(
                "  held out (test window) {} {}: weight {:.0}, predicted {:.3}, observed {:.3} ± {:.3}{}",
                c.class,
                c.stage,
                c.weight,
                c.predicted,
                c.observed,
                c.se,
                z.map_or(String::new(), |z| format!(" ({z:+.1} SE from the refit)"))
            )
        }));
        let beyond = self.beyond_noise();
        if !beyond.is_empty() {
            out.push(format!(
                "  the calibration and test windows disagree beyond their noise (more than {DISAGREE_SE} SE) in: {}; see the model card",
                beyond.join(", ")
            ));
        }
        out
    }
}

/// Test-split calibration of one decline class at one retry stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellCalibration {
    pub class: String,
    /// `first retry` or `later retries`.
    pub stage: String,
    pub examples: usize,
    pub mean_predicted: f64,
    pub observed: f64,
}

/// [`CellCalibration`] of every (class, stage) with test examples.
fn class_calibration(examples: &[crate::failed_retries::Example], p: &[f64]) -> Vec<CellCalibration> {
    let mut out = Vec::new();
    for class in DeclineClass::VARIANTS {
        for later in [false, true] {
            let cell: Vec<(f64, bool)> = examples
                .iter()
                .zip(p)
                .filter(|(e, _)| e.class == *class && (e.retries > 0) == later)
                .map(|(e, &p)| (p, e.succeeded))
                .collect();
            if cell.is_empty() {
                continue;
            }
            let n = cell.len() as f64;
            out.push(CellCalibration {
                class: <&str>::from(*class).to_string(),
                stage: if later { "later retries" } else { "first retry" }.to_string(),
                examples: cell.len(),
                mean_predicted: cell.iter().map(|c| c.0).sum::<f64>() / n,
                observed: cell.iter().filter(|c| c.1).count() as f64 / n,
            });
        }
    }
    out
}

/// The channel-response view of the success model (an S-learner): for every
/// test example of a decline class, P(success | channel) − P(success | no
/// message) with everything else unchanged, averaged. The logging policy draws
/// channels at random, so within a class the success-rate difference between
/// retries logged with the channel and retries logged with none estimates the
/// same lift: `observed_lift` ± `observed_se` checks the model's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelLift {
    pub class: String,
    pub channel: String,
    /// Test retries of the class logged with this channel.
    pub examples: usize,
    /// Model: mean counterfactual lift over all test retries of the class.
    pub predicted_lift: f64,
    /// Data: success rate with this channel minus success rate with none.
    pub observed_lift: f64,
    /// Standard error of `observed_lift`.
    pub observed_se: f64,
}

/// [`ChannelLift`] for every class × channel with logged examples of both arms.
pub fn channel_lift(model: &SuccessModel, test: &TrainingSet) -> Vec<ChannelLift> {
    use crate::features::{group_level, with_channel, CHANNEL_GROUP};
    use strum::VariantArray;
    // Each example's logit once (trees included); a channel changes only the
    // terms of the channel's slots (the trees never see it).
    let slots = channel_slots();
    let channel_terms = |row: &[u16]| slots.iter().map(|&k| model.weights[row[k] as usize]).sum::<f64>();
    let rest: Vec<f64> = (0..test.len()).into_par_iter().map(|i| model.logit(test.row(i)) - channel_terms(test.row(i))).collect();
    let p_with = |i: usize, ch: Channel| model.calibrate(rest[i] + channel_terms(&with_channel(test.row(i), ch)));
    let mut out = Vec::new();
    for &class in DeclineClass::VARIANTS {
        let ix: Vec<usize> = (0..test.len()).filter(|&i| test.declines[i].class() == class).collect();
        let arm = |c: Channel| -> (usize, f64) {
            let m: Vec<usize> = ix.iter().copied().filter(|&i| group_level(test.row(i), CHANNEL_GROUP) == c as usize).collect();
            let k = m.iter().filter(|&&i| test.labels[i]).count();
            (m.len(), if m.is_empty() { 0.0 } else { k as f64 / m.len() as f64 })
        };
        let (n0, r0) = arm(Channel::None);
        for &ch in Channel::VARIANTS.iter().filter(|&&c| c != Channel::None) {
            let (n1, r1) = arm(ch);
            if n0 < 30 || n1 < 30 {
                continue;
            }
            let predicted = ix.iter().map(|&i| p_with(i, ch) - p_with(i, Channel::None)).sum::<f64>() / ix.len() as f64;
            let se = (r1 * (1.0 - r1) / n1 as f64 + r0 * (1.0 - r0) / n0 as f64).sqrt();
            out.push(ChannelLift {
                class: <&str>::from(class).to_string(),
                channel: <&str>::from(ch).to_string(),
                examples: n1,
                predicted_lift: predicted,
                observed_lift: r1 - r0,
                observed_se: se,
            });
        }
    }
    out
}

/// Where the time-ordered examples split: `0..fit_end` fits, `fit_end..test_start`
/// calibrates and `test_start..n` tests. Needs `n >= 3`.
pub fn split_points(n: usize, cfg: &TrainConfig) -> (usize, usize) {
    let test_start = n - ((n as f64 * cfg.test_fraction) as usize).clamp(1, n - 2);
    let fit_end = test_start - ((test_start as f64 * cfg.calibration_fraction) as usize).clamp(1, test_start - 1);
    (fit_end, test_start)
}

/// A starting point for fitting `fit` with penalty `l2`: a cold start crawls for
/// tens of sweeps on its way to the optimum, so fit the smallest strided subset
/// (every 4^k-th example) that still has `min_part` examples cold, then every
/// 4^(k−1)-th from there, and so on up to a quarter; the full fit from the result
/// only polishes (the objective is convex: the same optimum either way). `None`
/// when `fit` has fewer than 4 × `min_part` examples.
pub fn warm_up(
    fit: &TrainingSet,
    l2: f64,
    max_sweeps: u64,
    min_part: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<(Vec<f64>, f64)>, FitError> {
    let mut stride = 1;
    while fit.len() / (stride * 4) >= min_part.max(1) {
        stride *= 4;
    }
    let mut start: Option<(Vec<f64>, f64)> = None;
    while stride > 1 {
        let t = std::time::Instant::now();
        let part = fit.select(&(0..fit.len()).step_by(stride).collect::<Vec<_>>());
        let (w, b, iters) = fit_logistic(&part, l2, max_sweeps, start.as_ref().map(|(w, b)| (w.as_slice(), *b)))?;
        progress(&format!("warm-up fit l2={l2:e} on every {stride}th example ({}): {iters} sweeps in {:.1?}", part.len(), t.elapsed()));
        start = Some((w, b));
        stride /= 4;
    }
    Ok(start)
}

/// A fitted logit before calibration: weights, intercept, trees, and how they were chosen.
struct Fitted {
    weights: Vec<f64>,
    intercept: f64,
    l2: f64,
    sweeps: u64,
    l2_search: Vec<(f64, f64)>,
    trees: Forest,
    /// The trees' logit of every fit and calibration example (`None`: no trees).
    fit_offset: Option<Vec<f64>>,
    cal_offset: Option<Vec<f64>>,
}

/// How many times [`l2_path`] goes ten times beyond the strongest penalty of the path
/// when that one is the best (with the default path 1e-3: up to 1e-1).
pub const L2_EXTENSIONS: i32 = 2;

fn raw_logits(w: &[f64], b: f64, s: &TrainingSet, offset: Option<&[f64]>) -> Vec<f64> {
    (0..s.len()).into_par_iter().map(|i| b + offset.map_or(0.0, |o| o[i]) + s.row(i).iter().map(|&k| w[k as usize]).sum::<f64>()).collect()
}

/// The logistic regression along the L2 path (strongest penalty first, each fit
/// warm-started from the previous one), keeping the penalty with the best
/// calibration-split log loss. When the best is the path's strongest penalty the
/// search did not bracket the optimum, so it goes on ten times stronger (warm-started
/// from the best fit) while that improves the log loss, at most
/// [`L2_EXTENSIONS`] times: a log that supports less than the path assumed (a
/// small one, or one whose structure the features miss) gets the penalty it
/// needs instead of the path's edge. With `offset` (the trees' logits of the fit
/// and calibration examples) only the `only` slots are fitted on top of them.
fn l2_path(
    fit: &TrainingSet,
    cal: &TrainingSet,
    cfg: &TrainConfig,
    offset: Option<(&[f64], &[f64])>,
    only: Option<&[usize]>,
    progress: &mut dyn FnMut(&str),
) -> Result<Fitted, FitError> {
    let mut best: Option<(f64, Vec<f64>, f64, u64, f64)> = None;
    let mut l2_search = Vec::new();
    let mut path = cfg.l2.clone();
    path.sort_by(|a, b| b.total_cmp(a));
    let mut previous = match (path.first(), offset) {
        (Some(&first), None) => warm_up(fit, first, cfg.max_sweeps, WARM_UP_MIN, progress)?,
        _ => None,
    };
    // One fit at `l2` from `warm`, and its calibration-split log loss.
    let fit_at = |l2: f64, warm: Option<(&[f64], f64)>| -> Result<(Vec<f64>, f64, u64, f64, std::time::Duration), FitError> {
        let t = std::time::Instant::now();
        let (w, b, iters) = fit_logistic_on(fit, l2, cfg.max_sweeps, warm, offset.map(|o| o.0), only)?;
        let p: Vec<f64> = raw_logits(&w, b, cal, offset.map(|o| o.1)).into_iter().map(sigmoid).collect();
        let ll = metrics(&p, &cal.labels, &cal.declines).log_loss;
        Ok((w, b, iters, ll, t.elapsed()))
    };
    for &l2 in &path {
        let (w, b, iters, ll, took) = fit_at(l2, previous.as_ref().map(|(w, b)| (w.as_slice(), *b)))?;
        previous = Some((w.clone(), b));
        let what = if offset.is_some() { "channel terms on the trees" } else { "fit" };
        progress(&format!("{what} l2={l2:e}: {iters} sweeps in {took:.1?}, calibration-split log loss {ll:.5}"));
        l2_search.push((l2, ll));
        if best.as_ref().is_none_or(|bst| ll < bst.4) {
            best = Some((l2, w, b, iters, ll));
        }
    }
    // The best at the strongest penalty tried: the optimum may lie beyond it. Each step
    // starts from the best fit, which is the previous step's (a step that does not
    // improve ends the search).
    if best.as_ref().zip(path.first()).is_some_and(|(bst, &strongest)| bst.0 >= strongest) {
        for _ in 0..L2_EXTENSIONS {
            let bst = best.as_ref().expect("a best fit");
            let l2 = bst.0 * 10.0;
            let (w, b, iters, ll, took) = fit_at(l2, Some((bst.1.as_slice(), bst.2)))?;
            progress(&format!(
                "the best L2 was the strongest tried: {l2:e} next, {iters} sweeps in {took:.1?}, calibration-split log loss {ll:.5}"
            ));
            l2_search.push((l2, ll));
            if ll < bst.4 {
                best = Some((l2, w, b, iters, ll));
            } else {
                break;
            }
        }
    }
    let (l2, weights, intercept, sweeps, _) = best.ok_or_else(|| FitError::Invalid("no L2 penalty to try".into()))?;
    Ok(Fitted { weights, intercept, l2, sweeps, l2_search, trees: Forest::default(), fit_offset: None, cal_offset: None })
}

/// Family `trees`: boosted trees over every group but the channel from the base
/// rate, stopped early on the calibration split; then the channel's columns (the
/// channel and its crosses with payment-level groups) by logistic regression on
/// top of the trees. The logging policy randomizes the channel, so leaving it
/// out of the trees biases nothing, and the channel's lift keeps its weights and
/// their variances (the engine's uncertainty discount).
fn fit_trees(fit: &TrainingSet, cal: &TrainingSet, cfg: &TrainConfig, progress: &mut dyn FnMut(&str)) -> Result<Fitted, FitError> {
    let t = std::time::Instant::now();
    let levels = |s: &TrainingSet| -> Vec<GroupLevels> { (0..s.len()).into_par_iter().map(|i| group_levels(s.row(i))).collect() };
    let (fx, cx) = (levels(fit), levels(cal));
    let (_, base) = start_point(fit, None)?;
    let boosted = crate::trees::boost(
        &fx,
        &fit.labels,
        &vec![base; fit.len()],
        &cx,
        &cal.labels,
        &vec![base; cal.len()],
        TREE_GROUPS,
        &cfg.boost,
        progress,
    )?;
    let best = boosted.cal_log_loss.iter().copied().fold(f64::INFINITY, f64::min);
    progress(&format!(
        "boosted {} trees in {:.1?} (of {} grown), calibration-split log loss {best:.5}",
        boosted.forest.trees.len(),
        t.elapsed(),
        boosted.cal_log_loss.len() - 1
    ));
    let only = channel_slots();
    let channel = l2_path(fit, cal, cfg, Some((&boosted.fit_logit, &boosted.cal_logit)), Some(&only), progress)?;
    Ok(Fitted { trees: boosted.forest, fit_offset: Some(boosted.fit_logit), cal_offset: Some(boosted.cal_logit), ..channel })
}

/// Per example, in order: its class, the retries of its payment before it, the expected
/// successes (the model's calibrated P, before any correction) of those that failed, and
/// its raw logit. A set without payments (synthetic) has no earlier retries.
pub fn failed_retry_examples(set: &TrainingSet, model: &SuccessModel) -> Vec<crate::failed_retries::Example> {
    let logits: Vec<f64> = (0..set.len()).into_par_iter().map(|i| model.logit(set.row(i))).collect();
    // Per payment, the P of each earlier retry (0 for one that succeeded); E sums the last
    // MAX_COUNTED, as the engine does.
    let mut before: HashMap<u32, Vec<f64>> = HashMap::new();
    (0..set.len())
        .map(|i| {
            let payment = set.payments.get(i).copied().unwrap_or(u32::MAX);
            let earlier = before.entry(payment).or_default();
            let (retries, expected) = if payment == u32::MAX {
                (0, 0.0)
            } else {
                (earlier.len() as u32, earlier[earlier.len().saturating_sub(crate::failed_retries::MAX_COUNTED)..].iter().sum())
            };
            let succeeded = set.labels[i];
            if payment != u32::MAX {
                earlier.push(if succeeded { 0.0 } else { model.calibrate(logits[i]) });
            }
            crate::failed_retries::Example { class: set.declines[i].class(), retries, expected, logit: logits[i], succeeded }
        })
        .collect()
}

/// Why a fit could not be made (the learning layer's error).
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The history has no retries to learn from.
    #[error("no training examples (the history has no retries)")]
    NoExamples,
    /// Too few retries for a time split into fit, calibration and test.
    #[error(
        "only {0} retry examples in the history; training needs at least 100 (retries are attempts with attempt_number ≥ 1, \
         sharing the payment_id of the failed original charge: where a platform gives each retry its own charge id, payment_id \
         must be the invoice, the money all its attempts collect)"
    )]
    TooFewExamples(usize),
    /// Inputs that do not fit together, or a setting out of range.
    #[error("{0}")]
    Invalid(String),
    /// Boosting could not start.
    #[error(transparent)]
    Boost(#[from] crate::trees::BoostError),
    /// An optimizer (L-BFGS, the Platt fit) failed.
    #[error("{0}")]
    Optimizer(String),
}

/// Fewer retry examples than this are refused ([`FitError::TooFewExamples`]): too few for a
/// time split into fit, calibration and test.
pub const MIN_EXAMPLES: usize = 100;

/// Train on `set` (from [`build`], in time order) with `cfg`; `progress` hears each step.
pub fn train(set: &TrainingSet, cfg: &TrainConfig, progress: &mut dyn FnMut(&str)) -> Result<Trained, FitError> {
    let n = set.len();
    if n < MIN_EXAMPLES {
        return Err(FitError::TooFewExamples(n));
    }
    let (fit_end, test_start) = split_points(n, cfg);
    let started = std::time::Instant::now();
    let (fit, cal, test) = (set.range(0..fit_end), set.range(fit_end..test_start), set.range(test_start..n));
    let trees = match cfg.family {
        Family::Auto => fit.len() >= TREES_MIN_EXAMPLES,
        Family::Logistic => false,
        Family::Trees => true,
    };
    let f = if trees { fit_trees(&fit, &cal, cfg, progress)? } else { l2_path(&fit, &cal, cfg, None, None, progress)? };
    let (platt_a, platt_b) = fit_platt(&raw_logits(&f.weights, f.intercept, &cal, f.cal_offset.as_deref()), &cal.labels)?;
    progress(&format!("calibrated (Platt): a={platt_a:.4}, b={platt_b:.4}"));
    let weight_variances = weight_variances(&fit, &f.weights, f.intercept, f.l2, f.fit_offset.as_deref());
    let model = SuccessModel {
        schema: SCHEMA.clone(),
        weights: f.weights,
        intercept: f.intercept,
        platt_a,
        platt_b,
        attrition: Default::default(),
        asks: Default::default(),
        weight_variances,
        trees: f.trees,
        support: Default::default(),
        failed_retries: Default::default(),
        class_platt: Vec::new(),
        // What a request without an optional field the fit split always had is scored at.
        imputation: crate::imputation::Imputation::from_columns(&set.columns[..fit_end * ACTIVE]),
    };
    let mut model = model;
    // What each payment's own failed retries say beyond their number (crate::failed_retries),
    // fitted on the calibration split: there the model's logit is out of sample, as it is when
    // serving. On the fit split the weights have already absorbed part of what the payment's
    // failures say (its pay-day evidence, its retry-number terms), and γ came out a third of
    // the out-of-sample value (soft funds −0.26 against −0.74 on the default zoo world).
    let examples = failed_retry_examples(set, &model);
    model.failed_retries = crate::failed_retries::fit(&examples[fit_end..test_start], (platt_a, platt_b));
    let shifted = |e: &crate::failed_retries::Example| e.logit + model.failed_retries.shift(e.class, e.retries, e.expected);
    let cal_ll = |f: &dyn Fn(&crate::failed_retries::Example) -> f64| {
        examples[fit_end..test_start].iter().map(|e| crate::model::logit_loss(platt_a * f(e) + platt_b, e.succeeded)).sum::<f64>()
            / (test_start - fit_end).max(1) as f64
    };
    let fr = &model.failed_retries;
    progress(&format!(
        "failed retries: γ per class (fitted ± SE → held {} SE below) {}; calibration-split log loss {:.5} → {:.5}",
        crate::failed_retries::PESSIMISM_SE,
        (0..fr.gamma.len()).map(|c| format!("{:.3} ± {:.3} → {:.3}", fr.fitted[c], fr.se[c], fr.gamma[c])).collect::<Vec<_>>().join(", "),
        cal_ll(&|e| e.logit),
        cal_ll(&shifted)
    ));
    // Per decline class and retry stage, on the calibration split with every correction.
    let cal_rows: Vec<(DeclineClass, u32, f64, bool)> =
        examples[fit_end..test_start].iter().map(|e| (e.class, e.retries, shifted(e), e.succeeded)).collect();
    let class_platt = fit_class_platt(&cal_rows, model.platt());
    model.class_platt = class_platt;
    progress(&format!(
        "calibrated per decline class and stage (slope, offset): {}",
        DeclineClass::VARIANTS
            .iter()
            .map(|c| {
                let s = model.class_platt[*c as usize];
                format!("{} {:.2}/{:+.2}, {:.2}/{:+.2}", <&str>::from(*c), s[0].a, s[0].b, s[1].a, s[1].b)
            })
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let fit_seconds = started.elapsed().as_secs_f64();
    let shifted = |e: &crate::failed_retries::Example| e.logit + model.failed_retries.shift(e.class, e.retries, e.expected);
    let z_test: Vec<f64> = examples[test_start..].iter().map(shifted).collect();
    let p_test = calibrated(&model, &examples[test_start..]);
    let raw_test: Vec<f64> = z_test.iter().map(|&z| sigmoid(z)).collect();
    // Baselines learn from everything before the test period, like the model.
    let before = set.range(0..test_start);
    let code_key = |s: &TrainingSet| s.declines.clone();
    let payday_key = |s: &TrainingSet| -> Vec<(DeclineCode, usize)> {
        (0..s.len()).map(|i| (s.declines[i], crate::features::days_since_payday_level(s.row(i)))).collect()
    };
    let b1 = rate_baseline(&code_key(&before), &before.labels, &code_key(&test));
    let b2 = rate_baseline(&payday_key(&before), &before.labels, &payday_key(&test));
    let report = TrainReport {
        examples: n,
        fit_examples: fit.len(),
        calibration_examples: cal.len(),
        test_examples: test.len(),
        data_from: set.times.first().copied(),
        data_to: set.times.last().copied(),
        test_from: test.times.first().copied(),
        l2_search: f.l2_search,
        l2: f.l2,
        sweeps: f.sweeps,
        trees: model.trees.trees.len(),
        uncalibrated: metrics(&raw_test, &test.labels, &test.declines),
        model: metrics(&p_test, &test.labels, &test.declines),
        baseline_code: metrics(&b1, &test.labels, &test.declines),
        baseline_code_payday: metrics(&b2, &test.labels, &test.declines),
        channel_lift: channel_lift(&model, &test),
        class_calibration: class_calibration(&examples[test_start..], &p_test),
        population: Default::default(),
        acting_calibration: Default::default(),
        residuals: None,
        updated_priors: Vec::new(),
        updated_prior: None,
    };
    Ok(Trained { model, report, fit_seconds, test_examples: examples[test_start..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The offset alone, fitted where the weight is (crate::policy_calibration's refit).
    #[test]
    fn a_weighted_offset_fit_follows_the_weight_and_keeps_the_slope() {
        // Predictions 0.5 everywhere; success 30 % where the weight is, 70 % elsewhere.
        let x = 0.0;
        let mut xs = Vec::new();
        for i in 0..1_000 {
            xs.push((x, i % 10 < 3, 1.0));
            xs.push((x, i % 10 < 7, 0.0));
        }
        let (d, e) = fit_departure(&xs, 1.0, false);
        assert_eq!(e, 0.0);
        assert!((sigmoid(d) - 0.3).abs() < 0.01, "{}", sigmoid(d));
        // Unweighted, the two halves cancel; no rows, no departure.
        let even: Vec<_> = xs.iter().map(|&(x, y, _)| (x, y, 1.0)).collect();
        assert!(fit_departure(&even, 1.0, false).0.abs() < 1e-6);
        assert_eq!(fit_departure(&[], 1.0, true), (0.0, 0.0));
        // A ridge as heavy as the weight halves the move (in logit, to first order).
        let (half, _) = fit_departure(&xs, 1_000.0 * 0.25, false);
        assert!(half < 0.0 && half > d && (half / d - 0.5).abs() < 0.1, "{half} vs {d}");
    }

    /// A class whose predictions spread too wide gets a slope below the global one, a class
    /// that is calibrated keeps about the global scaling, and a cell without retries keeps it exactly.
    #[test]
    fn class_platt_shrinks_an_overconfident_class_toward_its_truth() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let global = Platt { a: 1.0, b: 0.0 };
        let mut rows = Vec::new();
        for _ in 0..20_000 {
            let z: f64 = rng.random::<f64>() * 6.0 - 3.0;
            // Soft-issuer truth: a third of the model's spread, a bit lower; soft-funds: as predicted.
            rows.push((DeclineClass::SoftIssuer, 0, z, rng.random::<f64>() < sigmoid(z / 3.0 - 0.3)));
            rows.push((DeclineClass::SoftFunds, 0, z, rng.random::<f64>() < sigmoid(z)));
        }
        let fitted = fit_class_platt(&rows, global);
        let issuer = fitted[DeclineClass::SoftIssuer as usize][0];
        assert!((issuer.a - 1.0 / 3.0).abs() < 0.05 && (issuer.b + 0.3).abs() < 0.08, "{issuer:?}");
        let funds = fitted[DeclineClass::SoftFunds as usize][0];
        assert!((funds.a - 1.0).abs() < 0.06 && funds.b.abs() < 0.06, "{funds:?}");
        assert_eq!(fitted[DeclineClass::Technical as usize], [global; 2], "no retries: the global scaling");
        assert_eq!(fitted[DeclineClass::SoftIssuer as usize][1], global, "no later retries: the global scaling");
    }

    /// Random examples laid out like encoded vectors (one column per slot), with
    /// labels drawn from a known logistic model.
    fn synthetic(n: usize, seed: u64) -> TrainingSet {
        let slots = SCHEMA.slot_ranges();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let truth: Vec<f64> = (0..SCHEMA.len()).map(|_| rng.random_range(-0.4..0.4)).collect();
        let mut set = TrainingSet::default();
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        for i in 0..n {
            // Skewed level choice so some columns are rare, as in real data.
            let row: Vec<u16> = slots.iter().map(|r| (r.start + (rng.random::<f64>().powi(2) * r.len() as f64) as usize) as u16).collect();
            let z = -0.8 + row.iter().map(|&k| truth[k as usize]).sum::<f64>();
            set.columns.extend_from_slice(&row);
            set.labels.push(rng.random::<f64>() < sigmoid(z));
            set.times.push(t0 + chrono::Duration::minutes(i as i64));
            set.declines.push(DeclineCode::InsufficientFunds);
            set.seq.push(i as u32);
        }
        set
    }

    fn objective(set: &TrainingSet, w: &[f64], b: f64, l2: f64) -> f64 {
        Objective { set, l2 }.eval(&[w, &[b]].concat(), false).0
    }

    #[test]
    fn coordinate_newton_reaches_the_lbfgs_optimum() {
        let set = synthetic(20_000, 7);
        let l2 = 1e-3;
        let (w, b, sweeps) = fit_logistic(&set, l2, 500, None).expect("cd fit");
        let (wl, bl, _) = fit_logistic_lbfgs(&set, l2, 1000, None).expect("lbfgs fit");
        let (fc, fl) = (objective(&set, &w, b, l2), objective(&set, &wl, bl, l2));
        assert!(sweeps < 500, "did not converge in 500 sweeps");
        // The sweeps stop once one gains < 1e-6, a little short of the optimum
        // (here ~5e-5 nats): the same objective to 1e-4, near-identical predictions.
        assert!(fc - fl < 1e-4 && fl - fc < 1e-6, "coordinate Newton {fc} vs L-BFGS {fl}");
        let max_dp = (0..set.len())
            .map(|i| {
                let z = |w: &[f64], b: f64| b + set.row(i).iter().map(|&k| w[k as usize]).sum::<f64>();
                (sigmoid(z(&w, b)) - sigmoid(z(&wl, bl))).abs()
            })
            .fold(0.0, f64::max);
        assert!(max_dp < 0.02, "predictions differ by up to {max_dp}");
    }

    #[test]
    fn fit_is_the_same_for_any_thread_count_and_warm_start_keeps_the_optimum() {
        let set = synthetic(70_000, 11); // three chunks: the order of chunk sums matters
        let fit = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool")
                .install(|| fit_logistic(&set, 1e-4, 200, None).expect("fit"))
        };
        let (a, b) = (fit(1), fit(2));
        assert_eq!(a, b, "fit depends on the thread count");
        let (w, c, _) = &a;
        let (ww, cw, sweeps) = fit_logistic(&set, 1e-4, 200, Some((w, *c))).expect("warm fit");
        assert!(sweeps <= 2, "a warm start at the optimum took {sweeps} sweeps");
        assert!((objective(&set, &ww, cw, 1e-4) - objective(&set, w, *c, 1e-4)).abs() < 1e-6);
    }

    #[test]
    fn a_warm_up_on_strided_subsets_reaches_the_cold_optimum() {
        let set = synthetic(64_000, 5);
        let l2 = 1e-4;
        let (w0, b0, _) = fit_logistic(&set, l2, 200, None).expect("fits");
        let mut heard = Vec::new();
        let start = warm_up(&set, l2, 200, 4_000, &mut |m| heard.push(m.to_string())).expect("warms up").expect("64,000 ≥ 4 × 4,000");
        // 64,000 / 16 = 4,000 ≥ 4,000 examples, then 16,000: two warm-up fits.
        assert_eq!(heard.len(), 2, "{heard:?}");
        assert!(heard[0].contains("every 16th") && heard[1].contains("every 4th"), "{heard:?}");
        // Whether it saves sweeps depends on the subsets having enough examples per
        // column (benchmarked on 10 M attempts, not asserted here); the optimum must not move.
        let (w1, b1, _) = fit_logistic(&set, l2, 200, Some((&start.0, start.1))).expect("fits");
        // The same tolerance as against L-BFGS: both stop once a sweep gains < 1e-6.
        let (f0, f1) = (objective(&set, &w0, b0, l2), objective(&set, &w1, b1, l2));
        assert!((f0 - f1).abs() < 1e-4, "{f0} vs {f1}");
        for i in (0..set.len()).step_by(97) {
            let z = |w: &[f64], b: f64| sigmoid(b + set.row(i).iter().map(|&k| w[k as usize]).sum::<f64>());
            assert!((z(&w0, b0) - z(&w1, b1)).abs() < 0.02);
        }
        // Too small a set: no warm-up.
        assert!(warm_up(&set, l2, 200, 20_000, &mut |_| {}).expect("runs").is_none());
    }

    /// linfa's pattern: the defaults check, and settings no fit can use are refused by name.
    #[test]
    fn train_params_are_checked_into_a_config() {
        assert_eq!(TrainParams::default().check().expect("the defaults are valid"), TrainConfig::default());
        for (p, says) in [
            (TrainParams { test_fraction: 0.0, ..TrainParams::default() }, "test_fraction"),
            (TrainParams { test_fraction: 0.96, calibration_fraction: 0.5, ..TrainParams::default() }, "test_fraction"),
            (TrainParams { l2: vec![], ..TrainParams::default() }, "l2"),
            (TrainParams { l2: vec![1e-4, f64::NAN], ..TrainParams::default() }, "l2"),
            (TrainParams { max_sweeps: 0, ..TrainParams::default() }, "max_sweeps"),
            (TrainParams { boost: BoostConfig { leaves: 1, ..BoostConfig::default() }, ..TrainParams::default() }, "boosting"),
        ] {
            let e = p.check().expect_err("refused").to_string();
            assert!(e.contains(says), "{e}");
        }
        // The CLI's widest test split still leaves a fit split.
        TrainParams { test_fraction: 0.89, ..TrainParams::default() }.check().expect("valid");
    }

    #[test]
    fn the_l2_search_goes_past_the_strongest_penalty_only_while_that_is_best() {
        let l2s = |path: &[f64]| TrainParams { l2: path.to_vec(), ..TrainParams::default() }.check().expect("valid");
        // Labels that no column predicts: every step toward a stronger penalty helps, so
        // the search goes on past the path's strongest (1e-5) to 1e-4 and 1e-3, then stops.
        let mut noise = synthetic(6_000, 5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        noise.labels = (0..noise.len()).map(|_| rng.random::<f64>() < 0.3).collect();
        let (fit, cal) = (noise.range(0..4_000), noise.range(4_000..6_000));
        let mut heard = Vec::new();
        let f = l2_path(&fit, &cal, &l2s(&[1e-6, 1e-5]), None, None, &mut |m| heard.push(m.to_string())).expect("fits");
        let tried: Vec<f64> = f.l2_search.iter().map(|x| x.0).collect();
        assert_eq!(tried.len(), 2 + L2_EXTENSIONS as usize, "{tried:?}");
        assert!((tried[2] - 1e-4).abs() < 1e-12 && (tried[3] - 1e-3).abs() < 1e-12, "{tried:?}");
        assert!(f.l2 > 1e-5, "kept {} of {:?}", f.l2, f.l2_search);
        assert!(heard.iter().any(|h| h.starts_with("the best L2 was the strongest tried")), "{heard:?}");
        // A real signal and a path that brackets the optimum: nothing beyond the path.
        let set = synthetic(20_000, 7);
        let (fit, cal) = (set.range(0..15_000), set.range(15_000..20_000));
        let f = l2_path(&fit, &cal, &l2s(&[1e-4, 1e-3, 1.0]), None, None, &mut |_| {}).expect("fits");
        assert_eq!(f.l2_search.len(), 3, "{:?}", f.l2_search);
        assert!(f.l2 < 1.0, "{:?}", f.l2_search);
    }

    #[test]
    fn the_trees_family_fits_trees_then_only_the_channel_terms() {
        let set = synthetic(20_000, 3);
        let cfg = TrainParams {
            family: Family::Trees,
            boost: BoostConfig { leaves: 15, max_trees: 60, ..BoostConfig::default() },
            ..TrainParams::default()
        }
        .check()
        .expect("valid");
        let mut heard = Vec::new();
        let t = train(&set, &cfg, &mut |m| heard.push(m.to_string())).expect("trains");
        let m = &t.model;
        assert!(!m.trees.is_empty() && t.report.trees == m.trees.trees.len(), "{heard:?}");
        assert!(
            heard.iter().any(|h| h.starts_with("boosted ")) && heard.iter().any(|h| h.starts_with("channel terms on the trees")),
            "{heard:?}"
        );
        m.check_schema().expect("fits the build");
        // Weights only where the channel is: the trees have the rest.
        let ranges = SCHEMA.slot_ranges();
        let channel: Vec<std::ops::Range<usize>> = channel_slots().into_iter().map(|k| ranges[k].clone()).collect();
        assert!(m.weights.iter().enumerate().all(|(k, &w)| w == 0.0 || channel.iter().any(|r| r.contains(&k))));
        assert!(channel.iter().any(|r| r.clone().any(|k| m.weights[k] != 0.0)), "no channel weight fitted");
        assert_eq!(m.weight_variances.len(), m.weights.len());
        // Better than the base rate on the later test split.
        assert!(t.report.model.log_loss < t.report.baseline_code.log_loss - 0.01, "{:?} vs {:?}", t.report.model, t.report.baseline_code);
        // The artifact keeps the trees: the same predictions after a JSON round trip.
        let back: SuccessModel = serde_json::from_str(&serde_json::to_string(m).expect("serializes")).expect("parses");
        for i in (0..set.len()).step_by(101) {
            assert!((back.predict(set.row(i)) - m.predict(set.row(i))).abs() < 1e-12);
        }
        // A logistic model has no trees, and `auto` fits one on a set this small.
        let auto = train(&set, &TrainConfig::default(), &mut |_| {}).expect("trains");
        assert!(auto.model.trees.is_empty() && auto.report.trees == 0);
        assert!(!serde_json::to_string(&auto.model).expect("serializes").contains("\"trees\""));
    }

    #[test]
    fn weight_variances_are_the_inverse_diagonal_precision() {
        let set = synthetic(4_000, 9);
        let l2 = 1e-3;
        let (w, b, _) = fit_logistic(&set, l2, 100, None).expect("fits");
        let v = weight_variances(&set, &w, b, l2, None);
        assert_eq!(v.len(), w.len());
        // Column by column, the long way round.
        let n = set.len() as f64;
        let mut seen = 0;
        for (k, &vk) in v.iter().enumerate().take(400) {
            let h: f64 = (0..set.len())
                .filter(|&i| set.row(i).contains(&(k as u16)))
                .map(|i| {
                    let p = sigmoid(b + set.row(i).iter().map(|&c| w[c as usize]).sum::<f64>());
                    p * (1.0 - p)
                })
                .sum();
            seen += (h > 0.0) as usize;
            assert!((vk - 1.0 / (h + n * l2)).abs() <= 1e-9 * vk, "column {k}: {vk} vs {}", 1.0 / (h + n * l2));
        }
        assert!(seen > 50, "the synthetic set should use many of the first columns");
        // A column no example has keeps the prior's variance; more data, less variance.
        let few = set.range(0..50);
        let unseen = (0..w.len()).find(|&k| !few.columns.contains(&(k as u16))).expect("an unused column");
        assert!(50.0 * l2 < MIN_PRIOR_PRECISION, "a small set, whose own prior is weaker than the least");
        assert!((weight_variances(&few, &w, b, l2, None)[unseen] - 1.0 / MIN_PRIOR_PRECISION).abs() < 1e-9);
        let more = synthetic(16_000, 9);
        let (w2, b2, _) = fit_logistic(&more, l2, 100, None).expect("fits");
        let v2 = weight_variances(&more, &w2, b2, l2, None);
        let used = set.row(0)[0] as usize;
        assert!(v2[used] < 0.5 * v[used], "{} vs {}", v2[used], v[used]);
    }
}
