//! recoup as hyperswitch's revenue-recovery decider and trainer: the
//! `decider.Decider` and `trainer.TrainerService` gRPC contracts
//! (`proto/hyperswitch/`), mapped onto recoup's engine and registry.
//!
//! Edge side: turns hyperswitch's request (many optional fields, error codes
//! as the gateway and network sent them, retry counts per hour) into an
//! [`engine::Request`], and the decision into `retry_flag` / `retry_time` /
//! `decision_threshold`. Every conversion error names the request field.
//!
//! How a `DeciderRequest` becomes an engine request (one request is about one
//! stored card of an invoice):
//! - the original charge is at `invoice_start_time` (else `first_error_msg_time`,
//!   else the earliest key of `hourly_retry_history`, else now);
//! - `hourly_retry_history` is the card's, across invoices, floored to the hour:
//!   keys in or after the invoice's first hour are this invoice's retries on this
//!   card, declined with the card's latest codes (`pg_error_code`,
//!   `network_*`); earlier keys are the card's retries of earlier invoices and
//!   count toward the card's caps ([`engine::CardAttempt`]);
//! - the `first_*` codes are the invoice's: the original charge carries them and
//!   may have been another card, so they do not bind this one (its time still
//!   counts toward this card's caps: a rule must hold if it was); without retries
//!   of its own in this invoice, the card's latest codes stand for its state,
//!   and a card with no failure at all is a new payment method for the invoice;
//! - every code goes through [`crate::declines::normalize`], like every route;
//! - `retry_count_left <= 0` answers no retry; `wait_time` is the earliest time;
//! - the payer's calendar and time zone come from `billing_country`; a missing
//!   currency is an error (no silent USD);
//! - no message channel (the contract schedules retries only); exploration
//!   only where recoup logs the decision with its propensity itself
//!   (`recoup serve --decision-log`, `--hyperswitch-exploration`), since
//!   hyperswitch does not keep propensities.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

use crate::api::{bad, time, CallError};
use crate::declines::{normalize, DeclineCode, Signals};
use crate::domain::{CardBrand, CardFunding, CardId, Channel, Country, Currency, PaymentMethod, RawCode};
use crate::engine::{self, Action, CardAttempt, Constraints, EarlierAttempt, EngineConfig, InvalidField};
use crate::features::PaymentFacts;
use crate::model::SuccessModel;

/// Generated `decider` messages, client and server (hyperswitch's contract).
#[allow(clippy::all, missing_docs)]
pub mod decider {
    tonic::include_proto!("decider");
    /// Encoded file descriptor set (for reflection).
    pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/decider_descriptor.bin"));
}

/// Generated `trainer` messages, client and server (hyperswitch's contract).
#[allow(clippy::all, missing_docs)]
pub mod trainer {
    tonic::include_proto!("trainer");
    /// Encoded file descriptor set (for reflection).
    pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/trainer_descriptor.bin"));
}

/// Minutes a `hourly_retry_history` key may lie after recoup's clock (hosts' clocks differ).
pub const CLOCK_SKEW_MINUTES: i64 = 5;

/// The card hyperswitch asks about (one request is about one stored card).
const THIS_CARD: CardId = CardId(1);
/// The card of the invoice's first charge, which may be another one.
const FIRST_CARD: CardId = CardId(2);

fn text(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("none") && !s.eq_ignore_ascii_case("null"))
}

/// hyperswitch's `CardNetwork` names (and common spellings) as a card brand;
/// `None` for a missing network. Networks without their own caps in recoup's
/// rules (JCB, UnionPay, Diners, RuPay, Interac, Cartes Bancaires…) are `other`,
/// and the rules give them both Visa's and Mastercard's caps.
fn brand(network: Option<&str>) -> Option<CardBrand> {
    let key: String = network?.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    Some(match key.as_str() {
        "visa" => CardBrand::Visa,
        // Maestro is Mastercard's: its Excessive Attempts rules apply.
        "mastercard" | "mc" | "maestro" => CardBrand::Mastercard,
        "americanexpress" | "amex" => CardBrand::Amex,
        "discover" => CardBrand::Discover,
        _ => CardBrand::Other,
    })
}

