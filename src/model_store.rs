//! Where the model registry lives: a local directory, or an `s3://bucket/prefix`
//! on S3-compatible storage (#25), with one interface for both.
//!
//! The layout is the same in both: `<version>/{model.json, metrics.json,
//! MODEL_CARD.md, manifest.json}` and `CURRENT`. On S3:
//! - a version is written locally first (into the cache, checked to load as
//!   [`registry::write_version`] always does), then uploaded with `manifest.json`
//!   last: a version is listed only once every file is there;
//! - promoting is one PUT of `CURRENT`, which S3 makes atomic: a replica reads the
//!   old name or the new one;
//! - reading a version downloads it once into the cache ([`crate::s3::cache_dir`]
//!   `/models/BUCKET/PREFIX/<version>`): versions never change, so the copy stays valid;
//! - replicas watch `CURRENT` by reading it every `--reload-every` seconds.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::path::{Path, PathBuf};

use crate::model::SuccessModel;
use crate::registry::{self, Manifest, RegistryError};
use crate::s3::{Bucket, S3Url};
use crate::train::TrainReport;

/// The files of a version, in upload order (`manifest.json` last: it marks a version complete).
const VERSION_FILES: [&str; 4] = ["model.json", "metrics.json", "MODEL_CARD.md", "manifest.json"];

/// A model registry.
#[derive(Debug)]
pub enum ModelStore {
    /// A directory on this machine (or a mounted volume).
    Local(PathBuf),
    /// A prefix in a bucket, with a local cache of the versions read.
    S3 { url: S3Url, bucket: Box<Bucket>, cache: PathBuf },
}

impl ModelStore {
    /// The store `path` names: `s3://bucket/prefix` or a local directory.
    pub fn open(path: &Path) -> Result<ModelStore, RegistryError> {
        match S3Url::of_path(path) {
            None => Ok(ModelStore::Local(path.to_path_buf())),
            Some(url) => {
                let url = url?;
                let bucket = Box::new(Bucket::open(&url.bucket)?);
                let cache = crate::s3::cache_dir().join("models").join(&url.bucket).join(&url.key);
                Ok(ModelStore::S3 { url, bucket, cache })
            }
        }
    }

    /// How the store is named to people (`models/`, `s3://bucket/models`).
    pub fn name(&self) -> PathBuf {
        match self {
            ModelStore::Local(dir) => dir.clone(),
            ModelStore::S3 { url, .. } => PathBuf::from(url.to_string()),
        }
    }

    /// The current version's name.
    pub fn current(&self) -> Result<String, RegistryError> {
        match self {
            ModelStore::Local(dir) => registry::current(dir),
            ModelStore::S3 { url, bucket, .. } => match bucket.get(&url.join(registry::CURRENT))? {
                Some(bytes) => {
                    let v = String::from_utf8_lossy(&bytes).trim().to_string();
                    if v.is_empty() {
                        return Err(RegistryError::NoCurrent { dir: self.name() });
                    }
                    Ok(v)
                }
                None => Err(RegistryError::NoCurrent { dir: self.name() }),
            },
        }
    }

    /// Version names, oldest first (those with a `manifest.json`: complete ones).
    pub fn list(&self) -> Result<Vec<String>, RegistryError> {
        match self {
            ModelStore::Local(dir) => registry::list(dir),
            ModelStore::S3 { url, bucket, .. } => {
                let base = url.join("");
                let mut v: Vec<String> = bucket
                    .list(&url.key)?
                    .into_iter()
                    .filter_map(|o| o.key.strip_prefix(&base)?.strip_suffix("/manifest.json").map(str::to_string))
                    .filter(|v| !v.contains('/') && !v.starts_with('.'))
                    .collect();
                v.sort();
                Ok(v)
            }
        }
    }

    /// Whether `version` exists (complete) in the store.
    pub fn has(&self, version: &str) -> Result<bool, RegistryError> {
        match self {
            ModelStore::Local(dir) => Ok(dir.join(version).exists()),
            ModelStore::S3 { url, bucket, .. } => Ok(bucket.head(&url.join(&format!("{version}/manifest.json")))?.is_some()),
        }
    }

    /// A local registry directory holding `version`: the store itself, or its cache
    /// (the version downloaded into it through a temporary directory and a rename).
    pub fn fetch(&self, version: &str) -> Result<PathBuf, RegistryError> {
        let (url, bucket, cache) = match self {
            ModelStore::Local(dir) => return Ok(dir.clone()),
            ModelStore::S3 { url, bucket, cache } => (url, bucket, cache),
        };
        if registry::check_version_name(version).is_err() {
            return Err(RegistryError::NoSuchVersion { version: version.to_string(), dir: self.name() });
        }
        if cache.join(version).join("manifest.json").is_file() {
            return Ok(cache.clone());
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistryError::Io { path, source }
        };
        if bucket.head(&url.join(&format!("{version}/manifest.json")))?.is_none() {
            return Err(RegistryError::NoSuchVersion { version: version.to_string(), dir: self.name() });
        }
        let tmp = cache.join(format!(".{version}.{}.fetch", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for f in VERSION_FILES {
            if let Err(e) = bucket.download(&url.join(&format!("{version}/{f}")), &tmp.join(f)) {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e.into());
            }
        }
        match std::fs::rename(&tmp, cache.join(version)) {
            Ok(()) => Ok(cache.clone()),
            // Another process fetched it meanwhile: theirs is the same immutable version.
            Err(_) if cache.join(version).join("manifest.json").is_file() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(cache.clone())
            }
            Err(e) => Err(io(&cache.join(version))(e)),
        }
    }

