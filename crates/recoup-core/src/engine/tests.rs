//! The engine's unit tests.

use super::grid::in_quiet;
use super::*;
use crate::declines::{DeclineClass, DeclineCode};
use crate::domain::Channel;
use crate::domain::{BillingInterval, CardBrand, CardFunding, PaymentMethod};
use crate::features::{Candidate, EarlierAttempt, PaymentFacts, PaymentState, SCHEMA};
use crate::limits::ceil_hour;
use crate::model::{sigmoid, Platt};
use chrono::TimeZone;
use chrono::{Timelike, Utc};
use strum::VariantArray;

/// A model with arbitrary (deterministic) weights: every column matters.
fn model() -> SuccessModel {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let weights = (0..SCHEMA.len())
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2001) as f64 / 1000.0 - 1.0
        })
        .collect();
    SuccessModel {
        schema: SCHEMA.clone(),
        weights,
        intercept: -1.0,
        platt_a: 0.9,
        platt_b: 0.1,
        attrition: Default::default(),
        asks: Default::default(),
        weight_variances: Vec::new(),
        trees: Default::default(),
        support: Default::default(),
        failed_retries: Default::default(),
        class_platt: Vec::new(),
        imputation: Default::default(),
    }
}

/// A model whose every weight is 0 but `column`'s.
fn one_term(column: &str, weight: f64) -> SuccessModel {
    let mut m = SuccessModel { weights: vec![0.0; SCHEMA.len()], ..model() };
    m.weights[SCHEMA.columns.iter().position(|c| c == column).expect("a schema column")] = weight;
    m
}

fn request() -> Request {
    let t0 = Utc.with_ymd_and_hms(2026, 3, 5, 14, 20, 0).unwrap(); // the US switches to DST on 2026-03-08
    Request {
        payment_id: "inv_1".into(),
        timezone_assumed: false,
        facts: PaymentFacts {
            amount_minor: 4_999,
            currency: "USD".parse().expect("USD"),
            method: PaymentMethod::Card,
            card_brand: Some(CardBrand::Mastercard),
            card_funding: Some(CardFunding::Debit),
            country: "US".parse().expect("US"),
            timezone: chrono_tz::America::Chicago,
            billing_interval: Some(BillingInterval::Month),
            tenure_days: Some(200),
        },
        attempts: vec![EarlierAttempt {
            at: t0,
            decline: DeclineCode::InsufficientFunds,
            network_code: None,
            advice_code: None,
            channel: None,
            payment_method_updated: false,
            card: None,
        }],
        payment_method_updated: false,
        asks: Vec::new(),
        past_payments: Vec::new(),
        card: None,
        card_attempts: Vec::new(),
        now: t0 + Duration::minutes(5),
        constraints: Constraints { quiet_hours: Some((22, 7)), ..Default::default() },
    }
}

/// After a failed retry, a model with a failed-retries correction shifts every candidate's
/// logit by γ·(E − mean), E being the failed retry's P as the model scored it then, and says so.
#[test]
fn a_failed_retry_the_model_rated_well_lowers_the_next_one() {
    let mut req = request();
    let failed_at = req.attempts[0].at + Duration::days(3);
    req.attempts.push(EarlierAttempt { at: failed_at, channel: Some(Channel::None), ..req.attempts[0].clone() });
    req.now = failed_at + Duration::minutes(5);
    // One slot: the comparison is of the same candidate.
    let slot = ceil_hour(failed_at + Duration::days(2));
    req.constraints = Constraints { earliest: Some(slot), latest: Some(slot), channels: vec![Channel::None], ..Default::default() };
    let cfg = EngineParams { exploration: 0.0, ..Default::default() }.check().expect("valid");
    let plain = model();
    let before = decide(&plain, &cfg, &req, (0.5, 0.5)).expect("decides");
    assert!(!before.reasons.iter().any(|r| r.code == "failed_retries"));
    let p_before = before.chosen.as_ref().map(|c| c.p_success).expect("a retry");
    // E: the failed retry scored from the state before it, at its time, without a message.
    let first = PaymentState::new(req.facts.clone(), &[req.attempts[0].clone()], false, &[]).expect("state");
    let expected = plain.predict(&first.encode(&Candidate { at: failed_at, channel: Channel::None }));
    let n = crate::declines::DeclineClass::VARIANTS.len();
    let mut corrected = plain.clone();
    corrected.failed_retries = crate::failed_retries::FailedRetries {
        gamma: vec![-2.0; n],
        mean: vec![vec![0.0; crate::failed_retries::RETRY_CELLS]; n],
        rows: vec![1_000; n],
        ..Default::default()
    };
    let after = decide(&corrected, &cfg, &req, (0.5, 0.5)).expect("decides");
    let chosen = after.chosen.as_ref().expect("a retry");
    assert_eq!(chosen.retry_at, slot);
    let why = after.reasons.iter().find(|r| r.code == "failed_retries").expect("explained");
    assert!(why.detail.contains(&format!("{expected:.2}")), "{why:?}");
    // Exactly the shift on the raw logit.
    let logit = |p: f64| (p / (1.0 - p)).ln();
    let moved = (logit(chosen.p_success) - logit(p_before)) / plain.platt_a;
    assert!((moved - (-2.0 * expected)).abs() < 1e-9, "{moved} vs {}", -2.0 * expected);
    // retry_logit scores the same candidate as decide does, the shift included, and a
    // different time differently.
    let platt = corrected.platt_for(DeclineClass::SoftFunds, 1);
    let z = retry_logit(&corrected, &req, slot, Channel::None).expect("scores");
    assert!((platt.calibrate(z) - chosen.p_success).abs() < 1e-12, "{} vs {}", platt.calibrate(z), chosen.p_success);
    let z_plain = retry_logit(&plain, &req, slot, Channel::None).expect("scores");
    assert!((z - z_plain - (-2.0 * expected)).abs() < 1e-9);
    let elsewhere = retry_logit(&corrected, &req, slot + Duration::hours(7 * 24 + 5), Channel::Email).expect("scores");
    assert!((elsewhere - z).abs() > 1e-6);
}

