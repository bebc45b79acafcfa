//! Training: no training/serving skew, pay-day inference against known truth,
//! model quality against the baselines, determinism, and the registry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use recoup::attempt::Attempt;
use recoup::domain::Channel;
use recoup::features::{payment_evidence, Candidate, EarlierAttempt, PaymentFacts, PaymentState};
use recoup::history::{load, History, LoadOptions};
use recoup::payday::{infer, same_pay_days};
use recoup::sim::{World, WorldConfig};
use recoup::train::{build, train, TrainConfig};

use predicates::prelude::PredicateBooleanExt;

const SEED: u64 = 77;

/// A simulated history (4,000 payers × 12 months) written to Parquet and loaded back.
fn shared() -> &'static (World, History, PathBuf) {
    static H: OnceLock<(World, History, PathBuf)> = OnceLock::new();
    H.get_or_init(|| {
        let world = World::new(WorldConfig::default(), SEED, 12);
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let path = dir.join("sim.parquet");
        let mut df = recoup::sim::generate::chunk(&world, 0..4_000).to_frame().expect("frame");
        polars::prelude::ParquetWriter::new(std::fs::File::create(&path).unwrap()).finish(&mut df).unwrap();
        let h = load(&path, &LoadOptions::default()).expect("loads");
        (world, h, path)
    })
}

/// The scoring path: everything rebuilt from a request-shaped view of the history
/// (the payment's earlier attempts and the payer's other payments, found by id text),
/// not from the batch path's grouping.
fn from_request(h: &History, retry: &Attempt) -> Vec<u16> {
    let payment_id = h.payment_id(retry);
    let customer_id = h.customer_id(retry);
    let earlier: Vec<&Attempt> =
        h.attempts.iter().filter(|a| h.payment_id(a) == payment_id && a.attempt_number < retry.attempt_number).collect();
    let first_at = earlier[0].attempted_at;
    // Past payments of the payer, as (time, decline) lists.
    let mut past: HashMap<&str, recoup::engine::PastPayment> = HashMap::new();
    for a in h.attempts.iter().filter(|a| h.customer_id(a) == customer_id && h.payment_id(a) != payment_id) {
        past.entry(h.payment_id(a)).or_default().push((a.attempted_at, a.decline));
    }
    let mut evidence = Vec::new();
    for (_, mut attempts) in past {
        attempts.sort();
        evidence.extend(payment_evidence(retry.timezone, &attempts).into_iter().filter(|(t, _)| *t < first_at).map(|(_, e)| e));
    }
    let last = earlier[earlier.len() - 1];
    let facts = PaymentFacts {
        amount_minor: last.amount.minor,
        currency: last.amount.currency,
        method: last.method,
        card_brand: last.card_brand,
        card_funding: last.card_funding,
        country: last.country,
        timezone: last.timezone,
        billing_interval: last.billing_interval,
        tenure_days: last.tenure_days,
    };
    let earlier: Vec<EarlierAttempt> = earlier
        .iter()
        .map(|a| EarlierAttempt {
            network_code: None,
            card: None,
            at: a.attempted_at,
            decline: a.decline.expect("earlier attempts failed"),
            advice_code: a.advice_code,
            channel: a.channel,
            payment_method_updated: a.payment_method_updated == Some(true),
        })
        .collect();
    // As the engine does: after a failed retry, its funds declines are pay-day evidence too.
    let evidence = recoup::features::evidence_with_retries(&evidence, retry.timezone, &earlier);
    let state = PaymentState::new(facts, &earlier, retry.payment_method_updated == Some(true), &evidence).expect("state");
    state.encode(&Candidate { at: retry.attempted_at, channel: retry.channel.unwrap_or(Channel::None) })
}

#[test]
fn batch_and_scoring_paths_build_identical_vectors() {
    let (_, h, _) = shared();
    let set = build(h);
    assert!(set.len() > 5_000, "{} examples", set.len());
    let by_payment: HashMap<u32, &[Attempt]> = h.payments().map(|p| (p[0].payment.0, p)).collect();
    let mut checked = 0;
    for i in (0..set.len()).step_by(37) {
        let retry = by_payment[&set.payments[i]].iter().find(|a| a.attempted_at == set.times[i]).expect("the example's retry");
        let v = from_request(h, retry);
        assert_eq!(v.as_slice(), set.row(i), "example {i} (attempt {})", h.attempt_id(retry));
        checked += 1;
    }
    assert!(checked > 100, "{checked}");
}

