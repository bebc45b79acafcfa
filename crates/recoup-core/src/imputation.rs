//! What the model does with an optional field a request leaves out but its training log
//! always had.
//!
//! **Why.** Card brand and funding, the billing interval and the payer's tenure are
//! optional in a request (hyperswitch's decider sends no billing interval or tenure; a
//! platform may send no card funding). Each has a level "unknown" in the features. When the
//! training log always had the field, that level never occurred in it: its weights stayed
//! at 0 while every level that did occur carries its own, so a request without the field is
//! scored as no payer in the log was, and its P is off by however far 0 lies from the
//! levels' typical weight (the foreign world's `--minimal` client: chosen-retry ECE 0.017 →
//! 0.029). Where the log nearly always had the field, the model therefore scores a request
//! without it at the log's most common value (for cards only, card brand and funding), and
//! says so in the answer (`imputed:FIELD`). Where the log itself often lacked the field,
//! "unknown" has weights of its own and is used as it is.
//!
//! The network rules never see an imputed value: a card without a brand keeps the caps of
//! an unknown network. Only the success model's features do.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use serde::{Deserialize, Serialize};
use strum::VariantArray;

use crate::domain::{BillingInterval, CardBrand, CardFunding, PaymentMethod};
use crate::features::{PaymentFacts, ACTIVE, G_BRAND, G_FUNDING, G_INTERVAL, G_METHOD, G_TENURE, SCHEMA};

/// A field is imputed when at most this share of the examples that could have it lack it.
pub const MAX_MISSING_SHARE: f64 = 0.01;
/// Fewest examples that could have a field for its most common value to be recorded.
pub const MIN_EXAMPLES: usize = 200;
/// Tenure is a level in the features; a request without it is scored at a value inside the
/// log's most common level: these, per level ("<30", "30-90", "90-365", "365-730", "730+").
const TENURE_DAYS: [u32; 5] = [15, 60, 200, 500, 1000];

/// Per optional field, the value a request without it is scored at: the training log's most
/// common, recorded only when the log nearly always had the field. Empty in models trained
/// before it existed (a missing field is scored as "unknown", as then).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Imputation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_brand: Option<CardBrand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_funding: Option<CardFunding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_interval: Option<BillingInterval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenure_days: Option<u32>,
}

/// One field's count in the log: examples that could have it, and the examples per level
/// (level 0, "unknown": those that lacked it).
struct Count {
    could: usize,
    levels: Vec<usize>,
}

impl Count {
    fn new(levels: usize) -> Count {
        Count { could: 0, levels: vec![0; levels] }
    }

    /// The most common known level, when the field was nearly always there.
    fn mode(&self) -> Option<usize> {
        if self.could < MIN_EXAMPLES || self.levels[0] as f64 > MAX_MISSING_SHARE * self.could as f64 {
            return None;
        }
        // Ties go to the first level, so the result does not depend on iteration order.
        (1..self.levels.len()).max_by_key(|&l| (self.levels[l], std::cmp::Reverse(l))).filter(|&l| self.levels[l] > 0)
    }
}

impl Imputation {
    /// Whether nothing is imputed.
    pub fn is_empty(&self) -> bool {
        *self == Imputation::default()
    }

    /// From examples' active columns ([`ACTIVE`] per example, as training lays them out):
    /// per optional field, its most common value when at most [`MAX_MISSING_SHARE`] of the
    /// examples that could have it (cards, for the card's brand and funding) lack it.
    pub fn from_columns(columns: &[u16]) -> Imputation {
        let ranges = SCHEMA.slot_ranges();
        let level = |ex: &[u16], g: usize| usize::from(ex[g]) - ranges[g].start;
        let card = PaymentMethod::Card as usize;
        let mut counts: Vec<(usize, Count)> =
            [G_BRAND, G_FUNDING, G_INTERVAL, G_TENURE].into_iter().map(|g| (g, Count::new(ranges[g].len()))).collect();
        for ex in columns.chunks_exact(ACTIVE) {
            let is_card = level(ex, G_METHOD) == card;
            for (g, c) in &mut counts {
                if (*g == G_BRAND || *g == G_FUNDING) && !is_card {
                    continue;
                }
                c.could += 1;
                c.levels[level(ex, *g)] += 1;
            }
        }
        let mode = |g: usize| counts.iter().find(|(k, _)| *k == g).and_then(|(_, c)| c.mode());
        Imputation {
            card_brand: mode(G_BRAND).and_then(|l| CardBrand::VARIANTS.get(l - 1).copied()),
            card_funding: mode(G_FUNDING).and_then(|l| CardFunding::VARIANTS.get(l - 1).copied()),
            billing_interval: mode(G_INTERVAL).and_then(|l| BillingInterval::VARIANTS.get(l - 1).copied()),
            tenure_days: mode(G_TENURE).and_then(|l| TENURE_DAYS.get(l - 1).copied()),
        }
    }

