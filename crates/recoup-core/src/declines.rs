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
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use serde::{Deserialize, Serialize};

use crate::domain::{CardBrand, PaymentMethod, RawCode};

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

/// ISO 8583 response codes (field 39) → normalized code, for any brand without
/// its own table ([`VISA`], [`MASTERCARD`] take precedence for their cards).
/// Visa category 1 codes (never approve): 04, 07, 12, 14, 15, 41, 43, 46, 57, R0, R1, R3.
/// Visa category 3 codes (data quality): 54, 55, 6P, 70, 82, 1A, N7.
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
        ("33", ExpiredCard),                   // expired card, pick up (ISO 8583:1987): update first
        ("34", Fraudulent),                    // suspected fraud, pick up (ISO 8583:1987)
        ("35", PickupCard),                    // card acceptor contact acquirer, pick up (ISO 8583:1987)
        ("36", RestrictedCard),                // restricted card, pick up (ISO 8583:1987)
        ("37", PickupCard),                    // card acceptor call acquirer security, pick up (ISO 8583:1987)
        ("38", PickupCard),                    // allowable PIN tries exceeded, pick up (ISO 8583:1987)
        ("39", GenericDecline),                // no credit account (Visa cat 2)
        ("41", LostCard),                      // lost card, pick up (Visa cat 1)
        ("43", StolenCard),                    // stolen card, pick up (Visa cat 1)
        ("42", GenericDecline),                // no universal account (ISO 8583:1987; like 52/53, Visa cat 2)
        ("44", GenericDecline),                // no investment account (ISO 8583:1987; like 52/53, Visa cat 2)
        ("46", AccountClosed),                 // closed account (Visa cat 1)
        ("51", InsufficientFunds),             // not sufficient funds (Visa cat 2)
        ("52", GenericDecline),                // no checking account (Visa cat 2)
        ("53", GenericDecline),                // no savings account (Visa cat 2)
        ("54", ExpiredCard),                   // expired card (Visa cat 3)
        ("55", IncorrectCvc),                  // incorrect PIN (Visa cat 3)
        ("56", InvalidAccount),                // no card record (ISO 8583:1987): like 14
        ("57", TransactionNotAllowed),         // not permitted to cardholder (Visa cat 1)
        ("59", Fraudulent),                    // suspected fraud (Visa: see VISA, cat 2)
        ("61", CardVelocityExceeded),          // exceeds approval amount limit (Visa cat 2)
        ("62", RestrictedCard),                // restricted card (Visa: see VISA, cat 2)
        ("63", Fraudulent),                    // security violation (Visa: see VISA, cat 4)
        ("65", WithdrawalCountLimitExceeded),  // exceeds withdrawal frequency (Visa cat 2)
        ("70", IncorrectCvc),                  // PIN data required (Visa cat 3)
        ("75", CardVelocityExceeded),          // allowable PIN tries exceeded (Visa cat 2)
        ("78", GenericDecline),                // blocked, first used (Visa cat 2)
        ("82", IncorrectCvc),                  // negative CAM, dCVV, iCVV or CVV results (Visa cat 3)
        ("86", GenericDecline),                // cannot verify PIN (Visa cat 2)
        ("91", IssuerNotAvailable),            // issuer or switch inoperative (Visa cat 2)
        ("92", ProcessingError),               // unable to route transaction
        ("93", GenericDecline),                // violation of law, cannot complete (Visa cat 2)
        ("94", DoNotTryAgain),                 // duplicate transmission: the first may have gone through; never re-send
        ("96", ProcessingError),               // system malfunction (Visa cat 2)
        ("1A", AuthenticationRequired),        // additional customer authentication required (Visa cat 3)
        ("6P", IncorrectNumber),               // verification data failed (Visa cat 3)
        ("N3", CardVelocityExceeded),          // cash service not available (Visa cat 2)
        ("N4", CardVelocityExceeded),          // cash request exceeds issuer limit (Visa cat 2)
        ("N7", IncorrectCvc),                  // decline for CVV2 failure (Visa cat 3)
        ("R0", StopPaymentOrder),              // stop payment order (Visa cat 1)
        ("R1", RevocationOfAuthorization),     // revocation of authorization order (Visa cat 1)
        ("R3", RevocationOfAllAuthorizations), // revocation of all authorizations order (Visa cat 1)
    ]
};

