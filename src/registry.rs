//! Model artifacts and the registry: `models/<version>/` directories that never
//! change once written, and `models/CURRENT`, the pointer to the version being
//! served, replaced atomically.
//!
//! A version directory holds `model.json` (the fitted parameters and the
//! feature schema), `metrics.json` (held-out evaluation), `manifest.json`
//! (version, creation time, training-data fingerprint, settings) and
//! `MODEL_CARD.md`. Everything except the creation time is a function of the
//! training data and settings.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::asks::AskMethod;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::SuccessModel;
use crate::train::{Metrics, TrainParams, TrainReport};

/// The pointer file naming the current version.
pub const CURRENT: &str = "CURRENT";

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub version: String,
    pub created_at: DateTime<Utc>,
    /// `recoup` build that trained it.
    pub recoup_version: String,
    /// SHA-256 over the history files (name and bytes, in load order).
    pub data_fingerprint: String,
    pub data_files: Vec<String>,
    pub data_rows: u64,
    pub config: TrainParams,
}

/// Errors of the registry, naming the path involved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid artifact file: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("model version {version:?} not found in {dir} (see `recoup models list --dir {dir}`)")]
    NoSuchVersion { version: String, dir: PathBuf },
    #[error("no current model in {dir}: train one (`recoup train --promote`) or promote a version (`recoup models promote V`)")]
    NoCurrent { dir: PathBuf },
    #[error("{path} already exists; model versions are immutable")]
    Exists { path: PathBuf },
    #[error("{message}")]
    BadName { message: String },
    #[error("model {version}: {source}")]
    Schema { version: String, source: crate::model::SchemaMismatch },
    #[error("model {version} fails its probe decisions: {message}; it is not served")]
    Probe { version: String, message: String },
    /// A registry on object storage could not be read or written.
    #[error(transparent)]
    Remote(#[from] crate::s3::S3Error),
}

/// Decide a few typical failed payments with `model` and check every number it
/// answers is a probability or a finite value: the last check before a model
/// may serve (a model that passes its schema check can still be degenerate).
pub fn probe(model: &SuccessModel) -> Result<(), String> {
    use crate::declines::DeclineCode;
    use crate::domain::{BillingInterval, CardBrand, CardFunding, PaymentMethod};
    use crate::engine::{self, Constraints, EarlierAttempt, EngineConfig, Request};
    let t0 = chrono::DateTime::from_timestamp(1_772_463_600, 0).unwrap_or_default(); // 2026-03-02T15:00:00Z
    let facts = |method, card_brand| crate::features::PaymentFacts {
        amount_minor: 2_500,
        currency: crate::domain::Currency::USD,
        method,
        card_brand,
        card_funding: card_brand.map(|_| CardFunding::Debit),
        country: crate::domain::Country::from_bytes(*b"US"),
        timezone: chrono_tz::America::New_York,
        billing_interval: Some(BillingInterval::Month),
        tenure_days: Some(200),
    };
    let cases = [
        (PaymentMethod::Card, Some(CardBrand::Visa), DeclineCode::InsufficientFunds),
        (PaymentMethod::Card, Some(CardBrand::Mastercard), DeclineCode::DoNotHonor),
        (PaymentMethod::Card, Some(CardBrand::Visa), DeclineCode::ExpiredCard),
        (PaymentMethod::Card, Some(CardBrand::Visa), DeclineCode::IssuerNotAvailable),
        (PaymentMethod::SepaDebit, None, DeclineCode::InsufficientFunds),
    ];
    for (method, brand, decline) in cases {
        let req = Request {
            payment_id: "probe".into(),
            timezone_assumed: false,
            facts: facts(method, brand),
            attempts: vec![EarlierAttempt {
                at: t0,
                decline,
                network_code: None,
                advice_code: None,
                channel: None,
                payment_method_updated: false,
                card: None,
            }],
            payment_method_updated: false,
            asks: Vec::new(),
            past_payments: Vec::new(),
            card: None,
            card_attempts: Vec::new(),
            now: t0 + chrono::Duration::minutes(1),
            constraints: Constraints::default(),
        };
        let d = engine::decide(model, &EngineConfig::default(), &req, (0.5, 0.5)).map_err(|e| format!("{decline}: {e}"))?;
        let prob = |v: f64| (0.0..=1.0).contains(&v);
        if !prob(d.p_recovery) || !prob(d.propensity) {
            return Err(format!("{decline}: p_recovery {} / propensity {} outside [0, 1]", d.p_recovery, d.propensity));
        }
        for s in d.chosen.iter().chain(&d.alternatives) {
            if !prob(s.p_success) || !prob(s.attrition) || !s.expected_value.is_finite() || !s.value.is_finite() {
                return Err(format!(
                    "{decline}: slot at {} has p_success {}, attrition {}, expected value {}",
                    s.retry_at, s.p_success, s.attrition, s.expected_value
                ));
            }
        }
        if let Some(a) = &d.ask {
            if !prob(a.p_update) || !prob(a.p_success_after) || !a.value.is_finite() {
                return Err(format!("{decline}: ask plan with p_update {}, p_success_after {}", a.p_update, a.p_success_after));
            }
        }
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io { path: path.to_path_buf(), source }
}

/// SHA-256 over the files' names and bytes.
pub fn fingerprint(files: &[PathBuf]) -> Result<String, RegistryError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        h.update(name.as_bytes());
        h.update([0]);
        let mut file = fs::File::open(f).map_err(io(f))?;
        loop {
            let k = file.read(&mut buf).map_err(io(f))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
        }
    }
    Ok(h.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), RegistryError> {
    let text = serde_json::to_string_pretty(v).map_err(|source| RegistryError::Json { path: path.to_path_buf(), source })?;
    fs::write(path, text + "\n").map_err(io(path))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, RegistryError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|source| RegistryError::Json { path: path.to_path_buf(), source })
}

