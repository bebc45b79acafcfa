//! Backtesting retry strategies inside the simulated world (`recoup backtest`).
//!
//! Every strategy dunns the same failed payments: each payer's first failed
//! charge in the world's period, started afresh per strategy with the same
//! random streams (common random numbers: the k-th attempt and the k-th
//! message of every strategy draw the same numbers), so differences between
//! strategies are not noise. Every proposed retry goes through the network
//! retry rules before the world sees it: a strategy's forbidden retry is
//! skipped (or ends dunning if the rule is permanent), never attempted.
//!
//! Confidence intervals are a paired bootstrap over payments: the same
//! resampled payments for every strategy.
//!
//! Not built yet (issue #6): off-policy estimates on logged history.
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use strum::VariantArray;

use crate::declines::{DeclineClass, DeclineCode};
use crate::domain::{Channel, Outcome};
use crate::engine::{self, EarlierAttempt, EngineConfig};
use crate::features::PaymentFacts;
use crate::model::SuccessModel;
use crate::rules::{check_retry, Proposal, RuleViolation};
use crate::sim::world::{Action, Closed, Episode, EpisodeState, Payer, StepResult, World};

/// A failed payment to dunn, with what a policy may know about the payer.
#[derive(Debug, Clone)]
pub struct Case {
    pub payer: Payer,
    pub episode: Episode,
    pub network_code: Option<crate::domain::RawCode>,
    pub advice_code: Option<crate::domain::RawCode>,
    /// The payer's earlier charges in the world (all succeeded): pay-day evidence.
    pub past_payments: Vec<engine::PastPayment>,
}

/// The first failed charge of each of `payers` payers (payers without one are skipped).
pub fn cases(world: &World, payers: std::ops::Range<u32>) -> Vec<Case> {
    payers.into_par_iter().filter_map(|id| first_failure(world, id)).collect()
}

/// The first failed charge of each of the payers `ids` (in that order; payers without one are skipped).
pub fn cases_of(world: &World, ids: &[u32]) -> Vec<Case> {
    ids.par_iter().filter_map(|&id| first_failure(world, id)).collect()
}

fn first_failure(world: &World, id: u32) -> Option<Case> {
    let payer = world.payer(id);
    let mut charges = world.charges_rng(id);
    let mut rng = world.payer_rng(id);
    let mut t = payer.first_charge;
    let mut past = Vec::new();
    let mut cycle = 0;
    while t < world.end {
        if let Some(decline) = world.charge_outcome(&payer, &mut charges, t) {
            let (network_code, advice_code) = world.codes_for(&payer, decline, t, rng.random(), rng.random());
            let episode = Episode {
                cycle,
                amount_minor: payer.price_minor,
                failed_at: t,
                decline,
                window_end: t + Duration::days(world.cfg.dunning_window_days),
            };
            return Some(Case { payer, episode, network_code, advice_code, past_payments: past });
        }
        past.push(vec![(t, None)]);
        t = crate::sim::generate::next_charge(payer.interval, t);
        cycle += 1;
    }
    None
}

/// What a strategy sees: the world (only the oracle may read its truth), the
/// payment so far, and the earliest time it may propose (after a skipped retry).
pub struct View<'a> {
    pub world: &'a World,
    pub case: &'a Case,
    pub state: &'a EpisodeState,
    /// Propose a retry strictly after this time.
    pub not_before: DateTime<Utc>,
}

impl View<'_> {
    /// The earliest moment a proposal must follow: the last attempt, or a skipped proposal.
    pub fn after(&self) -> DateTime<Utc> {
        self.not_before.max(self.state.last().past.at)
    }
}

/// The first whole hour strictly after `t`.
fn next_hour(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp((t.timestamp() / 3600 + 1) * 3600, 0)
}

/// A retry strategy: the next retry (time and message) of a payment in dunning, or none.
pub trait Strategy: Sync {
    fn name(&self) -> String;
    fn next(&self, v: &View) -> Option<Action>;
    /// [`Strategy::next`] with the success probability the strategy predicted for
    /// the retry, when it predicts one (the learned policy), for the
    /// calibration of the retries it chose.
    fn next_scored(&self, v: &View) -> Option<(Action, Option<f64>)> {
        self.next(v).map(|a| (a, None))
    }
}

/// Predictions kept per payment for calibration (a payment's first retries).
pub const PREDICTIONS_KEPT: usize = 8;

