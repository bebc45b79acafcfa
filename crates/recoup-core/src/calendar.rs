//! Calendar and pay days: business days and bank holidays per country, pay
//! schedules with "next / previous pay day", and a default time zone per
//! country.
//!
//! Core side of the boundary: pure date arithmetic, no I/O, no clock. Holidays
//! are data (one [`HolidayRule`] row each) rather than code, because no
//! maintained Rust crate covers our countries; each country's table is tested
//! against dates published by its central bank or government.
//!
//! Pay days that fall on a weekend or bank holiday move to the previous
//! business day, as employers and banks do in every country covered here.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use chrono::{Datelike, Days, Months, NaiveDate, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::domain::Country;

/// How a holiday's date is found in a given year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateRule {
    /// A fixed month and day.
    Fixed { month: u32, day: u32 },
    /// Days relative to Western (Gregorian) Easter Sunday.
    Easter(i64),
    /// The n-th weekday of a month (n = 1..=5), or the last one (n = -1).
    NthWeekday { month: u32, weekday: Weekday, n: i8 },
    /// The first `weekday` on or after month/day (Swedish Midsummer Eve: Friday from 19 June).
    WeekdayOnOrAfter { month: u32, day: u32, weekday: Weekday },
}

/// What happens when a fixed-date holiday falls on a weekend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observance {
    /// Nothing: a weekend holiday is simply lost (most of continental Europe).
    None,
    /// Sunday moves to Monday; Saturday is not observed (US Federal Reserve banks).
    SundayToMonday,
    /// Saturday or Sunday moves to the next free weekday (UK "substitute days").
    NextFreeWeekday,
    /// A Sunday King's Day is held on Saturday the 26th (Netherlands).
    SundayToSaturday,
}

/// One bank holiday of one country.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HolidayRule {
    /// English name, for reports.
    pub name: &'static str,
    /// How the date is found.
    pub date: DateRule,
    /// Weekend handling.
    pub observance: Observance,
    /// First year the holiday exists (inclusive).
    pub from_year: i32,
    /// Last year the holiday exists (inclusive).
    pub to_year: i32,
}

const fn rule(name: &'static str, date: DateRule) -> HolidayRule {
    HolidayRule { name, date, observance: Observance::None, from_year: 1900, to_year: 9999 }
}
const fn fixed(name: &'static str, month: u32, day: u32) -> HolidayRule {
    rule(name, DateRule::Fixed { month, day })
}
const fn easter(name: &'static str, offset: i64) -> HolidayRule {
    rule(name, DateRule::Easter(offset))
}
const fn nth(name: &'static str, month: u32, weekday: Weekday, n: i8) -> HolidayRule {
    rule(name, DateRule::NthWeekday { month, weekday, n })
}
const fn observed(mut r: HolidayRule, o: Observance) -> HolidayRule {
    r.observance = o;
    r
}
const fn years(mut r: HolidayRule, from: i32, to: i32) -> HolidayRule {
    r.from_year = from;
    r.to_year = to;
    r
}

use Observance::{NextFreeWeekday, SundayToMonday};
use Weekday::{Fri, Mon, Thu};

/// US: Federal Reserve Bank holidays (federalreserve.gov "Holidays Observed by
/// the Federal Reserve System"): a Sunday holiday is observed Monday, a
/// Saturday holiday is not moved for banks. Juneteenth since 2021.
const US: &[HolidayRule] = &[
    observed(fixed("New Year's Day", 1, 1), SundayToMonday),
    nth("Martin Luther King Jr. Day", 1, Mon, 3),
    nth("Washington's Birthday", 2, Mon, 3),
    nth("Memorial Day", 5, Mon, -1),
    years(observed(fixed("Juneteenth", 6, 19), SundayToMonday), 2021, 9999),
    observed(fixed("Independence Day", 7, 4), SundayToMonday),
    nth("Labor Day", 9, Mon, 1),
    nth("Columbus Day", 10, Mon, 2),
    observed(fixed("Veterans Day", 11, 11), SundayToMonday),
    nth("Thanksgiving Day", 11, Thu, 4),
    observed(fixed("Christmas Day", 12, 25), SundayToMonday),
];

/// GB: England and Wales bank holidays (gov.uk/bank-holidays), with
/// substitute days; one-off holidays are listed in [`ONE_OFF`].
const GB: &[HolidayRule] = &[
    observed(fixed("New Year's Day", 1, 1), NextFreeWeekday),
    easter("Good Friday", -2),
    easter("Easter Monday", 1),
    nth("Early May bank holiday", 5, Mon, 1),
    nth("Spring bank holiday", 5, Mon, -1),
    nth("Summer bank holiday", 8, Mon, -1),
    observed(fixed("Christmas Day", 12, 25), NextFreeWeekday),
    observed(fixed("Boxing Day", 12, 26), NextFreeWeekday),
];

/// DE: nationwide public holidays (Feiertagsgesetze of the Länder, common set)
/// plus 24 and 31 December, on which German banks do not settle.
const DE: &[HolidayRule] = &[
    fixed("Neujahr", 1, 1),
    easter("Karfreitag", -2),
    easter("Ostermontag", 1),
    fixed("Tag der Arbeit", 5, 1),
    easter("Christi Himmelfahrt", 39),
    easter("Pfingstmontag", 50),
    fixed("Tag der Deutschen Einheit", 10, 3),
    fixed("Heiligabend (Bankfeiertag)", 12, 24),
    fixed("1. Weihnachtstag", 12, 25),
    fixed("2. Weihnachtstag", 12, 26),
    fixed("Silvester (Bankfeiertag)", 12, 31),
];

