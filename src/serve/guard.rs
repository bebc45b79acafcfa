//! The one layer every gRPC call passes through (edge), around tonic's routes:
//!
//! 1. **Access**: the method's scope is checked ([`super::auth`]) before any
//!    byte of the body is decoded.
//! 2. **Deadline**: the earlier of the client's `grpc-timeout` and the server's
//!    `--timeout`; past it the call answers `DEADLINE_EXCEEDED` and its handler
//!    is dropped, which cancels the work it started ([`Deadline`] is put in the
//!    request's extensions for handlers that check it between items).
//! 3. **Panics**: a panic anywhere in a handler answers `INTERNAL` for that call
//!    only, and is counted; the connection and other calls go on.
//! 4. **Status codes** as Google's API design guide uses them: tonic answers a
//!    body that is not valid protobuf with `INTERNAL` and an oversized message
//!    with `OUT_OF_RANGE`; the caller sent them, so they become
//!    `INVALID_ARGUMENT` and `RESOURCE_EXHAUSTED`; a request the client
//!    abandoned mid-body (`UNKNOWN` from the HTTP/2 layer) is `CANCELLED`.
//! 5. **Metrics**: every call is counted here with its final status, including
//!    those refused, shed, timed out, undecodable or panicked.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tonic::body::Body;
use tonic::{Code, Status};

use crate::api::CallError;

use super::auth::{Access, Refusal};
use crate::metrics::Metrics;

/// When a call must have answered.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// Settings of the guard.
pub struct GuardConfig {
    pub access: Access,
    pub metrics: Arc<Metrics>,
    /// The server's cap on any call.
    pub timeout: Duration,
}

/// The guard around an inner service (tonic's routes).
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    cfg: Arc<GuardConfig>,
}

impl<S> Guard<S> {
    pub fn new(inner: S, cfg: Arc<GuardConfig>) -> Guard<S> {
        Guard { inner, cfg }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Guard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let cfg = self.cfg.clone();
        let rpc = rpc_label(req.uri().path());
        // A refcounted copy (no allocation): the path names an unknown method in its error.
        let uri = req.uri().clone();
        let who = cfg.access.check(req.uri().path(), req.headers());
        if let Err(refusal) = who.clone() {
            let status = match refusal {
                Refusal::Unauthenticated(m) => CallError::Unauthenticated(m),
                Refusal::PermissionDenied(m) => CallError::PermissionDenied(m),
            };
            let status = Status::from(status);
            tracing::info!(rpc, code = ?status.code(), message = status.message(), "call refused");
            cfg.metrics.call(rpc, status.code(), started.elapsed());
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        // Handlers that keep per-caller state (training jobs) know who asks.
        if let Ok(name) = &who {
            req.extensions_mut().insert(crate::hyperswitch::Caller(name.clone()));
        }
        let budget = client_timeout(req.headers()).map_or(cfg.timeout, |t| t.min(cfg.timeout));
        let deadline = started + budget;
        req.extensions_mut().insert(Deadline(deadline));
        // The ready service answers this call; a fresh clone waits for the next
        // (tower's usual pattern for services that are always ready).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let call = AssertUnwindSafe(inner.call(req)).catch_unwind();
            let resp = match tokio::time::timeout_at(deadline.into(), call).await {
                Err(_) => Status::from(CallError::DeadlineExceeded(format!(
                    "no answer within {:.3} s (the earlier of the client's deadline and the server's --timeout)",
                    budget.as_secs_f64()
                )))
                .into_http(),
                Ok(Err(panic)) => {
                    cfg.metrics.panic(rpc);
                    tracing::error!(rpc, panic = panic_message(&*panic), "handler panicked; answered INTERNAL");
                    Status::from(CallError::Internal("internal error while answering this call (logged on the server)".into())).into_http()
                }
                Ok(Ok(Ok(resp))) => remap(resp, uri.path()),
                Ok(Ok(Err(never))) => match never {},
            };
            cfg.metrics.call(rpc, status_of(&resp), started.elapsed());
            Ok(resp)
        })
    }
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>().copied().or_else(|| p.downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)")
}

/// A bounded label for the metrics: known methods by name, anything else `other`.
fn rpc_label(path: &str) -> &'static str {
    match path {
        "/recoup.v1.RetryDecider/Decide" => "Decide",
        "/recoup.v1.RetryDecider/DecideBatch" => "DecideBatch",
        "/recoup.v1.RetryDecider/GetModel" => "GetModel",
        "/decider.Decider/Decide" => "decider.Decide",
        "/trainer.TrainerService/TriggerTraining" => "trainer.TriggerTraining",
        "/trainer.TrainerService/GetTrainingJobStatus" => "trainer.GetTrainingJobStatus",
        "/grpc.health.v1.Health/Check" => "health.Check",
        "/grpc.health.v1.Health/Watch" => "health.Watch",
        "/recoup.bench.v1.Echo/Echo" => "Echo",
        p if p.contains(".ServerReflection/") => "reflection",
        _ => "other",
    }
}

/// The `grpc-timeout` header ("1S", "250m", "10000u"…), as gRPC over HTTP/2 defines it.
pub fn client_timeout(h: &http::HeaderMap) -> Option<Duration> {
    let v = h.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The status of a trailers-only answer (every error tonic gives to a unary call); OK otherwise.
fn status_of(resp: &http::Response<Body>) -> Code {
    resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()).map_or(Code::Ok, Code::from_i32)
}

