//! Step 5 of a decision: explain. The chosen retry with its P(recovery) path, the
//! alternatives, the reasons in the data (pay day, channel lift and its discount,
//! message attrition, missing calendars or card ids) and the largest terms of the
//! chosen slot's logit.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use chrono::Datelike;

use super::choose::Choice;
use super::config::EngineConfig;
use super::decision::{reason, Action, Decision, NextStep, Reason, Slot, Term};
use super::grid::{Grid, ScoredGrid};
use super::request::{Prepared, Request};
use super::value::{recovery_path, Channels, Later};
use crate::declines::DeclineClass;
use crate::domain::{Channel, PaymentMethod};
use crate::features::{group_column, group_levels, Candidate, PaymentState, SCHEMA};
use crate::model::SuccessModel;

/// What a retry decision is made of, once chosen.
pub(super) struct Chosen<'a> {
    pub grid: &'a Grid,
    pub scored: &'a ScoredGrid,
    pub later: &'a Later,
    pub order: &'a [usize],
    pub choice: Choice,
    pub channels: &'a Channels,
    pub removed: usize,
}

/// The retry decision, explained.
pub(super) fn retry(
    model: &SuccessModel,
    cfg: &EngineConfig,
    req: &Request,
    p: &Prepared,
    c: Chosen,
    mut reasons: Vec<Reason>,
) -> Decision {
    let slots = &c.scored.slots;
    let picked = slots[c.choice.ix];
    let chosen = c.grid.slot(&picked);
    let retries_left = req.constraints.max_retries.map_or(u32::MAX, |m| m.saturating_sub(p.retries(req)));
    let (p_recovery, planned_retries) = recovery_path(&picked, c.scored, c.later, retries_left);
    let schedule = p.schedule();
    let confidence = p.state.payday().confidence;
    // Reasons in the data: pay day and channel.
    let local = chosen.retry_at.with_timezone(&req.facts.timezone);
    if p.state.last_decline().class() == DeclineClass::SoftFunds {
        reasons.push(reason(
            "pay_day",
            format!(
                "funds decline: pay schedule {schedule} (confidence {:.0} %), retry on {} local",
                confidence * 100.0,
                local.format("%a %Y-%m-%d %H:%M")
            ),
        ));
    }
    let none_p = slots.iter().find(|s| s.hour == picked.hour && s.channel == Channel::None).map(|s| s.p);
    if let (true, Some(p0)) = (chosen.channel != Channel::None, none_p) {
        reasons.push(reason(
            "channel_lift",
            format!("{} raises P(success) from {:.3} to {:.3}", <&str>::from(chosen.channel), p0, chosen.p_success),
        ));
    }
    if !c.channels.discounted.is_empty() {
        let each: Vec<String> =
            c.channels.discounted.iter().map(|(ch, lift, kept)| format!("{} {lift:+.3} → {kept:+.3}", <&str>::from(*ch))).collect();
        reasons.push(reason(
            "channel_lift_discounted",
            format!(
                "estimated lifts over no message (logit) discounted by {} standard deviation(s) of their uncertainty before valuing: {}",
                cfg.channel_pessimism,
                each.join(", ")
            ),
        ));
    }
    if !c.channels.unpriced.is_empty() {
        let names: Vec<&str> = c.channels.unpriced.iter().map(|&ch| ch.into()).collect();
        reasons.push(reason(
            "channel_unpriced",
            format!(
                "{} not used: the training log cannot show how many payers they lose (no randomized channels), and they interrupt the payer",
                names.join(" and ")
            ),
        ));
    }
    if c.scored.edge_bound_hours > 0 {
        reasons.push(reason(
            "level_edge_bound",
            format!(
                "{} of {} hours valued no higher than the line to a worse neighbouring level (time since the last attempt or the failure, local hour): a level's weight is its average, not its value near an edge",
                c.scored.edge_bound_hours,
                c.scored.hour_best.len()
            ),
        ));
    }
    fixed_spacing(model, req, p, &chosen, c.scored.spacing_capped_hours, &mut reasons);
    if chosen.attrition > 0.0 {
        reasons.push(reason(
            "message_attrition",
            format!("a {} message after {} earlier ones loses an estimated {:.1} % of payers; the value counts the retry only for those who stay", <&str>::from(chosen.channel), p.messages_before, 100.0 * chosen.attrition),
        ));
    }
    let terms = terms(model, &p.state, &chosen);
    let alternatives = c.order.iter().copied().filter(|&i| i != c.choice.ix).take(cfg.top_k).map(|i| c.grid.slot(&slots[i])).collect();
    caveats(req, &mut reasons);
    Decision {
        action: Action::Retry,
        next: NextStep::Retry,
        chosen: Some(chosen),
        ask_channel: None,
        ask: None,
        p_recovery,
        planned_retries,
        alternatives,
        reasons,
        propensity: c.choice.propensity,
        terms,
        candidates_scored: slots.len(),
        candidates_removed: c.removed,
        pay_schedule: schedule,
        pay_schedule_confidence: confidence,
    }
}

