//! `recoup export`: the forecast of open payments, calibrated against what the
//! history then shows.

use std::collections::HashMap;

use chrono::{Duration, Months};
use recoup::domain::Outcome;
use recoup::engine::EngineConfig;
use recoup::export::{open_payments, request, Forecaster, Payers};
use recoup::history::{self, LoadOptions};
use recoup::sim::{generate, World, WorldConfig};

/// Predicted vs realised per segment, for payments open at two cut-offs of a
/// simulated history: the export reads only what was known at the cut-off; the
/// rest of the history says what happened. The realised count must lie within
/// the range implied by the predictions (a sum of independent Bernoullis).
#[test]
fn export_forecasts_match_recovery_realised_in_the_history() {
    let n = 40_000;
    // A world seed other than the sample's (1) and the backtests' (2, 11, 23).
    let w = World::new(WorldConfig::default(), 29, 12);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.parquet");
    // Through the file and the loader, as the CLI reads it (codes given only raw are derived there).
    history::write(&generate::chunk(&w, 0..n).history, &path).unwrap();
    let h = history::load(&path, &LoadOptions::default()).unwrap();
    let full: HashMap<&str, &[recoup::attempt::Attempt]> = h.payments().map(|p| (h.payment_id(&p[0]), p)).collect();
    let payers = Payers::new(&h);
    let (_, model) = recoup::registry::load_current(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).unwrap();
    let cfg = EngineConfig::default();
    let mut seg: HashMap<String, (f64, f64, f64, f64, usize)> = HashMap::new();
    for months in [7, 10] {
        let as_of = w.start.checked_add_months(Months::new(months)).unwrap() + Duration::hours(13);
        let fc = Forecaster::fit(&h, &payers, model.clone(), cfg.clone(), as_of, 20_000).unwrap();
        for p in open_payments(&h, as_of, cfg.dunning_window_days) {
            let f = fc.forecast(&request(&h, &payers, &p, as_of)).unwrap();
            let all = full[h.payment_id(p.first())];
            assert!(all.len() >= p.attempts.len() && all[p.attempts.len() - 1].attempted_at <= as_of);
            let real = all.last().unwrap().outcome == Outcome::Succeeded;
            let class = p.last().decline.unwrap().class();
            for key in [
                format!("class={class}"),
                format!("method={}", <&str>::from(p.first().method)),
                format!("country={}", p.first().country.as_str()),
                format!("month={}", p.first().attempted_at.format("%Y-%m")),
                "all".into(),
            ] {
                let e = seg.entry(key).or_default();
                e.0 += f.p_recovery;
                e.1 += f.p_recovery * (1.0 - f.p_recovery);
                e.2 += real as u8 as f64;
                e.3 += f.p_recovery_model;
                e.4 += 1;
            }
        }
    }
    assert!(seg["all"].4 > 1000, "{} open payments", seg["all"].4);
    let mut keys: Vec<_> = seg.keys().cloned().collect();
    keys.sort();
    let mut tested = 0;
    for k in keys {
        let (p, v, r, raw, n) = seg[&k];
        let z = (r - p) / v.sqrt().max(1e-9);
        eprintln!("{k:<24} n {n:>5} predicted {:.3} (model {:.3}) realised {:.3} z {z:.2}", p / n as f64, raw / n as f64, r / n as f64);
        if n >= 30 && v > 0.0 {
            // The whole within its 95 % range; the segments (some 25: classes, methods,
            // countries, months) each within its 99.8 % range (Bonferroni: 95 % for the family).
            let bound = if k == "all" { 1.96 } else { 3.09 };
            assert!(z.abs() < bound, "{k}: {r} recovered of {n}, predicted {p:.1} ± {:.1}", bound * v.sqrt());
            tested += 1;
        } else if v == 0.0 {
            assert_eq!(r, p, "{k}: certain forecasts");
        }
    }
    assert!(tested >= 12, "{tested} segments tested");
}