/// FR: jours fériés (Code du travail L3133-1), metropolitan France.
const FR: &[HolidayRule] = &[
    fixed("Jour de l'an", 1, 1),
    easter("Lundi de Pâques", 1),
    fixed("Fête du Travail", 5, 1),
    fixed("Victoire 1945", 5, 8),
    easter("Ascension", 39),
    easter("Lundi de Pentecôte", 50),
    fixed("Fête nationale", 7, 14),
    fixed("Assomption", 8, 15),
    fixed("Toussaint", 11, 1),
    fixed("Armistice", 11, 11),
    fixed("Noël", 12, 25),
];

/// NL: algemeen erkende feestdagen (Algemene termijnenwet) on which banks close.
const NL: &[HolidayRule] = &[
    fixed("Nieuwjaarsdag", 1, 1),
    easter("Goede Vrijdag", -2),
    easter("Tweede Paasdag", 1),
    observed(fixed("Koningsdag", 4, 27), Observance::SundayToSaturday),
    easter("Hemelvaartsdag", 39),
    easter("Tweede Pinksterdag", 50),
    fixed("Eerste Kerstdag", 12, 25),
    fixed("Tweede Kerstdag", 12, 26),
];

/// DK: bank closing days (Danmarks Nationalbank "banklukkedage"), including
/// Grundlovsdag, the Friday after Ascension, 24 and 31 December; Store
/// bededag was abolished from 2024.
const DK: &[HolidayRule] = &[
    fixed("Nytårsdag", 1, 1),
    easter("Skærtorsdag", -3),
    easter("Langfredag", -2),
    easter("2. påskedag", 1),
    years(easter("Store bededag", 26), 1900, 2023),
    easter("Kristi himmelfartsdag", 39),
    easter("Fredag efter Kristi himmelfart", 40),
    easter("2. pinsedag", 50),
    fixed("Grundlovsdag", 6, 5),
    fixed("Juleaftensdag", 12, 24),
    fixed("1. juledag", 12, 25),
    fixed("2. juledag", 12, 26),
    fixed("Nytårsaftensdag", 12, 31),
];

/// SE: Swedish bank holidays (Riksbanken): public holidays plus Midsummer
/// Eve, Christmas Eve and New Year's Eve.
const SE: &[HolidayRule] = &[
    fixed("Nyårsdagen", 1, 1),
    fixed("Trettondedag jul", 1, 6),
    easter("Långfredagen", -2),
    easter("Annandag påsk", 1),
    fixed("Första maj", 5, 1),
    easter("Kristi himmelfärdsdag", 39),
    fixed("Sveriges nationaldag", 6, 6),
    rule("Midsommarafton", DateRule::WeekdayOnOrAfter { month: 6, day: 19, weekday: Fri }),
    fixed("Julafton", 12, 24),
    fixed("Juldagen", 12, 25),
    fixed("Annandag jul", 12, 26),
    fixed("Nyårsafton", 12, 31),
];

/// NO: Norwegian public holidays (helligdagsloven) plus 24 and 31 December,
/// on which Norges Bank's settlement system is closed.
const NO: &[HolidayRule] = &[
    fixed("Første nyttårsdag", 1, 1),
    easter("Skjærtorsdag", -3),
    easter("Langfredag", -2),
    easter("Andre påskedag", 1),
    fixed("Arbeidernes dag", 5, 1),
    fixed("Grunnlovsdag", 5, 17),
    easter("Kristi himmelfartsdag", 39),
    easter("Andre pinsedag", 50),
    fixed("Julaften", 12, 24),
    fixed("Første juledag", 12, 25),
    fixed("Andre juledag", 12, 26),
    fixed("Nyttårsaften", 12, 31),
];

/// Holidays proclaimed once (gov.uk: 2022 Platinum Jubilee and State Funeral,
/// 2023 Coronation).
const ONE_OFF: &[(Country, i32, u32, u32)] = &[
    (Country::from_bytes(*b"GB"), 2022, 6, 2),
    (Country::from_bytes(*b"GB"), 2022, 6, 3),
    (Country::from_bytes(*b"GB"), 2022, 9, 19),
    (Country::from_bytes(*b"GB"), 2023, 5, 8),
];

/// The holiday table of a country; empty (weekends only) for countries not covered yet.
pub fn holiday_rules(country: Country) -> &'static [HolidayRule] {
    match country.as_str() {
        "US" => US,
        "GB" => GB,
        "DE" => DE,
        "FR" => FR,
        "NL" => NL,
        "DK" => DK,
        "SE" => SE,
        "NO" => NO,
        _ => &[],
    }
}

/// Western Easter Sunday of a year (anonymous Gregorian algorithm, Meeus/Jones/Butcher).
pub fn easter_sunday(year: i32) -> NaiveDate {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).expect("computus yields a valid date")
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// Last day of a month.
pub fn last_day_of_month(year: i32, month: u32) -> NaiveDate {
    let first = NaiveDate::from_ymd_opt(year, month, 1).expect("valid month");
    first + Months::new(1) - Days::new(1)
}

fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: i8) -> Option<NaiveDate> {
    if n > 0 {
        NaiveDate::from_weekday_of_month_opt(year, month, weekday, n as u8)
    } else {
        let mut d = last_day_of_month(year, month);
        while d.weekday() != weekday {
            d = d.pred_opt()?;
        }
        Some(d)
    }
}