/// Hours a chosen retry may lie outside the spacing a log fixed before the decision says its
/// P is an extrapolation: the calibration where the policy acts reads logged retries within
/// about this distance of a choice as alike (its kernel's bandwidth).
pub const EXTRAPOLATION_HOURS: f64 = 12.0;

/// Reasons when the log retried this retry number on a fixed schedule: how many hours
/// past it were valued no higher than its spacing's level (`spacing_capped`, from the
/// grid), and when the chosen retry lies more than [`EXTRAPOLATION_HOURS`] from it, that
/// its P is an extrapolation (README: what recoup assumes).
fn fixed_spacing(model: &SuccessModel, req: &Request, p: &Prepared, chosen: &Slot, spacing_capped: usize, reasons: &mut Vec<Reason>) {
    let k = p.retries(req) + 1;
    let Some(support) = model.support.for_class(p.last.decline.class()) else { return };
    let Some([lo, hi]) = support.fixed_spacing(k) else { return };
    let logged = if hi - lo < 1.0 { format!("{lo:.0} h") } else { format!("{lo:.0}–{hi:.0} h") };
    if spacing_capped > 0 {
        reasons.push(reason(
            "spacing_not_credited",
            format!(
                "the training log made retry {k} after this decline only {logged} after the attempt before: {spacing_capped} later hours were valued no higher than that spacing's level, since what a longer wait does to this retry is not in the log"
            ),
        ));
    }
    let spacing = (chosen.retry_at - p.last.at).num_minutes() as f64 / 60.0;
    if spacing < lo - EXTRAPOLATION_HOURS || spacing > hi + EXTRAPOLATION_HOURS {
        reasons.push(reason(
            "extrapolated_spacing",
            format!(
                "the training log made retry {k} after this decline only {logged} after the attempt before; this one is {spacing:.0} h after it: what another spacing does to this retry is not in the log, so its P(success) {:.3} extrapolates from other retry numbers",
                chosen.p_success
            ),
        ));
    }
}

/// The chosen slot's largest logit terms (columns, and the trees' part per group), largest first.
fn terms(model: &SuccessModel, state: &PaymentState, chosen: &Slot) -> Vec<Term> {
    let mut cols = state.fixed().to_vec();
    state.candidate_columns(&Candidate { at: chosen.retry_at, channel: chosen.channel }, &mut cols);
    let mut terms: Vec<Term> =
        cols.iter().map(|&c| Term { feature: SCHEMA.columns[c as usize].clone(), weight: model.weights[c as usize] }).collect();
    if !model.trees.is_empty() {
        let x = group_levels(&cols);
        let (by_group, _) = model.trees.contributions(&x);
        terms.extend(
            by_group
                .iter()
                .enumerate()
                .filter(|(_, c)| c.abs() > 0.0)
                .map(|(g, &c)| Term { feature: format!("trees:{}", group_column(g, x[g] as usize)), weight: c }),
        );
    }
    terms.sort_by(|a, b| b.weight.abs().total_cmp(&a.weight.abs()));
    terms.truncate(8);
    terms
}

/// What the decision could not take into account.
fn caveats(req: &Request, reasons: &mut Vec<Reason>) {
    if !crate::calendar::has_calendar(req.facts.country, req.now.year()) {
        reasons.push(reason(
            "no_holiday_calendar",
            format!(
                "recoup has no bank-holiday calendar for {}: only weekends were treated as non-business days",
                req.facts.country.as_str()
            ),
        ));
    }
    if req.facts.method == PaymentMethod::Card && req.card.is_none() {
        reasons.push(reason(
            "caps_counted_per_payment",
            "no payment_method_id: the networks' per-card caps were counted over this payment's attempts only",
        ));
    }
}
