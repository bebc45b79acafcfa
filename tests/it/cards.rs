//! Card rules v2 (issue #21), end to end through the routes a caller uses:
//! hyperswitch's decider mapping, recoup.v1's request mapping and the history
//! loader, all with the shipped model. Every case of the issue is a test here.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{DateTime, Duration, TimeZone, Utc};
use recoup::api::v1;
use recoup::declines::DeclineCode;
use recoup::engine::{self, Action, EngineConfig};
use recoup::hyperswitch::{self, decider::DeciderRequest};
use recoup::model::SuccessModel;

fn model() -> &'static SuccessModel {
    static M: OnceLock<SuccessModel> = OnceLock::new();
    M.get_or_init(|| {
        recoup::registry::load_current(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).expect("the shipped model").1
    })
}

fn clock() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 15, 40, 0).unwrap()
}

fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 })
}

/// hyperswitch's key: the hour bucket, formatted as its client does.
fn key(t: DateTime<Utc>) -> String {
    let floored = t - Duration::seconds(t.timestamp().rem_euclid(3600));
    floored.format("%Y-%m-%d %H:%M:%S.0").to_string()
}

/// Exactly the fields hyperswitch's client fills: the card's latest gateway
/// code in `pg_error_code` (network codes unset), the invoice's first codes,
/// the card's hour-floored retry history across invoices.
fn request(
    network: &str,
    started: DateTime<Utc>,
    card_code: Option<&str>,
    first: (&str, &str),
    retries: &[DateTime<Utc>],
) -> DeciderRequest {
    let mut history: HashMap<String, i32> = HashMap::new();
    for r in retries {
        *history.entry(key(*r)).or_default() += 1;
    }
    DeciderRequest {
        first_error_message: "None".into(),
        card_funding: Some("debit".into()),
        card_network: Some(network.into()),
        invoice_start_time: ts(started),
        retry_count: Some(retries.len() as i64),
        merchant_id: Some("merchant_1".into()),
        invoice_amount: Some(4_999),
        invoice_currency: Some("USD".into()),
        billing_country: Some("US".into()),
        pg_error_code: card_code.map(Into::into),
        first_pg_error_code: Some(first.0.into()),
        first_network_error_code: Some(first.1.into()).filter(|s: &String| !s.is_empty()),
        retry_count_left: Some(20),
        total_retry_count_within_network: Some(20),
        payment_id: Some("pay_1".into()),
        hourly_retry_history: history,
        ..Default::default()
    }
}

fn decide(r: &DeciderRequest) -> hyperswitch::Answer {
    let cfg = hyperswitch::engine_config(&EngineConfig::default(), 0.0);
    hyperswitch::decide(model(), &cfg, r, clock(), "US".parse().unwrap()).expect("a valid request")
}

fn retry_time(a: &hyperswitch::Answer) -> Option<DateTime<Utc>> {
    a.response.retry_time.as_ref().map(|t| DateTime::from_timestamp(t.seconds, 0).unwrap())
}

#[test]
fn hyperswitch_card_declined_stolen_in_the_first_hour_is_not_retried() {
    // The invoice started at 15:10; the card's retry at 15:25 falls in the same floored hour.
    let started = clock() - Duration::minutes(30);
    let r = request("Visa", started, Some("stolen_card"), ("insufficient_funds", "51"), &[started + Duration::minutes(15)]);
    let a = decide(&r);
    assert!(!a.response.retry_flag, "a stolen card got a retry: {:?}", a.reason);
    // No retry of this invoice at all: the card's own latest code still decides.
    let r = request("Visa", started, Some("lost_card"), ("insufficient_funds", "51"), &[]);
    assert!(!decide(&r).response.retry_flag);
}

