//! The `recoup` binary as a user meets it.

use assert_cmd::Command;
use predicates::prelude::*;

use crate::support::{recovered_payment, row, set, temp_file, varied_rows, write_csv};

fn recoup() -> Command {
    Command::cargo_bin("recoup").expect("binary built")
}

#[test]
fn help_lists_every_subcommand() {
    let out = recoup().arg("--help").assert().success().get_output().stdout.clone();
    let text = String::from_utf8(out).unwrap();
    for sub in ["history", "simulate", "train", "serve", "decide", "backtest", "export", "models", "report"] {
        assert!(text.contains(sub), "--help mentions {sub}:\n{text}");
    }
}

#[test]
fn history_check_prints_a_summary() {
    let (_dir, path) = temp_file("h.csv");
    write_csv(&path, &varied_rows(50));
    recoup().args(["history", "check"]).arg(&path).assert().success().stdout(
        predicate::str::contains("accepted").and(predicate::str::contains("insufficient_funds")).and(predicate::str::contains("recovered")),
    );
}

/// A flag set by its environment variable, as a container would (the path too).
#[test]
fn flags_can_be_set_by_environment_variables() {
    let (_dir, path) = temp_file("h.csv");
    write_csv(&path, &varied_rows(20));
    let out = recoup()
        .args(["history", "check"])
        .env("RECOUP_HISTORY_PATH", &path)
        .env("RECOUP_HISTORY_JSON", "true")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).expect("--json came from RECOUP_HISTORY_JSON");
    assert_eq!(v["payments"], 20);
    let help = recoup().args(["train", "--help"]).assert().success().get_output().stdout.clone();
    assert!(String::from_utf8_lossy(&help).contains("[env: RECOUP_TRAIN_HISTORY="), "--help shows the variable");
}

#[test]
fn history_check_json_is_machine_readable() {
    let (_dir, path) = temp_file("h.csv");
    write_csv(&path, &varied_rows(20));
    let out = recoup().args(["history", "check", "--json"]).arg(&path).assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["payments"], 20);
    assert!(v["rows"].as_u64().unwrap() > 20);
    assert_eq!(v["load"]["rows_rejected"], 0);
}

#[test]
fn bad_row_is_one_clear_line_and_exit_code_2() {
    let (_dir, path) = temp_file("h.csv");
    let mut rows = recovered_payment("p1");
    rows.push(set(row("x", "p2", 0, "2026-03-01T09:00:00Z", "refunded"), "decline_code", ""));
    write_csv(&path, &rows);
    let out = recoup().args(["history", "check"]).arg(&path).assert().code(2).get_output().stderr.clone();
    let err = String::from_utf8(out).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("row 3 (line 4), column `outcome`") && err.contains("\"refunded\"") && err.contains("--skip-bad-rows"), "{err}");
}

#[test]
fn skip_bad_rows_reports_the_reject_file() {
    let (dir, path) = temp_file("h.csv");
    let mut rows = recovered_payment("p1");
    rows.push(set(row("x", "p2", 0, "2026-03-01T09:00:00Z", "failed"), "amount_minor", "-3"));
    write_csv(&path, &rows);
    let rejects = dir.path().join("bad.csv");
    recoup()
        .args(["history", "check", "--skip-bad-rows", "--rejects"])
        .arg(&rejects)
        .arg(&path)
        .assert()
        .success()
        .stdout(predicate::str::contains("rejected").and(predicate::str::contains("bad.csv")));
    assert!(rejects.exists());
}

#[test]
fn simulate_then_check_as_a_new_user_would() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("h.parquet");
    recoup()
        .args(["simulate", "--payers", "200", "--months", "2", "--seed", "3", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("wrote").and(predicate::str::contains("attempts")));
    recoup().args(["history", "check"]).arg(&out).assert().success().stdout(predicate::str::contains("rejected            0"));
}

