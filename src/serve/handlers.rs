//! The gRPC handlers (edge): `recoup.v1.RetryDecider` and hyperswitch's
//! `decider.Decider`, sharing the model, admission and metrics.
//!
//! - **Admission by cost.** A call takes `cost` units of the server's
//!   `max_in_flight` at once or is shed with `RESOURCE_EXHAUSTED`, never queued:
//!   one unit per started [`WORK_PER_UNIT`] items of work (attempts, earlier
//!   payments' attempts, asks, batch items), at most a quarter of the capacity,
//!   so a large call is admitted but small ones keep room beside it.
//! - **Off the async workers.** A one-unit decision (the usual call: well
//!   under a millisecond) runs where it was received; anything larger runs on
//!   the blocking pool, so it cannot stall other calls' I/O. The units are held
//!   until the work itself ends, not until the call answers, so a timed-out
//!   call still counts against admission while its work winds down.
//! - **Stoppable.** When the call is dropped (its deadline passed, see
//!   [`super::guard`], or the client left), a cancel flag is raised; a batch
//!   checks it between items and stops.
//! - **Contained.** A panic in one decision becomes `INTERNAL` for that call (or
//!   an error item for that batch item), counted in `recoup_panics_total`.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use super::State;
use crate::api::{self, time_of, v1, CallError};
use crate::decision_log::{self as declog, Decision, OutcomeRecord};
use crate::engine::{self, EngineConfig};
use crate::hyperswitch;

/// Items of work (attempts, asks, batch items…) that one admission unit covers.
pub const WORK_PER_UNIT: usize = 256;

fn invalid_argument(e: engine::InvalidField) -> Status {
    CallError::from(e).into()
}

/// Work items of one decision request.
fn work(r: &v1::DecideRequest) -> usize {
    1 + r.attempts.len() + r.asks.len() + r.past_payments.iter().map(|p| 1 + p.attempts.len()).sum::<usize>()
}

/// The gRPC service.
#[derive(Clone)]
pub struct Decider {
    pub state: Arc<State>,
}

