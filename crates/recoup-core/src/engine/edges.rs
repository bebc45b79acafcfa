//! Part of step 3 (value): the bound at levels' edges. The model sees the time
//! since the last attempt and since the first in levels (`hours_since_last`
//! 24–48 h, 48–96 h, …; [`crate::features::SPACING_EDGES_HOURS`]), and the local
//! hour too (`local_hour` 7–9, 10–13, …; [`LOCAL_HOUR_EDGES`]); a level's weight is
//! the log's average over the retries inside it. Where the truth changes through a
//! level, its hours next to a worse level are worse than that average, and the
//! engine takes exactly those: it discounts delay, so among equally valued hours it
//! takes a spacing level's first, and as spacing still rises through a local-hour
//! level it takes that level's last. The chosen retries were over-predicted right
//! after each spacing edge (the foreign world's `do_not_honor` and funds first
//! retries) and at the last hour of a local-hour level (09:00 in every zoo world
//! looked at; docs/issue-20-log.md).
//!
//! The model cannot tell where inside a level the truth changes, so a candidate
//! is valued no higher than the straight line between its level's centre and the
//! neighbouring level's (toward the side it lies on), per group: near an edge
//! next to a worse level the value ramps from halfway to that level's up to its
//! own at its centre, and nowhere does the bound raise a value. It lowers the
//! value a candidate is ranked by (with the time terms' lower confidence bound);
//! the P(success) reported stays the model's estimate. The local hour is not
//! wrapped round midnight (its first and last levels have one neighbour each).
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use std::sync::LazyLock;

use crate::features::{bucket, PaymentState, TimeLevels, LOCAL_HOUR_EDGES, SPACING_EDGES_HOURS};
use crate::model::SuccessModel;

/// Per spacing group, per level: its centre in hours (the open last level's lies as far
/// past its edge as half the level before it is wide).
static CENTRES: LazyLock<[Vec<f64>; 2]> = LazyLock::new(|| SPACING_EDGES_HOURS.map(centres));

/// Per local-hour level, its centre in hours of the local day (the last level ends at 24).
static HOUR_CENTRES: LazyLock<Vec<f64>> = LazyLock::new(|| {
    let mut c = centres(&LOCAL_HOUR_EDGES);
    if let (Some(last), Some(&lo)) = (c.last_mut(), LOCAL_HOUR_EDGES.last()) {
        *last = (lo + 24.0) / 2.0;
    }
    c
});

/// One payment's bound: per spacing group, per level; and per `days_since_payday`
/// level (the local hour's terms cross it), per local-hour level.
pub(super) struct EdgeBound {
    levels: [Vec<Line>; 2],
    hours: Vec<Vec<Line>>,
    /// Per spacing group, per level: the most its value may lie above the level of the
    /// longest spacing the log gave this retry number, where the log fixed that spacing
    /// ([`EdgeBound::new`]'s `fixed_up_to`); ≤ 0 above that level, +∞ (no cap) elsewhere.
    caps: [Vec<f64>; 2],
}

/// A level's centre (hours), and how fast the line to a neighbouring level's centre
/// falls below the level's own value (logit per hour away from the centre), toward the
/// level before and toward the level after (0 where that neighbour is rated no lower).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Line {
    centre: f64,
    before: f64,
    after: f64,
}

/// Centres of the levels cut by `edges` (hours): the first from 0.
fn centres(edges: &[f64]) -> Vec<f64> {
    let mut lo = 0.0;
    let mut out: Vec<f64> = edges
        .iter()
        .map(|&hi| {
            let c = (lo + hi) / 2.0;
            lo = hi;
            c
        })
        .collect();
    let last_width = edges.len().checked_sub(2).map_or(edges[0], |i| edges[i + 1] - edges[i]);
    out.push(lo + last_width / 2.0);
    out
}

/// The lines of one group's levels with these `parts` of the logit and `centres`.
fn lines(parts: &[f64], centres: &[f64]) -> Vec<Line> {
    let fall = |l: usize, n: usize| ((parts[l] - parts[n]) / (centres[l] - centres[n]).abs()).max(0.0);
    (0..parts.len())
        .map(|l| Line {
            centre: centres[l],
            before: l.checked_sub(1).map_or(0.0, |n| fall(l, n)),
            after: Some(l + 1).filter(|&n| n < parts.len()).map_or(0.0, |n| fall(l, n)),
        })
        .collect()
}

