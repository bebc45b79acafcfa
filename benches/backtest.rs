//! Backtest benchmark: 6 strategies (the 4 shipped fixed schedules, the learned
//! policy with the shipped model, the oracle) on 100,000 failed payments in the
//! simulated world, release build. Prints the wall time of finding the payments,
//! dunning them, and the bootstrap.
//!
//!     cargo bench --bench backtest            # RECOUP_BENCH_PAYMENTS=100000

mod common;

use std::time::Instant;

use recoup::backtest::{self, Learned, Oracle, Strategy};
use recoup::sim::{World, WorldConfig};

fn main() {
    let want: usize = std::env::var("RECOUP_BENCH_PAYMENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let world = World::new(WorldConfig::default(), 11, 12);
    let t0 = Instant::now();
    // About 62 % of payers fail a charge within 12 months: draw payers until `want` payments.
    let mut cases = backtest::cases(&world, 0..(want as f64 / 0.6) as u32);
    cases.truncate(want);
    assert_eq!(cases.len(), want, "not enough failed payments");
    let found = t0.elapsed();
    let (version, model) =
        recoup::registry::load_current(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).expect("shipped model");
    let learned = Learned { model, version, cfg: recoup::engine::EngineConfig::default(), channels: Vec::new() };
    let schedules = backtest::parse_schedules(backtest::DEFAULT_SCHEDULES).expect("schedules");
    let mut strategies: Vec<&dyn Strategy> = schedules.iter().map(|s| s as &dyn Strategy).collect();
    strategies.extend([&learned as &dyn Strategy, &Oracle]);
    let t1 = Instant::now();
    let out = backtest::run_all(&world, &cases, &strategies, &|_| {});
    let dunned = t1.elapsed();
    let names: Vec<String> = strategies.iter().map(|s| s.name()).collect();
    let t2 = Instant::now();
    let sums = backtest::summarize(&backtest::Lineup { names, fixed: vec![0, 1, 2, 3], oracle: Some(5) }, &out, 500, 1);
    let boot = t2.elapsed();
    println!(
        "backtest: {} strategies × {} failed payments on {} threads: find {:.1} s, dunn {:.1} s, bootstrap (500) {:.1} s, total {:.1} s; peak RSS {:.0} MiB",
        strategies.len(),
        cases.len(),
        rayon::current_num_threads(),
        found.as_secs_f64(),
        dunned.as_secs_f64(),
        boot.as_secs_f64(),
        (found + dunned + boot).as_secs_f64(),
        common::vm_hwm_mib()
    );
    for s in &sums {
        println!("  {:<40} recovered {:.1} %  net/payment {:.1}", s.strategy, 100.0 * s.recovery_rate.value, s.net_per_payment.value);
    }
}