#[test]
fn with_trees_the_grid_scores_equal_the_full_encoding_and_the_terms_name_them() {
    let mut m = model();
    m.trees = crate::trees::random_forest(3, 12, 6, crate::model::TREE_GROUPS);
    m.check_schema().expect("a valid model");
    let mut on_channel = m.clone();
    on_channel.trees.trees[0].nodes[0].group = crate::features::CHANNEL_GROUP as u8;
    let err = on_channel.check_schema().expect_err("a split on the channel is refused").to_string();
    assert!(err.contains("channel") && err.contains("retrain"), "{err}");
    let req = request();
    let cfg = EngineParams { exploration: 0.0, top_k: 100_000, ..Default::default() }.check().expect("valid");
    let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
    let earlier = [req.attempts[0].clone()];
    let state = PaymentState::new(req.facts.clone(), &earlier, false, &[]).expect("state");
    let chosen = d.chosen.clone().expect("chosen");
    assert!(d.alternatives.len() > 1000, "{} alternatives", d.alternatives.len());
    // Every slot of the grid (bound to the payment, then to each day) as the full vector scores it.
    for s in std::iter::once(&chosen).chain(&d.alternatives) {
        let full = m.predict(&state.encode(&Candidate { at: s.retry_at, channel: s.channel }));
        assert!((s.p_success - full).abs() < 1e-12, "{s:?}: grid {} vs full {full}", s.p_success);
    }
    // The trees move the choice: without them another hour wins.
    let plain = decide(&model(), &cfg, &req, (0.5, 0.5)).expect("decides");
    assert_ne!(plain.chosen.map(|c| c.p_success), Some(chosen.p_success));
    // The explanation names the groups the trees split on, with what they added.
    let trees: Vec<&Term> = d.terms.iter().filter(|t| t.feature.starts_with("trees:")).collect();
    assert!(!trees.is_empty(), "{:?}", d.terms);
    let x = crate::features::group_levels(&state.encode(&Candidate { at: chosen.retry_at, channel: chosen.channel }));
    let (by_group, _) = m.trees.contributions(&x);
    for t in trees {
        let g = crate::features::group_names().iter().position(|n| t.feature[6..].starts_with(&format!("{n}="))).expect("a group");
        assert_eq!(t.weight, by_group[g], "{t:?}");
    }
}

#[test]
fn hours_the_model_cannot_tell_apart_do_not_all_go_to_the_earliest() {
    let (m, req) = (model(), request());
    let cfg = EngineParams { exploration: 0.0, ..Default::default() }.check().expect("valid");
    let mut hours = std::collections::BTreeSet::new();
    for i in 0..40 {
        let r = Request { payment_id: format!("inv_{i}"), ..req.clone() };
        let d = decide(&m, &cfg, &r, (0.5, 0.5)).expect("decides");
        if d.reasons.iter().any(|x| x.code == "plateau") {
            hours.insert(d.chosen.expect("a retry").retry_at);
        }
    }
    assert!(hours.len() > 1, "every payment went to {hours:?}");
}

#[test]
fn grid_scores_equal_the_full_encoding_and_alternatives_are_the_next_best() {
    let (m, req) = (model(), request());
    let cfg = EngineParams { exploration: 0.0, top_k: 12, ..Default::default() }.check().expect("valid");
    let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
    assert_eq!(d.action, Action::Retry);
    let earlier = [req.attempts[0].clone()];
    let state = PaymentState::new(req.facts.clone(), &earlier, false, &[]).expect("state");
    let chosen = d.chosen.clone().expect("chosen");
    let all: Vec<&Slot> = std::iter::once(&chosen).chain(&d.alternatives).collect();
    assert_eq!(all.len(), 13);
    for s in &all {
        let full = m.predict(&state.encode(&Candidate { at: s.retry_at, channel: s.channel }));
        assert!((s.p_success - full).abs() < 1e-12, "{s:?}: grid {} vs full {full}", s.p_success);
        let local = s.retry_at.with_timezone(&chrono_tz::America::Chicago).hour();
        assert!(!in_quiet(local, 22, 7), "{s:?} in quiet hours");
        if let Some(send) = s.send_at {
            assert!(!in_quiet(send.with_timezone(&chrono_tz::America::Chicago).hour(), 22, 7), "{s:?}: message in quiet hours");
        }
    }
    // 07:00 local is allowed for the retry, but its message would go out at 06:00.
    assert!(d.reasons.iter().any(|r| r.code == "constraint:quiet_hours_message"), "{:?}", d.reasons);
    // Alternatives best first, by the look-ahead value; ties by time then channel. The
    // chosen slot is the best, or another hour of its plateau (same P, within 1 %).
    for w in d.alternatives.windows(2) {
        assert!(w[0].value >= w[1].value, "{:?} before {:?}", w[0], w[1]);
    }
    let best = all.iter().map(|s| s.value).fold(f64::NEG_INFINITY, f64::max);
    assert!(chosen.value >= 0.99 * best, "{chosen:?} vs best value {best}");
    if chosen.value < best {
        assert!(d.reasons.iter().any(|r| r.code == "plateau"), "{:?}", d.reasons);
        let first = all.iter().find(|s| s.value == best).expect("the best");
        assert_eq!((first.p_success, first.channel), (chosen.p_success, chosen.channel));
    }
    // The partial selection keeps exactly the head of the full order.
    let every = decide(&m, &EngineParams { top_k: 100_000, ..cfg.params() }.check().expect("valid"), &req, (0.5, 0.5)).expect("decides");
    assert_eq!(every.alternatives.len() + 1, d.candidates_scored);
    assert_eq!(every.chosen, d.chosen);
    assert_eq!(every.alternatives[..12], d.alternatives[..]);
    // The discount is per day of delay from now.
    let days = (chosen.retry_at - req.now).num_minutes() as f64 / 1440.0;
    let cost = cfg.attempt_cost_minor + cfg.message_cost(chosen.channel);
    let ev = (1.0 - cfg.daily_discount).powf(days) * chosen.p_success * 4_999.0 - cost;
    assert!((chosen.expected_value - ev).abs() < 1e-6, "{} vs {ev}", chosen.expected_value);
}

