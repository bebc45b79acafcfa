//! The `recoup.v1` protobuf API (`proto/recoup/v1/recoup.proto`): generated
//! types, and the mapping between them and the engine's typed request and
//! decision. Every conversion error names the request field, so the service
//! can answer `INVALID_ARGUMENT` with it.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::str::FromStr;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::declines::{normalize, DeclineCode, Signals};
use crate::domain::{BillingInterval, CardBrand, CardFunding, CardId, Channel, Country, Currency, Outcome, PaymentMethod, RawCode};
use crate::engine::{self, Constraints, Decision, EarlierAttempt, InvalidField};
use crate::features::PaymentFacts;

/// Generated `recoup.v1` messages, client and server.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("recoup.v1");
}

/// The benchmark-only echo service (`recoup serve --echo-service`).
pub mod bench {
    tonic::include_proto!("recoup.bench.v1");

    /// Encoded file descriptor set of the echo service (for reflection, when served).
    pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bench_descriptor.bin"));

    /// Answers every call with its request: a gRPC call with no work in it.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct EchoService;

    #[tonic::async_trait]
    impl echo_server::Echo for EchoService {
        async fn echo(&self, request: tonic::Request<EchoMessage>) -> Result<tonic::Response<EchoMessage>, tonic::Status> {
            Ok(tonic::Response::new(request.into_inner()))
        }
    }
}

/// Encoded file descriptor set of the protos (for server reflection).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/recoup_descriptor.bin"));

pub(crate) fn bad(field: impl Into<String>, message: impl Into<String>) -> InvalidField {
    InvalidField { field: field.into(), message: message.into() }
}

fn required<T: FromStr>(field: &str, value: &str, expected: &str) -> Result<T, InvalidField> {
    let v = value.trim();
    if v.is_empty() {
        return Err(bad(field, format!("is required ({expected})")));
    }
    v.parse().map_err(|_| bad(field, format!("unknown value {v:?}; expected {expected}")))
}

fn optional<T: FromStr>(field: &str, value: &str, expected: &str) -> Result<Option<T>, InvalidField> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| bad(field, format!("unknown value {v:?}; expected {expected}")))
}

/// A protobuf timestamp as a time; the error names `field`.
pub(crate) fn time(field: &str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>, InvalidField> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(bad(field, format!("nanos must be 0..1e9, got {}", t.nanos)));
    }
    let t = DateTime::from_timestamp(t.seconds, t.nanos as u32)
        .ok_or_else(|| bad(field, format!("timestamp out of range ({} s)", t.seconds)))?;
    crate::limits::check_time(field, t)
}

/// A protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

use crate::domain::vocabulary;

/// Why a call failed: the one place recoup's errors become gRPC statuses (codes and
/// messages). Handlers, the trainer and the guard name the case; this decides the code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// A request field is missing or wrong (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// No admission left: too many calls in flight, or too many jobs waiting.
    #[error("{0}")]
    Overloaded(String),
    /// A message larger than the server takes.
    #[error("{0}")]
    TooLarge(String),
    /// The thing to create exists already (a training job under the same tag).
    #[error("{0}")]
    Exists(String),
    /// The thing asked about does not exist (for this caller).
    #[error("{0}")]
    NotFound(String),
    /// The server is not set up for this call (no decision log for outcome reports).
    #[error("{0}")]
    NotConfigured(String),
    /// A dependency is failing for now (the decision log's writer): retrying may work.
    #[error("{0}")]
    Unavailable(String),
    /// No bearer token, or one that is not known.
    #[error("{0}")]
    Unauthenticated(String),
    /// A known token without the scope the method needs.
    #[error("{0}")]
    PermissionDenied(String),
    /// No answer within the call's deadline.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The client went away while sending the request.
    #[error("{0}")]
    Cancelled(String),
    /// A method the server does not serve.
    #[error("{0}")]
    NoSuchMethod(String),
    /// The server's own fault (a panic, a failed task); the details are in its log.
    #[error("{0}")]
    Internal(String),
}