#[test]
fn simulate_rejects_bad_arguments_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    recoup()
        .args(["simulate", "--payers", "0", "--out"])
        .arg(dir.path().join("h.parquet"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--payers"));
    recoup()
        .args(["simulate", "--out"])
        .arg(dir.path().join("h.txt"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot tell the format"));
    let world = dir.path().join("w.toml");
    std::fs::write(&world, "dunning_window_days = 0\n").unwrap();
    recoup()
        .args(["simulate", "--world"])
        .arg(&world)
        .arg("--out")
        .arg(dir.path().join("h.csv"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("dunning_window_days"));
    std::fs::write(&world, "dunning_windw_days = 10\n").unwrap();
    recoup()
        .args(["simulate", "--world"])
        .arg(&world)
        .arg("--out")
        .arg(dir.path().join("h.csv"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown field"));
}

#[test]
fn print_world_round_trips_as_a_world_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = recoup().args(["simulate", "--print-world"]).assert().success().get_output().stdout.clone();
    let world = dir.path().join("w.toml");
    std::fs::write(&world, text).unwrap();
    recoup()
        .args(["simulate", "--payers", "50", "--months", "1", "-q", "--world"])
        .arg(&world)
        .arg("--out")
        .arg(dir.path().join("h.csv"))
        .assert()
        .success();
}

#[test]
fn decide_explains_the_example_and_names_a_bad_field() {
    let root = env!("CARGO_MANIFEST_DIR");
    recoup().current_dir(root).args(["decide", "examples/decide.json"]).assert().success().stdout(
        predicate::str::contains("RETRY at")
            .and(predicate::str::contains("reasons:"))
            .and(predicate::str::contains("constraint:quiet_hours")),
    );
    let out = recoup().current_dir(root).args(["decide", "--json", "examples/decide.json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON decision");
    assert_eq!(v["action"], "RETRY");
    assert!(v["chosen"]["p_success"].as_f64().unwrap() > 0.0);
    let bad = std::fs::read_to_string(format!("{root}/examples/decide.json")).unwrap().replace("\"USD\"", "\"usd\"");
    let (_d, f) = temp_file("bad.json");
    std::fs::write(&f, bad).unwrap();
    recoup().current_dir(root).args(["decide"]).arg(&f).assert().code(2).stderr(predicate::str::contains("payment.currency"));
}

/// The CLI reads a `DecideRequest` in the proto's own JSON shape (serde derives generated by
/// build.rs): past payments as `{"attempts": [...]}` decide exactly as the bare lists do, and
/// a field the proto does not have is refused by name.
#[test]
fn decide_reads_the_protos_json_shape() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/examples/decide.json")).unwrap()).unwrap();
    let decide = |v: &serde_json::Value| {
        let (_d, f) = temp_file("req.json");
        std::fs::write(&f, v.to_string()).unwrap();
        recoup().current_dir(root).args(["decide", "--json"]).arg(&f).output().unwrap()
    };
    let bare = decide(&example);
    assert!(bare.status.success(), "{}", String::from_utf8_lossy(&bare.stderr));
    let mut message = example.clone();
    let lists = message["past_payments"].as_array().unwrap().clone();
    assert!(!lists.is_empty() && lists[0].is_array(), "the example uses the bare form");
    message["past_payments"] = lists.into_iter().map(|a| serde_json::json!({ "attempts": a })).collect();
    let proto = decide(&message);
    assert!(proto.status.success(), "{}", String::from_utf8_lossy(&proto.stderr));
    assert_eq!(bare.stdout, proto.stdout, "both shapes give the same decision");
    let mut unknown = example;
    unknown["payment"]["colour"] = "red".into();
    let out = decide(&unknown);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `colour`"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `recoup models show current | head -1`: the reader has gone, and the program
/// ends quietly (SIGPIPE, as any Unix filter) instead of panicking in println!.
#[test]
#[cfg(unix)]
fn a_closed_pipe_ends_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for registry_flag in ["--dir", "--models"] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("recoup"))
            .args(["models", "show", "current", registry_flag])
            .arg(&models)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(out.status.signal(), Some(13), "ended by SIGPIPE: {:?} {stderr}", out.status);
    }
}

#[test]
fn engine_settings_out_of_range_are_refused_naming_the_field() {
    let (_dir, path) = temp_file("engine.toml");
    std::fs::write(&path, "channel_pessimism = -1\n").unwrap();
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/decide.json");
    recoup()
        .args(["decide", "--engine"])
        .arg(&path)
        .arg("--models")
        .arg(&models)
        .arg(&example)
        .assert()
        .failure()
        .stderr(predicate::str::contains("engine.toml").and(predicate::str::contains("channel_pessimism: must be a non-negative")));
    // Windows past chrono's range (the engine adds them to times) and bad quiet hours.
    for (toml, field) in [
        ("dunning_window_days = 1000000000\n", "dunning_window_days"),
        ("horizon_hours = 99999999\n", "horizon_hours"),
        ("message_quiet_hours = [25, 3]\n", "message_quiet_hours"),
        ("support_pessimism = -1\n", "support_pessimism"),
    ] {
        std::fs::write(&path, toml).unwrap();
        recoup()
            .args(["decide", "--engine"])
            .arg(&path)
            .arg("--models")
            .arg(&models)
            .arg(&example)
            .assert()
            .failure()
            .stderr(predicate::str::contains(field));
    }
    std::fs::write(&path, "channel_pessimism = 0\n").unwrap();
    recoup().args(["decide", "--engine"]).arg(&path).arg("--models").arg(&models).arg(&example).assert().success();
}

#[test]
fn serve_refuses_an_open_public_address_and_token_makes_a_usable_entry() {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    recoup()
        .args(["serve", "--addr", "0.0.0.0:0", "--metrics-addr", "off", "--models"])
        .arg(&models)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a loopback address").and(predicate::str::contains("--tokens")));
    recoup()
        .args(["serve", "--anonymous-scopes", "decide,admin", "--models"])
        .arg(&models)
        .assert()
        .failure()
        .stderr(predicate::str::contains("admin"));
    // A token entry for the tokens file (stdout) and the token itself, once (stderr).
    let out = recoup().args(["token", "--name", "billing", "--scopes", "decide,read"]).output().unwrap();
    assert!(out.status.success());
    let (entry, said) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    let token = said.lines().find(|l| l.starts_with("rcp_")).expect("the token").trim().to_string();
    assert!(!entry.contains(&token), "the file entry must not hold the token itself");
    let access = recoup::serve::auth::Access::new(Some((std::path::Path::new("tokens.toml"), &entry)), &[]).expect("a valid entry");
    let mut h = http::HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert_eq!(access.check("/recoup.v1.RetryDecider/Decide", &h), Ok("billing".to_string()));
    assert!(access.check("/trainer.TrainerService/TriggerTraining", &h).is_err());
}

/// `models seed` gives a fresh model store the bundled model once and never replaces a
/// current one; a source without a current version is a clear error.
#[test]
fn models_seed_fills_a_fresh_store_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let want = std::fs::read_to_string(bundled.join("CURRENT")).expect("bundled CURRENT").trim().to_string();
    let seed = |from: &std::path::Path| recoup().args(["models", "seed", "--from"]).arg(from).arg("--dir").arg(&store).assert();
    let current = || std::fs::read_to_string(store.join("CURRENT")).expect("CURRENT").trim().to_string();
    seed(&bundled).success().stdout(predicate::str::contains("copied"));
    assert_eq!(current(), want);
    // A second seed (every pod's start) copies nothing and keeps the current version.
    seed(&bundled).success().stdout(predicate::str::contains("nothing to copy"));
    assert_eq!(current(), want);
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    seed(&empty).code(2).stderr(predicate::str::contains("CURRENT").or(predicate::str::contains("current")));
}

/// An error's causes are printed once each on the one error line, even when a typed
/// error already says its source in its own message.
#[test]
fn an_error_says_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    for args in [vec!["models", "list", "--dir"], vec!["train", "-q", "--history"]] {
        let out = recoup().args(&args).arg(&missing).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(err.matches("No such file or directory").count(), 1, "{args:?}: {err}");
        assert!(err.contains("nowhere"), "{err}");
    }
}

/// `models residuals` on the bundled model and the sample it was trained on: by default
/// only the retries of its test split, every class and cut there, probabilities in [0, 1];
/// a cut it does not know and a time after the history are clear errors.
#[test]
fn models_residuals_scores_the_test_split_and_refuses_what_it_cannot_cut() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let plots = tempfile::tempdir().unwrap();
    let out = recoup()
        .current_dir(root)
        .args(["models", "residuals", "current", "--history", "data/sample/", "--json", "--plot"])
        .arg(plots.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A page of plots: the funds class by exact day, hour and spacing.
    let html = std::fs::read_to_string(plots.path().join("index.html")).unwrap();
    for cut in ["day_of_month_exact", "local_hour_exact", "hours_since_last_6h"] {
        let name = format!("soft_funds-{cut}.svg");
        assert!(html.contains(&name), "{html}");
        let svg = std::fs::read_to_string(plots.path().join(&name)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("predicted (the model)"), "{name}");
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = v["version"].as_str().unwrap();
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("models").join(version).join("metrics.json")).unwrap()).unwrap();
    // The default range is the model's test split: as many retries as it was tested on.
    assert_eq!(v["since"], metrics["test_from"]);
    let r = &v["residuals"];
    assert_eq!(r["retries"], metrics["test_examples"]);
    let classes: Vec<&str> = r["classes"].as_array().unwrap().iter().map(|c| c["class"].as_str().unwrap()).collect();
    assert!(classes.contains(&"soft_funds") && classes.contains(&"soft_issuer"), "{classes:?}");
    let cells = r["cells"].as_array().unwrap();
    for c in cells {
        for k in ["predicted", "observed"] {
            let p = c[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{c}");
        }
    }
    let day = cells.iter().find(|c| c["cut"] == "day_of_month_exact" && c["value"] == "3" && c["class"] == "soft_funds").unwrap();
    assert_eq!(day["level"], "day_of_month=1-5");
    // Every soft-funds retry falls in one day of the month.
    let funds = r["classes"].as_array().unwrap().iter().find(|c| c["class"] == "soft_funds").unwrap();
    let by_day: u64 = cells
        .iter()
        .filter(|c| c["cut"] == "day_of_month_exact" && c["class"] == "soft_funds")
        .map(|c| c["retries"].as_u64().unwrap())
        .sum();
    assert_eq!(by_day, funds["retries"].as_u64().unwrap());

    // Everything before the test split: the examples it fitted and calibrated on.
    let test_from = metrics["test_from"].as_str().unwrap();
    let before = recoup()
        .current_dir(root)
        .args(["models", "residuals", "current", "-q", "--history", "data/sample/", "--json", "--since", "all", "--until", test_from])
        .output()
        .unwrap();
    assert!(before.status.success(), "{}", String::from_utf8_lossy(&before.stderr));
    let b: serde_json::Value = serde_json::from_slice(&before.stdout).unwrap();
    let trained_on = metrics["examples"].as_u64().unwrap() - metrics["test_examples"].as_u64().unwrap();
    assert_eq!(b["residuals"]["retries"].as_u64().unwrap(), trained_on);

    let bad = recoup()
        .current_dir(root)
        .args(["models", "residuals", "current", "--history", "data/sample/", "--cut", "moon_phase"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--cut \"moon_phase\": not a cut") && err.contains("day_of_month_exact"), "{err}");
    let late = recoup()
        .current_dir(root)
        .args(["models", "residuals", "current", "-q", "--history", "data/sample/", "--since", "2031-01-01"])
        .output()
        .unwrap();
    assert_eq!(late.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("no retry at or after 2031-01-01T00:00:00+00:00"),
        "{}",
        String::from_utf8_lossy(&late.stderr)
    );
}
