//! `recoup serve`: the gRPC decision service.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::engine::EngineConfig;
use crate::serve::auth::{Access, Scope};
use crate::serve::conn::{tls_acceptor, ConnConfig};
use crate::serve::{load_current, serve, shutdown_signal, ServeConfig, State};

/// Serve retry decisions over gRPC (`recoup.v1.RetryDecider` and hyperswitch's
/// `decider.Decider`, with grpc.health.v1 and server reflection) using the
/// registry's current model; a promoted model is picked up without a restart.
#[derive(Debug, clap::Args)]
#[command(after_help = "Every flag can also be set by its environment variable (shown as [env: …]).\n\n\
Access is closed by default: on a loopback address anyone on the machine may decide and read the\n\
model; on any other address every call needs a token (--tokens) or a client certificate (mutual\n\
TLS, --tls-client-ca), unless --anonymous-scopes says otherwise. Training (hyperswitch's trainer)\n\
always needs a token with the admin scope. Make a token with `recoup token`.\n\n\
Examples:\n\
\x20 recoup serve                                   # models/CURRENT on 127.0.0.1:50051, metrics on :9464\n\
\x20 recoup token --name billing --scopes decide,read >> tokens.toml   # prints the token once, on stderr\n\
\x20 recoup serve --addr 0.0.0.0:50051 --tokens tokens.toml --tls-cert server.pem --tls-key server.key\n\
\x20 recoup serve --addr 0.0.0.0:50051 --tls-cert server.pem --tls-key server.key --tls-client-ca clients-ca.pem\n\
\x20 recoup serve --tokens tokens.toml --train-history exports/ --promote-trained   # hyperswitch's trainer, admin only\n\
\x20 recoup serve --decision-log decision-log/ --holdout-share 0.05  # log; 5 % holdout\n\
\x20 recoup serve --models s3://billing/recoup-models   # registry on S3 (AWS_* env; AWS_ENDPOINT_URL for MinIO…)\n\
\x20 grpcurl -plaintext 127.0.0.1:50051 grpc.health.v1.Health/Check\n\
\x20 curl -s 127.0.0.1:9464/metrics")]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "RECOUP_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// Model registry (a directory or `s3://bucket/prefix`); its CURRENT version is served
    /// and watched. On S3, versions are downloaded once into the cache (RECOUP_CACHE_DIR).
    #[arg(long, env = "RECOUP_MODELS", value_name = "DIR", default_value = "models/")]
    pub models: PathBuf,
    /// Admission units at once: a usual decision takes one, a large call one per 256 items
    /// of work (at most a quarter of all); calls that do not fit are refused with
    /// RESOURCE_EXHAUSTED at once instead of queueing (default: 64 × cores).
    #[arg(long, env = "RECOUP_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// How often to check models/CURRENT for a promoted model, in seconds.
    #[arg(long, env = "RECOUP_RELOAD_EVERY", default_value_t = 2.0)]
    pub reload_every: f64,
    /// Server-side cap on any call, in seconds; past it (or past the client's own deadline,
    /// whichever is earlier) the call answers DEADLINE_EXCEEDED and its work stops.
    #[arg(long, env = "RECOUP_TIMEOUT", default_value_t = 10.0)]
    pub timeout: f64,
    /// Keep every decision (Decide, DecideBatch, hyperswitch's Decide) and every outcome
    /// reported with ReportAttempts, for `recoup history from-log` and `recoup report live`:
    /// in Parquet files under DIR (decisions/, outcomes/), or in a PostgreSQL database given
    /// as a postgres://user[:password]@host[:port]/db URL (tables created at start by the
    /// migrations in migrations/; plain TCP). Off by default (ReportAttempts is then refused).
    #[arg(long, env = "RECOUP_DECISION_LOG", value_name = "DIR|URL")]
    pub decision_log: Option<String>,
    /// Seconds between writes of the decision log: a kill -9 loses at most the decisions
    /// answered in the last interval, or since the last write when every core is saturated
    /// (the writer runs at idle CPU priority; reported outcomes are written before they are
    /// answered).
    /// Default 1 for a directory (one Parquet file per write), 0.02 for PostgreSQL (small
    /// transactions keep the database's CPU from coming in bursts that slow the handlers
    /// on a shared host).
    #[arg(long, env = "RECOUP_DECISION_LOG_FLUSH", value_name = "SECONDS")]
    pub decision_log_flush: Option<f64>,
    /// Exploration rate on hyperswitch's route (its decider does not keep propensities, so it
    /// explores only when --decision-log keeps them; 0 turns it off).
    #[arg(long, env = "RECOUP_HYPERSWITCH_EXPLORATION", default_value_t = 0.02)]
    pub hyperswitch_exploration: f64,
    /// Share of payers (0–1) in a holdout served the control schedule (--holdout-schedule)
    /// instead of the model, chosen by a stable hash of the customer id (the payment id
    /// when there is none) and tagged `control:<name>` in the decision log, for
    /// `recoup report live`. Needs --decision-log. 0: no holdout.
    #[arg(long, env = "RECOUP_HOLDOUT_SHARE", default_value_t = 0.0)]
    pub holdout_share: f64,
    /// The holdout's control: a schedule's name from --holdout-schedules (default: the shipped
    /// schedules, data/strategies.toml), e.g. the merchant's current one.
    #[arg(long, env = "RECOUP_HOLDOUT_SCHEDULE", default_value = "2 weeks x8")]
    pub holdout_schedule: String,
    /// Schedules file (TOML, as data/strategies.toml) the control schedule is looked up in.
    #[arg(long, env = "RECOUP_HOLDOUT_SCHEDULES", value_name = "TOML")]
    pub holdout_schedules: Option<PathBuf>,
    /// Address of the Prometheus metrics endpoint (GET /metrics) and the live page (GET /:
    /// the model, live calibration, decisions, holdout arms); `off` to disable.
    #[arg(long, env = "RECOUP_METRICS_ADDR", value_name = "ADDR|off", default_value = "127.0.0.1:9464", value_parser = metrics_addr)]
    pub metrics_addr: MetricsAddr,
    /// Also serve recoup.bench.v1.Echo, a call with no work in it (for load benchmarks).
    #[arg(long, env = "RECOUP_ECHO_SERVICE")]
    pub echo_service: bool,
    /// Serve gRPC server reflection (grpcurl's `list`/`describe`); needs the read scope.
    #[arg(long, env = "RECOUP_REFLECTION")]
    pub reflection: bool,
    /// Bearer tokens with scopes (TOML, SHA-256 hashes only; see `recoup token`).
    #[arg(long, env = "RECOUP_TOKENS", value_name = "TOML")]
    pub tokens: Option<PathBuf>,
    /// Scopes granted to callers without a token, comma-separated: decide, read, or `none`
    /// (default: decide,read on a loopback address or with mutual TLS; none elsewhere).
    #[arg(long, env = "RECOUP_ANONYMOUS_SCOPES", value_name = "SCOPES", value_parser = scopes_arg)]
    pub anonymous_scopes: Option<Scopes>,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "RECOUP_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long, env = "RECOUP_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate signed by this CA (PEM).
    #[arg(long, env = "RECOUP_TLS_CLIENT_CA", value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Seconds a new connection may take to send its first bytes (TLS hello, HTTP/2 preface).
    #[arg(long, env = "RECOUP_HANDSHAKE_TIMEOUT", default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Seconds shutdown waits for calls in flight before closing every connection.
    #[arg(long, env = "RECOUP_SHUTDOWN_GRACE", default_value_t = 10.0)]
    pub shutdown_grace: f64,
    /// Connections served at once (more wait in the listen backlog).
    #[arg(long, env = "RECOUP_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Payer country assumed for hyperswitch decider calls without billing_country
    /// (its holidays and time zone).
    #[arg(long, env = "RECOUP_HYPERSWITCH_DEFAULT_COUNTRY", value_name = "CC", default_value = "US")]
    pub hyperswitch_default_country: crate::domain::Country,
    /// Serve hyperswitch's trainer.TrainerService: TriggerTraining trains on this
    /// history (contract v1) into --models in the background (needs an admin token).
    #[arg(long, env = "RECOUP_TRAIN_HISTORY", value_name = "PATH")]
    pub train_history: Option<PathBuf>,
    /// Promote a version the trainer service finished (the server then hot-reloads it).
    #[arg(long, env = "RECOUP_PROMOTE_TRAINED", requires = "train_history")]
    pub promote_trained: bool,
    /// Engine settings (TOML: costs, horizon, exploration…); fields not given keep their defaults.
    #[arg(long, env = "RECOUP_ENGINE", value_name = "TOML")]
    pub engine: Option<PathBuf>,
}

