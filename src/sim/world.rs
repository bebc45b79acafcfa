//! The world: payers with pay schedules and a latent liquidity, failed
//! payments (episodes), and the true probability that a retry at a given time
//! after a given message succeeds.
//!
//! Pure functions of the configuration, the seed and the policy's
//! actions. Randomness comes only from counter-style streams seeded by
//! (world seed, payer, billing cycle, purpose), so two policies run on the
//! same episode see the same random numbers for their k-th attempt and k-th
//! message (common random numbers): differences between policies are not noise.
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

use chrono::{DateTime, Datelike, Days, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Exp, Normal};

use super::config::WorldConfig;
use crate::calendar::{default_timezone, PaySchedule};
use crate::declines::{DeclineClass, DeclineCode};
use crate::domain::{BillingInterval, CardBrand, CardFunding, Channel, Country, Currency, Outcome, PaymentMethod, RawCode};
use crate::rules::{check_retry, Network, PastAttempt, Proposal, RuleViolation, RulesConfig};

/// Purposes of the random streams, so each draws independently.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
enum Stream {
    Payer = 1,
    Charges = 2,
    Attempts = 3,
    Messages = 4,
    Latent = 5,
    Logging = 6,
}

/// A random stream for (seed, payer, cycle, purpose): the whole tuple is the
/// ChaCha key and stream id, so distinct tuples never share numbers.
fn stream(seed: u64, payer: u32, cycle: u32, purpose: Stream) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..12].copy_from_slice(&payer.to_le_bytes());
    key[12..16].copy_from_slice(&cycle.to_le_bytes());
    key[16..24].copy_from_slice(b"recoup-w");
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(purpose as u64);
    rng
}

/// Channel index into per-channel arrays.
pub fn channel_ix(c: Channel) -> usize {
    c as usize
}

/// A simulated payer and their latent traits (ground truth).
#[derive(Debug, Clone)]
pub struct Payer {
    /// Dense payer number (`cus_{id}`).
    pub id: u32,
    /// Country.
    pub country: Country,
    /// IANA time zone.
    pub timezone: Tz,
    /// Payment method.
    pub method: PaymentMethod,
    /// Card brand (cards only).
    pub card_brand: Option<CardBrand>,
    /// Card funding (cards only).
    pub card_funding: Option<CardFunding>,
    /// Currency charged.
    pub currency: Currency,
    /// Plan price in minor units.
    pub price_minor: i64,
    /// Billing interval.
    pub interval: BillingInterval,
    /// First successful payment ever (tenure anchor), before the simulated period.
    pub first_payment: NaiveDate,
    /// First charge inside the simulated period.
    pub first_charge: DateTime<Utc>,
    /// True pay schedule.
    pub schedule: PaySchedule,
    /// Pay days over the simulated period and margins, sorted.
    pub pay_days: Vec<NaiveDate>,
    /// Baseline log-odds of having the money.
    pub funds_logit: f64,
    /// How strongly success follows the pay cycle.
    pub payday_sensitivity: f64,
    /// Chance to act on a message, per channel (0 for channels that cannot reach the payer).
    pub responsiveness: [f64; 5],
}

/// A failed payment entering dunning.
#[derive(Debug, Clone)]
pub struct Episode {
    /// Billing cycle number of the payer (`pay_{payer}_{cycle}`).
    pub cycle: u32,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// When the scheduled charge failed.
    pub failed_at: DateTime<Utc>,
    /// Why it failed.
    pub decline: DeclineCode,
    /// Retries stop after this time.
    pub window_end: DateTime<Utc>,
}

/// How an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// A retry succeeded.
    Recovered(DateTime<Utc>),
    /// The payer cancelled during dunning.
    Cancelled(DateTime<Utc>),
}

/// One attempt inside the world, with what a history row needs.
#[derive(Debug, Clone, Copy)]
pub struct WorldAttempt {
    /// The rule-relevant facts.
    pub past: PastAttempt,
    /// Message sent since the previous attempt.
    pub channel: Channel,
    /// True success probability at the time (ground truth, for evaluation).
    pub true_probability: f64,
}