/// Check a caller-chosen version name: 1–64 characters of `A–Z a–z 0–9 . _ -`,
/// not starting with a dot (it becomes a directory name).
pub fn check_version_name(name: &str) -> Result<(), String> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 64 || !ok_chars || name.starts_with('.') || name == CURRENT {
        return Err(format!(
            "{name:?} is not a valid model version name: use 1–64 characters of A–Z a–z 0–9 . _ -, not starting with a dot"
        ));
    }
    Ok(())
}

/// Write a new version into `dir`; returns its directory. The version is
/// `manifest.version` when set (see [`check_version_name`]), else the creation
/// time plus a digest of the model, so two versions never collide.
pub fn write_version(dir: &Path, model: &SuccessModel, report: &TrainReport, mut manifest: Manifest) -> Result<PathBuf, RegistryError> {
    let model_json =
        serde_json::to_string_pretty(model).map_err(|source| RegistryError::Json { path: dir.join("model.json"), source })? + "\n";
    if manifest.version.is_empty() {
        let digest = Sha256::digest(model_json.as_bytes());
        let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        manifest.version = format!("{}-{short}", manifest.created_at.format("%Y%m%d-%H%M%S"));
    } else if let Err(message) = check_version_name(&manifest.version) {
        return Err(RegistryError::BadName { message });
    }
    let final_dir = dir.join(&manifest.version);
    if final_dir.exists() {
        return Err(RegistryError::Exists { path: final_dir });
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    // Written under a temporary name, then renamed: a version directory is complete or absent.
    let tmp = dir.join(format!(".{}.tmp", manifest.version));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    fs::write(tmp.join("model.json"), &model_json).map_err(io(&tmp))?;
    write_json(&tmp.join("metrics.json"), report)?;
    fs::write(tmp.join("MODEL_CARD.md"), model_card(&manifest, report, model)).map_err(io(&tmp))?;
    write_json(&tmp.join("manifest.json"), &manifest)?;
    // Never list what cannot serve: the version is read back and probed as
    // `serve` and `promote` will, before it gets its name.
    if let Err(e) = load_model_file(&tmp, &manifest.version) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    Ok(final_dir)
}

/// Make `version` the current one (atomic rename of the pointer file). The model must load.
pub fn promote(dir: &Path, version: &str) -> Result<(), RegistryError> {
    load_version(dir, version)?;
    let tmp = dir.join(format!(".{CURRENT}.tmp"));
    fs::write(&tmp, format!("{version}\n")).map_err(io(&tmp))?;
    fs::rename(&tmp, dir.join(CURRENT)).map_err(io(dir))
}

/// Give the registry `dir` the current version of registry `from` when it lacks it (copied
/// through a temp dir and a rename, checked to load), and make it the current one when `dir`
/// has none; a registry that has a current version keeps it. Returns whether a version was
/// copied. For a fresh model store (a container's volume) from the image's bundled model.
pub fn seed(dir: &Path, from: &Path) -> Result<bool, RegistryError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let v = current(from)?;
    let copy = !dir.join(&v).join("model.json").is_file();
    if copy {
        let src = from.join(&v);
        let tmp = dir.join(format!(".{v}.seed.tmp"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        for entry in fs::read_dir(&src).map_err(io(&src))? {
            let entry = entry.map_err(io(&src))?;
            if entry.path().is_file() {
                fs::copy(entry.path(), tmp.join(entry.file_name())).map_err(io(&entry.path()))?;
            }
        }
        if let Err(e) = load_model_file(&tmp, &v) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, dir.join(&v)).map_err(io(dir))?;
    }
    if current(dir).is_err() {
        promote(dir, &v)?;
    }
    Ok(copy)
}

/// The current version's name.
pub fn current(dir: &Path) -> Result<String, RegistryError> {
    let path = dir.join(CURRENT);
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => Err(RegistryError::NoCurrent { dir: dir.to_path_buf() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegistryError::NoCurrent { dir: dir.to_path_buf() }),
        Err(source) => Err(RegistryError::Io { path, source }),
    }
}

/// Load a version's model, refusing one whose feature schema differs from the code's.
pub fn load_version(dir: &Path, version: &str) -> Result<SuccessModel, RegistryError> {
    let vdir = dir.join(version);
    if version.is_empty() || version.contains(['/', '\\']) || !vdir.join("model.json").is_file() {
        return Err(RegistryError::NoSuchVersion { version: version.to_string(), dir: dir.to_path_buf() });
    }
    load_model_file(&vdir, version)
}

/// Read `vdir/model.json` and check it as a serving model must be: schema, values, probe decisions.
fn load_model_file(vdir: &Path, version: &str) -> Result<SuccessModel, RegistryError> {
    let model: SuccessModel = read_json(&vdir.join("model.json"))?;
    model.check_schema().map_err(|source| RegistryError::Schema { version: version.to_string(), source })?;
    probe(&model).map_err(|message| RegistryError::Probe { version: version.to_string(), message })?;
    Ok(model)
}

/// Load the current model: (version, model).
pub fn load_current(dir: &Path) -> Result<(String, SuccessModel), RegistryError> {
    let v = current(dir)?;
    let m = load_version(dir, &v)?;
    Ok((v, m))
}

/// A version's manifest and metrics.
pub fn describe(dir: &Path, version: &str) -> Result<(Manifest, TrainReport), RegistryError> {
    let vdir = dir.join(version);
    if !vdir.join("manifest.json").is_file() {
        return Err(RegistryError::NoSuchVersion { version: version.to_string(), dir: dir.to_path_buf() });
    }
    Ok((read_json(&vdir.join("manifest.json"))?, read_json(&vdir.join("metrics.json"))?))
}

/// Version names in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<String>, RegistryError> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("manifest.json").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    Ok(v)
}

