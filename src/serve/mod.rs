//! `recoup serve` (edge): the `recoup.v1.RetryDecider` gRPC service and
//! hyperswitch's `decider.Decider` / `trainer.TrainerService`, with
//! `grpc.health.v1` health checks and, when asked for, server reflection.
//!
//! How a call travels, one file each:
//! - [`conn`]: the connection loop: TLS / mutual TLS, handshake and keep-alive
//!   deadlines, a connection cap, shutdown with a deadline;
//! - [`guard`]: the one layer every call passes: access ([`auth`]: tokens and
//!   scopes), the call's deadline (`DEADLINE_EXCEEDED`), panics (`INTERNAL` for
//!   that call only), status codes, and the metrics of every call;
//! - [`handlers`]: admission by cost, decisions off the async workers when
//!   large, validation by [`crate::api::to_engine`] (`INVALID_ARGUMENT` naming
//!   the field; every bound in [`crate::limits`]), the decision log and
//!   outcome reports ([`crate::decision_log`]);
//! - [`live`]: predicted against reported success of the retries decided, in Prometheus counters;
//! - [`drift`]: the payments decided against the serving model's training population (PSI per key feature);
//! - [`page`]: the live page on the metrics port (`GET /`): the model, the live calibration
//!   plot, population drift, decisions by action and channel, and the holdout arms.
//!
//! Hot reload: the registry's `CURRENT` pointer is watched; a promoted model is
//! loaded, checked and swapped in atomically (calls in flight finish on the
//! model they started with). A model that fails to load is refused, logged,
//! and the old one keeps serving. SIGTERM / Ctrl-C turn health to NOT_SERVING,
//! stop accepting, let calls in flight finish within the grace period, then
//! close what is left.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

pub mod auth;
pub mod conn;
pub mod drift;
pub mod guard;
pub mod handlers;
pub mod live;
pub mod page;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::api::{self, v1};
use crate::engine::EngineConfig;
use crate::hyperswitch;
use crate::metrics::Metrics;
use crate::model::SuccessModel;
use crate::model_store::ModelStore;
use crate::registry;

/// The model being served.
pub struct Loaded {
    pub version: String,
    pub model: SuccessModel,
    pub metrics_json: String,
}

/// Load the current model of the registry `models` (a directory or `s3://…`), with its
/// metrics. Blocking: a store on S3 downloads it.
pub fn load_current(models: &std::path::Path) -> Result<Loaded, registry::RegistryError> {
    load_from(&ModelStore::open(models)?)
}

/// [`load_current`] from an open store.
fn load_from(store: &ModelStore) -> Result<Loaded, registry::RegistryError> {
    let (version, model) = store.load_current()?;
    let metrics_json = store.read(&version, "metrics.json").unwrap_or_default();
    Ok(Loaded { version, model, metrics_json })
}

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener or a connection failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    /// Server reflection could not be set up from the compiled descriptors.
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Shared state of the service.
pub struct State {
    model: RwLock<Arc<Loaded>>,
    cfg: EngineConfig,
    permits: Arc<Semaphore>,
    /// Admission units in all (`--max-in-flight`).
    capacity: usize,
    /// Request counts, latencies, decisions by action and channel, reloads.
    pub metrics: Arc<Metrics>,
    /// Where decisions and reported outcomes go (`--decision-log`); `None`: nowhere.
    pub(crate) log: Option<crate::decision_log::DecisionLog>,
    /// Predicted against reported success (kept with the decision log: reports need it).
    pub(crate) live: Option<live::LiveCalibration>,
    /// The holdout experiment, if any: its payers get the control schedule.
    pub(crate) holdout: Option<api::Holdout>,
    /// The payments decided, against the serving model's training population.
    pub(crate) drift: Arc<drift::LiveDrift>,
    /// The live page's arms, computed from the decision log at most every [`page::ARMS_EVERY`].
    page_arms: std::sync::Mutex<Option<(std::time::Instant, page::Arms)>>,
}

impl State {
    pub fn new(loaded: Loaded, cfg: EngineConfig, max_in_flight: usize) -> Arc<State> {
        State::with_log(loaded, cfg, max_in_flight, None, None)
    }