#[test]
fn recovery_follows_the_best_slot_a_day_after_each_failure() {
    let (m, req) = (model(), request());
    let cfg = EngineParams { exploration: 0.0, top_k: 100_000, ..Default::default() }.check().expect("valid");
    let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
    let chosen = d.chosen.clone().expect("chosen");
    // Brute force over every scored slot: the best expected value at least 24 h after
    // the last retry, while one is worth its cost.
    let all: Vec<&Slot> = std::iter::once(&chosen).chain(&d.alternatives).collect();
    let (mut fail, mut at, mut n) = (1.0 - chosen.p_success, chosen.retry_at, 1);
    while let Some(next) = all
        .iter()
        .filter(|s| s.retry_at >= at + Duration::hours(24) && s.expected_value > 0.0)
        .max_by(|a, b| a.expected_value.total_cmp(&b.expected_value))
    {
        fail *= 1.0 - next.p_success;
        at = next.retry_at;
        n += 1;
    }
    assert!(n >= 3, "a 14-day grid holds more than two retries a day apart ({n})");
    assert_eq!(d.planned_retries, n);
    assert!((d.p_recovery - (1.0 - fail)).abs() < 1e-12, "{} vs {}", d.p_recovery, 1.0 - fail);
    // The caller's retry budget ends the path: one retry left, one planned.
    let capped = Request { constraints: Constraints { max_retries: Some(1), ..req.constraints.clone() }, ..req.clone() };
    let d1 = decide(&m, &cfg, &capped, (0.5, 0.5)).expect("decides");
    assert_eq!((d1.planned_retries, d1.p_recovery), (1, d1.chosen.expect("chosen").p_success));
}

/// A model whose every retry has the same P(success), with an ask response
/// (SMS 30 %, email 20 %, 2 %/day on their own) and the given attrition lines.
fn asking_model(email: (f64, f64), sms: (f64, f64)) -> SuccessModel {
    use crate::asks::{AskResponse, ChannelResponse};
    use crate::attrition::{Attrition, ChannelAttrition};
    let line = |channel, (base, per_message)| ChannelAttrition { channel, base, per_message, buckets: vec![] };
    let response = |channel, rate| ChannelResponse { channel, rate, se: 0.01, retries: 100 };
    SuccessModel {
        schema: SCHEMA.clone(),
        weights: vec![0.0; SCHEMA.len()],
        intercept: 0.5,
        platt_a: 1.0,
        platt_b: 0.0,
        attrition: Attrition {
            channels: vec![line(Channel::Email, email), line(Channel::Sms, sms)],
            retries: 100,
            other: None,
            unmeasured: false,
        },
        asks: AskResponse {
            channels: vec![response(Channel::Email, 0.2), response(Channel::Sms, 0.3)],
            spontaneous_per_day: 0.02,
            payments: 100,
            first_retry_days: (0.75, 1.25),
            other: None,
            ..AskResponse::default()
        },
        weight_variances: Vec::new(),
        trees: Default::default(),
        support: Default::default(),
        failed_retries: Default::default(),
        class_platt: Vec::new(),
        imputation: Default::default(),
    }
}

#[test]
fn an_expired_card_gets_a_valued_plan_of_asks() {
    let p = crate::model::sigmoid(0.5);
    let mut req = request();
    req.attempts[0].decline = DeclineCode::ExpiredCard;
    req.constraints = Constraints { channels: vec![Channel::Email, Channel::Sms], ..Default::default() };
    let free = EngineParams {
        exploration: 0.0,
        message_cost_minor: vec![],
        daily_discount: 0.0,
        channel_pessimism: 0.0,
        message_quiet_hours: None,
        ..Default::default()
    }
    .check()
    .expect("valid");
    // Messages that lose nobody and cost nothing: ask on the most responsive channel at
    // every opportunity, once a day from now to the end of the window.
    let d = decide(&asking_model((0.0, 0.0), (0.0, 0.0)), &free, &req, (0.5, 0.5)).expect("decides");
    assert_eq!(d.action, Action::DoNotRetry);
    let plan = d.ask.clone().expect("a plan");
    assert_eq!((plan.channel, d.ask_channel, plan.send_at), (Channel::Sms, Some(Channel::Sms), req.now));
    let left = (req.attempts[0].at + Duration::days(free.dunning_window_days) - Duration::hours(free.message_lead_hours) - req.now)
        .num_hours()
        / 24
        + 1;
    assert_eq!(plan.planned_asks as i64, left);
    let s = 1.0 - (-0.02f64).exp();
    let q = 0.3 + 0.7 * s;
    assert!((plan.p_update - q).abs() < 1e-12 && (plan.p_success_after - p).abs() < 1e-12, "{plan:?}");
    let recovery = p * (1.0 - (1.0 - q).powi(left as i32));
    assert!((d.p_recovery - recovery).abs() < 1e-12, "{} vs {recovery}", d.p_recovery);
    let gain = p * 4_999.0 - free.attempt_cost_minor;
    assert!((plan.value - gain * (1.0 - (1.0 - q).powi(left as i32))).abs() < 1e-6, "{plan:?}");
    assert!(plan.value > plan.value_without_asking && d.reasons.iter().any(|r| r.code == "ask_for_new_payment_method"));

    // SMS loses half the payers it reaches: email instead, and fewer asks as fatigue grows.
    // When delay costs nothing, the plan first waits for the updates that come anyway
    // (each ask spent loses payers), then asks.
    let fatigue = asking_model((0.01, 0.05), (0.5, 0.0));
    let d = decide(&fatigue, &free, &req, (0.5, 0.5)).expect("decides");
    let plan = d.ask.clone().expect("a plan");
    assert_eq!(plan.channel, Channel::Email);
    assert!(plan.planned_asks > 1 && (plan.planned_asks as i64) < left, "{plan:?}");
    assert!((plan.attrition - 0.01).abs() < 1e-12);
    assert!(plan.send_at > req.now, "{plan:?}");
    // When the payer may leave meanwhile (5 % of the value a day), it asks at once.
    let impatient = EngineParams { daily_discount: 0.05, ..free.params() }.check().expect("valid");
    let now = decide(&fatigue, &impatient, &req, (0.5, 0.5)).expect("decides").ask.expect("a plan");
    assert_eq!((now.channel, now.send_at), (Channel::Email, req.now));

    // Two asks already sent, the last an hour ago: the next waits out the spacing, and
    // its attrition counts them.
    let mut asked = req.clone();
    asked.asks = vec![
        SentAsk { at: req.now - Duration::hours(30), channel: Channel::Email },
        SentAsk { at: req.now - Duration::hours(1), channel: Channel::Email },
    ];
    let later = decide(&fatigue, &impatient, &asked, (0.5, 0.5)).expect("decides").ask.expect("a plan");
    assert_eq!(later.send_at, req.now + Duration::hours(23));
    assert!((later.attrition - 0.11).abs() < 1e-12, "{later:?}");

    // Every ask loses more than it brings: none, and the reason says so.
    let d = decide(&asking_model((0.99, 0.0), (0.99, 0.0)), &free, &req, (0.5, 0.5)).expect("decides");
    assert_eq!((d.ask_channel, d.ask.as_ref().map(|a| a.channel)), (None, Some(Channel::None)));
    assert!(d.reasons.iter().any(|r| r.code == "ask_not_worth_it"), "{:?}", d.reasons);

    // A model without an ask response: no plan, the channel suggestion as before.
    let d = decide(&model(), &free, &req, (0.5, 0.5)).expect("decides");
    assert_eq!((d.ask, d.ask_channel, d.next), (None, Some(Channel::Email), NextStep::AskForPaymentMethod));

    // By default no ask goes out in the payer's night (21:00–8:00 local): one due at
    // 07:25 Chicago time waits for 08:00.
    let night = decide(
        &fatigue,
        &EngineParams { message_quiet_hours: Some((21, 8)), ..impatient.params() }.check().expect("valid"),
        &asked,
        (0.5, 0.5),
    )
    .expect("decides");
    let plan = night.ask.expect("a plan");
    assert_eq!(plan.send_at.with_timezone(&chrono_tz::America::Chicago).hour(), 8, "{plan:?}");
    // Not due now: a wait, with no channel to ask on yet.
    assert_eq!((night.next, night.ask_channel), (NextStep::WaitForUpdate, None));

    // The payer told the merchant to stop: no retry and no ask.
    let mut revoked = req.clone();
    revoked.attempts[0].decline = DeclineCode::RevocationOfAuthorization;
    let d = decide(&model(), &free, &revoked, (0.5, 0.5)).expect("decides");
    assert_eq!((d.next, d.ask_channel), (NextStep::Stop, None));
    // A stolen card: ask for a new payment method.
    let mut stolen = req.clone();
    stolen.attempts[0].decline = DeclineCode::StolenCard;
    let d = decide(&model(), &free, &stolen, (0.5, 0.5)).expect("decides");
    assert_eq!((d.action, d.next, d.ask_channel), (Action::DoNotRetry, NextStep::AskForPaymentMethod, Some(Channel::Email)));

    // Valued pessimistically, each response rate is two standard errors lower, and a
    // channel the history never randomized (valued at the others' mean) gets no ask.
    let mut other = asking_model((0.0, 0.0), (0.0, 0.0));
    other.asks.other = Some(crate::asks::ChannelResponse { channel: Channel::InApp, rate: 0.9, se: 0.01, retries: 0 });
    let any = Request {
        constraints: Constraints { channels: vec![Channel::Email, Channel::Sms, Channel::InApp], ..Default::default() },
        ..req.clone()
    };
    let open = EngineParams { channel_pessimism: 0.0, ..impatient.params() }.check().expect("valid");
    let plan = decide(&other, &open, &any, (0.5, 0.5)).expect("decides").ask.expect("a plan");
    assert_eq!((plan.channel, plan.send_at), (Channel::InApp, req.now), "{plan:?}");
    let careful = EngineParams { channel_pessimism: 2.0, ..open.params() }.check().expect("valid");
    let plan = decide(&other, &careful, &any, (0.5, 0.5)).expect("decides").ask.expect("a plan");
    assert_eq!(plan.channel, Channel::Sms);
    assert!((plan.p_update - (0.28 + 0.72 * s)).abs() < 1e-12, "{plan:?}");

    // An ask from the future is refused, naming the field.
    let mut bad = req.clone();
    bad.asks = vec![SentAsk { at: req.now + Duration::hours(1), channel: Channel::Email }];
    assert_eq!(decide(&model(), &free, &bad, (0.5, 0.5)).unwrap_err().field, "asks[0].sent_at");
}