fn metrics_row(name: &str, m: &Metrics) -> String {
    format!("| {name} | {:.4} | {:.4} | {:.4} | {:.4} |\n", m.log_loss, m.auc, m.brier, m.ece)
}

/// The human-readable model card: its sections in order.
pub fn model_card(m: &Manifest, r: &TrainReport, model: &SuccessModel) -> String {
    let mut s = String::new();
    let sections: [CardSection; 9] = [
        overview,
        channel_response,
        failed_retries_section,
        class_calibration,
        residuals_section,
        attrition_section,
        asks_section,
        support_section,
        known_limits,
    ];
    for section in sections {
        section(&mut s, m, r, model);
    }
    s
}

/// One section of the model card, appended to the text.
type CardSection = fn(&mut String, &Manifest, &TrainReport, &SuccessModel);

/// The title, the model family, the data and the held-out metrics against the baselines.
fn overview(s: &mut String, m: &Manifest, r: &TrainReport, model: &SuccessModel) {
    let d = |t: Option<DateTime<Utc>>| t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_else(|| "-".into());
    let _ = writeln!(s, "# Model {}\n", m.version);
    let _ = writeln!(s, "Success model for the next retry of a failed payment: P(the retry succeeds | features),");
    if model.trees.is_empty() {
        let _ =
            writeln!(s, "logistic regression over one-hot features and crosses (L2 = {:e}, {} coordinate-Newton sweeps),", r.l2, r.sweeps);
    } else {
        let leaves = model.trees.trees.iter().map(|t| t.nodes.len().div_ceil(2)).max().unwrap_or(0);
        let _ = writeln!(
            s,
            "{} boosted trees (up to {leaves} leaves) over the payment's and the retry time's feature groups, stopped",
            model.trees.trees.len()
        );
        let _ = writeln!(s, "early on the calibration split, plus the message channel's logistic terms fitted on top of them");
        let _ = writeln!(s, "(L2 = {:e}, {} coordinate-Newton sweeps; the trees never split on the channel),", r.l2, r.sweeps);
        if model.trees.has_spread() {
            let _ = writeln!(
                s,
                "each leaf with its value in {} bootstrap refits of the leaf values (the engine values a retry time at a lower bound from them),",
                crate::trees::REPLICATES
            );
        } else {
            let _ = writeln!(s, "the leaves without bootstrap refits (the engine values the trees' retry times at their estimate),");
        }
    }
    let _ = writeln!(s, "Platt-scaled on later data. Trained by recoup {}.\n", m.recoup_version);
    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(s, "- history: {} ({} rows), SHA-256 `{}`", m.data_files.join(", "), m.data_rows, m.data_fingerprint);
    let _ = writeln!(s, "- retry examples: {} from {} to {}", r.examples, d(r.data_from), d(r.data_to));
    let _ = writeln!(
        s,
        "- split by time: fit {}, calibration {}, test {} (test from {})\n",
        r.fit_examples,
        r.calibration_examples,
        r.test_examples,
        d(r.test_from)
    );
    if let Some(small) = r.small_history() {
        let _ = writeln!(s, "**Warning:** {small}.\n");
    }
    for u in r.replaced_priors() {
        if u.unlearned() {
            let _ = writeln!(s, "**Not learned from this log:** {}.\n", u.describe());
        } else if u.partly_prior() {
            let _ = writeln!(s, "**Partly a prior, not this log:** {}.\n", u.describe());
        }
    }
    let _ = writeln!(s, "## Held-out metrics (test split)\n");
    let _ = writeln!(s, "| predictor | log loss | AUC | Brier | ECE |\n|---|---|---|---|---|");
    *s += &metrics_row("this model", &r.model);
    *s += &metrics_row("this model, before Platt scaling", &r.uncalibrated);
    *s += &metrics_row("baseline: rate per decline code", &r.baseline_code);
    *s += &metrics_row("baseline: rate per decline code × days since pay day", &r.baseline_code_payday);
    let _ = writeln!(s, "\n## AUC by decline class\n\n| class | test examples | AUC |\n|---|---|---|");
    for (c, n, a) in &r.model.auc_by_class {
        let _ = writeln!(s, "| {c} | {n} | {a:.4} |");
    }
    let _ =
        writeln!(s, "\n## Calibration (test split, 10 bins)\n\n| predicted | examples | mean predicted | observed |\n|---|---|---|---|");
    for (lo, k, mp, my) in &r.model.calibration {
        let _ = writeln!(s, "| {:.1}–{:.1} | {k} | {mp:.3} | {my:.3} |", lo, lo + 0.1);
    }
}