impl From<CallError> for tonic::Status {
    fn from(e: CallError) -> tonic::Status {
        use tonic::Status;
        match e {
            CallError::Invalid(m) => Status::invalid_argument(m),
            CallError::Overloaded(m) | CallError::TooLarge(m) => Status::resource_exhausted(m),
            CallError::Exists(m) => Status::already_exists(m),
            CallError::NotFound(m) => Status::not_found(m),
            CallError::NotConfigured(m) => Status::failed_precondition(m),
            CallError::Unavailable(m) => Status::unavailable(m),
            CallError::Unauthenticated(m) => Status::unauthenticated(m),
            CallError::PermissionDenied(m) => Status::permission_denied(m),
            CallError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
            CallError::Cancelled(m) => Status::cancelled(m),
            CallError::NoSuchMethod(m) => Status::unimplemented(m),
            CallError::Internal(m) => Status::internal(m),
        }
    }
}

impl From<InvalidField> for CallError {
    fn from(e: InvalidField) -> CallError {
        CallError::Invalid(e.to_string())
    }
}

/// JSON for the request messages (serde derives added by build.rs), as `recoup decide` reads them.
pub mod json {
    use chrono::{DateTime, Utc};
    use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
    use serde::de::{MapAccess, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer};

    use super::v1;

    /// An optional timestamp as an RFC 3339 string (`null` or absent: none).
    pub mod time {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<prost_types::Timestamp>, D::Error> {
            Ok(Option::<DateTime<Utc>>::deserialize(d)?.map(super::super::timestamp))
        }
    }

    /// `past_payments`: each payment as `{"attempts": [...]}` (the proto's form) or as a bare
    /// list of attempts (the form `recoup decide` first read).
    pub fn past_payments<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<v1::PastPayment>, D::Error> {
        Ok(Vec::<PastPayment>::deserialize(d)?.into_iter().map(|p| p.0).collect())
    }

    struct PastPayment(v1::PastPayment);

    impl<'de> Deserialize<'de> for PastPayment {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Either;
            impl<'de> Visitor<'de> for Either {
                type Value = v1::PastPayment;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a past payment: {\"attempts\": [...]} or a list of attempts")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                    Ok(v1::PastPayment { attempts: Vec::deserialize(SeqAccessDeserializer::new(seq))? })
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                    v1::PastPayment::deserialize(MapAccessDeserializer::new(map))
                }
            }
            d.deserialize_any(Either).map(PastPayment)
        }
    }
}

static METHODS: LazyLock<String> = LazyLock::new(vocabulary::<PaymentMethod>);
static CHANNELS: LazyLock<String> = LazyLock::new(vocabulary::<Channel>);
static MESSAGES: LazyLock<String> = LazyLock::new(|| vocabulary::<Channel>().replace("none, ", ""));
static BRANDS: LazyLock<String> = LazyLock::new(vocabulary::<CardBrand>);
static FUNDINGS: LazyLock<String> = LazyLock::new(vocabulary::<CardFunding>);
static INTERVALS: LazyLock<String> = LazyLock::new(vocabulary::<BillingInterval>);
static OUTCOMES: LazyLock<String> = LazyLock::new(vocabulary::<Outcome>);

/// A `payment_method_id` as a card id; empty is none, and long text is refused naming the field.
fn card_id(field: &str, text: &str) -> Result<Option<CardId>, InvalidField> {
    crate::limits::check_text(field, text)?;
    Ok(CardId::of(text))
}

