//! `recoup export`: predicted recovery of every payment open at a cut-off, per
//! payment or per segment, for finance's MRR forecast.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use polars::prelude::*;
use rayon::prelude::*;

use crate::engine::EngineConfig;
use crate::export::{open_payments, request, Forecast, Forecaster, Open, Payers};
use crate::history::{load, History, LoadOptions};

/// Predict, for every payment still open at --as-of (failed, not recovered,
/// inside its dunning window), the probability that it is recovered over the
/// rest of its window, the expected recovered amount, and the serving policy's
/// next retry time and channel. With --by, write totals per segment and
/// currency instead.
///
/// The probability starts from the engine's look-ahead with the model (the next
/// retry, then the best slot a day after each failure); payments waiting for a
/// new payment method count on the update rate measured in the same history.
/// It is then calibrated by backtesting the same forecast at the same moment of
/// earlier months against what happened (p_recovery_model is the figure before).
/// Only attempts at or before --as-of are read.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "A payment is open at --as-of when it has attempts at or before it, none succeeded,\nand its window has not ended; only attempts up to --as-of are read.\n\np_recovery starts from the engine's look-ahead with the model (the next retry, then\nthe best slot a day after each failure); payments waiting for a new payment method\ncount on the update rate measured in the same history. It is then calibrated by\nbacktesting the same forecast at the same moment of earlier months (--as-of minus\n1, 2, ... months) against what happened; p_recovery_model is the figure before.\n\nExamples:\n  recoup export --history data/sample/ --as-of 2025-10-15 --out open.parquet\n  recoup export --history exports/ --as-of 2026-11-01T00:00:00Z --out by-segment.csv --by decline-class,country\n  recoup export --history h.parquet --as-of 2026-06-01 --out seg.parquet --by month --payments-out open.parquet\n\nColumns (per payment): payment_id, customer_id, as_of, model_version, currency,\namount_minor, payment_method, card_brand, card_funding, country, decline_code,\ndecline_class, first_failed_at, month, window_end, attempts, next_action\n(retry | ask_for_update | stop), next_retry_at, next_channel, next_send_at,\np_next_success, p_recovery (calibrated), p_recovery_model (the model look-ahead\nbefore calibration), expected_recovered_minor, retries_if_all_fail, reason.\nPer segment: the --by columns, currency, payments, amount_minor,\nexpected_recovered_minor, expected_recovery_rate (amount-weighted),\nmean_p_recovery, as_of, model_version. Amounts are in the currency's minor unit."
)]
pub struct Args {
    /// History (Parquet/CSV file or directory, or `s3://bucket/prefix`; contract v1).
    #[arg(long, value_name = "PATH", required_unless_present = "merge", env = "RECOUP_EXPORT_HISTORY")]
    pub history: Option<PathBuf>,
    /// The cut-off: RFC 3339 (2026-06-01T12:00:00Z) or a date (midnight UTC).
    #[arg(long, value_name = "TIMESTAMP", value_parser = parse_as_of, env = "RECOUP_EXPORT_AS_OF")]
    pub as_of: DateTime<Utc>,
    /// Output file (.parquet or .csv, or say --format).
    #[arg(long, value_name = "FILE", env = "RECOUP_EXPORT_OUT")]
    pub out: PathBuf,
    /// Output format (default: from the --out extension).
    #[arg(long, value_enum, env = "RECOUP_EXPORT_FORMAT")]
    pub format: Option<Format>,
    /// Model registry: a directory or `s3://bucket/prefix`.
    #[arg(long, value_name = "DIR", default_value = "models/", env = "RECOUP_EXPORT_MODELS")]
    pub models: PathBuf,
    /// Model version (default: the current one, i.e. the serving policy).
    #[arg(long, value_name = "VERSION", env = "RECOUP_EXPORT_MODEL")]
    pub model: Option<String>,
    /// Write totals per segment (comma-separated) and currency to --out instead of one row per payment.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_enum, env = "RECOUP_EXPORT_BY")]
    pub by: Vec<Segment>,
    /// With --by: also write the per-payment rows here (format from its extension).
    #[arg(long, value_name = "FILE", requires = "by", env = "RECOUP_EXPORT_PAYMENTS_OUT")]
    pub payments_out: Option<PathBuf>,
    /// Closed payments (the latest) on which the forecast is calibrated.
    #[arg(long, value_name = "N", default_value_t = 20_000, env = "RECOUP_EXPORT_CALIBRATION_PAYMENTS")]
    pub calibration_payments: usize,
    /// Read the history this many times, each time only the payers of one shard (a
    /// hash of customer_id): peak memory shrinks about N-fold, reading takes N times
    /// as long. Rows come out shard by shard; the calibration is fitted on the first.
    #[arg(long, value_name = "N", default_value_t = 1, env = "RECOUP_EXPORT_PASSES")]
    pub passes: u64,
    /// One job of a sharded export (#25; a Kubernetes Indexed Job: `--shard
    /// $(JOB_COMPLETION_INDEX)/N`): only the payers of shard K of N (the stable payer hash
    /// of `train --shard`), written to the directory --out as part-KKKKK-of-NNNNN.parquet.
    /// The calibration is fitted on shard 0's payers in every job (shard 0 is read first),
    /// as --passes N does, so the merged export equals `--passes N` exactly.
    #[arg(long, value_name = "K/N", value_parser = super::train::shard, conflicts_with_all = ["passes", "by", "merge"], env = "RECOUP_EXPORT_SHARD")]
    pub shard: Option<(u64, u64)>,
    /// The merge step of a sharded export: read every part in DIR (all N must be there,
    /// for one --as-of) and write --out (per payment, or with --by the segment totals);
    /// reads no history.
    #[arg(long, value_name = "DIR", env = "RECOUP_EXPORT_MERGE")]
    pub merge: Option<PathBuf>,
    /// Write history rows that break the contract to the reject file and go on.
    #[arg(long, env = "RECOUP_EXPORT_SKIP_BAD_ROWS")]
    pub skip_bad_rows: bool,
    /// Where rejected rows go (with --passes: one file per pass, FILE.passK.csv; with
    /// --shard K/N: FILE.shardK.csv, and FILE.shardK.calibration.csv for shard 0's rows).
    #[arg(long, value_name = "FILE", default_value = "rejects.csv", env = "RECOUP_EXPORT_REJECTS")]
    pub rejects: PathBuf,
}