/// What a message adds to the next retry (model and observed lift), and how the engine discounts it.
fn channel_response(s: &mut String, _m: &Manifest, r: &TrainReport, model: &SuccessModel) {
    let _ = writeln!(s, "\n## Channel response (test split)\n");
    let _ = writeln!(s, "What a message adds to the next retry's success probability over no message, per decline class.");
    let _ = writeln!(s, "Model: the same retries scored with and without the message. Observed: success rate of retries");
    let _ = writeln!(s, "logged with the channel minus those logged with none (channels were drawn at random), ± 1.96 SE.\n");
    let _ = writeln!(s, "| class | channel | logged retries | model lift | observed lift |\n|---|---|---|---|---|");
    for l in &r.channel_lift {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:+.3} | {:+.3} ± {:.3} |",
            l.class,
            l.channel,
            l.examples,
            l.predicted_lift,
            l.observed_lift,
            1.96 * l.observed_se
        );
    }
    if !model.weight_variances.is_empty() {
        let _ = writeln!(s, "\nThe model keeps each weight's posterior variance (diagonal Laplace approximation). The engine values a");
        let _ = writeln!(s, "channel's estimated lift over no message less `channel_pessimism` (default 2) standard deviations, never");
        let _ = writeln!(s, "below none, and ask response rates less as many standard errors: the best of several noisy lifts is the");
        let _ = writeln!(s, "one overestimated most, and a channel this history rarely or never randomized is not trusted.");
    }
}

/// The failed-retries correction per decline class.
fn failed_retries_section(s: &mut String, _m: &Manifest, _r: &TrainReport, model: &SuccessModel) {
    let _ = writeln!(s, "\n## What a payment's failed retries say (calibration split)\n");
    let fr = &model.failed_retries;
    if fr.is_empty() {
        let _ = writeln!(s, "Not estimated (a model trained before it existed): no shift.");
    } else {
        let _ = writeln!(s, "A retry after failed retries gets `z += γ[class] · (E − mean[class][retries])`, E = the P the model gave");
        let _ = writeln!(s, "the earlier failed retries, mean = the log's average E for that class and retry number: a failure where");
        let _ = writeln!(s, "the model expected success lowers the next retry more than the log's usual failure (a per-payment random");
        let _ = writeln!(s, "effect to first order). γ is fitted per class with the model's logit as offset, clamped to [−8, 0], under a");
        let _ = writeln!(s, "weak prior (0 ± 1): a class with few later retries in the calibration split is held near the prior's bound.");
        let _ =
            writeln!(s, "After a failed retry, the payment's own funds declines are pay-day evidence too (training and scoring alike).\n");
        let _ =
            writeln!(s, "**Assumption, and pessimism where the log cannot check it.** γ is identified only by how much E varies around");
        let _ = writeln!(s, "the log's mean; the policy's own failed retries (where the model was most hopeful) lie beyond that range,");
        let _ = writeln!(
            s,
            "where a failure says more than the fitted line does. The model holds γ {} standard errors below its fit",
            crate::failed_retries::PESSIMISM_SE
        );
        let _ = writeln!(s, "(a loose fit: a larger drop after failures, never a smaller one).\n");
        let _ = writeln!(s, "| class | later retries | γ fitted ± SE | γ held | mean E after 1 / 2 / 3 retries |\n|---|---|---|---|---|");
        for (c, class) in <crate::declines::DeclineClass as strum::VariantArray>::VARIANTS.iter().enumerate() {
            let (g, n) = (fr.gamma.get(c).copied().unwrap_or(0.0), fr.rows.get(c).copied().unwrap_or(0));
            let m = fr.mean.get(c).map(|m| m.iter().take(3).map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(" / ")).unwrap_or_default();
            let fit = match (fr.fitted.get(c), fr.se.get(c)) {
                // Versions before every class was fitted left a class with few rows at 0 ± 0.
                (Some(_), Some(se)) if *se == 0.0 => "– (too few rows: not fitted by the version that trained it)".to_string(),
                (Some(f), Some(se)) => format!("{f:.3} ± {se:.3}"),
                _ => "– (not kept by the version that trained it)".to_string(),
            };
            let _ = writeln!(s, "| {} | {n} | {fit} | {g:.3} | {m} |", <&str>::from(*class));
        }
    }
}

/// The Platt scaling per decline class and retry stage, against the test split.
fn class_calibration(s: &mut String, _m: &Manifest, r: &TrainReport, model: &SuccessModel) {
    let _ = writeln!(s, "\n## Calibration per decline class and retry stage\n");
    if model.class_platt.is_empty() {
        let _ = writeln!(s, "Not fitted (a model trained before it existed): the global Platt scaling everywhere.");
    } else {
        let _ = writeln!(s, "Each decline class gets its own Platt scaling `p = σ(a·z + b)` at its first retry and at later ones, fitted");
        let _ =
            writeln!(s, "on the calibration split (after the failed-retries shift) as a departure from the global a, b with a ridge of");
        let _ = writeln!(
            s,
            "{} on the slope and offset changes: a cell with few retries stays near the global scaling. Test split:\n",
            crate::train::CLASS_PLATT_RIDGE
        );
        let _ = writeln!(s, "| class | stage | a | b | test examples | mean predicted | observed |\n|---|---|---|---|---|---|---|");
        for (c, class) in <crate::declines::DeclineClass as strum::VariantArray>::VARIANTS.iter().enumerate() {
            for (k, stage) in ["first retry", "later retries"].iter().enumerate() {
                let Some(p) = model.class_platt.get(c).map(|s| s[k]) else { continue };
                let name = <&str>::from(*class);
                let test = r.class_calibration.iter().find(|t| t.class == name && t.stage == *stage);
                let t =
                    test.map_or("0 | – | –".to_string(), |t| format!("{} | {:.3} | {:.3}", t.examples, t.mean_predicted, t.observed));
                let _ = writeln!(s, "| {name} | {stage} | {:.3} | {:+.3} | {t} |", p.a, p.b);
            }
        }
        acting_calibration(s, &r.acting_calibration);
    }
}

