//! The decision engine: when to retry a failed payment and which message to
//! send first. Pure: no clock (the request says what "now" is), no I/O. One file
//! per step: [`request`] → [`grid`] → [`value`] → [`choose`] → [`explain`]; the
//! ask plan when only a new payment method allows a retry is [`ask`], the
//! holdout's fixed schedule [`fixed`], the bound at spacing and local-hour
//! levels' edges (part of valuing) [`edges`].
//!
//! 1. Validate the request ([`Request::validate`] names the offending field).
//! 2. Hard declines and other permanent rule violations answer `DoNotRetry`
//!    with the rule, and still recommend the channel to ask the payer for a new
//!    payment method.
//! 3. Build the candidate grid: every hour from the first allowed time over
//!    the horizon (14 days by default, never past the dunning window), in the
//!    payer's time zone, × every allowed channel.
//! 4. Drop what the network rules ([`crate::rules::check_retry`]) or the
//!    caller's constraints (earliest/latest, quiet hours, weekends, holidays,
//!    maximum retries, channels) forbid, counting each reason.
//! 5. Score every remaining (time, channel) with the success model: the
//!    payment-level logit once, the candidate's own columns per candidate.
//! 6. Value: `(1 − a) × (p × amount − attempt cost) − message cost`, where `a`
//!    is the share of payers the message loses (the model's message
//!    attrition; 0 without a message), discounted per day of delay, plus a
//!    one-step look-ahead: if the payer stays and this retry fails, the best
//!    later slot (at least a day later) is still there, `(1 − a)(1 − p) × V(later)`.
//!    `p` is valued at a lower bound: the time terms' uncertainty, and no higher
//!    than the line to a neighbouring spacing level near its edge ([`edges`]);
//!    the estimate is what is reported.
//! 7. Pick the best; with probability `exploration` pick uniformly among the
//!    near-best alternatives instead, and report the propensity of the choice.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

mod ask;
mod choose;
mod config;
mod decision;
mod edges;
mod explain;
mod fixed;
mod grid;
mod request;
mod value;

#[cfg(test)]
mod tests;

use chrono::Duration;

pub use crate::limits::InvalidField;
pub use config::{ConfigError, EngineConfig, EngineParams};
pub use decision::{Action, AskPlan, Decision, NextStep, Reason, Slot, Term};
pub use fixed::decide_fixed;
pub use request::{CardAttempt, Constraints, EarlierAttempt, PastPayment, Request, SentAsk};

use decision::reason;
use explain::Chosen;
use grid::Grid;
use request::{rule_facts, Prepared};
use value::Valuer;

use crate::model::SuccessModel;
use crate::rules::{self, Proposal};

/// The raw logit (before calibration) the engine gives a retry of `req`'s payment at `at`
/// with `channel`: the model's terms for that time and channel plus what the payment's
/// failed retries say ([`crate::failed_retries`]), exactly as [`decide`] scores its
/// candidates. Calibrate it with `model.platt_for(class of the last decline, retries made)`.
/// Training uses it to score logged retries the way serving would (`src/policy_calibration.rs`).
pub fn retry_logit(
    model: &SuccessModel,
    req: &Request,
    at: chrono::DateTime<chrono::Utc>,
    channel: crate::domain::Channel,
) -> Result<f64, InvalidField> {
    req.validate()?;
    let p = Prepared::new(req, model)?;
    let mut scratch = Vec::with_capacity(64);
    let shift = value::failed_retries_shift(model, &p.facts, p.earlier, &p.evidence, &mut Vec::new(), &mut scratch);
    scratch.clear();
    scratch.extend_from_slice(p.state.fixed());
    p.state.candidate_columns(&crate::features::Candidate { at, channel }, &mut scratch);
    Ok(model.logit(&scratch) + shift)
}

/// Decide one request with `model`. `random` in [0, 1) drives exploration
/// (callers pass a hash of the request for reproducible answers, or a random draw).
pub fn decide(model: &SuccessModel, cfg: &EngineConfig, req: &Request, random: (f64, f64)) -> Result<Decision, InvalidField> {
    req.validate()?;
    let p = Prepared::new(req, model)?;
    // Permanent violations: probe at the earliest sensible time.
    let probe = rules::check_retry_on_card(
        rule_facts(req),
        &p.past,
        p.card(req),
        Proposal { at: req.now.max(p.last.at) + Duration::days(1), payment_method_updated: req.payment_method_updated },
        &cfg.rules,
    );
    if probe.is_permanent() {
        return Ok(ask::not_retryable(model, cfg, req, &p, &probe));
    }
    let mut reasons = p.assumption_reasons(model, req);
    // Decide only where the training log holds evidence (crate::support).
    let support = model.support.for_class(p.last.decline.class());
    if let Some(Err(out)) = support.map(|s| s.retry_number(req.attempts.len() as u32)) {
        let detail = support.map(|s| s.describe()).unwrap_or_default();
        reasons.push(reason(
            format!("outside_support:{}", out.code()),
            format!(
                "the training log never made a retry number {} after this decline often enough to learn from ({detail})",
                req.attempts.len()
            ),
        ));
        return Ok(p.not_retrying(reasons, 0, 0));
    }
    if let Some(max) = req.constraints.max_retries.filter(|&max| p.retries(req) >= max) {
        reasons.push(reason("constraint:max_retries", format!("{} retries made, the caller allows {max}", p.retries(req))));
        return Ok(p.not_retrying(reasons, 0, 0));
    }
    let grid = Grid::new(cfg, req, &p);
    let mut scratch = Vec::with_capacity(64);
    let fixed_logit =
        model.fixed_logit(&p.state) + value::failed_retries_shift(model, &p.facts, p.earlier, &p.evidence, &mut reasons, &mut scratch);
    // This decline class's calibration at this retry stage.
    let platt = model.platt_for(p.last.decline.class(), p.retries(req));
    let channels = value::channels(model, cfg, req, &p, platt, &mut scratch);
    let valuer = Valuer {
        platt,
        pessimistic: !model.weight_variances.is_empty() && cfg.support_pessimism > 0.0,
        amount: req.facts.amount_minor as f64,
        attempt_cost: cfg.attempt_cost_minor,
        support,
        channels: &channels.list,
    };
    let mut scored = grid.score(model, cfg, req, &p, fixed_logit, &valuer);
    let removed = scored.removed.explain(&mut reasons);
    if scored.slots.is_empty() {
        reasons.push(reason("no_allowed_slot", "no (time, channel) in the window is allowed by the rules and constraints"));
        return Ok(p.not_retrying(reasons, 0, removed));
    }
    let later = value::look_ahead(&mut scored);
    let order = choose::rank(cfg, &scored.slots);
    let best = &scored.slots[order[0]];
    if best.value <= 0.0 {
        reasons.push(reason(
            "not_worth_retrying",
            format!("best slot's expected value {:.1} (minor units) does not cover the attempt and message costs", best.value),
        ));
        return Ok(p.not_retrying(reasons, scored.slots.len(), removed));
    }
    let choice = choose::choose(cfg, req, &scored.slots, &order, random, &mut reasons);
    let chosen = Chosen { grid: &grid, scored: &scored, later: &later, order: &order, choice, channels: &channels, removed };
    Ok(explain::retry(model, cfg, req, &p, chosen, reasons))
}
