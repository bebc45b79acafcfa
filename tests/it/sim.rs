//! The simulated world: statistical shape of the history it writes (generous
//! but meaningful bounds, fixed seeds), determinism, and the policy-facing API.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::{Duration, TimeZone, Timelike};
use recoup::attempt::Attempt;
use recoup::declines::{DeclineClass, DeclineCode};
use recoup::domain::{CardFunding, Channel, Outcome};
use recoup::history::{load, History, LoadOptions};
use recoup::sim::world::pay_bracket;
use recoup::sim::{Action, Episode, StepResult, World, WorldConfig};

use crate::support::simulate_to;

const SEED: u64 = 20261122;

/// One shared simulated history (6,000 payers × 12 months), written to Parquet
/// and read back through the loader, as a user would.
fn shared() -> &'static (World, History) {
    static H: OnceLock<(World, History)> = OnceLock::new();
    H.get_or_init(|| {
        let world = World::new(WorldConfig::default(), SEED, 12);
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let path: PathBuf = dir.join("sim.parquet");
        let chunk = recoup::sim::generate::chunk(&world, 0..6_000);
        let mut df = chunk.to_frame().expect("frame");
        polars::prelude::ParquetWriter::new(std::fs::File::create(&path).unwrap()).finish(&mut df).unwrap();
        let h = load(&path, &LoadOptions::default()).expect("generated history passes the loader");
        std::fs::remove_dir_all(&dir).ok();
        (world, h)
    })
}

fn payer_id(h: &History, a: &Attempt) -> u32 {
    h.customer_id(a).trim_start_matches("cus_").parse().expect("cus_N")
}

/// Payments whose first charge failed.
fn episodes(h: &History) -> impl Iterator<Item = &[Attempt]> {
    h.payments().filter(|p| p[0].outcome == Outcome::Failed)
}

fn recovered(p: &[Attempt]) -> bool {
    p.last().is_some_and(|a| a.outcome == Outcome::Succeeded)
}

fn first_class(p: &[Attempt]) -> DeclineClass {
    p[0].decline.expect("failed has a decline").class()
}

#[test]
fn insufficient_funds_retries_succeed_more_after_pay_day_than_before() {
    let (world, h) = shared();
    let (mut after, mut before) = ((0u32, 0u32), (0u32, 0u32));
    let mut payers = HashMap::new();
    for p in episodes(h).filter(|p| p[0].decline == Some(DeclineCode::InsufficientFunds)) {
        let id = payer_id(h, &p[0]);
        let payer = payers.entry(id).or_insert_with(|| world.payer(id));
        for a in &p[1..] {
            let local = a.attempted_at.with_timezone(&payer.timezone).date_naive();
            let (prev, next) = pay_bracket(payer, local);
            let ok = (a.outcome == Outcome::Succeeded) as u32;
            if (local - prev).num_days() < 3 {
                after = (after.0 + ok, after.1 + 1);
            } else if (next - local).num_days() <= 3 {
                before = (before.0 + ok, before.1 + 1);
            }
        }
    }
    let rate = |(k, n): (u32, u32)| k as f64 / n.max(1) as f64;
    assert!(after.1 > 300 && before.1 > 300, "enough retries in both windows: {after:?} {before:?}");
    assert!(rate(after) > rate(before) + 0.15, "after pay day {:.3} vs before {:.3}", rate(after), rate(before));
}

#[test]
fn technical_declines_recover_mostly_within_a_day() {
    let (_, h) = shared();
    let rec: Vec<_> = episodes(h).filter(|p| first_class(p) == DeclineClass::Technical && recovered(p)).collect();
    assert!(rec.len() > 50, "{} technical recoveries", rec.len());
    let fast = rec.iter().filter(|p| p.last().unwrap().attempted_at - p[0].attempted_at < Duration::hours(24)).count();
    assert!(fast as f64 / rec.len() as f64 > 0.6, "{fast} of {} within 24 h", rec.len());
}

#[test]
fn hard_declines_never_recover_and_are_never_retried() {
    let (_, h) = shared();
    let hard: Vec<_> = episodes(h).filter(|p| first_class(p) == DeclineClass::Hard).collect();
    assert!(hard.len() > 20, "{} hard declines", hard.len());
    assert!(hard.iter().all(|p| !recovered(p)));
    assert!(hard.iter().all(|p| p.len() == 1), "the logging policy obeys the rules");
}

