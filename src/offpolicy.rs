//! Off-policy estimates on logged history: what a strategy would have
//! recovered, from the attempts another (randomized) policy made, using the
//! `propensity` it logged with each attempt.
//!
//! **Episodes and actions.** An episode is a payment whose original charge
//! failed; its logged retries are the decisions. A decision's action is the
//! retry's hour after the failure (`⌊(t − failed) / 1 h⌋`) and the message
//! channel; a strategy's proposal *matches* a logged retry when both agree.
//! Before a proposal is compared it is projected onto the retry rules: a
//! proposal the rules forbid is skipped for the strategy's next one, and a
//! permanent violation ends the strategy's dunning (as in the world backtest).
//!
//! **Estimators.** With `ρₖ = 1{match at retry k} / propensityₖ`, `rₖ` = retry
//! k succeeded, and the success model's `q̂(s, a)` as the direct-method part:
//!
//! - first-retry success: replay (mean `r₁` over matched episodes), IPS
//!   (`mean ρ₁ r₁`), self-normalized IPS (`Σ ρ₁ r₁ / Σ ρ₁`) and doubly robust
//!   (`mean q̂(s₁, π) + ρ₁ (r₁ − q̂(s₁, a₁))`);
//! - recovery over the window: per-decision importance sampling
//!   (`mean Σₖ (Πⱼ≤ₖ ρⱼ) rₖ`: whole-episode weights are never multiplied by
//!   decisions after the reward) and sequential doubly robust (Jiang & Li 2016,
//!   `Dₖ = q̂(sₖ, π) + ρₖ (rₖ + (1 − rₖ) Dₖ₊₁ − q̂(sₖ, aₖ))`).
//!
//! The direct part is one retry's success, not the rest of the window: where
//! the strategy leaves the log's path, sequential DR credits only the model's
//! P(that retry succeeds), so with little support it understates recovery.
//!
//! Intervals: percentile bootstrap over episodes. Support: the effective
//! sample size of the first-retry weights, `(Σρ)² / Σρ²`; a strategy whose
//! proposals the log rarely contains gets a warning instead of a confident number.
//!
//! **What the log cannot say.** Payments that need a new payment method are
//! retried by a logging policy only once the payer updated it, so the log
//! holds no retry of such a payment without an update: they are left out and
//! counted. After the logging policy's last retry nothing is observed: a
//! strategy that would retry later gets no credit for it (the estimate is low
//! for strategies that dunn longer than the log did).
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::attempt::Attempt;
use crate::backtest::{interval, Estimate, Learned, Offsets, PayDayHeuristic, Schedule};
use crate::declines::{DeclineClass, DeclineCode};
use crate::domain::{Channel, Outcome};
use crate::engine::{self, PastPayment};
use crate::export::{self, Open, Payers};
use crate::features::{payment_evidence, Candidate, EarlierAttempt, PaymentState};
use crate::history::History;
use crate::model::SuccessModel;
use crate::rules::{self, check_retry, Proposal, RulesConfig};
use crate::sim::world::Action;
use crate::train::facts_of;

/// What a strategy sees of a logged payment: its attempts so far (all
/// failed), the payer's earlier payments, and the time its proposal must follow.
pub struct LoggedView<'a> {
    pub history: &'a History,
    pub payers: &'a Payers<'a>,
    pub seen: &'a [Attempt],
    pub past: &'a [PastPayment],
    pub after: DateTime<Utc>,
}

impl LoggedView<'_> {
    fn first(&self) -> &Attempt {
        &self.seen[0]
    }
    fn class(&self) -> DeclineClass {
        self.first().decline.unwrap_or(DeclineCode::Other).class()
    }
}

/// A strategy that can be evaluated on logged history.
pub trait LoggedStrategy: Sync {
    fn name(&self) -> String;
    /// The next retry strictly after `v.after`, or none.
    fn propose(&self, v: &LoggedView) -> Option<Action>;
}

impl LoggedStrategy for Schedule {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn propose(&self, v: &LoggedView) -> Option<Action> {
        self.next_after(v.first().timezone, v.first().attempted_at, v.after)
    }
}

impl LoggedStrategy for Offsets {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn propose(&self, v: &LoggedView) -> Option<Action> {
        self.next_after(v.class(), v.first().attempted_at, v.after)
    }
}

