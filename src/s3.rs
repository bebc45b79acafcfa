//! Object storage: `s3://bucket/prefix` URLs on Amazon S3 or any S3-compatible
//! server (MinIO, Ceph, moto…), for histories and the model registry (#25).
//!
//! Configuration is the AWS SDKs' environment: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` (another server than AWS; an
//! `http://` endpoint is allowed plain HTTP, as its scheme says), web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`: IRSA on EKS) and the ECS/EKS
//! container credentials. Requests are retried with backoff for at most 30 s.
//!
//! Everything is blocking: a [`Bucket`]'s calls run on a one-thread runtime that
//! drives the connections. Call it from plain threads or `spawn_blocking`, never
//! from async code.
//!
//! Reading a history from S3 *mirrors* the prefix into a local cache
//! ([`cache_dir`]): the loader then reads local files as always (page checksums,
//! slices, shards), a second run downloads only objects whose ETag changed, and
//! files gone from the bucket go from the mirror too.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

/// An `s3://bucket/key` URL: the bucket and a key or prefix without leading or trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

impl S3Url {
    /// `None` when `s` is not an `s3://` URL (a local path); an error when it is one, malformed.
    pub fn parse(s: &str) -> Option<Result<S3Url, S3Error>> {
        let rest = s.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !bucket_ok {
            return Some(Err(S3Error::Url(format!(
                "{s}: {bucket:?} is not an S3 bucket name (3–63 characters of a–z 0–9 . -, starting and ending with a letter or digit)"
            ))));
        }
        let key = key.trim_matches('/');
        if key.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") && !key.is_empty() {
            return Some(Err(S3Error::Url(format!("{s}: the key has an empty, `.` or `..` segment"))));
        }
        Some(Ok(S3Url { bucket: bucket.to_string(), key: key.to_string() }))
    }

    /// [`S3Url::parse`] of a command-line path (`--history s3://…` arrives as a path).
    pub fn of_path(p: &Path) -> Option<Result<S3Url, S3Error>> {
        S3Url::parse(p.to_str()?)
    }

    /// The key `name` below this prefix.
    pub fn join(&self, name: &str) -> String {
        if self.key.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.key)
        }
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Errors of object storage, naming the URL or local path involved.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("{0}")]
    Url(String),
    #[error("s3://{bucket}/{key}: {source}")]
    Store { bucket: String, key: String, source: Box<object_store::Error> },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{url}: no history files there (objects ending in .parquet, .pq or .csv)")]
    NoFiles { url: String },
}

/// A bucket, with a blocking interface.
pub struct Bucket {
    name: String,
    store: AmazonS3,
    rt: &'static tokio::runtime::Runtime,
}

/// The one runtime every bucket's requests run on: a worker thread drives the
/// connections between calls. Never dropped (dropping a runtime inside async code panics).
fn runtime() -> Result<&'static tokio::runtime::Runtime, S3Error> {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("recoup-s3")
        .enable_all()
        .build()
        .map_err(|source| S3Error::Io { path: PathBuf::from("the object storage runtime"), source })?;
    Ok(RT.get_or_init(|| rt))
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bucket({})", self.name)
    }
}

/// One object of a listing.
#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
}

impl Bucket {
    /// Connect to `bucket` with the environment's configuration (see the module doc).
    pub fn open(bucket: &str) -> Result<Bucket, S3Error> {
        let err = |source| S3Error::Store { bucket: bucket.to_string(), key: String::new(), source: Box::new(source) };
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(RetryConfig {
            max_retries: 5,
            retry_timeout: Duration::from_secs(30),
            ..Default::default()
        });
        let endpoint =
            std::env::var("AWS_ENDPOINT_URL_S3").or_else(|_| std::env::var("AWS_ENDPOINT_URL")).or_else(|_| std::env::var("AWS_ENDPOINT"));
        if endpoint.is_ok_and(|e| e.starts_with("http://")) {
            b = b.with_allow_http(true);
        }
        let store = b.build().map_err(err)?;
        Ok(Bucket { name: bucket.to_string(), store, rt: runtime()? })
    }

