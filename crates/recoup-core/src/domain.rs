//! Plain domain types shared by every module: payment methods, outcomes,
//! channels, money, country and currency codes, and the attempt record.
//!
//! Core side of the boundary: no I/O, no polars, no tokio. Strings from the
//! outside world are parsed into these types once, at the edge (the history
//! loader, the gRPC service), so the rest of the code never compares strings.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the payer pays (contract column `payment_method`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PaymentMethod {
    Card,
    SepaDebit,
    AchDebit,
}

/// Card network (contract column `card_brand`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CardBrand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Other,
}

/// Card funding source (contract column `card_funding`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CardFunding {
    Credit,
    Debit,
    Prepaid,
    Unknown,
}

/// Result of one charge attempt (contract column `outcome`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// Dunning message channel (contract column `channel`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Channel {
    None,
    Email,
    Sms,
    InApp,
    Push,
}

/// Subscription billing interval (contract column `billing_interval`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum BillingInterval {
    Week,
    Month,
    Year,
}

/// "a, b, c": the values an enum parses from, for error messages (built from the
/// enum itself, so a hint can never name a value the parser refuses).
pub fn vocabulary<T: strum::VariantArray + Copy + Into<&'static str>>() -> String {
    T::VARIANTS.iter().map(|v| (*v).into()).collect::<Vec<&str>>().join(", ")
}

/// Error from parsing one of the small code types below.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {expected}, got {value:?}")]
pub struct CodeError {
    what: &'static str,
    expected: &'static str,
    value: String,
}