impl LoggedStrategy for PayDayHeuristic {
    fn name(&self) -> String {
        "pay-day heuristic".into()
    }
    fn propose(&self, v: &LoggedView) -> Option<Action> {
        let f = v.first();
        PayDayHeuristic::next_after(f.timezone, f.country, f.attempted_at, v.class(), v.seen.len(), v.past, v.after)
    }
}

impl LoggedStrategy for Learned {
    fn name(&self) -> String {
        format!("learned ({})", self.version)
    }
    fn propose(&self, v: &LoggedView) -> Option<Action> {
        let mut req = export::request(v.history, v.payers, &Open { attempts: v.seen }, v.after);
        req.constraints.channels = self.channels.clone();
        let d = engine::decide(&self.model, &self.cfg, &req, (1.0, 0.0)).ok()?;
        d.chosen.filter(|_| d.action == engine::Action::Retry).map(|c| Action { retry_at: c.retry_at, channel: c.channel })
    }
}

/// A failed payment of the log and what is needed to score decisions on it.
struct LoggedEpisode<'h> {
    attempts: &'h [Attempt],
    past: Vec<PastPayment>,
    state_payday: crate::payday::PayDayEstimate,
    /// The pay-day evidence of the earlier payments (re-read with the payment's own retries after one).
    evidence: Vec<crate::payday::Evidence>,
}

/// One episode's contributions to every estimator.
#[derive(Debug, Clone, Copy, Default)]
struct Contribution {
    /// The log has a first retry.
    retried: bool,
    /// First retry: matched, ρ₁, r₁, the DR term.
    matched: bool,
    rho1: f64,
    r1: f64,
    dr1: f64,
    /// Recovery: the PDIS and sequential DR terms.
    pdis: f64,
    sdr: f64,
}

/// The estimates for one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct OffPolicy {
    pub strategy: String,
    pub episodes: usize,
    /// Episodes whose first logged retry the strategy's first proposal matches.
    pub matched_first: usize,
    /// Effective sample size of the first-retry importance weights.
    pub ess_first: f64,
    pub first_retry_replay: Estimate,
    pub first_retry_ips: Estimate,
    pub first_retry_snips: Estimate,
    pub first_retry_dr: Estimate,
    pub recovery_pdis: Estimate,
    pub recovery_sdr: Estimate,
    /// Set when the log supports the strategy too little to trust the numbers.
    pub warning: Option<String>,
}

/// How the estimates are made.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only each payer's first failed payment (to compare with the world backtest).
    pub first_per_payer: bool,
    pub resamples: usize,
    pub seed: u64,
    /// Warn below this effective sample size.
    pub min_ess: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options { first_per_payer: false, resamples: 500, seed: 1, min_ess: 100.0 }
    }
}

/// What was left out of the log, and why.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Coverage {
    /// Failed payments evaluated.
    pub episodes: usize,
    /// Needs-update payments left out (the log retries them only after an update).
    pub needs_update_left_out: usize,
    /// Payments with a retry that has no `propensity` (left out).
    pub without_propensity: usize,
}

/// The episodes of `h` to evaluate on.
fn episodes<'h>(h: &'h History, payers: &Payers, opts: &Options, coverage: &mut Coverage) -> Vec<LoggedEpisode<'h>> {
    let mut seen_payers = std::collections::HashSet::new();
    let mut firsts: Vec<&[Attempt]> = h.payments().filter(|p| p[0].outcome == Outcome::Failed).collect();
    firsts.sort_by_key(|p| (p[0].attempted_at, p[0].payment.0));
    let mut out = Vec::new();
    for p in firsts {
        if opts.first_per_payer && !seen_payers.insert(p[0].customer) {
            continue;
        }
        if p[0].decline.is_some_and(|d| d.class() == DeclineClass::NeedsUpdate) {
            coverage.needs_update_left_out += 1;
            continue;
        }
        if p[1..].iter().any(|a| a.propensity.is_none()) {
            coverage.without_propensity += 1;
            continue;
        }
        let past = payers.earlier(&Open { attempts: &p[..1] });
        let tz = p[0].timezone;
        let evidence: Vec<_> = past.iter().flat_map(|q| payment_evidence(tz, q)).map(|(_, e)| e).collect();
        out.push(LoggedEpisode { attempts: p, past, state_payday: crate::payday::infer(p[0].country, &evidence), evidence });
    }
    coverage.episodes = out.len();
    out
}