/// One chosen retry's predicted success probability and what happened.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Prediction {
    pub p: f32,
    /// `DeclineClass` of the decline before the retry, as its index.
    pub class: u8,
    /// 1 = the payment's first retry.
    pub retry: u8,
    pub succeeded: bool,
    /// The world's own P(this retry succeeds), given that it is made (the simulator's
    /// truth, message included): what a perfect model would have said. Calibration
    /// against it has none of the outcomes' noise.
    pub truth: f32,
    /// Hours between the retry and the attempt before it (diagnostics).
    pub spacing_h: f32,
}

// ---------------------------------------------------------------------------
// Fixed schedules.

/// A fixed schedule: retries `days` after the failure at `hour`:00 local time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub name: String,
    pub days: Vec<i64>,
    pub hour: u32,
    #[serde(default = "no_channel")]
    pub channel: Channel,
}

fn no_channel() -> Channel {
    Channel::None
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    schedule: Vec<Schedule>,
}

/// The shipped schedules (`data/strategies.toml`).
pub const DEFAULT_SCHEDULES: &str = include_str!("../data/strategies.toml");

/// Parse a schedules file; errors name the schedule.
pub fn parse_schedules(text: &str) -> Result<Vec<Schedule>, ScheduleError> {
    let f: ScheduleFile = toml::from_str(text)?;
    if f.schedule.is_empty() {
        return Err(ScheduleError::Empty);
    }
    for s in &f.schedule {
        let bad = |why: &str| Err(ScheduleError::Invalid { name: s.name.clone(), why: why.to_string() });
        if s.hour >= 24 {
            return bad(&format!("hour must be 0..=23, got {}", s.hour));
        }
        if s.days.is_empty() || s.days.iter().any(|d| *d < 0) {
            return bad("days must be a non-empty list of days ≥ 0");
        }
        if !s.days.windows(2).all(|w| w[0] < w[1]) {
            return bad("days must increase");
        }
    }
    Ok(f.schedule)
}

/// A schedules file that cannot be used; the message names the schedule.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    #[error("no [[schedule]] in the file")]
    Empty,
    #[error("schedule {name:?}: {why}")]
    Invalid { name: String, why: String },
}

/// `days` after `from`'s local date, at `hour`:00 local (the next valid time across a DST gap).
fn local_at(tz: chrono_tz::Tz, from: DateTime<Utc>, days: i64, hour: u32) -> DateTime<Utc> {
    let date = from.with_timezone(&tz).date_naive() + Duration::days(days);
    let naive = date.and_time(NaiveTime::from_hms_opt(hour, 0, 0).expect("hour < 24"));
    (0..3)
        .find_map(|h| tz.from_local_datetime(&(naive + Duration::hours(h))).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| naive.and_utc())
}

impl Strategy for Schedule {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn next(&self, v: &View) -> Option<Action> {
        self.next_after(v.case.payer.timezone, v.case.episode.failed_at, v.after())
    }
}

impl Schedule {
    /// The first retry of the schedule strictly after `after`, for a payment that failed at `failed`.
    pub fn next_after(&self, tz: chrono_tz::Tz, failed: DateTime<Utc>, after: DateTime<Utc>) -> Option<Action> {
        self.days
            .iter()
            .map(|&d| local_at(tz, failed, d, self.hour))
            .find(|t| *t > after)
            .map(|retry_at| Action { retry_at, channel: self.channel })
    }
}

/// A schedule counted in hours from the failure (not at a local hour): the
/// shape of a randomized logging policy with its jitter removed, so logged
/// history supports it (off-policy tests use it). Technical declines follow
/// `technical_hours` when given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offsets {
    pub name: String,
    pub hours: Vec<i64>,
    #[serde(default)]
    pub technical_hours: Vec<i64>,
    pub channel: Channel,
}

impl Offsets {
    /// The first retry strictly after `after`, for a payment that failed at `failed` with `class`.
    pub fn next_after(&self, class: DeclineClass, failed: DateTime<Utc>, after: DateTime<Utc>) -> Option<Action> {
        let hours = if class == DeclineClass::Technical && !self.technical_hours.is_empty() { &self.technical_hours } else { &self.hours };
        hours.iter().map(|h| failed + Duration::hours(*h)).find(|t| *t > after).map(|retry_at| Action { retry_at, channel: self.channel })
    }
}

impl Strategy for Offsets {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn next(&self, v: &View) -> Option<Action> {
        self.next_after(v.case.episode.decline.class(), v.case.episode.failed_at, v.after())
    }
}

// ---------------------------------------------------------------------------
// Pay-day heuristic.

/// What a careful analyst would write by hand: technical declines within hours,
/// funds declines the morning after the payer's inferred pay day, the rest on
/// days 1, 3 and 7; an email before each retry; at most four retries.
pub struct PayDayHeuristic;