/// A decline from a request's codes through the one normalization
/// ([`crate::declines::normalize`]): `decline_code` may be a contract code, a
/// gateway code (Stripe, Adyen, Braintree) or a response code; an unknown one is
/// refused naming `field` (a network or advice code nothing knows is kept as
/// raw evidence and read as `other`). `None` when no code was given.
pub fn decline_of(
    field: &str,
    decline_code: &str,
    network_code: Option<RawCode>,
    advice_code: Option<RawCode>,
    method: PaymentMethod,
    brand: Option<CardBrand>,
) -> Result<Option<DeclineCode>, InvalidField> {
    let text = decline_code.trim();
    let n = normalize(method, Signals { decline_code: Some(text), network_code, advice_code, brand });
    if n.is_some_and(|n| n.unknown == Some(crate::declines::Column::DeclineCode)) {
        return Err(bad(
            field,
            format!(
                "unknown value {text:?}; expected a contract decline code (insufficient_funds, do_not_honor, …), \
                 a Stripe/Adyen/Braintree decline code or a response code (51)"
            ),
        ));
    }
    Ok(n.map(|n| n.code))
}

/// A request's `attempts`, checked field by field (errors name `attempts[i].field`); an
/// attempt charged to another method than the one before it is flagged as updated.
fn earlier_attempts(given: &[v1::Attempt], method: PaymentMethod, brand: Option<CardBrand>) -> Result<Vec<EarlierAttempt>, InvalidField> {
    let mut attempts = Vec::with_capacity(given.len());
    for (i, a) in given.iter().enumerate() {
        let f = |name: &str| format!("attempts[{i}].{name}");
        let at = time(&f("attempted_at"), a.attempted_at.as_ref().ok_or_else(|| bad(f("attempted_at"), "is required"))?)?;
        let network_code = optional::<RawCode>(&f("network_code"), &a.network_code, "1 to 8 letters or digits")?;
        let advice_code = optional::<RawCode>(&f("advice_code"), &a.advice_code, "1 to 8 letters or digits")?;
        let decline = decline_of(&f("decline_code"), &a.decline_code, network_code, advice_code, method, brand)?
            .ok_or_else(|| bad(f("decline_code"), "is required: give decline_code, network_code or advice_code"))?;
        attempts.push(EarlierAttempt {
            at,
            decline,
            network_code,
            advice_code,
            channel: optional::<Channel>(&f("channel"), &a.channel, &CHANNELS)?,
            payment_method_updated: a.payment_method_updated,
            card: card_id(&f("payment_method_id"), &a.payment_method_id)?,
        });
    }
    // An attempt charged to another method than the attempt before it came after the payer
    // replaced it, as the card rules read it and as training reads a history
    // (`history::updates_from_method_id`): flagged, so the model scores it as trained.
    for k in 1..attempts.len() {
        if CardId::replaced(attempts[k - 1].card, attempts[k].card) {
            attempts[k].payment_method_updated = true;
        }
    }
    Ok(attempts)
}

