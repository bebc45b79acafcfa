//! History loading: reads payment-attempt history (contract v1) from Parquet,
//! CSV or a directory of Parquet files (hive partitions included), validates
//! every rule of the contract and yields typed [`Attempt`]s.
//!
//! Edge side of the boundary: this module does file I/O with polars and is the
//! only place that turns untrusted text into domain types. It never drops a
//! row silently: a bad row stops the load with an error naming file, row,
//! column and value, or — with `skip_bad_rows` — goes to a reject file and is
//! counted.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

pub mod checksum;
pub mod csv;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use polars::prelude::*;
use serde::Serialize;

use crate::attempt::Attempt;
use crate::calendar::default_timezone;
use crate::declines::{normalize, DeclineCode, NormalizedFrom, Signals};
use crate::domain::{
    BillingInterval, CardBrand, CardFunding, CardId, Channel, Country, Currency, CustomerIx, Money, Outcome, PaymentIx, PaymentMethod,
    RawCode, SourceRow,
};

/// The contract's columns in contract order, with whether each is required.
pub const CONTRACT_COLUMNS: &[(&str, bool)] = &[
    ("attempt_id", true),
    ("payment_id", true),
    ("customer_id", true),
    ("attempted_at", true),
    ("attempt_number", true),
    ("amount_minor", true),
    ("currency", true),
    ("payment_method", true),
    ("card_brand", false),
    ("card_funding", false),
    ("country", true),
    ("timezone", false),
    ("outcome", true),
    ("decline_code", false),
    ("network_code", false),
    ("advice_code", false),
    ("channel", false),
    ("payment_method_updated", false),
    ("billing_interval", false),
    ("tenure_days", false),
    ("propensity", false),
    ("payment_method_id", false),
    ("update_triggered", false),
];

// Column positions in CONTRACT_COLUMNS, used to index the accessors.
const C_ATTEMPT_ID: usize = 0;
const C_PAYMENT_ID: usize = 1;
const C_CUSTOMER_ID: usize = 2;
const C_ATTEMPTED_AT: usize = 3;
const C_ATTEMPT_NUMBER: usize = 4;
const C_AMOUNT: usize = 5;
const C_CURRENCY: usize = 6;
const C_METHOD: usize = 7;
const C_BRAND: usize = 8;
const C_FUNDING: usize = 9;
const C_COUNTRY: usize = 10;
const C_TIMEZONE: usize = 11;
const C_OUTCOME: usize = 12;
const C_DECLINE: usize = 13;
const C_NETWORK: usize = 14;
const C_ADVICE: usize = 15;
const C_CHANNEL: usize = 16;
const C_UPDATED: usize = 17;
const C_INTERVAL: usize = 18;
const C_TENURE: usize = 19;
const C_PROPENSITY: usize = 20;
const C_CARD: usize = 21;
const C_TRIGGERED: usize = 22;

/// One problem with one row: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowError {
    /// The file the row is in.
    pub file: PathBuf,
    /// 1-based data row (the CSV header does not count).
    pub row: u64,
    /// True for CSV, where the line number (row + 1) is shown too.
    pub csv: bool,
    /// The contract column at fault.
    pub column: &'static str,
    /// The offending value as text (empty when missing).
    pub value: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} row {}", self.file.display(), self.row)?;
        if self.csv {
            write!(f, " (line {})", self.row + 1)?;
        }
        write!(f, ", column `{}`: {}", self.column, self.reason)?;
        if !self.value.is_empty() {
            write!(f, " (value {:?})", self.value)?;
        }
        Ok(())
    }
}

/// Why a history could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// polars could not read or write a file.
    #[error("{}: {source}", path.display())]
    Polars { path: PathBuf, source: PolarsError },
    /// A directory without Parquet or CSV files.
    #[error("{}: no .parquet or .csv files found", path.display())]
    NoFiles { path: PathBuf },
    /// An `s3://` history could not be listed or downloaded.
    #[error(transparent)]
    Remote(#[from] crate::s3::S3Error),
    /// A file whose extension is neither .parquet nor .csv.
    #[error("{}: unsupported file type (expected .parquet or .csv)", path.display())]
    UnsupportedFile { path: PathBuf },
    /// A required contract column is absent from a file.
    #[error("{}: required column `{column}` is missing (history contract v1)", path.display())]
    MissingColumn { path: PathBuf, column: &'static str },
    /// A column has a type that cannot hold the contract's values.
    #[error("{}: column `{column}` has type {dtype}, expected {expected}", path.display())]
    ColumnType { path: PathBuf, column: &'static str, dtype: String, expected: &'static str },
    /// A row breaks the contract (and bad rows are not being skipped).
    #[error("{0} (use --skip-bad-rows to write such rows to a reject file and continue)")]
    BadRow(Box<RowError>),
    /// A CSV file whose header cannot be read.
    #[error("{}: {message}", path.display())]
    CsvHeader { path: PathBuf, message: String },
    /// A Parquet page whose checksum or structure does not check out.
    #[error("{0}")]
    Corrupt(Box<checksum::Corrupt>),
}

/// How to load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Skip rows that break the contract instead of stopping; they go to `reject_path`.
    pub skip_bad_rows: bool,
    /// Where skipped rows are written (CSV). Defaults to `rejects.csv` in the current directory.
    pub reject_path: Option<PathBuf>,
    /// Rows of a Parquet file decoded at a time (default [`PARQUET_SLICE_ROWS`]); bounds memory.
    pub parquet_slice_rows: Option<usize>,
    /// `Some((k, n))`: keep only the payers whose `customer_id` hashes to shard k of n
    /// (see [`shard_of`]); every row of a payer lands in the same shard, so n loads
    /// with k = 0..n see every payer once, each with 1/n of the memory. Rows of
    /// other shards are counted as read but not validated, and checks across
    /// payers (duplicate `attempt_id`s) hold within a shard only.
    pub shard: Option<(u64, u64)>,
}

/// A reject file beside `path` for one pass or job: `rejects.csv` → `rejects.SUFFIX.csv`.
pub fn reject_file_for(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().map_or_else(|| "rejects".into(), |s| s.to_string_lossy().into_owned());
    let ext = path.extension().map_or_else(String::new, |e| format!(".{}", e.to_string_lossy()));
    path.with_file_name(format!("{stem}.{suffix}{ext}"))
}

/// A payer's place in [0, 2⁶⁴): the first 8 bytes, big-endian, of
/// SHA-256(`recoup-sample/v1:` + customer id). Documented and stable (any tool can
/// recompute it, unlike the process's hasher): payer samples
/// ([`crate::learning_curve`]) and shards both cut this one number.
pub fn payer_place(customer_id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"recoup-sample/v1:");
    h.update(customer_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The shard of `n` that a payer's rows belong to: ⌊place · n / 2⁶⁴⌋ of its
/// [`payer_place`], so shard k holds the places in [k/n, (k+1)/n) of the range.
pub fn shard_of(customer_id: &str, n: u64) -> u64 {
    ((payer_place(customer_id) as u128 * n.max(1) as u128) >> 64) as u64
}

/// Whether the shard indexes `have` (one per finished job, in any order) are exactly
/// 0..n, once each; if not, what is wrong ("1, 4" missing, or a doubled index), for the
/// merge and fit steps' errors.
pub fn shards_incomplete(have: &[u64], n: u64) -> Option<String> {
    let missing: Vec<String> = (0..n).filter(|k| !have.contains(k)).map(|k| k.to_string()).collect();
    if !missing.is_empty() {
        Some(missing.join(", "))
    } else if have.len() as u64 != n {
        Some("none, but a shard is doubled".to_string())
    } else {
        None
    }
}

/// Counts and notes from one load, for `history check` and logs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Files read, with their row counts.
    pub files: Vec<(PathBuf, u64)>,
    /// Rows read from all files.
    pub rows_read: u64,
    /// Rows accepted.
    pub rows_accepted: u64,
    /// Rows rejected (only with `skip_bad_rows`).
    pub rows_rejected: u64,
    /// Rows of other payers' shards (only when loading a shard), neither read nor judged.
    pub rows_other_shards: u64,
    /// The reject file, when rows were rejected.
    pub reject_file: Option<PathBuf>,
    /// Rejected rows by column at fault.
    pub rejects_by_column: BTreeMap<String, u64>,
    /// Extra columns that are not in the contract (ignored).
    pub unknown_columns: Vec<String>,
    /// Unknown codes mapped to `other`, as `column=value` → count.
    pub unknown_codes: BTreeMap<String, u64>,
    /// Failed rows whose `decline_code` was derived from `network_code`/`advice_code`.
    pub derived_decline_codes: u64,
    /// Rows whose time zone was derived from the country.
    pub defaulted_timezones: u64,
    /// Payments whose first row is not the original charge (`attempt_number` 0): the
    /// export began after it, or (when it is every payment) numbers attempts from 1.
    pub payments_without_original: u64,
    /// Retries charged to another `payment_method_id` than the attempt before them,
    /// without `payment_method_updated` saying so: read as updated (the payer replaced
    /// the method; the card rules already count them so).
    pub updates_from_method_id: u64,
    /// Parquet files whose `attempted_at` is a timestamp without a time zone (read as UTC).
    pub naive_timestamp_files: Vec<PathBuf>,
    /// Parquet pages whose CRC-32 matched.
    pub pages_verified: u64,
    /// Parquet pages whose writer stored no checksum (polars writes none): not verifiable.
    pub pages_without_checksum: u64,
}