impl Strategy for PayDayHeuristic {
    fn name(&self) -> String {
        "pay-day heuristic".into()
    }

    fn next(&self, v: &View) -> Option<Action> {
        let p = &v.case.payer;
        PayDayHeuristic::next_after(
            p.timezone,
            p.country,
            v.case.episode.failed_at,
            v.state.episode.decline.class(),
            v.state.attempts.len(),
            &v.case.past_payments,
            v.after(),
        )
    }
}

impl PayDayHeuristic {
    /// The next retry strictly after `after` of a payment that failed at `failed`
    /// with `class` and has `attempts` attempts so far; `past` is the payer's earlier payments.
    pub fn next_after(
        tz: chrono_tz::Tz,
        country: crate::domain::Country,
        failed: DateTime<Utc>,
        class: DeclineClass,
        attempts: usize,
        past: &[engine::PastPayment],
        after: DateTime<Utc>,
    ) -> Option<Action> {
        if attempts > 4 {
            return None;
        }
        let retry_at = match class {
            DeclineClass::Technical => [2, 6, 24, 72].iter().map(|h| failed + Duration::hours(*h)).find(|t| *t > after)?,
            DeclineClass::SoftFunds => {
                let evidence: Vec<_> = past.iter().flat_map(|p| crate::features::payment_evidence(tz, p)).map(|(_, e)| e).collect();
                let estimate = crate::payday::infer(country, &evidence);
                let from = after.with_timezone(&tz).date_naive();
                let pay_days = estimate.schedule.pay_days_between(country, from - Duration::days(1), from + Duration::days(45));
                pay_days.iter().map(|d| local_at(tz, d.and_hms_opt(12, 0, 0).expect("noon").and_utc(), 1, 8)).find(|t| *t > after)?
            }
            _ => [1, 3, 7].iter().map(|d| local_at(tz, failed, *d, 9)).find(|t| *t > after)?,
        };
        Some(Action { retry_at, channel: Channel::Email })
    }
}

// ---------------------------------------------------------------------------
// Random floor.

/// A retry 1–4 days after the last attempt at a random hour, a random message;
/// at most four retries. Seeded by the payment, so reruns agree.
pub struct RandomPolicy;

impl Strategy for RandomPolicy {
    fn name(&self) -> String {
        "random".into()
    }

    fn next(&self, v: &View) -> Option<Action> {
        let st = v.state;
        if st.attempts.len() > 4 {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(v.world.seed ^ (u64::from(v.case.payer.id) << 20) ^ st.attempts.len() as u64 ^ 0x5eed);
        let after = v.after();
        let retry_at = after + Duration::hours(rng.random_range(24..=96));
        Some(Action { retry_at, channel: Channel::VARIANTS[rng.random_range(0..Channel::VARIANTS.len())] })
    }
}

// ---------------------------------------------------------------------------
// The learned policy.

/// recoup's decision engine with a model version, deciding after every failure.
pub struct Learned {
    pub model: SuccessModel,
    pub version: String,
    pub cfg: EngineConfig,
    /// Channels it may use; empty: all.
    pub channels: Vec<Channel>,
}

impl Learned {
    /// The request a billing platform would send for this moment of the episode.
    pub fn request(&self, v: &View) -> engine::Request {
        let p = &v.case.payer;
        let st = v.state;
        let facts = PaymentFacts {
            amount_minor: st.episode.amount_minor,
            currency: p.currency,
            method: p.method,
            card_brand: p.card_brand,
            card_funding: p.card_funding,
            country: p.country,
            timezone: p.timezone,
            billing_interval: Some(p.interval),
            tenure_days: Some((st.episode.failed_at.date_naive() - p.first_payment).num_days().max(0) as u32),
        };
        let attempts = st
            .attempts
            .iter()
            .filter(|a| a.past.outcome == Outcome::Failed)
            .map(|a| EarlierAttempt {
                at: a.past.at,
                decline: a.past.decline.unwrap_or(DeclineCode::Other),
                network_code: a.past.network_code,
                advice_code: a.past.advice_code,
                channel: Some(a.channel),
                payment_method_updated: a.past.payment_method_updated,
                card: None,
            })
            .collect();
        let now = v.after();
        // Messages no retry followed: asks for a new payment method.
        let lead = Duration::hours(v.world.cfg.logging.message_lead_hours);
        let asks = st
            .messages
            .iter()
            .filter(|(t, _)| !st.attempts.iter().any(|a| a.past.at == *t + lead))
            .map(|&(at, channel)| engine::SentAsk { at, channel })
            .collect();
        engine::Request {
            asks,
            payment_id: format!("pay_{}_{}", p.id, st.episode.cycle),
            // The simulator knows every payer's zone.
            timezone_assumed: false,
            facts,
            attempts,
            // A billing platform learns of a card update when it happens.
            payment_method_updated: st.updated_since_last(now),
            past_payments: v.case.past_payments.clone(),
            // The simulated payer has one card per payment episode; caps per payment.
            card: None,
            card_attempts: Vec::new(),
            now,
            constraints: engine::Constraints { latest: Some(st.episode.window_end), channels: self.channels.clone(), ..Default::default() },
        }
    }
}

impl Strategy for Learned {
    fn name(&self) -> String {
        format!("learned ({})", self.version)
    }

