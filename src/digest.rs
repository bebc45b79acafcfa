//! What training reads from a history, in a form that shards of payers produce
//! separately and one fit step merges (#25: `recoup train --features-only --shard k/N`,
//! then `recoup train --from-features DIR`).
//!
//! A [`Digest`] holds the retry examples of the success model, the logged retries the
//! support counts, the counts behind message attrition, the records behind the ask
//! response and the training population for drift: everything `recoup train` estimates
//! from, and nothing else. One process builds the digest of the whole history and fits
//! on it; N shard jobs each build the digest of the payers in their shard
//! ([`crate::history::shard_of`]: every payer's rows are in one shard, since every
//! quantity is computed per payer), and the fit step merges them. The merge is exact:
//! the examples are put in one canonical order (time, payer place, place among the
//! payer's examples), counts are integers (attrition's weights in fixed point) and
//! records are sorted before anything is summed over them, so N shards give the same
//! model file as one process, byte for byte (tested).
//!
//! On disk a shard is a directory `shard-KKKKK-of-NNNNN/` of Parquet files (examples,
//! retries, first attempts, update intervals) and `shard.json` (what was read, the
//! counts); it is written under a temporary name and renamed when complete, so a
//! directory with the final name is a finished shard.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use strum::VariantArray;

use crate::asks::{AskInputs, FirstAttempts, Interval};
use crate::attrition::AttritionSums;
use crate::declines::{DeclineClass, DeclineCode};
use crate::domain::Channel;
use crate::drift::Population;
use crate::features::ACTIVE;
use crate::history::History;
use crate::support::Observed;
use crate::train::TrainingSet;

/// The shard directory format this build writes and reads.
pub const FORMAT: &str = "recoup-shard/v2";

/// Everything training estimates from, for a whole history or a shard of its payers.
#[derive(Debug, Clone, Default)]
pub struct Digest {
    /// The success model's examples, in canonical order.
    pub set: TrainingSet,
    /// Every logged retry, as the support counts it.
    pub observed: Vec<Observed>,
    pub attrition: AttritionSums,
    pub asks: AskInputs,
    pub population: Population,
    /// Accepted attempts read.
    pub attempts: u64,
    /// Distinct payments (the example payment ids are below it).
    pub payments: u64,
}

impl Digest {
    /// The digest of a loaded history (or of the shard of it that was loaded).
    pub fn of_history(h: &History) -> Digest {
        let mut attrition = AttritionSums::default();
        for p in h.payments() {
            attrition.add_payment(p);
        }
        // One hash per payer, for the examples' order and the ask records' alike.
        let places = h.payer_places();
        Digest {
            set: crate::train::build_placed(h, &places),
            observed: crate::train::observed_retries(h),
            attrition,
            asks: AskInputs::of_history(h, &places),
            population: Population::of_history(h),
            attempts: h.attempts.len() as u64,
            payments: h.payment_ids.len() as u64,
        }
    }

    /// Merge the digests of disjoint sets of payers into the digest of their union.
    pub fn merge(parts: Vec<Digest>) -> Digest {
        let mut out = Digest::default();
        let mut sets = Vec::with_capacity(parts.len());
        for mut p in parts {
            // Payment ids are per part: shifted past the earlier parts' so they stay distinct.
            let shift = out.payments as u32;
            p.set.payments.iter_mut().for_each(|x| *x += shift);
            sets.push(p.set);
            out.observed.extend(p.observed);
            out.attrition.merge(&p.attrition);
            out.asks.merge(p.asks);
            out.population.merge(&p.population);
            out.attempts += p.attempts;
            out.payments += p.payments;
        }
        out.set = TrainingSet::merge(sets);
        out.asks.finish();
        out
    }
}