impl LoadReport {
    /// What to tell the user about payments without their original charge, given
    /// how many payments were accepted: every payment (attempt numbers that look
    /// 1-based), or some (an export that began while they were being retried).
    pub fn without_original_warning(&self, payments: u64) -> Option<String> {
        match self.payments_without_original {
            0 => None,
            n if n == payments => Some(format!(
                "no payment has its original charge (attempt_number 0) among its {n} payments: contract v1 numbers the \
                 original charge 0 and retries 1, 2, …; attempt numbers that start at 1 make every original charge count \
                 as a retry where rules count retries (training reads a payment's attempts by their order)"
            )),
            n => Some(format!(
                "{n} of {payments} payments have no original charge (attempt_number 0) in the history (an export that \
                 began while they were being retried?): training reads each one's first row as its original charge"
            )),
        }
    }
}

/// A loaded, validated history: attempts grouped by payment, in attempt order.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every accepted attempt, sorted by (payment, attempt_number).
    pub attempts: Vec<Attempt>,
    /// `attempt_id` values, indexed by [`Attempt::attempt_ix`].
    pub attempt_ids: Ids,
    /// `payment_id` values, indexed by [`PaymentIx`].
    pub payment_ids: Ids,
    /// `customer_id` values, indexed by [`CustomerIx`].
    pub customer_ids: Ids,
    /// The files that were read, indexed by [`SourceRow::file`].
    pub files: Vec<PathBuf>,
    /// What the load found.
    pub report: LoadReport,
}

impl History {
    /// The attempts of each payment, one slice per payment, in attempt order.
    pub fn payments(&self) -> impl Iterator<Item = &[Attempt]> {
        self.attempts.chunk_by(|a, b| a.payment == b.payment)
    }

    /// Every payer's [`payer_place`], indexed by [`CustomerIx`] (one hash per payer).
    pub fn payer_places(&self) -> Vec<u64> {
        use rayon::prelude::*;
        (0..self.customer_ids.len() as u32).into_par_iter().map(|c| payer_place(self.customer_ids.get(c))).collect()
    }

    /// The `attempt_id` of an attempt.
    pub fn attempt_id(&self, a: &Attempt) -> &str {
        self.attempt_ids.get(a.attempt_ix)
    }

    /// The `payment_id` of an attempt.
    pub fn payment_id(&self, a: &Attempt) -> &str {
        self.payment_ids.get(a.payment.0)
    }

    /// The `customer_id` of an attempt.
    pub fn customer_id(&self, a: &Attempt) -> &str {
        self.customer_ids.get(a.customer.0)
    }
}

/// A table of id strings stored back to back in one buffer, indexed by `u32`
/// (5 million ids cost one allocation, not five million).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    bytes: String,
    ends: Vec<usize>,
}

impl Ids {
    /// Append an id; returns its index.
    pub fn push(&mut self, s: &str) -> u32 {
        self.bytes.push_str(s);
        self.ends.push(self.bytes.len());
        (self.ends.len() - 1) as u32
    }

    /// Append an id written by `write` straight into the buffer, without an intermediate String.
    pub fn push_with(&mut self, write: impl FnOnce(&mut String)) -> u32 {
        write(&mut self.bytes);
        self.ends.push(self.bytes.len());
        (self.ends.len() - 1) as u32
    }

    /// The id at `ix`.
    pub fn get(&self, ix: u32) -> &str {
        let ix = ix as usize;
        let start = if ix == 0 { 0 } else { self.ends[ix - 1] };
        &self.bytes[start..self.ends[ix]]
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are no ids.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// For each id, the index of the first id with the same text. Found by a
    /// parallel sort of (hash, index) pairs: cache-friendly where probing a
    /// hash table of millions of ids is not.
    pub fn canonical(&self) -> Vec<u32> {
        use rayon::prelude::*;
        let n = self.len() as u32;
        let mut keyed: Vec<(u64, u32)> = (0..n).into_par_iter().map(|i| (id_hash(self.get(i)), i)).collect();
        keyed.par_sort_unstable();
        let mut canon: Vec<u32> = (0..n).collect();
        for group in keyed.chunk_by(|a, b| a.0 == b.0).filter(|g| g.len() > 1) {
            // Equal hashes, ascending index: compare the strings.
            for (k, &(_, later)) in group.iter().enumerate().skip(1) {
                if let Some(&(_, first)) = group[..k].iter().find(|&&(_, e)| self.get(e) == self.get(later)) {
                    canon[later as usize] = canon[first as usize];
                }
            }
        }
        canon
    }

    /// The distinct ids in first-seen order, and for each id its index among them.
    pub fn dedup(&self) -> (Ids, Vec<u32>) {
        let canon = self.canonical();
        let mut distinct = Ids::default();
        let mut rank = vec![0u32; self.len()];
        for (i, &c) in canon.iter().enumerate() {
            rank[i] = if c as usize == i { distinct.push(self.get(c)) } else { rank[c as usize] };
        }
        (distinct, rank)
    }

    /// Reserve room for `n` more ids of about `avg_len` bytes.
    pub fn reserve(&mut self, n: usize, avg_len: usize) {
        self.ends.reserve(n);
        self.bytes.reserve(n * avg_len);
    }
}

/// Hash of an id, for grouping equal ids.
fn id_hash(s: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0x7265_636f_7570).hash_one(s)
}

/// List the files a path stands for: itself, or every .parquet/.csv below a directory, sorted.
/// An `s3://bucket/prefix` URL is first mirrored into the local cache ([`crate::s3::mirror`]);
/// its files are then listed there.
pub fn list_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    if let Some(url) = crate::s3::S3Url::of_path(path) {
        let m = crate::s3::mirror(&url?, &crate::s3::cache_dir())?;
        tracing::info!(
            url = %path.display(), mirror = %m.path.display(), objects = m.objects, bytes = m.bytes,
            downloaded = m.downloaded, downloaded_bytes = m.downloaded_bytes, removed = m.removed,
            "history mirrored from object storage"
        );
        return list_files(&m.path);
    }
    let io = |source| LoadError::Io { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|source| LoadError::Io { path: dir.clone(), source })? {
            let entry = entry.map_err(|source| LoadError::Io { path: dir.clone(), source })?;
            let p = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') {
                continue; // hidden files and Spark/Hive markers such as _SUCCESS
            }
            if p.is_dir() {
                stack.push(p);
            } else if file_kind(&p).is_some() {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(LoadError::NoFiles { path: path.to_path_buf() });
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Parquet,
    Csv,
}

fn is_csv(p: &Path) -> bool {
    file_kind(p) == Some(FileKind::Csv)
}

fn file_kind(p: &Path) -> Option<FileKind> {
    match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "parquet" | "pq" => Some(FileKind::Parquet),
        "csv" => Some(FileKind::Csv),
        _ => None,
    }
}