#[test]
fn pay_day_inference_beats_the_country_prior_on_simulated_payers() {
    let (world, h, _) = shared();
    // Evidence per payer from everything they did.
    let mut by_payer: HashMap<u32, Vec<&[Attempt]>> = HashMap::new();
    for p in h.payments() {
        let id: u32 = h.customer_id(&p[0]).trim_start_matches("cus_").parse().expect("cus_N");
        by_payer.entry(id).or_default().push(p);
    }
    let (mut n, mut hit, mut prior_hit, mut n_ev, mut hit_ev, mut prior_hit_ev) = (0, 0, 0, 0, 0, 0);
    for (id, payments) in by_payer {
        let payer = world.payer(id);
        let evidence: Vec<_> = payments
            .iter()
            .flat_map(|p| payment_evidence(payer.timezone, &p.iter().map(|a| (a.attempted_at, a.decline)).collect::<Vec<_>>()))
            .map(|(_, e)| e)
            .collect();
        let est = infer(payer.country, &evidence);
        let prior = infer(payer.country, &[]);
        let from = world.cfg.start;
        let ok = same_pay_days(payer.country, &est.schedule, &payer.schedule, from);
        let prior_ok = same_pay_days(payer.country, &prior.schedule, &payer.schedule, from);
        n += 1;
        hit += ok as u32;
        prior_hit += prior_ok as u32;
        if evidence.len() >= 3 {
            n_ev += 1;
            hit_ev += ok as u32;
            prior_hit_ev += prior_ok as u32;
        }
    }
    let pct = |a: u32, b: u32| 100.0 * a as f64 / b.max(1) as f64;
    eprintln!(
        "pay-day inference: all payers {:.1} % exact (prior alone {:.1} %, n={n}); with ≥3 pieces of evidence {:.1} % (prior {:.1} %, n={n_ev})",
        pct(hit, n), pct(prior_hit, n), pct(hit_ev, n_ev), pct(prior_hit_ev, n_ev)
    );
    assert!(n_ev > 100, "{n_ev} payers with evidence");
    assert!(hit >= prior_hit, "inference must not do worse than the prior overall");
    assert!(pct(hit_ev, n_ev) > pct(prior_hit_ev, n_ev) + 5.0, "evidence must help where there is some");
}

#[test]
fn model_beats_both_baselines_and_is_calibrated() {
    let (_, h, _) = shared();
    let set = build(h);
    let t = train(&set, &TrainConfig::default(), &mut |_| {}).expect("trains");
    let r = &t.report;
    eprintln!(
        "model {:?}\ncode {:?}\ncode×payday {:?}",
        (r.model.log_loss, r.model.auc, r.model.ece),
        (r.baseline_code.log_loss, r.baseline_code.auc),
        (r.baseline_code_payday.log_loss, r.baseline_code_payday.auc)
    );
    assert!(r.model.log_loss < r.baseline_code.log_loss && r.model.log_loss < r.baseline_code_payday.log_loss);
    assert!(r.model.auc > r.baseline_code.auc && r.model.auc > r.baseline_code_payday.auc);
    assert!(r.model.ece < 0.03, "ECE {}", r.model.ece);
    // The time split: every test example is later than every training example.
    let test_from = r.test_from.expect("test split");
    assert!(set.times[..r.fit_examples + r.calibration_examples].iter().all(|t| *t <= test_from));
    // Calibration table counts every test example once.
    assert_eq!(r.model.calibration.iter().map(|b| b.1).sum::<usize>(), r.test_examples);
    assert!(r.model.auc_by_class.iter().any(|(c, _, _)| c == "soft_funds"));
    // Channel response: the model's counterfactual lift agrees with the lift the
    // randomized logging measured, wherever the data can tell (3 SE).
    let checked: Vec<_> = r.channel_lift.iter().filter(|l| l.examples >= 300).collect();
    assert!(checked.iter().any(|l| l.class == "soft_funds" && l.channel == "email"), "{:?}", r.channel_lift);
    for l in checked {
        assert!((l.predicted_lift - l.observed_lift).abs() <= 3.0 * l.observed_se, "{l:?}");
    }
}

fn recoup() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("recoup").unwrap()
}

fn only_version(dir: &Path) -> String {
    let v = recoup::registry::list(dir).expect("list");
    assert_eq!(v.len(), 1, "{v:?}");
    v[0].clone()
}