fn method(field: &str, v: Option<&str>) -> Result<PaymentMethod, InvalidField> {
    let Some(v) = v else { return Ok(PaymentMethod::Card) };
    match v.to_ascii_lowercase().replace('-', "_").as_str() {
        "card" | "credit" | "debit" | "card_redirect" => Ok(PaymentMethod::Card),
        "ach" | "ach_debit" | "ach_bank_debit" => Ok(PaymentMethod::AchDebit),
        "sepa" | "sepa_debit" | "sepa_bank_debit" => Ok(PaymentMethod::SepaDebit),
        other => Err(bad(field, format!("unsupported payment method {other:?}; recoup decides card, ach and sepa retries"))),
    }
}

/// One failure's decline from its three codes, through the one normalization
/// every route uses ([`crate::declines::normalize`]: the most restrictive
/// reading wins); `other` when no code is known (a soft decline: the rules and
/// the model still apply).
fn decline(
    method: PaymentMethod,
    brand: Option<CardBrand>,
    pg: Option<&str>,
    network: Option<RawCode>,
    advice: Option<RawCode>,
) -> DeclineCode {
    let signals = Signals { decline_code: pg, network_code: network, advice_code: advice, brand };
    normalize(method, signals).map_or(DeclineCode::Other, |n| n.code)
}

fn raw(field: &str, v: Option<&str>) -> Result<Option<RawCode>, InvalidField> {
    v.map(|s| s.parse::<RawCode>().map_err(|_| bad(field, format!("{s:?} is not a network code (1 to 8 letters or digits)")))).transpose()
}

