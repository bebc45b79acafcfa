//! `recoup simulate`: write history from the simulated world.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::*;

use crate::sim::generate::frame;
use crate::sim::{World, WorldConfig};

pub use super::Format;

/// Parquet compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// Zstandard: smallest files.
    Zstd,
    /// Snappy: fast, larger files.
    Snappy,
    /// LZ4 (raw): fast, larger files.
    Lz4,
    /// No compression.
    None,
}

impl From<Compression> for ParquetCompression {
    fn from(c: Compression) -> Self {
        match c {
            Compression::Zstd => ParquetCompression::Zstd(None),
            Compression::Snappy => ParquetCompression::Snappy,
            Compression::Lz4 => ParquetCompression::Lz4Raw,
            Compression::None => ParquetCompression::Uncompressed,
        }
    }
}

/// Generate payment history (contract v1) from a simulated world.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The same seed and parameters give the same rows (and the same bytes from the same build).\n\nExamples:\n  recoup simulate --payers 20000 --months 12 --seed 7 --out data/sample/history.parquet\n  recoup simulate --payers 1000 --months 3 --out h.csv --world world.toml\n\nThe world's parameters and their sources are documented in data/README.md;\nprint the defaults as a TOML file to start from with --print-world."
)]
pub struct Args {
    /// Number of payers (subscribers).
    #[arg(long, default_value_t = 10_000, env = "RECOUP_SIMULATE_PAYERS")]
    pub payers: u32,
    /// Months of history from the world's start date.
    #[arg(long, default_value_t = 12, env = "RECOUP_SIMULATE_MONTHS")]
    pub months: u32,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 1, env = "RECOUP_SIMULATE_SEED")]
    pub seed: u64,
    /// Output file (.parquet or .csv).
    #[arg(long, required_unless_present_any = ["print_world", "list_presets"], env = "RECOUP_SIMULATE_OUT")]
    pub out: Option<PathBuf>,
    /// Output format (default: from the file extension).
    #[arg(long, value_enum, env = "RECOUP_SIMULATE_FORMAT")]
    pub format: Option<Format>,
    /// World parameters (TOML); fields not given keep their defaults.
    #[arg(long, value_name = "TOML", env = "RECOUP_SIMULATE_WORLD")]
    pub world: Option<PathBuf>,
    /// Print the world parameters (the default, or --preset's) as TOML and exit.
    #[arg(long, env = "RECOUP_SIMULATE_PRINT_WORLD")]
    pub print_world: bool,
    /// A world from the zoo: default, careless-log, fixed-log, bills, top-ups, weekly,
    /// few-apps (`recoup simulate --list-presets` says how each differs).
    #[arg(long, value_name = "NAME", conflicts_with = "world", env = "RECOUP_SIMULATE_PRESET")]
    pub preset: Option<String>,
    /// List the zoo's presets and exit.
    #[arg(long, env = "RECOUP_SIMULATE_LIST_PRESETS")]
    pub list_presets: bool,
    /// Parquet compression: zstd (smallest files) or snappy / lz4 (faster), or none.
    #[arg(long, value_enum, default_value_t = Compression::Zstd, env = "RECOUP_SIMULATE_COMPRESSION")]
    pub compression: Compression,
    /// Payers per written chunk (bounds memory).
    #[arg(long, default_value_t = 20_000, hide = true, env = "RECOUP_SIMULATE_CHUNK_PAYERS")]
    pub chunk_payers: u32,
}

/// The world from `--world FILE`, `--preset NAME`, or the default.
pub fn world_config(file: Option<&std::path::Path>, preset: Option<&str>) -> anyhow::Result<WorldConfig> {
    match (file, preset) {
        (Some(p), _) => Ok(crate::sim::WorldParams::from_toml_file(p)?),
        (None, Some(name)) => Ok(crate::sim::zoo::preset(name)
            .ok_or_else(|| anyhow::anyhow!("--preset: unknown world {name:?}; the zoo has {}", crate::sim::zoo::names()))?
            .check()?),
        (None, None) => Ok(WorldConfig::default()),
    }
}

/// Run `recoup simulate`.
pub fn run(a: &Args, quiet: bool) -> anyhow::Result<ExitCode> {
    if a.list_presets {
        for (name, what) in crate::sim::zoo::PRESETS {
            println!("{name:<14} {what}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = world_config(a.world.as_deref(), a.preset.as_deref())?;
    if a.print_world {
        print!("{}", toml::to_string_pretty(&cfg)?);
        return Ok(ExitCode::SUCCESS);
    }
    let Some(out) = &a.out else { bail!("--out is required") };
    if a.payers == 0 || a.payers >= (1 << 24) {
        bail!("--payers must be between 1 and 16777215, got {}", a.payers);
    }
    if a.months == 0 || a.months > 120 {
        bail!("--months must be between 1 and 120, got {}", a.months);
    }
    let format = Format::of(out, a.format)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let world = World::new(cfg, a.seed, a.months);
    let started = std::time::Instant::now();
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(a.payers as u64) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} simulating {pos}/{len} payers [{bar:30}] {per_sec} eta {eta}")?.progress_chars("=> "),
    );
    // Write to a temporary name and rename at the end: no half-written history on failure.
    let tmp = out.with_extension(format!("partial.{}", if format == Format::Csv { "csv" } else { "parquet" }));
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let step = a.chunk_payers.max(1);
    let ranges: Vec<_> = (0..a.payers).step_by(step as usize).map(|s| s..(s + step).min(a.payers)).collect();
    // Generation (parallel over payers) and writing overlap: a writer thread
    // takes each chunk while the next one is generated. At most two chunks
    // are in memory at once, so memory stays bounded whatever the size.
    let (tx, rx) = std::sync::mpsc::sync_channel::<DataFrame>(1);
    let (rows, payments) = std::thread::scope(|scope| -> anyhow::Result<(usize, usize)> {
        let compression = a.compression.into();
        let writer = scope.spawn(move || write_frames(file, format, compression, rx));
        let mut totals = (0usize, 0usize);
        for range in ranges {
            let n = range.len() as u64;
            let (df, rows, payments) = frame(&world, range)?;
            totals.0 += rows;
            totals.1 += payments;
            if tx.send(df).is_err() {
                break; // the writer failed; its error is reported below
            }
            bar.inc(n);
        }
        drop(tx);
        writer.join().map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;
        Ok(totals)
    })?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    bar.finish_and_clear();
    if !quiet {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "wrote {} attempts of {} payments from {} payers ({} months, seed {}) to {} in {:.1} s ({:.0} attempts/s)",
            rows,
            payments,
            a.payers,
            a.months,
            a.seed,
            out.display(),
            secs,
            rows as f64 / secs.max(1e-9)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Write every frame received to one Parquet or CSV file.
fn write_frames(
    file: File,
    format: Format,
    compression: ParquetCompression,
    rx: std::sync::mpsc::Receiver<DataFrame>,
) -> anyhow::Result<()> {
    let Ok(first) = rx.recv() else { return Ok(()) };
    match format {
        Format::Parquet => {
            let mut w = ParquetWriter::new(file).with_compression(compression).batched(first.schema())?;
            w.write_batch(&first)?;
            for df in rx {
                w.write_batch(&df)?;
            }
            w.finish()?;
        }
        Format::Csv => {
            let mut w = CsvWriter::new(file)
                .include_header(true)
                .with_datetime_format(Some("%Y-%m-%dT%H:%M:%S%.fZ".into()))
                .batched(first.schema())?;
            w.write_batch(&first)?;
            for df in rx {
                w.write_batch(&df)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}