/// Load a history from a file or directory.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<History, LoadError> {
    let files = list_files(path)?;
    let mut loader = Loader::new(opts, &files);
    for (file_ix, file) in files.iter().enumerate() {
        let kind = file_kind(file).ok_or_else(|| LoadError::UnsupportedFile { path: file.clone() })?;
        let partitions = partition_values(file);
        let rows = match kind {
            FileKind::Parquet => {
                // Pages first: polars would decode a page with flipped bits without a word.
                let pages = checksum::verify(file).map_err(|e| LoadError::Corrupt(Box::new(e)))?;
                loader.report.pages_verified += pages.verified;
                loader.report.pages_without_checksum += pages.without_checksum;
                // Slice by slice: only one slice of the decoded file is in memory at a time.
                let (rows, keep) = parquet_layout(file, &mut loader.unknown_columns)?;
                let slice = opts.parquet_slice_rows.unwrap_or(PARQUET_SLICE_ROWS).max(1);
                loader.attempts.reserve(rows);
                // Decode the next slice on a second thread while this one is validated:
                // the merge into the id arenas is sequential, decoding fills that gap.
                // At most one decoded slice waits in the channel.
                std::thread::scope(|scope| -> Result<(), LoadError> {
                    let (tx, rx) = std::sync::mpsc::sync_channel(1);
                    let keep = &keep;
                    scope.spawn(move || {
                        for start in (0..rows).step_by(slice) {
                            let df = read_parquet_slice(file, keep, start, slice.min(rows - start));
                            let failed = df.is_err();
                            if tx.send((start, df)).is_err() || failed {
                                break;
                            }
                        }
                    });
                    for (start, df) in rx {
                        loader.ingest(file, file_ix as u32, false, with_partitions(file, &partitions, df?)?, start)?;
                    }
                    Ok(())
                })?;
                rows
            }
            FileKind::Csv => {
                let (df, bad) = read_csv(file, &mut loader.unknown_columns)?;
                let rows = df.height();
                loader.csv_bad = bad.into_iter().map(|b| (b.row, b)).collect();
                loader.ingest(file, file_ix as u32, true, with_partitions(file, &partitions, df)?, 0)?;
                loader.csv_bad.clear();
                rows
            }
        };
        loader.report.files.push((file.clone(), rows as u64));
        loader.report.rows_read += rows as u64;
    }
    let history = loader.finish()?;
    Ok(History { files, ..history })
}

/// The contract columns `file`'s directories name as hive partitions
/// (`currency=USD/part-0.parquet`: pandas and Spark write the partition column
/// into the path, not the file), percent-decoded (`Europe%2FOslo`); Hive's
/// `__HIVE_DEFAULT_PARTITION__` is a missing value. Other keys (`month=…`) are
/// not the contract's and are ignored.
fn partition_values(file: &Path) -> Vec<(&'static str, Option<String>)> {
    file.parent()
        .into_iter()
        .flat_map(Path::components)
        .filter_map(|c| {
            let (key, value) = c.as_os_str().to_str()?.split_once('=')?;
            let (name, _) = CONTRACT_COLUMNS.iter().find(|(n, _)| *n == key)?;
            Some((
                *name,
                (value != "__HIVE_DEFAULT_PARTITION__")
                    .then(|| percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned()),
            ))
        })
        .collect()
}

