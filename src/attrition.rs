//! Estimating message attrition from a history whose channels were randomized
//! (learning side). The estimator and its assumptions are documented with the type
//! in [`recoup_core::attrition`] (re-exported here).
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

pub use recoup_core::attrition::*;

use strum::VariantArray;

use crate::declines::DeclineClass;
use crate::domain::Channel;
use crate::history::History;

/// Weighted counts for one (channel, bucket): Σ w, Σ w², rows.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    w: f64,
    w2: f64,
    n: usize,
}

/// Fixed-point units per 1 in [`AttritionSums`]: 2⁻³² resolution, so sums add exactly
/// in any order (shards' sums equal one process's sums bit for bit).
const FIXED: f64 = 4_294_967_296.0;

/// What [`estimate`] counts over the payments, kept so that the counts of separate
/// parts of a history (shards of payers) add up to the counts of the whole: per
/// (channel, messages before), Σ 1/p and Σ 1/p² in fixed point, and rows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttritionSums {
    /// `[channel][bucket]` = (Σ w · 2³², Σ w² · 2³², rows), flattened.
    cells: Vec<(u128, u128, u64)>,
    retries: u64,
}

impl Default for AttritionSums {
    fn default() -> Self {
        AttritionSums { cells: vec![(0, 0, 0); Channel::VARIANTS.len() * BUCKETS], retries: 0 }
    }
}

impl AttritionSums {
    /// Count one payment's attempts (in attempt order).
    pub fn add_payment(&mut self, payment: &[crate::attempt::Attempt]) {
        let mut messages = 0u32;
        for (k, a) in payment.iter().enumerate().skip(1) {
            let Some(channel) = a.channel else { continue };
            let prev = payment[k - 1].decline.map(|d| d.class());
            let soft = matches!(prev, Some(DeclineClass::SoftFunds | DeclineClass::SoftIssuer | DeclineClass::Technical));
            if let (true, Some(p)) = (soft, a.propensity.filter(|p| *p > 0.0 && *p < 1.0)) {
                let c = &mut self.cells[channel as usize * BUCKETS + (messages as usize).min(BUCKETS - 1)];
                // Saturating: a propensity near 0 makes a weight beyond any real count.
                c.0 = c.0.saturating_add((FIXED / p).round() as u128);
                c.1 = c.1.saturating_add((FIXED / (p * p)).round() as u128);
                c.2 += 1;
                self.retries += 1;
            }
            if channel != Channel::None {
                messages += 1;
            }
        }
    }

    /// The counts hold together: one cell per (channel, bucket), and as many rows in them
    /// as retries counted (read from a file, they may not).
    pub fn check(&self) -> Result<(), String> {
        let cells = Channel::VARIANTS.len() * BUCKETS;
        if self.cells.len() != cells {
            return Err(format!("attrition counts have {} cells, this build {cells}", self.cells.len()));
        }
        let rows: u64 = self.cells.iter().map(|c| c.2).sum();
        if rows != self.retries {
            return Err(format!("attrition counts hold {rows} rows but say {} retries", self.retries));
        }
        Ok(())
    }

    /// Add another part's counts.
    pub fn merge(&mut self, other: &AttritionSums) {
        for (a, b) in self.cells.iter_mut().zip(&other.cells) {
            (a.0, a.1, a.2) = (a.0.saturating_add(b.0), a.1.saturating_add(b.1), a.2 + b.2);
        }
        self.retries += other.retries;
    }
}

/// Estimate attrition from a history whose channels were randomized.
/// Empty when the history has no randomized retries with `none` among the choices.
pub fn estimate(h: &History) -> Attrition {
    let mut sums = AttritionSums::default();
    for payment in h.payments() {
        sums.add_payment(payment);
    }
    from_sums(&sums)
}

