//! Network retry rules: may this payment be retried at this time, and if not,
//! why not. Hard rules come before any model; every policy (learned, fixed,
//! oracle) goes through [`check_retry`], and its typed violations are the
//! reason codes reported to callers.
//!
//! Core side of the boundary: a pure function of the payment's attempt
//! history, the proposal and the configuration. No clock, no I/O.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub use crate::attempt::PastAttempt;
use crate::declines::{advice_forbids_retry, DeclineClass, DeclineCode};
use crate::domain::{CardBrand, CardId, Outcome, PaymentMethod, RawCode};

/// Visa Core Rules, "Authorization reattempt limits" (since April 2021): at most
/// 15 reattempts of a declined transaction within 30 days.
pub const VISA_REATTEMPTS_PRE_2025: u32 = 15;
/// Visa's revised limit under the 2025 rules (effective May 2025): 20 in 30 days.
pub const VISA_REATTEMPTS_2025: u32 = 20;
/// Visa's reattempt window.
pub const VISA_WINDOW_DAYS: i64 = 30;
/// Mastercard Excessive Attempts program (Transaction Processing Rules, 2022):
/// more than 10 attempts on the same card in 24 hours is excessive.
pub const MASTERCARD_DAILY_LIMIT: u32 = 10;
/// Mastercard Excessive Attempts program: more than 35 attempts in 30 days is excessive.
pub const MASTERCARD_MONTHLY_LIMIT: u32 = 35;
/// NACHA Operating Rules 2.12.4: a return for R01/R09 may be re-initiated at
/// most two times following the original entry…
pub const ACH_REPRESENTMENT_LIMIT: u32 = 2;
/// …within 180 days after the settlement date of the original entry.
pub const ACH_WINDOW_DAYS: i64 = 180;
/// SEPA direct debits: at most 2 re-presentations within 42 days (recoup's
/// policy, following the practice of major SDD processors; the EPC rulebook
/// itself sets no count, and debtors may refund within 8 weeks).
pub const SEPA_RETRY_LIMIT: u32 = 2;
/// SEPA re-presentation window.
pub const SEPA_WINDOW_DAYS: i64 = 42;
/// Default minimum spacing between two attempts of one payment: an issuer
/// answering again within the hour rarely answers differently.
pub const DEFAULT_MIN_SPACING_HOURS: i64 = 1;

/// Which Visa reattempt cap applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisaCap {
    /// 15 reattempts in 30 days: the stricter pre-May-2025 cap (default).
    #[default]
    Pre2025,
    /// 20 reattempts in 30 days under the 2025 rules.
    Rules2025,
}

impl VisaCap {
    /// The number of reattempts allowed within 30 days.
    pub fn limit(self) -> u32 {
        match self {
            VisaCap::Pre2025 => VISA_REATTEMPTS_PRE_2025,
            VisaCap::Rules2025 => VISA_REATTEMPTS_2025,
        }
    }
}

/// Configuration of the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RulesConfig {
    /// Which Visa cap applies.
    pub visa_cap: VisaCap,
    /// Minimum time between two attempts of one payment, in minutes.
    pub min_spacing_minutes: i64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig { visa_cap: VisaCap::default(), min_spacing_minutes: DEFAULT_MIN_SPACING_HOURS * 60 }
    }
}

/// A proposed retry of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    /// When the retry would be attempted.
    pub at: DateTime<Utc>,
    /// The payer updated the payment method since the last attempt.
    pub payment_method_updated: bool,
}

/// Which card a proposal charges, and that card's attempts in the payer's other
/// payments (the networks count attempts per card, not per payment).
#[derive(Debug, Clone, Copy, Default)]
pub struct CardContext<'a> {
    /// The card the retry would charge; `None` when the caller did not identify it.
    pub card: Option<CardId>,
    /// Attempts on that same card in other payments (counted toward the caps).
    pub elsewhere: &'a [PastAttempt],
}

/// Which of `history`'s attempts charged the proposal's card. Without card ids
/// a payment-method update starts a new card: attempts before it are on another
/// one. With ids on both sides, the ids decide.
fn on_card(history: &[PastAttempt], card: Option<CardId>, proposal_updated: bool) -> Vec<bool> {
    let mut same = vec![false; history.len()];
    let mut changed = proposal_updated;
    for (i, a) in history.iter().enumerate().rev() {
        same[i] = match (a.card, card) {
            (Some(x), Some(y)) => x == y,
            _ => !changed,
        };
        changed |= a.payment_method_updated;
    }
    same
}

/// Which network's rules apply: the payment method and, for cards, the brand. The
/// rules' view of a payment's facts (`features::PaymentFacts` converts into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// Payment method.
    pub method: PaymentMethod,
    /// Card network, when a card; `None` for an unknown brand (both card caps then apply).
    pub card_brand: Option<CardBrand>,
}

impl From<&crate::attempt::Attempt> for Network {
    fn from(a: &crate::attempt::Attempt) -> Network {
        Network { method: a.method, card_brand: a.card_brand }
    }
}

