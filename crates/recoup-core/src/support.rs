//! Where the log holds evidence (core, no I/O): per decline class of the
//! payment's last decline, the retries the training history contains, by
//! spacing since the attempt before, time since the failure, retry number,
//! local hour and channel. The engine decides only inside it: a candidate
//! the log never tried anything like is not taken on the model's word
//! (pessimism, as in safe policy improvement: deviate from the logging policy
//! only where the data support it).
//!
//! What counts as "inside" is deliberately blunt and documented: spacing at
//! least the log's 1st percentile (for a retry after a failed retry, the 1st
//! percentile of such retries: spacing is where a foreign log's dynamics differ
//! most, so it is read as logged); time since the failure at most its 99th,
//! read at the model's own resolution (up to the edge of the `days_since_first`
//! level it falls in: the model gives every day of a level the same terms); a
//! retry number whose `retries_before` level (0–4, 5+) the log reached at
//! least [`MIN_CELL`] times; a local hour
//! and a channel with at least [`MIN_CELL`] retries (or 0.5 % of the class's;
//! a local hour of a log under 960 retries, half its even share of them).
//! A class with fewer than [`MIN_CLASS`] retries uses the pooled support of all
//! classes; a model without support (trained before it existed) decides
//! everywhere, as it did.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use serde::{Deserialize, Serialize};
use strum::VariantArray;

use crate::declines::DeclineClass;
use crate::domain::Channel;
use crate::features::{DAYS_SINCE_FIRST_EDGES, RETRIES_BEFORE_LEVELS};

/// Retry numbers whose spacing the support records apart (the last counts it and on).
pub const SPACING_RETRY_NUMBERS: u32 = 6;
/// A retry number whose logged spacings (1st to 99th percentile) span less than this many
/// hours was logged on a fixed schedule: what another spacing does to it is not in the log.
pub const FIXED_SPACING_HOURS: f64 = 24.0;

/// Fewest retries in a cell (a local hour, a channel, a retry number) for it to count as supported.
pub const MIN_CELL: u32 = 20;
/// Fewest retries at a local hour for it to count as supported in a small log
/// ([`ClassSupport::local_hour`]).
pub const MIN_HOUR_SMALL_LOG: u32 = 3;
/// Fewest retries after a class for its own support; fewer: the pooled one.
pub const MIN_CLASS: usize = 200;

/// The support of one decline class (or of all pooled: `class` is `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSupport {
    pub class: Option<DeclineClass>,
    /// Retries logged after this class.
    pub retries: usize,
    /// 1st percentile of the hours between a retry and the attempt before it.
    pub min_spacing_hours: f64,
    /// The same over the retries after a failed retry (retry number 2 on), when the log has at
    /// least [`MIN_CELL`] of them: a log whose first retries come within a day but whose later
    /// ones are days apart says nothing about a second retry within a day. `None` (and models
    /// trained before it existed): `min_spacing_hours` for every retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_spacing_hours_later: Option<f64>,
    /// 99th percentile of the hours between the failure and a retry.
    pub max_hours_since_failure: f64,
    /// Per retry number (1 … [`SPACING_RETRY_NUMBERS`], the last for it and on): the 1st and
    /// 99th percentile of the hours between such a retry and the attempt before it, when
    /// the log has at least [`MIN_CELL`] of them. Empty for models trained before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spacing_by_retry_number: Vec<Option<[f64; 2]>>,
    /// Retries per retry number (1 = the first retry), up to 32.
    pub by_retry_number: Vec<u32>,
    /// Retries per local hour of the payer (0–23).
    pub by_local_hour: Vec<u32>,
    /// Retries per channel sent before them (in `Channel` order).
    pub by_channel: Vec<u32>,
}

/// Why a candidate lies outside the support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outside {
    Spacing,
    SinceFailure,
    RetryNumber,
    LocalHour,
    Channel,
}

