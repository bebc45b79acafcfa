//! Predicted recovery of open payments, for finance's MRR forecast.
//!
//! For a payment still open at `as_of` (failed, not recovered, inside its
//! dunning window), `forecast` asks the engine for its next retry (no
//! exploration) and takes the engine's own look-ahead over the rest of the
//! window: that retry, then, each time the last one fails, the best-valued
//! slot at least a day later, while one is worth its cost:
//! `P(recovery) = 1 − Πₖ (1 − pₖ)`, one decision per payment.
//!
//! Payments the engine will not retry until the payer updates the payment
//! method (expired card, wrong number…) are recovered only if the payer does
//! update: the success model cannot say how likely that is, so [`UpdateRates`]
//! measures it in the history (the share of such payments whose payer updated
//! within the window, given the time already passed), and the engine then
//! continues from the update with the updated method.
//!
//! That path treats the retries' outcomes as independent given their
//! features (and scores later retries with today's attempt count); real
//! failures are correlated (a payer without funds tends to stay without), so
//! the raw figure over-predicts. [`Calibration`] corrects that the way a
//! forecaster backtests: the same forecast is made at the same moment of
//! earlier months for the payments open then (their windows have closed by
//! the cut-off), and a logistic map per decline class is fitted from the raw
//! probability and the days already gone to what was realised. The export
//! reports both figures.
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::attempt::Attempt;
use crate::declines::{DeclineClass, DeclineCode};
use crate::domain::{Channel, CustomerIx, Outcome};
use crate::engine::{self, Action, EarlierAttempt, EngineConfig, InvalidField, PastPayment, Request};
use crate::history::History;
use crate::model::SuccessModel;
use crate::train::facts_of;
use crate::train::FitError;

/// What the serving policy does next with an open payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Next {
    /// Retry at `retry_at` (with a message first when `channel` is not `none`).
    Retry,
    /// Ask the payer for a new payment method through `channel`; retry once updated.
    AskForUpdate,
    /// Nothing more: hard decline, spent retries, or no allowed slot left.
    Stop,
}

/// One open payment's forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    pub next: Next,
    /// The next retry (for `Retry`).
    pub retry_at: Option<DateTime<Utc>>,
    /// The message before the next retry, or the channel to ask through.
    pub channel: Option<Channel>,
    /// When to send that message.
    pub send_at: Option<DateTime<Utc>>,
    /// P(the next retry succeeds).
    pub p_next_success: f64,
    /// P(the payment is recovered over the rest of its window), calibrated on the history.
    pub p_recovery: f64,
    /// The same from the model's look-ahead alone, before calibration.
    pub p_recovery_model: f64,
    /// Retries the policy would make if every one of them failed.
    pub retries_if_all_fail: u32,
    /// The engine's main reason for the next step (`best_expected_value`, `hard_decline`, `rule:…`).
    pub reason: String,
}

impl Forecast {
    /// No next step: nothing to retry or ask, no recovery expected; `reason` says why.
    pub fn stop(reason: String) -> Forecast {
        Forecast {
            next: Next::Stop,
            retry_at: None,
            channel: None,
            send_at: None,
            p_next_success: 0.0,
            p_recovery: 0.0,
            p_recovery_model: 0.0,
            retries_if_all_fail: 0,
            reason,
        }
    }
}

/// How often payers whose payment needs a new payment method provide one,
/// measured in a history: for each such payment (the first needs-update
/// decline of a payment whose window closed before the cut-off), the days
/// from that decline to the payer's update, or none.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateRates {
    /// Days from the decline to the update, sorted, for the payments that were updated.
    delays: Vec<f64>,
    /// Payments counted (updated or not).
    pub payments: usize,
}

