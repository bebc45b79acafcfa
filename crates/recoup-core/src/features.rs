//! The one feature definition: "retry payment P at time t after message c".
//!
//! Every feature is categorical (numbers are bucketed), so a feature vector is
//! the list of active columns, one per group and one per cross of two groups,
//! into a fixed [`Schema`]. A linear model's score is the sum of the weights
//! of the active columns; the groups are split into **payment-level** ones
//! (fixed while one failed payment waits for its next retry) and **candidate**
//! ones (that change with the retry time and the channel), so scoring a grid of
//! candidates adds the payment-level part once.
//!
//! Training builds [`PaymentState`] from history rows (`recoup::train`) and
//! scoring builds it from a request; both then call [`PaymentState::encode`].
//! A test builds both for sampled rows and compares them value for value.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use std::sync::LazyLock;

use chrono::{DateTime, Datelike, Days, NaiveDate, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use strum::VariantArray;

pub use crate::attempt::EarlierAttempt;
use crate::declines::{DeclineClass, DeclineCode};
use crate::domain::{BillingInterval, CardBrand, CardFunding, Channel, Country, Currency, PaymentMethod, RawCode};
use crate::payday::{infer, Evidence, PayDayEstimate};

/// Bump when the meaning of any column changes: artifacts trained under another
/// version are refused.
pub const FEATURE_VERSION: u32 = 2;

impl From<&PaymentFacts> for crate::rules::Network {
    fn from(f: &PaymentFacts) -> crate::rules::Network {
        crate::rules::Network { method: f.method, card_brand: f.card_brand }
    }
}

/// The facts about a payer and a failed payment that do not change while it waits.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentFacts {
    pub amount_minor: i64,
    pub currency: Currency,
    pub method: PaymentMethod,
    pub card_brand: Option<CardBrand>,
    pub card_funding: Option<CardFunding>,
    pub country: Country,
    pub timezone: Tz,
    pub billing_interval: Option<BillingInterval>,
    pub tenure_days: Option<u32>,
}

/// A failed payment ready to be scored at any candidate (time, channel).
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentState {
    facts: PaymentFacts,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
    last_decline: DeclineCode,
    /// Retries already made (the candidate is retry number `retries + 1`).
    retries: u32,
    messages: u32,
    updated: bool,
    advice: usize,
    payday: PayDayEstimate,
    /// The inferred schedule's pay days around the dunning window, sorted.
    pay_days: Vec<NaiveDate>,
    /// Levels of the payment-level groups (candidate crosses need them).
    levels: [usize; N_FIXED],
    /// Active columns of the payment-level groups and crosses.
    fixed: Vec<u16>,
}

/// A candidate next retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// When to retry.
    pub at: DateTime<Utc>,
    /// Message to send before it.
    pub channel: Channel,
}

/// The time-dependent candidate levels at one retry time (see [`PaymentState::time_levels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeLevels([u8; N_CAND]);

impl TimeLevels {
    /// The levels of the two spacing groups, `hours_since_last` and `days_since_first`
    /// (the order of [`SPACING_EDGES_HOURS`]).
    pub fn spacing(&self) -> [usize; 2] {
        [usize::from(self.0[G_SINCE_LAST - N_FIXED]), usize::from(self.0[G_SINCE_FIRST - N_FIXED])]
    }

    /// The levels of `local_hour` and of `days_since_payday`, the one candidate group the
    /// local hour crosses (see [`PaymentState::hour_parts`]).
    pub fn hour_and_pay(&self) -> [usize; 2] {
        [usize::from(self.0[G_HOUR - N_FIXED]), usize::from(self.0[G_SINCE_PAY - N_FIXED])]
    }

    /// These levels with the local hour at level `l` (a test's).
    #[cfg(test)]
    pub fn with_hour(&self, l: usize) -> TimeLevels {
        let mut t = *self;
        t.0[G_HOUR - N_FIXED] = l as u8;
        t
    }

    /// Levels with only the spacing groups set (a test's).
    #[cfg(test)]
    pub fn with_spacing(spacing: [usize; 2]) -> TimeLevels {
        let mut t = TimeLevels::default();
        t.0[G_SINCE_LAST - N_FIXED] = spacing[0] as u8;
        t.0[G_SINCE_FIRST - N_FIXED] = spacing[1] as u8;
        t
    }

    /// Whether both have the same level in every [`DAY_GROUPS`] group.
    pub fn same_day_levels(&self, other: &TimeLevels) -> bool {
        (0..N_CAND).all(|i| DAY_GROUPS >> (N_FIXED + i) & 1 == 0 || self.0[i] == other.0[i])
    }
}

/// The UTC offset, in seconds, of `tz` at `start + h` hours (Unix seconds) for
/// `h` in `0..hours`. Looked up every [`OFFSET_STEP_HOURS`] hours and at the
/// last hour; between two lookups that agree, every hour shares their offset,
/// and between two that differ each hour is looked up. (tzdb never moves a
/// zone's offset and back within six hours; a test compares every hour against
/// a direct lookup across DST changes.)
fn hourly_offsets(tz: Tz, start: i64, hours: usize) -> Vec<i32> {
    let at = |h: usize| {
        let utc = DateTime::from_timestamp(start + 3600 * h as i64, 0).expect("grid times are in range").naive_utc();
        tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()
    };
    let mut out = Vec::with_capacity(hours);
    let mut h = 0;
    while h < hours {
        let end = (h + OFFSET_STEP_HOURS).min(hours - 1);
        let (a, b) = (at(h), at(end));
        out.push(a);
        for k in h + 1..end {
            out.push(if a == b { a } else { at(k) });
        }
        if end > h {
            out.push(b);
        }
        h = end + 1;
    }
    out
}

/// A time column's slot: a candidate group, a cross (index among all crosses), a triple.
#[derive(Clone, Copy)]
enum TimeSlot {
    Group(usize),
    Cross(usize, usize, usize),
    Triple(usize, usize, usize, usize),
}

/// The time columns' slots in [`PaymentState::time_columns`] order, each with the
/// bit mask of the candidate groups it depends on.
static TIME_SLOTS: LazyLock<Vec<(TimeSlot, u32)>> = LazyLock::new(|| {
    let bit = |g: usize| if g >= N_FIXED { 1u32 << (g - N_FIXED) } else { 0 };
    let mut out: Vec<(TimeSlot, u32)> =
        (N_FIXED..N_FIXED + N_CAND).filter(|&g| g != G_CHANNEL).map(|g| (TimeSlot::Group(g), bit(g))).collect();
    for (k, &(a, b)) in CAND_CROSSES.iter().enumerate().filter(|(_, &(a, b))| a != G_CHANNEL && b != G_CHANNEL) {
        out.push((TimeSlot::Cross(FIXED_CROSSES.len() + k, a, b), bit(a) | bit(b)));
    }
    for (k, &(a, b, c)) in TRIPLES.iter().enumerate().filter(|(_, t)| ![t.0, t.1, t.2].contains(&G_CHANNEL)) {
        out.push((TimeSlot::Triple(k, a, b, c), bit(a) | bit(b) | bit(c)));
    }
    out
});

/// Hours between UTC-offset lookups of a decision grid (see [`hourly_offsets`]).
const OFFSET_STEP_HOURS: usize = 6;

/// One hour of a decision grid: its time levels and its local clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridHour {
    pub levels: TimeLevels,
    /// Local hour, 0–23.
    pub local_hour: u32,
    /// Local weekday, Monday = 0.
    pub weekday: u32,
    pub local_date: NaiveDate,
}

/// Days since and until the payer's pay days, and the day of month, of one local day.
struct DayLevels {
    since: i64,
    until: i64,
    day_of_month: u32,
}

/// Which candidate columns [`PaymentState::columns_at`] writes.
#[derive(Clone, Copy)]
enum Part {
    All,
    TimeOnly,
    ChannelOnly,
}