impl DateRule {
    /// The nominal date in `year`, before any weekend observance.
    pub fn date_in(&self, year: i32) -> Option<NaiveDate> {
        match *self {
            DateRule::Fixed { month, day } => NaiveDate::from_ymd_opt(year, month, day),
            DateRule::Easter(offset) => easter_sunday(year).checked_add_signed(chrono::Duration::days(offset)),
            DateRule::NthWeekday { month, weekday, n } => nth_weekday(year, month, weekday, n),
            DateRule::WeekdayOnOrAfter { month, day, weekday } => {
                let mut d = NaiveDate::from_ymd_opt(year, month, day)?;
                while d.weekday() != weekday {
                    d = d.succ_opt()?;
                }
                Some(d)
            }
        }
    }
}

/// Years whose holidays are memoized (computed once on first use).
const MEMO_YEARS: std::ops::RangeInclusive<i32> = 1990..=2100;

/// Countries with holiday tables, in memo order.
const MEMO_COUNTRIES: [&str; 8] = ["US", "GB", "DE", "FR", "NL", "DK", "SE", "NO"];

/// Memoized holiday lists: a pure cache of [`compute_holidays`], filled once
/// and indexed by (country, year) without hashing — business-day checks sit
/// on the simulator's hot path.
fn memo(country: Country, year: i32) -> Option<&'static [NaiveDate]> {
    use std::sync::OnceLock;
    static MEMO: OnceLock<Vec<Vec<NaiveDate>>> = OnceLock::new();
    if !MEMO_YEARS.contains(&year) {
        return None;
    }
    let Some(c) = MEMO_COUNTRIES.iter().position(|c| *c == country.as_str()) else {
        // A generated calendar, or none (weekends only).
        return Some(generated_in_year(country, year));
    };
    let years = MEMO_YEARS.end() - MEMO_YEARS.start() + 1;
    let table = MEMO.get_or_init(|| {
        MEMO_COUNTRIES
            .iter()
            .flat_map(|c| {
                let c: Country = c.parse().expect("valid country literal");
                MEMO_YEARS.map(move |y| compute_holidays(c, y))
            })
            .collect()
    });
    Some(&table[c * years as usize + (year - MEMO_YEARS.start()) as usize])
}

/// All bank holidays of a country in a year (observed dates), sorted.
pub fn holidays_in_year(country: Country, year: i32) -> Vec<NaiveDate> {
    match memo(country, year) {
        Some(days) => days.to_vec(),
        None => compute_holidays(country, year),
    }
}

/// Public holidays of the largest subscription markets without a hand-written
/// table, generated from the maintained python-holidays package by
/// `scripts/gen_holidays.py` and checked in as data (`data/calendars/holidays.csv`).
const GENERATED_CSV: &str = include_str!("../../../data/calendars/holidays.csv");
/// The years the generated calendars cover.
pub const GENERATED_YEARS: std::ops::RangeInclusive<i32> = 2018..=2040;

fn generated() -> &'static std::collections::HashMap<Country, Vec<NaiveDate>> {
    static TABLE: std::sync::LazyLock<std::collections::HashMap<Country, Vec<NaiveDate>>> = std::sync::LazyLock::new(|| {
        let mut t: std::collections::HashMap<Country, Vec<NaiveDate>> = std::collections::HashMap::new();
        for line in GENERATED_CSV.lines().filter(|l| !l.starts_with('#') && !l.starts_with("country,")) {
            let mut f = line.splitn(3, ',');
            let (Some(c), Some(d)) = (f.next(), f.next()) else { continue };
            // The file is checked by a test: a malformed line cannot ship.
            if let (Ok(c), Ok(d)) = (c.parse::<Country>(), NaiveDate::parse_from_str(d, "%Y-%m-%d")) {
                t.entry(c).or_default().push(d);
            }
        }
        for days in t.values_mut() {
            days.sort();
            days.dedup();
        }
        t
    });
    &TABLE
}

fn generated_in_year(country: Country, year: i32) -> &'static [NaiveDate] {
    let Some(days) = generated().get(&country) else { return &[] };
    let lo = days.partition_point(|d| d.year() < year);
    let hi = days.partition_point(|d| d.year() <= year);
    &days[lo..hi]
}

/// True when recoup knows `country`'s bank holidays in `year` (a hand-written
/// table, or a generated one within [`GENERATED_YEARS`]); otherwise only
/// weekends are skipped, and decisions say so.
pub fn has_calendar(country: Country, year: i32) -> bool {
    !holiday_rules(country).is_empty() || (generated().contains_key(&country) && GENERATED_YEARS.contains(&year))
}