/// Visa's own readings of response codes, where they differ from [`ISO8583`].
/// Source: Visa Core Rules and Visa Product and Service Rules, "Decline
/// response code categories" (category 2: issuer cannot approve at this time,
/// reattempts allowed within the caps; category 4: generic codes, likewise).
pub const VISA: &[(&str, DeclineCode)] = {
    use DeclineCode::*;
    &[
        ("59", GenericDecline), // suspected fraud: category 2, reattempts allowed
        ("62", GenericDecline), // restricted card: category 2, reattempts allowed
        ("63", GenericDecline), // security violation: category 4 (generic), reattempts allowed
    ]
};

/// Mastercard's own readings of response codes, where they differ from
/// [`ISO8583`]. Source: Mastercard Customer Interface Specification / Merchant
/// Advice Code program (2024): 79, 82 and 83 are sent with a Merchant Advice
/// Code, which then decides (01 update, 02/24–30 later, 03 never).
pub const MASTERCARD: &[(&str, DeclineCode)] = {
    use DeclineCode::*;
    &[
        ("79", ExpiredCard), // life cycle (closed or expired account): not without new card data
        ("82", DoNotHonor),  // policy: the issuer's policy declines now; not Visa's CVV failure
        ("83", Fraudulent),  // fraud/security: never retry the same card
    ]
};

/// Mastercard Merchant Advice Codes → normalized code. 01, 03, 04 and 21 apply
/// alongside any response code (the most restrictive reading wins, see
/// [`normalize`]); the others name the reason only when nothing else does.
/// 24–30 say "retry after a delay" (enforced by the rules module).
pub const MASTERCARD_ADVICE: &[(&str, DeclineCode)] = {
    use DeclineCode::*;
    &[
        ("01", ExpiredCard),               // new account information available (update the card)
        ("02", TryAgainLater),             // cannot approve at this time, try again later
        ("03", DoNotTryAgain),             // do not try again
        ("04", IncorrectNumber),           // token requirements not fulfilled for this token type: fix the credential first
        ("21", RevocationOfAuthorization), // payment cancellation (stop recurring payments)
        ("22", GenericDecline),            // merchant does not qualify for product code: not a card-level hard decline
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
        ("duplicate_transaction", DoNotTryAgain), // a recent identical payment exists: check it, never re-send
        ("offline_pin_required", AuthenticationRequired),
        ("online_or_offline_pin_required", AuthenticationRequired),
        ("pin_try_exceeded", CardVelocityExceeded),
        ("insufficient_funds_in_account", InsufficientFunds),
        ("incorrect_pin", IncorrectCvc),
        ("invalid_pin", IncorrectCvc),
        ("testmode_decline", InvalidAccount), // a test card: never approves live
        ("live_mode_test_card", InvalidAccount),
        ("highest_risk_level", Fraudulent), // Radar blocked it: on Stripe's do-not-retry list
        ("elevated_risk_level", Fraudulent),
        ("card_decline_rate_limit_exceeded", TryAgainLater), // Stripe's own limit: wait 24 hours
        ("mobile_device_authentication_required", AuthenticationRequired),
        ("debit_not_authorized", RevocationOfAuthorization), // SEPA/ACH: the payer disputed the debit
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
        // Braintree processor response codes (developer.paypal.com/braintree,
        // "Processor responses"), the numeric 2000–3000 range.
        ("2000", DoNotHonor),                    // do not honor
        ("2001", InsufficientFunds),             // insufficient funds
        ("2002", CardVelocityExceeded),          // limit exceeded
        ("2003", CardVelocityExceeded),          // cardholder's activity limit exceeded
        ("2004", ExpiredCard),                   // expired card
        ("2005", IncorrectNumber),               // invalid credit card number
        ("2006", ExpiredCard),                   // invalid expiration date
        ("2007", InvalidAccount),                // no account
        ("2009", InvalidAccount),                // no such issuer
        ("2010", IncorrectCvc),                  // card issuer declined CVV
        ("2012", LostCard),                      // processor declined: possible lost card
        ("2013", StolenCard),                    // processor declined: possible stolen card
        ("2014", Fraudulent),                    // processor declined: fraud suspected
        ("2015", TransactionNotAllowed),         // transaction not allowed
        ("2016", DoNotTryAgain),                 // duplicate transaction
        ("2017", RevocationOfAuthorization),     // cardholder stopped billing
        ("2018", RevocationOfAllAuthorizations), // cardholder stopped all billing
        ("2019", TransactionNotAllowed),         // invalid transaction
        ("2021", RestrictedCard),                // security violation
        ("2022", ExpiredCard),                   // declined: updated cardholder available
        ("2038", GenericDecline),                // processor declined
        ("2043", DoNotTryAgain),                 // error: do not retry, call issuer
        ("2044", DoNotHonor),                    // declined: call issuer
        ("2046", GenericDecline),                // declined
        ("2047", PickupCard),                    // call issuer, pick up card
        ("2053", StolenCard),                    // card reported as lost or stolen
        ("2057", RestrictedCard),                // issuer or cardholder has put a restriction on the card
        ("3000", IssuerNotAvailable),            // processor network unavailable, try again
    ]
};