/// The CLI end to end on the bundled sample: per payment (Parquet) and per
/// segment (CSV), the same totals, named model and cut-off.
#[test]
fn export_writes_payments_and_segments_that_agree() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let (seg, pay) = (dir.path().join("seg.csv"), dir.path().join("open.parquet"));
    let root = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| assert_cmd::Command::cargo_bin("recoup").unwrap().current_dir(root).args(args).assert().success();
    let out = run(&[
        "export",
        "--history",
        "data/sample/",
        "--as-of",
        "2025-10-15",
        "--out",
        seg.to_str().unwrap(),
        "--by",
        "decline-class,month",
        "--payments-out",
        pay.to_str().unwrap(),
        "--calibration-payments",
        "3000",
    ]);
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(text.contains("open payments at 2025-10-15T00:00:00+00:00"), "{text}");
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["open.parquet", "seg.csv"], "finished files only, no .partial");
    let current = std::fs::read_to_string(format!("{root}/models/CURRENT")).unwrap().trim().to_string();

    let p = ParquetReader::new(std::fs::File::open(&pay).unwrap()).finish().unwrap();
    assert!(p.height() > 100, "{} open payments", p.height());
    let s = CsvReadOptions::default().with_has_header(true).try_into_reader_with_file_path(Some(seg.clone())).unwrap().finish().unwrap();
    let sum = |df: &DataFrame, c: &str| {
        df.column(c).unwrap().as_materialized_series().cast(&DataType::Float64).unwrap().f64().unwrap().sum().unwrap()
    };
    assert_eq!(sum(&s, "payments") as usize, p.height());
    assert!((sum(&s, "expected_recovered_minor") - sum(&p, "expected_recovered_minor")).abs() < 1e-3 * sum(&p, "expected_recovered_minor"));
    assert_eq!(sum(&s, "amount_minor"), sum(&p, "amount_minor"));
    for df in [&p, &s] {
        let v = df.column("model_version").unwrap().str().unwrap().get(0).unwrap().to_string();
        assert_eq!(v, current);
    }
    // Every row: a probability, the expected amount it implies, a next step that fits it.
    let prob = p.column("p_recovery").unwrap().f64().unwrap();
    let amount = p.column("amount_minor").unwrap().i64().unwrap();
    let expected = p.column("expected_recovered_minor").unwrap().f64().unwrap();
    let action = p.column("next_action").unwrap().str().unwrap();
    let retry_at = p.column("next_retry_at").unwrap().datetime().unwrap().clone();
    let window_end = p.column("window_end").unwrap().datetime().unwrap().clone();
    let class = p.column("decline_class").unwrap().str().unwrap();
    for i in 0..p.height() {
        let (pr, a, e) = (prob.get(i).unwrap(), amount.get(i).unwrap(), expected.get(i).unwrap());
        assert!((0.0..=1.0).contains(&pr));
        assert!((e - pr * a as f64).abs() < 1e-6);
        match action.get(i).unwrap() {
            "retry" => assert!(retry_at.physical().get(i).unwrap() <= window_end.physical().get(i).unwrap()),
            "ask_for_update" => assert_eq!(class.get(i), Some("needs_update")),
            "stop" => {
                assert!(retry_at.physical().get(i).is_none());
                assert_eq!(pr, 0.0, "a stop row forecasts no recovery");
            }
            other => panic!("next_action {other}"),
        }
        if class.get(i) == Some("hard") {
            assert_eq!(pr, 0.0, "a hard decline is never recovered");
        }
    }
}