/// A payment in dunning inside the world.
#[derive(Debug, Clone)]
pub struct EpisodeState {
    /// The payer.
    pub payer: Payer,
    /// The failed payment.
    pub episode: Episode,
    /// Attempts so far, the original failed charge first.
    pub attempts: Vec<WorldAttempt>,
    /// The messages sent, (time, channel), in order.
    pub messages: Vec<(DateTime<Utc>, Channel)>,
    /// When the payer updated the payment method, if they did.
    pub updated_at: Option<DateTime<Utc>>,
    /// Until when a message the payer acted on lifts success.
    pub lift_until: Option<DateTime<Utc>>,
    /// How the episode ended, if it did.
    pub closed: Option<Closed>,
    /// Attempt and message costs plus penalties so far (minor units).
    pub cost: f64,
    /// Attempts that broke a network rule.
    pub violations: u32,
    spontaneous_update_at: DateTime<Utc>,
    spontaneous_cancel_at: DateTime<Utc>,
    /// Message sent by the last `approach`, recorded on the next attempt.
    pending_channel: Channel,
    attempt_rng: ChaCha8Rng,
    message_rng: ChaCha8Rng,
}

impl EpisodeState {
    /// Payment facts for the rules.
    pub fn facts(&self) -> Network {
        Network { method: self.payer.method, card_brand: self.payer.card_brand }
    }

    /// The attempts as rule inputs.
    pub fn past(&self) -> Vec<PastAttempt> {
        self.attempts.iter().map(|a| a.past).collect()
    }

    /// The last attempt.
    pub fn last(&self) -> &WorldAttempt {
        self.attempts.last().expect("an episode starts with its failed charge")
    }

    /// Messages sent so far in this dunning.
    pub fn messages_sent(&self) -> u32 {
        self.messages.len() as u32
    }

    /// True when the payer updated the payment method after the last attempt and by `at`.
    pub fn updated_since_last(&self, at: DateTime<Utc>) -> bool {
        self.updated_at.is_some_and(|u| u > self.last().past.at && u <= at)
    }
}

/// A policy's next move for an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// When to retry.
    pub retry_at: DateTime<Utc>,
    /// Message sent before the retry (`None` for no message).
    pub channel: Channel,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub enum StepResult {
    /// The retry was attempted; `true` if it succeeded.
    Attempted { succeeded: bool, violations: Vec<RuleViolation> },
    /// The payer cancelled before the retry.
    Cancelled,
    /// The retry time is past the dunning window; nothing happened.
    OutsideWindow,
    /// The episode was already closed.
    AlreadyClosed,
}

/// The simulated world: configuration and seed. Payers are derived from the
/// seed on demand, so a world of millions of payers takes no memory.
#[derive(Debug, Clone)]
pub struct World {
    /// Parameters.
    pub cfg: WorldConfig,
    /// Seed of every random stream.
    pub seed: u64,
    /// Simulated period start (UTC midnight of `cfg.start`).
    pub start: DateTime<Utc>,
    /// Simulated period end.
    pub end: DateTime<Utc>,
    /// Rules the world checks (to charge penalties).
    pub rules: RulesConfig,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn pick<T: Copy>(rng: &mut impl Rng, items: &[(T, f64)]) -> T {
    let total: f64 = items.iter().map(|(_, w)| w.max(0.0)).sum();
    let mut u = rng.random::<f64>() * total;
    for (item, w) in items {
        u -= w.max(0.0);
        if u < 0.0 {
            return *item;
        }
    }
    items.last().expect("non-empty mix").0
}

impl World {
    /// A world of `months` months from `cfg.start`.
    pub fn new(cfg: WorldConfig, seed: u64, months: u32) -> World {
        let start = Utc.from_utc_datetime(&cfg.start.and_hms_opt(0, 0, 0).expect("midnight"));
        let end_date = cfg.start.checked_add_months(chrono::Months::new(months)).unwrap_or(cfg.start);
        let end = Utc.from_utc_datetime(&end_date.and_hms_opt(0, 0, 0).expect("midnight"));
        World { cfg, seed, start, end, rules: RulesConfig::default() }
    }