/// The estimate from counted payments ([`AttritionSums`]).
pub fn from_sums(counted: &AttritionSums) -> Attrition {
    let mut sums = [[Sums::default(); BUCKETS]; Channel::VARIANTS.len()];
    for (ch, row) in sums.iter_mut().enumerate() {
        for (m, s) in row.iter_mut().enumerate() {
            let (w, w2, n) = counted.cells.get(ch * BUCKETS + m).copied().unwrap_or_default();
            *s = Sums { w: w as f64 / FIXED, w2: w2 as f64 / FIXED, n: n as usize };
        }
    }
    let retries = counted.retries as usize;
    let none = sums[Channel::None as usize];
    let mut raw: Vec<(Channel, Vec<Bucket>)> = Vec::new();
    for &channel in Channel::VARIANTS.iter().filter(|c| **c != Channel::None) {
        let buckets: Vec<Bucket> = (0..BUCKETS)
            .filter_map(|m| {
                let (c, z) = (sums[channel as usize][m], none[m]);
                if c.n < 30 || z.n < 30 {
                    return None;
                }
                let ratio = c.w / z.w;
                // Var(ln W) ≈ Σw² / (Σw)² for a sum of independent weighted indicators.
                let se = ratio * (c.w2 / (c.w * c.w) + z.w2 / (z.w * z.w)).sqrt();
                Some(Bucket {
                    messages_before: m as u32,
                    retries: c.n,
                    retries_none: z.n,
                    rate: 1.0 - ratio,
                    se,
                    pooled: 1.0 - ratio,
                    pooled_se: se,
                })
            })
            .collect();
        if !buckets.is_empty() {
            raw.push((channel, buckets));
        }
    }
    // A channel with few logged retries has a noisy estimate: each bucket is pulled
    // toward the mean over channels as far as the channels' spread allows.
    let mut means = Vec::new();
    for m in 0..BUCKETS as u32 {
        let mut here: Vec<&mut Bucket> = raw.iter_mut().filter_map(|(_, b)| b.iter_mut().find(|b| b.messages_before == m)).collect();
        let estimates: Vec<(f64, f64)> = here.iter().map(|b| (b.rate, b.se)).collect();
        let (mean, each) = shrink(&estimates);
        for (b, (pooled, se)) in here.iter_mut().zip(each) {
            (b.pooled, b.pooled_se) = (pooled, se);
        }
        if let Some((rate, se)) = mean {
            let (retries, retries_none) = (here.iter().map(|b| b.retries).sum(), here[0].retries_none);
            means.push(Bucket { messages_before: m, retries, retries_none, rate, se, pooled: rate, pooled_se: se });
        }
    }
    let other = (!means.is_empty()).then(|| {
        let (base, per_message) = fit_line(&means);
        ChannelAttrition { channel: Channel::None, base, per_message, buckets: means }
    });
    let channels = raw
        .into_iter()
        .map(|(channel, buckets)| {
            let (base, per_message) = fit_line(&buckets);
            ChannelAttrition { channel, base, per_message, buckets }
        })
        .collect();
    Attrition { channels, retries, other, unmeasured: false }
}

/// An estimate and its standard error.
type Estimate = (f64, f64);

/// Random-effects shrinkage (DerSimonian–Laird) of estimates `(value, se)` of the
/// same quantity on different channels: each moves toward the random-effects mean
/// by its share of noise, `1/se² : 1/τ²`, where τ² is the between-channel variance
/// beyond noise (0: all become the pooled mean). The channels' estimates share the
/// `none` denominator, so they are not independent; the method treats them as if
/// they were, which understates τ² a little (more pooling).
/// Returns the random-effects mean with its standard error, and each estimate shrunk.
fn shrink(est: &[Estimate]) -> (Option<Estimate>, Vec<Estimate>) {
    if est.len() < 2 {
        return (est.first().copied(), est.to_vec());
    }
    let w: Vec<f64> = est.iter().map(|(_, se)| 1.0 / se.max(1e-9).powi(2)).collect();
    let sw: f64 = w.iter().sum();
    let fixed = est.iter().zip(&w).map(|((x, _), w)| w * x).sum::<f64>() / sw;
    let q: f64 = est.iter().zip(&w).map(|((x, _), w)| w * (x - fixed).powi(2)).sum();
    let c = sw - w.iter().map(|w| w * w).sum::<f64>() / sw;
    let tau2 = ((q - (est.len() - 1) as f64) / c).max(0.0);
    let wr: Vec<f64> = est.iter().map(|(_, se)| 1.0 / (se.powi(2) + tau2)).collect();
    let mean = est.iter().zip(&wr).map(|((x, _), w)| w * x).sum::<f64>() / wr.iter().sum::<f64>();
    let mean_var = 1.0 / wr.iter().sum::<f64>();
    let each = est
        .iter()
        .map(|&(x, se)| {
            if tau2 == 0.0 {
                return (mean, mean_var.sqrt());
            }
            let (a, b) = (1.0 / se.max(1e-9).powi(2), 1.0 / tau2);
            ((a * x + b * mean) / (a + b), (1.0 / (a + b)).sqrt())
        })
        .collect();
    (Some((mean, mean_var.sqrt())), each)
}

