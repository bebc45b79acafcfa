//! The zoo benchmark (#20): for every preset world, train on that world's own
//! log (world seed 3), then dunn the failed payments of another draw of the
//! same world (seed 11) with the fixed schedules — the four shipped ones, each
//! with and without an email before every retry — the learned policy and the
//! oracle. Prints per world: the best fixed schedule, the learned policy's net
//! per payment, its share of the oracle's uplift over the best fixed schedule
//! (paired-bootstrap 95 % interval: above 0 means it nets more than the best
//! fixed schedule), rule violations, and the calibration of the retries it
//! chose (ECE: all, first retries, later retries; and `truth`, all retries' ECE against
//! the world's own P instead of the outcomes: the model's error without the outcomes'
//! noise). Release build:
//!
//!     cargo bench --bench zoo        # RECOUP_ZOO_PAYERS=20000 (log), RECOUP_ZOO_CASES=20000 (backtest payers)
//!
//! `RECOUP_ZOO_SEED=3` and `RECOUP_ZOO_CASES_SEED=11` draw the log and the backtest's payers
//! (another seed is another draw of the same world: a check that a figure is not one draw's luck).
//!
//! `RECOUP_ZOO_WORLDS=bills,fixed-log` runs only those worlds; `RECOUP_ZOO_DETAIL=1` adds,
//! per world, the chosen retries' mean predicted vs realised success (and the world's own P)
//! per decline class and stage, and within those by hours after the attempt before.
//! `RECOUP_ZOO_FAMILY=trees|auto` fits that model family instead of the default `logistic`
//! (`auto` fits trees from 100,000 fit examples: a log of about 65,000 payers).
//! `RECOUP_ZOO_TEST_FRACTION` / `RECOUP_ZOO_CAL_FRACTION` (training's defaults, 0.25 / 0.15)
//! set its time split (`TrainParams::test_fraction` / `calibration_fraction`), for experiments.
//!
//! Each run writes its logs and models under `target/zoo-bench/<process id>/` and removes
//! them when it ends, so runs side by side (other seeds, other builds) never read each
//! other's files.

mod common;

use std::path::Path;
use std::time::Instant;

use strum::VariantArray;

use recoup::backtest::{self, Learned, Lineup, Oracle, Prediction, Schedule, Strategy};
use recoup::domain::Channel;
use recoup::sim::{generate, zoo, World};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let (payers, cases_payers) = (env::<u32>("RECOUP_ZOO_PAYERS", 20_000), env::<u32>("RECOUP_ZOO_CASES", 20_000));
    let (seed, cases_seed) = (env::<u32>("RECOUP_ZOO_SEED", 3), env::<u32>("RECOUP_ZOO_CASES_SEED", 11));
    // Per run: two runs at once once shared one directory, and one trained on, or
    // loaded the model of, the other's log.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/zoo-bench").join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut schedules = backtest::parse_schedules(backtest::DEFAULT_SCHEDULES).expect("schedules");
    let quiet: Vec<Schedule> =
        schedules.iter().map(|s| Schedule { name: format!("{} (no message)", s.name), channel: Channel::None, ..s.clone() }).collect();
    schedules.extend(quiet);
    println!("zoo: logs of {payers} payers × 12 months (seed {seed}); backtests on the first failures of {cases_payers} payers (seed {cases_seed}); 8 fixed schedules\n");
    println!(
        "{:<13} {:<30} {:>9} {:>9} {:>16} {:>5} {:>7} {:>7} {:>7} {:>7} {:>6}",
        "world", "best fixed", "fixed net", "learned", "oracle share", "viol", "ECE", "first", "later", "truth", "secs"
    );
    let only: Option<Vec<String>> = std::env::var("RECOUP_ZOO_WORLDS").ok().map(|v| v.split(',').map(|w| w.trim().to_string()).collect());
    let detail = std::env::var("RECOUP_ZOO_DETAIL").is_ok_and(|v| v == "1");
    let family = match std::env::var("RECOUP_ZOO_FAMILY").as_deref() {
        Ok(f) => <recoup::train::Family as clap::ValueEnum>::from_str(f, true).expect("RECOUP_ZOO_FAMILY: auto, logistic or trees"),
        Err(_) => recoup::train::Family::default(),
    };
    let defaults = recoup::train::TrainParams::default();
    for (name, _) in zoo::PRESETS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|w| w == name)) {
            continue;
        }
        let t0 = Instant::now();
        let cfg = zoo::preset(name).expect("preset").check().expect("a valid world");
        let log = dir.join(format!("{name}.parquet"));
        let mut df = generate::chunk(&World::new(cfg.clone(), seed.into(), 12), 0..payers).to_frame().expect("frame");
        polars::prelude::ParquetWriter::new(std::fs::File::create(&log).expect("create")).finish(&mut df).expect("write");
        let models = dir.join(format!("models-{name}"));
        let _ = std::fs::remove_dir_all(&models);
        let job = recoup::pipeline::Job {
            history: log.clone(),
            out: models.clone(),
            version: Some("zoo".into()),
            promote: true,
            cfg: recoup::train::TrainParams {
                family,
                test_fraction: env("RECOUP_ZOO_TEST_FRACTION", defaults.test_fraction),
                calibration_fraction: env("RECOUP_ZOO_CAL_FRACTION", defaults.calibration_fraction),
                ..defaults.clone()
            }
            .check()
            .expect("valid training settings"),
            export_features: None,
            load: recoup::history::LoadOptions::default(),
            sample_payers: None,
        };
        recoup::pipeline::to_registry(&job, &mut |line| {
            if detail && (line.starts_with("calibration where") || line.starts_with("  refit") || line.starts_with("  held out")) {
                println!("    {line}");
            }
        })
        .unwrap_or_else(|e| panic!("{name}: training failed: {e:#}"));
        let (version, model) = recoup::registry::load_current(&models).expect("the trained version loads");
        let world = World::new(cfg, cases_seed.into(), 12);
        let cases = backtest::cases(&world, 0..cases_payers);
        let learned = Learned { model, version, cfg: recoup::engine::EngineConfig::default(), channels: Vec::new() };
        let mut strategies: Vec<&dyn Strategy> = schedules.iter().map(|s| s as &dyn Strategy).collect();
        strategies.extend([&learned as &dyn Strategy, &Oracle]);
        let out = backtest::run_all(&world, &cases, &strategies, &|_| {});
        let n = schedules.len();
        let lineup = Lineup { names: strategies.iter().map(|s| s.name()).collect(), fixed: (0..n).collect(), oracle: Some(n + 1) };
        let sums = backtest::summarize(&lineup, &out, 500, 1);
        let best = (0..n).max_by(|a, b| sums[*a].net_per_payment.value.total_cmp(&sums[*b].net_per_payment.value)).unwrap_or(0);
        let l = &sums[n];
        let share =
            l.oracle_uplift_share.map_or("–".into(), |e| format!("{:.0} % [{:.0}, {:.0}]", 100.0 * e.value, 100.0 * e.lo, 100.0 * e.hi));
        let cal = backtest::chosen_calibration(&out[n]);
        let ece = |seg: &str| cal.iter().find(|c| c.segment == seg).map_or(f64::NAN, |c| c.ece);
        let ece_truth = cal.iter().find(|c| c.segment == "all").map_or(f64::NAN, |c| c.ece_truth);
        println!(
            "{:<13} {:<30} {:>9.1} {:>9.1} {:>16} {:>5} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>6.0}",
            name,
            sums[best].strategy,
            sums[best].net_per_payment.value,
            l.net_per_payment.value,
            share,
            l.rule_violations,
            ece("all"),
            ece("first retry"),
            ece("later retries"),
            ece_truth,
            t0.elapsed().as_secs_f64()
        );
        if detail {
            print_detail(&cal, &out[n]);
        }
    }
    println!("\npeak RSS {:.0} MiB", common::vm_hwm_mib());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `RECOUP_ZOO_DETAIL=1`: the chosen retries' calibration per segment, then per decline
