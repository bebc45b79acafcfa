//! The decision log's PostgreSQL sink against a real server: a throwaway cluster
//! (initdb on a temporary directory, pg_ctl on a free port), as `.ci/run` provides
//! the binaries for. Without PostgreSQL installed the tests say so and pass, unless
//! `RECOUP_REQUIRE_POSTGRES=1` (CI sets it) makes that a failure.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use recoup::api::v1;
use recoup::api::v1::retry_decider_client::RetryDeciderClient;

use crate::closed_loop::{recoup_json, wait_for_rows};
use crate::serve::registry;

/// A running throwaway PostgreSQL server; stopped (immediately) on drop.
pub(crate) struct Pg {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    pub url: String,
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self.cmd("pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).output();
    }
}

impl Pg {
    fn cmd(&self, tool: &str) -> Command {
        cmd(&self.bin, tool, self.as_postgres)
    }
}

fn cmd(bin: &Path, tool: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

/// The directory holding initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/*/bin.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("sh").args(["-c", "command -v initdb"]).output() {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !p.is_empty() {
            return std::fs::canonicalize(&p).ok().and_then(|p| p.parent().map(Path::to_path_buf));
        }
    }
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").ok()?.filter_map(|e| e.ok().map(|e| e.path().join("bin"))).collect();
    dirs.sort_by_key(|d| d.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()));
    dirs.into_iter().rev().find(|d| d.join("initdb").exists())
}