impl EdgeBound {
    /// The bound for one payment, from the model's linear weights (a forest's splits on
    /// spacing or the hour are not bounded: a model of trees only gets no bound).
    ///
    /// `fixed_up_to`: the longest spacing (hours) the log gave this retry number, when it
    /// fixed that spacing ([`crate::support::ClassSupport::fixed_spacing`]). A plain
    /// schedule moves a retry's spacing and its number together, so what a longer wait does
    /// to this retry is not in the log: the model's gain past that spacing's level is
    /// borrowed from later retries (whose retry-number terms share it with the spacing
    /// terms, split by the penalty, not by evidence). Past that level the spacing terms are
    /// then valued no higher than at it: the log's own behaviour (README: what recoup
    /// assumes). A first retry's time since the failure is its spacing: both groups are
    /// capped for it; a later retry's only the time since the last attempt.
    pub fn new(model: &SuccessModel, state: &PaymentState, fixed_up_to: Option<f64>, first_retry: bool) -> EdgeBound {
        let parts = state.spacing_parts(&model.weights);
        let hours = state.hour_parts(&model.weights).iter().map(|p| lines(p, &HOUR_CENTRES)).collect();
        let caps = [0, 1].map(|g| {
            let n = parts[g].len();
            match fixed_up_to.filter(|_| g == 0 || first_retry) {
                Some(h) => {
                    let top = bucket(h, SPACING_EDGES_HOURS[g]).min(n - 1);
                    (0..n).map(|l| if l > top { (parts[g][top] - parts[g][l]).min(0.0) } else { f64::INFINITY }).collect()
                }
                None => vec![f64::INFINITY; n],
            }
        });
        EdgeBound { levels: [0, 1].map(|g| lines(&parts[g], &CENTRES[g])), hours, caps }
    }