/// Scopes given on the command line.
#[derive(Debug, Clone)]
pub struct Scopes(pub Vec<Scope>);

/// Parse `decide,read` (or `none`).
pub fn scopes_arg(s: &str) -> Result<Scopes, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Scopes(Vec::new()));
    }
    s.split(',')
        .map(|p| p.trim().parse::<Scope>().map_err(|_| format!("unknown scope {p:?}: decide, read, admin or none")))
        .collect::<Result<_, _>>()
        .map(Scopes)
}

/// Who may call what, from the flags; refuses an open server on a public address.
fn access(a: &Args) -> anyhow::Result<Access> {
    let text = match &a.tokens {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading the tokens file {}", p.display()))?),
        None => None,
    };
    let mutual = a.tls_client_ca.is_some();
    let anonymous = match &a.anonymous_scopes {
        Some(s) => s.0.clone(),
        None if a.addr.ip().is_loopback() || mutual => vec![Scope::Decide, Scope::Read],
        None if a.tokens.is_some() => Vec::new(),
        None => anyhow::bail!(
            "--addr {} is not a loopback address and neither --tokens nor --tls-client-ca is given: anyone who reaches it could call it. \
             Give --tokens (see `recoup token`), mutual TLS, or --anonymous-scopes decide,read to accept that",
            a.addr
        ),
    };
    Ok(Access::new(a.tokens.as_deref().zip(text.as_deref()), &anonymous)?)
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
            let params: crate::engine::EngineParams =
                toml::from_str(&text).with_context(|| format!("parsing engine settings {}", p.display()))?;
            params.check().with_context(|| format!("engine settings {}", p.display()))
        }
    }
}