    /// Payer number `id`, derived from the seed.
    pub fn payer(&self, id: u32) -> Payer {
        let cfg = &self.cfg;
        let mut rng = stream(self.seed, id, u32::MAX, Stream::Payer);
        let mix: Vec<(usize, f64)> = cfg.countries.iter().enumerate().map(|(i, c)| (i, c.weight)).collect();
        let cm = &cfg.countries[pick(&mut rng, &mix)];
        let country = cm.country;
        let method = if rng.random::<f64>() < cm.debit_method_share {
            if country.as_str() == "US" {
                PaymentMethod::AchDebit
            } else {
                PaymentMethod::SepaDebit
            }
        } else {
            PaymentMethod::Card
        };
        let (card_brand, card_funding) = if method == PaymentMethod::Card {
            let brand = pick(&mut rng, &cfg.card_brands);
            let u = rng.random::<f64>();
            let funding = if u < cfg.prepaid_share {
                CardFunding::Prepaid
            } else if u < cfg.prepaid_share + cfg.debit_share {
                CardFunding::Debit
            } else {
                CardFunding::Credit
            };
            (Some(brand), Some(funding))
        } else {
            (None, None)
        };
        let plans: Vec<(usize, f64)> = cfg.plans.iter().enumerate().map(|(i, p)| (i, p.weight)).collect();
        let plan = &cfg.plans[pick(&mut rng, &plans)];
        // Nordic currencies have ~10× smaller units (rounded list prices).
        let scale = match cm.currency.as_str() {
            "SEK" | "NOK" => 10,
            "DKK" => 7,
            _ => 1,
        };
        let tenure_days = (Exp::new(1.0 / 400.0).expect("positive rate").sample(&mut rng) as u64).min(3650) + 1;
        let first_payment = self.cfg.start - Days::new(tenure_days);
        let period_hours = match plan.interval {
            BillingInterval::Week => 7 * 24,
            BillingInterval::Month => 30 * 24,
            BillingInterval::Year => 365 * 24,
        };
        // Merchants bill in batches: most charges between 04:00 and 12:00 UTC.
        let hour = Normal::<f64>::new(8.0, 2.5).expect("sd > 0").sample(&mut rng).clamp(0.0, 23.0) as i64;
        let offset_days = rng.random_range(0..period_hours / 24);
        let first_charge = self.start + Duration::days(offset_days) + Duration::hours(hour) + Duration::minutes(rng.random_range(0..60));
        let schedule = pay_schedule(&mut rng, country, self.cfg.start);
        let pay_days = schedule.pay_days_between(country, self.cfg.start - Days::new(70), self.end.date_naive() + Days::new(150));
        let b = &cfg.behaviour;
        let funds_logit = Normal::new(b.funds_logit_mean, b.funds_logit_sd).expect("sd ≥ 0").sample(&mut rng);
        let payday_sensitivity = match card_funding {
            Some(CardFunding::Credit) => b.payday_sensitivity_credit,
            _ => b.payday_sensitivity_debit,
        };
        let has_app = rng.random::<f64>() < cfg.channels.app_share;
        let mut responsiveness = [0.0; 5];
        for &(c, a, bb) in &cfg.channels.responsiveness {
            let r = Beta::new(a, bb).expect("checked positive").sample(&mut rng);
            let reachable = match c {
                Channel::Push | Channel::InApp => has_app,
                Channel::None => false,
                _ => true,
            };
            responsiveness[channel_ix(c)] = if reachable { r } else { 0.0 };
        }
        let timezone = if country.as_str() == "US" {
            // US payers spread over the four main zones (Census population shares).
            pick(
                &mut rng,
                &[
                    (chrono_tz::America::New_York, 0.47),
                    (chrono_tz::America::Chicago, 0.29),
                    (chrono_tz::America::Denver, 0.07),
                    (chrono_tz::America::Los_Angeles, 0.17),
                ],
            )
        } else {
            default_timezone(country)
        };
        Payer {
            id,
            country,
            timezone,
            method,
            card_brand,
            card_funding,
            currency: cm.currency,
            price_minor: plan.price_minor * scale,
            interval: plan.interval,
            first_payment,
            first_charge,
            schedule,
            pay_days,
            funds_logit,
            payday_sensitivity,
            responsiveness,
        }
    }

    /// The payer's liquidity in [0, 1] at `t`: 1 right after pay day, draining to 0 before the next,
    /// minus rent and bills early in the month.
    pub fn liquidity(&self, payer: &Payer, t: DateTime<Utc>) -> f64 {
        self.liquidity_local(payer, t.with_timezone(&payer.timezone).naive_local())
    }

