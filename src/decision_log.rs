//! The decision log (edge, files): every decision `recoup serve` makes and
//! every attempt outcome the billing platform reports, appended to Parquet
//! files, and their join back into contract-v1 history carrying recoup's own
//! propensities, so `recoup train` retrains on recoup's decisions and
//! `recoup backtest --history` can weigh them (#24).
//!
//! Layout under the log directory: `decisions/part-<µs>-<writer>-<seq>.parquet`
//! and `outcomes/part-…`, the writer being the host (pod) name and process id,
//! so replicas can share one directory. A file is written to a `.tmp` name,
//! synced and renamed, so a reader never sees half a file.
//!
//! **Durability.**
//! - A handler appends a decision to its thread's shard (a batch in columns:
//!   no allocation and no message per decision, see [`batch`]) and never
//!   waits for the writer thread, which takes the shards' rows: when `queue`
//!   decisions already wait for it, the decision is answered anyway and
//!   counted in `recoup_decision_log_dropped_total` (a log that cannot keep
//!   up must not slow payments). The writer writes a file every
//!   `flush_every` (default 1 s; 20 ms for PostgreSQL, see
//!   [`LogTarget::default_flush`]) or every `rows_per_file` decisions, so a
//!   `kill -9` loses at most the decisions acknowledged in the last
//!   `flush_every` plus one file's write time; a clean shutdown loses none.
//!   The writer thread runs at the lowest CPU priority (SCHED_IDLE on Linux),
//!   so its encoding takes only CPU time no handler wants: on cores saturated
//!   without pause a write can come later than `flush_every`, and a `kill -9`
//!   then loses the decisions since the last write (at most the queue).
//! - Reported outcomes are the ground truth the next model learns from:
//!   `ReportAttempts` answers only once its reports are in a renamed file
//!   (UNAVAILABLE otherwise, so the platform reports again). They have their own
//!   writer thread at normal priority: an acknowledged call must not wait for
//!   spare CPU on a saturated machine.
//! - A write that fails (disk full) is logged and retried at the next flush,
//!   keeping at most four files' worth of decisions; beyond that the oldest
//!   are dropped and counted. At shutdown, what the last write could not
//!   write is counted as dropped too, and logged.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use polars::prelude::*;
use prost::Message;

use crate::api::v1;

/// Why the decision log could not be opened, written or read back.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An operation on a named file or column failed.
    #[error("{what}: {source}")]
    Context { what: String, source: Box<dyn std::error::Error + Send + Sync> },
    /// Something the log writes is missing (a column, a value).
    #[error("{0}")]
    Missing(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Polars(#[from] PolarsError),
    /// A logged request holds a value no request may hold.
    #[error("a logged request: {0}")]
    Request(#[from] crate::limits::InvalidField),
}

/// `with_context` for results and options (polars has a trait of the same name).
trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, LogError>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, LogError> {
        self.map_err(|e| LogError::Context { what: what(), source: Box::new(e) })
    }
}

impl<T> Ctx<T> for Option<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, LogError> {
        self.ok_or_else(|| LogError::Missing(what()))
    }
}

/// One decision, as the server answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    pub decided_at: DateTime<Utc>,
    /// `decide`, `decide_batch` or `hyperswitch`.
    pub source: String,
    pub payment_id: String,
    pub customer_id: String,
    pub model_version: String,
    /// The experiment arm that answered (`model` until holdouts exist).
    pub arm: String,
    /// `RETRY` or `DO_NOT_RETRY`, and the next step (`NEXT_STEP_…`).
    pub action: String,
    pub next_step: String,
    pub retry_at: Option<DateTime<Utc>>,
    /// The message before the retry (`none`, `email`, …).
    pub channel: String,
    pub p_success: f64,
    pub p_recovery: f64,
    /// Probability with which this action was chosen.
    pub propensity: f64,
    /// The whole `recoup.v1.DecideRequest`, protobuf-encoded (empty for hyperswitch's calls).
    pub request: Vec<u8>,
}

/// One reported attempt outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeRecord {
    pub reported_at: DateTime<Utc>,
    pub payment_id: String,
    pub customer_id: String,
    pub attempt_id: String,
    pub attempt_number: u32,
    pub attempted_at: DateTime<Utc>,
    /// `succeeded` or `failed`.
    pub outcome: String,
    pub decline_code: String,
    pub network_code: String,
    pub advice_code: String,
    pub channel: String,
    pub payment_method_updated: bool,
}

mod batch;
pub mod postgres;

use batch::Shards;
pub use batch::{Batch, Decision, Request};

/// Where the log lives: a directory of Parquet files (the embedded default) or a PostgreSQL
/// database (`postgres://…`, the tables of `migrations/`).
#[derive(Debug, Clone, PartialEq)]
pub enum LogTarget {
    Files(PathBuf),
    Postgres(String),
}

impl LogTarget {
    /// A `postgres://` or `postgresql://` URL names a database; anything else a directory.
    pub fn parse(s: &str) -> LogTarget {
        if postgres::is_url(s) {
            LogTarget::Postgres(s.to_string())
        } else {
            LogTarget::Files(PathBuf::from(s))
        }
    }

    /// How often the writer writes unless told otherwise: files every second (one
    /// Parquet file per write); PostgreSQL every 20 ms. Small transactions spread the
    /// database's work evenly: written once a second, its CPU came in bursts that, on a
    /// host shared with the server, doubled Decide's p99 (grpc bench, #24).
    pub fn default_flush(&self) -> Duration {
        match self {
            LogTarget::Files(_) => Duration::from_secs(1),
            LogTarget::Postgres(_) => Duration::from_millis(20),
        }
    }

    /// For messages: the directory, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            LogTarget::Files(d) => d.display().to_string(),
            LogTarget::Postgres(url) => postgres::redacted(url),
        }
    }
}

/// How the writer flushes (and, for files, rotates).
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub target: LogTarget,
    /// Write the decisions gathered so far at least this often.
    pub flush_every: Duration,
    /// Decisions per file at most.
    pub rows_per_file: usize,
    /// Decisions waiting for the writer at most (in the shards and not yet taken); more are
    /// dropped and counted.
    pub queue: usize,
}

impl LogConfig {
    /// A log of Parquet files under `dir`.
    pub fn new(dir: PathBuf) -> LogConfig {
        LogConfig::at(LogTarget::Files(dir))
    }

    /// A log at `target`, with the default flushing.
    pub fn at(target: LogTarget) -> LogConfig {
        LogConfig { flush_every: target.default_flush(), target, rows_per_file: 100_000, queue: 65_536 }
    }
}

/// Counters of the log (registered in the server's metrics).
#[derive(Clone)]
pub struct LogCounters {
    pub decisions_written: prometheus::IntCounter,
    pub decisions_dropped: prometheus::IntCounter,
    pub outcomes_written: prometheus::IntCounter,
    pub write_errors: prometheus::IntCounter,
}

impl LogCounters {
    pub fn new() -> LogCounters {
        let c = |name: &str, help: &str| prometheus::IntCounter::new(name, help).expect("valid metric");
        LogCounters {
            decisions_written: c("recoup_decision_log_written_total", "Decisions written to the decision log"),
            decisions_dropped: c(
                "recoup_decision_log_dropped_total",
                "Decisions answered but not logged (the log's queue was full, or writes kept failing)",
            ),
            outcomes_written: c("recoup_outcome_reports_written_total", "Attempt outcomes reported and written"),
            write_errors: c("recoup_decision_log_write_errors_total", "Decision-log files that could not be written"),
        }
    }
}

impl Default for LogCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// What the outcomes' writer thread is sent.
enum Entry {
    Outcomes(Vec<OutcomeRecord>, tokio::sync::oneshot::Sender<Result<(), String>>),
    /// Write what is pending and stop.
    Close,
}

/// The appending side: cheap to clone, never blocks a decision.
#[derive(Clone)]
pub struct DecisionLog {
    /// Decisions go to shards the decisions' writer thread empties (see [`batch`]).
    shards: Arc<Shards>,
    /// Reported outcomes go to their own writer thread at normal priority: a report is
    /// answered only once written, so it must not wait behind the idle-priority
    /// decision writer on a busy machine.
    outcomes_tx: SyncSender<Entry>,
    counters: LogCounters,
    target: LogTarget,
}

/// The writer threads: dropping it writes what is pending and waits for that (a clean
/// shutdown loses no decision); decisions appended afterwards are counted as dropped.
pub struct LogWriter {
    threads: Vec<(std::thread::JoinHandle<()>, SyncSender<Entry>)>,
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        for (t, tx) in self.threads.drain(..) {
            let _ = tx.send(Entry::Close);
            let _ = t.join();
        }
    }
}

