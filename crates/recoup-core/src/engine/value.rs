//! Step 3 of a decision: value. A candidate's P(success) from its hour's logit and
//! its channel's terms (valued at a lower confidence bound, reported at the
//! estimate), `(1 − a) × (p × amount − attempt cost) − message cost` discounted per
//! day of delay, and the one-step look-ahead: if the payer stays and this retry
//! fails, the best slot at least a day later. Also the path of retries behind
//! P(recovery), and what the payment's own failed retries shift the logit by.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use strum::VariantArray;

use super::config::EngineConfig;
use super::decision::{reason, Reason};
use super::grid::{Scored, ScoredGrid};
use super::request::{Constraints, Prepared, Request};
use crate::domain::Channel;
use crate::features::{evidence_with_retries, Candidate, EarlierAttempt, PaymentFacts, PaymentState};
use crate::model::{Platt, SuccessModel};
use crate::payday::Evidence;
use crate::support::ClassSupport;

/// An allowed channel and what is the same at every hour: its logit terms (a
/// positive lift discounted by its uncertainty), the calibrated odds factor they
/// make, the message's cost and the share of payers it loses.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChannelTerms {
    pub channel: Channel,
    pub logit: f64,
    pub odds: f64,
    pub message_cost: f64,
    pub attrition: f64,
}

/// The allowed channels, the lifts that were discounted: (channel, estimated, kept), and the
/// allowed channels left unused because the log could not price their attrition.
pub(super) struct Channels {
    pub list: Vec<ChannelTerms>,
    pub discounted: Vec<(Channel, f64, f64)>,
    pub unpriced: Vec<Channel>,
}

/// Whether the engine may send a message on `channel`: the caller allows it, and the model can
/// price what it costs in payers lost ([`crate::attrition::Attrition::unpriced`]). The one rule
/// for retries' messages, the ask plan and the fallback ask channel.
pub(super) fn usable(model: &SuccessModel, c: &Constraints, channel: Channel) -> bool {
    c.allows(channel) && !model.attrition.unpriced(channel)
}

/// The request's allowed channels (`none` always) with their terms.
pub(super) fn channels(
    model: &SuccessModel,
    cfg: &EngineConfig,
    req: &Request,
    p: &Prepared,
    platt: Platt,
    scratch: &mut Vec<u16>,
) -> Channels {
    let c = &req.constraints;
    let none_logit = model.channel_logit(&p.state, Channel::None, scratch);
    let mut discounted: Vec<(Channel, f64, f64)> = Vec::new();
    let unpriced: Vec<Channel> = Channel::VARIANTS.iter().copied().filter(|&ch| c.allows(ch) && !usable(model, c, ch)).collect();
    let list = Channel::VARIANTS
        .iter()
        .copied()
        .filter(|&ch| usable(model, c, ch))
        .map(|ch| {
            let (logit, cut) = valued_channel_logit(model, cfg, &p.state, ch, none_logit, scratch);
            discounted.extend(cut.map(|(lift, kept)| (ch, lift, kept)));
            ChannelTerms {
                channel: ch,
                logit,
                odds: platt.odds_against(logit, false),
                message_cost: cfg.message_cost(ch),
                attrition: model.attrition.rate(ch, p.messages_before),
            }
        })
        .collect();
    Channels { list, discounted, unpriced }
}

/// One hour's logit as the channels are valued against it: the estimate, its
/// calibrated odds, and the odds of its lower confidence bound.
#[derive(Debug, Clone, Copy)]
pub(super) struct HourTerms {
    pub hour: i64,
    pub logit: f64,
    pub odds: f64,
    pub valued_odds: f64,
    /// Discount for the delay to this hour.
    pub discount: f64,
    /// A message sent for a retry at this hour would go out in quiet hours.
    pub message_quiet: bool,
}

/// What is the same for every candidate of one decision.
pub(super) struct Valuer<'a> {
    pub platt: Platt,
    /// Candidates are valued at a lower confidence bound (weight variances known and `support_pessimism` > 0).
    pub pessimistic: bool,
    pub amount: f64,
    pub attempt_cost: f64,
    pub support: Option<&'a ClassSupport>,
    /// The allowed channels, valued at every hour.
    pub channels: &'a [ChannelTerms],
}

impl Valuer<'_> {
    /// Value every allowed channel at one hour, into `out` (its slots and the hour's best for the look-ahead).
    #[inline]
    pub fn hour(&self, h: HourTerms, out: &mut ScoredGrid) {
        for &ChannelTerms { channel: ch, logit: channel_logit, odds: channel_odds, message_cost, attrition } in self.channels {
            if h.message_quiet && ch != Channel::None {
                out.removed.count(("constraint", "quiet_hours_message"), &|| "the message would be sent in quiet hours".into(), 1);
                continue;
            }
            if let Some(Err(out_of)) = self.support.map(|s| s.channel(ch)) {
                out.removed.count(
                    ("outside_support", out_of.code()),
                    &|| format!("the training log has too few retries after a message on {}", <&str>::from(ch)),
                    1,
                );
                continue;
            }
            // One exp per hour and per channel, not per candidate; the direct form where
            // the product is not a number (inf · 0 at absurd logits).
            let odds = h.odds * channel_odds;
            let p = if odds.is_nan() { self.platt.calibrate(h.logit + channel_logit) } else { 1.0 / (1.0 + odds) };
            // Valued at the lower bound; reported at the estimate.
            let p_valued = if self.pessimistic {
                let o = h.valued_odds * channel_odds;
                if o.is_nan() {
                    p
                } else {
                    (1.0 / (1.0 + o)).min(p)
                }
            } else {
                p
            };
            // The message is paid for; the retry happens only if the payer stays.
            // Reported at the estimate, ranked at the lower bound.
            let ev = (1.0 - attrition) * (h.discount * p * self.amount - self.attempt_cost) - message_cost;
            let ev_valued = (1.0 - attrition) * (h.discount * p_valued * self.amount - self.attempt_cost) - message_cost;
            let at = h.hour as usize;
            if ev_valued > out.hour_best[at] {
                out.hour_best[at] = ev_valued;
                out.hour_best_p[at] = p;
                out.hour_best_a[at] = attrition;
            }
            out.slots.push(Scored { hour: h.hour, channel: ch, p, p_valued, attrition, ev, value: ev_valued });
        }
    }
}

