//! Message attrition: the share of payers a dunning message loses.
//!
//! A message can bring a payment back (the payer tops up, calls the bank,
//! updates the card) and it can end the dunning: the payer, reminded, cancels.
//! The success model sees only the first effect (it learns from retries that
//! happened); a retry that never happened because its message made the payer
//! cancel leaves no row. Contract v1 has no cancellation event either.
//!
//! The loss is still measurable where the logging policy drew the channel at
//! random (`propensity` < 1), with `none` among its choices. The channel is
//! drawn before the message goes out, independently of everything else that
//! decides whether the retry happens, so among the retries that *were*
//! logged, a channel is under-represented exactly by the share of its
//! messages that ended the dunning. With weight 1 / propensity, the logged
//! retries of channel c estimate (planned retries) × (1 − a_c), and those of
//! `none` estimate (planned retries) × 1, on the same planned retries:
//!
//! ```text
//! a_c = 1 − W_c / W_none,   W_c = Σ over logged retries on c of 1 / propensity
//! ```
//!
//! per number of messages already sent in the dunning (fatigue), then a line
//! `a_c(m) = base + per_message · m` fitted by weighted least squares over
//! those buckets.
//!
//! Only retries after a soft decline (funds, issuer, technical) count: after
//! a needs-update decline the message changes whether the retry is allowed at
//! all (the payer may update the card), which is not attrition.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use serde::{Deserialize, Serialize};

use crate::domain::Channel;

/// Buckets of messages already sent: 0, 1, 2, 3, 4 or more.
pub const BUCKETS: usize = 5;

/// The estimated attrition per channel. The default (no channels) prices none.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Attrition {
    /// One entry per message channel that could be estimated.
    pub channels: Vec<ChannelAttrition>,
    /// Retries the estimate used (soft declines, channel and propensity < 1 logged).
    pub retries: usize,
    /// For a channel the log never randomized: the mean over the estimated
    /// channels (random-effects mean per bucket, then the line). A message the
    /// history cannot price is assumed to lose payers like an average one.
    pub other: Option<ChannelAttrition>,
    /// Nothing could be estimated and `other` is [`Attrition::prior`]'s line.
    pub prior: bool,
}

/// The prior's P(a message ends the dunning) with no message before, and the points it adds per
/// message already sent: recoup's standing assumption about messages (its simulator's default
/// world, `src/sim/config.rs`), used only where a history cannot price them.
pub const PRIOR_BASE: f64 = 0.01;
pub const PRIOR_PER_MESSAGE: f64 = 0.015;

/// One channel's attrition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelAttrition {
    pub channel: Channel,
    /// P(a message on this channel ends the dunning) when no message was sent before.
    pub base: f64,
    /// Added per message already sent in the dunning.
    pub per_message: f64,
    /// The raw estimate per bucket of messages already sent (0, 1, 2, 3, 4+).
    pub buckets: Vec<Bucket>,
}

/// The raw estimate for one (channel, messages already sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub messages_before: u32,
    /// Logged retries on this channel.
    pub retries: usize,
    /// Logged retries with no message, same bucket.
    pub retries_none: usize,
    /// 1 − W_c / W_none.
    pub rate: f64,
    /// Its standard error (delta method).
    pub se: f64,
    /// After shrinkage toward the other channels' (what the line is fitted to).
    pub pooled: f64,
    pub pooled_se: f64,
}

impl Attrition {
    /// P(a message on `channel` ends the dunning) after `messages_before`
    /// messages. 0 for `none` and for channels without an estimate.
    pub fn rate(&self, channel: Channel, messages_before: u32) -> f64 {
        if channel == Channel::None {
            return 0.0;
        }
        self.channels
            .iter()
            .find(|c| c.channel == channel)
            .or(self.other.as_ref())
            .map_or(0.0, |c| (c.base + c.per_message * messages_before as f64).clamp(0.0, 1.0))
    }

    /// Whether nothing is estimated (the prior, or an older model's empty estimate, prices
    /// what `other` says).
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Where the history cannot price messages (no randomized channels with `none` among
    /// them): every message is charged [`PRIOR_BASE`] + [`PRIOR_PER_MESSAGE`] per message
    /// already sent, rather than nothing. Free messages are the unsafe guess: a message can
    /// make the payer cancel, and a log without randomization cannot show how often.
    pub fn prior() -> Attrition {
        let line = ChannelAttrition { channel: Channel::None, base: PRIOR_BASE, per_message: PRIOR_PER_MESSAGE, buckets: Vec::new() };
        Attrition { channels: Vec::new(), retries: 0, other: Some(line), prior: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prior charges every message channel the same line, and no message nothing.
    #[test]
    fn the_prior_prices_every_message() {
        let prior = Attrition::prior();
        assert!(prior.prior && prior.is_empty());
        for ch in [Channel::Email, Channel::Sms, Channel::Push, Channel::InApp] {
            assert!((prior.rate(ch, 0) - PRIOR_BASE).abs() < 1e-12, "{ch:?}");
            assert!((prior.rate(ch, 2) - (PRIOR_BASE + 2.0 * PRIOR_PER_MESSAGE)).abs() < 1e-12, "{ch:?}");
        }
        assert_eq!(prior.rate(Channel::None, 3), 0.0);
        assert_eq!(Attrition::default().rate(Channel::Email, 0), 0.0, "an older model's empty estimate");
    }
}