    fn next(&self, v: &View) -> Option<Action> {
        self.next_scored(v).map(|(a, _)| a)
    }

    fn next_scored(&self, v: &View) -> Option<(Action, Option<f64>)> {
        let req = self.request(v);
        let d = engine::decide(&self.model, &self.cfg, &req, (1.0, 0.0)).ok()?;
        if let Some(c) = d.chosen.filter(|_| d.action == engine::Action::Retry) {
            return Some((Action { retry_at: c.retry_at, channel: c.channel }, Some(c.p_success)));
        }
        // "Ask for a new payment method": as an integration does it, send the ask and
        // retry as soon as the card is updated (here: right after the message, if the
        // payer acted on it; the runner checks the rules after the payer's reaction).
        // The engine plans the asks when the model has an ask response: whether, when
        // and on which channel.
        if let Some(plan) = &d.ask {
            // The plan's next ask, now (ask_channel) or later (a wait until then).
            let ask = Some(plan.channel).filter(|ch| *ch != Channel::None)?;
            let retry_at = next_hour(plan.send_at + Duration::hours(v.world.cfg.logging.message_lead_hours) - Duration::seconds(1))?;
            return Some((Action { retry_at, channel: ask }, None));
        }
        // A model without one: at most three asks, two days apart, on the suggested channel.
        let ask = d.ask_channel.filter(|ch| *ch != Channel::None)?;
        let needs_update = req.attempts.last().is_some_and(|a| a.decline.class() == DeclineClass::NeedsUpdate);
        let hard = req.attempts.iter().any(|a| a.decline.class() == DeclineClass::Hard);
        if !needs_update || hard || req.payment_method_updated || v.state.messages_sent() >= 3 {
            return None;
        }
        let wait = if v.state.messages_sent() == 0 { Duration::zero() } else { Duration::days(2) };
        let now = req.now + wait + Duration::hours(self.cfg.message_lead_hours.max(0));
        let retry_at = next_hour(now)?;
        Some((Action { retry_at, channel: ask }, None))
    }
}

// ---------------------------------------------------------------------------
// The oracle.

/// Knows the world's true success probabilities: every hour of the next 14
/// days × every channel, valued like the engine (P × amount − costs, plus the
/// best slot a day later if this one fails), with the true probabilities.
pub struct Oracle;

impl Strategy for Oracle {
    fn name(&self) -> String {
        "oracle".into()
    }

