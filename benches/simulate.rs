//! Simulator benchmark: attempts generated per second, written to Parquet, and
//! peak memory (issue #3 target: ≥ 1 million attempts/s on 2 cores, memory
//! bounded by writing in chunks).
//!
//! Run: `cargo bench --bench simulate` (release). `RECOUP_BENCH_PAYERS` changes
//! the size (default 400,000 payers × 12 months ≈ 5 M attempts). It runs the
//! real `recoup simulate` code path (the CLI's run function) in this process.

use std::time::Instant;

#[path = "common.rs"]
mod common;
use common::vm_hwm_mib;

use clap::Parser;
use polars::prelude::SerReader;
use recoup::cli::{run, Cli};

fn main() {
    let payers: u32 = std::env::var("RECOUP_BENCH_PAYERS").ok().and_then(|s| s.parse().ok()).unwrap_or(400_000);
    let compression = std::env::var("RECOUP_BENCH_COMPRESSION").unwrap_or_else(|_| "zstd".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("bench.parquet");
    let args = [
        "recoup",
        "simulate",
        "-q",
        "--payers",
        &payers.to_string(),
        "--months",
        "12",
        "--seed",
        "1",
        "--compression",
        &compression,
        "--out",
        out.to_str().expect("utf8 path"),
    ];
    let t = Instant::now();
    run(Cli::parse_from(args)).expect("simulate runs");
    let secs = t.elapsed().as_secs_f64();
    let rows = polars::prelude::ParquetReader::new(std::fs::File::open(&out).expect("written")).num_rows().expect("row count");
    let mb = std::fs::metadata(&out).map(|m| m.len() as f64 / 1e6).unwrap_or(f64::NAN);
    println!(
        "simulate/{payers} payers × 12 months, {compression}: {rows} attempts in {secs:.2} s = {:.2} M attempts/s ({mb:.0} MB Parquet)",
        rows as f64 / secs / 1e6
    );
    println!("  peak RSS {:.0} MiB (includes this process's runtime)", vm_hwm_mib());
}