/// Errors tonic raises before a handler runs, blamed on the server although the caller caused them.
fn remap(resp: http::Response<Body>, path: &str) -> http::Response<Body> {
    let code = status_of(&resp);
    if !matches!(code, Code::Internal | Code::OutOfRange | Code::Unknown | Code::Unimplemented) {
        return resp;
    }
    let Some(status) = Status::from_header_map(resp.headers()) else { return resp };
    let m = status.message();
    let fixed = if code == Code::Unimplemented && m.is_empty() {
        CallError::NoSuchMethod(format!("no such method: {}", path.chars().take(200).collect::<String>()))
    } else if code == Code::Internal && path == "/trainer.TrainerService/TriggerTraining" && m.contains("merchant_id") {
        // hyperswitch's trainer contract exists in two variants; recoup serves the one it ships.
        CallError::Invalid(format!(
            "this looks like the trainer contract variant with `bool enable_incremental_learning = 2`; recoup serves \
             `string merchant_id = 2` (proto/hyperswitch/trainer.proto) and always trains afresh: {m}"
        ))
    } else if code == Code::Internal
        && (m.starts_with("failed to decode Protobuf message") || m.starts_with("protocol error: received message with"))
    {
        CallError::Invalid(format!("the request is not a valid message: {m}"))
    } else if code == Code::OutOfRange && m.contains("message length too large") {
        CallError::TooLarge(format!("{m} (every service takes at most {} bytes)", crate::limits::MAX_MESSAGE_BYTES))
    } else if code == Code::Unknown && (m.starts_with("h2 protocol error") || m.contains("error reading a body")) {
        // The client reset the stream or closed the connection while sending the request.
        CallError::Cancelled(format!("the client went away while sending the request: {m}"))
    } else {
        return resp;
    };
    Status::from(fixed).into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inner service that panics while answering.
    #[derive(Clone)]
    struct Boom;

    impl tower::Service<http::Request<()>> for Boom {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            Box::pin(async { panic!("boom") })
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_for_its_call_and_is_counted() {
        use tower::Service;
        let metrics = Arc::new(Metrics::new());
        let access = Access::new(None, &[super::super::auth::Scope::Decide]).unwrap();
        let mut guard = Guard::new(Boom, Arc::new(GuardConfig { access, metrics: metrics.clone(), timeout: Duration::from_secs(5) }));
        for _ in 0..2 {
            let req = http::Request::post("/recoup.v1.RetryDecider/Decide").body(()).unwrap();
            let resp = guard.call(req).await.unwrap();
            assert_eq!(status_of(&resp), Code::Internal);
        }
        let text = metrics.render();
        assert!(text.contains(r#"recoup_panics_total{rpc="Decide"} 2"#), "{text}");
        assert!(text.contains(r#"recoup_requests_total{code="INTERNAL",rpc="Decide"} 2"#), "{text}");
    }

    #[test]
    fn grpc_timeout_units() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            client_timeout(&m)
        };
        assert_eq!(h("1S"), Some(Duration::from_secs(1)));
        assert_eq!(h("250m"), Some(Duration::from_millis(250)));
        assert_eq!(h("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(h("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(h("S"), None);
        assert_eq!(h("1000000000S"), None, "at most 8 digits");
        assert_eq!(h("-1S"), None);
    }

    #[test]
    fn the_other_trainer_variant_is_refused_naming_it() {
        // The variant's bytes: model_version_tag = "v1", enable_incremental_learning = true.
        let bytes = [0x0a, 0x02, b'v', b'1', 0x10, 0x01];
        let err = <crate::hyperswitch::trainer::TriggerTrainingRequest as prost::Message>::decode(&bytes[..]).expect_err("not our variant");
        let m = format!("failed to decode Protobuf message: {err}");
        let r = remap(Status::internal(m).into_http(), "/trainer.TrainerService/TriggerTraining");
        let s = Status::from_header_map(r.headers()).expect("a status");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("enable_incremental_learning"), "{}", s.message());
    }

    #[test]
    fn decode_errors_become_invalid_argument_and_oversized_resource_exhausted() {
        let r = remap(Status::internal("failed to decode Protobuf message: invalid wire type").into_http(), "/x/Y");
        assert_eq!(status_of(&r), Code::InvalidArgument);
        let r = remap(
            Status::out_of_range("Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes").into_http(),
            "/x/Y",
        );
        assert_eq!(status_of(&r), Code::ResourceExhausted);
        let r = remap(Status::unknown("h2 protocol error: error reading a body from connection").into_http(), "/x/Y");
        assert_eq!(status_of(&r), Code::Cancelled);
        let r = remap(Status::unimplemented("").into_http(), "/recoup.v1.RetryDecider/Nope");
        assert!(Status::from_header_map(r.headers()).is_some_and(|s| s.message().contains("/recoup.v1.RetryDecider/Nope")));
        let r = remap(Status::internal("something else").into_http(), "/x/Y");
        assert_eq!(status_of(&r), Code::Internal, "a real internal error stays one");
    }
}
