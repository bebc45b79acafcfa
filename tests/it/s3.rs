//! Histories and the model registry on S3-compatible storage, against a real server:
//! moto's server mode (PyPI `moto[server]`), started by the test on a free port. The
//! CLI and `recoup serve` run as processes with the AWS SDKs' environment pointing at it.
//! Without `moto_server` (on PATH or `RECOUP_MOTO_SERVER`) the tests say so and pass,
//! unless `RECOUP_REQUIRE_S3=1` (CI sets it) makes that a failure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recoup::sim::{World, WorldConfig};

const BUCKET: &str = "recoup-test";

/// A moto server, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("RECOUP_MOTO_SERVER") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![PathBuf::from("moto_server")],
    };
    candidates
        .into_iter()
        .find(|b| Command::new(b).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()))
}

fn start() -> Option<Moto> {
    let Some(bin) = moto_binary() else {
        assert!(
            std::env::var("RECOUP_REQUIRE_S3").as_deref() != Ok("1"),
            "RECOUP_REQUIRE_S3=1 but no moto_server is installed (pip install 'moto[server]', or set RECOUP_MOTO_SERVER)"
        );
        eprintln!("skipped: moto_server is not installed (pip install 'moto[server]')");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let moto = Moto { child, port };
    let until = Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/", &[]).is_none() {
        assert!(Instant::now() < until, "moto_server did not come up on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}

/// A plain HTTP/1.1 request to the server (moto accepts unsigned requests): (status, body).
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text_end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status: u16 = std::str::from_utf8(&out[..text_end]).ok()?.split_whitespace().nth(1)?.parse().ok()?;
    // Bodies here are small; chunked encoding is not expected from moto for these calls.
    Some((status, out[text_end + 4..].to_vec()))
}

/// A signed client of the test bucket (moto refuses unsigned reads).
fn client(moto: &Moto) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_endpoint(format!("http://127.0.0.1:{}", moto.port))
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .expect("client")
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

fn put(moto: &Moto, key: &str, body: &[u8]) {
    use object_store::ObjectStoreExt;
    block_on(client(moto).put(&key.into(), body.to_vec().into())).expect("PUT");
}

/// An object's text, `None` when it does not exist.
fn get(moto: &Moto, key: &str) -> Option<String> {
    use object_store::ObjectStoreExt;
    let bytes = block_on(async { client(moto).get(&key.into()).await?.bytes().await });
    match bytes {
        Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("GET {key}: {e}"),
    }
}

fn delete(moto: &Moto, key: &str) {
    use object_store::ObjectStoreExt;
    block_on(client(moto).delete(&key.into())).expect("DELETE");
}

/// `recoup` with the AWS environment pointing at the moto server and its own cache.
fn recoup(moto: &Moto, cache: &Path) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("recoup"));
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", moto.port))
        .env("RECOUP_CACHE_DIR", cache)
        .env_remove("RECOUP_MODELS")
        .env_remove("RECOUP_MODELS_DIR");
    c
}

