//! In-process decision latency: `engine::decide` with the shipped default model
//! over the default 14-day hourly grid × 5 channels (up to 1,685 candidates),
//! on 500 varied requests (decline codes, brands, amounts, times of day).
//!
//! Criterion measures the mean; a second pass times 20,000 single decisions
//! (after a warm-up) and prints p50/p99/max, the figure the serve issue targets
//! (p99 under 200 µs on 2 cores), for first retries and for retries after three
//! failed ones (each earlier retry is scored again for the failed-retries correction).
//!
//!     cargo bench --bench decide
//!     RECOUP_BENCH_MODELS=DIR cargo bench --bench decide   # DIR's current model instead
//!                                                          # (e.g. one with trees, trained on 10 M attempts)

mod common;

use chrono::{Duration, TimeZone, Utc};
use criterion::Criterion;
use recoup::api::{to_engine, v1};
use recoup::engine::{decide, EngineConfig, Request};

/// 500 requests; with `failed_retries`, each also carries that many failed retries two days apart.
fn requests(failed_retries: i64) -> Vec<Request> {
    let codes = ["insufficient_funds", "do_not_honor", "try_again_later", "processing_error", "card_velocity_exceeded"];
    let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 15, 0, 0).unwrap();
    (0..500)
        .map(|i| {
            let at = t0 + Duration::hours(i * 7);
            let attempt = |t: chrono::DateTime<Utc>| v1::Attempt {
                attempted_at: Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }),
                decline_code: codes[i as usize % codes.len()].into(),
                ..Default::default()
            };
            let last = at + Duration::days(2 * failed_retries);
            let r = v1::DecideRequest {
                payment: Some(v1::Payment {
                    payment_id: format!("inv_{i}"),
                    amount_minor: 500 + 97 * i,
                    currency: "USD".into(),
                    payment_method: "card".into(),
                    card_brand: if i % 2 == 0 { "visa".into() } else { "mastercard".into() },
                    card_funding: "debit".into(),
                    country: "US".into(),
                    ..Default::default()
                }),
                attempts: (0..=failed_retries).map(|k| attempt(at + Duration::days(2 * k))).collect(),
                now: Some(prost_types::Timestamp { seconds: last.timestamp() + 60, nanos: 0 }),
                ..Default::default()
            };
            to_engine(&r, last).expect("valid")
        })
        .collect()
}

/// 20 requests at the input limits: 1,000 attempts (funds declines 20 minutes apart) and
/// 5,000 past attempts in 200 earlier payments; the failed-retries correction scores every
/// earlier retry.
fn largest() -> Vec<Request> {
    let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 15, 0, 0).unwrap();
    let ts = |t: chrono::DateTime<Utc>| Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 });
    (0..20)
        .map(|i| {
            let start = t0 + Duration::days(i);
            let last = start + Duration::minutes(20 * (recoup::limits::MAX_ATTEMPTS as i64 - 1));
            let past = |p: i64| v1::PastPayment {
                attempts: (0..25)
                    .map(|k| v1::PastAttempt {
                        attempted_at: ts(start - Duration::days(400) + Duration::hours(30 * p + k)),
                        outcome: if k == 24 { "succeeded".into() } else { "failed".into() },
                        decline_code: if k == 24 { String::new() } else { "insufficient_funds".into() },
                        ..Default::default()
                    })
                    .collect(),
            };
            let r = v1::DecideRequest {
                payment: Some(v1::Payment {
                    payment_id: format!("big_{i}"),
                    amount_minor: 4_999,
                    currency: "USD".into(),
                    payment_method: "card".into(),
                    card_brand: "amex".into(),
                    country: "US".into(),
                    ..Default::default()
                }),
                attempts: (0..recoup::limits::MAX_ATTEMPTS as i64)
                    .map(|k| v1::Attempt {
                        attempted_at: ts(start + Duration::minutes(20 * k)),
                        decline_code: "insufficient_funds".into(),
                        ..Default::default()
                    })
                    .collect(),
                past_payments: (0..recoup::limits::MAX_PAST_PAYMENTS as i64).map(past).collect(),
                now: ts(last + Duration::minutes(1)),
                ..Default::default()
            };
            to_engine(&r, last).expect("valid at the limits")
        })
        .collect()
}

fn main() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = std::env::var_os("RECOUP_BENCH_MODELS").map_or_else(|| std::path::Path::new(root).join("models"), std::path::PathBuf::from);
    let (version, model) = recoup::registry::load_current(&dir).expect("a current model");
    let cfg = EngineConfig::default();
    let reqs = requests(0);

    let mut c = Criterion::default().configure_from_args();
    let mut k = 0;
    c.bench_function("decide/grid_14d_hourly_x5", |b| {
        b.iter(|| {
            k += 1;
            decide(&model, &cfg, &reqs[k % reqs.len()], (0.5, 0.5)).expect("decides")
        })
    });
    // The README's example through the whole API path (protobuf in, protobuf out):
    // pay-day evidence, quiet hours, reasons and terms.
    let readme = common::readme_request();
    let clock = chrono::Utc::now();
    c.bench_function("decide/api_readme_example", |b| {
        b.iter(|| recoup::api::decide(&model, &version, &cfg, &readme, clock).expect("decides"))
    });
    c.final_summary();

    for (what, reqs) in
        [("first retries", &reqs), ("after 3 failed retries", &requests(3)), ("the largest request the limits allow", &largest())]
    {
        let mut lat = Vec::with_capacity(20_000);
        let mut scored = 0;
        let n = if reqs.len() < 100 { 220 } else { 22_000 };
        for k in 0..n {
            let r = &reqs[k % reqs.len()];
            let t = std::time::Instant::now();
            let d = decide(&model, &cfg, r, (0.5, 0.5)).expect("decides");
            let e = t.elapsed();
            if k >= n / 11 {
                lat.push(e.as_secs_f64() * 1e6);
                scored = scored.max(d.candidates_scored);
            }
        }
        lat.sort_by(f64::total_cmp);
        let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "decide/in-process, {what} (model {version}, up to {scored} candidates): p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
            q(0.5),
            q(0.99),
            lat[lat.len() - 1],
        );
    }
    println!("peak RSS {:.0} MiB", common::vm_hwm_mib());
}