/// `df` with the contract columns its file's path gives as hive partitions and the
/// file itself lacks (a column in the file wins over its path).
fn with_partitions(file: &Path, partitions: &[(&'static str, Option<String>)], mut df: DataFrame) -> Result<DataFrame, LoadError> {
    for (name, value) in partitions {
        if df.column(name).is_err() {
            let column = Column::new((*name).into(), vec![value.clone(); df.height()]);
            df.with_column(column).map_err(|source| LoadError::Polars { path: file.to_path_buf(), source })?;
        }
    }
    Ok(df)
}

/// Rows of a Parquet file read at once (whole row groups are decoded per slice).
pub const PARQUET_SLICE_ROWS: usize = 1 << 19;

fn is_contract_column(name: &str) -> bool {
    CONTRACT_COLUMNS.iter().any(|(c, _)| *c == name)
}

fn note_unknown_columns(names: impl Iterator<Item = String>, unknown: &mut Vec<String>) {
    for n in names {
        if !is_contract_column(&n) && !unknown.contains(&n) {
            unknown.push(n);
        }
    }
}

/// A Parquet file's row count and the contract columns it has (noting the others).
fn parquet_layout(path: &Path, unknown: &mut Vec<String>) -> Result<(usize, Vec<String>), LoadError> {
    let pe = |source| LoadError::Polars { path: path.to_path_buf(), source };
    let f = File::open(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    let mut reader = ParquetReader::new(f);
    let names: Vec<String> = reader.schema().map_err(pe)?.iter_names().map(|n| n.to_string()).collect();
    note_unknown_columns(names.iter().cloned(), unknown);
    let rows = reader.num_rows().map_err(pe)?;
    Ok((rows, names.into_iter().filter(|n| is_contract_column(n)).collect()))
}

fn read_parquet_slice(path: &Path, columns: &[String], start: usize, len: usize) -> Result<DataFrame, LoadError> {
    let pe = |source| LoadError::Polars { path: path.to_path_buf(), source };
    let f = File::open(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    ParquetReader::new(f).with_columns(Some(columns.to_vec())).with_slice(Some((start, len))).finish().map_err(pe)
}

/// Read a CSV file with every column as text: we parse and validate
/// ourselves, so a bad value is reported with its row instead of failing the
/// read. Records polars could not split are found first ([`csv::scan`]) and
/// come back as bad records, their rows left empty.
fn read_csv(path: &Path, unknown: &mut Vec<String>) -> Result<(DataFrame, Vec<csv::BadRecord>), LoadError> {
    let pe = |source| LoadError::Polars { path: path.to_path_buf(), source };
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    let scanned = csv::scan(&bytes).map_err(|message| LoadError::CsvHeader { path: path.to_path_buf(), message })?;
    drop(bytes);
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .into_reader_with_file_handle(std::io::Cursor::new(scanned.bytes))
        .finish()
        .map_err(pe)?;
    if let [only] = df.get_column_names().as_slice() {
        if let Some(sep) = [';', '\t', '|'].into_iter().find(|c| only.contains(*c)) {
            let message = format!(
                "the header is one column ({:?}): contract v1 CSV is comma-separated, and this file looks separated by {sep:?}",
                only.as_str()
            );
            return Err(LoadError::CsvHeader { path: path.to_path_buf(), message });
        }
    }
    note_unknown_columns(df.get_column_names().into_iter().map(|n| n.to_string()), unknown);
    let keep: Vec<PlSmallStr> = df.get_column_names().into_iter().filter(|n| is_contract_column(n.as_str())).cloned().collect();
    Ok((df.select(keep).map_err(pe)?, scanned.bad))
}

/// A typed view of one contract column of one file.
enum Col {
    Missing,
    Text(StringChunked),
    Int(Int64Chunked),
    Float(Float64Chunked),
    Bool(BooleanChunked),
    Time(Int64Chunked, TimeUnit),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Text,
    Int,
    Float,
    Bool,
    Time,
}

const fn want(ix: usize) -> Want {
    match ix {
        C_ATTEMPTED_AT => Want::Time,
        C_ATTEMPT_NUMBER | C_AMOUNT | C_TENURE => Want::Int,
        C_PROPENSITY => Want::Float,
        C_UPDATED => Want::Bool,
        _ => Want::Text,
    }
}

fn column_view(path: &Path, df: &DataFrame, ix: usize) -> Result<Col, LoadError> {
    let (name, _) = CONTRACT_COLUMNS[ix];
    // A required column's absence is refused once per frame, in `Loader::ingest`.
    let Ok(col) = df.column(name) else { return Ok(Col::Missing) };
    // One chunk per column view, so rows are read straight from the array.
    let s = &col.as_materialized_series().rechunk();
    let dtype = s.dtype().clone();
    let pe = |source| LoadError::Polars { path: path.to_path_buf(), source };
    let type_err = |expected| LoadError::ColumnType { path: path.to_path_buf(), column: name, dtype: dtype.to_string(), expected };
    let text = |s: &Series| -> Result<Col, LoadError> { Ok(Col::Text(s.cast(&DataType::String).map_err(pe)?.str().map_err(pe)?.clone())) };
    let float =
        |s: &Series| -> Result<Col, LoadError> { Ok(Col::Float(s.cast(&DataType::Float64).map_err(pe)?.f64().map_err(pe)?.clone())) };
    match (want(ix), &dtype) {
        (_, DataType::String) => text(s),
        // pandas writes a code column with a missing value as floats (51.0,
        // NaN): whole numbers read as the integers they were, NaN as missing.
        (Want::Text, d) if d.is_float() => {
            let f = s.cast(&DataType::Float64).map_err(pe)?.f64().map_err(pe)?.rechunk().into_owned();
            let text = |v: f64| whole(v).map_or_else(|| v.to_string(), |n| n.to_string());
            Ok(Col::Text((0..f.len()).map(|i| value(&f, i).filter(|v| !v.is_nan()).map(text)).collect::<StringChunked>()))
        }
        // pandas' `category` columns and Arrow dictionaries come back categorical.
        (Want::Text, d) if d.is_primitive_numeric() || d.is_bool() || d.is_categorical() || d.is_enum() => text(s),
        (Want::Text, _) => Err(type_err("text")),
        (Want::Int, d) if d.is_integer() => Ok(Col::Int(s.cast(&DataType::Int64).map_err(pe)?.i64().map_err(pe)?.clone())),
        // pandas writes an integer column with a missing value as floats, and
        // warehouses write integers as DECIMAL(38, 0): read as numbers, and
        // each row must hold a whole one (`Col::int`).
        (Want::Int, d) if d.is_float() || d.is_decimal() => float(s),
        (Want::Int, _) => Err(type_err("an integer")),
        (Want::Float, d) if d.is_primitive_numeric() || d.is_decimal() => float(s),
        (Want::Float, _) => Err(type_err("a number")),
        (Want::Bool, DataType::Boolean) => Ok(Col::Bool(s.bool().map_err(pe)?.clone())),
        (Want::Bool, d) if d.is_integer() => Ok(Col::Int(s.cast(&DataType::Int64).map_err(pe)?.i64().map_err(pe)?.clone())),
        (Want::Bool, _) => Err(type_err("a boolean")),
        (Want::Time, DataType::Datetime(unit, _)) => Ok(Col::Time(s.datetime().map_err(pe)?.physical().clone(), *unit)),
        (Want::Time, _) => Err(type_err("a timestamp (Parquet timestamp or RFC 3339 text)")),
    }
}

/// A float that holds a whole number a float carries exactly (up to 2^53), as that integer.
fn whole(v: f64) -> Option<i64> {
    (v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_992.0).then_some(v as i64)
}

/// A problem with one cell, before the file and row are attached.
struct CellError {
    column: usize,
    value: String,
    reason: String,
}

type Cell<T> = Result<T, CellError>;

fn bad(column: usize, value: impl Into<String>, reason: impl Into<String>) -> CellError {
    CellError { column, value: value.into(), reason: reason.into() }
}

impl Col {
    /// Non-empty text, or `None`.
    fn text(&self, i: usize) -> Option<&str> {
        match self {
            Col::Text(ca) => ca.downcast_as_array().get(i).map(trim).filter(|s| !s.is_empty()),
            _ => None,
        }
    }

    /// The raw value as text, for error messages and reject files.
    fn raw(&self, i: usize) -> Option<String> {
        match self {
            Col::Missing => None,
            Col::Text(ca) => ca.get(i).map(str::to_owned),
            Col::Int(ca) => ca.get(i).map(|v| v.to_string()),
            Col::Float(ca) => ca.get(i).map(|v| v.to_string()),
            Col::Bool(ca) => ca.get(i).map(|v| v.to_string()),
            Col::Time(ca, unit) => ca.get(i).map(|v| match timestamp(v, *unit) {
                Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                None => v.to_string(),
            }),
        }
    }

    fn int(&self, i: usize, ix: usize) -> Cell<Option<i64>> {
        match self {
            Col::Int(ca) => Ok(value(ca, i)),
            // A float column (see `column_view`): NaN is pandas' missing value.
            Col::Float(ca) => match value(ca, i) {
                None => Ok(None),
                Some(v) if v.is_nan() => Ok(None),
                Some(v) => whole(v).map(Some).ok_or_else(|| bad(ix, v.to_string(), "not a whole number")),
            },
            Col::Text(_) => match self.text(i) {
                None => Ok(None),
                Some(s) => s.parse::<i64>().map(Some).map_err(|_| bad(ix, s, "not an integer")),
            },
            _ => Ok(None),
        }
    }

    fn float(&self, i: usize, ix: usize) -> Cell<Option<f64>> {
        match self {
            Col::Float(ca) => Ok(value(ca, i)),
            Col::Text(_) => match self.text(i) {
                None => Ok(None),
                Some(s) => s.parse::<f64>().map(Some).map_err(|_| bad(ix, s, "not a number")),
            },
            _ => Ok(None),
        }
    }

    fn boolean(&self, i: usize, ix: usize) -> Cell<Option<bool>> {
        match self {
            Col::Bool(ca) => Ok(ca.downcast_as_array().get(i)),
            Col::Int(ca) => match value(ca, i) {
                None => Ok(None),
                Some(0) => Ok(Some(false)),
                Some(1) => Ok(Some(true)),
                Some(v) => Err(bad(ix, v.to_string(), "not a boolean (true/false/1/0)")),
            },
            Col::Text(_) => match self.text(i) {
                None => Ok(None),
                Some(s) => match s.to_ascii_lowercase().as_str() {
                    "true" | "1" | "t" | "yes" => Ok(Some(true)),
                    "false" | "0" | "f" | "no" => Ok(Some(false)),
                    _ => Err(bad(ix, s, "not a boolean (true/false/1/0)")),
                },
            },
            _ => Ok(None),
        }
    }

    fn time(&self, i: usize, ix: usize) -> Cell<Option<DateTime<Utc>>> {
        match self {
            Col::Time(ca, unit) => match value(ca, i) {
                None => Ok(None),
                Some(v) => match timestamp(v, *unit) {
                    Some(t) if crate::limits::time_in_range(t) => Ok(Some(t)),
                    Some(t) => Err(bad(ix, t.to_rfc3339(), OUT_OF_RANGE)),
                    None => Err(bad(ix, v.to_string(), "timestamp out of range")),
                },
            },
            Col::Text(_) => match self.text(i) {
                None => Ok(None),
                Some(s) => match DateTime::parse_from_rfc3339(s) {
                    Ok(t) if crate::limits::time_in_range(t.with_timezone(&Utc)) => Ok(Some(t.with_timezone(&Utc))),
                    Ok(_) => Err(bad(ix, s, OUT_OF_RANGE)),
                    Err(_)
                        if chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").is_ok()
                            || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok() =>
                    {
                        Err(bad(ix, s, "has no UTC offset: the contract's timestamps are UTC, written like 2026-01-31T08:00:00Z"))
                    }
                    Err(e) => Err(bad(ix, s, epoch_hint(s).unwrap_or_else(|| format!("not an RFC 3339 timestamp ({e})")))),
                },
            },
            _ => Ok(None),
        }
    }
}

/// What to say of a timestamp written as a Unix time (9–10 digits: seconds, 12–13:
/// milliseconds, since 1970), the usual export of a database column: the RFC 3339 time it
/// would be, so the fix is plain. `None` for anything else.
fn epoch_hint(s: &str) -> Option<String> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = s.parse().ok()?;
    let (t, unit) = match s.len() {
        9 | 10 => (DateTime::from_timestamp(n, 0)?, "seconds"),
        12 | 13 => (DateTime::from_timestamp_millis(n)?, "milliseconds"),
        _ => return None,
    };
    Some(format!(
        "looks like a Unix time in {unit}; the contract's timestamps are RFC 3339 text in CSV (this one would be {}) or a Parquet timestamp",
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    ))
}

/// Row `i` of a single-chunk numeric column (the column views are rechunked):
/// direct array access instead of `ChunkedArray::get`'s chunk search.
#[inline]
fn value<T: PolarsNumericType>(ca: &ChunkedArray<T>, i: usize) -> Option<T::Native> {
    let arr = ca.downcast_as_array();
    arr.validity().is_none_or(|v| v.get_bit(i)).then(|| arr.value(i))
}

/// `str::trim`, with a fast path for the usual value that has nothing to trim.
#[inline]
fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) if f > b' ' && f < 0x80 && l > b' ' && l < 0x80 => s,
        _ => s.trim(),
    }
}

/// Parse a time-zone name in any case, remembering the thread's last one: rows
/// of a payer come together and repeat the same zone (a name in another case
/// than IANA's is looked up among all zones once per run of rows).
fn parse_tz(s: &str) -> Option<Tz> {
    thread_local! {
        static LAST: std::cell::Cell<Option<Tz>> = const { std::cell::Cell::new(None) };
    }
    LAST.with(|last| match last.get() {
        // IANA names are unique in any case: `europe/copenhagen` is the same zone.
        Some(tz) if tz.name().eq_ignore_ascii_case(s) => Some(tz),
        _ => {
            let tz = s.parse::<Tz>().ok().or_else(|| chrono_tz::TZ_VARIANTS.iter().copied().find(|t| t.name().eq_ignore_ascii_case(s)))?;
            last.set(Some(tz));
            Some(tz)
        }
    })
}

const OUT_OF_RANGE: &str = "outside the accepted range 1970-01-01 to 2199-12-31 (UTC)";

fn timestamp(v: i64, unit: TimeUnit) -> Option<DateTime<Utc>> {
    match unit {
        TimeUnit::Nanoseconds => Some(DateTime::from_timestamp_nanos(v)),
        TimeUnit::Microseconds => DateTime::from_timestamp_micros(v),
        TimeUnit::Milliseconds => DateTime::from_timestamp_millis(v),
    }
}