    /// As [`State::new`], appending every decision and reported outcome to `log`, and
    /// serving `holdout`'s payers its control schedule.
    pub fn with_log(
        loaded: Loaded,
        cfg: EngineConfig,
        max_in_flight: usize,
        log: Option<(crate::decision_log::DecisionLog, crate::decision_log::LogCounters)>,
        holdout: Option<api::Holdout>,
    ) -> Arc<State> {
        let metrics = Arc::new(Metrics::new());
        metrics.serving(&loaded.version);
        let capacity = max_in_flight.max(1);
        let log = log.map(|(log, counters)| {
            metrics.register_log(&counters);
            log
        });
        let live = log.as_ref().map(|_| live::LiveCalibration::new(metrics.registry(), live::DEFAULT_CAPACITY));
        let drift = Arc::new(drift::LiveDrift::new(metrics.registry(), drift::population_of(&loaded.metrics_json)));
        let d = drift.clone();
        metrics.before_render(move || d.refresh());
        Arc::new(State {
            model: RwLock::new(Arc::new(loaded)),
            cfg,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            metrics,
            log,
            live,
            holdout,
            page_arms: std::sync::Mutex::new(None),
            drift,
        })
    }

    /// The holdout arms for the live page, from the decision log (cached for [`page::ARMS_EVERY`]).
    async fn page_arms(&self) -> page::Arms {
        let Some(log) = &self.log else {
            return Err("This server keeps no decision log (--decision-log): there are no arms to measure.".into());
        };
        if let Some((at, r)) = self.page_arms.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if at.elapsed() < page::ARMS_EVERY {
                return r.clone();
            }
        }
        let (target, cfg) = (log.target().clone(), self.cfg.clone());
        let r = tokio::task::spawn_blocking(move || {
            crate::decision_log::read_target(&target)
                .map(|(d, o)| Arc::new(crate::decision_log::live_report(&d, &o, &cfg, None, 200)))
                .map_err(|e| format!("The decision log could not be read: {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(format!("The arms could not be computed: {e}")));
        *self.page_arms.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), r.clone()));
        r
    }

    /// The live page.
    pub async fn page(&self) -> String {
        let arms = self.page_arms().await;
        page::render(&self.metrics.render(), arms.as_deref().map_err(Clone::clone))
    }

    /// The model serving now.
    pub fn current(&self) -> Arc<Loaded> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swap in a new model atomically.
    pub fn swap(&self, loaded: Loaded) {
        self.metrics.serving(&loaded.version);
        self.drift.set_reference(drift::population_of(&loaded.metrics_json));
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
    }
}

pub use handlers::{Decider, HyperswitchDecider};

/// Settings of `recoup serve`.
#[derive(Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub models: PathBuf,
    pub max_in_flight: usize,
    pub reload_every: Duration,
    pub request_timeout: Duration,
    /// Also serve `recoup.bench.v1.Echo` (the load benchmark's ceiling).
    pub echo_service: bool,
    /// Serve gRPC server reflection (off by default: it tells anyone every method).
    pub reflection: bool,
    /// The payer country assumed when hyperswitch sends no `billing_country`.
    pub hyperswitch_country: crate::domain::Country,
    /// Exploration on hyperswitch's route, used only with a decision log (which keeps the
    /// propensities hyperswitch does not).
    pub hyperswitch_exploration: f64,
    /// Serve hyperswitch's `trainer.TrainerService` with these settings.
    pub trainer: Option<hyperswitch::TrainerConfig>,
    /// Who may call what.
    pub access: auth::Access,
    /// TLS, connection bounds and the shutdown grace.
    pub conn: conn::ConnConfig,
}

impl ServeConfig {
    /// Settings for `addr` and the registry `models`, with the defaults of `recoup serve`
    /// (no tokens: deciding and reading open, training refused).
    pub fn new(addr: SocketAddr, models: PathBuf) -> ServeConfig {
        ServeConfig {
            addr,
            models,
            max_in_flight: 128,
            reload_every: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            echo_service: false,
            reflection: false,
            hyperswitch_country: crate::domain::Country::from_bytes(*b"US"),
            hyperswitch_exploration: 0.0,
            trainer: None,
            access: auth::Access::new(None, &[auth::Scope::Decide, auth::Scope::Read]).unwrap_or_default(),
            conn: conn::ConnConfig::default(),
        }
    }
}