pub use super::Format;

/// A segment to total by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Segment {
    /// Class of the last decline (hard, needs_update, soft_funds, soft_issuer, technical).
    DeclineClass,
    /// Payer's country.
    Country,
    /// card, sepa_debit, ach_debit.
    PaymentMethod,
    /// ISO 4217 currency (totals are always per currency as well).
    Currency,
    /// Month of the first failure (YYYY-MM, UTC).
    Month,
}

impl Segment {
    fn column(self) -> &'static str {
        match self {
            Segment::DeclineClass => "decline_class",
            Segment::Country => "country",
            Segment::PaymentMethod => "payment_method",
            Segment::Currency => "currency_segment",
            Segment::Month => "month",
        }
    }

    fn of(self, r: &Row) -> String {
        match self {
            Segment::DeclineClass => r.decline_class.into(),
            Segment::Country => r.country.clone(),
            Segment::PaymentMethod => r.payment_method.into(),
            Segment::Currency => r.currency.clone(),
            Segment::Month => r.first_failed_at.format("%Y-%m").to_string(),
        }
    }
}

/// `rejects.csv` → `rejects.pass2.csv` (1-based pass).
fn per_pass(path: &Path, pass: u64) -> PathBuf {
    crate::history::reject_file_for(path, &format!("pass{}", pass + 1))
}

pub(super) fn parse_as_of(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(d) => Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()),
        Err(_) => Err(format!("{s:?} is neither RFC 3339 (2026-06-01T12:00:00Z) nor a date (2026-06-01)")),
    }
}

/// One open payment's exported row.
struct Row {
    payment_id: String,
    customer_id: String,
    currency: String,
    amount_minor: i64,
    payment_method: &'static str,
    card_brand: Option<&'static str>,
    card_funding: Option<&'static str>,
    country: String,
    decline_code: &'static str,
    decline_class: &'static str,
    first_failed_at: DateTime<Utc>,
    window_end: DateTime<Utc>,
    attempts: u32,
    f: Forecast,
}

