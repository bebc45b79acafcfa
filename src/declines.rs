//! Decline taxonomy: the contract's normalized `decline_code` vocabulary, the
//! mapping from raw issuer codes to it, and the class that decides how a
//! decline may be retried.
//!
//! Core side of the boundary: pure lookups, no I/O. Sources of the mappings:
//! - ISO 8583 (1987) field 39 response codes as used by Visa and Mastercard;
//!   Visa's decline categories from the Visa Core Rules "Decline response code
//!   categories" (category 1: issuer will never approve; 2: could be approved
//!   later; 3: data quality, fix the data first), in force since April 2021.
//! - Mastercard Merchant Advice Codes (MAC), "Transaction Processing Rules"
//!   and the Merchant Advice Code Transaction Excellence program (2022–2024):
//!   01 update account, 02 try later, 03 do not try again, 21 payment
//!   cancellation, 24–30 retry after a given delay.
//! - NACHA Operating Rules, Appendix Four, ACH return reason codes R01–R85.
//! - EPC SEPA Direct Debit Core Rulebook / ISO 20022 ExternalStatusReason1Code
//!   reason codes for R-transactions (AC04, AM04, MD06, MS02, MS03, …).

use serde::{Deserialize, Serialize};

use crate::domain::{PaymentMethod, RawCode};

/// The contract's normalized decline reason (history-v1 `decline_code`).
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
pub enum DeclineCode {
    InsufficientFunds,
    DoNotHonor,
    GenericDecline,
    ExpiredCard,
    IncorrectNumber,
    IncorrectCvc,
    CardVelocityExceeded,
    WithdrawalCountLimitExceeded,
    TryAgainLater,
    IssuerNotAvailable,
    ProcessingError,
    LostCard,
    StolenCard,
    PickupCard,
    Fraudulent,
    RestrictedCard,
    TransactionNotAllowed,
    InvalidAccount,
    AccountClosed,
    AuthenticationRequired,
    RevocationOfAuthorization,
    RevocationOfAllAuthorizations,
    StopPaymentOrder,
    DoNotTryAgain,
    Other,
}

/// How a decline may be retried.
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
pub enum DeclineClass {
    /// Never retry: the issuer will never approve (Visa category 1, fraud, revocations).
    Hard,
    /// Retry only after the payer changed the payment method (Visa category 3).
    NeedsUpdate,
    /// Insufficient funds or limits: likely to clear after pay day.
    SoftFunds,
    /// Do not honor, generic: the issuer may approve later; decays with attempts.
    SoftIssuer,
    /// Issuer unavailable, processing error: retry within hours.
    Technical,
}

impl DeclineCode {
    /// The retry class of this decline.
    pub fn class(self) -> DeclineClass {
        use DeclineClass::*;
        use DeclineCode::*;
        match self {
            InsufficientFunds | CardVelocityExceeded | WithdrawalCountLimitExceeded => SoftFunds,
            DoNotHonor | GenericDecline | Other => SoftIssuer,
            ExpiredCard | IncorrectNumber | IncorrectCvc | AuthenticationRequired => NeedsUpdate,
            TryAgainLater | IssuerNotAvailable | ProcessingError => Technical,
            // Stripe's and the networks' guidance: a restricted card cannot be
            // used for this payment until the payer talks to the issuer.
            LostCard
            | StolenCard
            | PickupCard
            | Fraudulent
            | RestrictedCard
            | TransactionNotAllowed
            | InvalidAccount
            | AccountClosed
            | RevocationOfAuthorization
            | RevocationOfAllAuthorizations
            | StopPaymentOrder
            | DoNotTryAgain => Hard,
        }
    }

    /// The contract spelling (`insufficient_funds`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Which raw-code family a `network_code` belongs to, chosen by payment method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeFamily {
    /// ISO 8583 field 39 (cards), including Visa's alphanumeric codes (N7, R0, 1A).
    Iso8583,
    /// NACHA return reason codes (ACH debits).
    Ach,
    /// ISO 20022 / EPC reason codes (SEPA direct debits).
    Sepa,
}