fn hour_slot(failed: DateTime<Utc>, t: DateTime<Utc>) -> i64 {
    (t - failed).num_seconds().div_euclid(3600)
}

/// The strategy's proposal after `seen`, projected onto the rules: forbidden
/// proposals are skipped for the next one; a permanent violation stops.
fn projected(s: &dyn LoggedStrategy, v: &mut LoggedView, window_end: DateTime<Utc>, rules_cfg: &RulesConfig) -> Option<Action> {
    let last = v.seen.last()?;
    let facts = rules::Network::from(last);
    let past: Vec<rules::PastAttempt> = v.seen.iter().map(rules::PastAttempt::from).collect();
    for _ in 0..64 {
        let a = s.propose(v)?;
        if a.retry_at <= v.after || a.retry_at > window_end {
            return None;
        }
        let verdict = check_retry(facts, &past, Proposal { at: a.retry_at, payment_method_updated: false }, rules_cfg);
        if verdict.is_allowed() {
            return Some(a);
        }
        if verdict.is_permanent() {
            return None;
        }
        v.after = a.retry_at;
    }
    None
}

/// The payment's state before retry `k` (what q̂ scores a retry from).
fn state_before(e: &LoggedEpisode, k: usize, updated: bool) -> Option<PaymentState> {
    let earlier: Vec<EarlierAttempt> = e.attempts[..k].iter().map(EarlierAttempt::from).collect();
    let payday = if k > 1 {
        let tz = e.attempts[0].timezone;
        crate::payday::infer(e.attempts[0].country, &crate::features::evidence_with_retries(&e.evidence, tz, &earlier))
    } else {
        e.state_payday
    };
    PaymentState::with_payday(facts_of(&e.attempts[k - 1]), &earlier, updated, payday)
}

fn contribution(
    s: &dyn LoggedStrategy,
    h: &History,
    payers: &Payers,
    model: &SuccessModel,
    rules_cfg: &RulesConfig,
    window_days: i64,
    e: &LoggedEpisode,
) -> Contribution {
    let p = e.attempts;
    let failed = p[0].attempted_at;
    let window_end = failed + Duration::days(window_days);
    // Per logged retry k (1-based): ρₖ, rₖ, q̂(sₖ, aₖ), q̂(sₖ, π(sₖ)).
    let mut steps: Vec<(f64, f64, f64, f64)> = Vec::new();
    for k in 1..p.len() {
        let seen = &p[..k];
        let mut v = LoggedView { history: h, payers, seen, past: &e.past, after: seen[k - 1].attempted_at };
        let target = projected(s, &mut v, window_end, rules_cfg);
        let logged = Action { retry_at: p[k].attempted_at, channel: p[k].channel.unwrap_or(Channel::None) };
        let matched =
            target.is_some_and(|t| t.channel == logged.channel && hour_slot(failed, t.retry_at) == hour_slot(failed, logged.retry_at));
        let propensity = p[k].propensity.unwrap_or(1.0).max(1e-9);
        let rho = if matched { 1.0 / propensity } else { 0.0 };
        let r = (p[k].outcome == Outcome::Succeeded) as u8 as f64;
        // q̂: the success model's P(success) of a retry from the state before retry k.
        let state = state_before(e, k, p[k].method_updated());
        let q_hat =
            |a: Action| state.as_ref().map_or(0.0, |st| model.predict(&st.encode(&Candidate { at: a.retry_at, channel: a.channel })));
        let (q_logged, q_target) = (q_hat(logged), target.map_or(0.0, q_hat));
        steps.push((rho, r, q_logged, q_target));
        if rho == 0.0 {
            // Off the strategy's path: later retries weigh nothing in either recovery estimator.
            break;
        }
    }
    let Some(&(rho1, r1, q1, v1)) = steps.first() else {
        // No logged retry (a hard decline, or the payer left first): nothing recovered, whatever the strategy.
        return Contribution { matched: true, rho1: 1.0, ..Contribution::default() };
    };
    let mut pdis = 0.0;
    let mut w = 1.0;
    for &(rho, r, _, _) in &steps {
        w *= rho;
        if w == 0.0 {
            break;
        }
        pdis += w * r;
    }
    let mut d = 0.0;
    for &(rho, r, q_logged, q_target) in steps.iter().rev() {
        d = q_target + rho * (r + (1.0 - r) * d - q_logged);
    }
    Contribution { retried: true, matched: rho1 > 0.0, rho1, r1, dr1: v1 + rho1 * (r1 - q1), pdis, sdr: d }
}