/// Level edges of `hours_since_last` (hours) and `days_since_first` (days): the
/// resolution at which the model sees timing ([`crate::support`] reads the time
/// since the failure at it).
pub const HOURS_SINCE_LAST_EDGES: [f64; 7] = [2.0, 6.0, 12.0, 24.0, 48.0, 96.0, 168.0];
pub const DAYS_SINCE_FIRST_EDGES: [f64; 6] = [1.0, 2.0, 4.0, 7.0, 14.0, 21.0];
/// Level edges of `local_hour` (hours of the local day).
pub const LOCAL_HOUR_EDGES: [f64; 6] = [4.0, 7.0, 10.0, 14.0, 18.0, 22.0];
/// The two spacing groups' level edges in hours: `hours_since_last`, `days_since_first`.
pub const SPACING_EDGES_HOURS: [&[f64]; 2] = [&HOURS_SINCE_LAST_EDGES, &DAYS_SINCE_FIRST_HOURS];
const DAYS_SINCE_FIRST_HOURS: [f64; 6] = {
    let mut h = DAYS_SINCE_FIRST_EDGES;
    let mut i = 0;
    while i < h.len() {
        h[i] *= 24.0;
        i += 1;
    }
    h
};
/// Levels of `retries_before` (0–4 each, then 5+ together).
pub const RETRIES_BEFORE_LEVELS: usize = 5;

/// Pay days are computed this far around the first failure: covers any dunning window.
const PAY_DAYS_BEFORE: u64 = 70;
const PAY_DAYS_AFTER: u64 = 130;

impl PaymentState {
    /// The state of a failed payment after `earlier` attempts (at least the failed
    /// original charge, in order), with the pay-day `evidence` from the payer's
    /// payments before this one. `updated_now`: the payer updated the payment
    /// method since the last attempt. `None` when `earlier` is empty.
    pub fn new(facts: PaymentFacts, earlier: &[EarlierAttempt], updated_now: bool, evidence: &[Evidence]) -> Option<PaymentState> {
        let payday = infer(facts.country, evidence);
        PaymentState::with_payday(facts, earlier, updated_now, payday)
    }

    /// [`PaymentState::new`] with the pay-day inference already made (the batch
    /// path infers once per payment, not once per retry).
    pub fn with_payday(facts: PaymentFacts, earlier: &[EarlierAttempt], updated_now: bool, payday: PayDayEstimate) -> Option<PaymentState> {
        let first = earlier.first()?;
        let last = earlier.last()?;
        let first_day = first.at.with_timezone(&facts.timezone).date_naive();
        let pay_days =
            payday.schedule.pay_days_between(facts.country, first_day - Days::new(PAY_DAYS_BEFORE), first_day + Days::new(PAY_DAYS_AFTER));
        let mut s = PaymentState {
            first_at: first.at,
            last_at: last.at,
            last_decline: last.decline,
            retries: earlier.len() as u32 - 1,
            messages: earlier.iter().filter(|a| matches!(a.channel, Some(c) if c != Channel::None)).count() as u32,
            updated: updated_now || earlier.iter().skip(1).any(|a| a.payment_method_updated),
            advice: advice_level(last.advice_code),
            payday,
            pay_days,
            facts,
            levels: [0; N_FIXED],
            fixed: Vec::new(),
        };
        s.levels = s.fixed_levels();
        s.fixed = s.fixed_columns();
        Some(s)
    }

    /// The payer's inferred pay schedule.
    pub fn payday(&self) -> &PayDayEstimate {
        &self.payday
    }

    /// The decline the next retry answers.
    pub fn last_decline(&self) -> DeclineCode {
        self.last_decline
    }

    /// Messages sent before the earlier attempts of this payment.
    pub fn messages(&self) -> u32 {
        self.messages
    }

    /// Payment-level active columns (the same for every candidate).
    pub fn fixed(&self) -> &[u16] {
        &self.fixed
    }

    /// Every group's level at time levels `t` with `channel` (the scoring path's
    /// tree input; equals [`group_levels`] of the encoded vector).
    pub fn group_levels(&self, t: &TimeLevels, channel: Channel) -> GroupLevels {
        std::array::from_fn(|g| match g {
            g if g < N_FIXED => self.levels[g] as u8,
            G_CHANNEL => channel as u8,
            g => t.0[g - N_FIXED],
        })
    }

    fn fixed_levels(&self) -> [usize; N_FIXED] {
        let f = &self.facts;
        [
            self.last_decline as usize,
            self.last_decline.class() as usize,
            (self.retries as usize).min(RETRIES_BEFORE_LEVELS),
            amount_level(f.amount_minor, f.currency),
            country_level(f.country),
            f.method as usize,
            f.card_brand.map_or(0, |b| b as usize + 1),
            f.card_funding.map_or(0, |b| b as usize + 1),
            f.billing_interval.map_or(0, |b| b as usize + 1),
            tenure_level(f.tenure_days),
            (self.messages as usize).min(2),
            self.updated as usize,
            self.advice,
            confidence_level(self.payday.confidence),
        ]
    }

    fn fixed_columns(&self) -> Vec<u16> {
        let levels = self.levels;
        let mut out = Vec::with_capacity(N_FIXED + FIXED_CROSSES.len());
        for (g, &l) in levels.iter().enumerate() {
            out.push(SCHEMA.column(g, l));
        }
        for (k, &(a, b)) in FIXED_CROSSES.iter().enumerate() {
            out.push(SCHEMA.cross(k, levels[a], levels[b]));
        }
        out
    }

    /// Per spacing group ([`SPACING_EDGES_HOURS`]' order), per level: the sum of
    /// `weights` over the columns that the group's level sets for this payment (its
    /// own column and its crosses with payment-level groups). A spacing group crosses
    /// no other candidate group (a test holds it), so a candidate's logit
    /// with one spacing group at another level differs by exactly these parts.
    pub fn spacing_parts(&self, weights: &[f64]) -> [Vec<f64>; 2] {
        [G_SINCE_LAST, G_SINCE_FIRST].map(|g| {
            (0..=SPACING_EDGES_HOURS[g - G_SINCE_LAST].len())
                .map(|l| self.group_part(weights, g, &|h| if h == g { l } else { 0 }))
                .collect()
        })
    }

    /// Per `days_since_payday` level, per `local_hour` level: the sum of `weights` over
    /// the columns that the hour's level sets for this payment (its own column, its
    /// crosses with payment-level groups and with `days_since_payday`). The local hour
    /// crosses no other candidate group (a test holds it), so a candidate's logit with
    /// the local hour at another level differs by exactly these parts at its own
    /// `days_since_payday` level.
    pub fn hour_parts(&self, weights: &[f64]) -> Vec<Vec<f64>> {
        let sizes = &*GROUP_SIZES;
        (0..sizes[G_SINCE_PAY])
            .map(|pay| (0..sizes[G_HOUR]).map(|hour| self.group_part(weights, G_HOUR, &|g| if g == G_HOUR { hour } else { pay })).collect())
            .collect()
    }

    /// The sum of `weights` over the time columns that involve candidate group `g`, with
    /// the candidate groups at `level(group)` and the payment-level groups at this payment's.
    fn group_part(&self, weights: &[f64], g: usize, level: &dyn Fn(usize) -> usize) -> f64 {
        let schema = &*SCHEMA;
        let bit = 1u32 << (g - N_FIXED);
        let level = |h: usize| if h < N_FIXED { self.levels[h] } else { level(h) };
        TIME_SLOTS
            .iter()
            .filter(|(_, mask)| mask & bit != 0)
            .map(|(slot, _)| {
                let c = match *slot {
                    TimeSlot::Group(g) => schema.column(g, level(g)),
                    TimeSlot::Cross(k, a, b) => schema.cross(k, level(a), level(b)),
                    TimeSlot::Triple(k, a, b, c) => schema.triple(k, level(a), level(b), level(c)),
                };
                weights.get(usize::from(c)).copied().unwrap_or(0.0)
            })
            .sum()
    }

    /// The candidate-level active columns for `c`, appended to `out`.
    pub fn candidate_columns(&self, c: &Candidate, out: &mut Vec<u16>) {
        self.columns_at(&self.time_levels(c.at), c.channel, Part::All, out);
    }