    fn err(&self, key: &str) -> impl FnOnce(object_store::Error) -> S3Error + '_ {
        let key = key.to_string();
        move |source| S3Error::Store { bucket: self.name.clone(), key, source: Box::new(source) }
    }

    /// The object's bytes, `None` when it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, S3Error> {
        let k = Key::from(key);
        self.rt.block_on(async {
            match self.store.get(&k).await {
                Ok(r) => Ok(Some(r.bytes().await.map_err(self.err(key))?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err(key)(e)),
            }
        })
    }

    /// The object's size and ETag, `None` when it does not exist.
    pub fn head(&self, key: &str) -> Result<Option<Object>, S3Error> {
        let k = Key::from(key);
        self.rt.block_on(async {
            match self.store.head(&k).await {
                Ok(m) => Ok(Some(Object { key: key.to_string(), size: m.size, etag: m.e_tag })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err(key)(e)),
            }
        })
    }

    /// Write an object (one PUT: readers see the old bytes or the new, never a mix).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), S3Error> {
        let k = Key::from(key);
        self.rt.block_on(async { self.store.put(&k, PutPayload::from(bytes)).await.map(|_| ()).map_err(self.err(key)) })
    }

    /// Every object below `prefix` (all depths), sorted by key.
    pub fn list(&self, prefix: &str) -> Result<Vec<Object>, S3Error> {
        let p = (!prefix.is_empty()).then(|| Key::from(prefix));
        let mut out = self.rt.block_on(async {
            let mut s = self.store.list(p.as_ref());
            let mut out = Vec::new();
            while let Some(m) = s.next().await {
                let m = m.map_err(self.err(prefix))?;
                out.push(Object { key: m.location.to_string(), size: m.size, etag: m.e_tag });
            }
            Ok::<_, S3Error>(out)
        })?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Stream an object into `to` (through a temporary file and a rename: `to` is whole or absent).
    pub fn download(&self, key: &str, to: &Path) -> Result<(), S3Error> {
        use std::io::Write as _;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| S3Error::Io { path, source }
        };
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let tmp = to.with_file_name(format!(
            ".{}.{}.part",
            to.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            std::process::id()
        ));
        let k = Key::from(key);
        let written = self.rt.block_on(async {
            let r = self.store.get(&k).await.map_err(self.err(key))?;
            let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io(&tmp))?);
            let mut stream = r.into_stream();
            while let Some(chunk) = stream.next().await {
                file.write_all(&chunk.map_err(self.err(key))?).map_err(io(&tmp))?;
            }
            file.into_inner().map_err(|e| io(&tmp)(e.into_error()))?.sync_all().map_err(io(&tmp))
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, to).map_err(io(to))
    }
}

/// Where S3 objects are mirrored: `RECOUP_CACHE_DIR`, else `$XDG_CACHE_HOME/recoup`,
/// else `$HOME/.cache/recoup`, else `recoup-cache` in the temp directory.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("RECOUP_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("recoup")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("recoup")))
        .unwrap_or_else(|| std::env::temp_dir().join("recoup-cache"))
}

/// How a loaded file is named in a manifest: its `s3://` URL when it is a mirrored
/// object (under [`cache_dir`]`/s3/`), else its path.
pub fn source_name(path: &Path) -> String {
    match path.strip_prefix(cache_dir().join("s3")) {
        Ok(rest) => format!("s3://{}", rest.display()),
        Err(_) => path.display().to_string(),
    }
}

/// Whether a key names a history file the loader reads (as `history::list_files` filters).
fn is_history_file(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    let lower = name.to_ascii_lowercase();
    !name.starts_with(['.', '_']) && (lower.ends_with(".parquet") || lower.ends_with(".pq") || lower.ends_with(".csv"))
}

/// The history files below `root` (as the loader would read them), relative, `/`-separated.
fn local_history_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(root) {
                let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                if is_history_file(&rel) {
                    out.push(rel);
                }
            }
        }
    }
    out
}

/// The mirror's record of what it holds: relative path → ETag (or size when the server gives none).
const MIRROR_STATE: &str = ".recoup-mirror.json";

/// What [`mirror`] did.
#[derive(Debug, Clone)]
pub struct Mirrored {
    /// The local copy: a file (the URL named one object) or a directory.
    pub path: PathBuf,
    pub objects: usize,
    pub bytes: u64,
    pub downloaded: usize,
    pub downloaded_bytes: u64,
    pub removed: usize,
}

