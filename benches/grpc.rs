//! gRPC load benchmark: the release `recoup serve` on loopback, driven by h2load
//! (Debian's nghttp2-client, a load generator that shares no code with the
//! server) with pre-framed unary calls.
//!
//! 1. Echo (`--echo-service`, a call with no work in it): the ceiling.
//! 2. Decide, closed loop: the most decisions per second this machine gives.
//! 3. Decide at a fixed offered rate (default 15,000/s): achieved rate and the
//!    latency percentiles at that load. With a decision log, this run starts once
//!    the log has written what the closed-loop run left queued.
//!
//! Each request is the README's example (card, funds decline, pay-day evidence,
//! quiet hours): a 14-day hourly grid × 5 channels scored per call. Latency
//! percentiles come from h2load's per-request log; that every call answered
//! `OK` comes from the server's own /metrics (h2load cannot see gRPC trailers).
//! Server and load generator share the machine's cores.
//!
//!     apt-get install -y nghttp2-client      # h2load
//!     cargo bench --bench grpc
//!
//! Settings (environment): RECOUP_LOAD_SECONDS (10), RECOUP_LOAD_RATE (15000),
//! RECOUP_LOAD_CLIENTS (4), RECOUP_LOAD_STREAMS (16 per client: at most
//! 64 calls in flight, as a billing platform's worker pool would keep).
//! RECOUP_BENCH_TLS=1 serves TLS (a self-signed certificate made with the
//! openssl command) and drives it over https; RECOUP_BENCH_AUTH=1 requires a
//! bearer token and sends it; RECOUP_BENCH_BIN=PATH benches another build of
//! `recoup` (e.g. the previous release, for an A/B on the same machine state;
//! it must take the same flags). RECOUP_BENCH_DECISION_LOG=1 keeps the decision
//! log (`--decision-log`, Parquet) and reports what it wrote and dropped;
//! RECOUP_BENCH_DECISION_LOG=postgres://… keeps it in that PostgreSQL database.
//!
//! The decision log's cost (#24): RECOUP_BENCH_COMPARE=none,files,postgres://…
//! runs RECOUP_BENCH_ROUNDS (5) rounds of fresh servers, the variants alternated,
//! each a 3 s echo warm-up then Decide at the fixed rate, and prints the median
//! p99 per variant against `none` (and the median of the per-round changes, with
//! a 95 % bootstrap interval: how well the rounds pin it down), and recoup's CPU time per decision made (every
//! thread's, from /proc; the log's writer threads apart), counted once the log has
//! written the run: the log's cost in work, which p99 on a shared machine shows
//! only through its noise. For PostgreSQL, also the database server's CPU per
//! decision (every local process named `postgres`):
//!
//!     RECOUP_LOAD_RATE=5000 RECOUP_BENCH_COMPARE=none,files cargo bench --bench grpc
//!
//! A variant may name another build after a last `@` and a path starting with `/` or `.`
//! (`none,files,files@/tmp/old/recoup`): an A/B of two builds' logs in the same rounds, the
//! other shown by its directory's name.
//!
//! RECOUP_BENCH_PIN=1 runs the server on CPU 0 and h2load on CPU 1 (`taskset`): on a
//! 2-core machine the two otherwise trade cores, and that noise exceeds the log's cost.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use recoup::api::bench;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// A gRPC length-prefixed message: no compression flag, 4-byte big-endian length, bytes.
fn frame(msg: &impl Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut f = vec![0u8];
    f.extend((body.len() as u32).to_be_bytes());
    f.extend(body);
    f
}