    /// Load a version's model (checked as a serving model must be).
    pub fn load_version(&self, version: &str) -> Result<SuccessModel, RegistryError> {
        registry::load_version(&self.fetch(version)?, version).map_err(|e| self.renamed(e))
    }

    /// Load the current model: (version, model).
    pub fn load_current(&self) -> Result<(String, SuccessModel), RegistryError> {
        let v = self.current()?;
        let m = self.load_version(&v)?;
        Ok((v, m))
    }

    /// A version's manifest and metrics.
    pub fn describe(&self, version: &str) -> Result<(Manifest, TrainReport), RegistryError> {
        registry::describe(&self.fetch(version)?, version).map_err(|e| self.renamed(e))
    }

    /// A version's file (`MODEL_CARD.md`, `metrics.json`…) as text.
    pub fn read(&self, version: &str, file: &str) -> Result<String, RegistryError> {
        let path = self.fetch(version)?.join(version).join(file);
        std::fs::read_to_string(&path).map_err(|source| RegistryError::Io { path, source })
    }

    /// Write a new version (see [`registry::write_version`]); returns its name.
    pub fn write_version(&self, model: &SuccessModel, report: &TrainReport, manifest: Manifest) -> Result<String, RegistryError> {
        let (url, bucket, cache) = match self {
            ModelStore::Local(dir) => {
                let written = registry::write_version(dir, model, report, manifest)?;
                return Ok(written.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            }
            ModelStore::S3 { url, bucket, cache } => (url, bucket, cache),
        };
        // Written and checked in a private staging registry, then uploaded.
        let staging = cache.join(format!(".staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let written = registry::write_version(&staging, model, report, manifest);
        let result = written.and_then(|dir| {
            let version = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if bucket.head(&url.join(&format!("{version}/manifest.json")))?.is_some() {
                return Err(RegistryError::Exists { path: PathBuf::from(format!("{url}/{version}")) });
            }
            upload(bucket, url, &dir, &version)?;
            // The cache keeps it: serving it next needs no download.
            std::fs::create_dir_all(cache).map_err(|source| RegistryError::Io { path: cache.clone(), source })?;
            if !cache.join(&version).exists() {
                let _ = std::fs::rename(&dir, cache.join(&version));
            }
            Ok(version)
        });
        let _ = std::fs::remove_dir_all(&staging);
        result
    }

    /// Make `version` the current one. The model must load.
    pub fn promote(&self, version: &str) -> Result<(), RegistryError> {
        match self {
            ModelStore::Local(dir) => registry::promote(dir, version),
            ModelStore::S3 { url, bucket, .. } => {
                self.load_version(version)?;
                bucket.put(&url.join(registry::CURRENT), format!("{version}\n").into_bytes())?;
                Ok(())
            }
        }
    }

    /// Give this store the current version of the local registry `from` when it lacks
    /// it, and make it current when this store has none (see [`registry::seed`]).
    /// Returns whether a version was copied.
    pub fn seed(&self, from: &Path) -> Result<bool, RegistryError> {
        let (url, bucket) = match self {
            ModelStore::Local(dir) => return registry::seed(dir, from),
            ModelStore::S3 { url, bucket, .. } => (url, bucket),
        };
        let v = registry::current(from)?;
        registry::load_version(from, &v)?;
        let copy = bucket.head(&url.join(&format!("{v}/manifest.json")))?.is_none();
        if copy {
            upload(bucket, url, &from.join(&v), &v)?;
        }
        if matches!(self.current(), Err(RegistryError::NoCurrent { .. })) {
            self.promote(&v)?;
        }
        Ok(copy)
    }

    /// An error about the cache, named as the store (the cache is an implementation detail).
    fn renamed(&self, e: RegistryError) -> RegistryError {
        match (self, e) {
            (ModelStore::S3 { .. }, RegistryError::NoSuchVersion { version, .. }) => {
                RegistryError::NoSuchVersion { version, dir: self.name() }
            }
            (_, e) => e,
        }
    }
}

/// Upload the version directory `dir` as `version` below `url`, `manifest.json` last.
fn upload(bucket: &Bucket, url: &S3Url, dir: &Path, version: &str) -> Result<(), RegistryError> {
    for f in VERSION_FILES {
        let path = dir.join(f);
        let bytes = std::fs::read(&path).map_err(|source| RegistryError::Io { path: path.clone(), source })?;
        bucket.put(&url.join(&format!("{version}/{f}")), bytes)?;
    }
    Ok(())
}