    fn next(&self, v: &View) -> Option<Action> {
        let (w, st) = (v.world, v.state);
        let start = next_hour(v.after())?;
        let end = st.episode.window_end.min(start + Duration::days(14));
        let hours = (end - start).num_hours().max(-1) + 1;
        if hours <= 0 {
            return None;
        }
        let amount = st.episode.amount_minor as f64;
        let past = st.past();
        let mut slots: Vec<(i64, Channel, f64, f64)> = Vec::new(); // hour, channel, p, ev
        let mut hour_best = vec![f64::NEG_INFINITY; hours as usize];
        for h in 0..hours {
            let t = start + Duration::hours(h);
            // The oracle knows whether the card will have been updated by then; a
            // message may still get it updated (its true probability counts that).
            let updated = st.updated_at.is_some_and(|u| u > st.last().past.at && u <= t);
            let verdict = check_retry(st.facts(), &past, Proposal { at: t, payment_method_updated: updated }, &w.rules);
            let only_needs_update =
                !verdict.is_allowed() && verdict.violations.iter().all(|v| matches!(v, RuleViolation::NeedsPaymentMethodUpdate { .. }));
            if !verdict.is_allowed() && !only_needs_update {
                continue;
            }
            for &ch in Channel::VARIANTS {
                if only_needs_update && ch == Channel::None {
                    continue;
                }
                let p = w.true_success_probability(st, t, ch);
                let ev = p * amount - w.cfg.costs.attempt - w.message_cost(ch);
                hour_best[h as usize] = hour_best[h as usize].max(ev);
                slots.push((h, ch, p, ev));
            }
        }
        let mut later = vec![0.0f64; hours as usize + 1];
        for h in (0..hours as usize).rev() {
            later[h] = later[h + 1].max(hour_best[h]);
        }
        let best = slots
            .iter()
            .map(|&(h, ch, p, ev)| (h, ch, ev + (1.0 - p) * later[(h as usize + 24).min(hours as usize)]))
            .max_by(|a, b| a.2.total_cmp(&b.2).then(b.0.cmp(&a.0)))?;
        (best.2 > 0.0).then(|| Action { retry_at: start + Duration::hours(best.0), channel: best.1 })
    }
}

// ---------------------------------------------------------------------------
// Running.

/// How one payment's dunning ended under one strategy.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Outcome1 {
    pub recovered: bool,
    /// Recovered by the first retry.
    pub first_retry_success: bool,
    pub revenue: f64,
    pub days_to_recovery: Option<f64>,
    pub attempts: u32,
    pub messages: u32,
    pub cost: f64,
    pub cancelled: bool,
    pub violations: u32,
    /// Retries the strategy proposed that the rules forbade (skipped, not attempted).
    pub forbidden_proposals: u32,
    /// The strategy's predictions for the retries it made (the first [`PREDICTIONS_KEPT`]).
    #[serde(skip)]
    pub predictions: [Prediction; PREDICTIONS_KEPT],
    pub predicted: u8,
}

/// Dunn one payment with one strategy.
pub fn run(world: &World, case: &Case, strategy: &dyn Strategy) -> Outcome1 {
    let mut st = world.start_episode(case.payer.clone(), case.episode.clone(), case.network_code, case.advice_code);
    let mut not_before = st.last().past.at;
    let mut forbidden = 0u32;
    let (mut predictions, mut predicted) = ([Prediction::default(); PREDICTIONS_KEPT], 0usize);
    for _ in 0..64 {
        if st.closed.is_some() {
            break;
        }
        let Some((action, p)) = strategy.next_scored(&View { world, case, state: &st, not_before }) else { break };
        if action.retry_at <= not_before || action.retry_at > st.episode.window_end {
            break;
        }
        // The truth before the message is sent (the prediction was made before it too),
        // only for a prediction that will be kept.
        let truth =
            p.filter(|_| predicted < PREDICTIONS_KEPT).map(|_| world.true_success_if_attempted(&st, action.retry_at, action.channel));
        if world.approach(&mut st, action).is_some() {
            break;
        }
        let proposal = Proposal { at: action.retry_at, payment_method_updated: st.updated_since_last(action.retry_at) };
        let verdict = check_retry(st.facts(), &st.past(), proposal, &world.rules);
        if !verdict.is_allowed() {
            forbidden += 1;
            if verdict.is_hopeless() {
                break;
            }
            not_before = action.retry_at;
            continue;
        }
        let class = st.attempts.last().and_then(|a| a.past.decline).map_or(0, |d| d.class() as u8);
        let spacing_h = (action.retry_at - st.last().past.at).num_minutes() as f32 / 60.0;
        match world.attempt(&mut st, action.retry_at) {
            StepResult::Attempted { succeeded, .. } => {
                not_before = action.retry_at;
                if let (Some(p), Some(truth)) = (p, truth) {
                    let retry = (st.attempts.len() - 1).min(255) as u8;
                    predictions[predicted] = Prediction { p: p as f32, class, retry, succeeded, truth: truth as f32, spacing_h };
                    predicted += 1;
                }
            }
            _ => break,
        }
    }
    let (recovered, days) = match st.closed {
        Some(Closed::Recovered(t)) => (true, Some((t - case.episode.failed_at).num_minutes() as f64 / 1440.0)),
        _ => (false, None),
    };
    Outcome1 {
        recovered,
        first_retry_success: st.attempts.get(1).is_some_and(|a| a.past.outcome == Outcome::Succeeded),
        revenue: if recovered { case.episode.amount_minor as f64 } else { 0.0 },
        days_to_recovery: days,
        attempts: st.attempts.len() as u32 - 1,
        messages: st.messages_sent(),
        cost: st.cost,
        cancelled: matches!(st.closed, Some(Closed::Cancelled(_))),
        violations: st.violations,
        forbidden_proposals: forbidden,
        predictions,
        predicted: predicted as u8,
    }
}