impl CodeFamily {
    /// The family used by a payment method.
    pub fn of(method: PaymentMethod) -> CodeFamily {
        match method {
            PaymentMethod::Card => CodeFamily::Iso8583,
            PaymentMethod::AchDebit => CodeFamily::Ach,
            PaymentMethod::SepaDebit => CodeFamily::Sepa,
        }
    }
}

/// ISO 8583 response codes (field 39) → normalized code.
/// Visa category 1 codes (never approve): 04, 07, 12, 14, 15, 41, 43, 46, 57, R0, R1, R3.
/// Visa category 3 codes (data quality): 54, 55, 70, 82, 1A, N7.
pub const ISO8583: &[(&str, DeclineCode)] = {
    use DeclineCode::*;
    &[
        ("01", DoNotHonor),                    // refer to card issuer
        ("02", DoNotHonor),                    // refer to card issuer, special condition
        ("03", GenericDecline),                // invalid merchant (Visa cat 2)
        ("04", PickupCard),                    // pick up card (Visa cat 1)
        ("05", DoNotHonor),                    // do not honor (Visa cat 2)
        ("06", ProcessingError),               // error
        ("07", PickupCard),                    // pick up card, special condition / fraud (Visa cat 1)
        ("12", TransactionNotAllowed),         // invalid transaction (Visa cat 1)
        ("13", GenericDecline),                // invalid amount
        ("14", InvalidAccount),                // invalid account number, no such number (Visa cat 1)
        ("15", InvalidAccount),                // no such issuer (Visa cat 1)
        ("19", TryAgainLater),                 // re-enter transaction (Visa cat 2)
        ("41", LostCard),                      // lost card, pick up (Visa cat 1)
        ("43", StolenCard),                    // stolen card, pick up (Visa cat 1)
        ("46", AccountClosed),                 // closed account (Visa cat 1)
        ("51", InsufficientFunds),             // not sufficient funds (Visa cat 2)
        ("52", GenericDecline),                // no checking account (Visa cat 2)
        ("53", GenericDecline),                // no savings account (Visa cat 2)
        ("54", ExpiredCard),                   // expired card (Visa cat 3)
        ("55", IncorrectCvc),                  // incorrect PIN (Visa cat 3)
        ("57", TransactionNotAllowed),         // not permitted to cardholder (Visa cat 1)
        ("59", Fraudulent),                    // suspected fraud
        ("61", CardVelocityExceeded),          // exceeds approval amount limit (Visa cat 2)
        ("62", RestrictedCard),                // restricted card
        ("63", Fraudulent),                    // security violation
        ("65", WithdrawalCountLimitExceeded),  // exceeds withdrawal frequency (Visa cat 2)
        ("70", IncorrectCvc),                  // PIN data required (Visa cat 3)
        ("75", CardVelocityExceeded),          // allowable PIN tries exceeded (Visa cat 2)
        ("78", GenericDecline),                // blocked, first used (Visa cat 2)
        ("82", IncorrectCvc),                  // negative CAM, dCVV, iCVV or CVV results (Visa cat 3)
        ("86", GenericDecline),                // cannot verify PIN (Visa cat 2)
        ("91", IssuerNotAvailable),            // issuer or switch inoperative (Visa cat 2)
        ("92", ProcessingError),               // unable to route transaction
        ("93", GenericDecline),                // violation of law, cannot complete (Visa cat 2)
        ("94", ProcessingError),               // duplicate transmission
        ("96", ProcessingError),               // system malfunction (Visa cat 2)
        ("1A", AuthenticationRequired),        // additional customer authentication required (Visa cat 3)
        ("N3", CardVelocityExceeded),          // cash service not available (Visa cat 2)
        ("N4", CardVelocityExceeded),          // cash request exceeds issuer limit (Visa cat 2)
        ("N7", IncorrectCvc),                  // decline for CVV2 failure (Visa cat 3)
        ("R0", StopPaymentOrder),              // stop payment order (Visa cat 1)
        ("R1", RevocationOfAuthorization),     // revocation of authorization order (Visa cat 1)
        ("R3", RevocationOfAllAuthorizations), // revocation of all authorizations order (Visa cat 1)
    ]
};

