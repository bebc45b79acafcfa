//! Export benchmark: `recoup export` (release binary) on a history holding
//! 1,000,000 payments open at the cut-off. Prints the wall time and the
//! binary's peak resident memory.
//!
//!     cargo bench --bench export              # RECOUP_BENCH_OPEN=1000000
//!
//! The history: a simulated world's 12 months (60,000 payers, which the
//! calibration backtests on), plus copies of the payments open at the cut-off,
//! each with its payer's last three earlier payments (pay-day evidence), under
//! new ids, until the wanted number of open payments. It is written once to
//! target/export-bench/ and reused.

mod common;

use std::path::Path;
use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use polars::prelude::SerReader;
use recoup::attempt::Attempt;
use recoup::domain::{CustomerIx, PaymentIx};
use recoup::export::open_payments;
use recoup::history::{self, History};
use recoup::sim::{generate, World, WorldConfig};

fn main() {
    let want: usize = std::env::var("RECOUP_BENCH_OPEN").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/export-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join(format!("history-{want}.parquet"));
    let world = World::new(WorldConfig::default(), 5, 12);
    let as_of = world.end - Duration::days(3);
    if !path.exists() {
        let t = Instant::now();
        let h = build(&world, as_of, want);
        history::write(&h, &path).expect("write history");
        println!("built {} ({} attempts) in {:.1} s", path.display(), h.attempts.len(), t.elapsed().as_secs_f64());
    }
    let out = dir.join("open.parquet");
    let as_of = as_of.to_rfc3339();
    let args = ["export", "--history", path.to_str().unwrap(), "--as-of", &as_of, "--out", out.to_str().unwrap(), "-q"];
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let t = Instant::now();
    let mut child =
        std::process::Command::new(env!("CARGO_BIN_EXE_recoup")).args(args).arg("--models").arg(&models).spawn().expect("run recoup");
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        peak_kib = peak_kib.max(vm_hwm_kib(child.id()));
        std::thread::sleep(StdDuration::from_millis(20));
    };
    let wall = t.elapsed();
    assert!(status.success(), "recoup export failed");
    let rows = polars::prelude::ParquetReader::new(std::fs::File::open(&out).unwrap()).num_rows().unwrap();
    println!(
        "export: {rows} open payments in {:.1} s on {} threads ({:.1} µs each); peak RSS {:.0} MiB",
        wall.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        wall.as_secs_f64() * 1e6 / rows as f64,
        peak_kib as f64 / 1024.0
    );
    println!("reproduce: {} {}", env!("CARGO_BIN_EXE_recoup"), args.join(" "));
    let _ = common::vm_hwm_mib;
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

/// The world's history plus copies of its open payments (see the module documentation).
fn build(world: &World, as_of: chrono::DateTime<chrono::Utc>, want: usize) -> History {
    let base = generate::chunk(world, 0..60_000).history;
    let open: Vec<&[Attempt]> = open_payments(&base, as_of, world.cfg.dunning_window_days).into_iter().map(|p| p.attempts).collect();
    assert!(!open.is_empty(), "no open payment at the cut-off");
    let mut by_customer: std::collections::HashMap<CustomerIx, Vec<&[Attempt]>> = std::collections::HashMap::new();
    for p in base.payments() {
        by_customer.entry(p[0].customer).or_default().push(p);
    }
    let mut h = base.clone();
    let mut copy = 0u32;
    let mut made = open.len();
    while made < want {
        copy += 1;
        for p in &open {
            if made >= want {
                break;
            }
            let earlier: Vec<&[Attempt]> =
                by_customer[&p[0].customer].iter().copied().filter(|q| q[0].attempted_at < p[0].attempted_at).collect();
            let customer = CustomerIx(h.customer_ids.push(&format!("{}_c{copy}", base.customer_id(&p[0]))));
            for q in earlier.iter().rev().take(3).rev().chain(std::iter::once(p)) {
                let payment = PaymentIx(h.payment_ids.push(&format!("{}_c{copy}", base.payment_id(&q[0]))));
                for a in q.iter() {
                    let attempt_ix = h.attempt_ids.push(&format!("{}_c{copy}", base.attempt_id(a)));
                    h.attempts.push(Attempt { attempt_ix, payment, customer, ..a.clone() });
                }
            }
            made += 1;
        }
    }
    h
}