/// What a shard directory's `shard.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardMeta {
    /// [`FORMAT`].
    pub format: String,
    pub recoup_version: String,
    /// Feature columns per example and in the schema: a fit step of another build refuses the shard.
    pub active_columns: usize,
    pub schema_columns: usize,
    /// This shard's index (0-based) and the number of shards.
    pub shard: u64,
    pub shards: u64,
    /// The history read, its files and their fingerprint (the same for every shard of one run).
    pub history: String,
    pub files: Vec<String>,
    pub fingerprint: String,
    /// Rows read, accepted into this shard, rejected, and of other shards' payers.
    pub rows_read: u64,
    pub rows_rejected: u64,
    pub rows_other_shards: u64,
    pub attempts: u64,
    pub payments: u64,
    pub examples: u64,
    pub attrition: AttritionSums,
    pub population: Population,
    pub last_attempt: Option<DateTime<Utc>>,
    /// Needs-update payments retried because the payer updated (left out of the ask intervals).
    #[serde(default)]
    pub update_triggered_payments: usize,
}

/// Why a shard could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parquet { path: PathBuf, source: PolarsError },
    #[error("{path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    /// Shards that do not belong together, are missing, or hold values out of range.
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DigestError + '_ {
    move |source| DigestError::Io { path: path.to_path_buf(), source }
}

/// The directory name of shard `k` of `n`.
pub fn shard_dir_name(k: u64, n: u64) -> String {
    format!("shard-{k:05}-of-{n:05}")
}

fn write_parquet(path: &Path, columns: Vec<Column>) -> Result<(), DigestError> {
    let pe = |source| DigestError::Parquet { path: path.to_path_buf(), source };
    let height = columns.first().map_or(0, |c| c.len());
    let mut df = DataFrame::new(height, columns).map_err(pe)?;
    let f = std::fs::File::create(path).map_err(io(path))?;
    ParquetWriter::new(f).finish(&mut df).map_err(pe)?;
    Ok(())
}

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn index_of<T: PartialEq + 'static>(all: &'static [T], v: &T) -> i32 {
    all.iter().position(|x| x == v).unwrap_or(0) as i32
}