impl UpdateRates {
    /// Measure in `h`, from payments whose window (`window_days` after their
    /// first attempt) ended at or before `cutoff`, so their outcome is known.
    pub fn from_history(h: &History, cutoff: DateTime<Utc>, window_days: i64) -> UpdateRates {
        let mut out = UpdateRates::default();
        for p in h.payments() {
            if p[0].attempted_at + Duration::days(window_days) > cutoff {
                continue;
            }
            let Some(k) = p.iter().position(|a| a.decline.is_some_and(|d| d.class() == DeclineClass::NeedsUpdate)) else { continue };
            out.payments += 1;
            if let Some(u) = p[k + 1..].iter().find(|a| a.method_updated()) {
                out.delays.push((u.attempted_at - p[k].attempted_at).num_minutes() as f64 / 1440.0);
            }
        }
        out.delays.sort_by(f64::total_cmp);
        out
    }

    /// Share of all counted payments that were updated.
    pub fn overall(&self) -> f64 {
        if self.payments == 0 {
            0.0
        } else {
            self.delays.len() as f64 / self.payments as f64
        }
    }

    /// P(the payer updates later | not updated `elapsed_days` after the decline),
    /// and the median delay (days from the decline) of those later updates.
    /// `None` when the history has no such payment.
    pub fn after(&self, elapsed_days: f64) -> Option<(f64, f64)> {
        let done = self.delays.partition_point(|d| *d <= elapsed_days);
        let later = &self.delays[done..];
        let at_risk = self.payments - done;
        if at_risk == 0 || later.is_empty() {
            return (self.payments > 0).then_some((0.0, elapsed_days));
        }
        Some((later.len() as f64 / at_risk as f64, later[later.len() / 2]))
    }
}

/// The serving policy's uncalibrated forecast for `req` (see the module
/// documentation), with `cfg` as [`Forecaster`] keeps it: no exploration, so
/// the forecast follows the best slot.
fn forecast(model: &SuccessModel, cfg: &EngineConfig, req: &Request, updates: &UpdateRates) -> Result<Forecast, InvalidField> {
    let d = engine::decide(model, cfg, req, (1.0, 0.0))?;
    let reason = main_reason(&d, d.action == Action::Retry);
    if let Some(s) = d.chosen.as_ref().filter(|_| d.action == Action::Retry) {
        return Ok(Forecast {
            next: Next::Retry,
            retry_at: Some(s.retry_at),
            channel: Some(s.channel),
            send_at: s.send_at,
            p_next_success: s.p_success,
            p_recovery: d.p_recovery,
            p_recovery_model: d.p_recovery,
            retries_if_all_fail: d.planned_retries,
            reason,
        });
    }
    let stop = Forecast::stop(reason);
    // Not retrying. A payment waiting for a new payment method is recovered if
    // the payer updates it: at the rate measured in history, when the payers who
    // did so updated, and then as the engine retries an updated method.
    let last = req.attempts.last().expect("validated");
    let hard = req.attempts.iter().any(|a| a.decline.class() == DeclineClass::Hard);
    // Asking now, or at the plan's later opportunity (a wait until then).
    let planned = d.ask_channel.or_else(|| d.ask.as_ref().map(|a| a.channel));
    let Some(ask) = planned
        .filter(|c| *c != Channel::None && last.decline.class() == DeclineClass::NeedsUpdate && !hard && !req.payment_method_updated)
    else {
        return Ok(stop);
    };
    let failed_at = req.attempts.iter().find(|a| a.decline.class() == DeclineClass::NeedsUpdate).map_or(last.at, |a| a.at);
    let mut p_recovery = 0.0;
    if let Some((p_update, at_days)) = updates.after((req.now - failed_at).num_minutes() as f64 / 1440.0) {
        let at = (failed_at + Duration::minutes((at_days * 1440.0) as i64)).max(req.now);
        if p_update > 0.0 && at < req.attempts[0].at + Duration::days(cfg.dunning_window_days) {
            let after = Request { now: at, payment_method_updated: true, ..req.clone() };
            let u = engine::decide(model, cfg, &after, (1.0, 0.0))?;
            p_recovery = p_update * u.p_recovery;
        }
    }
    // With a model that values asks, its plan says when to ask and what it expects.
    let (send_at, p_recovery_model) = d.ask.as_ref().map_or((req.now, p_recovery), |a| (a.send_at, d.p_recovery));
    Ok(Forecast {
        next: Next::AskForUpdate,
        channel: Some(ask),
        send_at: Some(send_at),
        p_recovery,
        p_recovery_model,
        reason: "ask_for_new_payment_method".into(),
        ..stop
    })
}

