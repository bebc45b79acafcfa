//! One vocabulary for a charge attempt. [`Attempt`] is the record: one row of the
//! history contract, typed. The rest are the views of it each part of the core
//! reads, with their `From` conversions here, next to them:
//! - [`PastAttempt`]: what the network rules count (time, number, outcome, codes, card);
//! - [`EarlierAttempt`]: what the features read of a still-open payment's attempts;
//! - [`EarlierAttempt`]: an attempt as a decision request gives it (all failed).
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::declines::DeclineCode;
use crate::domain::{
    BillingInterval, CardBrand, CardFunding, CardId, Channel, Country, CustomerIx, Money, Outcome, PaymentIx, PaymentMethod, RawCode,
    SourceRow,
};

/// One validated charge attempt: one row of the history contract, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Index of `attempt_id` in the loaded history's id table (`recoup::history::History::attempt_ids`).
    pub attempt_ix: u32,
    /// The payment (invoice) this attempt collects.
    pub payment: PaymentIx,
    /// The payer.
    pub customer: CustomerIx,
    /// When the charge was attempted (UTC).
    pub attempted_at: DateTime<Utc>,
    /// 0 = the original scheduled charge, 1, 2, … = retries.
    pub attempt_number: u32,
    /// Amount and currency.
    pub amount: Money,
    /// Payment method.
    pub method: PaymentMethod,
    /// Card network, for cards.
    pub card_brand: Option<CardBrand>,
    /// Card funding, for cards.
    pub card_funding: Option<CardFunding>,
    /// Payer's country.
    pub country: Country,
    /// Payer's time zone (given, or the country default).
    pub timezone: Tz,
    /// Succeeded or failed.
    pub outcome: Outcome,
    /// Normalized decline reason; `Some` exactly when the attempt failed.
    pub decline: Option<DeclineCode>,
    /// Issuer's raw response code as received.
    pub network_code: Option<RawCode>,
    /// Mastercard Merchant Advice Code as received.
    pub advice_code: Option<RawCode>,
    /// Dunning message sent since the previous attempt.
    pub channel: Option<Channel>,
    /// Payer updated the payment method since the previous attempt.
    pub payment_method_updated: Option<bool>,
    /// The platform made this attempt because the payer updated the payment method
    /// (it waited for the update, then retried): the interval before it ended when the
    /// payer updated, not when a schedule said (column `update_triggered`, recoup's
    /// optional addition to contract v1; `recoup history from-log` sets it).
    pub update_triggered: bool,
    /// The card (or account) charged, when the history identifies it (`payment_method_id`).
    pub card: Option<CardId>,
    /// Billing interval of the subscription.
    pub billing_interval: Option<BillingInterval>,
    /// Days since the customer's first successful payment.
    pub tenure_days: Option<u32>,
    /// Probability with which the logging policy chose this attempt.
    pub propensity: Option<f64>,
    /// Where the row came from, for error messages.
    pub source: SourceRow,
}

impl Attempt {
    /// True when the payer updated the payment method since the previous attempt.
    pub fn method_updated(&self) -> bool {
        self.payment_method_updated.unwrap_or(false)
    }
}

/// The facts of one earlier attempt that the rules need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastAttempt {
    /// When it was attempted.
    pub at: DateTime<Utc>,
    /// 0 = original charge, 1.. = retries.
    pub attempt_number: u32,
    /// Succeeded or failed.
    pub outcome: Outcome,
    /// Normalized decline (failed attempts).
    pub decline: Option<DeclineCode>,
    /// Raw network / return code.
    pub network_code: Option<RawCode>,
    /// Mastercard Merchant Advice Code.
    pub advice_code: Option<RawCode>,
    /// The payer updated the payment method before this attempt.
    pub payment_method_updated: bool,
    /// The card it charged, when the caller identified it (`payment_method_id`).
    pub card: Option<CardId>,
}

impl From<&Attempt> for PastAttempt {
    fn from(a: &Attempt) -> Self {
        PastAttempt {
            at: a.attempted_at,
            attempt_number: a.attempt_number,
            outcome: a.outcome,
            decline: a.decline,
            network_code: a.network_code,
            advice_code: a.advice_code,
            payment_method_updated: a.method_updated(),
            card: a.card,
        }
    }
}

/// One earlier attempt of a payment still open (so it failed): what a decision request
/// gives, and what the features read, in training as in serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlierAttempt {
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

impl From<&Attempt> for EarlierAttempt {
    /// A record of an open payment as an earlier attempt (it failed: only a payment's
    /// last attempt may succeed; a failure without a normalized code reads as `other`).
    fn from(a: &Attempt) -> EarlierAttempt {
        EarlierAttempt {
            at: a.attempted_at,
            decline: a.decline.unwrap_or(DeclineCode::Other),
            network_code: a.network_code,
            advice_code: a.advice_code,
            channel: a.channel,
            payment_method_updated: a.payment_method_updated.unwrap_or(false),
            card: a.card,
        }
    }
}

impl From<&EarlierAttempt> for PastAttempt {
    /// A request's attempt as the rules count it: `attempt_number` is its index
    /// among the payment's attempts (0 = the original charge); every one failed.
    fn from(a: &EarlierAttempt) -> PastAttempt {
        PastAttempt {
            at: a.at,
            attempt_number: 0,
            outcome: Outcome::Failed,
            decline: Some(a.decline),
            network_code: a.network_code,
            advice_code: a.advice_code,
            payment_method_updated: a.payment_method_updated,
            card: a.card,
        }
    }
}
