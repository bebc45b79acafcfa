//! Backtests inside the simulated world: common random numbers, rules never
//! broken, the oracle on top, fixed schedules at their local hour, intervals.

use chrono::Timelike;
use recoup::backtest::{self, Learned, Oracle, PayDayHeuristic, RandomPolicy, Schedule, Strategy, View};
use recoup::engine::EngineConfig;
use recoup::sim::{World, WorldConfig};

fn world() -> World {
    // A seed other than the sample's and the training tests'.
    World::new(WorldConfig::default(), 23, 12)
}

fn learned() -> Learned {
    let (version, model) = recoup::registry::load_current(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).unwrap();
    Learned { model, version, cfg: EngineConfig::default(), channels: Vec::new() }
}

#[test]
fn strategies_share_random_numbers_break_no_rule_and_the_oracle_leads() {
    let w = world();
    let cases = backtest::cases(&w, 0..600);
    assert!(cases.len() > 250, "{} failed payments", cases.len());
    let schedules = backtest::parse_schedules(backtest::DEFAULT_SCHEDULES).unwrap();
    let learned = learned();
    let mut strategies: Vec<&dyn Strategy> = schedules.iter().map(|s| s as &dyn Strategy).collect();
    strategies.extend([&PayDayHeuristic as &dyn Strategy, &learned, &Oracle, &RandomPolicy]);
    let out = backtest::run_all(&w, &cases, &strategies, &|_| {});

    // Same world, same strategy, same payments: the same outcomes, payment for payment.
    let again = backtest::run_all(&w, &cases, &strategies[..1], &|_| {});
    assert!(again[0].iter().zip(&out[0]).all(|(a, b)| a.recovered == b.recovered && a.attempts == b.attempts && a.cost == b.cost));

    // Every strategy goes through the rules: nothing the world counts as a violation.
    for (s, o) in strategies.iter().zip(&out) {
        assert_eq!(o.iter().map(|x| x.violations).sum::<u32>(), 0, "{}", s.name());
    }
    // Hard declines are never recovered, by anyone.
    for (i, c) in cases.iter().enumerate() {
        if c.episode.decline.class() == recoup::declines::DeclineClass::Hard {
            assert!(out.iter().all(|o| !o[i].recovered && o[i].attempts == 0), "payment {i} ({:?})", c.episode.decline);
        }
    }

    let names: Vec<String> = strategies.iter().map(|s| s.name()).collect();
    let fixed: Vec<usize> = (0..schedules.len()).collect();
    let oracle = strategies.len() - 2;
    let lineup = backtest::Lineup { names, fixed: fixed.clone(), oracle: Some(oracle) };
    let sums = backtest::summarize(&lineup, &out, 200, 1);
    let net = |i: usize| sums[i].net_per_payment.value;
    for (i, s) in sums.iter().enumerate() {
        assert!(s.recovery_rate.lo <= s.recovery_rate.value && s.recovery_rate.value <= s.recovery_rate.hi, "{s:?}");
        assert!(s.net_per_payment.lo < s.net_per_payment.hi, "{s:?}");
        if i != oracle {
            assert!(net(oracle) > net(i), "the oracle nets {} < {} for {}", net(oracle), net(i), s.strategy);
        }
    }
    // The uplift share is 100 % for the oracle and 0 % for the best fixed schedule, by definition.
    let best_fixed = *fixed.iter().max_by(|a, b| net(**a).total_cmp(&net(**b))).unwrap();
    assert!((sums[oracle].oracle_uplift_share.unwrap().value - 1.0).abs() < 1e-9);
    assert!(sums[best_fixed].oracle_uplift_share.unwrap().value.abs() < 1e-9);
    // Segments partition the payments; nobody recovers a hard decline.
    for by in backtest::SegmentBy::ALL {
        let segs = backtest::summarize_segments(by, &cases, &lineup, &out, 100, 1);
        assert_eq!(segs.iter().map(|s| s.payments).sum::<usize>(), cases.len(), "{by:?}");
        if by == backtest::SegmentBy::DeclineClass {
            let hard = segs.iter().find(|s| s.value == "hard").expect("hard declines among 600 payers");
            assert!(hard.strategies.iter().all(|s| s.recovery_rate.value == 0.0), "{hard:?}");
        }
    }
    // The learned policy beats the random floor.
    assert!(net(oracle - 1) > net(strategies.len() - 1), "learned {} vs random {}", net(oracle - 1), net(strategies.len() - 1));

    // Each chosen retry carries the world's own P of success given that it is made; the
    // outcomes are draws from it, so they agree with it within their noise (a z-score),
    // and the calibration table reports its ECE against it beside the realised one.
    let chosen: Vec<_> = out[oracle - 1].iter().flat_map(|o| o.predictions[..o.predicted as usize].iter().copied()).collect();
    assert!(chosen.len() > 200, "{} chosen retries", chosen.len());
    assert!(chosen.iter().all(|p| (0.0..=1.0).contains(&p.truth)), "a truth outside [0, 1]");
    assert!(chosen.iter().any(|p| p.truth > 0.0) && chosen.iter().any(|p| p.truth < p.p), "truths all 0, or never below the prediction");
    let surprise: f64 = chosen.iter().map(|p| p.succeeded as u8 as f64 - p.truth as f64).sum();
    let var: f64 = chosen.iter().map(|p| p.truth as f64 * (1.0 - p.truth as f64)).sum();
    assert!((surprise / var.sqrt()).abs() < 4.0, "outcomes {surprise:+.1} from the truth's sum (sd {:.1})", var.sqrt());
    let cal = backtest::chosen_calibration(&out[oracle - 1]);
    let all = cal.iter().find(|c| c.segment == "all").expect("an overall row");
    let mean_truth = chosen.iter().map(|p| p.truth as f64).sum::<f64>() / chosen.len() as f64;
    assert!((all.truth - mean_truth).abs() < 1e-9 && all.ece_truth >= (all.mean_predicted - all.truth).abs() - 1e-9, "{all:?}");
}