/// The longest the decisions thread sleeps before it looks whether a file's worth of rows
/// waits in the shards (otherwise it wakes when the next write is due). Handlers never wake
/// it: sending to a thread that waits on a queue costs a futex call and a context switch per
/// decision. With the shards nothing needs draining between writes, so it wakes
/// `1 / flush_every` times a second, at least 10 (files: 10; PostgreSQL: 50), where it woke
/// 200 times a second with the queue. The queue's bound (65,536) fills within 100 ms only
/// above 655,000 decisions a second.
const POLL: Duration = Duration::from_millis(100);

/// Start a writer thread on a sink opened on that thread; `decisions`: the thread that
/// empties these shards, at the lowest CPU priority, else the outcomes' thread.
fn spawn_writer(
    name: &str,
    cfg: &LogConfig,
    counters: &LogCounters,
    decisions: Option<Arc<Shards>>,
) -> Result<(std::thread::JoinHandle<()>, SyncSender<Entry>), LogError> {
    // The decisions' thread is only ever sent `Close`; the outcomes' one queues reports.
    let (tx, rx) = sync_channel(if decisions.is_some() { 1 } else { cfg.queue.max(1) });
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (c, cfg) = (counters.clone(), cfg.clone());
    // The sink is made on the writer thread: the PostgreSQL client runs its own runtime,
    // which must not start inside the server's.
    let thread = std::thread::Builder::new().name(name.into()).spawn(move || match Sink::open(&cfg.target) {
        Ok(sink) => match decisions {
            Some(shards) => {
                lowest_priority();
                let _ = ready_tx.send(Ok(()));
                decision_writer(&shards, rx, cfg, c, sink)
            }
            None => {
                let _ = ready_tx.send(Ok(()));
                outcome_writer(rx, c, sink)
            }
        },
        Err(e) => {
            let _ = ready_tx.send(Err(e));
        }
    })?;
    match ready.recv() {
        Ok(Ok(())) => Ok((thread, tx)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(LogError::Missing("the decision log's writer thread stopped while opening".into())),
    }
}

impl DecisionLog {
    /// Create the directories (or connect to the database and apply its migrations) and start
    /// the writer thread; drop the [`LogWriter`] to stop it. A database that cannot be reached
    /// is an error here, not a silent loss later.
    pub fn open(cfg: LogConfig, counters: LogCounters) -> Result<(DecisionLog, LogWriter), LogError> {
        let shards = Arc::new(Shards::new(cfg.queue));
        let decisions = spawn_writer("decision-log", &cfg, &counters, Some(shards.clone()))?;
        // Opened after the first (one migration run at a time); a failure stops the first again.
        let outcomes = spawn_writer("outcome-log", &cfg, &counters, None)?;
        let log = DecisionLog { shards, outcomes_tx: outcomes.1.clone(), counters, target: cfg.target.clone() };
        Ok((log, LogWriter { threads: vec![decisions, outcomes] }))
    }

    /// Where the log is kept.
    pub fn target(&self) -> &LogTarget {
        &self.target
    }

    /// Append a decision; never waits (when `queue` decisions already wait for the writer,
    /// or it has stopped, it is dropped and counted).
    pub fn decision(&self, d: &Decision<'_>) {
        if !self.shards.push(d) {
            self.counters.decisions_dropped.inc();
        }
    }

    /// Append outcomes; resolves once they are in a renamed file.
    pub async fn outcomes(&self, rows: Vec<OutcomeRecord>) -> Result<(), String> {
        let (ack, done) = tokio::sync::oneshot::channel();
        match self.outcomes_tx.try_send(Entry::Outcomes(rows, ack)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err("the decision log is busy; report again".into()),
            Err(TrySendError::Disconnected(_)) => return Err("the decision log has stopped".into()),
        }
        done.await.unwrap_or_else(|_| Err("the decision log has stopped".into()))
    }
}

/// Run the calling (writer) thread at the lowest CPU priority, Linux's SCHED_IDLE: the
/// encoding of the log then only takes CPU time no handler wants, so it does not delay a
/// decision on a busy core (the grpc bench's p99). Its cost: on cores saturated for longer
/// than the queue lasts (65,536 decisions) the writer falls behind and decisions are dropped,
/// counted in `recoup_decision_log_dropped_total`. Where the OS refuses, a warning, and the
/// writer runs at normal priority.
fn lowest_priority() {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
    #[cfg(target_os = "linux")]
    let set = thread_priority::unix::set_thread_priority_and_policy(
        thread_priority::unix::thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    #[cfg(not(target_os = "linux"))]
    let set = thread_priority::set_current_thread_priority(ThreadPriority::Min);
    if let Err(e) = set {
        tracing::warn!(error = ?e, "cannot lower the decision log writer's priority; it runs at normal priority");
    }
}

/// Where the writer thread writes.
enum Sink {
    Files(PathBuf),
    Postgres(Box<postgres::Sink>),
}

impl Sink {
    fn open(target: &LogTarget) -> Result<Sink, LogError> {
        match target {
            LogTarget::Files(dir) => {
                for sub in ["decisions", "outcomes"] {
                    let d = dir.join(sub);
                    std::fs::create_dir_all(&d).ctx(|| format!("creating the decision log directory {}", d.display()))?;
                }
                Ok(Sink::Files(dir.clone()))
            }
            LogTarget::Postgres(url) => Ok(Sink::Postgres(Box::new(postgres::Sink::open(url, writer_id())?))),
        }
    }

    fn decisions(&mut self, rows: &Batch, range: std::ops::Range<usize>, seq: u64) -> Result<(), LogError> {
        match self {
            Sink::Files(dir) => write_decisions(dir, rows, range, seq),
            Sink::Postgres(pg) => pg.write_decisions(rows, range),
        }
    }

    fn outcomes(&mut self, rows: &[OutcomeRecord], seq: u64) -> Result<(), LogError> {
        match self {
            Sink::Files(dir) => write_outcomes(dir, rows, seq),
            Sink::Postgres(pg) => pg.write_outcomes(rows),
        }
    }
}

/// The decisions' writer loop: when a write is due (`flush_every` since the last, or a file's
/// worth of rows waiting, looked at least every [`POLL`]), it takes the shards' rows and writes
/// them, at most `rows_per_file` to a file. A `Close` (or the log's end) writes the rest.
fn decision_writer(shards: &Shards, control: Receiver<Entry>, cfg: LogConfig, counters: LogCounters, mut sink: Sink) {
    let (mut pending, mut spare) = (Batch::default(), Batch::default());
    let mut seq = 0u64;
    let mut last = Instant::now();
    let per_file = cfg.rows_per_file.max(1);
    let keep = per_file * 4;
    loop {
        let due = cfg.flush_every.saturating_sub(last.elapsed()).clamp(Duration::from_millis(1), POLL);
        let closing = match control.recv_timeout(due) {
            Ok(_) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        };
        if closing {
            shards.close();
        }
        if !(closing || last.elapsed() >= cfg.flush_every || pending.len() + shards.pending() >= per_file) {
            continue;
        }
        shards.take(&mut pending, &mut spare);
        last = Instant::now();
        let mut written = 0;
        while written < pending.len() {
            let end = (written + per_file).min(pending.len());
            seq += 1;
            if let Err(e) = sink.decisions(&pending, written..end, seq) {
                counters.write_errors.inc();
                tracing::error!(error = %format!("{e:#}"), kept = pending.len() - written, "cannot write the decision log; retrying at the next flush");
                break;
            }
            counters.decisions_written.inc_by((end - written) as u64);
            written = end;
        }
        if written == pending.len() {
            pending.clear();
        } else {
            pending.drop_front(written);
            if pending.len() > keep {
                let over = pending.len() - keep;
                pending.drop_front(over);
                counters.decisions_dropped.inc_by(over as u64);
            }
        }
        if closing {
            if !pending.is_empty() {
                // The last write failed: say so and count them, rather than lose them silently.
                counters.decisions_dropped.inc_by(pending.len() as u64);
                tracing::error!(lost = pending.len(), "the decision log stops with decisions it could not write");
            }
            return;
        }
    }
}

/// The outcomes' writer loop: each report call's rows, with those already queued behind
/// it, into one file; every caller answered once it is written.
fn outcome_writer(rx: Receiver<Entry>, counters: LogCounters, mut sink: Sink) {
    let mut seq = 0u64;
    while let Ok(Entry::Outcomes(mut rows, ack)) = rx.recv() {
        let mut acks = vec![ack];
        let mut closing = false;
        while let Ok(e) = rx.try_recv() {
            match e {
                Entry::Outcomes(more, a) => {
                    rows.extend(more);
                    acks.push(a);
                }
                Entry::Close => {
                    closing = true;
                    break;
                }
            }
        }
        seq += 1;
        let result = sink.outcomes(&rows, seq).map_err(|e| {
            counters.write_errors.inc();
            tracing::error!(error = %format!("{e:#}"), "cannot write reported outcomes; the callers are told to report again");
            "the decision log could not write the reports; report again".to_string()
        });
        if result.is_ok() {
            counters.outcomes_written.inc_by(rows.len() as u64);
        }
        for a in acks {
            let _ = a.send(result.clone());
        }
        if closing {
            return;
        }
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time_column(name: &str, v: Vec<Option<i64>>) -> Column {
    Int64Chunked::from_iter_options(name.into(), v.into_iter())
        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        .into_series()
        .into_column()
}

/// Who writes: the host name (a Kubernetes pod's name) and the process id, so replicas
/// sharing one log directory never write the same file name.
fn writer_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::env::var("HOSTNAME").ok().or_else(|| std::fs::read_to_string("/etc/hostname").ok()).unwrap_or_default();
        let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(63).collect();
        format!("{}{}{}", host, if host.is_empty() { "" } else { "-" }, std::process::id())
    })
}

/// Write `df` to `dir/part-<µs>-<writer>-<seq>.parquet` through a synced `.tmp` file and a rename.
fn write_atomically(dir: &Path, df: &mut DataFrame, seq: u64) -> Result<(), LogError> {
    let name = format!("part-{}-{}-{seq:06}.parquet", Utc::now().timestamp_micros(), writer_id());
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    // Snappy: a third of zstd's CPU for the writer thread, which shares the cores with the handlers.
    // Not parallel: polars' pool threads would encode at normal priority, beside the handlers;
    // on the (idle-priority) writer thread alone the encoding takes only spare CPU time.
    ParquetWriter::new(&mut f)
        .with_compression(ParquetCompression::Snappy)
        .set_parallel(false)
        .finish(df)
        .ctx(|| format!("writing {}", tmp.display()))?;
    f.sync_all().ctx(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(&name)).ctx(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

fn write_decisions(dir: &Path, batch: &Batch, range: std::ops::Range<usize>, seq: u64) -> Result<(), LogError> {
    let rows: Vec<Decision<'_>> = batch.rows(range.clone()).collect();
    let s = |f: &dyn for<'r> Fn(&'r Decision<'_>) -> &'r str| rows.iter().map(f).collect::<Vec<&str>>();
    let n = rows.len();
    let mut df = DataFrame::new(
        n,
        vec![
            time_column("decided_at", rows.iter().map(|r| Some(micros(r.decided_at))).collect()),
            Column::new("source".into(), s(&|r| r.source)),
            Column::new("payment_id".into(), s(&|r| r.payment_id)),
            Column::new("customer_id".into(), s(&|r| r.customer_id)),
            Column::new("model_version".into(), s(&|r| r.model_version)),
            Column::new("arm".into(), s(&|r| r.arm)),
            Column::new("action".into(), s(&|r| r.action)),
            Column::new("next_step".into(), s(&|r| r.next_step)),
            time_column("retry_at", rows.iter().map(|r| r.retry_at.map(micros)).collect()),
            Column::new("channel".into(), s(&|r| r.channel)),
            Column::new("p_success".into(), rows.iter().map(|r| r.p_success).collect::<Vec<f64>>()),
            Column::new("p_recovery".into(), rows.iter().map(|r| r.p_recovery).collect::<Vec<f64>>()),
            Column::new("propensity".into(), rows.iter().map(|r| r.propensity).collect::<Vec<f64>>()),
            Column::new("request".into(), range.map(|i| batch.request(i)).collect::<Vec<&[u8]>>()),
        ],
    )?;
    write_atomically(&dir.join("decisions"), &mut df, seq)
}

fn write_outcomes(dir: &Path, rows: &[OutcomeRecord], seq: u64) -> Result<(), LogError> {
    let s = |f: &dyn Fn(&OutcomeRecord) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let mut df = DataFrame::new(
        rows.len(),
        vec![
            time_column("reported_at", rows.iter().map(|r| Some(micros(r.reported_at))).collect()),
            Column::new("payment_id".into(), s(&|r| &r.payment_id)),
            Column::new("customer_id".into(), s(&|r| &r.customer_id)),
            Column::new("attempt_id".into(), s(&|r| &r.attempt_id)),
            Column::new("attempt_number".into(), rows.iter().map(|r| r.attempt_number as i64).collect::<Vec<i64>>()),
            time_column("attempted_at", rows.iter().map(|r| Some(micros(r.attempted_at))).collect()),
            Column::new("outcome".into(), s(&|r| &r.outcome)),
            Column::new("decline_code".into(), s(&|r| &r.decline_code)),
            Column::new("network_code".into(), s(&|r| &r.network_code)),
            Column::new("advice_code".into(), s(&|r| &r.advice_code)),
            Column::new("channel".into(), s(&|r| &r.channel)),
            Column::new("payment_method_updated".into(), rows.iter().map(|r| r.payment_method_updated).collect::<Vec<bool>>()),
        ],
    )?;
    write_atomically(&dir.join("outcomes"), &mut df, seq)
}

/// The finished Parquet files of `dir`, in name (time) order.
fn parts(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .ctx(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    v.sort();
    Ok(v)
}

fn read_part(path: &Path) -> Result<DataFrame, LogError> {
    let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    ParquetReader::new(f).finish().ctx(|| format!("reading {}", path.display()))
}

fn strs(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<String>, LogError> {
    let c = df.column(name).ctx(|| format!("{}: no column {name}", path.display()))?;
    let ca = c.str().ctx(|| format!("{}: column {name}", path.display()))?;
    Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or("").to_string()).collect())
}

fn times(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<Option<DateTime<Utc>>>, LogError> {
    let c = df.column(name).ctx(|| format!("{}: no column {name}", path.display()))?;
    let c = c.cast(&DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)))?;
    let phys = c.datetime().ctx(|| format!("{}: column {name}", path.display()))?.physical().clone();
    Ok((0..phys.len()).map(|i| phys.get(i).and_then(DateTime::<Utc>::from_timestamp_micros)).collect())
}

fn floats(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<f64>, LogError> {
    let c = df.column(name).ctx(|| format!("{}: no column {name}", path.display()))?;
    let ca = c.f64().ctx(|| format!("{}: column {name}", path.display()))?;
    Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or(f64::NAN)).collect())
}

/// Every decision and outcome of a log, in the order written.
pub fn read_target(target: &LogTarget) -> Result<(Vec<DecisionRecord>, Vec<OutcomeRecord>), LogError> {
    match target {
        LogTarget::Files(dir) => read(dir),
        LogTarget::Postgres(url) => postgres::read(url),
    }
}

/// Every decision and outcome under a log directory, in file order.
pub fn read(dir: &Path) -> Result<(Vec<DecisionRecord>, Vec<OutcomeRecord>), LogError> {
    let mut decisions = Vec::new();
    for path in parts(&dir.join("decisions"))? {
        let df = read_part(&path)?;
        let t = times(&df, "decided_at", &path)?;
        let retry_at = times(&df, "retry_at", &path)?;
        let [source, payment_id, customer_id, model_version, arm, action, next_step, channel] =
            ["source", "payment_id", "customer_id", "model_version", "arm", "action", "next_step", "channel"].map(|n| strs(&df, n, &path));
        let (p_success, p_recovery, propensity) =
            (floats(&df, "p_success", &path)?, floats(&df, "p_recovery", &path)?, floats(&df, "propensity", &path)?);
        let request = df.column("request").ctx(|| format!("{}: no column request", path.display()))?.binary()?.clone();
        let (source, payment_id, customer_id, model_version, arm, action, next_step, channel) =
            (source?, payment_id?, customer_id?, model_version?, arm?, action?, next_step?, channel?);
        for i in 0..request.len() {
            let req = request.get(i);
            decisions.push(DecisionRecord {
                decided_at: t[i].ctx(|| format!("{}: row {i}: no decided_at", path.display()))?,
                source: source[i].clone(),
                payment_id: payment_id[i].clone(),
                customer_id: customer_id[i].clone(),
                model_version: model_version[i].clone(),
                arm: arm[i].clone(),
                action: action[i].clone(),
                next_step: next_step[i].clone(),
                retry_at: retry_at[i],
                channel: channel[i].clone(),
                p_success: p_success[i],
                p_recovery: p_recovery[i],
                propensity: propensity[i],
                request: req.unwrap_or_default().to_vec(),
            });
        }
    }
    let mut outcomes = Vec::new();
    for path in parts(&dir.join("outcomes"))? {
        let df = read_part(&path)?;
        let reported = times(&df, "reported_at", &path)?;
        let attempted = times(&df, "attempted_at", &path)?;
        let [payment_id, customer_id, attempt_id, outcome, decline_code, network_code, advice_code, channel] =
            ["payment_id", "customer_id", "attempt_id", "outcome", "decline_code", "network_code", "advice_code", "channel"]
                .map(|n| strs(&df, n, &path));
        let (payment_id, customer_id, attempt_id, outcome, decline_code, network_code, advice_code, channel) =
            (payment_id?, customer_id?, attempt_id?, outcome?, decline_code?, network_code?, advice_code?, channel?);
        let number = df.column("attempt_number")?.i64()?.clone();
        let updated = df.column("payment_method_updated")?.bool()?.clone();
        for i in 0..df.height() {
            outcomes.push(OutcomeRecord {
                reported_at: reported[i].ctx(|| format!("{}: row {i}: no reported_at", path.display()))?,
                payment_id: payment_id[i].clone(),
                customer_id: customer_id[i].clone(),
                attempt_id: attempt_id[i].clone(),
                attempt_number: u32::try_from(number.get(i).unwrap_or(-1))
                    .ctx(|| format!("{}: row {i}: attempt_number", path.display()))?,
                attempted_at: attempted[i].ctx(|| format!("{}: row {i}: no attempted_at", path.display()))?,
                outcome: outcome[i].clone(),
                decline_code: decline_code[i].clone(),
                network_code: network_code[i].clone(),
                advice_code: advice_code[i].clone(),
                channel: channel[i].clone(),
                payment_method_updated: updated.get(i).unwrap_or(false),
            });
        }
    }
    Ok((decisions, outcomes))
}

/// What [`to_history`] did, for the command's summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FromLogReport {
    pub decisions: usize,
    pub outcomes: usize,
    pub payments: usize,
    pub rows: usize,
    /// Retries that followed a recoup decision (its hour and channel): they carry its propensity.
    pub retries_following_a_decision: usize,
    /// Retries made otherwise (the platform did something else): no propensity.
    pub retries_without_a_decision: usize,
    /// Outcomes for payments recoup never decided on (no payment facts): left out.
    pub outcomes_without_a_decision: usize,
    /// Reports whose time or outcome differ from an earlier report or request's copy of the
    /// same attempt: the latest report kept.
    pub conflicting_reports: usize,
    /// Payments left out because their attempts contradict each other, with the first reason.
    pub inconsistent_payments: usize,
    pub first_inconsistency: Option<String>,
    /// Retries logged without a message of their own after an ask the platform sent since the
    /// attempt before (a request's `asks`): the ask is kept as their `channel`, the message
    /// sent since the previous attempt (contract v1), so a retrain sees what asks do.
    #[serde(default)]
    pub asks_as_messages: usize,
    /// Retries after a decision asked because the payer had updated the payment method
    /// (its request's `payment_method_updated`): marked `update_triggered`, since the
    /// interval before them ended with the update, not when a schedule said.
    #[serde(default)]
    pub update_triggered: usize,
}