#[test]
fn expired_cards_recover_only_after_an_update() {
    let (_, h) = shared();
    let needs: Vec<_> = episodes(h).filter(|p| first_class(p) == DeclineClass::NeedsUpdate).collect();
    let rec: Vec<_> = needs.iter().filter(|p| recovered(p)).collect();
    assert!(rec.len() > 10, "{} of {} needs-update payments recovered", rec.len(), needs.len());
    assert!(rec.iter().all(|p| p.iter().any(|a| a.payment_method_updated == Some(true))));
    // and every retry of such a payment follows an update
    for p in &needs {
        if let Some(first_retry) = p.get(1) {
            assert_eq!(first_retry.payment_method_updated, Some(true), "retried without update");
        }
    }
}

#[test]
fn decline_mix_and_recovery_fall_in_documented_ranges() {
    let (_, h) = shared();
    let eps: Vec<_> = episodes(h).collect();
    let total = h.payments().count() as f64;
    let fail_rate = eps.len() as f64 / total;
    assert!((0.04..=0.15).contains(&fail_rate), "failed share of charges {fail_rate:.3}");
    let share = |f: &dyn Fn(&&[Attempt]) -> bool| eps.iter().filter(|p| f(p)).count() as f64 / eps.len() as f64;
    let nsf = share(&|p| p[0].decline == Some(DeclineCode::InsufficientFunds));
    let hard = share(&|p| first_class(p) == DeclineClass::Hard);
    let soft_issuer = share(&|p| first_class(p) == DeclineClass::SoftIssuer);
    assert!((0.35..=0.70).contains(&nsf), "insufficient funds {nsf:.3}");
    assert!(nsf > soft_issuer && soft_issuer > hard, "nsf {nsf:.3} > issuer {soft_issuer:.3} > hard {hard:.3}");
    assert!((0.01..=0.12).contains(&hard), "hard {hard:.3}");
    let recovery = share(&|p| recovered(p));
    assert!((0.40..=0.70).contains(&recovery), "overall recovery {recovery:.3}");
    let first_retries: Vec<&Attempt> = eps.iter().filter_map(|p| p.get(1)).collect();
    let first_ok = first_retries.iter().filter(|a| a.outcome == Outcome::Succeeded).count() as f64 / first_retries.len() as f64;
    assert!((0.20..=0.45).contains(&first_ok), "first retry approval {first_ok:.3}");
    // most recoveries 2–12 days after the decline (published anchor), but not all
    let days: Vec<i64> =
        eps.iter().filter(|p| recovered(p)).map(|p| (p.last().unwrap().attempted_at - p[0].attempted_at).num_hours()).collect();
    let mid = days.iter().filter(|h| (36..=12 * 24 + 12).contains(*h)).count() as f64 / days.len() as f64;
    assert!(mid > 0.5, "share of recoveries between day 2 and 12: {mid:.3}");
}

#[test]
fn every_row_carries_a_valid_propensity_and_channel() {
    let (_, h) = shared();
    for a in &h.attempts {
        let p = a.propensity.expect("simulated rows log propensity");
        assert!(p > 0.0 && p <= 1.0);
        if a.attempt_number == 0 {
            assert_eq!(p, 1.0);
            assert_eq!(a.channel, Some(Channel::None));
        } else {
            assert!(p < 0.1, "a randomized retry has a small propensity: {p}");
        }
    }
    let channels: std::collections::BTreeSet<_> = h.attempts.iter().filter_map(|a| a.channel).collect();
    assert!(channels.len() >= 4, "{channels:?}");
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |seed: &str, name: &str| {
        let out = dir.path().join(name);
        simulate_to(&["--payers", "300", "--months", "3", "--seed", seed], &out);
        std::fs::read(out).expect("written")
    };
    assert_eq!(run("5", "a.parquet"), run("5", "b.parquet"));
    assert_eq!(run("5", "a.csv"), run("5", "b.csv"));
    assert_ne!(run("5", "c.csv"), run("6", "d.csv"));
    // the CSV passes the loader too
    load(&dir.path().join("a.csv"), &LoadOptions::default()).expect("csv loads");
}

#[test]
fn chunking_does_not_change_the_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |chunk: &str, name: &str| {
        let out = dir.path().join(name);
        simulate_to(&["--payers", "500", "--months", "2", "--seed", "9", "--chunk-payers", chunk], &out);
        load(&out, &LoadOptions::default()).expect("loads")
    };
    let (a, b) = (run("500", "a.parquet"), run("37", "b.parquet"));
    assert_eq!(recoup::history::to_frame(&a).unwrap(), recoup::history::to_frame(&b).unwrap());
}