/// Mirror the history files at `url` (one object, or every `.parquet`/`.pq`/`.csv`
/// below the prefix) into `cache/s3/BUCKET/KEY`, downloading only what changed.
pub fn mirror(url: &S3Url, cache: &Path) -> Result<Mirrored, S3Error> {
    let bucket = Bucket::open(&url.bucket)?;
    let root = cache.join("s3").join(&url.bucket).join(&url.key);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| S3Error::Io { path, source }
    };
    // One object?
    if !url.key.is_empty() {
        if let Some(o) = bucket.head(&url.key)? {
            let name = root.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let sidecar = root.with_file_name(format!(".{name}.etag"));
            let tag = o.etag.clone().unwrap_or_else(|| format!("size:{}", o.size));
            let stale = std::fs::read_to_string(&sidecar).ok().as_deref() != Some(tag.as_str())
                || std::fs::metadata(&root).map_or(true, |m| m.len() != o.size);
            if stale {
                tracing::info!(object = %url, bytes = o.size, "downloading");
                bucket.download(&url.key, &root)?;
                std::fs::write(&sidecar, &tag).map_err(io(&sidecar))?;
            }
            return Ok(Mirrored {
                path: root,
                objects: 1,
                bytes: o.size,
                downloaded: stale as usize,
                downloaded_bytes: if stale { o.size } else { 0 },
                removed: 0,
            });
        }
    }
    let prefix = url.key.clone();
    let objects: Vec<Object> = bucket.list(&prefix)?.into_iter().filter(|o| is_history_file(&o.key)).collect();
    if objects.is_empty() {
        return Err(S3Error::NoFiles { url: url.to_string() });
    }
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    let state_path = root.join(MIRROR_STATE);
    let before: BTreeMap<String, String> =
        std::fs::read_to_string(&state_path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let tag = |o: &Object| o.etag.clone().unwrap_or_else(|| format!("size:{}", o.size));
    let rel = |key: &str| key.strip_prefix(&prefix).unwrap_or(key).trim_start_matches('/').to_string();
    let mut after = BTreeMap::new();
    let mut m = Mirrored { path: root.clone(), objects: objects.len(), bytes: 0, downloaded: 0, downloaded_bytes: 0, removed: 0 };
    for o in &objects {
        let r = rel(&o.key);
        if r.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
            tracing::warn!(object = %o.key, "skipped: a key that is no relative file path");
            continue;
        }
        let local = root.join(&r);
        m.bytes += o.size;
        let fresh = before.get(&r) == Some(&tag(o)) && std::fs::metadata(&local).is_ok_and(|f| f.len() == o.size);
        if !fresh {
            tracing::info!(object = %format!("s3://{}/{}", url.bucket, o.key), bytes = o.size, "downloading");
            bucket.download(&o.key, &local)?;
            m.downloaded += 1;
            m.downloaded_bytes += o.size;
        }
        after.insert(r, tag(o));
    }
    // Every history file the bucket does not have leaves the mirror (the loader reads the
    // whole directory): those deleted since the last run, and any left by a run that
    // stopped before it wrote its state.
    for stray in local_history_files(&root).into_iter().filter(|r| !after.contains_key(r)) {
        if std::fs::remove_file(root.join(&stray)).is_ok() {
            m.removed += 1;
        }
    }
    let text = serde_json::to_string_pretty(&after).unwrap_or_default();
    std::fs::write(&state_path, text).map_err(io(&state_path))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_malformed_ones_are_named() {
        assert!(S3Url::parse("models/").is_none());
        let u = S3Url::parse("s3://recoup-prod/histories/2026/").unwrap().unwrap();
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("recoup-prod", "histories/2026"));
        assert_eq!(u.join("CURRENT"), "histories/2026/CURRENT");
        assert_eq!(u.to_string(), "s3://recoup-prod/histories/2026");
        let bare = S3Url::parse("s3://models").unwrap().unwrap();
        assert_eq!((bare.key.as_str(), bare.join("CURRENT").as_str()), ("", "CURRENT"));
        for bad in ["s3://", "s3://Upper/x", "s3://ab/x", "s3://b_c_d/x", "s3://bucket/a//b", "s3://bucket/a/../b"] {
            let e = S3Url::parse(bad).unwrap().expect_err(bad).to_string();
            assert!(e.starts_with(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn only_what_the_loader_reads_is_mirrored() {
        assert!(is_history_file("h/2026/part-0.parquet"));
        assert!(is_history_file("h/attempts.CSV"));
        assert!(!is_history_file("h/_SUCCESS"));
        assert!(!is_history_file("h/.part-0.parquet.crc"));
        assert!(!is_history_file("h/README.md"));
    }
}
