//! The success model: logistic regression over the one-hot columns and crosses
//! of [`crate::features`], then Platt scaling fitted on later data.
//!
//! Scoring is a sum of weights: `z = intercept + Σ w[active]`, `p = σ(a·z + b)`;
//! a model trained on a large history adds boosted trees over the payment's and
//! the retry time's group levels (never the channel): `z += Σ trees(levels)`.
//! The payment-level part of `z` is computed once per failed payment
//! ([`SuccessModel::fixed_logit`]), the time-dependent part once per candidate
//! hour ([`SuccessModel::time_logit`], [`SuccessModel::tree_logit`]) and the channel part once per channel
//! ([`SuccessModel::channel_logit`]): a candidate is then one addition and a sigmoid.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use serde::{Deserialize, Serialize};

use crate::asks::AskResponse;
use crate::attrition::Attrition;
use crate::domain::Channel;
use crate::failed_retries::FailedRetries;
use crate::features::{group_levels, PaymentState, Schema, TimeLevels, DAY_GROUPS, N_FIXED, SCHEMA};
use crate::imputation::Imputation;
use crate::support::Support;
use crate::trees::{Bound, Forest};

/// A fitted success model: what `models/<version>/model.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuccessModel {
    /// The feature schema it was trained on (checked against the code's on load).
    pub schema: Schema,
    /// One weight per schema column.
    pub weights: Vec<f64>,
    /// Intercept of the logistic regression.
    pub intercept: f64,
    /// Platt scaling of the raw logit: `p = σ(platt_a · z + platt_b)`.
    pub platt_a: f64,
    pub platt_b: f64,
    /// Share of payers a message on each channel loses (estimated from the
    /// history's randomized channels; on histories without them `unmeasured`:
    /// nothing priced, SMS and push unused; unset in models trained before
    /// either: nothing priced, every channel used).
    #[serde(default, skip_serializing_if = "Attrition::is_unset")]
    pub attrition: Attrition,
    /// P(a payer asked for a new payment method on each channel provides one)
    /// (estimated from the history's randomized channels; empty when it could
    /// not be: the engine then values no ask).
    #[serde(default, skip_serializing_if = "AskResponse::is_empty")]
    pub asks: AskResponse,
    /// Posterior variance of each weight (diagonal Laplace approximation of the
    /// penalized fit: 1 / (Σ p(1 − p) over the fit examples with the column
    /// active + n · l2)). The engine discounts a channel's lift by its
    /// uncertainty; empty for models trained before it existed (no discount).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_variances: Vec<f64>,
    /// Boosted trees over the payment's and the retry time's group levels, added
    /// to the logit; empty for a purely logistic model (and models trained before).
    /// They never split on the channel, so a channel's lift stays the weights'.
    #[serde(default, skip_serializing_if = "Forest::is_empty")]
    pub trees: Forest,
    /// Where the training log holds evidence ([`crate::support`]); the engine decides
    /// only there. Empty for models trained before it existed (decide everywhere).
    #[serde(default, skip_serializing_if = "Support::is_empty")]
    pub support: Support,
    /// What a payment's own failed retries say beyond their number
    /// ([`crate::failed_retries`]); empty for models trained before it existed (no shift).
    #[serde(default, skip_serializing_if = "FailedRetries::is_empty")]
    pub failed_retries: FailedRetries,
    /// Platt scaling per decline class (by index) and retry stage (`[first retry, later
    /// retries]`), fitted on the calibration split toward the global `platt_a`/`platt_b`
    /// (`recoup::train::fit_class_platt`); empty for models trained before it existed
    /// (the global scaling everywhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_platt: Vec<[Platt; 2]>,
    /// The value a request without an optional field is scored at, where the training log
    /// nearly always had it ([`crate::imputation`]); empty for models trained before it
    /// existed (such a request is scored at the level "unknown").
    #[serde(default, skip_serializing_if = "Imputation::is_empty")]
    pub imputation: Imputation,
}

