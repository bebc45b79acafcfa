//! `recoup decide`: the decision engine on one JSON request, for people and scripts.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;

use crate::api::{self, v1};
use crate::engine::{self, Action};

/// Decide the next retry of one failed payment from a JSON request and print the
/// decision with its reasons. The JSON has the fields of the gRPC `DecideRequest`
/// (proto/recoup/v1/recoup.proto) with RFC 3339 timestamps: build.rs derives its JSON from the
/// proto, so the two cannot drift. See examples/decide.json.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  recoup decide examples/decide.json\n  recoup decide --json - < request.json")]
pub struct Args {
    /// Request file (JSON); `-` reads standard input.
    #[arg(value_name = "REQUEST", default_value = "examples/decide.json", env = "RECOUP_DECIDE_REQUEST")]
    pub request: PathBuf,
    /// Model registry (a directory or `s3://bucket/prefix`); its CURRENT version decides.
    #[arg(long, value_name = "DIR", default_value = "models/", env = "RECOUP_DECIDE_MODELS")]
    pub models: PathBuf,
    /// Engine settings (TOML), as for `recoup serve`.
    #[arg(long, value_name = "TOML", env = "RECOUP_DECIDE_ENGINE")]
    pub engine: Option<PathBuf>,
    /// Print the decision as JSON.
    #[arg(long, env = "RECOUP_DECIDE_JSON")]
    pub json: bool,
}

/// Run `recoup decide`.
pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    let text = if a.request.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the request from standard input")?
    } else {
        std::fs::read_to_string(&a.request).with_context(|| format!("reading {}", a.request.display()))?
    };
    let req: v1::DecideRequest = serde_json::from_str(&text).with_context(|| format!("parsing the request {}", a.request.display()))?;
    let engine_cfg = super::serve::engine_config(a.engine.as_ref())?;
    let (version, model) = crate::model_store::ModelStore::open(&a.models)
        .and_then(|s| s.load_current())
        .with_context(|| format!("loading the current model from {}", a.models.display()))?;
    let er = api::to_engine(&req, Utc::now()).map_err(|e| anyhow::anyhow!("invalid request: {e}"))?;
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
        // `value` is not the top line's expected value: it is what the grid ranks by.
        match &d.chosen {
            Some(c) => println!(
                "alternatives (value: what slots are ranked by, the retry at its valued P plus the best later one if it fails; the chosen slot's {:.1}):",
                c.value
            ),
            None => println!("alternatives (value: what slots are ranked by, the retry at its valued P plus the best later one if it fails):"),
        }
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
