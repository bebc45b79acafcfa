//! Step 4 of a decision: choose. The best-valued candidate; with probability
//! `exploration` one of the near-best instead, with the propensity of the choice
//! reported; hours the model cannot tell apart are spread by the payment's hash
//! rather than all landing on the edge of a coarse bucket.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use super::config::EngineConfig;
use super::decision::{reason, Reason};
use super::grid::Scored;
use super::request::Request;

/// The best `top_k + 1` candidates, best first. Ties go to the earlier time, then the
/// cheaper channel (a total order, so the partial selection is deterministic).
pub(super) fn rank(cfg: &EngineConfig, slots: &[Scored]) -> Vec<usize> {
    let better = |a: &usize, b: &usize| {
        let (x, y) = (&slots[*a], &slots[*b]);
        y.value.total_cmp(&x.value).then(x.hour.cmp(&y.hour)).then((x.channel as u8).cmp(&(y.channel as u8)))
    };
    let head = cfg.top_k + 1;
    let mut order: Vec<usize> = Vec::with_capacity(head + 1);
    for i in 0..slots.len() {
        if order.len() < head || better(&i, &order[head - 1]).is_lt() {
            let at = order.partition_point(|o| better(o, &i).is_lt());
            order.insert(at, i);
            order.truncate(head);
        }
    }
    order
}

/// The chosen candidate and the probability it had of being chosen.
#[derive(Debug, Clone, Copy)]
pub(super) struct Choice {
    pub ix: usize,
    pub propensity: f64,
}

/// Choose among the ranked candidates (`order`, best first); `random` = (explore, pick)
/// in [0, 1). Says why in `reasons`.
pub(super) fn choose(
    cfg: &EngineConfig,
    req: &Request,
    slots: &[Scored],
    order: &[usize],
    random: (f64, f64),
    reasons: &mut Vec<Reason>,
) -> Choice {
    let best = &slots[order[0]];
    // Exploration among near-best alternatives (distinct times or channels), at most top_k.
    let near: Vec<usize> = order.iter().copied().take(cfg.top_k.max(1)).filter(|&i| slots[i].value >= 0.9 * best.value).collect();
    let k = near.len();
    let eps = if k > 1 { cfg.exploration.clamp(0.0, 1.0) } else { 0.0 };
    let (explore, pick) = random;
    let chosen_ix = if explore < eps { near[((pick * k as f64) as usize).min(k - 1)] } else { order[0] };
    let propensity = if chosen_ix == order[0] { 1.0 - eps + eps / k as f64 } else { eps / k as f64 };
    let explored = chosen_ix != order[0];
    let ix = if explored { chosen_ix } else { spread_plateau(req, slots, chosen_ix, reasons) };
    if explored {
        reasons.push(reason("explored", format!("exploring a near-best alternative (exploration rate {:.0} %)", eps * 100.0)));
    } else {
        reasons.push(reason("best_expected_value", format!("highest expected value of {} allowed candidates", slots.len())));
    }
    Choice { ix, propensity }
}

/// Hours the model cannot tell apart (the same P, channel and attrition in a run of
/// consecutive hours, valued within 1 % of each other) would all go to the run's
/// first hour, the edge of a coarse local-hour bucket, only because of the delay
/// discount: pick within the run by a hash of the payment instead.
fn spread_plateau(req: &Request, slots: &[Scored], best: usize, reasons: &mut Vec<Reason>) -> usize {
    let c = slots[best];
    let mut run = vec![best];
    // Slots are in hour order: look only among the next hour's few channels.
    let same_in = |h: i64| {
        let from = slots.partition_point(|s| s.hour < h);
        (from..slots.len()).take_while(|&i| slots[i].hour == h).find(|&i| {
            let s = &slots[i];
            s.channel == c.channel && s.p == c.p && s.attrition == c.attrition && s.value >= 0.99 * c.value
        })
    };
    while let Some(i) = same_in(c.hour + run.len() as i64) {
        run.push(i);
    }
    if run.len() == 1 {
        return best;
    }
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = foldhash::fast::FixedState::with_seed(0x706c6174).build_hasher();
    req.payment_id.hash(&mut h);
    req.attempts.len().hash(&mut h);
    let k = (h.finish() % run.len() as u64) as usize;
    reasons.push(reason(
        "plateau",
        format!(
            "{} consecutive hours score alike (the model cannot tell them apart): hour {} of them, by the payment's hash, not the earliest",
            run.len(),
            k + 1
        ),
    ));
    run[k]
}