impl Outside {
    /// Stable reason code (after `outside_support:`).
    pub fn code(self) -> &'static str {
        match self {
            Outside::Spacing => "spacing",
            Outside::SinceFailure => "time_since_failure",
            Outside::RetryNumber => "retry_number",
            Outside::LocalHour => "local_hour",
            Outside::Channel => "channel",
        }
    }
}

impl ClassSupport {
    fn enough(&self, n: u32) -> bool {
        n >= MIN_CELL.max((self.retries as f64 * 0.005) as u32)
    }

    /// A local hour is one of 24 cells: in a log too small to give each
    /// [`MIN_CELL`] retries, an hour counts as tried with half its even share
    /// (at least [`MIN_HOUR_SMALL_LOG`]). Otherwise a small history supports
    /// no hour at all and every payment is given up. Logs of 960 retries and
    /// more are judged as before.
    fn enough_at_hour(&self, n: u32) -> bool {
        let half_even_share = (self.retries / 48) as u32;
        self.enough(n) || n >= half_even_share.clamp(MIN_HOUR_SMALL_LOG, MIN_CELL)
    }

    /// Whether retry number `k` (1 = first retry) is supported, at the model's resolution: it
    /// sees the retries before as 0–4 and 5+, so retry 7 is as supported as retry 6 (the
    /// failed-retries correction keeps lowering it as failures add up).
    pub fn retry_number(&self, k: u32) -> Result<(), Outside> {
        let k = k.max(1) as usize;
        let n = if k > RETRIES_BEFORE_LEVELS {
            self.by_retry_number.iter().skip(RETRIES_BEFORE_LEVELS).sum()
        } else {
            self.by_retry_number.get(k - 1).copied().unwrap_or(0)
        };
        if self.enough(n) {
            Ok(())
        } else {
            Err(Outside::RetryNumber)
        }
    }

    /// Whether retry number `k` (1 = first retry) `spacing_h` hours after the last attempt and
    /// `since_h` after the failure is supported.
    pub fn timing(&self, k: u32, spacing_h: f64, since_h: f64) -> Result<(), Outside> {
        let min_spacing = if k >= 2 { self.min_spacing_hours_later.unwrap_or(self.min_spacing_hours) } else { self.min_spacing_hours };
        if spacing_h < min_spacing {
            Err(Outside::Spacing)
        } else if since_h > self.max_hours_since_failure {
            Err(Outside::SinceFailure)
        } else {
            Ok(())
        }
    }

    /// The spacing the log gave retry number `k` (1 = first), `[1st, 99th percentile]` in
    /// hours, when it was fixed (spanning less than [`FIXED_SPACING_HOURS`]): the log then
    /// holds nothing on what another spacing does to that retry (a plain schedule makes a
    /// retry's spacing and its number move together), and the model's P at another spacing
    /// is an extrapolation from other retry numbers. `None`: the spacing varied, or too few.
    pub fn fixed_spacing(&self, k: u32) -> Option<[f64; 2]> {
        let ix = k.clamp(1, SPACING_RETRY_NUMBERS) as usize - 1;
        self.spacing_by_retry_number.get(ix).copied().flatten().filter(|[lo, hi]| hi - lo < FIXED_SPACING_HOURS)
    }

    /// Whether a retry at this local hour is supported.
    pub fn local_hour(&self, hour: u32) -> Result<(), Outside> {
        if self.enough_at_hour(self.by_local_hour.get(hour as usize).copied().unwrap_or(0)) {
            Ok(())
        } else {
            Err(Outside::LocalHour)
        }
    }

    /// Whether a retry after a message on `channel` is supported.
    pub fn channel(&self, channel: Channel) -> Result<(), Outside> {
        if self.enough(self.by_channel.get(channel as usize).copied().unwrap_or(0)) {
            Ok(())
        } else {
            Err(Outside::Channel)
        }
    }

