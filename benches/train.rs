//! Training benchmark: `recoup train` on 1 M and 10 M simulated attempts, wall
//! time and peak memory (issue #4 targets on 2 cores: 1 M in under 20 s, 10 M in
//! under 3 minutes, peak memory under 8 GiB).
//!
//! Run: `cargo bench --bench train` (release). `RECOUP_BENCH_SIZES` (comma-separated
//! attempt counts, default `1000000,10000000`) changes the sizes. Histories are
//! simulated once into `target/bench-data/`; each training runs in a fresh child
//! process so its peak RSS counts the training alone (load + features + fit + write).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "common.rs"]
mod common;
use common::vm_hwm_mib;

use clap::Parser;
use recoup::cli::{run, Cli};

/// Attempts per simulated payer-year under the default world (measured: 4.16 M from 400 k payers).
const ATTEMPTS_PER_PAYER: f64 = 10.4;

fn main() {
    if let Ok(path) = std::env::var("RECOUP_BENCH_CHILD") {
        return child(Path::new(&path));
    }
    let sizes: Vec<u64> = std::env::var("RECOUP_BENCH_SIZES")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("attempt count"))
        .collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench dir");
    for n in sizes {
        let payers = (n as f64 / ATTEMPTS_PER_PAYER).round() as u64;
        let path = dir.join(format!("train-{payers}-payers.parquet"));
        if !path.exists() {
            let t = Instant::now();
            let args = [
                "recoup",
                "simulate",
                "-q",
                "--payers",
                &payers.to_string(),
                "--months",
                "12",
                "--seed",
                "3",
                "--out",
                path.to_str().expect("utf8"),
            ];
            run(Cli::parse_from(args)).expect("simulate");
            eprintln!("simulated {} in {:.1?}", path.display(), t.elapsed());
        }
        let exe = std::env::current_exe().expect("own path");
        let out = Command::new(&exe).env("RECOUP_BENCH_CHILD", &path).output().expect("child runs");
        assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8(out.stdout).expect("utf8");
        // The last line is the child's figures (before it: `recoup train`'s own summary).
        let last = line.lines().last().expect("child output");
        let v: Vec<f64> = last.split_whitespace().map(|x| x.parse().expect("number")).collect();
        println!(
            "train/{payers} payers: {:.2} M attempts, {:.0} k retry examples: {:.1} s wall, peak RSS {:.0} MiB",
            v[0] / 1e6,
            v[1] / 1e3,
            v[2],
            v[3]
        );
    }
}

fn child(path: &Path) {
    let out = tempfile::tempdir().expect("tempdir");
    let h = recoup::history::load(path, &Default::default()).expect("loads");
    let (rows, examples) = (h.attempts.len(), recoup::train::build(&h).len());
    drop(h);
    let t = Instant::now();
    let args = ["recoup", "train", "-q", "--history", path.to_str().expect("utf8"), "--out", out.path().to_str().expect("utf8")];
    run(Cli::parse_from(args)).expect("train");
    let secs = t.elapsed().as_secs_f64();
    println!("{rows} {examples} {secs} {}", vm_hwm_mib());
}
