//! The live page in a real browser: Debian's chromium, headless, loads `GET /` from a
//! serving process that kept a decision log with a holdout, and the test reads back the
//! DOM after the page's script ran (every plot laid out with a size) and a screenshot.
//! Without chromium the test says so and passes, unless `RECOUP_REQUIRE_CHROMIUM=1` (CI
//! sets it) makes that a failure.

use std::process::Command;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use recoup::api::v1;

use crate::postgres::{connect, request};
use crate::serve::registry;

fn chromium() -> Option<String> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some(name.to_string());
        }
    }
    assert!(std::env::var("RECOUP_REQUIRE_CHROMIUM").as_deref() != Ok("1"), "RECOUP_REQUIRE_CHROMIUM=1 but no chromium is installed");
    eprintln!("skipped: chromium is not installed (apt-get install chromium)");
    None
}

/// The value of `attr` on the element whose id is `id`, in a dumped DOM.
fn attr(dom: &str, id: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    let v = tag.split(&format!("{attr}=\"")).nth(1)?;
    Some(v[..v.find('"')?].to_string())
}

#[test]
fn the_live_page_renders_its_numbers_and_plots_in_a_headless_browser() {
    let Some(browser) = chromium() else { return };
    let (_models, models) = registry();
    let log = tempfile::tempdir().expect("tempdir");
    let free = || std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let (port, metrics_port) = (free(), free());
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("recoup"))
        .args(["serve", "--quiet", "--holdout-share", "0.5", "--decision-log-flush", "0.2"])
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .arg("--models")
        .arg(&models)
        .arg("--decision-log")
        .arg(log.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let base = Utc.with_ymd_and_hms(2026, 3, 2, 15, 0, 0).unwrap();
    let decided = rt.block_on(async {
        let mut client = connect(port).await;
        let mut reports = Vec::new();
        let n = 40;
        for i in 0..n {
            let pid = format!("inv_{i}");
            let d = client.decide(request(&pid, base + chrono::Duration::hours(i))).await.expect("decides").into_inner();
            // The platform follows every answer; every other retry succeeds.
            reports.push(v1::AttemptReport {
                payment_id: pid,
                attempt_number: 1,
                attempted_at: d.retry_at,
                outcome: if i % 2 == 0 { "succeeded".into() } else { "failed".into() },
                decline_code: if i % 2 == 0 { String::new() } else { "insufficient_funds".into() },
                channel: d.channel().as_str_name().trim_start_matches("CHANNEL_").to_lowercase(),
                ..Default::default()
            });
        }
        // A payment a month later closes the first ones' 21-day windows.
        client.decide(request("inv_late", base + chrono::Duration::days(40))).await.expect("decides");
        client.report_attempts(v1::ReportAttemptsRequest { reports }).await.expect("reports");
        // The decisions' writer runs at idle priority: on a machine busy with other work its
        // files can come well after the 0.2 s flush, so wait for them (the page reads the log).
        let logged = || recoup::decision_log::read(log.path()).map_or(0, |(d, _)| d.len());
        let waited = std::time::Instant::now();
        while logged() < n as usize + 1 && waited.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(logged(), n as usize + 1, "every decision in the log within a minute");
        n + 1
    });

    let profile = tempfile::tempdir().expect("tempdir");
    let url = format!("http://127.0.0.1:{metrics_port}/");
    let browse = |extra: &[&str]| {
        Command::new(&browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs")
    };
    let out = browse(&["--dump-dom", "--virtual-time-budget=2000"]);
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    let shot = profile.path().join("page.png");
    let png = browse(&[&format!("--screenshot={}", shot.display()), "--window-size=1000,1400"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success() && dom.contains("recoup — live"), "{}\n{dom}", String::from_utf8_lossy(&out.stderr));

    let current = std::fs::read_to_string(models.join("CURRENT")).expect("CURRENT");
    assert!(dom.contains(&format!("<b id=\"model\">{}</b>", current.trim())), "{dom}");
    assert!(dom.contains(&format!("<b id=\"decisions\">{decided}</b>")), "{dom}");
    // The browser laid out every plot: the script stamped each with its size.
    for plot in ["calibration", "decisions-chart", "arms-chart"] {
        let w: f64 = attr(&dom, plot, "data-rendered-width").and_then(|w| w.parse().ok()).unwrap_or(0.0);
        assert!(w > 50.0, "{plot} laid out {w} px wide: {dom}");
    }
    // Calibration: a dot per judged p tenth; the model arm's followed retries are judged.
    let judged: f64 = dom.split("<b id=\"judged\">").nth(1).and_then(|s| s.split('<').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    assert!(judged >= 10.0, "{judged} judged: {dom}");
    assert!(dom.matches("<circle").count() >= 2, "calibration dots and arm points: {dom}");
    // Drift: every payment here is a US debit card declined for funds, unlike the training data.
    assert!(dom.contains("<td>decline_class</td>") && dom.contains("major shift"), "{dom}");
    // Both arms, with their intervals.
    assert!(dom.contains("<td>model</td>") && dom.contains("<td>control:2 weeks x8</td>"), "{dom}");
    assert!(dom.contains("model − control:2 weeks x8"), "{dom}");

    assert!(png.status.success(), "{}", String::from_utf8_lossy(&png.stderr));
    let bytes = std::fs::read(&shot).expect("the screenshot");
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "{} bytes", bytes.len());
    if let Ok(keep) = std::env::var("RECOUP_PAGE_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("keeps the screenshot");
    }
}