/// Write `d`, the digest of shard `k` of `n`, under `dir` (see the module docs); returns its directory.
pub fn write_shard(dir: &Path, d: &Digest, meta: &ShardMeta) -> Result<PathBuf, DigestError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = shard_dir_name(meta.shard, meta.shards);
    let tmp = dir.join(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let s = &d.set;
    let mut cols: Vec<Column> = (0..ACTIVE)
        .map(|j| Column::new(format!("c{j:02}").into(), (0..s.len()).map(|i| s.row(i)[j] as i32).collect::<Vec<i32>>()))
        .collect();
    cols.push(Column::new("label".into(), s.labels.clone()));
    cols.push(Column::new("at_ns".into(), s.times.iter().map(|t| nanos(*t)).collect::<Vec<i64>>()));
    cols.push(Column::new("decline".into(), s.declines.iter().map(|c| index_of(DeclineCode::VARIANTS, c)).collect::<Vec<i32>>()));
    cols.push(Column::new("payer".into(), s.payers.clone()));
    cols.push(Column::new("seq".into(), s.seq.clone()));
    cols.push(Column::new("payment".into(), s.payments.clone()));
    // The retry's exact local day, hour and spacing (v2): the model card's finer residuals.
    cols.push(Column::new("day_of_month".into(), s.stamps.iter().map(|t| t.day_of_month as u32).collect::<Vec<u32>>()));
    cols.push(Column::new("local_hour".into(), s.stamps.iter().map(|t| t.local_hour as u32).collect::<Vec<u32>>()));
    cols.push(Column::new("hours_since_last".into(), s.stamps.iter().map(|t| t.hours_since_last as u32).collect::<Vec<u32>>()));
    write_parquet(&tmp.join("examples.parquet"), cols)?;
    let o = &d.observed;
    write_parquet(
        &tmp.join("retries.parquet"),
        vec![
            Column::new("class".into(), o.iter().map(|r| index_of(DeclineClass::VARIANTS, &r.class)).collect::<Vec<i32>>()),
            Column::new("spacing_hours".into(), o.iter().map(|r| r.spacing_hours).collect::<Vec<f64>>()),
            Column::new("hours_since_failure".into(), o.iter().map(|r| r.hours_since_failure).collect::<Vec<f64>>()),
            Column::new("retry_number".into(), o.iter().map(|r| r.retry_number).collect::<Vec<u32>>()),
            Column::new("local_hour".into(), o.iter().map(|r| r.local_hour).collect::<Vec<u32>>()),
            Column::new("channel".into(), o.iter().map(|r| index_of(Channel::VARIANTS, &r.channel)).collect::<Vec<i32>>()),
        ],
    )?;
    let f = &d.asks.firsts;
    write_parquet(
        &tmp.join("firsts.parquet"),
        vec![
            Column::new("payer".into(), f.iter().map(|r| r.payer).collect::<Vec<u64>>()),
            Column::new("class".into(), f.iter().map(|r| index_of(DeclineClass::VARIANTS, &r.class)).collect::<Vec<i32>>()),
            Column::new("at_ns".into(), f.iter().map(|r| nanos(r.at)).collect::<Vec<i64>>()),
            Column::new("next_minutes".into(), f.iter().map(|r| r.next.map(|n| n.0)).collect::<Vec<Option<i64>>>()),
            Column::new(
                "next_channel".into(),
                f.iter().map(|r| r.next.and_then(|n| n.1).map(|c| index_of(Channel::VARIANTS, &c))).collect::<Vec<Option<i32>>>(),
            ),
            Column::new("next_propensity".into(), f.iter().map(|r| r.next.and_then(|n| n.2)).collect::<Vec<Option<f64>>>()),
            Column::new("has_next".into(), f.iter().map(|r| r.next.is_some()).collect::<Vec<bool>>()),
        ],
    )?;
    let iv = &d.asks.intervals;
    write_parquet(
        &tmp.join("intervals.parquet"),
        vec![
            Column::new("days".into(), iv.iter().map(|i| i.days).collect::<Vec<f64>>()),
            Column::new("channel".into(), iv.iter().map(|i| index_of(Channel::VARIANTS, &i.channel)).collect::<Vec<i32>>()),
            Column::new("prev".into(), iv.iter().map(|i| index_of(Channel::VARIANTS, &i.prev)).collect::<Vec<i32>>()),
            Column::new("updated".into(), iv.iter().map(|i| i.updated).collect::<Vec<bool>>()),
        ],
    )?;
    let path = tmp.join("shard.json");
    let text = serde_json::to_string_pretty(meta).map_err(|source| DigestError::Json { path: path.clone(), source })?;
    std::fs::write(&path, text + "\n").map_err(io(&path))?;
    let done = dir.join(&name);
    if done.exists() {
        // A rerun of the same shard (an Indexed Job's retry): the newer one stands.
        std::fs::remove_dir_all(&done).map_err(io(&done))?;
    }
    std::fs::rename(&tmp, &done).map_err(io(&done))?;
    Ok(done)
}