#[test]
fn a_retry_is_valued_with_its_decline_class_and_stage_calibration() {
    let mut m = one_term("channel=sms", 0.5);
    let mut req = request();
    req.constraints.channels = vec![Channel::Sms];
    let cfg = EngineParams { exploration: 0.0, channel_pessimism: 0.0, ..Default::default() }.check().expect("valid");
    let class = req.attempts[0].decline.class() as usize;
    let global = m.platt();
    // Every cell the global scaling but this class's first retry.
    m.class_platt = vec![[global; 2]; <DeclineClass as strum::VariantArray>::VARIANTS.len()];
    m.class_platt[class][0] = Platt { a: 0.5, b: -0.3 };
    m.class_platt[class][1] = Platt { a: 3.0, b: 1.0 };
    let chosen = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides").chosen.expect("a retry");
    assert_eq!(chosen.channel, Channel::Sms);
    let want = sigmoid(0.5 * (m.intercept + 0.5) - 0.3);
    assert!((chosen.p_success - want).abs() < 1e-12, "{} vs {want}", chosen.p_success);
    assert!((chosen.p_success - m.calibrate(m.intercept + 0.5)).abs() > 0.01, "not the global scaling");
}

#[test]
fn a_noisy_channel_lift_is_discounted_by_its_uncertainty() {
    // Every weight 0 but SMS's own column: SMS lifts the logit by 0.5 over no message.
    let sms = SCHEMA.columns.iter().position(|c| c == "channel=sms").expect("an SMS column");
    let mut m = SuccessModel { weights: vec![0.0; SCHEMA.len()], ..model() };
    m.weights[sms] = 0.5;
    let mut req = request();
    req.constraints.channels = vec![Channel::Sms];
    let cfg = EngineParams { exploration: 0.0, channel_pessimism: 2.0, ..Default::default() }.check().expect("valid");
    let discounted = |d: &Decision| d.reasons.iter().find(|r| r.code == "channel_lift_discounted").map(|r| r.detail.clone());
    // No variances (an older model): the lift as estimated.
    let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
    let chosen = d.chosen.clone().expect("a retry");
    assert_eq!(chosen.channel, Channel::Sms);
    assert!((chosen.p_success - m.calibrate(m.intercept + 0.5)).abs() < 1e-12);
    assert_eq!(discounted(&d), None);
    // A lift known to ± 0.2: two standard deviations off leaves 0.1.
    m.weight_variances = vec![0.0; SCHEMA.len()];
    m.weight_variances[sms] = 0.04;
    let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
    let chosen = d.chosen.clone().expect("a retry");
    assert_eq!(chosen.channel, Channel::Sms);
    assert!((chosen.p_success - m.calibrate(m.intercept + 0.1)).abs() < 1e-12, "{chosen:?}");
    assert!(discounted(&d).is_some_and(|t| t.contains("sms +0.500 → +0.100")), "{:?}", d.reasons);
    // Known to ± 0.3: nothing is left, and the SMS's cost makes no message better.
    m.weight_variances[sms] = 0.09;
    let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
    assert_eq!(d.chosen.expect("a retry").channel, Channel::None);
    // Pessimism off: the estimate again.
    let d =
        decide(&m, &EngineParams { channel_pessimism: 0.0, ..cfg.params() }.check().expect("valid"), &req, (0.5, 0.5)).expect("decides");
    assert_eq!(d.chosen.expect("a retry").channel, Channel::Sms);
    // The ask plan values the retry after an SMS ask with the same discount.
    let mut asking = asking_model((0.0, 0.0), (0.0, 0.0));
    asking.weights[sms] = 0.5;
    asking.weight_variances = m.weight_variances.clone();
    asking.weight_variances[sms] = 0.04;
    let mut expired = req.clone();
    expired.attempts[0].decline = DeclineCode::ExpiredCard;
    let plan = decide(&asking, &cfg, &expired, (0.5, 0.5)).expect("decides").ask.expect("a plan");
    assert_eq!(plan.channel, Channel::Sms);
    assert!((plan.p_success_after - asking.calibrate(asking.intercept + 0.1)).abs() < 1e-12, "{plan:?}");
    // A channel that looks worse than no message is left as it is.
    m.weights[sms] = -0.5;
    let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
    assert_eq!((d.chosen.as_ref().expect("a retry").channel, discounted(&d)), (Channel::None, None));
}