    /// The retry numbers whose spacing the log fixed ([`ClassSupport::fixed_spacing`]), for the
    /// model card: `retry 1 48 h, retry 3 72 h`; `None` when there is none. (Not in
    /// [`ClassSupport::describe`], which every `outside_support:*` reason repeats.)
    pub fn describe_fixed_spacing(&self) -> Option<String> {
        let fixed: Vec<String> = (1..=SPACING_RETRY_NUMBERS)
            .filter_map(|k| {
                let [lo, hi] = self.fixed_spacing(k)?;
                let k = if k == SPACING_RETRY_NUMBERS { format!("{k}+") } else { k.to_string() };
                Some(if hi - lo < 1.0 { format!("retry {k} {lo:.0} h") } else { format!("retry {k} {lo:.0}–{hi:.0} h") })
            })
            .collect();
        (!fixed.is_empty()).then(|| fixed.join(", "))
    }

    /// One line for reasons and the model card.
    pub fn describe(&self) -> String {
        let hours: Vec<String> = (0..24).filter(|&h| self.local_hour(h).is_ok()).map(|h| h.to_string()).collect();
        let channels: Vec<&str> = Channel::VARIANTS.iter().filter(|c| self.channel(**c).is_ok()).map(|c| (*c).into()).collect();
        let last = RETRIES_BEFORE_LEVELS as u32 + 1;
        let max_k = (1..=last).rev().find(|&k| self.retry_number(k).is_ok()).unwrap_or(0);
        let max_k = if max_k == last { format!("{max_k} and on") } else { max_k.to_string() };
        format!(
            "{} retries: spacing ≥ {:.0} h{}, ≤ {:.1} days after the failure, retry numbers 1–{max_k}, local hours {}, channels {}",
            self.retries,
            self.min_spacing_hours,
            self.min_spacing_hours_later.map_or(String::new(), |h| format!(" (≥ {h:.0} h after a failed retry)")),
            self.max_hours_since_failure / 24.0,
            if hours.len() == 24 { "all".to_string() } else { hours.join(",") },
            channels.join(", ")
        )
    }
}

/// The support of every decline class, and of all pooled.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Support {
    pub classes: Vec<ClassSupport>,
    pub pooled: Option<ClassSupport>,
}

impl Support {
    /// The support to decide a payment whose last decline is of `class` in; `None`: decide everywhere.
    pub fn for_class(&self, class: DeclineClass) -> Option<&ClassSupport> {
        self.classes.iter().find(|c| c.class == Some(class) && c.retries >= MIN_CLASS).or(self.pooled.as_ref())
    }

    /// Whether any support was recorded.
    pub fn is_empty(&self) -> bool {
        self.pooled.is_none()
    }
}

/// One logged retry, as the support counts it.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// The class of the decline before it.
    pub class: DeclineClass,
    pub spacing_hours: f64,
    pub hours_since_failure: f64,
    /// 1 = first retry.
    pub retry_number: u32,
    pub local_hour: u32,
    pub channel: Channel,
}

/// The upper edge of the `days_since_first` level the percentile (hours) falls in: a log whose
/// retries stop 14.2 days after the failure supports the 14–21-day level up to 21 days. The last,
/// open level keeps the percentile itself.
fn since_ceiling(h: f64) -> f64 {
    DAYS_SINCE_FIRST_EDGES.iter().copied().find(|e| e * 24.0 > h).map_or(h, |e| e * 24.0)
}