impl Row {
    fn expected_recovered(&self) -> f64 {
        self.f.p_recovery * self.amount_minor as f64
    }
}

/// Open payments handled per output batch (bounds the rows held in memory).
const BATCH: usize = 32_768;

/// Run `recoup export`.
pub fn run(a: &Args, quiet: bool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let say = |m: &str| {
        if !quiet {
            eprintln!("[{:>6.1}s] {m}", started.elapsed().as_secs_f64());
        }
    };
    if let Some(dir) = &a.merge {
        return merge(a, dir, &say);
    }
    let history = a.history.as_deref().context("--history is required")?;
    crate::cli::mirror_history(history, &say)?;
    let store = crate::model_store::ModelStore::open(&a.models)?;
    let (version, model) = match &a.model {
        Some(v) => (v.clone(), store.load_version(v)?),
        None => store.load_current()?,
    };
    anyhow::ensure!(a.passes >= 1, "--passes must be at least 1");
    // The shards this process reads, in order.
    let shards: Vec<Option<(u64, u64)>> = match (a.shard, a.passes) {
        (Some(s), _) => vec![Some(s)],
        (None, 1) => vec![None],
        (None, n) => (0..n).map(|k| Some((k, n))).collect(),
    };
    let out = match a.shard {
        Some((k, n)) => {
            std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
            a.out.join(part_name(k, n))
        }
        None => a.out.clone(),
    };
    let out_format = if a.shard.is_some() { Format::Parquet } else { Format::of(&a.out, a.format)? };
    let payments_format = a.payments_out.as_deref().map(|p| Format::of(p, None)).transpose()?;
    let write_payments = if a.by.is_empty() { Some((out.as_path(), out_format)) } else { a.payments_out.as_deref().zip(payments_format) };
    let mut writer = write_payments.map(|(p, f)| Writer::create(p, f)).transpose()?;
    let mut totals: BTreeMap<Vec<String>, Total> = BTreeMap::new();
    let (mut invalid, mut open_total) = (0usize, 0usize);
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(0) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} open payments {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let cfg = EngineConfig::default();
    let mut forecaster: Option<Forecaster> = None;
    if let Some((k, n)) = a.shard.filter(|s| s.0 != 0) {
        // Every job calibrates on shard 0's payers, as one process in passes does.
        let h = load_shard(a, history, Some((0, n)), &bar, &say)?;
        say(&format!("shard {k} of {n}: calibrating on shard 0's payers, as every shard does"));
        forecaster = Some(fit_forecaster(a, &h, model.clone(), cfg.clone(), &bar, &say)?);
    }
    for shard in shards {
        let h = load_shard(a, history, shard, &bar, &say)?;
        let open = open_payments(&h, a.as_of, cfg.dunning_window_days);
        open_total += open.len();
        bar.inc_length(open.len() as u64);
        let payers = Payers::new(&h);
        // Fitted once, on the first pass's payers (a random shard of them): every
        // payment is scored by the same calibration.
        let fc: &Forecaster = match &forecaster {
            Some(fc) => fc,
            None => forecaster.insert(fit_forecaster(a, &h, model.clone(), cfg.clone(), &bar, &say)?),
        };
        bar.suspend(|| say(&format!("{} payments open at {}", open.len(), a.as_of.to_rfc3339())));
        for chunk in open.chunks(BATCH) {
            let rows: Vec<Row> = chunk.par_iter().map(|p| row(&h, &payers, p, a.as_of, fc)).collect();
            invalid += rows.iter().filter(|r| r.f.reason.starts_with("invalid:")).count();
            for r in &rows {
                let mut key: Vec<String> = a.by.iter().map(|s| s.of(r)).collect();
                key.push(r.currency.clone());
                totals.entry(key).or_default().add(r.amount_minor, r.expected_recovered(), r.f.p_recovery);
            }
            if let Some(w) = writer.as_mut() {
                w.write(&payment_frame(&rows, a.as_of, &version)?)?;
            }
            bar.inc(chunk.len() as u64);
        }
    }
    if open_total == 0 {
        tracing::warn!(as_of = %a.as_of.to_rfc3339(), "no payment is open at --as-of: the export has a header and no rows");
        if let Some(w) = writer.as_mut() {
            w.write(&payment_frame(&[], a.as_of, &version)?)?;
        }
    }
    bar.finish_and_clear();
    if let Some(w) = writer {
        w.finish()?;
    }
    if invalid > 0 {
        tracing::warn!(payments = invalid, "payments could not be forecast (their row says why in `reason`); forecast at 0");
    }
    finish(a, &out, out_format, &totals, open_total, &version, &say)
}