/// The holdout's control arm, when `--holdout-share` is above 0 (it needs the decision log).
fn holdout(a: &Args) -> anyhow::Result<Option<crate::api::Holdout>> {
    anyhow::ensure!(
        a.holdout_share.is_finite() && (0.0..=1.0).contains(&a.holdout_share),
        "--holdout-share {}: expected a share in [0, 1]",
        a.holdout_share
    );
    if a.holdout_share <= 0.0 {
        return Ok(None);
    }
    anyhow::ensure!(a.decision_log.is_some(), "--holdout-share needs --decision-log DIR|URL: a holdout nobody logs measures nothing");
    let text = match &a.holdout_schedules {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => crate::backtest::DEFAULT_SCHEDULES.to_string(),
    };
    let schedules = crate::backtest::parse_schedules(&text).context("reading the holdout's schedules")?;
    let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
    let schedule = schedules
        .iter()
        .find(|s| s.name == a.holdout_schedule)
        .cloned()
        .with_context(|| format!("--holdout-schedule {:?}: no such schedule (there are: {})", a.holdout_schedule, names.join(", ")))?;
    Ok(Some(crate::api::Holdout { share: a.holdout_share, schedule }))
}

/// The line `recoup serve` starts with: what it serves, where, to whom, and what it logs.
fn banner(cfg: &ServeConfig, version: &str, addr: std::net::SocketAddr, metrics_at: &str, log_note: &str) -> String {
    let trainer = match &cfg.trainer {
        Some(t) => format!(", trainer.TrainerService on {}", t.history.display()),
        None => String::new(),
    };
    let reflection = if cfg.reflection { ", reflection" } else { "" };
    let scheme = if cfg.conn.tls.is_some() { "TLS" } else { "plaintext" };
    let open: Vec<String> = cfg.access.anonymous().iter().map(|s| s.to_string()).collect();
    let access = match (cfg.access.has_tokens(), open.is_empty()) {
        (true, true) => "tokens required".to_string(),
        (true, false) => format!("tokens; open to anyone: {}", open.join(", ")),
        (false, true) => "no tokens: every call but health refused".to_string(),
        (false, false) => format!("open to anyone: {}; training refused (no admin token)", open.join(", ")),
    };
    format!(
        "recoup serve: model {version} on {addr} ({scheme}; recoup.v1, hyperswitch decider.Decider{trainer}, health{reflection}{metrics_at}; access: {access}{log_note}; Ctrl-C or SIGTERM to stop)"
    )
}