    /// [`World::liquidity`] at a time already in the payer's local time
    /// (the conversion is the costly part; callers convert once).
    fn liquidity_local(&self, payer: &Payer, local: chrono::NaiveDateTime) -> f64 {
        let b = &self.cfg.behaviour;
        if let super::config::FundsModel::Bills { days, bite } = &b.funds {
            let d = local.day();
            let after_bill = days.iter().any(|&b| d >= b && d < b + 4);
            return if after_bill { (0.75 - bite).max(0.0) } else { 0.75 };
        }
        // Pay-day money arrives at `pay_credit_hour`; before that the day still belongs to the old period.
        let hours = local.hour() as f64 + local.minute() as f64 / 60.0;
        let shifted = hours - b.pay_credit_hour as f64;
        let (date, frac) =
            if shifted < 0.0 { (local.date() - Days::new(1), (shifted + 24.0) / 24.0) } else { (local.date(), shifted / 24.0) };
        let (prev, next) = pay_bracket(payer, date);
        let period = (next - prev).num_days().max(1) as f64;
        let elapsed = ((date - prev).num_days() as f64 + frac) / period;
        let mut l = (1.0 - elapsed.clamp(0.0, 1.0)).powf(b.drain_shape);
        if local.day() <= 5 && (date - prev).num_days() > 2 {
            l -= b.rent_bite;
        }
        l.clamp(0.0, 1.0)
    }

    fn hour_effect(&self, local: chrono::NaiveDateTime) -> f64 {
        let b = &self.cfg.behaviour;
        match local.hour() {
            4..=8 => b.early_morning_bonus,
            22..=23 | 0..=3 => -b.night_penalty,
            _ => 0.0,
        }
    }

    /// Log-odds that the payer has the money at `t` after `retries` earlier retries.
    fn funds_logit(&self, payer: &Payer, t: DateTime<Utc>, retries: u32) -> f64 {
        let local = t.with_timezone(&payer.timezone).naive_local();
        let l = self.liquidity_local(payer, local);
        payer.funds_logit + payer.payday_sensitivity * (2.0 * l - 1.0) + self.hour_effect(local)
            - self.cfg.behaviour.retry_decay * retries as f64
    }

    /// True probability that a retry at `at` succeeds, given whether the payer acted on a message
    /// (`acted`) and whether the payment method is updated by then.
    fn success_probability(&self, st: &EpisodeState, at: DateTime<Utc>, acted: bool, updated: bool) -> f64 {
        let b = &self.cfg.behaviour;
        let payer = &st.payer;
        let retries = (st.attempts.len() as u32).saturating_sub(1);
        let lifted = acted || st.lift_until.is_some_and(|u| at <= u);
        let last = st.last();
        match st.episode.decline.class() {
            DeclineClass::Hard => 0.0,
            DeclineClass::NeedsUpdate => {
                if updated || st.updated_at.is_some_and(|u| u <= at) {
                    // A new card still needs the money on it.
                    b.after_update_success * sigmoid(self.funds_logit(payer, at, 0) + 2.5)
                } else {
                    0.0
                }
            }
            DeclineClass::SoftFunds => {
                let lift = if lifted { self.cfg.channels.funds_lift } else { 0.0 };
                sigmoid(self.funds_logit(payer, at, retries) + lift)
            }
            DeclineClass::SoftIssuer => {
                let local = at.with_timezone(&payer.timezone).naive_local();
                let l = self.liquidity_local(payer, local);
                let lift = if lifted { self.cfg.channels.issuer_lift } else { 0.0 };
                sigmoid(
                    b.issuer_soft_logit - 2.0 * b.retry_decay * retries as f64
                        + 0.6 * (2.0 * l - 1.0)
                        + 0.5 * self.hour_effect(local)
                        + lift,
                )
            }
            DeclineClass::Technical => {
                let hours = (at - last.past.at).num_minutes() as f64 / 60.0;
                b.technical_max * (1.0 - (-hours.max(0.0) / b.technical_hours).exp())
            }
        }
    }

