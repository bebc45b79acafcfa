//! Loader benchmark: validated rows per second and peak memory on a generated
//! 5-million-row Parquet history (issue #2 targets: ≥ 2 M rows/s on 2 cores,
//! peak memory below 3× the decoded table).
//!
//! Run: `cargo bench --bench load` (release). Set `RECOUP_BENCH_ROWS` to change
//! the size. The history is generated once into `target/bench-data/`; each
//! measurement runs in a fresh child process so its peak RSS (VmHWM) counts the
//! load alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "common.rs"]
mod common;
use common::vm_hwm_mib;

use chrono::{Duration, TimeZone, Utc};
use recoup::attempt::Attempt;
use recoup::declines::DeclineCode;
use recoup::domain::*;
use recoup::history::{load, write, History, LoadOptions};

const RUNS: usize = 5;

fn main() {
    let rows: usize = std::env::var("RECOUP_BENCH_ROWS").ok().and_then(|s| s.parse().ok()).unwrap_or(5_000_000);
    if let Ok(path) = std::env::var("RECOUP_BENCH_CHILD") {
        return child(Path::new(&path));
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join(format!("history-{rows}.parquet"));
    if !path.exists() {
        let t = Instant::now();
        write(&synthetic(rows), &path).expect("write bench history");
        eprintln!("generated {} in {:.1?}", path.display(), t.elapsed());
    }
    let exe = std::env::current_exe().expect("own path");
    let mut results = Vec::new();
    for _ in 0..RUNS {
        let out = Command::new(&exe).env("RECOUP_BENCH_CHILD", &path).output().expect("child runs");
        assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8(out.stdout).expect("utf8");
        let v: Vec<f64> = line.split_whitespace().map(|x| x.parse().expect("number")).collect();
        results.push((v[0], v[1], v[2], v[3], v[4]));
    }
    results.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (n, secs, peak_mb, decoded_mb, read_secs) = results[RUNS / 2];
    println!("load/parquet/{rows}: median of {RUNS}: {secs:.3} s, {:.2} M rows/s validated", n / secs / 1e6);
    println!("  runs: {}", results.iter().map(|r| format!("{:.3} s", r.1)).collect::<Vec<_>>().join(", "));
    println!("  of which polars alone needs {read_secs:.3} s to decode the file into a DataFrame");
    println!("  peak RSS {peak_mb:.0} MiB, decoded table {decoded_mb:.0} MiB, ratio {:.2}×", peak_mb / decoded_mb);
}

fn child(path: &Path) {
    let t = Instant::now();
    let h = load(path, &LoadOptions::default()).expect("bench history loads");
    let secs = t.elapsed().as_secs_f64();
    let peak = vm_hwm_mib();
    let n = h.attempts.len();
    drop(h);
    // The decoded table: what polars holds for the same file in memory.
    let f = std::fs::File::open(path).expect("open");
    use polars::prelude::{ParquetReader, SerReader};
    let t = Instant::now();
    let df = ParquetReader::new(f).finish().expect("read");
    let read_secs = t.elapsed().as_secs_f64();
    let decoded = df.estimated_size() as f64 / (1024.0 * 1024.0);
    println!("{n} {secs} {peak} {decoded} {read_secs}");
}

/// A plausible history: ~3 attempts per payment, 4 payments per customer.
fn synthetic(rows: usize) -> History {
    let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).single().expect("valid");
    let mut h = History::default();
    let codes = [DeclineCode::InsufficientFunds, DeclineCode::DoNotHonor, DeclineCode::ExpiredCard, DeclineCode::IssuerNotAvailable];
    let countries: Vec<Country> = ["US", "GB", "DE", "FR", "NL", "DK", "SE", "NO"].iter().map(|c| c.parse().unwrap()).collect();
    let tzs = [
        chrono_tz::America::New_York,
        chrono_tz::Europe::London,
        chrono_tz::Europe::Berlin,
        chrono_tz::Europe::Paris,
        chrono_tz::Europe::Amsterdam,
        chrono_tz::Europe::Copenhagen,
        chrono_tz::Europe::Stockholm,
        chrono_tz::Europe::Oslo,
    ];
    let eur: Currency = "EUR".parse().unwrap();
    let mut p = 0usize;
    while h.attempts.len() < rows {
        let n = 1 + (p * 7919) % 4;
        let cust = p / 4;
        let start = t0 + Duration::minutes((p as i64 * 37) % (365 * 24 * 60));
        h.payment_ids.push(&format!("pay_{p:09}"));
        if p % 4 == 0 {
            h.customer_ids.push(&format!("cus_{cust:08}"));
        }
        for k in 0..n.min(rows - h.attempts.len()) {
            let last = k + 1 == n;
            let ok = last && p % 3 != 0 && k > 0;
            let c = p % countries.len();
            let attempt_ix = h.attempt_ids.push(&format!("att_{p:09}_{k}"));
            h.attempts.push(Attempt {
                attempt_ix,
                payment: PaymentIx(p as u32),
                customer: CustomerIx(cust as u32),
                attempted_at: start + Duration::hours(k as i64 * 53),
                attempt_number: k as u32,
                amount: Money { minor: 500 + (p as i64 * 131) % 9000, currency: eur },
                method: PaymentMethod::Card,
                card_brand: Some(if p % 2 == 0 { CardBrand::Visa } else { CardBrand::Mastercard }),
                card_funding: Some(CardFunding::Debit),
                country: countries[c],
                timezone: tzs[c],
                outcome: if ok { Outcome::Succeeded } else { Outcome::Failed },
                decline: if ok { None } else { Some(codes[(p + k) % codes.len()]) },
                network_code: if ok { None } else { Some("51".parse().unwrap()) },
                advice_code: None,
                channel: Some([Channel::None, Channel::Email, Channel::Sms][(p + k) % 3]),
                payment_method_updated: Some(false),
                update_triggered: false,
                card: None,
                billing_interval: Some(BillingInterval::Month),
                tenure_days: Some((p % 1000) as u32),
                propensity: Some(0.5),
                source: SourceRow::default(),
            });
        }
        p += 1;
    }
    h
}
