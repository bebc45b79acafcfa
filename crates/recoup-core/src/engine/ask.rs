//! When only a new payment method allows the next retry: stop for good, ask the
//! payer for one now, or wait. The ask plan is a small dynamic programme over the
//! ask opportunities left in the window (see [`plan_ask`]).
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use chrono::{DateTime, Duration, Timelike, Utc};
use strum::VariantArray;

use super::config::EngineConfig;
use super::decision::{describe, reason, AskPlan, Decision, NextStep};
use super::grid::{in_quiet, quiet_elsewhere};
use super::request::{Constraints, Prepared, Request};
use super::value::{usable, valued_channel_logit};
use crate::declines::{DeclineClass, DeclineCode};
use crate::domain::Channel;
use crate::features::{evidence_with_retries, Candidate, EarlierAttempt, PaymentFacts, PaymentState};
use crate::limits::ceil_hour;
use crate::model::SuccessModel;
use crate::payday::Evidence;
use crate::rules::Verdict;

/// The answer when a permanent rule forbids the next retry on this payment method
/// (`probe`: the rules' verdict at the earliest sensible time): stop for good when the
/// payer said stop or nothing can be asked; otherwise the ask plan's next step.
pub(super) fn not_retryable(model: &SuccessModel, cfg: &EngineConfig, req: &Request, p: &Prepared, probe: &Verdict) -> Decision {
    let mut reasons = Vec::new();
    for v in probe.violations.iter().filter(|v| v.is_permanent()) {
        reasons.push(reason(format!("rule:{}", v.code()), describe(v)));
    }
    if p.last.decline.class() == DeclineClass::Hard {
        reasons.insert(
            0,
            reason(
                "hard_decline",
                format!("{} is a hard decline: retrying cannot succeed and networks penalise it", p.last.decline.as_str()),
            ),
        );
    }
    if req.attempts.iter().any(|a| payer_said_stop(a.decline)) {
        reasons.push(reason("stop", "the payer (or the bank for them) revoked the authorization or asked to stop: no retry and no ask"));
        return p.not_retrying(reasons, 0, 0);
    }
    let plan = (!probe.is_hopeless()).then(|| plan_ask(model, cfg, req, &p.facts, p.earlier, &p.evidence, p.messages_before)).flatten();
    let Some((plan, p_recovery)) = plan else {
        let Some(ask) = best_ask_channel(model, &req.constraints) else {
            reasons.push(reason(
                "no_ask_channel",
                "no allowed channel to ask for a new payment method (SMS and push are held back where the training log cannot show how many payers they lose): wait for the payer to update it",
            ));
            return Decision { next: NextStep::WaitForUpdate, ..p.not_retrying(reasons, 0, 0) };
        };
        reasons.push(reason("ask_for_new_payment_method", format!("ask the payer for a new payment method by {}", <&str>::from(ask))));
        return Decision { next: NextStep::AskForPaymentMethod, ask_channel: Some(ask), ..p.not_retrying(reasons, 0, 0) };
    };
    reasons.push(plan_reason(cfg, &plan, p_recovery));
    reasons.extend(p.assumption_reasons(model, req));
    // Ask now only when the plan's first ask is due now; a later one is a wait.
    let ask_now = plan.channel != Channel::None && plan.send_at <= req.now + Duration::hours(1);
    Decision {
        next: if ask_now { NextStep::AskForPaymentMethod } else { NextStep::WaitForUpdate },
        ask_channel: ask_now.then_some(plan.channel),
        p_recovery,
        ask: Some(plan),
        ..p.not_retrying(reasons, 0, 0)
    }
}

/// The ask plan in words: which ask and when, with its numbers, or why none is worth it.
fn plan_reason(cfg: &EngineConfig, plan: &AskPlan, p_recovery: f64) -> super::decision::Reason {
    let pct = |x: f64| 100.0 * x;
    if plan.channel == Channel::None {
        return reason(
            "ask_not_worth_it",
            format!(
                "no ask is worth it: each would lose more payers or cost more than it brings back (waiting for the payer is worth {:.1})",
                plan.value_without_asking
            ),
        );
    }
    reason(
        "ask_for_new_payment_method",
        format!(
            "ask by {} at {}: P(new payment method) {:.1} %, then P(retry succeeds) {:.3}, P(payer cancels) {:.1} %; the plan is worth {:.1} against {:.1} without asking; {} asks planned at least {} h apart while unanswered, P(recovery) {:.3} (each ask taken as likely to work as the first)",
            <&str>::from(plan.channel),
            plan.send_at.to_rfc3339(),
            pct(plan.p_update),
            plan.p_success_after,
            pct(plan.attrition),
            plan.value,
            plan.value_without_asking,
            plan.planned_asks,
            cfg.ask_spacing_hours.max(1),
            p_recovery
        ),
    )
}