/// The reason code that explains a decision in one word: the verdict when not retrying.
fn main_reason(d: &engine::Decision, retrying: bool) -> String {
    const VERDICTS: [&str; 4] = ["hard_decline", "no_allowed_slot", "not_worth_retrying", "constraint:max_retries"];
    let pick = if retrying {
        d.reasons.iter().find(|r| r.code == "best_expected_value")
    } else {
        d.reasons.iter().find(|r| VERDICTS.contains(&r.code.as_str())).or_else(|| d.reasons.iter().find(|r| r.code.starts_with("rule:")))
    };
    pick.or(d.reasons.first()).map(|r| r.code.clone()).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Open payments in a history.

/// A payment open at the cut-off: its attempts up to then (all failed).
#[derive(Debug, Clone, Copy)]
pub struct Open<'h> {
    pub attempts: &'h [Attempt],
}

impl Open<'_> {
    pub fn first(&self) -> &Attempt {
        &self.attempts[0]
    }
    pub fn last(&self) -> &Attempt {
        self.attempts.last().expect("an open payment has an attempt")
    }
}

/// The payments of `h` open at `as_of`: at least one attempt at or before it,
/// none of those succeeded, and `as_of` is before the end of the window
/// (`window_days` after the first attempt). In history order.
pub fn open_payments(h: &History, as_of: DateTime<Utc>, window_days: i64) -> Vec<Open<'_>> {
    h.payments().filter_map(|p| open_part(p, as_of, window_days)).map(|attempts| Open { attempts }).collect()
}

/// The attempts of payment `p` known at `as_of`, when it is open then.
fn open_part(p: &[Attempt], as_of: DateTime<Utc>, window_days: i64) -> Option<&[Attempt]> {
    let seen = &p[..p.partition_point(|a| a.attempted_at <= as_of)];
    let open =
        !seen.is_empty() && seen.iter().all(|a| a.outcome == Outcome::Failed) && as_of < p[0].attempted_at + Duration::days(window_days);
    open.then_some(seen)
}

/// Every payer's payments (first attempts' order), for pay-day evidence.
pub struct Payers<'h> {
    by_customer: std::collections::HashMap<CustomerIx, Vec<&'h [Attempt]>>,
}

