//! Step 2 of a decision: the candidate grid. Every hour from the first allowed time
//! over the horizon (never past the dunning window), in the payer's time zone, ×
//! every allowed channel; what the network rules, the caller's constraints or the
//! training log's support exclude is counted per reason; the rest is scored (the
//! payment-level logit once, the hour's columns as they change, the trees per day).
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use chrono::{DateTime, Duration, Timelike, Utc};

use super::config::EngineConfig;
use super::decision::{describe, reason, Reason, Slot};
use super::edges::EdgeBound;
use super::request::{rule_facts, Prepared, Request};
use super::value::{HourTerms, Valuer};
use crate::domain::Channel;
use crate::features::{GridHour, PaymentState, TimeLevels};
use crate::limits::ceil_hour;
use crate::model::SuccessModel;
use crate::rules::RetryChecker;
use crate::support::ClassSupport;
use crate::trees::Bound;

/// The grid's hours: from `start` (the first allowed time, on the hour) to `start + last_hour` hours.
pub(super) struct Grid {
    pub start: DateTime<Utc>,
    /// Hours after `start` of the last candidate; -1 when the grid is empty.
    pub last_hour: i64,
    /// Hours between sending the message and the retry.
    pub lead: Duration,
    pub now: DateTime<Utc>,
}

/// Candidates removed, by reason: (kind, code), the first occurrence's detail, count.
/// Details are built once per reason, not once per hour.
#[derive(Default)]
pub(super) struct Removed(Vec<((&'static str, &'static str), String, usize)>);

impl Removed {
    pub fn count(&mut self, key: (&'static str, &'static str), detail: &dyn Fn() -> String, n: usize) {
        match self.0.iter_mut().find(|r| r.0 == key) {
            Some(r) => r.2 += n,
            None => self.0.push((key, detail(), n)),
        }
    }

    /// One reason per cause, in the order first met; the total removed.
    pub fn explain(&self, reasons: &mut Vec<Reason>) -> usize {
        for ((kind, code), detail, n) in &self.0 {
            reasons.push(reason(format!("{kind}:{code}"), format!("{detail} ({n} candidates removed)")));
        }
        self.0.iter().map(|r| r.2).sum()
    }
}

/// The scored grid: compact candidates (a `Slot` is built only for those reported), and
/// per hour the best valued expected value over its channels, with its P(success) and
/// attrition, for the look-ahead.
pub(super) struct ScoredGrid {
    pub slots: Vec<Scored>,
    pub hour_best: Vec<f64>,
    pub hour_best_p: Vec<f64>,
    pub hour_best_a: Vec<f64>,
    pub removed: Removed,
    /// Hours valued below their lower bound by the bound at levels' edges ([`EdgeBound`]).
    pub edge_bound_hours: usize,
    /// Of those, hours past the spacing the log fixed for this retry number, valued no
    /// higher than at that spacing's level ([`EdgeBound::new`]).
    pub spacing_capped_hours: usize,
}

/// A scored candidate: hours after the grid's start, channel, P(success), expected
/// value of this retry alone, and with the look-ahead.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scored {
    pub hour: i64,
    pub channel: Channel,
    /// The model's estimate (reported).
    pub p: f64,
    /// The lower confidence bound it is valued at (`p` without weight variances).
    pub p_valued: f64,
    /// P(its message makes the payer cancel).
    pub attrition: f64,
    pub ev: f64,
    pub value: f64,
}

/// Whether the time `t()` is in quiet hours `(start, end)` in another zone the payer may live
/// in: when the request gave no time zone, every zone of the country
/// ([`crate::calendar::country_time_zones`]); else none (and `t` is not called).
pub(super) fn quiet_elsewhere(req: &Request, t: impl FnOnce() -> DateTime<Utc>, (start, end): (u32, u32)) -> bool {
    req.timezone_assumed && {
        let t = t();
        crate::calendar::country_time_zones(req.facts.country).iter().any(|z| in_quiet(t.with_timezone(z).hour(), start, end))
    }
}

pub(super) fn in_quiet(hour: u32, start: u32, end: u32) -> bool {
    if start <= end {
        hour >= start && hour < end
    } else {
        hour >= start || hour < end
    }
}

/// The time part of the logit, walked hour to hour: consecutive hours mostly share their
/// time levels (same hour bucket, same day), so it changes only by the columns that
/// moved; the trees are bound to the payment once and to the day when its levels change.
struct TimeWalk<'a> {
    model: &'a SuccessModel,
    state: &'a PaymentState,
    fixed_logit: f64,
    /// The weights' posterior variances are summed (`support_pessimism` > 0).
    with_variance: bool,
    walked: Option<TimeLevels>,
    time_cols: Vec<u16>,
    time_logit: f64,
    time_var: f64,
    tree_logit: f64,
    /// The bootstrap variance of `tree_logit` (with `with_variance`).
    tree_var: f64,
    bound: Bound,
    day_bound: Bound,
}

