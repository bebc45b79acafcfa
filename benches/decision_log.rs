//! Decision-log benchmark (#24): what logging one decision costs the handler that answered
//! it, and what writing it costs the writer thread, apart from gRPC and the engine (the
//! grpc bench's `RECOUP_BENCH_COMPARE` measures the whole server).
//!
//! RECOUP_LOG_ROUNDS (6) rounds: RECOUP_LOG_THREADS (2) threads each append
//! RECOUP_LOG_DECISIONS (50,000) decisions answering the README's example request, as a
//! handler does (`DecisionLog::decision`: the texts copied, the request encoded), to a log
//! of Parquet files under `target/decision-log-bench/` (or RECOUP_LOG_TARGET, e.g. a
//! `postgres://` URL), flushed every 50 ms; then the bench waits until the writer has
//! written the round. The queue holds a round, so none is dropped. Prints per round the
//! appending threads' time per decision (wall, in a tight loop) and the writer thread's CPU
//! time per decision (its `schedstat`, Linux). The first round also grows the buffers (page
//! faults) that later rounds reuse, as a serving process does after its first seconds.
//!
//!     cargo bench --bench decision_log

mod common;

use std::time::{Duration, Instant};

use recoup::decision_log::{Decision, DecisionLog, LogConfig, LogCounters, LogTarget, Request};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time so far of this process's threads named `name`.
fn thread_cpu(name: &str) -> Duration {
    let ns: f64 = common::tasks_cpu("/proc/self/task").into_iter().filter(|(comm, _)| comm == name).map(|(_, ns)| ns).sum();
    Duration::from_nanos(ns as u64)
}

fn main() {
    let threads = env("RECOUP_LOG_THREADS", 2).max(1);
    let (per_round, rounds) = (env("RECOUP_LOG_DECISIONS", 50_000).max(1), env("RECOUP_LOG_ROUNDS", 6).max(2));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/decision-log-bench");
    let _ = std::fs::remove_dir_all(&dir);
    let target = std::env::var("RECOUP_LOG_TARGET").map_or_else(|_| LogTarget::Files(dir.clone()), |t| LogTarget::parse(&t));
    let mut cfg = LogConfig::at(target.clone());
    cfg.queue = (threads * per_round) as usize;
    cfg.flush_every = Duration::from_millis(50);
    let counters = LogCounters::new();
    let (log, writer) = DecisionLog::open(cfg, counters.clone()).expect("the decision log opens");
    let req = common::readme_request();
    let version = "20261202-221706-63e0a43d".to_string();
    println!(
        "decision log bench: {rounds} rounds of {threads} threads × {per_round} decisions of the README's example request ({} bytes encoded), to {}",
        prost::Message::encoded_len(&req),
        target.describe()
    );
    println!("{:<6} {:>22} {:>24}", "round", "append ns (per thread)", "writer CPU ns/decision");
    let mut steady: Vec<(f64, f64)> = Vec::new();
    for round in 1..=rounds {
        let writer_before = thread_cpu("decision-log");
        let per_append: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (log, req, version) = (log.clone(), &req, &version);
                    s.spawn(move || {
                        let t0 = Instant::now();
                        for i in 0..per_round {
                            let now = chrono::Utc::now();
                            log.decision(&Decision {
                                decided_at: now,
                                source: "decide",
                                payment_id: "inv_1001",
                                customer_id: "cus_42",
                                model_version: version,
                                arm: "model",
                                action: "ACTION_RETRY",
                                next_step: "NEXT_STEP_RETRY",
                                retry_at: Some(now + chrono::Duration::hours(20)),
                                channel: "CHANNEL_EMAIL",
                                p_success: 0.67,
                                p_recovery: 0.81,
                                propensity: 1.0 / (1 + i % 7) as f64,
                                request: Request::Decide(req),
                            });
                        }
                        t0.elapsed().as_nanos() as f64 / per_round as f64
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("an appending thread")).collect()
        });
        // Wait for the writer to write the round (it also takes the shards' batches, whose
        // capacity the next round reuses).
        let want = round * threads * per_round;
        let waited = Instant::now();
        while counters.decisions_written.get() + counters.decisions_dropped.get() < want {
            assert!(waited.elapsed() < Duration::from_secs(120), "the writer did not catch up");
            std::thread::sleep(Duration::from_millis(5));
        }
        let writer_ns = (thread_cpu("decision-log") - writer_before).as_nanos() as f64 / (threads * per_round) as f64;
        let mean = per_append.iter().sum::<f64>() / per_append.len() as f64;
        let each = per_append.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ");
        println!("{round:<6} {:>22} {writer_ns:>24.0}", format!("{mean:.0} ({each})"));
        if round > 1 {
            steady.push((mean, writer_ns));
        }
    }
    drop(log);
    drop(writer);
    println!(
        "after the first round (buffers grown): append {:.0} ns per decision, writer {:.0} ns of CPU per decision (medians); dropped {}",
        common::median(&steady.iter().map(|s| s.0).collect::<Vec<_>>()),
        common::median(&steady.iter().map(|s| s.1).collect::<Vec<_>>()),
        counters.decisions_dropped.get()
    );
    assert_eq!(counters.decisions_dropped.get(), 0, "the queue holds a round");
}