    /// The candidate levels that depend only on the retry time (one tz conversion
    /// and pay-day lookup), shared by every channel at that time.
    pub fn time_levels(&self, at: DateTime<Utc>) -> TimeLevels {
        let local = at.with_timezone(&self.facts.timezone).naive_local();
        let day = self.day_levels(local.date());
        self.assemble(
            (at - self.last_at).num_minutes(),
            (at - self.first_at).num_minutes(),
            local.hour(),
            local.weekday().num_days_from_monday(),
            &day,
        )
    }

    /// [`PaymentState::time_levels`] at `start`, `start + 1 h`, … (`hours` times),
    /// value for value, for a decision grid: per hour one UTC-offset lookup and
    /// integer arithmetic, calendar work once per local day (a test holds the two
    /// equal across DST changes).
    pub fn hourly_levels(&self, start: DateTime<Utc>, hours: usize) -> Vec<GridHour> {
        let (since_last, since_first) = (start - self.last_at, start - self.first_at);
        // Minutes since an earlier time, `h` hours after `start`, exactly as
        // `TimeDelta::num_minutes` truncates (integer arithmetic when non-negative).
        let minutes = |d: chrono::TimeDelta, h: i64| {
            if d >= chrono::TimeDelta::zero() {
                (d.num_seconds() + 3600 * h) / 60
            } else {
                (d + chrono::TimeDelta::hours(h)).num_minutes()
            }
        };
        let start_secs = start.timestamp();
        let offsets = hourly_offsets(self.facts.timezone, start_secs, hours);
        let mut day: Option<(i64, NaiveDate, DayLevels)> = None;
        // 1970-01-01 is day 719,163 from the common era.
        let local_date = |d: i64| NaiveDate::from_num_days_from_ce_opt((d + 719_163) as i32).expect("grid dates are in range");
        (0..hours as i64)
            .map(|h| {
                let local_secs = start_secs + 3600 * h + offsets[h as usize] as i64;
                let local_day = local_secs.div_euclid(86_400);
                if day.as_ref().is_none_or(|(d, _, _)| *d != local_day) {
                    let date = local_date(local_day);
                    day = Some((local_day, date, self.day_levels(date)));
                }
                let hour = (local_secs.rem_euclid(86_400) / 3600) as u32;
                let weekday = (local_day + 3).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
                let (_, date, levels) = day.as_ref().expect("set above");
                let levels = self.assemble(minutes(since_last, h), minutes(since_first, h), hour, weekday, levels);
                GridHour { levels, local_hour: hour, weekday, local_date: *date }
            })
            .collect()
    }

    /// Pay-cycle and calendar facts of a local day.
    fn day_levels(&self, day: NaiveDate) -> DayLevels {
        let i = self.pay_days.partition_point(|p| *p <= day);
        let since = if i > 0 { (day - self.pay_days[i - 1]).num_days() } else { 99 };
        let until = self.pay_days.get(i).map_or(99, |p| (*p - day).num_days());
        DayLevels { since, until, day_of_month: day.day() }
    }

    fn assemble(&self, minutes_since_last: i64, minutes_since_first: i64, hour: u32, weekday: u32, day: &DayLevels) -> TimeLevels {
        let hours_since_last = minutes_since_last as f64 / 60.0;
        let days_since_first = minutes_since_first as f64 / 1440.0;
        let levels = [
            bucket(hours_since_last, &HOURS_SINCE_LAST_EDGES),
            bucket(days_since_first, &DAYS_SINCE_FIRST_EDGES),
            bucket(hour as f64, &LOCAL_HOUR_EDGES),
            weekday as usize,
            bucket(day.since as f64, &[1.0, 2.0, 3.0, 4.0, 7.0, 14.0]),
            bucket(day.until as f64, &[2.0, 3.0, 4.0, 7.0, 14.0]),
            bucket(day.day_of_month as f64, &[6.0, 11.0, 16.0, 21.0, 26.0]),
            0, // the channel's slot: filled per channel
            cycle_level(day.since, day.until),
        ];
        // Every candidate group has fewer than 256 levels (checked by the schema test).
        TimeLevels(levels.map(|l| l as u8))
    }

    /// The candidate columns at `t` that do not involve the channel (scored once per hour).
    pub fn time_columns(&self, t: &TimeLevels, out: &mut Vec<u16>) {
        self.columns_at(t, Channel::None, Part::TimeOnly, out);
    }

    /// The columns that involve `channel`: the channel group and its crosses. They
    /// depend on the payment, never on the retry time (see [`CHANNEL_TERMS_ARE_TIMELESS`]),
    /// so a grid computes them once per channel.
    pub fn channel_columns(&self, channel: Channel, out: &mut Vec<u16>) {
        self.columns_at(&TimeLevels([0; N_CAND]), channel, Part::ChannelOnly, out);
    }

    /// Move `cols`, the time columns at levels `from` (as [`PaymentState::time_columns`]
    /// wrote them), to those at `to`, recomputing only the columns whose groups
    /// changed and calling `changed(old, new)` for each column that differs. A grid
    /// walks hour to hour this way: most hours change one or two groups.
    pub fn update_time_columns(&self, from: &TimeLevels, to: &TimeLevels, cols: &mut [u16], mut changed: impl FnMut(u16, u16)) {
        let moved = (0..N_CAND).filter(|&i| from.0[i] != to.0[i]).fold(0u32, |m, i| m | 1 << i);
        if moved == 0 {
            return;
        }
        let schema = &*SCHEMA;
        let level = |g: usize| if g < N_FIXED { self.levels[g] } else { usize::from(to.0[g - N_FIXED]) };
        for (i, (slot, mask)) in TIME_SLOTS.iter().enumerate() {
            if mask & moved == 0 {
                continue;
            }
            let c = match *slot {
                TimeSlot::Group(g) => schema.column(g, level(g)),
                TimeSlot::Cross(k, a, b) => schema.cross(k, level(a), level(b)),
                TimeSlot::Triple(k, a, b, c) => schema.triple(k, level(a), level(b), level(c)),
            };
            if c != cols[i] {
                changed(cols[i], c);
                cols[i] = c;
            }
        }
    }

    /// Candidate columns in vector order, keeping those `part` asks for.
    fn columns_at(&self, t: &TimeLevels, channel: Channel, part: Part, out: &mut Vec<u16>) {
        let schema = &*SCHEMA;
        let fixed = &self.levels;
        let mut levels = t.0.map(usize::from);
        levels[G_CHANNEL - N_FIXED] = channel as usize;
        let keep = |involves_channel: bool| match part {
            Part::All => true,
            Part::TimeOnly => !involves_channel,
            Part::ChannelOnly => involves_channel,
        };
        for (g, &l) in levels.iter().enumerate() {
            if keep(N_FIXED + g == G_CHANNEL) {
                out.push(schema.column(N_FIXED + g, l));
            }
        }
        let level = |g: usize| if g < N_FIXED { fixed[g] } else { levels[g - N_FIXED] };
        for (k, &(a, b)) in CAND_CROSSES.iter().enumerate() {
            if keep(a == G_CHANNEL || b == G_CHANNEL) {
                out.push(schema.cross(FIXED_CROSSES.len() + k, level(a), level(b)));
            }
        }
        for (k, &(a, b, c)) in TRIPLES.iter().enumerate() {
            if keep([a, b, c].contains(&G_CHANNEL)) {
                out.push(schema.triple(k, level(a), level(b), level(c)));
            }
        }
    }

    /// All active columns for candidate `c`: the payment-level ones, then the candidate ones.
    pub fn encode(&self, c: &Candidate) -> Vec<u16> {
        let mut v = self.fixed.clone();
        self.candidate_columns(c, &mut v);
        v
    }
}