#[test]
fn training_twice_gives_identical_artifacts_and_the_registry_promotes_atomically() {
    let (_, _, path) = shared();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (out, threads) in [(&a, "1"), (&b, "2")] {
        recoup().args(["train", "-q", "--history"]).arg(path).arg("--out").arg(out).args(["--threads", threads]).assert().success();
    }
    let (va, vb) = (only_version(&a), only_version(&b));
    for f in ["model.json", "metrics.json"] {
        let (x, y) = (std::fs::read(a.join(&va).join(f)).unwrap(), std::fs::read(b.join(&vb).join(f)).unwrap());
        assert!(x == y, "{f} differs between runs");
    }
    // Same model digest in the name; only the creation time differs.
    assert_eq!(va.rsplit('-').next(), vb.rsplit('-').next());
    // Nothing current until promoted; promote, list marks it, show prints the card.
    recoup().args(["models", "show", "current", "--dir"]).arg(&a).assert().failure().stderr(predicates::str::contains("no current model"));
    recoup().args(["models", "promote", &va, "--dir"]).arg(&a).assert().success();
    assert_eq!(recoup::registry::current(&a).unwrap(), va);
    recoup().args(["models", "list", "--dir"]).arg(&a).assert().success().stdout(predicates::str::contains(format!("* {va}")));
    // The log always had the card's funding and the tenure: a request without them is scored
    // at the log's most common values, and the answer says so; one with them is scored as sent.
    let model = recoup::registry::load_current(&a).expect("loads").1;
    assert!(model.imputation.card_funding.is_some() && model.imputation.tenure_days.is_some(), "{:?}", model.imputation);
    let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/decide.json")).unwrap();
    let bare = tmp.path().join("bare.json");
    std::fs::write(&bare, example.replace("\"card_funding\": \"debit\",", "").replace("\"tenure_days\": 400,", "")).unwrap();
    let decided = |req: &Path| {
        let out = recoup().args(["decide", "--json", "--models"]).arg(&a).arg(req).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["code"].as_str().filter(|c| c.starts_with("imputed:")).map(String::from))
            .collect::<Vec<_>>()
    };
    assert_eq!(decided(&bare), ["imputed:card_funding", "imputed:tenure_days"]);
    assert!(decided(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/decide.json")).is_empty());
    recoup().args(["models", "show", "current", "--dir"]).arg(&a).assert().success().stdout(
        predicates::str::contains("baseline: rate per decline code")
            .and(predicates::str::contains("## Where the model is wrong (test split)"))
            .and(predicates::str::contains("loads with this build: yes")),
    );
    // The card's residuals are those `models residuals` measures on the same history.
    let (_, report) = recoup::registry::describe(&a, &va).expect("metrics");
    let card = report.residuals.expect("training measured the residuals");
    assert!(card.finer, "a single-process train makes the finer cuts");
    assert_eq!(card.retries, report.test_examples);
    let out =
        recoup().args(["models", "residuals", "current", "-q", "--json", "--dir"]).arg(&a).arg("--history").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let measured: Vec<recoup::residuals::Cell> = serde_json::from_value(v["residuals"]["classes"].clone()).unwrap();
    assert_eq!(measured, card.classes);
    recoup()
        .args(["models", "promote", "nope", "--dir"])
        .arg(&a)
        .assert()
        .failure()
        .stderr(predicates::str::contains("\"nope\" not found"));
    assert_eq!(recoup::registry::current(&a).unwrap(), va, "a failed promote leaves the pointer alone");
    // A model whose schema differs from the code's is refused with the column named.
    let model_path = a.join(&va).join("model.json");
    let text = std::fs::read_to_string(&model_path).unwrap().replacen("decline_code=insufficient_funds", "decline_code=broke", 1);
    std::fs::write(&model_path, text).unwrap();
    let err = recoup::registry::load_current(&a).unwrap_err().to_string();
    assert!(err.contains("column 0") && err.contains("decline_code=broke") && err.contains("retrain"), "{err}");
}

#[test]
fn too_little_history_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("h.csv");
    std::fs::write(
        &csv,
        "attempt_id,payment_id,customer_id,attempted_at,attempt_number,amount_minor,currency,payment_method,country,outcome\n\
        a1,p1,c1,2025-01-01T00:00:00Z,0,999,USD,card,US,succeeded\n",
    )
    .unwrap();
    recoup()
        .args(["train", "--history"])
        .arg(&csv)
        .arg("--out")
        .arg(tmp.path().join("m"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("training needs at least 100"))
        // A platform that gives each retry its own charge id is told what payment_id must be.
        .stderr(predicates::str::contains("payment_id must be the invoice"));
    assert!(!tmp.path().join("m").exists(), "no artifact on failure");
}

#[test]
fn the_shipped_default_model_loads_with_this_build() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let (version, model) = recoup::registry::load_current(&dir)
        .unwrap_or_else(|e| panic!("{e} (retrain it: cargo run --release -- train --promote, and commit models/)"));
    let (_, report) = recoup::registry::describe(&dir, &version).expect("metrics");
    assert_eq!(model.weights.len(), recoup::features::SCHEMA.len());
    assert!(report.model.log_loss < report.baseline_code_payday.log_loss, "the default model beats the baselines");
}

