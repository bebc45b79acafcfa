//! The one set of bounds every input is held to, on every route (`recoup.v1`,
//! hyperswitch's decider, `recoup decide`, the history loader). Core: plain
//! constants and checks, no I/O.
//!
//! Why bounds at all: the engine's work grows with the attempts it is given and
//! its calendar arithmetic is only defined on a finite span of time, so an
//! unbounded request could make one call allocate gigabytes or panic. Each
//! bound is far above anything a real payment has (Visa allows 15 retries in
//! 30 days), so a legitimate caller never meets one; a request past a bound is
//! refused with the field named, before any work is done.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use chrono::{DateTime, Utc};

/// A request field that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    /// Dotted path of the field, as named in the API (`attempts[2].at`).
    pub field: String,
    pub message: String,
}

/// Earliest time accepted anywhere: 1970-01-01T00:00:00Z.
pub const EARLIEST_SECONDS: i64 = 0;
/// First time no longer accepted: 2200-01-01T00:00:00Z (chrono's own range ends
/// in 2262; every window and horizon added to an accepted time stays inside it).
pub const LATEST_SECONDS: i64 = 7_258_118_400;
/// Attempts of the payment being decided (`attempts`, or retries expanded from
/// hyperswitch's `hourly_retry_history`).
pub const MAX_ATTEMPTS: usize = 1_000;
/// Earlier payments of the payer (`past_payments`).
pub const MAX_PAST_PAYMENTS: usize = 200;
/// Attempts over all earlier payments.
pub const MAX_PAST_ATTEMPTS: usize = 5_000;
/// Asks for a new payment method already sent (`asks`).
pub const MAX_ASKS: usize = 200;
/// Allowed channels listed in `constraints.allowed_channels`.
pub const MAX_CHANNELS: usize = 16;
/// Entries of hyperswitch's `hourly_retry_history`.
pub const MAX_HISTORY_KEYS: usize = 5_000;
/// Bytes of an identifier (`payment_id`, `merchant_id`, …) or a free-text field.
pub const MAX_TEXT_BYTES: usize = 256;
/// Items of one `DecideBatch`.
pub const MAX_BATCH: usize = 10_000;
/// Largest message any gRPC service decodes or encodes (4 MiB, gRPC's usual default).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Whether `t` lies in the accepted span [1970-01-01, 2200-01-01).
pub fn time_in_range(t: DateTime<Utc>) -> bool {
    (EARLIEST_SECONDS..LATEST_SECONDS).contains(&t.timestamp())
}

/// `t`, or an error naming `field` when it lies outside the accepted span.
pub fn check_time(field: &str, t: DateTime<Utc>) -> Result<DateTime<Utc>, InvalidField> {
    check_time_named(|| field.to_string(), t)
}

/// [`check_time`] naming the field only when it is refused (callers in a loop
/// build no field name for times that pass).
pub fn check_time_named(field: impl FnOnce() -> String, t: DateTime<Utc>) -> Result<DateTime<Utc>, InvalidField> {
    if time_in_range(t) {
        Ok(t)
    } else {
        Err(InvalidField {
            field: field(),
            message: format!("{} is outside the accepted range 1970-01-01 to 2199-12-31 (UTC)", t.to_rfc3339()),
        })
    }
}

/// An error naming `field` when a list holds more than `max` items.
pub fn check_len(field: &str, len: usize, max: usize) -> Result<(), InvalidField> {
    if len > max {
        Err(InvalidField { field: field.into(), message: format!("{len} items, at most {max} accepted") })
    } else {
        Ok(())
    }
}

/// An error naming `field` when a text is longer than [`MAX_TEXT_BYTES`].
pub fn check_text(field: &str, s: &str) -> Result<(), InvalidField> {
    if s.len() > MAX_TEXT_BYTES {
        Err(InvalidField { field: field.into(), message: format!("{} bytes, at most {MAX_TEXT_BYTES} accepted", s.len()) })
    } else {
        Ok(())
    }
}

/// The hour at or after `t`, with integer arithmetic (defined for every time;
/// chrono's `duration_trunc` fails outside 1677–2262).
pub fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    let into_hour = s.rem_euclid(3600);
    if into_hour == 0 && t.timestamp_subsec_nanos() == 0 {
        return t;
    }
    DateTime::from_timestamp(s - into_hour + 3600, 0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ceil_hour_rounds_up_and_keeps_whole_hours() {
        let t = Utc.with_ymd_and_hms(2026, 3, 5, 14, 20, 0).unwrap();
        assert_eq!(ceil_hour(t), Utc.with_ymd_and_hms(2026, 3, 5, 15, 0, 0).unwrap());
        let whole = Utc.with_ymd_and_hms(2026, 3, 5, 14, 0, 0).unwrap();
        assert_eq!(ceil_hour(whole), whole);
        let just_after = whole + chrono::Duration::nanoseconds(1);
        assert_eq!(ceil_hour(just_after), whole + chrono::Duration::hours(1));
    }

    #[test]
    fn ceil_hour_is_defined_far_outside_the_accepted_span() {
        for y in [1600, 2300, 9999] {
            let t = Utc.with_ymd_and_hms(y, 6, 1, 10, 30, 0).unwrap();
            assert_eq!(ceil_hour(t), Utc.with_ymd_and_hms(y, 6, 1, 11, 0, 0).unwrap());
        }
    }

    #[test]
    fn times_outside_1970_to_2200_are_refused_naming_the_field() {
        assert!(check_time("now", Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap()).is_ok());
        assert!(check_time("now", Utc.with_ymd_and_hms(2199, 12, 31, 23, 59, 59).unwrap()).is_ok());
        let e = check_time("attempts[0].attempted_at", Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).unwrap()).unwrap_err();
        assert_eq!(e.field, "attempts[0].attempted_at");
        assert!(check_time("now", Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap()).is_err());
    }
}