/// Pay-day evidence from one earlier payment of the payer, given its attempts in
/// order as (time, decline or `None` for the success): funds declines, and a
/// recovery when a funds-declined payment went through. Dated in the payer's zone;
/// each comes with the time it became known (to keep later evidence out of training).
pub fn payment_evidence(tz: Tz, attempts: &[(DateTime<Utc>, Option<DeclineCode>)]) -> Vec<(DateTime<Utc>, Evidence)> {
    let day = |t: DateTime<Utc>| t.with_timezone(&tz).date_naive();
    let mut out = Vec::new();
    let mut last_funds: Option<DateTime<Utc>> = None;
    for &(at, decline) in attempts {
        match decline {
            Some(d) if d.class() == DeclineClass::SoftFunds => {
                out.push((at, Evidence::FundsDecline(day(at))));
                last_funds = Some(at);
            }
            Some(_) => {}
            None => {
                if let Some(f) = last_funds {
                    out.push((at, Evidence::Recovered { declined: day(f), paid: day(at) }));
                }
            }
        }
    }
    out
}

/// The pay-day evidence of the payer's earlier payments plus this payment's own failed
/// retries (`earlier[1..]`: funds declines are days the money was short). The original
/// charge is left out, so a first retry sees only the earlier payments, and a retry after
/// one that failed at the inferred pay day sees that pay day refuted. The same in training
/// (`recoup::train::build`) and in scoring.
///
/// Attempts are in time order, so only the last [`crate::payday::MAX_EVIDENCE`] funds retries can
/// be among what inference reads: the others are left out (a request at the attempt limit
/// stays cheap), and the answer is the same.
pub fn evidence_with_retries(evidence: &[Evidence], tz: Tz, earlier: &[EarlierAttempt]) -> Vec<Evidence> {
    let mut out = evidence.to_vec();
    let own = earlier.iter().skip(1).rev().filter(|a| a.decline.class() == DeclineClass::SoftFunds).take(crate::payday::MAX_EVIDENCE);
    out.extend(own.map(|a| Evidence::FundsDecline(a.at.with_timezone(&tz).date_naive())));
    out
}

fn advice_level(a: Option<RawCode>) -> usize {
    match a.map(|a| crate::rules::advice_wait(a).map(|w| w.num_hours())) {
        None => 0,
        Some(Some(h)) if h <= 24 => 1,
        Some(Some(_)) => 2,
        Some(None) => 3,
    }
}

/// Index of the first bound `x` is below (the last level when above all).
pub(crate) fn bucket(x: f64, bounds: &[f64]) -> usize {
    bounds.iter().position(|b| x < *b).unwrap_or(bounds.len())
}

/// Rough value of one major unit in US dollars, only to bucket amounts across currencies.
fn usd_per_unit(c: Currency) -> (f64, i32) {
    match c.as_str() {
        "USD" => (1.0, 2),
        "EUR" => (1.08, 2),
        "GBP" => (1.27, 2),
        "SEK" | "NOK" => (0.095, 2),
        "DKK" => (0.145, 2),
        "CHF" => (1.13, 2),
        "JPY" => (0.0067, 0),
        "KRW" => (0.00073, 0),
        _ => (1.0, 2),
    }
}

fn amount_level(minor: i64, c: Currency) -> usize {
    let (rate, exp) = usd_per_unit(c);
    let usd = minor as f64 / 10f64.powi(exp) * rate;
    bucket(usd, &[5.0, 10.0, 20.0, 50.0, 100.0, 200.0])
}

const COUNTRIES: [&str; 8] = ["US", "GB", "DE", "FR", "NL", "DK", "SE", "NO"];

fn country_level(c: Country) -> usize {
    COUNTRIES.iter().position(|k| *k == c.as_str()).unwrap_or(COUNTRIES.len())
}

fn tenure_level(t: Option<u32>) -> usize {
    match t {
        None => 0,
        Some(d) => 1 + bucket(d as f64, &[30.0, 90.0, 365.0, 730.0]),
    }
}

/// How far through the pay period the day is: days since pay day over the
/// period's length, in eighths-ish (level 0: no pay day known around it).
fn cycle_level(since: i64, until: i64) -> usize {
    if since >= 99 || until >= 99 {
        return 0;
    }
    let period = (since + until).max(1) as f64;
    1 + bucket(since as f64 / period, &[0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9])
}

fn confidence_level(p: f64) -> usize {
    bucket(p, &[0.5, 0.8])
}

/// Number of payment-level groups (the first ones).
pub const N_FIXED: usize = 14;
const N_CAND: usize = 9;

// Group indices (payment-level 0..N_FIXED, candidate N_FIXED..).
const G_CODE: usize = 0;
const G_CLASS: usize = 1;
const G_RETRIES: usize = 2;
const G_AMOUNT: usize = 3;
const G_COUNTRY: usize = 4;
pub(crate) const G_METHOD: usize = 5;
pub(crate) const G_BRAND: usize = 6;
pub(crate) const G_FUNDING: usize = 7;
pub(crate) const G_INTERVAL: usize = 8;
pub(crate) const G_TENURE: usize = 9;
const G_MESSAGES: usize = 10;
const G_UPDATED: usize = 11;
const G_ADVICE: usize = 12;
const G_CONFIDENCE: usize = 13;
const G_SINCE_LAST: usize = N_FIXED;
const G_SINCE_FIRST: usize = N_FIXED + 1;
const G_HOUR: usize = N_FIXED + 2;
const G_WEEKDAY: usize = N_FIXED + 3;
const G_SINCE_PAY: usize = N_FIXED + 4;
const G_UNTIL_PAY: usize = N_FIXED + 5;
const G_DAY_OF_MONTH: usize = N_FIXED + 6;
const G_CHANNEL: usize = N_FIXED + 7;
/// Group index of the candidate's channel (for [`group_level`]).
pub const CHANNEL_GROUP: usize = G_CHANNEL;
const G_CYCLE: usize = N_FIXED + 8;

/// Crosses of payment-level groups.
const FIXED_CROSSES: [(usize, usize); 8] = [
    (G_CLASS, G_RETRIES),
    (G_CLASS, G_UPDATED),
    (G_METHOD, G_CLASS),
    (G_CODE, G_ADVICE),
    (G_CLASS, G_AMOUNT),
    (G_CLASS, G_TENURE),
    (G_CLASS, G_COUNTRY),
    (G_CLASS, G_FUNDING),
];
/// Crosses involving a candidate group: how timing and messages work differ by decline class.
const CAND_CROSSES: [(usize, usize); 22] = [
    (G_CLASS, G_SINCE_PAY),
    (G_CLASS, G_UNTIL_PAY),
    (G_FUNDING, G_SINCE_PAY),
    (G_CONFIDENCE, G_SINCE_PAY),
    (G_CLASS, G_SINCE_LAST),
    (G_CLASS, G_SINCE_FIRST),
    (G_CLASS, G_HOUR),
    (G_CLASS, G_WEEKDAY),
    (G_CLASS, G_CHANNEL),
    (G_RETRIES, G_CHANNEL),
    // The pay cycle's shape: cycle length, country pay-day customs, rent early in the month.
    (G_SINCE_PAY, G_UNTIL_PAY),
    (G_COUNTRY, G_DAY_OF_MONTH),
    (G_CLASS, G_DAY_OF_MONTH),
    (G_WEEKDAY, G_DAY_OF_MONTH),
    (G_CLASS, G_CYCLE),
    (G_FUNDING, G_CYCLE),
    (G_CONFIDENCE, G_CYCLE),
    // Pay arrives during the pay day: the hour decides whether it is there yet.
    (G_SINCE_PAY, G_HOUR),
    (G_SINCE_PAY, G_DAY_OF_MONTH),
    (G_CODE, G_SINCE_LAST),
    // Message fatigue and who answers which channel.
    (G_MESSAGES, G_CHANNEL),
    (G_FUNDING, G_CHANNEL),
];