/// Run `recoup serve`.
pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.reload_every > 0.0 && a.timeout > 0.0, "--reload-every and --timeout must be positive");
    let engine = engine_config(a.engine.as_ref())?;
    let loaded = load_current(&a.models).with_context(|| format!("loading the current model from {}", a.models.display()))?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    anyhow::ensure!(
        a.handshake_timeout > 0.0 && a.shutdown_grace >= 0.0,
        "--handshake-timeout must be positive and --shutdown-grace not negative"
    );
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k, a.tls_client_ca.as_deref())?),
        _ => None,
    };
    let cfg = ServeConfig {
        max_in_flight: a.max_in_flight.unwrap_or(64 * cores),
        reload_every: Duration::from_secs_f64(a.reload_every),
        request_timeout: Duration::from_secs_f64(a.timeout),
        echo_service: a.echo_service,
        reflection: a.reflection,
        hyperswitch_country: a.hyperswitch_default_country,
        hyperswitch_exploration: a.hyperswitch_exploration,
        trainer: a.train_history.as_ref().map(|h| crate::hyperswitch::TrainerConfig {
            history: h.clone(),
            models: a.models.clone(),
            promote: a.promote_trained,
        }),
        access: access(a)?,
        conn: ConnConfig {
            tls,
            handshake_timeout: Duration::from_secs_f64(a.handshake_timeout),
            max_connections: a.max_connections.max(1),
            shutdown_grace: Duration::from_secs_f64(a.shutdown_grace),
            ..ConnConfig::default()
        },
        ..ServeConfig::new(a.addr, a.models.clone())
    };
    if let Some(f) = a.decision_log_flush {
        anyhow::ensure!(f.is_finite() && f > 0.0 && f <= 3600.0, "--decision-log-flush {f}: expected seconds in (0, 3600]");
    }
    anyhow::ensure!(
        a.hyperswitch_exploration.is_finite() && (0.0..=0.5).contains(&a.hyperswitch_exploration),
        "--hyperswitch-exploration {}: expected a rate in [0, 0.5]",
        a.hyperswitch_exploration
    );
    let holdout = holdout(a)?;
    let (log, log_note) = match &a.decision_log {
        Some(target) => {
            let mut c = crate::decision_log::LogConfig::at(crate::decision_log::LogTarget::parse(target));
            if let Some(f) = a.decision_log_flush {
                c.flush_every = Duration::from_secs_f64(f);
            }
            let note = format!("; decision log {} (every {} s)", c.target.describe(), c.flush_every.as_secs_f64());
            let counters = crate::decision_log::LogCounters::new();
            let (log, writer) = crate::decision_log::DecisionLog::open(c, counters.clone())?;
            (Some((log, counters, writer)), note)
        }
        None => (None, "; no decision log (--decision-log DIR|URL keeps decisions and outcomes for retraining)".to_string()),
    };
    let log_note = match &holdout {
        Some(h) => format!("{log_note}; holdout {:.1} % on {:?}", 100.0 * h.share, h.schedule.name),
        None => log_note,
    };
    let (log, writer) = match log {
        Some((l, c, w)) => (Some((l, c)), Some(w)),
        None => (None, None),
    };
    crate::serve::quiet_panics();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.addr).await.with_context(|| format!("binding {}", cfg.addr))?;
        let metrics = match a.metrics_addr.0 {
            Some(m) => Some(
                tokio::net::TcpListener::bind(m)
                    .await
                    .with_context(|| format!("binding the metrics endpoint {m} (--metrics-addr off to disable)"))?,
            ),
            None => None,
        };
        let metrics_at = match &metrics {
            Some(l) => format!("; metrics on http://{}/metrics", l.local_addr()?),
            None => String::new(),
        };
        eprintln!("{}", banner(&cfg, &loaded.version, listener.local_addr()?, &metrics_at, &log_note));
        tracing::info!(model = %loaded.version, addr = %cfg.addr, max_in_flight = cfg.max_in_flight, "serving");
        let state = State::with_log(loaded, engine, cfg.max_in_flight, log, holdout);
        serve(listener, metrics, cfg, state, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    // The decision log's last write, before saying we stopped.
    drop(rt);
    drop(writer);
    eprintln!("recoup serve: stopped");
    Ok(ExitCode::SUCCESS)
}