/// Why a retry is not allowed. Each variant is a reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum RuleViolation {
    /// There is no failed attempt to retry.
    NothingToRetry,
    /// The payment already succeeded.
    AlreadySucceeded,
    /// The proposal is not after the last attempt.
    NotAfterLastAttempt { last: DateTime<Utc> },
    /// A hard decline (Visa category 1, fraud, revocation): never retry.
    HardDecline { code: DeclineCode },
    /// Mastercard Merchant Advice Code 03 or 21: never retry.
    MastercardDoNotRetry { advice: RawCode },
    /// Visa category 3 / needs-update decline: retry only after the payment method changed.
    NeedsPaymentMethodUpdate { code: DeclineCode },
    /// Visa: reattempts within 30 days would exceed the cap.
    VisaReattemptCap { used: u32, limit: u32 },
    /// Mastercard: attempts within 24 hours would exceed 10.
    MastercardDailyCap { used: u32, limit: u32 },
    /// Mastercard: attempts within 30 days would exceed 35.
    MastercardMonthlyCap { used: u32, limit: u32 },
    /// Mastercard advice 24–30: not before the advised time.
    MastercardAdviceWait { advice: RawCode, not_before: DateTime<Utc> },
    /// ACH: only R01/R09 returns may be re-presented.
    AchNotRepresentable { code: Option<RawCode> },
    /// ACH: at most two re-presentations within 180 days of the original entry.
    AchRepresentmentCap { used: u32, limit: u32 },
    /// ACH: the 180-day re-presentation window has closed.
    AchWindowClosed { closed_at: DateTime<Utc> },
    /// SEPA: only AM04/MS03 returns may be re-presented.
    SepaNotRetryable { code: Option<RawCode> },
    /// SEPA: at most 2 re-presentations within 42 days.
    SepaRetryCap { used: u32, limit: u32 },
    /// Too soon after the previous attempt.
    MinSpacing { not_before: DateTime<Utc> },
}

impl RuleViolation {
    /// True when waiting cannot lift the violation (the payment must not be retried
    /// at any later time without a change such as a payment method update).
    pub fn is_permanent(&self) -> bool {
        use RuleViolation::*;
        match self {
            NothingToRetry
            | AlreadySucceeded
            | HardDecline { .. }
            | MastercardDoNotRetry { .. }
            | NeedsPaymentMethodUpdate { .. }
            | AchNotRepresentable { .. }
            | AchRepresentmentCap { .. }
            | AchWindowClosed { .. }
            | SepaNotRetryable { .. } => true,
            NotAfterLastAttempt { .. }
            | VisaReattemptCap { .. }
            | MastercardDailyCap { .. }
            | MastercardMonthlyCap { .. }
            | MastercardAdviceWait { .. }
            | SepaRetryCap { .. }
            | MinSpacing { .. } => false,
        }
    }

    /// A stable snake_case name for the reason code.
    pub fn code(&self) -> &'static str {
        use RuleViolation::*;
        match self {
            NothingToRetry => "nothing_to_retry",
            AlreadySucceeded => "already_succeeded",
            NotAfterLastAttempt { .. } => "not_after_last_attempt",
            HardDecline { .. } => "hard_decline",
            MastercardDoNotRetry { .. } => "mastercard_do_not_retry",
            NeedsPaymentMethodUpdate { .. } => "needs_payment_method_update",
            VisaReattemptCap { .. } => "visa_reattempt_cap",
            MastercardDailyCap { .. } => "mastercard_daily_cap",
            MastercardMonthlyCap { .. } => "mastercard_monthly_cap",
            MastercardAdviceWait { .. } => "mastercard_advice_wait",
            AchNotRepresentable { .. } => "ach_not_representable",
            AchRepresentmentCap { .. } => "ach_representment_cap",
            AchWindowClosed { .. } => "ach_window_closed",
            SepaNotRetryable { .. } => "sepa_not_retryable",
            SepaRetryCap { .. } => "sepa_retry_cap",
            MinSpacing { .. } => "min_spacing",
        }
    }
}

/// The answer of [`check_retry`]: allowed when `violations` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Verdict {
    /// Every rule the proposal breaks.
    pub violations: Vec<RuleViolation>,
}

impl Verdict {
    /// True when no rule forbids the retry.
    pub fn is_allowed(&self) -> bool {
        self.violations.is_empty()
    }

    /// True when some violation cannot be lifted by waiting.
    pub fn is_permanent(&self) -> bool {
        self.violations.iter().any(RuleViolation::is_permanent)
    }

    /// True when some violation can be lifted neither by waiting nor by the
    /// payer updating the payment method: dunning is over.
    pub fn is_hopeless(&self) -> bool {
        self.violations.iter().any(|v| v.is_permanent() && !matches!(v, RuleViolation::NeedsPaymentMethodUpdate { .. }))
    }
}

/// Mastercard advice codes 24–30: "retry after" delays.
pub fn advice_wait(advice: RawCode) -> Option<Duration> {
    // Mastercard Merchant Advice Codes 24–30 (introduced 2022 for
    // insufficient-funds / try-later declines).
    Some(match advice.as_str() {
        "24" => Duration::hours(1),
        "25" => Duration::hours(24),
        "26" => Duration::days(2),
        "27" => Duration::days(4),
        "28" => Duration::days(6),
        "29" => Duration::days(8),
        "30" => Duration::days(10),
        _ => return None,
    })
}

fn count_in_window(history: &[PastAttempt], end: DateTime<Utc>, window: Duration, retries_only: bool) -> u32 {
    let start = end - window;
    history.iter().filter(|a| a.at > start && a.at <= end && (!retries_only || a.attempt_number > 0)).count() as u32
}