/// Mastercard Merchant Advice Codes → normalized code, used when neither
/// `decline_code` nor `network_code` names the reason. 24–30 say "retry after
/// a delay" (enforced by the rules module) and carry no reason of their own.
pub const MASTERCARD_ADVICE: &[(&str, DeclineCode)] = {
    use DeclineCode::*;
    &[
        ("01", ExpiredCard),               // new account information available (update the card)
        ("02", TryAgainLater),             // cannot approve at this time, try again later
        ("03", DoNotTryAgain),             // do not try again
        ("04", ProcessingError),           // token requirements not fulfilled for this token type
        ("21", RevocationOfAuthorization), // payment cancellation (stop recurring payments)
        ("22", TransactionNotAllowed),     // merchant does not qualify for product code
        ("24", TryAgainLater),             // retry after 1 hour
        ("25", TryAgainLater),             // retry after 24 hours
        ("26", TryAgainLater),             // retry after 2 days
        ("27", TryAgainLater),             // retry after 4 days
        ("28", TryAgainLater),             // retry after 6 days
        ("29", TryAgainLater),             // retry after 8 days
        ("30", TryAgainLater),             // retry after 10 days
        ("40", GenericDecline),            // consumer non-reloadable prepaid card
        ("41", GenericDecline),            // consumer single-use virtual card
    ]
};

/// NACHA return reason codes (Operating Rules, Appendix Four) → normalized code.
pub const ACH_RETURN: &[(&str, DeclineCode)] = {
    use DeclineCode::*;
    &[
        ("R01", InsufficientFunds),         // insufficient funds (may be re-initiated)
        ("R02", AccountClosed),             // account closed
        ("R03", InvalidAccount),            // no account / unable to locate account
        ("R04", InvalidAccount),            // invalid account number structure
        ("R05", RevocationOfAuthorization), // unauthorized debit to consumer account (CCD/CTX)
        ("R06", Other),                     // returned per ODFI's request
        ("R07", RevocationOfAuthorization), // authorization revoked by customer
        ("R08", StopPaymentOrder),          // payment stopped
        ("R09", InsufficientFunds),         // uncollected funds (may be re-initiated)
        ("R10", RevocationOfAuthorization), // customer advises unauthorized / not authorized
        ("R11", DoNotTryAgain),             // entry not in accordance with the authorization
        ("R12", AccountClosed),             // account sold to another DFI
        ("R13", InvalidAccount),            // invalid ACH routing number
        ("R14", AccountClosed),             // representative payee deceased
        ("R15", AccountClosed),             // beneficiary or account holder deceased
        ("R16", DoNotTryAgain),             // account frozen / returned per OFAC
        ("R17", ProcessingError),           // file record edit criteria
        ("R20", InvalidAccount),            // non-transaction account
        ("R23", Other),                     // credit entry refused by receiver
        ("R24", ProcessingError),           // duplicate entry
        ("R29", RevocationOfAuthorization), // corporate customer advises not authorized
    ]
};

