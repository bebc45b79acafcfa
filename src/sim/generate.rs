//! Writing history from the world: each payer's billing cycles, the failures,
//! and the logging policy's retries (a fixed schedule randomized with known
//! probabilities, so every row carries its `propensity`).
//!
//! Produces typed rows and their polars frame; the caller (CLI) writes them out.
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

use chrono::{DateTime, Duration, Months, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::world::{Action, Closed, Episode, EpisodeState, StepResult, World};
use crate::attempt::Attempt;
use crate::declines::DeclineClass;
use crate::domain::{BillingInterval, Channel, CustomerIx, Money, Outcome, PaymentIx, SourceRow};
use crate::history::History;
use crate::rules::{check_retry, Proposal};
use polars::prelude::DataFrame;

/// The logging policy's choice for one retry, with its propensity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoggedAction {
    /// The action.
    pub action: Action,
    /// Probability with which the policy chose this time and channel.
    pub propensity: f64,
}

/// The default logging policy: retry on fixed days after the failure, each
/// moved by a uniformly drawn number of hours, with a message drawn per retry.
/// Technical declines get a first retry within hours.
pub fn logging_schedule(world: &World, st: &EpisodeState, rng: &mut ChaCha8Rng) -> Vec<LoggedAction> {
    let lp = &world.cfg.logging;
    let failed = st.episode.failed_at;
    let mut out = Vec::new();
    let draw_channel = |rng: &mut ChaCha8Rng| {
        let u: f64 = rng.random();
        let mut acc = 0.0;
        for &(c, p) in &lp.channel_probabilities {
            acc += p;
            if u < acc {
                return (c, p);
            }
        }
        *lp.channel_probabilities.last().expect("checked non-empty")
    };
    if st.episode.decline.class() == DeclineClass::Technical && lp.technical_first_retry_hours >= 1 {
        let h = rng.random_range(1..=lp.technical_first_retry_hours);
        let (channel, pc) = draw_channel(rng);
        out.push(LoggedAction {
            action: Action { retry_at: failed + Duration::hours(h), channel },
            propensity: pc / lp.technical_first_retry_hours as f64,
        });
    }
    let slots = (2 * lp.jitter_hours + 1) as f64;
    for &day in &lp.retry_days {
        let j = rng.random_range(-lp.jitter_hours..=lp.jitter_hours);
        let (channel, pc) = draw_channel(rng);
        out.push(LoggedAction {
            action: Action { retry_at: failed + Duration::days(day) + Duration::hours(j), channel },
            propensity: pc / slots,
        });
    }
    out
}

/// The next scheduled charge after one at `t`.
pub(crate) fn next_charge(interval: BillingInterval, t: DateTime<Utc>) -> DateTime<Utc> {
    match interval {
        BillingInterval::Week => t + Duration::days(7),
        BillingInterval::Month => t.checked_add_months(Months::new(1)).unwrap_or(t + Duration::days(30)),
        BillingInterval::Year => t.checked_add_months(Months::new(12)).unwrap_or(t + Duration::days(365)),
    }
}

