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

use serde::{Deserialize, Serialize};
use strum::VariantArray;

use crate::attrition::Attrition;
use crate::declines::DeclineClass;
use crate::domain::{Attempt, Channel};
use crate::history::History;

/// Fewest first retries on a channel for its response to be estimated.
const MIN_ROWS: usize = 30;
/// Fewest flagged intervals (and of them, fewest ending without an update) for the update-flag estimator.
const MIN_INTERVALS: usize = 50;
const MIN_NOT_UPDATED: usize = 10;
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
    /// Which estimator produced this.
    pub method: AskMethod,
    /// The assumption checks and fallbacks, in words (shown on the model card).
    pub notes: Vec<String>,
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
    fn check(&self) -> Result<(), String> {
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

/// Estimate the response to asks from a history, choosing the estimator whose
/// assumption the log supports (see the module docs); never fails: where the
/// log cannot say, the prior, with the reason in `notes`.
pub fn estimate(h: &History, attrition: &Attrition) -> AskResponse {
    let intervals = update_intervals(h);
    let flagged = intervals.len();
    let not_updated = intervals.iter().filter(|i| !i.updated).count();
    let mut notes = vec![format!(
        "needs-update payments' retries: {flagged} intervals with an update flag, {not_updated} of them ending without an update"
    )];
    let out = if flagged >= MIN_INTERVALS && not_updated >= MIN_NOT_UPDATED {
        notes.push(
            "the log retries needs-update payments whether or not the payer updated: time-to-update model on the update flags".into(),
        );
        from_update_flags(&intervals, &mut notes).ok_or_else(|| "the update flags hold too few intervals per message channel".to_string())
    } else {
        notes.push("no update flags showing retries before an update: share updated by the first retry, per randomized channel".into());
        match selective_retries(h, attrition) {
            Ok(r) if !r.is_empty() => Ok(r),
            Ok(_) => Err("no message channel has enough first retries".to_string()),
            Err(why) => Err(why),
        }
    };
    match out {
        Err(why) => {
            let mut prior = AskResponse::prior(why);
            notes.append(&mut prior.notes);
            AskResponse { notes, ..prior }
        }
        Ok(r) => match r.check() {
            Ok(()) => AskResponse { notes, ..r },
            Err(why) => {
                let mut prior = AskResponse::prior(format!("the estimate failed its check ({why})"));
                notes.append(&mut prior.notes);
                AskResponse { notes, ..prior }
            }
        },
    }
}

/// One interval between consecutive attempts of a needs-update payment before its first update.
#[derive(Debug, Clone, Copy)]
struct Interval {
    days: f64,
    channel: Channel,
    updated: bool,
}

/// The intervals of needs-update payments whose later attempt carries an update flag and a channel.
fn update_intervals(h: &History) -> Vec<Interval> {
    let mut out = Vec::new();
    for p in h.payments() {
        if p[0].decline.map(|d| d.class()) != Some(DeclineClass::NeedsUpdate) {
            continue;
        }
        for w in p.windows(2) {
            let (Some(updated), Some(channel)) = (w[1].payment_method_updated, w[1].channel) else { break };
            let days = ((w[1].attempted_at - w[0].attempted_at).num_minutes() as f64 / 1440.0).max(1.0 / 24.0);
            out.push(Interval { days, channel, updated });
            if updated {
                break;
            }
        }
    }
    out
}

/// Negative log-likelihood of the intervals under (λ per day, ρ per channel).
fn neg_log_lik(cells: &[(usize, f64, f64, f64)], lambda: f64, rho: &[f64]) -> f64 {
    cells
        .iter()
        .map(|&(c, days, n_up, n_not)| {
            let stay = (1.0 - rho[c]) * (-lambda * days).exp();
            let up = (1.0 - stay).max(1e-300);
            -(n_up * up.ln() + n_not * stay.max(1e-300).ln())
        })
        .sum()
}

/// Minimize a convex-enough 1-D function on [lo, hi] by golden-section search.
fn golden(mut lo: f64, mut hi: f64, mut f: impl FnMut(f64) -> f64) -> f64 {
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..60 {
        let (a, b) = (hi - g * (hi - lo), lo + g * (hi - lo));
        if f(a) < f(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    (lo + hi) / 2.0
}

/// The time-to-update model's maximum-likelihood fit, with standard errors from
/// the curvature of the likelihood; `None` when no message channel has enough intervals.
fn from_update_flags(intervals: &[Interval], notes: &mut Vec<String>) -> Option<AskResponse> {
    let k = Channel::VARIANTS.len();
    // Aggregate by (channel, whole hours): the likelihood depends on nothing else.
    let mut cells_map: std::collections::BTreeMap<(usize, i64), (f64, f64)> = Default::default();
    let mut per_channel = vec![0usize; k];
    for i in intervals {
        let hours = (i.days * 24.0).round() as i64;
        let e = cells_map.entry((i.channel as usize, hours)).or_default();
        if i.updated {
            e.0 += 1.0;
        } else {
            e.1 += 1.0;
        }
        per_channel[i.channel as usize] += 1;
    }
    let cells: Vec<(usize, f64, f64, f64)> = cells_map.into_iter().map(|((c, h), (u, n))| (c, h as f64 / 24.0, u, n)).collect();
    let none = Channel::None as usize;
    let estimable: Vec<usize> = (0..k).filter(|&c| c != none && per_channel[c] >= MIN_ROWS).collect();
    if estimable.is_empty() {
        notes.push(format!("no message channel has {MIN_ROWS} intervals"));
        return None;
    }
    if per_channel[none] < MIN_NONE {
        notes.push(format!(
            "only {} intervals without a message: updates without an ask and the ask's effect are told apart by the intervals' lengths alone",
            per_channel[none]
        ));
    }
    let (mut lambda, mut rho) = (0.01, vec![0.0; k]);
    for _ in 0..40 {
        lambda = golden(0.0, 2.0, |l| neg_log_lik(&cells, l, &rho));
        for &c in &estimable {
            let mut r = rho.clone();
            rho[c] = golden(0.0, 0.999, |v| {
                r[c] = v;
                neg_log_lik(&cells, lambda, &r)
            });
        }
    }
    // Standard errors from the likelihood's curvature in each parameter (diagonal).
    let curvature = |f: &dyn Fn(f64) -> f64, x: f64, h: f64| (f(x + h) - 2.0 * f(x) + f(x - h)) / (h * h);
    let mut channels = Vec::new();
    for &c in &estimable {
        let h = 1e-4;
        let x = rho[c].clamp(h, 0.999 - h);
        let f = |v: f64| {
            let mut r = rho.clone();
            r[c] = v;
            neg_log_lik(&cells, lambda, &r)
        };
        let info = curvature(&f, x, h);
        let n = per_channel[c] as f64;
        let se = if info > 0.0 && info.is_finite() { info.sqrt().recip() } else { (rho[c].max(1.0 / n) * (1.0 - rho[c]) / n).sqrt() };
        channels.push(ChannelResponse { channel: Channel::VARIANTS[c], rate: rho[c], se, retries: per_channel[c] });
    }
    let other = pooled(&channels);
    Some(AskResponse {
        channels,
        spontaneous_per_day: lambda.min(1.0),
        payments: intervals.len(),
        first_retry_days: (0.0, 0.0),
        other,
        method: AskMethod::UpdateFlags,
        notes: Vec::new(),
    })
}

/// For a channel the log never randomized: the channels' precision-weighted mean.
fn pooled(channels: &[ChannelResponse]) -> Option<ChannelResponse> {
    (!channels.is_empty()).then(|| {
        let w: Vec<f64> = channels.iter().map(|c| 1.0 / c.se.max(1e-6).powi(2)).collect();
        let sw: f64 = w.iter().sum();
        let rate = channels.iter().zip(&w).map(|(c, w)| w * c.rate).sum::<f64>() / sw;
        ChannelResponse { channel: Channel::None, rate, se: sw.sqrt().recip(), retries: channels.iter().map(|c| c.retries).sum() }
    })
}

/// The counting estimate (module docs): for a history whose channels were
/// randomized and whose needs-update retries follow updates, with the message
/// attrition already estimated from it. Empty when the log is too thin.
fn selective_retries(h: &History, attrition: &Attrition) -> Result<AskResponse, String> {
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
    let (Some(end), false) = (end, soft.len() < MIN_ROWS) else {
        return Err(format!("fewer than {MIN_ROWS} soft declines' first retries with a randomized channel (propensity < 1)"));
    };
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
    // Soft-declined payments whose first planned retry lies inside the history, and
    // how many of them the log retried then: the assumption check's yardstick.
    let (mut soft_payments, mut soft_retried) = (0usize, 0usize);
    for p in h.payments() {
        let is_soft = matches!(p[0].decline.map(|d| d.class()), Some(DeclineClass::SoftFunds | DeclineClass::SoftIssuer));
        if is_soft && p[0].attempted_at + chrono::Duration::minutes((hi * 1440.0) as i64) <= end {
            soft_payments += 1;
            soft_retried += p.get(1).is_some_and(|a| at_first(days(&p[0], a))) as usize;
        }
        // π_c: propensities of the logged first retries at the first planned time (soft declines).
        if soft_first(p).is_some_and(at_first) {
            let c = p[1].channel.unwrap_or(Channel::None) as usize;
            prop[c].0 += p[1].propensity.unwrap_or(0.0);
            prop[c].1 += 1;
        }
        // Needs-update payments that had their first planned retry inside the history.
        if p[0].decline.map(|d| d.class()) != Some(DeclineClass::NeedsUpdate)
            || p[0].attempted_at + chrono::Duration::minutes((hi * 1440.0) as i64) > end
        {
            continue;
        }
        payments += 1;
        if p.get(1).is_some_and(|a| randomized(a) && at_first(days(&p[0], a))) {
            count[p[1].channel.unwrap_or(Channel::None) as usize] += 1;
            delay_sum += days(&p[0], &p[1]);
            delay_n += 1;
        }
    }
    let mean_prop = |c: usize| if prop[c].1 == 0 { 0.0 } else { prop[c].0 / prop[c].1 as f64 };
    let total: f64 = (0..prop.len()).map(mean_prop).sum();
    let none = Channel::None as usize;
    if payments == 0 || total <= 0.0 || prop[none].1 == 0 || count[none] < MIN_NONE {
        return Err(format!(
            "too few needs-update payments retried after a randomized channel, `none` among them ({payments} payments, {} first retries without a message)",
            count[none]
        ));
    }
    // The assumption: a needs-update payment's first retry happens only after an update,
    // so it is retried at the first planned time far less often than a soft decline is.
    let share_needs_update = count.iter().sum::<usize>() as f64 / payments as f64;
    let share_soft = soft_retried as f64 / soft_payments.max(1) as f64;
    if share_needs_update > 0.8 * share_soft {
        return Err(format!(
            "the log retries needs-update payments at its first retry time about as often as soft declines ({:.0} % vs {:.0} %): it does not wait for an update, and without update flags the response cannot be told apart",
            100.0 * share_needs_update,
            100.0 * share_soft
        ));
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
    let other = pooled(&channels);
    let mean_delay = if delay_n == 0 { 1.0 } else { delay_sum / delay_n as f64 };
    Ok(AskResponse {
        channels,
        spontaneous_per_day: -(1.0 - s.min(0.999)).ln() / mean_delay.max(1.0 / 24.0),
        payments,
        first_retry_days: (lo, hi),
        other,
        method: AskMethod::SelectiveRetries,
        notes: Vec::new(),
    })
}