fn required<T>(v: Option<T>, ix: usize) -> Cell<T> {
    v.ok_or_else(|| bad(ix, "", "required value is missing"))
}

fn vocab<T: std::str::FromStr + strum::VariantArray + Copy + Into<&'static str>>(cols: &[Col], i: usize, ix: usize) -> Cell<Option<T>> {
    match cols[ix].text(i) {
        None => Ok(None),
        // Exports spell the vocabulary in their own case (`SUCCEEDED`, `Card`): read as lower case.
        Some(s) => s
            .parse::<T>()
            .or_else(|e| if s.bytes().any(|b| b.is_ascii_uppercase()) { s.to_ascii_lowercase().parse() } else { Err(e) })
            .map(Some)
            .map_err(|_| bad(ix, s, format!("unknown value; expected one of {}", crate::domain::vocabulary::<T>()))),
    }
}

/// An ISO code column (currency, country): exports write them in lower case too
/// (Stripe's `usd`), read as upper case.
fn iso_code<T: std::str::FromStr<Err = crate::domain::CodeError>>(s: &str, ix: usize) -> Cell<T> {
    s.parse()
        .or_else(|e| if s.bytes().any(|b| b.is_ascii_lowercase()) { s.to_ascii_uppercase().parse().map_err(|_| e) } else { Err(e) })
        .map_err(|e: crate::domain::CodeError| bad(ix, s, e.to_string()))
}

/// Notes from one parsed row for the load report.
#[derive(Default)]
struct RowNotes {
    unknown_code: Option<String>,
    derived: bool,
    defaulted_tz: bool,
}

/// Parse and validate one row (everything that can be checked within the row).
/// The ids are checked for presence here and read again when the row is merged.
fn parse_row(cols: &[Col], i: usize, source: SourceRow) -> Cell<(Attempt, RowNotes)> {
    let mut notes = RowNotes::default();
    for ix in [C_ATTEMPT_ID, C_PAYMENT_ID, C_CUSTOMER_ID] {
        required(cols[ix].text(i), ix)?;
    }
    let attempted_at = required(cols[C_ATTEMPTED_AT].time(i, C_ATTEMPTED_AT)?, C_ATTEMPTED_AT)?;
    let attempt_number = required(cols[C_ATTEMPT_NUMBER].int(i, C_ATTEMPT_NUMBER)?, C_ATTEMPT_NUMBER)?;
    let attempt_number =
        u32::try_from(attempt_number).map_err(|_| bad(C_ATTEMPT_NUMBER, attempt_number.to_string(), "must be 0 or a positive integer"))?;
    let minor = required(cols[C_AMOUNT].int(i, C_AMOUNT)?, C_AMOUNT)?;
    if minor < 0 {
        return Err(bad(C_AMOUNT, minor.to_string(), "amount must not be negative"));
    }
    let currency_text = required(cols[C_CURRENCY].text(i), C_CURRENCY)?;
    let currency: Currency = iso_code(currency_text, C_CURRENCY)?;
    let method: PaymentMethod = required(vocab(cols, i, C_METHOD)?, C_METHOD)?;
    let card_brand: Option<CardBrand> = vocab(cols, i, C_BRAND)?;
    let card_funding: Option<CardFunding> = vocab(cols, i, C_FUNDING)?;
    let country_text = required(cols[C_COUNTRY].text(i), C_COUNTRY)?;
    let country: Country = iso_code(country_text, C_COUNTRY)?;
    let timezone = match cols[C_TIMEZONE].text(i) {
        Some(s) => parse_tz(s).ok_or_else(|| bad(C_TIMEZONE, s, "not an IANA time zone name"))?,
        None => {
            notes.defaulted_tz = true;
            default_timezone(country)
        }
    };
    let outcome: Outcome = required(vocab(cols, i, C_OUTCOME)?, C_OUTCOME)?;
    let raw_code = |ix: usize| -> Cell<Option<RawCode>> {
        match cols[ix].text(i) {
            None => Ok(None),
            Some(s) => s.parse::<RawCode>().map(Some).map_err(|e| bad(ix, s, e.to_string())),
        }
    };
    let network_code = raw_code(C_NETWORK)?;
    let advice_code = raw_code(C_ADVICE)?;
    let decline_text = cols[C_DECLINE].text(i);
    let decline = match outcome {
        Outcome::Succeeded => {
            if let Some(s) = decline_text {
                return Err(bad(C_DECLINE, s, "must be empty when outcome is succeeded"));
            }
            None
        }
        Outcome::Failed => {
            let signals = Signals { decline_code: decline_text, network_code, advice_code, brand: card_brand };
            let n = normalize(method, signals)
                .ok_or_else(|| bad(C_DECLINE, "", "required when outcome is failed (or give network_code / advice_code to derive it)"))?;
            if matches!(n.source, NormalizedFrom::NetworkCode | NormalizedFrom::AdviceCode) {
                notes.derived = true;
            }
            if let Some(column) = n.unknown {
                // Name the first code nothing knew (the row keeps what the others said).
                notes.unknown_code = Some(signals.describe(column));
            }
            Some(n.code)
        }
    };
    let channel: Option<Channel> = vocab(cols, i, C_CHANNEL)?;
    let payment_method_updated = cols[C_UPDATED].boolean(i, C_UPDATED)?;
    let billing_interval: Option<BillingInterval> = vocab(cols, i, C_INTERVAL)?;
    let tenure_days = match cols[C_TENURE].int(i, C_TENURE)? {
        None => None,
        Some(v) => Some(u32::try_from(v).map_err(|_| {
            bad(C_TENURE, v.to_string(), if v < 0 { "must not be negative" } else { "more days than a u32 holds (at most 4294967295)" })
        })?),
    };
    let propensity = cols[C_PROPENSITY].float(i, C_PROPENSITY)?;
    if let Some(p) = propensity {
        if !(p > 0.0 && p <= 1.0) {
            return Err(bad(C_PROPENSITY, p.to_string(), "must be in (0, 1]"));
        }
    }
    let attempt = Attempt {
        attempt_ix: 0,
        payment: PaymentIx(0),
        customer: CustomerIx(0),
        attempted_at,
        attempt_number,
        amount: Money { minor, currency },
        method,
        card_brand,
        card_funding,
        country,
        timezone,
        outcome,
        decline,
        network_code,
        advice_code,
        channel,
        payment_method_updated,
        update_triggered: cols[C_TRIGGERED].boolean(i, C_TRIGGERED)?.unwrap_or(false),
        card: cols[C_CARD].text(i).and_then(CardId::of),
        billing_interval,
        tenure_days,
        propensity,
        source,
    };
    Ok((attempt, notes))
}

/// Rows written to the reject file: where, why, and the row's contract columns as text.
struct RejectSink {
    path: PathBuf,
    records: Vec<(RowError, Vec<Option<String>>)>,
}

impl RejectSink {
    fn write(&mut self) -> Result<(), LoadError> {
        let pe = |source| LoadError::Polars { path: self.path.clone(), source };
        let n = self.records.len();
        let mut cols: Vec<Column> = Vec::with_capacity(5 + CONTRACT_COLUMNS.len());
        let meta = |name: &str, f: &dyn Fn(&RowError) -> String| {
            Column::new(name.into(), self.records.iter().map(|(e, _)| f(e)).collect::<Vec<_>>())
        };
        cols.push(meta("_file", &|e| e.file.display().to_string()));
        cols.push(Column::new("_row".into(), self.records.iter().map(|(e, _)| e.row).collect::<Vec<_>>()));
        cols.push(meta("_column", &|e| e.column.to_string()));
        cols.push(meta("_value", &|e| e.value.clone()));
        cols.push(meta("_error", &|e| e.reason.clone()));
        for (k, (name, _)) in CONTRACT_COLUMNS.iter().enumerate() {
            let values: Vec<Option<&str>> = self.records.iter().map(|(_, f)| f[k].as_deref()).collect();
            cols.push(Column::new((*name).into(), values));
        }
        let mut df = DataFrame::new(n, cols).map_err(pe)?;
        let f = File::create(&self.path).map_err(|source| LoadError::Io { path: self.path.clone(), source })?;
        CsvWriter::new(f).include_header(true).finish(&mut df).map_err(pe)?;
        Ok(())
    }
}