#[test]
fn hyperswitch_first_codes_do_not_block_a_backup_card() {
    let started = clock() - Duration::days(3);
    // Card A was stolen on the invoice's first charge: A is never retried…
    let a = request("Visa", started, Some("stolen_card"), ("stolen_card", "43"), &[]);
    assert!(!decide(&a).response.retry_flag);
    // …but backup card B, which failed with insufficient funds two days ago, may be,
    let b = request("Visa", started, Some("insufficient_funds"), ("stolen_card", "43"), &[started + Duration::days(1)]);
    let answer = decide(&b);
    assert!(answer.response.retry_flag, "backup card refused: {}", answer.reason);
    // and so may card C, which has not been charged at all on this invoice.
    let c = request("Mastercard", started, None, ("stolen_card", "43"), &[]);
    let answer = decide(&c);
    assert!(answer.response.retry_flag, "fresh card refused: {}", answer.reason);
    // A lost card's hard decline, sent by the network as 41, binds only its card.
    let d = request("Visa", started, Some("41"), ("insufficient_funds", "51"), &[]);
    assert!(!decide(&d).response.retry_flag);
}

/// Retries of the card in the `window` before `at` (keys expanded as hyperswitch counted them).
fn used(retries: &[DateTime<Utc>], at: DateTime<Utc>, window: Duration) -> usize {
    retries.iter().filter(|t| **t > at - window && **t <= at).count()
}

#[test]
fn hyperswitch_counts_the_cards_retries_of_earlier_invoices() {
    // A Mastercard retried 9 times over the last 20 hours for earlier invoices; this
    // invoice started an hour ago and its own original charge failed.
    let started = clock() - Duration::hours(1);
    let earlier: Vec<DateTime<Utc>> = (0..9).map(|i| started - Duration::hours(20) + Duration::hours(2 * i)).collect();
    let r = request("Mastercard", started, Some("insufficient_funds"), ("insufficient_funds", "51"), &earlier);
    let a = decide(&r);
    if let Some(t) = retry_time(&a) {
        // The original charge counts too: at most 10 attempts on the card in any 24 hours.
        let n = used(&earlier, t, Duration::hours(24)) + usize::from(t - started < Duration::hours(24)) + 1;
        assert!(n <= 10, "retry at {t} would be attempt {n} on the card in 24 h");
    }
    // Visa: 15 retries of earlier invoices in the last 30 days leave no reattempt until they age out.
    let earlier: Vec<DateTime<Utc>> = (0..15).map(|i| started - Duration::days(25) + Duration::days(i) / 2).collect();
    let r = request("Visa", started, Some("insufficient_funds"), ("insufficient_funds", "51"), &earlier);
    let a = decide(&r);
    if let Some(t) = retry_time(&a) {
        assert!(used(&earlier, t, Duration::days(30)) < 15, "retry at {t} exceeds Visa's 15 in 30 days");
    }
    // JCB has no caps of its own: it gets both.
    let earlier: Vec<DateTime<Utc>> = (0..10).map(|i| clock() - Duration::hours(23) + Duration::hours(2 * i)).collect();
    let r = request("JCB", clock() - Duration::minutes(20), Some("insufficient_funds"), ("insufficient_funds", "51"), &earlier);
    if let Some(t) = retry_time(&decide(&r)) {
        assert!(used(&earlier, t, Duration::hours(24)) < 10, "JCB retry at {t} exceeds 10 in 24 h");
    }
}

type Schedule<'a> = &'a dyn Fn(DateTime<Utc>) -> Option<(DateTime<Utc>, recoup::domain::Channel)>;

/// `r` as the engine maps it, decided by the fixed schedule `next` (from now on) under
/// the network rules, so the model's preference cannot hide a rule; `None` when the
/// mapping leaves nothing to decide.
fn fixed_decision(r: &DeciderRequest, next: Schedule) -> Option<engine::Decision> {
    let hyperswitch::Mapped::Decide(req) = hyperswitch::to_engine(r, clock(), "US".parse().unwrap()).expect("a valid request") else {
        return None;
    };
    let cfg = hyperswitch::engine_config(&EngineConfig::default(), 0.0);
    Some(engine::decide_fixed(model(), &cfg, &req, "fixed", next).expect("decided"))
}

/// The first slot of `next` that the network rules allow for `r` ([`fixed_decision`]).
fn first_allowed(r: &DeciderRequest, next: Schedule) -> DateTime<Utc> {
    let d = fixed_decision(r, next).expect("a decision to make");
    assert_eq!(d.action, Action::Retry, "{:?}", d.reasons);
    d.chosen.expect("a retry").retry_at
}