/// Watch `CURRENT` (a file, or an object on S3) and swap in promoted models.
async fn watch(state: Arc<State>, dir: PathBuf, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Opened once (an S3 store keeps its connections); blocking calls go to the blocking pool.
    let store = loop {
        tick.tick().await;
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || ModelStore::open(&d)).await {
            Ok(Ok(s)) => break Arc::new(s),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot open the model registry to watch it; will retry"),
            Err(e) => tracing::error!(error = %e, "opening the model registry failed"),
        }
    };
    // A refused version is not retried (nor logged again) until CURRENT moves.
    let mut refused: Option<String> = None;
    loop {
        tick.tick().await;
        let serving = state.current().version.clone();
        let s = store.clone();
        let current = match tokio::task::spawn_blocking(move || s.current()).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the CURRENT pointer; keeping {serving}");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the CURRENT pointer failed; keeping {serving}");
                continue;
            }
        };
        if current == serving || refused.as_ref() == Some(&current) {
            continue;
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || load_from(&s)).await {
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

/// Log every panic as one line (no backtrace capture: under attack that costs
/// memory and log volume); the guard answers the call and counts it. For the
/// `recoup serve` process only: it replaces the process's panic hook.
pub fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            tracing::error!(at, panic = guard::panic_message(info.payload()), "panic");
        }));
    });
}

/// Serve until `shutdown` resolves, on already bound listeners (tests bind port 0):
/// gRPC on `listener`, Prometheus metrics on `metrics` if given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Option<tokio::net::TcpListener>,
    cfg: ServeConfig,
    state: Arc<State>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = metrics.map(|l| {
        let st = state.clone();
        let page = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let st = st.clone();
                async move { axum::response::Html(st.page().await) }
            }),
        );
        tokio::spawn(crate::metrics::serve(l, state.metrics.clone(), page, async move {
            let _ = metrics_stopped.await;
        }))
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<v1::retry_decider_server::RetryDeciderServer<Decider>>().await;
    health.set_serving::<hyperswitch::decider::decider_server::DeciderServer<HyperswitchDecider>>().await;
    if cfg.trainer.is_some() {
        health.set_serving::<hyperswitch::trainer::trainer_service_server::TrainerServiceServer<hyperswitch::Trainer>>().await;
    }
    let max = crate::limits::MAX_MESSAGE_BYTES;
    let decider = v1::retry_decider_server::RetryDeciderServer::new(Decider { state: state.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let hs = HyperswitchDecider {
        inner: Decider { state: state.clone() },
        cfg: hyperswitch::engine_config(&state.cfg, if state.log.is_some() { cfg.hyperswitch_exploration } else { 0.0 }),
        default_country: cfg.hyperswitch_country,
    };
    let mut routes = tonic::service::Routes::new(health_service).add_service(decider).add_service(
        hyperswitch::decider::decider_server::DeciderServer::new(hs).max_decoding_message_size(max).max_encoding_message_size(max),
    );
    if let Some(t) = cfg.trainer.clone() {
        routes = routes.add_service(
            hyperswitch::trainer::trainer_service_server::TrainerServiceServer::new(hyperswitch::Trainer::new(t))
                .max_decoding_message_size(max),
        );
    }
    if cfg.echo_service {
        routes = routes.add_service(api::bench::echo_server::EchoServer::new(api::bench::EchoService).max_decoding_message_size(max));
    }
    if cfg.reflection {
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
        routes = routes.add_service(reflection().build_v1()?).add_service(reflection().build_v1alpha()?);
    }
    let guarded = guard::Guard::new(
        routes.prepare(),
        Arc::new(guard::GuardConfig { access: cfg.access.clone(), metrics: state.metrics.clone(), timeout: cfg.request_timeout }),
    );
    let watcher = tokio::spawn(watch(state.clone(), cfg.models.clone(), cfg.reload_every));
    let trainer_serving = cfg.trainer.is_some();
    let result = conn::run(listener, cfg.conn.clone(), guarded, async move {
        shutdown.await;
        tracing::info!("shutting down: health NOT_SERVING, finishing calls in flight");
        health.set_not_serving::<v1::retry_decider_server::RetryDeciderServer<Decider>>().await;
        health.set_not_serving::<hyperswitch::decider::decider_server::DeciderServer<HyperswitchDecider>>().await;
        if trainer_serving {
            health.set_not_serving::<hyperswitch::trainer::trainer_service_server::TrainerServiceServer<hyperswitch::Trainer>>().await;
        }
        health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
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
