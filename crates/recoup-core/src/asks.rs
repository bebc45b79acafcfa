//! Asking for a new payment method: how likely a payer is to provide one
//! when asked on each channel.
//!
//! After a needs-update decline (expired card, closed account) no retry is
//! allowed until the payer updates the payment method; what the dunning can
//! do is ask. The success model cannot say how likely an ask is to work: it
//! learns from retries, and an ask the payer ignored leaves no row (contract
//! v1 logs attempts, not the messages between them).
//!
//! The answer is still in a log whose channels were drawn at random. The
//! logging policy plans its first retry at a time that does not depend on the
//! decline class, and draws the message before it (with `none` among its
//! choices, probability π_c per channel). For a needs-update payment the
//! retry happens, and is logged with that channel, only if the payer updated
//! the method by then: because the message asked them to (probability ρ_c),
//! or on their own (probability s, e.g. a card updater). So among the N
//! needs-update payments, the first retry at the first planned time, logged
//! on channel c, counts
//!
//! ```text
//! n_c ≈ N · π_c · q_c,   q_c = (1 − a_c) · (ρ_c + (1 − ρ_c) · s),   q_none = s
//! ```
//!
//! where `a_c` is the channel's message attrition ([`crate::attrition`]).
//! Hence `s = n_none / (N π_none)` and `ρ_c = (q_c / (1 − a_c) − s) / (1 − s)`.
//!
//! - The first planned retry time is read from the log: the delays of first
//!   retries after soft (funds, issuer) declines, which almost always happen
//!   then; a needs-update payment's first retry counts when its delay lies
//!   between their 1st percentile and as far beyond their median (a rule
//!   sometimes moves a soft decline's first retry to a later planned time).
//! - π_c is each channel's share of the logged propensities there (the
//!   policy's time draw is common to all channels, so the propensities are
//!   proportional to π_c).
//! - Payers who cancel on their own before that first retry are counted as
//!   asked and unresponsive, which understates ρ slightly.
//! - What the log cannot show: whether a payer who ignored one ask answers
//!   the next one as readily. The engine assumes each ask has the same
//!   chance ([`crate::engine`] says so in its reasons); message attrition
//!   rises with every message and bounds how often it asks.
//!
//! That counting argument rests on one logging policy's habit (no retry of a
//! needs-update payment before an update). A merchant's log may retry them
//! anyway. So the estimate first checks which kind of log it has, and picks
//! the estimator whose assumption the data supports ([`AskMethod`]):
//!
//! 1. **Update flags** (the log retries needs-update payments whether or not
//!    the payer updated, and says so in `payment_method_updated`): a
//!    time-to-update model fitted by maximum likelihood over the intervals
//!    between a needs-update payment's attempts until its first update. An
//!    interval of `d` days after a message on channel `c` ends without an
//!    update with probability `(1 − ρ_c) · exp(−λ d)` (`λ`: updates per day
//!    without an ask; `ρ_none = 0`). Assumes the channel before a retry was
//!    not chosen by how likely the payer was to update (randomized, or at
//!    least not targeted); nothing depends on when the log chose to retry.
//! 2. **Selective retries** (the log's needs-update retries all follow an
//!    update, or carry no flags): the counting estimate above.
//! 3. **Prior** where neither assumption holds or the data are too thin: a
//!    deliberately low response, [`PRIOR_EMAIL_RATE`] per email ask and
//!    nothing for other channels, so that asking (a fraction of a cent) is
//!    still valued but never on the model's word.
//!
//! Every estimate is checked before it is kept: rates in [0, 1], standard
//! errors finite; a failed check falls back to the prior with a note that the
//! model card shows.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use serde::{Deserialize, Serialize};

use crate::domain::Channel;

/// The prior's response to an email ask where the log cannot say.
pub const PRIOR_EMAIL_RATE: f64 = 0.05;