impl<'h> Payers<'h> {
    pub fn new(h: &'h History) -> Payers<'h> {
        let mut by_customer: std::collections::HashMap<CustomerIx, Vec<&'h [Attempt]>> = std::collections::HashMap::new();
        for p in h.payments() {
            by_customer.entry(p[0].customer).or_default().push(p);
        }
        for ps in by_customer.values_mut() {
            ps.sort_by_key(|p| p[0].attempted_at);
        }
        Payers { by_customer }
    }

    /// The payer's payments that started before `p` did, cut to what was known
    /// then (as training sees a payer's history: evidence strictly before the payment).
    pub fn earlier(&self, p: &Open) -> Vec<PastPayment> {
        let start = p.first().attempted_at;
        self.by_customer
            .get(&p.first().customer)
            .into_iter()
            .flatten()
            .take_while(|q| q[0].attempted_at < start)
            .map(|q| q.iter().take_while(|a| a.attempted_at < start).map(|a| (a.attempted_at, a.decline)).collect())
            .collect()
    }
}

/// The engine request for an open payment at `as_of`, as the serving path would receive it.
pub fn request(h: &History, payers: &Payers, p: &Open, as_of: DateTime<Utc>) -> Request {
    let attempts = p
        .attempts
        .iter()
        .map(|a| EarlierAttempt {
            at: a.attempted_at,
            decline: a.decline.unwrap_or(DeclineCode::Other),
            network_code: a.network_code,
            advice_code: a.advice_code,
            channel: a.channel,
            payment_method_updated: a.method_updated(),
            card: a.card,
        })
        .collect();
    Request {
        asks: Vec::new(),
        payment_id: h.payment_id(p.first()).to_string(),
        // The loaded history has a zone for every payer (the country's when its column was empty).
        timezone_assumed: false,
        facts: facts_of(p.last()),
        attempts,
        // History records an update on the attempt after it: one since the last attempt is not known yet.
        payment_method_updated: false,
        past_payments: payers.earlier(p),
        card: p.last().card,
        card_attempts: Vec::new(),
        now: as_of,
        constraints: engine::Constraints::default(),
    }
}

// ---------------------------------------------------------------------------
// Calibration on the history.

/// A logistic map per decline class (of the last attempt) from the look-ahead's
/// raw P(recovery) and the days already gone since the first failure (in
/// buckets: what is left of a schedule changes by steps) to the realised
/// rate: `σ(a · logit(p) + by_days[bucket] + b)`; raw forecasts of exactly 0
/// get the class's realised rate at 0.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub classes: Vec<ClassMap>,
}

/// One decline class's calibration map.
#[derive(Debug, Clone, Serialize)]
pub struct ClassMap {
    pub class: DeclineClass,
    /// Weight of logit(raw p), offsets per bucket of days gone (the first is 0), intercept.
    pub a: f64,
    pub by_days: Vec<f64>,
    pub b: f64,
    /// Realised rate of the forecasts that were exactly 0.
    pub rate_at_zero: f64,
    /// Forecasts it was fitted on, and their realised recovery rate.
    pub forecasts: usize,
    pub realised: f64,
}

/// One calibration point: a forecast of a closed payment and what happened.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub class: DeclineClass,
    pub raw: f64,
    /// Days since the first failure at the forecast.
    pub elapsed_days: f64,
    pub recovered: bool,
}

/// Fewest forecasts a class needs for a map of its own (else: all classes pooled).
const MIN_CALIBRATION: usize = 200;

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

impl Calibration {
    /// Apply to a raw P(recovery) of a payment whose last decline is of `class`, `elapsed_days` after its first failure.
    pub fn apply(&self, class: DeclineClass, raw: f64, elapsed_days: f64) -> f64 {
        match self.classes.iter().find(|c| c.class == class) {
            Some(m) if raw > 0.0 => crate::model::sigmoid(m.a * logit(raw) + m.by_days[day_bucket(elapsed_days)] + m.b),
            Some(m) => m.rate_at_zero,
            None => raw,
        }
    }

    /// Fit on `points`.
    pub fn fit(points: &[Point]) -> Result<Calibration, FitError> {
        let pooled = Self::fit_one(points)?;
        let mut classes = Vec::new();
        for class in <DeclineClass as strum::VariantArray>::VARIANTS {
            let mine: Vec<Point> = points.iter().filter(|p| p.class == *class).copied().collect();
            if mine.is_empty() {
                continue;
            }
            let rate = |ps: &mut dyn Iterator<Item = &Point>| {
                let (n, k) = ps.fold((0usize, 0usize), |(n, k), p| (n + 1, k + p.recovered as usize));
                if n == 0 {
                    0.0
                } else {
                    k as f64 / n as f64
                }
            };
            let (a, by_days, b) = if mine.len() >= MIN_CALIBRATION { Self::fit_one(&mine)? } else { pooled.clone() };
            classes.push(ClassMap {
                class: *class,
                a,
                by_days,
                b,
                rate_at_zero: rate(&mut mine.iter().filter(|p| p.raw <= 0.0)),
                forecasts: mine.len(),
                realised: rate(&mut mine.iter()),
            });
        }
        Ok(Calibration { classes })
    }