/// Start a cluster, or `None` (with the reason printed) where PostgreSQL is not installed.
pub(crate) fn start() -> Option<Pg> {
    let Some(bin) = bin_dir() else {
        assert!(
            std::env::var("RECOUP_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "RECOUP_REQUIRE_POSTGRES=1 but no PostgreSQL is installed (initdb not on PATH nor under /usr/lib/postgresql)"
        );
        eprintln!("skipped: PostgreSQL is not installed (apt-get install postgresql)");
        return None;
    };
    // initdb refuses to run as root: run the server as the postgres user then.
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let dir = tempfile::Builder::new().prefix("recoup-pg").tempdir_in("/tmp").expect("tempdir");
    let data = dir.path().join("data");
    if root {
        let ok = Command::new("chown").arg("postgres").arg(dir.path()).status().is_ok_and(|s| s.success());
        assert!(ok, "chown the cluster directory to postgres");
    }
    let out = cmd(&bin, "initdb", root)
        .arg("-D")
        .arg(&data)
        .args(["-U", "recoup", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .output()
        .expect("initdb runs");
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let out = cmd(&bin, "pg_ctl", root)
        .arg("-D")
        .arg(&data)
        .arg("-o")
        .arg(format!("-p {port} -k {} -c listen_addresses=127.0.0.1", dir.path().display()))
        .arg("-l")
        .arg(dir.path().join("log"))
        .args(["-w", "start"])
        .output()
        .expect("pg_ctl runs");
    assert!(
        out.status.success(),
        "pg_ctl start: {} {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
    );
    Some(Pg { url: format!("postgres://recoup@127.0.0.1:{port}/postgres"), _dir: dir, data, bin, as_postgres: root })
}

pub(crate) fn request(pid: &str, failed_at: chrono::DateTime<Utc>) -> v1::DecideRequest {
    let ts = |t: chrono::DateTime<Utc>| Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 });
    v1::DecideRequest {
        payment: Some(v1::Payment {
            payment_id: pid.into(),
            customer_id: format!("cus_{pid}\0with a NUL"),
            amount_minor: 1999,
            currency: "USD".into(),
            payment_method: "card".into(),
            card_brand: "visa".into(),
            card_funding: "debit".into(),
            country: "US".into(),
            timezone: "America/New_York".into(),
            ..Default::default()
        }),
        attempts: vec![v1::Attempt { attempted_at: ts(failed_at), decline_code: "insufficient_funds".into(), ..Default::default() }],
        now: ts(failed_at + chrono::Duration::minutes(5)),
        ..Default::default()
    }
}

fn serve(models: &Path, url: &str, port: u16) -> std::process::Child {
    Command::new(assert_cmd::cargo::cargo_bin("recoup"))
        .args(["serve", "--quiet", "--metrics-addr", "off", "--decision-log-flush", "0.2"])
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--models")
        .arg(models)
        .arg("--decision-log")
        .arg(url)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts")
}

pub(crate) async fn connect(port: u16) -> RetryDeciderClient<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).expect("uri");
    for _ in 0..300 {
        if let Ok(c) = endpoint.connect().await {
            return RetryDeciderClient::new(c);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not come up on {port}")
}

/// Decisions and acknowledged reports land in PostgreSQL; a `kill -9` loses none answered
/// before the last flush; a second server on the same database finds its tables migrated;
/// `history from-log` and `report live` read the database like a directory.
#[test]
fn the_postgres_sink_keeps_what_was_answered_through_a_kill_9_and_reads_back() {
    let Some(pg) = start() else { return };
    let (_models, models) = registry();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let base = Utc.with_ymd_and_hms(2026, 3, 2, 15, 0, 0).unwrap();
    let mut answered = 0;
    let mut reported = 0;
    for round in 0..2 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
        let mut child = serve(&models, &pg.url, port);
        let (n, r) = rt.block_on(async {
            let mut client = connect(port).await;
            let mut reports = Vec::new();
            for i in 0..200 {
                let pid = format!("inv_{round}_{i}");
                let d = client.decide(request(&pid, base + chrono::Duration::minutes(i))).await.expect("decides").into_inner();
                if i % 4 == 0 {
                    reports.push(v1::AttemptReport {
                        payment_id: pid,
                        attempt_number: 1,
                        attempted_at: d.retry_at,
                        outcome: "succeeded".into(),
                        channel: d.channel().as_str_name().trim_start_matches("CHANNEL_").to_lowercase(),
                        ..Default::default()
                    });
                }
            }
            let accepted =
                client.report_attempts(v1::ReportAttemptsRequest { reports: reports.clone() }).await.expect("reports").into_inner();
            (200, accepted.accepted as usize)
        });
        answered += n;
        reported += r;
        // Kill only once the last flush is in: the writer runs at idle CPU priority, so on a
        // machine busy with other tests a flush can wait far longer than its interval
        // (a fixed 1.5 s wait failed under load). What is flushed must survive the kill.
        wait_for_rows(&pg.url, answered, reported, Duration::from_secs(60));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }
    let target = recoup::decision_log::LogTarget::parse(&pg.url);
    let (decisions, outcomes) = recoup::decision_log::read_target(&target).expect("reads the database");
    assert_eq!((decisions.len(), outcomes.len()), (answered, reported));
    assert!(decisions.iter().all(|d| d.customer_id.contains('\u{FFFD}') && !d.request.is_empty()), "NUL stored as U+FFFD");
    assert!(decisions.iter().all(|d| d.model_version == decisions[0].model_version && d.p_success > 0.0));

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("history.parquet");
    let summary = recoup_json(["history", "from-log", &pg.url, "--json", "--out"].map(OsStr::new).into_iter().chain([out.as_os_str()]));
    assert_eq!(summary["decisions"], answered, "{summary}");
    let h = recoup::history::load(&out, &Default::default()).expect("contract v1");
    assert_eq!(h.attempts.len(), answered + reported, "an original charge per payment and the reported retries");

    let live = recoup_json(
        ["report", "live", &pg.url, "--json", "--resamples", "50", "--models"].map(OsStr::new).into_iter().chain([models.as_os_str()]),
    );
    assert_eq!(live["drift"].as_array().map(Vec::len), Some(recoup::drift::FEATURES.len()), "{live}");

    // A wrong database is an error at start, naming it without its password.
    let bad = pg.url.replace("recoup@", "recoup:hunter2@").replace("/postgres", "/no_such_db");
    let run =
        Command::new(assert_cmd::cargo::cargo_bin("recoup")).args(["history", "from-log", &bad, "--out"]).arg(&out).output().expect("runs");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("no_such_db") && !err.contains("hunter2"), "{err}");
}