/// SEPA Direct Debit R-transaction reason codes (ISO 20022, EPC rulebook) → normalized code.
pub const SEPA_REASON: &[(&str, DeclineCode)] = {
    use DeclineCode::*;
    &[
        ("AC01", InvalidAccount),            // account identifier incorrect (invalid IBAN)
        ("AC04", AccountClosed),             // account closed
        ("AC06", DoNotTryAgain),             // account blocked
        ("AC13", InvalidAccount),            // debtor account is a consumer account (B2B)
        ("AG01", TransactionNotAllowed),     // direct debit forbidden on this account
        ("AG02", ProcessingError),           // operation/transaction code incorrect
        ("AM04", InsufficientFunds),         // insufficient funds
        ("AM05", ProcessingError),           // duplication
        ("BE05", ProcessingError),           // creditor identifier incorrect
        ("CNOR", ProcessingError),           // creditor bank not registered
        ("DNOR", ProcessingError),           // debtor bank not registered
        ("FF01", ProcessingError),           // file format incomplete or invalid
        ("MD01", RevocationOfAuthorization), // no valid mandate
        ("MD02", ProcessingError),           // mandate data missing or incorrect
        ("MD06", RevocationOfAuthorization), // refund request by end customer
        ("MD07", AccountClosed),             // end customer deceased
        ("MS02", StopPaymentOrder),          // refusal by the debtor, reason not specified
        ("MS03", GenericDecline),            // reason not specified by the debtor's bank
        ("RC01", ProcessingError),           // BIC incorrect
        ("RR01", TransactionNotAllowed),     // regulatory: debtor account or identification missing
        ("RR02", TransactionNotAllowed),     // regulatory: debtor name or address missing
        ("RR03", TransactionNotAllowed),     // regulatory: creditor name or address missing
        ("RR04", TransactionNotAllowed),     // regulatory reason
        ("SL01", StopPaymentOrder),          // specific service offered by the debtor's bank (blocking)
    ]
};

/// Payment gateways' own decline codes that are not contract codes, written in
/// lower case with `_` for spaces (see [`from_gateway_code`]). Sources: Stripe's
/// "Decline codes" and "Error codes" references (most Stripe decline codes *are*
/// contract codes and parse directly); Adyen's "Refusal reasons" list.
pub const GATEWAY: &[(&str, DeclineCode)] = {
    use DeclineCode::*;
    &[
        // Stripe error codes and decline codes outside the contract vocabulary.
        ("card_declined", GenericDecline),
        ("call_issuer", DoNotHonor),
        ("no_action_taken", DoNotHonor),
        ("approve_with_id", TryAgainLater),
        ("reenter_transaction", TryAgainLater),
        ("new_account_information_available", ExpiredCard),
        ("invalid_expiry_month", ExpiredCard),
        ("invalid_expiry_year", ExpiredCard),
        ("invalid_number", IncorrectNumber),
        ("incorrect_zip", IncorrectCvc),
        ("invalid_cvc", IncorrectCvc),
        ("card_not_supported", TransactionNotAllowed),
        ("currency_not_supported", TransactionNotAllowed),
        ("not_permitted", TransactionNotAllowed),
        ("service_not_allowed", TransactionNotAllowed),
        ("invalid_amount", TransactionNotAllowed),
        ("security_violation", RestrictedCard),
        ("merchant_blacklist", Fraudulent),
        ("no_account", InvalidAccount),
        ("duplicate_transaction", GenericDecline),
        ("offline_pin_required", AuthenticationRequired),
        ("online_or_offline_pin_required", AuthenticationRequired),
        ("pin_try_exceeded", CardVelocityExceeded),
        ("insufficient_funds_in_account", InsufficientFunds),
        // Adyen refusal reasons (the text, lower-cased, spaces as `_`).
        ("refused", GenericDecline),
        ("not_enough_balance", InsufficientFunds),
        ("blocked_card", RestrictedCard),
        ("acquirer_error", ProcessingError),
        ("issuer_unavailable", IssuerNotAvailable),
        ("invalid_card_number", IncorrectNumber),
        ("cvc_declined", IncorrectCvc),
        ("fraud", Fraudulent),
        ("issuer_suspected_fraud", Fraudulent),
        ("card_absent_fraud", Fraudulent),
        ("not_supported", TransactionNotAllowed),
        ("transaction_not_permitted", TransactionNotAllowed),
        ("withdrawal_count_exceeded", WithdrawalCountLimitExceeded),
        ("withdrawal_amount_exceeded", CardVelocityExceeded),
        ("revocation_of_auth", RevocationOfAuthorization),
        ("declined_non_generic", GenericDecline),
        ("3d_not_authenticated", AuthenticationRequired),
        ("shopper_cancelled", GenericDecline),
    ]
};