/// Write the segment totals (with --by) and print the headline per currency.
fn finish(
    a: &Args,
    out: &Path,
    out_format: Format,
    totals: &BTreeMap<Vec<String>, Total>,
    open_total: usize,
    version: &str,
    say: &dyn Fn(&str),
) -> anyhow::Result<ExitCode> {
    if !a.by.is_empty() {
        if let Some((key, t)) = totals.iter().find(|(_, t)| i64::try_from(t.amount).is_err()) {
            anyhow::bail!(
                "segment {}: its payments' amounts sum to {} minor units, more than the 64-bit amount_minor column holds; \
                 check amount_minor in the history (no such segment file was written)",
                key.join(" / "),
                t.amount
            );
        }
        let mut w = Writer::create(out, out_format)?;
        w.write(&segment_frame(&a.by, totals, a.as_of, version)?)?;
        w.finish()?;
    }
    say(&format!("wrote {}{}", out.display(), a.payments_out.as_ref().map(|p| format!(" and {}", p.display())).unwrap_or_default()));

    // The headline per currency on the terminal.
    let mut per_currency: BTreeMap<&str, Total> = BTreeMap::new();
    for (k, t) in totals {
        per_currency.entry(k.last().expect("currency").as_str()).or_default().merge(t);
    }
    println!("{} open payments at {}, model {}", open_total, a.as_of.to_rfc3339(), version);
    println!("{:<8} {:>9} {:>18} {:>22} {:>9}", "currency", "payments", "amount open", "expected recovered", "rate");
    for (c, t) in &per_currency {
        println!("{c:<8} {:>9} {:>18} {:>22.0} {:>8.1} %", t.payments, t.amount, t.expected, 100.0 * t.rate());
    }
    Ok(ExitCode::SUCCESS)
}

/// A shard's part file name in the --out directory of `--shard K/N`.
fn part_name(k: u64, n: u64) -> String {
    format!("part-{k:05}-of-{n:05}.parquet")
}

/// Load the history, or the payers of one shard of it.
fn load_shard(
    a: &Args,
    history: &Path,
    shard: Option<(u64, u64)>,
    bar: &indicatif::ProgressBar,
    say: &dyn Fn(&str),
) -> anyhow::Result<History> {
    // With shards, memory is what matters: decode smaller slices too.
    let parquet_slice_rows = shard.is_some().then_some(1 << 17);
    // One reject file per pass or shard job: each judges only its own payers' rows.
    let rejects = match (shard, a.shard) {
        (Some((k, _)), None) => per_pass(&a.rejects, k),
        (Some(_), Some((job, _))) => {
            crate::history::reject_file_for(&a.rejects, &format!("shard{job}{}", if shard == a.shard { "" } else { ".calibration" }))
        }
        (None, _) => a.rejects.clone(),
    };
    let opts = LoadOptions { skip_bad_rows: a.skip_bad_rows, reject_path: Some(rejects.clone()), shard, parquet_slice_rows };
    let h = load(history, &opts).with_context(|| format!("loading history {}", history.display()))?;
    if h.report.rows_rejected > 0 {
        tracing::warn!(rows = h.report.rows_rejected, file = %rejects.display(), "rows broke the contract and were written to the reject file");
    }
    let which = shard.map_or(String::new(), |(k, n)| format!(" (shard {k} of {n}: the payers of that shard)"));
    bar.suspend(|| {
        say(&format!("loaded {} attempts of {} payments from {}{which}", h.attempts.len(), h.payment_ids.len(), history.display()))
    });
    Ok(h)
}