/// Every cross with the channel pairs it with payment-level groups only, so a
/// channel's columns are the same at every retry time and a grid of H hours × C
/// channels costs H time encodings plus C channel encodings. Checked at compile
/// time: a cross of the channel with a time group needs the grid scorer changed.
pub const CHANNEL_TERMS_ARE_TIMELESS: bool = {
    let mut ok = true;
    let mut k = 0;
    while k < CAND_CROSSES.len() {
        let (a, b) = CAND_CROSSES[k];
        if (a == G_CHANNEL && b >= N_FIXED) || (b == G_CHANNEL && a >= N_FIXED) {
            ok = false;
        }
        k += 1;
    }
    let mut k = 0;
    while k < TRIPLES.len() {
        let (a, b, c) = TRIPLES[k];
        if a == G_CHANNEL || b == G_CHANNEL || c == G_CHANNEL {
            ok = false;
        }
        k += 1;
    }
    ok
};
const _: () = assert!(CHANNEL_TERMS_ARE_TIMELESS, "a cross of the channel with a time group: score channels per hour in engine::decide");

/// The level of group `g` (index into [`group_names`]) in an encoded vector.
pub fn group_level(active: &[u16], g: usize) -> usize {
    let at = if g < N_FIXED { g } else { g + FIXED_CROSSES.len() };
    active[at] as usize - SCHEMA.group_offset[g]
}

/// The vector `active` would be had its candidate's message gone through
/// `channel` instead: every slot that involves the channel is re-encoded. The
/// counterfactual behind the channel-lift report (what each channel adds over
/// no message, same payment, same time).
pub fn with_channel(active: &[u16], channel: Channel) -> Vec<u16> {
    with_level(active, G_CHANNEL, channel as usize)
}

/// The vector `active` would be with group `g` at `level`: its own slot and every cross
/// and triple involving it re-encoded, the other groups' levels kept.
pub fn with_level(active: &[u16], g: usize, level: usize) -> Vec<u16> {
    let mut v = active.to_vec();
    let at = |h: usize| if h == g { level } else { group_level(active, h) };
    let fc = FIXED_CROSSES.len();
    v[if g < N_FIXED { g } else { g + fc }] = SCHEMA.column(g, level);
    for (k, &(a, b)) in FIXED_CROSSES.iter().enumerate() {
        if a == g || b == g {
            v[N_FIXED + k] = SCHEMA.cross(k, at(a), at(b));
        }
    }
    let cross_base = N_FIXED + fc + N_CAND;
    for (k, &(a, b)) in CAND_CROSSES.iter().enumerate() {
        if a == g || b == g {
            v[cross_base + k] = SCHEMA.cross(fc + k, at(a), at(b));
        }
    }
    let triple_base = cross_base + CAND_CROSSES.len();
    for (k, &(a, b, c)) in TRIPLES.iter().enumerate() {
        if [a, b, c].contains(&g) {
            v[triple_base + k] = SCHEMA.triple(k, at(a), at(b), at(c));
        }
    }
    v
}

/// Group index of `method_updated` (for [`group_level`] and [`with_level`]; level 1 is "true").
pub const UPDATED_GROUP: usize = G_UPDATED;
/// Group index of the retries before the candidate.
pub const RETRIES_GROUP: usize = G_RETRIES;

/// The column `decline_class=<class>&method_updated=true`: what a method replaced since the
/// last attempt adds to a retry after a decline of `class`.
pub fn class_updated_column(class: crate::declines::DeclineClass) -> u16 {
    let k = FIXED_CROSSES.iter().position(|&x| x == (G_CLASS, G_UPDATED)).expect("the class × updated cross exists");
    SCHEMA.cross(k, class as usize, 1)
}

/// The slots (indices into an encoded vector) whose column involves the channel:
/// the channel group and its crosses, as [`with_channel`] re-encodes them.
pub fn channel_slots() -> Vec<usize> {
    let fc = FIXED_CROSSES.len();
    let cross_base = N_FIXED + fc + N_CAND;
    let triple_base = cross_base + CAND_CROSSES.len();
    let mut out = vec![G_CHANNEL + fc];
    out.extend(CAND_CROSSES.iter().enumerate().filter(|(_, &(a, b))| a == G_CHANNEL || b == G_CHANNEL).map(|(k, _)| cross_base + k));
    out.extend(TRIPLES.iter().enumerate().filter(|(_, t)| [t.0, t.1, t.2].contains(&G_CHANNEL)).map(|(k, _)| triple_base + k));
    out
}

/// The `days_since_payday` level of an encoded vector (for the baseline that buckets by it).
pub fn days_since_payday_level(active: &[u16]) -> usize {
    group_level(active, G_SINCE_PAY)
}

/// Three-way crosses, all involving a candidate group: how money arrives during
/// the pay period matters for funds declines only, and differs by card funding,
/// by how sure the pay-day inference is, and by the hour on the pay day itself.
const TRIPLES: [(usize, usize, usize); 4] =
    [(G_CLASS, G_FUNDING, G_CYCLE), (G_CLASS, G_CONFIDENCE, G_CYCLE), (G_CLASS, G_SINCE_PAY, G_HOUR), (G_CLASS, G_UPDATED, G_CYCLE)];

/// Number of active columns in every vector.
pub const ACTIVE: usize = N_FIXED + N_CAND + FIXED_CROSSES.len() + CAND_CROSSES.len() + TRIPLES.len();

fn names<T: Into<&'static str> + Copy>(v: &[T]) -> Vec<String> {
    v.iter().map(|x| (*x).into().to_string()).collect()
}

fn optional(mut v: Vec<String>) -> Vec<String> {
    v.insert(0, "none".into());
    v
}

fn bucket_names(bounds: &[&str]) -> Vec<String> {
    bounds.iter().map(|s| s.to_string()).collect()
}

/// One feature group: its name, how its level names are made, whether its levels are
/// ordered buckets (a tree splits them at a threshold) rather than names with no order
/// (a tree splits them into any two sets), and whether it depends on the retry's local
/// date only (a grid's trees are bound to such groups once per local day).
struct GroupDef {
    name: &'static str,
    levels: fn() -> Vec<String>,
    ordered: bool,
    day: bool,
}

const fn group(name: &'static str, levels: fn() -> Vec<String>, ordered: bool, day: bool) -> GroupDef {
    GroupDef { name, levels, ordered, day }
}

/// Ordered buckets, named.
macro_rules! buckets {
    ($($l:literal),+) => {
        || bucket_names(&[$($l),+])
    };
}

/// The feature groups, in column order: payment-level first ([`N_FIXED`] of them, indices
/// `G_CODE`…), then the candidate's (indices `G_SINCE_LAST`…). The one table a new group
/// is added to (with its index constant and the code that computes its level).
const GROUPS: [GroupDef; N_GROUPS] = [
    group("decline_code", || names(DeclineCode::VARIANTS), false, false),
    group("decline_class", || names(DeclineClass::VARIANTS), false, false),
    group("retries_before", buckets!("0", "1", "2", "3", "4", "5+"), true, false),
    group("amount_usd", buckets!("<5", "5-10", "10-20", "20-50", "50-100", "100-200", "200+"), true, false),
    group("country", country_levels, false, false),
    group("payment_method", || names(PaymentMethod::VARIANTS), false, false),
    group("card_brand", || optional(names(CardBrand::VARIANTS)), false, false),
    group("card_funding", || optional(names(CardFunding::VARIANTS)), false, false),
    group("billing_interval", || optional(names(BillingInterval::VARIANTS)), false, false),
    group("tenure_days", buckets!("unknown", "<30", "30-90", "90-365", "365-730", "730+"), true, false),
    group("messages_before", buckets!("0", "1", "2+"), true, false),
    group("method_updated", buckets!("false", "true"), true, false),
    group("advice_hint", buckets!("none", "wait<=24h", "wait>24h", "other"), false, false),
    group("payday_confidence", buckets!("<0.5", "0.5-0.8", "0.8+"), true, false),
    group("hours_since_last", buckets!("<2", "2-6", "6-12", "12-24", "24-48", "48-96", "96-168", "168+"), true, false),
    group("days_since_first", buckets!("<1", "1-2", "2-4", "4-7", "7-14", "14-21", "21+"), true, false),
    group("local_hour", buckets!("0-3", "4-6", "7-9", "10-13", "14-17", "18-21", "22-23"), true, false),
    group("local_weekday", buckets!("mon", "tue", "wed", "thu", "fri", "sat", "sun"), true, true),
    group("days_since_payday", buckets!("0", "1", "2", "3", "4-6", "7-13", "14+"), true, true),
    group("days_until_payday", buckets!("1", "2", "3", "4-6", "7-13", "14+"), true, true),
    group("day_of_month", buckets!("1-5", "6-10", "11-15", "16-20", "21-25", "26-31"), true, true),
    group("channel", || names(Channel::VARIANTS), false, false),
    group(
        "pay_period_elapsed",
        buckets!("unknown", "<0.1", "0.1-0.2", "0.2-0.35", "0.35-0.5", "0.5-0.65", "0.65-0.8", "0.8-0.9", "0.9+"),
        true,
        true,
    ),
];