impl<'a> TimeWalk<'a> {
    fn new(model: &'a SuccessModel, state: &'a PaymentState, fixed_logit: f64, with_variance: bool) -> TimeWalk<'a> {
        let bound = model.bind_trees(state);
        TimeWalk {
            model,
            state,
            fixed_logit,
            with_variance,
            walked: None,
            time_cols: Vec::with_capacity(64),
            time_logit: 0.0,
            time_var: 0.0,
            tree_logit: 0.0,
            tree_var: 0.0,
            bound,
            day_bound: Bound::default(),
        }
    }

    /// The logit at an hour with time levels `levels` (the trees' part included), and
    /// the variance of its time terms (the weights' posterior variances, plus the
    /// time-dependent trees' bootstrap variance).
    fn at(&mut self, levels: TimeLevels) -> (f64, f64) {
        let (model, state) = (self.model, self.state);
        let variances = &model.weight_variances;
        match self.walked {
            None => {
                self.time_logit = self.fixed_logit + model.time_logit(state, &levels, &mut self.time_cols);
                if self.with_variance {
                    self.time_var = self.time_cols.iter().map(|&c| variances[c as usize]).sum();
                }
            }
            Some(prev) if prev != levels => {
                let (time_logit, time_var, with_variance) = (&mut self.time_logit, &mut self.time_var, self.with_variance);
                state.update_time_columns(&prev, &levels, &mut self.time_cols, |old, new| {
                    *time_logit += model.weights[new as usize] - model.weights[old as usize];
                    if with_variance {
                        *time_var += variances[new as usize] - variances[old as usize];
                    }
                })
            }
            Some(_) => {}
        }
        if !model.trees.is_empty() && self.walked != Some(levels) {
            if self.walked.is_none_or(|prev| !levels.same_day_levels(&prev)) {
                model.bind_trees_to_day(&self.bound, state, &levels, &mut self.day_bound);
            }
            if self.with_variance {
                (self.tree_logit, self.tree_var) = model.tree_logit_and_variance(&self.day_bound, state, &levels);
            } else {
                self.tree_logit = model.tree_logit(&self.day_bound, state, &levels);
            }
        }
        self.walked = Some(levels);
        (self.time_logit + self.tree_logit, self.time_var + self.tree_var)
    }
}

impl Grid {
    /// The hours the caller, the window, the horizon and the minimum spacing allow.
    pub fn new(cfg: &EngineConfig, req: &Request, p: &Prepared) -> Grid {
        let window_end = p.first.at + Duration::days(cfg.dunning_window_days);
        let c = &req.constraints;
        let start = [Some(req.now), Some(p.last.at + Duration::minutes(cfg.rules.min_spacing_minutes)), c.earliest]
            .into_iter()
            .flatten()
            .max()
            .expect("now");
        let start = ceil_hour(start);
        let end = [Some(start + Duration::hours(cfg.horizon_hours)), Some(window_end), c.latest].into_iter().flatten().min().expect("some");
        let last_hour = if end >= start { (end - start).num_hours() } else { -1 };
        Grid { start, last_hour, lead: Duration::hours(cfg.message_lead_hours), now: req.now }
    }

    /// Hours on the grid.
    pub fn hours(&self) -> usize {
        (self.last_hour + 1).max(0) as usize
    }

    /// When the message for a retry at `t` goes out (never before now).
    pub fn send_time(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        (t - self.lead).max(self.now)
    }

    /// The reported form of a scored candidate.
    pub fn slot(&self, s: &Scored) -> Slot {
        let retry_at = self.start + Duration::hours(s.hour);
        let send_at = (s.channel != Channel::None).then(|| self.send_time(retry_at));
        Slot { retry_at, channel: s.channel, send_at, p_success: s.p, attrition: s.attrition, expected_value: s.ev, value: s.value }
    }