/// The refit where the policy acts ([`crate::policy_calibration`]), under the per-class table.
fn acting_calibration(s: &mut String, a: &crate::policy_calibration::ActingCalibration) {
    if let Some(why) = &a.skipped {
        let _ = writeln!(
            s,
            "\nCalibration where the policy acts: not done for this version ({why}); the offsets are those of the whole calibration split."
        );
        return;
    }
    let _ = writeln!(s, "\nThe offsets (b) above include a refit **where the policy acts**: the calibration window's logged retries,");
    let _ =
        writeln!(s, "each weighted by exp(−Δ²/2h²), Δ the hours between it and the retry the engine (default settings) would have made");
    let _ = writeln!(
        s,
        "from the same state, h = {} h; per cell an offset with a ridge of {} (weight units). Assumes a logged retry",
        crate::policy_calibration::BANDWIDTH_HOURS,
        crate::policy_calibration::RIDGE
    );
    let _ = writeln!(s, "near the policy's choice succeeds as the policy's would; the test split above is of the refitted model.\n");
    let _ = writeln!(s, "{} logged retries replayed; the policy would retry from {} of them.\n", a.replayed, a.policy_retries);
    let _ = writeln!(
        s,
        "| class | stage | retries with weight | weight | predicted before | after | observed |\n|---|---|---|---|---|---|---|"
    );
    for c in &a.cells {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} |",
            c.class, c.stage, c.retries, c.weight, c.predicted_before, c.predicted_after, c.observed
        );
    }
    let _ = writeln!(s, "\nHeld out: the test window's logged retries, weighted alike, against this model. ± is the standard error");
    let _ = writeln!(s, "of observed − predicted (√Σw²(y − p)² / Σw); the last column is that difference in standard errors of the");
    let _ = writeln!(s, "held-out window and the refit together (a refit offset is itself fitted on a few hundred weighted retries):\n");
    let _ = writeln!(
        s,
        "| class | stage | retries with weight | weight | predicted | observed | from the refit |\n|---|---|---|---|---|---|---|"
    );
    for c in &a.test {
        let z = a.disagreement(c);
        let se = if c.se > 0.0 { format!(" ± {:.3}", c.se) } else { String::new() };
        let zs = z.map_or("–".to_string(), |z| format!("{z:+.1} SE"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.3} | {:.3}{se} | {zs} |",
            c.class, c.stage, c.retries, c.weight, c.predicted, c.observed
        );
    }
    let beyond = a.beyond_noise();
    if !beyond.is_empty() {
        let _ = writeln!(
            s,
            "\n**The windows disagree beyond their noise** (more than {} SE) in: {}.",
            crate::train::DISAGREE_SE,
            beyond.join(", ")
        );
        let _ = writeln!(s, "The calibration window and the test window differ there by drift or by one window's bad luck; the policy's");
        let _ = writeln!(s, "retries in that cell may be off by about that much (observed − predicted in brackets). With many cells, one");
        let _ = writeln!(s, "now and then is chance.");
    }
}