/// linfa's pattern: params are checked into the only config the engine takes; the
/// defaults pass, and a setting out of range is refused naming its field.
#[test]
fn engine_params_are_checked_into_a_config() {
    let checked = EngineParams::default().check().expect("the defaults are valid");
    assert_eq!(checked, EngineConfig::default());
    for (params, field) in [
        (EngineParams { exploration: 1.5, ..Default::default() }, "exploration"),
        (EngineParams { daily_discount: 1.0, ..Default::default() }, "daily_discount"),
        (EngineParams { horizon_hours: 0, ..Default::default() }, "horizon_hours"),
        (EngineParams { support_pessimism: f64::NAN, ..Default::default() }, "support_pessimism"),
        (EngineParams { message_quiet_hours: Some((24, 3)), ..Default::default() }, "message_quiet_hours"),
    ] {
        assert_eq!(params.check().expect_err("refused").field, field);
    }
    // Reading a checked config reads its params; changing one means checking again.
    let mut p = checked.params();
    p.top_k = 3;
    assert_eq!(p.check().expect("valid").top_k, 3);
}

#[test]
fn a_retry_time_the_trees_pin_down_loosely_is_valued_at_its_lower_bound() {
    use crate::trees::{Forest, Node, Tree, REPLICATES};
    let weekday = crate::features::group_names().iter().position(|&g| g == "local_weekday").expect("a weekday group");
    // Every weight 0; one tree: Saturdays +1.5, known to ± 2 over the bootstrap refits.
    let mut m = SuccessModel { weights: vec![0.0; SCHEMA.len()], weight_variances: vec![0.0; SCHEMA.len()], ..model() };
    let root = Node { group: weekday as u8, left_levels: 1 << 5, left: 1, right: 2, ..Node::leaf(0.0) };
    let saturday: [f32; REPLICATES] = std::array::from_fn(|b| if b % 2 == 0 { 2.0 } else { -2.0 });
    let spreads = vec![[0.0; REPLICATES], saturday, [0.0; REPLICATES]];
    m.trees = Forest { trees: vec![Tree { nodes: vec![root, Node::leaf(1.5), Node::leaf(0.0)], spreads }] };
    assert_eq!(REPLICATES % 2, 0);
    m.check_schema().expect("the forest fits");
    let mut req = request();
    req.constraints.channels = vec![Channel::None];
    let local_weekday =
        |d: &Decision| chrono::Datelike::weekday(&d.chosen.as_ref().expect("a retry").retry_at.with_timezone(&chrono_tz::America::Chicago));
    let decide_with = |m: &SuccessModel, kappa: f64| {
        let cfg = EngineParams { exploration: 0.0, support_pessimism: kappa, ..Default::default() }.check().expect("valid");
        decide(m, &cfg, &req, (0.5, 0.5)).expect("decides")
    };
    // At the estimate, Saturday's +1.5 wins.
    let at_estimate = decide_with(&m, 0.0);
    assert_eq!(local_weekday(&at_estimate), chrono::Weekday::Sat);
    let p_saturday = at_estimate.chosen.as_ref().expect("a retry").p_success;
    assert!((p_saturday - m.calibrate(m.intercept + 1.5)).abs() < 1e-12);
    // One standard deviation (2) below, it is worth −0.5: another day's 0 wins, and
    // the P reported is that day's estimate.
    let bounded = decide_with(&m, 1.0);
    assert_ne!(local_weekday(&bounded), chrono::Weekday::Sat);
    assert!((bounded.chosen.as_ref().expect("a retry").p_success - m.calibrate(m.intercept)).abs() < 1e-12);
    // Without the spread, Saturday again.
    m.trees.trees[0].spreads[1] = [0.0; REPLICATES];
    assert_eq!(local_weekday(&decide_with(&m, 1.0)), chrono::Weekday::Sat);
}