/// Fixed-width ASCII uppercase code stored inline (`DK`, `EUR`).
macro_rules! ascii_code {
    ($(#[$doc:meta])* $name:ident, $len:literal, $what:literal, $expected:literal, $known:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// The code as text.
            pub fn as_str(&self) -> &str {
                // Constructed only from ASCII uppercase letters.
                std::str::from_utf8(&self.0).unwrap_or("??")
            }
        }

        impl FromStr for $name {
            type Err = CodeError;
            fn from_str(s: &str) -> Result<Self, CodeError> {
                let b = s.as_bytes();
                let known: fn(&str) -> bool = $known;
                if b.len() != $len || !b.iter().all(|c| c.is_ascii_uppercase()) || !known(s) {
                    return Err(CodeError { what: $what, expected: $expected, value: s.to_owned() });
                }
                let mut out = [0u8; $len];
                out.copy_from_slice(b);
                Ok($name(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

ascii_code!(
    /// ISO 3166-1 alpha-2 country code, e.g. `DK`.
    Country, 2, "country", "an ISO 3166-1 alpha-2 code of two uppercase letters (e.g. DK)", |_| true
);
ascii_code!(
    /// ISO 4217 currency code, e.g. `EUR`.
    Currency, 3, "currency", "an ISO 4217 currency code of three uppercase letters (e.g. EUR)",
    // The ISO 4217 list as the iso_currency crate maintains it: `ZZZ` is three
    // letters but no currency, and would otherwise be priced as if it had cents.
    |code| iso_currency::Currency::from_code(code).is_some()
);

impl Currency {
    /// US dollars (the default where a route has no currency field).
    pub const USD: Currency = Currency(*b"USD");

    /// Digits after the decimal point of the currency's minor unit (ISO 4217:
    /// 2 for EUR, 0 for JPY, 3 for KWD); `None` for codes without one (XAU).
    pub fn exponent(self) -> Option<u16> {
        iso_currency::Currency::from_code(self.as_str()).and_then(|c| c.exponent())
    }
}

impl Country {
    /// Build a country from a literal known to be valid (tests, tables).
    pub const fn from_bytes(b: [u8; 2]) -> Country {
        Country(b)
    }
}

/// A payment method's identity (contract column and request field
/// `payment_method_id`: a card fingerprint or the platform's stored-method id),
/// kept as a stable 64-bit FNV-1a hash of its text so nothing else is stored.
/// The networks count attempts per card; this lets the rules do the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CardId(pub u64);

impl CardId {
    /// The id of a `payment_method_id` text (FNV-1a, 64 bit; stable across
    /// versions and machines). `None` for empty text.
    pub fn of(text: &str) -> Option<CardId> {
        let text = text.trim();
        (!text.is_empty())
            .then(|| CardId(text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))))
    }

    /// Whether an attempt on `now` followed one on `before` after the payer replaced the
    /// method: both identified, and different (an unidentified side says nothing). How the
    /// loader and the API read a change of `payment_method_id` as an update.
    pub fn replaced(before: Option<CardId>, now: Option<CardId>) -> bool {
        matches!((before, now), (Some(x), Some(y)) if x != y)
    }
}

/// A raw issuer / network / advice code as received (`51`, `R01`, `AM04`, `N7`).
/// Up to 8 ASCII alphanumeric characters, stored inline and upper-cased; a
/// lone digit is read as the two-digit code it lost its zero from (`5` → `05`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawCode {
    len: u8,
    bytes: [u8; 8],
}

impl RawCode {
    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

impl FromStr for RawCode {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, CodeError> {
        let s = s.trim();
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 8 || !b.iter().all(|c| c.is_ascii_alphanumeric()) {
            return Err(CodeError { what: "code", expected: "1 to 8 ASCII letters or digits", value: s.to_owned() });
        }
        // One digit is a two-digit code (ISO 8583 response, Mastercard advice)
        // whose leading zero an integer column dropped: 5 is 05, 3 is 03.
        if let [d @ b'0'..=b'9'] = b {
            return Ok(RawCode { len: 2, bytes: [b'0', *d, 0, 0, 0, 0, 0, 0] });
        }
        let mut bytes = [0u8; 8];
        for (o, c) in bytes.iter_mut().zip(b) {
            *o = c.to_ascii_uppercase();
        }
        Ok(RawCode { len: b.len() as u8, bytes })
    }
}

impl fmt::Display for RawCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RawCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawCode({})", self.as_str())
    }
}

impl Serialize for RawCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RawCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An amount in a currency's minor unit (cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Amount in minor units; never negative in history.
    pub minor: i64,
    /// ISO 4217 currency.
    pub currency: Currency,
}

/// Index of a payment (`payment_id`) in a loaded history's id table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PaymentIx(pub u32);

/// Index of a customer (`customer_id`) in a loaded history's id table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CustomerIx(pub u32);

/// Where a row came from: file index into the load's file list, and 1-based data row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct SourceRow {
    /// Index into the list of files that were loaded.
    pub file: u32,
    /// 1-based data row within the file (the header does not count).
    pub row: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_parse_contract_spellings() {
        assert_eq!("sepa_debit".parse::<PaymentMethod>(), Ok(PaymentMethod::SepaDebit));
        assert_eq!("in_app".parse::<Channel>(), Ok(Channel::InApp));
        assert_eq!(<&str>::from(Channel::InApp), "in_app");
        assert!("Card".parse::<PaymentMethod>().is_err());
        assert!("weekly".parse::<BillingInterval>().is_err());
    }

    #[test]
    fn country_and_currency_require_uppercase_letters() {
        assert_eq!("DK".parse::<Country>().map(|c| c.to_string()), Ok("DK".to_string()));
        assert!("dk".parse::<Country>().is_err());
        assert!("DNK".parse::<Country>().is_err());
        assert!("EU".parse::<Currency>().is_err());
        assert!("ZZZ".parse::<Currency>().is_err(), "three letters but no ISO 4217 currency");
        assert_eq!("JPY".parse::<Currency>().ok().and_then(Currency::exponent), Some(0));
        assert_eq!("KWD".parse::<Currency>().ok().and_then(Currency::exponent), Some(3));
        assert_eq!("EUR".parse::<Currency>().map(|c| c.to_string()), Ok("EUR".into()));
    }

    #[test]
    fn raw_codes_are_trimmed_and_uppercased() {
        assert_eq!("am04".parse::<RawCode>().map(|c| c.to_string()), Ok("AM04".into()));
        assert_eq!(" 51 ".parse::<RawCode>().map(|c| c.to_string()), Ok("51".into()));
        assert!("".parse::<RawCode>().is_err());
        assert!("5-1".parse::<RawCode>().is_err());
        assert!("123456789".parse::<RawCode>().is_err());
    }
}