/// Message attrition per channel.
fn attrition_section(s: &mut String, _m: &Manifest, _r: &TrainReport, model: &SuccessModel) {
    let attrition = &model.attrition;
    let _ = writeln!(s, "\n## Message attrition (whole history)\n");
    if attrition.is_empty() {
        let _ = writeln!(s, "Not estimated: the history has no retries after soft declines whose channel was drawn at random with `none` among the choices.");
        if attrition.unmeasured {
            let _ =
                writeln!(s, "Email and in-app messages are not charged for the payers they may lose; **SMS and push are not used**, for");
            let _ = writeln!(s, "retries' messages or asks: they interrupt the payer, and what they cost in payers lost is not measured.");
        } else {
            let _ = writeln!(
                s,
                "The engine does not charge a message for the payers it may lose (a model trained before SMS and push were held back)."
            );
        }
    } else {
        let _ = writeln!(
            s,
            "Share of payers a message makes cancel, from {} logged retries after soft declines: a channel is",
            attrition.retries
        );
        let _ = writeln!(s, "under-represented among logged retries by the share of its messages that ended the dunning");
        let _ = writeln!(s, "(1 − W_channel / W_none, W = Σ 1/propensity), per message already sent, each bucket shrunk toward the other channels (DerSimonian–Laird), then a line in the messages sent; the engine multiplies a");
        let _ = writeln!(s, "slot's value by (1 − attrition) and keeps the message's cost.\n");
        let _ = writeln!(s, "| channel | base | per earlier message | by messages before: raw rate ± 1.96 SE → pooled over channels (retries) |\n|---|---|---|---|");
        for c in &attrition.channels {
            let raw: Vec<String> = c
                .buckets
                .iter()
                .map(|b| {
                    format!(
                        "{}: {:.1} % ± {:.1} → {:.1} % ({})",
                        b.messages_before,
                        100.0 * b.rate,
                        196.0 * b.se,
                        100.0 * b.pooled,
                        b.retries
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "| {} | {:.2} % | {:.2} % | {} |",
                <&str>::from(c.channel),
                100.0 * c.base,
                100.0 * c.per_message,
                raw.join("; ")
            );
        }
        if let Some(o) = &attrition.other {
            let raw: Vec<String> =
                o.buckets.iter().map(|b| format!("{}: {:.1} % ± {:.1}", b.messages_before, 100.0 * b.rate, 196.0 * b.se)).collect();
            let _ = writeln!(
                s,
                "| any other channel (never randomized: the channels' mean) | {:.2} % | {:.2} % | {} |",
                100.0 * o.base,
                100.0 * o.per_message,
                raw.join("; ")
            );
        }
    }
}

/// The ask response: how it was estimated, and per channel.
fn asks_section(s: &mut String, _m: &Manifest, _r: &TrainReport, model: &SuccessModel) {
    let _ = writeln!(s, "\n## Asking for a new payment method (whole history)\n");
    let asks = &model.asks;
    let _ = writeln!(s, "Estimated by: **{}**.", asks.method);
    for n in &asks.notes {
        let _ = writeln!(s, "- {n}");
    }
    match asks.method {
        AskMethod::UpdateFlags => {
            let _ =
                writeln!(s, "\nA time-to-update model over {} intervals between needs-update attempts, fitted on the log's", asks.payments);
            let phi = asks.own_interval_share.unwrap_or(1.0);
            if phi >= 1.0 {
                let _ = writeln!(s, "`payment_method_updated` flags: an interval of d days after an ask on c ends without an update with");
                let _ = writeln!(
                    s,
                    "probability (1 − ρ_c)·exp(−λ·d); λ = {:.2} % per day (updates without an ask).\n",
                    100.0 * asks.spontaneous_per_day
                );
            } else {
                let _ =
                    writeln!(s, "`payment_method_updated` flags: a message on c gets an update with probability ρ_c, φ = {phi:.1} of it");
                let _ = writeln!(s, "before the next attempt and the rest in the interval after, so an interval of d days with a message");
                let _ =
                    writeln!(s, "on c after one on p ends without an update with probability (1 − φ·ρ_c)·(1 − ρ_p)/(1 − φ·ρ_p)·exp(−λ·d);");
                let _ = writeln!(s, "λ = {:.2} % per day (updates without an ask).\n", 100.0 * asks.spontaneous_per_day);
            }
        }
        AskMethod::Prior => {
            let _ = writeln!(s, "\nThe log could not identify the response; the numbers below are an assumption, not an estimate.\n");
        }
        AskMethod::SelectiveRetries | AskMethod::Unrecorded if !asks.is_empty() => {
            let _ =
                writeln!(s, "\nFrom {} needs-update payments: among those retried at the logging policy's first retry time", asks.payments);
            let _ = writeln!(
                s,
                "({:.2}–{:.2} days after the decline, as for soft declines), the share updated by then per channel",
                asks.first_retry_days.0, asks.first_retry_days.1
            );
            let _ = writeln!(s, "drawn, corrected for the channel's attrition and for the updates that happen without a message");
            let _ = writeln!(s, "({:.2} % per day).\n", 100.0 * asks.spontaneous_per_day);
        }
        _ => {}
    }
    if asks.is_empty() {
        let _ = writeln!(s, "Nothing estimated: the engine does not value asks; it still names the channel to ask through.");
    } else {
        let _ = writeln!(
            s,
            "The engine assumes every ask has this chance: the log cannot show whether a payer who ignored one ask answers the next.\n"
        );
        let _ = writeln!(s, "| channel | P(update when asked) ± 1.96 SE | intervals or first retries |\n|---|---|---|");
        for c in &asks.channels {
            let _ = writeln!(s, "| {} | {:.1} % ± {:.1} | {} |", <&str>::from(c.channel), 100.0 * c.rate, 196.0 * c.se, c.retries);
        }
        if let Some(o) = &asks.other {
            let _ = writeln!(
                s,
                "| any other channel (never randomized: the channels' mean) | {:.1} % ± {:.1} | {} |",
                100.0 * o.rate,
                196.0 * o.se,
                o.retries
            );
        }
    }
}

/// The support the engine decides within.
fn support_section(s: &mut String, _m: &Manifest, _r: &TrainReport, model: &SuccessModel) {
    let _ = writeln!(s, "\n## Where the log holds evidence (support)\n");
    if model.support.is_empty() {
        let _ = writeln!(s, "Not recorded (a model trained before support existed): the engine decides everywhere in the window.");
    } else {
        let _ = writeln!(s, "The engine decides only inside it: a candidate retry spaced closer to the last attempt than the log's 1st");
        let _ = writeln!(s, "percentile, later after the failure than its 99th, at a retry number, local hour or after a channel the log");
        let _ = writeln!(
            s,
            "has fewer than {} retries of, is not taken (reason `outside_support:*`). Per decline class of the last decline:\n",
            crate::support::MIN_CELL
        );
        for c in model.support.classes.iter().chain(&model.support.pooled) {
            let label = c.class.map_or("all pooled (classes with fewer than 200 retries)", |k| k.into());
            // The engine's bound past a fixed spacing works on the linear terms' lower bound
            // (engine/edges.rs): a model with trees or without weight variances does not get it.
            let capped = if model.trees.is_empty() && !model.weight_variances.is_empty() { ", a longer wait not credited" } else { "" };
            let fixed = c
                .describe_fixed_spacing()
                .map_or(String::new(), |f| format!("; spacing fixed by the log's schedule (other spacings extrapolated{capped}): {f}"));
            let _ = writeln!(s, "- {label}: {}{fixed}", c.describe());
        }
    }
    let filled: Vec<String> = model.imputation.recorded().into_iter().map(|(f, v)| format!("{f} as {v}")).collect();
    if !filled.is_empty() {
        let _ = writeln!(
            s,
            "\nNearly every retry of the fit split had these optional fields (at most {:.0} % without), so a request without one is \
             scored at the log's most common value, not at a level \"unknown\" the model never saw (reason `imputed:FIELD`; the \
             network rules still read the request as sent): {}.",
            100.0 * crate::imputation::MAX_MISSING_SHARE,
            filled.join(", ")
        );
    }
}

/// Where the model is wrong on the test split ([`crate::residuals`]).
fn residuals_section(s: &mut String, _m: &Manifest, r: &TrainReport, _model: &SuccessModel) {
    let _ = writeln!(s, "\n## Where the model is wrong (test split)\n");
    let Some(res) = &r.residuals else {
        let _ =
            writeln!(s, "Not measured (a model trained before it existed): `recoup models residuals VERSION --history PATH` measures it.");
        return;
    };
    let _ = writeln!(s, "The test split's {} retries scored as the model serves them; error = observed − predicted, with a", res.retries);
    let _ = writeln!(
        s,
        "standard error clustered by payer. A cell is flagged at {} SE and {} points: a class by its own error, any",
        crate::residuals::FLAG_Z,
        100.0 * crate::residuals::MIN_ERROR
    );
    let _ = writeln!(s, "other cell (a class × a feature level, or finer: the exact local day of month, local hour, hours since the");
    let _ = writeln!(s, "last attempt in 6 h steps) by how far its error lies from its class's.\n");
    let _ = writeln!(s, "| class | retries | predicted | observed | error ± SE |\n|---|---|---|---|---|");
    for c in &res.classes {
        let flag = if c.flagged() { " **flagged**" } else { "" };
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {:.3} | {:+.3} ± {:.3}{flag} |",
            c.class,
            c.retries,
            c.predicted,
            c.observed,
            c.observed - c.predicted,
            c.se
        );
    }
    let _ = writeln!(
        s,
        "\n{} of {} cells flagged{}.",
        res.flagged_cells,
        res.cells_tested,
        if res.flagged.len() < res.flagged_cells { format!(" (the {} furthest below)", res.flagged.len()) } else { String::new() }
    );
    if !res.flagged.is_empty() {
        let _ = writeln!(s, "\n| class | cut | value | model level | retries | predicted | observed | SE from the class |\n|---|---|---|---|---|---|---|---|");
        for c in &res.flagged {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.3} | {:.3} | {:+.1} |",
                c.class,
                c.cut,
                c.value,
                c.level.as_deref().unwrap_or("–"),
                c.retries,
                c.predicted,
                c.observed,
                c.z_within.unwrap_or(0.0)
            );
        }
    }
    if !res.finer {
        let _ = writeln!(
            s,
            "\nThe finer cuts were not made (the examples carried no local times): `recoup models residuals` on the history makes them."
        );
        return;
    }
    let _ = writeln!(s, "\n**Inside the model's levels.** The model gives every value of a level the same terms. Per level, a χ² test");
    let _ = writeln!(s, "of whether its exact values agree ({} levels tested): ", res.levels_tested);
    if res.flagged_levels.is_empty() {
        let _ = writeln!(s, "none disagrees beyond {} SE and {} points.", crate::residuals::FLAG_Z, 100.0 * crate::residuals::MIN_ERROR);
    } else {
        let _ =
            writeln!(s, "\n| class | level | by | values | retries | χ² score | the level's error | furthest value: error |\n|---|---|---|---|---|---|---|---|");
        for w in &res.flagged_levels {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.1} | {:+.3} | {}: {:+.3} |",
                w.class, w.level, w.cut, w.values, w.retries, w.score, w.level_error, w.worst_value, w.worst_error
            );
        }
        let _ = writeln!(s, "\nSuch a level holds structure the model cannot represent (a calendar event inside a 5-day level, an hour");
        let _ = writeln!(s, "unlike its neighbours); the engine picks the best hour inside a level and may land on its wrong part.");
        let _ = writeln!(s, "`recoup models residuals VERSION --history PATH --cut day_of_month_exact` shows every value.");
    }
}

