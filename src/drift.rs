//! Population drift (#24): are the payments the service decides for like the
//! ones its model learned from?
//!
//! Training counts, over the history's failed payments (each payment's first
//! failed attempt), the levels of six key features: decline class, payment
//! method, card funding, country, billing interval and an amount band. The
//! counts go to `metrics.json` ([`crate::train::TrainReport::population`]).
//! `recoup report live` counts the same levels over the payments in the
//! decision log (each payment's first decision) and compares the two by the
//! population stability index per feature,
//! `PSI = Σ (live − train) · ln(live / train)` over the levels' shares, each
//! share smoothed by half a payment so a level new to one side is finite. The
//! usual reading, stated with every figure: below 0.1 stable, 0.1–0.25 a
//! moderate shift (check the calibration of that segment), above 0.25 a major
//! one (retrain on recent history). The amount band is in minor units of
//! mixed currencies: it says whether the price mix moved, not by how much.
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::declines::DeclineClass;
use crate::domain::{BillingInterval, CardFunding, Country, PaymentMethod};
use crate::features::PaymentFacts;
use crate::history::History;

/// The key features compared, in order.
pub const FEATURES: [&str; 6] = ["decline_class", "payment_method", "card_funding", "country", "billing_interval", "amount_band"];

/// PSI from which a shift counts as moderate, and as major.
pub const MODERATE: f64 = 0.1;
pub const MAJOR: f64 = 0.25;

/// The amount band of an amount in minor units.
pub fn amount_band(minor: i64) -> &'static str {
    match minor {
        ..1_000 => "<1000",
        1_000..3_000 => "1000-2999",
        3_000..10_000 => "3000-9999",
        _ => ">=10000",
    }
}

/// The level of each of [`FEATURES`] for a failed payment.
pub fn levels(facts: &PaymentFacts, class: DeclineClass) -> [String; 6] {
    levels_of(class, facts.method, facts.card_funding, &facts.country, facts.billing_interval, facts.amount_minor)
}

fn levels_of(
    class: DeclineClass,
    method: PaymentMethod,
    funding: Option<CardFunding>,
    country: &Country,
    interval: Option<BillingInterval>,
    amount_minor: i64,
) -> [String; 6] {
    [
        <&str>::from(class).to_string(),
        <&str>::from(method).to_string(),
        funding.map_or("none".to_string(), |f| <&str>::from(f).to_string()),
        country.as_str().to_string(),
        interval.map_or("unknown".to_string(), |b| <&str>::from(b).to_string()),
        amount_band(amount_minor).to_string(),
    ]
}

/// Payments counted per level of each key feature.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Population {
    /// Payments counted.
    pub payments: u64,
    /// Per feature of [`FEATURES`]: payments per level.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Population {
    /// Count one payment.
    pub fn add(&mut self, levels: &[String; 6]) {
        self.payments += 1;
        for (feature, level) in FEATURES.iter().zip(levels) {
            *self.counts.entry((*feature).to_string()).or_default().entry(level.clone()).or_default() += 1;
        }
    }

    /// Add another part's counts (a shard of payers).
    pub fn merge(&mut self, other: &Population) {
        self.payments += other.payments;
        for (feature, levels) in &other.counts {
            let mine = self.counts.entry(feature.clone()).or_default();
            for (level, n) in levels {
                *mine.entry(level.clone()).or_default() += n;
            }
        }
    }

    /// The failed payments of a history, each counted at its first failed attempt.
    pub fn of_history(h: &History) -> Population {
        let mut p = Population::default();
        let mut last = None;
        for a in &h.attempts {
            let Some(decline) = a.decline else { continue };
            if last == Some(a.payment) {
                continue;
            }
            last = Some(a.payment);
            p.add(&levels_of(decline.class(), a.method, a.card_funding, &a.country, a.billing_interval, a.amount.minor));
        }
        p
    }

    /// Each feature's drift from `self` (the training population) to `live`, in [`FEATURES`] order;
    /// empty when either side counted no payment.
    pub fn drift(&self, live: &Population) -> Vec<FeatureDrift> {
        if self.payments == 0 || live.payments == 0 {
            return Vec::new();
        }
        let empty = BTreeMap::new();
        FEATURES
            .iter()
            .map(|f| {
                let (t, l) = (self.counts.get(*f).unwrap_or(&empty), live.counts.get(*f).unwrap_or(&empty));
                let mut names: Vec<&String> = t.keys().chain(l.keys()).collect();
                names.sort();
                names.dedup();
                let k = names.len() as f64;
                let share = |c: &BTreeMap<String, u64>, n: u64, name: &String| {
                    (c.get(name).copied().unwrap_or(0) as f64 + 0.5) / (n as f64 + 0.5 * k)
                };
                let mut moved: Vec<LevelShift> = names
                    .iter()
                    .map(|name| LevelShift {
                        level: (*name).clone(),
                        train: share(t, self.payments, name),
                        live: share(l, live.payments, name),
                    })
                    .collect();
                let psi = moved.iter().map(|m| (m.live - m.train) * (m.live / m.train).ln()).sum::<f64>();
                moved.sort_by(|a, b| (b.live - b.train).abs().total_cmp(&(a.live - a.train).abs()));
                moved.truncate(3);
                FeatureDrift { feature: (*f).to_string(), psi, verdict: verdict(psi), largest: moved }
            })
            .collect()
    }
}

/// The usual reading of a PSI.
pub fn verdict(psi: f64) -> &'static str {
    if psi < MODERATE {
        "stable"
    } else if psi < MAJOR {
        "moderate shift"
    } else {
        "major shift"
    }
}

/// One feature's drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDrift {
    pub feature: String,
    pub psi: f64,
    /// `stable`, `moderate shift` or `major shift`.
    pub verdict: &'static str,
    /// The (up to) three levels whose share moved most.
    pub largest: Vec<LevelShift>,
}

/// One level's share in training and live (smoothed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelShift {
    pub level: String,
    pub train: f64,
    pub live: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop(classes: &[(&str, u64)]) -> Population {
        let mut p = Population::default();
        for (c, n) in classes {
            for _ in 0..*n {
                p.add(&[(*c).into(), "card".into(), "debit".into(), "US".into(), "month".into(), "<1000".into()]);
            }
        }
        p
    }

    #[test]
    fn the_same_mix_is_stable_and_a_new_mix_is_a_major_shift() {
        let train = pop(&[("soft_funds", 650), ("soft_issuer", 250), ("needs_update", 100)]);
        let same = pop(&[("soft_funds", 65), ("soft_issuer", 25), ("needs_update", 10)]);
        let d = train.drift(&same);
        assert_eq!(d.len(), FEATURES.len());
        assert!(d.iter().all(|f| f.psi < 0.01 && f.verdict == "stable"), "{d:?}");
        // Expired cards flood in (an issuer's batch of reissues): decline class drifts, nothing else.
        let moved = pop(&[("soft_funds", 300), ("soft_issuer", 100), ("needs_update", 600)]);
        let d = train.drift(&moved);
        let class = &d[0];
        assert_eq!(class.feature, "decline_class");
        assert!(class.psi > MAJOR, "{class:?}");
        assert_eq!(class.verdict, "major shift");
        assert_eq!(class.largest[0].level, "needs_update");
        assert!(d[1..].iter().all(|f| f.psi < 1e-9), "{d:?}");
        // A level the training data never had stays finite.
        let new = pop(&[("technical", 50), ("soft_funds", 50)]);
        assert!(train.drift(&new).iter().all(|f| f.psi.is_finite()));
        assert!(Population::default().drift(&new).is_empty());
    }
}
