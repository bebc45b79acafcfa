//! Pay-day inference: from what a payer's past payments show, the most likely
//! pay schedule and phase, with a confidence.
//!
//! Evidence is what the money did: an insufficient-funds decline is likelier
//! late in a pay period, and a payment that failed for funds and then went
//! through tells that a pay day most likely came in between. Each candidate
//! schedule (the kinds of [`crate::calendar::schedule_mix`] in every phase,
//! plus benefits day) starts from the country's prior share; the evidence
//! multiplies it by simple likelihoods; the best posterior wins. With no
//! evidence the answer is the country's most common schedule, with its prior
//! share as the confidence. Pure: the same evidence gives the same answer in
//! training and in scoring.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use chrono::{Datelike, Days, NaiveDate, Weekday};

use crate::calendar::{schedule_mix, PaySchedule, ScheduleKind, BENEFITS_DAY, BENEFITS_SHARE};
use crate::domain::Country;

/// One observation about the payer's money, by local date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Evidence {
    /// A charge was declined for insufficient funds (or a limit) on this day.
    FundsDecline(NaiveDate),
    /// A payment declined for funds on `declined` went through on `paid`.
    Recovered { declined: NaiveDate, paid: NaiveDate },
}

impl Evidence {
    fn last_day(&self) -> NaiveDate {
        match *self {
            Evidence::FundsDecline(d) => d,
            Evidence::Recovered { paid, .. } => paid,
        }
    }
}

/// The inferred schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PayDayEstimate {
    /// The most likely schedule.
    pub schedule: PaySchedule,
    /// Its posterior probability among the candidates, in (0, 1].
    pub confidence: f64,
    /// How many pieces of evidence were used.
    pub evidence: u32,
}

/// At most this many pieces of evidence are used (the most recent): bounds the cost per payer.
pub const MAX_EVIDENCE: usize = 24;

/// Likelihood of a funds decline at position `frac` of the pay period (0 = pay day, → 1 =
/// the day before the next): declines cluster before pay day (mean 1 over a uniform position).
fn decline_likelihood(frac: f64) -> f64 {
    0.4 + 1.2 * frac
}

/// Likelihood of a recovery with / without a pay day between the decline and the payment:
/// money arriving is the usual reason a funds decline recovers, but not the only one.
const RECOVERED_WITH_PAY_DAY: f64 = 1.0;
const RECOVERED_WITHOUT_PAY_DAY: f64 = 0.3;

/// Weight spread over schedules the country's mix does not list (payers move, employers vary).
const OUTSIDE_MIX: f64 = 0.02;

/// A Friday long before any history: phases of (bi/four-)weekly schedules are counted from it.
fn reference_friday() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 7).expect("valid date")
}

/// Every candidate schedule with its prior probability for a payer in `country`.
pub fn candidates(country: Country) -> Vec<(PaySchedule, f64)> {
    use ScheduleKind::*;
    let mix = schedule_mix(country);
    let kinds = [
        WeeklyFriday,
        BiweeklyFriday,
        FourWeeklyFriday,
        SemiMonthly,
        LastBusinessDay,
        MonthlyOnDay(12),
        MonthlyOnDay(15),
        MonthlyOnDay(20),
        MonthlyOnDay(25),
        MonthlyOnDay(28),
    ];
    let outside = kinds.iter().filter(|k| !mix.iter().any(|(m, _)| m == *k)).count().max(1) as f64;
    let mut out = Vec::new();
    for kind in kinds {
        let share = mix.iter().find(|(m, _)| *m == kind).map(|(_, w)| w * (1.0 - OUTSIDE_MIX)).unwrap_or(OUTSIDE_MIX / outside);
        let share = share * (1.0 - BENEFITS_SHARE);
        let phases: Vec<PaySchedule> = match kind {
            WeeklyFriday => vec![PaySchedule::Weekly { weekday: Weekday::Fri }],
            BiweeklyFriday => (0..2).map(|k| PaySchedule::Biweekly { anchor: reference_friday() + Days::new(7 * k) }).collect(),
            FourWeeklyFriday => (0..4).map(|k| PaySchedule::FourWeekly { anchor: reference_friday() + Days::new(7 * k) }).collect(),
            SemiMonthly => vec![PaySchedule::SemiMonthly],
            LastBusinessDay => vec![PaySchedule::LastBusinessDay],
            MonthlyOnDay(day) => vec![PaySchedule::MonthlyOnDay { day }],
        };
        let n = phases.len() as f64;
        out.extend(phases.into_iter().map(|s| (s, share / n)));
    }
    out.push((PaySchedule::MonthlyOnDay { day: BENEFITS_DAY }, BENEFITS_SHARE));
    out
}

/// The [`MAX_EVIDENCE`] most recent pieces of `evidence`, most recent first (ties in a
/// fixed order, so any input order gives the same subset): all that [`infer`] reads, so
/// `infer(c, &most_recent(e)) == infer(c, e)`. A caller inferring many times from one
/// payer's evidence reduces it once.
pub fn most_recent(evidence: &[Evidence]) -> Vec<Evidence> {
    let mut ev: Vec<Evidence> = evidence.to_vec();
    ev.sort_by(|a, b| b.last_day().cmp(&a.last_day()).then(a.cmp(b)));
    ev.truncate(MAX_EVIDENCE);
    ev
}