/// Accumulates accepted attempts across files.
struct Loader<'o> {
    opts: &'o LoadOptions,
    files: &'o [PathBuf],
    attempts: Vec<Attempt>,
    attempt_ids: Ids,
    /// Payment ids as read (one entry per change from the previous row); made distinct in `finish`.
    payment_ids: Ids,
    /// Customer ids as read, likewise.
    customer_ids: Ids,
    report: LoadReport,
    unknown_columns: Vec<String>,
    rejects: Vec<(RowError, Vec<Option<String>>)>,
    /// The CSV file being ingested: records that could not be split, by 0-based data row.
    csv_bad: HashMap<usize, csv::BadRecord>,
}

impl<'o> Loader<'o> {
    fn new(opts: &'o LoadOptions, files: &'o [PathBuf]) -> Self {
        Loader {
            opts,
            files,
            attempts: Vec::new(),
            attempt_ids: Ids::default(),
            payment_ids: Ids::default(),
            customer_ids: Ids::default(),
            report: LoadReport::default(),
            unknown_columns: Vec::new(),
            rejects: Vec::new(),
            csv_bad: HashMap::new(),
        }
    }

    /// Record a bad row: an error in strict mode, a reject otherwise.
    fn reject(&mut self, err: RowError, fields: Vec<Option<String>>) -> Result<(), LoadError> {
        if !self.opts.skip_bad_rows {
            return Err(LoadError::BadRow(Box::new(err)));
        }
        *self.report.rejects_by_column.entry(err.column.to_string()).or_default() += 1;
        self.report.rows_rejected += 1;
        self.rejects.push((err, fields));
        Ok(())
    }

    /// Validate and take the rows of `df`, whose first row is data row `first_row + 1` of the file.
    fn ingest(&mut self, path: &Path, file_ix: u32, csv: bool, mut df: DataFrame, first_row: usize) -> Result<(), LoadError> {
        // Checked here, not only per chunk: a frame without any contract
        // column has no chunks, and its rows would pass unread.
        if let Some((column, _)) = CONTRACT_COLUMNS.iter().find(|(name, required)| *required && df.column(name).is_err()) {
            return Err(LoadError::MissingColumn { path: path.to_path_buf(), column });
        }
        // A Parquet timestamp without a time zone (pandas' naive datetime64, Parquet's
        // isAdjustedToUTC = false) is read as UTC, as most writers mean it; where it holds
        // local times every hour is off by the payer's offset, and nothing in the file says
        // which. Said once per file (its slices come one after another; CSV text without an
        // offset is refused: there it is the row's).
        if matches!(df.column("attempted_at").map(|c| c.dtype().clone()), Ok(DataType::Datetime(_, None)))
            && self.report.naive_timestamp_files.last().map(PathBuf::as_path) != Some(path)
        {
            tracing::warn!(file = %path.display(), "attempted_at is a timestamp without a time zone: read as UTC");
            self.report.naive_timestamp_files.push(path.to_path_buf());
        }
        let height = df.height();
        // A shard keeps about 1/n of the rows.
        let expected = height / self.opts.shard.map_or(1, |(_, n)| n.max(1) as usize);
        self.attempts.reserve(expected);
        self.attempt_ids.reserve(expected, 20);
        // Parsed rows of one block; reused so its pages are touched once.
        let mut parsed: Vec<Option<Cell<(Attempt, RowNotes)>>> = Vec::new();
        let mut offset = first_row;
        // One chunk (Parquet row group) at a time: zero-copy when the columns'
        // chunks line up, and each column view is a single array.
        for chunk in df.split_chunks() {
            let cols: Vec<Col> = (0..CONTRACT_COLUMNS.len()).map(|ix| column_view(path, &chunk, ix)).collect::<Result<_, _>>()?;
            self.ingest_chunk(path, file_ix, csv, &cols, chunk.height(), offset, &mut parsed)?;
            offset += chunk.height();
        }
        Ok(())
    }