/// Weighted least squares of the pooled rate on messages before (weights 1 / se²), with
/// both coefficients kept ≥ 0: a message never makes a payer more likely to
/// stay, and fatigue does not make the next one safer.
fn fit_line(b: &[Bucket]) -> (f64, f64) {
    let w: Vec<f64> = b.iter().map(|x| 1.0 / x.pooled_se.max(1e-6).powi(2)).collect();
    let sw: f64 = w.iter().sum();
    let mean = |f: &dyn Fn(&Bucket) -> f64| b.iter().zip(&w).map(|(x, w)| w * f(x)).sum::<f64>() / sw;
    let my = mean(&|x| x.pooled);
    if b.len() < 2 {
        return (my.max(0.0), 0.0);
    }
    let mx = mean(&|x| x.messages_before as f64);
    let sxx: f64 = b.iter().zip(&w).map(|(x, w)| w * (x.messages_before as f64 - mx).powi(2)).sum();
    let sxy: f64 = b.iter().zip(&w).map(|(x, w)| w * (x.messages_before as f64 - mx) * (x.pooled - my)).sum();
    let slope = if sxx > 0.0 { (sxy / sxx).max(0.0) } else { 0.0 };
    let base = my - slope * mx;
    if base >= 0.0 {
        return (base, slope);
    }
    // The line crosses zero before the first bucket: through the origin instead.
    let sxx0: f64 = b.iter().zip(&w).map(|(x, w)| w * (x.messages_before as f64).powi(2)).sum();
    let sxy0: f64 = b.iter().zip(&w).map(|(x, w)| w * x.messages_before as f64 * x.pooled).sum();
    (0.0, if sxx0 > 0.0 { (sxy0 / sxx0).max(0.0) } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(m: u32, rate: f64, se: f64) -> Bucket {
        Bucket { messages_before: m, retries: 100, retries_none: 100, rate, se, pooled: rate, pooled_se: se }
    }

    #[test]
    fn the_line_goes_through_exact_points_and_keeps_its_signs() {
        let exact: Vec<Bucket> = (0..4).map(|m| bucket(m, 0.01 + 0.015 * m as f64, 0.01)).collect();
        let (a, b) = fit_line(&exact);
        assert!((a - 0.01).abs() < 1e-12 && (b - 0.015).abs() < 1e-12, "{a} {b}");
        // Falling rates: no negative fatigue; the level is the weighted mean.
        let (a, b) = fit_line(&[bucket(0, 0.04, 0.01), bucket(1, 0.02, 0.01)]);
        assert_eq!(b, 0.0);
        assert!((a - 0.03).abs() < 1e-12);
        // A steep line through a negative intercept is refitted through the origin.
        let (a, b) = fit_line(&[bucket(1, 0.0, 0.01), bucket(2, 0.05, 0.01)]);
        assert_eq!(a, 0.0);
        assert!(b > 0.0);
        let line = |channel, base, per_message| ChannelAttrition { channel, base, per_message, buckets: vec![] };
        let mut model = Attrition { channels: vec![line(Channel::Sms, 0.02, 0.5)], retries: 0, other: None, unmeasured: false };
        assert_eq!(model.rate(Channel::None, 3), 0.0);
        assert_eq!(model.rate(Channel::Email, 3), 0.0);
        model.other = Some(line(Channel::None, 0.01, 0.01));
        assert!((model.rate(Channel::Email, 3) - 0.04).abs() < 1e-12, "an unestimated channel is priced like the average");
        assert_eq!(model.rate(Channel::None, 3), 0.0, "no message loses no payer");
        assert!((model.rate(Channel::Sms, 1) - 0.52).abs() < 1e-12);
        assert_eq!(model.rate(Channel::Sms, 4), 1.0);
    }
}