#[test]
fn hyperswitch_counts_the_invoices_original_charge_toward_the_cards_caps() {
    // This Mastercard was retried 9 times in this invoice, every 2 hours after the
    // original charge 20 hours ago. The invoice's first codes are given, so that charge
    // may have been another card; it still counts toward this card's 10 in 24 hours
    // (if it was this card, an 11th attempt before it ages out breaks the rule).
    let started = clock() - Duration::hours(20);
    let retries: Vec<DateTime<Utc>> = (1..=9).map(|i| started + Duration::hours(2 * i)).collect();
    let r = request("Mastercard", started, Some("insufficient_funds"), ("insufficient_funds", "51"), &retries);
    // Every hour from now is proposed; the first the rules allow is taken, whatever the model thinks of it.
    let hourly = |after: DateTime<Utc>| Some((after + Duration::hours(1), recoup::domain::Channel::None));
    let at = first_allowed(&r, &hourly);
    assert!(at >= started + Duration::hours(24), "retry at {at}: the original charge of {started} is still inside its 24 h");
    assert!(at <= started + Duration::hours(26), "retry at {at}: nothing else forbids it once the original charge ages out");
    // A card with no first codes of the invoice (the original was this card) is counted alike.
    let mut own = r.clone();
    own.first_pg_error_code = None;
    own.first_network_error_code = None;
    assert!(first_allowed(&own, &hourly) >= started + Duration::hours(24));
}

#[test]
fn hyperswitch_counts_a_retry_keyed_to_an_hour_until_that_whole_hour_has_aged_out() {
    // Ten retries of this Mastercard in this invoice, one per hour-bucket, the first
    // keyed to the hour that began 23 hours before the clock's (16:00 the day before).
    // hyperswitch keys a retry by its hour: the one keyed 16:00 may have been made at
    // 16:59, and the network counts it until then the next day.
    let first_key = clock() - Duration::seconds(clock().timestamp().rem_euclid(3600)) - Duration::hours(23);
    let started = first_key - Duration::minutes(30);
    let retries: Vec<DateTime<Utc>> = (0..10).map(|i| first_key + Duration::hours(2 * i)).filter(|t| *t < clock()).collect();
    assert_eq!(retries.len(), 10);
    let r = request("Mastercard", started, Some("insufficient_funds"), ("insufficient_funds", "51"), &retries);
    let on_the_hour = |after: DateTime<Utc>| {
        let next = after - Duration::seconds(after.timestamp().rem_euclid(3600)) + Duration::hours(1);
        Some((next, recoup::domain::Channel::None))
    };
    let at = first_allowed(&r, &on_the_hour);
    assert!(at >= first_key + Duration::hours(25), "retry at {at}: the retry keyed {first_key} may still be inside its 24 h");
    assert!(at <= first_key + Duration::hours(26), "retry at {at}: nothing else forbids it then");
}

/// What the network could count against a retry of this card at `at`: every attempt
/// the request tells of, at the latest time it can have been made (a key's retries
/// late in its hour, never after `clock`; the invoice's original charge at the time
/// given for it), reckoned without recoup's mapping. `None`: the retry keeps every cap
/// and the minimum spacing; else the rule it would break.
fn conservative_breach(r: &DeciderRequest, at: DateTime<Utc>) -> Option<String> {
    use recoup::rules::{MASTERCARD_DAILY_LIMIT, MASTERCARD_MONTHLY_LIMIT, VISA_REATTEMPTS_PRE_2025};
    let clock = clock();
    let mut retries: Vec<DateTime<Utc>> = Vec::new();
    for (k, &n) in &r.hourly_retry_history {
        let hour = chrono::NaiveDateTime::parse_from_str(k, "%Y-%m-%d %H:%M:%S%.f").unwrap().and_utc();
        let latest = (hour + Duration::seconds(3599)).min(clock);
        retries.extend(std::iter::repeat_n(latest, n as usize));
    }
    let original =
        r.invoice_start_time.as_ref().or(r.first_error_msg_time.as_ref()).map(|t| DateTime::from_timestamp(t.seconds, 0).unwrap());
    let last = retries.iter().chain(&original).max().copied();
    if let Some(last) = last.filter(|l| at < *l + Duration::hours(recoup::rules::DEFAULT_MIN_SPACING_HOURS)) {
        return Some(format!("within the minimum spacing of an attempt that may have been at {last}"));
    }
    let within = |w: Duration| retries.iter().filter(|t| **t > at - w).count() as u32;
    let original_within = |w: Duration| u32::from(original.is_some_and(|o| o > at - w));
    let network = r.card_network.as_deref().unwrap_or("");
    let reattempt = within(Duration::days(30)) + 1;
    if network != "Mastercard" && reattempt > VISA_REATTEMPTS_PRE_2025 {
        return Some(format!("reattempt {reattempt} within 30 days"));
    }
    if network != "Visa" {
        for (w, limit, name) in
            [(Duration::hours(24), MASTERCARD_DAILY_LIMIT, "24 h"), (Duration::days(30), MASTERCARD_MONTHLY_LIMIT, "30 days")]
        {
            let n = within(w) + original_within(w) + 1;
            if n > limit {
                return Some(format!("attempt {n} within {name}"));
            }
        }
    }
    None
}