/// Platt scaling of a raw logit: `p = σ(a·z + b)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    pub a: f64,
    pub b: f64,
}

impl Platt {
    /// Calibrated probability from a raw logit.
    pub fn calibrate(self, z: f64) -> f64 {
        sigmoid(self.a * z + self.b)
    }

    /// `exp(-(a·z + b))` split in two: `calibrate(z1 + z2) = 1 / (1 + o1·o2)` with
    /// `o1 = odds_against(z1, true)` and `o2 = odds_against(z2, false)`, so a grid of
    /// hours × channels takes one `exp` per hour and one per channel.
    pub fn odds_against(self, z: f64, with_offset: bool) -> f64 {
        (-(self.a * z + if with_offset { self.b } else { 0.0 })).exp()
    }
}

/// Groups the trees may split on: every group but the channel.
pub const TREE_GROUPS: u32 = ((1u32 << crate::features::N_GROUPS) - 1) & !(1u32 << crate::features::CHANNEL_GROUP);

/// A model that does not fit the code that loads it.
#[derive(Debug, thiserror::Error)]
pub enum SchemaMismatch {
    #[error(
        "model was trained with feature version {model}, this build computes version {code}; retrain with this build (`recoup train`)"
    )]
    Version { model: u32, code: u32 },
    #[error("model's feature schema differs from this build's at column {index}: model has {model:?}, code has {code:?}; retrain with this build")]
    Column { index: usize, model: String, code: String },
    #[error("model has {weights} weights for {columns} schema columns")]
    Weights { weights: usize, columns: usize },
    #[error("model has {variances} weight variances for {columns} schema columns")]
    Variances { variances: usize, columns: usize },
    #[error("model's trees do not fit this build's feature groups: {0}; retrain with this build")]
    Trees(String),
    #[error("model value {field} = {value:e} is outside its sane range {range}; the file is corrupt or was edited")]
    Value { field: String, value: f64, range: &'static str },
}

/// Largest |weight|, |intercept|, |Platt b| or |tree leaf| a fitted model can
/// sensibly hold: a logit of 50 already means P = 1 − 2·10⁻²² (the fit is L2-penalized).
pub const MAX_ABS_PARAMETER: f64 = 50.0;

/// Logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Log loss of logit `z` for outcome `y`: log(1 + e^z) − y·z, computed stably.
#[inline]
pub fn logit_loss(z: f64, y: bool) -> f64 {
    (if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() }) - if y { z } else { 0.0 }
}

impl SuccessModel {
    /// Refuse a model whose feature schema is not exactly the code's.
    pub fn check_schema(&self) -> Result<(), SchemaMismatch> {
        let code = &*SCHEMA;
        if self.schema.version != code.version {
            return Err(SchemaMismatch::Version { model: self.schema.version, code: code.version });
        }
        let n = self.schema.columns.len().max(code.columns.len());
        for index in 0..n {
            let (m, c) = (self.schema.columns.get(index), code.columns.get(index));
            if m != c {
                return Err(SchemaMismatch::Column {
                    index,
                    model: m.cloned().unwrap_or_else(|| "<none>".into()),
                    code: c.cloned().unwrap_or_else(|| "<none>".into()),
                });
            }
        }
        if self.weights.len() != code.columns.len() {
            return Err(SchemaMismatch::Weights { weights: self.weights.len(), columns: code.columns.len() });
        }
        if !self.weight_variances.is_empty() && self.weight_variances.len() != code.columns.len() {
            return Err(SchemaMismatch::Variances { variances: self.weight_variances.len(), columns: code.columns.len() });
        }
        self.trees.check(TREE_GROUPS).map_err(SchemaMismatch::Trees)?;
        self.check_values()
    }