/// Check a proposed retry of one payment against every network rule, the
/// card unidentified (see [`check_retry_on_card`]).
///
/// `history` is the payment's attempts in order (oldest first). The proposal
/// is allowed when the returned verdict has no violations.
pub fn check_retry(facts: Network, history: &[PastAttempt], proposal: Proposal, cfg: &RulesConfig) -> Verdict {
    check_retry_on_card(facts, history, CardContext::default(), proposal, cfg)
}

/// [`check_retry`] with the card known: hard declines, advice 03/21 and
/// needs-update declines bind the card they were given for (a new payment
/// method starts afresh), and the card caps count the card's attempts in
/// other payments too.
pub fn check_retry_on_card(
    facts: Network,
    history: &[PastAttempt],
    card: CardContext<'_>,
    proposal: Proposal,
    cfg: &RulesConfig,
) -> Verdict {
    let mut v = Vec::new();
    let Some(last) = history.last() else {
        return Verdict { violations: vec![RuleViolation::NothingToRetry] };
    };
    if history.iter().any(|a| a.outcome == Outcome::Succeeded) {
        v.push(RuleViolation::AlreadySucceeded);
    }
    if proposal.at <= last.at {
        v.push(RuleViolation::NotAfterLastAttempt { last: last.at });
    }
    let same = on_card(history, card.card, proposal.payment_method_updated);
    let this_card = || history.iter().zip(&same).filter(|(_, s)| **s).map(|(a, _)| a);

    // Hard declines and "do not try again" advice on this card.
    if let Some(code) = this_card().filter_map(|a| a.decline).find(|c| c.class() == DeclineClass::Hard) {
        v.push(RuleViolation::HardDecline { code });
    }
    if let Some(advice) = this_card().filter_map(|a| a.advice_code).find(|a| advice_forbids_retry(*a)) {
        v.push(RuleViolation::MastercardDoNotRetry { advice });
    }

    // Needs-update declines (Visa category 3): the card's latest failure decides.
    let last_on_card = this_card().next_back();
    if let Some(code) = last_on_card.and_then(|a| a.decline).filter(|c| c.class() == DeclineClass::NeedsUpdate) {
        if !proposal.payment_method_updated {
            v.push(RuleViolation::NeedsPaymentMethodUpdate { code });
        }
    }

    // Spacing.
    let not_before = last.at + Duration::minutes(cfg.min_spacing_minutes);
    if proposal.at < not_before && proposal.at > last.at {
        v.push(RuleViolation::MinSpacing { not_before });
    }

    match facts.method {
        PaymentMethod::Card => {
            let counted: Vec<PastAttempt> = this_card().chain(card.elsewhere.iter()).copied().collect();
            check_card(facts.card_brand, &counted, last_on_card, proposal, cfg, &mut v)
        }
        PaymentMethod::AchDebit => check_ach(history, last, proposal, &mut v),
        PaymentMethod::SepaDebit => check_sepa(history, last, proposal, &mut v),
    }
    Verdict { violations: v }
}

/// [`check_retry`] for many proposed times of one payment, answered from a
/// cache where the verdict cannot have changed.
///
/// Every rule compares the proposal's time with a time fixed by the history
/// (an attempt, an attempt plus a window, the last attempt plus a wait), so the
/// verdict is constant between consecutive such times. The checker lists them
/// once; a proposal that falls strictly between the same two as the previous
/// one gets the previous verdict, and one that falls exactly on such a time is
/// checked afresh. Keep `RetryChecker::changes` in step with the rules: the
/// test `checker_agrees_with_check_retry_everywhere` walks every rule.
pub struct RetryChecker<'a> {
    facts: Network,
    history: &'a [PastAttempt],
    card: CardContext<'a>,
    cfg: RulesConfig,
    payment_method_updated: bool,
    /// Change times as Unix seconds, sorted (rule times are whole seconds).
    changes: Vec<i64>,
    cached: Option<(usize, Verdict)>,
}

impl<'a> RetryChecker<'a> {
    pub fn new(facts: Network, history: &'a [PastAttempt], card: CardContext<'a>, payment_method_updated: bool, cfg: &RulesConfig) -> Self {
        let mut changes: Vec<i64> = Self::changes(history, card.elsewhere, cfg).iter().map(DateTime::timestamp).collect();
        changes.sort_unstable();
        changes.dedup();
        RetryChecker { facts, history, card, cfg: *cfg, payment_method_updated, changes, cached: None }
    }

    /// Every time at which some rule's answer may change.
    fn changes(history: &[PastAttempt], elsewhere: &[PastAttempt], cfg: &RulesConfig) -> Vec<DateTime<Utc>> {
        let windows = [Duration::days(VISA_WINDOW_DAYS), Duration::hours(24), Duration::days(30), Duration::days(SEPA_WINDOW_DAYS)];
        let mut at: Vec<DateTime<Utc>> =
            history.iter().chain(elsewhere).flat_map(|a| std::iter::once(a.at).chain(windows.iter().map(move |w| a.at + *w))).collect();
        if let Some(last) = history.last() {
            at.push(last.at + Duration::minutes(cfg.min_spacing_minutes));
        }
        // Advice waits run from any attempt (the card's latest may be an earlier one).
        for a in history {
            if let Some(wait) = a.advice_code.and_then(advice_wait) {
                at.push(a.at + wait);
            }
        }
        if let Some(original) = history.iter().find(|a| a.attempt_number == 0).or(history.first()) {
            at.push(original.at + Duration::days(ACH_WINDOW_DAYS));
        }
        at
    }