#[test]
fn hyperswitch_keeps_every_cap_on_random_card_histories() {
    // Random cards and invoices as hyperswitch's client reports them: retries of this
    // invoice and of earlier ones, keyed by their hour, sometimes several per hour, the
    // invoice's first codes given or not. Every answer is checked against a count that
    // does not use recoup's mapping: the model's choice, and the first slot a fixed
    // schedule proposing every hour (at a random minute) is allowed, which is where a
    // rule binds whatever the model prefers.
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    let (mut retried, mut bound) = (0, 0);
    for case in 0..300 {
        let network = ["Visa", "Mastercard", "JCB"][rng.random_range(0..3)];
        let started = clock() - Duration::minutes(rng.random_range(5..60 * 48));
        let mut retries: Vec<DateTime<Utc>> = Vec::new();
        // This invoice's retries, bunched so that caps bind often.
        let span = (clock() - started).num_minutes();
        for _ in 0..rng.random_range(0..14) {
            retries.push(started + Duration::minutes(rng.random_range(1..span.max(2))));
        }
        // The card's retries of earlier invoices, over the last 35 days.
        for _ in 0..rng.random_range(0..20) {
            retries.push(started - Duration::minutes(rng.random_range(61..60 * 24 * 35)));
        }
        let first = if rng.random_bool(0.5) { ("insufficient_funds", "51") } else { ("do_not_honor", "05") };
        let mut r = request(network, started, Some("insufficient_funds"), first, &retries);
        if rng.random_bool(0.3) {
            r.first_pg_error_code = None;
            r.first_network_error_code = None;
        }
        if rng.random_bool(0.2) {
            // Some clients give the first failure's time instead of the invoice's start.
            r.first_error_msg_time = r.invoice_start_time.take();
        }
        let context = || format!("case {case}: {network}, started {started}, retries {:?}", r.hourly_retry_history);
        if let Some(t) = retry_time(&decide(&r)) {
            retried += 1;
            assert_eq!(conservative_breach(&r, t), None, "the model's retry at {t}; {}", context());
        }
        let minute = Duration::minutes(rng.random_range(0..60));
        let hourly = |after: DateTime<Utc>| {
            let next = after - Duration::seconds(after.timestamp().rem_euclid(3600)) + minute;
            Some((if next > after { next } else { next + Duration::hours(1) }, recoup::domain::Channel::None))
        };
        let Some(d) = fixed_decision(&r, &hourly) else { continue };
        if let Some(c) = d.chosen.filter(|_| d.action == Action::Retry) {
            // The hour before it was refused: count how often a rule, not the schedule, set the time.
            if c.retry_at - Duration::hours(1) > clock() {
                bound += 1;
            }
            assert_eq!(conservative_breach(&r, c.retry_at), None, "the first allowed hourly slot {}; {}", c.retry_at, context());
        }
    }
    // The cases must exercise both: answers to check, and rules that bind.
    assert!(retried > 50 && bound > 30, "{retried} model retries, {bound} slots set by a rule");
}

#[test]
fn hyperswitch_refuses_a_missing_currency_naming_the_field() {
    let mut r = request("Visa", clock() - Duration::days(1), Some("insufficient_funds"), ("insufficient_funds", "51"), &[]);
    r.invoice_currency = None;
    let cfg = hyperswitch::engine_config(&EngineConfig::default(), 0.0);
    let err = hyperswitch::decide(model(), &cfg, &r, clock(), "US".parse().unwrap()).err().expect("refused");
    assert_eq!(err.field, "invoice_currency");
}