/// Estimate every strategy on the log `h` (see the module documentation).
pub fn estimate(
    h: &History,
    model: &SuccessModel,
    strategies: &[&dyn LoggedStrategy],
    opts: &Options,
    progress: &(dyn Fn(usize) + Sync),
) -> (Coverage, Vec<OffPolicy>) {
    let payers = Payers::new(h);
    let mut coverage = Coverage::default();
    let eps = episodes(h, &payers, opts, &mut coverage);
    let rules_cfg = RulesConfig::default();
    let window_days = engine::EngineConfig::default().dunning_window_days;
    let results = strategies
        .iter()
        .enumerate()
        .map(|(i, s)| {
            progress(i);
            let c: Vec<Contribution> = eps.par_iter().map(|e| contribution(*s, h, &payers, model, &rules_cfg, window_days, e)).collect();
            summarize(s.name(), &c, opts)
        })
        .collect();
    (coverage, results)
}

/// Sums over episodes from which every estimator follows.
#[derive(Default)]
struct Sums {
    n: f64,
    retried: f64,
    matched: f64,
    matched_r: f64,
    ips: f64,
    rho: f64,
    dr: f64,
    pdis: f64,
    sdr: f64,
}

impl Sums {
    fn add(&mut self, x: &Contribution) {
        self.n += 1.0;
        self.ips += x.rho1 * x.r1;
        self.rho += x.rho1;
        self.dr += x.dr1;
        self.pdis += x.pdis;
        self.sdr += x.sdr;
        if x.retried {
            self.retried += 1.0;
            if x.matched {
                self.matched += 1.0;
                self.matched_r += x.r1;
            }
        }
    }

    /// Replay, IPS, SNIPS, DR (first retry), PDIS, sequential DR (recovery).
    /// Replay: the success rate of the matched first retries, times the share of
    /// episodes with a first retry (the others recover nothing by one).
    fn estimates(&self) -> [f64; 6] {
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        [
            div(self.matched_r, self.matched) * div(self.retried, self.n),
            div(self.ips, self.n),
            div(self.ips, self.rho),
            div(self.dr, self.n),
            div(self.pdis, self.n),
            div(self.sdr, self.n),
        ]
    }
}

fn summarize(strategy: String, c: &[Contribution], opts: &Options) -> OffPolicy {
    let n = c.len();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut boot: Vec<[f64; 6]> = Vec::with_capacity(opts.resamples);
    for _ in 0..opts.resamples {
        let mut sums = Sums::default();
        for _ in 0..n {
            sums.add(&c[rng.random_range(0..n)]);
        }
        boot.push(sums.estimates());
    }
    let mut all = Sums::default();
    c.iter().for_each(|x| all.add(x));
    let point = all.estimates();
    let est: Vec<Estimate> = (0..6).map(|j| interval(boot.iter().map(|e| e[j]).filter(|v| v.is_finite()).collect(), point[j])).collect();
    // Support among the episodes with a logged first retry.
    let (s1, s2) = c.iter().filter(|x| x.retried).fold((0.0, 0.0), |(a, b), x| (a + x.rho1, b + x.rho1 * x.rho1));
    let ess_first = if s2 > 0.0 { s1 * s1 / s2 } else { 0.0 };
    let matched_first = c.iter().filter(|x| x.retried && x.matched).count();
    let warning = (ess_first < opts.min_ess).then(|| {
        format!("little support in the log: effective sample size {ess_first:.0} of {n} episodes ({matched_first} first retries match); the IS estimates are noise and the DR ones mostly the model's own P(first retry succeeds), which understates recovery")
    });
    OffPolicy {
        strategy,
        episodes: n,
        matched_first,
        ess_first,
        first_retry_replay: est[0],
        first_retry_ips: est[1],
        first_retry_snips: est[2],
        first_retry_dr: est[3],
        recovery_pdis: est[4],
        recovery_sdr: est[5],
        warning,
    }
}
