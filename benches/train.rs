//! Training benchmark: `recoup train` on 1 M and 10 M simulated attempts, wall
//! time and peak memory (issue #4 targets on 2 cores: 1 M in under 20 s, 10 M in
//! under 3 minutes, peak memory under 8 GiB).
//!
//! Run: `cargo bench --bench train` (release). `RECOUP_BENCH_SIZES` (comma-separated
//! attempt counts, default `1000000,10000000`) changes the sizes. Histories are
//! simulated once into `target/bench-data/`; each training runs in a fresh child
//! process so its peak RSS counts the training alone (load + features + fit + write).
//!
//! `RECOUP_BENCH_SHARDS=N` (default 0: off) also runs sharded training (#25) on each
//! size: N `train --features-only --shard k/N` children one after another (as N
//! Indexed-Job pods would run side by side), then the fit step `train --features DIR`;
//! it prints each step's wall time and peak RSS, and checks that the sharded
//! model.json is byte for byte the single train's.

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
    if let Ok(args) = std::env::var("RECOUP_BENCH_CHILD_ARGS") {
        return child_args(&args);
    }
    let shards: u64 = std::env::var("RECOUP_BENCH_SHARDS").map_or(0, |s| s.trim().parse().expect("RECOUP_BENCH_SHARDS: a whole number"));
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
        let single = tempfile::tempdir().expect("tempdir");
        let out = Command::new(&exe).env("RECOUP_BENCH_CHILD", &path).env("RECOUP_BENCH_OUT", single.path()).output().expect("child runs");
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
        if shards > 0 {
            sharded(&exe, &path, shards, payers, single.path());
        }
    }
}

/// Sharded training of `path` on `n` shards, checked against the single train in `single`.
fn sharded(exe: &Path, path: &Path, n: u64, payers: u64, single: &Path) {
    let work = tempfile::tempdir().expect("tempdir");
    let (features, models) = (work.path().join("features"), work.path().join("models"));
    let run = |args: Vec<String>| -> (f64, f64) {
        let out = Command::new(exe).env("RECOUP_BENCH_CHILD_ARGS", args.join("\u{1f}")).output().expect("child runs");
        assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).expect("utf8");
        let v: Vec<f64> = text.lines().last().expect("output").split_whitespace().map(|x| x.parse().expect("number")).collect();
        (v[0], v[1])
    };
    let s = |p: &Path| p.to_str().expect("utf8").to_string();
    let mut steps = Vec::new();
    for k in 0..n {
        let args = vec![
            "--features-only".into(),
            "--shard".into(),
            format!("{k}/{n}"),
            "--history".into(),
            s(path),
            "--features".into(),
            s(&features),
        ];
        steps.push(run([vec!["train".to_string(), "-q".into()], args].concat()));
    }
    let fit = run(vec![
        "train".into(),
        "-q".into(),
        "--features".into(),
        s(&features),
        "--out".into(),
        s(&models),
        "--name".into(),
        "sharded".into(),
    ]);
    let (wall, peak) = steps.iter().fold((0.0f64, 0.0f64), |(w, p), &(sw, sp)| (w.max(sw), p.max(sp)));
    let on_disk: u64 = walk_size(&features);
    println!(
        "train/{payers} payers on {n} shards: features-only per shard {:.1}–{:.1} s, peak RSS up to {:.0} MiB; shards on disk {:.0} MiB; fit step {:.1} s, peak RSS {:.0} MiB",
        steps.iter().map(|s| s.0).fold(f64::INFINITY, f64::min),
        wall,
        peak,
        on_disk as f64 / (1 << 20) as f64,
        fit.0,
        fit.1
    );
    let version = std::fs::read_dir(single)
        .expect("single out")
        .filter_map(|e| e.ok())
        .find(|e| e.path().join("model.json").exists())
        .expect("a version");
    let same = std::fs::read(version.path().join("model.json")).expect("single model")
        == std::fs::read(models.join("sharded/model.json")).expect("sharded model");
    println!("  sharded model.json equals the single train's: {same}");
    assert!(same, "the sharded model differs from the single train's");
}

fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk_size(&p)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A child running `recoup ARGS` (separated by U+001F); prints its wall seconds and peak RSS.
fn child_args(args: &str) {
    let t = Instant::now();
    run(Cli::parse_from(std::iter::once("recoup").chain(args.split('\u{1f}')))).expect("recoup runs");
    println!("{} {}", t.elapsed().as_secs_f64(), vm_hwm_mib());
}

fn child(path: &Path) {
    let out = std::env::var("RECOUP_BENCH_OUT").map(PathBuf::from).expect("RECOUP_BENCH_OUT");
    let h = recoup::history::load(path, &Default::default()).expect("loads");
    let (rows, examples) = (h.attempts.len(), recoup::train::build(&h).len());
    drop(h);
    let t = Instant::now();
    let args = ["recoup", "train", "-q", "--history", path.to_str().expect("utf8"), "--out", out.to_str().expect("utf8")];
    run(Cli::parse_from(args)).expect("train");
    let secs = t.elapsed().as_secs_f64();
    println!("{rows} {examples} {secs} {}", vm_hwm_mib());
}
