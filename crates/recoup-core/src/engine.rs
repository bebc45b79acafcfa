//! The decision engine: when to retry a failed payment and which message to
//! send first. Pure: no clock (the request says what "now" is), no I/O.
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
//! 7. Pick the best; with probability `exploration` pick uniformly among the
//!    near-best alternatives instead, and report the propensity of the choice.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};
use strum::VariantArray;

use crate::declines::{DeclineClass, DeclineCode};
use crate::domain::{CardId, Channel, Outcome, PaymentMethod, RawCode};
use crate::features::{
    evidence_with_retries, group_column, group_levels, payment_evidence, Candidate, EarlierAttempt, PaymentFacts, PaymentState, TimeLevels,
    SCHEMA,
};
use crate::limits::{self, ceil_hour};
use crate::model::SuccessModel;
use crate::payday::Evidence;
use crate::rules::{self, PastAttempt, Proposal, RuleViolation, RulesConfig};
use crate::trees::Bound;

/// One earlier attempt of the payment being decided (all failed: the payment is open).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestAttempt {
    pub at: DateTime<Utc>,
    /// Normalized decline.
    pub decline: DeclineCode,
    /// Issuer's raw response / return code.
    pub network_code: Option<RawCode>,
    /// Mastercard Merchant Advice Code.
    pub advice_code: Option<RawCode>,
    /// Message sent before this attempt.
    pub channel: Option<Channel>,
    /// The payer updated the payment method before this attempt.
    pub payment_method_updated: bool,
    /// The card it charged, when the caller identified it.
    #[serde(default)]
    pub card: Option<CardId>,
}

impl From<&RequestAttempt> for EarlierAttempt {
    /// What the features read of an attempt of the payment being decided.
    fn from(a: &RequestAttempt) -> EarlierAttempt {
        EarlierAttempt {
            at: a.at,
            decline: a.decline,
            advice_code: a.advice_code,
            channel: a.channel,
            payment_method_updated: a.payment_method_updated,
        }
    }
}

/// An attempt on the request's card in another payment (another invoice):
/// counted toward the networks' per-card caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardAttempt {
    pub at: DateTime<Utc>,
    /// A retry (Visa's cap counts reattempts), not a payment's first charge.
    pub retry: bool,
}

/// A message asking the payer for a new payment method that no retry followed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SentAsk {
    pub at: DateTime<Utc>,
    pub channel: Channel,
}

/// An earlier payment of the payer, for pay-day inference: its attempts as
/// (time, decline or `None` for the success), in order.
pub type PastPayment = Vec<(DateTime<Utc>, Option<DeclineCode>)>;

/// What the caller allows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Constraints {
    /// Not before this time.
    pub earliest: Option<DateTime<Utc>>,
    /// Not after this time.
    pub latest: Option<DateTime<Utc>>,
    /// No retry and no message in these local hours: `[start, end)`, may wrap midnight (22→7).
    pub quiet_hours: Option<(u32, u32)>,
    /// No retry on Saturdays and Sundays (payer's local time).
    pub skip_weekends: bool,
    /// No retry on the bank holidays of the payer's country.
    pub skip_holidays: bool,
    /// Total retries allowed for this payment (the original charge not counted).
    pub max_retries: Option<u32>,
    /// Channels that may be used; empty: all. `none` (no message) is always allowed.
    pub channels: Vec<Channel>,
}

/// One decision request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub payment_id: String,
    pub facts: PaymentFacts,
    /// The payment's attempts so far, original charge first, all failed.
    pub attempts: Vec<RequestAttempt>,
    /// The payer updated the payment method since the last attempt.
    pub payment_method_updated: bool,
    /// Asks for a new payment method sent in this dunning that no retry
    /// followed, in time order (they count toward message fatigue and space
    /// the next ask).
    pub asks: Vec<SentAsk>,
    /// The payer's earlier payments (pay-day evidence).
    pub past_payments: Vec<PastPayment>,
    /// The card the next retry charges (`payment_method_id`); `None` when not
    /// identified, and then the caps count this payment's attempts only.
    pub card: Option<CardId>,
    /// The card's attempts in other payments, counted toward the per-card caps.
    pub card_attempts: Vec<CardAttempt>,
    /// The decision time.
    pub now: DateTime<Utc>,
    pub constraints: Constraints,
}

/// A request field that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    /// Dotted path of the field, as named in the API (`attempts[2].at`).
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidField {
    InvalidField { field: field.into(), message: message.into() }
}

impl Request {
    /// Every count, text and time within [`crate::limits`], before any other
    /// check or any work; the error names the field.
    fn check_bounds(&self) -> Result<(), InvalidField> {
        limits::check_text("payment.payment_id", &self.payment_id)?;
        limits::check_len("attempts", self.attempts.len(), limits::MAX_ATTEMPTS)?;
        limits::check_len("asks", self.asks.len(), limits::MAX_ASKS)?;
        limits::check_len("past_payments", self.past_payments.len(), limits::MAX_PAST_PAYMENTS)?;
        limits::check_len("past_payments[*].attempts", self.past_payments.iter().map(Vec::len).sum(), limits::MAX_PAST_ATTEMPTS)?;
        limits::check_len("constraints.allowed_channels", self.constraints.channels.len(), limits::MAX_CHANNELS)?;
        limits::check_len("card_attempts", self.card_attempts.len(), limits::MAX_PAST_ATTEMPTS)?;
        limits::check_time("now", self.now)?;
        for (i, a) in self.attempts.iter().enumerate() {
            limits::check_time_named(|| format!("attempts[{i}].attempted_at"), a.at)?;
        }
        for (i, a) in self.asks.iter().enumerate() {
            limits::check_time_named(|| format!("asks[{i}].sent_at"), a.at)?;
        }
        for (i, p) in self.past_payments.iter().enumerate() {
            for (j, (t, _)) in p.iter().enumerate() {
                limits::check_time_named(|| format!("past_payments[{i}].attempts[{j}].attempted_at"), *t)?;
            }
        }
        if let Some(t) = self.constraints.earliest {
            limits::check_time("constraints.earliest", t)?;
        }
        if let Some(t) = self.constraints.latest {
            limits::check_time("constraints.latest", t)?;
        }
        Ok(())
    }

    /// Check everything the engine relies on; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidField> {
        self.check_bounds()?;
        if self.payment_id.trim().is_empty() {
            return Err(invalid("payment.payment_id", "must not be empty"));
        }
        if self.facts.amount_minor <= 0 {
            return Err(invalid("payment.amount_minor", format!("must be positive, got {}", self.facts.amount_minor)));
        }
        if self.attempts.is_empty() {
            return Err(invalid("attempts", "must hold at least the failed original charge"));
        }
        for (i, w) in self.attempts.windows(2).enumerate() {
            if w[1].at <= w[0].at {
                return Err(invalid(format!("attempts[{}].attempted_at", i + 1), "attempts must be in increasing time order"));
            }
        }
        let Some(last) = self.attempts.last().map(|a| a.at) else {
            return Err(invalid("attempts", "must hold at least the failed original charge"));
        };
        if self.now < last {
            return Err(invalid("now", format!("{} is before the last attempt {}", self.now.to_rfc3339(), last.to_rfc3339())));
        }
        let c = &self.constraints;
        if let (Some(e), Some(l)) = (c.earliest, c.latest) {
            if l < e {
                return Err(invalid("constraints.latest", "is before constraints.earliest"));
            }
        }
        if let Some((s, e)) = c.quiet_hours {
            if s > 23 || e > 23 {
                return Err(invalid("constraints.quiet_hours", format!("hours must be 0..=23, got {s}→{e}")));
            }
        }
        for (i, a) in self.asks.iter().enumerate() {
            if a.at > self.now {
                return Err(invalid(format!("asks[{i}].sent_at"), format!("{} is after now {}", a.at.to_rfc3339(), self.now.to_rfc3339())));
            }
            if i > 0 && a.at < self.asks[i - 1].at {
                return Err(invalid(format!("asks[{i}].sent_at"), "asks must be in time order"));
            }
            if a.channel == Channel::None {
                return Err(invalid(format!("asks[{i}].channel"), "an ask is a message: email, sms, push or in_app"));
            }
        }
        for (i, p) in self.past_payments.iter().enumerate() {
            if p.windows(2).any(|w| w[1].0 < w[0].0) {
                return Err(invalid(format!("past_payments[{i}]"), "attempts must be in time order"));
            }
        }
        Ok(())
    }
}