    fn fit_one(points: &[Point]) -> Result<(f64, Vec<f64>, f64), FitError> {
        use linfa::prelude::*;
        use linfa_logistic::LogisticRegression;
        let fit: Vec<&Point> = points.iter().filter(|p| p.raw > 0.0).collect();
        if fit.len() < 10 || fit.iter().all(|p| p.recovered) || fit.iter().all(|p| !p.recovered) {
            return Ok((1.0, vec![0.0; DAY_BUCKETS.len()], 0.0));
        }
        // Columns: logit(raw p), then one indicator per day bucket after the first.
        let x = ndarray::Array2::from_shape_fn((fit.len(), DAY_BUCKETS.len()), |(i, j)| match j {
            0 => logit(fit[i].raw),
            j => (day_bucket(fit[i].elapsed_days) == j) as u8 as f64,
        });
        let y = ndarray::Array1::from_iter(fit.iter().map(|p| p.recovered as usize));
        let m = LogisticRegression::default()
            .alpha(1e-3)
            .max_iterations(300)
            .fit(&Dataset::new(x, y))
            .map_err(|e| FitError::Optimizer(format!("forecast calibration: {e}")))?;
        // linfa orders the two classes itself: make the probability the one of recovery (1).
        let sign = if m.labels().pos.class == 1 { 1.0 } else { -1.0 };
        let w: Vec<f64> = m.params().iter().map(|v| sign * v).collect();
        let by_days = std::iter::once(0.0).chain(w[1..].iter().copied()).collect();
        Ok((w[0], by_days, sign * m.intercept()))
    }
}

/// Everything a forecast needs: the model and engine, the update rates and the calibration.
pub struct Forecaster {
    pub model: SuccessModel,
    pub cfg: EngineConfig,
    pub updates: UpdateRates,
    pub calibration: Calibration,
}

/// Months back at most that the calibration backtests the forecast.
const CALIBRATION_MONTHS: u32 = 12;

/// Lower edges (days since the first failure) of the calibration's day buckets.
const DAY_BUCKETS: [f64; 6] = [0.0, 1.0, 3.0, 5.0, 8.0, 14.0];

fn day_bucket(days: f64) -> usize {
    DAY_BUCKETS.partition_point(|&edge| edge <= days).saturating_sub(1)
}

fn days_since(first: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    ((now - first).num_minutes() as f64 / 1440.0).max(0.0)
}

impl Forecaster {
    /// Measure the update rates and fit the calibration on the payments of `h`
    /// whose window closed by `as_of`: the forecast is backtested at the same
    /// moment of earlier months (`as_of` − 1, 2, … months, while the history
    /// reaches back and fewer than `max_points` forecasts are made), so the
    /// calibration sees open payments where the export will (the same day of
    /// the month, pay days and hour), with what then happened to them.
    pub fn fit(
        h: &History,
        payers: &Payers,
        model: SuccessModel,
        cfg: EngineConfig,
        as_of: DateTime<Utc>,
        max_points: usize,
    ) -> Result<Forecaster, FitError> {
        use rayon::prelude::*;
        // The forecast follows the best slot: no exploration, no alternatives to report.
        // Exploration off and one slot: always valid on top of a checked config.
        let cfg = crate::engine::EngineParams { exploration: 0.0, top_k: 1, ..cfg.params() }.check().unwrap_or(cfg);
        let updates = UpdateRates::from_history(h, as_of, cfg.dunning_window_days);
        let start = h.attempts.iter().map(|a| a.attempted_at).min();
        let mut points: Vec<Point> = Vec::new();
        for back in 1..=CALIBRATION_MONTHS {
            let Some(cut) = as_of.checked_sub_months(chrono::Months::new(back)) else { break };
            if start.is_none_or(|s| cut < s) || points.len() >= max_points {
                break;
            }
            // Each payment open at the cut-off, with all of it: what happened after.
            let open: Vec<(&[Attempt], Open)> =
                h.payments().filter_map(|p| open_part(p, cut, cfg.dunning_window_days).map(|attempts| (p, Open { attempts }))).collect();
            points.par_extend(open.par_iter().filter_map(|(payment, p)| {
                let req = request(h, payers, p, cut);
                let f = forecast(&model, &cfg, &req, &updates).ok()?;
                let class = p.last().decline.unwrap_or(DeclineCode::Other).class();
                let recovered = payment.last().is_some_and(|a| a.outcome == Outcome::Succeeded);
                Some(Point { class, raw: f.p_recovery_model, elapsed_days: days_since(p.first().attempted_at, cut), recovered })
            }));
        }
        points.truncate(max_points);
        let calibration = Calibration::fit(&points)?;
        Ok(Forecaster { model, cfg, updates, calibration })
    }

