//! World parameters with documented defaults. Every number a user may want to
//! change is here, loadable from a TOML file (`recoup simulate --world w.toml`);
//! a file only needs the fields it changes.
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

use serde::{Deserialize, Serialize};

use crate::domain::{BillingInterval, Channel};

/// Everything that shapes the simulated world, as written (a TOML file, a preset, code);
/// unchecked. [`WorldParams::check`] makes the [`WorldConfig`] a [`super::World`] takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldParams {
    /// First day of the simulated period (UTC), `YYYY-MM-DD`.
    pub start: chrono::NaiveDate,
    /// Payer mix by country.
    pub countries: Vec<CountryMix>,
    /// Subscription plans.
    pub plans: Vec<Plan>,
    /// Card networks among card payers, as (brand, weight): visa, mastercard, amex, discover.
    /// Nilson Report 2023 US purchase volume shares, rounded: Visa 55 %, Mastercard 30 %, Amex 11 %, Discover 4 %.
    pub card_brands: Vec<(crate::domain::CardBrand, f64)>,
    /// Share of card payers on debit cards (Federal Reserve Payments Study 2022: debit ≈ 60 % of card payments by count).
    pub debit_share: f64,
    /// Share of card payers on prepaid cards.
    pub prepaid_share: f64,
    /// Failure of the scheduled charge.
    pub failures: FailureConfig,
    /// Dunning window: retries stop this many days after the first failure
    /// (Stripe's default smart-retry window is up to 2 weeks–2 months; 21 days is common).
    pub dunning_window_days: i64,
    /// Monthly voluntary churn between billing cycles (SaaS/consumer subscription benchmarks: 2–5 %).
    pub monthly_churn: f64,
    /// How payers respond to time and money.
    pub behaviour: Behaviour,
    /// Channel responsiveness and effects.
    pub channels: ChannelConfig,
    /// What attempts and messages cost.
    pub costs: Costs,
    /// The policy that produced the logged history.
    pub logging: LoggingPolicy,
}

/// Share of payers in a country and its local payment habits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountryMix {
    /// ISO 3166-1 alpha-2.
    pub country: crate::domain::Country,
    /// Relative weight.
    pub weight: f64,
    /// Currency charged.
    pub currency: crate::domain::Currency,
    /// Share of payers paying by bank debit (SEPA in the euro area/Nordics, ACH in the US).
    pub debit_method_share: f64,
}

/// A subscription plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Price in minor units of the payer's currency (SEK/NOK/DKK prices are scaled ×10 / ×7).
    pub price_minor: i64,
    /// Billing interval.
    pub interval: BillingInterval,
    /// Relative weight.
    pub weight: f64,
}

/// Why scheduled charges fail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailureConfig {
    /// Probability that a recurring card charge fails (Recurly / Stripe reports: 5–15 % of recurring charges fail).
    pub card_failure_rate: f64,
    /// Probability that a bank-debit charge is returned (NACHA return rate for debits ≈ 1.5–3 %; SEPA R-transactions ≈ 1–4 %).
    pub debit_failure_rate: f64,
    /// Mix of reasons among failed card charges, (code, weight). Insufficient funds is the
    /// largest share in every public breakdown (Recurly 2023: ~45 % of soft declines; Stripe: "most common").
    pub card_decline_mix: Vec<(crate::declines::DeclineCode, f64)>,
    /// Mix of reasons among returned bank debits.
    pub debit_decline_mix: Vec<(crate::declines::DeclineCode, f64)>,
    /// Share of Mastercard insufficient-funds declines that carry an advice code 24–30
    /// (Mastercard MAC program: issuers send them on a minority of declines).
    pub mastercard_advice_share: f64,
    /// Share of failed rows that leave `decline_code` empty and give only the raw network code.
    pub raw_code_only_share: f64,
    /// Share of rows without a `timezone` (derived from the country).
    pub missing_timezone_share: f64,
}