/// Simulate one payer's billing over the world's period. Returns the rows and
/// whether this payer's rows leave `timezone` empty (for the loader to derive).
pub fn payer_rows(world: &World, payer_id: u32) -> (Vec<Attempt>, bool) {
    let payer = world.payer(payer_id);
    let cfg = &world.cfg;
    let cycles = match payer.interval {
        BillingInterval::Week => (world.end - world.start).num_days() / 7,
        BillingInterval::Month => (world.end - world.start).num_days() / 28,
        BillingInterval::Year => 2,
    };
    let mut rows = Vec::with_capacity(cycles as usize + 8);
    let mut t = payer.first_charge;
    let mut cycle = 0u32;
    let mut rng = world.payer_rng(payer_id);
    let mut charges = world.charges_rng(payer_id);
    let churn_per_cycle = match payer.interval {
        BillingInterval::Week => cfg.monthly_churn / 4.3,
        BillingInterval::Month => cfg.monthly_churn,
        BillingInterval::Year => (cfg.monthly_churn * 12.0).min(1.0),
    };
    let tz_missing = rng.random::<f64>() < cfg.failures.missing_timezone_share;
    while t < world.end {
        if cycle > 0 && rng.random::<f64>() < churn_per_cycle {
            break;
        }
        let tenure = (t.date_naive() - payer.first_payment).num_days().max(0) as u32;
        let base = Attempt {
            attempt_ix: 0,
            payment: PaymentIx(cycle),
            customer: CustomerIx(payer_id),
            attempted_at: t,
            attempt_number: 0,
            amount: Money { minor: payer.price_minor, currency: payer.currency },
            method: payer.method,
            card_brand: payer.card_brand,
            card_funding: payer.card_funding,
            country: payer.country,
            timezone: payer.timezone,
            outcome: Outcome::Succeeded,
            decline: None,
            network_code: None,
            advice_code: None,
            channel: Some(Channel::None),
            payment_method_updated: Some(false),
            update_triggered: false,
            card: None,
            billing_interval: Some(payer.interval),
            tenure_days: Some(tenure),
            propensity: Some(1.0),
            source: SourceRow::default(),
        };
        let Some(decline) = world.charge_outcome(&payer, &mut charges, t) else {
            rows.push(base);
            t = next_charge(payer.interval, t);
            cycle += 1;
            continue;
        };
        let (net, adv) = world.codes_for(&payer, decline, t, rng.random(), rng.random());
        let episode = Episode {
            cycle,
            amount_minor: payer.price_minor,
            failed_at: t,
            decline,
            window_end: t + Duration::days(cfg.dunning_window_days),
        };
        let mut st = world.start_episode(payer.clone(), episode, net, adv);
        let mut policy_rng = world.logging_rng(payer_id, cycle);
        let propensities = log_episode(world, &mut st, &mut policy_rng);
        for (k, a) in st.attempts.iter().enumerate() {
            let raw_only =
                a.past.decline.is_some() && a.past.network_code.is_some() && rng.random::<f64>() < cfg.failures.raw_code_only_share;
            rows.push(Attempt {
                attempted_at: a.past.at,
                attempt_number: a.past.attempt_number,
                outcome: a.past.outcome,
                decline: if raw_only { None } else { a.past.decline },
                network_code: a.past.network_code,
                advice_code: a.past.advice_code,
                channel: Some(a.channel),
                payment_method_updated: Some(a.past.payment_method_updated),
                card: None,
                propensity: cfg.logging.log_propensities.then(|| propensities[k]),
                ..base.clone()
            });
        }
        let recovered = matches!(st.closed, Some(Closed::Recovered(_)));
        if !recovered {
            break; // involuntary (or voluntary, during dunning) churn: the subscription ends
        }
        t = next_charge(payer.interval, t);
        cycle += 1;
    }
    (rows, tz_missing)
}

/// Run the world's logging policy on one failed payment (`st`): its planned retries,
/// each message first, each retry the network rules allow (a careless policy also
/// retries needs-update payments), until it closes. The propensity of every attempt,
/// the original charge's (1) first.
fn log_episode(world: &World, st: &mut EpisodeState, policy_rng: &mut ChaCha8Rng) -> Vec<f64> {
    let plan = logging_schedule(world, st, policy_rng);
    let mut propensities = vec![1.0];
    for logged in plan {
        if st.closed.is_some() {
            break;
        }
        if logged.action.retry_at <= st.last().past.at {
            continue;
        }
        // Message first: the payer may update the card before the rules are checked.
        if world.approach(st, logged.action).is_some() {
            break;
        }
        let verdict = check_retry(
            st.facts(),
            &st.past(),
            Proposal { at: logged.action.retry_at, payment_method_updated: st.updated_since_last(logged.action.retry_at) },
            &world.rules,
        );
        // A careless policy retries a needs-update payment anyway (the world charges the violation).
        let careless = world.cfg.logging.retry_needs_update == super::config::NeedsUpdateRetries::Regardless
            && verdict.violations.iter().all(|v| matches!(v, crate::rules::RuleViolation::NeedsPaymentMethodUpdate { .. }));
        if !verdict.is_allowed() && !careless {
            // Waiting may lift a needs-update or time rule; anything else permanent ends dunning.
            if verdict.is_hopeless() {
                break;
            }
            continue;
        }
        match world.attempt(st, logged.action.retry_at) {
            StepResult::Attempted { .. } => propensities.push(logged.propensity),
            StepResult::Cancelled | StepResult::OutsideWindow | StepResult::AlreadyClosed => break,
        }
    }
    propensities
}

/// A chunk of generated history, ready to write.
pub struct Chunk {
    /// The rows, with ids interned as in a loaded history.
    pub history: History,
    /// Per row: leave `timezone` empty (the loader derives it from the country).
    pub timezone_missing: Vec<bool>,
}

impl Chunk {
    /// The chunk as a contract-typed DataFrame.
    pub fn to_frame(&self) -> polars::prelude::PolarsResult<polars::prelude::DataFrame> {
        use polars::prelude::Column;
        let mut df = crate::history::to_frame(&self.history)?;
        let tz: Vec<Option<&str>> =
            self.history.attempts.iter().zip(&self.timezone_missing).map(|(a, missing)| (!missing).then(|| a.timezone.name())).collect();
        df.with_column(Column::new("timezone".into(), tz))?;
        Ok(df)
    }
}