fn compute_holidays(country: Country, year: i32) -> Vec<NaiveDate> {
    let mut out: Vec<NaiveDate> = Vec::new();
    let rules = holiday_rules(country);
    if rules.is_empty() {
        return generated_in_year(country, year).to_vec();
    }
    // Nominal dates first: substitute days must skip over other holidays
    // (UK: Christmas on Saturday → Monday 27th, Boxing Day on Sunday → Tuesday 28th).
    let mut nominal: Vec<(NaiveDate, Observance)> = rules
        .iter()
        .filter(|r| (r.from_year..=r.to_year).contains(&year))
        .filter_map(|r| r.date.date_in(year).map(|d| (d, r.observance)))
        .collect();
    // Holidays that stay where they are claim their days first; weekend
    // holidays with substitute days then take the next free weekday in date order.
    let substituted = |&(d, obs): &(NaiveDate, Observance)| obs == Observance::NextFreeWeekday && is_weekend(d);
    nominal.sort_by_key(|entry| (substituted(entry), entry.0));
    for &(d, obs) in &nominal {
        let observed = match obs {
            Observance::None => Some(d),
            Observance::SundayToMonday => match d.weekday() {
                Weekday::Sun => d.succ_opt(),
                Weekday::Sat => None,
                _ => Some(d),
            },
            Observance::SundayToSaturday => match d.weekday() {
                Weekday::Sun => d.pred_opt(),
                _ => Some(d),
            },
            Observance::NextFreeWeekday => {
                let mut o = d;
                while is_weekend(o) || (o != d && out.contains(&o)) {
                    o = o.succ_opt().unwrap_or(o);
                }
                Some(o)
            }
        };
        if let Some(o) = observed {
            if !out.contains(&o) {
                out.push(o);
            }
        }
    }
    for &(c, y, m, d) in ONE_OFF {
        if c == country && y == year {
            if let Some(date) = NaiveDate::from_ymd_opt(y, m, d) {
                out.push(date);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// True when banks in `country` are closed on `date` for a holiday (weekends excluded).
pub fn is_holiday(country: Country, date: NaiveDate) -> bool {
    match memo(country, date.year()) {
        Some(days) => days.contains(&date),
        None => compute_holidays(country, date.year()).contains(&date),
    }
}

/// True when `date` is neither a weekend nor a bank holiday in `country`.
pub fn is_business_day(country: Country, date: NaiveDate) -> bool {
    !is_weekend(date) && !is_holiday(country, date)
}

/// The latest business day on or before `date`.
pub fn business_day_on_or_before(country: Country, date: NaiveDate) -> NaiveDate {
    let mut d = date;
    while !is_business_day(country, d) {
        d = d.pred_opt().unwrap_or(d);
    }
    d
}

/// A payer's pay schedule. Every nominal pay day that is not a business day
/// is paid on the previous business day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PaySchedule {
    /// Monthly on a day of the month (1..=31; a day past the month's end means its last day).
    MonthlyOnDay { day: u32 },
    /// Monthly on the last business day (UK, DK custom).
    LastBusinessDay,
    /// Twice a month: the 15th and the last day of the month (US semi-monthly).
    SemiMonthly,
    /// Every 14 days on `anchor`'s weekday, in phase with `anchor`.
    Biweekly { anchor: NaiveDate },
    /// Every 28 days in phase with `anchor` (NL "4-wekelijks").
    FourWeekly { anchor: NaiveDate },
    /// Every week on a weekday.
    Weekly { weekday: Weekday },
}

/// For people and API answers: "weekly on Fri", "monthly on day 25", "every 14 days from 2026-10-23 (Fri)"…
impl std::fmt::Display for PaySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PaySchedule::MonthlyOnDay { day } => write!(f, "monthly on day {day}"),
            PaySchedule::LastBusinessDay => f.write_str("monthly on the last business day"),
            PaySchedule::SemiMonthly => f.write_str("semi-monthly on the 15th and the last day"),
            PaySchedule::Biweekly { anchor } => write!(f, "every 14 days from {anchor} ({})", anchor.weekday()),
            PaySchedule::FourWeekly { anchor } => write!(f, "every 28 days from {anchor} ({})", anchor.weekday()),
            PaySchedule::Weekly { weekday } => write!(f, "weekly on {weekday}"),
        }
    }
}

impl PaySchedule {
    /// Nominal (unadjusted) pay days from `from` to `to`, inclusive, plus whole months around them.
    fn nominal_between(&self, from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
        let months = || {
            let first = NaiveDate::from_ymd_opt(from.year(), from.month(), 1).expect("valid");
            let n = (to.year() - from.year()) * 12 + to.month() as i32 - from.month() as i32 + 1;
            (0..n.max(0) as u32).filter_map(move |i| first.checked_add_months(Months::new(i)))
        };
        let every = |anchor: NaiveDate, step: i64| {
            let offset = (from - anchor).num_days().rem_euclid(step);
            let first = from + Days::new(((step - offset) % step) as u64);
            (0..).map(move |k| first + Days::new((k * step) as u64)).take_while(move |d| *d <= to).collect::<Vec<_>>()
        };
        match *self {
            PaySchedule::MonthlyOnDay { day } => months()
                .map(|m| {
                    let last = last_day_of_month(m.year(), m.month());
                    NaiveDate::from_ymd_opt(m.year(), m.month(), day.clamp(1, 31)).unwrap_or(last)
                })
                .collect(),
            PaySchedule::LastBusinessDay => months().map(|m| last_day_of_month(m.year(), m.month())).collect(),
            PaySchedule::SemiMonthly => months()
                .flat_map(|m| {
                    let mid = NaiveDate::from_ymd_opt(m.year(), m.month(), 15).expect("15th exists");
                    [mid, last_day_of_month(m.year(), m.month())]
                })
                .collect(),
            PaySchedule::Biweekly { anchor } => every(anchor, 14),
            PaySchedule::FourWeekly { anchor } => every(anchor, 28),
            PaySchedule::Weekly { weekday } => {
                let mut d = from;
                while d.weekday() != weekday {
                    d = d.succ_opt().unwrap_or(d);
                }
                every(d, 7)
            }
        }
    }

    /// Actual pay days (moved to the previous business day) whose nominal date is
    /// between `from` and `to`, sorted. Pay days near the ends may fall slightly
    /// outside the range; callers wanting a bracket should ask with a margin.
    pub fn pay_days_between(&self, country: Country, from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
        let mut v: Vec<NaiveDate> = self.nominal_between(from, to).into_iter().map(|d| business_day_on_or_before(country, d)).collect();
        v.sort();
        v.dedup();
        v
    }