/// Every strategy on every case: `out[s][c]`.
pub fn run_all(world: &World, cases: &[Case], strategies: &[&dyn Strategy], progress: &(dyn Fn(usize) + Sync)) -> Vec<Vec<Outcome1>> {
    let per_case: Vec<Vec<Outcome1>> = cases
        .par_iter()
        .enumerate()
        .map(|(i, c)| {
            if i % 1000 == 0 {
                progress(i);
            }
            strategies.iter().map(|s| run(world, c, *s)).collect()
        })
        .collect();
    (0..strategies.len()).map(|s| per_case.iter().map(|o| o[s]).collect()).collect()
}

/// How well a strategy's predictions for the retries it chose match what happened.
#[derive(Debug, Clone, Serialize)]
pub struct ChosenCalibration {
    /// `all`, or a decline class (of the decline before the retry).
    pub segment: String,
    pub retries: usize,
    pub mean_predicted: f64,
    pub realised: f64,
    /// Expected calibration error over 10 equal-width bins of the prediction.
    pub ece: f64,
    /// Mean of the world's own P of the same retries ([`Prediction::truth`]).
    pub truth: f64,
    /// The same ECE against the world's own P instead of the outcomes: the model's
    /// error alone, without the outcomes' noise.
    pub ece_truth: f64,
}

/// The calibration of the retries a strategy chose, overall and per decline class
/// (classes with fewer than 30 retries are left out); empty when it predicts nothing.
pub fn chosen_calibration(out: &[Outcome1]) -> Vec<ChosenCalibration> {
    let preds: Vec<Prediction> = out.iter().flat_map(|o| o.predictions[..o.predicted as usize].iter().copied()).collect();
    let one = |segment: String, ps: Vec<&Prediction>| {
        let n = ps.len();
        // Per bin of the prediction: Σ predicted, Σ realised, Σ truth.
        let mut bins = [(0.0f64, 0.0f64, 0.0f64); 10];
        for p in &ps {
            let b = ((p.p as f64 * 10.0) as usize).min(9);
            bins[b].0 += p.p as f64;
            bins[b].1 += p.succeeded as u8 as f64;
            bins[b].2 += p.truth as f64;
        }
        let mean = |f: &dyn Fn(&Prediction) -> f64| ps.iter().map(|p| f(p)).sum::<f64>() / n.max(1) as f64;
        ChosenCalibration {
            segment,
            retries: n,
            mean_predicted: mean(&|p| p.p as f64),
            realised: mean(&|p| p.succeeded as u8 as f64),
            ece: bins.iter().map(|b| (b.0 - b.1).abs()).sum::<f64>() / n.max(1) as f64,
            truth: mean(&|p| p.truth as f64),
            ece_truth: bins.iter().map(|b| (b.0 - b.2).abs()).sum::<f64>() / n.max(1) as f64,
        }
    };
    if preds.is_empty() {
        return Vec::new();
    }
    let mut v = vec![one("all".into(), preds.iter().collect())];
    v.push(one("first retry".into(), preds.iter().filter(|p| p.retry == 1).collect()));
    v.push(one("later retries".into(), preds.iter().filter(|p| p.retry > 1).collect()));
    for c in DeclineClass::VARIANTS {
        let ps: Vec<&Prediction> = preds.iter().filter(|p| p.class == *c as u8).collect();
        if ps.len() >= 30 {
            v.push(one(<&str>::from(*c).to_string(), ps));
        }
    }
    v
}

/// A point estimate with its bootstrap 95 % interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// One strategy's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub strategy: String,
    pub payments: usize,
    pub recovery_rate: Estimate,
    /// Revenue recovered per payment (minor units, mixed currencies).
    pub revenue_per_payment: Estimate,
    /// Revenue recovered minus attempt, message and penalty costs, per payment.
    pub net_per_payment: Estimate,
    pub median_days_to_recovery: Option<f64>,
    pub attempts_per_payment: f64,
    pub messages_per_payment: f64,
    pub cost_per_payment: f64,
    pub cancellation_rate: Estimate,
    pub rule_violations: u64,
    pub forbidden_proposals: u64,
    /// (strategy − best fixed) / (oracle − best fixed), net revenue; with its interval.
    pub oracle_uplift_share: Option<Estimate>,
}

