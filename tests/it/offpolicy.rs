//! Off-policy estimates on a simulated log, checked against the truth measured
//! by running the same strategy inside the world that wrote the log.

use recoup::backtest::{self, Offsets};
use recoup::declines::DeclineClass;
use recoup::domain::Channel;
use recoup::history::{self, LoadOptions};
use recoup::offpolicy::{self, LoggedStrategy, Options};
use recoup::sim::{generate, World, WorldConfig};

/// The logging policy's shape with its jitter removed: fully supported by the log.
fn supported() -> Offsets {
    Offsets {
        name: "days 1/2/4/6/8/11/14/18, email".into(),
        hours: vec![24, 48, 96, 144, 192, 264, 336, 432],
        technical_hours: vec![3, 24, 48, 96, 144, 192, 264, 336, 432],
        channel: Channel::Email,
    }
}

#[test]
fn estimators_bracket_the_truth_measured_in_the_world() {
    let n = 30_000;
    let w = World::new(WorldConfig::default(), 31, 12);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.parquet");
    history::write(&generate::chunk(&w, 0..n).history, &path).unwrap();
    let h = history::load(&path, &LoadOptions::default()).unwrap();
    let (_, model) = recoup::registry::load_current(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).unwrap();

    let target = supported();
    // Retries at 12 h after the failure: the logging policy never retries then.
    let unsupported = Offsets { name: "12 h".into(), hours: vec![12], technical_hours: vec![], channel: Channel::Email };
    let strategies: Vec<&dyn LoggedStrategy> = vec![&target, &unsupported];
    let opts = Options { first_per_payer: true, resamples: 300, ..Options::default() };
    let (coverage, est) = offpolicy::estimate(&h, &model, &strategies, &opts, &|_| {});
    assert!(coverage.episodes > 10_000, "{coverage:?}");
    assert!(coverage.needs_update_left_out > 100, "{coverage:?}");

    // The truth: the same strategy dunning the same payers' first failures in the world
    // (three times as many payers, so its own noise is small next to the estimates').
    let cases: Vec<_> =
        backtest::cases(&w, 0..3 * n).into_iter().filter(|c| c.episode.decline.class() != DeclineClass::NeedsUpdate).collect();
    let out: Vec<_> = cases.iter().map(|c| backtest::run(&w, c, &target)).collect();
    let rate = |f: &dyn Fn(&backtest::Outcome1) -> bool| out.iter().filter(|o| f(o)).count() as f64 / out.len() as f64;
    let (true_first, true_recovery) = (rate(&|o| o.first_retry_success), rate(&|o| o.recovered));

    let e = &est[0];
    eprintln!("{e:#?}\ntruth: first retry {true_first:.4}, recovery {true_recovery:.4}");
    for (name, x, truth) in [
        ("first-retry replay", e.first_retry_replay, true_first),
        ("first-retry IPS", e.first_retry_ips, true_first),
        ("first-retry SNIPS", e.first_retry_snips, true_first),
        ("first-retry DR", e.first_retry_dr, true_first),
        ("recovery PDIS", e.recovery_pdis, true_recovery),
        ("recovery sequential DR", e.recovery_sdr, true_recovery),
    ] {
        assert!(x.lo <= truth && truth <= x.hi, "{name}: {:.4} [{:.4}, {:.4}] does not bracket the truth {truth:.4}", x.value, x.lo, x.hi);
    }
    assert!(e.warning.is_none(), "{:?}", e.warning);
    // Informative, not just wide: a first-retry interval under 10 points, and the
    // model's direct part narrows the recovery interval of plain per-decision IS.
    assert!(e.first_retry_dr.hi - e.first_retry_dr.lo < 0.10, "{:?}", e.first_retry_dr);
    assert!(e.recovery_sdr.hi - e.recovery_sdr.lo < e.recovery_pdis.hi - e.recovery_pdis.lo);
    assert!(e.ess_first > 100.0);
    // No support: no match, an effective sample size of 0, and a warning that says so.
    let u = &est[1];
    assert_eq!(u.matched_first, 0);
    assert!(u.warning.as_deref().is_some_and(|w| w.contains("little support")), "{u:?}");
}

/// The CLI: a table with every shipped strategy, warnings where the log does not
/// support a strategy, JSON for machines.
#[test]
fn backtest_history_reports_estimates_support_and_warnings() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = assert_cmd::Command::cargo_bin("recoup")
        .unwrap()
        .current_dir(root)
        .args(["backtest", "--history", "data/sample/", "--resamples", "50", "--json", "-q"])
        .assert()
        .success();
    let doc: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let strategies = doc["strategies"].as_array().unwrap();
    assert_eq!(strategies.len(), 6, "4 schedules, the pay-day heuristic, learned");
    assert!(doc["coverage"]["needs_update_left_out"].as_u64().unwrap() > 0);
    for s in strategies {
        let ess = s["ess_first"].as_f64().unwrap();
        assert_eq!(s["warning"].is_string(), ess < 100.0, "{s}");
        for k in ["first_retry_ips", "first_retry_snips", "first_retry_dr", "recovery_pdis", "recovery_sdr"] {
            let e = &s[k];
            let (v, lo, hi) = (e["value"].as_f64().unwrap(), e["lo"].as_f64().unwrap(), e["hi"].as_f64().unwrap());
            assert!(lo <= hi && (-0.5..=1.5).contains(&v), "{k}: {e}");
        }
    }
}

#[test]
fn backtest_history_without_propensities_says_what_is_missing() {
    use crate::support::{row, set, temp_file, write_csv};
    let (_dir, path) = temp_file("h.csv");
    let rows = vec![
        set(row("a0", "p1", 0, "2026-01-05T10:00:00Z", "failed"), "propensity", ""),
        set(row("a1", "p1", 1, "2026-01-06T10:00:00Z", "succeeded"), "propensity", ""),
    ];
    write_csv(&path, &rows);
    let root = env!("CARGO_MANIFEST_DIR");
    assert_cmd::Command::cargo_bin("recoup")
        .unwrap()
        .current_dir(root)
        .args(["backtest", "--history", path.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicates::str::contains("propensity"));
}