/// How the ask response was estimated (the model card says which, and why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AskMethod {
    /// Models trained before the method was recorded (selective retries).
    #[default]
    Unrecorded,
    /// Time-to-update model on the log's `payment_method_updated` flags.
    UpdateFlags,
    /// The share updated by the first retry, per randomized channel (retries only after an update).
    SelectiveRetries,
    /// The documented conservative prior: the log could not identify the response.
    Prior,
}

/// The estimated response to an ask, per channel. The default (no channels) means
/// the history could not say: the engine then values no ask.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AskResponse {
    /// One entry per message channel that could be estimated.
    pub channels: Vec<ChannelResponse>,
    /// P(the payer updates on their own) per day, from the payments whose first
    /// retry had no message.
    pub spontaneous_per_day: f64,
    /// Needs-update payments the estimate used.
    pub payments: usize,
    /// The first planned retry: its delay after the decline, in days (the window used).
    pub first_retry_days: (f64, f64),
    /// For a channel the log never randomized: the channels' precision-weighted mean.
    pub other: Option<ChannelResponse>,
    /// Which estimator produced this.
    pub method: AskMethod,
    /// The assumption checks and fallbacks, in words (shown on the model card).
    pub notes: Vec<String>,
    /// The time-to-update model's share of a message's response that lands before the
    /// next attempt (the rest lands in the interval after it); `None` for other estimators
    /// and for models that predate it (all of it, then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own_interval_share: Option<f64>,
}

/// One channel's response to an ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelResponse {
    pub channel: Channel,
    /// P(the payer updates the payment method because of the ask).
    pub rate: f64,
    /// Its standard error.
    pub se: f64,
    /// First retries logged on this channel at the first planned time.
    pub retries: usize,
}

impl AskResponse {
    /// P(an ask on `channel` gets the payment method updated), 0 for `none` and
    /// when nothing could be estimated.
    pub fn rate(&self, channel: Channel) -> f64 {
        if channel == Channel::None {
            return 0.0;
        }
        self.channels.iter().find(|c| c.channel == channel).or(self.other.as_ref()).map_or(0.0, |c| c.rate)
    }

    /// [`AskResponse::rate`] less `sds` standard errors (never below 0), as the
    /// engine values it. With `sds > 0` a channel the history never randomized
    /// (valued at the other channels' mean) is 0: nothing shows how its payers answer.
    pub fn rate_discounted(&self, channel: Channel, sds: f64) -> f64 {
        if sds <= 0.0 {
            return self.rate(channel);
        }
        self.channels.iter().find(|c| c.channel == channel).map_or(0.0, |c| (c.rate - sds * c.se).max(0.0))
    }

    /// Whether anything is estimated.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The conservative prior, with the reason it is used.
    pub fn prior(reason: String) -> AskResponse {
        AskResponse {
            channels: vec![ChannelResponse { channel: Channel::Email, rate: PRIOR_EMAIL_RATE, se: 0.0, retries: 0 }],
            method: AskMethod::Prior,
            notes: vec![
                reason,
                format!(
                    "fallback: the prior, {:.0} % per email ask, no response to other channels, no updates without an ask",
                    100.0 * PRIOR_EMAIL_RATE
                ),
            ],
            ..AskResponse::default()
        }
    }

    /// Every number a probability or a finite error, or `Err` naming the first that is not.
    pub fn check(&self) -> Result<(), String> {
        let p = |v: f64| (0.0..=1.0).contains(&v);
        for c in self.channels.iter().chain(&self.other) {
            if !(p(c.rate) && c.se.is_finite() && c.se >= 0.0) {
                return Err(format!("{}: rate {} ± {} is not a probability with a finite error", c.channel, c.rate, c.se));
            }
        }
        if !p(self.spontaneous_per_day) {
            return Err(format!("updates without an ask: {} per day is not a probability", self.spontaneous_per_day));
        }
        Ok(())
    }
}
