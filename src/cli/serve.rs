//! `recoup serve`: the gRPC decision service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::engine::EngineConfig;
use crate::serve::{load_current, serve, shutdown_signal, ServeConfig, State};

/// Serve retry decisions over gRPC (`recoup.v1.RetryDecider`, with grpc.health.v1
/// and server reflection) using the registry's current model; a promoted model is
/// picked up without a restart.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  recoup serve                                   # models/CURRENT on 127.0.0.1:50051\n  recoup serve --addr 0.0.0.0:50051 --max-in-flight 64\n  grpcurl -plaintext 127.0.0.1:50051 list")]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// Model registry; its CURRENT version is served and watched.
    #[arg(long, value_name = "DIR", default_value = "models/")]
    pub models: PathBuf,
    /// Decisions running at once; more are refused with RESOURCE_EXHAUSTED (default: 4 × cores).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// How often to check models/CURRENT for a promoted model, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub reload_every: f64,
    /// Server-side cap on any call, in seconds (clients' own deadlines also apply).
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Engine settings (TOML: costs, horizon, exploration…); fields not given keep their defaults.
    #[arg(long, value_name = "TOML")]
    pub engine: Option<PathBuf>,
}

/// Read engine settings from a TOML file, or the defaults.
pub fn engine_config(path: Option<&PathBuf>) -> anyhow::Result<EngineConfig> {
    match path {
        None => Ok(EngineConfig::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing engine settings {}", p.display()))
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
        max_in_flight: a.max_in_flight.unwrap_or(4 * cores),
        reload_every: Duration::from_secs_f64(a.reload_every),
        request_timeout: Duration::from_secs_f64(a.timeout),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.addr).await.with_context(|| format!("binding {}", cfg.addr))?;
        eprintln!("recoup serve: model {} on {} (health, reflection; Ctrl-C or SIGTERM to stop)", loaded.version, listener.local_addr()?);
        let state = State::new(loaded, engine, cfg.max_in_flight);
        serve(listener, cfg, state, shutdown_signal()).await
    })?;
    eprintln!("recoup serve: stopped");
    Ok(ExitCode::SUCCESS)
}