    /// The verdict for a retry at `at`: the same as `check_retry` would give.
    pub fn check(&mut self, at: DateTime<Utc>) -> &Verdict {
        if at.timestamp_subsec_nanos() != 0 {
            // Between whole seconds: no rule time is here, but be exact rather than clever.
            self.cached = None;
            let verdict = self.fresh(at);
            return &self.cached.insert((usize::MAX, verdict)).1;
        }
        self.check_timestamp(at.timestamp())
    }

    fn fresh(&self, at: DateTime<Utc>) -> Verdict {
        let proposal = Proposal { at, payment_method_updated: self.payment_method_updated };
        check_retry_on_card(self.facts, self.history, self.card, proposal, &self.cfg)
    }

    /// [`RetryChecker::check`] at a whole Unix second (a decision grid's hours).
    pub fn check_timestamp(&mut self, at: i64) -> &Verdict {
        let interval = self.changes.partition_point(|c| *c < at);
        let on_change = self.changes.get(interval) == Some(&at);
        if on_change || self.cached.as_ref().is_none_or(|(i, _)| *i != interval) {
            let at = DateTime::from_timestamp(at, 0).expect("a grid time is in chrono's range");
            let verdict = self.fresh(at);
            // A verdict on a change time holds only there: cache it under no interval.
            self.cached = Some((if on_change { usize::MAX } else { interval }, verdict));
        }
        &self.cached.as_ref().expect("just set").1
    }
}

fn check_card(
    brand: Option<CardBrand>,
    counted: &[PastAttempt],
    last_on_card: Option<&PastAttempt>,
    proposal: Proposal,
    cfg: &RulesConfig,
    v: &mut Vec<RuleViolation>,
) {
    // Visa's cap for Visa, Mastercard's for Mastercard (Maestro included); any
    // other or unknown network gets both: the stricter reading is safe.
    let visa = !matches!(brand, Some(CardBrand::Mastercard));
    let mastercard = !matches!(brand, Some(CardBrand::Visa));
    if visa {
        let limit = cfg.visa_cap.limit();
        let used = count_in_window(counted, proposal.at, Duration::days(VISA_WINDOW_DAYS), true);
        if used + 1 > limit {
            v.push(RuleViolation::VisaReattemptCap { used, limit });
        }
    }
    if mastercard {
        let used = count_in_window(counted, proposal.at, Duration::hours(24), false);
        if used + 1 > MASTERCARD_DAILY_LIMIT {
            v.push(RuleViolation::MastercardDailyCap { used, limit: MASTERCARD_DAILY_LIMIT });
        }
        let used = count_in_window(counted, proposal.at, Duration::days(30), false);
        if used + 1 > MASTERCARD_MONTHLY_LIMIT {
            v.push(RuleViolation::MastercardMonthlyCap { used, limit: MASTERCARD_MONTHLY_LIMIT });
        }
    }
    // Advice 24–30 of the card's latest decline: a retry-after hint any network
    // may send, honoured whatever the brand field says.
    if let Some(last) = last_on_card {
        if let Some(advice) = last.advice_code {
            if let Some(wait) = advice_wait(advice) {
                let not_before = last.at + wait;
                if proposal.at < not_before {
                    v.push(RuleViolation::MastercardAdviceWait { advice, not_before });
                }
            }
        }
    }
}

fn check_ach(history: &[PastAttempt], last: &PastAttempt, proposal: Proposal, v: &mut Vec<RuleViolation>) {
    // NACHA 2.12.4: only returns for insufficient (R01) or uncollected (R09) funds.
    let representable = match last.network_code {
        Some(code) => matches!(code.as_str(), "R01" | "R09"),
        None => last.decline == Some(DeclineCode::InsufficientFunds),
    };
    if last.outcome == Outcome::Failed && !representable {
        v.push(RuleViolation::AchNotRepresentable { code: last.network_code });
    }
    let used = history.iter().filter(|a| a.attempt_number > 0).count() as u32;
    if used + 1 > ACH_REPRESENTMENT_LIMIT {
        v.push(RuleViolation::AchRepresentmentCap { used, limit: ACH_REPRESENTMENT_LIMIT });
    }
    let original = history.iter().find(|a| a.attempt_number == 0).unwrap_or(&history[0]);
    let closed_at = original.at + Duration::days(ACH_WINDOW_DAYS);
    if proposal.at > closed_at {
        v.push(RuleViolation::AchWindowClosed { closed_at });
    }
}