fn run(mut c: Command) -> (String, String) {
    let out = c.output().expect("runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{c:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// A small simulated history as two Parquet objects under `history/` (and a Spark marker).
fn upload_history(moto: &Moto) {
    let world = World::new(WorldConfig::default(), 5, 12);
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, payers) in [0..1_200u32, 1_200..2_400].into_iter().enumerate() {
        let path = dir.path().join(format!("part-{i}.parquet"));
        let mut df = recoup::sim::generate::chunk(&world, payers).to_frame().expect("frame");
        polars::prelude::ParquetWriter::new(std::fs::File::create(&path).unwrap()).finish(&mut df).unwrap();
        put(moto, &format!("history/part-{i}.parquet"), &std::fs::read(&path).unwrap());
    }
    put(moto, "history/_SUCCESS", b"");
}

#[test]
fn train_promote_serve_and_reload_with_history_and_registry_on_s3() {
    let Some(moto) = start() else { return };
    let (status, body) = http(moto.port, "PUT", &format!("/{BUCKET}"), &[]).expect("create bucket");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    upload_history(&moto);
    let cache = tempfile::tempdir().expect("tempdir");
    let models = format!("s3://{BUCKET}/registry/models");
    let history = format!("s3://{BUCKET}/history/");

    // Train from the bucket into the bucket, and promote.
    let mut c = recoup(&moto, cache.path());
    c.args(["train", "--history", &history, "--out", &models, "--name", "v1", "--promote"]);
    let (stdout, stderr) = run(c);
    assert!(stdout.contains(&format!("model v1 written to {models}/v1 and promoted")), "{stdout}");
    assert!(stderr.contains("2 history files") && stderr.contains("downloaded 2"), "the marker is not history: {stderr}");
    assert_eq!(get(&moto, "registry/models/CURRENT").as_deref(), Some("v1\n"));
    for f in ["model.json", "metrics.json", "MODEL_CARD.md", "manifest.json"] {
        assert!(get(&moto, &format!("registry/models/v1/{f}")).is_some(), "{f} uploaded");
    }
    // The manifest names the objects trained on, not the local mirror.
    let manifest: serde_json::Value = serde_json::from_str(&get(&moto, "registry/models/v1/manifest.json").unwrap()).unwrap();
    assert_eq!(
        manifest["data_files"],
        serde_json::json!([format!("s3://{BUCKET}/history/part-0.parquet"), format!("s3://{BUCKET}/history/part-1.parquet")])
    );

    // A second version, not promoted: the history mirror is fresh, nothing is downloaded again.
    let mut c = recoup(&moto, cache.path());
    c.args(["train", "--history", &history, "--out", &models, "--name", "v2"]);
    let (_, stderr) = run(c);
    assert!(stderr.contains("downloaded 0"), "{stderr}");
    // Names are immutable on S3 too.
    let mut c = recoup(&moto, cache.path());
    let out = c.args(["train", "-q", "--history", &history, "--out", &models, "--name", "v2"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already exists"), "{out:?}");

    let mut c = recoup(&moto, cache.path());
    c.args(["models", "list", "--dir", &models]);
    let (stdout, _) = run(c);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() == 2 && lines[0].starts_with("* v1 ") && lines[1].starts_with("  v2 "), "{stdout}");

    // decide reads the current version from the bucket (a fresh cache: downloaded).
    let fresh = tempfile::tempdir().expect("tempdir");
    let mut c = recoup(&moto, fresh.path());
    c.args(["decide", "--json", "--models", &models]).arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/decide.json"));
    let (stdout, _) = run(c);
    assert!(stdout.contains("\"model_version\": \"v1\""), "{stdout}");

    // A replica serving from the bucket picks up a promotion made elsewhere.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = recoup(&moto, fresh.path());
    c.args(["serve", "--quiet", "--metrics-addr", "off", "--reload-every", "0.2", "--models", &models])
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("serve starts");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let served = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let mut client = crate::postgres::connect(port).await;
            let req = crate::postgres::request("pay_s3", chrono::Utc::now() - chrono::Duration::hours(1));
            client.decide(req).await.expect("decides").into_inner().model_version
        })
    };
    assert_eq!(served(&rt), "v1");
    let mut c = recoup(&moto, cache.path());
    c.args(["models", "promote", "v2", "--dir", &models]);
    run(c);
    let until = Instant::now() + Duration::from_secs(30);
    let mut now_serving = served(&rt);
    while now_serving != "v2" && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        now_serving = served(&rt);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(now_serving, "v2", "the replica reloads the version promoted on S3");

    // An empty registry on S3 is seeded from a local one (the image's bundled model), once.
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let shipped = recoup::registry::current(&bundled).unwrap();
    let seeded = format!("s3://{BUCKET}/seeded");
    for expect in ["copied the current version of", "nothing to copy from"] {
        let mut c = recoup(&moto, cache.path());
        c.args(["models", "seed", "--dir", &seeded, "--from"]).arg(&bundled);
        let (stdout, _) = run(c);
        assert!(stdout.starts_with(expect) && stdout.contains(&format!("current: {shipped}")), "{stdout}");
    }
    assert_eq!(get(&moto, "seeded/CURRENT"), Some(format!("{shipped}\n")));

    // Errors name the bucket's URL.
    let mut c = recoup(&moto, cache.path());
    let out = c.args(["models", "promote", "v9", "--dir", &models]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("\"v9\" not found") && err.contains(&models), "{err}");
}

#[test]
fn a_history_mirror_follows_the_bucket_and_errors_name_the_url() {
    let Some(moto) = start() else { return };
    assert_eq!(http(moto.port, "PUT", &format!("/{BUCKET}"), &[]).expect("bucket").0, 200);
    upload_history(&moto);
    let cache = tempfile::tempdir().expect("tempdir");
    let history = format!("s3://{BUCKET}/history");
    let check = |expect: &str| {
        let mut c = recoup(&moto, cache.path());
        c.args(["-v", "history", "check", &history]);
        let (stdout, stderr) = run(c);
        assert!(stderr.contains(expect), "{expect}: {stderr}");
        stdout
    };
    let both = check("downloaded=2");
    // An object deleted from the bucket leaves the mirror: its rows are not read any more.
    delete(&moto, "history/part-1.parquet");
    let one = check("removed=1");
    assert_ne!(both, one, "the summary changed with the data");
    assert!(!cache.path().join("s3").join(BUCKET).join("history/part-1.parquet").exists());
    // A history file in the mirror that the bucket never had (a run stopped halfway, a
    // hand-made copy) is not read as history either.
    let stray = cache.path().join("s3").join(BUCKET).join("history/old/part-9.parquet");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::copy(cache.path().join("s3").join(BUCKET).join("history/part-0.parquet"), &stray).unwrap();
    let after_stray = check("removed=1");
    // The same summary as before the stray copy (its first line holds the load time).
    assert!(after_stray.starts_with("history: 1 file(s)"), "{after_stray}");
    assert!(after_stray.lines().skip(1).eq(one.lines().skip(1)), "the stray copy's rows are not read:\n{after_stray}");
    assert!(!stray.exists());

    // One object by its key works too; a prefix with no history and a bad URL are clear errors.
    let mut c = recoup(&moto, cache.path());
    c.args(["history", "check", &format!("s3://{BUCKET}/history/part-0.parquet")]);
    run(c);
    for (url, expect) in [
        (format!("s3://{BUCKET}/nothing-here/"), "no history files there".to_string()),
        ("s3://Not_A_Bucket/x".to_string(), "is not an S3 bucket name".to_string()),
        ("s3://no-such-bucket/history/".to_string(), "s3://no-such-bucket/history".to_string()),
    ] {
        let mut c = recoup(&moto, cache.path());
        let out = c.args(["history", "check", &url]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(&expect), "{url}: {err}");
    }
}