/// The finished shards under `dir`, checked to be one complete set: the same number of
/// shards, history fingerprint, format and feature schema, each index once.
pub fn find_shards(dir: &Path) -> Result<Vec<(PathBuf, ShardMeta)>, DigestError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !name.starts_with("shard-") || !path.is_dir() {
            continue;
        }
        let meta_path = path.join("shard.json");
        let text = std::fs::read_to_string(&meta_path).map_err(io(&meta_path))?;
        let meta: ShardMeta = serde_json::from_str(&text).map_err(|source| DigestError::Json { path: meta_path.clone(), source })?;
        found.push((path, meta));
    }
    let Some((_, first)) = found.first() else {
        return Err(DigestError::Invalid(format!(
            "{}: no finished shard (shard-KKKKK-of-NNNNN/ directories from `recoup train --features-only --shard K/N`)",
            dir.display()
        )));
    };
    let first = first.clone();
    for (path, m) in &found {
        let differs = |what: &str| {
            DigestError::Invalid(format!(
                "{}: {what} differs from {}'s: shards of different runs or builds are mixed in {}",
                path.display(),
                shard_dir_name(first.shard, first.shards),
                dir.display()
            ))
        };
        if m.format != FORMAT {
            return Err(DigestError::Invalid(format!("{}: format {:?}, this build reads {FORMAT:?}", path.display(), m.format)));
        }
        if m.active_columns != ACTIVE || m.schema_columns != crate::features::SCHEMA.len() {
            return Err(DigestError::Invalid(format!(
                "{}: written with another feature schema ({} of {} columns; this build has {} of {}): rebuild the shards with this build",
                path.display(),
                m.active_columns,
                m.schema_columns,
                ACTIVE,
                crate::features::SCHEMA.len()
            )));
        }
        if m.shards != first.shards {
            return Err(differs("the number of shards"));
        }
        if let Err(why) = m.attrition.check() {
            return Err(DigestError::Invalid(format!("{}: shard.json: {why}: the shard is damaged; rebuild it", path.display())));
        }
        if m.fingerprint != first.fingerprint {
            return Err(differs("the history's fingerprint"));
        }
    }
    found.sort_by_key(|(_, m)| m.shard);
    let have: Vec<u64> = found.iter().map(|(_, m)| m.shard).collect();
    if let Some(missing) = crate::history::shards_incomplete(&have, first.shards) {
        return Err(DigestError::Invalid(format!(
            "{}: {} of {} shards are finished; missing: {missing} (their jobs have not finished, or failed)",
            dir.display(),
            have.len(),
            first.shards,
        )));
    }
    Ok(found)
}

fn read_parquet(path: &Path) -> Result<DataFrame, DigestError> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    ParquetReader::new(f).finish().map_err(|source| DigestError::Parquet { path: path.to_path_buf(), source })
}

/// Typed column access with errors naming the file and column.
struct Frame {
    path: PathBuf,
    df: DataFrame,
}

impl Frame {
    fn open(path: PathBuf) -> Result<Frame, DigestError> {
        let df = read_parquet(&path)?;
        Ok(Frame { path, df })
    }
    fn pe(&self, name: &str) -> impl FnOnce(PolarsError) -> DigestError + '_ {
        let path = self.path.clone();
        let name = name.to_string();
        move |e| DigestError::Invalid(format!("{}: column {name}: {e}", path.display()))
    }
    fn i32s(&self, name: &str) -> Result<Vec<Option<i32>>, DigestError> {
        let ca = self.df.column(name).map_err(self.pe(name))?.i32().map_err(self.pe(name))?.rechunk();
        Ok((0..ca.len()).map(|i| ca.get(i)).collect())
    }
    fn i64s(&self, name: &str) -> Result<Vec<Option<i64>>, DigestError> {
        let ca = self.df.column(name).map_err(self.pe(name))?.i64().map_err(self.pe(name))?.rechunk();
        Ok((0..ca.len()).map(|i| ca.get(i)).collect())
    }
    fn u32s(&self, name: &str) -> Result<Vec<Option<u32>>, DigestError> {
        let ca = self.df.column(name).map_err(self.pe(name))?.u32().map_err(self.pe(name))?.rechunk();
        Ok((0..ca.len()).map(|i| ca.get(i)).collect())
    }
    fn u64s(&self, name: &str) -> Result<Vec<Option<u64>>, DigestError> {
        let ca = self.df.column(name).map_err(self.pe(name))?.u64().map_err(self.pe(name))?.rechunk();
        Ok((0..ca.len()).map(|i| ca.get(i)).collect())
    }
    fn f64s(&self, name: &str) -> Result<Vec<Option<f64>>, DigestError> {
        let ca = self.df.column(name).map_err(self.pe(name))?.f64().map_err(self.pe(name))?.rechunk();
        Ok((0..ca.len()).map(|i| ca.get(i)).collect())
    }
    fn bools(&self, name: &str) -> Result<Vec<Option<bool>>, DigestError> {
        let ca = self.df.column(name).map_err(self.pe(name))?.bool().map_err(self.pe(name))?.rechunk();
        Ok((0..ca.len()).map(|i| ca.get(i)).collect())
    }
    fn bad(&self, row: usize, name: &str, why: &str) -> DigestError {
        DigestError::Invalid(format!("{}: row {}, column {name}: {why}", self.path.display(), row + 1))
    }
    /// A required value.
    fn need<T: Copy>(&self, v: &[Option<T>], row: usize, name: &str) -> Result<T, DigestError> {
        v.get(row).copied().flatten().ok_or_else(|| self.bad(row, name, "missing"))
    }
    /// A variant by its index.
    fn variant<T: Copy + 'static>(&self, all: &'static [T], v: Option<i32>, row: usize, name: &str) -> Result<T, DigestError> {
        v.and_then(|i| usize::try_from(i).ok()).and_then(|i| all.get(i).copied()).ok_or_else(|| self.bad(row, name, "not a known level"))
    }
    fn time(&self, v: Option<i64>, row: usize, name: &str) -> Result<DateTime<Utc>, DigestError> {
        v.map(DateTime::from_timestamp_nanos).ok_or_else(|| self.bad(row, name, "missing"))
    }
}

