//! Message attrition estimated on a simulated log against the world's true cancellation rates.

use recoup::attrition;
use recoup::domain::Channel;
use recoup::sim::{generate, World, WorldConfig};

#[test]
fn attrition_on_a_randomized_log_matches_the_worlds_cancellation_rates() {
    let cfg = WorldConfig::default();
    let (base, fatigue, intrusive) = (cfg.channels.cancel_base, cfg.channels.fatigue, cfg.channels.intrusive_factor);
    let w = World::new(cfg, 37, 12);
    let mut h = generate::chunk(&w, 0..100_000).history;
    let a = attrition::estimate(&h);
    assert!(a.retries > 100_000, "{} randomized retries", a.retries);
    let truth = |ch: Channel, m: u32| (base + fatigue * m as f64) * if matches!(ch, Channel::Sms | Channel::Push) { intrusive } else { 1.0 };
    for c in &a.channels {
        for b in &c.buckets {
            let (t, z) = (truth(c.channel, b.messages_before), (b.rate - truth(c.channel, b.messages_before)) / b.se);
            assert!(z.abs() < 3.5, "{:?} after {} messages: {:.4} ± {:.4}, truth {t:.4} (z {z:.1})", c.channel, b.messages_before, b.rate, b.se);
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