/// Stripe's documented card decline codes (docs.stripe.com/declines/codes,
/// 2025), each of which [`from_gateway_code`] knows: most are contract codes,
/// the rest are rows of [`GATEWAY`].
pub const STRIPE_DECLINE_CODES: &[&str] = &[
    "authentication_required",
    "approve_with_id",
    "call_issuer",
    "card_not_supported",
    "card_velocity_exceeded",
    "currency_not_supported",
    "debit_not_authorized",
    "do_not_honor",
    "do_not_try_again",
    "duplicate_transaction",
    "expired_card",
    "fraudulent",
    "generic_decline",
    "highest_risk_level",
    "incorrect_number",
    "incorrect_cvc",
    "incorrect_pin",
    "incorrect_zip",
    "insufficient_funds",
    "invalid_account",
    "invalid_amount",
    "invalid_cvc",
    "invalid_expiry_month",
    "invalid_expiry_year",
    "invalid_number",
    "invalid_pin",
    "issuer_not_available",
    "live_mode_test_card",
    "lost_card",
    "merchant_blacklist",
    "mobile_device_authentication_required",
    "new_account_information_available",
    "no_action_taken",
    "not_permitted",
    "offline_pin_required",
    "online_or_offline_pin_required",
    "pickup_card",
    "pin_try_exceeded",
    "processing_error",
    "reenter_transaction",
    "restricted_card",
    "revocation_of_all_authorizations",
    "revocation_of_authorization",
    "security_violation",
    "service_not_allowed",
    "stolen_card",
    "stop_payment_order",
    "testmode_decline",
    "transaction_not_allowed",
    "try_again_later",
    "withdrawal_count_limit_exceeded",
    "card_decline_rate_limit_exceeded",
];

/// Normalize a payment gateway's error code: a contract code as is
/// (`insufficient_funds`), a known gateway code (`card_declined`, `Not enough
/// balance`, Braintree `2001`), or an ISO 8583 response code (`51`) read for
/// the card's brand. Case, spaces and hyphens do not matter. `None` when unknown.
pub fn from_gateway_code(text: &str, brand: Option<CardBrand>) -> Option<DeclineCode> {
    let key: String = text.trim().chars().map(|c| if c == ' ' || c == '-' { '_' } else { c.to_ascii_lowercase() }).collect();
    if key.is_empty() {
        return None;
    }
    key.parse::<DeclineCode>()
        .ok()
        .or_else(|| lookup(GATEWAY, &key))
        .or_else(|| text.trim().to_ascii_uppercase().parse::<RawCode>().ok().and_then(|raw| iso_response(raw, brand)))
}

fn lookup(table: &[(&str, DeclineCode)], code: &str) -> Option<DeclineCode> {
    table.iter().find(|(k, _)| *k == code).map(|(_, v)| *v)
}

/// An ISO 8583 response code read for a card brand: Visa's and Mastercard's own
/// tables first, then the common one.
pub fn iso_response(code: RawCode, brand: Option<CardBrand>) -> Option<DeclineCode> {
    let own = match brand {
        Some(CardBrand::Visa) => lookup(VISA, code.as_str()),
        Some(CardBrand::Mastercard) => lookup(MASTERCARD, code.as_str()),
        _ => None,
    };
    own.or_else(|| lookup(ISO8583, code.as_str()))
}

/// Normalize a raw network code of the given family, read without a card
/// brand; `None` when the code is unknown. See [`iso_response`] for cards.
pub fn from_network_code(family: CodeFamily, code: RawCode) -> Option<DeclineCode> {
    match family {
        CodeFamily::Iso8583 => iso_response(code, None),
        CodeFamily::Ach => lookup(ACH_RETURN, code.as_str()),
        CodeFamily::Sepa => lookup(SEPA_REASON, code.as_str()),
    }
}