/// class and stage, and within those by hours after the attempt before (where a log's
/// spacing ends, extrapolation starts).
fn print_detail(cal: &[backtest::ChosenCalibration], outcomes: &[backtest::Outcome1]) {
    for c in cal {
        println!(
            "    {:<14} {:>6} retries  predicted {:.3}  realised {:.3}  ECE {:.3}  world's P {:.3}  ECE against it {:.3}",
            c.segment, c.retries, c.mean_predicted, c.realised, c.ece, c.truth, c.ece_truth
        );
    }
    let preds: Vec<_> = outcomes.iter().flat_map(|o| o.predictions[..o.predicted as usize].iter().copied()).collect();
    let line = |indent: usize, label: String, ps: &[&Prediction]| {
        let mean = |f: &dyn Fn(&Prediction) -> f64| ps.iter().map(|p| f(p)).sum::<f64>() / ps.len() as f64;
        println!(
            "{:indent$}{label} {:>6} retries  predicted {:.3}  realised {:.3}  world's P {:.3}",
            "",
            ps.len(),
            mean(&|p| p.p as f64),
            mean(&|p| p.succeeded as u8 as f64),
            mean(&|p| p.truth as f64)
        );
    };
    for c in recoup::declines::DeclineClass::VARIANTS {
        for (stage, later) in [("first", false), ("later", true)] {
            let ps: Vec<&Prediction> = preds.iter().filter(|p| p.class == *c as u8 && (p.retry > 1) == later).collect();
            if ps.len() < 30 {
                continue;
            }
            line(6, format!("{:<12} {stage:<5}", <&str>::from(*c)), &ps);
            for (lo, hi) in [(0.0, 12.0), (12.0, 24.0), (24.0, 48.0), (48.0, 96.0), (96.0, 168.0), (168.0, f32::INFINITY)] {
                let qs: Vec<&Prediction> = ps.iter().copied().filter(|p| (lo..hi).contains(&p.spacing_h)).collect();
                if qs.len() >= 30 {
                    let span = if hi.is_finite() { format!("{lo:.0}–{hi:.0} h") } else { format!("{lo:.0}+ h") };
                    line(10, format!("{span:<10}"), &qs);
                }
            }
        }
    }
}