struct Run {
    name: String,
    rate: f64,
    succeeded: u64,
    failed: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// The load shape shared by every run.
#[derive(Clone)]
struct Load {
    port: u16,
    seconds: u64,
    clients: u64,
    streams: u64,
    tls: bool,
    token: Option<String>,
}

/// Run h2load against `path` with the framed body `body`; `rps` per client if given.
fn h2load(name: &str, load: &Load, path: &str, body: &std::path::Path, rps: Option<u64>) -> Run {
    let Load { port, seconds, clients, streams, .. } = *load;
    let log = std::env::temp_dir().join(format!("recoup-h2load-{}-{name}.log", std::process::id()));
    let mut cmd = pinned("h2load", 1);
    cmd.args(["-t", "1", "-c", &clients.to_string(), "-m", &streams.to_string()])
        .args(["-D", &seconds.to_string(), "--warm-up-time", "2"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("-d")
        .arg(body)
        .arg(format!("--log-file={}", log.display()));
    if let Some(r) = rps {
        cmd.arg(format!("--rps={r}"));
    }
    if let Some(token) = &load.token {
        cmd.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    cmd.arg(format!("{}://127.0.0.1:{port}{path}", if load.tls { "https" } else { "http" }));
    let out = cmd.output().expect("h2load runs (apt-get install -y nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "h2load failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    // "finished in 10.00s, 14998.90 req/s, 4.26MB/s"
    let rate = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.trim_end_matches(" req/s").parse().ok())
        .unwrap_or(f64::NAN);
    // "requests: 150000 total, 150000 started, 150000 done, 150000 succeeded, 0 failed, 0 errored, 0 timeout"
    let count = |what: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("requests:"))
            .and_then(|l| l.split(", ").find(|p| p.ends_with(what)))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut lat: Vec<f64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect();
    let _ = std::fs::remove_file(&log);
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| if lat.is_empty() { f64::NAN } else { lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] };
    Run {
        name: name.into(),
        rate,
        succeeded: count("succeeded"),
        failed: count("failed") + count("errored") + count("timeout"),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
    }
}

/// The server's /metrics body.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    c.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
    let mut text = String::new();
    c.read_to_string(&mut text).expect("answer");
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

fn sum_samples(body: &str, prefix: &str) -> f64 {
    body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Wait until the decision log has written (or dropped) every decision counted so far;
/// returns how many.
fn settle(metrics_port: u16) -> f64 {
    let started = Instant::now();
    loop {
        let m = scrape(metrics_port);
        let decided = sum_samples(&m, "recoup_decisions_total{");
        let done = sum_samples(&m, "recoup_decision_log_written_total") + sum_samples(&m, "recoup_decision_log_dropped_total");
        if done >= decided {
            return decided;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the decision log did not catch up: {done:.0} of {decided:.0} written");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Start `recoup serve` (echo service on, the bundled model) and wait until it listens:
/// (server, gRPC port, metrics port, the bearer token the load must send).
fn start(bin: &str, dir: &std::path::Path, tls: bool, auth: bool, log_target: Option<&str>) -> (Server, u16, u16, Option<String>) {
    let (port, metrics_port) = (free_port(), free_port());
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut serve = pinned(bin, 0);
    serve
        .args([
            "-q",
            "serve",
            "--echo-service",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .arg("--models")
        .arg(&models);
    let token = server_options(&mut serve, dir, tls, auth, log_target);
    let server = Server(serve.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start recoup serve"));
    let up = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(up.elapsed() < Duration::from_secs(30), "recoup serve did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port, metrics_port, token)
}

/// `RECOUP_BENCH_COMPARE=none,files[,postgres://…]`: what the decision log adds to Decide's
/// p99 at the fixed rate. Rounds of fresh servers, the variants alternated within each
/// round (one machine state per round); each server answers a 3 s echo warm-up, then
/// Decide at the fixed rate. Prints every run, then per variant the median p99 and its
/// change against `none`, and the median of the per-round changes.
#[allow(clippy::too_many_arguments)]
fn compare(
    spec: &str,
    rounds: u64,
    bin: &str,
    dir: &std::path::Path,
    shape: &Load,
    rate: u64,
    decide: &std::path::Path,
    echo: &std::path::Path,
) {
    // A variant may name another build after `@` and a path (`files@/tmp/old/recoup`): an
    // A/B of two builds' logs on the same machine state.
    let variants: Vec<(String, Option<String>, String)> = spec
        .split(',')
        .map(|v| {
            // The last `@` followed by a path (a URL's user@host is not one).
            let (v, other_bin) = match v.trim().rsplit_once('@') {
                Some((v, b)) if b.starts_with('/') || b.starts_with('.') => (v, Some(b)),
                _ => (v.trim(), None),
            };
            let (name, target) = match v {
                "none" => ("none".to_string(), None),
                "files" => ("files".to_string(), Some("1".to_string())),
                // Two URLs of one database differ in their query (`?options=-c%20synchronous_commit%3Doff`): shown.
                url if url.starts_with("postgres") => {
                    let query =
                        url.split_once('?').map_or(String::new(), |(_, q)| format!("?{}", q.replace("%20", " ").replace("%3D", "=")));
                    (format!("postgres{query}"), Some(url.to_string()))
                }
                other => panic!("RECOUP_BENCH_COMPARE: {other:?} is none, files or a postgres:// URL, each optionally @another/recoup"),
            };
            match other_bin {
                Some(b) => (format!("{name}@{}", variant_label(b)), target, b.to_string()),
                None => (name, target, bin.to_string()),
            }
        })
        .collect();
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    // recoup's CPU per answered Decide (every thread; the log's writer threads apart): what
    // the log costs in work, which the p99 of a shared 2-core machine shows only through noise.
    let mut cpu: Vec<Vec<(f64, f64)>> = vec![Vec::new(); variants.len()];
    // The PostgreSQL server's CPU per decision, for its variants: the work a database on a
    // host of its own takes off recoup's cores.
    let mut db: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    println!("decision log cost: Decide at {rate}/s, {} s runs, {rounds} rounds of {spec}", shape.seconds);
    println!(
        "{:<6} {:<10} {:>9} {:>9} {:>9} {:>9} {:>13} {:>13} {:>13}",
        "round", "variant", "req/s", "p50 ms", "p99 ms", "dropped", "cpu µs/call", "log's writer", "database"
    );
    for round in 1..=rounds {
        for (i, (name, target, bin)) in variants.iter().enumerate() {
            let (server, port, metrics_port, token) = start(bin, dir, shape.tls, false, target.as_deref());
            let load = Load { port, token, ..shape.clone() };
            h2load("warm-up", &Load { seconds: 3, ..load.clone() }, "/recoup.bench.v1.Echo/Echo", echo, None);
            let (before, db_before) = (thread_cpu(server.0.id()), postgres_cpu_ns());
            let run = h2load("decide", &load, "/recoup.v1.RetryDecider/Decide", decide, Some(rate.div_ceil(shape.clients)));
            let dropped = match target {
                Some(_) => {
                    // The writer's work for this run is counted once it has written it.
                    settle(metrics_port);
                    format!("{:.0}", sum_samples(&scrape(metrics_port), "recoup_decision_log_dropped_total").abs())
                }
                None => "-".to_string(),
            };
            let used = thread_cpu(server.0.id()).since(&before);
            let db_used = postgres_cpu_ns() - db_before;
            // Per decision the server made: h2load's count leaves out its warm-up's calls,
            // which the CPU time includes.
            let calls = sum_samples(&scrape(metrics_port), "recoup_decisions_total{").max(1.0);
            drop(server);
            let (all, writer) = (used.all_ns / calls / 1e3, used.log_ns / calls / 1e3);
            let database = match target {
                Some(t) if t.starts_with("postgres") => {
                    db[i].push(db_used / calls / 1e3);
                    format!("{:.2}", db_used / calls / 1e3)
                }
                _ => "-".to_string(),
            };
            println!(
                "{round:<6} {name:<10} {:>9.0} {:>9.2} {:>9.2} {dropped:>9} {all:>13.1} {writer:>13.2} {database:>13}",
                run.rate, run.p50_ms, run.p99_ms
            );
            p99[i].push(run.p99_ms);
            cpu[i].push((all, writer));
        }
    }
    // The rounds keep their order for the pairing below (common::median sorts a copy).
    use common::median;
    let none = variants.iter().position(|(n, _, _)| n == "none");
    let base = none.map(|i| median(&p99[i]));
    for (i, (name, _, _)) in variants.iter().enumerate() {
        // Paired: the change within each round (one machine state), then its median.
        let paired: Vec<f64> = none.map_or(Vec::new(), |b| p99[i].iter().zip(&p99[b]).map(|(v, n)| v / n - 1.0).collect());
        let m = median(&p99[i]);
        let change = base.map_or(String::new(), |b| {
            let (lo, hi) = median_interval(&paired);
            format!(
                " ({:+.1} % against none; paired per round {:+.1} % [{:+.1}, {:+.1}])",
                100.0 * (m / b - 1.0),
                100.0 * median(&paired),
                100.0 * lo,
                100.0 * hi
            )
        });
        println!("{name:<10} median p99 {m:.2} ms{change}");
    }
    let base_cpu = none.map(|i| median(&cpu[i].iter().map(|c| c.0).collect::<Vec<_>>()));
    for (i, (name, _, _)) in variants.iter().enumerate() {
        let m = median(&cpu[i].iter().map(|c| c.0).collect::<Vec<_>>());
        let w = median(&cpu[i].iter().map(|c| c.1).collect::<Vec<_>>());
        let change = base_cpu.map_or(String::new(), |b| format!(" ({:+.1} % against none)", 100.0 * (m / b - 1.0)));
        let database = if db[i].is_empty() { String::new() } else { format!("; the PostgreSQL server besides: {:.2} µs", median(&db[i])) };
        println!("{name:<10} median recoup CPU per Decide {m:.1} µs{change}, of which the log's writer threads {w:.2} µs{database}");
    }
}

/// CPU time so far of every process named `postgres` on this machine (the cluster's
/// postmaster, backends and helpers), in nanoseconds: 0 where there is none.
fn postgres_cpu_ns() -> f64 {
    common::tasks_cpu("/proc").into_iter().filter(|(comm, _)| comm == "postgres").map(|(_, ns)| ns).sum()
}

/// A short name for another build in the compare table: its directory's name
/// (`/tmp/old/recoup` → `old`), else the path.
fn variant_label(bin: &str) -> String {
    let p = std::path::Path::new(bin);
    p.parent().and_then(|d| d.file_name()).map_or_else(|| bin.to_string(), |d| d.to_string_lossy().into_owned())
}

/// CPU time of a process's threads so far, from /proc (Linux): all of them, and the
/// decision log's writer threads (named `decision-log` and `outcome-log`).
#[derive(Default)]
struct ThreadCpu {
    all_ns: f64,
    log_ns: f64,
}

impl ThreadCpu {
    fn since(&self, earlier: &ThreadCpu) -> ThreadCpu {
        ThreadCpu { all_ns: self.all_ns - earlier.all_ns, log_ns: self.log_ns - earlier.log_ns }
    }
}

/// Each live thread's time on a CPU (`schedstat`'s first field, nanoseconds). A thread that
/// exits between two readings drops out of the sum: the server's threads live as long as it.
fn thread_cpu(pid: u32) -> ThreadCpu {
    let mut out = ThreadCpu::default();
    for (comm, ns) in common::tasks_cpu(&format!("/proc/{pid}/task")) {
        out.all_ns += ns;
        if matches!(comm.as_str(), "decision-log" | "outcome-log") {
            out.log_ns += ns;
        }
    }
    out
}

/// `program` to run, on CPU `cpu` alone when RECOUP_BENCH_PIN=1 (`taskset`, util-linux): the
/// server on CPU 0, the load generator on CPU 1, so neither takes the other's core and a
/// variant's p99 is not which process the scheduler happened to put where.
fn pinned(program: &str, cpu: u32) -> Command {
    if std::env::var("RECOUP_BENCH_PIN").is_ok_and(|v| v == "1") {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &cpu.to_string(), program]);
        cmd
    } else {
        Command::new(program)
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server's TLS certificate, decision log and bearer token, as the bench's
/// environment asks; returns the token the load generator sends.
fn server_options(serve: &mut Command, dir: &std::path::Path, tls: bool, auth: bool, decision_log: Option<&str>) -> Option<String> {
    if tls {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl makes the bench's self-signed certificate");
        assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
        serve.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
    }
    match decision_log {
        Some("1") => {
            let _ = std::fs::remove_dir_all(dir.join("decision-log"));
            serve.arg("--decision-log").arg(dir.join("decision-log"));
        }
        Some(url) => {
            serve.arg("--decision-log").arg(url);
        }
        None => {}
    }
    auth.then(|| {
        let token = "rcp_bench_token".to_string();
        use sha2::Digest;
        let file = dir.join("tokens.toml");
        std::fs::write(
            &file,
            format!(
                "[[token]]\nname = \"bench\"\nsha256 = \"{}\"\nscopes = [\"decide\"]\n",
                hex::encode(sha2::Sha256::digest(token.as_bytes()))
            ),
        )
        .expect("tokens file");
        serve.arg("--tokens").arg(&file).args(["--anonymous-scopes", "none"]);
        token
    })
}

fn main() {
    if Command::new("h2load").arg("--version").output().is_err() {
        eprintln!("grpc bench: h2load not found; install it with `apt-get install -y nghttp2-client`");
        std::process::exit(1);
    }
    let (seconds, rate, clients, streams) =
        (env("RECOUP_LOAD_SECONDS", 10), env("RECOUP_LOAD_RATE", 15_000), env("RECOUP_LOAD_CLIENTS", 4), env("RECOUP_LOAD_STREAMS", 16));
    // Kept under target/ so a run can be repeated by hand with the h2load line printed below.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/grpc-bench");
    std::fs::create_dir_all(&dir).expect("target/grpc-bench");
    let decide_body = dir.join("decide.bin");
    let echo_body = dir.join("echo.bin");
    let req = common::readme_request();
    std::fs::write(&decide_body, frame(&req)).expect("write frame");
    std::fs::write(&echo_body, frame(&bench::EchoMessage { payload: req.encode_to_vec() })).expect("write frame");

    let bin = std::env::var("RECOUP_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_recoup").to_string());
    let tls = std::env::var("RECOUP_BENCH_TLS").is_ok_and(|v| v == "1");
    let auth = std::env::var("RECOUP_BENCH_AUTH").is_ok_and(|v| v == "1");
    if let Ok(spec) = std::env::var("RECOUP_BENCH_COMPARE") {
        let shape = Load { port: 0, seconds, clients, streams, tls, token: None };
        return compare(&spec, env("RECOUP_BENCH_ROUNDS", 5), &bin, &dir, &shape, rate, &decide_body, &echo_body);
    }
    let log_target = std::env::var("RECOUP_BENCH_DECISION_LOG").ok().filter(|v| v == "1" || v.starts_with("postgres"));
    let decision_log = log_target.is_some();
    let (server, port, metrics_port, token) = start(&bin, &dir, tls, auth, log_target.as_deref());
    println!(
        "server: {bin}{}{}{}",
        if tls { ", TLS" } else { "" },
        if auth { ", bearer token required" } else { "" },
        match log_target.as_deref() {
            Some("1") => ", decision log (Parquet)",
            Some(_) => ", decision log (PostgreSQL)",
            None => "",
        }
    );
    let load = Load { port, seconds, clients, streams, tls, token };
    let echo = h2load("echo", &load, "/recoup.bench.v1.Echo/Echo", &echo_body, None);
    let max = h2load("decide-max", &load, "/recoup.v1.RetryDecider/Decide", &decide_body, None);
    if decision_log {
        // The closed-loop run answers faster than the idle-priority writer writes; the
        // fixed-rate run starts once that backlog is written, so it measures logging at
        // its own load and not the catch-up after a saturated one.
        let started = Instant::now();
        let decided = settle(metrics_port);
        println!("decision log caught up with {decided:.0} decisions after {:.1} s", started.elapsed().as_secs_f64());
    }
    let fixed = h2load(&format!("decide-at-{rate}"), &load, "/recoup.v1.RetryDecider/Decide", &decide_body, Some(rate.div_ceil(clients)));
    let metrics = scrape(metrics_port);
    drop(server);

    let ok = sum_samples(&metrics, r#"recoup_requests_total{code="OK",rpc="Decide"}"#);
    // Calls of any method that did not answer OK (the echo calls answer OK too).
    let not_ok: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("recoup_requests_total{") && !l.contains(r#"code="OK""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let decided = sum_samples(&metrics, "recoup_decisions_total{");
    println!(
        "grpc load (h2load -t 1 -c {clients} -m {streams}, {seconds} s after 2 s warm-up; server and load generator on {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:<16} {:>10} {:>10} {:>7} {:>9} {:>9} {:>9}", "run", "req/s", "succeeded", "failed", "p50 ms", "p99 ms", "max ms");
    for r in [&echo, &max, &fixed] {
        println!(
            "{:<16} {:>10.0} {:>10} {:>7} {:>9.2} {:>9.2} {:>9.2}",
            r.name, r.rate, r.succeeded, r.failed, r.p50_ms, r.p99_ms, r.max_ms
        );
    }
    println!(
        "by hand: h2load -t 1 -c {clients} -m {streams} -D {seconds} -H 'content-type: application/grpc' -H 'te: trailers' -d {} http://127.0.0.1:50051/recoup.v1.RetryDecider/Decide",
        decide_body.display()
    );
    println!("decide/echo throughput ratio: {:.2}", max.rate / echo.rate);
    println!("server /metrics: {ok:.0} Decide calls answered OK, {not_ok:.0} calls of any method not OK, {decided:.0} decisions counted");
    for l in metrics.lines().filter(|l| l.starts_with("recoup_requests_total{") && !l.contains(r#"code="OK""#)) {
        println!("  not OK: {l}");
    }
    if decision_log {
        println!(
            "decision log: {:.0} decisions written, {:.0} dropped (queue full), {:.0} write errors",
            sum_samples(&metrics, "recoup_decision_log_written_total"),
            sum_samples(&metrics, "recoup_decision_log_dropped_total"),
            sum_samples(&metrics, "recoup_decision_log_write_errors_total")
        );
    }
}

/// A 95 % bootstrap interval of the median of `v` (2,000 resamples, a fixed seed): how far
/// the paired change per round is pinned down by this many rounds.
fn median_interval(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut medians: Vec<f64> =
        (0..2000).map(|_| common::median(&(0..v.len()).map(|_| v[rng.random_range(0..v.len())]).collect::<Vec<_>>())).collect();
    medians.sort_by(f64::total_cmp);
    (medians[50], medians[1949])
}