/// Fit the forecast's calibration on a history's closed payments.
fn fit_forecaster(
    a: &Args,
    h: &History,
    model: crate::model::SuccessModel,
    cfg: EngineConfig,
    bar: &indicatif::ProgressBar,
    say: &dyn Fn(&str),
) -> anyhow::Result<Forecaster> {
    let payers = Payers::new(h);
    let fc = Forecaster::fit(h, &payers, model, cfg, a.as_of, a.calibration_payments)?;
    bar.suspend(|| {
        say(&format!(
            "payers updated their payment method on {:.1} % of {} needs-update payments closed by then; calibrated on {} forecasts",
            100.0 * fc.updates.overall(),
            fc.updates.payments,
            fc.calibration.classes.iter().map(|c| c.forecasts).sum::<usize>()
        ))
    });
    for m in &fc.calibration.classes {
        tracing::info!(class = %m.class, a = m.a, by_days = ?m.by_days, b = m.b, rate_at_zero = m.rate_at_zero, forecasts = m.forecasts, realised = m.realised, "calibration");
    }
    if fc.updates.payments == 0 {
        tracing::warn!("no needs-update payment closed before --as-of: payments waiting for a new payment method are forecast at 0");
    }
    if fc.calibration.classes.is_empty() {
        tracing::warn!("no failed payment closed before --as-of: the forecast is the model's look-ahead, uncalibrated");
    }
    Ok(fc)
}

/// `--merge DIR`: every shard's part, in shard order, to --out (see [`Args::merge`]).
fn merge(a: &Args, dir: &Path, say: &dyn Fn(&str)) -> anyhow::Result<ExitCode> {
    let parts = find_parts(dir)?;
    let out_format = Format::of(&a.out, a.format)?;
    let payments_format = a.payments_out.as_deref().map(|p| Format::of(p, None)).transpose()?;
    let write_payments = if a.by.is_empty() { Some((a.out.as_path(), out_format)) } else { a.payments_out.as_deref().zip(payments_format) };
    let mut writer = write_payments.map(|(p, f)| Writer::create(p, f)).transpose()?;
    let mut totals: BTreeMap<Vec<String>, Total> = BTreeMap::new();
    let (mut open_total, mut version) = (0usize, None::<String>);
    for path in &parts {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let df = pctx(ParquetReader::new(f).finish(), || format!("reading {}", path.display()))?;
        let text = |name: &str| -> anyhow::Result<Vec<Option<String>>> {
            let c = pctx(df.column(name), || format!("{}: no column {name}", path.display()))?;
            let ca = pctx(c.str(), || format!("{}: column {name}", path.display()))?;
            Ok((0..ca.len()).map(|i| ca.get(i).map(str::to_string)).collect())
        };
        let num = |name: &str| -> anyhow::Result<Vec<f64>> {
            let c = pctx(df.column(name), || format!("{}: no column {name}", path.display()))?;
            let ca = pctx(c.cast(&DataType::Float64), || format!("{}: column {name}", path.display()))?;
            let ca = pctx(ca.f64(), || format!("{}: column {name}", path.display()))?.clone();
            Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or(f64::NAN)).collect())
        };
        // Amounts as the integers they were written as: through f64 an amount past 2^53 lost
        // its last digits, and a missing one counted as 0.
        let amounts = |name: &str| -> anyhow::Result<Vec<i64>> {
            let c = pctx(df.column(name), || format!("{}: no column {name}", path.display()))?;
            let ca = c.i64().map_err(|_| {
                anyhow::anyhow!("{}: column {name} is {}, not the 64-bit integers `recoup export` writes", path.display(), c.dtype())
            })?;
            (0..ca.len())
                .map(|i| ca.get(i).ok_or_else(|| anyhow::anyhow!("{}: row {}: {name} is missing", path.display(), i + 1)))
                .collect()
        };
        let as_of = pctx(df.column("as_of"), || format!("{}: no column as_of", path.display()))?;
        let as_of = pctx(as_of.cast(&DataType::Int64), || format!("{}: column as_of", path.display()))?;
        let want = a.as_of.timestamp_micros();
        if let Some(i) = (0..as_of.len()).find(|&i| as_of.i64().ok().and_then(|c| c.get(i)) != Some(want)) {
            anyhow::bail!(
                "{}: row {} is as of another time than --as-of {}: parts of different exports are mixed",
                path.display(),
                i + 1,
                a.as_of.to_rfc3339()
            );
        }
        let versions = text("model_version")?;
        if let Some(v) = versions.iter().flatten().find(|v| version.as_ref().is_some_and(|w| w != *v)) {
            anyhow::bail!(
                "{}: model {v}, the parts before it used {}: parts of different exports are mixed",
                path.display(),
                version.unwrap_or_default()
            );
        }
        version = version.or_else(|| versions.into_iter().flatten().next());
        let segments: Vec<Vec<Option<String>>> =
            a.by.iter().map(|s| text(if *s == Segment::Currency { "currency" } else { s.column() })).collect::<anyhow::Result<_>>()?;
        let (currency, amount, expected, p) =
            (text("currency")?, amounts("amount_minor")?, num("expected_recovered_minor")?, num("p_recovery")?);
        for i in 0..df.height() {
            let mut key: Vec<String> = segments.iter().map(|c| c[i].clone().unwrap_or_default()).collect();
            key.push(currency[i].clone().unwrap_or_default());
            totals.entry(key).or_default().add(amount[i], expected[i], p[i]);
        }
        open_total += df.height();
        if let Some(w) = writer.as_mut() {
            w.write(&df)?;
        }
        say(&format!("merged {} ({} open payments)", path.display(), df.height()));
    }
    if let Some(w) = writer {
        w.finish()?;
    }
    finish(a, &a.out, out_format, &totals, open_total, &version.unwrap_or_default(), say)
}

