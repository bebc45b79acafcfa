//! Live calibration (#24): is the serving model still calibrated where it acts?
//!
//! Every `RETRY` answer's `p_success` is remembered under (payment id, retry
//! number) until the billing platform reports that attempt with
//! `ReportAttempts`. A report that followed the answer (in the decided hour,
//! after the decided message) counts the prediction against what happened, per
//! decline class and per tenth of predicted probability, in Prometheus
//! counters. Windows are Prometheus's: over the last week,
//! `rate(recoup_live_succeeded_total[7d]) / rate(recoup_live_outcomes_total[7d])`
//! against `rate(recoup_live_predicted_total[7d]) / rate(recoup_live_outcomes_total[7d])`
//! per `class`, and the same per `bin` for a calibration plot. A report that
//! did not follow an answer (or whose answer was forgotten) is counted apart
//! and not judged: the model predicted something else.
//!
//! Memory is bounded: at most [`LiveCalibration::capacity`] answers wait for
//! their report; past it the oldest is forgotten (counted).
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use prometheus::{CounterVec, IntCounterVec, Opts, Registry};

use crate::declines::DeclineClass;

/// Answers waiting for their report, by default.
pub const DEFAULT_CAPACITY: usize = 1_000_000;

struct Expect {
    p: f64,
    class: DeclineClass,
    retry_at: DateTime<Utc>,
    /// As answered: `CHANNEL_EMAIL`… (named as reported, `email`…, only when judged: no
    /// allocation on the decision's path).
    channel: &'static str,
}

#[derive(Default)]
struct Pending {
    map: HashMap<(String, u32), Expect>,
    order: VecDeque<(String, u32)>,
}

/// Predicted against realised success of the retries recoup decided.
pub struct LiveCalibration {
    pending: Mutex<Pending>,
    pub capacity: usize,
    outcomes: IntCounterVec,
    succeeded: IntCounterVec,
    predicted: CounterVec,
    bin_outcomes: IntCounterVec,
    bin_succeeded: IntCounterVec,
    bin_predicted: CounterVec,
    unjudged: IntCounterVec,
}

fn bin(p: f64) -> String {
    let b = ((p * 10.0).floor() as i64).clamp(0, 9);
    format!("{:.1}-{:.1}", b as f64 / 10.0, (b + 1) as f64 / 10.0)
}