/// One history row before it becomes a column.
struct Row {
    attempt_id: String,
    attempt_number: u32,
    at: DateTime<Utc>,
    outcome: String,
    decline_code: String,
    network_code: String,
    advice_code: String,
    channel: String,
    updated: bool,
    propensity: Option<f64>,
    update_triggered: bool,
}

/// Join decisions and outcomes into contract-v1 history (a DataFrame with the
/// contract's columns). Per payment, the facts and the earlier attempts come from
/// its latest decision's request, the later attempts from the reports; a retry
/// carries the propensity of the decision before it (the latest made strictly
/// before it) when it followed that decision (within the decided hour, with the
/// decided message), and none otherwise.
pub fn to_history(decisions: &[DecisionRecord], outcomes: &[OutcomeRecord]) -> Result<(DataFrame, FromLogReport), LogError> {
    let mut report = FromLogReport { decisions: decisions.len(), outcomes: outcomes.len(), ..Default::default() };
    let mut by_payment: HashMap<&str, Vec<&DecisionRecord>> = HashMap::new();
    for d in decisions.iter().filter(|d| !d.request.is_empty()) {
        by_payment.entry(d.payment_id.as_str()).or_default().push(d);
    }
    let mut reported: HashMap<&str, Vec<&OutcomeRecord>> = HashMap::new();
    for o in outcomes {
        if by_payment.contains_key(o.payment_id.as_str()) {
            reported.entry(o.payment_id.as_str()).or_default().push(o);
        } else {
            report.outcomes_without_a_decision += 1;
        }
    }
    let mut ids: Vec<&str> = by_payment.keys().copied().collect();
    ids.sort_unstable();
    let mut cols: Cols = Cols::default();
    for pid in ids {
        let mut ds = by_payment.remove(pid).unwrap_or_default();
        ds.sort_by_key(|d| d.decided_at);
        let Some(latest) = ds.last() else { continue };
        // Every request of the payment decoded once: the latest gives its facts, all give its asks and updates.
        let requests: Vec<Result<v1::DecideRequest, prost::DecodeError>> =
            ds.iter().map(|d| v1::DecideRequest::decode(d.request.as_slice())).collect();
        let req = match requests.last() {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                note_inconsistent(&mut report, format!("payment {pid}: its logged request does not decode: {e}"));
                continue;
            }
            None => continue,
        };
        let payment = req.payment.clone().unwrap_or_default();
        let mut rows: Vec<Row> = req
            .attempts
            .iter()
            .enumerate()
            .filter_map(|(k, a)| {
                let at = crate::api::time_of(&a.attempted_at)?;
                Some(Row {
                    attempt_id: format!("{pid}#{k}"),
                    attempt_number: k as u32,
                    at,
                    outcome: "failed".into(),
                    decline_code: a.decline_code.clone(),
                    network_code: a.network_code.clone(),
                    advice_code: a.advice_code.clone(),
                    channel: a.channel.clone(),
                    updated: a.payment_method_updated,
                    propensity: None,
                    update_triggered: false,
                })
            })
            .collect();
        let mut reps = reported.remove(pid).unwrap_or_default();
        reps.sort_by_key(|o| o.reported_at);
        for o in reps {
            let row = Row {
                attempt_id: if o.attempt_id.is_empty() { format!("{pid}#{}", o.attempt_number) } else { o.attempt_id.clone() },
                attempt_number: o.attempt_number,
                at: o.attempted_at,
                outcome: o.outcome.clone(),
                decline_code: o.decline_code.clone(),
                network_code: o.network_code.clone(),
                advice_code: o.advice_code.clone(),
                channel: o.channel.clone(),
                updated: o.payment_method_updated,
                propensity: None,
                update_triggered: false,
            };
            // The platform's own report of an attempt wins over the copy in a request.
            match rows.iter_mut().find(|r| r.attempt_number == o.attempt_number) {
                Some(r) => {
                    if r.at != row.at || r.outcome != row.outcome {
                        report.conflicting_reports += 1;
                    }
                    *r = row;
                }
                None => rows.push(row),
            }
        }
        rows.sort_by_key(|r| r.attempt_number);
        if let Some(why) = inconsistency(&rows) {
            note_inconsistent(&mut report, format!("payment {pid}: {why}"));
            continue;
        }
        // The propensity of the decision each retry followed.
        for r in rows.iter_mut().filter(|r| r.attempt_number > 0) {
            // The latest decision made before the retry (one made at its very instant came after it).
            let before = ds.iter().rev().find(|d| d.decided_at < r.at);
            let followed = before.filter(|d| {
                d.action == "RETRY"
                    && d.retry_at.is_some_and(|t| (r.at - t).num_minutes().abs() < 60)
                    && channel_name(&d.channel) == channel_name(&r.channel)
            });
            match followed {
                Some(d) if d.propensity.is_finite() && d.propensity > 0.0 => {
                    r.propensity = Some(d.propensity.min(1.0));
                    report.retries_following_a_decision += 1;
                }
                _ => report.retries_without_a_decision += 1,
            }
        }
        report.asks_as_messages += asks_as_messages(&requests, &mut rows);
        report.update_triggered += mark_update_triggered(&ds, &requests, &mut rows);
        let customer = [latest.customer_id.as_str(), payment.customer_id.as_str()]
            .into_iter()
            .find(|c| !c.is_empty())
            .map_or_else(|| format!("payment:{pid}"), str::to_string);
        report.payments += 1;
        report.rows += rows.len();
        for r in rows {
            cols.push(pid, &customer, &payment, r);
        }
    }
    Ok((cols.frame()?, report))
}