/// A polars result with anyhow's context.
fn pctx<T>(r: PolarsResult<T>, msg: impl FnOnce() -> String) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::anyhow!("{}: {e}", msg()))
}

/// The part files of a sharded export in `dir`, in shard order, checked to be complete.
fn find_parts(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found: Vec<(u64, u64, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e.with_context(|| format!("reading {}", dir.display()))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(kn) = name.strip_prefix("part-").and_then(|r| r.strip_suffix(".parquet")) else { continue };
        let Some((k, n)) = kn.split_once("-of-").and_then(|(k, n)| Some((k.parse().ok()?, n.parse().ok()?))) else { continue };
        found.push((k, n, path));
    }
    found.sort();
    let Some(n) = found.first().map(|f| f.1) else {
        anyhow::bail!("{}: no part-KKKKK-of-NNNNN.parquet (from `recoup export --shard K/N --out {}`)", dir.display(), dir.display());
    };
    anyhow::ensure!(found.iter().all(|f| f.1 == n), "{}: parts of different shard counts are mixed", dir.display());
    let have: Vec<u64> = found.iter().map(|f| f.0).collect();
    if let Some(missing) = crate::history::shards_incomplete(&have, n) {
        anyhow::bail!(
            "{}: {} of {n} parts are there; missing: {missing} (their jobs have not finished, or failed)",
            dir.display(),
            found.len()
        );
    }
    Ok(found.into_iter().map(|f| f.2).collect())
}

fn row(h: &History, payers: &Payers, p: &Open, as_of: DateTime<Utc>, fc: &Forecaster) -> Row {
    let req = request(h, payers, p, as_of);
    let last_decline = p.last().decline.unwrap_or(crate::declines::DeclineCode::Other);
    let f = fc.forecast(&req).unwrap_or_else(|e| Forecast::stop(format!("invalid: {e}")));
    let last = p.last();
    Row {
        payment_id: req.payment_id,
        customer_id: h.customer_id(last).to_string(),
        currency: last.amount.currency.as_str().to_string(),
        amount_minor: last.amount.minor,
        payment_method: last.method.into(),
        card_brand: last.card_brand.map(Into::into),
        card_funding: last.card_funding.map(Into::into),
        country: last.country.as_str().to_string(),
        decline_code: last_decline.as_str(),
        decline_class: last_decline.class().into(),
        first_failed_at: p.first().attempted_at,
        window_end: p.first().attempted_at + Duration::days(fc.cfg.dunning_window_days),
        attempts: p.attempts.len() as u32,
        f,
    }
}

/// Totals of one segment × currency.
#[derive(Debug, Default, Clone)]
struct Total {
    payments: u64,
    /// Summed wide: a segment of large amounts must not wrap (2 × 9e18 did, to a negative total).
    amount: i128,
    expected: f64,
    sum_p: f64,
}