#[test]
fn the_first_hours_past_an_edge_into_a_better_spacing_level_are_valued_on_the_line_to_the_level_before() {
    // Every weight 0 but `hours_since_last`: −5 under 48 h (no retry is worth it sooner),
    // +3 at 48–96 h. The model knows only that level's average; at the estimate the
    // engine takes its first hours, 48 h after the failure (a plateau of one or two).
    let col = |name: &str| SCHEMA.columns.iter().position(|c| c == name).expect("a spacing column");
    let mut m = SuccessModel { weights: vec![0.0; SCHEMA.len()], ..model() };
    for level in ["<2", "2-6", "6-12", "12-24", "24-48"] {
        m.weights[col(&format!("hours_since_last={level}"))] = -5.0;
    }
    m.weights[col("hours_since_last=48-96")] = 3.0;
    let mut req = request();
    req.constraints = Constraints { channels: vec![Channel::None], ..Default::default() };
    let failed = req.attempts[0].at;
    // A steep discount, so that the hours of the level are not one plateau (see `choose`).
    let params = EngineParams { exploration: 0.0, daily_discount: 0.2, ..Default::default() };
    let decide_with = |m: &SuccessModel| decide(m, &params.clone().check().expect("valid"), &req, (0.5, 0.5)).expect("decides");
    let bounded = |d: &Decision| d.reasons.iter().any(|r| r.code == "level_edge_bound");
    let hours_after = |d: &Decision| (d.chosen.as_ref().expect("a retry").retry_at - failed).num_minutes() as f64 / 60.0;
    // No weight variances (an older model): valued at the estimate, no bound.
    let d = decide_with(&m);
    assert!((48.0..51.0).contains(&hours_after(&d)), "{}", hours_after(&d));
    assert!(!bounded(&d));
    // With them, the hours from 48 h to the level's centre (72 h) lie on the line from
    // 24–48 h's centre (36 h, −5) to 72 h (+3): the engine waits until near the level's
    // own value (the discount against the last steps of the ramp).
    m.weight_variances = vec![0.0; SCHEMA.len()];
    let d = decide_with(&m);
    assert!(hours_after(&d) >= 60.0 && hours_after(&d) <= 72.0, "{}", hours_after(&d));
    assert!(bounded(&d), "{:?}", d.reasons);
    // Reported at the estimate, as before.
    let chosen = d.chosen.expect("a retry");
    assert!((chosen.p_success - m.calibrate(m.intercept + 3.0)).abs() < 1e-12, "{chosen:?}");
    // Pessimism off: no bound either.
    let cfg = EngineParams { support_pessimism: 0.0, ..params }.check().expect("valid");
    let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
    assert!((48.0..51.0).contains(&hours_after(&d)) && !bounded(&d), "{}", hours_after(&d));
}

#[test]
fn the_edge_hours_of_a_better_local_hour_level_are_valued_on_the_line_to_the_worse_one_next_to_it() {
    // Every weight 0 but `local_hour=7-9` (+2). At the estimate 07:00, 08:00 and 09:00
    // local score alike, and the plateau spread picks among them by the payment's hash:
    // an edge hour, next to a worse level, for some payments.
    let col = |name: &str| SCHEMA.columns.iter().position(|c| c == name).expect("a local-hour column");
    let mut m = SuccessModel { weights: vec![0.0; SCHEMA.len()], ..model() };
    m.weights[col("local_hour=7-9")] = 2.0;
    let params = EngineParams { exploration: 0.0, ..Default::default() }.check().expect("valid");
    let decide_for = |m: &SuccessModel, i: usize| {
        let mut req = request();
        req.payment_id = format!("pay_{i}");
        req.constraints = Constraints { channels: vec![Channel::None], ..Default::default() };
        let d = decide(m, &params, &req, (0.5, 0.5)).expect("decides");
        let hour = chrono::Timelike::hour(&d.chosen.as_ref().expect("a retry").retry_at.with_timezone(&req.facts.timezone));
        (hour, d)
    };
    let bounded = |d: &Decision| d.reasons.iter().any(|r| r.code == "level_edge_bound");
    let hours: Vec<u32> = (0..16).map(|i| decide_for(&m, i).0).collect();
    assert!(hours.iter().all(|h| (7..=9).contains(h)), "{hours:?}");
    assert!(hours.iter().any(|&h| h != 8), "{hours:?}");
    assert!(!bounded(&decide_for(&m, 0).1));
    // With weight variances (the lower bound on), 07:00 and 09:00 lie an hour from the
    // level's centre, on the lines to 04–06's and 10–13's (0): worth 2 − 2/3 and 2 − 2/3.5.
    // 08:00 keeps the level's own value and is taken for every payment, its P reported
    // at the estimate.
    m.weight_variances = vec![0.0; SCHEMA.len()];
    for i in 0..16 {
        let (hour, d) = decide_for(&m, i);
        assert_eq!(hour, 8, "payment {i}: {:?}", d.reasons);
        assert!(bounded(&d));
        let chosen = d.chosen.expect("a retry");
        assert!((chosen.p_success - m.calibrate(m.intercept + 2.0)).abs() < 1e-12, "{chosen:?}");
    }
}

/// A log that made every first retry after a funds decline 48 h after the failure cannot say
/// what another spacing does: a chosen first retry more than 12 h from it says its P is an
/// extrapolation, and one within 12 h does not.
#[test]
fn a_retry_away_from_the_spacing_a_fixed_schedule_logged_says_its_p_is_extrapolated() {
    use crate::support::{estimate, Observed};
    let log: Vec<Observed> = (0..2_000u32)
        .map(|i| Observed {
            class: DeclineClass::SoftFunds,
            spacing_hours: 48.0,
            hours_since_failure: 48.0 + (i % 300) as f64,
            retry_number: 1,
            local_hour: i % 24,
            channel: Channel::None,
        })
        .collect();
    let mut m = model();
    m.support = estimate(&log);
    let cfg = EngineParams { exploration: 0.0, ..Default::default() }.check().expect("valid");
    let t0 = request().attempts[0].at;
    let spaced = |from_h: i64, to_h: i64| {
        let mut req = request();
        req.constraints.earliest = Some(t0 + Duration::hours(from_h));
        req.constraints.latest = Some(t0 + Duration::hours(to_h));
        let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
        let at = d.chosen.as_ref().expect("a retry").retry_at;
        ((at - t0).num_minutes() as f64 / 60.0, d.reasons.iter().find(|r| r.code == "extrapolated_spacing").cloned())
    };
    let (h, reason) = spaced(80, 120);
    assert!(h >= 80.0, "{h}");
    let reason = reason.expect("a retry 80 h on or later says its P is extrapolated");
    assert!(reason.detail.contains("only 48 h after the attempt before"), "{}", reason.detail);
    let (h, reason) = spaced(48, 59);
    assert!((48.0..=59.0).contains(&h), "{h}");
    assert!(reason.is_none(), "{reason:?}");
    // Without the support's record of spacing per retry number (a model trained before it), nothing is said.
    m.support.classes.iter_mut().chain(m.support.pooled.as_mut()).for_each(|c| c.spacing_by_retry_number.clear());
    let req = Request { constraints: Constraints { earliest: Some(t0 + Duration::hours(80)), ..request().constraints }, ..request() };
    let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
    assert!(d.chosen.is_some() && !d.reasons.iter().any(|r| r.code == "extrapolated_spacing"), "{:?}", d.reasons);
}