/// Raises the flag when dropped: the call that started the work is gone.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Decider {
    /// Admission units for `work` items: at least one, at most a quarter of the capacity.
    fn units(&self, work: usize) -> u32 {
        let cap = (self.state.capacity / 4).max(1);
        work.div_ceil(WORK_PER_UNIT).clamp(1, cap) as u32
    }

    pub(crate) fn permit(&self, units: u32) -> Result<InFlight, Status> {
        match self.state.permits.clone().try_acquire_many_owned(units) {
            Ok(p) => Ok(InFlight::new(p, &self.state.metrics)),
            Err(_) => {
                self.state.metrics.shed();
                Err(CallError::Overloaded("too many decisions in flight; retry with backoff".into()).into())
            }
        }
    }

    /// Run `work` on the blocking pool, holding `permit` until the work ends;
    /// its flag turns true once this call is dropped.
    async fn off_worker<T: Send + 'static>(
        &self,
        permit: InFlight,
        work: impl FnOnce(&State, &AtomicBool) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let state = self.state.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let on_drop = CancelOnDrop(cancel.clone());
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            std::panic::catch_unwind(AssertUnwindSafe(|| work(&state, &cancel)))
        })
        .await;
        drop(on_drop);
        match joined {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(panic)) => {
                self.state.metrics.panic("blocking");
                tracing::error!(panic = super::guard::panic_message(&*panic), "decision panicked; answered INTERNAL");
                Err(CallError::Internal("internal error while deciding (logged on the server)".into()).into())
            }
            Err(e) => Err(CallError::Internal(format!("decision task failed: {e}")).into()),
        }
    }

    /// Admit a decision of `units` and run it: inline when it is one unit (the usual
    /// call, well under a millisecond), else on the blocking pool.
    async fn admitted<T: Send + 'static>(
        &self,
        units: u32,
        work: impl FnOnce(&State) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let permit = self.permit(units)?;
        if units == 1 {
            // Let the other calls that arrived with this one be admitted first, so
            // the in-flight count (and load shedding) sees them.
            tokio::task::yield_now().await;
            let out = work(&self.state);
            drop(permit);
            out
        } else {
            self.off_worker(permit, move |state, _| work(state)).await?
        }
    }

    fn decide_now(state: &State, req: &v1::DecideRequest) -> Result<v1::DecideResponse, Status> {
        let loaded = state.current();
        let out = decide_in_arm(state, &loaded, req, chrono::Utc::now()).map_err(invalid_argument);
        let out = out.map(|(r, class, arm)| {
            log_decision(state, "decide", req, &r, class, arm);
            r
        });
        match &out {
            Ok(r) => {
                state.metrics.decision(r.action().as_str_name(), r.channel().as_str_name());
                tracing::debug!(payment_id = %req.payment.as_ref().map_or("", |p| p.payment_id.as_str()), action = r.action().as_str_name(), channel = r.channel().as_str_name(), p = r.p_success, model = %r.model_version, "decided");
            }
            Err(s) => tracing::info!(error = %s.message(), "invalid request"),
        }
        out
    }

    /// A batch, in order, on the blocking pool; stops between items once the call is gone.
    async fn batch(&self, reqs: Vec<v1::DecideRequest>) -> Result<v1::DecideBatchResponse, Status> {
        crate::limits::check_len("requests", reqs.len(), crate::limits::MAX_BATCH).map_err(invalid_argument)?;
        let permit = self.permit(self.units(reqs.iter().map(work).sum()))?;
        let items = self
            .off_worker(permit, move |state, cancel| {
                let loaded = state.current();
                let now = chrono::Utc::now();
                let mut items = Vec::with_capacity(reqs.len());
                // The answers must fit one gRPC message (a client's default limit is the same
                // 4 MiB): an answer that would not fit is dropped before it is logged or
                // counted, its item says so, the items after it are not decided, and the
                // answers that fit are delivered.
                let mut bytes = 0usize;
                let mut full: Option<usize> = None;
                for (i, r) in reqs.iter().enumerate() {
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Some(decided) = full {
                        items.push(v1::DecideBatchItem { result: Some(v1::decide_batch_item::Result::Error(batch_full(i, decided))) });
                        continue;
                    }
                    let one = std::panic::catch_unwind(AssertUnwindSafe(|| decide_in_arm(state, &loaded, r, now)));
                    let result = match one {
                        Ok(Ok((d, class, arm))) => {
                            let len = decision_item_bytes(&d);
                            // Room stays for an error to every item after this one.
                            if bytes + len + BATCH_ERROR_BYTES * (reqs.len() - i - 1) > BATCH_RESPONSE_BYTES {
                                full = Some(i);
                                items.push(v1::DecideBatchItem { result: Some(v1::decide_batch_item::Result::Error(batch_full(i, i))) });
                                continue;
                            }
                            log_decision(state, "decide_batch", r, &d, class, arm);
                            state.metrics.decision(d.action().as_str_name(), d.channel().as_str_name());
                            v1::decide_batch_item::Result::Decision(d)
                        }
                        Ok(Err(e)) => v1::decide_batch_item::Result::Error(error_within(format!("requests[{i}].{e}"))),
                        Err(panic) => {
                            state.metrics.panic("DecideBatch item");
                            tracing::error!(item = i, panic = super::guard::panic_message(&*panic), "batch item panicked");
                            v1::decide_batch_item::Result::Error(format!(
                                "requests[{i}]: internal error while deciding (logged on the server)"
                            ))
                        }
                    };
                    let item = v1::DecideBatchItem { result: Some(result) };
                    bytes += item_bytes(&item);
                    items.push(item);
                }
                items
            })
            .await?;
        Ok(v1::DecideBatchResponse { items })
    }
}

/// Bytes a `DecideBatch` response may fill: the 4 MiB a gRPC message may carry
/// (`limits::MAX_MESSAGE_BYTES`, also most clients' default receive limit), less a margin.
/// A decision is made only while every item after it could still get its error
/// ([`BATCH_ERROR_BYTES`] each) within it.
const BATCH_RESPONSE_BYTES: usize = crate::limits::MAX_MESSAGE_BYTES - 1024;
/// Bytes an undecided item's error takes at most (the message of [`batch_full`], framed).
const BATCH_ERROR_BYTES: usize = 200;
const _: () = assert!(BATCH_ERROR_BYTES * crate::limits::MAX_BATCH < BATCH_RESPONSE_BYTES, "errors for a whole batch must fit");

/// An item's size inside the response (field 1 of `DecideBatchResponse`: its bytes, tag and length).
fn item_bytes(item: &v1::DecideBatchItem) -> usize {
    prost::encoding::message::encoded_len(1, item)
}

/// [`item_bytes`] of the item holding decision `d` (field 1 of its oneof), without building it.
fn decision_item_bytes(d: &v1::DecideResponse) -> usize {
    let item = prost::encoding::message::encoded_len(1, d);
    prost::encoding::key_len(1) + prost::encoding::encoded_len_varint(item as u64) + item
}