    /// `facts` as the success model scores them: each field the request left out and the
    /// log nearly always had, at the log's most common value; and the names of those fields.
    pub fn fill(&self, facts: &PaymentFacts) -> (PaymentFacts, Vec<&'static str>) {
        let mut out = facts.clone();
        let mut filled = Vec::new();
        let card = facts.method == PaymentMethod::Card;
        if let (true, None, Some(b)) = (card, facts.card_brand, self.card_brand) {
            out.card_brand = Some(b);
            filled.push("card_brand");
        }
        if let (true, None, Some(f)) = (card, facts.card_funding, self.card_funding) {
            out.card_funding = Some(f);
            filled.push("card_funding");
        }
        if let (None, Some(b)) = (facts.billing_interval, self.billing_interval) {
            out.billing_interval = Some(b);
            filled.push("billing_interval");
        }
        if let (None, Some(t)) = (facts.tenure_days, self.tenure_days) {
            out.tenure_days = Some(t);
            filled.push("tenure_days");
        }
        (out, filled)
    }

    /// Each recorded field and the value a request without it is scored at, for people (the
    /// model card), in the order [`Imputation::fill`] names them.
    pub fn recorded(&self) -> Vec<(&'static str, String)> {
        [
            ("card_brand", self.card_brand.map(|b| <&str>::from(b).to_string())),
            ("card_funding", self.card_funding.map(|f| <&str>::from(f).to_string())),
            ("billing_interval", self.billing_interval.map(|b| <&str>::from(b).to_string())),
            ("tenure_days", self.tenure_days.map(|t| format!("{t} days"))),
        ]
        .into_iter()
        .filter_map(|(field, value)| Some((field, value?)))
        .collect()
    }

    /// The value `field` is scored at when a request leaves it out (the answer's reason);
    /// "unknown" when none is recorded.
    pub fn describe(&self, field: &str) -> String {
        self.recorded().into_iter().find(|(f, _)| *f == field).map_or_else(|| "unknown".into(), |(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::Channel;
    use crate::features::tests::{facts, funds_failure};
    use crate::features::{Candidate, PaymentState};

    /// One example's active columns, laid out as training lays them.
    fn example(f: PaymentFacts) -> Vec<u16> {
        let at = Utc.with_ymd_and_hms(2025, 3, 3, 14, 0, 0).unwrap();
        PaymentState::new(f, &[funds_failure(at)], false, &[])
            .expect("state")
            .encode(&Candidate { at: at + chrono::Duration::hours(48), channel: Channel::None })
    }

    fn log(n: usize, f: impl Fn(usize) -> PaymentFacts) -> Vec<u16> {
        (0..n).flat_map(|i| example(f(i))).collect()
    }

    #[test]
    fn a_field_the_log_always_had_is_filled_with_its_most_common_value_and_named() {
        // 60 % credit, 40 % debit; brand, interval and tenure always there.
        let columns = log(500, |i| PaymentFacts {
            card_funding: Some(if i % 5 < 3 { CardFunding::Credit } else { CardFunding::Debit }),
            tenure_days: Some(if i % 4 == 0 { 10 } else { 900 }),
            ..facts()
        });
        let imp = Imputation::from_columns(&columns);
        assert_eq!(imp.card_funding, Some(CardFunding::Credit));
        assert_eq!(imp.card_brand, Some(CardBrand::Visa));
        assert_eq!(imp.billing_interval, Some(BillingInterval::Month));
        assert_eq!(imp.tenure_days, Some(1000), "the 730+ level's representative");
        let bare = PaymentFacts { card_brand: None, card_funding: None, billing_interval: None, tenure_days: None, ..facts() };
        let (filled, names) = imp.fill(&bare);
        assert_eq!(names, ["card_brand", "card_funding", "billing_interval", "tenure_days"]);
        assert_eq!(
            (filled.card_brand, filled.card_funding, filled.tenure_days),
            (Some(CardBrand::Visa), Some(CardFunding::Credit), Some(1000))
        );
        // A request that sent everything is scored as sent.
        let (same, none) = imp.fill(&facts());
        assert_eq!((same, none.len()), (facts(), 0));
        // Each representative tenure lands in the level it stands for.
        let level = |t| example(PaymentFacts { tenure_days: Some(t), ..facts() })[G_TENURE];
        for (k, &t) in TENURE_DAYS.iter().enumerate() {
            assert_eq!(usize::from(level(t)) - SCHEMA.slot_ranges()[G_TENURE].start, k + 1, "{t} days");
        }
    }

    #[test]
    fn a_field_the_log_often_lacked_keeps_its_unknown_level_and_card_fields_skip_other_methods() {
        // Funding missing on 5 % of cards: "unknown" has weights of its own.
        let columns = log(400, |i| PaymentFacts { card_funding: (i % 20 != 0).then_some(CardFunding::Debit), ..facts() });
        let imp = Imputation::from_columns(&columns);
        assert_eq!(imp.card_funding, None);
        assert_eq!(imp.card_brand, Some(CardBrand::Visa));
        // SEPA payments have no brand: they neither count against it nor get one.
        let mixed = log(400, |i| {
            if i % 2 == 0 {
                facts()
            } else {
                PaymentFacts { method: PaymentMethod::SepaDebit, card_brand: None, card_funding: None, ..facts() }
            }
        });
        let imp = Imputation::from_columns(&mixed);
        assert_eq!(imp.card_brand, Some(CardBrand::Visa), "200 cards, every one with a brand");
        let sepa = PaymentFacts { method: PaymentMethod::SepaDebit, card_brand: None, card_funding: None, ..facts() };
        assert!(imp.fill(&sepa).1.is_empty(), "a SEPA debit has no card to fill in");
        // Too few examples: nothing recorded.
        assert!(Imputation::from_columns(&log(50, |_| facts())).is_empty());
    }
}
