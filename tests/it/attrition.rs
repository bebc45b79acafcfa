//! Message attrition and the response to asks for a new payment method,
//! estimated on a simulated log against the world's truth.

use std::sync::OnceLock;

use recoup::attrition;
use recoup::domain::Channel;
use recoup::history::History;
use recoup::sim::{generate, World, WorldConfig};

/// A 100,000-payer log of world seed 37 (channels drawn at random), built once.
fn log() -> &'static History {
    static LOG: OnceLock<History> = OnceLock::new();
    LOG.get_or_init(|| generate::chunk(&World::new(WorldConfig::default(), 37, 12), 0..100_000).history)
}

#[test]
fn attrition_on_a_randomized_log_matches_the_worlds_cancellation_rates() {
    let cfg = WorldConfig::default();
    let (base, fatigue, intrusive) = (cfg.channels.cancel_base, cfg.channels.fatigue, cfg.channels.intrusive_factor);
    let mut h = log().clone();
    let a = attrition::estimate(&h);
    assert!(a.retries > 100_000, "{} randomized retries", a.retries);
    let truth =
        |ch: Channel, m: u32| (base + fatigue * m as f64) * if matches!(ch, Channel::Sms | Channel::Push) { intrusive } else { 1.0 };
    for c in &a.channels {
        for b in &c.buckets {
            let (t, z) = (truth(c.channel, b.messages_before), (b.rate - truth(c.channel, b.messages_before)) / b.se);
            assert!(
                z.abs() < 3.5,
                "{:?} after {} messages: {:.4} ± {:.4}, truth {t:.4} (z {z:.1})",
                c.channel,
                b.messages_before,
                b.rate,
                b.se
            );
        }
    }
    let email = a.channels.iter().find(|c| c.channel == Channel::Email).expect("email is randomized in the log");
    assert!(email.per_message > 0.005, "fatigue found: {email:?}");
    // The fitted line, within three of its bucket's (pooled) standard errors of the truth.
    for b in &email.buckets {
        let (got, t) = (a.rate(Channel::Email, b.messages_before), truth(Channel::Email, b.messages_before));
        assert!((got - t).abs() < 3.0 * b.pooled_se, "email after {}: {got:.4} vs {t:.4} (se {:.4})", b.messages_before, b.pooled_se);
    }
    // in_app is never logged: priced like the channels' mean, not as free.
    assert!(a.rate(Channel::InApp, 2) > 0.01);
    assert_eq!(a.rate(Channel::None, 3), 0.0);

    // Without randomization there is nothing to estimate, and nothing is priced.
    for at in &mut h.attempts {
        at.propensity = Some(1.0);
    }
    let none = attrition::estimate(&h);
    assert!(none.is_empty() && none.other.is_none() && none.rate(Channel::Email, 2) == 0.0);
}

#[test]
fn ask_response_on_a_randomized_log_matches_the_payers_responsiveness() {
    let cfg = WorldConfig::default();
    let h = log();
    let a = attrition::estimate(h);
    let asks = recoup::asks::estimate(h, &a);
    assert!(asks.payments > 3_000, "{} needs-update payments", asks.payments);
    // The logging policy's first retry is day 1 ± 8 hours.
    let (lo, hi) = asks.first_retry_days;
    assert!(lo >= 0.6 && hi <= 1.4 && lo < hi, "{lo}..{hi}");
    // An ask's true chance is the mean of the payers' responsiveness on the channel, Beta(a, b).
    for c in &asks.channels {
        let (_, al, be) = cfg.channels.responsiveness.iter().find(|r| r.0 == c.channel).copied().expect("configured");
        let truth = al / (al + be);
        let z = (c.rate - truth) / c.se;
        assert!(z.abs() < 3.5, "{:?}: {:.4} ± {:.4}, truth {truth:.4} (z {z:.1})", c.channel, c.rate, c.se);
    }
    assert!(asks.channels.iter().any(|c| c.channel == Channel::Email) && asks.channels.iter().any(|c| c.channel == Channel::Sms));
    // On their own: the world's daily hazard, within the noise of ~1,000 unasked payments.
    let s = asks.spontaneous_per_day;
    assert!((s - cfg.behaviour.spontaneous_update_per_day).abs() < 0.01, "spontaneous {s}");
    // in_app is never logged: it gets the channels' mean, not zero.
    assert!(asks.rate(Channel::InApp) > 0.1);
    assert_eq!(asks.rate(Channel::None), 0.0);

    assert_eq!(asks.method, recoup::asks::AskMethod::SelectiveRetries);

    // A log without randomized channels cannot say: the documented prior, saying so.
    let mut fixed = h.clone();
    for at in &mut fixed.attempts {
        at.propensity = Some(1.0);
    }
    let prior = recoup::asks::estimate(&fixed, &a);
    assert_eq!(prior.method, recoup::asks::AskMethod::Prior);
    assert_eq!((prior.rate(Channel::Email), prior.rate(Channel::Sms)), (recoup::asks::PRIOR_EMAIL_RATE, 0.0));
    assert!(prior.notes.iter().any(|n| n.contains("fallback")), "{:?}", prior.notes);
}