/// Mark the retries whose decision the platform asked for because the payer had updated the
/// payment method: the latest decision before the retry, made after the attempt before it,
/// whose request says `payment_method_updated`. Such a retry waited for the update, so the
/// interval before it measures when the payer updated, not a schedule (the ask estimator
/// leaves it out, `src/asks.rs`). Returns how many were marked.
fn mark_update_triggered(
    decisions: &[&DecisionRecord],
    requests: &[Result<v1::DecideRequest, prost::DecodeError>],
    rows: &mut [Row],
) -> usize {
    let mut marked = 0;
    for k in 1..rows.len() {
        let (prev, at) = (rows[k - 1].at, rows[k].at);
        let Some(j) = decisions.iter().rposition(|d| d.decided_at < at) else { continue };
        if decisions[j].decided_at > prev && requests[j].as_ref().is_ok_and(|r| r.payment_method_updated) {
            rows[k].update_triggered = true;
            marked += 1;
        }
    }
    marked
}

/// The asks the platform sent (every request lists those sent so far that no retry followed)
/// as the channel of the next attempt that sent no message of its own: contract v1 has no row
/// for a message without an attempt, and its `channel` is the message sent since the previous
/// attempt. Without it a retrain reads every update after an ask as one made unasked. Run after
/// the propensities: a retry's stays that of the decision it followed (its hour and message).
/// Returns how many attempts took an ask's channel.
fn asks_as_messages(requests: &[Result<v1::DecideRequest, prost::DecodeError>], rows: &mut [Row]) -> usize {
    let asks: Vec<(DateTime<Utc>, String)> = requests
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|r| &r.asks)
        .filter_map(|a| Some((crate::api::time_of(&a.sent_at)?, channel_name(&a.channel))))
        .filter(|(_, c)| c != "none")
        .collect();
    let mut kept = 0;
    for i in 1..rows.len() {
        if channel_name(&rows[i].channel) != "none" {
            continue;
        }
        let (from, to) = (rows[i - 1].at, rows[i].at);
        if let Some((_, c)) = asks.iter().filter(|(t, _)| *t > from && *t <= to).max_by_key(|(t, _)| *t) {
            rows[i].channel = c.clone();
            kept += 1;
        }
    }
    kept
}

