//! The zoo (#20): every preset world's own log trains, and the version it
//! writes is one that `models promote`, `decide` and `serve` accept.

use std::path::Path;

fn recoup() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("recoup").unwrap()
}

#[test]
fn every_zoo_world_trains_a_model_that_promotes_and_decides() {
    let tmp = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/decide.json");
    for (name, _) in recoup::sim::zoo::PRESETS {
        let log = tmp.path().join(format!("{name}.parquet"));
        let models = tmp.path().join(format!("models-{name}"));
        recoup()
            .args(["simulate", "-q", "--preset", name, "--payers", "2500", "--months", "12", "--seed", "5", "--out"])
            .arg(&log)
            .assert()
            .success();
        let out = recoup().args(["train", "--history"]).arg(&log).arg("--out").arg(&models).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: train failed: {stderr}");
        assert!(stderr.contains("response to an ask for a new payment method ("), "{name}: {stderr}");
        let versions: Vec<String> = std::fs::read_dir(&models)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        assert_eq!(versions.len(), 1, "{name}: {versions:?}");
        recoup().args(["models", "promote", &versions[0], "--models"]).arg(&models).assert().success();
        let card = std::fs::read_to_string(models.join(&versions[0]).join("MODEL_CARD.md")).unwrap();
        assert!(card.contains("Estimated by: **"), "{name}: the model card says how asks were estimated");
        // A log whose channels were not drawn at random with `none` among them cannot price a
        // message's attrition: SMS and push are held back, the card says so, and only there.
        let unrandomized = matches!(*name, "careless-log" | "fixed-log");
        assert_eq!(card.contains("**SMS and push are not used**"), unrandomized, "{name}: attrition");
        assert_eq!(stderr.contains("SMS and push are not used"), unrandomized, "{name}: {stderr}");
        // And the model served carries it (a model.json without it would use every channel).
        let model = std::fs::read_to_string(models.join(&versions[0]).join("model.json")).unwrap();
        let attrition = serde_json::from_str::<serde_json::Value>(&model).unwrap()["attrition"].clone();
        assert_eq!(attrition["unmeasured"].as_bool().unwrap_or(false), unrandomized, "{name}: {attrition}");
        recoup().args(["decide", "--models"]).arg(&models).arg(&example).assert().success();
    }
}
