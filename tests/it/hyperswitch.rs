//! recoup as hyperswitch's recovery decider and trainer, called with clients
//! generated from hyperswitch's contracts (`proto/hyperswitch/`). The decider
//! has no "now" field: requests are built around the real clock.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Duration as D, DurationRound, Utc};
use recoup::engine::EngineConfig;
use recoup::hyperswitch::decider::{decider_client::DeciderClient, DeciderRequest};
use recoup::hyperswitch::trainer::{GetTrainingJobStatusRequest, JobStatus, TriggerTrainingRequest};
use recoup::hyperswitch::TrainerConfig;

use crate::serve::{admin_trainer, registry, registry_without_support, scrape, start_with, AdminTrainer};

fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 })
}

fn time(t: &prost_types::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

pub(crate) fn hour() -> DateTime<Utc> {
    Utc::now().duration_trunc(D::hours(1)).unwrap()
}

/// hyperswitch's key format for an hour bucket of `hourly_retry_history`.
fn key(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S.0").to_string()
}

/// Exactly the fields hyperswitch's `get_schedule_time_for_smart_retry` fills
/// today (the others it leaves unset): a Visa debit card, insufficient funds,
/// two retries already made.
pub(crate) fn as_hyperswitch_sends(started: DateTime<Utc>, retries: &[DateTime<Utc>]) -> DeciderRequest {
    let mut history: HashMap<String, i32> = HashMap::new();
    for r in retries {
        *history.entry(key(*r)).or_default() += 1;
    }
    DeciderRequest {
        first_error_message: "None".into(),
        billing_state: Some("CA".into()),
        card_funding: Some("debit".into()),
        card_network: Some("Visa".into()),
        card_issuer: Some("JPMORGAN CHASE BANK N.A.".into()),
        invoice_start_time: ts(started),
        retry_count: Some(retries.len() as i64),
        merchant_id: Some("merchant_1700000000".into()),
        invoice_amount: Some(4_999),
        invoice_currency: Some("USD".into()),
        invoice_due_date: ts(started + D::days(30)),
        billing_country: Some("US".into()),
        billing_city: Some("San Francisco".into()),
        attempt_currency: None,
        attempt_status: None,
        attempt_amount: None,
        pg_error_code: Some("insufficient_funds".into()),
        network_advice_code: None,
        network_error_code: None,
        first_pg_error_code: Some("insufficient_funds".into()),
        first_network_advice_code: None,
        first_network_error_code: Some("51".into()),
        attempt_response_time: None,
        payment_method_type: None,
        payment_gateway: None,
        retry_count_left: Some(20 - retries.len() as i64),
        total_retry_count_within_network: Some(20),
        first_error_msg_time: None,
        wait_time: None,
        payment_id: Some("12345_pay_01JXYZ".into()),
        hourly_retry_history: history,
        previous_threshold: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decides_for_hyperswitch_within_its_budget_and_the_network_rules() {
    let (_d, models) = registry();
    let s = start_with(&models, 64, EngineConfig::default(), None).await;
    let mut c = DeciderClient::new(s.channel.clone());
    let now = hour();
    let started = now - D::days(3);
    let retries = [now - D::days(2), now - D::hours(20)];

    // What hyperswitch sends today: a retry, on the hour, after the last one, inside the window.
    let r = c.decide(as_hyperswitch_sends(started, &retries)).await.unwrap().into_inner();
    assert!(r.retry_flag, "{r:?}");
    let at = time(r.retry_time.as_ref().expect("a retry time"));
    assert!(at > Utc::now() - D::minutes(1) && at >= retries[1] + D::hours(1) && at <= started + D::days(21), "{at}");
    assert_eq!(at.timestamp() % 3600, 0, "{at} is not on the hour");
    let threshold = r.decision_threshold.expect("a threshold for a retry");
    assert!(threshold > 0.0 && threshold < 0.5, "{threshold}");
    // The threshold is the break-even P(success): a bigger invoice needs less.
    let mut big = as_hyperswitch_sends(started, &retries);
    big.invoice_amount = Some(4_999 * 10);
    big.previous_threshold = Some(threshold);
    let rb = c.decide(big).await.unwrap().into_inner();
    let tb = rb.decision_threshold.expect("a threshold");
    assert!(rb.retry_flag && tb < threshold / 5.0, "{tb} vs {threshold}");

    // wait_time is honoured.
    let mut wait = as_hyperswitch_sends(started, &retries);
    wait.wait_time = ts(now + D::days(4) + D::minutes(30));
    let rw = c.decide(wait).await.unwrap().into_inner();
    assert!(rw.retry_flag && time(rw.retry_time.as_ref().unwrap()) >= now + D::days(4) + D::minutes(30), "{rw:?}");

    // Hard declines, however they are reported, and a spent budget: no retry.
    let mut hard = Vec::new();
    for (pg, network, advice) in [
        (Some("stolen_card"), None, None),
        (Some("card_declined"), Some("43"), None),
        (None, Some("51"), Some("03")),
        (Some("Fraud"), None, None),
    ] {
        let mut q = as_hyperswitch_sends(started, &retries);
        q.pg_error_code = pg.map(Into::into);
        q.network_error_code = network.map(Into::into);
        q.network_advice_code = advice.map(Into::into);
        hard.push(q);
    }
    let mut spent = as_hyperswitch_sends(started, &retries);
    spent.retry_count_left = Some(0);
    hard.push(spent);
    for q in hard {
        let label = format!("{:?}/{:?}/{:?}/left {:?}", q.pg_error_code, q.network_error_code, q.network_advice_code, q.retry_count_left);
        let r = c.decide(q).await.unwrap().into_inner();
        assert!(!r.retry_flag && r.retry_time.is_none(), "{label}: {r:?}");
    }

    // The current hour's bucket (still filling) with several retries, and a key a
    // minute ahead of our clock (hosts' clocks differ): accepted, the rules applied.
    let mut q = as_hyperswitch_sends(started, &retries);
    q.hourly_retry_history.insert(key(hour()), 3);
    let r = c.decide(q).await.unwrap().into_inner();
    assert!(r.retry_flag && time(r.retry_time.as_ref().unwrap()) > Utc::now(), "{r:?}");
    let mut q = as_hyperswitch_sends(started, &retries);
    let ahead = (Utc::now() + D::minutes(1)).duration_trunc(D::seconds(1)).unwrap();
    q.hourly_retry_history.insert(ahead.format("%Y-%m-%d %H:%M:%S.0").to_string(), 1);
    let r = c.decide(q).await.unwrap().into_inner();
    assert!(r.retry_flag && time(r.retry_time.as_ref().unwrap()) >= ahead + D::hours(1), "spacing after the latest retry: {r:?}");

    // Missing fields are tolerated as hyperswitch may send them: only an amount and its currency.
    let bare = DeciderRequest {
        first_error_message: "None".into(),
        invoice_amount: Some(1_500),
        invoice_currency: Some("EUR".into()),
        ..Default::default()
    };
    let r = c.decide(bare.clone()).await.unwrap().into_inner();
    assert!(r.retry_flag, "{r:?}");
    // No silent USD: without a currency the amount means nothing.
    let status = c.decide(DeciderRequest { invoice_currency: None, ..bare }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("invoice_currency"), "{status:?}");

    // Bad fields are INVALID_ARGUMENT naming the field.
    type Spoil = Box<dyn Fn(&mut DeciderRequest)>;
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "hourly_retry_history[\"yesterday\"]",
            Box::new(|q| {
                q.hourly_retry_history.insert("yesterday".into(), 1);
            }),
        ),
        (
            "hourly_retry_history",
            Box::new(|q| {
                q.hourly_retry_history.insert(key(hour() + D::days(2)), 1);
            }),
        ),
        ("invoice_amount", Box::new(|q| q.invoice_amount = Some(-5))),
        ("invoice_amount", Box::new(|q| q.invoice_amount = None)),
        ("invoice_currency", Box::new(|q| q.invoice_currency = Some("dollars".into()))),
        ("billing_country", Box::new(|q| q.billing_country = Some("USA".into()))),
        ("payment_method_type", Box::new(|q| q.payment_method_type = Some("crypto".into()))),
        ("network_error_code", Box::new(|q| q.network_error_code = Some("5 1".into()))),
        ("wait_time", Box::new(|q| q.wait_time = Some(prost_types::Timestamp { seconds: 0, nanos: -1 }))),
    ];
    for (field, spoil) in cases {
        let mut q = as_hyperswitch_sends(started, &retries);
        spoil(&mut q);
        let e = c.decide(q).await.expect_err(field);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }

    // Health, reflection and metrics know the service.
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
    let h = health.check(tonic_health::pb::HealthCheckRequest { service: "decider.Decider".into() }).await.unwrap().into_inner();
    assert_eq!(h.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    // Reflection resolves the service and what it imports (grpcurl needs both).
    {
        use tonic_reflection::pb::v1alpha::{
            server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse, ServerReflectionRequest,
        };
        let mut refl = ServerReflectionClient::new(s.channel.clone());
        for ask in [
            MessageRequest::FileContainingSymbol("decider.Decider".into()),
            MessageRequest::FileByFilename("google/protobuf/timestamp.proto".into()),
        ] {
            let req = ServerReflectionRequest { host: String::new(), message_request: Some(ask.clone()) };
            let resp = refl
                .server_reflection_info(tokio_stream::iter(vec![req]))
                .await
                .unwrap()
                .into_inner()
                .message()
                .await
                .unwrap()
                .expect("an answer");
            assert!(matches!(resp.message_response, Some(MessageResponse::FileDescriptorResponse(_))), "{ask:?}: {resp:?}");
        }
    }
    let (_, body) = scrape(s.metrics_addr).await;
    assert!(body.contains(r#"recoup_requests_total{code="OK",rpc="decider.Decide"} 11"#), "{body}");
    assert!(body.contains(r#"recoup_requests_total{code="INVALID_ARGUMENT",rpc="decider.Decide"} 10"#), "{body}");
    s.stop().await;

    // The caps, on the same model without its support (which would refuse a retry number the
    // sample log never reached before the rules are asked).
    let (_d2, models) = registry_without_support();
    let s = start_with(&models, 64, EngineConfig::default(), None).await;
    let mut c = DeciderClient::new(s.channel.clone());
    // Visa: 15 retries in 30 days is the cap (recoup's default, stricter than the 20
    // hyperswitch budgets): with 15 made in the last 5 days, none fits the window.
    let visa: Vec<_> = (0..15).map(|i| now - D::hours(5 * 24 - 8 * i)).collect();
    let mut q = as_hyperswitch_sends(now - D::days(6), &visa);
    q.retry_count_left = Some(5);
    let r = c.decide(q).await.unwrap().into_inner();
    assert!(!r.retry_flag, "a 16th Visa retry within 30 days: {r:?}");
    let mut q = as_hyperswitch_sends(now - D::days(6), &visa[1..]);
    q.retry_count_left = Some(6);
    assert!(c.decide(q).await.unwrap().into_inner().retry_flag, "the 15th is allowed");
    // Mastercard: 10 attempts in 24 hours; the next only once the earliest of them is 24 h old.
    let mc: Vec<_> = (0..9).map(|i| now - D::hours(18) + D::hours(2 * i)).collect();
    let mut q = as_hyperswitch_sends(now - D::hours(20), &mc);
    q.card_network = Some("Mastercard".into());
    let r = c.decide(q).await.unwrap().into_inner();
    assert!(r.retry_flag, "{r:?}");
    let at = time(r.retry_time.as_ref().unwrap());
    let counted = std::iter::once(now - D::hours(20)).chain(mc.iter().copied()).filter(|t| *t > at - D::hours(24) && *t <= at).count();
    assert!(counted < 10, "retry at {at} would be attempt {} within 24 h", counted + 1);
    assert!(at >= now + D::hours(4), "{at}: the 24 h window has not rolled yet");
    s.stop().await;
}

async fn wait_for(c: &mut AdminTrainer, id: &str) -> recoup::hyperswitch::trainer::GetTrainingJobStatusResponse {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let st = c.get_training_job_status(GetTrainingJobStatusRequest { job_id: id.into() }).await.unwrap().into_inner();
        if matches!(st.status(), JobStatus::Succeeded | JobStatus::Failed) {
            return st;
        }
        assert!(std::time::Instant::now() < deadline, "job {id} still {:?}: {}", st.status(), st.message);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trainer_trains_a_named_version_in_the_background_and_promotes_only_if_configured() {
    let (_d, models) = registry();
    let served = recoup::registry::current(&models).unwrap();
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
    for promote in [false, true] {
        let tag = format!("hs-{promote}");
        let s = start_with(
            &models,
            64,
            EngineConfig::default(),
            Some(TrainerConfig { history: sample.clone(), models: models.clone(), promote }),
        )
        .await;
        let mut c = admin_trainer(s.channel.clone());
        let first = c
            .trigger_training(TriggerTrainingRequest { model_version_tag: tag.clone(), merchant_id: "m_1".into() })
            .await
            .unwrap()
            .into_inner();
        // One job per tag: asking again answers the running job.
        let again = c
            .trigger_training(TriggerTrainingRequest { model_version_tag: tag.clone(), merchant_id: "m_1".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.job_id, first.job_id, "{again:?}");
        assert!(again.message.contains("already training"), "{again:?}");
        let st = c.get_training_job_status(GetTrainingJobStatusRequest { job_id: first.job_id.clone() }).await.unwrap().into_inner();
        assert!(matches!(st.status(), JobStatus::Pending | JobStatus::Running), "{st:?}");
        assert!(chrono::DateTime::parse_from_rfc3339(&st.created_at).is_ok(), "{st:?}");

        let done = wait_for(&mut c, &first.job_id).await;
        assert_eq!(done.status(), JobStatus::Succeeded, "{done:?}");
        assert_eq!(done.model_version_tag, tag);
        assert!(done.message.contains("log loss") && done.message.contains("m_1"), "{done:?}");
        assert!(models.join(&tag).join("model.json").is_file());
        recoup::registry::load_version(&models, &tag).expect("the trained version loads");
        let current = recoup::registry::current(&models).unwrap();
        if promote {
            assert_eq!(current, tag, "configured to promote");
            // The server hot-reloads the promoted version.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while s.state.current().version != tag {
                assert!(std::time::Instant::now() < deadline, "the promoted version was not picked up");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            assert_eq!(current, served, "promoted without being configured to");
            assert!(done.message.contains("not promoted"), "{done:?}");
        }
        // Versions are immutable: the tag is taken now.
        let e =
            c.trigger_training(TriggerTrainingRequest { model_version_tag: tag.clone(), merchant_id: String::new() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        s.stop().await;
    }

    // Bad tags, unknown jobs, and a job that fails say so.
    let s = start_with(
        &models,
        64,
        EngineConfig::default(),
        Some(TrainerConfig { history: models.join("no-such-history"), models: models.clone(), promote: false }),
    )
    .await;
    let mut c = admin_trainer(s.channel.clone());
    for bad in ["../escape", ".hidden", "CURRENT", "a b"] {
        let e = c.trigger_training(TriggerTrainingRequest { model_version_tag: bad.into(), merchant_id: String::new() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().starts_with("model_version_tag"), "{}", e.message());
    }
    let e = c.get_training_job_status(GetTrainingJobStatusRequest { job_id: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let job = c
        .trigger_training(TriggerTrainingRequest { model_version_tag: "doomed".into(), merchant_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    let done = wait_for(&mut c, &job.job_id).await;
    assert_eq!(done.status(), JobStatus::Failed, "{done:?}");
    assert!(done.message.contains("no-such-history"), "{done:?}");
    assert!(!models.join("doomed").exists());
    s.stop().await;
}