fn note_inconsistent(report: &mut FromLogReport, why: String) {
    report.inconsistent_payments += 1;
    report.first_inconsistency.get_or_insert(why);
}

/// Why a payment's rows break the contract's order rules, if they do.
fn inconsistency(rows: &[Row]) -> Option<String> {
    for w in rows.windows(2) {
        if w[1].at <= w[0].at {
            return Some(format!("attempt {} is not after attempt {}", w[1].attempt_number, w[0].attempt_number));
        }
    }
    let last = rows.len().checked_sub(1)?;
    rows.iter()
        .position(|r| r.outcome == "succeeded")
        .filter(|&i| i != last)
        .map(|i| format!("attempt {} succeeded but attempts follow it", rows[i].attempt_number))
}

/// `CHANNEL_EMAIL` / `email` / `` → `email` / `email` / `none`.
pub(crate) fn channel_name(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_prefix("channel_").unwrap_or(&s).to_string();
    if s.is_empty() || s == "unspecified" {
        "none".into()
    } else {
        s
    }
}

#[derive(Default)]
struct Cols {
    attempt_id: Vec<String>,
    payment_id: Vec<String>,
    customer_id: Vec<String>,
    attempted_at: Vec<Option<i64>>,
    attempt_number: Vec<i64>,
    amount_minor: Vec<i64>,
    text: [Vec<Option<String>>; 12],
    updated: Vec<bool>,
    tenure_days: Vec<Option<i64>>,
    propensity: Vec<Option<f64>>,
    update_triggered: Vec<bool>,
}

const TEXT: [&str; 12] = [
    "currency",
    "payment_method",
    "card_brand",
    "card_funding",
    "country",
    "timezone",
    "outcome",
    "decline_code",
    "network_code",
    "advice_code",
    "channel",
    "billing_interval",
];

impl Cols {
    fn push(&mut self, pid: &str, customer: &str, p: &v1::Payment, r: Row) {
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        self.attempt_id.push(r.attempt_id);
        self.payment_id.push(pid.to_string());
        self.customer_id.push(customer.to_string());
        self.attempted_at.push(Some(r.at.timestamp_micros()));
        self.attempt_number.push(r.attempt_number as i64);
        self.amount_minor.push(p.amount_minor);
        let channel = opt(&r.channel).map(|c| channel_name(&c));
        let values = [
            opt(&p.currency),
            opt(&p.payment_method),
            opt(&p.card_brand),
            opt(&p.card_funding),
            opt(&p.country),
            opt(&p.timezone),
            Some(r.outcome),
            opt(&r.decline_code),
            opt(&r.network_code),
            opt(&r.advice_code),
            channel,
            opt(&p.billing_interval),
        ];
        for (c, v) in self.text.iter_mut().zip(values) {
            c.push(v);
        }
        self.updated.push(r.updated);
        self.tenure_days.push(p.tenure_days.map(i64::from));
        self.propensity.push(r.propensity);
        self.update_triggered.push(r.update_triggered);
    }

    fn frame(self) -> PolarsResult<DataFrame> {
        let n = self.attempt_id.len();
        let mut cols = vec![
            Column::new("attempt_id".into(), self.attempt_id),
            Column::new("payment_id".into(), self.payment_id),
            Column::new("customer_id".into(), self.customer_id),
            time_column("attempted_at", self.attempted_at),
            Column::new("attempt_number".into(), self.attempt_number),
            Column::new("amount_minor".into(), self.amount_minor),
        ];
        for (name, v) in TEXT.iter().zip(self.text) {
            cols.push(Column::new((*name).into(), v));
        }
        cols.push(Column::new("payment_method_updated".into(), self.updated));
        cols.push(Column::new("tenure_days".into(), self.tenure_days));
        cols.push(Column::new("propensity".into(), self.propensity));
        cols.push(Column::new("update_triggered".into(), self.update_triggered));
        DataFrame::new(n, cols)
    }
}

/// One arm of the holdout experiment, over the payments whose dunning window had closed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArmReport {
    /// `model`, or `control:<schedule>`.
    pub arm: String,
    pub payments: usize,
    pub recovered: usize,
    /// Share of payments recovered, with its bootstrap 95 % interval.
    pub recovery_rate: crate::backtest::Estimate,
    /// Recovered amount per payment (minor units, mixed currencies).
    pub revenue_per_payment: crate::backtest::Estimate,
    /// Recovered amount less the attempt and message costs, per payment.
    pub net_per_payment: crate::backtest::Estimate,
    pub retries_per_payment: f64,
    pub messages_per_payment: f64,
}

/// `recoup report live`: per arm, and each arm's difference from the model's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveReport {
    pub as_of: DateTime<Utc>,
    pub window_days: i64,
    /// Payments counted: their window closed by `as_of`.
    pub closed_payments: usize,
    /// Payments left out: still inside their window at `as_of`.
    pub open_payments: usize,
    pub arms: Vec<ArmReport>,
    /// Per control arm: the model's arm minus it (net per payment, recovery rate), with
    /// intervals from independent bootstraps of the two arms.
    pub model_minus_control: Vec<(String, crate::backtest::Estimate, crate::backtest::Estimate)>,
}

/// Per payment of the log: (arm, amount, recovered, retries, message cost).
struct PaymentOutcome {
    arm: String,
    amount: f64,
    recovered: bool,
    retries: u32,
    messages: u32,
    message_cost: f64,
}