/// What the model cannot know.
fn known_limits(s: &mut String, _m: &Manifest, _r: &TrainReport, _model: &SuccessModel) {
    let _ = writeln!(s, "\n## Known limits\n");
    let _ = writeln!(s, "- Learned from the retries the logging policy chose: times and channels it never tried are extrapolated.");
    let _ = writeln!(s, "- Pay days are inferred from the payer's earlier funds declines and recoveries; with little history the country's most common schedule is assumed (`payday_confidence` feature).");
    let _ = writeln!(s, "- Linear in the features and their listed crosses: interactions not listed are not learned. On the same feature tables LightGBM (100 trees) reaches a lower log loss; see `benches/peer/`.");
    let _ = writeln!(s, "- Probabilities are per attempt; recovery over a whole dunning window is the decision engine's job.");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> (String, SuccessModel) {
        load_current(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).expect("the shipped model loads")
    }

    #[test]
    fn the_shipped_model_passes_its_probe() {
        let (_, m) = shipped();
        probe(&m).expect("probe");
    }

    #[test]
    fn absurd_weights_are_refused_on_load_naming_the_value() {
        let (_, m) = shipped();
        // Every weight 1e308 (the hostile run's model): schema fine, values not.
        let mut huge = m.clone();
        huge.weights.iter_mut().for_each(|w| *w = 1e308);
        let e = huge.check_schema().expect_err("refused").to_string();
        assert!(e.contains("weights[0]") && e.contains("1e308"), "{e}");
        let mut nan = m.clone();
        nan.platt_b = f64::NAN;
        assert!(nan.check_schema().unwrap_err().to_string().contains("platt_b"));
        let mut inverted = m.clone();
        inverted.platt_a = -1.0;
        assert!(inverted.check_schema().unwrap_err().to_string().contains("platt_a"));
        let mut rate = m;
        rate.asks.spontaneous_per_day = 1.74;
        assert!(rate.check_schema().unwrap_err().to_string().contains("spontaneous_per_day"));
    }

    #[test]
    fn a_registry_version_with_absurd_weights_does_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let (v, m) = shipped();
        let mut huge = m;
        huge.weights.iter_mut().for_each(|w| *w = 1e308);
        std::fs::create_dir_all(dir.path().join(&v)).unwrap();
        std::fs::write(dir.path().join(&v).join("model.json"), serde_json::to_string(&huge).unwrap()).unwrap();
        let e = load_version(dir.path(), &v).expect_err("refused").to_string();
        assert!(e.contains(&v) && e.contains("sane range"), "{e}");
    }

    /// The support section names the retry numbers whose spacing the log fixed, and says
    /// that other spacings are extrapolated and a longer wait is not credited.
    #[test]
    fn the_card_says_where_the_log_fixed_a_retrys_spacing() {
        use recoup_core::support::{estimate, Observed};
        let (version, mut m) = shipped();
        let (manifest, report) = describe(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models"), &version).expect("described");
        let retry = |i: u32, retry_number: u32, spacing_hours: f64| Observed {
            class: crate::declines::DeclineClass::SoftFunds,
            spacing_hours,
            hours_since_failure: 48.0 * retry_number as f64,
            retry_number,
            local_hour: i % 24,
            channel: crate::domain::Channel::None,
        };
        m.support = estimate(&(0..1_000u32).flat_map(|i| [retry(i, 1, 48.0), retry(i, 2, 24.0 + (i % 72) as f64)]).collect::<Vec<_>>());
        let mut card = String::new();
        support_section(&mut card, &manifest, &report, &m);
        let line = card.lines().find(|l| l.starts_with("- soft_funds:")).unwrap_or_else(|| panic!("{card}"));
        assert!(
            line.ends_with("; spacing fixed by the log's schedule (other spacings extrapolated, a longer wait not credited): retry 1 48 h"),
            "{line}"
        );
        // Without weight variances the engine has no lower bound to cap: the card does not claim it.
        m.weight_variances.clear();
        let mut card = String::new();
        support_section(&mut card, &manifest, &report, &m);
        assert!(card.contains("; spacing fixed by the log's schedule (other spacings extrapolated): retry 1 48 h"), "{card}");
        // The fields a request may leave out, scored at the log's most common value: a model
        // trained before them says nothing.
        m.imputation = Default::default();
        let mut card = String::new();
        support_section(&mut card, &manifest, &report, &m);
        assert!(!card.contains("optional fields"), "{card}");
        m.imputation.card_funding = Some(crate::domain::CardFunding::Debit);
        m.imputation.tenure_days = Some(500);
        let mut card = String::new();
        support_section(&mut card, &manifest, &report, &m);
        assert!(card.contains("reason `imputed:FIELD`"), "{card}");
        assert!(card.contains(": card_funding as debit, tenure_days as 500 days."), "{card}");
    }

    /// The held-out table places each cell against its refit, and names the cells where the
    /// windows disagree beyond their noise; a model trained before the standard errors were
    /// kept shows "–", not "0 SE".
    #[test]
    fn the_card_names_cells_whose_windows_disagree_beyond_their_noise() {
        use crate::train::{ActingCalibration, ActingCell, ActingCheck};
        let cell = |class: &str, se: f64| ActingCell {
            class: class.into(),
            stage: "first retry".into(),
            retries: 400,
            weight: 150.0,
            predicted_before: 0.40,
            predicted_after: 0.45,
            observed: 0.45,
            offset: 0.2,
            se,
        };
        let check = |class: &str, observed: f64, se: f64| ActingCheck {
            class: class.into(),
            stage: "first retry".into(),
            retries: 800,
            weight: 300.0,
            predicted: 0.45,
            observed,
            se,
        };
        let mut a = ActingCalibration::skipped("unused");
        a.skipped = None;
        a.cells = vec![cell("soft_funds", 0.03), cell("soft_issuer", 0.03), cell("technical", 0.0)];
        // −0.09 over √(0.03² + 0.04²) = 0.05 is −1.8 SE, not beyond 2; −0.15 is −3.0 SE.
        a.test = vec![check("soft_funds", 0.36, 0.04), check("soft_issuer", 0.30, 0.04), check("technical", 0.30, 0.04)];
        let mut card = String::new();
        acting_calibration(&mut card, &a);
        assert!(card.contains("| soft_funds | first retry | 800 | 300 | 0.450 | 0.360 ± 0.040 | -1.8 SE |"), "{card}");
        assert!(card.contains("| soft_issuer | first retry | 800 | 300 | 0.450 | 0.300 ± 0.040 | -3.0 SE |"), "{card}");
        assert!(card.contains("| technical | first retry | 800 | 300 | 0.450 | 0.300 ± 0.040 | – |"), "{card}");
        assert!(card.contains("disagree beyond their noise** (more than 2 SE) in: soft_issuer first retry (-0.150)."), "{card}");
        assert!(!card.contains("in: soft_funds") && !card.contains("technical first retry ("), "{card}");
        // Training's progress output says it too, after the held-out lines.
        let said = a.lines();
        assert_eq!(
            said.last().map(String::as_str),
            Some("  the calibration and test windows disagree beyond their noise (more than 2 SE) in: soft_issuer first retry (-0.150); see the model card"),
            "{said:?}"
        );
        assert!(
            said.iter().any(|l| l.contains("held out (test window) soft_issuer first retry") && l.contains("(-3.0 SE from the refit)")),
            "{said:?}"
        );
        // Nothing beyond: no such paragraph.
        a.test.truncate(1);
        let mut quiet = String::new();
        acting_calibration(&mut quiet, &a);
        assert!(!quiet.contains("disagree beyond"), "{quiet}");
        assert!(a.lines().iter().all(|l| !l.contains("disagree beyond")), "{:?}", a.lines());
    }
}