/// Turn a `DecideRequest` into the engine's request; `clock` is used when `now` is unset.
pub fn to_engine(r: &v1::DecideRequest, clock: DateTime<Utc>) -> Result<engine::Request, InvalidField> {
    let p = r.payment.as_ref().ok_or_else(|| bad("payment", "is required"))?;
    let method: PaymentMethod = required("payment.payment_method", &p.payment_method, &METHODS)?;
    let country: Country = required("payment.country", &p.country, "an ISO 3166-1 alpha-2 code in upper case (US)")?;
    let (timezone, timezone_assumed): (Tz, bool) =
        match optional::<Tz>("payment.timezone", &p.timezone, "an IANA time zone (America/New_York)")? {
            Some(tz) => (tz, false),
            None => (crate::calendar::default_timezone(country), true),
        };
    let facts = PaymentFacts {
        amount_minor: p.amount_minor,
        currency: required::<Currency>("payment.currency", &p.currency, "an ISO 4217 code in upper case (USD)")?,
        method,
        card_brand: optional::<CardBrand>("payment.card_brand", &p.card_brand, &BRANDS)?,
        card_funding: optional::<CardFunding>("payment.card_funding", &p.card_funding, &FUNDINGS)?,
        country,
        timezone,
        billing_interval: optional::<BillingInterval>("payment.billing_interval", &p.billing_interval, &INTERVALS)?,
        tenure_days: p.tenure_days,
    };
    let attempts = earlier_attempts(&r.attempts, method, facts.card_brand)?;
    // The card the retry charges: the one named, else the last attempt's unless the payer replaced it.
    let named = card_id("payment.payment_method_id", &p.payment_method_id)?;
    let card = match named {
        Some(c) => Some(c),
        None if !r.payment_method_updated => attempts.last().and_then(|a| a.card),
        None => None,
    };
    // The retry charges another method than the last attempt did: the payer replaced it.
    let payment_method_updated = r.payment_method_updated || CardId::replaced(attempts.last().and_then(|a| a.card), named);
    let mut card_attempts = Vec::new();
    let mut past_payments = Vec::with_capacity(r.past_payments.len());
    for (i, pp) in r.past_payments.iter().enumerate() {
        let mut v = Vec::with_capacity(pp.attempts.len());
        for (j, a) in pp.attempts.iter().enumerate() {
            let f = |name: &str| format!("past_payments[{i}].attempts[{j}].{name}");
            let at = time(&f("attempted_at"), a.attempted_at.as_ref().ok_or_else(|| bad(f("attempted_at"), "is required"))?)?;
            let outcome: Outcome = required(&f("outcome"), &a.outcome, &OUTCOMES)?;
            let decline = match outcome {
                Outcome::Succeeded => None,
                Outcome::Failed => Some(
                    decline_of(&f("decline_code"), &a.decline_code, None, None, method, facts.card_brand)?.unwrap_or(DeclineCode::Other),
                ),
            };
            let on_card = card_id(&f("payment_method_id"), &a.payment_method_id)?;
            if on_card.is_some() && on_card == card {
                card_attempts.push(engine::CardAttempt { at, retry: a.attempt_number.map_or(j > 0, |n| n > 0) });
            }
            v.push((at, decline));
        }
        past_payments.push(v);
    }
    let mut asks = Vec::with_capacity(r.asks.len());
    for (i, a) in r.asks.iter().enumerate() {
        let f = |name: &str| format!("asks[{i}].{name}");
        let at = time(&f("sent_at"), a.sent_at.as_ref().ok_or_else(|| bad(f("sent_at"), "is required"))?)?;
        let channel: Channel = required(&f("channel"), &a.channel, &MESSAGES)?;
        asks.push(engine::SentAsk { at, channel });
    }
    let constraints = match &r.constraints {
        None => Constraints::default(),
        Some(c) => {
            let quiet_hours = match (c.quiet_start_hour, c.quiet_end_hour) {
                (None, None) => None,
                (Some(s), Some(e)) => Some((s, e)),
                _ => return Err(bad("constraints.quiet_start_hour", "quiet_start_hour and quiet_end_hour go together")),
            };
            let mut channels = Vec::new();
            for (i, ch) in c.allowed_channels.iter().enumerate() {
                channels.push(required::<Channel>(&format!("constraints.allowed_channels[{i}]"), ch, &CHANNELS)?);
            }
            Constraints {
                earliest: c.earliest.as_ref().map(|t| time("constraints.earliest", t)).transpose()?,
                latest: c.latest.as_ref().map(|t| time("constraints.latest", t)).transpose()?,
                quiet_hours,
                skip_weekends: c.skip_weekends,
                skip_holidays: c.skip_holidays,
                max_retries: c.max_retries,
                channels,
            }
        }
    };
    let req = engine::Request {
        payment_id: p.payment_id.clone(),
        timezone_assumed,
        facts,
        attempts,
        payment_method_updated,
        asks,
        past_payments,
        card,
        card_attempts,
        now: r.now.as_ref().map(|t| time("now", t)).transpose()?.unwrap_or(clock),
        constraints,
    };
    req.validate()?;
    Ok(req)
}

fn channel(c: Channel) -> v1::Channel {
    match c {
        Channel::None => v1::Channel::None,
        Channel::Email => v1::Channel::Email,
        Channel::Sms => v1::Channel::Sms,
        Channel::InApp => v1::Channel::InApp,
        Channel::Push => v1::Channel::Push,
    }
}