    /// The calibrated forecast of one open payment.
    pub fn forecast(&self, req: &Request) -> Result<Forecast, InvalidField> {
        let mut f = forecast(&self.model, &self.cfg, req, &self.updates)?;
        let Some(last) = req.attempts.last() else { return Ok(f) };
        // A stop is a stop: nothing recoup schedules or asks for can recover it, so it
        // forecasts 0 (the reason says why), not the calibration's rate at 0.
        f.p_recovery = match f.next {
            Next::Stop => 0.0,
            _ => self.calibration.apply(last.decline.class(), f.p_recovery_model, days_since(req.attempts[0].at, req.now)).clamp(0.0, 1.0),
        };
        f.p_recovery_model = f.p_recovery_model.clamp(0.0, 1.0);
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_rate_is_conditional_on_the_days_already_gone() {
        // Five needs-update payments; three payers updated, after 1, 2 and 5 days.
        let r = UpdateRates { delays: vec![1.0, 2.0, 5.0], payments: 5 };
        assert_eq!(r.overall(), 0.6);
        assert_eq!(r.after(0.0), Some((0.6, 2.0)));
        // A day and a half on, one payer has updated: 2 of the 4 left will, the later one's median at day 5.
        assert_eq!(r.after(1.5), Some((0.5, 5.0)));
        assert_eq!(r.after(6.0), Some((0.0, 6.0)));
        assert_eq!(UpdateRates::default().after(0.0), None);
    }

    #[test]
    fn calibration_maps_by_class_and_days_gone() {
        let m = ClassMap {
            class: DeclineClass::SoftFunds,
            a: 1.0,
            by_days: vec![0.0, 0.0, 0.0, 0.0, -1.0, -2.0],
            b: 0.0,
            rate_at_zero: 0.1,
            forecasts: 10,
            realised: 0.5,
        };
        let c = Calibration { classes: vec![m] };
        // a = 1, no offset: the identity in the first days.
        assert!((c.apply(DeclineClass::SoftFunds, 0.3, 0.5) - 0.3).abs() < 1e-9);
        // Day 9 (bucket 8–14): logit − 1.
        assert!((c.apply(DeclineClass::SoftFunds, 0.5, 9.0) - crate::model::sigmoid(-1.0)).abs() < 1e-9);
        assert!((c.apply(DeclineClass::SoftFunds, 0.5, 20.0) - crate::model::sigmoid(-2.0)).abs() < 1e-9);
        // A raw 0 gets the class's realised rate at 0; a class without a map is left as it is.
        assert_eq!(c.apply(DeclineClass::SoftFunds, 0.0, 3.0), 0.1);
        assert_eq!(c.apply(DeclineClass::Technical, 0.42, 3.0), 0.42);
    }
}