/// Economics and behaviour of the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Hours the candidate grid covers from the first allowed time.
    pub horizon_hours: i64,
    /// Local hours `[start, end)` in which no message or ask is sent when the
    /// request gives no quiet hours of its own (retries without a message are
    /// not affected); `[0, 0]` (or `None`): messages at any hour.
    pub message_quiet_hours: Option<(u32, u32)>,
    /// Standard deviations of the time terms' uncertainty a candidate's logit is
    /// valued below its estimate (a lower confidence bound; 0: valued at the estimate).
    pub support_pessimism: f64,
    /// Days after the original failure that dunning may last.
    pub dunning_window_days: i64,
    /// Fee per attempt, in minor units of the payment's currency.
    pub attempt_cost_minor: f64,
    /// Cost per message, per channel, in minor units.
    pub message_cost_minor: Vec<(Channel, f64)>,
    /// Value lost per day of delay (share of the amount: money later is worth less, and the payer may churn).
    pub daily_discount: f64,
    /// Hours between sending the message and the retry.
    pub message_lead_hours: i64,
    /// Chance of exploring a near-best alternative instead of the best.
    pub exploration: f64,
    /// Alternatives reported (and explored among).
    pub top_k: usize,
    /// Hours between two asks for a new payment method (at most one a day by default).
    pub ask_spacing_hours: i64,
    /// Standard deviations by which a channel's estimated lift over no message is
    /// discounted before it is valued (never below no lift). Picking the best of
    /// several noisy lifts favours the one overestimated most; a channel the
    /// history rarely or never shows has a wide lift and is not trusted. 0: the
    /// estimates as they are.
    pub channel_pessimism: f64,
    /// Network rule settings.
    pub rules: RulesConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            horizon_hours: 14 * 24,
            support_pessimism: 1.0,
            message_quiet_hours: Some((21, 8)),
            dunning_window_days: 21,
            attempt_cost_minor: 8.0,
            message_cost_minor: vec![
                (Channel::None, 0.0),
                (Channel::Email, 0.1),
                (Channel::Sms, 5.0),
                (Channel::Push, 0.05),
                (Channel::InApp, 0.0),
            ],
            daily_discount: 0.003,
            message_lead_hours: 1,
            exploration: 0.05,
            top_k: 5,
            ask_spacing_hours: 24,
            channel_pessimism: 2.0,
            rules: RulesConfig::default(),
        }
    }
}

impl EngineConfig {
    /// Refuse settings no decision can be made with, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |field: &str, why: &str| Err(format!("{field}: {why}"));
        // Upper bounds keep every time the engine adds inside chrono's range.
        if !(1..=24 * 366).contains(&self.horizon_hours) {
            return bad("horizon_hours", "must be 1..=8784 (a year)");
        }
        if !(1..=366).contains(&self.dunning_window_days) {
            return bad("dunning_window_days", "must be 1..=366");
        }
        if self.message_lead_hours > 24 * 7
            || self.ask_spacing_hours > 24 * 90
            || self.rules.min_spacing_minutes.unsigned_abs() > 60 * 24 * 90
        {
            return bad("message_lead_hours / ask_spacing_hours / rules.min_spacing_minutes", "must be at most a week / 90 days / 90 days");
        }
        if !(self.attempt_cost_minor >= 0.0 && self.attempt_cost_minor.is_finite()) {
            return bad("attempt_cost_minor", "must be a non-negative number");
        }
        if let Some((c, _)) = self.message_cost_minor.iter().find(|(_, v)| !(*v >= 0.0 && v.is_finite())) {
            return bad("message_cost_minor", &format!("{}'s cost must be a non-negative number", <&str>::from(*c)));
        }
        if !(0.0..1.0).contains(&self.daily_discount) {
            return bad("daily_discount", "must be in [0, 1)");
        }
        if self.message_lead_hours < 0 {
            return bad("message_lead_hours", "must not be negative");
        }
        if !(0.0..=1.0).contains(&self.exploration) {
            return bad("exploration", "must be in [0, 1]");
        }
        if self.ask_spacing_hours < 1 {
            return bad("ask_spacing_hours", "must be at least 1");
        }
        if let Some((qs, qe)) = self.message_quiet_hours {
            if qs > 23 || qe > 23 {
                return bad("message_quiet_hours", "hours must be 0..=23");
            }
        }
        if !(self.support_pessimism >= 0.0 && self.support_pessimism.is_finite()) {
            return bad("support_pessimism", "must be a non-negative number of standard deviations (0: candidates valued at the estimate)");
        }
        if !(self.channel_pessimism >= 0.0 && self.channel_pessimism.is_finite()) {
            return bad("channel_pessimism", "must be a non-negative number of standard deviations (0: lifts as estimated)");
        }
        Ok(())
    }

    pub fn message_cost(&self, c: Channel) -> f64 {
        self.message_cost_minor.iter().find(|(k, _)| *k == c).map_or(0.0, |(_, v)| *v)
    }
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Retry,
    DoNotRetry,
}

/// A scored (time, channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub retry_at: DateTime<Utc>,
    pub channel: Channel,
    /// When to send the message (`None` for no message).
    pub send_at: Option<DateTime<Utc>>,
    /// Calibrated P(this retry succeeds), if it happens.
    pub p_success: f64,
    /// P(the message makes the payer cancel before the retry): the model's
    /// estimate of message attrition (0 without a message).
    #[serde(default)]
    pub attrition: f64,
    /// Expected value of this retry alone, minor units, discounted:
    /// `(1 − attrition) × (p × amount − attempt cost) − message cost`.
    pub expected_value: f64,
    /// With the look-ahead: this retry, then the best later one if it fails.
    pub value: f64,
}

/// Why the engine decided as it did. Stable codes for machines, details for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable snake_case code (`hard_decline`, `rule:visa_reattempt_cap`, `best_expected_value`…).
    pub code: String,
    pub detail: String,
}

/// The logit shift for what this payment's failed retries say beyond their number
/// ([`crate::failed_retries`]): each earlier retry is scored as the model saw it then
/// (its state before it, its time and channel), and their P's sum is compared with the
/// log's mean for this decline class and retry number. Explained in `reasons` when it moves P.
fn failed_retries_shift(
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

fn reason(code: impl Into<String>, detail: impl Into<String>) -> Reason {
    Reason { code: code.into(), detail: detail.into() }
}

/// The weight one feature column contributed to the chosen slot's logit, or
/// (feature `trees:group=level`) what the trees' splits on a group added to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Term {
    pub feature: String,
    pub weight: f64,
}

/// When only a new payment method allows the next retry: whether, when and
/// on which channel to ask for one, valued over the rest of the window (see `plan_ask`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AskPlan {
    /// Channel of the next planned ask; `none`: no ask is worth it (wait for the payer).
    pub channel: Channel,
    /// When to send it: now, or later when waiting for an update the payer may
    /// make anyway is worth more than asking at once (asks are at least
    /// `ask_spacing_hours` apart, outside quiet hours).
    pub send_at: DateTime<Utc>,
    /// P(the payer provides a new payment method after it): the model's ask
    /// response less `channel_pessimism` standard errors, plus updates that
    /// happen anyway.
    pub p_update: f64,
    /// P(the ask makes the payer cancel) (message attrition).
    pub attrition: f64,
    /// Calibrated P(the retry succeeds once the method is updated).
    pub p_success_after: f64,
    /// Value of the plan (the best choice, ask or wait, at each opportunity
    /// while unanswered), minor units.
    pub value: f64,
    /// Value of never asking (only the updates that happen anyway).
    pub value_without_asking: f64,
    /// Asks on the plan, this one included, if every one goes unanswered.
    pub planned_asks: u32,
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextStep {
    /// Retry at the chosen slot.
    Retry,
    /// Stop for good: nothing to schedule or to ask for.
    Stop,
    /// Ask the payer for a new payment method (on `ask_channel`).
    AskForPaymentMethod,
    /// Send nothing now; decide again when the method is updated (or at the plan's next ask).
    WaitForUpdate,
}

/// Declines by which the payer told the merchant to stop: no ask for a new method either.
fn payer_said_stop(d: DeclineCode) -> bool {
    matches!(d, DeclineCode::RevocationOfAuthorization | DeclineCode::RevocationOfAllAuthorizations | DeclineCode::StopPaymentOrder)
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    /// What to do next (retry, stop, ask, wait).
    pub next: NextStep,
    /// The chosen retry (`None` when not retrying).
    pub chosen: Option<Slot>,
    /// Channel to ask the payer through (for a new payment method when not
    /// retrying); `None` when the ask plan finds no ask worth it.
    pub ask_channel: Option<Channel>,
    /// The valued ask, when only a new payment method allows the next retry
    /// and the model has an ask response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask: Option<AskPlan>,
    /// P(the payment is recovered over the rest of the window): the chosen
    /// retry, then, each time the last one failed, the best-valued slot at least
    /// a day later, as long as one is worth its cost (retries' outcomes taken as
    /// independent given their features; an estimate from the same model).
    pub p_recovery: f64,
    /// Retries on that path if every one of them fails (0 when not retrying).
    pub planned_retries: u32,
    /// Best alternatives after the chosen one, best first.
    pub alternatives: Vec<Slot>,
    pub reasons: Vec<Reason>,
    /// Probability with which this slot was chosen (1 − exploration + its share, when best).
    pub propensity: f64,
    /// Largest terms of the chosen slot's logit (why this time and channel).
    pub terms: Vec<Term>,
    /// Candidates scored / removed by rules or constraints.
    pub candidates_scored: usize,
    pub candidates_removed: usize,
    /// The pay-day estimate used.
    pub pay_schedule: String,
    pub pay_schedule_confidence: f64,
}