    /// Parse a chunk's rows in parallel blocks, then merge them in order.
    #[allow(clippy::too_many_arguments)]
    fn ingest_chunk(
        &mut self,
        path: &Path,
        file_ix: u32,
        csv: bool,
        cols: &[Col],
        height: usize,
        offset: usize,
        parsed: &mut Vec<Option<Cell<(Attempt, RowNotes)>>>,
    ) -> Result<(), LoadError> {
        use rayon::prelude::*;
        /// Rows parsed in parallel per block: bounds the memory of parsed rows.
        const BLOCK: usize = 1 << 16;
        let raw_fields = |i: usize| cols.iter().map(|c| c.raw(i)).collect::<Vec<_>>();
        // The previous row's payment and customer: exports usually keep a
        // payment's rows together, so most rows store no new id text.
        let mut prev_payment: Option<(&str, u32)> = None;
        let mut prev_customer: Option<(&str, u32)> = None;
        for block in (0..height).step_by(BLOCK) {
            (block..(block + BLOCK).min(height))
                .into_par_iter()
                .with_min_len(2048)
                .map(|i| {
                    // Another shard's payer: skipped unread (a row without a customer id is shard 0's, to be reported once).
                    let theirs = self.opts.shard.is_some_and(|(k, n)| cols[C_CUSTOMER_ID].text(i).map_or(0, |c| shard_of(c, n)) != k);
                    (!theirs).then(|| parse_row(cols, i, SourceRow { file: file_ix, row: (offset + i + 1) as u32 }))
                })
                .collect_into_vec(parsed);
            for (k, row) in parsed.drain(..).enumerate() {
                let i = block + k;
                let Some(row) = row else {
                    self.report.rows_other_shards += 1;
                    continue;
                };
                if let Some(b) = self.csv_bad.remove(&(offset + i)) {
                    let column = CONTRACT_COLUMNS.iter().map(|c| c.0).find(|c| Some(*c) == b.column.as_deref()).unwrap_or("(record)");
                    let err =
                        RowError { file: path.to_path_buf(), row: (offset + i + 1) as u64, csv, column, value: b.value, reason: b.reason };
                    self.reject(err, vec![None; CONTRACT_COLUMNS.len()])?;
                    continue;
                }
                let (mut attempt, notes) = match row {
                    Ok(row) => row,
                    Err(e) => {
                        let err = RowError {
                            file: path.to_path_buf(),
                            row: (offset + i + 1) as u64,
                            csv,
                            column: CONTRACT_COLUMNS[e.column].0,
                            value: e.value,
                            reason: e.reason,
                        };
                        self.reject(err, raw_fields(i))?;
                        continue;
                    }
                };
                // Present: parse_row checked. Duplicates are found after all files are read.
                let text = |ix: usize| cols[ix].text(i).unwrap_or_default();
                let (attempt_id, payment_id, customer_id) = (text(C_ATTEMPT_ID), text(C_PAYMENT_ID), text(C_CUSTOMER_ID));
                attempt.attempt_ix = self.attempt_ids.push(attempt_id);
                let payment = match prev_payment {
                    Some((s, ix)) if s == payment_id => ix,
                    _ => self.payment_ids.push(payment_id),
                };
                prev_payment = Some((payment_id, payment));
                let customer = match prev_customer {
                    Some((s, ix)) if s == customer_id => ix,
                    _ => self.customer_ids.push(customer_id),
                };
                prev_customer = Some((customer_id, customer));
                attempt.payment = PaymentIx(payment);
                attempt.customer = CustomerIx(customer);
                if let Some(code) = notes.unknown_code {
                    *self.report.unknown_codes.entry(code).or_default() += 1;
                }
                self.report.derived_decline_codes += notes.derived as u64;
                self.report.defaulted_timezones += notes.defaulted_tz as u64;
                self.attempts.push(attempt);
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<History, LoadError> {
        use rayon::prelude::*;
        let (payments, payment_rank) = self.payment_ids.dedup();
        let (customers, customer_rank) = self.customer_ids.dedup();
        self.attempts.par_iter_mut().for_each(|a| {
            a.payment = PaymentIx(payment_rank[a.payment.0 as usize]);
            a.customer = CustomerIx(customer_rank[a.customer.0 as usize]);
        });
        (self.payment_ids, self.customer_ids) = (payments, customers);
        self.reject_duplicate_ids()?;
        // In place: a stable sort would allocate half the table again; attempt_ix makes the key total.
        self.attempts.sort_unstable_by_key(|a| (a.payment, a.attempt_number, a.attempted_at, a.attempt_ix));
        self.check_sequences()?;
        self.report.updates_from_method_id = updates_from_method_id(&mut self.attempts);
        // Each payment's first row (attempts are grouped by payment here).
        let firsts = self.attempts.iter().enumerate().filter(|(i, a)| *i == 0 || self.attempts[i - 1].payment != a.payment);
        let (payments, without) = firsts.fold((0u64, 0u64), |(n, w), (_, a)| (n + 1, w + u64::from(a.attempt_number != 0)));
        self.report.payments_without_original = without;
        if let Some(warning) = self.report.without_original_warning(payments) {
            tracing::warn!("{warning}");
        }
        if !self.unknown_columns.is_empty() {
            tracing::warn!(columns = %self.unknown_columns.join(", "), "ignoring columns that are not in history contract v1");
        }
        self.report.unknown_columns = std::mem::take(&mut self.unknown_columns);
        self.report.rows_accepted = self.attempts.len() as u64;
        if !self.rejects.is_empty() {
            let path = self.opts.reject_path.clone().unwrap_or_else(|| PathBuf::from("rejects.csv"));
            let mut sink = RejectSink { path: path.clone(), records: std::mem::take(&mut self.rejects) };
            sink.records.sort_by(|a, b| (&a.0.file, a.0.row).cmp(&(&b.0.file, b.0.row)));
            sink.write()?;
            self.report.reject_file = Some(path);
        }
        Ok(History {
            attempts: self.attempts,
            attempt_ids: self.attempt_ids,
            payment_ids: self.payment_ids,
            customer_ids: self.customer_ids,
            files: Vec::new(),
            report: self.report,
        })
    }

    /// `attempt_id` must be unique across all files; the later of two rows is the duplicate.
    fn reject_duplicate_ids(&mut self) -> Result<(), LoadError> {
        // Accepted rows are in load order here: attempt_ix is the position.
        let canon = self.attempt_ids.canonical();
        let mut duplicates: Vec<(SourceRow, u32, SourceRow)> = self
            .attempts
            .iter()
            .filter(|a| canon[a.attempt_ix as usize] != a.attempt_ix)
            .map(|a| (a.source, a.attempt_ix, self.attempts[canon[a.attempt_ix as usize] as usize].source))
            .collect();
        if duplicates.is_empty() {
            return Ok(());
        }
        duplicates.sort_unstable();
        let files = self.files;
        let error_at = |ids: &Ids, at: SourceRow, ix: u32, first: SourceRow| RowError {
            file: files[at.file as usize].clone(),
            row: at.row as u64,
            csv: is_csv(&files[at.file as usize]),
            column: "attempt_id",
            value: ids.get(ix).to_string(),
            reason: format!("duplicate attempt_id (first seen in {} row {})", files[first.file as usize].display(), first.row),
        };
        if !self.opts.skip_bad_rows {
            let (at, ix, first) = duplicates[0];
            return Err(LoadError::BadRow(Box::new(error_at(&self.attempt_ids, at, ix, first))));
        }
        let dup_ix: std::collections::HashMap<u32, (SourceRow, SourceRow)> =
            duplicates.iter().map(|&(at, ix, first)| (ix, (at, first))).collect();
        let mut keep = Vec::with_capacity(self.attempts.len());
        for a in std::mem::take(&mut self.attempts) {
            match dup_ix.get(&a.attempt_ix) {
                Some(&(at, first)) => {
                    let fields = self.attempt_fields(&a);
                    let err = error_at(&self.attempt_ids, at, a.attempt_ix, first);
                    self.reject(err, fields)?;
                }
                None => keep.push(a),
            }
        }
        self.attempts = keep;
        Ok(())
    }

    /// Cross-row rules: within a payment, attempt_number and attempted_at both
    /// increase, and at most one row succeeds, the last. A payment that breaks
    /// them is rejected whole: its episode cannot be trusted in part.
    fn check_sequences(&mut self) -> Result<(), LoadError> {
        let files = self.files;
        let mut bad_payments: Vec<(PaymentIx, RowError)> = Vec::new();
        for group in self.attempts.chunk_by(|a, b| a.payment == b.payment) {
            if let Some(err) = sequence_error(group, files) {
                if !self.opts.skip_bad_rows {
                    return Err(LoadError::BadRow(Box::new(err)));
                }
                bad_payments.push((group[0].payment, err));
            }
        }
        if bad_payments.is_empty() {
            return Ok(());
        }
        let mut keep = Vec::with_capacity(self.attempts.len());
        let mut bad = bad_payments.into_iter().peekable();
        for a in std::mem::take(&mut self.attempts) {
            while bad.peek().is_some_and(|(p, _)| *p < a.payment) {
                bad.next();
            }
            match bad.peek() {
                Some((p, err)) if *p == a.payment => {
                    let err = RowError {
                        file: files[a.source.file as usize].clone(),
                        row: a.source.row as u64,
                        reason: format!("payment rejected whole: {}", err),
                        ..err.clone()
                    };
                    let fields = self.attempt_fields(&a);
                    self.reject(err, fields)?;
                }
                _ => keep.push(a),
            }
        }
        self.attempts = keep;
        Ok(())
    }

    /// An accepted attempt written back as contract text, for the reject file.
    fn attempt_fields(&self, a: &Attempt) -> Vec<Option<String>> {
        let s = |v: &str| Some(v.to_string());
        vec![
            s(self.attempt_ids.get(a.attempt_ix)),
            s(self.payment_ids.get(a.payment.0)),
            s(self.customer_ids.get(a.customer.0)),
            Some(a.attempted_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            Some(a.attempt_number.to_string()),
            Some(a.amount.minor.to_string()),
            s(a.amount.currency.as_str()),
            s(a.method.into()),
            a.card_brand.map(|v| <&str>::from(v).to_string()),
            a.card_funding.map(|v| <&str>::from(v).to_string()),
            s(a.country.as_str()),
            s(a.timezone.name()),
            s(a.outcome.into()),
            a.decline.map(|v| v.as_str().to_string()),
            a.network_code.map(|v| v.to_string()),
            a.advice_code.map(|v| v.to_string()),
            a.channel.map(|v| <&str>::from(v).to_string()),
            a.payment_method_updated.map(|v| v.to_string()),
            a.billing_interval.map(|v| <&str>::from(v).to_string()),
            a.tenure_days.map(|v| v.to_string()),
            a.propensity.map(|v| v.to_string()),
            a.card.map(|c| format!("pm_{:016x}", c.0)),
            Some(a.update_triggered.to_string()),
        ]
    }
}

/// A retry charged to another payment method than the attempt before it (both
/// `payment_method_id`s given, and different) was made after the payer replaced it: its
/// `payment_method_updated` is set, as the card rules read such a retry. Exports from
/// payment platforms carry the method charged but rarely an update flag; without this, a
/// log's retries after an update would teach the model nothing about updated payments
/// (on the foreign world's history with no flag column, the retries after an updated
/// expired card came out 0.29 predicted against 0.94 realised). Attempts are grouped by
/// payment, in order. Returns how many flags it set.
fn updates_from_method_id(attempts: &mut [Attempt]) -> u64 {
    let mut set = 0;
    for k in 1..attempts.len() {
        let (before, a) = (&attempts[k - 1], &attempts[k]);
        let replaced = before.payment == a.payment && CardId::replaced(before.card, a.card);
        if replaced && !a.method_updated() {
            attempts[k].payment_method_updated = Some(true);
            set += 1;
        }
    }
    set
}

/// The first sequence rule a payment's attempts (sorted by attempt_number) break.
fn sequence_error(group: &[Attempt], files: &[PathBuf]) -> Option<RowError> {
    let at = |a: &Attempt, column: &'static str, value: String, reason: String| RowError {
        file: files[a.source.file as usize].clone(),
        row: a.source.row as u64,
        csv: is_csv(&files[a.source.file as usize]),
        column,
        value,
        reason,
    };
    for w in group.windows(2) {
        let (prev, cur) = (&w[0], &w[1]);
        if cur.attempt_number == prev.attempt_number {
            return Some(at(
                cur,
                "attempt_number",
                cur.attempt_number.to_string(),
                format!("attempt_number repeats within the payment (also at row {})", prev.source.row),
            ));
        }
        if cur.attempted_at <= prev.attempted_at {
            return Some(at(
                cur,
                "attempted_at",
                cur.attempted_at.to_rfc3339(),
                format!(
                    "attempted_at must increase with attempt_number within a payment (attempt {} at row {} is at {})",
                    prev.attempt_number,
                    prev.source.row,
                    prev.attempted_at.to_rfc3339()
                ),
            ));
        }
        if prev.outcome == Outcome::Succeeded {
            return Some(at(
                prev,
                "outcome",
                "succeeded".into(),
                format!(
                    "a succeeded attempt must be the payment's last (attempt {} at row {} follows it)",
                    cur.attempt_number, cur.source.row
                ),
            ));
        }
    }
    None
}

/// Summary of a history for `recoup history check`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Rows accepted.
    pub rows: u64,
    /// Distinct payments.
    pub payments: u64,
    /// Distinct customers.
    pub customers: u64,
    /// Earliest attempt.
    pub first_attempt: Option<DateTime<Utc>>,
    /// Latest attempt.
    pub last_attempt: Option<DateTime<Utc>>,
    /// Rows per outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Failed rows per normalized decline code.
    pub decline_codes: BTreeMap<String, u64>,
    /// Failed rows per decline class.
    pub decline_classes: BTreeMap<String, u64>,
    /// Payments whose first attempt failed.
    pub failed_payments: u64,
    /// Of those, payments recovered by a later attempt.
    pub recovered_payments: u64,
    /// Rows per payment method.
    pub payment_methods: BTreeMap<String, u64>,
    /// Retries made after the payer updated the payment method (flagged, or charged to
    /// another `payment_method_id` than the attempt before): what training learns a replaced
    /// method from.
    pub updated_retries: u64,
    /// The load report.
    pub load: LoadReport,
}

/// Summarize a loaded history.
pub fn summarize(h: &History) -> Summary {
    let mut outcomes = BTreeMap::new();
    let mut decline_codes = BTreeMap::new();
    let mut decline_classes = BTreeMap::new();
    let mut payment_methods = BTreeMap::new();
    for a in &h.attempts {
        *outcomes.entry(<&str>::from(a.outcome).to_string()).or_insert(0) += 1;
        *payment_methods.entry(<&str>::from(a.method).to_string()).or_insert(0) += 1;
        if let Some(d) = a.decline {
            *decline_codes.entry(d.as_str().to_string()).or_insert(0) += 1;
            *decline_classes.entry(<&str>::from(d.class()).to_string()).or_insert(0) += 1;
        }
    }
    let (mut failed_payments, mut recovered_payments, mut payments) = (0, 0, 0);
    for p in h.payments() {
        payments += 1;
        if p[0].outcome == Outcome::Failed {
            failed_payments += 1;
            if p.last().is_some_and(|a| a.outcome == Outcome::Succeeded) {
                recovered_payments += 1;
            }
        }
    }
    let mut customers = h.attempts.iter().map(|a| a.customer).collect::<Vec<_>>();
    customers.sort_unstable();
    customers.dedup();
    Summary {
        rows: h.attempts.len() as u64,
        payments,
        customers: customers.len() as u64,
        first_attempt: h.attempts.iter().map(|a| a.attempted_at).min(),
        last_attempt: h.attempts.iter().map(|a| a.attempted_at).max(),
        outcomes,
        decline_codes,
        decline_classes,
        failed_payments,
        recovered_payments,
        payment_methods,
        updated_retries: h.attempts.iter().filter(|a| a.attempt_number > 0 && a.method_updated()).count() as u64,
        load: h.report.clone(),
    }
}

/// Write attempts back out in the contract format (CSV or Parquet by extension).
/// Used by tests, benchmarks and, later, the simulator's sample data.
pub fn write(h: &History, path: &Path) -> Result<(), LoadError> {
    let mut df = to_frame(h).map_err(|source| LoadError::Polars { path: path.to_path_buf(), source })?;
    write_frame(&mut df, path)
}

/// Write a contract-typed DataFrame (CSV or Parquet by extension).
pub fn write_frame(df: &mut DataFrame, path: &Path) -> Result<(), LoadError> {
    let pe = |source| LoadError::Polars { path: path.to_path_buf(), source };
    let f = File::create(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    match file_kind(path) {
        Some(FileKind::Parquet) => ParquetWriter::new(f).finish(df).map(|_| ()).map_err(pe),
        Some(FileKind::Csv) => {
            // RFC 3339 with an explicit UTC offset, as the contract asks of CSV.
            CsvWriter::new(f).include_header(true).with_datetime_format(Some("%Y-%m-%dT%H:%M:%S%.fZ".into())).finish(df).map_err(pe)
        }
        None => Err(LoadError::UnsupportedFile { path: path.to_path_buf() }),
    }
}

/// The attempts as a contract-typed DataFrame.
pub fn to_frame(h: &History) -> PolarsResult<DataFrame> {
    let a = &h.attempts;
    // Text cells borrow from the attempts and the id tables: no allocation per cell.
    let text = |name: &str, f: &dyn for<'x> Fn(&'x Attempt) -> Option<&'x str>| -> Column {
        Column::new(name.into(), a.iter().map(f).collect::<Vec<Option<&str>>>())
    };
    let ids = |name: &str, table: &Ids, ix: &dyn Fn(&Attempt) -> u32| -> Column {
        Column::new(name.into(), a.iter().map(|x| table.get(ix(x))).collect::<Vec<&str>>())
    };
    fn name<T: Into<&'static str>>(v: Option<T>) -> Option<&'static str> {
        v.map(Into::into)
    }
    let micros: Vec<i64> = a.iter().map(|x| x.attempted_at.timestamp_micros()).collect();
    let attempted_at = Int64Chunked::from_vec("attempted_at".into(), micros)
        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        .into_series()
        .into_column();
    let mut cols = vec![
        ids("attempt_id", &h.attempt_ids, &|x| x.attempt_ix),
        ids("payment_id", &h.payment_ids, &|x| x.payment.0),
        ids("customer_id", &h.customer_ids, &|x| x.customer.0),
        attempted_at,
        Column::new("attempt_number".into(), a.iter().map(|x| x.attempt_number as i64).collect::<Vec<_>>()),
        Column::new("amount_minor".into(), a.iter().map(|x| x.amount.minor).collect::<Vec<_>>()),
        text("currency", &|x| Some(x.amount.currency.as_str())),
        text("payment_method", &|x| name(Some(x.method))),
        text("card_brand", &|x| name(x.card_brand)),
        text("card_funding", &|x| name(x.card_funding)),
        text("country", &|x| Some(x.country.as_str())),
        text("timezone", &|x| Some(x.timezone.name())),
        text("outcome", &|x| name(Some(x.outcome))),
        text("decline_code", &|x| x.decline.map(DeclineCode::as_str)),
        text("network_code", &|x| x.network_code.as_ref().map(RawCode::as_str)),
        text("advice_code", &|x| x.advice_code.as_ref().map(RawCode::as_str)),
        text("channel", &|x| name(x.channel)),
        Column::new("payment_method_updated".into(), a.iter().map(|x| x.payment_method_updated).collect::<Vec<_>>()),
        text("billing_interval", &|x| name(x.billing_interval)),
        Column::new("tenure_days".into(), a.iter().map(|x| x.tenure_days.map(i64::from)).collect::<Vec<_>>()),
        Column::new("propensity".into(), a.iter().map(|x| x.propensity).collect::<Vec<_>>()),
        // Only the id's hash is kept: written as a stable text that groups the same rows.
        Column::new("payment_method_id".into(), a.iter().map(|x| x.card.map(|c| format!("pm_{:016x}", c.0))).collect::<Vec<_>>()),
    ];
    // recoup's own column, written only where some attempt carries it (a history without it reads the same).
    if a.iter().any(|x| x.update_triggered) {
        cols.push(Column::new("update_triggered".into(), a.iter().map(|x| x.update_triggered).collect::<Vec<_>>()));
    }
    DataFrame::new(a.len(), cols)
}

#[cfg(test)]
mod tests {
    use super::{parse_tz, shards_incomplete, trim};