    fn pay_days_around(&self, country: Country, around: NaiveDate) -> Vec<NaiveDate> {
        self.pay_days_between(country, around - Days::new(45), around + Days::new(45))
    }

    /// The first pay day strictly after `date`.
    pub fn next_pay_day(&self, country: Country, date: NaiveDate) -> NaiveDate {
        let mut around = date;
        loop {
            if let Some(d) = self.pay_days_around(country, around).into_iter().find(|d| *d > date) {
                return d;
            }
            around = around + Days::new(30);
        }
    }

    /// The last pay day on or before `date`.
    pub fn previous_pay_day(&self, country: Country, date: NaiveDate) -> NaiveDate {
        let mut around = date;
        loop {
            if let Some(d) = self.pay_days_around(country, around).into_iter().rev().find(|d| *d <= date) {
                return d;
            }
            around = around - Days::new(30);
        }
    }

    /// Days since the last pay day (0 on pay day) and days until the next one.
    pub fn pay_cycle_position(&self, country: Country, date: NaiveDate) -> (i64, i64) {
        let prev = self.previous_pay_day(country, date);
        let next = self.next_pay_day(country, date);
        ((date - prev).num_days(), (next - date).num_days())
    }
}

/// A kind of pay schedule before its phase is fixed: what a country's mix lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    /// Every week on Friday.
    WeeklyFriday,
    /// Every other Friday (two possible phases).
    BiweeklyFriday,
    /// Every fourth Friday (four possible phases).
    FourWeeklyFriday,
    /// The 15th and the last day of the month.
    SemiMonthly,
    /// The last business day of the month.
    LastBusinessDay,
    /// A fixed day of the month.
    MonthlyOnDay(u32),
}

/// Share of payers living on benefits paid on a fixed day of the month, in every
/// country (US Social Security pays most recipients on the 3rd; SSA Monthly Statistical Snapshot).
pub const BENEFITS_SHARE: f64 = 0.04;
/// The day benefits arrive.
pub const BENEFITS_DAY: u32 = 3;

/// How salaried payers in a country are paid (shares sum to 1), as public sources report:
/// US: BLS Current Employment Statistics 2023 (weekly 32 %, biweekly 37 %, semi-monthly 20 %,
/// monthly 11 %, mostly on Fridays); UK: ONS/CIPP, mostly monthly on the last working day;
/// DK: last banking day (collective agreements); SE: the 25th; NO: the 20th, state sector the
/// 12th; NL: the 25th or 4-weekly ("4-wekelijks"); DE: end of month (some mid-month);
/// FR: end of month; CA, AU, NZ: mostly biweekly; JP, KR: the 25th; BR: the 5th business day;
/// MX, PH: the quincena (15th and month end); PL: the 10th; IN: month end or the 1st; each
/// row cites its source. Other countries: last business day.
pub fn schedule_mix(country: Country) -> &'static [(ScheduleKind, f64)] {
    use ScheduleKind::*;
    match country.as_str() {
        "US" => &[(WeeklyFriday, 0.32), (BiweeklyFriday, 0.37), (SemiMonthly, 0.20), (LastBusinessDay, 0.11)],
        "GB" => &[(LastBusinessDay, 0.75), (FourWeeklyFriday, 0.10), (WeeklyFriday, 0.15)],
        "DK" => &[(LastBusinessDay, 0.92), (BiweeklyFriday, 0.08)],
        "SE" => &[(MonthlyOnDay(25), 0.9), (LastBusinessDay, 0.1)],
        "NO" => &[(MonthlyOnDay(20), 0.72), (MonthlyOnDay(12), 0.23), (BiweeklyFriday, 0.05)],
        "NL" => &[(MonthlyOnDay(25), 0.65), (FourWeeklyFriday, 0.25), (LastBusinessDay, 0.10)],
        "DE" => &[(LastBusinessDay, 0.85), (MonthlyOnDay(15), 0.15)],
        "FR" => &[(LastBusinessDay, 0.8), (MonthlyOnDay(28), 0.2)],
        // Biweekly payrolls dominate (Statistics Canada, Payroll Employment; ADP Canada).
        "CA" => &[(BiweeklyFriday, 0.55), (SemiMonthly, 0.2), (WeeklyFriday, 0.1), (LastBusinessDay, 0.15)],
        // Fortnightly pay is the norm (ABS, Employee Earnings and Hours); then monthly.
        "AU" => &[(BiweeklyFriday, 0.6), (LastBusinessDay, 0.25), (WeeklyFriday, 0.15)],
        "NZ" => &[(BiweeklyFriday, 0.5), (WeeklyFriday, 0.3), (LastBusinessDay, 0.2)],
        // Salaries on the 25th (kyuryobi), moved back over weekends and holidays.
        "JP" => &[(MonthlyOnDay(25), 0.7), (MonthlyOnDay(20), 0.1), (LastBusinessDay, 0.2)],
        "KR" => &[(MonthlyOnDay(25), 0.6), (MonthlyOnDay(10), 0.25), (LastBusinessDay, 0.15)],
        // CLT art. 459: by the 5th business day; many pay an advance on the 20th.
        "BR" => &[(MonthlyOnDay(5), 0.6), (MonthlyOnDay(20), 0.2), (LastBusinessDay, 0.2)],
        // Quincena: the 15th and the month's last day (Ley Federal del Trabajo art. 88).
        "MX" => &[(SemiMonthly, 0.75), (WeeklyFriday, 0.25)],
        "AR" | "CO" | "CL" => &[(LastBusinessDay, 0.6), (SemiMonthly, 0.4)],
        "PH" => &[(SemiMonthly, 0.85), (LastBusinessDay, 0.15)],
        // Last working day, or the 1st of the next month (Payment of Wages Act: by the 7th).
        "IN" => &[(LastBusinessDay, 0.6), (MonthlyOnDay(1), 0.3), (MonthlyOnDay(7), 0.1)],
        // Poland: by the 10th of the following month (Kodeks pracy art. 85), often the last day.
        "PL" => &[(MonthlyOnDay(10), 0.5), (LastBusinessDay, 0.5)],
        "CH" => &[(MonthlyOnDay(25), 0.6), (LastBusinessDay, 0.4)],
        "IT" => &[(MonthlyOnDay(27), 0.5), (LastBusinessDay, 0.3), (MonthlyOnDay(10), 0.2)],
        "ES" | "PT" | "BE" | "AT" | "IE" | "FI" | "CZ" => &[(LastBusinessDay, 0.9), (MonthlyOnDay(25), 0.1)],
        _ => &[(LastBusinessDay, 1.0)],
    }
}

