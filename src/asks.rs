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

use serde::{Deserialize, Serialize};
use strum::VariantArray;

use crate::attrition::Attrition;
use crate::declines::DeclineClass;
use crate::domain::{Attempt, Channel};
use crate::history::History;

/// Fewest first retries on a channel for its response to be estimated.
const MIN_ROWS: usize = 30;
/// Fewest first retries without a message (spontaneous updates are rare).
const MIN_NONE: usize = 10;

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
}

/// Estimate the response to asks from a history whose channels were randomized,
/// with the message attrition already estimated from it.
pub fn estimate(h: &History, attrition: &Attrition) -> AskResponse {
    // The first planned retry: delays (days) of first retries after soft declines.
    let days = |a: &Attempt, b: &Attempt| (b.attempted_at - a.attempted_at).num_minutes() as f64 / 1440.0;
    let randomized = |a: &Attempt| a.propensity.is_some_and(|p| p > 0.0 && p < 1.0) && a.channel.is_some();
    // A soft decline's first retry, when its channel was drawn at random.
    let soft_first = |p: &[Attempt]| {
        let soft = matches!(p[0].decline.map(|d| d.class()), Some(DeclineClass::SoftFunds | DeclineClass::SoftIssuer));
        p.get(1).filter(|a| soft && randomized(a)).map(|a| days(&p[0], a))
    };
    let mut soft: Vec<f64> = Vec::new();
    let mut end = None;
    for p in h.payments() {
        end = end.max(p.iter().map(|a| a.attempted_at).max());
        soft.extend(soft_first(p));
    }
    let (Some(end), false) = (end, soft.len() < MIN_ROWS) else { return AskResponse::default() };
    soft.sort_by(f64::total_cmp);
    let q = |f: f64| soft[((soft.len() - 1) as f64 * f).round() as usize];
    // The cluster around the median: some first retries come at a later planned
    // time (a rule forbade the first one), so not up to the 99th percentile.
    let (lo, mid) = (q(0.01), q(0.5));
    let hi = mid + (mid - lo);
    let at_first = |d: f64| (lo..=hi).contains(&d);
    // Σ propensity and rows per channel at that time (for π_c); first retries there per channel.
    let mut prop = [(0.0f64, 0usize); Channel::VARIANTS.len()];
    let mut count = [0usize; Channel::VARIANTS.len()];
    let (mut payments, mut delay_sum, mut delay_n) = (0usize, 0.0, 0usize);
    for p in h.payments() {
        // π_c: propensities of the logged first retries at the first planned time (soft declines).
        if soft_first(p).is_some_and(at_first) {
            let c = p[1].channel.expect("randomized") as usize;
            prop[c].0 += p[1].propensity.expect("randomized");
            prop[c].1 += 1;
        }
        // Needs-update payments that had their first planned retry inside the history.
        if p[0].decline.map(|d| d.class()) != Some(DeclineClass::NeedsUpdate) || p[0].attempted_at + chrono::Duration::minutes((hi * 1440.0) as i64) > end {
            continue;
        }
        payments += 1;
        if p.get(1).is_some_and(|a| randomized(a) && at_first(days(&p[0], a))) {
            count[p[1].channel.expect("randomized") as usize] += 1;
            delay_sum += days(&p[0], &p[1]);
            delay_n += 1;
        }
    }
    let mean_prop = |c: usize| if prop[c].1 == 0 { 0.0 } else { prop[c].0 / prop[c].1 as f64 };
    let total: f64 = (0..prop.len()).map(mean_prop).sum();
    let none = Channel::None as usize;
    if payments == 0 || total <= 0.0 || prop[none].1 == 0 || count[none] < MIN_NONE {
        return AskResponse::default();
    }
    let pi = |c: usize| mean_prop(c) / total;
    // Share of the payments updated by the first retry, per channel.
    let share = |c: usize| {
        let n = payments as f64 * pi(c);
        let q = count[c] as f64 / n;
        (q, (q * (1.0 - q) / n).sqrt())
    };
    let (s, s_se) = share(none);
    let mut channels = Vec::new();
    for &channel in Channel::VARIANTS.iter().filter(|c| **c != Channel::None) {
        let c = channel as usize;
        if count[c] < MIN_ROWS || prop[c].1 == 0 {
            continue;
        }
        let (qc, qc_se) = share(c);
        let keep = 1.0 - attrition.rate(channel, 0);
        let rate = ((qc / keep - s) / (1.0 - s)).clamp(0.0, 1.0);
        let se = ((qc_se / keep).powi(2) + s_se.powi(2)).sqrt() / (1.0 - s);
        channels.push(ChannelResponse { channel, rate, se, retries: count[c] });
    }
    let other = (!channels.is_empty()).then(|| {
        let w: Vec<f64> = channels.iter().map(|c| 1.0 / c.se.max(1e-6).powi(2)).collect();
        let sw: f64 = w.iter().sum();
        let rate = channels.iter().zip(&w).map(|(c, w)| w * c.rate).sum::<f64>() / sw;
        ChannelResponse { channel: Channel::None, rate, se: sw.sqrt().recip(), retries: channels.iter().map(|c| c.retries).sum() }
    });
    let mean_delay = if delay_n == 0 { 1.0 } else { delay_sum / delay_n as f64 };
    AskResponse {
        channels,
        spontaneous_per_day: -(1.0 - s.min(0.999)).ln() / mean_delay.max(1.0 / 24.0),
        payments,
        first_retry_days: (lo, hi),
        other,
    }
}