/// Normalize a Mastercard Merchant Advice Code; `None` when unknown.
pub fn from_advice_code(code: RawCode) -> Option<DeclineCode> {
    lookup(MASTERCARD_ADVICE, code.as_str())
}

/// True for Mastercard advice codes that forbid any further attempt (03, 21).
pub fn advice_forbids_retry(code: RawCode) -> bool {
    matches!(code.as_str(), "03" | "21")
}

/// True for Mastercard advice codes that apply alongside any response code:
/// 03 and 21 (never again), 01 (new account information: update first) and 04
/// (token requirements not met: fix the credential first).
pub fn advice_overrides(code: RawCode) -> bool {
    matches!(code.as_str(), "01" | "03" | "04" | "21")
}

/// The result of normalizing a failed row's decline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalized {
    /// The normalized code.
    pub code: DeclineCode,
    /// Which signal decided it.
    pub source: NormalizedFrom,
    /// The first signal that was present but unknown (decline code, then
    /// network code, then advice), counted by the loader and refused by the API;
    /// the code comes from the others, or is `other` when none was known.
    pub unknown: Option<Column>,
}

impl Normalized {
    /// Some signal was present but unknown.
    pub fn had_unknown(&self) -> bool {
        self.unknown.is_some()
    }
}

/// A code column of a decline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    DeclineCode,
    NetworkCode,
    AdviceCode,
}

/// Where a normalized decline code came from (reported in the load report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormalizedFrom {
    /// The row's own `decline_code` (a contract code, a gateway code or a response code).
    DeclineCode,
    /// Derived from `network_code`.
    NetworkCode,
    /// Derived from `advice_code`.
    AdviceCode,
    /// No code present was known: mapped to `other` and counted.
    Unknown,
}

/// Everything a caller knows about one decline, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals<'a> {
    /// A contract code, a gateway code (Stripe, Adyen, Braintree) or an ISO 8583 response code.
    pub decline_code: Option<&'a str>,
    /// The network's raw code: ISO 8583 for cards, NACHA for ACH, ISO 20022 for SEPA.
    pub network_code: Option<RawCode>,
    /// Mastercard Merchant Advice Code.
    pub advice_code: Option<RawCode>,
    /// Card brand, which decides how a response code is read.
    pub brand: Option<CardBrand>,
}

impl Signals<'_> {
    /// One column of these signals as `column=value` (for load reports).
    pub fn describe(&self, column: Column) -> String {
        match column {
            Column::DeclineCode => format!("decline_code={}", self.decline_code.unwrap_or("").trim()),
            Column::NetworkCode => format!("network_code={}", self.network_code.map(|c| c.to_string()).unwrap_or_default()),
            Column::AdviceCode => format!("advice_code={}", self.advice_code.map(|c| c.to_string()).unwrap_or_default()),
        }
    }
}

fn severity(c: DeclineCode) -> u8 {
    match c.class() {
        DeclineClass::Hard => 2,
        DeclineClass::NeedsUpdate => 1,
        _ => 0,
    }
}

