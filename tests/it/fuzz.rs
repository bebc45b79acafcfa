//! Property-based fuzzing (#22), bounded so CI runs it every time: random and
//! mutated requests through decoding, validation and the engine on both gRPC
//! routes, and random and mutated CSV files through the history loader. The
//! properties: nothing panics; every answer is a probability where one is
//! due; every refusal names a field. `PROPTEST_CASES` raises the count for a
//! longer run (default 256 per property).

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use prost::Message;
use recoup::api::{self, v1};
use recoup::engine::EngineConfig;
use recoup::hyperswitch;
use recoup::model::SuccessModel;

fn model() -> &'static SuccessModel {
    static M: OnceLock<SuccessModel> = OnceLock::new();
    M.get_or_init(|| {
        recoup::registry::load_current(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).expect("the shipped model").1
    })
}

fn clock() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 15, 0, 0).unwrap()
}

/// A time: mostly near the clock, sometimes anywhere a protobuf timestamp can say.
fn any_ts() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    let near = clock().timestamp();
    prop_oneof![
        16 => (-40 * 86_400i64..5 * 86_400).prop_map(move |d| Some(prost_types::Timestamp { seconds: near + d, nanos: 0 })),
        1 => (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Some(prost_types::Timestamp { seconds, nanos })),
        1 => Just(None),
    ]
}

/// Text: a valid vocabulary word, or anything.
fn word(valid: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![16 => proptest::sample::select(valid).prop_map(String::from), 1 => ".{0,12}"]
}

fn attempt() -> impl Strategy<Value = v1::Attempt> {
    (
        any_ts(),
        word(&["insufficient_funds", "do_not_honor", "expired_card", "stolen_card", "try_again_later", "", "other", "call_issuer", "2001"]),
        word(&["51", "05", "43", "R01", "", "N7"]),
        word(&["", "01", "03", "21", "24"]),
        word(&["", "none", "email", "sms"]),
        any::<bool>(),
        word(&["", "pm_1", "pm_2"]),
    )
        .prop_map(|(attempted_at, decline_code, network_code, advice_code, channel, payment_method_updated, payment_method_id)| {
            v1::Attempt { attempted_at, decline_code, network_code, advice_code, channel, payment_method_updated, payment_method_id }
        })
}

fn request() -> impl Strategy<Value = v1::DecideRequest> {
    let payment = (
        word(&["inv_1", "inv_2"]),
        prop_oneof![4 => 1i64..1_000_000, 1 => any::<i64>()],
        word(&["USD", "EUR", "JPY"]),
        word(&["card", "sepa_debit", "ach_debit"]),
        word(&["visa", "mastercard", ""]),
        word(&["US", "DK", "DE", "JP"]),
        word(&["", "America/New_York", "Europe/Copenhagen"]),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(payment_id, amount_minor, currency, payment_method, card_brand, country, timezone, tenure_days)| v1::Payment {
            payment_id,
            amount_minor,
            currency,
            payment_method,
            card_brand,
            country,
            timezone,
            tenure_days,
            ..Default::default()
        });
    let constraints = proptest::option::of(
        (
            any_ts(),
            any_ts(),
            proptest::option::of(0u32..30),
            proptest::option::of(0u32..30),
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(earliest, latest, quiet_start_hour, quiet_end_hour, skip_weekends, skip_holidays, max_retries)| {
                v1::Constraints {
                    earliest,
                    latest,
                    quiet_start_hour,
                    quiet_end_hour,
                    skip_weekends,
                    skip_holidays,
                    max_retries,
                    allowed_channels: Vec::new(),
                }
            }),
    );
    let asks =
        proptest::collection::vec((any_ts(), word(&["email", "sms"])).prop_map(|(sent_at, channel)| v1::Ask { sent_at, channel }), 0..2);
    let past = proptest::collection::vec(
        proptest::collection::vec(
            (any_ts(), word(&["succeeded", "failed"]), word(&["insufficient_funds", "merchant_blacklist", ""]), word(&["", "pm_1"]))
                .prop_map(|(attempted_at, outcome, decline_code, payment_method_id)| v1::PastAttempt {
                    attempted_at,
                    outcome,
                    decline_code,
                    payment_method_id,
                    attempt_number: None,
                }),
            0..4,
        )
        .prop_map(|attempts| v1::PastPayment { attempts }),
        0..3,
    );
    let shape = prop_oneof![3 => Just(true), 1 => Just(false)];
    (payment, proptest::collection::vec(attempt(), 1..5), any::<bool>(), past, any_ts(), constraints, asks, shape).prop_map(
        |(payment, mut attempts, payment_method_updated, mut past_payments, mut now, constraints, asks, shaped)| {
            let mut payment = Some(payment);
            if shaped {
                // Shaped like a real caller's: attempts in time order, now after the
                // last one; the values inside stay random.
                attempts.sort_by_key(|a| a.attempted_at.map(|t| t.seconds));
                attempts.dedup_by_key(|a| a.attempted_at.map(|t| t.seconds));
                for p in &mut past_payments {
                    p.attempts.sort_by_key(|a| a.attempted_at.map(|t| t.seconds));
                }
                if let Some(last) = attempts.last().and_then(|a| a.attempted_at) {
                    now = Some(prost_types::Timestamp { seconds: last.seconds.saturating_add(600), nanos: 0 });
                }
            } else if attempts.len() % 2 == 0 {
                payment = None;
            }
            v1::DecideRequest { payment, attempts, payment_method_updated, past_payments, now, constraints, asks }
        },
    )
}