/// Payer behaviour: the latent balance and how success follows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Mean of the payer's baseline log-odds of having the money (N(mean, sd) per payer).
    pub funds_logit_mean: f64,
    /// Spread of the baseline between payers.
    pub funds_logit_sd: f64,
    /// How strongly success follows the pay cycle for debit-card and bank-debit payers (log-odds per unit of liquidity).
    pub payday_sensitivity_debit: f64,
    /// The same for credit-card payers, whose limit is less tied to pay day.
    pub payday_sensitivity_credit: f64,
    /// Liquidity drains as (1 − share of pay period elapsed)^drain_shape.
    pub drain_shape: f64,
    /// Liquidity lost to rent and bills on days 1–5 of the month.
    pub rent_bite: f64,
    /// Local hour at which pay-day money is available (overnight batch credits).
    pub pay_credit_hour: u32,
    /// Log-odds bonus for attempts 04:00–08:59 local (after overnight batch credits).
    pub early_morning_bonus: f64,
    /// Log-odds penalty for attempts 22:00–03:59 local.
    pub night_penalty: f64,
    /// Log-odds lost per earlier retry of the same payment (issuer-soft declines decay fastest).
    pub retry_decay: f64,
    /// Baseline log-odds of approval after a do-not-honor / generic decline.
    pub issuer_soft_logit: f64,
    /// Highest approval probability after a technical decline, reached within hours.
    pub technical_max: f64,
    /// Time constant (hours) of the technical recovery.
    pub technical_hours: f64,
    /// Approval probability of a needs-update payment once the payer updated the method.
    pub after_update_success: f64,
    /// Daily hazard that a payer updates an expired/invalid card without being asked (card updater services).
    pub spontaneous_update_per_day: f64,
    /// Daily hazard that a payer cancels during dunning without being messaged.
    pub spontaneous_cancel_per_day: f64,
    /// What drives the money on the account (structure, not a parameter).
    pub funds: FundsModel,
}

/// What drives a payer's money over the month.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "model")]
pub enum FundsModel {
    /// Money arrives on pay day and drains until the next (the default world).
    #[default]
    PayCycle,
    /// Pay day does not matter: money is steady but bills on fixed days of the
    /// month take `bite` of it for the 4 days from each `days` entry.
    Bills { days: Vec<u32>, bite: f64 },
}

/// Channels: latent responsiveness, effects and fatigue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// Beta(a, b) of each payer's chance to act on a message, per channel:
    /// email open-to-action ~20 %, SMS ~30 %, push ~15 %, in-app ~25 % (dunning vendors' published engagement rates).
    pub responsiveness: Vec<(Channel, f64, f64)>,
    /// Share of payers who have the app (push and in-app reach only them).
    pub app_share: f64,
    /// Log-odds lift for funds declines when the payer acted on a message (tops up or moves money).
    pub funds_lift: f64,
    /// Log-odds lift for issuer-soft declines when the payer acted (calls the bank).
    pub issuer_lift: f64,
    /// Hours a top-up keeps helping.
    pub lift_hours: i64,
    /// Probability that a message makes the payer cancel, plus `fatigue` per earlier message.
    pub cancel_base: f64,
    /// Added cancellation probability per message already sent in this dunning episode.
    pub fatigue: f64,
    /// SMS and push feel more intrusive: their cancellation probability is multiplied by this.
    pub intrusive_factor: f64,
    /// Whether a payer who acts on a message after a needs-update decline
    /// updates the payment method (true), or only tops up funds, which does
    /// not help an expired card (false: only card updaters fix those).
    pub messages_update_cards: bool,
}

/// Costs in minor units of the payment's currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Costs {
    /// Fee per attempt (authorization / network fees: ~$0.05–0.15).
    pub attempt: f64,
    /// Cost per message, per channel (email fractions of a cent; SMS ~$0.01–0.08).
    pub message: Vec<(Channel, f64)>,
    /// Penalty per attempt that breaks a network retry rule (Visa excessive reattempt fee $0.10,
    /// Mastercard excessive attempts fee up to $0.50 per attempt).
    pub rule_violation: f64,
}

/// The default logging policy: a fixed schedule randomized with known probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingPolicy {
    /// Retry on these days after the first failure.
    pub retry_days: Vec<i64>,
    /// Each retry moves by a whole number of hours drawn uniformly from ±jitter_hours.
    pub jitter_hours: i64,
    /// Technical declines: first retry after a uniform 1..=this many hours.
    pub technical_first_retry_hours: i64,
    /// Channel sent before each retry, (channel, probability); drawn independently per retry.
    pub channel_probabilities: Vec<(Channel, f64)>,
    /// Hours between a message and the retry it announces.
    pub message_lead_hours: i64,
    /// Whether the policy retries a needs-update payment before the payer updated (and breaks that rule).
    pub retry_needs_update: NeedsUpdateRetries,
    /// Whether the log records the policy's propensities (many merchants' logs do not).
    pub log_propensities: bool,
}

/// How the logging policy treats a payment that needs a new payment method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeedsUpdateRetries {
    /// Retries only once the payer updated (the default policy).
    #[default]
    AfterUpdate,
    /// Retries on schedule whether or not the payer updated.
    Regardless,
}