    /// Every parameter finite and within [`MAX_ABS_PARAMETER`]; rates in [0, 1].
    fn check_values(&self) -> Result<(), SchemaMismatch> {
        let bad = |field: String, value: f64, range| Err(SchemaMismatch::Value { field, value, range });
        let param = |v: f64| v.is_finite() && v.abs() <= MAX_ABS_PARAMETER;
        let rate = |v: f64| (0.0..=1.0).contains(&v);
        if let Some((i, &w)) = self.weights.iter().enumerate().find(|(_, w)| !param(**w)) {
            return bad(format!("weights[{i}] ({})", self.schema.columns.get(i).map_or("?", String::as_str)), w, "[-50, 50]");
        }
        for (name, v) in [("intercept", self.intercept), ("platt_b", self.platt_b)] {
            if !param(v) {
                return bad(name.into(), v, "[-50, 50]");
            }
        }
        if !(self.platt_a > 0.0 && self.platt_a <= MAX_ABS_PARAMETER) {
            return bad("platt_a".into(), self.platt_a, "(0, 50]");
        }
        for (c, stages) in self.class_platt.iter().enumerate() {
            for (k, p) in stages.iter().enumerate() {
                if !(p.a > 0.0 && p.a <= MAX_ABS_PARAMETER) {
                    return bad(format!("class_platt[{c}][{k}].a"), p.a, "(0, 50]");
                }
                if !param(p.b) {
                    return bad(format!("class_platt[{c}][{k}].b"), p.b, "[-50, 50]");
                }
            }
        }
        if let Some((i, &v)) = self.weight_variances.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
            return bad(format!("weight_variances[{i}]"), v, "[0, ∞)");
        }
        if let Some((k, i, v)) = self.trees.values().find(|(_, _, v)| !param(*v)) {
            return bad(format!("trees[{k}].nodes[{i}].value"), v, "[-50, 50]");
        }
        for c in self.attrition.channels.iter().chain(&self.attrition.other) {
            for (name, v) in [("base", c.base), ("per_message", c.per_message)] {
                if !rate(v) {
                    return bad(format!("attrition.{}.{name}", c.channel), v, "[0, 1]");
                }
            }
        }
        for c in self.asks.channels.iter().chain(&self.asks.other) {
            if !(rate(c.rate) && c.se.is_finite() && c.se >= 0.0) {
                return bad(format!("asks.{}.rate/se", c.channel), if rate(c.rate) { c.se } else { c.rate }, "rate in [0, 1], se ≥ 0");
            }
        }
        if let Some((i, &g)) = self
            .failed_retries
            .gamma
            .iter()
            .enumerate()
            .find(|(_, g)| !(g.is_finite() && (crate::failed_retries::MIN_GAMMA..=0.0).contains(*g)))
        {
            return bad(format!("failed_retries.gamma[{i}]"), g, "[-8, 0]");
        }
        for (c, m) in self.failed_retries.mean.iter().enumerate() {
            if let Some((k, &v)) = m.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0 && **v <= MAX_ABS_PARAMETER)) {
                return bad(format!("failed_retries.mean[{c}][{k}]"), v, "[0, 50]");
            }
        }
        if !rate(self.asks.spontaneous_per_day) {
            return bad("asks.spontaneous_per_day".into(), self.asks.spontaneous_per_day, "[0, 1]");
        }
        Ok(())
    }

    /// Raw logit of a vector of active columns (trees included).
    pub fn logit(&self, active: &[u16]) -> f64 {
        let z = self.intercept + active.iter().map(|&c| self.weights[c as usize]).sum::<f64>();
        if self.trees.is_empty() {
            z
        } else {
            z + self.trees.eval(&group_levels(active))
        }
    }

    /// Calibrated probability from a raw logit, with the global scaling.
    pub fn calibrate(&self, z: f64) -> f64 {
        self.platt().calibrate(z)
    }

    /// The global Platt scaling (fitted on the whole calibration split).
    pub fn platt(&self) -> Platt {
        Platt { a: self.platt_a, b: self.platt_b }
    }

    /// The scaling of a retry answering a decline of `class` after `retries` earlier
    /// retries: the class's own for its stage where the model has one, else the global.
    pub fn platt_for(&self, class: crate::declines::DeclineClass, retries: u32) -> Platt {
        self.class_platt.get(class as usize).map_or(self.platt(), |s| s[(retries > 0) as usize])
    }

    /// Calibrated probability of a vector of active columns.
    pub fn predict(&self, active: &[u16]) -> f64 {
        self.calibrate(self.logit(active))
    }

    /// The payment-level part of the logit (intercept included, trees not: they
    /// depend on the retry time too), computed once per payment.
    pub fn fixed_logit(&self, state: &PaymentState) -> f64 {
        self.intercept + self.sum(state.fixed())
    }

    /// The part of the logit that depends on the retry time but not the channel:
    /// a grid adds it once per hour, then [`SuccessModel::channel_logit`] per channel.
    pub fn time_logit(&self, state: &PaymentState, t: &TimeLevels, scratch: &mut Vec<u16>) -> f64 {
        scratch.clear();
        state.time_columns(t, scratch);
        self.sum(scratch)
    }

    /// The trees with the payment's splits taken (once per request):
    /// [`SuccessModel::bind_trees_to_day`] then takes a day's, and
    /// [`SuccessModel::tree_logit`] walks the few splits left per hour.
    pub fn bind_trees(&self, state: &PaymentState) -> Bound {
        self.trees.bind(&state.group_levels(&TimeLevels::default(), Channel::None), (1u32 << N_FIXED) - 1)
    }

    /// `bound` ([`SuccessModel::bind_trees`] of the same payment) further bound
    /// to the day-level groups of `t` ([`DAY_GROUPS`]), into `out`: what is left
    /// splits on the hour-level groups only.
    pub fn bind_trees_to_day(&self, bound: &Bound, state: &PaymentState, t: &TimeLevels, out: &mut Bound) {
        bound.bind_into(&self.trees, &state.group_levels(t, Channel::None), DAY_GROUPS, out);
    }

    /// The trees' part of the logit at time levels `t` (it depends on the payment
    /// and the retry time, never on the channel), from the trees bound to the
    /// same payment (and possibly `t`'s day); 0 for a purely logistic model.
    pub fn tree_logit(&self, bound: &Bound, state: &PaymentState, t: &TimeLevels) -> f64 {
        if self.trees.is_empty() {
            return 0.0;
        }
        bound.eval(&state.group_levels(t, Channel::None))
    }

    /// [`SuccessModel::tree_logit`] and the bootstrap variance of the time-dependent
    /// trees' part of it ([`crate::trees::Bound::eval_spread`]; 0 for trees fitted without refits).
    pub fn tree_logit_and_variance(&self, bound: &Bound, state: &PaymentState, t: &TimeLevels) -> (f64, f64) {
        if self.trees.is_empty() {
            return (0.0, 0.0);
        }
        let (z, spread) = bound.eval_spread(&self.trees, &state.group_levels(t, Channel::None));
        (z, crate::trees::spread_variance(&spread))
    }

    /// The part of the logit that involves `channel` (the same at every retry time).
    pub fn channel_logit(&self, state: &PaymentState, channel: Channel, scratch: &mut Vec<u16>) -> f64 {
        scratch.clear();
        state.channel_columns(channel, scratch);
        self.sum(scratch)
    }

    /// Standard deviation of `channel`'s lift over no message (the difference of
    /// their channel terms), from the weights' variances as if independent; 0 when
    /// the model has none.
    pub fn channel_lift_sd(&self, state: &PaymentState, channel: Channel, scratch: &mut Vec<u16>) -> f64 {
        if self.weight_variances.is_empty() || channel == Channel::None {
            return 0.0;
        }
        scratch.clear();
        state.channel_columns(channel, scratch);
        state.channel_columns(Channel::None, scratch);
        scratch.iter().map(|&k| self.weight_variances[k as usize]).sum::<f64>().sqrt()
    }

    fn sum(&self, columns: &[u16]) -> f64 {
        columns.iter().map(|&k| self.weights[k as usize]).sum()
    }
}