/// Read one finished shard directory back into a digest.
pub fn read_shard(path: &Path, meta: &ShardMeta) -> Result<Digest, DigestError> {
    let set = read_examples(path, meta)?;
    if set.len() as u64 != meta.examples {
        return Err(DigestError::Invalid(format!(
            "{}: {} examples, shard.json says {}: the shard is damaged; rebuild it",
            path.display(),
            set.len(),
            meta.examples
        )));
    }
    Ok(Digest {
        set,
        observed: read_retries(path)?,
        attrition: meta.attrition.clone(),
        asks: AskInputs {
            intervals: read_intervals(path)?,
            firsts: read_firsts(path)?,
            end: meta.last_attempt,
            update_triggered: meta.update_triggered_payments,
        },
        population: meta.population.clone(),
        attempts: meta.attempts,
        payments: meta.payments,
    })
}

fn read_examples(path: &Path, meta: &ShardMeta) -> Result<TrainingSet, DigestError> {
    let ex = Frame::open(path.join("examples.parquet"))?;
    let n = ex.df.height();
    let schema = crate::features::SCHEMA.len() as i32;
    let mut set = TrainingSet { columns: Vec::with_capacity(n * ACTIVE), ..TrainingSet::default() };
    let cols: Vec<Vec<Option<i32>>> = (0..ACTIVE).map(|j| ex.i32s(&format!("c{j:02}"))).collect::<Result<_, _>>()?;
    for i in 0..n {
        for (j, c) in cols.iter().enumerate() {
            let v = ex.need(c, i, &format!("c{j:02}"))?;
            if !(0..schema).contains(&v) {
                return Err(ex.bad(i, &format!("c{j:02}"), "not a feature column"));
            }
            set.columns.push(v as u16);
        }
    }
    drop(cols);
    let (labels, at, decline) = (ex.bools("label")?, ex.i64s("at_ns")?, ex.i32s("decline")?);
    let (payers, seq, payments) = (ex.u64s("payer")?, ex.u32s("seq")?, ex.u32s("payment")?);
    let (day, hour, since) = (ex.u32s("day_of_month")?, ex.u32s("local_hour")?, ex.u32s("hours_since_last")?);
    for i in 0..n {
        set.labels.push(ex.need(&labels, i, "label")?);
        set.times.push(ex.time(at[i], i, "at_ns")?);
        set.declines.push(ex.variant(DeclineCode::VARIANTS, decline[i], i, "decline")?);
        set.payers.push(ex.need(&payers, i, "payer")?);
        set.seq.push(ex.need(&seq, i, "seq")?);
        let p = ex.need(&payments, i, "payment")?;
        if u64::from(p) >= meta.payments {
            return Err(ex.bad(i, "payment", "beyond the shard's payment count"));
        }
        set.payments.push(p);
        let (d, h, gap) = (ex.need(&day, i, "day_of_month")?, ex.need(&hour, i, "local_hour")?, ex.need(&since, i, "hours_since_last")?);
        if !(1..=31).contains(&d) {
            return Err(ex.bad(i, "day_of_month", "not a day of the month"));
        }
        if h > 23 {
            return Err(ex.bad(i, "local_hour", "not an hour of the day"));
        }
        let hours_since_last = u16::try_from(gap).map_err(|_| ex.bad(i, "hours_since_last", "beyond 65535"))?;
        set.stamps.push(crate::train::Stamp { day_of_month: d as u8, local_hour: h as u8, hours_since_last });
    }
    Ok(set)
}

