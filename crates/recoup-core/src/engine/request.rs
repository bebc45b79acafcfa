//! Step 1 of a decision: the request, its checks (each error names the field), and
//! the payment read once, as the network rules and the model see it.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strum::VariantArray;

use super::decision::{stopped, Decision, Reason};
pub use crate::attempt::EarlierAttempt;
use crate::declines::DeclineCode;
use crate::domain::{CardId, Channel, Outcome};
use crate::features::{evidence_with_retries, payment_evidence, PaymentFacts, PaymentState};
use crate::limits::{self, InvalidField};
use crate::model::SuccessModel;
use crate::payday::Evidence;
use crate::rules::{self, PastAttempt};

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

impl Constraints {
    /// Whether the caller allows `channel` (`none`, no message, always).
    pub fn allows(&self, channel: Channel) -> bool {
        channel == Channel::None || self.channels.is_empty() || self.channels.contains(&channel)
    }
}

/// One decision request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub payment_id: String,
    pub facts: PaymentFacts,
    /// The request gave no time zone: `facts.timezone` is the country's default
    /// ([`crate::calendar::default_timezone`]), and messages and asks keep quiet hours in
    /// every zone of the country ([`crate::calendar::country_time_zones`]).
    pub timezone_assumed: bool,
    /// The payment's attempts so far, original charge first, all failed.
    pub attempts: Vec<EarlierAttempt>,
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

pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidField {
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
                let messages: Vec<&str> = Channel::VARIANTS.iter().filter(|c| **c != Channel::None).map(|c| (*c).into()).collect();
                return Err(invalid(format!("asks[{i}].channel"), format!("an ask is a message: one of {}", messages.join(", "))));
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

/// The request's attempts as the network rules read them: this payment's, and the same
/// card's attempts on other payments.
pub(super) fn rule_history(req: &Request) -> (Vec<PastAttempt>, Vec<PastAttempt>) {
    let past: Vec<PastAttempt> =
        req.attempts.iter().enumerate().map(|(i, a)| PastAttempt { attempt_number: i as u32, ..PastAttempt::from(a) }).collect();
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

/// The payment as the model scores its next retry, with `facts` as the model reads them
/// ([`crate::imputation`]): the pay-day evidence of its earlier payments (reduced once to
/// what inference reads: the failed-retries correction infers per earlier retry), and the
/// state before the next retry (its own failed funds retries count as evidence too).
pub(super) fn scored_payment(req: &Request, facts: &PaymentFacts) -> (Vec<Evidence>, Option<PaymentState>) {
    let evidence: Vec<Evidence> = req.past_payments.iter().flat_map(|p| payment_evidence(req.facts.timezone, p)).map(|(_, e)| e).collect();
    let evidence = crate::payday::most_recent(&evidence);
    let earlier = &req.attempts;
    let state = PaymentState::new(
        facts.clone(),
        earlier,
        req.payment_method_updated,
        &evidence_with_retries(&evidence, req.facts.timezone, earlier),
    );
    (evidence, state)
}

/// The network rules' facts of the request's payment.
pub(super) fn rule_facts(req: &Request) -> rules::Network {
    rules::Network::from(&req.facts)
}

/// A validated request, read once: its first and last attempts, its attempts as the
/// network rules read them, and the payment as the model scores its next retry.
pub(super) struct Prepared<'r> {
    pub first: &'r EarlierAttempt,
    pub last: &'r EarlierAttempt,
    /// This payment's attempts as the rules read them.
    pub past: Vec<PastAttempt>,
    /// The same card's attempts in other payments.
    pub elsewhere: Vec<PastAttempt>,
    /// Pay-day evidence of the payer's earlier payments.
    pub evidence: Vec<Evidence>,
    pub earlier: &'r [EarlierAttempt],
    /// The payment's facts as the success model reads them: the request's, with each
    /// optional field it left out that the training log always had filled in
    /// ([`crate::imputation`]); the rules read `req.facts`.
    pub facts: PaymentFacts,
    /// The fields filled in.
    pub imputed: Vec<&'static str>,
    /// The state before the next retry.
    pub state: PaymentState,
    /// Messages already sent in this dunning (before retries, and asks): each one makes
    /// the next more likely to lose the payer.
    pub messages_before: u32,
}

impl<'r> Prepared<'r> {
    /// Read a request that passed [`Request::validate`], for `model`.
    pub fn new(req: &'r Request, model: &SuccessModel) -> Result<Prepared<'r>, InvalidField> {
        let none = || invalid("attempts", "must hold at least the failed original charge");
        let (Some(first), Some(last)) = (req.attempts.first(), req.attempts.last()) else {
            return Err(none());
        };
        let (past, elsewhere) = rule_history(req);
        let (facts, imputed) = model.imputation.fill(&req.facts);
        let (evidence, state) = scored_payment(req, &facts);
        let earlier = &req.attempts;
        let state = state.ok_or_else(none)?;
        let messages_before = state.messages() + req.asks.len() as u32;
        Ok(Prepared { first, last, past, elsewhere, evidence, earlier, facts, imputed, state, messages_before })
    }

    /// What the decision assumed about the payment: one reason per optional field the
    /// success model read at the training log's most common value ([`crate::imputation`]),
    /// and the time zone when the request gave none.
    pub fn assumption_reasons(&self, model: &SuccessModel, req: &Request) -> Vec<Reason> {
        let zones = crate::calendar::country_time_zones(req.facts.country);
        let zone = req.timezone_assumed.then(|| {
            super::decision::reason(
                "timezone_assumed",
                if zones.is_empty() {
                    format!(
                        "the request has no timezone: the payer is placed in {}, the country's default (UTC where recoup knows none)",
                        req.facts.timezone
                    )
                } else {
                    format!(
                        "the request has no timezone: the payer is placed in {}, the country's default; messages and asks keep quiet hours in each of its {} zones ({})",
                        req.facts.timezone,
                        zones.len(),
                        zones.iter().map(|z| z.name()).collect::<Vec<_>>().join(", ")
                    )
                },
            )
        });
        self.imputed
            .iter()
            .map(|f| {
                super::decision::reason(
                    format!("imputed:{f}"),
                    format!(
                        "the request has no {f}; nearly every retry the model learned from had one, so it is scored as {} (the log's most common)",
                        model.imputation.describe(f)
                    ),
                )
            })
            .chain(zone)
            .collect()
    }

    /// The card the rules count caps on, with its attempts elsewhere.
    pub fn card(&self, req: &Request) -> rules::CardContext<'_> {
        rules::CardContext { card: req.card, elsewhere: &self.elsewhere }
    }

    /// Retries made so far (the original charge not counted).
    pub fn retries(&self, req: &Request) -> u32 {
        req.attempts.len() as u32 - 1
    }

    /// The pay schedule the model inferred, in words.
    pub fn schedule(&self) -> String {
        self.state.payday().schedule.to_string()
    }

    /// A decision that does not retry, with the pay-day estimate and candidate counts.
    pub fn not_retrying(&self, reasons: Vec<Reason>, scored: usize, removed: usize) -> Decision {
        Decision {
            candidates_scored: scored,
            candidates_removed: removed,
            pay_schedule: self.schedule(),
            pay_schedule_confidence: self.state.payday().confidence,
            ..stopped(reasons)
        }
    }
}