fn failed_episode(world: &World, decline: DeclineCode) -> recoup::sim::EpisodeState {
    let payer = (0..)
        .map(|i| world.payer(i))
        .find(|p| p.card_brand == Some(recoup::domain::CardBrand::Visa) && p.card_funding == Some(CardFunding::Debit))
        .expect("a visa debit payer");
    let failed_at = chrono::Utc.with_ymd_and_hms(2025, 3, 3, 8, 0, 0).unwrap();
    let ep = Episode { cycle: 0, amount_minor: payer.price_minor, failed_at, decline, window_end: failed_at + Duration::days(21) };
    world.start_episode(payer, ep, None, None)
}

#[test]
fn world_api_common_random_numbers_and_oracle() {
    let world = World::new(WorldConfig::default(), SEED, 6);
    let st = failed_episode(&world, DeclineCode::InsufficientFunds);
    let actions: Vec<Action> =
        (1..=5).map(|d| Action { retry_at: st.episode.failed_at + Duration::days(d * 3), channel: Channel::Email }).collect();
    let run = |mut s: recoup::sim::EpisodeState| actions.iter().map(|a| world.step(&mut s, *a)).collect::<Vec<_>>();
    assert_eq!(run(st.clone()), run(st.clone()), "same actions, same outcomes");
    for d in 1..20 {
        let t = st.episode.failed_at + Duration::days(d);
        let p = world.true_success_probability(&st, t, Channel::None);
        assert!((0.0..=1.0).contains(&p));
        assert!(world.true_success_probability(&st, t, Channel::Sms) <= 1.0);
    }
    assert_eq!(world.true_success_probability(&st, st.episode.window_end + Duration::hours(1), Channel::None), 0.0);

    let hard = failed_episode(&world, DeclineCode::StolenCard);
    assert_eq!(world.true_success_probability(&hard, hard.episode.failed_at + Duration::days(2), Channel::Email), 0.0);
    let mut expired = failed_episode(&world, DeclineCode::ExpiredCard);
    assert_eq!(world.true_success_probability(&expired, expired.episode.failed_at + Duration::days(2), Channel::None), 0.0);
    assert!(
        world.true_success_probability(&expired, expired.episode.failed_at + Duration::days(2), Channel::Email) > 0.0,
        "a message can bring an update"
    );
    // retrying an expired card without update breaks a rule: counted and charged
    let retry_at = expired.episode.failed_at + Duration::hours(30);
    let r = world.step(&mut expired, Action { retry_at, channel: Channel::None });
    match r {
        StepResult::Attempted { succeeded, violations } => {
            assert!(!violations.is_empty());
            if expired.updated_at.is_none() {
                assert!(!succeeded)
            }
        }
        other => assert!(matches!(other, StepResult::Cancelled), "{other:?}"),
    }
    assert!(expired.violations <= 1);
}

#[test]
fn technical_recovery_rises_within_hours_and_early_morning_helps_funds() {
    let world = World::new(WorldConfig::default(), SEED, 6);
    let tech = failed_episode(&world, DeclineCode::IssuerNotAvailable);
    let p = |h: i64| world.true_success_probability(&tech, tech.episode.failed_at + Duration::hours(h), Channel::None);
    assert!(p(1) < p(6) && p(6) < p(24) + 1e-9 && p(6) > 0.7, "{} {} {}", p(1), p(6), p(24));
    // early morning local beats late night, same day, for funds declines
    let nsf = failed_episode(&world, DeclineCode::InsufficientFunds);
    let tz = nsf.payer.timezone;
    let (mut morning, mut night) = (0.0, 0.0);
    for d in 1..15 {
        let day = (nsf.episode.failed_at + Duration::days(d)).with_timezone(&tz).date_naive();
        let at = |h| tz.from_local_datetime(&day.and_hms_opt(h, 0, 0).unwrap()).single().unwrap().with_timezone(&chrono::Utc);
        morning += world.true_success_probability(&nsf, at(6), Channel::None);
        night += world.true_success_probability(&nsf, at(23), Channel::None);
        assert_eq!(at(6).with_timezone(&tz).hour(), 6);
    }
    assert!(morning > night, "morning {morning:.3} vs night {night:.3}");
}