fn read_retries(path: &Path) -> Result<Vec<Observed>, DigestError> {
    let r = Frame::open(path.join("retries.parquet"))?;
    let (class, spacing, since, number, hour, channel) = (
        r.i32s("class")?,
        r.f64s("spacing_hours")?,
        r.f64s("hours_since_failure")?,
        r.u32s("retry_number")?,
        r.u32s("local_hour")?,
        r.i32s("channel")?,
    );
    (0..r.df.height())
        .map(|i| {
            Ok(Observed {
                class: r.variant(DeclineClass::VARIANTS, class[i], i, "class")?,
                spacing_hours: r.need(&spacing, i, "spacing_hours")?,
                hours_since_failure: r.need(&since, i, "hours_since_failure")?,
                retry_number: r.need(&number, i, "retry_number")?,
                local_hour: r.need(&hour, i, "local_hour")?,
                channel: r.variant(Channel::VARIANTS, channel[i], i, "channel")?,
            })
        })
        .collect()
}

fn read_firsts(path: &Path) -> Result<Vec<FirstAttempts>, DigestError> {
    let f = Frame::open(path.join("firsts.parquet"))?;
    let (payer, class, at, minutes, channel, propensity, has_next) = (
        f.u64s("payer")?,
        f.i32s("class")?,
        f.i64s("at_ns")?,
        f.i64s("next_minutes")?,
        f.i32s("next_channel")?,
        f.f64s("next_propensity")?,
        f.bools("has_next")?,
    );
    (0..f.df.height())
        .map(|i| {
            let next = if f.need(&has_next, i, "has_next")? {
                let ch = channel[i].map(|c| f.variant(Channel::VARIANTS, Some(c), i, "next_channel")).transpose()?;
                Some((f.need(&minutes, i, "next_minutes")?, ch, propensity[i]))
            } else {
                None
            };
            Ok(FirstAttempts {
                payer: f.need(&payer, i, "payer")?,
                class: f.variant(DeclineClass::VARIANTS, class[i], i, "class")?,
                at: f.time(at[i], i, "at_ns")?,
                next,
            })
        })
        .collect()
}

fn read_intervals(path: &Path) -> Result<Vec<Interval>, DigestError> {
    let v = Frame::open(path.join("intervals.parquet"))?;
    let (days, channel, prev, updated) = (v.f64s("days")?, v.i32s("channel")?, v.i32s("prev")?, v.bools("updated")?);
    (0..v.df.height())
        .map(|i| {
            Ok(Interval {
                days: v.need(&days, i, "days")?,
                channel: v.variant(Channel::VARIANTS, channel[i], i, "channel")?,
                prev: v.variant(Channel::VARIANTS, prev[i], i, "prev")?,
                updated: v.need(&updated, i, "updated")?,
            })
        })
        .collect()
}
