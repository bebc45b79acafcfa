//! `recoup decide`: the decision engine on one JSON request, for people and scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::api::{self, timestamp as ts, v1};
use crate::engine::{self, Action};

/// Decide the next retry of one failed payment from a JSON request and print the
/// decision with its reasons. The JSON has the fields of the gRPC `DecideRequest`
/// (proto/recoup/v1/recoup.proto) with RFC 3339 timestamps; see examples/decide.json.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  recoup decide examples/decide.json\n  recoup decide --json - < request.json")]
pub struct Args {
    /// Request file (JSON); `-` reads standard input.
    #[arg(value_name = "REQUEST", default_value = "examples/decide.json", env = "RECOUP_DECIDE_REQUEST")]
    pub request: PathBuf,
    /// Model registry; its CURRENT version decides.
    #[arg(long, value_name = "DIR", default_value = "models/", env = "RECOUP_DECIDE_MODELS")]
    pub models: PathBuf,
    /// Engine settings (TOML), as for `recoup serve`.
    #[arg(long, value_name = "TOML", env = "RECOUP_DECIDE_ENGINE")]
    pub engine: Option<PathBuf>,
    /// Print the decision as JSON.
    #[arg(long, env = "RECOUP_DECIDE_JSON")]
    pub json: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Req {
    payment: Payment,
    attempts: Vec<Attempt>,
    #[serde(default)]
    payment_method_updated: bool,
    #[serde(default)]
    past_payments: Vec<Vec<PastAttempt>>,
    #[serde(default)]
    asks: Vec<Ask>,
    now: Option<DateTime<Utc>>,
    #[serde(default)]
    constraints: Option<Constraints>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payment {
    payment_id: String,
    #[serde(default)]
    customer_id: String,
    amount_minor: i64,
    currency: String,
    payment_method: String,
    #[serde(default)]
    card_brand: String,
    #[serde(default)]
    card_funding: String,
    country: String,
    #[serde(default)]
    timezone: String,
    #[serde(default)]
    billing_interval: String,
    tenure_days: Option<u32>,
    #[serde(default)]
    payment_method_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attempt {
    attempted_at: DateTime<Utc>,
    #[serde(default)]
    decline_code: String,
    #[serde(default)]
    network_code: String,
    #[serde(default)]
    advice_code: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    payment_method_updated: bool,
    #[serde(default)]
    payment_method_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    sent_at: DateTime<Utc>,
    channel: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PastAttempt {
    attempted_at: DateTime<Utc>,
    outcome: String,
    #[serde(default)]
    decline_code: String,
    #[serde(default)]
    payment_method_id: String,
    attempt_number: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Constraints {
    earliest: Option<DateTime<Utc>>,
    latest: Option<DateTime<Utc>>,
    quiet_start_hour: Option<u32>,
    quiet_end_hour: Option<u32>,
    #[serde(default)]
    skip_weekends: bool,
    #[serde(default)]
    skip_holidays: bool,
    max_retries: Option<u32>,
    #[serde(default)]
    allowed_channels: Vec<String>,
}

fn to_proto(r: Req) -> v1::DecideRequest {
    let p = r.payment;
    v1::DecideRequest {
        payment: Some(v1::Payment {
            payment_id: p.payment_id,
            customer_id: p.customer_id,
            amount_minor: p.amount_minor,
            currency: p.currency,
            payment_method: p.payment_method,
            card_brand: p.card_brand,
            card_funding: p.card_funding,
            country: p.country,
            timezone: p.timezone,
            billing_interval: p.billing_interval,
            tenure_days: p.tenure_days,
            payment_method_id: p.payment_method_id,
        }),
        attempts: r
            .attempts
            .into_iter()
            .map(|a| v1::Attempt {
                attempted_at: Some(ts(a.attempted_at)),
                decline_code: a.decline_code,
                network_code: a.network_code,
                advice_code: a.advice_code,
                channel: a.channel,
                payment_method_updated: a.payment_method_updated,
                payment_method_id: a.payment_method_id,
            })
            .collect(),
        payment_method_updated: r.payment_method_updated,
        past_payments: r
            .past_payments
            .into_iter()
            .map(|p| v1::PastPayment {
                attempts: p
                    .into_iter()
                    .map(|a| v1::PastAttempt {
                        attempted_at: Some(ts(a.attempted_at)),
                        outcome: a.outcome,
                        decline_code: a.decline_code,
                        payment_method_id: a.payment_method_id,
                        attempt_number: a.attempt_number,
                    })
                    .collect(),
            })
            .collect(),
        asks: r.asks.into_iter().map(|a| v1::Ask { sent_at: Some(ts(a.sent_at)), channel: a.channel }).collect(),
        now: r.now.map(ts),
        constraints: r.constraints.map(|c| v1::Constraints {
            earliest: c.earliest.map(ts),
            latest: c.latest.map(ts),
            quiet_start_hour: c.quiet_start_hour,
            quiet_end_hour: c.quiet_end_hour,
            skip_weekends: c.skip_weekends,
            skip_holidays: c.skip_holidays,
            max_retries: c.max_retries,
            allowed_channels: c.allowed_channels,
        }),
    }
}

/// Run `recoup decide`.
pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    let text = if a.request.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the request from standard input")?
    } else {
        std::fs::read_to_string(&a.request).with_context(|| format!("reading {}", a.request.display()))?
    };
    let req: Req = serde_json::from_str(&text).with_context(|| format!("parsing the request {}", a.request.display()))?;
    let engine_cfg = super::serve::engine_config(a.engine.as_ref())?;
    let (version, model) =
        crate::registry::load_current(&a.models).with_context(|| format!("loading the current model from {}", a.models.display()))?;
    let er = api::to_engine(&to_proto(req), Utc::now()).map_err(|e| anyhow::anyhow!("invalid request: {e}"))?;
    let d = engine::decide(&model, &engine_cfg, &er, api::request_randomness(&er)).map_err(|e| anyhow::anyhow!("invalid request: {e}"))?;
    if a.json {
        let mut v = serde_json::to_value(&d)?;
        v["model_version"] = serde_json::Value::String(version);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let tz = er.facts.timezone;
    match (&d.action, &d.chosen) {
        (Action::Retry, Some(s)) => {
            println!("RETRY at {} ({} local)", s.retry_at.to_rfc3339(), s.retry_at.with_timezone(&tz).format("%a %Y-%m-%d %H:%M %Z"));
            match s.send_at {
                Some(t) => println!("  send {} at {}", <&str>::from(s.channel), t.to_rfc3339()),
                None => println!("  no message"),
            }
            println!(
                "  P(success) {:.3}, P(recovery over the window) {:.3}, expected value {:.1} minor units, propensity {:.3}",
                s.p_success, d.p_recovery, s.expected_value, d.propensity
            );
        }
        _ => {
            let next = match d.next {
                crate::engine::NextStep::Stop => "stop for good",
                crate::engine::NextStep::AskForPaymentMethod => "ask for a new payment method now",
                crate::engine::NextStep::WaitForUpdate => "wait for the payer to update the payment method",
                crate::engine::NextStep::Retry => "retry",
            };
            println!("DO_NOT_RETRY: {next}");
            match (&d.ask, d.ask_channel) {
                (Some(a), Some(c)) => {
                    println!("  ask for a new payment method by {} at {}", <&str>::from(c), a.send_at.to_rfc3339());
                    println!(
                        "  P(update) {:.3}, then P(success) {:.3}; P(payer cancels) {:.3}; P(recovery over the window) {:.3}; value {:.1} vs {:.1} without asking; {} asks planned",
                        a.p_update, a.p_success_after, a.attrition, d.p_recovery, a.value, a.value_without_asking, a.planned_asks
                    );
                }
                (Some(a), None) if a.channel != crate::domain::Channel::None => {
                    println!(
                        "  next ask by {} at {} (not yet: decide again then, or when the method is updated)",
                        <&str>::from(a.channel),
                        a.send_at.to_rfc3339()
                    )
                }
                (Some(a), None) => {
                    println!("  do not ask: no ask is worth it (waiting for the payer is worth {:.1})", a.value_without_asking)
                }
                (None, Some(c)) => println!("  ask for a new payment method by {}", <&str>::from(c)),
                (None, None) => {}
            }
        }
    }
    println!("  pay schedule: {} (confidence {:.0} %)", d.pay_schedule, d.pay_schedule_confidence * 100.0);
    println!("reasons:");
    for r in &d.reasons {
        println!("  {:<32} {}", r.code, r.detail);
    }
    if !d.terms.is_empty() {
        println!("largest terms of the chosen slot's logit:");
        for t in &d.terms {
            println!("  {:+.3}  {}", t.weight, t.feature);
        }
    }
    if !d.alternatives.is_empty() {
        println!("alternatives:");
        for s in &d.alternatives {
            println!(
                "  {}  {:<7} P {:.3}  value {:.1}",
                s.retry_at.with_timezone(&tz).format("%a %m-%d %H:%M"),
                <&str>::from(s.channel),
                s.p_success,
                s.value
            );
        }
    }
    println!("model {version}; {} candidates scored, {} removed by rules or constraints", d.candidates_scored, d.candidates_removed);
    Ok(ExitCode::SUCCESS)
}
