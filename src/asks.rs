//! Estimating the ask response from a history (learning side): which estimator the
//! log supports, its assumption checks and its fallback to the prior. What the
//! numbers mean, and the estimators' assumptions, are documented with the type in
//! [`recoup_core::asks`] (re-exported here).
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

pub use recoup_core::asks::*;

use chrono::{DateTime, Utc};
use strum::VariantArray;

use crate::attempt::Attempt;
use crate::attrition::Attrition;
use crate::declines::DeclineClass;
use crate::domain::Channel;
use crate::history::History;

/// Fewest first retries on a channel for its response to be estimated.
const MIN_ROWS: usize = 30;
/// Fewest flagged intervals (and of them, fewest ending without an update) for the update-flag estimator.
const MIN_INTERVALS: usize = 50;
const MIN_NOT_UPDATED: usize = 10;
/// Fewest first retries without a message (spontaneous updates are rare).
const MIN_NONE: usize = 10;

/// Estimate the response to asks from a history, choosing the estimator whose
/// assumption the log supports (see the module docs); never fails: where the
/// log cannot say, the prior, with the reason in `notes`.
pub fn estimate(h: &History, attrition: &Attrition) -> AskResponse {
    estimate_from(&AskInputs::of_history(h, &h.payer_places()), attrition)
}

/// What the ask estimators read from a history: the needs-update payments' update
/// intervals, and the first two attempts of every soft-declined or needs-update
/// payment. A part of a history (a shard of payers) gives its own; merged, they
/// give the whole history's estimate exactly (see [`AskInputs::merge`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AskInputs {
    pub intervals: Vec<Interval>,
    pub firsts: Vec<FirstAttempts>,
    /// The history's last attempt.
    pub end: Option<DateTime<Utc>>,
    /// Needs-update payments left out of the intervals: retried because the payer updated.
    pub update_triggered: usize,
}

/// A soft-declined or needs-update payment's first decline and its next attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirstAttempts {
    /// The payer's [`crate::history::payer_place`] (orders the records canonically).
    pub payer: u64,
    pub class: DeclineClass,
    pub at: DateTime<Utc>,
    pub next: Option<NextAttempt>,
}

/// A payment's next attempt after its first decline: whole minutes after it, its channel and propensity.
pub type NextAttempt = (i64, Option<Channel>, Option<f64>);

/// [`FirstAttempts`]' total order (the propensity by its bits).
type FirstKey = (u64, DateTime<Utc>, DeclineClass, Option<(i64, Option<Channel>, Option<u64>)>);

impl FirstAttempts {
    fn key(&self) -> FirstKey {
        (self.payer, self.at, self.class, self.next.map(|(m, c, p)| (m, c, p.map(f64::to_bits))))
    }
}

impl AskInputs {
    /// Read a whole history; `places` are its [`History::payer_places`].
    pub fn of_history(h: &History, places: &[u64]) -> AskInputs {
        let mut out = AskInputs::default();
        for p in h.payments() {
            out.add_payment(places[p[0].customer.0 as usize], p);
        }
        out.finish();
        out
    }

    /// Read one payment's attempts (in attempt order) of the payer at `payer`.
    pub fn add_payment(&mut self, payer: u64, p: &[Attempt]) {
        self.end = self.end.max(p.iter().map(|a| a.attempted_at).max());
        self.intervals.extend(payment_intervals(p));
        let needs_update = p[0].decline.is_some_and(|d| d.class() == DeclineClass::NeedsUpdate);
        self.update_triggered += usize::from(needs_update && p.iter().any(|a| a.update_triggered));
        let class = p[0].decline.map(|d| d.class());
        if let Some(class @ (DeclineClass::SoftFunds | DeclineClass::SoftIssuer | DeclineClass::NeedsUpdate)) = class {
            let next = p.get(1).map(|a| ((a.attempted_at - p[0].attempted_at).num_minutes(), a.channel, a.propensity));
            self.firsts.push(FirstAttempts { payer, class, at: p[0].attempted_at, next });
        }
    }

    /// Put the records in canonical order (sums over them then come out the same bit for
    /// bit however the history was split).
    pub fn finish(&mut self) {
        self.firsts.sort_unstable_by_key(FirstAttempts::key);
        self.intervals.sort_unstable_by_key(|i| (i.days.to_bits(), i.channel, i.prev, i.updated));
    }