fn v1_request(attempts: Vec<v1::Attempt>) -> v1::DecideRequest {
    v1::DecideRequest {
        payment: Some(v1::Payment {
            payment_id: "inv_9".into(),
            amount_minor: 2_500,
            currency: "EUR".into(),
            payment_method: "card".into(),
            card_brand: "mastercard".into(),
            country: "DE".into(),
            ..Default::default()
        }),
        attempts,
        now: ts(clock()),
        ..Default::default()
    }
}

fn attempt(at: DateTime<Utc>, decline: &str, network: &str, advice: &str) -> v1::Attempt {
    v1::Attempt {
        attempted_at: ts(at),
        decline_code: decline.into(),
        network_code: network.into(),
        advice_code: advice.into(),
        ..Default::default()
    }
}

fn decide_v1(r: &v1::DecideRequest) -> engine::Decision {
    let req = recoup::api::to_engine(r, clock()).expect("valid");
    engine::decide(model(), &EngineConfig::default(), &req, (0.5, 0.5)).expect("decides")
}

#[test]
fn stripe_codes_are_accepted_and_read_alike_on_every_route() {
    for (code, hard) in [("merchant_blacklist", true), ("highest_risk_level", true), ("call_issuer", false), ("approve_with_id", false)] {
        let d = decide_v1(&v1_request(vec![attempt(clock() - Duration::days(1), code, "", "")]));
        let refused = d.action == Action::DoNotRetry && d.reasons.iter().any(|r| r.code == "rule:hard_decline");
        assert_eq!(refused, hard, "{code}: {:?}", d.reasons);
    }
    // An unknown text is refused naming the field.
    let err = recoup::api::to_engine(&v1_request(vec![attempt(clock() - Duration::days(1), "card_on_fire", "", "")]), clock()).unwrap_err();
    assert_eq!(err.field, "attempts[0].decline_code");
}

#[test]
fn advice_01_and_04_apply_alongside_a_response_code() {
    for (net, adv) in [("51", "01"), ("79", "01"), ("05", "04")] {
        let d = decide_v1(&v1_request(vec![attempt(clock() - Duration::days(1), "", net, adv)]));
        assert_eq!(d.action, Action::DoNotRetry, "{net}+{adv} retried with the old data");
        assert!(d.reasons.iter().any(|r| r.code == "rule:needs_payment_method_update"), "{net}+{adv}: {:?}", d.reasons);
    }
}

#[test]
fn a_new_payment_method_lifts_a_hard_decline_and_caps_count_per_card() {
    // Advice 03 on the old card: no retry, ask for a new method…
    let mut r = v1_request(vec![attempt(clock() - Duration::days(1), "", "51", "03")]);
    let d = decide_v1(&r);
    assert_eq!(d.action, Action::DoNotRetry);
    assert_eq!(d.next, engine::NextStep::AskForPaymentMethod);
    // …and once the payer added one, the new card may be retried.
    r.payment_method_updated = true;
    let d = decide_v1(&r);
    assert_eq!(d.action, Action::Retry, "{:?}", d.reasons);

    // Nine declines on the same card's previous invoice within the day, one now.
    let mut r = v1_request(vec![v1::Attempt { payment_method_id: "pm_A".into(), ..attempt(clock() - Duration::hours(1), "", "51", "") }]);
    r.payment.as_mut().unwrap().payment_method_id = "pm_A".into();
    let earlier: Vec<DateTime<Utc>> = (0..9).map(|i| clock() - Duration::hours(20) + Duration::hours(2 * i)).collect();
    r.past_payments = vec![v1::PastPayment {
        attempts: earlier
            .iter()
            .map(|t| v1::PastAttempt {
                attempted_at: ts(*t),
                outcome: "failed".into(),
                decline_code: "insufficient_funds".into(),
                payment_method_id: "pm_A".into(),
                attempt_number: None,
            })
            .collect(),
    }];
    let d = decide_v1(&r);
    if let Some(c) = d.chosen.as_ref().filter(|_| d.action == Action::Retry) {
        let n = used(&earlier, c.retry_at, Duration::hours(24)) + usize::from(c.retry_at - clock() < Duration::hours(23)) + 1;
        assert!(n <= 10, "retry at {} would be attempt {n} on the card in 24 h", c.retry_at);
    }
    assert!(!d.reasons.iter().any(|r| r.code == "caps_counted_per_payment"));
    // Without a card identity the answer says how it counted.
    let d = decide_v1(&v1_request(vec![attempt(clock() - Duration::days(1), "insufficient_funds", "", "")]));
    if d.action == Action::Retry {
        assert!(d.reasons.iter().any(|r| r.code == "caps_counted_per_payment"), "{:?}", d.reasons);
    }
}