/// The kind at cumulative share `u` in [0, 1) of a country's mix.
pub fn schedule_kind_at(country: Country, u: f64) -> ScheduleKind {
    let mix = schedule_mix(country);
    let mut acc = 0.0;
    for &(kind, share) in mix {
        acc += share;
        if u < acc {
            return kind;
        }
    }
    mix[mix.len() - 1].0
}

/// Every time zone a payer of `country` may live in (the mainland's and the larger
/// islands'), for a country that spans several; empty for one that does not (or is not
/// listed: [`default_timezone`] is all there is). Messages and asks to a payer whose
/// request gives no time zone keep quiet hours in each (a text at 8:00 in New York is
/// 2:00 or 3:00 in Honolulu).
pub fn country_time_zones(country: Country) -> &'static [Tz] {
    use chrono_tz::{America, Asia, Atlantic, Australia, Europe, Pacific};
    match country.as_str() {
        "US" => &[
            America::New_York,
            America::Chicago,
            America::Denver,
            America::Phoenix,
            America::Los_Angeles,
            America::Anchorage,
            Pacific::Honolulu,
        ],
        "CA" => &[America::St_Johns, America::Halifax, America::Toronto, America::Winnipeg, America::Edmonton, America::Vancouver],
        "MX" => &[America::Cancun, America::Mexico_City, America::Mazatlan, America::Tijuana],
        "BR" => &[America::Noronha, America::Sao_Paulo, America::Manaus, America::Rio_Branco],
        "AU" => &[Australia::Sydney, Australia::Brisbane, Australia::Adelaide, Australia::Darwin, Australia::Perth],
        "ID" => &[Asia::Jayapura, Asia::Makassar, Asia::Jakarta],
        "ES" => &[Europe::Madrid, Atlantic::Canary],
        "PT" => &[Europe::Lisbon, Atlantic::Azores],
        "CL" => &[America::Santiago, America::Punta_Arenas],
        _ => &[],
    }
}