impl Default for WorldParams {
    fn default() -> Self {
        use crate::domain::CardBrand::*;
        let c = |country: &str, weight: f64, currency: &str, debit: f64| CountryMix {
            country: country.parse().expect("valid literal"),
            weight,
            currency: currency.parse().expect("valid literal"),
            debit_method_share: debit,
        };
        WorldParams {
            start: chrono::NaiveDate::from_ymd_opt(2025, 1, 1).expect("valid date"),
            countries: vec![
                c("US", 0.34, "USD", 0.08),
                c("GB", 0.14, "GBP", 0.0),
                c("DE", 0.14, "EUR", 0.35),
                c("FR", 0.10, "EUR", 0.15),
                c("NL", 0.08, "EUR", 0.40),
                c("DK", 0.06, "DKK", 0.10),
                c("SE", 0.08, "SEK", 0.10),
                c("NO", 0.06, "NOK", 0.05),
            ],
            plans: vec![
                Plan { price_minor: 999, interval: BillingInterval::Month, weight: 0.45 },
                Plan { price_minor: 1999, interval: BillingInterval::Month, weight: 0.30 },
                Plan { price_minor: 4999, interval: BillingInterval::Month, weight: 0.10 },
                Plan { price_minor: 399, interval: BillingInterval::Week, weight: 0.05 },
                Plan { price_minor: 9900, interval: BillingInterval::Year, weight: 0.10 },
            ],
            card_brands: vec![(Visa, 0.55), (Mastercard, 0.30), (Amex, 0.11), (Discover, 0.04)],
            debit_share: 0.58,
            prepaid_share: 0.05,
            failures: FailureConfig::default(),
            dunning_window_days: 21,
            monthly_churn: 0.03,
            behaviour: Behaviour::default(),
            channels: ChannelConfig::default(),
            costs: Costs::default(),
            logging: LoggingPolicy::default(),
        }
    }
}

impl Default for FailureConfig {
    fn default() -> Self {
        use crate::declines::DeclineCode::*;
        FailureConfig {
            card_failure_rate: 0.09,
            debit_failure_rate: 0.04,
            card_decline_mix: vec![
                (InsufficientFunds, 0.44),
                (DoNotHonor, 0.15),
                (GenericDecline, 0.06),
                (ExpiredCard, 0.11),
                (IncorrectNumber, 0.02),
                (CardVelocityExceeded, 0.03),
                (IssuerNotAvailable, 0.04),
                (ProcessingError, 0.03),
                (TryAgainLater, 0.02),
                (LostCard, 0.02),
                (StolenCard, 0.01),
                (Fraudulent, 0.01),
                (AccountClosed, 0.02),
                (Other, 0.03),
            ],
            debit_decline_mix: vec![
                (InsufficientFunds, 0.72),
                (GenericDecline, 0.08),
                (AccountClosed, 0.08),
                (InvalidAccount, 0.04),
                (RevocationOfAuthorization, 0.05),
                (StopPaymentOrder, 0.03),
            ],
            mastercard_advice_share: 0.35,
            raw_code_only_share: 0.10,
            missing_timezone_share: 0.10,
        }
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            funds_logit_mean: -1.0,
            funds_logit_sd: 0.8,
            payday_sensitivity_debit: 4.0,
            payday_sensitivity_credit: 1.5,
            drain_shape: 1.5,
            rent_bite: 0.25,
            pay_credit_hour: 4,
            early_morning_bonus: 0.35,
            night_penalty: 0.3,
            retry_decay: 0.15,
            issuer_soft_logit: -0.7,
            technical_max: 0.88,
            technical_hours: 2.5,
            after_update_success: 0.85,
            spontaneous_update_per_day: 0.02,
            spontaneous_cancel_per_day: 0.004,
            funds: FundsModel::PayCycle,
        }
    }
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            responsiveness: vec![
                (Channel::Email, 2.0, 8.0),
                (Channel::Sms, 3.0, 7.0),
                (Channel::Push, 1.5, 8.5),
                (Channel::InApp, 2.5, 7.5),
            ],
            app_share: 0.45,
            funds_lift: 1.5,
            issuer_lift: 0.5,
            lift_hours: 72,
            cancel_base: 0.01,
            fatigue: 0.015,
            intrusive_factor: 1.5,
            messages_update_cards: true,
        }
    }
}

impl Default for Costs {
    fn default() -> Self {
        Costs {
            attempt: 8.0,
            message: vec![(Channel::None, 0.0), (Channel::Email, 0.1), (Channel::Sms, 5.0), (Channel::Push, 0.05), (Channel::InApp, 0.0)],
            rule_violation: 50.0,
        }
    }
}