/// A key of `hourly_retry_history`: "YYYY-MM-DD HH:MM:SS[.f]" (UTC, as hyperswitch
/// writes it), "YYYY-MM-DDTHH:MM:SS[.f][Z]", or a day "YYYY-MM-DD".
fn history_key(key: &str) -> Option<DateTime<Utc>> {
    let k = key.trim().trim_end_matches('Z');
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(k, fmt) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(k, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
}

/// What the request asks, before the engine: a decision request, or an answer
/// that needs no model (the card's retry budget is spent).
pub enum Mapped {
    Decide(Box<engine::Request>),
    BudgetExhausted,
}

/// Map a `DeciderRequest` onto the engine. `clock` is now; `default_country` stands
/// for a missing `billing_country`.
pub fn to_engine(r: &decider::DeciderRequest, clock: DateTime<Utc>, default_country: Country) -> Result<Mapped, InvalidField> {
    if let Some(left) = r.retry_count_left {
        if left <= 0 {
            return Ok(Mapped::BudgetExhausted);
        }
    }
    for (field, v) in [
        ("payment_id", &r.payment_id),
        ("merchant_id", &r.merchant_id),
        ("pg_error_code", &r.pg_error_code),
        ("first_pg_error_code", &r.first_pg_error_code),
    ] {
        crate::limits::check_text(field, v.as_deref().unwrap_or(""))?;
    }
    let facts = payment_facts(r, default_country)?;
    let method = facts.method;

    // The card's latest failure's codes (hyperswitch keeps them per card), and
    // the invoice's first failure's (invoice-level: maybe another card).
    let brand = facts.card_brand;
    let latest_advice = raw("network_advice_code", text(&r.network_advice_code))?;
    let latest_network = raw("network_error_code", text(&r.network_error_code))?;
    let latest_given = latest_advice.is_some() || latest_network.is_some() || text(&r.pg_error_code).is_some();
    let latest = decline(method, brand, text(&r.pg_error_code), latest_network, latest_advice);
    let first_advice = raw("first_network_advice_code", text(&r.first_network_advice_code))?;
    let first_network = raw("first_network_error_code", text(&r.first_network_error_code))?;
    let first_given = first_advice.is_some() || first_network.is_some() || text(&r.first_pg_error_code).is_some();
    let first = decline(method, brand, text(&r.first_pg_error_code), first_network, first_advice);

    let keys = retry_keys(r, clock)?;
    let started = [
        r.invoice_start_time.as_ref().map(|t| ("invoice_start_time", t)),
        r.first_error_msg_time.as_ref().map(|t| ("first_error_msg_time", t)),
    ]
    .into_iter()
    .flatten()
    .next()
    .map(|(field, t)| time(field, t))
    .transpose()?
    .or_else(|| keys.iter().find(|k| k.1 > 0).map(|k| k.0))
    .unwrap_or(clock)
    .min(clock);

    let (retries, mut card_attempts) = spread_retries(&keys, started, clock);
    let attempt = |at, decline, network_code, advice_code, card| EarlierAttempt {
        at,
        decline,
        network_code,
        advice_code,
        channel: None,
        payment_method_updated: false,
        card: Some(card),
    };
    // The invoice's original charge. With this card's own retries in this
    // invoice, it carries the invoice's first codes and may have been another
    // card: its hard decline does not bind this one (the card's own codes do).
    // Without them, the card's latest failure is the one that matters for this
    // card: the original charge if it was this card, else an earlier invoice's.
    // A card with no failure of its own is a fresh card for this invoice.
    let (original, fresh_card) = if !retries.is_empty() || !latest_given {
        let (code, net, adv) = if first_given { (first, first_network, first_advice) } else { (latest, latest_network, latest_advice) };
        let card = if first_given { FIRST_CARD } else { THIS_CARD };
        (attempt(started, code, net, adv, card), first_given && !latest_given)
    } else {
        (attempt(started, latest, latest_network, latest_advice, THIS_CARD), false)
    };
    // Whether that charge was this card is not known: for the caps it counts as if
    // it were (a network rule must hold either way), without binding this card's state.
    if original.card == Some(FIRST_CARD) {
        card_attempts.push(CardAttempt { at: started, retry: false });
    }
    let mut attempts = vec![original];
    attempts.extend(retries.into_iter().map(|t| attempt(t, latest, latest_network, latest_advice, THIS_CARD)));

    let earliest = r.wait_time.as_ref().map(|t| time("wait_time", t)).transpose()?;
    let last = attempts.last().map_or(clock, |a| a.at);
    let req = engine::Request {
        asks: Vec::new(),
        payment_id: text(&r.payment_id).unwrap_or("hyperswitch").to_string(),
        // hyperswitch sends a billing country, never a zone (and its retries carry no message).
        timezone_assumed: true,
        facts,
        attempts,
        // A card that has not failed in this invoice is new to it: the model knows.
        payment_method_updated: fresh_card,
        past_payments: Vec::new(),
        card: Some(THIS_CARD),
        card_attempts,
        // Within the tolerated skew the latest retry may be a little after our clock.
        now: clock.max(last),
        constraints: Constraints { earliest, channels: vec![Channel::None], ..Constraints::default() },
    };
    req.validate()?;
    Ok(Mapped::Decide(Box::new(req)))
}

/// The payment's facts: method, amount and currency (required: the minor unit depends
/// on it), country (`default_country` when missing), card network and funding.
fn payment_facts(r: &decider::DeciderRequest, default_country: Country) -> Result<PaymentFacts, InvalidField> {
    let method = method("payment_method_type", text(&r.payment_method_type))?;
    let amount_minor = match (r.invoice_amount, r.attempt_amount) {
        (Some(a), _) if a > 0 => a,
        (None | Some(0), Some(a)) if a > 0 => a,
        (Some(a), _) if a < 0 => return Err(bad("invoice_amount", format!("must be positive (minor units), got {a}"))),
        (_, Some(a)) if a < 0 => return Err(bad("attempt_amount", format!("must be positive (minor units), got {a}"))),
        _ => return Err(bad("invoice_amount", "is required: the amount due in minor units (or attempt_amount)")),
    };
    let currency = match text(&r.invoice_currency)
        .map(|c| ("invoice_currency", c))
        .or_else(|| text(&r.attempt_currency).map(|c| ("attempt_currency", c)))
    {
        Some((field, c)) => {
            c.to_ascii_uppercase().parse::<Currency>().map_err(|_| bad(field, format!("{c:?} is not an ISO 4217 currency code (USD)")))?
        }
        // No silent default: the amount's minor unit depends on it.
        None => return Err(bad("invoice_currency", "is required: the ISO 4217 currency of invoice_amount (or attempt_currency)")),
    };
    let country = match text(&r.billing_country) {
        Some(c) => c
            .to_ascii_uppercase()
            .parse::<Country>()
            .map_err(|_| bad("billing_country", format!("{c:?} is not an ISO 3166-1 alpha-2 country code (US)")))?,
        None => default_country,
    };
    let card_funding = text(&r.card_funding).and_then(|f| f.to_ascii_lowercase().parse::<CardFunding>().ok());
    let facts = PaymentFacts {
        amount_minor,
        currency,
        method,
        card_brand: if method == PaymentMethod::Card { brand(text(&r.card_network)) } else { None },
        card_funding,
        country,
        timezone: crate::calendar::default_timezone(country),
        billing_interval: None,
        tenure_days: None,
    };
    Ok(facts)
}

/// `hourly_retry_history` as (hour, count), in time order, each key checked (a time,
/// not in the future beyond the tolerated skew, a non-negative count).
fn retry_keys(r: &decider::DeciderRequest, clock: DateTime<Utc>) -> Result<Vec<(DateTime<Utc>, i64)>, InvalidField> {
    // Retries per hour; a count of n becomes n attempts late in the hour.
    // Bounded before anything is expanded: a count is a number of attempts to
    // build, so one huge count would otherwise allocate without limit.
    crate::limits::check_len("hourly_retry_history", r.hourly_retry_history.len(), crate::limits::MAX_HISTORY_KEYS)?;
    let total: i64 = r.hourly_retry_history.values().map(|&c| i64::from(c.max(0))).sum();
    if total > crate::limits::MAX_ATTEMPTS as i64 {
        return Err(bad("hourly_retry_history", format!("{total} retries in all, at most {} accepted", crate::limits::MAX_ATTEMPTS)));
    }
    let mut keys: Vec<(DateTime<Utc>, i64)> = Vec::with_capacity(r.hourly_retry_history.len());
    for (key, &count) in &r.hourly_retry_history {
        let field = || format!("hourly_retry_history[{:?}]", key.chars().take(40).collect::<String>());
        let at = history_key(key).ok_or_else(|| bad(field(), "key is not a time (YYYY-MM-DD HH:MM:SS[.f], UTC)"))?;
        crate::limits::check_time_named(field, at)?;
        if count < 0 {
            return Err(bad(field(), format!("count must not be negative, got {count}")));
        }
        // A few minutes of clock skew between hyperswitch and recoup are tolerated.
        if at > clock + chrono::Duration::minutes(CLOCK_SKEW_MINUTES) {
            return Err(bad(field(), format!("is in the future (now is {})", clock.to_rfc3339_opts(SecondsFormat::Secs, true))));
        }
        keys.push((at, i64::from(count)));
    }
    keys.sort();
    Ok(keys)
}

/// The hour keys as attempts: this invoice's retries, and the card's retries of earlier invoices.
fn spread_retries(keys: &[(DateTime<Utc>, i64)], started: DateTime<Utc>, clock: DateTime<Utc>) -> (Vec<DateTime<Utc>>, Vec<CardAttempt>) {
    // hyperswitch floors the keys to the hour, per card across invoices. A key
    // in or after the invoice's first hour is this invoice's retry; an earlier key
    // is the card's retry of an earlier invoice, counted whole toward the card's
    // caps. Either is placed as late in its hour as it can have been (this
    // invoice's after its start and not after now), so a window that counts it
    // closes no earlier than the network's: a retry made at 13:00:05 and keyed
    // 13:00 still counts for a retry at 13:00 the next day.
    let first_hour = started - chrono::Duration::seconds(started.timestamp().rem_euclid(3600));
    let second = chrono::Duration::seconds;
    // n attempts in the last n seconds of [lo, hi] (a second apart from lo when it is shorter).
    let late = |lo: DateTime<Utc>, hi: DateTime<Utc>, n: i64| {
        let last_n = (hi - lo).num_seconds() >= n;
        (0..n).map(move |k| if last_n { hi - second(n - 1 - k) } else { lo + second(k) })
    };
    let mut retries: Vec<DateTime<Utc>> = Vec::new();
    let mut card_attempts: Vec<CardAttempt> = Vec::new();
    for &(at, n) in keys {
        if n == 0 {
            continue;
        }
        if at < first_hour {
            card_attempts.extend(late(at, at + second(3599), n).map(|at| CardAttempt { at, retry: true }));
        } else {
            retries.extend(late(at.max(started + second(1)), (at + second(3599)).min(clock), n));
        }
    }
    retries.sort();
    // Two keys naming the same time ("2026-11-20" and "2026-11-20 00:00:00") still give distinct attempts.
    for i in 1..retries.len() {
        if retries[i] <= retries[i - 1] {
            retries[i] = retries[i - 1] + chrono::Duration::seconds(1);
        }
    }
    (retries, card_attempts)
}

/// The engine settings for hyperswitch: the server's, exploring at `exploration` (0 unless
/// recoup logs the decisions itself)
/// (hyperswitch logs no propensities, so exploring would only cost).
pub fn engine_config(cfg: &EngineConfig, exploration: f64) -> EngineConfig {
    let exploration = if exploration.is_finite() { exploration.clamp(0.0, 1.0) } else { 0.0 };
    // Only the exploration changes, to a valid rate: the check cannot fail on a checked config.
    engine::EngineParams { exploration, ..cfg.params() }.check().unwrap_or_else(|_| cfg.clone())
}

/// The answer, and what to log and count about it.
pub struct Answer {
    pub response: decider::DeciderResponse,
    /// `RETRY` or `DO_NOT_RETRY`.
    pub action: &'static str,
    /// The first reason code (why not, or why this slot).
    pub reason: String,
    /// The chosen retry's time and P(success), and the probability it was chosen with
    /// (for the decision log).
    pub retry_at: Option<DateTime<Utc>>,
    pub p_success: f64,
    pub propensity: f64,
    /// The holdout arm that answered: `model`, or `control:<schedule>`.
    pub arm: String,
}

/// Decide one hyperswitch request with `model`; `cfg` from [`engine_config`].
pub fn decide(
    model: &SuccessModel,
    cfg: &EngineConfig,
    r: &decider::DeciderRequest,
    clock: DateTime<Utc>,
    default_country: Country,
) -> Result<Answer, InvalidField> {
    decide_in(model, cfg, r, clock, default_country, None)
}

/// [`decide`], or, for a payment in `holdout`, the holdout's control schedule under the
/// network rules (`engine::decide_fixed`), as the `recoup.v1` route does. hyperswitch sends
/// no customer id, so a payment is assigned by its `payment_id` (the same documented hash).
pub fn decide_in(
    model: &SuccessModel,
    cfg: &EngineConfig,
    r: &decider::DeciderRequest,
    clock: DateTime<Utc>,
    default_country: Country,
    holdout: Option<&crate::api::Holdout>,
) -> Result<Answer, InvalidField> {
    let req = match to_engine(r, clock, default_country)? {
        Mapped::BudgetExhausted => {
            let response = decider::DeciderResponse { retry_flag: false, retry_time: None, decision_threshold: None };
            return Ok(Answer {
                response,
                action: "DO_NOT_RETRY",
                reason: "retry_count_left_exhausted".into(),
                retry_at: None,
                p_success: 0.0,
                propensity: 1.0,
                arm: "model".into(),
            });
        }
        Mapped::Decide(req) => req,
    };
    let control = holdout.filter(|h| h.holds_id(&req.payment_id));
    let d = match control {
        Some(h) => h.decide(model, cfg, &req)?,
        None => engine::decide(model, cfg, &req, crate::api::request_randomness(&req))?,
    };
    let reason =
        d.reasons.iter().find(|r| !r.code.starts_with("constraint:")).or(d.reasons.first()).map(|r| r.code.clone()).unwrap_or_default();
    let chosen = d.chosen.as_ref().filter(|_| d.action == Action::Retry);
    let response = decider::DeciderResponse {
        retry_flag: chosen.is_some(),
        retry_time: chosen.map(|c| crate::api::timestamp(c.retry_at)),
        decision_threshold: chosen.and_then(|c| threshold(cfg, c)),
    };
    Ok(Answer {
        response,
        action: if chosen.is_some() { "RETRY" } else { "DO_NOT_RETRY" },
        reason,
        retry_at: chosen.map(|c| c.retry_at),
        p_success: chosen.map_or(0.0, |c| c.p_success),
        propensity: d.propensity,
        arm: control.map_or_else(|| "model".into(), |h| h.arm()),
    })
}

/// The success probability at which a retry at the chosen slot just pays for
/// itself: cost / (amount × delay discount). The slot's expected value is
/// discount × P × amount − cost, so the discounted amount is (EV + cost) / P.
fn threshold(cfg: &EngineConfig, chosen: &engine::Slot) -> Option<f64> {
    let cost = cfg.attempt_cost_minor;
    let discounted_amount = (chosen.expected_value + cost) / chosen.p_success;
    (chosen.p_success > 0.0 && discounted_amount > 0.0).then(|| (cost / discounted_amount).clamp(0.0, 1.0))
}

// ---------------------------------------------------------------------------
// Training jobs.

/// Settings of the trainer service.
#[derive(Debug, Clone)]
pub struct TrainerConfig {
    /// History to train on (contract v1).
    pub history: PathBuf,
    /// The registry new versions go to.
    pub models: PathBuf,
    /// Promote a finished job's version (the server then hot-reloads it).
    pub promote: bool,
}

/// Training jobs waiting or running at once; more are refused with `RESOURCE_EXHAUSTED`.
pub const MAX_ACTIVE_JOBS: usize = 4;
/// Finished jobs remembered for `GetTrainingJobStatus` (the oldest are forgotten first).
const MAX_FINISHED_JOBS: usize = 256;

/// Who asked: the name of the token the call came with (set by the server's
/// guard; empty when none was needed). A caller sees only its own jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller(pub String);

#[derive(Debug, Clone)]
struct Job {
    owner: String,
    tag: String,
    merchant_id: String,
    status: trainer::JobStatus,
    message: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Background training jobs: one runs at a time (training uses every core),
/// the others wait as `PENDING`; one job per tag. Jobs live in memory: a
/// restart forgets them (the versions they wrote stay in the registry).
#[derive(Clone)]
pub struct Trainer {
    cfg: TrainerConfig,
    jobs: Arc<Mutex<HashMap<String, Job>>>,
    gate: Arc<tokio::sync::Semaphore>,
}

/// Keep at most [`MAX_FINISHED_JOBS`] finished jobs, forgetting the oldest.
fn forget_oldest_finished(jobs: &mut HashMap<String, Job>) {
    let mut finished: Vec<(DateTime<Utc>, String)> = jobs
        .iter()
        .filter(|(_, j)| matches!(j.status, trainer::JobStatus::Succeeded | trainer::JobStatus::Failed))
        .map(|(id, j)| (j.updated_at, id.clone()))
        .collect();
    if finished.len() < MAX_FINISHED_JOBS {
        return;
    }
    finished.sort();
    for (_, id) in finished.iter().take(finished.len() + 1 - MAX_FINISHED_JOBS) {
        jobs.remove(id);
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Trainer {
    pub fn new(cfg: TrainerConfig) -> Trainer {
        Trainer { cfg, jobs: Arc::new(Mutex::new(HashMap::new())), gate: Arc::new(tokio::sync::Semaphore::new(1)) }
    }

    fn update(&self, id: &str, status: Option<trainer::JobStatus>, message: String) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = jobs.get_mut(id) {
            if let Some(s) = status {
                j.status = s;
            }
            j.message = message;
            j.updated_at = Utc::now();
        }
    }

    /// Start (or find) `caller`'s job for `tag`.
    pub fn trigger(&self, caller: &Caller, tag: &str, merchant_id: &str) -> Result<trainer::TriggerTrainingResponse, CallError> {
        let tag = tag.trim();
        crate::limits::check_text("merchant_id", merchant_id)?;
        if !tag.is_empty() {
            crate::registry::check_version_name(tag).map_err(|m| CallError::Invalid(format!("model_version_tag: {m}")))?;
            if self.cfg.models.join(tag).exists() {
                return Err(CallError::Exists(format!(
                    "model_version_tag: version {tag:?} already exists in the registry; versions are immutable"
                )));
            }
        }
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let active = |j: &Job| matches!(j.status, trainer::JobStatus::Pending | trainer::JobStatus::Running);
        if !tag.is_empty() {
            if let Some((id, j)) = jobs.iter().find(|(_, j)| j.tag == tag && active(j)) {
                if j.owner != caller.0 {
                    return Err(CallError::Exists(format!("model_version_tag: a job for {tag:?} is already running for another caller")));
                }
                return Ok(trainer::TriggerTrainingResponse {
                    job_id: id.clone(),
                    message: format!("already training {tag:?} as job {id}"),
                });
            }
        }
        if jobs.values().filter(|j| active(j)).count() >= MAX_ACTIVE_JOBS {
            return Err(CallError::Overloaded(format!(
                "{MAX_ACTIVE_JOBS} training jobs are already waiting or running; try again when one has finished"
            )));
        }
        forget_oldest_finished(&mut jobs);
        let now = Utc::now();
        // Unguessable: a job id is all GetTrainingJobStatus asks for.
        let id = format!("train-{}", hex::encode(rand::random::<[u8; 16]>()));
        let job = Job {
            owner: caller.0.clone(),
            tag: tag.to_string(),
            merchant_id: merchant_id.to_string(),
            status: trainer::JobStatus::Pending,
            message: "waiting for a running job to finish".into(),
            created_at: now,
            updated_at: now,
        };
        jobs.insert(id.clone(), job);
        drop(jobs);
        tracing::info!(job = %id, tag, merchant_id, history = %self.cfg.history.display(), "training job accepted");
        let this = self.clone();
        let job_id = id.clone();
        let tag = tag.to_string();
        tokio::spawn(async move {
            let _turn = this.gate.clone().acquire_owned().await;
            this.update(&job_id, Some(trainer::JobStatus::Running), "starting".into());
            let job = crate::pipeline::Job {
                history: this.cfg.history.clone(),
                out: this.cfg.models.clone(),
                version: (!tag.is_empty()).then(|| tag.clone()),
                promote: this.cfg.promote,
                cfg: crate::train::TrainConfig::default(),
                export_features: None,
                load: crate::history::LoadOptions::default(),
                sample_payers: None,
            };
            let (me, id) = (this.clone(), job_id.clone());
            let result =
                tokio::task::spawn_blocking(move || crate::pipeline::to_registry(&job, &mut |m| me.update(&id, None, m.to_string()))).await;
            match result {
                Ok(Ok(w)) => {
                    let m = &w.report.model;
                    let message = format!(
                        "wrote model {}{}: test log loss {:.4}, AUC {:.4}, ECE {:.4} on {} held-out retries",
                        w.version,
                        if this.cfg.promote { " and promoted it" } else { " (not promoted: `recoup models promote` it)" },
                        m.log_loss,
                        m.auc,
                        m.ece,
                        w.report.test_examples
                    );
                    tracing::info!(job = %job_id, version = %w.version, "training job succeeded");
                    this.set_version(&job_id, &w.version);
                    this.update(&job_id, Some(trainer::JobStatus::Succeeded), message);
                }
                Ok(Err(e)) => {
                    tracing::error!(job = %job_id, error = %format!("{e:#}"), "training job failed");
                    this.update(&job_id, Some(trainer::JobStatus::Failed), format!("{e:#}"));
                }
                Err(e) => {
                    tracing::error!(job = %job_id, error = %e, "training task panicked");
                    this.update(&job_id, Some(trainer::JobStatus::Failed), format!("training task failed: {e}"));
                }
            }
        });
        Ok(trainer::TriggerTrainingResponse { job_id: id, message: "started".into() })
    }

    fn set_version(&self, id: &str, version: &str) {
        if let Some(j) = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id) {
            j.tag = version.to_string();
        }
    }

    /// The state of one of `caller`'s jobs (another caller's job is not found).
    pub fn status(&self, caller: &Caller, id: &str) -> Result<trainer::GetTrainingJobStatusResponse, CallError> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let shown: String = id.chars().take(64).collect();
        let j = jobs.get(id.trim()).filter(|j| j.owner == caller.0).ok_or_else(|| {
            CallError::NotFound(format!("job_id: no training job {shown:?} of yours (jobs are kept in memory until the server restarts)"))
        })?;
        Ok(trainer::GetTrainingJobStatusResponse {
            job_id: id.trim().to_string(),
            status: j.status as i32,
            message: if j.merchant_id.is_empty() {
                j.message.clone()
            } else {
                format!("{} (requested for merchant {})", j.message, j.merchant_id)
            },
            model_version_tag: j.tag.clone(),
            created_at: rfc3339(j.created_at),
            updated_at: rfc3339(j.updated_at),
        })
    }
}

#[tonic::async_trait]
impl trainer::trainer_service_server::TrainerService for Trainer {
    async fn trigger_training(
        &self,
        request: tonic::Request<trainer::TriggerTrainingRequest>,
    ) -> Result<tonic::Response<trainer::TriggerTrainingResponse>, tonic::Status> {
        let caller = request.extensions().get::<Caller>().cloned().unwrap_or_default();
        let r = request.into_inner();
        self.trigger(&caller, &r.model_version_tag, &r.merchant_id).map(tonic::Response::new).map_err(Into::into)
    }

    async fn get_training_job_status(
        &self,
        request: tonic::Request<trainer::GetTrainingJobStatusRequest>,
    ) -> Result<tonic::Response<trainer::GetTrainingJobStatusResponse>, tonic::Status> {
        let caller = request.extensions().get::<Caller>().cloned().unwrap_or_default();
        self.status(&caller, &request.into_inner().job_id).map(tonic::Response::new).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_in_hyperswitch_formats() {
        let t = |s: &str| history_key(s).map(|t| t.to_rfc3339());
        assert_eq!(t("2026-11-20 14:00:00.0"), Some("2026-11-20T14:00:00+00:00".into()));
        assert_eq!(t("2026-11-20 14:00:00"), Some("2026-11-20T14:00:00+00:00".into()));
        assert_eq!(t("2026-11-20T14:00:00Z"), Some("2026-11-20T14:00:00+00:00".into()));
        assert_eq!(t("2026-11-20"), Some("2026-11-20T00:00:00+00:00".into()));
        assert_eq!(t("20.11.2026"), None);
    }

    #[test]
    fn networks_and_declines_map_through_the_taxonomy() {
        assert_eq!(brand(Some("Visa")), Some(CardBrand::Visa));
        assert_eq!(brand(Some("Mastercard")), Some(CardBrand::Mastercard));
        assert_eq!(brand(Some("AmericanExpress")), Some(CardBrand::Amex));
        assert_eq!(brand(Some("RuPay")), Some(CardBrand::Other));
        assert_eq!(brand(None), None);
        assert_eq!(brand(Some("Maestro")), Some(CardBrand::Mastercard));
        assert_eq!(brand(Some("JCB")), Some(CardBrand::Other));
        let r = |s: &str| s.parse::<RawCode>().ok();
        let card = PaymentMethod::Card;
        let visa = Some(CardBrand::Visa);
        // The network's response code wins over an equally soft gateway code…
        assert_eq!(decline(card, visa, Some("card_declined"), r("51"), None), DeclineCode::InsufficientFunds);
        // …a hard one over a soft gateway code, advice 03 over both…
        assert_eq!(decline(card, visa, Some("insufficient_funds"), r("46"), None), DeclineCode::AccountClosed);
        assert_eq!(decline(card, visa, Some("insufficient_funds"), r("51"), r("03")), DeclineCode::DoNotTryAgain);
        // …the gateway's code stands alone, and nothing known is `other`.
        assert_eq!(decline(card, visa, Some("Not enough balance"), None, None), DeclineCode::InsufficientFunds);
        assert_eq!(decline(card, visa, Some("stolen_card"), None, None), DeclineCode::StolenCard);
        assert_eq!(decline(card, visa, None, None, None), DeclineCode::Other);
        assert_eq!(decline(card, visa, Some("mystery"), r("Z9"), None), DeclineCode::Other);
    }
}
