//! The service's Prometheus metrics and their HTTP endpoint (`GET /metrics`,
//! text exposition format 0.0.4).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `recoup_requests_total` | `rpc`, `code` | calls answered, by gRPC status code name |
//! | `recoup_request_duration_seconds` | `rpc` | handler latency histogram (decode to answer) |
//! | `recoup_decisions_total` | `action`, `channel` | decisions made, by action and message channel |
//! | `recoup_in_flight` | | decisions running or waiting for a worker now |
//! | `recoup_model_info` | `version` | 1 for the model serving now |
//! | `recoup_model_reloads_total` | `result` | hot reloads: `ok` or `refused` |
//! | `recoup_live_population_total` | `feature`, `level` | payments decided, at their first decision ([`crate::serve::drift`]) |
//! | `recoup_drift_psi` | `feature` | their PSI against the serving model's training population, at scrape time |
//!
//! Each server has its own registry (tests run several servers in one process).
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::time::Duration;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// Latency buckets, seconds: decisions take tens of microseconds, batches seconds.
const BUCKETS: [f64; 16] = [0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// The metrics of one server.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    decisions: IntCounterVec,
    pub in_flight: IntGauge,
    panics: IntCounterVec,
    shed: prometheus::IntCounter,
    model: IntGaugeVec,
    reloads: IntCounterVec,
    /// Run before every render (gauges computed at scrape time).
    hooks: std::sync::Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests =
            IntCounterVec::new(Opts::new("recoup_requests_total", "gRPC calls answered, by method and status code"), &["rpc", "code"])
                .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("recoup_request_duration_seconds", "Handler latency of gRPC calls").buckets(BUCKETS.to_vec()),
            &["rpc"],
        )
        .expect("valid metric");
        let decisions = IntCounterVec::new(
            Opts::new("recoup_decisions_total", "Decisions made, by action and message channel"),
            &["action", "channel"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("recoup_in_flight", "Decisions running or waiting for a worker").expect("valid metric");
        let model = IntGaugeVec::new(Opts::new("recoup_model_info", "The model version serving now (value 1)"), &["version"])
            .expect("valid metric");
        let reloads =
            IntCounterVec::new(Opts::new("recoup_model_reloads_total", "Hot model reloads, by result (ok, refused)"), &["result"])
                .expect("valid metric");
        let panics = IntCounterVec::new(
            Opts::new("recoup_panics_total", "Panics caught and answered INTERNAL for their call alone, by where"),
            &["rpc"],
        )
        .expect("valid metric");
        let shed =
            prometheus::IntCounter::new("recoup_shed_total", "Calls refused at admission (RESOURCE_EXHAUSTED) because the server was full")
                .expect("valid metric");
        registry.register(Box::new(shed.clone())).expect("unique metric");
        for c in [&requests, &decisions, &reloads, &panics] {
            registry.register(Box::new(c.clone())).expect("unique metric");
        }
        registry.register(Box::new(latency.clone())).expect("unique metric");
        registry.register(Box::new(in_flight.clone())).expect("unique metric");
        registry.register(Box::new(model.clone())).expect("unique metric");
        Metrics { registry, requests, latency, decisions, in_flight, panics, shed, model, reloads, hooks: Default::default() }
    }

    /// One call of `rpc` answered with `code` after `elapsed`.
    pub fn call(&self, rpc: &str, code: tonic::Code, elapsed: Duration) {
        self.requests.with_label_values(&[rpc, code_name(code)]).inc();
        self.latency.with_label_values(&[rpc]).observe(elapsed.as_secs_f64());
    }

    /// One decision, by its proto action and channel names (`RETRY`, `CHANNEL_EMAIL`…).
    /// A panic caught at `rpc` (a method, or where in a batch).
    pub fn panic(&self, rpc: &str) {
        self.panics.with_label_values(&[rpc]).inc();
    }

    /// A call shed at admission.
    pub fn shed(&self) {
        self.shed.inc();
    }

    pub fn decision(&self, action: &str, channel: &str) {
        self.decisions.with_label_values(&[action, channel]).inc();
    }

    /// `version` serves now (and no other).
    pub fn serving(&self, version: &str) {
        self.model.reset();
        self.model.with_label_values(&[version]).set(1);
    }

    /// A hot reload `ok` or `refused`.
    pub fn reload(&self, result: &str) {
        self.reloads.with_label_values(&[result]).inc();
    }

    /// The registry, for parts of the server that keep their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Count the decision log's writes and drops here too.
    pub fn register_log(&self, c: &crate::decision_log::LogCounters) {
        for m in [&c.decisions_written, &c.decisions_dropped, &c.outcomes_written, &c.write_errors] {
            // A second registration of the same counters (a test restarting) is harmless.
            let _ = self.registry.register(Box::new(m.clone()));
        }
    }

    /// Run `f` before every render (to set gauges computed at scrape time).
    pub fn before_render(&self, f: impl Fn() + Send + Sync + 'static) {
        self.hooks.lock().unwrap_or_else(|e| e.into_inner()).push(Box::new(f));
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        for f in self.hooks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            f();
        }
        let mut out = Vec::new();
        // Encoding in-memory metric families into a Vec cannot fail.
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Status code names as gRPC spells them (`OK`, `INVALID_ARGUMENT`…).
fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serve `GET /metrics`, and the routes of `more` (the live page), on `listener` until
/// `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    more: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move { ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], m.render()) }
            }),
        )
        .merge(more);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
