//! Live population drift (#24): are the payments this server decides for like
//! the ones the serving model learned from?
//!
//! Each payment is counted once, at its first decision (a request whose only
//! attempt is the original charge), by the levels of the six key features of
//! [`crate::drift`]: `recoup_live_population_total{feature, level}`. At every
//! scrape, `recoup_drift_psi{feature}` is the population stability index of
//! those counts since the server started against the serving model's training
//! population (its `metrics.json`), with the usual reading: below 0.1 stable,
//! 0.1–0.25 moderate, above 0.25 major (retrain on recent history). A model
//! trained before the population was recorded, or no payment yet: no PSI
//! series. A hot reload compares against the new model from then on.
//! `recoup report live` gives the same over the decision log for any window.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::sync::{Mutex, RwLock};

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

use crate::api::v1;
use crate::declines::DeclineClass;
use crate::drift::Population;

/// Counts of the payments decided and the PSI gauges.
pub struct LiveDrift {
    live: Mutex<Population>,
    reference: RwLock<Option<Population>>,
    counts: IntCounterVec,
    psi: GaugeVec,
}

/// The training population in a version's `metrics.json`, if it has one.
pub fn population_of(metrics_json: &str) -> Option<Population> {
    let v: serde_json::Value = serde_json::from_str(metrics_json).ok()?;
    let p: Population = serde_json::from_value(v.get("population")?.clone()).ok()?;
    (p.payments > 0).then_some(p)
}

/// The levels of a request's payment, as training counts them.
fn levels(req: &v1::DecideRequest, class: DeclineClass) -> [String; 6] {
    let p = req.payment.as_ref();
    let field = |f: &dyn Fn(&v1::Payment) -> &str, none: &str| {
        p.map(f).filter(|s| !s.is_empty()).map_or(none.to_string(), |s| s.to_ascii_lowercase())
    };
    let amount = p.map_or(0, |p| p.amount_minor);
    [
        <&str>::from(class).to_string(),
        field(&|p| &p.payment_method, "none"),
        field(&|p| &p.card_funding, "none"),
        p.map_or(String::new(), |p| p.country.to_ascii_uppercase()),
        field(&|p| &p.billing_interval, "unknown"),
        crate::drift::amount_band(amount).to_string(),
    ]
}

impl LiveDrift {
    /// Registered in `registry`, compared against `reference`.
    pub fn new(registry: &Registry, reference: Option<Population>) -> LiveDrift {
        let counts = IntCounterVec::new(
            Opts::new("recoup_live_population_total", "Payments decided (at their first decision), by key feature and level"),
            &["feature", "level"],
        )
        .expect("valid metric");
        let psi = GaugeVec::new(
            Opts::new(
                "recoup_drift_psi",
                "Population stability index of the payments decided since start against the serving model's training data (< 0.1 stable, > 0.25 major)",
            ),
            &["feature"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(counts.clone()));
        let _ = registry.register(Box::new(psi.clone()));
        LiveDrift { live: Mutex::new(Population::default()), reference: RwLock::new(reference), counts, psi }
    }

    /// Count a decided request's payment if this is its first decision.
    pub fn decided(&self, req: &v1::DecideRequest, class: DeclineClass) {
        if req.attempts.len() != 1 {
            return;
        }
        let levels = levels(req, class);
        for (feature, level) in crate::drift::FEATURES.iter().zip(&levels) {
            self.counts.with_label_values(&[feature, level.as_str()]).inc();
        }
        self.live.lock().unwrap_or_else(|e| e.into_inner()).add(&levels);
    }

    /// Compare against another model's training population from now on.
    pub fn set_reference(&self, reference: Option<Population>) {
        *self.reference.write().unwrap_or_else(|e| e.into_inner()) = reference;
    }

    /// Set the PSI gauges (before a scrape).
    pub fn refresh(&self) {
        self.psi.reset();
        let reference = self.reference.read().unwrap_or_else(|e| e.into_inner());
        let Some(reference) = reference.as_ref() else { return };
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for d in reference.drift(&live) {
            self.psi.with_label_values(&[d.feature.as_str()]).set(d.psi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(attempts: usize, method: &str) -> v1::DecideRequest {
        v1::DecideRequest {
            payment: Some(v1::Payment {
                payment_method: method.into(),
                card_funding: "debit".into(),
                country: "us".into(),
                billing_interval: "month".into(),
                amount_minor: 999,
                ..Default::default()
            }),
            attempts: vec![v1::Attempt::default(); attempts],
            ..Default::default()
        }
    }

    #[test]
    fn first_decisions_are_counted_and_drift_against_the_training_mix() {
        let mut train = Population::default();
        for i in 0..100 {
            train.add(&levels(&req(1, if i < 90 { "card" } else { "sepa_debit" }), DeclineClass::SoftFunds));
        }
        let r = Registry::new();
        let d = LiveDrift::new(&r, Some(train));
        for _ in 0..50 {
            d.decided(&req(1, "sepa_debit"), DeclineClass::SoftFunds);
            // A later decision of a payment already counted is not counted again.
            d.decided(&req(3, "card"), DeclineClass::SoftFunds);
        }
        d.refresh();
        let text = {
            let mut out = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(text.contains(r#"recoup_live_population_total{feature="payment_method",level="sepa_debit"} 50"#), "{text}");
        assert!(!text.contains(r#"level="card"} "#), "{text}");
        let psi = |f: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(&format!("recoup_drift_psi{{feature=\"{f}\"}}")))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(-1.0)
        };
        assert!(psi("payment_method") > crate::drift::MAJOR, "{text}");
        assert!((0.0..0.01).contains(&psi("country")), "{text}");
        // Without a training population there is no PSI series.
        d.set_reference(None);
        d.refresh();
        let mut out = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut out).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("recoup_drift_psi{"));
    }
}
