//! The gRPC service on a free loopback port, called with the generated tonic client.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use recoup::api::v1::{self, retry_decider_client::RetryDeciderClient};
use recoup::engine::EngineConfig;
use recoup::rules::{self, PastAttempt, Proposal, RulesConfig};
use recoup::serve::auth::{Access, Scope};
use recoup::serve::{load_current, serve, ServeConfig, State};
use tonic::transport::Channel;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// A copy of the shipped registry (tests promote in it).
pub(crate) fn registry() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let models = d.path().join("models");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models"), &models);
    (d, models)
}

/// [`registry`] with the current model's support removed: a test of the network rules
/// alone (the support would refuse a 15th retry the log never made before the rules do).
pub(crate) fn registry_without_support() -> (tempfile::TempDir, PathBuf) {
    let (d, models) = registry();
    let current = std::fs::read_to_string(models.join("CURRENT")).unwrap();
    let path = models.join(current.trim()).join("model.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m.as_object_mut().unwrap().remove("support");
    std::fs::write(&path, serde_json::to_string(&m).unwrap()).unwrap();
    (d, models)
}

pub(crate) struct Server {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) client: RetryDeciderClient<Channel>,
    pub(crate) metrics_addr: std::net::SocketAddr,
    pub(crate) channel: Channel,
    pub(crate) state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), recoup::serve::ServeError>>,
}

/// The tests' admin token (training) and decide token (decisions, reading).
pub(crate) const ADMIN_TOKEN: &str = "rcp_test_admin_token";
pub(crate) const DECIDE_TOKEN: &str = "rcp_test_decide_token";

/// Access with the two test tokens, and `anonymous` scopes for callers without one.
pub(crate) fn test_access(anonymous: &[Scope]) -> Access {
    use sha2::Digest;
    let h = |t: &str| hex::encode(sha2::Sha256::digest(t.as_bytes()));
    let toml = format!(
        "[[token]]\nname = \"ops\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n[[token]]\nname = \"billing\"\nsha256 = \"{}\"\nscopes = [\"decide\", \"read\"]\n",
        h(ADMIN_TOKEN),
        h(DECIDE_TOKEN)
    );
    Access::new(Some((Path::new("test-tokens.toml"), &toml)), anonymous).unwrap()
}

/// Adds the admin token to a call.
pub(crate) fn as_admin(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    req.metadata_mut().insert("authorization", format!("Bearer {ADMIN_TOKEN}").parse().unwrap());
    Ok(req)
}

/// A client of the trainer service that sends the admin token.
pub(crate) type AdminTrainer = recoup::hyperswitch::trainer::trainer_service_client::TrainerServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>>,
>;

pub(crate) fn admin_trainer(channel: Channel) -> AdminTrainer {
    recoup::hyperswitch::trainer::trainer_service_client::TrainerServiceClient::with_interceptor(channel, as_admin as fn(_) -> _)
}

async fn start(models: &Path, max_in_flight: usize, engine: EngineConfig) -> Server {
    start_with(models, max_in_flight, engine, None).await
}

/// A server on a free loopback port; `trainer` also serves hyperswitch's trainer.
pub(crate) async fn start_with(
    models: &Path,
    max_in_flight: usize,
    engine: EngineConfig,
    trainer: Option<recoup::hyperswitch::TrainerConfig>,
) -> Server {
    start_cfg(models, engine, |cfg| {
        cfg.max_in_flight = max_in_flight;
        cfg.reflection = true;
        cfg.trainer = trainer;
    })
    .await
}