impl Default for LoggingPolicy {
    fn default() -> Self {
        LoggingPolicy {
            // Eight retries, each moved ±8 h: consecutive retries come 8 h to 4½ days apart, so the
            // log shows a retry a day after a failed retry as well as several days after it
            // (a learned policy decides only where its log has evidence: `crate::support`).
            retry_days: vec![1, 2, 4, 6, 8, 11, 14, 18],
            jitter_hours: 8,
            technical_first_retry_hours: 6,
            channel_probabilities: vec![(Channel::None, 0.3), (Channel::Email, 0.55), (Channel::Sms, 0.1), (Channel::Push, 0.05)],
            message_lead_hours: 1,
            retry_needs_update: NeedsUpdateRetries::AfterUpdate,
            log_propensities: true,
        }
    }
}

/// Why a world configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The TOML file is not a valid world configuration.
    #[error("{path}: {source}")]
    Toml { path: String, source: toml::de::Error },
    /// A value is out of range.
    #[error("world config: {0}")]
    Invalid(String),
}

/// A checked world configuration (from [`WorldParams::check`]): the only form a world is built from.
pub type WorldConfig = recoup_core::checked::Checked<WorldParams>;

impl WorldParams {
    /// Read a TOML world file (fields not given keep their defaults) and check it.
    pub fn from_toml_file(path: &std::path::Path) -> Result<WorldConfig, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: p.clone(), source })?;
        let params: WorldParams = toml::from_str(&text).map_err(|source| ConfigError::Toml { path: p, source })?;
        params.check()
    }

    /// Check ranges once, before any simulation starts.
    pub fn check(self) -> Result<WorldConfig, ConfigError> {
        recoup_core::checked::Params::check(self)
    }
}

impl recoup_core::checked::Params for WorldParams {
    type Error = ConfigError;

    fn problem(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let prob = |name: &str, v: f64| -> Result<(), ConfigError> {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::Invalid(format!("{name} must be in [0, 1], got {v}")))
            }
        };
        if self.countries.is_empty() || self.countries.iter().all(|c| c.weight <= 0.0) {
            return bad("countries must have at least one positive weight".into());
        }
        if self.plans.is_empty() || self.plans.iter().any(|p| p.price_minor <= 0) {
            return bad("plans must be non-empty with positive prices".into());
        }
        for c in &self.countries {
            prob(&format!("countries[{}].debit_method_share", c.country), c.debit_method_share)?;
        }
        prob("debit_share", self.debit_share)?;
        prob("prepaid_share", self.prepaid_share)?;
        prob("failures.card_failure_rate", self.failures.card_failure_rate)?;
        prob("failures.debit_failure_rate", self.failures.debit_failure_rate)?;
        prob("failures.mastercard_advice_share", self.failures.mastercard_advice_share)?;
        prob("failures.raw_code_only_share", self.failures.raw_code_only_share)?;
        prob("failures.missing_timezone_share", self.failures.missing_timezone_share)?;
        prob("monthly_churn", self.monthly_churn)?;
        prob("behaviour.technical_max", self.behaviour.technical_max)?;
        prob("behaviour.after_update_success", self.behaviour.after_update_success)?;
        prob("channels.app_share", self.channels.app_share)?;
        if let FundsModel::Bills { days, bite } = &self.behaviour.funds {
            if days.is_empty() || days.iter().any(|d| !(1..=28).contains(d)) {
                return bad("behaviour.funds.days must be days of the month 1..=28".into());
            }
            prob("behaviour.funds.bite", *bite)?;
        }
        if self.failures.card_decline_mix.is_empty() || self.failures.debit_decline_mix.is_empty() {
            return bad("failures.*_decline_mix must not be empty".into());
        }
        if !(1..=120).contains(&self.dunning_window_days) {
            return bad(format!("dunning_window_days must be 1..=120, got {}", self.dunning_window_days));
        }
        if self.logging.retry_days.iter().any(|d| *d < 1 || *d >= self.dunning_window_days) {
            return bad("logging.retry_days must lie inside the dunning window".into());
        }
        if self.logging.jitter_hours < 0 || self.logging.jitter_hours >= 24 {
            return bad("logging.jitter_hours must be 0..=23".into());
        }
        let total: f64 = self.logging.channel_probabilities.iter().map(|(_, p)| p).sum();
        if (total - 1.0).abs() > 1e-6 {
            return bad(format!("logging.channel_probabilities must sum to 1, got {total}"));
        }
        if self.channels.responsiveness.iter().any(|(_, a, b)| *a <= 0.0 || *b <= 0.0) {
            return bad("channels.responsiveness Beta parameters must be positive".into());
        }
        Ok(())
    }
}