/// A log that retries needs-update payments whether or not the payer updated
/// (the independent world's habit that broke the counting estimate): the
/// time-to-update model on the update flags recovers the world's truth, and
/// every number is a probability with a finite error.
#[test]
fn ask_response_on_a_careless_log_comes_from_the_update_flags() {
    let cfg = recoup::sim::zoo::preset("careless-log").unwrap().check().expect("a valid world");
    let h = generate::chunk(&World::new(cfg.clone(), 41, 12), 0..30_000).history;
    let a = attrition::estimate(&h);
    let asks = recoup::asks::estimate(&h, &a);
    assert_eq!(asks.method, recoup::asks::AskMethod::UpdateFlags, "{:?}", asks.notes);
    for ch in [Channel::Email, Channel::Sms] {
        let c = asks.channels.iter().find(|c| c.channel == ch).expect("estimated");
        let (_, al, be) = cfg.channels.responsiveness.iter().find(|r| r.0 == ch).copied().unwrap();
        let truth = al / (al + be);
        let z = (c.rate - truth) / c.se;
        assert!(c.se.is_finite() && z.abs() < 3.5, "{ch:?}: {:.4} ± {:.4}, truth {truth:.4}", c.rate, c.se);
    }
    let s = asks.spontaneous_per_day;
    assert!((s - cfg.behaviour.spontaneous_update_per_day).abs() < 0.01, "spontaneous {s}");
    // This world's payers answer a message before the next attempt: no share is moved later.
    assert_eq!(asks.own_interval_share, Some(1.0), "{:?}", asks.notes);

    // The same log without update flags (and with propensities as if randomized):
    // the counting estimate's assumption (no retry before an update) fails its
    // check, and the prior is used, saying why.
    let mut bare = h.clone();
    for a in &mut bare.attempts {
        a.payment_method_updated = None;
        if a.attempt_number > 0 {
            a.propensity = Some(0.25);
        }
    }
    let prior = recoup::asks::estimate(&bare, &attrition::estimate(&bare));
    assert_eq!(prior.method, recoup::asks::AskMethod::Prior, "{:?}", prior.notes);
    assert!(prior.notes.iter().any(|n| n.contains("does not wait for an update")), "{:?}", prior.notes);
}

/// A closed loop: the careless log, then recoup's own attempts on needs-update payments,
/// which wait for the payer's update and retry at once (`update_triggered`). Their intervals
/// all end updated, at a length the update chose; read as scheduled intervals they make every
/// payer update on their own within days. Marked, they are left out: the estimate is the
/// careless log's, to the bit, and the model card says how many were left out.
#[test]
fn retries_the_platform_made_because_the_payer_updated_are_left_out_of_the_ask_fit() {
    let cfg = recoup::sim::zoo::preset("careless-log").unwrap().check().expect("a valid world");
    let h = generate::chunk(&World::new(cfg.clone(), 43, 12), 0..20_000).history;
    let a = attrition::estimate(&h);
    let before = recoup::asks::estimate(&h, &a);
    assert_eq!(before.method, recoup::asks::AskMethod::UpdateFlags, "{:?}", before.notes);

    // Every needs-update payment once more, as a waiting policy records it: the failed charge,
    // then one retry half a day later, after the payer's update (a fast payer: the loop's bias).
    let mut looped = h.clone();
    let mut added = 0;
    let firsts: Vec<_> = h
        .payments()
        .filter(|p| p[0].decline.is_some_and(|d| d.class() == recoup::declines::DeclineClass::NeedsUpdate))
        .map(|p| p[0].clone())
        .collect();
    for (k, first) in firsts.into_iter().enumerate() {
        let payment = recoup::domain::PaymentIx(looped.payment_ids.push(&format!("loop_{k}")));
        let failed = recoup::attempt::Attempt { payment, attempt_ix: looped.attempt_ids.push(&format!("loop_{k}_0")), ..first.clone() };
        let retry = recoup::attempt::Attempt {
            attempt_ix: looped.attempt_ids.push(&format!("loop_{k}_1")),
            attempted_at: first.attempted_at + chrono::Duration::hours(12),
            attempt_number: 1,
            outcome: recoup::domain::Outcome::Succeeded,
            decline: None,
            network_code: None,
            advice_code: None,
            channel: Some(Channel::None),
            payment_method_updated: Some(true),
            update_triggered: true,
            ..failed.clone()
        };
        looped.attempts.extend([failed, retry]);
        added += 1;
    }
    assert!(added > 300, "{added} needs-update payments");
    let after = recoup::asks::estimate(&looped, &a);
    assert_eq!(after.spontaneous_per_day, before.spontaneous_per_day, "{:?}", after.notes);
    assert_eq!(after.channels, before.channels);
    let said = format!("{added} needs-update payments left out of the intervals");
    assert!(after.notes.iter().any(|n| n.starts_with(&said)), "{:?}", after.notes);

    // Unmarked, the same rows are read as scheduled intervals, and the estimate breaks.
    for a in &mut looped.attempts {
        a.update_triggered = false;
    }
    let unmarked = recoup::asks::estimate(&looped, &a);
    assert!(
        unmarked.spontaneous_per_day > 2.0 * before.spontaneous_per_day + 0.02,
        "spontaneous {} unmarked against {} in the log",
        unmarked.spontaneous_per_day,
        before.spontaneous_per_day
    );
}