/// The one normalization every route uses (history loader, `decide`, gRPC,
/// hyperswitch; backtest and export read what the loader normalized).
///
/// Each known signal names a code: the network code (read for the method's
/// family and the card's brand), the decline code, and Mastercard advice. The
/// **most restrictive wins**: a hard decline over a needs-update one over a
/// soft one, so `insufficient_funds` with Visa 46 is `account_closed`, and
/// advice 01/03/04/21 apply alongside any response code. Among equally
/// restrictive signals the network code is preferred, then the decline code,
/// then advice (02, 22, 24–30… name the reason only when nothing else does).
/// Returns `None` only when no code at all is present.
pub fn normalize(method: PaymentMethod, s: Signals<'_>) -> Option<Normalized> {
    let decline_text = s.decline_code.map(str::trim).filter(|t| !t.is_empty());
    if decline_text.is_none() && s.network_code.is_none() && s.advice_code.is_none() {
        return None;
    }
    let (mut unknown_decline, mut unknown_network, mut unknown_advice) = (false, false, false);
    let mut known: Vec<(DeclineCode, NormalizedFrom)> = Vec::with_capacity(3);
    if let Some(net) = s.network_code {
        let code = match CodeFamily::of(method) {
            CodeFamily::Iso8583 => iso_response(net, s.brand),
            family => from_network_code(family, net),
        };
        match code {
            Some(c) => known.push((c, NormalizedFrom::NetworkCode)),
            None => unknown_network = true,
        }
    }
    if let Some(text) = decline_text {
        let code = match CodeFamily::of(method) {
            // A card's response code or gateway code; a bank debit's return code.
            CodeFamily::Iso8583 => from_gateway_code(text, s.brand),
            family => from_gateway_code(text, None).or_else(|| text.parse::<RawCode>().ok().and_then(|r| from_network_code(family, r))),
        };
        match code {
            Some(c) => known.push((c, NormalizedFrom::DeclineCode)),
            None => unknown_decline = true,
        }
    }
    if let Some(advice) = s.advice_code {
        match from_advice_code(advice) {
            Some(c) if advice_overrides(advice) || known.is_empty() => known.push((c, NormalizedFrom::AdviceCode)),
            Some(_) => {}
            None => unknown_advice = true,
        }
    }
    let unknown = [(unknown_decline, Column::DeclineCode), (unknown_network, Column::NetworkCode), (unknown_advice, Column::AdviceCode)]
        .into_iter()
        .find_map(|(u, c)| u.then_some(c));
    // The first of the most severe: max_by_key keeps the last maximum, so scan reversed.
    let best = known.iter().rev().max_by_key(|(c, _)| severity(*c)).copied();
    Some(match best {
        Some((code, source)) => Normalized { code, source, unknown },
        None => Normalized { code: DeclineCode::Other, source: NormalizedFrom::Unknown, unknown },
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
            assert_eq!(from_gateway_code(text, None), Some(want), "{text}");
        }
        assert_eq!(from_gateway_code("no_such_code", None), None);
        assert_eq!(from_gateway_code("  ", None), None);
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
    // Sources cited per row: ISO = ISO 8583:1987 field 39; V1/V2/V3/V4 = Visa
    // decline category 1–4 (Visa Core Rules); MC = Mastercard Customer
    // Interface Specification; MAC = Mastercard Merchant Advice Codes.
    const EXPECTED_ISO: &[(&str, DeclineCode, DeclineClass, &str)] = &[
        ("01", DoNotHonor, SoftIssuer, "ISO refer to issuer; V4"),
        ("02", DoNotHonor, SoftIssuer, "ISO refer to issuer, special; V4"),
        ("03", GenericDecline, SoftIssuer, "ISO invalid merchant; V2"),
        ("04", PickupCard, Hard, "ISO pick up; V1"),
        ("05", DoNotHonor, SoftIssuer, "ISO do not honor; V4"),
        ("06", ProcessingError, Technical, "ISO error; V4"),
        ("07", PickupCard, Hard, "ISO pick up, special; V1"),
        ("12", TransactionNotAllowed, Hard, "ISO invalid transaction; V1"),
        ("13", GenericDecline, SoftIssuer, "ISO invalid amount; V4"),
        ("14", InvalidAccount, Hard, "ISO invalid card number; V1"),
        ("15", InvalidAccount, Hard, "ISO no such issuer; V1"),
        ("19", TryAgainLater, Technical, "ISO re-enter transaction; V2"),
        ("33", ExpiredCard, NeedsUpdate, "ISO expired card, pick up"),
        ("34", Fraudulent, Hard, "ISO suspected fraud, pick up"),
        ("35", PickupCard, Hard, "ISO contact acquirer, pick up"),
        ("36", RestrictedCard, Hard, "ISO restricted card, pick up"),
        ("37", PickupCard, Hard, "ISO call acquirer security, pick up"),
        ("38", PickupCard, Hard, "ISO PIN tries exceeded, pick up"),
        ("39", GenericDecline, SoftIssuer, "ISO no credit account; V2"),
        ("41", LostCard, Hard, "ISO lost card; V1"),
        ("42", GenericDecline, SoftIssuer, "ISO no universal account; as 52/53 (V2)"),
        ("43", StolenCard, Hard, "ISO stolen card; V1"),
        ("44", GenericDecline, SoftIssuer, "ISO no investment account; as 52/53 (V2)"),
        ("46", AccountClosed, Hard, "Visa closed account; V1"),
        ("51", InsufficientFunds, SoftFunds, "ISO not sufficient funds; V2"),
        ("52", GenericDecline, SoftIssuer, "ISO no checking account; V2"),
        ("53", GenericDecline, SoftIssuer, "ISO no savings account; V2"),
        ("54", ExpiredCard, NeedsUpdate, "ISO expired card; V3"),
        ("55", IncorrectCvc, NeedsUpdate, "ISO incorrect PIN; V3"),
        ("56", InvalidAccount, Hard, "ISO no card record"),
        ("57", TransactionNotAllowed, Hard, "ISO not permitted to cardholder; V1"),
        ("59", Fraudulent, Hard, "ISO suspected fraud (non-Visa)"),
        ("61", CardVelocityExceeded, SoftFunds, "ISO exceeds amount limit; V2"),
        ("62", RestrictedCard, Hard, "ISO restricted card (non-Visa)"),
        ("63", Fraudulent, Hard, "ISO security violation (non-Visa)"),
        ("65", WithdrawalCountLimitExceeded, SoftFunds, "ISO exceeds frequency limit; V2"),
        ("70", IncorrectCvc, NeedsUpdate, "Visa PIN data required; V3"),
        ("75", CardVelocityExceeded, SoftFunds, "ISO PIN tries exceeded; V2"),
        ("78", GenericDecline, SoftIssuer, "Visa blocked, first used; V2"),
        ("82", IncorrectCvc, NeedsUpdate, "Visa negative CVV results; V3"),
        ("86", GenericDecline, SoftIssuer, "Visa cannot verify PIN; V2"),
        ("91", IssuerNotAvailable, Technical, "ISO issuer inoperative; V2"),
        ("92", ProcessingError, Technical, "ISO unable to route; V4"),
        ("93", GenericDecline, SoftIssuer, "ISO violation of law; V2"),
        ("94", DoNotTryAgain, Hard, "ISO duplicate transmission: re-sending risks a double charge"),
        ("96", ProcessingError, Technical, "ISO system malfunction; V2"),
        ("1A", AuthenticationRequired, NeedsUpdate, "Visa SCA required; V3"),
        ("6P", IncorrectNumber, NeedsUpdate, "Visa verification data failed; V3"),
        ("N3", CardVelocityExceeded, SoftFunds, "Visa cash service not available; V2"),
        ("N4", CardVelocityExceeded, SoftFunds, "Visa cash limit exceeded; V2"),
        ("N7", IncorrectCvc, NeedsUpdate, "Visa CVV2 failure; V3"),
        ("R0", StopPaymentOrder, Hard, "Visa stop payment order; V1"),
        ("R1", RevocationOfAuthorization, Hard, "Visa revocation of authorization; V1"),
        ("R3", RevocationOfAllAuthorizations, Hard, "Visa revocation of all authorizations; V1"),
    ];

    const EXPECTED_VISA: &[(&str, DeclineCode, DeclineClass, &str)] = &[
        ("59", GenericDecline, SoftIssuer, "V2: suspected fraud, reattempts allowed"),
        ("62", GenericDecline, SoftIssuer, "V2: restricted card, reattempts allowed"),
        ("63", GenericDecline, SoftIssuer, "V4: security violation, generic"),
    ];

    const EXPECTED_MASTERCARD: &[(&str, DeclineCode, DeclineClass, &str)] = &[
        ("79", ExpiredCard, NeedsUpdate, "MC life cycle: new card data first"),
        ("82", DoNotHonor, SoftIssuer, "MC policy (not Visa's CVV meaning)"),
        ("83", Fraudulent, Hard, "MC fraud/security"),
    ];

    const EXPECTED_ADVICE: &[(&str, DeclineCode, DeclineClass, &str)] = &[
        ("01", ExpiredCard, NeedsUpdate, "MAC 01 new account information available"),
        ("02", TryAgainLater, Technical, "MAC 02 try again later"),
        ("03", DoNotTryAgain, Hard, "MAC 03 do not try again"),
        ("04", IncorrectNumber, NeedsUpdate, "MAC 04 token requirements not fulfilled"),
        ("21", RevocationOfAuthorization, Hard, "MAC 21 payment cancellation"),
        ("22", GenericDecline, SoftIssuer, "MAC 22 merchant does not qualify for product code"),
        ("24", TryAgainLater, Technical, "MAC 24 retry after 1 hour"),
        ("25", TryAgainLater, Technical, "MAC 25 retry after 24 hours"),
        ("26", TryAgainLater, Technical, "MAC 26 retry after 2 days"),
        ("27", TryAgainLater, Technical, "MAC 27 retry after 4 days"),
        ("28", TryAgainLater, Technical, "MAC 28 retry after 6 days"),
        ("29", TryAgainLater, Technical, "MAC 29 retry after 8 days"),
        ("30", TryAgainLater, Technical, "MAC 30 retry after 10 days"),
        ("40", GenericDecline, SoftIssuer, "MAC 40 non-reloadable prepaid"),
        ("41", GenericDecline, SoftIssuer, "MAC 41 single-use virtual card"),
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
        let cited: Vec<_> = expected.iter().map(|&(c, d, k)| (c, d, k, "")).collect();
        check_cited(name, table, map, &cited);
    }

    fn check_cited(
        name: &str,
        table: &[(&str, DeclineCode)],
        map: impl Fn(RawCode) -> Option<DeclineCode>,
        expected: &[(&str, DeclineCode, DeclineClass, &str)],
    ) {
        assert_eq!(table.len(), expected.len(), "{name}: every table row has an expectation");
        for &(code, want, class, source) in expected {
            assert_eq!(map(raw(code)), Some(want), "{name} code {code} ({source})");
            assert_eq!(want.class(), class, "{name} code {code} class ({source})");
        }
    }

    #[test]
    fn every_iso8583_row_maps_as_documented() {
        check_cited("ISO 8583", ISO8583, |c| from_network_code(CodeFamily::Iso8583, c), EXPECTED_ISO);
    }

    #[test]
    fn every_brand_row_maps_as_documented_and_other_brands_keep_the_common_reading() {
        check_cited("Visa", VISA, |c| iso_response(c, Some(CardBrand::Visa)), EXPECTED_VISA);
        check_cited("Mastercard", MASTERCARD, |c| iso_response(c, Some(CardBrand::Mastercard)), EXPECTED_MASTERCARD);
        // Every other code reads the same for every brand.
        for &(code, want, _, _) in EXPECTED_ISO {
            for brand in [None, Some(CardBrand::Visa), Some(CardBrand::Mastercard), Some(CardBrand::Amex), Some(CardBrand::Other)] {
                let own = match brand {
                    Some(CardBrand::Visa) => EXPECTED_VISA,
                    Some(CardBrand::Mastercard) => EXPECTED_MASTERCARD,
                    _ => &[],
                };
                if own.iter().all(|r| r.0 != code) {
                    assert_eq!(iso_response(raw(code), brand), Some(want), "{code} for {brand:?}");
                }
            }
        }
        // Mastercard 82 is a policy decline, Visa 82 a CVV failure.
        assert_eq!(iso_response(raw("82"), Some(CardBrand::Visa)).map(DeclineCode::class), Some(NeedsUpdate));
        assert_eq!(iso_response(raw("82"), Some(CardBrand::Mastercard)).map(DeclineCode::class), Some(SoftIssuer));
    }

    #[test]
    fn every_mastercard_advice_row_maps_as_documented() {
        check_cited("Mastercard advice", MASTERCARD_ADVICE, from_advice_code, EXPECTED_ADVICE);
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
            let c = iso_response(raw(code), Some(CardBrand::Visa)).expect(code);
            assert_eq!(c.class(), Hard, "Visa category 1 code {code}");
        }
    }

    #[test]
    fn visa_category_3_codes_all_need_an_update() {
        for code in ["54", "55", "6P", "70", "82", "1A", "N7"] {
            let c = iso_response(raw(code), Some(CardBrand::Visa)).expect(code);
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
    fn visa_category_2_and_4_codes_are_all_retryable() {
        for code in
            ["03", "19", "39", "51", "52", "53", "59", "61", "62", "65", "75", "78", "86", "91", "93", "96", "N3", "N4", "01", "05", "63"]
        {
            let c = iso_response(raw(code), Some(CardBrand::Visa)).expect(code);
            assert!(!matches!(c.class(), Hard | NeedsUpdate), "Visa category 2/4 code {code} is {c} ({})", c.class());
        }
    }

    fn norm(decline: Option<&str>, net: Option<&str>, adv: Option<&str>, brand: Option<CardBrand>, method: PaymentMethod) -> Normalized {
        let s = Signals { decline_code: decline, network_code: net.map(raw), advice_code: adv.map(raw), brand };
        normalize(method, s).expect("some code")
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
            let n = norm(None, net, adv, None, method);
            assert_eq!(n.code, want, "network {net:?} advice {adv:?}");
            assert_ne!(n.source, NormalizedFrom::Unknown);
        }
    }

    /// Issue #21's cases: the most restrictive signal wins, whichever column carries it.
    #[test]
    fn the_most_restrictive_signal_wins() {
        use CardBrand::{Mastercard, Visa};
        let card = PaymentMethod::Card;
        for (decline, net, adv, brand, want) in [
            // a hard network code overrides a soft gateway label
            (Some("generic_decline"), Some("43"), None, Some(Visa), StolenCard),
            (Some("insufficient_funds"), Some("46"), None, Some(Visa), AccountClosed),
            // advice 01 / 04 alongside a response code: update first
            (None, Some("51"), Some("01"), Some(Mastercard), ExpiredCard),
            (None, Some("79"), Some("01"), Some(Mastercard), ExpiredCard),
            (None, Some("05"), Some("04"), Some(Mastercard), IncorrectNumber),
            // advice 03 / 21 beat anything
            (Some("insufficient_funds"), Some("51"), Some("21"), Some(Mastercard), RevocationOfAuthorization),
            // a needs-update decline code is kept over a soft network code
            (Some("expired_card"), Some("51"), None, Some(Visa), ExpiredCard),
            // equally soft: the network code is preferred
            (Some("generic_decline"), Some("51"), None, Some(Visa), InsufficientFunds),
            // Mastercard 79 alone is not retried without new card data
            (None, Some("79"), None, Some(Mastercard), ExpiredCard),
            // advice 22 / 04 alone
            (None, None, Some("22"), Some(Mastercard), GenericDecline),
            (None, None, Some("04"), Some(Mastercard), IncorrectNumber),
            // gateway codes in decline_code, on every route
            (Some("merchant_blacklist"), None, None, None, Fraudulent),
            (Some("highest_risk_level"), None, None, None, Fraudulent),
            (Some("call_issuer"), None, None, None, DoNotHonor),
            (Some("2001"), None, None, None, InsufficientFunds),
            (Some("duplicate_transaction"), None, None, None, DoNotTryAgain),
        ] {
            let n = norm(decline, net, adv, brand, card);
            assert_eq!(n.code, want, "{decline:?} {net:?} {adv:?} {brand:?}");
            assert!(!n.had_unknown());
        }
    }

    #[test]
    fn unknown_codes_are_flagged_and_never_hide_a_known_one() {
        let card = PaymentMethod::Card;
        let n = norm(Some("expired_card"), Some("51"), None, None, card);
        assert_eq!((n.code, n.source), (ExpiredCard, NormalizedFrom::DeclineCode));
        let n = norm(Some("card_on_fire"), None, None, None, card);
        assert_eq!((n.code, n.source, n.had_unknown()), (Other, NormalizedFrom::Unknown, true));
        let n = norm(None, Some("Q9"), None, None, card);
        assert_eq!((n.code, n.source), (Other, NormalizedFrom::Unknown));
        // an unknown decline text next to a known network code: the network code decides, and the unknown is counted
        let n = norm(Some("card_on_fire"), Some("43"), None, None, card);
        assert_eq!((n.code, n.source, n.had_unknown()), (StolenCard, NormalizedFrom::NetworkCode, true));
        // the same text is a SEPA code only for SEPA payments
        let n = norm(None, Some("AM04"), None, None, card);
        assert_eq!(n.source, NormalizedFrom::Unknown);
        assert_eq!(normalize(card, Signals { decline_code: Some("  "), ..Signals::default() }), None);
    }

    /// Every Stripe decline code (docs.stripe.com/declines/codes) is known, on every route.
    #[test]
    fn every_stripe_decline_code_is_known() {
        for code in STRIPE_DECLINE_CODES {
            assert!(from_gateway_code(code, None).is_some(), "Stripe's {code} is unknown");
        }
        // Stripe's "do not retry" guidance: these are hard or need a new card.
        for code in [
            "do_not_try_again",
            "fraudulent",
            "lost_card",
            "stolen_card",
            "pickup_card",
            "merchant_blacklist",
            "highest_risk_level",
            "revocation_of_authorization",
            "revocation_of_all_authorizations",
            "stop_payment_order",
            "expired_card",
            "incorrect_number",
            "invalid_account",
        ] {
            let c = from_gateway_code(code, None).expect(code);
            assert!(matches!(c.class(), Hard | NeedsUpdate), "{code} is {c}");
        }
    }
}