/// Decide, and check the answer's numbers or the refusal's field.
fn check_decision(r: &v1::DecideRequest) -> Result<(), TestCaseError> {
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| api::decide(model(), "v", &EngineConfig::default(), r, clock())));
    let out = out.map_err(|_| TestCaseError::fail(format!("panicked on {r:?}")))?;
    match out {
        Ok(d) => {
            let p = |v: f64| (0.0..=1.0).contains(&v);
            prop_assert!(p(d.p_success) && p(d.p_recovery) && p(d.propensity), "{d:?}");
            prop_assert!(d.alternatives.iter().all(|s| p(s.p_success) && s.expected_value.is_finite()), "{d:?}");
        }
        Err(e) => prop_assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_decoder_or_the_engine(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(r) = v1::DecideRequest::decode(&bytes[..]) {
            check_decision(&r)?;
        }
        if let Ok(r) = hyperswitch::decider::DeciderRequest::decode(&bytes[..]) {
            let out = std::panic::catch_unwind(AssertUnwindSafe(|| hyperswitch::decide(model(), &EngineConfig::default(), &r, clock(), "US".parse().unwrap())));
            prop_assert!(out.is_ok(), "hyperswitch decide panicked on {r:?}");
        }
    }

    #[test]
    fn structured_requests_decide_or_name_a_field(r in request()) {
        check_decision(&r)?;
        // The same request, re-encoded with a flipped byte, decoded again.
        let mut bytes = r.encode_to_vec();
        if !bytes.is_empty() {
            let k = bytes.len() / 2;
            bytes[k] ^= 0x5a;
            if let Ok(m) = v1::DecideRequest::decode(&bytes[..]) {
                check_decision(&m)?;
            }
        }
    }

    #[test]
    fn hyperswitch_requests_decide_or_name_a_field(
        keys in proptest::collection::vec((prop_oneof![3 => (-60 * 24i64..24).prop_map(|h| (clock() + chrono::Duration::hours(h)).format("%Y-%m-%d %H:%M:%S.0").to_string()), 1 => ".{0,24}"], prop_oneof![4 => 0i32..4, 1 => any::<i32>()]), 0..6),
        start in any_ts(),
        wait in any_ts(),
        network in word(&["Visa", "Mastercard", "Maestro", ""]),
        pg in word(&["insufficient_funds", "card_declined", "stolen_card", ""]),
        left in proptest::option::of(-3i64..30),
        amount in proptest::option::of(any::<i64>()),
    ) {
        let r = hyperswitch::decider::DeciderRequest {
            invoice_start_time: start,
            wait_time: wait,
            card_network: Some(network),
            pg_error_code: Some(pg),
            retry_count_left: left,
            invoice_amount: amount,
            invoice_currency: Some("USD".into()),
            hourly_retry_history: keys.into_iter().collect(),
            ..Default::default()
        };
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| hyperswitch::decide(model(), &EngineConfig::default(), &r, clock(), "US".parse().unwrap())));
        let out = out.map_err(|_| TestCaseError::fail(format!("panicked on {r:?}")))?;
        if let Err(e) = out {
            prop_assert!(!e.field.is_empty(), "{e:?}");
        }
    }

    #[test]
    fn mutated_csv_files_load_or_name_the_problem(cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), truncate in any::<prop::sample::Index>()) {
        let (dir, path) = crate::support::temp_file("h.csv");
        let mut rows = crate::support::recovered_payment("p1");
        rows.extend(crate::support::recovered_payment("p2"));
        crate::support::write_csv(&path, &rows);
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, b) in cuts {
            let k = at.index(bytes.len());
            bytes[k] = b;
        }
        bytes.truncate(truncate.index(bytes.len() + 1).max(1));
        std::fs::write(&path, &bytes).unwrap();
        for skip in [false, true] {
            let opts = recoup::history::LoadOptions { skip_bad_rows: skip, reject_path: Some(dir.path().join("rejects.csv")), ..Default::default() };
            let out = std::panic::catch_unwind(AssertUnwindSafe(|| recoup::history::load(&path, &opts)));
            let out = out.map_err(|_| TestCaseError::fail(format!("loader panicked on {:?}", String::from_utf8_lossy(&bytes))))?;
            if let Err(e) = out {
                prop_assert!(e.to_string().len() < 2_000, "a {}-byte error", e.to_string().len());
            }
        }
    }
}

/// The request strategy reaches the engine: a fair share of its requests are
/// decided (a fuzzer whose every input is refused at the first field tests nothing).
#[test]
fn the_request_strategy_reaches_the_engine() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = request();
    let mut why = std::collections::BTreeMap::<String, usize>::new();
    let decided = (0..400)
        .filter(|_| {
            match api::decide(model(), "v", &EngineConfig::default(), &strategy.new_tree(&mut runner).unwrap().current(), clock()) {
                Ok(_) => true,
                Err(e) => {
                    *why.entry(e.field.split('[').next().unwrap_or("").to_string()).or_default() += 1;
                    false
                }
            }
        })
        .count();
    eprintln!("refusals by field: {why:?}");
    assert!(decided >= 20, "only {decided} of 400 generated requests were decided");
}