    fn message_cancel_probability(&self, st: &EpisodeState, channel: Channel) -> f64 {
        let c = &self.cfg.channels;
        let intrusive = if matches!(channel, Channel::Sms | Channel::Push) { c.intrusive_factor } else { 1.0 };
        ((c.cancel_base + c.fatigue * st.messages_sent() as f64) * intrusive).clamp(0.0, 1.0)
    }

    /// The true probability that retrying at `at` after sending `channel` one
    /// `message_lead_hours` earlier recovers the payment with that attempt —
    /// the expectation over whether the payer acts on the message and whether
    /// it makes them cancel. Used by the oracle and for evaluation; a real
    /// policy never sees it.
    pub fn true_success_probability(&self, st: &EpisodeState, at: DateTime<Utc>, channel: Channel) -> f64 {
        let attempted = self.true_success_if_attempted(st, at, channel);
        if channel == Channel::None {
            return attempted;
        }
        (1.0 - self.message_cancel_probability(st, channel)) * attempted
    }

    /// [`World::true_success_probability`] given that the retry is made: the message
    /// (if any) did not make the payer cancel. What a model's P(the retry succeeds, if
    /// it happens) should be; the backtest measures chosen retries' calibration against it.
    pub fn true_success_if_attempted(&self, st: &EpisodeState, at: DateTime<Utc>, channel: Channel) -> f64 {
        if st.closed.is_some() || at > st.episode.window_end {
            return 0.0;
        }
        let updated = st.updated_at.is_some_and(|u| u <= at);
        let quiet = self.success_probability(st, at, false, updated);
        if channel == Channel::None {
            return quiet;
        }
        let r = st.payer.responsiveness[channel_ix(channel)];
        let acted = match st.episode.decline.class() {
            DeclineClass::NeedsUpdate => self.success_probability(st, at, false, true),
            _ => self.success_probability(st, at, true, updated),
        };
        r * acted + (1.0 - r) * quiet
    }

    /// Cost of a message on a channel, in minor units.
    pub fn message_cost(&self, channel: Channel) -> f64 {
        self.cfg.costs.message.iter().find(|(c, _)| *c == channel).map(|(_, v)| *v).unwrap_or(0.0)
    }

    /// Start an episode for a failed charge of `payer`.
    pub fn start_episode(
        &self,
        payer: Payer,
        episode: Episode,
        network_code: Option<RawCode>,
        advice_code: Option<RawCode>,
    ) -> EpisodeState {
        let (pid, cycle) = (payer.id, episode.cycle);
        let mut latent = stream(self.seed, pid, cycle, Stream::Latent);
        let b = &self.cfg.behaviour;
        let days = |rate: f64, rng: &mut ChaCha8Rng| {
            let d = if rate > 0.0 { Exp::new(rate).expect("positive").sample(rng) } else { f64::INFINITY };
            episode.failed_at + Duration::minutes((d.min(10_000.0) * 24.0 * 60.0) as i64)
        };
        let spontaneous_update_at = days(b.spontaneous_update_per_day, &mut latent);
        let spontaneous_cancel_at = days(b.spontaneous_cancel_per_day, &mut latent);
        let first = WorldAttempt {
            past: PastAttempt {
                at: episode.failed_at,
                attempt_number: 0,
                outcome: Outcome::Failed,
                decline: Some(episode.decline),
                network_code,
                advice_code,
                payment_method_updated: false,
                card: None,
            },
            channel: Channel::None,
            true_probability: 0.0,
        };
        EpisodeState {
            payer,
            episode,
            attempts: vec![first],
            messages: Vec::new(),
            updated_at: None,
            lift_until: None,
            closed: None,
            cost: 0.0,
            violations: 0,
            spontaneous_update_at,
            spontaneous_cancel_at,
            pending_channel: Channel::None,
            attempt_rng: stream(self.seed, pid, cycle, Stream::Attempts),
            message_rng: stream(self.seed, pid, cycle, Stream::Messages),
        }
    }

    /// Run one action of a policy inside the world: [`World::approach`], then
    /// [`World::attempt`].
    pub fn step(&self, st: &mut EpisodeState, action: Action) -> StepResult {
        match self.approach(st, action) {
            Some(ended) => ended,
            None => self.attempt(st, action.retry_at),
        }
    }