fn country_levels() -> Vec<String> {
    let mut countries: Vec<String> = COUNTRIES.iter().map(|s| s.to_string()).collect();
    countries.push("other".into());
    countries
}

/// The feature groups: name and level names, in column order.
fn groups() -> Vec<(&'static str, Vec<String>)> {
    GROUPS.iter().map(|g| (g.name, (g.levels)())).collect()
}

/// Column layout: every group's levels, then every cross's level pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// [`FEATURE_VERSION`] of the code that laid it out.
    pub version: u32,
    /// Column names in order: `group=level` and `a=x&b=y`.
    pub columns: Vec<String>,
    #[serde(skip)]
    group_offset: Vec<usize>,
    #[serde(skip)]
    cross_offset: Vec<(usize, usize)>,
    #[serde(skip)]
    triple_offset: Vec<(usize, usize, usize)>,
}

impl Schema {
    fn build() -> Schema {
        let groups = groups();
        let mut columns = Vec::new();
        let mut group_offset = Vec::new();
        for (name, levels) in &groups {
            group_offset.push(columns.len());
            columns.extend(levels.iter().map(|l| format!("{name}={l}")));
        }
        let mut cross_offset = Vec::new();
        for &(a, b) in FIXED_CROSSES.iter().chain(CAND_CROSSES.iter()) {
            cross_offset.push((columns.len(), groups[b].1.len()));
            for la in &groups[a].1 {
                for lb in &groups[b].1 {
                    columns.push(format!("{}={la}&{}={lb}", groups[a].0, groups[b].0));
                }
            }
        }
        assert!(columns.len() < u16::MAX as usize, "columns fit u16");
        let mut triple_offset = Vec::new();
        for &(a, b, c) in &TRIPLES {
            triple_offset.push((columns.len(), groups[b].1.len(), groups[c].1.len()));
            for la in &groups[a].1 {
                for lb in &groups[b].1 {
                    for lc in &groups[c].1 {
                        columns.push(format!("{}={la}&{}={lb}&{}={lc}", groups[a].0, groups[b].0, groups[c].0));
                    }
                }
            }
        }
        Schema { version: FEATURE_VERSION, columns, group_offset, cross_offset, triple_offset }
    }

    fn column(&self, group: usize, level: usize) -> u16 {
        (self.group_offset[group] + level) as u16
    }

    /// Column range of every slot of an encoded vector, in vector order: each
    /// example has exactly one active column in each range.
    pub fn slot_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let groups = groups();
        let g = |i: usize| self.group_offset[i]..self.group_offset[i] + groups[i].1.len();
        let c = |k: usize| {
            let (off, nb) = self.cross_offset[k];
            let (a, _) = if k < FIXED_CROSSES.len() { FIXED_CROSSES[k] } else { CAND_CROSSES[k - FIXED_CROSSES.len()] };
            off..off + groups[a].1.len() * nb
        };
        let t = |k: usize| {
            let (off, nb, nc) = self.triple_offset[k];
            off..off + groups[TRIPLES[k].0].1.len() * nb * nc
        };
        let mut out: Vec<_> = (0..N_FIXED).map(g).collect();
        out.extend((0..FIXED_CROSSES.len()).map(c));
        out.extend((N_FIXED..N_FIXED + N_CAND).map(g));
        out.extend((FIXED_CROSSES.len()..FIXED_CROSSES.len() + CAND_CROSSES.len()).map(c));
        out.extend((0..TRIPLES.len()).map(t));
        assert_eq!(out.len(), ACTIVE);
        out
    }

    fn triple(&self, k: usize, la: usize, lb: usize, lc: usize) -> u16 {
        let (off, nb, nc) = self.triple_offset[k];
        (off + (la * nb + lb) * nc + lc) as u16
    }

    fn cross(&self, k: usize, la: usize, lb: usize) -> u16 {
        let (off, nb) = self.cross_offset[k];
        (off + la * nb + lb) as u16
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Never true; for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }
}

/// The code's feature schema.
pub static SCHEMA: LazyLock<Schema> = LazyLock::new(Schema::build);

/// Column-group names, for reports ("which groups carry the signal").
pub fn group_names() -> Vec<&'static str> {
    GROUPS.iter().map(|g| g.name).collect()
}

/// Number of feature groups (payment-level, then candidate): what a tree splits on.
pub const N_GROUPS: usize = N_FIXED + N_CAND;

/// Levels of every group, in [`group_names`] order.
pub type GroupLevels = [u8; N_GROUPS];

/// Number of levels of each group.
pub static GROUP_SIZES: LazyLock<[usize; N_GROUPS]> = LazyLock::new(|| {
    let g = groups();
    std::array::from_fn(|i| g[i].1.len())
});

/// Whether a group's levels are ordered buckets (a tree splits them at a
/// threshold) rather than names with no order (a tree splits them into any two sets).
pub fn group_is_ordered(g: usize) -> bool {
    GROUPS[g].ordered
}

/// The candidate groups that depend on the retry's local date only (weekday,
/// days since and until pay day, day of month, pay period elapsed), bit per
/// group: a grid's trees are bound to them once per local day.
pub const DAY_GROUPS: u32 = {
    let mut bits = 0;
    let mut g = 0;
    while g < N_GROUPS {
        if GROUPS[g].day {
            bits |= 1 << g;
        }
        g += 1;
    }
    bits
};

/// The column name (`group=level`) of a group's level.
pub fn group_column(g: usize, level: usize) -> &'static str {
    &SCHEMA.columns[SCHEMA.column(g, level) as usize]
}

