//! The engine's settings: economics (costs, discount), the grid's horizon, quiet
//! hours, exploration and the two pessimism knobs. linfa's pattern: what a caller
//! writes is [`EngineParams`]; [`EngineParams::check`] turns it into an
//! [`EngineConfig`], the only form the engine accepts, so no decision runs with a
//! setting out of range.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use serde::{Deserialize, Serialize};

use crate::checked::{Checked, Params};
use crate::domain::Channel;
use crate::rules::RulesConfig;

/// Economics and behaviour of the engine, as written (a TOML file, code); unchecked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineParams {
    /// Hours the candidate grid covers from the first allowed time.
    pub horizon_hours: i64,
    /// Local hours `[start, end)` in which no message or ask is sent when the
    /// request gives no quiet hours of its own (retries without a message are
    /// not affected); `[0, 0]` (or `None`): messages at any hour.
    pub message_quiet_hours: Option<(u32, u32)>,
    /// Standard deviations of the time terms' uncertainty (the weights' posterior
    /// variances; for trees, their leaves' bootstrap spread) a candidate's logit is
    /// valued below its estimate (a lower confidence bound; 0: valued at the estimate).
    pub support_pessimism: f64,
    /// Days after the original failure that dunning may last.
    pub dunning_window_days: i64,
    /// Fee per attempt, in minor units of the payment's currency.
    pub attempt_cost_minor: f64,
    /// Cost per message, per channel, in minor units.
    pub message_cost_minor: Vec<(Channel, f64)>,
    /// Value lost per day of delay (share of the amount: money later is worth less, and the payer may churn).
    pub daily_discount: f64,
    /// Hours between sending the message and the retry.
    pub message_lead_hours: i64,
    /// Chance of exploring a near-best alternative instead of the best.
    pub exploration: f64,
    /// Alternatives reported (and explored among).
    pub top_k: usize,
    /// Hours between two asks for a new payment method (at most one a day by default).
    pub ask_spacing_hours: i64,
    /// Standard deviations by which a channel's estimated lift over no message is
    /// discounted before it is valued (never below no lift). Picking the best of
    /// several noisy lifts favours the one overestimated most; a channel the
    /// history rarely or never shows has a wide lift and is not trusted. 0: the
    /// estimates as they are.
    pub channel_pessimism: f64,
    /// Network rule settings.
    pub rules: RulesConfig,
}

impl Default for EngineParams {
    fn default() -> Self {
        EngineParams {
            horizon_hours: 14 * 24,
            support_pessimism: 1.0,
            message_quiet_hours: Some((21, 8)),
            dunning_window_days: 21,
            attempt_cost_minor: 8.0,
            message_cost_minor: vec![
                (Channel::None, 0.0),
                (Channel::Email, 0.1),
                (Channel::Sms, 5.0),
                (Channel::Push, 0.05),
                (Channel::InApp, 0.0),
            ],
            daily_discount: 0.003,
            message_lead_hours: 1,
            exploration: 0.05,
            top_k: 5,
            ask_spacing_hours: 24,
            channel_pessimism: 2.0,
            rules: RulesConfig::default(),
        }
    }
}

/// A setting no decision can be made with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct ConfigError {
    pub field: &'static str,
    pub why: String,
}

/// Checked engine settings (from [`EngineParams::check`]): the only form the engine takes.
pub type EngineConfig = Checked<EngineParams>;

impl Params for EngineParams {
    type Error = ConfigError;

    fn problem(&self) -> Result<(), ConfigError> {
        self.first_problem().map_or(Ok(()), |(field, why)| Err(ConfigError { field, why }))
    }
}

impl EngineParams {
    /// Refuse settings no decision can be made with, naming the field.
    pub fn check(self) -> Result<EngineConfig, ConfigError> {
        Params::check(self)
    }

    fn first_problem(&self) -> Option<(&'static str, String)> {
        let bad = |field: &'static str, why: &str| Some((field, why.to_string()));
        // Upper bounds keep every time the engine adds inside chrono's range.
        if !(1..=24 * 366).contains(&self.horizon_hours) {
            return bad("horizon_hours", "must be 1..=8784 (a year)");
        }
        if !(1..=366).contains(&self.dunning_window_days) {
            return bad("dunning_window_days", "must be 1..=366");
        }
        if self.message_lead_hours > 24 * 7
            || self.ask_spacing_hours > 24 * 90
            || self.rules.min_spacing_minutes.unsigned_abs() > 60 * 24 * 90
        {
            return bad("message_lead_hours / ask_spacing_hours / rules.min_spacing_minutes", "must be at most a week / 90 days / 90 days");
        }
        if !(self.attempt_cost_minor >= 0.0 && self.attempt_cost_minor.is_finite()) {
            return bad("attempt_cost_minor", "must be a non-negative number");
        }
        if let Some((c, _)) = self.message_cost_minor.iter().find(|(_, v)| !(*v >= 0.0 && v.is_finite())) {
            return Some(("message_cost_minor", format!("{}'s cost must be a non-negative number", <&str>::from(*c))));
        }
        if !(0.0..1.0).contains(&self.daily_discount) {
            return bad("daily_discount", "must be in [0, 1)");
        }
        if self.message_lead_hours < 0 {
            return bad("message_lead_hours", "must not be negative");
        }
        if !(0.0..=1.0).contains(&self.exploration) {
            return bad("exploration", "must be in [0, 1]");
        }
        if self.ask_spacing_hours < 1 {
            return bad("ask_spacing_hours", "must be at least 1");
        }
        if let Some((qs, qe)) = self.message_quiet_hours {
            if qs > 23 || qe > 23 {
                return bad("message_quiet_hours", "hours must be 0..=23");
            }
        }
        if !(self.support_pessimism >= 0.0 && self.support_pessimism.is_finite()) {
            return bad("support_pessimism", "must be a non-negative number of standard deviations (0: candidates valued at the estimate)");
        }
        if !(self.channel_pessimism >= 0.0 && self.channel_pessimism.is_finite()) {
            return bad("channel_pessimism", "must be a non-negative number of standard deviations (0: lifts as estimated)");
        }
        None
    }

    pub fn message_cost(&self, c: Channel) -> f64 {
        self.message_cost_minor.iter().find(|(k, _)| *k == c).map_or(0.0, |(_, v)| *v)
    }
}