    /// What to take off (≤ 0) the logit of a candidate at `levels`, `since` hours after
    /// the last attempt and after the first (in [`SPACING_EDGES_HOURS`]' order), at
    /// `local_hour` (0–23; the candidate is placed at the middle of its hour, so a
    /// level's whole hours lie symmetrically about its centre). A candidate inside a
    /// level lies between its neighbours' centres, so the line is never followed past them.
    /// Also whether the cap past a fixed spacing took more off than the lines.
    #[inline]
    pub fn penalty(&self, levels: &TimeLevels, since: [f64; 2], local_hour: u32) -> (f64, bool) {
        let below = |line: &Line, x: f64| if x < line.centre { line.before * (line.centre - x) } else { line.after * (x - line.centre) };
        let (mut out, mut capped) = (0.0, false);
        for (g, level) in levels.spacing().into_iter().enumerate() {
            let (edge, cap) = (-below(&self.levels[g][level], since[g]), self.caps[g][level]);
            capped |= cap < edge;
            out += edge.min(cap);
        }
        let [hour, pay] = levels.hour_and_pay();
        (out - below(&self.hours[pay][hour], f64::from(local_hour) + 0.5), capped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uncapped() -> [Vec<f64>; 2] {
        [vec![f64::INFINITY; 8], vec![f64::INFINITY; 8]]
    }

    /// Past a fixed spacing's level, a candidate is valued no higher than that level (the
    /// cap wins where it takes more than the lines, and says so); at and below it, and on a
    /// worse level past it, the lines alone.
    #[test]
    fn past_a_fixed_spacing_the_value_stays_at_its_level() {
        // Levels 0–24 h (part 0), 24–48 h (part 1), 48 h+ (part 0.5), the log's spacing fixed in 0–24 h.
        let parts = [0.0, 1.0, 0.5];
        let flat = lines(&[0.0, 0.0], &centres(&[1000.0]));
        let hours = vec![lines(&[0.0; LOCAL_HOUR_EDGES.len() + 1], &HOUR_CENTRES)];
        let caps = [vec![f64::INFINITY, -1.0, -0.5], vec![f64::INFINITY; 2]];
        let bound = EdgeBound { levels: [lines(&parts, &centres(&[24.0, 48.0])), flat], hours, caps };
        let pen = |since: f64| {
            let l = usize::from(since >= 24.0) + usize::from(since >= 48.0);
            bound.penalty(&TimeLevels::with_spacing([l, 0]), [since, 10.0], 12)
        };
        assert_eq!(pen(12.0), (0.0, false));
        // At 24–48 h's centre the lines take nothing; the cap takes the level back to 0–24 h's.
        assert_eq!(pen(36.0), (-1.0, true));
        // Just past 24 h the line takes half; the cap the whole.
        assert_eq!(pen(25.0), (-1.0, true));
        assert_eq!(pen(60.0), (-0.5, true));
        for h in 0..80 {
            let (p, _) = pen(f64::from(h));
            assert!(parts[usize::from(h >= 24) + usize::from(h >= 48)] + p <= parts[0] + 1e-12, "{h}");
        }
    }

    #[test]
    fn centres_lie_midway_and_the_open_level_past_its_edge() {
        assert_eq!(centres(&[2.0, 6.0, 12.0]), vec![1.0, 4.0, 9.0, 15.0]);
        assert_eq!(centres(&[24.0]), vec![12.0, 36.0]);
    }

    #[test]
    fn the_bound_ramps_from_the_edge_to_the_better_levels_centre_and_never_raises() {
        // One group: levels 0–24 h (part 0), 24–48 h (part 1), 48 h+ (part 0.5); the other flat.
        let flat = lines(&[0.0, 0.0], &centres(&[1000.0]));
        let flat_hours = vec![lines(&[0.0; LOCAL_HOUR_EDGES.len() + 1], &HOUR_CENTRES)];
        let bound = EdgeBound { levels: [lines(&[0.0, 1.0, 0.5], &centres(&[24.0, 48.0])), flat], hours: flat_hours, caps: uncapped() };
        let levels = |since: f64| {
            let l = usize::from(since >= 24.0) + usize::from(since >= 48.0);
            (l, [since, 10.0])
        };
        let pen = |since: f64| {
            let (l, s) = levels(since);
            bound.penalty(&TimeLevels::with_spacing([l, 0]), s, 12).0
        };
        // Just past the 24 h edge (centres 12 h and 36 h) the better level is valued halfway back to the worse one's.
        assert!((pen(24.0) + 0.5).abs() < 1e-12, "{}", pen(24.0));
        assert!((pen(30.0) + 0.25).abs() < 1e-12, "{}", pen(30.0));
        // From the level's centre on: its own value; before its end, a worse level next does not lower it
        // below the line either (the line toward 48 h+ falls: 1 → 0.5 from 36 h to 60 h).
        assert_eq!(pen(36.0), 0.0);
        assert!((pen(42.0) + 0.125).abs() < 1e-12, "{}", pen(42.0));
        // Past 48 h the worse level is not raised toward the better one.
        assert_eq!(pen(50.0), 0.0);
        // Before the 24 h edge, the level below is worse than the next: never raised.
        assert_eq!(pen(20.0), 0.0);
        for h in 0..80 {
            assert!(pen(f64::from(h)) <= 0.0);
        }
    }

    #[test]
    fn the_last_hour_of_a_local_hour_level_before_a_worse_one_is_valued_on_the_line_to_it() {
        assert_eq!(*HOUR_CENTRES, vec![2.0, 5.5, 8.5, 12.0, 16.0, 20.0, 23.0]);
        // 07–09 is rated 1 above every other level; spacing flat.
        let flat = lines(&[0.0, 0.0], &centres(&[1000.0]));
        let hours = vec![lines(&[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], &HOUR_CENTRES)];
        let bound = EdgeBound { levels: [flat.clone(), flat], hours, caps: uncapped() };
        let mut levels = TimeLevels::default();
        let pen = |hour: u32, levels: &mut TimeLevels| {
            *levels = levels.with_hour(crate::features::bucket(f64::from(hour), &LOCAL_HOUR_EDGES));
            bound.penalty(levels, [10.0, 10.0], hour).0
        };
        // 08:00 is the level's middle; 07:00 and 09:00 lie an hour from it, 3 and 3.5 hours
        // from the neighbours' centres (5.5 and 12).
        assert_eq!(pen(8, &mut levels), 0.0);
        assert!((pen(7, &mut levels) + 1.0 / 3.0).abs() < 1e-12, "{}", pen(7, &mut levels));
        assert!((pen(9, &mut levels) + 1.0 / 3.5).abs() < 1e-12, "{}", pen(9, &mut levels));
        // The worse levels are never raised toward the better one.
        for h in (0..7).chain(10..24) {
            assert_eq!(pen(h, &mut levels), 0.0, "{h}");
        }
    }
}