/// Declines by which the payer told the merchant to stop: no ask for a new method either.
fn payer_said_stop(d: DeclineCode) -> bool {
    matches!(d, DeclineCode::RevocationOfAuthorization | DeclineCode::RevocationOfAllAuthorizations | DeclineCode::StopPaymentOrder)
}

/// When asks could go out: from now (and at least `ask_spacing_hours` after the last
/// ask), one every `ask_spacing_hours`, moved past quiet hours, while the retry after
/// it (`message_lead_hours` later) is still inside the window; at most 64.
fn ask_opportunities(cfg: &EngineConfig, req: &Request) -> Vec<DateTime<Utc>> {
    let c = &req.constraints;
    let lead = Duration::hours(cfg.message_lead_hours.max(0));
    let spacing = Duration::hours(cfg.ask_spacing_hours.max(1));
    let window_end = req.attempts[0].at + Duration::days(cfg.dunning_window_days);
    let latest = c.latest.map_or(window_end, |l| l.min(window_end));
    let tz = req.facts.timezone;
    let quiet = |t: DateTime<Utc>| {
        c.quiet_hours
            .or(cfg.message_quiet_hours)
            .is_some_and(|(qs, qe)| in_quiet(t.with_timezone(&tz).hour(), qs, qe) || quiet_elsewhere(req, || t, (qs, qe)))
    };
    let mut t =
        [Some(req.now), req.asks.last().map(|a| a.at + spacing), c.earliest.map(|e| e - lead)].into_iter().flatten().max().expect("now");
    let mut times = Vec::new();
    while times.len() < 64 {
        let mut steps = 0;
        while quiet(t) && steps < 24 {
            t = ceil_hour(t + Duration::minutes(1));
            steps += 1;
        }
        if t + lead > latest || quiet(t) {
            break;
        }
        times.push(t);
        t += spacing;
    }
    times
}