impl LiveCalibration {
    /// Counters registered in `registry`.
    pub fn new(registry: &Registry, capacity: usize) -> LiveCalibration {
        let ic = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let fc = |name: &str, help: &str, label: &str| {
            let c = CounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        LiveCalibration {
            pending: Mutex::new(Pending::default()),
            capacity: capacity.max(1),
            outcomes: ic("recoup_live_outcomes_total", "Reported retries that followed a RETRY answer, by decline class", "class"),
            succeeded: ic("recoup_live_succeeded_total", "Of those, the ones that succeeded, by decline class", "class"),
            predicted: fc("recoup_live_predicted_total", "Sum of the p_success answered for those retries, by decline class", "class"),
            bin_outcomes: ic(
                "recoup_live_bin_outcomes_total",
                "Reported retries that followed an answer, by answered p_success tenth",
                "bin",
            ),
            bin_succeeded: ic("recoup_live_bin_succeeded_total", "Of those, the ones that succeeded, by answered p_success tenth", "bin"),
            bin_predicted: fc("recoup_live_bin_predicted_total", "Sum of the p_success answered, by answered p_success tenth", "bin"),
            unjudged: ic(
                "recoup_live_unjudged_reports_total",
                "Reported retries not judged: no remembered answer (none, or forgotten), or not the answer's hour and message",
                "why",
            ),
        }
    }

    /// Remember a RETRY answer for `payment_id`'s retry number `retry`, with the message
    /// before it (`CHANNEL_EMAIL`…, or as reported: `email`…).
    pub fn answered(&self, payment_id: &str, retry: u32, p: f64, class: DeclineClass, retry_at: DateTime<Utc>, channel: &'static str) {
        if !(0.0..=1.0).contains(&p) {
            return;
        }
        let key = (payment_id.to_string(), retry);
        let mut g = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if g.map.insert(key.clone(), Expect { p, class, retry_at, channel }).is_none() {
            g.order.push_back(key);
        }
        while g.map.len() > self.capacity {
            let Some(old) = g.order.pop_front() else { break };
            if g.map.remove(&old).is_some() {
                self.unjudged.with_label_values(&["forgotten"]).inc();
            }
        }
    }

    /// A reported attempt: judged against its answer when it followed it.
    pub fn reported(&self, payment_id: &str, attempt_number: u32, at: DateTime<Utc>, channel: &str, succeeded: bool) {
        if attempt_number == 0 {
            return;
        }
        let expect = {
            let mut g = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            g.map.remove(&(payment_id.to_string(), attempt_number))
        };
        let Some(e) = expect else {
            self.unjudged.with_label_values(&["no_answer"]).inc();
            return;
        };
        let channel = if channel.is_empty() { "none" } else { channel };
        if (at - e.retry_at).num_minutes().abs() >= 60 || channel != crate::decision_log::channel_name(e.channel) {
            self.unjudged.with_label_values(&["not_followed"]).inc();
            return;
        }
        let class = <&str>::from(e.class);
        let b = bin(e.p);
        self.outcomes.with_label_values(&[class]).inc();
        self.predicted.with_label_values(&[class]).inc_by(e.p);
        self.bin_outcomes.with_label_values(&[b.as_str()]).inc();
        self.bin_predicted.with_label_values(&[b.as_str()]).inc_by(e.p);
        if succeeded {
            self.succeeded.with_label_values(&[class]).inc();
            self.bin_succeeded.with_label_values(&[b.as_str()]).inc();
        }
    }

    /// Answers waiting for their report.
    pub fn waiting(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(r: &Registry, name: &str, label: &str) -> f64 {
        r.gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().to_vec())
            .filter(|m| m.get_label().iter().any(|l| l.value() == label))
            .map(|m| m.get_counter().get_value())
            .sum()
    }

    #[test]
    fn followed_reports_count_against_their_answer_and_others_apart() {
        let r = Registry::new();
        let live = LiveCalibration::new(&r, 2);
        let t = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).expect("a time");
        live.answered("a", 1, 0.62, DeclineClass::SoftFunds, t, "CHANNEL_EMAIL");
        live.answered("b", 1, 0.30, DeclineClass::SoftFunds, t, "none");
        live.reported("a", 1, t + chrono::Duration::minutes(20), "email", true);
        // b's retry came a day late: not the answer's, so not judged.
        live.reported("b", 1, t + chrono::Duration::days(1), "none", false);
        live.reported("c", 1, t, "none", false);
        assert_eq!(value(&r, "recoup_live_outcomes_total", "soft_funds"), 1.0);
        assert_eq!(value(&r, "recoup_live_succeeded_total", "soft_funds"), 1.0);
        assert!((value(&r, "recoup_live_predicted_total", "soft_funds") - 0.62).abs() < 1e-12);
        assert_eq!(value(&r, "recoup_live_bin_outcomes_total", "0.6-0.7"), 1.0);
        assert_eq!(value(&r, "recoup_live_unjudged_reports_total", "not_followed"), 1.0);
        assert_eq!(value(&r, "recoup_live_unjudged_reports_total", "no_answer"), 1.0);
        // Bounded: a third answer past the capacity of 2 forgets the oldest.
        for (i, p) in ["x", "y", "z"].iter().enumerate() {
            live.answered(p, 1, 0.5, DeclineClass::Technical, t + chrono::Duration::hours(i as i64), "none");
        }
        assert_eq!(live.waiting(), 2);
        assert_eq!(value(&r, "recoup_live_unjudged_reports_total", "forgotten"), 1.0);
    }
}
