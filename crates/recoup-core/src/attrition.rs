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
    /// The history could not measure attrition (no randomized channels with `none` among
    /// them): email and in-app are charged nothing, SMS and push are not used
    /// ([`Attrition::unpriced`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unmeasured: bool,
}

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

    /// Whether nothing is set at all (no estimate, and not marked unmeasured: what a model
    /// from before either wrote). Only such an attrition is left out of `model.json`.
    pub fn is_unset(&self) -> bool {
        self.channels.is_empty() && self.other.is_none() && !self.unmeasured
    }

    /// Whether the engine leaves `channel` unused: SMS and push, the channels that interrupt
    /// the payer, where the history could not measure attrition. Their lift is measured and
    /// their cost in payers lost is not, and a lift bought with cancellations the model cannot
    /// see is not taken on the model's word (in a world where an SMS cancels 3 % of payers and
    /// an email 0.5 %, SMS before retries cost the learned policy about 50 per payment:
    /// docs/issue-20-log.md, section 2).
    pub fn unpriced(&self, channel: Channel) -> bool {
        self.unmeasured && matches!(channel, Channel::Sms | Channel::Push)
    }

    /// Whether nothing is estimated.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// What a history that cannot measure attrition gets: email and in-app charged nothing
    /// (a prior charging them 1 % + 1.5 points per message already sent made the ask plan
    /// give up on expired cards a payer would have updated: docs/issue-20-log.md), SMS and push unused.
    pub fn unmeasured() -> Attrition {
        Attrition { unmeasured: true, ..Attrition::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    /// Unmeasured attrition leaves SMS and push unused, charges the rest nothing, and is
    /// written with the model and read back.
    #[test]
    fn unmeasured_attrition_leaves_the_intrusive_channels_unused() {
        let a = Attrition::unmeasured();
        assert!(a.is_empty() && !a.is_unset());
        for ch in Channel::VARIANTS {
            assert_eq!(a.rate(*ch, 2), 0.0, "{ch:?}");
        }
        let unused: Vec<Channel> = Channel::VARIANTS.iter().copied().filter(|&c| a.unpriced(c)).collect();
        assert_eq!(unused, [Channel::Sms, Channel::Push]);
        assert!(!Attrition::default().unpriced(Channel::Sms), "a model from before it uses every channel");
        let back: Attrition = serde_json::from_str(&serde_json::to_string(&a).expect("writes")).expect("reads");
        assert_eq!(back, a);
        assert!(Attrition::default().is_unset());
        assert!(!serde_json::to_string(&Attrition::default()).expect("writes").contains("unmeasured"));
    }
}