    /// Score every allowed candidate: the hours' logits walked in order, each hour's
    /// channels valued by `valuer`.
    pub fn score(
        &self,
        model: &SuccessModel,
        cfg: &EngineConfig,
        req: &Request,
        p: &Prepared,
        fixed_logit: f64,
        valuer: &Valuer,
    ) -> ScoredGrid {
        let channels = valuer.channels;
        let c = &req.constraints;
        let n = self.hours();
        let mut out = ScoredGrid {
            slots: Vec::with_capacity(n * channels.len()),
            hour_best: vec![f64::NEG_INFINITY; n],
            hour_best_p: vec![0.0f64; n],
            hour_best_a: vec![0.0f64; n],
            removed: Removed::default(),
            edge_bound_hours: 0,
            spacing_capped_hours: 0,
        };
        // The lower confidence bound is `support_pessimism` SDs of the time terms (the
        // weights' posterior variances; for trees, their leaves' bootstrap spread) below
        // the logit, so a time the log says little about is not chosen on a noisy estimate.
        let kappa = if valuer.pessimistic { cfg.support_pessimism } else { 0.0 };
        let mut walk = TimeWalk::new(model, &p.state, fixed_logit, kappa > 0.0);
        // Where a level's average may not hold (spacing, local hour), never above the line to
        // the neighbouring level; past a spacing the log fixed for this retry, not above its level.
        let k = p.retries(req) + 1;
        let fixed_up_to = valuer.support.and_then(|s| s.fixed_spacing(k)).map(|[_, hi]| hi);
        let edges = valuer.pessimistic.then(|| EdgeBound::new(model, &p.state, fixed_up_to, k == 1));
        let (last_ts, first_ts) = (p.last.at.timestamp(), p.first.at.timestamp());
        let hourly_discount = (1.0 - cfg.daily_discount).powf(1.0 / 24.0);
        let first_discount = (1.0 - cfg.daily_discount).powf(((self.start - req.now).num_minutes() as f64 / 1440.0).max(0.0));
        let grid = p.state.hourly_levels(self.start, n);
        let start_ts = self.start.timestamp();
        // The rules' verdict changes only at a few times fixed by the history: checked once per stretch.
        let mut checker = RetryChecker::new(rule_facts(req), &p.past, p.card(req), req.payment_method_updated, &cfg.rules);
        let mut discount = first_discount / hourly_discount;
        let tz = req.facts.timezone;
        for hour in 0..=self.last_hour {
            let t = start_ts + 3600 * hour;
            discount *= hourly_discount;
            let here = grid[hour as usize];
            if self.excluded(req, p, &mut checker, valuer.support, &here, t, channels.len(), &mut out.removed) {
                continue;
            }
            let (logit, time_var) = walk.at(here.levels);
            let since = |from: i64| (t - from) as f64 / 3600.0;
            let (edge, capped) =
                edges.as_ref().map_or((0.0, false), |e| e.penalty(&here.levels, [since(last_ts), since(first_ts)], here.local_hour));
            if edge < 0.0 {
                out.edge_bound_hours += 1;
                out.spacing_capped_hours += usize::from(capped);
            }
            // The message goes out `lead` hours before: on the grid when that is not before its start.
            let send_hour = || match usize::try_from(hour - cfg.message_lead_hours) {
                Ok(h) if cfg.message_lead_hours >= 0 => grid[h].local_hour,
                _ => self.send_time(self.start + Duration::hours(hour)).with_timezone(&tz).hour(),
            };
            let message_quiet = c.quiet_hours.or(cfg.message_quiet_hours).is_some_and(|(qs, qe)| {
                in_quiet(send_hour(), qs, qe) || quiet_elsewhere(req, || self.send_time(self.start + Duration::hours(hour)), (qs, qe))
            });
            let odds = valuer.platt.odds_against(logit, true);
            let valued_odds = if kappa > 0.0 || edge < 0.0 {
                valuer.platt.odds_against(logit + edge - kappa * time_var.max(0.0).sqrt(), true)
            } else {
                odds
            };
            valuer.hour(HourTerms { hour, logit, odds, valued_odds, discount, message_quiet }, &mut out);
        }
        out
    }

    /// Whether an hour is excluded by the caller's constraints, the network rules or the
    /// training log's support (counted in `removed` for all `n` channels).
    #[allow(clippy::too_many_arguments)]
    fn excluded(
        &self,
        req: &Request,
        p: &Prepared,
        checker: &mut RetryChecker,
        support: Option<&ClassSupport>,
        here: &GridHour,
        t: i64,
        n: usize,
        removed: &mut Removed,
    ) -> bool {
        let c = &req.constraints;
        if let Some((qs, qe)) = c.quiet_hours {
            if in_quiet(here.local_hour, qs, qe) {
                removed.count(("constraint", "quiet_hours"), &|| format!("local hours {qs}:00–{qe}:00 are quiet"), n);
                return true;
            }
        }
        if c.skip_weekends && here.weekday >= 5 {
            removed.count(("constraint", "skip_weekends"), &|| "no retries on weekends".into(), n);
            return true;
        }
        if c.skip_holidays && crate::calendar::is_holiday(req.facts.country, here.local_date) {
            removed.count(("constraint", "skip_holidays"), &|| format!("bank holiday in {}", req.facts.country.as_str()), n);
            return true;
        }
        let verdict = checker.check_timestamp(t);
        if !verdict.is_allowed() {
            for v in &verdict.violations {
                removed.count(("rule", v.code()), &|| describe(v), n);
            }
            return true;
        }
        if let Some(s) = support {
            let spacing = (t - p.last.at.timestamp()) as f64 / 3600.0;
            let since = (t - p.first.at.timestamp()) as f64 / 3600.0;
            if let Err(out) = s.timing(req.attempts.len() as u32, spacing, since).and_then(|_| s.local_hour(here.local_hour)) {
                removed.count(
                    ("outside_support", out.code()),
                    &|| format!("the training log has too few retries like it ({})", s.describe()),
                    n,
                );
                return true;
            }
        }
        false
    }
}