/// The time zone assumed for a payer whose `timezone` is absent: the
/// country's capital or most populous zone; UTC for countries not listed.
pub fn default_timezone(country: Country) -> Tz {
    use chrono_tz::{America, Asia, Australia, Europe, Pacific};
    match country.as_str() {
        "US" => America::New_York,
        "CA" => America::Toronto,
        "MX" => America::Mexico_City,
        "BR" => America::Sao_Paulo,
        "GB" => Europe::London,
        "IE" => Europe::Dublin,
        "DE" => Europe::Berlin,
        "FR" => Europe::Paris,
        "NL" => Europe::Amsterdam,
        "BE" => Europe::Brussels,
        "LU" => Europe::Luxembourg,
        "DK" => Europe::Copenhagen,
        "SE" => Europe::Stockholm,
        "NO" => Europe::Oslo,
        "FI" => Europe::Helsinki,
        "IS" => chrono_tz::Atlantic::Reykjavik,
        "ES" => Europe::Madrid,
        "PT" => Europe::Lisbon,
        "IT" => Europe::Rome,
        "AT" => Europe::Vienna,
        "CH" => Europe::Zurich,
        "PL" => Europe::Warsaw,
        "CZ" => Europe::Prague,
        "AU" => Australia::Sydney,
        "NZ" => Pacific::Auckland,
        "JP" => Asia::Tokyo,
        "SG" => Asia::Singapore,
        "IN" => Asia::Kolkata,
        "KR" => Asia::Seoul,
        "HK" => Asia::Hong_Kong,
        "TW" => Asia::Taipei,
        "ID" => Asia::Jakarta,
        "PH" => Asia::Manila,
        "MY" => Asia::Kuala_Lumpur,
        "TH" => Asia::Bangkok,
        "AE" => Asia::Dubai,
        "SA" => Asia::Riyadh,
        "IL" => Asia::Jerusalem,
        "TR" => Europe::Istanbul,
        "GR" => Europe::Athens,
        "HU" => Europe::Budapest,
        "RO" => Europe::Bucharest,
        "ZA" => chrono_tz::Africa::Johannesburg,
        "AR" => America::Argentina::Buenos_Aires,
        "CL" => America::Santiago,
        "CO" => America::Bogota,
        _ => chrono_tz::UTC,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Country {
        s.parse().expect("country")
    }
    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("date")
    }

    #[test]
    fn schedules_read_as_words() {
        let shown: Vec<String> = [
            PaySchedule::MonthlyOnDay { day: 25 },
            PaySchedule::LastBusinessDay,
            PaySchedule::SemiMonthly,
            PaySchedule::Biweekly { anchor: d(2026, 10, 23) },
            PaySchedule::FourWeekly { anchor: d(2026, 10, 26) },
            PaySchedule::Weekly { weekday: Weekday::Fri },
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            shown,
            [
                "monthly on day 25",
                "monthly on the last business day",
                "semi-monthly on the 15th and the last day",
                "every 14 days from 2026-10-23 (Fri)",
                "every 28 days from 2026-10-26 (Mon)",
                "weekly on Fri",
            ]
        );
    }

    #[test]
    fn easter_matches_published_dates() {
        for (y, m, day) in [(2024, 3, 31), (2025, 4, 20), (2026, 4, 5), (2027, 3, 28), (2019, 4, 21), (2038, 4, 25)] {
            assert_eq!(easter_sunday(y), d(y, m, day), "Easter {y}");
        }
    }

    /// Known holidays, one row each, from the official sources in the module.
    #[test]
    fn generated_calendars_cover_the_largest_markets_on_known_dates() {
        // Official 2026 dates, one per market (each country's government calendar).
        for (cc, date) in [
            ("JP", d(2026, 1, 12)),  // Seijin no Hi, 2nd Monday of January
            ("BR", d(2026, 4, 21)),  // Tiradentes
            ("IN", d(2026, 1, 26)),  // Republic Day
            ("AU", d(2026, 1, 26)),  // Australia Day
            ("CA", d(2026, 7, 1)),   // Canada Day
            ("MX", d(2026, 9, 16)),  // Día de la Independencia
            ("ES", d(2026, 10, 12)), // Fiesta Nacional
            ("IT", d(2026, 6, 2)),   // Festa della Repubblica
            ("PL", d(2026, 11, 11)), // Narodowe Święto Niepodległości
            ("CH", d(2026, 8, 1)),   // Bundesfeiertag
            ("KR", d(2026, 10, 9)),  // Hangeul Day
            ("ZA", d(2026, 4, 27)),  // Freedom Day
        ] {
            assert!(is_holiday(c(cc), date), "{cc} {date}");
            assert!(!is_business_day(c(cc), date), "{cc} {date}");
        }
        assert!(!is_holiday(c("JP"), d(2026, 1, 13)));
        // At least 30 markets have a calendar; each generated line parses.
        let markets: std::collections::BTreeSet<&str> = GENERATED_CSV
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("country,"))
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                assert!(f.len() == 3 && f[0].parse::<Country>().is_ok() && NaiveDate::parse_from_str(f[1], "%Y-%m-%d").is_ok(), "{l}");
                f[0]
            })
            .collect();
        assert!(markets.len() + MEMO_COUNTRIES.len() >= 30, "{markets:?}");
        for m in &markets {
            assert!(has_calendar(c(m), 2026), "{m}");
            assert_ne!(default_timezone(c(m)), chrono_tz::UTC, "{m} has no default time zone");
        }
        assert!(has_calendar(c("US"), 2026) && !has_calendar(c("KE"), 2026) && !has_calendar(c("JP"), 2050));
    }

    #[test]
    fn known_holidays_per_country() {
        let cases: &[(&str, NaiveDate, bool)] = &[
            // US Federal Reserve 2026: July 4 is a Saturday → not observed on Friday 3rd
            ("US", d(2026, 7, 3), false),
            ("US", d(2026, 11, 26), true), // Thanksgiving
            ("US", d(2027, 12, 24), false),
            ("US", d(2022, 12, 26), true), // Christmas on Sunday → Monday
            ("US", d(2026, 6, 19), true),  // Juneteenth
            ("US", d(2020, 6, 19), false), // before 2021
            ("US", d(2026, 5, 25), true),  // Memorial Day, last Monday of May
            // England & Wales
            ("GB", d(2026, 4, 3), true),   // Good Friday
            ("GB", d(2026, 8, 31), true),  // Summer bank holiday
            ("GB", d(2026, 12, 28), true), // Boxing Day (Saturday) substitute
            ("GB", d(2022, 12, 27), true), // Christmas on Sunday → Tuesday 27th (Boxing Monday 26th)
            ("GB", d(2021, 12, 28), true), // Christmas Sat → Mon 27, Boxing Sun → Tue 28
            ("GB", d(2023, 5, 8), true),   // Coronation
            ("GB", d(2026, 7, 14), false),
            // Germany
            ("DE", d(2026, 10, 3), true),
            ("DE", d(2026, 5, 14), true),  // Christi Himmelfahrt
            ("DE", d(2026, 5, 25), true),  // Pfingstmontag
            ("DE", d(2026, 12, 31), true), // bank holiday
            ("DE", d(2026, 11, 11), false),
            // France
            ("FR", d(2026, 7, 14), true),
            ("FR", d(2026, 5, 8), true),
            ("FR", d(2026, 4, 3), false), // Good Friday not a holiday in metropolitan France
            // Netherlands
            ("NL", d(2025, 4, 26), true), // King's Day on Sunday 27 → Saturday 26
            ("NL", d(2026, 4, 27), true),
            // Denmark
            ("DK", d(2026, 6, 5), true),
            ("DK", d(2026, 5, 15), true),  // Friday after Ascension
            ("DK", d(2023, 5, 5), true),   // Store bededag 2023
            ("DK", d(2024, 4, 26), false), // abolished from 2024
            // Sweden
            ("SE", d(2026, 6, 19), true), // Midsommarafton (Friday 19 June)
            ("SE", d(2025, 6, 20), true),
            ("SE", d(2026, 1, 6), true),
            // Norway
            ("NO", d(2026, 5, 17), true),
            ("NO", d(2026, 4, 2), true), // Skjærtorsdag
        ];
        for &(country, date, want) in cases {
            assert_eq!(is_holiday(c(country), date), want, "{country} {date}");
        }
    }

    #[test]
    fn unknown_country_has_weekends_only() {
        assert!(is_business_day(c("ZZ"), d(2026, 12, 25)));
        assert!(!is_business_day(c("ZZ"), d(2026, 12, 26)));
    }

    #[test]
    fn monthly_pay_day_moves_back_over_weekends_and_holidays() {
        let sched = PaySchedule::MonthlyOnDay { day: 25 };
        // SE 25 Oct 2026 is a Sunday → paid Friday 23rd
        assert_eq!(sched.next_pay_day(c("SE"), d(2026, 10, 1)), d(2026, 10, 23));
        // SE 25 Dec is a holiday, 24th too (bank), 23rd Wednesday
        assert_eq!(sched.next_pay_day(c("SE"), d(2026, 12, 1)), d(2026, 12, 23));
        // previous pay day on the pay day itself is that day
        assert_eq!(sched.previous_pay_day(c("SE"), d(2026, 11, 25)), d(2026, 11, 25));
        assert_eq!(sched.previous_pay_day(c("SE"), d(2026, 11, 24)), d(2026, 10, 23));
    }

    #[test]
    fn day_31_means_month_end_including_leap_february() {
        let sched = PaySchedule::MonthlyOnDay { day: 31 };
        // 29 Feb 2028 is a Tuesday (leap year)
        assert_eq!(sched.next_pay_day(c("DE"), d(2028, 2, 1)), d(2028, 2, 29));
        // 28 Feb 2027 is a Sunday → Friday 26th
        assert_eq!(sched.next_pay_day(c("DE"), d(2027, 2, 1)), d(2027, 2, 26));
        // 31 Dec 2026 is a German bank holiday (Thursday) → Wednesday 30th
        assert_eq!(sched.next_pay_day(c("DE"), d(2026, 12, 1)), d(2026, 12, 30));
    }

    #[test]
    fn last_business_day_in_uk_and_denmark() {
        let sched = PaySchedule::LastBusinessDay;
        // 31 Aug 2026 is the UK summer bank holiday (Monday) → Friday 28th
        assert_eq!(sched.next_pay_day(c("GB"), d(2026, 8, 1)), d(2026, 8, 28));
        // DK: 31 Dec is a bank closing day, 24–26 too → 30 Dec 2026 (Wednesday)
        assert_eq!(sched.next_pay_day(c("DK"), d(2026, 12, 1)), d(2026, 12, 30));
        // end of Jan 2027: Sunday 31 → Friday 29
        assert_eq!(sched.next_pay_day(c("DK"), d(2027, 1, 2)), d(2027, 1, 29));
    }

    #[test]
    fn semi_monthly_pays_the_15th_and_month_end() {
        let sched = PaySchedule::SemiMonthly;
        // 15 Nov 2026 is a Sunday → Friday 13th; 30 Nov Monday
        assert_eq!(sched.next_pay_day(c("US"), d(2026, 11, 1)), d(2026, 11, 13));
        assert_eq!(sched.next_pay_day(c("US"), d(2026, 11, 13)), d(2026, 11, 30));
        assert_eq!(sched.previous_pay_day(c("US"), d(2026, 11, 29)), d(2026, 11, 13));
    }

    #[test]
    fn biweekly_and_weekly_keep_their_phase() {
        let sched = PaySchedule::Biweekly { anchor: d(2026, 1, 2) }; // a Friday
        assert_eq!(sched.next_pay_day(c("US"), d(2026, 1, 3)), d(2026, 1, 16));
        assert_eq!(sched.next_pay_day(c("US"), d(2026, 11, 20)), d(2026, 12, 4));
        // 25 Dec 2026 (Friday) is a pay Friday in this phase → Thursday 24th
        assert_eq!(sched.next_pay_day(c("US"), d(2026, 12, 5)), d(2026, 12, 18));
        assert_eq!(sched.next_pay_day(c("US"), d(2026, 12, 19)), d(2026, 12, 31));
        let weekly = PaySchedule::Weekly { weekday: Weekday::Fri };
        assert_eq!(weekly.next_pay_day(c("US"), d(2026, 11, 22)), d(2026, 11, 27));
        assert_eq!(weekly.pay_cycle_position(c("US"), d(2026, 11, 23)), (3, 4));
        // Thanksgiving week: Friday 27 Nov is not a holiday in the Fed calendar
        let four = PaySchedule::FourWeekly { anchor: d(2026, 1, 23) };
        assert_eq!(four.next_pay_day(c("NL"), d(2026, 2, 1)), d(2026, 2, 20));
    }

    #[test]
    fn leap_year_biweekly_crosses_february_29() {
        let sched = PaySchedule::Biweekly { anchor: d(2028, 2, 18) };
        assert_eq!(sched.next_pay_day(c("GB"), d(2028, 2, 19)), d(2028, 3, 3));
        assert_eq!(sched.pay_cycle_position(c("GB"), d(2028, 2, 29)), (11, 3));
    }

    #[test]
    fn default_timezones() {
        assert_eq!(default_timezone(c("DK")), chrono_tz::Europe::Copenhagen);
        assert_eq!(default_timezone(c("US")), chrono_tz::America::New_York);
        assert_eq!(default_timezone(c("ZZ")), chrono_tz::UTC);
    }
}