/// The request's attempts as the network rules read them: this payment's, and the same
/// card's attempts on other payments.
fn rule_history(req: &Request) -> (Vec<PastAttempt>, Vec<PastAttempt>) {
    let past: Vec<PastAttempt> = req
        .attempts
        .iter()
        .enumerate()
        .map(|(i, a)| PastAttempt {
            at: a.at,
            attempt_number: i as u32,
            outcome: Outcome::Failed,
            decline: Some(a.decline),
            network_code: a.network_code,
            advice_code: a.advice_code,
            payment_method_updated: a.payment_method_updated,
            card: a.card,
        })
        .collect();
    let elsewhere: Vec<PastAttempt> = req
        .card_attempts
        .iter()
        .map(|c| PastAttempt {
            at: c.at,
            attempt_number: u32::from(c.retry),
            outcome: Outcome::Failed,
            decline: None,
            network_code: None,
            advice_code: None,
            payment_method_updated: false,
            card: req.card,
        })
        .collect();
    (past, elsewhere)
}

/// A decision that retries nothing: stop, with `reasons` (callers fill in what they know more).
fn stopped(reasons: Vec<Reason>) -> Decision {
    Decision {
        action: Action::DoNotRetry,
        next: NextStep::Stop,
        chosen: None,
        ask_channel: None,
        ask: None,
        p_recovery: 0.0,
        planned_retries: 0,
        alternatives: Vec::new(),
        reasons,
        propensity: 1.0,
        terms: Vec::new(),
        candidates_scored: 0,
        candidates_removed: 0,
        pay_schedule: String::new(),
        pay_schedule_confidence: 0.0,
    }
}

/// The payment as the model scores its next retry: the pay-day evidence of its earlier
/// payments (reduced once to what inference reads: the failed-retries correction infers per
/// earlier retry), its attempts, and the state before the next retry (its own failed funds
/// retries count as evidence too).
fn scored_payment(req: &Request) -> (Vec<Evidence>, Vec<EarlierAttempt>, Option<PaymentState>) {
    let evidence: Vec<Evidence> = req.past_payments.iter().flat_map(|p| payment_evidence(req.facts.timezone, p)).map(|(_, e)| e).collect();
    let evidence = crate::payday::most_recent(&evidence);
    let earlier: Vec<EarlierAttempt> = req.attempts.iter().map(EarlierAttempt::from).collect();
    let state = PaymentState::new(
        req.facts.clone(),
        &earlier,
        req.payment_method_updated,
        &evidence_with_retries(&evidence, req.facts.timezone, &earlier),
    );
    (evidence, earlier, state)
}

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
    let rule_facts = rules::PaymentFacts { method: req.facts.method, card_brand: req.facts.card_brand };
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
    // The model's P of the schedule's slot: what the live calibration compares against.
    let p_success = scored_payment(req).2.map_or(f64::NAN, |state| {
        let z = model.logit(&state.encode(&Candidate { at, channel }));
        model.platt_for(last.decline.class(), req.attempts.len() as u32 - 1).calibrate(z)
    });
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