/// Infer the pay schedule of a payer in `country` from `evidence` (any order; the
/// most recent [`MAX_EVIDENCE`] are used).
pub fn infer(country: Country, evidence: &[Evidence]) -> PayDayEstimate {
    let cands = candidates(country);
    let ev = most_recent(evidence);
    let Some(span) = span(&ev) else {
        let (schedule, prior) = cands.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)).expect("candidates");
        return PayDayEstimate { schedule, confidence: prior, evidence: 0 };
    };
    let mut log_post: Vec<f64> = Vec::with_capacity(cands.len());
    for &(schedule, prior) in &cands {
        let days = schedule.pay_days_between(country, span.0, span.1);
        let mut lp = prior.ln();
        for e in &ev {
            lp += match *e {
                Evidence::FundsDecline(d) => match bracket(&days, d) {
                    Some((prev, next)) => {
                        let period = (next - prev).num_days().max(1) as f64;
                        decline_likelihood((d - prev).num_days() as f64 / period).ln()
                    }
                    None => 0.0,
                },
                Evidence::Recovered { declined, paid } => {
                    // A pay day after the decline day, on or before the payment day.
                    let lo = days.partition_point(|p| *p <= declined);
                    let hit = days.get(lo).is_some_and(|p| *p <= paid);
                    if hit { RECOVERED_WITH_PAY_DAY } else { RECOVERED_WITHOUT_PAY_DAY }.ln()
                }
            };
        }
        log_post.push(lp);
    }
    let max = log_post.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = log_post.iter().map(|lp| (lp - max).exp()).sum();
    // The first candidate with the best posterior: ties resolve in the fixed candidate order.
    let best = log_post.iter().position(|lp| *lp == max).expect("non-empty");
    PayDayEstimate { schedule: cands[best].0, confidence: 1.0 / total, evidence: ev.len() as u32 }
}

/// The dates the candidates' pay days are needed for, with room for a bracket around each.
fn span(ev: &[Evidence]) -> Option<(NaiveDate, NaiveDate)> {
    let first = ev.iter().map(|e| match *e {
        Evidence::FundsDecline(d) => d,
        Evidence::Recovered { declined, .. } => declined,
    });
    let lo = first.min()?;
    let hi = ev.iter().map(Evidence::last_day).max()?;
    Some((lo - Days::new(40), hi + Days::new(40)))
}

/// The pay days around `d` (last on or before, first after) in sorted `days`.
fn bracket(days: &[NaiveDate], d: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
    let i = days.partition_point(|p| *p <= d);
    (i > 0 && i < days.len()).then(|| (days[i - 1], days[i]))
}

/// Whether two schedules pay on the same days over a year from `from` (phases that
/// coincide, e.g. the 28th and the last business day, differ on some months).
pub fn same_pay_days(country: Country, a: &PaySchedule, b: &PaySchedule, from: NaiveDate) -> bool {
    let to = from.with_year(from.year() + 1).unwrap_or(from + Days::new(365));
    a.pay_days_between(country, from, to) == b.pay_days_between(country, from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid")
    }

    #[test]
    fn priors_sum_to_one_and_follow_the_country() {
        for c in ["US", "GB", "DE", "FR", "NL", "DK", "SE", "NO", "ZZ"] {
            let country: Country = c.parse().expect("country");
            let total: f64 = candidates(country).iter().map(|(_, p)| p).sum();
            assert!((total - 1.0).abs() < 1e-9, "{c}: {total}");
        }
        let se = infer("SE".parse().expect("SE"), &[]);
        assert_eq!(se.schedule, PaySchedule::MonthlyOnDay { day: 25 });
        assert_eq!(se.evidence, 0);
        assert!(se.confidence > 0.8 && se.confidence < 0.9, "{}", se.confidence);
    }

    #[test]
    fn recoveries_after_the_20th_move_a_german_payer_off_month_end() {
        // Declined for funds in the days before the 20th, paid right after it, month after month.
        let de: Country = "DE".parse().expect("DE");
        let ev: Vec<Evidence> = (1..=6)
            .flat_map(|m| [Evidence::FundsDecline(d(2025, m, 17)), Evidence::Recovered { declined: d(2025, m, 18), paid: d(2025, m, 21) }])
            .collect();
        let est = infer(de, &ev);
        assert_eq!(est.schedule, PaySchedule::MonthlyOnDay { day: 20 });
        assert_eq!(est.evidence, 12);
        assert!(est.confidence > 0.5, "{}", est.confidence);
        // The prior alone says month end.
        assert_eq!(infer(de, &[]).schedule, PaySchedule::LastBusinessDay);
    }

    #[test]
    fn evidence_order_does_not_matter_and_is_capped() {
        let us: Country = "US".parse().expect("US");
        let mut ev: Vec<Evidence> = (0..40).map(|k| Evidence::FundsDecline(d(2025, 1, 2) + Days::new(9 * k))).collect();
        let a = infer(us, &ev);
        ev.reverse();
        assert_eq!(infer(us, &ev), a);
        assert_eq!(a.evidence as usize, MAX_EVIDENCE);
        // Reducing first changes nothing, nor does adding evidence older than the kept.
        assert_eq!(infer(us, &most_recent(&ev)), a);
        let mut older = most_recent(&ev);
        older.extend((0..10).map(|k| Evidence::FundsDecline(d(2024, 1, 2) + Days::new(3 * k))));
        assert_eq!(infer(us, &older), a);
    }
}
