//! The engine's answer: the action and next step, the chosen slot and its
//! alternatives, the ask plan, reasons (stable codes and details) and logit terms.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Channel;
use crate::rules::RuleViolation;

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
    /// What the grid ranks by: this retry at its valued P (the lower confidence bound and
    /// the edge bounds, not `p_success`), then the best later one if it fails.
    pub value: f64,
}

/// Why the engine decided as it did. Stable codes for machines, details for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable snake_case code (`hard_decline`, `rule:visa_reattempt_cap`, `best_expected_value`…).
    pub code: String,
    pub detail: String,
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

/// A decision that retries nothing: stop, with `reasons` (callers fill in what they know more).
pub(super) fn stopped(reasons: Vec<Reason>) -> Decision {
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

pub(super) fn reason(code: impl Into<String>, detail: impl Into<String>) -> Reason {
    Reason { code: code.into(), detail: detail.into() }
}

/// A rule violation in words (its JSON form: the code and the rule's numbers).
pub(super) fn describe(v: &RuleViolation) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| v.code().to_string())
}