fn mean(x: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = x.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

/// A point estimate with the 2.5 % and 97.5 % quantiles of its bootstrap values
/// (not a number when there are none).
pub(crate) fn interval(mut v: Vec<f64>, point: f64) -> Estimate {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| if v.is_empty() { f64::NAN } else { v[((v.len() as f64 - 1.0) * p).round() as usize] };
    Estimate { value: point, lo: q(0.025), hi: q(0.975) }
}

/// The strategies compared: their names, which are fixed schedules and which
/// is the oracle (for the uplift share), in the order of `run_all`'s output.
#[derive(Debug, Clone)]
pub struct Lineup {
    pub names: Vec<String>,
    pub fixed: Vec<usize>,
    pub oracle: Option<usize>,
}

/// Summaries with paired-bootstrap intervals (`resamples` resamples of the
/// payments, the same for every strategy).
pub fn summarize(lineup: &Lineup, out: &[Vec<Outcome1>], resamples: usize, seed: u64) -> Vec<Summary> {
    let (names, fixed, oracle) = (&lineup.names, &lineup.fixed, lineup.oracle);
    let n = out.first().map_or(0, Vec::len);
    let metric = |o: &Outcome1, k: usize| match k {
        0 => f64::from(u8::from(o.recovered)),
        1 => o.revenue,
        2 => o.revenue - o.cost,
        _ => f64::from(u8::from(o.cancelled)),
    };
    // Per resample: the mean of each metric for each strategy. Each resample's
    // payment indices come from its own seeded stream (drawn, used, dropped).
    let boot: Vec<Vec<[f64; 4]>> = (0..resamples)
        .into_par_iter()
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (r as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let ix: Vec<usize> = (0..n).map(|_| rng.random_range(0..n.max(1))).collect();
            out.iter().map(|o| std::array::from_fn(|k| mean(ix.iter().map(|&i| metric(&o[i], k))))).collect()
        })
        .collect();
    let best_fixed = |means: &dyn Fn(usize) -> f64| fixed.iter().map(|&s| means(s)).fold(f64::NEG_INFINITY, f64::max);
    names
        .iter()
        .enumerate()
        .map(|(s, name)| {
            let o = &out[s];
            let point = |k: usize| mean(o.iter().map(|x| metric(x, k)));
            let est = |k: usize| interval(boot.iter().map(|b| b[s][k]).collect(), point(k));
            let mut days: Vec<f64> = o.iter().filter_map(|x| x.days_to_recovery).collect();
            days.sort_by(f64::total_cmp);
            let share = |net: &dyn Fn(usize) -> f64| {
                let bf = best_fixed(net);
                oracle.map(|or| (net(s) - bf) / (net(or) - bf))
            };
            let oracle_uplift_share = oracle.filter(|_| !fixed.is_empty()).and_then(|_| {
                let point_share = share(&|x| mean(out[x].iter().map(|y| metric(y, 2))))?;
                let v: Vec<f64> = boot.iter().filter_map(|b| share(&|x| b[x][2])).filter(|x| x.is_finite()).collect();
                (!v.is_empty() && point_share.is_finite()).then(|| interval(v, point_share))
            });
            Summary {
                strategy: name.clone(),
                payments: o.len(),
                recovery_rate: est(0),
                revenue_per_payment: est(1),
                net_per_payment: est(2),
                median_days_to_recovery: days.get(days.len() / 2).copied(),
                attempts_per_payment: mean(o.iter().map(|x| f64::from(x.attempts))),
                messages_per_payment: mean(o.iter().map(|x| f64::from(x.messages))),
                cost_per_payment: mean(o.iter().map(|x| x.cost)),
                cancellation_rate: est(3),
                rule_violations: o.iter().map(|x| u64::from(x.violations)).sum(),
                forbidden_proposals: o.iter().map(|x| u64::from(x.forbidden_proposals)).sum(),
                oracle_uplift_share,
            }
        })
        .collect()
}

/// What payments are grouped by in per-segment results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentBy {
    /// The failed charge's decline class.
    DeclineClass,
    Country,
    PaymentMethod,
    CardFunding,
}

impl SegmentBy {
    /// Every segmentation.
    pub const ALL: [SegmentBy; 4] = [SegmentBy::DeclineClass, SegmentBy::Country, SegmentBy::PaymentMethod, SegmentBy::CardFunding];

    /// The name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentBy::DeclineClass => "decline_class",
            SegmentBy::Country => "country",
            SegmentBy::PaymentMethod => "payment_method",
            SegmentBy::CardFunding => "card_funding",
        }
    }

    /// The segment of a payment.
    pub fn of(self, c: &Case) -> String {
        match self {
            SegmentBy::DeclineClass => c.episode.decline.class().to_string(),
            SegmentBy::Country => c.payer.country.to_string(),
            SegmentBy::PaymentMethod => c.payer.method.to_string(),
            SegmentBy::CardFunding => c.payer.card_funding.map_or("none".into(), |f| f.to_string()),
        }
    }
}

