//! `recoup serve`: the `recoup.v1.RetryDecider` gRPC service (tonic), with
//! `grpc.health.v1` health checks and server reflection.
//!
//! - Requests are validated by [`crate::api::to_engine`]; a bad field answers
//!   `INVALID_ARGUMENT` naming it. Handlers never panic on input.
//! - A `Decide` is scored on the async worker that received it (about 50 µs);
//!   `DecideBatch` runs on the blocking pool. At most `max_in_flight` calls are
//!   accepted at once and the rest are shed at once with `RESOURCE_EXHAUSTED`,
//!   never queued without bound.
//! - Metrics (request counts by method and status, a latency histogram,
//!   decisions by action and channel, in-flight calls, the serving model,
//!   reloads) in Prometheus text format on a separate HTTP port ([`crate::metrics`]).
//! - Clients' `grpc-timeout` deadlines are honoured by tonic; a server-wide cap
//!   applies too.
//! - Hot reload: the registry's `CURRENT` pointer is watched; a promoted model
//!   is loaded, checked and swapped in atomically (calls in flight finish on the
//!   model they started with). A model that fails to load is refused, logged,
//!   and the old one keeps serving.
//! - SIGTERM / Ctrl-C stop accepting calls and let the ones in flight finish.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::api::{self, v1};
use crate::hyperswitch;
use crate::engine::{self, EngineConfig};
use crate::metrics::Metrics;
use crate::model::SuccessModel;
use crate::registry;

/// The model being served.
pub struct Loaded {
    pub version: String,
    pub model: SuccessModel,
    pub metrics_json: String,
}

/// Load a registry's current model, with its metrics.
pub fn load_current(dir: &std::path::Path) -> anyhow::Result<Loaded> {
    let (version, model) = registry::load_current(dir)?;
    let metrics_json = std::fs::read_to_string(dir.join(&version).join("metrics.json")).unwrap_or_default();
    Ok(Loaded { version, model, metrics_json })
}

/// Shared state of the service.
pub struct State {
    model: RwLock<Arc<Loaded>>,
    cfg: EngineConfig,
    permits: Arc<Semaphore>,
    /// Request counts, latencies, decisions by action and channel, reloads.
    pub metrics: Arc<Metrics>,
}

impl State {
    pub fn new(loaded: Loaded, cfg: EngineConfig, max_in_flight: usize) -> Arc<State> {
        let metrics = Arc::new(Metrics::new());
        metrics.serving(&loaded.version);
        Arc::new(State { model: RwLock::new(Arc::new(loaded)), cfg, permits: Arc::new(Semaphore::new(max_in_flight.max(1))), metrics })
    }

    /// The model serving now.
    pub fn current(&self) -> Arc<Loaded> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swap in a new model atomically.
    pub fn swap(&self, loaded: Loaded) {
        self.metrics.serving(&loaded.version);
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
    }
}

/// The gRPC service.
#[derive(Clone)]
pub struct Decider {
    pub state: Arc<State>,
}

fn invalid_argument(e: engine::InvalidField) -> Status {
    Status::invalid_argument(e.to_string())
}

impl Decider {
    /// Decide one request (already holding a permit). A decision takes well under
    /// a millisecond (about 50 µs for a 14-day grid), so it runs on the async
    /// worker: a hop to the blocking pool would cost more than it saves.
    async fn decide_one(&self, req: v1::DecideRequest) -> Result<v1::DecideResponse, Status> {
        // Let the other calls that arrived with this one be accepted first, so the
        // in-flight count (and load shedding) sees them.
        tokio::task::yield_now().await;
        let loaded = self.state.current();
        let out = api::decide(&loaded.model, &loaded.version, &self.state.cfg, &req, chrono::Utc::now()).map_err(invalid_argument);
        match &out {
            Ok(r) => {
                self.record(r);
                tracing::debug!(payment_id = %req.payment.as_ref().map_or("", |p| p.payment_id.as_str()), action = r.action().as_str_name(), channel = r.channel().as_str_name(), p = r.p_success, model = %r.model_version, "decided");
            }
            Err(s) => tracing::info!(error = %s.message(), "invalid request"),
        }
        out
    }

    fn record(&self, r: &v1::DecideResponse) {
        self.state.metrics.decision(r.action().as_str_name(), r.channel().as_str_name());
    }

    pub(crate) fn permit(&self, n: u32) -> Result<InFlight, Status> {
        match self.state.permits.clone().try_acquire_many_owned(n) {
            Ok(p) => Ok(InFlight::new(p, &self.state.metrics)),
            Err(_) => Err(Status::resource_exhausted("too many decisions in flight; retry with backoff")),
        }
    }