/// The hour of the best expected value from each hour on (`usize::MAX`: none).
pub(super) struct Later {
    pub at: Vec<usize>,
}

/// One-step look-ahead: if a retry fails, the best expected value at least a day later
/// (0 when none: not retrying is always possible) is added to its value.
pub(super) fn look_ahead(g: &mut ScoredGrid) -> Later {
    let n = g.hour_best.len();
    let mut later_best = vec![0.0f64; n + 1];
    let mut later_at = vec![usize::MAX; n + 1];
    for h in (0..n).rev() {
        (later_best[h], later_at[h]) =
            if g.hour_best[h] > later_best[h + 1] { (g.hour_best[h], h) } else { (later_best[h + 1], later_at[h + 1]) };
    }
    for s in &mut g.slots {
        s.value += (1.0 - s.attrition) * (1.0 - s.p_valued) * later_best[(s.hour as usize + 24).min(n)];
    }
    Later { at: later_at }
}

/// P(recovery) and the retries on the path: the chosen retry, then each time the last
/// one failed, the best-valued slot at least a day later while one is worth it. A retry
/// recovers if the payer is still there (its message did not lose them) and it succeeds.
pub(super) fn recovery_path(picked: &Scored, g: &ScoredGrid, later: &Later, retries_left: u32) -> (f64, u32) {
    let (mut reach, mut p_recovery) = ((1.0 - picked.attrition) * (1.0 - picked.p), (1.0 - picked.attrition) * picked.p);
    let (mut planned_retries, mut h) = (1u32, picked.hour as usize + 24);
    while let Some(&at) = later.at.get(h).filter(|&&at| at != usize::MAX && planned_retries < retries_left) {
        reach *= 1.0 - g.hour_best_a[at];
        p_recovery += reach * g.hour_best_p[at];
        reach *= 1.0 - g.hour_best_p[at];
        planned_retries += 1;
        h = at + 24;
    }
    (p_recovery, planned_retries)
}

/// The logit shift for what this payment's failed retries say beyond their number
/// ([`crate::failed_retries`]): each earlier retry is scored as the model saw it then
/// (its state before it, its time and channel), and their P's sum is compared with the
/// log's mean for this decline class and retry number. Explained in `reasons` when it moves P.
pub(super) fn failed_retries_shift(
    model: &SuccessModel,
    facts: &PaymentFacts,
    earlier: &[EarlierAttempt],
    evidence: &[Evidence],
    reasons: &mut Vec<Reason>,
    scratch: &mut Vec<u16>,
) -> f64 {
    if model.failed_retries.is_empty() || earlier.len() < 2 {
        return 0.0;
    }
    let mut expected = 0.0;
    for j in earlier.len().saturating_sub(crate::failed_retries::MAX_COUNTED).max(1)..earlier.len() {
        let a = &earlier[j];
        let then_evidence = evidence_with_retries(evidence, facts.timezone, &earlier[..j]);
        let Some(then) = PaymentState::new(facts.clone(), &earlier[..j], a.payment_method_updated, &then_evidence) else {
            continue;
        };
        scratch.clear();
        scratch.extend_from_slice(then.fixed());
        then.candidate_columns(&Candidate { at: a.at, channel: a.channel.unwrap_or(Channel::None) }, scratch);
        expected += model.predict(scratch);
    }
    let last = earlier[earlier.len() - 1].decline.class();
    let retries = earlier.len() as u32 - 1;
    let shift = model.failed_retries.shift(last, retries, expected);
    if shift.abs() >= 0.05 {
        let usual = model.failed_retries.mean_for(last, retries);
        reasons.push(reason(
            "failed_retries",
            format!(
                "the last {} failed retries had {expected:.2} expected successes in all, {} than the {usual:.2} usual in the training log at this retry number: the logit moves by {shift:+.2}",
                (earlier.len() - 1).min(crate::failed_retries::MAX_COUNTED),
                if expected > usual { "more" } else { "fewer" }
            ),
        ));
    }
    shift
}

/// `channel`'s logit terms as the engine values them: a lift over no message
/// (`none_logit`) that is positive loses `channel_pessimism` standard deviations
/// of its uncertainty, never going below none. Also (estimated lift, lift kept)
/// when it was cut, for the reasons.
pub(super) fn valued_channel_logit(
    model: &SuccessModel,
    cfg: &EngineConfig,
    state: &PaymentState,
    channel: Channel,
    none_logit: f64,
    scratch: &mut Vec<u16>,
) -> (f64, Option<(f64, f64)>) {
    let logit = model.channel_logit(state, channel, scratch);
    let lift = logit - none_logit;
    if lift <= 0.0 || cfg.channel_pessimism <= 0.0 {
        return (logit, None);
    }
    let kept = (lift - cfg.channel_pessimism * model.channel_lift_sd(state, channel, scratch)).max(0.0);
    (none_logit + kept, (kept < lift).then_some((lift, kept)))
}