fn check_sepa(history: &[PastAttempt], last: &PastAttempt, proposal: Proposal, v: &mut Vec<RuleViolation>) {
    let retryable = match last.network_code {
        Some(code) => matches!(code.as_str(), "AM04" | "MS03"),
        None => last.decline == Some(DeclineCode::InsufficientFunds),
    };
    if last.outcome == Outcome::Failed && !retryable {
        v.push(RuleViolation::SepaNotRetryable { code: last.network_code });
    }
    let used = count_in_window(history, proposal.at, Duration::days(SEPA_WINDOW_DAYS), true);
    if used + 1 > SEPA_RETRY_LIMIT {
        v.push(RuleViolation::SepaRetryCap { used, limit: SEPA_RETRY_LIMIT });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).single().expect("valid")
    }
    fn raw(s: &str) -> RawCode {
        s.parse().expect("raw code")
    }
    fn failed(hours: i64, n: u32, decline: DeclineCode) -> PastAttempt {
        PastAttempt {
            at: t0() + Duration::hours(hours),
            attempt_number: n,
            outcome: Outcome::Failed,
            decline: Some(decline),
            network_code: None,
            advice_code: None,
            payment_method_updated: false,
            card: None,
        }
    }
    fn card(brand: CardBrand) -> Network {
        Network { method: PaymentMethod::Card, card_brand: Some(brand) }
    }
    fn at(hours: i64) -> Proposal {
        Proposal { at: t0() + Duration::hours(hours), payment_method_updated: false }
    }
    fn codes(v: &Verdict) -> Vec<&'static str> {
        v.violations.iter().map(|x| x.code()).collect()
    }
    /// `n` attempts: the original at t0, then retries every `step` hours.
    fn sequence(n: u32, step: i64, decline: DeclineCode) -> Vec<PastAttempt> {
        (0..n).map(|i| failed(i as i64 * step, i, decline)).collect()
    }
    const FUNDS: DeclineCode = DeclineCode::InsufficientFunds;

    #[test]
    fn soft_decline_retry_is_allowed() {
        let h = sequence(1, 0, FUNDS);
        let v = check_retry(card(CardBrand::Visa), &h, at(24), &RulesConfig::default());
        assert!(v.is_allowed(), "{v:?}");
    }

    #[test]
    fn hard_declines_are_never_retried() {
        for code in [
            DeclineCode::LostCard,
            DeclineCode::StolenCard,
            DeclineCode::Fraudulent,
            DeclineCode::PickupCard,
            DeclineCode::AccountClosed,
            DeclineCode::RevocationOfAuthorization,
            DeclineCode::StopPaymentOrder,
            DeclineCode::DoNotTryAgain,
        ] {
            let h = vec![failed(0, 0, code)];
            let v = check_retry(card(CardBrand::Visa), &h, at(24 * 10), &RulesConfig::default());
            assert_eq!(codes(&v), ["hard_decline"], "{code}");
            assert!(v.is_permanent());
            // A new payment method starts a new card's rule state (issue #21): allowed…
            let p = Proposal { payment_method_updated: true, ..at(24 * 10) };
            assert!(check_retry(card(CardBrand::Visa), &h, p, &RulesConfig::default()).is_allowed(), "{code}");
            // …but not when the ids say it is the same card with new details.
            let same: Vec<PastAttempt> = h.iter().map(|a| PastAttempt { card: Some(CardId(7)), ..*a }).collect();
            let ctx = CardContext { card: Some(CardId(7)), elsewhere: &[] };
            assert!(!check_retry_on_card(card(CardBrand::Visa), &same, ctx, p, &RulesConfig::default()).is_allowed(), "{code}");
            // and a different id is a different card, update flag or not
            let other = CardContext { card: Some(CardId(8)), elsewhere: &[] };
            assert!(check_retry_on_card(card(CardBrand::Visa), &same, other, at(24 * 10), &RulesConfig::default()).is_allowed());
        }
    }

    #[test]
    fn advice_03_binds_its_card_only() {
        let mut h = vec![failed(0, 0, FUNDS)];
        h[0].advice_code = Some(raw("03"));
        let cfg = RulesConfig::default();
        assert_eq!(codes(&check_retry(card(CardBrand::Mastercard), &h, at(48), &cfg)), ["mastercard_do_not_retry"]);
        let p = Proposal { payment_method_updated: true, ..at(48) };
        assert!(check_retry(card(CardBrand::Mastercard), &h, p, &cfg).is_allowed());
        // A later update on the payment's history: attempts before it were another card.
        let mut h2 = h.clone();
        h2.push(PastAttempt { payment_method_updated: true, ..failed(24, 1, FUNDS) });
        assert!(check_retry(card(CardBrand::Mastercard), &h2, at(72), &cfg).is_allowed());
    }

    #[test]
    fn caps_count_the_same_card_across_payments() {
        let cfg = RulesConfig::default();
        // Nine declines on the same card's previous invoice plus one now: the tenth attempt
        // in 24 h would be the eleventh on the card.
        let elsewhere: Vec<PastAttempt> =
            (0..9).map(|i| PastAttempt { card: Some(CardId(3)), ..failed(-12 + i, i as u32, FUNDS) }).collect();
        let h = vec![PastAttempt { card: Some(CardId(3)), ..failed(0, 0, FUNDS) }];
        let ctx = CardContext { card: Some(CardId(3)), elsewhere: &elsewhere };
        let v = check_retry_on_card(card(CardBrand::Mastercard), &h, ctx, at(2), &cfg);
        assert!(codes(&v).contains(&"mastercard_daily_cap"), "{v:?}");
        // Counted per payment (no card identity) the same retry is allowed.
        assert!(check_retry(card(CardBrand::Mastercard), &h, at(2), &cfg).is_allowed());
        // Visa counts retries: 15 retries of earlier invoices on the card fill the 30 days.
        let elsewhere: Vec<PastAttempt> =
            (0..15).map(|i| PastAttempt { card: Some(CardId(3)), ..failed(-24 * 20 + 24 * i, 1, FUNDS) }).collect();
        let ctx = CardContext { card: Some(CardId(3)), elsewhere: &elsewhere };
        let v = check_retry_on_card(card(CardBrand::Visa), &h, ctx, at(24), &cfg);
        assert!(codes(&v).contains(&"visa_reattempt_cap"), "{v:?}");
    }

    #[test]
    fn hard_decline_earlier_in_the_payment_still_blocks() {
        let h = vec![failed(0, 0, DeclineCode::StolenCard), failed(24, 1, FUNDS)];
        let v = check_retry(card(CardBrand::Visa), &h, at(48), &RulesConfig::default());
        assert!(codes(&v).contains(&"hard_decline"));
    }

    #[test]
    fn mastercard_advice_03_and_21_forbid_retry() {
        for advice in ["03", "21"] {
            let mut a = failed(0, 0, FUNDS);
            a.advice_code = Some(raw(advice));
            let v = check_retry(card(CardBrand::Mastercard), &[a], at(72), &RulesConfig::default());
            assert_eq!(codes(&v), ["mastercard_do_not_retry"], "advice {advice}");
        }
    }

    #[test]
    fn expired_card_retried_only_after_update() {
        let h = vec![failed(0, 0, DeclineCode::ExpiredCard)];
        let cfg = RulesConfig::default();
        let v = check_retry(card(CardBrand::Visa), &h, at(24), &cfg);
        assert_eq!(codes(&v), ["needs_payment_method_update"]);
        let updated = Proposal { payment_method_updated: true, ..at(24) };
        assert!(check_retry(card(CardBrand::Visa), &h, updated, &cfg).is_allowed());
    }

    #[test]
    fn visa_cap_allows_15th_retry() {
        // original + 14 retries, 1 per day: the 15th retry on day 15 is inside 30 days
        let h = sequence(15, 24, FUNDS);
        let v = check_retry(card(CardBrand::Visa), &h, at(15 * 24), &RulesConfig::default());
        assert!(v.is_allowed(), "{v:?}");
    }

    #[test]
    fn visa_cap_refuses_16th_retry_within_30_days() {
        let h = sequence(16, 24, FUNDS);
        let v = check_retry(card(CardBrand::Visa), &h, at(16 * 24), &RulesConfig::default());
        assert_eq!(v.violations, [RuleViolation::VisaReattemptCap { used: 15, limit: 15 }]);
        assert!(!v.is_permanent(), "the cap lifts as old retries leave the window");
    }

    #[test]
    fn visa_cap_window_rolls_after_30_days() {
        // 15 retries on days 1..=15; on day 31 the day-1 retry has left the window
        let h = sequence(16, 24, FUNDS);
        let v = check_retry(card(CardBrand::Visa), &h, at(31 * 24), &RulesConfig::default());
        assert!(v.is_allowed(), "{v:?}");
        let v = check_retry(card(CardBrand::Visa), &h, at(31 * 24 - 1), &RulesConfig::default());
        assert!(!v.is_allowed());
    }

    #[test]
    fn visa_2025_rules_allow_20_retries() {
        let cfg = RulesConfig { visa_cap: VisaCap::Rules2025, ..RulesConfig::default() };
        let h = sequence(20, 24, FUNDS);
        assert!(check_retry(card(CardBrand::Visa), &h, at(20 * 24), &cfg).is_allowed());
        let h = sequence(21, 24, FUNDS);
        assert_eq!(
            check_retry(card(CardBrand::Visa), &h, at(21 * 24), &cfg).violations,
            [RuleViolation::VisaReattemptCap { used: 20, limit: 20 }]
        );
    }

    #[test]
    fn mastercard_allows_10th_attempt_in_24_hours() {
        // 9 attempts two hours apart, the 10th at hour 18
        let h = sequence(9, 2, DeclineCode::IssuerNotAvailable);
        let v = check_retry(card(CardBrand::Mastercard), &h, at(18), &RulesConfig::default());
        assert!(v.is_allowed(), "{v:?}");
    }

    #[test]
    fn mastercard_refuses_11th_attempt_in_24_hours() {
        let h = sequence(10, 2, DeclineCode::IssuerNotAvailable);
        let v = check_retry(card(CardBrand::Mastercard), &h, at(20), &RulesConfig::default());
        assert_eq!(v.violations, [RuleViolation::MastercardDailyCap { used: 10, limit: 10 }]);
        // 24 h after the first attempt it has left the window
        let v = check_retry(card(CardBrand::Mastercard), &h, at(24), &RulesConfig::default());
        assert!(v.is_allowed(), "{v:?}");
    }

    #[test]
    fn mastercard_refuses_36th_attempt_in_30_days() {
        let h = sequence(35, 20, FUNDS); // 35 attempts over ~29 days
        let v = check_retry(card(CardBrand::Mastercard), &h, at(35 * 20), &RulesConfig::default());
        assert!(codes(&v).contains(&"mastercard_monthly_cap"), "{v:?}");
        let h = sequence(34, 20, FUNDS);
        assert!(check_retry(card(CardBrand::Mastercard), &h, at(34 * 20), &RulesConfig::default()).is_allowed());
    }

    #[test]
    fn mastercard_advice_24_to_30_set_not_before() {
        let cases = [("24", 1), ("25", 24), ("26", 48), ("27", 96), ("28", 144), ("29", 192), ("30", 240)];
        for (advice, hours) in cases {
            let mut a = failed(0, 0, FUNDS);
            a.advice_code = Some(raw(advice));
            let h = [a];
            let early = Proposal { at: t0() + Duration::hours(hours) - Duration::minutes(30), payment_method_updated: false };
            let early = check_retry(card(CardBrand::Mastercard), &h, early, &RulesConfig::default());
            assert!(codes(&early).contains(&"mastercard_advice_wait"), "advice {advice}: {early:?}");
            let ok = check_retry(card(CardBrand::Mastercard), &h, at(hours), &RulesConfig::default());
            assert!(ok.is_allowed(), "advice {advice}: {ok:?}");
        }
    }

    #[test]
    fn unknown_card_brand_gets_both_caps() {
        let facts = Network { method: PaymentMethod::Card, card_brand: None };
        let h = sequence(10, 2, DeclineCode::IssuerNotAvailable);
        assert!(codes(&check_retry(facts, &h, at(20), &RulesConfig::default())).contains(&"mastercard_daily_cap"));
        let h = sequence(16, 24, FUNDS);
        assert!(codes(&check_retry(facts, &h, at(16 * 24), &RulesConfig::default())).contains(&"visa_reattempt_cap"));
    }

    #[test]
    fn networks_without_their_own_caps_get_both() {
        // Amex, Discover, JCB and the rest: Visa's and Mastercard's caps, the stricter reading.
        for brand in [CardBrand::Amex, CardBrand::Discover, CardBrand::Other] {
            let h = sequence(16, 24, FUNDS);
            assert!(codes(&check_retry(card(brand), &h, at(16 * 24), &RulesConfig::default())).contains(&"visa_reattempt_cap"));
            let h = sequence(10, 2, FUNDS);
            assert!(codes(&check_retry(card(brand), &h, at(20), &RulesConfig::default())).contains(&"mastercard_daily_cap"));
        }
        // Visa's cards get Visa's only, Mastercard's Mastercard's only.
        let h = sequence(10, 2, FUNDS);
        assert!(check_retry(card(CardBrand::Visa), &h, at(20), &RulesConfig::default()).is_allowed());
        let h = sequence(16, 24, FUNDS);
        assert!(check_retry(card(CardBrand::Mastercard), &h, at(16 * 24), &RulesConfig::default()).is_allowed());
    }

    #[test]
    fn min_spacing_is_configurable() {
        let h = sequence(1, 0, DeclineCode::ProcessingError);
        let half_hour = Proposal { at: t0() + Duration::minutes(30), payment_method_updated: false };
        let v = check_retry(card(CardBrand::Visa), &h, half_hour, &RulesConfig::default());
        assert_eq!(codes(&v), ["min_spacing"]);
        let cfg = RulesConfig { min_spacing_minutes: 15, ..RulesConfig::default() };
        assert!(check_retry(card(CardBrand::Visa), &h, half_hour, &cfg).is_allowed());
        let cfg = RulesConfig { min_spacing_minutes: 6 * 60, ..RulesConfig::default() };
        assert_eq!(codes(&check_retry(card(CardBrand::Visa), &h, at(5), &cfg)), ["min_spacing"]);
    }

    #[test]
    fn retry_must_follow_the_last_attempt_and_payment_must_be_open() {
        let h = sequence(2, 24, FUNDS);
        assert!(codes(&check_retry(card(CardBrand::Visa), &h, at(10), &RulesConfig::default())).contains(&"not_after_last_attempt"));
        let mut ok = h.clone();
        ok[1].outcome = Outcome::Succeeded;
        ok[1].decline = None;
        assert!(codes(&check_retry(card(CardBrand::Visa), &ok, at(72), &RulesConfig::default())).contains(&"already_succeeded"));
        assert_eq!(codes(&check_retry(card(CardBrand::Visa), &[], at(1), &RulesConfig::default())), ["nothing_to_retry"]);
    }

    fn ach(code: &str, hours: i64, n: u32) -> PastAttempt {
        PastAttempt { network_code: Some(raw(code)), ..failed(hours, n, FUNDS) }
    }
    const ACH: Network = Network { method: PaymentMethod::AchDebit, card_brand: None };
    const SEPA: Network = Network { method: PaymentMethod::SepaDebit, card_brand: None };

    #[test]
    fn ach_only_r01_and_r09_are_represented_twice() {
        let cfg = RulesConfig::default();
        assert!(check_retry(ACH, &[ach("R01", 0, 0)], at(72), &cfg).is_allowed());
        assert!(check_retry(ACH, &[ach("R09", 0, 0)], at(72), &cfg).is_allowed());
        let mut r02 = ach("R02", 0, 0);
        r02.decline = Some(DeclineCode::AccountClosed);
        assert!(codes(&check_retry(ACH, &[r02], at(72), &cfg)).contains(&"ach_not_representable"));
        let mut r03 = ach("R03", 0, 0);
        r03.decline = Some(DeclineCode::InsufficientFunds); // even if mislabelled, the return code rules
        assert_eq!(codes(&check_retry(ACH, &[r03], at(72), &cfg)), ["ach_not_representable"]);
        // second re-presentation allowed, third refused
        let two = [ach("R01", 0, 0), ach("R01", 72, 1)];
        assert!(check_retry(ACH, &two, at(144), &cfg).is_allowed());
        let three = [ach("R01", 0, 0), ach("R01", 72, 1), ach("R01", 144, 2)];
        assert_eq!(check_retry(ACH, &three, at(300), &cfg).violations, [RuleViolation::AchRepresentmentCap { used: 2, limit: 2 }]);
        // the 180-day window
        assert_eq!(codes(&check_retry(ACH, &[ach("R01", 0, 0)], at(181 * 24), &cfg)), ["ach_window_closed"]);
    }

    #[test]
    fn sepa_only_am04_and_ms03_twice_in_42_days() {
        let cfg = RulesConfig::default();
        assert!(check_retry(SEPA, &[ach("AM04", 0, 0)], at(72), &cfg).is_allowed());
        assert!(check_retry(SEPA, &[ach("MS03", 0, 0)], at(72), &cfg).is_allowed());
        assert_eq!(codes(&check_retry(SEPA, &[ach("MS02", 0, 0)], at(72), &cfg)), ["sepa_not_retryable"]);
        assert_eq!(codes(&check_retry(SEPA, &[ach("AC04", 0, 0)], at(72), &cfg)), ["sepa_not_retryable"]);
        let two = [ach("AM04", 0, 0), ach("AM04", 72, 1)];
        assert!(check_retry(SEPA, &two, at(144), &cfg).is_allowed());
        let three = [ach("AM04", 0, 0), ach("AM04", 72, 1), ach("AM04", 144, 2)];
        assert_eq!(check_retry(SEPA, &three, at(200), &cfg).violations, [RuleViolation::SepaRetryCap { used: 2, limit: 2 }]);
        // after 42 days the first retry has left the window
        assert!(check_retry(SEPA, &three, at(72 + 42 * 24 + 1), &cfg).is_allowed());
    }

    #[test]
    fn checker_agrees_with_check_retry_everywhere() {
        use rand::{seq::SliceRandom, Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let declines = [FUNDS, DeclineCode::ExpiredCard, DeclineCode::ProcessingError, DeclineCode::DoNotHonor, DeclineCode::LostCard];
        let advice = [None, Some("24"), Some("25"), Some("27"), Some("30"), Some("03")];
        let network = [None, Some("R01"), Some("R03"), Some("AM04"), Some("MD06")];
        let facts = [
            card(CardBrand::Visa),
            card(CardBrand::Mastercard),
            card(CardBrand::Amex),
            Network { method: PaymentMethod::Card, card_brand: None },
            Network { method: PaymentMethod::AchDebit, card_brand: None },
            Network { method: PaymentMethod::SepaDebit, card_brand: None },
        ];
        let mut checked = 0;
        for case in 0..150 {
            // Dense histories (minutes apart) reach the daily caps; sparse ones the 30-day windows.
            let step_minutes: i64 = if case % 3 == 0 { rng.random_range(1..180) } else { rng.random_range(60..4 * 1440) };
            let n = rng.random_range(1..40);
            let mut t = t0();
            let history: Vec<PastAttempt> = (0..n)
                .map(|i| {
                    t += Duration::minutes(rng.random_range(1..=2 * step_minutes));
                    PastAttempt {
                        at: t,
                        attempt_number: i,
                        outcome: Outcome::Failed,
                        decline: Some(declines[rng.random_range(0..declines.len())]),
                        network_code: network[rng.random_range(0..network.len())].map(raw),
                        advice_code: advice[rng.random_range(0..advice.len())].map(raw),
                        payment_method_updated: rng.random_bool(0.05),
                        card: [None, None, Some(CardId(1)), Some(CardId(2))][rng.random_range(0..4)],
                    }
                })
                .collect();
            // The card's attempts in other payments, around the same weeks.
            let elsewhere: Vec<PastAttempt> = (0..rng.random_range(0..12))
                .map(|i| PastAttempt {
                    at: t0() + Duration::minutes(rng.random_range(-40 * 1440..40 * 1440)),
                    attempt_number: i % 3,
                    outcome: Outcome::Failed,
                    decline: None,
                    network_code: None,
                    advice_code: None,
                    payment_method_updated: false,
                    card: Some(CardId(1)),
                })
                .collect();
            let card = CardContext { card: [None, Some(CardId(1)), Some(CardId(2))][case % 3], elsewhere: &elsewhere };
            let f = facts[case % facts.len()];
            let cfg = RulesConfig {
                visa_cap: if case % 2 == 0 { VisaCap::Pre2025 } else { VisaCap::Rules2025 },
                min_spacing_minutes: rng.random_range(0..180),
            };
            let updated = rng.random_bool(0.3);
            let mut checker = RetryChecker::new(f, &history, card, updated, &cfg);
            // Hourly from before the first attempt to past every window, then each
            // change time and a second either side of it, then a random order.
            let mut times: Vec<DateTime<Utc>> =
                (-24..24 * 200).map(|h| history[0].at + Duration::hours(h) + Duration::minutes(case as i64)).collect();
            for c in checker.changes.clone() {
                let c = DateTime::from_timestamp(c, 0).expect("in range");
                times.extend([c - Duration::seconds(1), c, c + Duration::seconds(1), c + Duration::milliseconds(300)]);
            }
            let mut shuffled = times.clone();
            shuffled.shuffle(&mut rng);
            for at in times.into_iter().chain(shuffled) {
                let fresh = check_retry_on_card(f, &history, card, Proposal { at, payment_method_updated: updated }, &cfg);
                assert_eq!(checker.check(at), &fresh, "case {case} at {at}: {history:?}");
                checked += 1;
            }
        }
        assert!(checked > 500_000, "{checked}");
    }

    #[test]
    fn violations_serialize_as_tagged_reason_codes() {
        let v = RuleViolation::VisaReattemptCap { used: 15, limit: 15 };
        let json = serde_json::to_string(&v).expect("serializes");
        assert_eq!(json, r#"{"rule":"visa_reattempt_cap","used":15,"limit":15}"#);
    }
}