/// Plan the ask for a new payment method when only an update allows the next
/// retry: a finite-horizon dynamic programme over the ask opportunities left
/// in the window (one every `ask_spacing_hours`, outside quiet hours), in
/// state (opportunity, asks sent on the plan). At each opportunity: ask on
/// channel c, worth `(1 − a_c(m)) (q_c G_c + (1 − q_c) V(next, m + 1)) − cost_c`,
/// or wait, worth `s G + (1 − s) V(next, m)`, where `q_c = ρ_c + (1 − ρ_c) s`
/// is P(update) with the ask (ρ_c the model's ask response, s the updates
/// that happen anyway over the spacing), `a_c(m)` the message attrition after
/// m messages, and `G = P(retry succeeds once updated) × amount, discounted,
/// − attempt cost`. Returns the plan and P(recovery) along it. `None` when
/// the model has no ask response or no opportunity is left. `messages_before`:
/// messages already sent in this dunning (before retries, and asks).
pub(super) fn plan_ask(
    model: &SuccessModel,
    cfg: &EngineConfig,
    req: &Request,
    facts: &PaymentFacts,
    earlier: &[EarlierAttempt],
    evidence: &[Evidence],
    messages_before: u32,
) -> Option<(AskPlan, f64)> {
    let response = &model.asks;
    if response.is_empty() {
        return None;
    }
    let c = &req.constraints;
    let lead = Duration::hours(cfg.message_lead_hours.max(0));
    let spacing = Duration::hours(cfg.ask_spacing_hours.max(1));
    let times = ask_opportunities(cfg, req);
    if times.is_empty() {
        return None;
    }
    // The retry once the method is updated, scored as the log shows it: updated, after the
    // ask's channel, whose lift is valued as the grid values it.
    let updated = PaymentState::new(facts.clone(), earlier, true, &evidence_with_retries(evidence, req.facts.timezone, earlier))?;
    let platt = model.platt_for(earlier.last()?.decline.class(), earlier.len() as u32 - 1);
    let mut scratch = Vec::with_capacity(64);
    let none_logit = model.channel_logit(&updated, Channel::None, &mut scratch);
    let mut p_after = |ch: Channel| {
        let z = model.logit(&updated.encode(&Candidate { at: times[0] + lead, channel: ch }));
        let raw = model.channel_logit(&updated, ch, &mut scratch);
        let (valued, _) = valued_channel_logit(model, cfg, &updated, ch, none_logit, &mut scratch);
        platt.calibrate(z - raw + valued)
    };
    let s = 1.0 - (-response.spontaneous_per_day.max(0.0) * spacing.num_minutes() as f64 / 1440.0).exp();
    // Per allowed channel: P(update) with the ask (q), P(success once updated), message cost.
    let channels: Vec<(Channel, f64, f64, f64)> = Channel::VARIANTS
        .iter()
        .copied()
        .filter(|&ch| ch != Channel::None && usable(model, c, ch))
        .map(|ch| (ch, response.rate_discounted(ch, cfg.channel_pessimism)))
        .filter(|&(_, rho)| rho > 0.0)
        .map(|(ch, rho)| (ch, rho + (1.0 - rho) * s, p_after(ch), cfg.message_cost(ch)))
        .collect();
    let p_quiet = p_after(Channel::None);
    let amount = req.facts.amount_minor as f64;
    let discount: Vec<f64> =
        times.iter().map(|t| (1.0 - cfg.daily_discount).powf(((*t + lead - req.now).num_minutes() as f64 / 1440.0).max(0.0))).collect();
    let gain = |k: usize, p: f64| (discount[k] * p * amount - cfg.attempt_cost_minor).max(0.0);
    let attrition = |ch: Channel, j: usize| model.attrition.rate(ch, messages_before + j as u32);
    // value[k][j], choice[k][j]: at opportunity k after j asks on the plan (index into channels, or none).
    let n = times.len();
    let mut value = vec![vec![0.0f64; n + 2]; n + 1];
    let mut choice = vec![vec![None::<usize>; n + 1]; n];
    for k in (0..n).rev() {
        for j in 0..=k {
            let mut best = s * gain(k, p_quiet) + (1.0 - s) * value[k + 1][j];
            for (i, &(ch, q, p, cost)) in channels.iter().enumerate() {
                let a = attrition(ch, j);
                let v = (1.0 - a) * (q * gain(k, p) + (1.0 - q) * value[k + 1][j + 1]) - cost;
                if v > best {
                    (best, choice[k][j]) = (v, Some(i));
                }
            }
            value[k][j] = best;
        }
    }
    // Follow the plan while every ask goes unanswered.
    let (mut reach, mut p_recovery, mut planned, mut j, mut first) = (1.0, 0.0, 0u32, 0usize, None);
    for (k, row) in choice.iter().enumerate() {
        match row[j] {
            Some(i) => {
                first = first.or(Some((k, i)));
                let (ch, q, p, _) = channels[i];
                let a = attrition(ch, j);
                p_recovery += reach * (1.0 - a) * q * p;
                reach *= (1.0 - a) * (1.0 - q);
                planned += 1;
                j += 1;
            }
            None => {
                p_recovery += reach * s * p_quiet;
                reach *= 1.0 - s;
            }
        }
    }
    // Never asking: only the updates that happen anyway.
    let (mut never, mut left) = (0.0, 1.0);
    for k in 0..n {
        never += left * s * gain(k, p_quiet);
        left *= 1.0 - s;
    }
    let plan = match first {
        Some((k, i)) => {
            let (ch, q, p, _) = channels[i];
            AskPlan {
                channel: ch,
                send_at: times[k],
                p_update: q,
                attrition: attrition(ch, 0),
                p_success_after: p,
                value: value[0][0],
                value_without_asking: never,
                planned_asks: planned,
            }
        }
        None => AskPlan {
            channel: Channel::None,
            send_at: times[0],
            p_update: s,
            attrition: 0.0,
            p_success_after: p_quiet,
            value: value[0][0],
            value_without_asking: never,
            planned_asks: 0,
        },
    };
    Some((plan, p_recovery))
}

/// Channel to ask for a new payment method when there is no ask plan: email if allowed
/// (cheap, carries a link), else the first allowed channel whose attrition the model can
/// price (SMS and push are held back where it cannot, as in the plan). `None`: no such channel.
fn best_ask_channel(model: &SuccessModel, c: &Constraints) -> Option<Channel> {
    [Channel::Email, Channel::InApp, Channel::Push, Channel::Sms].into_iter().find(|&ch| usable(model, c, ch))
}