/// Normalize a payment gateway's error code: a contract code as is
/// (`insufficient_funds`), a known gateway code (`card_declined`, `Not enough
/// balance`), or an ISO 8583 response code (`51`). Case, spaces and hyphens
/// do not matter. `None` when unknown.
pub fn from_gateway_code(text: &str) -> Option<DeclineCode> {
    let key: String = text.trim().chars().map(|c| if c == ' ' || c == '-' { '_' } else { c.to_ascii_lowercase() }).collect();
    if key.is_empty() {
        return None;
    }
    key.parse::<DeclineCode>()
        .ok()
        .or_else(|| lookup(GATEWAY, &key))
        .or_else(|| key.parse::<RawCode>().ok().and_then(|raw| from_network_code(CodeFamily::Iso8583, raw)))
}

fn lookup(table: &[(&str, DeclineCode)], code: &str) -> Option<DeclineCode> {
    table.iter().find(|(k, _)| *k == code).map(|(_, v)| *v)
}

/// Normalize a raw network code of the given family; `None` when the code is unknown.
pub fn from_network_code(family: CodeFamily, code: RawCode) -> Option<DeclineCode> {
    let table = match family {
        CodeFamily::Iso8583 => ISO8583,
        CodeFamily::Ach => ACH_RETURN,
        CodeFamily::Sepa => SEPA_REASON,
    };
    lookup(table, code.as_str())
}

/// Normalize a Mastercard Merchant Advice Code; `None` when unknown.
pub fn from_advice_code(code: RawCode) -> Option<DeclineCode> {
    lookup(MASTERCARD_ADVICE, code.as_str())
}

/// True for Mastercard advice codes that forbid any further attempt (03, 21).
pub fn advice_forbids_retry(code: RawCode) -> bool {
    matches!(code.as_str(), "03" | "21")
}

/// The result of normalizing a failed row's decline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalized {
    /// The normalized code.
    pub code: DeclineCode,
    /// How it was obtained.
    pub source: NormalizedFrom,
}

/// Where a normalized decline code came from (reported in the load report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormalizedFrom {
    /// The row's own `decline_code`.
    DeclineCode,
    /// Derived from `network_code`.
    NetworkCode,
    /// Derived from `advice_code`.
    AdviceCode,
    /// A code was present but unknown: mapped to `other` and counted.
    Unknown,
}