/// The holdout estimate from a decision log: a payment belongs to the arm of its first
/// decision; it counts once its dunning window (`cfg.dunning_window_days` after the
/// original charge) closed by `as_of` (default: the log's latest time); recovered when a
/// reported attempt succeeded; net = recovered amount − `cfg`'s attempt cost per reported
/// retry − its message cost per reported message. Intervals: `resamples` bootstrap
/// resamples of each arm's payments.
pub fn live_report(
    decisions: &[DecisionRecord],
    outcomes: &[OutcomeRecord],
    cfg: &crate::engine::EngineConfig,
    as_of: Option<DateTime<Utc>>,
    resamples: usize,
) -> LiveReport {
    use rand::{Rng, SeedableRng};
    let latest = decisions.iter().map(|d| d.decided_at).chain(outcomes.iter().map(|o| o.reported_at.max(o.attempted_at))).max();
    let as_of = as_of.or(latest).unwrap_or_else(Utc::now);
    let mut first: HashMap<&str, &DecisionRecord> = HashMap::new();
    for d in decisions.iter().filter(|d| !d.request.is_empty()) {
        let e = first.entry(d.payment_id.as_str()).or_insert(d);
        if d.decided_at < e.decided_at {
            *e = d;
        }
    }
    let mut reports: HashMap<&str, Vec<&OutcomeRecord>> = HashMap::new();
    for o in outcomes {
        reports.entry(o.payment_id.as_str()).or_default().push(o);
    }
    let window = chrono::Duration::days(cfg.dunning_window_days);
    let (mut payments, mut open) = (Vec::new(), 0usize);
    let mut ids: Vec<&str> = first.keys().copied().collect();
    ids.sort_unstable();
    for pid in ids {
        let d = first[pid];
        let Ok(req) = v1::DecideRequest::decode(d.request.as_slice()) else { continue };
        let failed = req.attempts.first().and_then(|a| crate::api::time_of(&a.attempted_at)).unwrap_or(d.decided_at);
        if failed + window > as_of {
            open += 1;
            continue;
        }
        let mut reps: Vec<&OutcomeRecord> = reports.remove(pid).unwrap_or_default().into_iter().filter(|o| o.attempt_number > 0).collect();
        reps.sort_by_key(|o| o.attempt_number);
        reps.dedup_by_key(|o| o.attempt_number);
        let messages: Vec<crate::domain::Channel> = reps
            .iter()
            .filter_map(|o| o.channel.parse::<crate::domain::Channel>().ok())
            .filter(|c| *c != crate::domain::Channel::None)
            .collect();
        payments.push(PaymentOutcome {
            arm: d.arm.clone(),
            amount: req.payment.as_ref().map_or(0.0, |p| p.amount_minor as f64),
            recovered: reps.iter().any(|o| o.outcome == "succeeded"),
            retries: reps.len() as u32,
            messages: messages.len() as u32,
            message_cost: messages.iter().map(|c| cfg.message_cost(*c)).sum(),
        });
    }
    let mut arms: Vec<String> = payments.iter().map(|p| p.arm.clone()).collect();
    arms.sort();
    arms.dedup();
    // Metrics per payment: recovered, revenue, net.
    let metrics = |p: &PaymentOutcome| {
        let revenue = if p.recovered { p.amount } else { 0.0 };
        [p.recovered as u8 as f64, revenue, revenue - cfg.attempt_cost_minor * p.retries as f64 - p.message_cost]
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut boots: HashMap<String, Vec<[f64; 3]>> = HashMap::new();
    let mut out = Vec::new();
    for arm in &arms {
        let ps: Vec<&PaymentOutcome> = payments.iter().filter(|p| &p.arm == arm).collect();
        let n = ps.len();
        let rows: Vec<[f64; 3]> = ps.iter().map(|p| metrics(p)).collect();
        let mean = |idx: &mut dyn Iterator<Item = usize>| {
            let mut m = [0.0; 3];
            for i in idx {
                for k in 0..3 {
                    m[k] += rows[i][k] / n as f64;
                }
            }
            m
        };
        let point = mean(&mut (0..n));
        let boot: Vec<[f64; 3]> = (0..resamples).map(|_| mean(&mut (0..n).map(|_| rng.random_range(0..n)))).collect();
        let est = |k: usize| crate::backtest::interval(boot.iter().map(|b| b[k]).collect(), point[k]);
        out.push(ArmReport {
            arm: arm.clone(),
            payments: n,
            recovered: ps.iter().filter(|p| p.recovered).count(),
            recovery_rate: est(0),
            revenue_per_payment: est(1),
            net_per_payment: est(2),
            retries_per_payment: ps.iter().map(|p| p.retries as f64).sum::<f64>() / n as f64,
            messages_per_payment: ps.iter().map(|p| p.messages as f64).sum::<f64>() / n as f64,
        });
        boots.insert(arm.clone(), boot);
    }
    let mut diffs = Vec::new();
    if let (Some(model), Some(mb)) = (out.iter().find(|a| a.arm == "model"), boots.get("model")) {
        for c in out.iter().filter(|a| a.arm != "model") {
            let cb = &boots[&c.arm];
            let d = |k: usize, point: f64| crate::backtest::interval(mb.iter().zip(cb).map(|(m, c)| m[k] - c[k]).collect(), point);
            diffs.push((
                c.arm.clone(),
                d(2, model.net_per_payment.value - c.net_per_payment.value),
                d(0, model.recovery_rate.value - c.recovery_rate.value),
            ));
        }
    }
    LiveReport {
        as_of,
        window_days: cfg.dunning_window_days,
        closed_payments: payments.len(),
        open_payments: open,
        arms: out,
        model_minus_control: diffs,
    }
}

/// Calibration of the live model where it acted: one decline class's retries that the model arm
/// chose and whose outcome was reported, next to the same class on the model's held-out split.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveCalibration {
    /// A decline class, or `all`.
    pub class: String,
    pub retries: usize,
    /// Mean p_success answered, and the share that succeeded.
    pub predicted: f64,
    pub realised: f64,
    /// Expected calibration error over 10 bins of p_success.
    pub ece: f64,
    /// The held-out test split of the model that answered (`metrics.json`): examples, mean
    /// predicted, observed; `None` when the model's metrics lack the class.
    pub held_out: Option<(usize, f64, f64)>,
}

/// Each RETRY of the model arm whose retry was reported as followed (within the hour it named,
/// after the message it named, as the live Prometheus calibration judges), with its class and
/// outcome. A retry made at another time or channel is not the model's prediction.
fn decided_retries<'a>(
    decisions: &'a [DecisionRecord],
    outcomes: &[OutcomeRecord],
) -> Vec<(&'a DecisionRecord, crate::declines::DeclineClass, bool)> {
    let mut reported: HashMap<(&str, u32), &OutcomeRecord> = HashMap::new();
    for o in outcomes {
        reported.insert((o.payment_id.as_str(), o.attempt_number), o);
    }
    decisions
        .iter()
        .filter(|d| d.arm == "model" && d.action == "RETRY" && !d.request.is_empty())
        .filter_map(|d| {
            let req = v1::DecideRequest::decode(d.request.as_slice()).ok()?;
            let engine = crate::api::to_engine(&req, d.decided_at).ok()?;
            let class = engine.attempts.last()?.decline.class();
            let o = reported.get(&(d.payment_id.as_str(), req.attempts.len() as u32))?;
            let channel = if o.channel.is_empty() { "none" } else { o.channel.as_str() };
            let followed = d.retry_at.is_some_and(|t| (o.attempted_at - t).num_minutes().abs() < 60) && channel == channel_name(&d.channel);
            followed.then_some((d, class, o.outcome == "succeeded"))
        })
        .collect()
}

/// [`LiveCalibration`] per decline class with reported retries, then `all`; `held_out` reads
/// the answering model's test-split calibration per class (both retry stages pooled).
pub fn live_calibration(
    decisions: &[DecisionRecord],
    outcomes: &[OutcomeRecord],
    held_out: Option<&[crate::train::CellCalibration]>,
) -> Vec<LiveCalibration> {
    let rows = decided_retries(decisions, outcomes);
    let one = |class: &str, rs: &[(f64, bool)]| {
        let n = rs.len();
        let mut bins = [(0usize, 0.0f64, 0.0f64); 10];
        for &(p, y) in rs {
            let b = &mut bins[((p * 10.0) as usize).min(9)];
            b.0 += 1;
            b.1 += p;
            b.2 += y as u8 as f64;
        }
        let ece = bins.iter().filter(|b| b.0 > 0).map(|b| (b.1 - b.2).abs() / n as f64).sum();
        let cells: Vec<&crate::train::CellCalibration> =
            held_out.unwrap_or(&[]).iter().filter(|c| class == "all" || c.class == class).collect();
        let m: usize = cells.iter().map(|c| c.examples).sum();
        LiveCalibration {
            class: class.to_string(),
            retries: n,
            predicted: rs.iter().map(|r| r.0).sum::<f64>() / n as f64,
            realised: rs.iter().filter(|r| r.1).count() as f64 / n as f64,
            ece,
            held_out: (m > 0).then(|| {
                let w = |f: &dyn Fn(&crate::train::CellCalibration) -> f64| {
                    cells.iter().map(|c| c.examples as f64 * f(c)).sum::<f64>() / m as f64
                };
                (m, w(&|c| c.mean_predicted), w(&|c| c.observed))
            }),
        }
    };
    let mut out = Vec::new();
    for class in <crate::declines::DeclineClass as strum::VariantArray>::VARIANTS {
        let rs: Vec<(f64, bool)> = rows.iter().filter(|r| r.1 == *class).map(|r| (r.0.p_success, r.2)).collect();
        if !rs.is_empty() {
            out.push(one(<&str>::from(*class), &rs));
        }
    }
    if !rows.is_empty() {
        out.push(one("all", &rows.iter().map(|r| (r.0.p_success, r.2)).collect::<Vec<_>>()));
    }
    out
}

