//! The server under hostile input (#22): every reproducer of the hostile run,
//! against a real server on a free loopback port.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use prost::bytes::{Buf, BufMut};
use recoup::api::v1;
use recoup::engine::EngineConfig;
use recoup::hyperswitch::decider::decider_client::DeciderClient;
use recoup::serve::auth::Scope;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Code;

use crate::hyperswitch::{as_hyperswitch_sends, hour};
use crate::serve::{registry, request, sample, scrape, start_cfg, test_access, ts, DECIDE_TOKEN};

/// Sends and receives raw message bytes: frames no generated client would send.
#[derive(Clone, Copy, Default)]
struct Raw;
struct RawEnc;
struct RawDec;

impl Encoder for RawEnc {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let v = src.chunk().to_vec();
        src.advance(v.len());
        Ok(Some(v))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}

async fn raw_call(channel: &tonic::transport::Channel, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    grpc.unary(tonic::Request::new(body), http::uri::PathAndQuery::from_static(path), Raw).await.map(tonic::Response::into_inner)
}

/// One unary call over bare HTTP/2 (hyper's client): the answer's grpc-status and message.
async fn h2_call(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)], msg: Vec<u8>) -> (i32, String) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut framed = vec![0u8];
    framed.extend((msg.len() as u32).to_be_bytes());
    framed.extend(msg);
    let mut req = http::Request::post(format!("http://{addr}{path}")).header("content-type", "application/grpc").header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send.send_request(req.body(http_body_util::Full::new(prost::bytes::Bytes::from(framed))).unwrap()).await.unwrap();
    let head = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let get = |k: &str| head.get(k).or_else(|| trailers.get(k)).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (get("grpc-status").parse().unwrap_or(-1), get("grpc-message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_values_are_refused_naming_the_field_and_the_server_lives_on() {
    let (_d, models) = registry();
    let mut s = start_cfg(&models, EngineConfig::default(), |_| {}).await;
    let mut hs = DeciderClient::new(s.channel.clone());

    // The 114-byte request that allocated 25 GB: one hour with i32::MAX retries.
    let mut huge = as_hyperswitch_sends(hour() - chrono::Duration::days(2), &[]);
    huge.hourly_retry_history.insert("2026-11-22 13:00:00.0".into(), i32::MAX);
    let started = Instant::now();
    let e = hs.decide(huge).await.expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("hourly_retry_history") && e.message().contains("at most 1000"), "{}", e.message());
    assert!(started.elapsed() < Duration::from_secs(2), "refusing took {:?}", started.elapsed());

    // Times past 2262 (chrono's end) and before 1970, in every time field of every route.
    let y2300 = ts(Utc.with_ymd_and_hms(2300, 1, 1, 0, 0, 0).unwrap());
    let y1600 = Some(prost_types::Timestamp { seconds: -11_676_096_000, nanos: 0 });
    type Breaker = fn(&mut v1::DecideRequest, Option<prost_types::Timestamp>);
    let cases: [(&str, Breaker); 4] = [
        ("now", |r, t| r.now = t),
        ("attempts[0].attempted_at", |r, t| r.attempts[0].attempted_at = t),
        ("constraints.earliest", |r, t| r.constraints = Some(v1::Constraints { earliest: t, ..Default::default() })),
        ("asks[0].sent_at", |r, t| r.asks = vec![v1::Ask { sent_at: t, channel: "email".into() }]),
    ];
    for (field, breaker) in cases {
        for t in [y2300, y1600] {
            let mut r = request("visa", "insufficient_funds");
            breaker(&mut r, t);
            let e = s.client.decide(r).await.expect_err(field);
            assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
            assert!(e.message().starts_with(field) && e.message().contains("accepted range"), "{field}: {}", e.message());
        }
    }
    // A batch answers its valid items although one is out of range.
    let mut bad = request("visa", "insufficient_funds");
    bad.now = y2300;
    let b = s
        .client
        .decide_batch(v1::DecideBatchRequest {
            requests: vec![request("visa", "insufficient_funds"), bad, request("visa", "do_not_honor")],
        })
        .await
        .expect("a batch answer")
        .into_inner();
    assert!(matches!(&b.items[0].result, Some(v1::decide_batch_item::Result::Decision(_))));
    assert!(
        matches!(&b.items[1].result, Some(v1::decide_batch_item::Result::Error(e)) if e.starts_with("requests[1].now")),
        "{:?}",
        b.items[1]
    );
    assert!(matches!(&b.items[2].result, Some(v1::decide_batch_item::Result::Decision(_))));
    // hyperswitch's times in 2300.
    for field in ["wait_time", "invoice_start_time"] {
        let mut r = as_hyperswitch_sends(hour() - chrono::Duration::days(2), &[]);
        if field == "wait_time" {
            r.wait_time = y2300;
        } else {
            r.invoice_start_time = y2300;
        }
        let e = hs.decide(r).await.expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    // Oversized lists.
    let mut many = request("visa", "insufficient_funds");
    let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 15, 0, 0).unwrap();
    many.attempts = (0..1_001)
        .map(|i| v1::Attempt {
            attempted_at: ts(t0 - chrono::Duration::minutes(2_000 - i)),
            decline_code: "insufficient_funds".into(),
            ..Default::default()
        })
        .collect();
    let e = s.client.decide(many).await.expect_err("too many attempts");
    assert_eq!((e.code(), e.message().starts_with("attempts")), (Code::InvalidArgument, true), "{e:?}");

    // After all of it the server still decides.
    s.client.decide(request("visa", "insufficient_funds")).await.expect("still serving");
    let (_, body) = scrape(s.metrics_addr).await;
    assert_eq!(sample(&body, "recoup_panics_total"), 0.0, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_get_the_callers_status_and_are_counted() {
    let (_d, models) = registry();
    let s = start_cfg(&models, EngineConfig::default(), |_| {}).await;
    // Field 1 (payment) as a length-delimited blob that is no Payment.
    let garbage = vec![0x0a, 0x03, 0xff, 0xff, 0xff];
    for path in ["/recoup.v1.RetryDecider/Decide", "/recoup.v1.RetryDecider/DecideBatch", "/decider.Decider/Decide"] {
        let e = raw_call(&s.channel, path, garbage.clone()).await.expect_err(path);
        assert_eq!(e.code(), Code::InvalidArgument, "{path}: {e:?}");
    }
    // 5 MiB in an unknown field: over the one cap every service has.
    let mut big = vec![0xfa, 0x06]; // field 111, length-delimited
    let n = 5usize << 20;
    let mut len = n;
    while len >= 0x80 {
        big.push((len as u8) | 0x80);
        len >>= 7;
    }
    big.push(len as u8);
    big.resize(big.len() + n, 0);
    for path in ["/recoup.v1.RetryDecider/Decide", "/decider.Decider/Decide"] {
        let e = raw_call(&s.channel, path, big.clone()).await.expect_err(path);
        assert_eq!(e.code(), Code::ResourceExhausted, "{path}: {e:?}");
    }
    let (_, body) = scrape(s.metrics_addr).await;
    assert_eq!(sample(&body, r#"recoup_requests_total{code="INVALID_ARGUMENT",rpc="Decide"}"#), 1.0, "{body}");
    assert_eq!(sample(&body, r#"recoup_requests_total{code="INVALID_ARGUMENT",rpc="decider.Decide"}"#), 1.0, "{body}");
    assert_eq!(sample(&body, r#"recoup_requests_total{code="RESOURCE_EXHAUSTED",rpc="Decide"}"#), 1.0, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_answer_deadline_exceeded_and_stop_the_work() {
    let (_d, models) = registry();
    // Answers without alternatives (about 2 kB each), so that every item of the batch fits one
    // response and only a deadline stops the work (a batch stops deciding once its answers
    // fill 4 MiB; see the next test).
    let engine = recoup::engine::EngineParams { top_k: 0, ..Default::default() }.check().expect("valid");
    let s = start_cfg(&models, engine, |c| c.request_timeout = Duration::from_millis(50)).await;
    let items = 1_500;
    let batch = || v1::DecideBatchRequest { requests: (0..items).map(|_| request("visa", "insufficient_funds")).collect() };
    // The client's deadline (shorter than the server's), sent over bare HTTP/2:
    // tonic's client would give up by itself and never see the server's answer.
    let (status, message) =
        h2_call(s.addr, "/recoup.v1.RetryDecider/DecideBatch", &[("grpc-timeout", "25m")], prost::Message::encode_to_vec(&batch())).await;
    assert_eq!(status, Code::DeadlineExceeded as i32, "{message}");
    // The server's --timeout.
    let started = Instant::now();
    let e = s.client.clone().decide_batch(batch()).await.expect_err("past the server's timeout");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("--timeout"), "{}", e.message());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // The work stops: the in-flight gauge falls back to 0 long before 2 × 1,500 decisions.
    let wait = Instant::now();
    loop {
        let (_, body) = scrape(s.metrics_addr).await;
        if sample(&body, "recoup_in_flight") == 0.0 {
            let decided: f64 = body.lines().filter(|l| l.starts_with("recoup_decisions_total{")).map(|l| sample(l, "recoup")).sum();
            assert!(decided < (2 * items) as f64, "the batches ran to the end: {decided} decisions");
            assert_eq!(sample(&body, r#"recoup_requests_total{code="DEADLINE_EXCEEDED",rpc="DecideBatch"}"#), 2.0, "{body}");
            break;
        }
        assert!(wait.elapsed() < Duration::from_secs(10), "work still in flight after 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_access_needs_tokens_and_training_needs_the_admin_scope() {
    let (_d, models) = registry();
    let sample_history = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
    let s = start_cfg(&models, EngineConfig::default(), |c| {
        c.access = test_access(&[]);
        c.trainer = Some(recoup::hyperswitch::TrainerConfig { history: sample_history, models: models.clone(), promote: true });
    })
    .await;
    use recoup::hyperswitch::trainer::{trainer_service_client::TrainerServiceClient, TriggerTrainingRequest};
    let trigger = || TriggerTrainingRequest { model_version_tag: "intruder".into(), merchant_id: "m".into() };
    // No token: refused before anything is decoded or started.
    let e = TrainerServiceClient::new(s.channel.clone()).trigger_training(trigger()).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // A token without the admin scope.
    let with_decide = |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", format!("Bearer {DECIDE_TOKEN}").parse().unwrap());
        Ok(r)
    };
    let e =
        TrainerServiceClient::with_interceptor(s.channel.clone(), with_decide).trigger_training(trigger()).await.expect_err("decide scope");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(!models.join("intruder").exists());
    // Deciding needs a token too, reflection is off, health is open to probes.
    let e = s.client.clone().decide(request("visa", "insufficient_funds")).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let mut authed = recoup::api::v1::retry_decider_client::RetryDeciderClient::with_interceptor(s.channel.clone(), with_decide);
    authed.decide(request("visa", "insufficient_funds")).await.expect("the decide token decides");
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("health needs no token");
    let e = raw_call(&s.channel, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Vec::new())
        .await
        .expect_err("reflection without a token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let (_, body) = scrape(s.metrics_addr).await;
    assert_eq!(sample(&body, r#"recoup_requests_total{code="UNAUTHENTICATED",rpc="trainer.TriggerTraining"}"#), 1.0, "{body}");
    assert_eq!(sample(&body, r#"recoup_requests_total{code="PERMISSION_DENIED",rpc="trainer.TriggerTraining"}"#), 1.0, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_never_hold_shutdown() {
    use tokio::io::AsyncReadExt;
    let (_d, models) = registry();
    // A short handshake deadline closes a connection that never speaks.
    let s = start_cfg(&models, EngineConfig::default(), |c| c.conn.handshake_timeout = Duration::from_millis(300)).await;
    let mut silent = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    // The server speaks first (its HTTP/2 SETTINGS), then closes.
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a silent connection is still open after 5 s");
    s.stop().await;

    // With a long handshake deadline, shutdown still ends within its grace.
    let s = start_cfg(&models, EngineConfig::default(), |c| {
        c.conn.handshake_timeout = Duration::from_secs(600);
        c.conn.shutdown_grace = Duration::from_millis(500);
    })
    .await;
    let _silent: Vec<_> = futures_util::future::join_all((0..5).map(|_| tokio::net::TcpStream::connect(s.addr))).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    let started = Instant::now();
    let task = s.signal_stop();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("shutdown within 5 s").unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_serve_only_verified_clients() {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issue = |name: &str, usage| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.extended_key_usages = vec![usage];
        (p.signed_by(&key, &ca, &ca_key).unwrap().pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_pem, client_key) = issue("billing", ExtendedKeyUsagePurpose::ClientAuth);
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (cert, key, ca_file) = (write("server.pem", &server_pem), write("server.key", &server_key), write("ca.pem", &ca.pem()));
    let (_d, models) = registry();
    let acceptor = recoup::serve::conn::tls_acceptor(&cert, &key, Some(&ca_file)).unwrap();
    let s = start_cfg(&models, EngineConfig::default(), |c| {
        c.conn.tls = Some(acceptor);
        c.access = test_access(&[Scope::Decide, Scope::Read]);
    })
    .await;
    let url = format!("https://localhost:{}", s.addr.port());
    let tls = || {
        tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca.pem())).domain_name("localhost")
    };
    // With the client certificate: served.
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .tls_config(tls().identity(tonic::transport::Identity::from_pem(&client_pem, &client_key)))
        .unwrap()
        .connect()
        .await
        .expect("mutual TLS connects");
    let r = recoup::api::v1::retry_decider_client::RetryDeciderClient::new(channel)
        .decide(request("visa", "insufficient_funds"))
        .await
        .expect("decides over mutual TLS");
    assert_eq!(r.into_inner().action, v1::Action::Retry as i32);
    // Without one: the handshake fails, no call is served.
    let without = match tonic::transport::Endpoint::from_shared(url).unwrap().tls_config(tls()).unwrap().connect().await {
        Err(_) => None,
        Ok(ch) => {
            Some(recoup::api::v1::retry_decider_client::RetryDeciderClient::new(ch).decide(request("visa", "insufficient_funds")).await)
        }
    };
    assert!(!matches!(without, Some(Ok(_))), "a client without a certificate was served");
    // Plaintext to a TLS port gets nowhere.
    let e = s.client.clone().decide(request("visa", "insufficient_funds")).await.expect_err("plaintext");
    assert_ne!(e.code(), Code::Ok);
    s.stop().await;
}

/// A batch whose answers would not fit one gRPC message (4 MiB, also a client's default
/// receive limit) is answered, not refused whole: the decisions that fit, then an error
/// naming each request left undecided. Those are not decided and not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_answers_outgrow_a_message_answers_what_fits_and_names_the_rest() {
    let (_d, models) = registry();
    // Many alternatives make each answer a few kilobytes: about a thousand fill 4 MiB.
    let engine = recoup::engine::EngineParams { top_k: 60, ..Default::default() }.check().expect("valid");
    let s = start_cfg(&models, engine, |_| {}).await;
    let items = 2_500;
    let batch = v1::DecideBatchRequest { requests: (0..items).map(|_| request("visa", "insufficient_funds")).collect() };
    // The test's client keeps tonic's default 4 MiB receive limit.
    let r = s.client.clone().decide_batch(batch).await.expect("answered").into_inner();
    assert_eq!(r.items.len(), items);
    let len = prost::Message::encoded_len(&r);
    assert!(len <= 4 << 20 && len > 3 << 20, "the answers fill most of one message, no more: {len} bytes");
    let first_error = r
        .items
        .iter()
        .position(|i| matches!(i.result, Some(v1::decide_batch_item::Result::Error(_))))
        .expect("the answers outgrow one message");
    assert!(first_error > 100, "only {first_error} decided");
    for (k, item) in r.items.iter().enumerate().skip(first_error) {
        let Some(v1::decide_batch_item::Result::Error(e)) = &item.result else { panic!("item {k} decided after the first refusal") };
        assert!(e.starts_with(&format!("requests[{k}]: not decided")) && e.contains("send it again"), "{e}");
    }
    let (_, body) = scrape(s.metrics_addr).await;
    let decided: f64 = body.lines().filter(|l| l.starts_with("recoup_decisions_total{")).map(|l| sample(l, "recoup")).sum();
    assert_eq!(decided, first_error as f64, "only the decisions delivered are counted");
    s.stop().await;
    // Without alternatives 1,500 answers fit (what the deadline test above relies on).
    let engine = recoup::engine::EngineParams { top_k: 0, ..Default::default() }.check().expect("valid");
    let s = start_cfg(&models, engine, |_| {}).await;
    let batch = v1::DecideBatchRequest { requests: (0..1_500).map(|_| request("visa", "insufficient_funds")).collect() };
    let r = s.client.clone().decide_batch(batch).await.expect("answered").into_inner();
    let fit = r.items.iter().take_while(|i| matches!(i.result, Some(v1::decide_batch_item::Result::Decision(_)))).count();
    assert_eq!(fit, 1_500, "{} bytes", prost::Message::encoded_len(&r));
    s.stop().await;
}