/// Generate the rows of a range of payers (in parallel; the result does not
/// depend on the number of threads).
pub fn chunk(world: &World, payers: std::ops::Range<u32>) -> Chunk {
    use rayon::prelude::*;
    assemble(payers.into_par_iter().map(|id| payer_rows(world, id)).collect())
}

/// The rows of a range of payers as one DataFrame, built in parallel from
/// sub-ranges (generation and conversion both use every core). The result
/// is the same as `chunk(world, payers).to_frame()`.
pub fn frame(world: &World, payers: std::ops::Range<u32>) -> polars::prelude::PolarsResult<(DataFrame, usize, usize)> {
    use rayon::prelude::*;
    const SUB: u32 = 4096;
    let subs: Vec<std::ops::Range<u32>> = payers.clone().step_by(SUB as usize).map(|s| s..(s + SUB).min(payers.end)).collect();
    let parts = subs
        .into_par_iter()
        .map(|r| {
            let c = assemble(r.map(|id| payer_rows(world, id)).collect());
            let counts = (c.history.attempts.len(), c.history.payment_ids.len());
            c.to_frame().map(|df| (df, counts))
        })
        .collect::<polars::prelude::PolarsResult<Vec<_>>>()?;
    let mut out: Option<DataFrame> = None;
    let (mut rows, mut payments) = (0, 0);
    for (df, (r, p)) in parts {
        rows += r;
        payments += p;
        match out.as_mut() {
            None => out = Some(df),
            Some(o) => {
                o.vstack_mut_owned(df)?;
            }
        }
    }
    // One contiguous chunk per column: the written file does not depend on how the work was split.
    let mut out = out.unwrap_or_default();
    out.rechunk_mut_par();
    Ok((out, rows, payments))
}

/// Write `prefix` then each number zero-padded to its width, joined by `_`
/// (`att_00000042_003_01`). Ids are written millions of times: no `fmt` machinery.
fn id(buf: &mut String, prefix: &str, parts: &[(u32, usize)]) {
    buf.push_str(prefix);
    for (k, &(mut n, width)) in parts.iter().enumerate() {
        if k > 0 {
            buf.push('_');
        }
        let mut digits = [b'0'; 10];
        let mut i = digits.len();
        while n > 0 {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let len = (digits.len() - i).max(width).min(digits.len());
        for &d in &digits[digits.len() - len..] {
            buf.push(d as char);
        }
    }
}

/// Number the ids of per-payer rows, in payer order.
fn assemble(per_payer: Vec<(Vec<Attempt>, bool)>) -> Chunk {
    let mut h = History::default();
    let n: usize = per_payer.iter().map(|(r, _)| r.len()).sum();
    h.attempts.reserve(n);
    h.attempt_ids.reserve(n, 19);
    h.payment_ids.reserve(n, 16);
    h.customer_ids.reserve(per_payer.len(), 12);
    let mut timezone_missing = Vec::with_capacity(n);
    for (rows, tz_missing) in per_payer {
        let Some(first) = rows.first() else { continue };
        let payer = first.customer.0;
        let customer = h.customer_ids.push_with(|b| id(b, "cus_", &[(payer, 8)]));
        let mut last_cycle = None;
        for mut a in rows {
            let cycle = a.payment.0;
            if last_cycle != Some(cycle) {
                h.payment_ids.push_with(|b| id(b, "pay_", &[(payer, 8), (cycle, 3)]));
                last_cycle = Some(cycle);
            }
            a.attempt_ix = h.attempt_ids.push_with(|b| id(b, "att_", &[(payer, 8), (cycle, 3), (a.attempt_number, 2)]));
            a.payment = PaymentIx((h.payment_ids.len() - 1) as u32);
            a.customer = CustomerIx(customer);
            h.attempts.push(a);
            timezone_missing.push(tz_missing);
        }
    }
    Chunk { history: h, timezone_missing }
}

#[cfg(test)]
mod tests {
    use super::id;

    #[test]
    fn ids_are_zero_padded_like_format() {
        let cases: &[(u32, u32, u32)] = &[(0, 0, 0), (42, 3, 1), (99_999_999, 999, 99), (123_456_789, 1000, 100)];
        for &(p, c, k) in cases {
            let mut s = String::new();
            id(&mut s, "att_", &[(p, 8), (c, 3), (k, 2)]);
            assert_eq!(s, format!("att_{p:08}_{c:03}_{k:02}"));
        }
        let mut s = String::new();
        id(&mut s, "cus_", &[(u32::MAX, 8)]);
        assert_eq!(s, format!("cus_{:08}", u32::MAX));
    }
}