#[test]
fn the_history_loader_reads_gateway_and_brand_codes_like_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.csv");
    let header = "attempt_id,payment_id,customer_id,attempted_at,attempt_number,amount_minor,currency,payment_method,card_brand,country,outcome,decline_code,network_code,advice_code,payment_method_id";
    let rows = [
        "a1,p1,c1,2026-01-05T10:00:00Z,0,1000,USD,card,visa,US,failed,merchant_blacklist,,,pm_1",
        "a2,p2,c1,2026-01-06T10:00:00Z,0,1000,USD,card,visa,US,failed,insufficient_funds,46,,pm_1",
        "a3,p3,c2,2026-01-07T10:00:00Z,0,1000,USD,card,visa,US,failed,,59,,",
        "a4,p4,c2,2026-01-08T10:00:00Z,0,1000,USD,card,mastercard,US,failed,,59,,",
        "a5,p5,c3,2026-01-09T10:00:00Z,0,1000,USD,card,mastercard,US,failed,,51,01,",
        "a6,p6,c3,2026-01-10T10:00:00Z,0,1000,USD,card,other,US,failed,2001,,,",
    ];
    std::fs::write(&path, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
    let h = recoup::history::load(&path, &Default::default()).expect("loads");
    let by_id = |id: &str| h.attempts.iter().find(|a| h.attempt_id(a) == id).unwrap();
    assert_eq!(by_id("a1").decline, Some(DeclineCode::Fraudulent));
    assert_eq!(by_id("a2").decline, Some(DeclineCode::AccountClosed));
    assert_eq!(by_id("a3").decline.map(DeclineCode::class), Some(recoup::declines::DeclineClass::SoftIssuer), "Visa 59 is category 2");
    assert_eq!(by_id("a4").decline, Some(DeclineCode::Fraudulent));
    assert_eq!(by_id("a5").decline, Some(DeclineCode::ExpiredCard));
    assert_eq!(by_id("a6").decline, Some(DeclineCode::InsufficientFunds));
    assert!(h.report.unknown_codes.is_empty(), "{:?}", h.report.unknown_codes);
    assert_eq!(by_id("a1").card, by_id("a2").card);
    assert!(by_id("a1").card.is_some() && by_id("a3").card.is_none());
}

/// The holdout reaches hyperswitch's route too (#24): a payment in the control arm gets
/// the control schedule's next slot under the network rules, its answer says so, and a
/// payment outside it gets the model's answer, as it did without a holdout.
#[test]
fn hyperswitch_payments_in_the_holdout_follow_the_control_schedule() {
    let started = clock() - Duration::hours(2);
    let r = request("Visa", started, Some("insufficient_funds"), ("insufficient_funds", "51"), &[]);
    let cfg = hyperswitch::engine_config(&EngineConfig::default(), 0.0);
    let schedules = recoup::backtest::parse_schedules(recoup::backtest::DEFAULT_SCHEDULES).expect("shipped schedules");
    let schedule = schedules[0].clone();
    let country = "US".parse().unwrap();
    let all = recoup::api::Holdout { share: 1.0, schedule: schedule.clone() };
    let held = hyperswitch::decide_in(model(), &cfg, &r, clock(), country, Some(&all)).expect("a valid request");
    assert_eq!(held.arm, format!("control:{}", schedule.name));
    assert_eq!(held.reason, "holdout_control");
    let tz = recoup::calendar::default_timezone(country);
    let slot = schedule.next_after(tz, started, clock()).expect("a slot in the window");
    assert_eq!(retry_time(&held), Some(slot.retry_at), "the schedule's next slot");
    let none = recoup::api::Holdout { share: 0.0, schedule };
    let model_arm = hyperswitch::decide_in(model(), &cfg, &r, clock(), country, Some(&none)).expect("a valid request");
    assert_eq!(model_arm.arm, "model");
    assert_eq!(retry_time(&model_arm), retry_time(&decide(&r)), "outside the holdout, the model decides as before");
}