/// Every group's level in an encoded vector (the batch path's tree input).
pub fn group_levels(active: &[u16]) -> GroupLevels {
    std::array::from_fn(|g| group_level(active, g) as u8)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The index constants name the table's rows, and the table's flags are the ones
    /// the trees and the grid rely on (the day groups, the unordered names).
    #[test]
    fn the_group_table_matches_its_indices_and_flags() {
        let at = |g: usize| GROUPS[g].name;
        let named = [
            (G_CODE, "decline_code"),
            (G_CLASS, "decline_class"),
            (G_RETRIES, "retries_before"),
            (G_AMOUNT, "amount_usd"),
            (G_COUNTRY, "country"),
            (G_METHOD, "payment_method"),
            (G_FUNDING, "card_funding"),
            (G_TENURE, "tenure_days"),
            (G_MESSAGES, "messages_before"),
            (G_UPDATED, "method_updated"),
            (G_ADVICE, "advice_hint"),
            (G_CONFIDENCE, "payday_confidence"),
            (G_SINCE_LAST, "hours_since_last"),
            (G_SINCE_FIRST, "days_since_first"),
            (G_HOUR, "local_hour"),
            (G_WEEKDAY, "local_weekday"),
            (G_SINCE_PAY, "days_since_payday"),
            (G_UNTIL_PAY, "days_until_payday"),
            (G_DAY_OF_MONTH, "day_of_month"),
            (G_CHANNEL, "channel"),
            (G_CYCLE, "pay_period_elapsed"),
        ];
        for (g, name) in named {
            assert_eq!(at(g), name);
        }
        assert_eq!(DAY_GROUPS, 1 << G_WEEKDAY | 1 << G_SINCE_PAY | 1 << G_UNTIL_PAY | 1 << G_DAY_OF_MONTH | 1 << G_CYCLE);
        let unordered: Vec<&str> = (0..N_GROUPS).filter(|&g| !group_is_ordered(g)).map(at).collect();
        assert_eq!(
            unordered,
            [
                "decline_code",
                "decline_class",
                "country",
                "payment_method",
                "card_brand",
                "card_funding",
                "billing_interval",
                "advice_hint",
                "channel"
            ]
        );
        assert!(GROUPS[..N_FIXED].iter().all(|g| !g.day), "payment-level groups never change with the day");
    }
    use crate::calendar::PaySchedule;
    use chrono::TimeZone;

    /// A US debit Visa card's payment (other modules' tests start from it too).
    pub(crate) fn facts() -> PaymentFacts {
        PaymentFacts {
            amount_minor: 1299,
            currency: "USD".parse().expect("USD"),
            method: PaymentMethod::Card,
            card_brand: Some(CardBrand::Visa),
            card_funding: Some(CardFunding::Debit),
            country: "US".parse().expect("US"),
            timezone: chrono_tz::America::New_York,
            billing_interval: Some(BillingInterval::Month),
            tenure_days: Some(400),
        }
    }

    #[test]
    fn schema_names_every_column_once_and_vectors_hit_one_per_group() {
        let s = &*SCHEMA;
        let mut seen = std::collections::HashSet::new();
        assert!(s.columns.iter().all(|c| seen.insert(c.clone())), "duplicate column names");
        assert!(groups().iter().all(|(_, levels)| levels.len() <= 256), "TimeLevels stores levels as u8");
        let t0 = Utc.with_ymd_and_hms(2025, 3, 3, 14, 0, 0).unwrap();
        let earlier = [funds_failure(t0)];
        let st = PaymentState::new(facts(), &earlier, false, &[]).expect("state");
        let v = st.encode(&Candidate { at: t0 + chrono::Duration::hours(50), channel: Channel::Email });
        assert_eq!(v.len(), ACTIVE);
        assert!(v.iter().all(|&c| (c as usize) < s.len()));
        let named: Vec<&str> = v.iter().map(|&c| s.columns[c as usize].as_str()).collect();
        for want in [
            "decline_code=insufficient_funds",
            "decline_class=soft_funds",
            "retries_before=0",
            "amount_usd=10-20",
            "card_funding=debit",
            "hours_since_last=48-96",
            "days_since_first=2-4",
            "local_hour=10-13",
            "local_weekday=wed",
            "channel=email",
            "decline_class=soft_funds&channel=email",
        ] {
            assert!(named.contains(&want), "{want} not in {named:?}");
        }
    }

    /// The engine's bound at spacing edges (`engine::edges`) moves one spacing group to a
    /// neighbouring level by its parts alone: that is exact only while no spacing group
    /// crosses another candidate group, and the parts must match the full encoding.
    #[test]
    fn spacing_parts_are_what_a_spacing_level_adds_to_the_logit() {
        let spacing = (1u32 << (G_SINCE_LAST - N_FIXED)) | (1u32 << (G_SINCE_FIRST - N_FIXED));
        for (_, mask) in TIME_SLOTS.iter() {
            assert!(mask & spacing == 0 || mask.count_ones() == 1, "a spacing group crosses another candidate group");
        }
        let weights: Vec<f64> = (0..SCHEMA.len()).map(|i| ((i * 7919) % 1000) as f64 / 1000.0 - 0.5).collect();
        let t0 = Utc.with_ymd_and_hms(2025, 3, 3, 14, 0, 0).unwrap();
        let failed = |at| EarlierAttempt {
            network_code: None,
            card: None,
            at,
            decline: DeclineCode::DoNotHonor,
            advice_code: None,
            channel: None,
            payment_method_updated: false,
        };
        let earlier = [failed(t0), failed(t0 + chrono::Duration::hours(30))];
        let st = PaymentState::new(facts(), &earlier, false, &[]).expect("state");
        let parts = st.spacing_parts(&weights);
        assert_eq!((parts[0].len(), parts[1].len()), (HOURS_SINCE_LAST_EDGES.len() + 1, DAYS_SINCE_FIRST_EDGES.len() + 1));
        // Every pair of whole hours over two weeks: where only the spacing levels differ
        // (same local hour, weekday and day levels), the logits differ by the parts.
        let hours: Vec<(TimeLevels, f64)> = (0..336)
            .map(|h| {
                let at = earlier[1].at + chrono::Duration::hours(h);
                let logit = st.encode(&Candidate { at, channel: Channel::None }).iter().map(|&c| weights[c as usize]).sum::<f64>();
                (st.time_levels(at), logit)
            })
            .collect();
        let part = |l: &TimeLevels| parts[0][l.spacing()[0]] + parts[1][l.spacing()[1]];
        let mut checked = 0;
        for (a, (la, za)) in hours.iter().enumerate() {
            for (b, (lb, zb)) in hours.iter().enumerate().skip(a + 1) {
                if (2..N_CAND).any(|i| la.0[i] != lb.0[i]) || la.spacing() == lb.spacing() {
                    continue;
                }
                let got = part(lb) - part(la);
                assert!((got - (zb - za)).abs() < 1e-9, "hours {a} and {b}: parts {got} vs {}", zb - za);
                checked += 1;
            }
        }
        assert!(checked > 20, "{checked} pairs");
    }

    #[test]
    fn hour_parts_are_what_a_local_hour_level_adds_to_the_logit() {
        let (hour, pay) = (1u32 << (G_HOUR - N_FIXED), 1u32 << (G_SINCE_PAY - N_FIXED));
        for (_, mask) in TIME_SLOTS.iter() {
            assert!(mask & hour == 0 || mask & !pay == hour, "the local hour crosses a candidate group other than days_since_payday");
        }
        assert_eq!(GROUP_SIZES[G_HOUR], LOCAL_HOUR_EDGES.len() + 1);
        let weights: Vec<f64> = (0..SCHEMA.len()).map(|i| ((i * 7919) % 1000) as f64 / 1000.0 - 0.5).collect();
        // A payer paid semi-monthly, so that days_since_payday takes several levels over the month.
        let evidence = semi_monthly_evidence();
        let t0 = ny_at(7, 14);
        let st = PaymentState::new(facts(), &[funds_failure(t0)], false, &evidence).expect("state");
        let parts = st.hour_parts(&weights);
        let logit = |t: &TimeLevels| {
            let mut cols = Vec::new();
            st.time_columns(t, &mut cols);
            cols.iter().map(|&c| weights[c as usize]).sum::<f64>()
        };
        // Every hour of a month: the logit with the local hour moved to each other level.
        let mut pays = std::collections::BTreeSet::new();
        for h in 0..24 * 30 {
            let t = st.time_levels(t0 + chrono::Duration::hours(h));
            let [l, p] = t.hour_and_pay();
            pays.insert(p);
            for n in 0..GROUP_SIZES[G_HOUR] {
                let got = parts[p][n] - parts[p][l];
                assert!((got - (logit(&t.with_hour(n)) - logit(&t))).abs() < 1e-9, "hour {h}, level {l} -> {n}");
            }
        }
        assert!(pays.len() >= 4, "days_since_payday levels seen: {pays:?}");
    }

    #[test]
    fn slots_and_channel_counterfactuals_match_the_encoding() {
        let t0 = Utc.with_ymd_and_hms(2025, 3, 3, 14, 0, 0).unwrap();
        let earlier = [
            funds_failure(t0),
            EarlierAttempt {
                network_code: None,
                card: None,
                at: t0 + chrono::Duration::hours(30),
                decline: DeclineCode::DoNotHonor,
                advice_code: None,
                channel: Some(Channel::Email),
                payment_method_updated: false,
            },
        ];
        let st = PaymentState::new(facts(), &earlier, false, &[]).expect("state");
        let slots = SCHEMA.slot_ranges();
        for h in [3, 40, 200] {
            let at = t0 + chrono::Duration::hours(h);
            let email = st.encode(&Candidate { at, channel: Channel::Email });
            for (k, &c) in email.iter().enumerate() {
                assert!(slots[k].contains(&(c as usize)), "slot {k}: column {c} outside {:?}", slots[k]);
            }
            let levels = st.time_levels(at);
            let mut time = Vec::new();
            st.time_columns(&levels, &mut time);
            for &ch in Channel::VARIANTS {
                let full = st.encode(&Candidate { at, channel: ch });
                assert_eq!(with_channel(&email, ch), full, "{ch:?} at +{h}h");
                // A payment-level group re-encoded the same way: the method replaced.
                let updated = PaymentState::new(facts(), &earlier, true, &[]).expect("state").encode(&Candidate { at, channel: ch });
                assert_ne!(updated, full);
                assert_eq!(with_level(&full, UPDATED_GROUP, 1), updated, "updated, {ch:?} at +{h}h");
                assert_eq!(with_level(&updated, UPDATED_GROUP, 0), full);
                assert!(updated.contains(&class_updated_column(DeclineCode::DoNotHonor.class())));
                // The grid's split: fixed + time-only + channel-only is the same set of columns.
                let mut split = st.fixed().to_vec();
                split.extend(&time);
                st.channel_columns(ch, &mut split);
                let mut want = full.clone();
                want.sort_unstable();
                split.sort_unstable();
                assert_eq!(split, want, "{ch:?} at +{h}h");
            }
            // Walking from another hour's time columns to these recomputes the same columns.
            let other = st.time_levels(t0 + chrono::Duration::hours(h + 29));
            let mut walked = Vec::new();
            st.time_columns(&other, &mut walked);
            let mut diffs = 0;
            st.update_time_columns(&other, &levels, &mut walked, |_, _| diffs += 1);
            assert_eq!(walked, time, "+{h}h");
            assert!(diffs > 0 && diffs < time.len(), "{diffs} columns changed");
            // Only the channel columns differ between channels; the time-only ones never mention a channel.
            assert!(time.iter().all(|&c| !SCHEMA.columns[c as usize].contains("channel=")), "{time:?}");
        }
    }

    #[test]
    fn hourly_grid_levels_equal_the_per_time_levels_across_dst_changes() {
        // Spring forward and fall back in New York, Sydney (southern hemisphere), and a
        // zone at a half-hour offset; starts off the hour and at awkward minutes.
        for (tz, y, m, d) in [
            (chrono_tz::America::New_York, 2026, 3, 1),
            (chrono_tz::America::New_York, 2026, 10, 25),
            (chrono_tz::Australia::Sydney, 2026, 3, 30),
            (chrono_tz::Australia::Sydney, 2026, 9, 28),
            (chrono_tz::Asia::Kolkata, 2026, 12, 24),
        ] {
            let t0 = Utc.with_ymd_and_hms(y, m, d, 21, 17, 42).unwrap();
            let earlier = [
                funds_failure(t0 - chrono::Duration::days(3)),
                EarlierAttempt {
                    network_code: None,
                    card: None,
                    at: t0,
                    decline: DeclineCode::InsufficientFunds,
                    advice_code: None,
                    channel: Some(Channel::Sms),
                    payment_method_updated: false,
                },
            ];
            let st = PaymentState::new(PaymentFacts { timezone: tz, ..facts() }, &earlier, false, &[]).expect("state");
            for start in [t0 + chrono::Duration::minutes(43), t0 + chrono::Duration::seconds(1)] {
                let grid = st.hourly_levels(start, 14 * 24 + 1);
                for n in [0, 1, 2, 6, 7, 8, 13] {
                    assert_eq!(st.hourly_levels(start, n)[..], grid[..n], "{tz}: a grid of {n} hours");
                }
                for (h, got) in grid.iter().enumerate() {
                    let at = start + chrono::Duration::hours(h as i64);
                    assert_eq!(got.levels, st.time_levels(at), "{tz} at {at}");
                    let local = at.with_timezone(&tz);
                    assert_eq!(
                        (got.local_hour, got.weekday, got.local_date),
                        (local.hour(), local.weekday().num_days_from_monday(), local.date_naive()),
                        "{tz} at {at}"
                    );
                }
            }
        }
    }

    /// An original charge declined for insufficient funds at `at`.
    pub(crate) fn funds_failure(at: DateTime<Utc>) -> EarlierAttempt {
        EarlierAttempt {
            network_code: None,
            card: None,
            at,
            decline: DeclineCode::InsufficientFunds,
            advice_code: None,
            channel: None,
            payment_method_updated: false,
        }
    }

    /// 09:00 in New York on day `d` of month `m` of 2025.
    fn ny_at(m: u32, d: u32) -> DateTime<Utc> {
        chrono_tz::America::New_York.with_ymd_and_hms(2025, m, d, 9, 0, 0).unwrap().with_timezone(&Utc)
    }

    /// A US payer paid semi-monthly, January to June 2025: declines before,
    /// recoveries after the 15th and the month's end.
    fn semi_monthly_evidence() -> Vec<Evidence> {
        let ny = chrono_tz::America::New_York;
        let mut ev = Vec::new();
        for m in 1..=6 {
            ev.extend(payment_evidence(ny, &[(ny_at(m, 13), Some(DeclineCode::InsufficientFunds)), (ny_at(m, 16), None)]));
            ev.extend(payment_evidence(ny, &[(ny_at(m, 27), Some(DeclineCode::InsufficientFunds)), (ny_at(m + 1, 2), None)]));
        }
        ev.into_iter().map(|(_, e)| e).collect()
    }

    #[test]
    fn pay_cycle_columns_follow_the_schedule() {
        let at = ny_at;
        let st = PaymentState::new(facts(), &[funds_failure(at(7, 14))], false, &semi_monthly_evidence()).expect("state");
        assert_eq!(st.payday().schedule, PaySchedule::SemiMonthly);
        let cols = |d: u32| {
            let v = st.encode(&Candidate { at: at(7, d), channel: Channel::None });
            v.iter().map(|&c| SCHEMA.columns[c as usize].clone()).collect::<Vec<_>>()
        };
        // 2025-07-15 is a Tuesday pay day: 0 days since it on the 15th, 2 on the 17th.
        assert!(cols(15).contains(&"days_since_payday=0".to_string()));
        assert!(cols(17).contains(&"days_since_payday=2".to_string()));
        assert!(cols(14).contains(&"days_until_payday=1".to_string()));
    }

    /// Only the last MAX_EVIDENCE funds retries can matter to inference: leaving the rest out
    /// gives the same estimate as inferring from all of them.
    #[test]
    fn evidence_with_retries_keeps_what_inference_reads() {
        use crate::payday::{infer, Evidence};
        let tz = chrono_tz::America::Chicago;
        let t0 = Utc.with_ymd_and_hms(2026, 1, 5, 15, 0, 0).unwrap();
        let earlier: Vec<EarlierAttempt> = (0..60)
            .map(|k| EarlierAttempt {
                network_code: None,
                card: None,
                at: t0 + chrono::Duration::hours(31 * k),
                decline: if k % 7 == 3 { DeclineCode::DoNotHonor } else { DeclineCode::InsufficientFunds },
                advice_code: None,
                channel: None,
                payment_method_updated: false,
            })
            .collect();
        let past = vec![Evidence::FundsDecline(NaiveDate::from_ymd_opt(2025, 12, 1).unwrap())];
        let kept = evidence_with_retries(&past, tz, &earlier);
        assert_eq!(kept.len(), 1 + crate::payday::MAX_EVIDENCE);
        let mut all = past.clone();
        all.extend(
            earlier[1..]
                .iter()
                .filter(|a| a.decline.class() == DeclineClass::SoftFunds)
                .map(|a| Evidence::FundsDecline(a.at.with_timezone(&tz).date_naive())),
        );
        assert!(all.len() > kept.len());
        let us = "US".parse().expect("US");
        assert_eq!(infer(us, &kept), infer(us, &all));
    }
}