    /// Count `rpc`'s answer and latency.
    pub(crate) fn answered<T>(&self, rpc: &str, started: Instant, out: &Result<T, Status>) {
        let code = out.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        self.state.metrics.call(rpc, code, started.elapsed());
    }
}

/// A held concurrency permit, counted in the `recoup_in_flight` gauge while held.
pub(crate) struct InFlight {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl InFlight {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, m: &Metrics) -> InFlight {
        m.in_flight.inc();
        InFlight { _permit: permit, gauge: m.in_flight.clone() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Largest `DecideBatch`.
pub const MAX_BATCH: usize = 10_000;

#[tonic::async_trait]
impl v1::retry_decider_server::RetryDecider for Decider {
    async fn decide(&self, request: Request<v1::DecideRequest>) -> Result<Response<v1::DecideResponse>, Status> {
        let started = Instant::now();
        let out = match self.permit(1) {
            Ok(_permit) => self.decide_one(request.into_inner()).await,
            Err(s) => Err(s),
        };
        self.answered("Decide", started, &out);
        out.map(Response::new)
    }

    async fn decide_batch(&self, request: Request<v1::DecideBatchRequest>) -> Result<Response<v1::DecideBatchResponse>, Status> {
        let started = Instant::now();
        let out = self.batch(request.into_inner().requests).await;
        self.answered("DecideBatch", started, &out);
        out.map(Response::new)
    }

    async fn get_model(&self, _request: Request<v1::GetModelRequest>) -> Result<Response<v1::GetModelResponse>, Status> {
        let started = Instant::now();
        let l = self.state.current();
        let out = Ok(v1::GetModelResponse {
            model_version: l.version.clone(),
            feature_version: l.model.schema.version,
            feature_columns: l.model.schema.columns.clone(),
            metrics_json: l.metrics_json.clone(),
        });
        self.answered("GetModel", started, &out);
        out.map(Response::new)
    }
}

impl Decider {
    /// A batch runs on the blocking pool (it can take seconds), in order, holding one permit.
    async fn batch(&self, reqs: Vec<v1::DecideRequest>) -> Result<v1::DecideBatchResponse, Status> {
        if reqs.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!("requests: {} items, at most {MAX_BATCH} per batch", reqs.len())));
        }
        let _permit = self.permit(1)?;
        let state = self.state.clone();
        let items = tokio::task::spawn_blocking(move || {
            let loaded = state.current();
            let now = chrono::Utc::now();
            reqs.iter()
                .enumerate()
                .map(|(i, r)| {
                    let result = match api::decide(&loaded.model, &loaded.version, &state.cfg, r, now) {
                        Ok(d) => {
                            state.metrics.decision(d.action().as_str_name(), d.channel().as_str_name());
                            v1::decide_batch_item::Result::Decision(d)
                        }
                        Err(e) => v1::decide_batch_item::Result::Error(format!("requests[{i}].{e}")),
                    };
                    v1::DecideBatchItem { result: Some(result) }
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Status::internal(format!("batch task failed: {e}")))?;
        Ok(v1::DecideBatchResponse { items })
    }
}

/// hyperswitch's `decider.Decider` (see [`crate::hyperswitch`]), sharing the
/// model, the concurrency limit and the metrics with `recoup.v1`.
#[derive(Clone)]
pub struct HyperswitchDecider {
    inner: Decider,
    /// The server's engine settings without exploration.
    cfg: EngineConfig,
    default_country: crate::domain::Country,
}

#[tonic::async_trait]
impl hyperswitch::decider::decider_server::Decider for HyperswitchDecider {
    async fn decide(&self, request: Request<hyperswitch::decider::DeciderRequest>) -> Result<Response<hyperswitch::decider::DeciderResponse>, Status> {
        let started = Instant::now();
        let out = match self.inner.permit(1) {
            Ok(_permit) => {
                tokio::task::yield_now().await;
                let r = request.into_inner();
                let loaded = self.inner.state.current();
                match hyperswitch::decide(&loaded.model, &self.cfg, &r, chrono::Utc::now(), self.default_country) {
                    Ok(a) => {
                        self.inner.state.metrics.decision(a.action, "CHANNEL_NONE");
                        tracing::debug!(payment_id = r.payment_id.as_deref().unwrap_or(""), merchant_id = r.merchant_id.as_deref().unwrap_or(""), action = a.action, reason = %a.reason, threshold = ?a.response.decision_threshold, previous_threshold = ?r.previous_threshold, model = %loaded.version, "hyperswitch decision");
                        Ok(a.response)
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "invalid hyperswitch request");
                        Err(invalid_argument(e))
                    }
                }
            }
            Err(s) => Err(s),
        };
        self.inner.answered("decider.Decide", started, &out);
        out.map(Response::new)
    }
}

/// Settings of `recoup serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub models: PathBuf,
    pub max_in_flight: usize,
    pub reload_every: Duration,
    pub request_timeout: Duration,
    /// Also serve `recoup.bench.v1.Echo` (the load benchmark's ceiling).
    pub echo_service: bool,
    /// The payer country assumed when hyperswitch sends no `billing_country`.
    pub hyperswitch_country: crate::domain::Country,
    /// Serve hyperswitch's `trainer.TrainerService` with these settings.
    pub trainer: Option<hyperswitch::TrainerConfig>,
}

/// Watch `CURRENT` and swap in promoted models.
async fn watch(state: Arc<State>, dir: PathBuf, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A refused version is not retried (nor logged again) until CURRENT moves.
    let mut refused: Option<String> = None;
    loop {
        tick.tick().await;
        let serving = state.current().version.clone();
        let current = match registry::current(&dir) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the CURRENT pointer; keeping {serving}");
                continue;
            }
        };
        if current == serving || refused.as_ref() == Some(&current) {
            continue;
        }
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || load_current(&d)).await {
            Ok(Ok(l)) if l.version == current => {
                tracing::info!(from = %serving, to = %l.version, "model reloaded");
                state.swap(l);
                state.metrics.reload("ok");
            }
            Ok(Ok(l)) => tracing::info!(version = %l.version, "CURRENT moved again while loading; will retry"),
            Ok(Err(e)) => {
                tracing::error!(version = %current, error = %format!("{e:#}"), "promoted model refused; still serving {serving}");
                state.metrics.reload("refused");
                refused = Some(current);
            }
            Err(e) => tracing::error!(error = %e, "model load task failed; still serving {serving}"),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Serve until `shutdown` resolves, on already bound listeners (tests bind port 0):
/// gRPC on `listener`, Prometheus metrics on `metrics` if given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Option<tokio::net::TcpListener>,
    cfg: ServeConfig,
    state: Arc<State>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = metrics.map(|l| {
        tokio::spawn(crate::metrics::serve(l, state.metrics.clone(), async move {
            let _ = metrics_stopped.await;
        }))
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<v1::retry_decider_server::RetryDeciderServer<Decider>>().await;
    health.set_serving::<hyperswitch::decider::decider_server::DeciderServer<HyperswitchDecider>>().await;
    // Reflection v1 and v1alpha: grpcurl before 1.9 and many other tools speak only v1alpha.
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(api::DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(hyperswitch::decider::DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        if cfg.trainer.is_some() {
            b = b.register_encoded_file_descriptor_set(hyperswitch::trainer::DESCRIPTOR_SET);
        }
        if cfg.echo_service {
            b = b.register_encoded_file_descriptor_set(api::bench::DESCRIPTOR_SET);
        }
        b
    };
    let (reflection, reflection_alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);
    let watcher = tokio::spawn(watch(state.clone(), cfg.models.clone(), cfg.reload_every));
    let decider = v1::retry_decider_server::RetryDeciderServer::new(Decider { state: state.clone() })
        .max_decoding_message_size(64 << 20);
    // No Nagle: a unary answer is one small write that must not wait for an ACK
    // (with Nagle on, loopback calls stall ~40 ms on delayed ACKs).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let result = tonic::transport::Server::builder()
        .timeout(cfg.request_timeout)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(decider)
        .add_service(hyperswitch::decider::decider_server::DeciderServer::new(HyperswitchDecider {
            inner: Decider { state: state.clone() },
            cfg: hyperswitch::engine_config(&state.cfg),
            default_country: cfg.hyperswitch_country,
        }))
        .add_optional_service(cfg.trainer.clone().map(|t| hyperswitch::trainer::trainer_service_server::TrainerServiceServer::new(hyperswitch::Trainer::new(t))))
        .add_optional_service(cfg.echo_service.then(|| api::bench::echo_server::EchoServer::new(api::bench::EchoService)))
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            tracing::info!("shutting down: finishing calls in flight");
            health.set_not_serving::<v1::retry_decider_server::RetryDeciderServer<Decider>>().await;
        })
        .await;
    watcher.abort();
    let _ = metrics_stop.send(());
    if let Some(t) = metrics_task {
        match t.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics endpoint failed"),
            Err(e) => tracing::warn!(error = %e, "metrics endpoint task failed"),
            Ok(Ok(())) => {}
        }
    }
    result?;
    Ok(())
}