/// An item's error cut to what [`BATCH_ERROR_BYTES`] reserves for it (at a character
/// boundary, marked with `…`), so that errors alone can never outgrow the response.
fn error_within(mut e: String) -> String {
    const MAX: usize = BATCH_ERROR_BYTES - 8;
    if e.len() > MAX {
        let mut end = MAX - '…'.len_utf8();
        while !e.is_char_boundary(end) {
            end -= 1;
        }
        e.truncate(end);
        e.push('…');
    }
    e
}

/// The error of item `i` of a batch whose answers filled the response at item `decided`.
fn batch_full(i: usize, decided: usize) -> String {
    format!(
        "requests[{i}]: not decided: the answers to requests[0..{decided}] fill the {} MiB a response may carry; send it again in another batch",
        crate::limits::MAX_MESSAGE_BYTES >> 20
    )
}

/// Which arm of the holdout experiment answered.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Arm {
    Model,
    Control,
}

/// Decide with the model, or with the holdout's control schedule when the payer is in it.
fn decide_in_arm(
    state: &State,
    loaded: &super::Loaded,
    req: &v1::DecideRequest,
    now: DateTime<Utc>,
) -> Result<(v1::DecideResponse, crate::declines::DeclineClass, Arm), engine::InvalidField> {
    match &state.holdout {
        Some(h) if h.holds(req) => {
            api::decide_control(&loaded.model, &loaded.version, &state.cfg, req, now, h).map(|(d, c)| (d, c, Arm::Control))
        }
        _ => api::decide_classified(&loaded.model, &loaded.version, &state.cfg, req, now).map(|(d, c)| (d, c, Arm::Model)),
    }
}

/// Count a payment's first decision for the live drift, append an answered decision to the
/// decision log, if the server keeps one, and remember a RETRY's p_success for the live
/// calibration. Its time is the request's `now` (the time
/// the decision was made for), else the server's clock.
fn log_decision(
    state: &State,
    source: &str,
    req: &v1::DecideRequest,
    r: &v1::DecideResponse,
    class: crate::declines::DeclineClass,
    arm: Arm,
) {
    state.drift.decided(req, class);
    let Some(log) = &state.log else { return };
    let p = req.payment.as_ref();
    if let (Some(live), Some(at)) = (&state.live, time_of(&r.retry_at)) {
        if r.action() == v1::Action::Retry {
            let pid = p.map_or("", |p| p.payment_id.as_str());
            live.answered(pid, req.attempts.len() as u32, r.p_success, class, at, r.channel().as_str_name());
        }
    }
    let control;
    log.decision(&Decision {
        decided_at: time_of(&req.now).unwrap_or_else(Utc::now),
        source,
        payment_id: p.map_or("", |p| p.payment_id.as_str()),
        customer_id: p.map_or("", |p| p.customer_id.as_str()),
        model_version: &r.model_version,
        arm: match arm {
            Arm::Model => "model",
            Arm::Control => {
                control = state.holdout.as_ref().map_or_else(|| "control".into(), |h| h.arm());
                &control
            }
        },
        action: r.action().as_str_name(),
        next_step: r.next_step().as_str_name(),
        retry_at: time_of(&r.retry_at),
        channel: r.channel().as_str_name(),
        p_success: r.p_success,
        p_recovery: r.p_recovery,
        propensity: r.propensity,
        request: declog::Request::Decide(req),
    });
}

