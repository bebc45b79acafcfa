//! `recoup serve`: the gRPC decision service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::engine::EngineConfig;
use crate::serve::{load_current, serve, shutdown_signal, ServeConfig, State};

/// Serve retry decisions over gRPC (`recoup.v1.RetryDecider` and hyperswitch's
/// `decider.Decider`, with grpc.health.v1 and server reflection) using the
/// registry's current model; a promoted model is picked up without a restart.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  recoup serve                                   # models/CURRENT on 127.0.0.1:50051, metrics on :9464\n  recoup serve --addr 0.0.0.0:50051 --max-in-flight 256 --log-format json\n  recoup serve --train-history exports/ --promote-trained   # also hyperswitch's trainer\n  grpcurl -plaintext 127.0.0.1:50051 list\n  curl -s 127.0.0.1:9464/metrics")]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// Model registry; its CURRENT version is served and watched.
    #[arg(long, value_name = "DIR", default_value = "models/")]
    pub models: PathBuf,
    /// Calls accepted at once; more are refused with RESOURCE_EXHAUSTED at once instead of
    /// queueing (default: 64 × cores: at ~50 µs a decision, a full queue waits under 5 ms).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// How often to check models/CURRENT for a promoted model, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub reload_every: f64,
    /// Server-side cap on any call, in seconds (clients' own deadlines also apply).
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Address of the Prometheus metrics endpoint (GET /metrics); `off` to disable.
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:9464", value_parser = metrics_addr)]
    pub metrics_addr: MetricsAddr,
    /// Also serve recoup.bench.v1.Echo, a call with no work in it (for load benchmarks).
    #[arg(long)]
    pub echo_service: bool,
    /// Payer country assumed for hyperswitch decider calls without billing_country
    /// (its holidays and time zone).
    #[arg(long, value_name = "CC", default_value = "US")]
    pub hyperswitch_default_country: crate::domain::Country,
    /// Serve hyperswitch's trainer.TrainerService: TriggerTraining trains on this
    /// history (contract v1) into --models in the background.
    #[arg(long, value_name = "PATH")]
    pub train_history: Option<PathBuf>,
    /// Promote a version the trainer service finished (the server then hot-reloads it).
    #[arg(long, requires = "train_history")]
    pub promote_trained: bool,
    /// Engine settings (TOML: costs, horizon, exploration…); fields not given keep their defaults.
    #[arg(long, value_name = "TOML")]
    pub engine: Option<PathBuf>,
}

/// Where to serve metrics, if anywhere.
#[derive(Debug, Clone, Copy)]
pub struct MetricsAddr(pub Option<SocketAddr>);

fn metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(MetricsAddr(None));
    }
    s.parse().map(|a| MetricsAddr(Some(a))).map_err(|e| format!("{e}: expected HOST:PORT or off"))
}

/// Read engine settings from a TOML file, or the defaults.
pub fn engine_config(path: Option<&PathBuf>) -> anyhow::Result<EngineConfig> {
    match path {
        None => Ok(EngineConfig::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let cfg: EngineConfig = toml::from_str(&text).with_context(|| format!("parsing engine settings {}", p.display()))?;
            cfg.validate().map_err(|e| anyhow::anyhow!("engine settings {}: {e}", p.display()))?;
            Ok(cfg)
        }
    }
}

/// Run `recoup serve`.
pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.reload_every > 0.0 && a.timeout > 0.0, "--reload-every and --timeout must be positive");
    let engine = engine_config(a.engine.as_ref())?;
    let loaded = load_current(&a.models).with_context(|| format!("loading the current model from {}", a.models.display()))?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let cfg = ServeConfig {
        addr: a.addr,
        models: a.models.clone(),
        max_in_flight: a.max_in_flight.unwrap_or(64 * cores),
        reload_every: Duration::from_secs_f64(a.reload_every),
        request_timeout: Duration::from_secs_f64(a.timeout),
        echo_service: a.echo_service,
        hyperswitch_country: a.hyperswitch_default_country,
        trainer: a.train_history.as_ref().map(|h| crate::hyperswitch::TrainerConfig { history: h.clone(), models: a.models.clone(), promote: a.promote_trained }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.addr).await.with_context(|| format!("binding {}", cfg.addr))?;
        let metrics = match a.metrics_addr.0 {
            Some(m) => Some(tokio::net::TcpListener::bind(m).await.with_context(|| format!("binding the metrics endpoint {m} (--metrics-addr off to disable)"))?),
            None => None,
        };
        let metrics_at = match &metrics {
            Some(l) => format!("; metrics on http://{}/metrics", l.local_addr()?),
            None => String::new(),
        };
        let trainer = match &cfg.trainer {
            Some(t) => format!("; trainer.TrainerService on {}", t.history.display()),
            None => String::new(),
        };
        eprintln!(
            "recoup serve: model {} on {} (recoup.v1, hyperswitch decider.Decider{trainer}, health, reflection{metrics_at}; Ctrl-C or SIGTERM to stop)",
            loaded.version,
            listener.local_addr()?
        );
        tracing::info!(model = %loaded.version, addr = %cfg.addr, max_in_flight = cfg.max_in_flight, "serving");
        let state = State::new(loaded, engine, cfg.max_in_flight);
        serve(listener, metrics, cfg, state, shutdown_signal()).await
    })?;
    eprintln!("recoup serve: stopped");
    Ok(ExitCode::SUCCESS)
}