/// A server on a free loopback port with the test tokens (deciding and reading
/// open), settings changed by `edit`, and a plaintext client channel.
pub(crate) async fn start_cfg(models: &Path, engine: EngineConfig, edit: impl FnOnce(&mut ServeConfig)) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = ServeConfig::new(addr, models.to_path_buf());
    cfg.reload_every = Duration::from_millis(50);
    cfg.access = test_access(&[Scope::Decide, Scope::Read]);
    edit(&mut cfg);
    let tls = cfg.conn.tls.is_some();
    let state = State::new(load_current(models).unwrap(), engine, cfg.max_in_flight);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let task = tokio::spawn(serve(listener, Some(metrics), cfg, state.clone(), async move {
        let _ = rx.await;
    }));
    // A TLS server gets a lazy plaintext channel (the test makes its own TLS one).
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channel = if tls { endpoint.connect_lazy() } else { endpoint.connect().await.unwrap() };
    Server { addr, client: RetryDeciderClient::new(channel.clone()), metrics_addr, channel, state, stop: Some(tx), task }
}

/// GET /metrics over plain HTTP/1.0: the status line and the body.
pub(crate) async fn scrape(addr: std::net::SocketAddr) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// The value of the sample `line_start` (metric name with its labels) in a scrape.
pub(crate) fn sample(body: &str, line_start: &str) -> f64 {
    body.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

impl Server {
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }

    /// Signal shutdown and return the server task, to time it.
    pub(crate) fn signal_stop(mut self) -> tokio::task::JoinHandle<Result<(), recoup::serve::ServeError>> {
        let _ = self.stop.take().unwrap().send(());
        self.task
    }
}

pub(crate) fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 })
}

fn at(d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, d, h, 0, 0).unwrap()
}

pub(crate) fn request(brand: &str, code: &str) -> v1::DecideRequest {
    v1::DecideRequest {
        payment: Some(v1::Payment {
            payment_id: "inv_1".into(),
            amount_minor: 2500,
            currency: "USD".into(),
            payment_method: "card".into(),
            card_brand: brand.into(),
            card_funding: "debit".into(),
            country: "US".into(),
            ..Default::default()
        }),
        attempts: vec![v1::Attempt { attempted_at: ts(at(2, 15)), decline_code: code.into(), ..Default::default() }],
        now: ts(at(2, 15) + chrono::Duration::minutes(1)),
        ..Default::default()
    }
}