/// Past the spacing a fixed schedule logged for a retry, waiting longer is not credited:
/// a model rating 96–168 h after the attempt before far above everything else retries there
/// when the log's first retries varied, and within the 48–96 h level (the logged 48 h's)
/// when they all came 48 h after the failure, saying why; the P it reports stays the estimate.
#[test]
fn past_the_spacing_a_fixed_schedule_logged_waiting_longer_is_not_credited() {
    use crate::support::{estimate, Observed};
    // First retries at `spacing`, and later ones (retry 2, 48 h after it) up to 12 days after the failure.
    let log = |spacing: &dyn Fn(u32) -> f64| -> Vec<Observed> {
        let retry = |i: u32, retry_number: u32, spacing_hours: f64, hours_since_failure: f64| Observed {
            class: DeclineClass::SoftFunds,
            spacing_hours,
            hours_since_failure,
            retry_number,
            local_hour: i % 24,
            channel: Channel::None,
        };
        (0..2_000u32).flat_map(|i| [retry(i, 1, spacing(i), spacing(i)), retry(i, 2, 48.0, spacing(i) + 48.0)]).collect()
    };
    let long = SCHEMA.columns.iter().position(|c| c == "hours_since_last=96-168").expect("a spacing column");
    let mut m = SuccessModel { weights: vec![0.0; SCHEMA.len()], weight_variances: vec![0.0; SCHEMA.len()], ..model() };
    m.weights[long] = 2.0;
    let cfg = EngineParams { exploration: 0.0, ..Default::default() }.check().expect("valid");
    let req = request();
    assert_eq!(req.attempts[0].decline.class(), DeclineClass::SoftFunds);
    let t0 = req.attempts[0].at;
    let decide_with = |m: &SuccessModel| {
        let d = decide(m, &cfg, &req, (0.5, 0.5)).expect("decides");
        let chosen = d.chosen.clone().expect("a retry");
        ((chosen.retry_at - t0).num_minutes() as f64 / 60.0, chosen.p_success, d)
    };
    // First retries 48–240 h after the failure: the longer wait is in the log, and taken.
    m.support = estimate(&log(&|i| 48.0 + (i % 193) as f64));
    assert_eq!(m.support.for_class(DeclineClass::SoftFunds).and_then(|c| c.fixed_spacing(1)), None);
    let (h, p, d) = decide_with(&m);
    assert!((96.0..168.0).contains(&h), "{h}: {:?}", d.reasons);
    assert!(!d.reasons.iter().any(|r| r.code == "spacing_not_credited"), "{:?}", d.reasons);
    assert!((p - m.calibrate(m.intercept + 2.0)).abs() < 1e-12);
    // All 48 h after it: not credited, and said.
    m.support = estimate(&log(&|_| 48.0));
    assert!(m.support.for_class(DeclineClass::SoftFunds).and_then(|c| c.fixed_spacing(1)).is_some());
    let (h, p, d) = decide_with(&m);
    assert!((48.0..96.0).contains(&h), "{h}: {:?}", d.reasons);
    assert!((p - m.calibrate(m.intercept)).abs() < 1e-12, "the estimate there: {p}");
    let why = d.reasons.iter().find(|r| r.code == "spacing_not_credited").unwrap_or_else(|| panic!("says why: {:?}", d.reasons));
    assert!(
        why.detail.starts_with("the training log made retry 1 after this decline only 48 h after the attempt before"),
        "{}",
        why.detail
    );
    // Without weight variances (no lower bound), a model is taken at its word, as before.
    m.weight_variances.clear();
    assert!((96.0..168.0).contains(&decide_with(&m).0));
}

/// Where attrition is unmeasured, SMS and push are not used, for a retry's message or an
/// ask, whatever lift they have, and the answer says why; with measured attrition they are.
#[test]
fn sms_and_push_wait_for_a_measured_attrition() {
    let mut m = one_term("channel=sms", 1.0);
    let cfg = EngineParams { exploration: 0.0, ..Default::default() }.check().expect("valid");
    let req = request();
    let unpriced = |d: &Decision| d.reasons.iter().find(|r| r.code == "channel_unpriced").map(|r| r.detail.clone());
    let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
    assert_eq!(d.chosen.as_ref().map(|c| c.channel), Some(Channel::Sms), "measured attrition: the SMS's lift is bought");
    assert_eq!(unpriced(&d), None);
    m.attrition = crate::attrition::Attrition::unmeasured();
    let d = decide(&m, &cfg, &req, (0.5, 0.5)).expect("decides");
    let chosen = d.chosen.as_ref().expect("a retry");
    assert!(!matches!(chosen.channel, Channel::Sms | Channel::Push), "{chosen:?}");
    assert!(unpriced(&d).is_some_and(|t| t.starts_with("sms and push not used")), "{:?}", d.reasons);
    // The ask plan: SMS answers more, and is still not asked on.
    let mut asking = asking_model((0.0, 0.0), (0.0, 0.0));
    asking.asks.channels.iter_mut().find(|c| c.channel == Channel::Sms).expect("sms").rate = 0.6;
    let mut expired = req.clone();
    expired.attempts[0].decline = DeclineCode::ExpiredCard;
    let plan = decide(&asking, &cfg, &expired, (0.5, 0.5)).expect("decides").ask.expect("a plan");
    assert_eq!(plan.channel, Channel::Sms, "measured attrition: the better answer");
    asking.attrition = crate::attrition::Attrition::unmeasured();
    let plan = decide(&asking, &cfg, &expired, (0.5, 0.5)).expect("decides").ask.expect("a plan");
    assert_eq!(plan.channel, Channel::Email, "{plan:?}");
    // Without an ask plan (a model with no ask response), the suggested channel skips them
    // too; with nothing else allowed there is no ask: a wait for the update, saying why.
    let sms_only = Request { constraints: Constraints { channels: vec![Channel::Sms], ..expired.constraints.clone() }, ..expired.clone() };
    let mut planless = model();
    let d = decide(&planless, &cfg, &sms_only, (0.5, 0.5)).expect("decides");
    assert_eq!((d.ask.is_none(), d.next, d.ask_channel), (true, NextStep::AskForPaymentMethod, Some(Channel::Sms)), "measured attrition");
    planless.attrition = crate::attrition::Attrition::unmeasured();
    let d = decide(&planless, &cfg, &sms_only, (0.5, 0.5)).expect("decides");
    assert_eq!((d.action, d.next, d.ask_channel), (Action::DoNotRetry, NextStep::WaitForUpdate, None), "{:?}", d.reasons);
    assert!(d.reasons.iter().any(|r| r.code == "no_ask_channel"), "{:?}", d.reasons);
    let both =
        Request { constraints: Constraints { channels: vec![Channel::Sms, Channel::InApp], ..sms_only.constraints.clone() }, ..sms_only };
    assert_eq!(decide(&planless, &cfg, &both, (0.5, 0.5)).expect("decides").ask_channel, Some(Channel::InApp));
}