    /// Add another part's records (then [`AskInputs::finish`]).
    pub fn merge(&mut self, other: AskInputs) {
        self.intervals.extend(other.intervals);
        self.firsts.extend(other.firsts);
        self.end = self.end.max(other.end);
        self.update_triggered += other.update_triggered;
    }
}

/// [`estimate`] from the records of a history ([`AskInputs`], finished).
pub fn estimate_from(inputs: &AskInputs, attrition: &Attrition) -> AskResponse {
    let intervals = &inputs.intervals;
    let flagged = intervals.len();
    let not_updated = intervals.iter().filter(|i| !i.updated).count();
    let mut notes = vec![format!(
        "needs-update payments' retries: {flagged} intervals with an update flag, {not_updated} of them ending without an update"
    )];
    if inputs.update_triggered > 0 {
        notes.push(format!(
            "{} needs-update payments left out of the intervals: the platform retried them because the payer updated (update_triggered), so their intervals end with the update, not on a schedule",
            inputs.update_triggered
        ));
    }
    let out = if flagged >= MIN_INTERVALS && not_updated >= MIN_NOT_UPDATED {
        notes.push(
            "the log retries needs-update payments whether or not the payer updated: time-to-update model on the update flags".into(),
        );
        from_update_flags(intervals, &mut notes).ok_or_else(|| "the update flags hold too few intervals per message channel".to_string())
    } else {
        notes.push("no update flags showing retries before an update: share updated by the first retry, per randomized channel".into());
        match selective_retries(inputs, attrition) {
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub days: f64,
    /// The message sent in it (since the attempt before).
    pub channel: Channel,
    /// The message sent in the interval before it (`none` for the first after the failure).
    pub prev: Channel,
    pub updated: bool,
}

/// A needs-update payment's intervals whose later attempt carries an update flag and a channel.
/// None for a payment the platform retried because the payer updated (`update_triggered`):
/// its intervals end when the payer updated, and one that never updated has no interval at
/// all, so read as scheduled intervals they say every payer updates, and soon (a closed loop
/// on recoup's own waits measured 18.9 % spontaneous updates a day against the log's 2.2 %).
/// Were such a payment also retried on a schedule before its update, leaving it out leans the
/// estimate low, toward fewer asks.
fn payment_intervals(p: &[Attempt]) -> Vec<Interval> {
    let mut out = Vec::new();
    if p[0].decline.map(|d| d.class()) != Some(DeclineClass::NeedsUpdate) || p.iter().any(|a| a.update_triggered) {
        return out;
    }
    let mut prev = Channel::None;
    for w in p.windows(2) {
        let (Some(updated), Some(channel)) = (w[1].payment_method_updated, w[1].channel) else { break };
        let days = ((w[1].attempted_at - w[0].attempted_at).num_minutes() as f64 / 1440.0).max(1.0 / 24.0);
        out.push(Interval { days, channel, prev, updated });
        prev = channel;
        if updated {
            break;
        }
    }
    out
}

/// The intervals aggregated: (channel, the channel before, days, updated, not updated).
type Cell = (usize, usize, f64, f64, f64);

/// Negative log-likelihood of the intervals under (λ per day, ρ per channel, φ): a message
/// on c gets an update with probability ρ_c, a share φ of it before the next attempt and the
/// rest in the interval after; with none before, an interval of d days that follows a
/// message on p ends without an update with probability
/// (1 − φ·ρ_c) · (1 − ρ_p) / (1 − φ·ρ_p) · exp(−λ·d).
fn neg_log_lik(cells: &[Cell], lambda: f64, rho: &[f64], phi: f64) -> f64 {
    cells
        .iter()
        .map(|&(c, p, days, n_up, n_not)| {
            let spill = (1.0 - rho[p]) / (1.0 - phi * rho[p]).max(1e-12);
            let stay = (1.0 - phi * rho[c]) * spill * (-lambda * days).exp();
            let up = (1.0 - stay).max(1e-300);
            -(n_up * up.ln() + n_not * stay.max(1e-300).ln())
        })
        .sum()
}

/// The intervals by (channel, channel before, whole hours): the likelihood depends on nothing else.
fn cells_of(intervals: &[Interval]) -> Vec<Cell> {
    let mut cells: std::collections::BTreeMap<(usize, usize, i64), (f64, f64)> = Default::default();
    for i in intervals {
        let e = cells.entry((i.channel as usize, i.prev as usize, (i.days * 24.0).round() as i64)).or_default();
        *(if i.updated { &mut e.0 } else { &mut e.1 }) += 1.0;
    }
    cells.into_iter().map(|((c, p, h), (u, n))| (c, p, h as f64 / 24.0, u, n)).collect()
}

/// The shares φ of a message's response before the next attempt that the fit compares.
const SHARES: [f64; 11] = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0];
/// How much more likely (2·Δ log-likelihood, χ² with 1 degree of freedom at 95 %) a share
/// below 1 must make the intervals before it replaces "all of it before the next attempt".
const SHARE_EVIDENCE: f64 = 3.84;

/// The time-to-update model at one share φ: λ, ρ per channel, and the negative log-likelihood.
struct Fit {
    phi: f64,
    lambda: f64,
    rho: Vec<f64>,
    nll: f64,
}

/// λ and ρ by coordinate descent at a fixed φ.
fn fit_at(cells: &[Cell], estimable: &[usize], phi: f64) -> Fit {
    let (mut lambda, mut rho) = (0.01, vec![0.0; Channel::VARIANTS.len()]);
    let mut nll = f64::INFINITY;
    for _ in 0..40 {
        lambda = golden(0.0, 2.0, |l| neg_log_lik(cells, l, &rho, phi));
        for &c in estimable {
            let mut r = rho.clone();
            rho[c] = golden(0.0, 0.999, |v| {
                r[c] = v;
                neg_log_lik(cells, lambda, &r, phi)
            });
        }
        let now = neg_log_lik(cells, lambda, &rho, phi);
        let done = nll - now < 1e-9 * now.abs().max(1.0);
        nll = now;
        if done {
            break;
        }
    }
    Fit { phi, lambda, rho, nll }
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
    let cells = cells_of(intervals);
    let mut per_channel = vec![0usize; k];
    for i in intervals {
        per_channel[i.channel as usize] += 1;
    }
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
    // When in the interval a message went out, the log does not say (contract v1 records its
    // channel): a response may land after the next attempt. φ = 1 (all of it before) unless
    // a smaller share fits the intervals clearly better.
    let mut fits: Vec<Fit> = SHARES.iter().map(|&phi| fit_at(&cells, &estimable, phi)).collect();
    let best = (0..fits.len()).min_by(|&a, &b| fits[a].nll.total_cmp(&fits[b].nll)).unwrap_or(0);
    let evidence = 2.0 * (fits[0].nll - fits[best].nll);
    let chosen = if evidence > SHARE_EVIDENCE { best } else { 0 };
    let Fit { phi, lambda, rho, .. } = fits.swap_remove(chosen);
    notes.push(if chosen == 0 {
        format!(
            "a message's response is read as landing before the next attempt (a later share fits no better: 2·Δ log-likelihood {evidence:.1}, at most {SHARE_EVIDENCE})"
        )
    } else {
        format!(
            "{:.0} % of a message's response lands before the next attempt, the rest in the interval after (the log does not say when in an interval a message went out; 2·Δ log-likelihood {evidence:.1} against all of it before)",
            100.0 * phi
        )
    });
    // Standard errors from the likelihood's curvature in each parameter (diagonal).
    let curvature = |f: &dyn Fn(f64) -> f64, x: f64, h: f64| (f(x + h) - 2.0 * f(x) + f(x - h)) / (h * h);
    let mut channels = Vec::new();
    for &c in &estimable {
        let h = 1e-4;
        let x = rho[c].clamp(h, 0.999 - h);
        let f = |v: f64| {
            let mut r = rho.clone();
            r[c] = v;
            neg_log_lik(&cells, lambda, &r, phi)
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
        own_interval_share: Some(phi),
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
fn selective_retries(inputs: &AskInputs, attrition: &Attrition) -> Result<AskResponse, String> {
    let days = |minutes: i64| minutes as f64 / 1440.0;
    let randomized = |channel: Option<Channel>, p: Option<f64>| p.is_some_and(|p| p > 0.0 && p < 1.0) && channel.is_some();
    let is_soft = |f: &FirstAttempts| matches!(f.class, DeclineClass::SoftFunds | DeclineClass::SoftIssuer);
    // A soft decline's first retry (days after the failure), when its channel was drawn at random.
    let soft_first = |f: &FirstAttempts| f.next.filter(|&(_, c, p)| is_soft(f) && randomized(c, p)).map(|(m, _, _)| days(m));
    let mut soft: Vec<f64> = inputs.firsts.iter().filter_map(soft_first).collect();
    let (Some(end), false) = (inputs.end, soft.len() < MIN_ROWS) else {
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
    let inside = |f: &FirstAttempts| f.at + chrono::Duration::minutes((hi * 1440.0) as i64) <= end;
    for f in &inputs.firsts {
        if is_soft(f) && inside(f) {
            soft_payments += 1;
            soft_retried += f.next.is_some_and(|(m, _, _)| at_first(days(m))) as usize;
        }
        // π_c: propensities of the logged first retries at the first planned time (soft declines).
        if soft_first(f).is_some_and(at_first) {
            let (_, channel, p) = f.next.unwrap_or_default();
            let c = channel.unwrap_or(Channel::None) as usize;
            prop[c].0 += p.unwrap_or(0.0);
            prop[c].1 += 1;
        }
        // Needs-update payments that had their first planned retry inside the history.
        if f.class != DeclineClass::NeedsUpdate || !inside(f) {
            continue;
        }
        payments += 1;
        if let Some((m, channel, _)) = f.next.filter(|&(m, c, p)| randomized(c, p) && at_first(days(m))) {
            count[channel.unwrap_or(Channel::None) as usize] += 1;
            delay_sum += days(m);
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
        own_interval_share: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Needs-update payments of a log that sends a random message before each of four
    /// retries 1–6 days apart; a message gets an update with probability ρ (email 0.2,
    /// SMS 0.3), a share φ of it before the next attempt and the rest after it; λ 3 % a day.
    fn lagged_intervals(phi: f64, payments: usize) -> Vec<Interval> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let rho = |c: Channel| match c {
            Channel::Email => 0.2,
            Channel::Sms => 0.3,
            _ => 0.0,
        };
        let mut out = Vec::new();
        for _ in 0..payments {
            let (mut prev, mut spill) = (Channel::None, false);
            for _ in 0..4 {
                let days: f64 = rng.random_range(1.0..6.0);
                let r: f64 = rng.random();
                let channel = if r < 0.4 {
                    Channel::None
                } else if r < 0.85 {
                    Channel::Email
                } else {
                    Channel::Sms
                };
                let answers = rng.random::<f64>() < rho(channel);
                let now = answers && rng.random::<f64>() < phi;
                let updated = spill || now || rng.random::<f64>() < 1.0 - (-0.03 * days).exp();
                out.push(Interval { days, channel, prev, updated });
                if updated {
                    break;
                }
                (prev, spill) = (channel, answers && !now);
            }
        }
        out
    }

    /// Where most responses land after the next attempt, the fit finds the share and the
    /// responses (the same-interval reading halves the email's and doubles λ); where all land
    /// before it, it keeps φ = 1.
    #[test]
    fn a_response_that_lands_after_the_next_attempt_is_found() {
        for (phi, share) in [(0.2, Some(0.2)), (1.0, Some(1.0))] {
            let mut notes = Vec::new();
            let r = from_update_flags(&lagged_intervals(phi, 20_000), &mut notes).expect("estimable");
            assert!(r.own_interval_share.is_some_and(|s| (s - share.unwrap()).abs() <= 0.1), "φ {phi}: {notes:?}");
            for (ch, truth) in [(Channel::Email, 0.2), (Channel::Sms, 0.3)] {
                let c = r.channels.iter().find(|c| c.channel == ch).expect("estimated");
                assert!((c.rate - truth).abs() < 3.5 * c.se + 0.01, "φ {phi}, {ch:?}: {} ± {}, {notes:?}", c.rate, c.se);
            }
            assert!((r.spontaneous_per_day - 0.03).abs() < 0.006, "φ {phi}: λ {}", r.spontaneous_per_day);
        }
        // The same-interval reading of the lagged log: what the fit chose not to use.
        let cells = cells_of(&lagged_intervals(0.2, 20_000));
        let estimable = [Channel::Email as usize, Channel::Sms as usize];
        let Fit { lambda, rho, .. } = fit_at(&cells, &estimable, 1.0);
        assert!(rho[Channel::Email as usize] < 0.12 && lambda > 0.045, "ρ_email {:?}, λ {lambda}", rho);
    }
}