    /// Send the action's message (one `message_lead_hours` before the retry)
    /// and let time pass to the retry time: the payer may act on the message,
    /// update the card or cancel. Returns how the episode ended if it did.
    /// A policy that must check the rules after the payer's reaction (an
    /// expired card retried only once updated) calls this, checks, then
    /// [`World::attempt`].
    pub fn approach(&self, st: &mut EpisodeState, action: Action) -> Option<StepResult> {
        if st.closed.is_some() {
            return Some(StepResult::AlreadyClosed);
        }
        if action.retry_at > st.episode.window_end {
            return Some(StepResult::OutsideWindow);
        }
        let send_at = action.retry_at - Duration::hours(self.cfg.logging.message_lead_hours);
        if st.spontaneous_cancel_at <= action.retry_at {
            st.closed = Some(Closed::Cancelled(st.spontaneous_cancel_at.max(st.last().past.at)));
            return Some(StepResult::Cancelled);
        }
        let class = st.episode.decline.class();
        // Two message draws whether or not a message is sent, so the k-th
        // message of every policy uses the same numbers.
        let (u_act, u_cancel) = (st.message_rng.random::<f64>(), st.message_rng.random::<f64>());
        if action.channel != Channel::None {
            st.cost += self.message_cost(action.channel);
            let cancel_p = self.message_cancel_probability(st, action.channel);
            st.messages.push((send_at, action.channel));
            if u_cancel < cancel_p {
                st.closed = Some(Closed::Cancelled(send_at));
                return Some(StepResult::Cancelled);
            }
            if u_act < st.payer.responsiveness[channel_ix(action.channel)] {
                match class {
                    DeclineClass::NeedsUpdate if self.cfg.channels.messages_update_cards => {
                        st.updated_at.get_or_insert(send_at);
                    }
                    DeclineClass::NeedsUpdate => {}
                    DeclineClass::SoftFunds | DeclineClass::SoftIssuer => {
                        st.lift_until = Some(send_at + Duration::hours(self.cfg.channels.lift_hours));
                    }
                    DeclineClass::Hard | DeclineClass::Technical => {}
                }
            }
        }
        if class == DeclineClass::NeedsUpdate && st.spontaneous_update_at <= action.retry_at {
            st.updated_at.get_or_insert(st.spontaneous_update_at);
        }
        st.pending_channel = action.channel;
        None
    }

    /// Attempt the retry at `at` (after [`World::approach`]): check the
    /// network rules (breaking one costs a penalty; the world still lets the
    /// issuer answer) and draw the outcome from the true probability.
    pub fn attempt(&self, st: &mut EpisodeState, at: DateTime<Utc>) -> StepResult {
        if st.closed.is_some() {
            return StepResult::AlreadyClosed;
        }
        let action = Action { retry_at: at, channel: std::mem::replace(&mut st.pending_channel, Channel::None) };
        let class = st.episode.decline.class();
        let updated_since_last = st.updated_since_last(action.retry_at);
        let verdict =
            check_retry(st.facts(), &st.past(), Proposal { at: action.retry_at, payment_method_updated: updated_since_last }, &self.rules);
        if !verdict.is_allowed() {
            st.violations += 1;
            st.cost += self.cfg.costs.rule_violation;
        }
        let p = if verdict.violations.iter().any(|v| matches!(v, RuleViolation::NotAfterLastAttempt { .. })) {
            0.0
        } else {
            self.success_probability(st, action.retry_at, false, st.updated_at.is_some_and(|u| u <= action.retry_at))
        };
        // Three attempt draws every time (outcome, advice present, advice noise): common random numbers.
        let (u, u_adv, u_noise) = (st.attempt_rng.random::<f64>(), st.attempt_rng.random::<f64>(), st.attempt_rng.next_u64());
        st.cost += self.cfg.costs.attempt;
        let succeeded = u < p;
        let decline = if succeeded {
            None
        } else if class == DeclineClass::NeedsUpdate && st.updated_at.is_some_and(|t| t <= action.retry_at) {
            Some(DeclineCode::InsufficientFunds) // the new card works but lacks the money
        } else {
            Some(st.episode.decline)
        };
        let (network_code, advice_code) = match decline {
            Some(d) => self.codes_for(&st.payer, d, action.retry_at, u_adv, u_noise),
            None => (None, None),
        };
        let attempt_number = st.attempts.len() as u32;
        st.attempts.push(WorldAttempt {
            past: PastAttempt {
                at: action.retry_at,
                attempt_number,
                outcome: if succeeded { Outcome::Succeeded } else { Outcome::Failed },
                decline,
                network_code,
                advice_code,
                payment_method_updated: updated_since_last,
                card: None,
            },
            channel: action.channel,
            true_probability: p,
        });
        if succeeded {
            st.closed = Some(Closed::Recovered(action.retry_at));
        }
        StepResult::Attempted { succeeded, violations: verdict.violations }
    }

