//! `recoup serve`: the `recoup.v1.RetryDecider` gRPC service (tonic), with
//! `grpc.health.v1` health checks and server reflection.
//!
//! - Requests are validated by [`crate::api::to_engine`]; a bad field answers
//!   `INVALID_ARGUMENT` naming it. Handlers never panic on input.
//! - Scoring runs on the blocking pool, off the async workers; at most
//!   `max_in_flight` decisions run at once and the rest are shed at once with
//!   `RESOURCE_EXHAUSTED`, never queued without bound.
//! - Clients' `grpc-timeout` deadlines are honoured by tonic; a server-wide cap
//!   applies too.
//! - Hot reload: the registry's `CURRENT` pointer is watched; a promoted model
//!   is loaded, checked and swapped in atomically (calls in flight finish on the
//!   model they started with). A model that fails to load is refused, logged,
//!   and the old one keeps serving.
//! - SIGTERM / Ctrl-C stop accepting calls and let the ones in flight finish.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::api::{self, v1};
use crate::engine::{self, EngineConfig};
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
    /// Decisions made, shed, rejected as invalid (for logs and tests).
    pub decided: AtomicU64,
    pub shed: AtomicU64,
    pub invalid: AtomicU64,
}

impl State {
    pub fn new(loaded: Loaded, cfg: EngineConfig, max_in_flight: usize) -> Arc<State> {
        Arc::new(State {
            model: RwLock::new(Arc::new(loaded)),
            cfg,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            decided: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
        })
    }

    /// The model serving now.
    pub fn current(&self) -> Arc<Loaded> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swap in a new model atomically.
    pub fn swap(&self, loaded: Loaded) {
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
    /// Decide one request on the blocking pool (already holding a permit).
    async fn decide_one(&self, req: v1::DecideRequest) -> Result<v1::DecideResponse, Status> {
        let state = self.state.clone();
        let out = tokio::task::spawn_blocking(move || {
            let loaded = state.current();
            api::decide(&loaded.model, &loaded.version, &state.cfg, &req, chrono::Utc::now()).map_err(invalid_argument)
        })
        .await
        .map_err(|e| Status::internal(format!("decision task failed: {e}")))?;
        match &out {
            Ok(r) => {
                self.state.decided.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(action = r.action, channel = r.channel, p = r.p_success, model = %r.model_version, "decided");
            }
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                self.state.invalid.fetch_add(1, Ordering::Relaxed);
                tracing::info!(error = %s.message(), "invalid request");
            }
            Err(s) => tracing::error!(error = %s.message(), "decision failed"),
        }
        out
    }

    fn permit(&self, n: u32) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.state.permits.clone().try_acquire_many_owned(n).map_err(|_| {
            self.state.shed.fetch_add(1, Ordering::Relaxed);
            Status::resource_exhausted("too many decisions in flight; retry with backoff")
        })
    }
}

/// Largest `DecideBatch`.
pub const MAX_BATCH: usize = 10_000;

#[tonic::async_trait]
impl v1::retry_decider_server::RetryDecider for Decider {
    async fn decide(&self, request: Request<v1::DecideRequest>) -> Result<Response<v1::DecideResponse>, Status> {
        let _permit = self.permit(1)?;
        self.decide_one(request.into_inner()).await.map(Response::new)
    }

    async fn decide_batch(&self, request: Request<v1::DecideBatchRequest>) -> Result<Response<v1::DecideBatchResponse>, Status> {
        let reqs = request.into_inner().requests;
        if reqs.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!("requests: {} items, at most {MAX_BATCH} per batch", reqs.len())));
        }
        // A batch holds one permit: it runs on one blocking thread, in order.
        let _permit = self.permit(1)?;
        let state = self.state.clone();
        let items = tokio::task::spawn_blocking(move || {
            let loaded = state.current();
            let now = chrono::Utc::now();
            reqs.iter()
                .enumerate()
                .map(|(i, r)| {
                    v1::DecideBatchItem {
                        result: Some(match api::decide(&loaded.model, &loaded.version, &state.cfg, r, now) {
                            Ok(d) => v1::decide_batch_item::Result::Decision(d),
                            Err(e) => v1::decide_batch_item::Result::Error(format!("requests[{i}].{e}")),
                        }),
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Status::internal(format!("batch task failed: {e}")))?;
        Ok(Response::new(v1::DecideBatchResponse { items }))
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

/// Settings of `recoup serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub models: PathBuf,
    pub max_in_flight: usize,
    pub reload_every: Duration,
    pub request_timeout: Duration,
}

/// Watch `CURRENT` and swap in promoted models.
async fn watch(state: Arc<State>, dir: PathBuf, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
        if current == serving {
            continue;
        }
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || load_current(&d)).await {
            Ok(Ok(l)) if l.version == current => {
                tracing::info!(from = %serving, to = %l.version, "model reloaded");
                state.swap(l);
            }
            Ok(Ok(l)) => tracing::info!(version = %l.version, "CURRENT moved again while loading; will retry"),
            Ok(Err(e)) => tracing::error!(version = %current, error = %format!("{e:#}"), "promoted model refused; still serving {serving}"),
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

/// Serve until `shutdown` resolves, on an already bound listener (tests bind port 0).
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: ServeConfig,
    state: Arc<State>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<v1::retry_decider_server::RetryDeciderServer<Decider>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(api::DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let watcher = tokio::spawn(watch(state.clone(), cfg.models.clone(), cfg.reload_every));
    let decider = v1::retry_decider_server::RetryDeciderServer::new(Decider { state: state.clone() })
        .max_decoding_message_size(64 << 20);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .timeout(cfg.request_timeout)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(decider)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            tracing::info!("shutting down: finishing calls in flight");
            health.set_not_serving::<v1::retry_decider_server::RetryDeciderServer<Decider>>().await;
        })
        .await;
    watcher.abort();
    result?;
    Ok(())
}