    #[test]
    fn a_shard_set_is_complete_only_with_each_index_once() {
        assert_eq!(shards_incomplete(&[2, 0, 1], 3), None);
        assert_eq!(shards_incomplete(&[0, 2], 3).as_deref(), Some("1"));
        assert_eq!(shards_incomplete(&[], 2).as_deref(), Some("0, 1"));
        // The same index twice (part-1-of-3 beside part-00001-of-00003) is not a full set.
        assert_eq!(shards_incomplete(&[0, 1, 1, 2], 3).as_deref(), Some("none, but a shard is doubled"));
    }

    #[test]
    fn trim_fast_path_agrees_with_str_trim() {
        for s in ["", " ", "a", " a", "a ", "\ta\n", "Europe/Oslo", "\u{a0}x\u{a0}", "é", " é ", "x\u{2003}"] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }

    #[test]
    fn remembered_time_zone_is_only_reused_for_the_same_name() {
        assert_eq!(parse_tz("Europe/Oslo"), Some(chrono_tz::Europe::Oslo));
        assert_eq!(parse_tz("Europe/Oslo"), Some(chrono_tz::Europe::Oslo));
        assert_eq!(parse_tz("America/New_York"), Some(chrono_tz::America::New_York));
        assert_eq!(parse_tz("Europe/Osl"), None);
        assert_eq!(parse_tz("Europe/Oslo"), Some(chrono_tz::Europe::Oslo));
    }
}