fn slot(s: &engine::Slot) -> v1::Slot {
    v1::Slot {
        retry_at: Some(timestamp(s.retry_at)),
        channel: channel(s.channel) as i32,
        send_at: s.send_at.map(timestamp),
        p_success: s.p_success,
        expected_value: s.expected_value,
        value: s.value,
        attrition: s.attrition,
    }
}

/// The response for a decision made with model `version`.
pub fn to_response(d: &Decision, version: &str) -> v1::DecideResponse {
    let c = d.chosen.as_ref();
    v1::DecideResponse {
        action: match d.action {
            engine::Action::Retry => v1::Action::Retry,
            engine::Action::DoNotRetry => v1::Action::DoNotRetry,
        } as i32,
        retry_at: c.map(|s| timestamp(s.retry_at)),
        channel: c.map_or(v1::Channel::None, |s| channel(s.channel)) as i32,
        send_at: c.and_then(|s| s.send_at).map(timestamp),
        p_success: c.map_or(0.0, |s| s.p_success),
        p_recovery: d.p_recovery,
        expected_value: c.map_or(0.0, |s| s.expected_value),
        alternatives: d.alternatives.iter().map(slot).collect(),
        reasons: d.reasons.iter().map(|r| v1::Reason { code: r.code.clone(), detail: r.detail.clone() }).collect(),
        model_version: version.to_string(),
        propensity: d.propensity,
        ask_channel: d.ask_channel.map_or(v1::Channel::Unspecified, channel) as i32,
        terms: d.terms.iter().map(|t| v1::Term { feature: t.feature.clone(), weight: t.weight }).collect(),
        pay_schedule: d.pay_schedule.clone(),
        pay_schedule_confidence: d.pay_schedule_confidence,
        candidates_scored: d.candidates_scored as u32,
        candidates_removed: d.candidates_removed as u32,
        next_step: match d.next {
            engine::NextStep::Retry => v1::NextStep::Retry,
            engine::NextStep::Stop => v1::NextStep::Stop,
            engine::NextStep::AskForPaymentMethod => v1::NextStep::AskForPaymentMethod,
            engine::NextStep::WaitForUpdate => v1::NextStep::WaitForUpdate,
        } as i32,
        ask: d.ask.as_ref().map(|a| v1::AskPlan {
            channel: channel(a.channel) as i32,
            send_at: Some(timestamp(a.send_at)),
            p_update: a.p_update,
            attrition: a.attrition,
            p_success_after: a.p_success_after,
            value: a.value,
            value_without_asking: a.value_without_asking,
            planned_asks: a.planned_asks,
        }),
    }
}

/// Validate, decide and answer one request with `model` (version `version`);
/// `clock` stands for an unset `now`. The path every gRPC call takes.
pub fn decide(
    model: &crate::model::SuccessModel,
    version: &str,
    cfg: &engine::EngineConfig,
    r: &v1::DecideRequest,
    clock: DateTime<Utc>,
) -> Result<v1::DecideResponse, InvalidField> {
    decide_classified(model, version, cfg, r, clock).map(|(d, _)| d)
}

/// [`decide`], with the decline class of the request's last attempt (what the answer's
/// `p_success` is calibrated for: the server's live calibration counts by it).
pub fn decide_classified(
    model: &crate::model::SuccessModel,
    version: &str,
    cfg: &engine::EngineConfig,
    r: &v1::DecideRequest,
    clock: DateTime<Utc>,
) -> Result<(v1::DecideResponse, crate::declines::DeclineClass), InvalidField> {
    let er = to_engine(r, clock)?;
    let d = engine::decide(model, cfg, &er, request_randomness(&er))?;
    Ok((to_response(&d, version), last_class(&er)))
}

/// A holdout experiment: this share of payers is served `schedule` instead of the model.
#[derive(Debug, Clone)]
pub struct Holdout {
    /// In [0, 1].
    pub share: f64,
    pub schedule: crate::backtest::Schedule,
}

