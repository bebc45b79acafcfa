//! The holdout's control arm: a fixed schedule's next slot that the network rules
//! allow, valued by the model for the live calibration but never chosen by it.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use chrono::{DateTime, Duration, Utc};

use super::config::EngineConfig;
use super::decision::{describe, reason, stopped, Action, Decision, NextStep, Slot};
use super::request::{invalid, rule_facts, rule_history, Request};
use crate::domain::Channel;
use crate::limits::InvalidField;
use crate::model::SuccessModel;
use crate::rules::{self, Proposal};

/// Decide one request of a holdout's control arm: the next slot of a fixed schedule
/// (`next(after)` gives the first slot strictly after `after`) that the network rules
/// allow, valued with `model` for the live calibration but never chosen by it. A
/// permanent rule (a hard decline, a revoked authorization, a cap reached) stops the
/// payment as it does for the model; a slot a rule forbids for now is skipped.
pub fn decide_fixed(
    model: &SuccessModel,
    cfg: &EngineConfig,
    req: &Request,
    name: &str,
    next: &dyn Fn(DateTime<Utc>) -> Option<(DateTime<Utc>, Channel)>,
) -> Result<Decision, InvalidField> {
    req.validate()?;
    let (Some(first), Some(last)) = (req.attempts.first(), req.attempts.last()) else {
        return Err(invalid("attempts", "must hold at least the failed original charge"));
    };
    let (past, elsewhere) = rule_history(req);
    let card = rules::CardContext { card: req.card, elsewhere: &elsewhere };
    let rule_facts = rule_facts(req);
    let mut reasons = vec![reason(
        "holdout_control",
        format!("this payment is in the holdout: it follows the control schedule {name:?}, not the model (network rules still apply); P(recovery) counts this retry only"),
    )];
    let window_end = first.at + Duration::days(cfg.dunning_window_days);
    let mut after = req.now.max(last.at);
    let mut chosen = None;
    for _ in 0..256 {
        let Some((at, channel)) = next(after).filter(|(at, _)| *at <= window_end) else { break };
        let verdict = rules::check_retry_on_card(
            rule_facts,
            &past,
            card,
            Proposal { at, payment_method_updated: req.payment_method_updated },
            &cfg.rules,
        );
        if verdict.is_permanent() {
            reasons
                .extend(verdict.violations.iter().filter(|v| v.is_permanent()).map(|v| reason(format!("rule:{}", v.code()), describe(v))));
            return Ok(stopped(reasons));
        }
        if verdict.violations.is_empty() {
            chosen = Some((at, channel));
            break;
        }
        if let Some(v) = verdict.violations.first() {
            reasons
                .push(reason(format!("rule:{}", v.code()), format!("the schedule's slot at {} skipped: {}", at.to_rfc3339(), describe(v))));
        }
        after = at;
    }
    let Some((at, channel)) = chosen else {
        reasons
            .push(reason("stop", format!("the control schedule {name:?} has no retry left in the {}-day window", cfg.dunning_window_days)));
        return Ok(stopped(reasons));
    };
    // The model's P of the schedule's slot, scored as the model's arm scores its candidates
    // (imputation and the payment's failed retries included): what the live calibration
    // compares the two arms by.
    let p_success = super::retry_logit(model, req, at, channel)
        .map_or(f64::NAN, |z| model.platt_for(last.decline.class(), req.attempts.len() as u32 - 1).calibrate(z));
    let send_at = (channel != Channel::None).then(|| (at - Duration::hours(cfg.message_lead_hours.max(0))).max(req.now));
    Ok(Decision {
        action: Action::Retry,
        next: NextStep::Retry,
        chosen: Some(Slot { retry_at: at, channel, send_at, p_success, attrition: 0.0, expected_value: 0.0, value: 0.0 }),
        p_recovery: p_success,
        planned_retries: 1,
        ..stopped(reasons)
    })
}