/// The key features' population over the log's payments (each at its first decision with a
/// request), and the model version that answered most of them.
pub fn live_population(decisions: &[DecisionRecord]) -> (Option<String>, crate::drift::Population) {
    let mut first: HashMap<&str, &DecisionRecord> = HashMap::new();
    for d in decisions.iter().filter(|d| !d.request.is_empty()) {
        let e = first.entry(d.payment_id.as_str()).or_insert(d);
        if d.decided_at < e.decided_at {
            *e = d;
        }
    }
    let mut pop = crate::drift::Population::default();
    let mut versions: HashMap<&str, usize> = HashMap::new();
    for d in first.values() {
        let Ok(req) = v1::DecideRequest::decode(d.request.as_slice()) else { continue };
        let Ok(engine) = crate::api::to_engine(&req, d.decided_at) else { continue };
        let Some(first_failure) = engine.attempts.first() else { continue };
        pop.add(&crate::drift::levels(&engine.facts, first_failure.decline.class()));
        *versions.entry(d.model_version.as_str()).or_default() += 1;
    }
    let version = versions.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0))).map(|(v, _)| v.to_string());
    (version, pop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_767_225_600 + h * 3600, 0).expect("a time")
    }

    fn request(pid: &str, attempts: &[(i64, &str)]) -> Vec<u8> {
        v1::DecideRequest {
            payment: Some(v1::Payment {
                payment_id: pid.into(),
                customer_id: "c1".into(),
                amount_minor: 1999,
                currency: "USD".into(),
                payment_method: "card".into(),
                card_brand: "visa".into(),
                country: "US".into(),
                ..Default::default()
            }),
            attempts: attempts
                .iter()
                .map(|&(h, code)| v1::Attempt {
                    attempted_at: Some(prost_types::Timestamp { seconds: t(h).timestamp(), nanos: 0 }),
                    decline_code: code.into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn decision(pid: &str, at: i64, retry_at: i64, channel: &str, propensity: f64, attempts: &[(i64, &str)]) -> DecisionRecord {
        DecisionRecord {
            decided_at: t(at),
            source: "decide".into(),
            payment_id: pid.into(),
            customer_id: "c1".into(),
            model_version: "m1".into(),
            arm: "model".into(),
            action: "RETRY".into(),
            next_step: "NEXT_STEP_RETRY".into(),
            retry_at: Some(t(retry_at)),
            channel: channel.into(),
            p_success: 0.4,
            p_recovery: 0.7,
            propensity,
            request: request(pid, attempts),
        }
    }

    /// `d` with its logged request changed by `edit`.
    fn edited(mut d: DecisionRecord, edit: impl FnOnce(&mut v1::DecideRequest)) -> DecisionRecord {
        let mut r = v1::DecideRequest::decode(d.request.as_slice()).expect("decodes");
        edit(&mut r);
        d.request = r.encode_to_vec();
        d
    }

    fn outcome(pid: &str, n: u32, at: i64, outcome: &str, code: &str, channel: &str) -> OutcomeRecord {
        OutcomeRecord {
            reported_at: t(at + 1),
            payment_id: pid.into(),
            customer_id: String::new(),
            attempt_id: String::new(),
            attempt_number: n,
            attempted_at: t(at),
            outcome: outcome.into(),
            decline_code: code.into(),
            network_code: String::new(),
            advice_code: String::new(),
            channel: channel.into(),
            payment_method_updated: false,
        }
    }

    /// The decisions' writer loop on a thread of normal priority (the server's idle-priority
    /// one may wait for spare CPU by design, which a busy test runner does not have), writing
    /// files under `dir` every `flush_every`: its shards, counters, control channel and thread.
    fn decisions_writer(dir: &Path, flush_every: Duration) -> (Arc<Shards>, LogCounters, SyncSender<Entry>, std::thread::JoinHandle<()>) {
        let mut cfg = LogConfig::new(dir.to_path_buf());
        cfg.flush_every = flush_every;
        let sink = Sink::open(&cfg.target).expect("opens");
        let shards = Arc::new(Shards::new(cfg.queue));
        let counters = LogCounters::new();
        let (tx, rx) = sync_channel(1);
        let (s, c) = (shards.clone(), counters.clone());
        let thread = std::thread::spawn(move || decision_writer(&s, rx, cfg, c, sink));
        (shards, counters, tx, thread)
    }

    /// The durability bound holds while decisions keep coming: the writer writes every
    /// `flush_every`, not only once the handlers pause.
    #[test]
    fn a_steady_stream_of_decisions_is_written_every_flush_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (shards, _, tx, thread) = decisions_writer(dir.path(), Duration::from_millis(100));
        let d = decision("p1", 1, 30, "CHANNEL_EMAIL", 0.9, &[(0, "insufficient_funds")]);
        let start = Instant::now();
        let (mut sent, mut files_while_streaming) = (0, 0);
        while start.elapsed() < Duration::from_millis(900) {
            for _ in 0..10 {
                assert!(shards.push(&d.as_decision()), "the writer keeps up");
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
            files_while_streaming = parts(&dir.path().join("decisions")).expect("parts").len();
        }
        assert!(files_while_streaming >= 3, "{files_while_streaming} files written in 0.9 s of decisions every 1 ms, flushing every 0.1 s");
        tx.send(Entry::Close).expect("closes");
        thread.join().expect("the writer ends");
        assert!(!shards.push(&d.as_decision()), "closed");
        let (decisions, _) = read(dir.path()).expect("reads");
        assert_eq!(decisions.len(), sent);
        assert!(decisions.iter().all(|r| *r == d));
    }

    /// Decisions the writer cannot write when it stops are counted as dropped, not lost
    /// silently.
    #[test]
    fn decisions_unwritable_at_close_are_counted_as_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (shards, counters, tx, thread) = decisions_writer(dir.path(), Duration::from_secs(3600));
        let d = decision("p1", 1, 30, "CHANNEL_EMAIL", 0.9, &[(0, "insufficient_funds")]);
        for _ in 0..3 {
            assert!(shards.push(&d.as_decision()));
        }
        // Where the files go is now a file: every write fails.
        let decisions = dir.path().join("decisions");
        std::fs::remove_dir_all(&decisions).expect("removes");
        std::fs::write(&decisions, b"not a directory").expect("writes");
        tx.send(Entry::Close).expect("closes");
        thread.join().expect("the writer ends");
        assert_eq!((counters.decisions_written.get(), counters.decisions_dropped.get(), counters.write_errors.get()), (0, 3, 1));
    }

    /// Decisions and reports written by the writer read back as they were, and join into
    /// history the contract loader accepts, with the propensity only on the retry that
    /// followed its decision.
    #[test]
    fn written_decisions_and_outcomes_join_into_loadable_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = LogConfig::new(dir.path().to_path_buf());
        cfg.rows_per_file = 2;
        let (log, writer) = DecisionLog::open(cfg, LogCounters::new()).expect("opens");
        let d1 = decision("p1", 1, 30, "CHANNEL_EMAIL", 0.9, &[(0, "insufficient_funds")]);
        let d2 = decision("p1", 31, 80, "CHANNEL_NONE", 0.25, &[(0, "insufficient_funds"), (30, "insufficient_funds")]);
        let d3 = decision("p2", 2, 20, "CHANNEL_NONE", 0.5, &[(0, "do_not_honor")]);
        for d in [&d1, &d2, &d3] {
            log.decision(&d.as_decision());
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let reports = vec![
            outcome("p1", 1, 30, "failed", "insufficient_funds", "email"),
            outcome("p1", 2, 80, "succeeded", "", "none"),
            // p2's retry came a day late: not the decision's.
            outcome("p2", 1, 44, "failed", "do_not_honor", "none"),
            outcome("nobody", 1, 5, "failed", "do_not_honor", "none"),
        ];
        rt.block_on(log.outcomes(reports.clone())).expect("written");
        drop(log);
        drop(writer);
        let (decisions, outcomes) = read(dir.path()).expect("reads");
        assert_eq!(decisions, vec![d1, d2, d3]);
        assert_eq!(outcomes, reports);
        assert!(parts(&dir.path().join("decisions")).expect("parts").len() >= 2, "rotated by rows_per_file");

        let (mut df, report) = to_history(&decisions, &outcomes).expect("joins");
        assert_eq!((report.payments, report.rows, report.outcomes_without_a_decision), (2, 5, 1), "{report:?}");
        assert_eq!((report.retries_following_a_decision, report.retries_without_a_decision), (2, 1), "{report:?}");
        let path = dir.path().join("history.parquet");
        ParquetWriter::new(File::create(&path).expect("create")).finish(&mut df).expect("write");
        let h = crate::history::load(&path, &Default::default()).expect("the contract loader accepts it");
        assert_eq!(h.attempts.len(), 5);
        let mut props: Vec<(u32, Option<f64>)> = h.attempts.iter().map(|a| (a.attempt_number, a.propensity)).collect();
        props.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.partial_cmp(&b.1).expect("numbers")));
        assert_eq!(props, vec![(0, None), (0, None), (1, None), (1, Some(0.9)), (2, Some(0.25))]);
        assert_eq!(h.attempts.iter().filter(|a| a.outcome == crate::domain::Outcome::Succeeded).count(), 1);
    }

    /// Two arms with known recovery rates: each arm's interval holds its truth, the
    /// difference's interval holds the true difference, and open payments are left out.
    #[test]
    fn live_report_brackets_each_arms_truth() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (mut decisions, mut outcomes) = (Vec::new(), Vec::new());
        for i in 0..4000 {
            let pid = format!("p{i}");
            let (arm, rate) = if i % 2 == 0 { ("model", 0.62) } else { ("control:2 weeks x8", 0.50) };
            let mut d = decision(&pid, 1, 30, "CHANNEL_NONE", 1.0, &[(0, "insufficient_funds")]);
            d.arm = arm.into();
            decisions.push(d);
            let ok = rng.random::<f64>() < rate;
            outcomes.push(outcome(
                &pid,
                1,
                30,
                if ok { "succeeded" } else { "failed" },
                if ok { "" } else { "insufficient_funds" },
                "none",
            ));
        }
        // One payment still in its window at the report's time.
        decisions.push(decision("late", 24 * 30, 24 * 30 + 5, "CHANNEL_NONE", 1.0, &[(24 * 30, "insufficient_funds")]));
        let cfg = crate::engine::EngineConfig::default();
        let r = live_report(&decisions, &outcomes, &cfg, Some(t(24 * 31)), 400);
        assert_eq!((r.closed_payments, r.open_payments), (4000, 1));
        let arm = |name: &str| r.arms.iter().find(|a| a.arm == name).expect("the arm");
        for (name, truth) in [("model", 0.62), ("control:2 weeks x8", 0.50)] {
            let e = arm(name).recovery_rate;
            assert!(e.lo < truth && truth < e.hi, "{name}: {e:?}");
            let rev = arm(name).revenue_per_payment;
            assert!((rev.value - 1999.0 * e.value).abs() < 1e-6, "{rev:?}");
            // One retry each: net = revenue − one attempt's cost.
            assert!((arm(name).net_per_payment.value - (rev.value - cfg.attempt_cost_minor)).abs() < 1e-6);
        }
        let (name, _, recovery) = &r.model_minus_control[0];
        assert_eq!(name, "control:2 weeks x8");
        assert!(recovery.lo < 0.12 && 0.12 < recovery.hi && recovery.lo > 0.0, "{recovery:?}");
    }

    /// An ask the platform sent between two attempts (a later request's `asks`; the platform
    /// clears them once a retry follows) is the channel of the next attempt that sent no
    /// message of its own, the contract's "message sent since the previous attempt"; an attempt
    /// with its own message keeps it, and one with no ask before it stays `none`.
    #[test]
    fn an_ask_the_platform_sent_is_the_message_before_the_next_attempt() {
        let ask = |h: i64, channel: &str| v1::Ask {
            sent_at: Some(prost_types::Timestamp { seconds: t(h).timestamp(), nanos: 0 }),
            channel: channel.into(),
        };
        let with_asks = |d: DecisionRecord, asks: Vec<v1::Ask>| edited(d, |r| r.asks = asks);
        // p1: expired card at 0; asked by email at 2 (DO_NOT_RETRY), the platform says at 40 the
        // method was updated (the request lists the ask), recoup retries at 41 with no message.
        let mut wait = decision("p1", 2, 2, "CHANNEL_NONE", 1.0, &[(0, "expired_card")]);
        wait.action = "DO_NOT_RETRY".into();
        wait.retry_at = None;
        let retry = with_asks(decision("p1", 40, 41, "CHANNEL_NONE", 0.8, &[(0, "expired_card")]), vec![ask(2, "email")]);
        // p2: an SMS ask at 3, then a retry at 30 with its own email: the retry's message stays.
        let p2 = with_asks(decision("p2", 20, 30, "CHANNEL_EMAIL", 0.7, &[(0, "expired_card")]), vec![ask(3, "sms")]);
        // p3: no ask; a second failed retry after an ask that came before the first retry.
        let p3a = with_asks(decision("p3", 1, 10, "CHANNEL_NONE", 0.6, &[(0, "expired_card")]), vec![ask(1, "email")]);
        let p3b = decision("p3", 11, 60, "CHANNEL_NONE", 0.6, &[(0, "expired_card"), (10, "expired_card")]);
        let outcomes = [
            outcome("p1", 1, 41, "succeeded", "", "none"),
            outcome("p2", 1, 30, "succeeded", "", "email"),
            outcome("p3", 1, 10, "failed", "expired_card", "none"),
            outcome("p3", 2, 60, "failed", "expired_card", "none"),
        ];
        let (df, report) = to_history(&[wait, retry, p2, p3a, p3b], &outcomes).expect("joins");
        assert_eq!(report.asks_as_messages, 2, "{report:?}");
        let col = |name: &str| -> Vec<String> {
            let c = df.column(name).expect("column").cast(&DataType::String).expect("text");
            let c = c.str().expect("text");
            (0..c.len()).map(|i| c.get(i).unwrap_or("").to_string()).collect()
        };
        let (pids, numbers, channels) = (col("payment_id"), col("attempt_number"), col("channel"));
        let channel_of = |pid: &str, n: &str| {
            (0..df.height()).find(|&i| pids[i] == pid && numbers[i] == n).map(|i| channels[i].clone()).expect("the row")
        };
        assert_eq!(channel_of("p1", "1"), "email", "the ask before the retry");
        assert_eq!(channel_of("p2", "1"), "email", "the retry's own message, not the SMS ask before it");
        assert_eq!(channel_of("p3", "1"), "email", "the ask before the first retry");
        assert_eq!(channel_of("p3", "2"), "none", "no ask since the first retry");
        // The propensity stays the retry decision's, which it followed (hour and no message).
        assert_eq!(report.retries_following_a_decision, 4, "{report:?}");
    }

    /// A retry the platform asked for because the payer had updated the payment method (the
    /// request's `payment_method_updated`, made after the attempt before) is `update_triggered`;
    /// a retry decided right after a failure is not, nor is one whose latest decision came
    /// before the attempt before it. The column loads back into the history.
    #[test]
    fn a_retry_decided_after_an_update_is_marked_update_triggered() {
        let updated = |d: DecisionRecord| edited(d, |r| r.payment_method_updated = true);
        // p1: expired card at 0, recoup waits; the payer updates, the platform asks at 40, retry at 41.
        let mut wait = decision("p1", 1, 1, "CHANNEL_NONE", 1.0, &[(0, "expired_card")]);
        wait.action = "DO_NOT_RETRY".into();
        wait.retry_at = None;
        let after_update = updated(decision("p1", 40, 41, "CHANNEL_NONE", 0.9, &[(0, "expired_card")]));
        // p2: funds decline at 0, retried at 30 as decided at 1 (no update).
        let scheduled = decision("p2", 1, 30, "CHANNEL_NONE", 0.8, &[(0, "insufficient_funds")]);
        // p3: an update decision at 5 for the retry at 10; the retry at 60 had no decision of its own.
        let p3 = updated(decision("p3", 5, 10, "CHANNEL_NONE", 0.9, &[(0, "expired_card")]));
        let outcomes = [
            outcome("p1", 1, 41, "succeeded", "", "none"),
            outcome("p2", 1, 30, "succeeded", "", "none"),
            outcome("p3", 1, 10, "failed", "expired_card", "none"),
            outcome("p3", 2, 60, "succeeded", "", "none"),
        ];
        let (mut df, report) = to_history(&[wait, after_update, scheduled, p3], &outcomes).expect("joins");
        assert_eq!(report.update_triggered, 2, "{report:?}");
        let pids = df.column("payment_id").expect("column").str().expect("text").clone();
        let numbers = df.column("attempt_number").expect("column").i64().expect("ints").clone();
        let marked = df.column("update_triggered").expect("column").bool().expect("bools").clone();
        let marked_of = |pid: &str, n: i64| {
            (0..df.height()).find(|&i| pids.get(i) == Some(pid) && numbers.get(i) == Some(n)).and_then(|i| marked.get(i))
        };
        assert_eq!(marked_of("p1", 1), Some(true), "retried after the update");
        assert_eq!(marked_of("p1", 0), Some(false), "the failed charge");
        assert_eq!(marked_of("p2", 1), Some(false), "retried on the decided schedule");
        assert_eq!(marked_of("p3", 1), Some(true), "decided after the update");
        assert_eq!(marked_of("p3", 2), Some(false), "its latest decision came before the attempt before it");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.parquet");
        crate::history::write_frame(&mut df, &path).expect("writes");
        let h = crate::history::load(&path, &crate::history::LoadOptions::default()).expect("loads");
        assert_eq!(h.attempts.iter().filter(|a| a.update_triggered).count(), 2);
    }

    /// A report that contradicts the order rules leaves its payment out, counted and explained.
    #[test]
    fn a_payment_whose_reports_contradict_is_left_out_with_a_reason() {
        let d = decision("p1", 1, 30, "CHANNEL_NONE", 0.9, &[(0, "insufficient_funds")]);
        let o = [outcome("p1", 1, 30, "succeeded", "", "none"), outcome("p1", 2, 50, "failed", "insufficient_funds", "none")];
        let (df, report) = to_history(&[d], &o).expect("joins");
        assert_eq!((df.height(), report.inconsistent_payments), (0, 1));
        assert!(
            report.first_inconsistency.as_deref().is_some_and(|w| w.contains("attempt 1 succeeded but attempts follow it")),
            "{report:?}"
        );
    }
}