/// Decide one request with `model`. `random` in [0, 1) drives exploration
/// (callers pass a hash of the request for reproducible answers, or a random draw).
pub fn decide(model: &SuccessModel, cfg: &EngineConfig, req: &Request, random: (f64, f64)) -> Result<Decision, InvalidField> {
    req.validate()?;
    let (Some(first), Some(last)) = (req.attempts.first(), req.attempts.last()) else {
        return Err(invalid("attempts", "must hold at least the failed original charge"));
    };
    let (past, elsewhere) = rule_history(req);
    let card = rules::CardContext { card: req.card, elsewhere: &elsewhere };
    let rule_facts = rules::PaymentFacts { method: req.facts.method, card_brand: req.facts.card_brand };
    let ask = best_ask_channel(&req.constraints);
    let mut reasons = Vec::new();

    // Permanent violations: probe at the earliest sensible time.
    let probe = rules::check_retry_on_card(
        rule_facts,
        &past,
        card,
        Proposal { at: req.now.max(last.at) + Duration::days(1), payment_method_updated: req.payment_method_updated },
        &cfg.rules,
    );
    let (evidence, earlier, state) = scored_payment(req);
    let Some(state) = state else {
        return Err(invalid("attempts", "must hold at least the failed original charge"));
    };
    // Messages already sent in this dunning (before retries, and asks): each one makes
    // the next more likely to lose the payer.
    let messages_before = state.messages() + req.asks.len() as u32;
    let schedule = state.payday().schedule.to_string();
    let confidence = state.payday().confidence;
    let not_retrying = |reasons: Vec<Reason>, scored, removed| Decision {
        candidates_scored: scored,
        candidates_removed: removed,
        pay_schedule: schedule.clone(),
        pay_schedule_confidence: confidence,
        ..stopped(reasons)
    };
    if probe.is_permanent() {
        for v in probe.violations.iter().filter(|v| v.is_permanent()) {
            reasons.push(reason(format!("rule:{}", v.code()), describe(v)));
        }
        if last.decline.class() == DeclineClass::Hard {
            reasons.insert(
                0,
                reason(
                    "hard_decline",
                    format!("{} is a hard decline: retrying cannot succeed and networks penalise it", last.decline.as_str()),
                ),
            );
        }
        if req.attempts.iter().any(|a| payer_said_stop(a.decline)) {
            reasons
                .push(reason("stop", "the payer (or the bank for them) revoked the authorization or asked to stop: no retry and no ask"));
            return Ok(not_retrying(reasons, 0, 0));
        }
        let plan = (!probe.is_hopeless()).then(|| plan_ask(model, cfg, req, &earlier, &evidence, messages_before)).flatten();
        let Some((plan, p_recovery)) = plan else {
            reasons.push(reason("ask_for_new_payment_method", format!("ask the payer for a new payment method by {}", <&str>::from(ask))));
            return Ok(Decision { next: NextStep::AskForPaymentMethod, ask_channel: Some(ask), ..not_retrying(reasons, 0, 0) });
        };
        let pct = |x: f64| 100.0 * x;
        if plan.channel == Channel::None {
            reasons.push(reason(
                "ask_not_worth_it",
                format!("no ask is worth it: each would lose more payers or cost more than it brings back (waiting for the payer is worth {:.1})", plan.value_without_asking),
            ));
        } else {
            reasons.push(reason(
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
            ));
        }
        // Ask now only when the plan's first ask is due now; a later one is a wait.
        let ask_now = plan.channel != Channel::None && plan.send_at <= req.now + Duration::hours(1);
        return Ok(Decision {
            next: if ask_now { NextStep::AskForPaymentMethod } else { NextStep::WaitForUpdate },
            ask_channel: ask_now.then_some(plan.channel),
            p_recovery,
            ask: Some(plan),
            ..not_retrying(reasons, 0, 0)
        });
    }
    // Decide only where the training log holds evidence (crate::support).
    let support = model.support.for_class(last.decline.class());
    if let Some(Err(out)) = support.map(|s| s.retry_number(req.attempts.len() as u32)) {
        let detail = support.map(|s| s.describe()).unwrap_or_default();
        reasons.push(reason(
            format!("outside_support:{}", out.code()),
            format!(
                "the training log never made a retry number {} after this decline often enough to learn from ({detail})",
                req.attempts.len()
            ),
        ));
        return Ok(not_retrying(reasons, 0, 0));
    }
    if let Some(max) = req.constraints.max_retries {
        let used = req.attempts.len() as u32 - 1;
        if used >= max {
            reasons.push(reason("constraint:max_retries", format!("{used} retries made, the caller allows {max}")));
            return Ok(not_retrying(reasons, 0, 0));
        }
    }

    // The grid.
    let window_end = first.at + Duration::days(cfg.dunning_window_days);
    let c = &req.constraints;
    let start = [Some(req.now), Some(last.at + Duration::minutes(cfg.rules.min_spacing_minutes)), c.earliest]
        .into_iter()
        .flatten()
        .max()
        .expect("now");
    let start = ceil_hour(start);
    let end = [Some(start + Duration::hours(cfg.horizon_hours)), Some(window_end), c.latest].into_iter().flatten().min().expect("some");
    let tz = req.facts.timezone;
    let mut scratch = Vec::with_capacity(64);
    let fixed_logit = model.fixed_logit(&state) + failed_retries_shift(model, &req.facts, &earlier, &evidence, &mut reasons, &mut scratch);
    // This decline class's calibration at this retry stage.
    let platt = model.platt_for(last.decline.class(), req.attempts.len() as u32 - 1);
    // Allowed channels with their logit terms, message cost and attrition (the same at
    // every hour). A positive lift over no message is discounted by its uncertainty.
    let none_logit = model.channel_logit(&state, Channel::None, &mut scratch);
    let mut discounted: Vec<(Channel, f64, f64)> = Vec::new();
    let channels: Vec<(Channel, f64, f64, f64, f64)> = Channel::VARIANTS
        .iter()
        .copied()
        .filter(|&ch| ch == Channel::None || c.channels.is_empty() || c.channels.contains(&ch))
        .map(|ch| {
            let (logit, cut) = valued_channel_logit(model, cfg, &state, ch, none_logit, &mut scratch);
            discounted.extend(cut.map(|(lift, kept)| (ch, lift, kept)));
            (ch, logit, platt.odds_against(logit, false), cfg.message_cost(ch), model.attrition.rate(ch, messages_before))
        })
        .collect();
    let lead = Duration::hours(cfg.message_lead_hours);
    let send_time = |t: DateTime<Utc>| (t - lead).max(req.now);
    // Removed candidates by reason: (kind, code), the first occurrence's detail, count.
    // Details are built once per reason, not once per hour.
    let mut removed: Vec<((&str, &str), String, usize)> = Vec::new();
    let mut count_removed =
        |key: (&'static str, &'static str), detail: &dyn Fn() -> String, n: usize| match removed.iter_mut().find(|r| r.0 == key) {
            Some(r) => r.2 += n,
            None => removed.push((key, detail(), n)),
        };
    let last_hour = if end >= start { (end - start).num_hours() } else { -1 };
    let most = (last_hour + 1).max(0) as usize * channels.len();
    // Scored candidates, compact (a `Slot` is built only for those reported).
    let mut slots: Vec<Scored> = Vec::with_capacity(most);
    // The time columns and logit of the last scored hour, walked hour to hour.
    let (mut walked, mut time_cols, mut time_logit): (Option<TimeLevels>, Vec<u16>, f64) = (None, Vec::with_capacity(64), 0.0);
    // The variance of the time terms (the weights' posterior variances): candidates are
    // valued at a lower confidence bound of their logit, `support_pessimism` SDs down, so
    // a time the log says little about is not chosen on a noisy estimate.
    let variances = &model.weight_variances;
    let kappa = if variances.is_empty() { 0.0 } else { cfg.support_pessimism };
    let mut time_var = 0.0f64;
    // The trees' part of the hour's logit (payment × time; 0 without trees), per distinct levels.
    let mut tree_logit = 0.0;
    let bound = model.bind_trees(&state);
    let mut day_bound = Bound::default();
    let amount = req.facts.amount_minor as f64;
    let hourly_discount = (1.0 - cfg.daily_discount).powf(1.0 / 24.0);
    let first_discount = (1.0 - cfg.daily_discount).powf(((start - req.now).num_minutes() as f64 / 1440.0).max(0.0));
    let grid = state.hourly_levels(start, (last_hour + 1).max(0) as usize);
    let start_ts = start.timestamp();
    // The rules' verdict changes only at a few times fixed by the history: checked once per stretch.
    let mut checker = rules::RetryChecker::new(rule_facts, &past, card, req.payment_method_updated, &cfg.rules);
    let mut discount = first_discount / hourly_discount;
    // Best expected value of each hour (over its channels), its P(success) and
    // attrition, for the look-ahead.
    let mut hour_best = vec![f64::NEG_INFINITY; (last_hour + 1).max(0) as usize];
    let mut hour_best_p = vec![0.0f64; hour_best.len()];
    let mut hour_best_a = vec![0.0f64; hour_best.len()];
    for hour in 0..=last_hour {
        let t = start_ts + 3600 * hour;
        discount *= hourly_discount;
        let n = channels.len();
        let here = grid[hour as usize];
        if let Some((qs, qe)) = c.quiet_hours {
            if in_quiet(here.local_hour, qs, qe) {
                count_removed(("constraint", "quiet_hours"), &|| format!("local hours {qs}:00–{qe}:00 are quiet"), n);
                continue;
            }
        }
        if c.skip_weekends && here.weekday >= 5 {
            count_removed(("constraint", "skip_weekends"), &|| "no retries on weekends".into(), n);
            continue;
        }
        if c.skip_holidays && crate::calendar::is_holiday(req.facts.country, here.local_date) {
            count_removed(("constraint", "skip_holidays"), &|| format!("bank holiday in {}", req.facts.country.as_str()), n);
            continue;
        }
        let verdict = checker.check_timestamp(t);
        if !verdict.is_allowed() {
            for v in &verdict.violations {
                count_removed(("rule", v.code()), &|| describe(v), n);
            }
            continue;
        }
        if let Some(s) = support {
            let spacing = (t - last.at.timestamp()) as f64 / 3600.0;
            let since = (t - first.at.timestamp()) as f64 / 3600.0;
            if let Err(out) = s.timing(req.attempts.len() as u32, spacing, since).and_then(|_| s.local_hour(here.local_hour)) {
                count_removed(
                    ("outside_support", out.code()),
                    &|| format!("the training log has too few retries like it ({})", s.describe()),
                    n,
                );
                continue;
            }
        }
        // Consecutive hours mostly share their time levels (same hour bucket, same
        // day): the time part of the logit changes only by the columns that moved.
        let levels = here.levels;
        match walked {
            None => {
                time_logit = fixed_logit + model.time_logit(&state, &levels, &mut time_cols);
                if kappa > 0.0 {
                    time_var = time_cols.iter().map(|&c| variances[c as usize]).sum();
                }
            }
            Some(prev) if prev != levels => state.update_time_columns(&prev, &levels, &mut time_cols, |old, new| {
                time_logit += model.weights[new as usize] - model.weights[old as usize];
                if kappa > 0.0 {
                    time_var += variances[new as usize] - variances[old as usize];
                }
            }),
            Some(_) => {}
        }
        if !model.trees.is_empty() && walked != Some(levels) {
            // The trees: bound to the payment once, to the day when its levels change, then per hour.
            if walked.is_none_or(|prev| !levels.same_day_levels(&prev)) {
                model.bind_trees_to_day(&bound, &state, &levels, &mut day_bound);
            }
            tree_logit = model.tree_logit(&day_bound, &state, &levels);
        }
        walked = Some(levels);
        let hour_logit = time_logit + tree_logit;
        // The message goes out `lead` hours before: on the grid when that is not before its start.
        let send_hour = || match usize::try_from(hour - cfg.message_lead_hours) {
            Ok(h) if cfg.message_lead_hours >= 0 => grid[h].local_hour,
            _ => send_time(start + Duration::hours(hour)).with_timezone(&tz).hour(),
        };
        let message_quiet = c.quiet_hours.or(cfg.message_quiet_hours).is_some_and(|(qs, qe)| in_quiet(send_hour(), qs, qe));
        let hour_odds = platt.odds_against(hour_logit, true);
        let valued_odds = if kappa > 0.0 { platt.odds_against(hour_logit - kappa * time_var.max(0.0).sqrt(), true) } else { hour_odds };
        for &(ch, channel_logit, channel_odds, message_cost, attrition) in &channels {
            if message_quiet && ch != Channel::None {
                count_removed(("constraint", "quiet_hours_message"), &|| "the message would be sent in quiet hours".into(), 1);
                continue;
            }
            if let Some(Err(out)) = support.map(|s| s.channel(ch)) {
                count_removed(
                    ("outside_support", out.code()),
                    &|| format!("the training log has too few retries after a message on {}", <&str>::from(ch)),
                    1,
                );
                continue;
            }
            // One exp per hour and per channel, not per candidate; the direct form where
            // the product is not a number (inf · 0 at absurd logits).
            let odds = hour_odds * channel_odds;
            let p = if odds.is_nan() { platt.calibrate(hour_logit + channel_logit) } else { 1.0 / (1.0 + odds) };
            // Valued at the lower bound; reported at the estimate.
            let p_valued = if kappa > 0.0 {
                let o = valued_odds * channel_odds;
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
            let ev = (1.0 - attrition) * (discount * p * amount - cfg.attempt_cost_minor) - message_cost;
            let ev_valued = (1.0 - attrition) * (discount * p_valued * amount - cfg.attempt_cost_minor) - message_cost;
            if ev_valued > hour_best[hour as usize] {
                hour_best[hour as usize] = ev_valued;
                hour_best_p[hour as usize] = p;
                hour_best_a[hour as usize] = attrition;
            }
            slots.push(Scored { hour, channel: ch, p, p_valued, attrition, ev, value: ev_valued });
        }
    }
    let removed_total: usize = removed.iter().map(|r| r.2).sum();
    for ((kind, code), detail, n) in &removed {
        reasons.push(reason(format!("{kind}:{code}"), format!("{detail} ({n} candidates removed)")));
    }
    if slots.is_empty() {
        reasons.push(reason("no_allowed_slot", "no (time, channel) in the window is allowed by the rules and constraints"));
        return Ok(not_retrying(reasons, 0, removed_total));
    }

    // One-step look-ahead: if this retry fails, the best expected value at least a
    // day later (0 when none: not retrying is always possible).
    // `later_best[h]`: the best expected value from hour h on, and the hour it is at.
    let mut later_best = vec![0.0f64; hour_best.len() + 1];
    let mut later_at = vec![usize::MAX; hour_best.len() + 1];
    for h in (0..hour_best.len()).rev() {
        (later_best[h], later_at[h]) =
            if hour_best[h] > later_best[h + 1] { (hour_best[h], h) } else { (later_best[h + 1], later_at[h + 1]) };
    }
    for s in &mut slots {
        s.value += (1.0 - s.attrition) * (1.0 - s.p_valued) * later_best[(s.hour as usize + 24).min(hour_best.len())];
    }
    let scored = slots.len();
    // Best first; ties go to the earlier time, then the cheaper channel (a total order,
    // so the partial selection below is deterministic). Only the top k + 1 are ordered.
    let better = |a: &usize, b: &usize| {
        let (x, y) = (&slots[*a], &slots[*b]);
        y.value.total_cmp(&x.value).then(x.hour.cmp(&y.hour)).then((x.channel as u8).cmp(&(y.channel as u8)))
    };
    let head = cfg.top_k + 1;
    let mut order: Vec<usize> = Vec::with_capacity(head + 1);
    for i in 0..scored {
        if order.len() < head || better(&i, &order[head - 1]).is_lt() {
            let at = order.partition_point(|o| better(o, &i).is_lt());
            order.insert(at, i);
            order.truncate(head);
        }
    }
    let best = &slots[order[0]];
    if best.value <= 0.0 {
        reasons.push(reason(
            "not_worth_retrying",
            format!("best slot's expected value {:.1} (minor units) does not cover the attempt and message costs", best.value),
        ));
        return Ok(not_retrying(reasons, scored, removed_total));
    }
    // Exploration among near-best alternatives (distinct times or channels), at most top_k.
    let near: Vec<usize> = order.iter().copied().take(cfg.top_k.max(1)).filter(|&i| slots[i].value >= 0.9 * best.value).collect();
    let k = near.len();
    let eps = if k > 1 { cfg.exploration.clamp(0.0, 1.0) } else { 0.0 };
    let (explore, pick) = random;
    let chosen_ix = if explore < eps { near[((pick * k as f64) as usize).min(k - 1)] } else { order[0] };
    let propensity = if chosen_ix == order[0] { 1.0 - eps + eps / k as f64 } else { eps / k as f64 };
    let explored = chosen_ix != order[0];
    let slot = |s: &Scored| {
        let retry_at = start + Duration::hours(s.hour);
        let send_at = (s.channel != Channel::None).then(|| send_time(retry_at));
        Slot { retry_at, channel: s.channel, send_at, p_success: s.p, attrition: s.attrition, expected_value: s.ev, value: s.value }
    };
    // Hours the model cannot tell apart (the same P, channel and attrition in a run of
    // consecutive hours, valued within 1 % of each other) would all go to the run's
    // first hour, the edge of a coarse local-hour bucket, only because of the delay
    // discount: pick within the run by a hash of the payment instead.
    let chosen_ix = if chosen_ix == order[0] {
        let c = slots[chosen_ix];
        let mut run = vec![chosen_ix];
        // Slots are in hour order: look only among the next hour's few channels.
        let same_in = |h: i64| {
            let from = slots.partition_point(|s| s.hour < h);
            (from..slots.len()).take_while(|&i| slots[i].hour == h).find(|&i| {
                let s = &slots[i];
                s.channel == c.channel && s.p == c.p && s.attrition == c.attrition && s.value >= 0.99 * c.value
            })
        };
        while let Some(i) = same_in(c.hour + run.len() as i64) {
            run.push(i);
        }
        if run.len() > 1 {
            use std::hash::{BuildHasher, Hash, Hasher};
            let mut h = foldhash::fast::FixedState::with_seed(0x706c6174).build_hasher();
            req.payment_id.hash(&mut h);
            req.attempts.len().hash(&mut h);
            let k = (h.finish() % run.len() as u64) as usize;
            reasons.push(reason("plateau", format!("{} consecutive hours score alike (the model cannot tell them apart): hour {} of them, by the payment's hash, not the earliest", run.len(), k + 1)));
            run[k]
        } else {
            chosen_ix
        }
    } else {
        chosen_ix
    };
    let picked = slots[chosen_ix];
    let chosen = slot(&picked);
    if explored {
        reasons.push(reason("explored", format!("exploring a near-best alternative (exploration rate {:.0} %)", eps * 100.0)));
    } else {
        reasons.push(reason("best_expected_value", format!("highest expected value of {scored} allowed candidates")));
    }
    // Each time the last retry fails: the best-valued slot at least a day later, while one
    // is worth it. A retry recovers if the payer is still there (its message did not lose
    // them) and it succeeds.
    let (mut reach, mut p_recovery) = ((1.0 - picked.attrition) * (1.0 - picked.p), (1.0 - picked.attrition) * picked.p);
    let (mut planned_retries, mut h) = (1u32, picked.hour as usize + 24);
    let retries_left = req.constraints.max_retries.map_or(u32::MAX, |m| m.saturating_sub(req.attempts.len() as u32 - 1));
    while let Some(&at) = later_at.get(h).filter(|&&at| at != usize::MAX && planned_retries < retries_left) {
        reach *= 1.0 - hour_best_a[at];
        p_recovery += reach * hour_best_p[at];
        reach *= 1.0 - hour_best_p[at];
        planned_retries += 1;
        h = at + 24;
    }
    // Reasons in the data: pay day and channel.
    let local = chosen.retry_at.with_timezone(&tz);
    if state.last_decline().class() == DeclineClass::SoftFunds {
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
    if !discounted.is_empty() {
        let each: Vec<String> =
            discounted.iter().map(|(ch, lift, kept)| format!("{} {lift:+.3} → {kept:+.3}", <&str>::from(*ch))).collect();
        reasons.push(reason(
            "channel_lift_discounted",
            format!(
                "estimated lifts over no message (logit) discounted by {} standard deviation(s) of their uncertainty before valuing: {}",
                cfg.channel_pessimism,
                each.join(", ")
            ),
        ));
    }
    if chosen.attrition > 0.0 {
        reasons.push(reason(
            "message_attrition",
            format!("a {} message after {messages_before} earlier ones loses an estimated {:.1} % of payers; the value counts the retry only for those who stay", <&str>::from(chosen.channel), 100.0 * chosen.attrition),
        ));
    }
    // The chosen slot's terms, largest first.
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
    let alternatives = order.iter().copied().filter(|&i| i != chosen_ix).take(cfg.top_k).map(|i| slot(&slots[i])).collect();
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
    Ok(Decision {
        action: Action::Retry,
        next: NextStep::Retry,
        chosen: Some(chosen),
        ask_channel: None,
        ask: None,
        p_recovery,
        planned_retries,
        alternatives,
        reasons,
        propensity,
        terms,
        candidates_scored: scored,
        candidates_removed: removed_total,
        pay_schedule: schedule,
        pay_schedule_confidence: confidence,
    })
}

/// A scored candidate: hours after the grid's start, channel, P(success), expected
/// value of this retry alone, and with the look-ahead.
#[derive(Debug, Clone, Copy)]
struct Scored {
    hour: i64,
    channel: Channel,
    /// The model's estimate (reported).
    p: f64,
    /// The lower confidence bound it is valued at (`p` without weight variances).
    p_valued: f64,
    /// P(its message makes the payer cancel).
    attrition: f64,
    ev: f64,
    value: f64,
}

fn in_quiet(hour: u32, start: u32, end: u32) -> bool {
    if start <= end {
        hour >= start && hour < end
    } else {
        hour >= start || hour < end
    }
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
fn plan_ask(
    model: &SuccessModel,
    cfg: &EngineConfig,
    req: &Request,
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
    let window_end = req.attempts[0].at + Duration::days(cfg.dunning_window_days);
    let latest = c.latest.map_or(window_end, |l| l.min(window_end));
    let tz = req.facts.timezone;
    let quiet =
        |t: DateTime<Utc>| c.quiet_hours.or(cfg.message_quiet_hours).is_some_and(|(qs, qe)| in_quiet(t.with_timezone(&tz).hour(), qs, qe));
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
    if times.is_empty() {
        return None;
    }
    // The retry once the method is updated, scored as the log shows it: updated, after the
    // ask's channel, whose lift is valued as the grid values it.
    let updated = PaymentState::new(req.facts.clone(), earlier, true, &evidence_with_retries(evidence, req.facts.timezone, earlier))?;
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
        .filter(|&ch| ch != Channel::None && (c.channels.is_empty() || c.channels.contains(&ch)))
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

/// `channel`'s logit terms as the engine values them: a lift over no message
/// (`none_logit`) that is positive loses `channel_pessimism` standard deviations
/// of its uncertainty, never going below none. Also (estimated lift, lift kept)
/// when it was cut, for the reasons.
fn valued_channel_logit(
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

/// Channel to ask for a new payment method: email if allowed (cheap, carries a
/// link), else the first allowed channel.
fn best_ask_channel(c: &Constraints) -> Channel {
    let allowed = |ch: Channel| c.channels.is_empty() || c.channels.contains(&ch);
    [Channel::Email, Channel::InApp, Channel::Push, Channel::Sms].into_iter().find(|&ch| allowed(ch)).unwrap_or(Channel::None)
}

fn describe(v: &RuleViolation) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| v.code().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BillingInterval, CardBrand, CardFunding, PaymentMethod};
    use crate::model::{sigmoid, Platt};
    use chrono::TimeZone;

    /// A model with arbitrary (deterministic) weights: every column matters.
    fn model() -> SuccessModel {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let weights = (0..SCHEMA.len())
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f64 / 1000.0 - 1.0
            })
            .collect();
        SuccessModel {
            schema: SCHEMA.clone(),
            weights,
            intercept: -1.0,
            platt_a: 0.9,
            platt_b: 0.1,
            attrition: Default::default(),
            asks: Default::default(),
            weight_variances: Vec::new(),
            trees: Default::default(),
            support: Default::default(),
            failed_retries: Default::default(),
            class_platt: Vec::new(),
        }
    }

    fn request() -> Request {
        let t0 = Utc.with_ymd_and_hms(2026, 3, 5, 14, 20, 0).unwrap(); // the US switches to DST on 2026-03-08
        Request {
            payment_id: "inv_1".into(),
            facts: PaymentFacts {
                amount_minor: 4_999,
                currency: "USD".parse().expect("USD"),
                method: PaymentMethod::Card,
                card_brand: Some(CardBrand::Mastercard),
                card_funding: Some(CardFunding::Debit),
                country: "US".parse().expect("US"),
                timezone: chrono_tz::America::Chicago,
                billing_interval: Some(BillingInterval::Month),
                tenure_days: Some(200),
            },
            attempts: vec![RequestAttempt {
                at: t0,
                decline: DeclineCode::InsufficientFunds,
                network_code: None,
                advice_code: None,
                channel: None,
                payment_method_updated: false,
                card: None,
            }],
            payment_method_updated: false,
            asks: Vec::new(),
            past_payments: Vec::new(),
            card: None,
            card_attempts: Vec::new(),
            now: t0 + Duration::minutes(5),
            constraints: Constraints { quiet_hours: Some((22, 7)), ..Default::default() },
        }
    }

    /// After a failed retry, a model with a failed-retries correction shifts every candidate's
    /// logit by γ·(E − mean), E being the failed retry's P as the model scored it then, and says so.
    #[test]
    fn a_failed_retry_the_model_rated_well_lowers_the_next_one() {
        let mut req = request();
        let failed_at = req.attempts[0].at + Duration::days(3);
        req.attempts.push(RequestAttempt { at: failed_at, channel: Some(Channel::None), ..req.attempts[0].clone() });
        req.now = failed_at + Duration::minutes(5);
        // One slot: the comparison is of the same candidate.
        let slot = ceil_hour(failed_at + Duration::days(2));
        req.constraints = Constraints { earliest: Some(slot), latest: Some(slot), channels: vec![Channel::None], ..Default::default() };
        let cfg = EngineConfig { exploration: 0.0, ..Default::default() };
        let plain = model();
        let before = decide(&plain, &cfg, &req, (0.5, 0.5)).expect("decides");
        assert!(!before.reasons.iter().any(|r| r.code == "failed_retries"));
        let p_before = before.chosen.as_ref().map(|c| c.p_success).expect("a retry");
        // E: the failed retry scored from the state before it, at its time, without a message.
        let first = PaymentState::new(req.facts.clone(), &[EarlierAttempt::from(&req.attempts[0])], false, &[]).expect("state");
        let expected = plain.predict(&first.encode(&Candidate { at: failed_at, channel: Channel::None }));
        let n = crate::declines::DeclineClass::VARIANTS.len();
        let mut corrected = plain.clone();
        corrected.failed_retries = crate::failed_retries::FailedRetries {
            gamma: vec![-2.0; n],
            mean: vec![vec![0.0; crate::failed_retries::RETRY_CELLS]; n],
            rows: vec![1_000; n],
        };
        let after = decide(&corrected, &cfg, &req, (0.5, 0.5)).expect("decides");
        let chosen = after.chosen.as_ref().expect("a retry");
        assert_eq!(chosen.retry_at, slot);
        let why = after.reasons.iter().find(|r| r.code == "failed_retries").expect("explained");
        assert!(why.detail.contains(&format!("{expected:.2}")), "{why:?}");
        // Exactly the shift on the raw logit.
        let logit = |p: f64| (p / (1.0 - p)).ln();
        let moved = (logit(chosen.p_success) - logit(p_before)) / plain.platt_a;
        assert!((moved - (-2.0 * expected)).abs() < 1e-9, "{moved} vs {}", -2.0 * expected);
    }

    #[test]
    fn with_trees_the_grid_scores_equal_the_full_encoding_and_the_terms_name_them() {
        let mut m = model();
        m.trees = crate::trees::random_forest(3, 12, 6, crate::model::TREE_GROUPS);
        m.check_schema().expect("a valid model");
        let mut on_channel = m.clone();
        on_channel.trees.trees[0].nodes[0].group = crate::features::CHANNEL_GROUP as u8;
        let err = on_channel.check_schema().expect_err("a split on the channel is refused").to_string();
        assert!(err.contains("channel") && err.contains("retrain"), "{err}");
        let req = request();
        let cfg = EngineConfig { exploration: 0.0, top_k: 100_000, ..Default::default() };
        let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
        let earlier = [EarlierAttempt::from(&req.attempts[0])];
        let state = PaymentState::new(req.facts.clone(), &earlier, false, &[]).expect("state");
        let chosen = d.chosen.clone().expect("chosen");
        assert!(d.alternatives.len() > 1000, "{} alternatives", d.alternatives.len());
        // Every slot of the grid (bound to the payment, then to each day) as the full vector scores it.
        for s in std::iter::once(&chosen).chain(&d.alternatives) {
            let full = m.predict(&state.encode(&Candidate { at: s.retry_at, channel: s.channel }));
            assert!((s.p_success - full).abs() < 1e-12, "{s:?}: grid {} vs full {full}", s.p_success);
        }
        // The trees move the choice: without them another hour wins.
        let plain = decide(&model(), &cfg, &req, (0.5, 0.5)).expect("decides");
        assert_ne!(plain.chosen.map(|c| c.p_success), Some(chosen.p_success));
        // The explanation names the groups the trees split on, with what they added.
        let trees: Vec<&Term> = d.terms.iter().filter(|t| t.feature.starts_with("trees:")).collect();
        assert!(!trees.is_empty(), "{:?}", d.terms);
        let x = crate::features::group_levels(&state.encode(&Candidate { at: chosen.retry_at, channel: chosen.channel }));
        let (by_group, _) = m.trees.contributions(&x);
        for t in trees {
            let g = crate::features::group_names().iter().position(|n| t.feature[6..].starts_with(&format!("{n}="))).expect("a group");
            assert_eq!(t.weight, by_group[g], "{t:?}");
        }
    }

    #[test]
    fn hours_the_model_cannot_tell_apart_do_not_all_go_to_the_earliest() {
        let (m, req) = (model(), request());
        let cfg = EngineConfig { exploration: 0.0, ..Default::default() };
        let mut hours = std::collections::BTreeSet::new();
        for i in 0..40 {
            let r = Request { payment_id: format!("inv_{i}"), ..req.clone() };
            let d = decide(&m, &cfg, &r, (0.5, 0.5)).expect("decides");
            if d.reasons.iter().any(|x| x.code == "plateau") {
                hours.insert(d.chosen.expect("a retry").retry_at);
            }
        }
        assert!(hours.len() > 1, "every payment went to {hours:?}");
    }

    #[test]
    fn grid_scores_equal_the_full_encoding_and_alternatives_are_the_next_best() {
        let (m, req) = (model(), request());
        let cfg = EngineConfig { exploration: 0.0, top_k: 12, ..Default::default() };
        let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
        assert_eq!(d.action, Action::Retry);
        let earlier = [EarlierAttempt::from(&req.attempts[0])];
        let state = PaymentState::new(req.facts.clone(), &earlier, false, &[]).expect("state");
        let chosen = d.chosen.clone().expect("chosen");
        let all: Vec<&Slot> = std::iter::once(&chosen).chain(&d.alternatives).collect();
        assert_eq!(all.len(), 13);
        for s in &all {
            let full = m.predict(&state.encode(&Candidate { at: s.retry_at, channel: s.channel }));
            assert!((s.p_success - full).abs() < 1e-12, "{s:?}: grid {} vs full {full}", s.p_success);
            let local = s.retry_at.with_timezone(&chrono_tz::America::Chicago).hour();
            assert!(!in_quiet(local, 22, 7), "{s:?} in quiet hours");
            if let Some(send) = s.send_at {
                assert!(!in_quiet(send.with_timezone(&chrono_tz::America::Chicago).hour(), 22, 7), "{s:?}: message in quiet hours");
            }
        }
        // 07:00 local is allowed for the retry, but its message would go out at 06:00.
        assert!(d.reasons.iter().any(|r| r.code == "constraint:quiet_hours_message"), "{:?}", d.reasons);
        // Alternatives best first, by the look-ahead value; ties by time then channel. The
        // chosen slot is the best, or another hour of its plateau (same P, within 1 %).
        for w in d.alternatives.windows(2) {
            assert!(w[0].value >= w[1].value, "{:?} before {:?}", w[0], w[1]);
        }
        let best = all.iter().map(|s| s.value).fold(f64::NEG_INFINITY, f64::max);
        assert!(chosen.value >= 0.99 * best, "{chosen:?} vs best value {best}");
        if chosen.value < best {
            assert!(d.reasons.iter().any(|r| r.code == "plateau"), "{:?}", d.reasons);
            let first = all.iter().find(|s| s.value == best).expect("the best");
            assert_eq!((first.p_success, first.channel), (chosen.p_success, chosen.channel));
        }
        // The partial selection keeps exactly the head of the full order.
        let every = decide(&m, &EngineConfig { top_k: 100_000, ..cfg.clone() }, &req, (0.5, 0.5)).expect("decides");
        assert_eq!(every.alternatives.len() + 1, d.candidates_scored);
        assert_eq!(every.chosen, d.chosen);
        assert_eq!(every.alternatives[..12], d.alternatives[..]);
        // The discount is per day of delay from now.
        let days = (chosen.retry_at - req.now).num_minutes() as f64 / 1440.0;
        let cost = cfg.attempt_cost_minor + cfg.message_cost(chosen.channel);
        let ev = (1.0 - cfg.daily_discount).powf(days) * chosen.p_success * 4_999.0 - cost;
        assert!((chosen.expected_value - ev).abs() < 1e-6, "{} vs {ev}", chosen.expected_value);
    }

    #[test]
    fn recovery_follows_the_best_slot_a_day_after_each_failure() {
        let (m, req) = (model(), request());
        let cfg = EngineConfig { exploration: 0.0, top_k: 100_000, ..Default::default() };
        let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
        let chosen = d.chosen.clone().expect("chosen");
        // Brute force over every scored slot: the best expected value at least 24 h after
        // the last retry, while one is worth its cost.
        let all: Vec<&Slot> = std::iter::once(&chosen).chain(&d.alternatives).collect();
        let (mut fail, mut at, mut n) = (1.0 - chosen.p_success, chosen.retry_at, 1);
        while let Some(next) = all
            .iter()
            .filter(|s| s.retry_at >= at + Duration::hours(24) && s.expected_value > 0.0)
            .max_by(|a, b| a.expected_value.total_cmp(&b.expected_value))
        {
            fail *= 1.0 - next.p_success;
            at = next.retry_at;
            n += 1;
        }
        assert!(n >= 3, "a 14-day grid holds more than two retries a day apart ({n})");
        assert_eq!(d.planned_retries, n);
        assert!((d.p_recovery - (1.0 - fail)).abs() < 1e-12, "{} vs {}", d.p_recovery, 1.0 - fail);
        // The caller's retry budget ends the path: one retry left, one planned.
        let capped = Request { constraints: Constraints { max_retries: Some(1), ..req.constraints.clone() }, ..req.clone() };
        let d1 = decide(&m, &cfg, &capped, (0.5, 0.5)).expect("decides");
        assert_eq!((d1.planned_retries, d1.p_recovery), (1, d1.chosen.expect("chosen").p_success));
    }

    /// A model whose every retry has the same P(success), with an ask response
    /// (SMS 30 %, email 20 %, 2 %/day on their own) and the given attrition lines.
    fn asking_model(email: (f64, f64), sms: (f64, f64)) -> SuccessModel {
        use crate::asks::{AskResponse, ChannelResponse};
        use crate::attrition::{Attrition, ChannelAttrition};
        let line = |channel, (base, per_message)| ChannelAttrition { channel, base, per_message, buckets: vec![] };
        let response = |channel, rate| ChannelResponse { channel, rate, se: 0.01, retries: 100 };
        SuccessModel {
            schema: SCHEMA.clone(),
            weights: vec![0.0; SCHEMA.len()],
            intercept: 0.5,
            platt_a: 1.0,
            platt_b: 0.0,
            attrition: Attrition { channels: vec![line(Channel::Email, email), line(Channel::Sms, sms)], retries: 100, other: None },
            asks: AskResponse {
                channels: vec![response(Channel::Email, 0.2), response(Channel::Sms, 0.3)],
                spontaneous_per_day: 0.02,
                payments: 100,
                first_retry_days: (0.75, 1.25),
                other: None,
                ..AskResponse::default()
            },
            weight_variances: Vec::new(),
            trees: Default::default(),
            support: Default::default(),
            failed_retries: Default::default(),
            class_platt: Vec::new(),
        }
    }

    #[test]
    fn an_expired_card_gets_a_valued_plan_of_asks() {
        let p = crate::model::sigmoid(0.5);
        let mut req = request();
        req.attempts[0].decline = DeclineCode::ExpiredCard;
        req.constraints = Constraints { channels: vec![Channel::Email, Channel::Sms], ..Default::default() };
        let free = EngineConfig {
            exploration: 0.0,
            message_cost_minor: vec![],
            daily_discount: 0.0,
            channel_pessimism: 0.0,
            message_quiet_hours: None,
            ..Default::default()
        };
        // Messages that lose nobody and cost nothing: ask on the most responsive channel at
        // every opportunity, once a day from now to the end of the window.
        let d = decide(&asking_model((0.0, 0.0), (0.0, 0.0)), &free, &req, (0.5, 0.5)).expect("decides");
        assert_eq!(d.action, Action::DoNotRetry);
        let plan = d.ask.clone().expect("a plan");
        assert_eq!((plan.channel, d.ask_channel, plan.send_at), (Channel::Sms, Some(Channel::Sms), req.now));
        let left = (req.attempts[0].at + Duration::days(free.dunning_window_days) - Duration::hours(free.message_lead_hours) - req.now)
            .num_hours()
            / 24
            + 1;
        assert_eq!(plan.planned_asks as i64, left);
        let s = 1.0 - (-0.02f64).exp();
        let q = 0.3 + 0.7 * s;
        assert!((plan.p_update - q).abs() < 1e-12 && (plan.p_success_after - p).abs() < 1e-12, "{plan:?}");
        let recovery = p * (1.0 - (1.0 - q).powi(left as i32));
        assert!((d.p_recovery - recovery).abs() < 1e-12, "{} vs {recovery}", d.p_recovery);
        let gain = p * 4_999.0 - free.attempt_cost_minor;
        assert!((plan.value - gain * (1.0 - (1.0 - q).powi(left as i32))).abs() < 1e-6, "{plan:?}");
        assert!(plan.value > plan.value_without_asking && d.reasons.iter().any(|r| r.code == "ask_for_new_payment_method"));

        // SMS loses half the payers it reaches: email instead, and fewer asks as fatigue grows.
        // When delay costs nothing, the plan first waits for the updates that come anyway
        // (each ask spent loses payers), then asks.
        let fatigue = asking_model((0.01, 0.05), (0.5, 0.0));
        let d = decide(&fatigue, &free, &req, (0.5, 0.5)).expect("decides");
        let plan = d.ask.clone().expect("a plan");
        assert_eq!(plan.channel, Channel::Email);
        assert!(plan.planned_asks > 1 && (plan.planned_asks as i64) < left, "{plan:?}");
        assert!((plan.attrition - 0.01).abs() < 1e-12);
        assert!(plan.send_at > req.now, "{plan:?}");
        // When the payer may leave meanwhile (5 % of the value a day), it asks at once.
        let impatient = EngineConfig { daily_discount: 0.05, ..free.clone() };
        let now = decide(&fatigue, &impatient, &req, (0.5, 0.5)).expect("decides").ask.expect("a plan");
        assert_eq!((now.channel, now.send_at), (Channel::Email, req.now));

        // Two asks already sent, the last an hour ago: the next waits out the spacing, and
        // its attrition counts them.
        let mut asked = req.clone();
        asked.asks = vec![
            SentAsk { at: req.now - Duration::hours(30), channel: Channel::Email },
            SentAsk { at: req.now - Duration::hours(1), channel: Channel::Email },
        ];
        let later = decide(&fatigue, &impatient, &asked, (0.5, 0.5)).expect("decides").ask.expect("a plan");
        assert_eq!(later.send_at, req.now + Duration::hours(23));
        assert!((later.attrition - 0.11).abs() < 1e-12, "{later:?}");

        // Every ask loses more than it brings: none, and the reason says so.
        let d = decide(&asking_model((0.99, 0.0), (0.99, 0.0)), &free, &req, (0.5, 0.5)).expect("decides");
        assert_eq!((d.ask_channel, d.ask.as_ref().map(|a| a.channel)), (None, Some(Channel::None)));
        assert!(d.reasons.iter().any(|r| r.code == "ask_not_worth_it"), "{:?}", d.reasons);

        // A model without an ask response: no plan, the channel suggestion as before.
        let d = decide(&model(), &free, &req, (0.5, 0.5)).expect("decides");
        assert_eq!((d.ask, d.ask_channel, d.next), (None, Some(Channel::Email), NextStep::AskForPaymentMethod));

        // By default no ask goes out in the payer's night (21:00–8:00 local): one due at
        // 07:25 Chicago time waits for 08:00.
        let night = decide(&fatigue, &EngineConfig { message_quiet_hours: Some((21, 8)), ..impatient.clone() }, &asked, (0.5, 0.5))
            .expect("decides");
        let plan = night.ask.expect("a plan");
        assert_eq!(plan.send_at.with_timezone(&chrono_tz::America::Chicago).hour(), 8, "{plan:?}");
        // Not due now: a wait, with no channel to ask on yet.
        assert_eq!((night.next, night.ask_channel), (NextStep::WaitForUpdate, None));

        // The payer told the merchant to stop: no retry and no ask.
        let mut revoked = req.clone();
        revoked.attempts[0].decline = DeclineCode::RevocationOfAuthorization;
        let d = decide(&model(), &free, &revoked, (0.5, 0.5)).expect("decides");
        assert_eq!((d.next, d.ask_channel), (NextStep::Stop, None));
        // A stolen card: ask for a new payment method.
        let mut stolen = req.clone();
        stolen.attempts[0].decline = DeclineCode::StolenCard;
        let d = decide(&model(), &free, &stolen, (0.5, 0.5)).expect("decides");
        assert_eq!((d.action, d.next, d.ask_channel), (Action::DoNotRetry, NextStep::AskForPaymentMethod, Some(Channel::Email)));

        // Valued pessimistically, each response rate is two standard errors lower, and a
        // channel the history never randomized (valued at the others' mean) gets no ask.
        let mut other = asking_model((0.0, 0.0), (0.0, 0.0));
        other.asks.other = Some(crate::asks::ChannelResponse { channel: Channel::InApp, rate: 0.9, se: 0.01, retries: 0 });
        let any = Request {
            constraints: Constraints { channels: vec![Channel::Email, Channel::Sms, Channel::InApp], ..Default::default() },
            ..req.clone()
        };
        let open = EngineConfig { channel_pessimism: 0.0, ..impatient.clone() };
        let plan = decide(&other, &open, &any, (0.5, 0.5)).expect("decides").ask.expect("a plan");
        assert_eq!((plan.channel, plan.send_at), (Channel::InApp, req.now), "{plan:?}");
        let careful = EngineConfig { channel_pessimism: 2.0, ..open };
        let plan = decide(&other, &careful, &any, (0.5, 0.5)).expect("decides").ask.expect("a plan");
        assert_eq!(plan.channel, Channel::Sms);
        assert!((plan.p_update - (0.28 + 0.72 * s)).abs() < 1e-12, "{plan:?}");

        // An ask from the future is refused, naming the field.
        let mut bad = req.clone();
        bad.asks = vec![SentAsk { at: req.now + Duration::hours(1), channel: Channel::Email }];
        assert_eq!(decide(&model(), &free, &bad, (0.5, 0.5)).unwrap_err().field, "asks[0].sent_at");
    }

    #[test]
    fn a_retry_is_valued_with_its_decline_class_and_stage_calibration() {
        let sms = SCHEMA.columns.iter().position(|c| c == "channel=sms").expect("an SMS column");
        let mut m = SuccessModel { weights: vec![0.0; SCHEMA.len()], ..model() };
        m.weights[sms] = 0.5;
        let mut req = request();
        req.constraints.channels = vec![Channel::Sms];
        let cfg = EngineConfig { exploration: 0.0, channel_pessimism: 0.0, ..Default::default() };
        let class = req.attempts[0].decline.class() as usize;
        let global = m.platt();
        // Every cell the global scaling but this class's first retry.
        m.class_platt = vec![[global; 2]; <DeclineClass as strum::VariantArray>::VARIANTS.len()];
        m.class_platt[class][0] = Platt { a: 0.5, b: -0.3 };
        m.class_platt[class][1] = Platt { a: 3.0, b: 1.0 };
        let chosen = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides").chosen.expect("a retry");
        assert_eq!(chosen.channel, Channel::Sms);
        let want = sigmoid(0.5 * (m.intercept + 0.5) - 0.3);
        assert!((chosen.p_success - want).abs() < 1e-12, "{} vs {want}", chosen.p_success);
        assert!((chosen.p_success - m.calibrate(m.intercept + 0.5)).abs() > 0.01, "not the global scaling");
    }

    #[test]
    fn a_noisy_channel_lift_is_discounted_by_its_uncertainty() {
        // Every weight 0 but SMS's own column: SMS lifts the logit by 0.5 over no message.
        let sms = SCHEMA.columns.iter().position(|c| c == "channel=sms").expect("an SMS column");
        let mut m = SuccessModel { weights: vec![0.0; SCHEMA.len()], ..model() };
        m.weights[sms] = 0.5;
        let mut req = request();
        req.constraints.channels = vec![Channel::Sms];
        let cfg = EngineConfig { exploration: 0.0, channel_pessimism: 2.0, ..Default::default() };
        let discounted = |d: &Decision| d.reasons.iter().find(|r| r.code == "channel_lift_discounted").map(|r| r.detail.clone());
        // No variances (an older model): the lift as estimated.
        let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
        let chosen = d.chosen.clone().expect("a retry");
        assert_eq!(chosen.channel, Channel::Sms);
        assert!((chosen.p_success - m.calibrate(m.intercept + 0.5)).abs() < 1e-12);
        assert_eq!(discounted(&d), None);
        // A lift known to ± 0.2: two standard deviations off leaves 0.1.
        m.weight_variances = vec![0.0; SCHEMA.len()];
        m.weight_variances[sms] = 0.04;
        let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
        let chosen = d.chosen.clone().expect("a retry");
        assert_eq!(chosen.channel, Channel::Sms);
        assert!((chosen.p_success - m.calibrate(m.intercept + 0.1)).abs() < 1e-12, "{chosen:?}");
        assert!(discounted(&d).is_some_and(|t| t.contains("sms +0.500 → +0.100")), "{:?}", d.reasons);
        // Known to ± 0.3: nothing is left, and the SMS's cost makes no message better.
        m.weight_variances[sms] = 0.09;
        let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
        assert_eq!(d.chosen.expect("a retry").channel, Channel::None);
        // Pessimism off: the estimate again.
        let d = decide(&m, &EngineConfig { channel_pessimism: 0.0, ..cfg.clone() }, &req, (0.5, 0.5)).expect("decides");
        assert_eq!(d.chosen.expect("a retry").channel, Channel::Sms);
        // The ask plan values the retry after an SMS ask with the same discount.
        let mut asking = asking_model((0.0, 0.0), (0.0, 0.0));
        asking.weights[sms] = 0.5;
        asking.weight_variances = m.weight_variances.clone();
        asking.weight_variances[sms] = 0.04;
        let mut expired = req.clone();
        expired.attempts[0].decline = DeclineCode::ExpiredCard;
        let plan = decide(&asking, &cfg, &expired, (0.5, 0.5)).expect("decides").ask.expect("a plan");
        assert_eq!(plan.channel, Channel::Sms);
        assert!((plan.p_success_after - asking.calibrate(asking.intercept + 0.1)).abs() < 1e-12, "{plan:?}");
        // A channel that looks worse than no message is left as it is.
        m.weights[sms] = -0.5;
        let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
        assert_eq!((d.chosen.as_ref().expect("a retry").channel, discounted(&d)), (Channel::None, None));
    }
}