#[test]
fn the_trees_family_trains_the_same_on_any_thread_count_and_decides() {
    let (_, _, path) = shared();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (out, threads) in [(&a, "1"), (&b, "2")] {
        recoup()
            .args(["train", "-q", "--family", "trees", "--max-trees", "30", "--leaves", "15", "--history"])
            .arg(path)
            .arg("--out")
            .arg(out)
            .args(["--threads", threads])
            .assert()
            .success();
    }
    let (va, vb) = (only_version(&a), only_version(&b));
    for f in ["model.json", "metrics.json"] {
        let (x, y) = (std::fs::read(a.join(&va).join(f)).unwrap(), std::fs::read(b.join(&vb).join(f)).unwrap());
        assert!(x == y, "{f} differs between thread counts");
    }
    let (_, report) = recoup::registry::describe(&a, &va).expect("metrics");
    assert!(report.trees > 0 && report.model.log_loss < report.baseline_code_payday.log_loss, "{} trees, {:?}", report.trees, report.model);
    recoup().args(["models", "promote", &va, "--models"]).arg(&a).assert().success();
    recoup()
        .args(["models", "show", "current", "--models"])
        .arg(&a)
        .assert()
        .success()
        .stdout(predicates::str::contains("boosted trees").and(predicates::str::contains("loads with this build: yes")));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/decide.json");
    recoup().args(["decide", "--models"]).arg(&a).arg(&example).assert().success().stdout(predicates::str::contains("trees:"));
    // Settings out of range are refused before any work.
    recoup()
        .args(["train", "--family", "trees", "--leaves", "1", "--out"])
        .arg(tmp.path().join("c"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("2..=4096"));
    recoup()
        .args(["train", "--learning-rate", "0", "--out"])
        .arg(tmp.path().join("c"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("(0, 1]"));
    recoup()
        .args(["train", "--max-trees", "0", "--out"])
        .arg(tmp.path().join("c"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("at least 1"));
    assert!(!tmp.path().join("c").exists(), "nothing written for refused settings");
}

#[test]
fn train_skips_bad_rows_when_asked_and_says_how_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("h.csv");
    recoup::history::write(&shared().1, &csv).unwrap();
    let mut text = std::fs::read(&csv).unwrap();
    text.extend_from_slice(b"broken,\"row\n");
    std::fs::write(&csv, text).unwrap();
    recoup()
        .args(["train", "-q", "--history"])
        .arg(&csv)
        .arg("--out")
        .arg(tmp.path().join("a"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("--skip-bad-rows"));
    let rejects = tmp.path().join("rejects.csv");
    recoup()
        .args(["train", "-q", "--skip-bad-rows", "--rejects"])
        .arg(&rejects)
        .arg("--history")
        .arg(&csv)
        .arg("--out")
        .arg(tmp.path().join("b"))
        .assert()
        .success();
    assert!(std::fs::read_to_string(&rejects).unwrap().contains("unbalanced quote"));
    only_version(&tmp.path().join("b"));
    // A shard job writes its own reject file (a row without a customer id is shard 0's).
    for k in 0..2 {
        recoup()
            .args(["train", "-q", "--skip-bad-rows", "--rejects"])
            .arg(&rejects)
            .args(["--features-only", "--shard", &format!("{k}/2"), "--history"])
            .arg(&csv)
            .arg("--features")
            .arg(tmp.path().join("features"))
            .assert()
            .success();
    }
    assert!(std::fs::read_to_string(tmp.path().join("rejects.shard0.csv")).unwrap().contains("unbalanced quote"));
    let fit =
        recoup().args(["train", "--features"]).arg(tmp.path().join("features")).arg("--out").arg(tmp.path().join("c")).output().unwrap();
    assert!(fit.status.success(), "{}", String::from_utf8_lossy(&fit.stderr));
    assert!(String::from_utf8_lossy(&fit.stderr).contains("skipped 1 rows"), "{}", String::from_utf8_lossy(&fit.stderr));
}

/// `--learning-curve`: every share scored on one common test split, more payers never
/// fewer retries, and the full history fits the test split better than the smallest share;
/// `--sample-payers` trains on the stable-hash sample and says so.
#[test]
fn the_learning_curve_scores_growing_samples_on_one_test_split() {
    let (_, h, path) = shared();
    let out = recoup().args(["train", "-q", "--learning-curve", "--history"]).arg(path).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // Rows: share %, train retries, test, log loss, AUC, ECE, fit s.
    let rows: Vec<Vec<f64>> = text
        .lines()
        .filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().map(|v| v.trim_end_matches('%').parse().unwrap_or(f64::NAN)).collect())
        .collect();
    assert!(rows.len() >= 4, "{text}");
    assert!(rows.iter().all(|r| r[2] == rows[0][2]), "one common test split: {text}");
    assert!(rows.windows(2).all(|w| w[1][1] >= w[0][1]), "more payers, more retries: {text}");
    let (first, last) = (&rows[0], rows.last().expect("rows"));
    assert_eq!(last[0], 100.0, "{text}");
    assert!(last[3] < first[3], "the full history predicts the test split better than {}% of it: {text}", first[0]);

    // A sampled version: a quarter of the payers, by the documented hash.
    let tmp = tempfile::tempdir().unwrap();
    let run =
        recoup().args(["train", "--sample-payers", "0.25", "--history"]).arg(path).arg("--out").arg(tmp.path()).output().expect("runs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let payers = (0..h.customer_ids.len() as u32).filter(|&c| recoup::learning_curve::payer_fraction(h.customer_ids.get(c)) < 0.25).count();
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(said.contains(&format!("sampled {payers} of {} payers", h.customer_ids.len())), "{said}");
    recoup().args(["train", "--sample-payers", "0", "--history"]).arg(path).assert().failure().stderr(predicates::str::contains("(0, 1]"));
}

#[test]
fn sharded_training_writes_the_same_model_as_one_process() {
    let (_, h, path) = shared();
    let tmp = tempfile::tempdir().unwrap();
    let (single, sharded, features) = (tmp.path().join("single"), tmp.path().join("sharded"), tmp.path().join("features"));
    let family = ["--family", "trees", "--max-trees", "20", "--leaves", "15", "--name", "v1"];
    recoup().args(["train", "-q", "--history"]).arg(path).arg("--out").arg(&single).args(family).assert().success();
    // The fit step refuses an incomplete set, naming what is missing.
    for k in [2, 0] {
        recoup()
            .args(["train", "-q", "--features-only", "--shard", &format!("{k}/3"), "--history"])
            .arg(path)
            .arg("--features")
            .arg(&features)
            .assert()
            .success()
            .stdout(predicates::str::contains(format!("shard {k} of 3 written")));
    }
    recoup()
        .args(["train", "-q", "--features"])
        .arg(&features)
        .arg("--out")
        .arg(&sharded)
        .assert()
        .failure()
        .stderr(predicates::str::contains("2 of 3 shards are finished; missing: 1"));
    recoup()
        .args(["train", "-q", "--features-only", "--shard", "1/3", "--history"])
        .arg(path)
        .arg("--features")
        .arg(&features)
        .assert()
        .success();
    // Every attempt is in exactly one shard, and each shard read all the rows.
    let metas: Vec<recoup::digest::ShardMeta> =
        recoup::digest::find_shards(&features).expect("a complete set").into_iter().map(|(_, m)| m).collect();
    assert_eq!(metas.iter().map(|m| m.attempts).sum::<u64>(), h.attempts.len() as u64);
    for m in &metas {
        assert_eq!(m.attempts + m.rows_other_shards, h.attempts.len() as u64, "shard {}", m.shard);
        assert!(m.attempts as f64 > 0.2 * h.attempts.len() as f64, "shard {} holds {} attempts", m.shard, m.attempts);
    }
    recoup().args(["train", "-q", "--features"]).arg(&features).arg("--out").arg(&sharded).args(family).assert().success();
    for f in ["model.json", "metrics.json"] {
        let (x, y) = (std::fs::read(single.join("v1").join(f)).unwrap(), std::fs::read(sharded.join("v1").join(f)).unwrap());
        assert!(x == y, "{f} differs between the single and the sharded train");
    }
    // A damaged shard.json is refused, naming the file.
    let meta = features.join("shard-00001-of-00003/shard.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    let retries = text.lines().find(|l| l.trim_start().starts_with("\"retries\"")).expect("attrition retries").to_string();
    std::fs::write(&meta, text.replacen(&retries, "      \"retries\": 1", 1)).unwrap();
    recoup()
        .args(["train", "-q", "--features"])
        .arg(&features)
        .arg("--out")
        .arg(tmp.path().join("damaged"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("shard-00001-of-00003").and(predicates::str::contains("damaged")));
    std::fs::write(&meta, text).unwrap();
    // A shard of another split of payers does not mix in.
    recoup()
        .args(["train", "-q", "--features-only", "--shard", "0/2", "--history"])
        .arg(path)
        .arg("--features")
        .arg(&features)
        .assert()
        .success();
    recoup()
        .args(["train", "-q", "--features"])
        .arg(&features)
        .arg("--out")
        .arg(tmp.path().join("mixed"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("the number of shards differs"));
    // Bad shard arguments are refused before any work.
    for (arg, says) in [("3/3", "below the count"), ("1", "expected K/N"), ("0/0", "1..=99999")] {
        recoup()
            .args(["train", "--features-only", "--features"])
            .arg(&features)
            .args(["--shard", arg])
            .assert()
            .failure()
            .stderr(predicates::str::contains(says));
    }
    recoup().args(["train", "--shard", "0/2"]).assert().failure().stderr(predicates::str::contains("--features-only"));
}

/// Calibration where the policy acts (#20): training replays the engine on the calibration
/// window's logged retries, moves each class's offset toward what the retries near its
/// choices realised, says so in the model card, and scores the test split with the result.
#[test]
fn training_refits_the_calibration_where_the_policy_acts() {
    let (_, _, path) = shared();
    let tmp = tempfile::tempdir().unwrap();
    let run = recoup().args(["train", "--history"]).arg(path).arg("--out").arg(tmp.path()).output().expect("runs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(
        said.contains("calibration where the policy acts:") && said.contains("logged retries of the calibration window replayed"),
        "{said}"
    );
    assert!(said.contains("  refit soft_funds") && said.contains("  held out (test window) soft_funds"), "{said}");
    let v = only_version(tmp.path());
    let report: recoup::train::TrainReport =
        serde_json::from_slice(&std::fs::read(tmp.path().join(&v).join("metrics.json")).unwrap()).expect("metrics.json");
    let a = &report.acting_calibration;
    assert!(a.skipped.is_none(), "{a:?}");
    assert!(a.replayed > 500 && a.policy_retries > 0 && a.policy_retries <= a.replayed, "{a:?}");
    assert!(a.cells.iter().any(|c| c.class == "soft_funds" && c.weight > 20.0), "{a:?}");
    for c in &a.cells {
        // The offset moves the weighted mean toward what was realised, never past it by much.
        assert!((c.predicted_after - c.observed).abs() <= (c.predicted_before - c.observed).abs() + 1e-9, "{c:?}");
        assert!(c.retries > 0 && c.weight > 0.0 && c.weight <= c.retries as f64 + 1e-9, "{c:?}");
    }
    // The shipped scalings carry the offsets: a cell that moved differs from the whole split's fit.
    let model: recoup::model::SuccessModel =
        serde_json::from_slice(&std::fs::read(tmp.path().join(&v).join("model.json")).unwrap()).expect("model.json");
    assert!(a.cells.iter().any(|c| c.offset.abs() > 1e-3), "{a:?}");
    assert!(model.class_platt.iter().flatten().all(|p| p.a.is_finite() && p.b.is_finite()));
    assert!(!a.test.is_empty() && a.test.iter().all(|c| c.weight > 0.0 && (0.0..=1.0).contains(&c.predicted)), "{a:?}");
    // Each side carries its noise, and a held-out cell is placed against its refit in those units.
    assert!(a.cells.iter().all(|c| c.se > 0.0 && c.se < 0.5), "{a:?}");
    assert!(a.test.iter().all(|c| c.se > 0.0 && c.se < 0.5), "{a:?}");
    let funds = a.test.iter().find(|c| c.class == "soft_funds").expect("a held-out soft_funds cell");
    let z = a.disagreement(funds).expect("both sides have a standard error");
    assert!(z.is_finite() && z.signum() == (funds.observed - funds.predicted).signum(), "{z} {funds:?}");
    assert!(said.contains("SE from the refit"), "{said}");
    let card = std::fs::read_to_string(tmp.path().join(&v).join("MODEL_CARD.md")).unwrap();
    assert!(card.contains("where the policy acts") && card.contains("logged retries replayed"), "{card}");
    assert!(card.contains("Held out: the test window's logged retries") && card.contains("| from the refit |"), "{card}");
    assert!(card.contains(&format!("{:+.1} SE", z)), "{card}");
}

/// Sharded training's fit step reads one shard of payers back from the history for the
/// calibration where the policy acts; when the history is gone, it still writes the version,
/// without the refit, and the model card says why.
#[test]
fn a_sharded_fit_without_its_history_skips_the_refit_and_says_why() {
    let (_, _, path) = shared();
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("history.parquet");
    std::fs::copy(path, &copy).unwrap();
    let features = tmp.path().join("features");
    recoup()
        .args(["train", "-q", "--features-only", "--shard", "0/1", "--history"])
        .arg(&copy)
        .arg("--features")
        .arg(&features)
        .assert()
        .success();
    std::fs::remove_file(&copy).unwrap();
    let out = tmp.path().join("models");
    let fit = recoup().args(["train", "--features"]).arg(&features).arg("--out").arg(&out).output().unwrap();
    assert!(fit.status.success(), "{}", String::from_utf8_lossy(&fit.stderr));
    let said = String::from_utf8_lossy(&fit.stderr);
    assert!(said.contains("calibration where the policy acts: skipped (reading"), "{said}");
    let v = only_version(&out);
    let card = std::fs::read_to_string(out.join(&v).join("MODEL_CARD.md")).unwrap();
    assert!(card.contains("Calibration where the policy acts: not done for this version (reading"), "{card}");
    assert!(card.contains("history.parquet"), "the card names the file it could not read: {card}");
}

/// What the ask estimate reads survives sharding: a careless log's intervals (each with the
/// message before it, for the lagged-response fit), with a third of its updated retries marked
/// `update_triggered`, trains to the same model.json in one process and in two shards.
#[test]
fn sharded_training_keeps_the_ask_inputs() {
    let cfg = recoup::sim::zoo::preset("careless-log").unwrap().check().expect("a valid world");
    let mut h = recoup::sim::generate::chunk(&World::new(cfg, 47, 12), 0..4_000).history;
    let mut marked = 0;
    for a in h.attempts.iter_mut().filter(|a| a.payment_method_updated == Some(true) && a.payment.0 % 3 == 0) {
        a.update_triggered = true;
        marked += 1;
    }
    assert!(marked > 20, "{marked} retries marked");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("careless.parquet");
    let mut df = recoup::history::to_frame(&h).expect("a frame");
    recoup::history::write_frame(&mut df, &path).expect("writes");
    let (single, sharded, features) = (tmp.path().join("single"), tmp.path().join("sharded"), tmp.path().join("features"));
    let args = ["--family", "logistic", "--name", "v1"];
    recoup().args(["train", "-q", "--history"]).arg(&path).arg("--out").arg(&single).args(args).assert().success();
    for k in 0..2 {
        let shard = format!("{k}/2");
        recoup()
            .args(["train", "-q", "--features-only", "--shard", &shard, "--history"])
            .arg(&path)
            .arg("--features")
            .arg(&features)
            .assert()
            .success();
    }
    recoup().args(["train", "-q", "--features"]).arg(&features).arg("--out").arg(&sharded).args(args).assert().success();
    let (x, y) = (std::fs::read(single.join("v1/model.json")).unwrap(), std::fs::read(sharded.join("v1/model.json")).unwrap());
    assert!(x == y, "model.json differs between the single and the sharded train");
    let model = String::from_utf8(x).unwrap();
    assert!(model.contains("needs-update payments left out of the intervals"), "the marks reached the ask estimate");
    assert!(model.contains("\"own_interval_share\""), "the time-to-update model was fitted");
}

/// A merchant with a small history (138 retries here) gets a model that
/// retries a funds decline the way its log recovered them, not one that gives
/// every payment up: a local hour the log retried at a handful of times is
/// inside the support (with 20 retries an hour required, no hour was, and this
/// answer was "stop for good"). The lower bound's prior floor, which a foreign
/// tiny log needed too, is `train::tests::weight_variances_are_the_inverse_diagonal_precision`
/// (this simulator's small logs pick a strong penalty, so it does not bind here).
#[test]
fn a_small_history_trains_a_model_that_still_retries() {
    let world = World::new(WorldConfig::default(), SEED, 12);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("small.parquet");
    let h = recoup::sim::generate::chunk(&world, 0..60).history;
    recoup::history::write(&h, &path).expect("written");
    let retries = h.attempts.iter().filter(|a| a.attempt_number > 0).count();
    assert!((100..960).contains(&retries), "a small log: {retries} retries");
    let models = tmp.path().join("m");
    recoup()
        .args(["train", "--promote", "--history"])
        .arg(&path)
        .arg("--out")
        .arg(&models)
        .assert()
        .success()
        .stderr(predicates::str::contains("a small history: 138 retries to learn from (fewer than 1000)"));
    let card = std::fs::read_to_string(models.join(only_version(&models)).join("MODEL_CARD.md")).unwrap();
    assert!(card.contains("**Warning:** a small history: 138 retries"), "{card}");
    let out = recoup()
        .args(["decide", "--json", "--models"])
        .arg(&models)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/decide.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["action"], "RETRY", "{}", serde_json::to_string_pretty(&v["reasons"]).unwrap());
}

/// A log with no retry after an update (no flags, no method ids: a platform's bare export)
/// cannot teach what a replaced method does, and one with a handful teaches it only through
/// the penalty that shrinks every weight toward 0. Training says so, in its output and the
/// model card, and scores a needs-update retry on a replaced method near the log's
/// original-charge success rate (a prior) instead of at the rate of the log's retries of the
/// dead card. The same log with all its flags learns it: its own retries after an update set
/// the weight (the prior carries a tenth of it at most), and nothing is said.
#[test]
fn a_log_with_few_or_no_updates_scores_a_replaced_method_near_its_original_charges_rate() {
    let cfg = recoup::sim::zoo::preset("careless-log").expect("preset").check().expect("valid");
    let world = World::new(cfg, SEED, 12);
    let mut h = recoup::sim::generate::chunk(&world, 0..3_000).history;
    let tmp = tempfile::tempdir().unwrap();
    let flagged = tmp.path().join("flagged.parquet");
    recoup::history::write(&h, &flagged).expect("written");
    // A few: the payments with a retry after an update, all but three of them left out whole.
    let updated: Vec<_> =
        h.payments().filter(|p| p.iter().any(|a| a.attempt_number > 0 && a.method_updated())).map(|p| p[0].payment).collect();
    assert!(updated.len() > 50, "{} payments with an update", updated.len());
    let mut few = h.clone();
    few.attempts.retain(|a| !updated[3..].contains(&a.payment));
    let few_path = tmp.path().join("few.parquet");
    recoup::history::write(&few, &few_path).expect("written");
    // The same few, as lost cards (a hard decline: retried only on a replaced card).
    let mut lost = few.clone();
    for a in lost.attempts.iter_mut().filter(|a| a.decline.is_some_and(|d| d.class() == recoup::declines::DeclineClass::NeedsUpdate)) {
        a.decline = Some(recoup::declines::DeclineCode::LostCard);
        a.network_code = None;
    }
    let lost_path = tmp.path().join("lost.parquet");
    recoup::history::write(&lost, &lost_path).expect("written");
    for a in &mut h.attempts {
        a.payment_method_updated = None;
        a.card = None;
    }
    let bare = tmp.path().join("bare.parquet");
    recoup::history::write(&h, &bare).expect("written");
    let train = |history: &Path, out: &str| {
        let models = tmp.path().join(out);
        let run = recoup().args(["train", "--promote", "--history"]).arg(history).arg("--out").arg(&models).output().unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let version = only_version(&models);
        let card = std::fs::read_to_string(models.join(&version).join("MODEL_CARD.md")).unwrap();
        (models, String::from_utf8_lossy(&run.stderr).into_owned(), card)
    };
    let (models, said, card) = train(&flagged, "flagged");
    assert!(
        !said.contains("after a needs_update decline followed an update") && !card.contains("a needs_update decline followed"),
        "{card}"
    );
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models.join(only_version(&models)).join("metrics.json")).unwrap()).unwrap();
    let u = metrics["updated_priors"].as_array().unwrap().iter().find(|u| u["class"] == "needs_update").expect("needs_update");
    // 90 retries after an update here: the log's own estimate, the prior's weight a tenth at most.
    assert!(u["updated_retries"].as_u64().unwrap() > 50 && u["evidence_share"].as_f64().unwrap() > 0.9, "{u}");

    // The failed share of the log's payments, from the history itself.
    let payments = h.payments().count();
    let failed = h.payments().filter(|p| p[0].outcome == recoup::domain::Outcome::Failed).count();
    let original_success = 1.0 - failed as f64 / payments as f64;
    // An expired card the payer replaced: retried, near that rate; the log's own retries of
    // needs-update payments (mostly the dead card) succeed far less.
    let needs_update: Vec<bool> = h
        .payments()
        .flat_map(|p| p.windows(2).filter(|w| w[0].decline.is_some_and(|d| d.class() == recoup::declines::DeclineClass::NeedsUpdate)))
        .map(|w| w[1].outcome == recoup::domain::Outcome::Succeeded)
        .collect();
    let logged = needs_update.iter().filter(|&&s| s).count() as f64 / needs_update.len() as f64;
    assert!(logged < original_success - 0.3, "the log's needs-update retries {logged:.3}, originals {original_success:.3}");
    let mut req: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/decide.json")).unwrap())
            .unwrap();
    req["payment_method_updated"] = true.into();
    req["payment"]["payment_method_id"] = "pm_new".into();
    req["past_payments"] = serde_json::json!([]);
    // The P of a retry on a replaced card after ISO code `code` (54 expired, 41 lost).
    let replaced_p = |models: &Path, code: &str| {
        let mut req = req.clone();
        req["attempts"][0]["network_code"] = code.into();
        let out = recoup().args(["decide", "--json", "--models"]).arg(models).arg("-").write_stdin(req.to_string()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["action"], "RETRY", "{}", serde_json::to_string_pretty(&v["reasons"]).unwrap());
        v["chosen"]["p_success"].as_f64().unwrap()
    };
    let (models, said, card) = train(&bare, "bare");
    assert!(said.contains("no retry after a needs_update decline followed an update"), "{said}");
    assert!(card.contains("**Not learned from this log:** no retry after a needs_update decline followed an update"), "{card}");
    let p = replaced_p(&models, "54");
    assert!((p - original_success).abs() < 0.15, "P {p:.3} against the originals' {original_success:.3} (the log's retries {logged:.3})");
    assert!(card.contains(&format!("the log's original-charge success rate ({} of {} payments)", payments - failed, payments)), "{card}");

    // Three payments' retries after an update: pulled toward the prior, said so. (Before the
    // prior the fit's penalty held their weight near 0: P 0.06 here, against 0.91 with it.)
    let (models, said, card) = train(&few_path, "few");
    assert!(said.contains("retries after a needs_update decline followed an update"), "{said}");
    assert!(card.contains("**Partly a prior, not this log:** only "), "{card}");
    let p = replaced_p(&models, "54");
    assert!((p - original_success).abs() < 0.15, "P {p:.3} against the originals' {original_success:.3} (the log's retries {logged:.3})");
    // Lost cards alike: the prior is the same for every class whose retry needs a new method
    // (without it for hard declines: P 0.06 here, against 0.87 with it).
    let (models, said, card) = train(&lost_path, "lost");
    assert!(said.contains("retries after a hard decline followed an update"), "{said}");
    assert!(card.contains("**Partly a prior, not this log:** only ") && card.contains("decline_class=hard&method_updated=true"), "{card}");
    let p = replaced_p(&models, "41");
    assert!((p - original_success).abs() < 0.15, "lost card: P {p:.3} against the originals' {original_success:.3}");

    // An export of failed payments only shows no working method's charges: a default, said so.
    let failed_only = tmp.path().join("failed-only.parquet");
    h.attempts.retain(|a| a.attempt_number > 0 || a.outcome == recoup::domain::Outcome::Failed);
    recoup::history::write(&h, &failed_only).expect("written");
    let (_, _, card) = train(&failed_only, "failed-only");
    assert!(card.contains("a default rate: only 0 of the log's"), "{card}");
    assert!(card.contains(&format!("{:.3} on average", recoup::train::DEFAULT_REPLACED_SUCCESS)), "{card}");
}