#[test]
fn fixed_schedules_retry_on_their_days_at_the_local_hour() {
    let w = world();
    let cases = backtest::cases(&w, 0..200);
    let s = Schedule { name: "t".into(), days: vec![1, 3], hour: 9, channel: recoup::domain::Channel::Email };
    let mut seen = 0;
    for c in &cases {
        let st = w.start_episode(c.payer.clone(), c.episode.clone(), c.network_code, c.advice_code);
        let v = View { world: &w, case: c, state: &st, not_before: c.episode.failed_at };
        let a = s.next(&v).expect("a first retry");
        let local = a.retry_at.with_timezone(&c.payer.timezone);
        assert_eq!((local.hour(), local.minute()), (9, 0), "{} in {}", a.retry_at, c.payer.timezone);
        let day = (local.date_naive() - c.episode.failed_at.with_timezone(&c.payer.timezone).date_naive()).num_days();
        assert_eq!(day, 1);
        // After a skipped day-1 retry, the next proposal is day 3; then nothing.
        let v = View { not_before: a.retry_at, ..v };
        let b = s.next(&v).expect("day 3");
        assert_eq!((b.retry_at.with_timezone(&c.payer.timezone).date_naive() - local.date_naive()).num_days(), 2);
        assert!(s.next(&View { not_before: b.retry_at, ..v }).is_none());
        seen += 1;
    }
    assert!(seen > 50);
}

#[test]
fn backtest_command_prints_every_strategy_as_json() {
    let out = assert_cmd::Command::cargo_bin("recoup")
        .unwrap()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-q", "backtest", "--payers", "150", "--seed", "5", "--resamples", "50", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    let names: Vec<&str> = doc["strategies"].as_array().unwrap().iter().map(|s| s["strategy"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(names.contains(&"oracle") && names.contains(&"random") && names.iter().any(|n| n.starts_with("learned")), "{names:?}");
    assert!(doc["payments"].as_u64().unwrap() > 30);
    // The HTML report: a table row per strategy and the three plots, inline and as files.
    let dir = tempfile::tempdir().unwrap();
    assert_cmd::Command::cargo_bin("recoup")
        .unwrap()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-q", "backtest", "--payers", "150", "--seed", "5", "--resamples", "50", "--report"])
        .arg(dir.path())
        .assert()
        .success();
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    for n in &names {
        assert!(html.contains(&format!("<tr><td>{n}</td>")), "no row for {n}");
    }
    assert_eq!(html.matches("<svg").count(), 3, "three inline plots");
    assert!(html.contains("by decline_class") && html.contains("by card_funding"));
    for f in ["recovery_curve.svg", "recovery_by_decline_class.svg", "recovery_by_pay_day.svg"] {
        let svg = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("oracle") && svg.contains("<polyline"), "{f}");
    }
    let bad = assert_cmd::Command::cargo_bin("recoup")
        .unwrap()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["backtest", "--payers", "0"])
        .assert()
        .failure();
    assert!(String::from_utf8_lossy(&bad.get_output().stderr).contains("--payers"));
}

/// A sharded backtest (three `--shard K/3` jobs and a `--merge`) prints exactly what one
/// process over all the payers prints; a merge with other settings is refused.
#[test]
fn sharded_backtest_merges_to_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let recoup = || {
        let mut c = assert_cmd::Command::cargo_bin("recoup").unwrap();
        c.current_dir(env!("CARGO_MANIFEST_DIR")).args(["-q", "backtest", "--payers", "240", "--seed", "5", "--resamples", "50"]);
        c
    };
    let single = recoup().arg("--json").output().unwrap();
    assert!(single.status.success(), "{}", String::from_utf8_lossy(&single.stderr));
    for k in 0..3 {
        recoup()
            .args(["--shard", &format!("{k}/3"), "--out"])
            .arg(dir.path())
            .assert()
            .success()
            .stdout(predicates::str::contains(format!("shard {k} of 3:")));
    }
    let merged = recoup().arg("--json").arg("--merge").arg(dir.path()).output().unwrap();
    assert!(merged.status.success(), "{}", String::from_utf8_lossy(&merged.stderr));
    assert!(single.stdout.len() > 1000);
    assert!(single.stdout == merged.stdout, "the merged backtest differs from the single run");
    // Parts of a run with another seed are refused, naming the difference.
    let mut other = assert_cmd::Command::cargo_bin("recoup").unwrap();
    other
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-q", "backtest", "--payers", "240", "--seed", "6", "--resamples", "50", "--merge"])
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicates::str::contains("other settings"));
    std::fs::remove_file(dir.path().join("part-00001-of-00003.json")).unwrap();
    recoup().arg("--merge").arg(dir.path()).assert().failure().stderr(predicates::str::contains("missing: 1"));
}