impl Total {
    fn add(&mut self, amount_minor: i64, expected: f64, p_recovery: f64) {
        self.payments += 1;
        self.amount += i128::from(amount_minor);
        self.expected += expected;
        self.sum_p += p_recovery;
    }
    fn merge(&mut self, o: &Total) {
        self.payments += o.payments;
        self.amount += o.amount;
        self.expected += o.expected;
        self.sum_p += o.sum_p;
    }
    fn rate(&self) -> f64 {
        if self.amount > 0 {
            self.expected / self.amount as f64
        } else {
            0.0
        }
    }
}

fn times(name: &str, v: impl Iterator<Item = Option<DateTime<Utc>>>) -> Column {
    Int64Chunked::from_iter_options(name.into(), v.map(|t| t.map(|t| t.timestamp_micros())))
        .into_datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
        .into_series()
        .into_column()
}

fn payment_frame(rows: &[Row], as_of: DateTime<Utc>, version: &str) -> PolarsResult<DataFrame> {
    let text = |name: &str, f: &dyn Fn(&Row) -> Option<&str>| Column::new(name.into(), rows.iter().map(f).collect::<Vec<Option<&str>>>());
    let cols = vec![
        text("payment_id", &|r| Some(&r.payment_id)),
        text("customer_id", &|r| Some(&r.customer_id)),
        times("as_of", rows.iter().map(|_| Some(as_of))),
        Column::new("model_version".into(), vec![version; rows.len()]),
        text("currency", &|r| Some(&r.currency)),
        Column::new("amount_minor".into(), rows.iter().map(|r| r.amount_minor).collect::<Vec<_>>()),
        text("payment_method", &|r| Some(r.payment_method)),
        text("card_brand", &|r| r.card_brand),
        text("card_funding", &|r| r.card_funding),
        text("country", &|r| Some(&r.country)),
        text("decline_code", &|r| Some(r.decline_code)),
        text("decline_class", &|r| Some(r.decline_class)),
        times("first_failed_at", rows.iter().map(|r| Some(r.first_failed_at))),
        Column::new("month".into(), rows.iter().map(|r| r.first_failed_at.format("%Y-%m").to_string()).collect::<Vec<_>>()),
        times("window_end", rows.iter().map(|r| Some(r.window_end))),
        Column::new("attempts".into(), rows.iter().map(|r| r.attempts).collect::<Vec<_>>()),
        text("next_action", &|r| Some(r.f.next.into())),
        times("next_retry_at", rows.iter().map(|r| r.f.retry_at)),
        text("next_channel", &|r| r.f.channel.map(Into::into)),
        times("next_send_at", rows.iter().map(|r| r.f.send_at)),
        Column::new("p_next_success".into(), rows.iter().map(|r| r.f.p_next_success).collect::<Vec<_>>()),
        Column::new("p_recovery".into(), rows.iter().map(|r| r.f.p_recovery).collect::<Vec<_>>()),
        Column::new("p_recovery_model".into(), rows.iter().map(|r| r.f.p_recovery_model).collect::<Vec<_>>()),
        Column::new("expected_recovered_minor".into(), rows.iter().map(Row::expected_recovered).collect::<Vec<_>>()),
        Column::new("retries_if_all_fail".into(), rows.iter().map(|r| r.f.retries_if_all_fail).collect::<Vec<_>>()),
        text("reason", &|r| Some(&r.f.reason)),
    ];
    DataFrame::new(rows.len(), cols)
}