fn time(t: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let t = t.as_ref().expect("timestamp");
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decides_rejects_bad_fields_and_never_schedules_hard_declines() {
    let (_d, models) = registry();
    let mut s = start(&models, 8, EngineConfig::default()).await;
    let now = at(2, 15) + chrono::Duration::minutes(1);

    let r = s.client.decide(request("visa", "insufficient_funds")).await.expect("decides").into_inner();
    assert_eq!(r.action, v1::Action::Retry as i32);
    let retry_at = time(&r.retry_at);
    assert!(retry_at > now && retry_at <= now + chrono::Duration::days(15), "{retry_at}");
    assert!(r.p_success > 0.0 && r.p_success < 1.0 && r.p_recovery >= r.p_success);
    assert!(r.propensity > 0.0 && r.propensity <= 1.0);
    assert_eq!(r.model_version, std::fs::read_to_string(models.join("CURRENT")).unwrap().trim());
    assert!(!r.alternatives.is_empty() && r.alternatives.iter().all(|a| a.value <= r.alternatives[0].value + 1e-9));
    assert!(r.reasons.iter().any(|x| x.code == "best_expected_value"));

    // Hard declines: never scheduled, the reason says so, and a channel to ask for a new
    // method (a new card starts afresh); unless the payer said stop, which asks for nothing.
    for code in ["stolen_card", "lost_card", "fraudulent", "pickup_card", "do_not_try_again", "revocation_of_authorization"] {
        let r = s.client.decide(request("visa", code)).await.expect("decides").into_inner();
        assert_eq!(r.action, v1::Action::DoNotRetry as i32, "{code}");
        assert!(r.retry_at.is_none());
        assert!(r.reasons.iter().any(|x| x.code == "hard_decline"), "{code}: {:?}", r.reasons);
        if code == "revocation_of_authorization" {
            assert_eq!((r.next_step, r.ask_channel), (v1::NextStep::Stop as i32, v1::Channel::Unspecified as i32), "{code}");
        } else {
            assert_eq!(r.next_step, v1::NextStep::AskForPaymentMethod as i32, "{code}");
            assert_ne!(r.ask_channel, v1::Channel::Unspecified as i32);
        }
    }

    // An expired card: no retry until the payer updates it; the shipped model values the ask.
    // Without a time zone the payer may be in Honolulu, where 15:00 UTC is 05:00: the ask waits.
    let r = s.client.decide(request("visa", "expired_card")).await.expect("decides").into_inner();
    assert_eq!((r.action, r.next_step), (v1::Action::DoNotRetry as i32, v1::NextStep::WaitForUpdate as i32), "{:?}", r.reasons);
    assert!(r.reasons.iter().any(|x| x.code == "timezone_assumed" && x.detail.contains("Pacific/Honolulu")), "{:?}", r.reasons);
    let send_at = time(&r.ask.expect("a plan").send_at).with_timezone(&chrono_tz::Pacific::Honolulu);
    assert!((8..21).contains(&send_at.hour()), "{send_at}");
    let mut in_new_york = request("visa", "expired_card");
    in_new_york.payment.as_mut().unwrap().timezone = "America/New_York".into();
    let r = s.client.decide(in_new_york).await.expect("decides").into_inner();
    assert_eq!(r.action, v1::Action::DoNotRetry as i32);
    let plan = r.ask.expect("the shipped model has an ask response: a valued plan");
    assert_eq!((plan.channel, r.next_step), (r.ask_channel, v1::NextStep::AskForPaymentMethod as i32));
    assert!(
        plan.channel != v1::Channel::None as i32 && plan.p_update > 0.05 && plan.p_success_after > 0.0 && plan.planned_asks >= 1,
        "{plan:?}"
    );
    assert!(plan.value > plan.value_without_asking && r.p_recovery > 0.0, "{plan:?}");
    assert!(r.reasons.iter().any(|x| x.code == "ask_for_new_payment_method"), "{:?}", r.reasons);

    // Every class of invalid field answers INVALID_ARGUMENT naming the field.
    type Breaker = fn(&mut v1::DecideRequest);
    let cases: Vec<(&str, Breaker)> = vec![
        ("payment", |r| r.payment = None),
        ("payment.payment_id", |r| r.payment.as_mut().unwrap().payment_id = " ".into()),
        ("payment.amount_minor", |r| r.payment.as_mut().unwrap().amount_minor = 0),
        ("payment.currency", |r| r.payment.as_mut().unwrap().currency = "usd".into()),
        ("payment.payment_method", |r| r.payment.as_mut().unwrap().payment_method = "cheque".into()),
        ("payment.country", |r| r.payment.as_mut().unwrap().country = String::new()),
        ("payment.timezone", |r| r.payment.as_mut().unwrap().timezone = "Mars/Olympus".into()),
        ("payment.card_brand", |r| r.payment.as_mut().unwrap().card_brand = "visaa".into()),
        ("attempts", |r| r.attempts.clear()),
        ("attempts[0].attempted_at", |r| r.attempts[0].attempted_at = None),
        ("attempts[0].decline_code", |r| r.attempts[0].decline_code = "nope".into()),
        ("attempts[0].channel", |r| r.attempts[0].channel = "fax".into()),
        ("attempts[1].attempted_at", |r| {
            let mut a = r.attempts[0].clone();
            a.attempted_at = ts(at(1, 1));
            r.attempts.push(a);
        }),
        ("now", |r| r.now = ts(at(1, 1))),
        ("constraints.quiet_start_hour", |r| r.constraints = Some(v1::Constraints { quiet_start_hour: Some(22), ..Default::default() })),
        ("constraints.quiet_hours", |r| {
            r.constraints = Some(v1::Constraints { quiet_start_hour: Some(25), quiet_end_hour: Some(7), ..Default::default() })
        }),
        ("constraints.allowed_channels[0]", |r| {
            r.constraints = Some(v1::Constraints { allowed_channels: vec!["pigeon".into()], ..Default::default() })
        }),
        ("constraints.latest", |r| {
            r.constraints = Some(v1::Constraints { earliest: ts(at(9, 1)), latest: ts(at(5, 1)), ..Default::default() })
        }),
        ("asks[0].sent_at", |r| r.asks = vec![v1::Ask { sent_at: None, channel: "email".into() }]),
        ("asks[0].channel", |r| r.asks = vec![v1::Ask { sent_at: ts(at(2, 15)), channel: "none".into() }]),
        ("past_payments[0].attempts[0].outcome", |r| {
            r.past_payments = vec![v1::PastPayment {
                attempts: vec![v1::PastAttempt { attempted_at: ts(at(1, 1)), outcome: "maybe".into(), ..Default::default() }],
            }]
        }),
    ];
    for (field, breaker) in cases {
        let mut req = request("visa", "insufficient_funds");
        breaker(&mut req);
        let e = s.client.decide(req).await.expect_err(field);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{field}: message {:?}", e.message());
    }

    // A batch: each item on its own.
    let mut bad = request("visa", "insufficient_funds");
    bad.payment.as_mut().unwrap().amount_minor = -5;
    let b = s
        .client
        .decide_batch(v1::DecideBatchRequest {
            requests: vec![request("visa", "insufficient_funds"), bad, request("mastercard", "stolen_card")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.items.len(), 3);
    assert!(matches!(&b.items[0].result, Some(v1::decide_batch_item::Result::Decision(d)) if d.action == v1::Action::Retry as i32));
    assert!(
        matches!(&b.items[1].result, Some(v1::decide_batch_item::Result::Error(e)) if e.starts_with("requests[1].payment.amount_minor"))
    );
    assert!(matches!(&b.items[2].result, Some(v1::decide_batch_item::Result::Decision(d)) if d.action == v1::Action::DoNotRetry as i32));

    let m = s.client.get_model(v1::GetModelRequest {}).await.unwrap().into_inner();
    assert_eq!(m.feature_columns, recoup::features::SCHEMA.columns);
    assert!(m.metrics_json.contains("log_loss"));

    // The metrics endpoint counted all of it, in Prometheus text format.
    let (status, body) = scrape(s.metrics_addr).await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(sample(&body, r#"recoup_requests_total{code="INVALID_ARGUMENT",rpc="Decide"}"#), 21.0, "{body}");
    assert_eq!(sample(&body, r#"recoup_requests_total{code="OK",rpc="Decide"}"#), 9.0);
    assert_eq!(sample(&body, r#"recoup_requests_total{code="OK",rpc="DecideBatch"}"#), 1.0);
    assert_eq!(sample(&body, r#"recoup_requests_total{code="OK",rpc="GetModel"}"#), 1.0);
    // 1 + 1 (batch) retries; 6 + 1 (batch) hard declines and an expired card (asked twice).
    assert_eq!(sample(&body, r#"recoup_decisions_total{action="DO_NOT_RETRY",channel="CHANNEL_NONE"}"#), 9.0);
    let retries: f64 =
        body.lines().filter(|l| l.starts_with(r#"recoup_decisions_total{action="RETRY""#)).map(|l| sample(l, "recoup")).sum();
    assert_eq!(retries, 2.0, "{body}");
    assert_eq!(sample(&body, r#"recoup_request_duration_seconds_count{rpc="Decide"}"#), 30.0);
    assert!(sample(&body, r#"recoup_request_duration_seconds_bucket{rpc="Decide",le="+Inf"}"#) == 30.0);
    let version = std::fs::read_to_string(models.join("CURRENT")).unwrap().trim().to_string();
    assert_eq!(sample(&body, &format!(r#"recoup_model_info{{version="{version}"}}"#)), 1.0);
    assert_eq!(sample(&body, "recoup_in_flight"), 0.0);
    s.stop().await;
}

/// Follow the service's decisions for one payment whose retries keep failing:
/// no retry it schedules may break a Visa or Mastercard cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_caps_hold_over_a_long_sequence_of_failed_retries() {
    let (_d, models) = registry();
    // No look-ahead discount and no costs: the engine would retry as often as allowed.
    let engine = recoup::engine::EngineParams {
        attempt_cost_minor: 0.0,
        daily_discount: 0.2,
        exploration: 0.0,
        dunning_window_days: 40,
        ..Default::default()
    }
    .check()
    .expect("valid");
    let mut s = start(&models, 4, engine).await;
    for (brand, code) in [("visa", "do_not_honor"), ("mastercard", "do_not_honor"), ("visa", "insufficient_funds")] {
        let mut req = request(brand, code);
        let mut past = vec![PastAttempt {
            at: at(2, 15),
            attempt_number: 0,
            outcome: recoup::domain::Outcome::Failed,
            decline: Some(code.parse().unwrap()),
            network_code: None,
            advice_code: None,
            payment_method_updated: false,
            card: None,
        }];
        let facts = rules::Network { method: recoup::domain::PaymentMethod::Card, card_brand: Some(brand.parse().unwrap()) };
        let mut retries = 0;
        for _ in 0..60 {
            let r = s.client.decide(req.clone()).await.expect("decides").into_inner();
            if r.action == v1::Action::DoNotRetry as i32 {
                break;
            }
            let t = time(&r.retry_at);
            let v = rules::check_retry(facts, &past, Proposal { at: t, payment_method_updated: false }, &RulesConfig::default());
            assert!(v.is_allowed(), "{brand} retry {} at {t} breaks {:?}", retries + 1, v.violations);
            past.push(PastAttempt { at: t, attempt_number: past.len() as u32, ..past[0] });
            req.attempts.push(v1::Attempt { attempted_at: ts(t), decline_code: code.into(), ..Default::default() });
            req.now = ts(t + chrono::Duration::minutes(1));
            retries += 1;
        }
        // The caps, counted directly on what the service scheduled.
        let times: Vec<_> = past.iter().map(|p| p.at).collect();
        for (i, &t) in times.iter().enumerate() {
            let in_24h = times[..=i].iter().filter(|&&u| u > t - chrono::Duration::hours(24)).count();
            let in_30d = times[1..=i.max(1)].iter().filter(|&&u| u > t - chrono::Duration::days(30)).count();
            if brand == "mastercard" {
                assert!(in_24h <= 10, "{in_24h} Mastercard attempts in 24 h");
            } else {
                assert!(in_30d <= 15, "{in_30d} Visa reattempts in 30 days");
            }
        }
        assert!(retries >= 5, "{brand}/{code}: only {retries} retries scheduled");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_drops_nothing_and_refuses_a_broken_model() {
    let (_d, models) = registry();
    let old = std::fs::read_to_string(models.join("CURRENT")).unwrap().trim().to_string();
    // A second version: the same model with another intercept, under a new name.
    let new = "29990101-000000-reloaded".to_string();
    copy_dir(&models.join(&old), &models.join(&new));
    let path = models.join(&new).join("model.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["intercept"] = serde_json::json!(m["intercept"].as_f64().unwrap() + 0.5);
    std::fs::write(&path, m.to_string()).unwrap();

    let s = start(&models, 64, EngineConfig::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, saw_new) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let mut c = s.client.clone();
        let (stop, ok, failed, saw_new, new) = (stop.clone(), ok.clone(), failed.clone(), saw_new.clone(), new.clone());
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.decide(request("visa", "insufficient_funds")).await {
                    Ok(r) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if r.into_inner().model_version == new {
                            saw_new.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    recoup::registry::promote(&models, &new).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.state.current().version != new && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.state.current().version, new, "promoted model not picked up");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A broken model made current behind the registry's back: refused, the old one keeps serving.
    std::fs::create_dir_all(models.join("29990202-000000-broken")).unwrap();
    std::fs::write(models.join("29990202-000000-broken/model.json"), "{ not json").unwrap();
    std::fs::write(models.join("CURRENT"), "29990202-000000-broken\n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.state.current().version, new, "a broken model replaced the serving one");

    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    eprintln!("hot reload: {} calls ok, {} failed", ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed.load(Ordering::Relaxed), 0, "calls failed during the reload");
    assert!(ok.load(Ordering::Relaxed) > 50);
    assert!(saw_new.load(Ordering::Relaxed), "no call answered with the new model");
    let (_, body) = scrape(s.metrics_addr).await;
    assert_eq!(sample(&body, &format!(r#"recoup_model_info{{version="{new}"}}"#)), 1.0, "{body}");
    assert!(!body.contains(&format!(r#"version="{old}""#)), "the old version is still reported serving");
    assert_eq!(sample(&body, r#"recoup_model_reloads_total{result="ok"}"#), 1.0);
    // Refused once, not again at every poll while CURRENT stays broken.
    assert_eq!(sample(&body, r#"recoup_model_reloads_total{result="refused"}"#), 1.0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_load_shedding() {
    let (_d, models) = registry();
    let s = start(&models, 1, EngineConfig::default()).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
    let h = health.check(tonic_health::pb::HealthCheckRequest { service: "recoup.v1.RetryDecider".into() }).await.unwrap().into_inner();
    assert_eq!(h.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse, ServerReflectionRequest,
    };
    let mut refl = ServerReflectionClient::new(s.channel.clone());
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut stream = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = stream.message().await.unwrap().expect("a reflection answer");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else { panic!("not a service list") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"recoup.v1.RetryDecider".to_string()) && names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
    // The older v1alpha protocol (grpcurl before 1.9) resolves the service's methods.
    {
        use tonic_reflection::pb::v1alpha::{
            server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse, ServerReflectionRequest,
        };
        let mut refl = ServerReflectionClient::new(s.channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("recoup.v1.RetryDecider".into())),
        };
        let mut stream = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
        let resp = stream.message().await.unwrap().expect("a v1alpha reflection answer");
        let Some(MessageResponse::FileDescriptorResponse(files)) = resp.message_response else { panic!("not a file descriptor: {resp:?}") };
        use prost::Message;
        let file = prost_types::FileDescriptorProto::decode(&files.file_descriptor_proto[0][..]).expect("a file descriptor");
        assert_eq!(file.package(), "recoup.v1");
        let methods: Vec<&str> = file.service.iter().flat_map(|s| s.method.iter().map(|m| m.name())).collect();
        assert_eq!(methods, ["Decide", "DecideBatch", "GetModel", "ReportAttempts"], "{:?}", file.service);
    }

    // One permit: a burst of concurrent calls sheds some with RESOURCE_EXHAUSTED, none waits forever.
    let mut calls = Vec::new();
    for _ in 0..32 {
        let mut c = s.client.clone();
        calls.push(tokio::spawn(async move { c.decide(request("visa", "insufficient_funds")).await.map(|_| ()).map_err(|e| e.code()) }));
    }
    let mut codes = Vec::new();
    for c in calls {
        codes.push(c.await.unwrap());
    }
    assert!(codes.iter().any(|c| c.is_ok()));
    assert!(codes.iter().all(|c| matches!(c, Ok(()) | Err(tonic::Code::ResourceExhausted))), "{codes:?}");
    assert!(codes.contains(&Err(tonic::Code::ResourceExhausted)), "no call was shed with one permit and 32 at once");
    s.stop().await;
}