/// One report checked against the contract's rules, naming the field.
fn outcome_of(i: usize, r: &v1::AttemptReport, reported_at: DateTime<Utc>) -> Result<OutcomeRecord, Status> {
    let bad = |field: &str, why: String| Err(CallError::Invalid(format!("reports[{i}].{field}: {why}")).into());
    // Every text bounded before it is read or quoted in an error.
    for (field, v) in [
        ("payment_id", &r.payment_id),
        ("customer_id", &r.customer_id),
        ("attempt_id", &r.attempt_id),
        ("outcome", &r.outcome),
        ("decline_code", &r.decline_code),
        ("network_code", &r.network_code),
        ("advice_code", &r.advice_code),
        ("channel", &r.channel),
    ] {
        if v.len() > crate::limits::MAX_TEXT_BYTES {
            return bad(field, format!("{} bytes; at most {}", v.len(), crate::limits::MAX_TEXT_BYTES));
        }
    }
    if r.payment_id.trim().is_empty() {
        return bad("payment_id", "required".into());
    }
    let at = match &r.attempted_at {
        None => return bad("attempted_at", "required".into()),
        Some(t) => match api::time("attempted_at", t) {
            Ok(at) => at,
            Err(e) => return bad("attempted_at", e.message),
        },
    };
    let outcome = r.outcome.trim().to_ascii_lowercase();
    match outcome.as_str() {
        "succeeded" if !r.decline_code.trim().is_empty() => return bad("decline_code", "must be empty when the attempt succeeded".into()),
        "succeeded" => {}
        "failed" if [&r.decline_code, &r.network_code, &r.advice_code].iter().all(|c| c.trim().is_empty()) => {
            return bad("decline_code", "a failed attempt needs a decline_code, network_code or advice_code".into())
        }
        "failed" => {}
        other => return bad("outcome", format!("{other:?}: expected one of {}", crate::domain::vocabulary::<crate::domain::Outcome>())),
    }
    let channel = r.channel.trim().to_ascii_lowercase();
    if !channel.is_empty() && channel.parse::<crate::domain::Channel>().is_err() {
        return bad("channel", format!("{channel:?}: expected one of {}", crate::domain::vocabulary::<crate::domain::Channel>()));
    }
    Ok(OutcomeRecord {
        reported_at,
        payment_id: r.payment_id.trim().to_string(),
        customer_id: r.customer_id.trim().to_string(),
        attempt_id: r.attempt_id.trim().to_string(),
        attempt_number: r.attempt_number,
        attempted_at: at,
        outcome,
        decline_code: r.decline_code.trim().to_string(),
        network_code: r.network_code.trim().to_string(),
        advice_code: r.advice_code.trim().to_string(),
        channel,
        payment_method_updated: r.payment_method_updated,
    })
}