fn segment_frame(by: &[Segment], totals: &BTreeMap<Vec<String>, Total>, as_of: DateTime<Utc>, version: &str) -> PolarsResult<DataFrame> {
    let n = totals.len();
    let mut cols: Vec<Column> = by
        .iter()
        .enumerate()
        .map(|(i, s)| Column::new(s.column().into(), totals.keys().map(|k| k[i].as_str()).collect::<Vec<_>>()))
        .collect();
    let t: Vec<&Total> = totals.values().collect();
    cols.extend([
        Column::new("currency".into(), totals.keys().map(|k| k.last().expect("currency").as_str()).collect::<Vec<_>>()),
        Column::new("payments".into(), t.iter().map(|t| t.payments).collect::<Vec<_>>()),
        // Within i64: `finish` refuses a segment beyond it.
        Column::new("amount_minor".into(), t.iter().map(|t| t.amount as i64).collect::<Vec<_>>()),
        Column::new("expected_recovered_minor".into(), t.iter().map(|t| t.expected).collect::<Vec<_>>()),
        Column::new("expected_recovery_rate".into(), t.iter().map(|t| t.rate()).collect::<Vec<_>>()),
        Column::new("mean_p_recovery".into(), t.iter().map(|t| t.sum_p / t.payments.max(1) as f64).collect::<Vec<_>>()),
        times("as_of", (0..n).map(|_| Some(as_of))),
        Column::new("model_version".into(), vec![version; n]),
    ]);
    DataFrame::new(n, cols)
}

/// Writes frames one batch at a time to Parquet or CSV; the first batch gives the
/// schema. Rows go to `FILE.partial`, renamed to FILE when finished: a run that
/// fails half-way leaves no file that looks complete (and removes the partial one).
struct Writer {
    path: PathBuf,
    partial: PathBuf,
    format: Format,
    file: Option<File>,
    open: Option<Batched>,
    done: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

enum Batched {
    Parquet(Box<polars::io::parquet::write::BatchedWriter<File>>),
    Csv(polars::io::csv::write::BatchedWriter<File>),
}

impl Writer {
    fn create(path: &Path, format: Format) -> anyhow::Result<Writer> {
        let mut name = path.file_name().with_context(|| format!("{}: not a file name", path.display()))?.to_os_string();
        name.push(".partial");
        let partial = path.with_file_name(name);
        let f = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        Ok(Writer { path: path.to_path_buf(), partial, format, file: Some(f), open: None, done: false })
    }

    fn write(&mut self, df: &DataFrame) -> anyhow::Result<()> {
        let path = self.path.display().to_string();
        let ctx = |e: PolarsError| anyhow::anyhow!("writing {path}: {e}");
        if let Some(f) = self.file.take() {
            self.open = Some(match self.format {
                Format::Parquet => Batched::Parquet(Box::new(
                    ParquetWriter::new(f).with_compression(ParquetCompression::Zstd(None)).batched(df.schema()).map_err(ctx)?,
                )),
                Format::Csv => Batched::Csv(
                    CsvWriter::new(f)
                        .include_header(true)
                        .with_datetime_format(Some("%Y-%m-%dT%H:%M:%S%.fZ".into()))
                        .batched(df.schema())
                        .map_err(ctx)?,
                ),
            });
        }
        match self.open.as_mut().expect("opened by the first batch") {
            Batched::Parquet(w) => w.write_batch(df).map_err(ctx),
            Batched::Csv(w) => w.write_batch(df).map_err(ctx),
        }
    }

    fn finish(mut self) -> anyhow::Result<()> {
        let path = self.path.display().to_string();
        let ctx = |e: PolarsError| anyhow::anyhow!("finishing {path}: {e}");
        match self.open.take() {
            Some(Batched::Parquet(w)) => w.finish().map(|_| ()).map_err(ctx)?,
            Some(Batched::Csv(mut w)) => w.finish().map_err(ctx)?,
            None => bail!("{}: nothing was written", self.path.display()),
        }
        std::fs::rename(&self.partial, &self.path)
            .with_context(|| format!("renaming {} to {}", self.partial.display(), self.path.display()))?;
        self.done = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pass_has_its_own_reject_file() {
        assert_eq!(per_pass(Path::new("out/rejects.csv"), 0), PathBuf::from("out/rejects.pass1.csv"));
        assert_eq!(per_pass(Path::new("bad"), 2), PathBuf::from("bad.pass3"));
    }

    #[test]
    fn as_of_takes_rfc3339_or_a_date() {
        assert_eq!(parse_as_of("2026-06-01").unwrap().to_rfc3339(), "2026-06-01T00:00:00+00:00");
        assert_eq!(parse_as_of("2026-06-01T12:30:00+02:00").unwrap().to_rfc3339(), "2026-06-01T10:30:00+00:00");
        assert!(parse_as_of("June 1st").unwrap_err().contains("neither RFC 3339"));
    }
}