#[test]
fn a_field_left_out_that_the_log_always_had_is_scored_at_its_most_common_value_and_the_rules_read_the_request() {
    // Debit cards succeed far more often in this model; the log always had the funding.
    let mut m = one_term("card_funding=debit", 2.0);
    let cfg = EngineParams { exploration: 0.0, ..Default::default() }.check().expect("valid");
    let full = request();
    let bare = Request { facts: PaymentFacts { card_funding: None, card_brand: None, ..full.facts.clone() }, ..full.clone() };
    let p = |m: &SuccessModel, r: &Request| decide(m, &cfg, r, (0.5, 0.5)).expect("decides").chosen.expect("a retry").p_success;
    let imputed = |d: &Decision| d.reasons.iter().filter(|r| r.code.starts_with("imputed:")).map(|r| r.code.clone()).collect::<Vec<_>>();
    // A model trained before imputation (or on a log that often lacked the field) scores "unknown".
    assert!(p(&m, &bare) < p(&m, &full) - 0.2, "unknown funding has none of debit's weight");
    m.imputation.card_funding = Some(CardFunding::Debit);
    m.imputation.card_brand = Some(CardBrand::Visa);
    assert!((p(&m, &bare) - p(&m, &full)).abs() < 1e-12, "scored as debit");
    let d = decide(&m, &cfg, &bare, (0.5, 0.5)).expect("decides");
    assert_eq!(imputed(&d), ["imputed:card_brand", "imputed:card_funding"]);
    assert!(d.reasons.iter().any(|r| r.code == "imputed:card_funding" && r.detail.contains("scored as debit")), "{:?}", d.reasons);
    assert!(imputed(&decide(&m, &cfg, &full, (0.5, 0.5)).expect("decides")).is_empty(), "a request that sent it is scored as sent");
    // The rules read the card as sent: without a brand, Mastercard's daily cap binds as for
    // any unknown network, though the model scores the card as a Visa.
    let t0 = bare.attempts[0].at;
    let mut capped = bare.clone();
    capped.attempts = (0..=crate::rules::MASTERCARD_DAILY_LIMIT as i64)
        .map(|k| EarlierAttempt { at: t0 + Duration::hours(k), ..bare.attempts[0].clone() })
        .collect();
    capped.now = t0 + Duration::hours(11);
    let codes = |r: &Request| decide(&m, &cfg, r, (0.5, 0.5)).expect("decides").reasons.into_iter().map(|r| r.code).collect::<Vec<_>>();
    assert!(codes(&capped).contains(&"rule:mastercard_daily_cap".to_string()), "{:?}", codes(&capped));
    let visa = Request { facts: PaymentFacts { card_brand: Some(CardBrand::Visa), ..capped.facts.clone() }, ..capped.clone() };
    assert!(!codes(&visa).contains(&"rule:mastercard_daily_cap".to_string()), "a Visa card has no Mastercard cap");
}

/// A request without a time zone is scored in the country's default zone, but its messages
/// and asks keep quiet hours in every zone of the country: 8:00 in New York is 2:00 in Honolulu.
#[test]
fn without_a_time_zone_messages_and_asks_keep_quiet_hours_in_every_zone_of_the_country() {
    let m = one_term("channel=sms", 1.0);
    let cfg = EngineParams { exploration: 0.0, ..Default::default() }.check().expect("valid");
    let given = Request {
        facts: PaymentFacts { timezone: chrono_tz::America::New_York, ..request().facts },
        constraints: Constraints { quiet_hours: Some((21, 8)), channels: vec![Channel::Sms], ..request().constraints },
        ..request()
    };
    let assumed = Request { timezone_assumed: true, ..given.clone() };
    let zones = crate::calendar::country_time_zones(given.facts.country);
    assert!(zones.contains(&chrono_tz::Pacific::Honolulu) && zones.len() >= 5, "{zones:?}");
    let awake = |t: chrono::DateTime<Utc>| zones.iter().all(|z| !in_quiet(t.with_timezone(z).hour(), 21, 8));
    let quiet_removed = |d: &Decision| {
        d.reasons.iter().find(|r| r.code == "constraint:quiet_hours_message").map_or(0, |r| {
            r.detail.rsplit('(').next().and_then(|x| x.split_whitespace().next()).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0)
        })
    };
    let (d_given, d_assumed) =
        (decide(&m, &cfg, &given, (0.5, 0.5)).expect("decides"), decide(&m, &cfg, &assumed, (0.5, 0.5)).expect("decides"));
    let sent = |d: &Decision| d.chosen.iter().chain(&d.alternatives).filter_map(|s| s.send_at).collect::<Vec<_>>();
    assert!(!sent(&d_assumed).is_empty() && sent(&d_assumed).into_iter().all(awake), "{:?}", sent(&d_assumed));
    assert!(sent(&d_given).into_iter().any(|t| !awake(t)), "with New York given, a text may go out while Hawaii sleeps");
    assert!(quiet_removed(&d_assumed) > quiet_removed(&d_given), "{:?}", d_assumed.reasons);
    let said = |d: &Decision| d.reasons.iter().find(|r| r.code == "timezone_assumed").map(|r| r.detail.clone());
    assert!(said(&d_assumed).is_some_and(|t| t.contains("America/New_York") && t.contains("Pacific/Honolulu")), "{:?}", d_assumed.reasons);
    assert_eq!(said(&d_given), None);
    // The asks for a new card, too.
    let asking = asking_model((0.3, 0.0), (0.3, 0.0));
    let mut expired = Request { constraints: Constraints { channels: vec![Channel::Email], ..assumed.constraints.clone() }, ..assumed };
    expired.attempts[0].decline = DeclineCode::ExpiredCard;
    let plan = decide(&asking, &cfg, &expired, (0.5, 0.5)).expect("decides").ask.expect("a plan");
    assert!(awake(plan.send_at), "{plan:?}");
}