#[test]
fn export_errors_name_the_problem() {
    let root = env!("CARGO_MANIFEST_DIR");
    let cmd = || {
        let mut c = assert_cmd::Command::cargo_bin("recoup").unwrap();
        c.current_dir(root);
        c
    };
    cmd()
        .args(["export", "--history", "data/sample/", "--as-of", "yesterday", "--out", "x.csv"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("neither RFC 3339"));
    cmd()
        .args(["export", "--history", "data/sample/", "--as-of", "2025-10-15", "--out", "x.xlsx"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("--format"));
    // A run that fails leaves no output behind (rows go to FILE.partial until the end).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.csv");
    cmd()
        .args(["export", "--history", "no/such/dir", "--as-of", "2025-10-15", "--out", out.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicates::str::contains("no/such/dir"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "files left behind");
}

/// `--passes 3` reads the payers in three shards: the same open payments, and the
/// same model figures for every payment that does not wait for a new card (those
/// use the update rate, measured on the first shard's payers only).
#[test]
fn export_in_passes_covers_the_same_payments() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |passes: &str| {
        let out = dir.path().join(format!("open-{passes}.csv"));
        assert_cmd::Command::cargo_bin("recoup")
            .unwrap()
            .current_dir(root)
            .args([
                "export",
                "-q",
                "--history",
                "data/sample/",
                "--as-of",
                "2025-10-15",
                "--out",
                out.to_str().unwrap(),
                "--calibration-payments",
                "2000",
                "--passes",
                passes,
            ])
            .assert()
            .success();
        let df = CsvReadOptions::default().with_has_header(true).try_into_reader_with_file_path(Some(out)).unwrap().finish().unwrap();
        let (ids, class, p) = (
            df.column("payment_id").unwrap().str().unwrap().clone(),
            df.column("decline_class").unwrap().str().unwrap().clone(),
            df.column("p_recovery_model").unwrap().f64().unwrap().clone(),
        );
        (0..df.height())
            .map(|i| (ids.get(i).unwrap().to_string(), (class.get(i).unwrap().to_string(), p.get(i).unwrap())))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (one, three) = (read("1"), read("3"));
    assert!(one.len() > 100);
    assert_eq!(one.keys().collect::<Vec<_>>(), three.keys().collect::<Vec<_>>());
    for (id, (class, p)) in &one {
        if class != "needs_update" {
            assert!((p - three[id].1).abs() < 1e-9, "{id}: {p} vs {}", three[id].1);
        }
    }
}

/// A sharded export (three `--shard K/3` jobs and a `--merge`) writes what one process
/// reading three passes writes: the same segment totals file byte for byte, and the
/// same payments in the same order.
#[test]
fn sharded_export_merges_to_the_totals_of_one_process() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let at = |as_of: &str| {
        let mut c = assert_cmd::Command::cargo_bin("recoup").unwrap();
        c.current_dir(root).args(["export", "-q", "--as-of", as_of, "--calibration-payments", "2000"]);
        c
    };
    let recoup = || at("2025-10-15");
    let (parts, p) = (dir.path().join("parts"), |name: &str| dir.path().join(name).to_str().unwrap().to_string());
    recoup()
        .args(["--history", "data/sample/", "--passes", "3", "--by", "decline-class,country", "--out", &p("one.csv")])
        .args(["--payments-out", &p("one.parquet")])
        .assert()
        .success();
    for k in [0, 2] {
        recoup().args(["--history", "data/sample/", "--shard", &format!("{k}/3"), "--out"]).arg(&parts).assert().success();
    }
    // The merge refuses an incomplete set.
    recoup()
        .args(["--merge"])
        .arg(&parts)
        .args(["--out", &p("x.csv")])
        .assert()
        .failure()
        .stderr(predicates::str::contains("2 of 3 parts are there; missing: 1"));
    recoup().args(["--history", "data/sample/", "--shard", "1/3", "--out"]).arg(&parts).assert().success();
    recoup()
        .args(["--merge"])
        .arg(&parts)
        .args(["--by", "decline-class,country", "--out", &p("merged.csv"), "--payments-out", &p("merged.parquet")])
        .assert()
        .success();
    let (one, merged) = (std::fs::read(p("one.csv")).unwrap(), std::fs::read(p("merged.csv")).unwrap());
    assert!(one.len() > 200, "{}", String::from_utf8_lossy(&one));
    assert!(one == merged, "segment totals differ:\n{}\nvs\n{}", String::from_utf8_lossy(&one), String::from_utf8_lossy(&merged));
    let read = |f: &str| ParquetReader::new(std::fs::File::open(p(f)).unwrap()).finish().unwrap();
    let (a, b) = (read("one.parquet"), read("merged.parquet"));
    assert!(a.height() > 100);
    assert!(a.equals_missing(&b), "per-payment rows differ");
    // Another as-of's parts do not mix in.
    at("2025-09-01")
        .args(["--merge"])
        .arg(&parts)
        .args(["--out", &p("y.csv")])
        .assert()
        .failure()
        .stderr(predicates::str::contains("another time than --as-of"));
}

/// A history of two open USD payments whose original charges failed, of `amounts`
/// minor units, written to `dir`/h.csv.
fn two_open_payments(dir: &std::path::Path, amounts: [&str; 2]) -> std::path::PathBuf {
    let history = dir.join("h.csv");
    std::fs::write(
        &history,
        format!(
            "attempt_id,payment_id,customer_id,attempted_at,attempt_number,amount_minor,currency,payment_method,card_brand,country,outcome,decline_code\n\
             a1,p1,c1,2026-11-20T10:00:00Z,0,{},USD,card,visa,US,failed,insufficient_funds\n\
             a2,p2,c2,2026-11-20T11:00:00Z,0,{},USD,card,visa,US,failed,insufficient_funds\n",
            amounts[0], amounts[1]
        ),
    )
    .unwrap();
    history
}

/// `recoup export` as of 2026-11-21 with the shipped model: the caller adds the rest.
fn export_with_shipped_model() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("recoup").unwrap();
    c.args(["export", "-q", "--as-of", "2026-11-21", "--models"]).arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    c
}

/// Amounts near the 64-bit limit (no real payment, but the contract sets no
/// maximum): a segment whose amounts sum beyond it is refused naming the
/// segment, where a debug build panicked and a release build wrote a negative
/// total; the headline per currency sums wide.
#[test]
fn a_segment_whose_amounts_overflow_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let history = two_open_payments(dir.path(), ["9000000000000000000", "9000000000000000000"]);
    let export = |out: &str, by: &[&str]| {
        export_with_shipped_model().arg("--history").arg(&history).arg("--out").arg(dir.path().join(out)).args(by).assert()
    };
    export("seg.csv", &["--by", "currency"])
        .failure()
        .stderr(predicates::str::contains("segment USD / USD: its payments' amounts sum to 18000000000000000000 minor units"));
    assert!(!dir.path().join("seg.csv").exists(), "no segment file");
    export("open.csv", &[]).success().stdout(predicates::str::contains("18000000000000000000"));
}

/// The merge of a sharded export sums the parts' amounts as the integers they were
/// written as: read through f64, 2^53 + 1 minor units lost its last unit, so the merged
/// segment total differed from one process's.
#[test]
fn merged_parts_keep_every_unit_of_amounts_past_two_to_the_53() {
    let dir = tempfile::tempdir().unwrap();
    let history = two_open_payments(dir.path(), ["9007199254740993", "3"]);
    let (parts, p) = (dir.path().join("parts"), |name: &str| dir.path().join(name));
    export_with_shipped_model().arg("--history").arg(&history).args(["--by", "currency", "--out"]).arg(p("one.csv")).assert().success();
    for k in ["0/2", "1/2"] {
        export_with_shipped_model().arg("--history").arg(&history).args(["--shard", k, "--out"]).arg(&parts).assert().success();
    }
    export_with_shipped_model().arg("--merge").arg(&parts).args(["--by", "currency", "--out"]).arg(p("merged.csv")).assert().success();
    let (one, merged) = (std::fs::read_to_string(p("one.csv")).unwrap(), std::fs::read_to_string(p("merged.csv")).unwrap());
    assert!(one.contains("9007199254740996"), "one process sums 2^53 + 1 and 3 exactly:\n{one}");
    assert_eq!(one, merged);
}