/// The support of these retries.
pub fn estimate(retries: &[Observed]) -> Support {
    let one = |class: Option<DeclineClass>| {
        let rs: Vec<&Observed> = retries.iter().filter(|r| class.is_none_or(|c| r.class == c)).collect();
        if rs.is_empty() {
            return None;
        }
        let quantile = |mut v: Vec<f64>, q: f64| {
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * q).round() as usize]
        };
        let mut by_retry_number = vec![0u32; 32];
        let mut by_local_hour = vec![0u32; 24];
        let mut by_channel = vec![0u32; Channel::VARIANTS.len()];
        for r in &rs {
            by_retry_number[(r.retry_number.clamp(1, 32) - 1) as usize] += 1;
            by_local_hour[(r.local_hour % 24) as usize] += 1;
            by_channel[r.channel as usize] += 1;
        }
        Some(ClassSupport {
            class,
            retries: rs.len(),
            min_spacing_hours: quantile(rs.iter().map(|r| r.spacing_hours).collect(), 0.01),
            min_spacing_hours_later: {
                let later: Vec<f64> = rs.iter().filter(|r| r.retry_number >= 2).map(|r| r.spacing_hours).collect();
                (later.len() >= MIN_CELL as usize).then(|| quantile(later, 0.01))
            },
            spacing_by_retry_number: (1..=SPACING_RETRY_NUMBERS)
                .map(|k| {
                    let v: Vec<f64> =
                        rs.iter().filter(|r| r.retry_number.clamp(1, SPACING_RETRY_NUMBERS) == k).map(|r| r.spacing_hours).collect();
                    (v.len() >= MIN_CELL as usize).then(|| [quantile(v.clone(), 0.01), quantile(v, 0.99)])
                })
                .collect(),
            max_hours_since_failure: since_ceiling(quantile(rs.iter().map(|r| r.hours_since_failure).collect(), 0.99)),
            by_retry_number,
            by_local_hour,
            by_channel,
        })
    };
    Support { classes: DeclineClass::VARIANTS.iter().filter_map(|c| one(Some(*c))).collect(), pooled: one(None) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(class: DeclineClass, spacing_hours: f64, since: f64, k: u32, hour: u32, channel: Channel) -> Observed {
        Observed { class, spacing_hours, hours_since_failure: since, retry_number: k, local_hour: hour, channel }
    }

    #[test]
    fn a_log_that_never_retries_within_a_day_supports_no_retry_within_a_day() {
        let mut log = Vec::new();
        for i in 0..1_000u32 {
            let spacing = 24.0 + (i % 48) as f64;
            log.push(retry(
                DeclineClass::SoftFunds,
                spacing,
                spacing * (1 + i % 3) as f64,
                1 + i % 3,
                8 + i % 10,
                if i % 2 == 0 { Channel::None } else { Channel::Email },
            ));
        }
        let s = estimate(&log);
        let c = s.for_class(DeclineClass::SoftFunds).expect("enough retries");
        assert_eq!(c.timing(1, 1.0, 30.0), Err(Outside::Spacing));
        assert!(c.timing(1, 30.0, 30.0).is_ok());
        assert_eq!(c.timing(1, 30.0, 24.0 * 20.0), Err(Outside::SinceFailure));
        assert!(c.retry_number(3).is_ok() && c.retry_number(4).is_err());
        // Retry numbers past the model's last level count together.
        let mut deep = c.clone();
        deep.by_retry_number = vec![0; 32];
        deep.by_retry_number[5] = 500;
        assert!(deep.retry_number(6).is_ok() && deep.retry_number(9).is_ok() && deep.retry_number(5).is_err());
        assert!(c.local_hour(9).is_ok() && c.local_hour(3).is_err());
        assert!(c.channel(Channel::Email).is_ok() && c.channel(Channel::Sms).is_err());
        // A class the log hardly saw uses the pooled support.
        assert_eq!(s.for_class(DeclineClass::Technical).map(|c| c.class), Some(None));
        assert!(Support::default().for_class(DeclineClass::SoftFunds).is_none(), "no support recorded: decide everywhere");
    }

    /// A log of 240 retries spread over the day gives each hour 10, none the 20 a
    /// larger log needs: each hour with at least half its even share (5) counts,
    /// one with fewer does not.
    #[test]
    fn a_small_log_supports_the_local_hours_it_used() {
        let log: Vec<Observed> = (0..240u32).map(|i| retry(DeclineClass::SoftFunds, 30.0, 30.0, 1, i % 24, Channel::None)).collect();
        let c = estimate(&log).pooled.expect("pooled");
        assert_eq!(c.retries, 240);
        assert!((0..24).all(|h| c.local_hour(h).is_ok()), "10 retries an hour: {}", c.describe());
        let thin: Vec<Observed> =
            (0..240u32).map(|i| retry(DeclineClass::SoftFunds, 30.0, 30.0, 1, if i < 4 { 3 } else { 9 + i % 8 }, Channel::None)).collect();
        let c = estimate(&thin).pooled.expect("pooled");
        assert_eq!(c.local_hour(3), Err(Outside::LocalHour), "4 retries: under half the even share (5)");
        assert_eq!(c.local_hour(20), Err(Outside::LocalHour), "never used");
        assert!(c.local_hour(9).is_ok());
    }

    #[test]
    fn a_retry_number_the_log_always_spaced_alike_is_named_fixed() {
        // A plain schedule: retry 1 two days after the failure, retry 2 two days later, retry 3
        // three days later (±0–30 min of the billing run), retries 4–5 random and too few of 6.
        let mut log = Vec::new();
        for i in 0..900u32 {
            let k = 1 + i % 5;
            let jitter = (i % 7) as f64 * 5.0 / 60.0;
            let spacing = match k {
                1 | 2 => 48.0 + jitter,
                3 => 72.0 + jitter,
                _ => 24.0 + (i % 97) as f64,
            };
            log.push(retry(DeclineClass::SoftIssuer, spacing, 48.0 * k as f64, k, 9, Channel::None));
        }
        let c = estimate(&log).for_class(DeclineClass::SoftIssuer).cloned().expect("enough retries");
        let [lo, hi] = c.fixed_spacing(1).expect("retry 1 is fixed");
        assert!((48.0..48.6).contains(&lo) && (48.0..48.6).contains(&hi), "{lo}–{hi}");
        assert!(c.fixed_spacing(2).is_some());
        assert!(c.fixed_spacing(3).is_some_and(|[lo, _]| lo >= 72.0));
        assert_eq!(c.fixed_spacing(4), None, "spacings spread over four days are not fixed");
        assert_eq!(c.fixed_spacing(6), None, "too few retries 6 and on to say");
        assert_eq!(c.fixed_spacing(9), c.fixed_spacing(6), "retry numbers past the last count with it");
        let fixed = c.describe_fixed_spacing().expect("fixed spacings");
        assert!(fixed.starts_with("retry 1 48 h, retry 2 48 h, retry 3 72 h"), "{fixed}");
        assert!(!c.describe().contains("fixed"), "every outside_support reason repeats describe(): {}", c.describe());
        // Fixing a spacing says what P means there; it takes nothing out of the support.
        assert!(c.timing(1, 80.0, 80.0).is_ok());
        // A model from before the field names nothing fixed.
        let old = ClassSupport { spacing_by_retry_number: Vec::new(), ..c };
        assert_eq!(old.fixed_spacing(1), None);
    }

    #[test]
    fn later_retries_need_the_spacing_the_log_gave_later_retries() {
        // First retries 12–35 h after the failure; later ones 48–71 h after the retry before.
        let mut log = Vec::new();
        for i in 0..600u32 {
            let k = 1 + i % 3;
            let spacing = if k == 1 { 12.0 + (i % 24) as f64 } else { 48.0 + (i % 24) as f64 };
            log.push(retry(DeclineClass::SoftIssuer, spacing, 24.0 * k as f64, k, 9, Channel::None));
        }
        let c = estimate(&log).for_class(DeclineClass::SoftIssuer).cloned().expect("enough retries");
        assert!(c.timing(1, 13.0, 13.0).is_ok(), "a first retry within a day is supported");
        assert_eq!(c.timing(2, 13.0, 40.0), Err(Outside::Spacing), "a second one within a day is not");
        assert!(c.timing(2, 50.0, 60.0).is_ok());
        assert!(c.describe().contains("after a failed retry"), "{}", c.describe());
        // A model from before the field: the one spacing for every retry.
        let old = ClassSupport { min_spacing_hours_later: None, ..c };
        assert!(old.timing(2, 13.0, 40.0).is_ok());
    }
}