/// One segment's summaries.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub by: SegmentBy,
    pub value: String,
    pub payments: usize,
    pub strategies: Vec<Summary>,
}

/// [`summarize`] within each segment of `by` (segments in decreasing size).
pub fn summarize_segments(
    by: SegmentBy,
    cases: &[Case],
    lineup: &Lineup,
    out: &[Vec<Outcome1>],
    resamples: usize,
    seed: u64,
) -> Vec<Segment> {
    let mut groups: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, c) in cases.iter().enumerate() {
        groups.entry(by.of(c)).or_default().push(i);
    }
    let mut segments: Vec<Segment> = groups
        .into_iter()
        .map(|(value, ix)| {
            let sub: Vec<Vec<Outcome1>> = out.iter().map(|o| ix.iter().map(|&i| o[i]).collect()).collect();
            Segment { by, value, payments: ix.len(), strategies: summarize(lineup, &sub, resamples, seed) }
        })
        .collect();
    segments.sort_by(|a, b| b.payments.cmp(&a.payments).then(a.value.cmp(&b.value)));
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_schedules_parse_and_bad_ones_are_named() {
        let s = parse_schedules(DEFAULT_SCHEDULES).unwrap();
        assert_eq!(s.iter().map(|x| x.days.len()).collect::<Vec<_>>(), [4, 4, 4, 8]);
        let e = parse_schedules("[[schedule]]\nname = \"late\"\ndays = [3, 1]\nhour = 9\n").unwrap_err().to_string();
        assert!(e.contains("\"late\"") && e.contains("increase"), "{e}");
        let e = parse_schedules("[[schedule]]\nname = \"x\"\ndays = [1]\nhour = 25\n").unwrap_err().to_string();
        assert!(e.contains("hour"), "{e}");
    }

    /// The ECE bins by the prediction and compares each bin's sum with the outcomes' and with
    /// the world's own P: a model right about the truth has no ECE against it, whatever the
    /// outcomes did.
    #[test]
    fn chosen_calibration_compares_with_the_outcomes_and_with_the_truth() {
        let outcome = |p: f32, truth: f32, succeeded: bool| {
            let mut o = Outcome1 { predicted: 1, ..Default::default() };
            o.predictions[0] = Prediction { p, class: DeclineClass::SoftFunds as u8, retry: 1, succeeded, truth, spacing_h: 48.0 };
            o
        };
        // Bin 0.7–0.8: predicted 0.75, truth 0.75, 6 of 10 succeeded. Bin 0.2–0.3: predicted
        // 0.25, truth 0.45, 5 of 10 succeeded.
        let mut out: Vec<Outcome1> = (0..10).map(|i| outcome(0.75, 0.75, i < 6)).collect();
        out.extend((0..10).map(|i| outcome(0.25, 0.45, i < 5)));
        let cal = chosen_calibration(&out);
        let all = &cal[0];
        assert_eq!((all.segment.as_str(), all.retries), ("all", 20));
        // |7.5 − 6| + |2.5 − 5| over 20 retries; against the truth |7.5 − 7.5| + |2.5 − 4.5|.
        assert!((all.ece - 4.0 / 20.0).abs() < 1e-6, "{all:?}");
        assert!((all.ece_truth - 2.0 / 20.0).abs() < 1e-6, "{all:?}");
        assert!((all.truth - 0.6).abs() < 1e-6 && (all.realised - 0.55).abs() < 1e-9, "{all:?}");
        // A stage with no retries is still listed (empty), classes below 30 retries are not.
        assert!(cal.iter().any(|c| c.segment == "later retries" && c.retries == 0 && c.ece == 0.0));
        assert!(!cal.iter().any(|c| c.segment == "soft_funds"));
        assert!(chosen_calibration(&[Outcome1::default()]).is_empty());
    }

    #[test]
    fn local_times_respect_the_payer_zone_across_dst() {
        let tz = chrono_tz::America::New_York;
        let failed = Utc.with_ymd_and_hms(2026, 3, 7, 15, 0, 0).unwrap(); // Sat, EST
        assert_eq!(local_at(tz, failed, 1, 9), Utc.with_ymd_and_hms(2026, 3, 8, 13, 0, 0).unwrap()); // Sun 09:00 EDT
        assert_eq!(local_at(tz, failed, 0, 9), Utc.with_ymd_and_hms(2026, 3, 7, 14, 0, 0).unwrap()); // Sat 09:00 EST
                                                                                                     // 02:00 does not exist on 2026-03-08 in New York: the next valid hour, 03:00 EDT.
        let t = local_at(tz, failed, 1, 2);
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).unwrap(), "{t}");
    }
}
