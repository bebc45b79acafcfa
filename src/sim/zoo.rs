//! A zoo of simulated worlds and logging policies that differ in structure, not
//! only in parameters (pure data, no I/O). The learned policy must beat the best
//! fixed schedule in every one of them, trained on that world's own log: what
//! is tuned against one world does not transfer by itself.
//!
//! Each preset changes the default world ([`WorldConfig::default`]) in the way
//! its description says; `recoup simulate --preset NAME --print-world` shows
//! the full configuration.
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

use super::config::{FundsModel, NeedsUpdateRetries, WorldParams};
use crate::domain::{BillingInterval, Channel};

/// The presets: name and what differs.
pub const PRESETS: &[(&str, &str)] = &[
    ("default", "the default world and its randomized logging policy (retries needs-update payments only after an update, logs propensities)"),
    ("careless-log", "a log that retries needs-update payments whether or not the payer updated, at other delays, with a random message before each retry and no propensities"),
    ("fixed-log", "a log from a plain fixed schedule (days 1, 3, 5, 7, 10, 14 at ±2 h, an email before every retry): little randomization, no `none` channel"),
    ("bills", "money is driven by bills on the 1st and the 15th, not by pay day: the pay-day structure the features assume is absent"),
    ("top-ups", "acting on a message tops up funds but never updates an expired card: asks do not work, only card updaters do"),
    ("weekly", "a US-only population on weekly plans (weekly and biweekly pay schedules dominate)"),
    ("few-apps", "push and in-app messages reach 5 % of payers (few have the app); the log still sends them"),
];

/// The world parameters of preset `name` (check them to build a world), or `None` for an
/// unknown name.
pub fn preset(name: &str) -> Option<WorldParams> {
    let mut w = WorldParams::default();
    match name {
        "default" => {}
        "careless-log" => {
            w.logging.retry_needs_update = NeedsUpdateRetries::Regardless;
            w.logging.log_propensities = false;
            w.logging.retry_days = vec![2, 4, 7, 11, 16];
            w.logging.jitter_hours = 12;
            w.logging.channel_probabilities =
                vec![(Channel::None, 0.25), (Channel::Email, 0.45), (Channel::Sms, 0.2), (Channel::Push, 0.1)];
        }
        "fixed-log" => {
            w.logging.retry_days = vec![1, 3, 5, 7, 10, 14];
            w.logging.jitter_hours = 2;
            w.logging.channel_probabilities = vec![(Channel::Email, 1.0)];
        }
        "bills" => w.behaviour.funds = FundsModel::Bills { days: vec![1, 15], bite: 0.5 },
        "top-ups" => {
            w.channels.messages_update_cards = false;
            w.channels.funds_lift = 2.0;
        }
        "weekly" => {
            w.countries.retain(|c| c.country.as_str() == "US");
            for p in &mut w.plans {
                if p.interval == BillingInterval::Week {
                    p.weight = 0.6;
                }
            }
        }
        "few-apps" => w.channels.app_share = 0.05,
        _ => return None,
    }
    Some(w)
}

/// The preset names, comma-separated (for help and errors).
pub fn names() -> String {
    PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_a_valid_world_and_differs_from_the_default() {
        for (name, _) in PRESETS {
            let w = preset(name).expect("listed presets exist");
            assert_eq!(*name == "default", w == WorldParams::default(), "{name}");
            w.check().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(preset("nope").is_none());
        // Parameters out of range never become a world configuration.
        let err = WorldParams { monthly_churn: 2.0, ..WorldParams::default() }.check().expect_err("refused");
        assert!(err.to_string().contains("monthly_churn"), "{err}");
    }
}