    /// Raw network and advice codes a decline arrives with. Mastercard
    /// insufficient-funds declines sometimes carry advice 24–30: the issuer's
    /// noisy estimate of when the money will be there.
    pub fn codes_for(
        &self,
        payer: &Payer,
        d: DeclineCode,
        at: DateTime<Utc>,
        u_adv: f64,
        u_noise: u64,
    ) -> (Option<RawCode>, Option<RawCode>) {
        let network = raw_code_for(payer.method, d);
        let mut advice = None;
        if payer.card_brand == Some(CardBrand::Mastercard)
            && d == DeclineCode::InsufficientFunds
            && u_adv < self.cfg.failures.mastercard_advice_share
        {
            let local = at.with_timezone(&payer.timezone).date_naive();
            let (_, next) = pay_bracket(payer, local);
            let days = (next - local).num_days() as f64 + 0.2;
            // log-normal noise, sd 0.35, from the 64 random bits
            let z = {
                let u1 = ((u_noise >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                let u2 = ((u_noise & 0x7ff) as f64 + 0.5) / 2048.0;
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            };
            let est = days * (0.35 * z).exp();
            let code = match est {
                e if e < 0.1 => "24",
                e if e < 1.5 => "25",
                e if e < 3.0 => "26",
                e if e < 5.0 => "27",
                e if e < 7.0 => "28",
                e if e < 9.0 => "29",
                _ => "30",
            };
            advice = code.parse().ok();
        }
        (network, advice)
    }

    /// The stream of a payer's scheduled-charge draws, consumed in cycle order by [`World::charge_outcome`].
    pub fn charges_rng(&self, payer: u32) -> ChaCha8Rng {
        stream(self.seed, payer, u32::MAX, Stream::Charges)
    }

    /// Draw the outcome of a scheduled charge of `payer` at `at` from the payer's
    /// charges stream (two draws per charge): `None` when it succeeds, else the decline.
    pub fn charge_outcome(&self, payer: &Payer, rng: &mut ChaCha8Rng, at: DateTime<Utc>) -> Option<DeclineCode> {
        let f = &self.cfg.failures;
        let (u_fail, u_reason) = (rng.random::<f64>(), rng.random::<f64>());
        let (rate, mix) = match payer.method {
            PaymentMethod::Card => (f.card_failure_rate, &f.card_decline_mix),
            _ => (f.debit_failure_rate, &f.debit_decline_mix),
        };
        // Funds declines happen when the money is short: weight them by the
        // payer's chance of not having it now (mean ≈ 1 over the population).
        let short = 1.6 * (1.0 - sigmoid(self.funds_logit(payer, at, 0)));
        let weight = |d: DeclineCode, w: f64| if d.class() == DeclineClass::SoftFunds { w * short } else { w };
        let base: f64 = mix.iter().map(|(_, w)| w).sum();
        let now: f64 = mix.iter().map(|&(d, w)| weight(d, w)).sum();
        let p_fail = (rate * now / base.max(1e-12)).min(1.0);
        if u_fail >= p_fail {
            return None;
        }
        let mut u = u_reason * now;
        for &(d, w) in mix {
            u -= weight(d, w);
            if u < 0.0 {
                return Some(d);
            }
        }
        mix.last().map(|(d, _)| *d)
    }

    /// The logging policy's random stream for an episode.
    pub fn logging_rng(&self, payer: u32, cycle: u32) -> ChaCha8Rng {
        stream(self.seed, payer, cycle, Stream::Logging)
    }

    /// The payer's own stream for draws outside episodes (churn, which fields a row leaves empty).
    pub fn payer_rng(&self, payer: u32) -> ChaCha8Rng {
        stream(self.seed, payer, u32::MAX, Stream::Logging)
    }
}

/// Previous pay day (≤ date) and next pay day (> date) of a payer.
pub fn pay_bracket(payer: &Payer, date: NaiveDate) -> (NaiveDate, NaiveDate) {
    let days = &payer.pay_days;
    let i = days.partition_point(|d| *d <= date);
    if i > 0 && i < days.len() {
        (days[i - 1], days[i])
    } else {
        (payer.schedule.previous_pay_day(payer.country, date), payer.schedule.next_pay_day(payer.country, date))
    }
}

/// A representative raw code for a normalized decline, by payment method
/// (the inverse of the declines tables for the codes the world emits).
pub fn raw_code_for(method: PaymentMethod, d: DeclineCode) -> Option<RawCode> {
    use DeclineCode::*;
    let code = match (method, d) {
        (PaymentMethod::Card, InsufficientFunds) => "51",
        (PaymentMethod::Card, DoNotHonor) => "05",
        (PaymentMethod::Card, GenericDecline) => "03",
        (PaymentMethod::Card, ExpiredCard) => "54",
        (PaymentMethod::Card, CardVelocityExceeded) => "61",
        (PaymentMethod::Card, IssuerNotAvailable) => "91",
        (PaymentMethod::Card, ProcessingError) => "96",
        (PaymentMethod::Card, TryAgainLater) => "19",
        (PaymentMethod::Card, LostCard) => "41",
        (PaymentMethod::Card, StolenCard) => "43",
        (PaymentMethod::Card, Fraudulent) => "59",
        (PaymentMethod::Card, AccountClosed) => "46",
        (PaymentMethod::SepaDebit, InsufficientFunds) => "AM04",
        (PaymentMethod::SepaDebit, GenericDecline) => "MS03",
        (PaymentMethod::SepaDebit, AccountClosed) => "AC04",
        (PaymentMethod::SepaDebit, InvalidAccount) => "AC01",
        (PaymentMethod::SepaDebit, RevocationOfAuthorization) => "MD01",
        (PaymentMethod::SepaDebit, StopPaymentOrder) => "MS02",
        (PaymentMethod::AchDebit, InsufficientFunds) => "R01",
        (PaymentMethod::AchDebit, AccountClosed) => "R02",
        (PaymentMethod::AchDebit, InvalidAccount) => "R03",
        (PaymentMethod::AchDebit, RevocationOfAuthorization) => "R07",
        (PaymentMethod::AchDebit, StopPaymentOrder) => "R08",
        _ => return None,
    };
    code.parse().ok()
}

/// Draw a pay schedule by country from [`crate::calendar::schedule_mix`], after the
/// benefits share ([`crate::calendar::BENEFITS_SHARE`]); phases of (bi/four-)weekly pay
/// are one of the first two Fridays of the simulation.
fn pay_schedule(rng: &mut ChaCha8Rng, country: Country, start: NaiveDate) -> PaySchedule {
    use crate::calendar::{schedule_kind_at, ScheduleKind, BENEFITS_DAY, BENEFITS_SHARE};
    use chrono::Weekday::Fri;
    let friday_anchor = |rng: &mut ChaCha8Rng| {
        let mut d = start;
        while d.weekday() != Fri {
            d = d.succ_opt().unwrap_or(d);
        }
        d + Days::new(if rng.random::<bool>() { 7 } else { 0 })
    };
    if rng.random::<f64>() < BENEFITS_SHARE {
        return PaySchedule::MonthlyOnDay { day: BENEFITS_DAY };
    }
    match schedule_kind_at(country, rng.random::<f64>()) {
        ScheduleKind::WeeklyFriday => PaySchedule::Weekly { weekday: Fri },
        ScheduleKind::BiweeklyFriday => PaySchedule::Biweekly { anchor: friday_anchor(rng) },
        ScheduleKind::FourWeeklyFriday => PaySchedule::FourWeekly { anchor: friday_anchor(rng) },
        ScheduleKind::SemiMonthly => PaySchedule::SemiMonthly,
        ScheduleKind::LastBusinessDay => PaySchedule::LastBusinessDay,
        ScheduleKind::MonthlyOnDay(day) => PaySchedule::MonthlyOnDay { day },
    }
}