impl Holdout {
    /// The arm's name in the decision log: `control:<schedule name>`.
    pub fn arm(&self) -> String {
        format!("control:{}", self.schedule.name)
    }

    /// Whether the request's payer is in the holdout: SHA-256 of `recoup-holdout/v1:` and its
    /// customer id (its payment id when it has none), the first 8 bytes read big-endian as a
    /// fraction of 2⁶⁴, below `share`. Stable across servers, restarts and versions, so a
    /// payer stays in one arm and any team can recompute the assignment.
    pub fn holds(&self, r: &v1::DecideRequest) -> bool {
        let id = r.payment.as_ref().map_or("", |p| if p.customer_id.is_empty() { p.payment_id.as_str() } else { p.customer_id.as_str() });
        self.holds_id(id)
    }

    /// Whether the payer (or payment) with this id is in the holdout.
    pub fn holds_id(&self, id: &str) -> bool {
        holdout_fraction(id) < self.share
    }

    /// The control arm's decision of an engine request: the schedule's next slot after the
    /// first failure that the network rules allow ([`engine::decide_fixed`]).
    pub fn decide(
        &self,
        model: &crate::model::SuccessModel,
        cfg: &engine::EngineConfig,
        er: &engine::Request,
    ) -> Result<engine::Decision, InvalidField> {
        let (tz, failed) = (er.facts.timezone, er.attempts.first().map_or(er.now, |a| a.at));
        let next = |after: DateTime<Utc>| self.schedule.next_after(tz, failed, after).map(|a| (a.retry_at, a.channel));
        engine::decide_fixed(model, cfg, er, &self.schedule.name, &next)
    }
}

/// [`Holdout::holds`]'s hash of an id, in [0, 1).
pub fn holdout_fraction(id: &str) -> f64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"recoup-holdout/v1:");
    h.update(id.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b) as f64 / 18_446_744_073_709_551_616.0
}

/// The control arm's answer: the holdout's schedule under the network rules
/// ([`engine::decide_fixed`]), with the decline class as [`decide_classified`] gives it.
pub fn decide_control(
    model: &crate::model::SuccessModel,
    version: &str,
    cfg: &engine::EngineConfig,
    r: &v1::DecideRequest,
    clock: DateTime<Utc>,
    holdout: &Holdout,
) -> Result<(v1::DecideResponse, crate::declines::DeclineClass), InvalidField> {
    let er = to_engine(r, clock)?;
    let d = holdout.decide(model, cfg, &er)?;
    Ok((to_response(&d, version), last_class(&er)))
}

/// The decline class of a request's last attempt (a checked request has one).
fn last_class(er: &engine::Request) -> crate::declines::DeclineClass {
    er.attempts.last().map_or(crate::declines::DeclineClass::Hard, |a| a.decline.class())
}

/// A protobuf time the server already accepted (a checked request's, or its answer's), as
/// [`time`] reads it; `None` when absent.
pub(crate) fn time_of(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref().and_then(|t| time("", t).ok())
}