/// The holdout's control arm values its slot as the model's arm values a candidate
/// (`engine::retry_logit`: the payment's failed retries included), so the live
/// calibration compares the two arms on one scale. It used the weights alone: on a
/// payment with nine failed retries the two differed.
#[test]
fn the_control_arms_p_is_the_engines_own_score_of_its_slot() {
    let started = clock() - Duration::hours(20);
    let retries: Vec<DateTime<Utc>> = (1..=9).map(|i| started + Duration::hours(2 * i)).collect();
    let r = request("Visa", started, Some("insufficient_funds"), ("insufficient_funds", "51"), &retries);
    let hyperswitch::Mapped::Decide(req) = hyperswitch::to_engine(&r, clock(), "US".parse().unwrap()).expect("a valid request") else {
        panic!("a payment to decide")
    };
    let daily = |after: DateTime<Utc>| Some((after + Duration::days(1), recoup::domain::Channel::None));
    let d = fixed_decision(&r, &daily).expect("decided");
    let slot = d.chosen.expect("the schedule's retry");
    let m = model();
    let platt = m.platt_for(req.attempts.last().unwrap().decline.class(), req.attempts.len() as u32 - 1);
    let z = engine::retry_logit(m, &req, slot.retry_at, slot.channel).expect("scored");
    assert!((slot.p_success - platt.calibrate(z)).abs() < 1e-12, "{} vs {}", slot.p_success, platt.calibrate(z));
    // The failed retries move this payment's score: without them (what it used) the P differs.
    let mut plain = m.clone();
    plain.failed_retries = Default::default();
    let alone = platt.calibrate(engine::retry_logit(&plain, &req, slot.retry_at, slot.channel).expect("scored"));
    assert!((alone - slot.p_success).abs() > 1e-4, "{alone} vs {}", slot.p_success);
}

/// A request that names another payment method for the retry than its last attempt charged
/// (or an attempt charged to another method than the one before it) says the payer replaced
/// it, as the card rules and training read it: the engine decides as if told
/// `payment_method_updated`. An expired card told only by its ids was scored as the dead card.
#[test]
fn a_replaced_payment_method_id_counts_as_an_update_for_the_model_too() {
    let failed = clock() - Duration::days(1);
    let on = |id: &str| {
        let mut a = attempt(failed, "expired_card", "54", "");
        a.payment_method_id = id.into();
        a
    };
    let mut by_id = v1_request(vec![on("pm_old")]);
    by_id.payment.as_mut().unwrap().payment_method_id = "pm_new".into();
    let mut by_flag = by_id.clone();
    by_flag.payment_method_updated = true;
    let (id, flag) = (recoup::api::to_engine(&by_id, clock()).unwrap(), recoup::api::to_engine(&by_flag, clock()).unwrap());
    assert!(id.payment_method_updated);
    let (a, b) = (decide_v1(&by_id), decide_v1(&by_flag));
    assert_eq!(a.action, Action::Retry, "{:?}", a.reasons);
    assert_eq!(
        (a.action, a.chosen.as_ref().map(|c| (c.retry_at, c.p_success))),
        (b.action, b.chosen.as_ref().map(|c| (c.retry_at, c.p_success)))
    );
    assert_eq!(id.attempts.len(), flag.attempts.len());
    // The same method named again is no update.
    let mut same = v1_request(vec![on("pm_old")]);
    same.payment.as_mut().unwrap().payment_method_id = "pm_old".into();
    assert!(!recoup::api::to_engine(&same, clock()).unwrap().payment_method_updated);
    // A retry on another method than the original charge: that attempt is flagged.
    let mut later = on("pm_new");
    later.attempted_at = ts(failed + Duration::hours(5));
    later.decline_code = "insufficient_funds".into();
    later.network_code = "51".into();
    let r = recoup::api::to_engine(&v1_request(vec![on("pm_old"), later]), clock()).unwrap();
    assert_eq!(r.attempts.iter().map(|a| a.payment_method_updated).collect::<Vec<_>>(), [false, true]);
}