/// Normalize the decline of a failed attempt from its three code columns.
///
/// Precedence: a valid `decline_code` wins; otherwise Mastercard advice 03/21
/// (they forbid retries whatever the response code said), then the network
/// code, then any other advice code. An unknown code yields `other` with
/// [`NormalizedFrom::Unknown`] so the loader can count it. Returns `None` only
/// when no code at all is present.
pub fn normalize(
    decline_code: Option<&str>,
    network_code: Option<RawCode>,
    advice_code: Option<RawCode>,
    method: PaymentMethod,
) -> Option<Normalized> {
    let known = |code, source| Some(Normalized { code, source });
    if let Some(text) = decline_code.map(str::trim).filter(|s| !s.is_empty()) {
        return match text.parse::<DeclineCode>() {
            Ok(code) => known(code, NormalizedFrom::DeclineCode),
            Err(_) => known(DeclineCode::Other, NormalizedFrom::Unknown),
        };
    }
    if let Some(advice) = advice_code.filter(|a| advice_forbids_retry(*a)) {
        return from_advice_code(advice).and_then(|c| known(c, NormalizedFrom::AdviceCode));
    }
    if let Some(net) = network_code {
        return match from_network_code(CodeFamily::of(method), net) {
            Some(code) => known(code, NormalizedFrom::NetworkCode),
            None => known(DeclineCode::Other, NormalizedFrom::Unknown),
        };
    }
    advice_code.map(|advice| match from_advice_code(advice) {
        Some(code) => Normalized { code, source: NormalizedFrom::AdviceCode },
        None => Normalized { code: DeclineCode::Other, source: NormalizedFrom::Unknown },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;
    use DeclineClass::*;
    use DeclineCode::*;

    #[test]
    fn gateway_codes_map_through_the_taxonomy() {
        for (text, want) in [
            ("insufficient_funds", InsufficientFunds),
            ("Insufficient_Funds", InsufficientFunds),
            ("card_declined", GenericDecline),
            ("expired_card", ExpiredCard),
            ("Not enough balance", InsufficientFunds),
            ("Expired Card", ExpiredCard),
            ("Issuer Unavailable", IssuerNotAvailable),
            ("stolen_card", StolenCard),
            ("51", InsufficientFunds),
            ("05", DoNotHonor),
            ("54", ExpiredCard),
            ("43", StolenCard),
        ] {
            assert_eq!(from_gateway_code(text), Some(want), "{text}");
        }
        assert_eq!(from_gateway_code("no_such_code"), None);
        assert_eq!(from_gateway_code("  "), None);
        // Every gateway key is written the way lookups normalize it, and no key is a contract code.
        for (k, _) in GATEWAY {
            assert_eq!(k.to_ascii_lowercase().replace([' ', '-'], "_"), *k);
            assert!(k.parse::<DeclineCode>().is_err(), "{k} is a contract code already");
        }
    }

    fn raw(s: &str) -> RawCode {
        s.parse().expect("valid raw code")
    }

    /// The expected mapping, one row per raw code, written from the sources in
    /// the module docs (not copied from the tables under test).
    const EXPECTED_ISO: &[(&str, DeclineCode, DeclineClass)] = &[
        ("01", DoNotHonor, SoftIssuer),
        ("02", DoNotHonor, SoftIssuer),
        ("03", GenericDecline, SoftIssuer),
        ("04", PickupCard, Hard),
        ("05", DoNotHonor, SoftIssuer),
        ("06", ProcessingError, Technical),
        ("07", PickupCard, Hard),
        ("12", TransactionNotAllowed, Hard),
        ("13", GenericDecline, SoftIssuer),
        ("14", InvalidAccount, Hard),
        ("15", InvalidAccount, Hard),
        ("19", TryAgainLater, Technical),
        ("41", LostCard, Hard),
        ("43", StolenCard, Hard),
        ("46", AccountClosed, Hard),
        ("51", InsufficientFunds, SoftFunds),
        ("52", GenericDecline, SoftIssuer),
        ("53", GenericDecline, SoftIssuer),
        ("54", ExpiredCard, NeedsUpdate),
        ("55", IncorrectCvc, NeedsUpdate),
        ("57", TransactionNotAllowed, Hard),
        ("59", Fraudulent, Hard),
        ("61", CardVelocityExceeded, SoftFunds),
        ("62", RestrictedCard, Hard),
        ("63", Fraudulent, Hard),
        ("65", WithdrawalCountLimitExceeded, SoftFunds),
        ("70", IncorrectCvc, NeedsUpdate),
        ("75", CardVelocityExceeded, SoftFunds),
        ("78", GenericDecline, SoftIssuer),
        ("82", IncorrectCvc, NeedsUpdate),
        ("86", GenericDecline, SoftIssuer),
        ("91", IssuerNotAvailable, Technical),
        ("92", ProcessingError, Technical),
        ("93", GenericDecline, SoftIssuer),
        ("94", ProcessingError, Technical),
        ("96", ProcessingError, Technical),
        ("1A", AuthenticationRequired, NeedsUpdate),
        ("N3", CardVelocityExceeded, SoftFunds),
        ("N4", CardVelocityExceeded, SoftFunds),
        ("N7", IncorrectCvc, NeedsUpdate),
        ("R0", StopPaymentOrder, Hard),
        ("R1", RevocationOfAuthorization, Hard),
        ("R3", RevocationOfAllAuthorizations, Hard),
    ];

    const EXPECTED_ADVICE: &[(&str, DeclineCode, DeclineClass)] = &[
        ("01", ExpiredCard, NeedsUpdate),
        ("02", TryAgainLater, Technical),
        ("03", DoNotTryAgain, Hard),
        ("04", ProcessingError, Technical),
        ("21", RevocationOfAuthorization, Hard),
        ("22", TransactionNotAllowed, Hard),
        ("24", TryAgainLater, Technical),
        ("25", TryAgainLater, Technical),
        ("26", TryAgainLater, Technical),
        ("27", TryAgainLater, Technical),
        ("28", TryAgainLater, Technical),
        ("29", TryAgainLater, Technical),
        ("30", TryAgainLater, Technical),
        ("40", GenericDecline, SoftIssuer),
        ("41", GenericDecline, SoftIssuer),
    ];

    const EXPECTED_ACH: &[(&str, DeclineCode, DeclineClass)] = &[
        ("R01", InsufficientFunds, SoftFunds),
        ("R02", AccountClosed, Hard),
        ("R03", InvalidAccount, Hard),
        ("R04", InvalidAccount, Hard),
        ("R05", RevocationOfAuthorization, Hard),
        ("R06", Other, SoftIssuer),
        ("R07", RevocationOfAuthorization, Hard),
        ("R08", StopPaymentOrder, Hard),
        ("R09", InsufficientFunds, SoftFunds),
        ("R10", RevocationOfAuthorization, Hard),
        ("R11", DoNotTryAgain, Hard),
        ("R12", AccountClosed, Hard),
        ("R13", InvalidAccount, Hard),
        ("R14", AccountClosed, Hard),
        ("R15", AccountClosed, Hard),
        ("R16", DoNotTryAgain, Hard),
        ("R17", ProcessingError, Technical),
        ("R20", InvalidAccount, Hard),
        ("R23", Other, SoftIssuer),
        ("R24", ProcessingError, Technical),
        ("R29", RevocationOfAuthorization, Hard),
    ];

    const EXPECTED_SEPA: &[(&str, DeclineCode, DeclineClass)] = &[
        ("AC01", InvalidAccount, Hard),
        ("AC04", AccountClosed, Hard),
        ("AC06", DoNotTryAgain, Hard),
        ("AC13", InvalidAccount, Hard),
        ("AG01", TransactionNotAllowed, Hard),
        ("AG02", ProcessingError, Technical),
        ("AM04", InsufficientFunds, SoftFunds),
        ("AM05", ProcessingError, Technical),
        ("BE05", ProcessingError, Technical),
        ("CNOR", ProcessingError, Technical),
        ("DNOR", ProcessingError, Technical),
        ("FF01", ProcessingError, Technical),
        ("MD01", RevocationOfAuthorization, Hard),
        ("MD02", ProcessingError, Technical),
        ("MD06", RevocationOfAuthorization, Hard),
        ("MD07", AccountClosed, Hard),
        ("MS02", StopPaymentOrder, Hard),
        ("MS03", GenericDecline, SoftIssuer),
        ("RC01", ProcessingError, Technical),
        ("RR01", TransactionNotAllowed, Hard),
        ("RR02", TransactionNotAllowed, Hard),
        ("RR03", TransactionNotAllowed, Hard),
        ("RR04", TransactionNotAllowed, Hard),
        ("SL01", StopPaymentOrder, Hard),
    ];

    fn check_table(
        name: &str,
        table: &[(&str, DeclineCode)],
        map: impl Fn(RawCode) -> Option<DeclineCode>,
        expected: &[(&str, DeclineCode, DeclineClass)],
    ) {
        assert_eq!(table.len(), expected.len(), "{name}: every table row has an expectation");
        for &(code, want, class) in expected {
            assert_eq!(map(raw(code)), Some(want), "{name} code {code}");
            assert_eq!(want.class(), class, "{name} code {code} class");
        }
    }

    #[test]
    fn every_iso8583_row_maps_as_documented() {
        check_table("ISO 8583", ISO8583, |c| from_network_code(CodeFamily::Iso8583, c), EXPECTED_ISO);
    }

    #[test]
    fn every_mastercard_advice_row_maps_as_documented() {
        check_table("Mastercard advice", MASTERCARD_ADVICE, from_advice_code, EXPECTED_ADVICE);
    }

    #[test]
    fn every_ach_row_maps_as_documented() {
        check_table("ACH", ACH_RETURN, |c| from_network_code(CodeFamily::Ach, c), EXPECTED_ACH);
    }

    #[test]
    fn every_sepa_row_maps_as_documented() {
        check_table("SEPA", SEPA_REASON, |c| from_network_code(CodeFamily::Sepa, c), EXPECTED_SEPA);
    }

    #[test]
    fn visa_category_1_codes_are_all_hard() {
        for code in ["04", "07", "12", "14", "15", "41", "43", "46", "57", "R0", "R1", "R3"] {
            let c = from_network_code(CodeFamily::Iso8583, raw(code)).expect(code);
            assert_eq!(c.class(), Hard, "Visa category 1 code {code}");
        }
    }

    #[test]
    fn visa_category_3_codes_all_need_an_update() {
        for code in ["54", "55", "70", "82", "1A", "N7"] {
            let c = from_network_code(CodeFamily::Iso8583, raw(code)).expect(code);
            assert_eq!(c.class(), NeedsUpdate, "Visa category 3 code {code}");
        }
    }

    #[test]
    fn every_normalized_code_round_trips_its_contract_spelling() {
        assert_eq!(DeclineCode::VARIANTS.len(), 25, "the contract lists 25 codes");
        for &code in DeclineCode::VARIANTS {
            assert_eq!(code.as_str().parse::<DeclineCode>(), Ok(code));
        }
        assert_eq!(InsufficientFunds.as_str(), "insufficient_funds");
        assert_eq!(WithdrawalCountLimitExceeded.as_str(), "withdrawal_count_limit_exceeded");
    }

    #[test]
    fn contract_derivation_examples() {
        let card = PaymentMethod::Card;
        let cases: &[(Option<&str>, Option<&str>, PaymentMethod, DeclineCode)] = &[
            (Some("51"), None, card, InsufficientFunds),
            (Some("54"), None, card, ExpiredCard),
            (Some("41"), None, card, LostCard),
            (Some("43"), None, card, StolenCard),
            (Some("91"), None, card, IssuerNotAvailable),
            (Some("R01"), None, PaymentMethod::AchDebit, InsufficientFunds),
            (Some("R02"), None, PaymentMethod::AchDebit, AccountClosed),
            (Some("AM04"), None, PaymentMethod::SepaDebit, InsufficientFunds),
            (None, Some("03"), card, DoNotTryAgain),
            (None, Some("21"), card, RevocationOfAuthorization),
            // advice 03 overrides a soft response code
            (Some("51"), Some("03"), card, DoNotTryAgain),
            // a retry-after hint does not override the reason
            (Some("51"), Some("24"), card, InsufficientFunds),
        ];
        for &(net, adv, method, want) in cases {
            let n = normalize(None, net.map(raw), adv.map(raw), method).expect("derived");
            assert_eq!(n.code, want, "network {net:?} advice {adv:?}");
            assert_ne!(n.source, NormalizedFrom::Unknown);
        }
    }

    #[test]
    fn explicit_decline_code_wins_and_unknown_maps_to_other() {
        let n = normalize(Some("expired_card"), Some(raw("51")), None, PaymentMethod::Card).unwrap();
        assert_eq!((n.code, n.source), (ExpiredCard, NormalizedFrom::DeclineCode));
        let n = normalize(Some("card_on_fire"), None, None, PaymentMethod::Card).unwrap();
        assert_eq!((n.code, n.source), (Other, NormalizedFrom::Unknown));
        let n = normalize(None, Some(raw("Q9")), None, PaymentMethod::Card).unwrap();
        assert_eq!((n.code, n.source), (Other, NormalizedFrom::Unknown));
        // the same text is a SEPA code only for SEPA payments
        let n = normalize(None, Some(raw("AM04")), None, PaymentMethod::Card).unwrap();
        assert_eq!(n.source, NormalizedFrom::Unknown);
        assert_eq!(normalize(Some("  "), None, None, PaymentMethod::Card), None);
    }
}