/// The protobuf request of an engine request: what a client holding engine types (the
/// simulator's billing platform in the closed-loop tests) sends. Card ids are not carried
/// (a request built from one has none); [`to_engine`] reads the result back to `r`.
pub fn from_engine(r: &engine::Request) -> v1::DecideRequest {
    let ts = |t: DateTime<Utc>| Some(timestamp(t));
    let name = |s: Option<&'static str>| s.unwrap_or("").to_string();
    let f = &r.facts;
    v1::DecideRequest {
        payment: Some(v1::Payment {
            payment_id: r.payment_id.clone(),
            customer_id: String::new(),
            amount_minor: f.amount_minor,
            currency: f.currency.as_str().to_string(),
            payment_method: <&str>::from(f.method).to_string(),
            card_brand: name(f.card_brand.map(Into::into)),
            card_funding: name(f.card_funding.map(Into::into)),
            country: f.country.as_str().to_string(),
            timezone: f.timezone.name().to_string(),
            billing_interval: name(f.billing_interval.map(Into::into)),
            tenure_days: f.tenure_days,
            payment_method_id: String::new(),
        }),
        attempts: r
            .attempts
            .iter()
            .map(|a| v1::Attempt {
                attempted_at: ts(a.at),
                decline_code: a.decline.as_str().to_string(),
                network_code: a.network_code.as_ref().map_or(String::new(), |c| c.as_str().to_string()),
                advice_code: a.advice_code.as_ref().map_or(String::new(), |c| c.as_str().to_string()),
                channel: name(a.channel.map(Into::into)),
                payment_method_updated: a.payment_method_updated,
                payment_method_id: String::new(),
            })
            .collect(),
        payment_method_updated: r.payment_method_updated,
        past_payments: r
            .past_payments
            .iter()
            .map(|p| v1::PastPayment {
                attempts: p
                    .iter()
                    .map(|(at, decline)| v1::PastAttempt {
                        attempted_at: ts(*at),
                        outcome: if decline.is_some() { "failed" } else { "succeeded" }.to_string(),
                        decline_code: decline.map_or(String::new(), |d| d.as_str().to_string()),
                        payment_method_id: String::new(),
                        attempt_number: None,
                    })
                    .collect(),
            })
            .collect(),
        now: ts(r.now),
        constraints: Some(v1::Constraints {
            earliest: r.constraints.earliest.and_then(ts),
            latest: r.constraints.latest.and_then(ts),
            quiet_start_hour: r.constraints.quiet_hours.map(|q| q.0),
            quiet_end_hour: r.constraints.quiet_hours.map(|q| q.1),
            skip_weekends: r.constraints.skip_weekends,
            skip_holidays: r.constraints.skip_holidays,
            max_retries: r.constraints.max_retries,
            allowed_channels: r.constraints.channels.iter().map(|c| <&str>::from(*c).to_string()).collect(),
        }),
        asks: r.asks.iter().map(|a| v1::Ask { sent_at: ts(a.at), channel: <&str>::from(a.channel).to_string() }).collect(),
    }
}

/// Two uniforms in [0, 1) from the request's identity, for reproducible exploration.
pub fn request_randomness(req: &engine::Request) -> (f64, f64) {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = foldhash::fast::FixedState::with_seed(0x7265636f7570).build_hasher();
    req.payment_id.hash(&mut h);
    req.attempts.len().hash(&mut h);
    req.now.timestamp().hash(&mut h);
    let x = h.finish();
    ((x >> 32) as f64 / 4294967296.0, (x & 0xffff_ffff) as f64 / 4294967296.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The holdout hash is the documented one (SHA-256 of `recoup-holdout/v1:` + id, first 8
    /// bytes big-endian over 2⁶⁴): the value below was computed with Python's hashlib, so a
    /// data team can recompute every payer's arm without recoup.
    #[test]
    fn holdout_assignment_is_the_documented_hash() {
        assert!((holdout_fraction("cus_inv_0") - 0.39565092864705453).abs() < 1e-15);
        assert!((holdout_fraction("cus_inv_6") - 0.08585031326344991).abs() < 1e-15);
        let schedule = crate::backtest::parse_schedules(crate::backtest::DEFAULT_SCHEDULES).expect("schedules").remove(0);
        let h = Holdout { share: 0.1, schedule };
        let req = |customer: &str, payment: &str| v1::DecideRequest {
            payment: Some(v1::Payment { customer_id: customer.into(), payment_id: payment.into(), ..Default::default() }),
            ..Default::default()
        };
        assert!(h.holds(&req("cus_inv_6", "x")), "0.086 < 0.1");
        assert!(!h.holds(&req("cus_inv_0", "x")), "0.396 ≥ 0.1");
        // Without a customer id, the payment id decides.
        assert!(h.holds(&req("", "cus_inv_6")));
        assert_eq!(h.arm(), "control:daily x4");
    }
}