/// Held admission units, counted in the `recoup_in_flight` gauge while held.
pub(crate) struct InFlight {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl InFlight {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, m: &crate::metrics::Metrics) -> InFlight {
        m.in_flight.inc();
        InFlight { _permit: permit, gauge: m.in_flight.clone() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[tonic::async_trait]
impl v1::retry_decider_server::RetryDecider for Decider {
    async fn decide(&self, request: Request<v1::DecideRequest>) -> Result<Response<v1::DecideResponse>, Status> {
        let req = request.into_inner();
        let units = self.units(work(&req));
        self.admitted(units, move |state| Decider::decide_now(state, &req)).await.map(Response::new)
    }

    async fn decide_batch(&self, request: Request<v1::DecideBatchRequest>) -> Result<Response<v1::DecideBatchResponse>, Status> {
        self.batch(request.into_inner().requests).await.map(Response::new)
    }

    async fn report_attempts(&self, request: Request<v1::ReportAttemptsRequest>) -> Result<Response<v1::ReportAttemptsResponse>, Status> {
        let reports = request.into_inner().reports;
        crate::limits::check_len("reports", reports.len(), crate::limits::MAX_BATCH).map_err(invalid_argument)?;
        let Some(log) = self.state.log.clone() else {
            return Err(CallError::NotConfigured(
                "this server keeps no decision log: start it with --decision-log DIR|URL to accept outcome reports".into(),
            )
            .into());
        };
        let _permit = self.permit(self.units(reports.len()))?;
        let now = Utc::now();
        let rows = reports.iter().enumerate().map(|(i, r)| outcome_of(i, r, now)).collect::<Result<Vec<_>, _>>()?;
        let accepted = rows.len() as u32;
        if rows.is_empty() {
            return Ok(Response::new(v1::ReportAttemptsResponse { accepted }));
        }
        let judged: Vec<(String, u32, DateTime<Utc>, String, bool)> = rows
            .iter()
            .map(|r| (r.payment_id.clone(), r.attempt_number, r.attempted_at, r.channel.clone(), r.outcome == "succeeded"))
            .collect();
        log.outcomes(rows).await.map_err(CallError::Unavailable)?;
        if let Some(live) = &self.state.live {
            for (pid, n, at, channel, ok) in judged {
                live.reported(&pid, n, at, &channel, ok);
            }
        }
        Ok(Response::new(v1::ReportAttemptsResponse { accepted }))
    }

    async fn get_model(&self, _request: Request<v1::GetModelRequest>) -> Result<Response<v1::GetModelResponse>, Status> {
        let l = self.state.current();
        Ok(Response::new(v1::GetModelResponse {
            model_version: l.version.clone(),
            feature_version: l.model.schema.version,
            feature_columns: l.model.schema.columns.clone(),
            metrics_json: l.metrics_json.clone(),
        }))
    }
}

/// hyperswitch's `decider.Decider` (see [`crate::hyperswitch`]), sharing the
/// model, the admission and the metrics with `recoup.v1`.
#[derive(Clone)]
pub struct HyperswitchDecider {
    pub(crate) inner: Decider,
    /// The server's engine settings without exploration.
    pub(crate) cfg: EngineConfig,
    pub(crate) default_country: crate::domain::Country,
}

impl HyperswitchDecider {
    fn decide_now(&self, r: &hyperswitch::decider::DeciderRequest) -> Result<hyperswitch::decider::DeciderResponse, Status> {
        let state = &self.inner.state;
        let loaded = state.current();
        match hyperswitch::decide_in(&loaded.model, &self.cfg, r, chrono::Utc::now(), self.default_country, state.holdout.as_ref()) {
            Ok(a) => {
                if let Some(log) = &state.log {
                    log.decision(&Decision {
                        decided_at: Utc::now(),
                        source: "hyperswitch",
                        payment_id: r.payment_id.as_deref().unwrap_or_default(),
                        customer_id: "",
                        model_version: &loaded.version,
                        arm: &a.arm,
                        action: a.action,
                        next_step: &a.reason,
                        retry_at: a.retry_at,
                        channel: "CHANNEL_NONE",
                        p_success: a.p_success,
                        p_recovery: f64::NAN,
                        propensity: a.propensity,
                        request: declog::Request::Encoded(&[]),
                    });
                }
                state.metrics.decision(a.action, "CHANNEL_NONE");
                tracing::debug!(payment_id = r.payment_id.as_deref().unwrap_or(""), merchant_id = r.merchant_id.as_deref().unwrap_or(""), action = a.action, reason = %a.reason, threshold = ?a.response.decision_threshold, previous_threshold = ?r.previous_threshold, model = %loaded.version, "hyperswitch decision");
                Ok(a.response)
            }
            Err(e) => {
                tracing::info!(error = %e, "invalid hyperswitch request");
                Err(invalid_argument(e))
            }
        }
    }
}

#[tonic::async_trait]
impl hyperswitch::decider::decider_server::Decider for HyperswitchDecider {
    async fn decide(
        &self,
        request: Request<hyperswitch::decider::DeciderRequest>,
    ) -> Result<Response<hyperswitch::decider::DeciderResponse>, Status> {
        let r = request.into_inner();
        // Work: the retries its history expands to (bounded by limits::MAX_ATTEMPTS).
        let retries: usize = r.hourly_retry_history.values().map(|&c| c.clamp(0, crate::limits::MAX_ATTEMPTS as i32) as usize).sum();
        let units = self.inner.units(1 + r.hourly_retry_history.len() + retries);
        let this = self.clone();
        self.inner.admitted(units, move |_| this.decide_now(&r)).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch item's error fits what the response keeps for it, cut at a character boundary;
    /// a short one is left as it is.
    #[test]
    fn a_batch_items_error_is_cut_to_its_reserved_bytes() {
        let short = "requests[3].payment.currency: not an ISO 4217 code".to_string();
        assert_eq!(error_within(short.clone()), short);
        let long = format!("requests[9999].payment.payment_id: {}", "é".repeat(300));
        let cut = error_within(long.clone());
        assert!(cut.len() <= BATCH_ERROR_BYTES - 8 && cut.ends_with('…') && long.starts_with(cut.trim_end_matches('…')), "{cut}");
        let item = v1::DecideBatchItem { result: Some(v1::decide_batch_item::Result::Error(cut)) };
        assert!(item_bytes(&item) <= BATCH_ERROR_BYTES);
        let full = v1::DecideBatchItem { result: Some(v1::decide_batch_item::Result::Error(batch_full(9999, 9998))) };
        assert!(item_bytes(&full) <= BATCH_ERROR_BYTES, "{}", item_bytes(&full));
    }

    /// An answer's size reckoned without building its item is the built item's.
    #[test]
    fn a_decisions_reckoned_size_is_its_items() {
        let d = v1::DecideResponse { reasons: vec![v1::Reason { code: "x".into(), detail: "y".repeat(300) }], ..Default::default() };
        let item = v1::DecideBatchItem { result: Some(v1::decide_batch_item::Result::Decision(d.clone())) };
        assert_eq!(decision_item_bytes(&d), item_bytes(&item));
        let response = v1::DecideBatchResponse { items: vec![item.clone(), item] };
        assert_eq!(prost::Message::encoded_len(&response), 2 * decision_item_bytes(&d));
    }
}
