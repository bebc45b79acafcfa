//! Helpers shared by the bench scripts (each bench uses some of them).
#![allow(dead_code)]

/// The binary's allocator (see `src/main.rs`), so benches measure what `recoup` does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Peak resident memory of this process so far (VmHWM), in MiB.
pub fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// The median of `v` (the upper middle for an even count), from a sorted copy: `v` keeps
/// its order (the grpc bench pairs runs by their round).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The tasks under a /proc directory (`/proc` for processes, `/proc/PID/task` for a
/// process's threads), each as its name (`comm`) and its time on a CPU so far in nanoseconds
/// (`schedstat`'s first field; Linux). A task that is gone, or unreadable, counts "" and 0.
pub fn tasks_cpu(dir: &str) -> Vec<(String, f64)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .map(|e| {
            let read = |f: &str| std::fs::read_to_string(e.path().join(f)).unwrap_or_default();
            let ns = read("schedstat").split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (read("comm").trim().to_string(), ns)
        })
        .collect()
}

fn ts(rfc3339: &str) -> Option<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).expect("timestamp");
    Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 })
}

/// The README's example request (examples/decide.json) as a protobuf message.
pub fn readme_request() -> recoup::api::v1::DecideRequest {
    recoup::api::v1::DecideRequest {
        payment: Some(recoup::api::v1::Payment {
            payment_id: "inv_1001".into(),
            customer_id: "cus_42".into(),
            amount_minor: 1299,
            currency: "USD".into(),
            payment_method: "card".into(),
            card_brand: "visa".into(),
            card_funding: "debit".into(),
            country: "US".into(),
            timezone: "America/Chicago".into(),
            billing_interval: "month".into(),
            tenure_days: Some(400),
            payment_method_id: "pm_visa_4242".into(),
        }),
        attempts: vec![recoup::api::v1::Attempt {
            attempted_at: ts("2026-11-20T14:05:00Z"),
            network_code: "51".into(),
            payment_method_id: "pm_visa_4242".into(),
            ..Default::default()
        }],
        past_payments: vec![recoup::api::v1::PastPayment {
            attempts: vec![
                recoup::api::v1::PastAttempt {
                    attempted_at: ts("2026-10-20T14:05:00Z"),
                    outcome: "failed".into(),
                    decline_code: "insufficient_funds".into(),
                    payment_method_id: "pm_visa_4242".into(),
                    ..Default::default()
                },
                recoup::api::v1::PastAttempt {
                    attempted_at: ts("2026-10-23T12:00:00Z"),
                    outcome: "succeeded".into(),
                    payment_method_id: "pm_visa_4242".into(),
                    ..Default::default()
                },
            ],
        }],
        now: ts("2026-11-20T14:06:00Z"),
        constraints: Some(recoup::api::v1::Constraints { quiet_start_hour: Some(22), quiet_end_hour: Some(7), ..Default::default() }),
        ..Default::default()
    }
}
