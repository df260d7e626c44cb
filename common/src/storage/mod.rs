//! One storage URL for every result, and the sweep's layout inside it.
//!
//! URLs:
//! - `file://DIR` (relative `DIR` is taken from the working directory; created if missing),
//! - `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&allow_http=true&path_style=true]`, with
//!   credentials and any other setting read from the `AWS_*` environment as
//!   `object_store`'s `AmazonS3Builder::from_env` does; query options win over the environment,
//! - `memory://[NAME]`: in-process; every `Store::open` of the same name in one process
//!   shares the same objects (tests run a coordinator and workers in one process).
//!
//! The layout of a sweep under the URL's root, every key of it, is
//! [`layout`]; the coordinator's lock is [`lock`].
//!
//! Task ids depend on the spec schema ([`crate::spec::SPEC_SCHEMA`]): a store
//! whose sweep holds results of another schema is refused
//! ([`Store::check_schema`]) rather than silently recomputed beside them.
//!
//! Why this file is long: the store's writes share one error type and one key
//! helper, and their ordering (create-only metrics, promotion, tidying) is the
//! completion contract, read top to bottom; keys and the lock are already split
//! out.

use crate::spec::{TaskId, TaskSpec, SPEC_SCHEMA};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

pub mod layout;
mod lock;

#[cfg(test)]
use lock::LOCK_STALE_MS;
pub use lock::{CoordinatorLock, LOCK_REFRESH_MS};

/// Size of each part of a multipart upload (S3 requires ≥ 5 MiB except the last).
pub(crate) const MULTIPART_CHUNK: usize = 16 << 20;

/// A storage failure, naming the URL or key involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one this build understands.
    #[error("storage URL `{url}`: {message}")]
    Url {
        /// The URL as given.
        url: String,
        /// What was expected.
        message: String,
    },
    /// The object store refused or failed an operation.
    #[error("storage `{key}`: {source}")]
    Backend {
        /// The key (or prefix) involved.
        key: String,
        /// The backend's error.
        source: object_store::Error,
    },
    /// A local file could not be read.
    #[error("reading `{path}`: {source}")]
    Io {
        /// The local file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A stored JSON document did not parse.
    #[error("storage `{key}`: invalid JSON: {source}")]
    Json {
        /// The key.
        key: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A create-only write found the object already there.
    #[error("storage `{key}`: already exists")]
    Exists {
        /// The key.
        key: String,
    },
    /// Another coordinator serves the sweep.
    #[error("sweep `{sweep}` is served by another coordinator ({holder}, last seen {age_secs} s ago); stop it first, or wait {wait_secs} s if it is gone")]
    Fenced {
        /// The sweep.
        sweep: String,
        /// Who holds the lock.
        holder: String,
        /// Seconds since its last refresh.
        age_secs: u64,
        /// Seconds until the lock counts as abandoned.
        wait_secs: u64,
    },
    /// The sweep holds results whose task ids follow another spec schema.
    #[error("sweep `{sweep}` in {url} holds results written with spec schema {found}; this build writes schema {SPEC_SCHEMA}, whose task ids differ. Use a new sweep name, or move the old results (`{sweep}/`) elsewhere")]
    Schema {
        /// The store URL.
        url: String,
        /// The sweep.
        sweep: String,
        /// The schema found (1 for stores written before the marker existed).
        found: u32,
    },
}

/// `<sweep>/state/schema.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SchemaMarker {
    spec_schema: u32,
}

/// `<sweep>/state/grid.json`: the task ids of the grid a coordinator serves.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct GridIds {
    /// Task ids of the grid, in expansion order.
    pub task_ids: Vec<TaskId>,
}

/// A handle on the store behind one URL. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    root: ObjPath,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

impl Store {
    /// Open the store a URL names (see the module docs for the forms).
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let bad = |message: &str| StoreError::Url {
            url: url.to_string(),
            message: message.to_string(),
        };
        if let Some(name) = url.strip_prefix("memory://") {
            let mut stores = memory_stores()
                .lock()
                .expect("memory store registry poisoned");
            let inner = stores
                .entry(name.to_string())
                .or_insert_with(|| Arc::new(InMemory::new()))
                .clone();
            return Ok(Store {
                inner,
                root: ObjPath::default(),
                url: url.to_string(),
            });
        }
        if let Some(dir) = url.strip_prefix("file://") {
            if dir.is_empty() {
                return Err(bad("expected file://DIR"));
            }
            let dir = std::path::Path::new(dir);
            let abs = if dir.is_absolute() {
                dir.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|e| bad(&e.to_string()))?
                    .join(dir)
            };
            std::fs::create_dir_all(&abs)
                .map_err(|e| bad(&format!("cannot create directory {}: {e}", abs.display())))?;
            let fs = LocalFileSystem::new_with_prefix(&abs).map_err(|e| bad(&e.to_string()))?;
            return Ok(Store {
                inner: Arc::new(fs),
                root: ObjPath::default(),
                url: url.to_string(),
            });
        }
        if url.starts_with("s3://") {
            let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
            let bucket = parsed
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| bad("expected s3://BUCKET/PREFIX"))?;
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (key, value) in parsed.query_pairs() {
                builder = match key.as_ref() {
                    "endpoint" => builder.with_endpoint(value.as_ref()),
                    "region" => builder.with_region(value.as_ref()),
                    "allow_http" => builder.with_allow_http(parse_bool(&value).ok_or_else(|| bad("allow_http must be true or false"))?),
                    "path_style" => builder.with_virtual_hosted_style_request(
                        !parse_bool(&value).ok_or_else(|| bad("path_style must be true or false"))?,
                    ),
                    other => {
                        return Err(bad(&format!(
                            "unknown option `{other}`: expected endpoint, region, allow_http or path_style"
                        )))
                    }
                };
            }
            let s3 = builder.build().map_err(|e| bad(&e.to_string()))?;
            let root =
                ObjPath::parse(parsed.path().trim_matches('/')).map_err(|e| bad(&e.to_string()))?;
            return Ok(Store {
                inner: Arc::new(s3),
                root,
                url: url.to_string(),
            });
        }
        Err(bad("expected a file://, s3:// or memory:// URL"))
    }

    /// The URL this store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Key of a path relative to the store's root (`/`-separated).
    pub fn key(&self, rel: &str) -> ObjPath {
        let mut key = self.root.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            key = key.child(part);
        }
        key
    }

    /// Write a whole object at a root-relative key.
    pub async fn put_bytes(&self, rel: &str, data: Bytes) -> Result<(), StoreError> {
        let key = self.key(rel);
        self.inner
            .put(&key, PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(|source| StoreError::Backend {
                key: key.to_string(),
                source,
            })
    }

    /// Read a whole object; `None` when it does not exist.
    pub async fn get_bytes(&self, rel: &str) -> Result<Option<Bytes>, StoreError> {
        let key = self.key(rel);
        match self.inner.get(&key).await {
            Ok(got) => got
                .bytes()
                .await
                .map(Some)
                .map_err(|source| StoreError::Backend {
                    key: key.to_string(),
                    source,
                }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(StoreError::Backend {
                key: key.to_string(),
                source,
            }),
        }
    }

    /// Whether an object exists.
    pub async fn exists(&self, rel: &str) -> Result<bool, StoreError> {
        let key = self.key(rel);
        match self.inner.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(StoreError::Backend {
                key: key.to_string(),
                source,
            }),
        }
    }

    /// Size, modification time and version tag (ETag) of an object; `None`
    /// when it does not exist. What a local copy is keyed by.
    pub async fn head(&self, rel: &str) -> Result<Option<object_store::ObjectMeta>, StoreError> {
        let key = self.key(rel);
        match self.inner.head(&key).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(StoreError::Backend {
                key: key.to_string(),
                source,
            }),
        }
    }

    /// Root-relative keys of every object under a root-relative prefix.
    pub async fn list(&self, rel_prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = self.key(rel_prefix);
        let metas: Vec<_> =
            self.inner
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|source| StoreError::Backend {
                    key: prefix.to_string(),
                    source,
                })?;
        let root = self.root.to_string();
        Ok(metas
            .into_iter()
            .map(|m| {
                let full = m.location.to_string();
                match full.strip_prefix(&root) {
                    Some(rest) if !root.is_empty() => rest.trim_start_matches('/').to_string(),
                    _ => full,
                }
            })
            .collect())
    }

    /// The keys of the first of `candidates` (a manifest's `source.files`,
    /// wildcards allowed) present in the store, with their metadata; `None`
    /// when none is. The rule the local loaders apply to directories.
    pub async fn select_candidates(
        &self,
        candidates: &[String],
    ) -> Result<Option<Vec<(String, object_store::ObjectMeta)>>, StoreError> {
        for entry in candidates {
            let c = crate::datasets::Candidate::parse(entry);
            let keys = if c.is_pattern() {
                c.select(&self.list(c.dir).await?)
            } else {
                vec![entry.clone()]
            };
            let mut found = Vec::new();
            for key in keys {
                if let Some(meta) = self.head(&key).await? {
                    found.push((key, meta));
                }
            }
            if !found.is_empty() {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// SHA-256 (hex) of an object's bytes, streamed; `None` when it does not exist.
    pub async fn sha256(&self, rel: &str) -> Result<Option<String>, StoreError> {
        use sha2::{Digest, Sha256};
        let key = self.key(rel);
        let backend = |source| StoreError::Backend {
            key: key.to_string(),
            source,
        };
        let got = match self.inner.get(&key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(backend(source)),
        };
        let mut stream = got.into_stream();
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.try_next().await.map_err(backend)? {
            hasher.update(&chunk);
        }
        Ok(Some(hex::encode(hasher.finalize())))
    }

    /// Write a task's spec (`spec.json`).
    pub async fn put_spec(&self, spec: &TaskSpec) -> Result<(), StoreError> {
        let rel = layout::spec(&spec.sweep, &spec.id());
        self.put_bytes(&rel, Bytes::from(spec.canonical_json()))
            .await
    }

    /// Upload a task's features as a multipart upload in [`MULTIPART_CHUNK`] parts.
    /// Nothing is visible under the key until the upload completes; a failed
    /// upload is aborted.
    pub async fn put_features_multipart(
        &self,
        sweep: &str,
        id: &TaskId,
        data: Bytes,
    ) -> Result<(), StoreError> {
        let key = self.key(&layout::features(sweep, id));
        let backend = |source| StoreError::Backend {
            key: key.to_string(),
            source,
        };
        let upload = self.inner.put_multipart(&key).await.map_err(backend)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
        for chunk in data.chunks(MULTIPART_CHUNK) {
            if let Err(e) = writer.wait_for_capacity(4).await {
                let _ = writer.abort().await;
                return Err(backend(e));
            }
            writer.put(data.slice_ref(chunk));
        }
        match writer.finish().await {
            Ok(_) => Ok(()),
            Err(source) => Err(backend(source)),
        }
    }

    /// Upload a local file of features as a multipart upload, streaming it.
    pub async fn put_features_file(
        &self,
        sweep: &str,
        id: &TaskId,
        path: &std::path::Path,
    ) -> Result<(), StoreError> {
        self.put_file(&layout::features(sweep, id), path).await
    }

    /// Upload a local file to a root-relative key as a multipart upload,
    /// streaming it; nothing is visible until it completes.
    pub async fn put_file(&self, rel: &str, path: &std::path::Path) -> Result<(), StoreError> {
        use tokio::io::AsyncReadExt;
        let io = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        let key = self.key(rel);
        let backend = |source| StoreError::Backend {
            key: key.to_string(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let upload = self.inner.put_multipart(&key).await.map_err(backend)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
        let mut buf = vec![0u8; MULTIPART_CHUNK];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io(e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(4).await {
                // Abort so the store keeps no orphaned parts of this upload.
                let _ = writer.abort().await;
                return Err(backend(e));
            }
            writer.write(&buf[..n]);
        }
        // `finish` aborts the upload itself when completing it fails; parts
        // of a process killed mid-upload are left to the bucket's
        // incomplete-upload lifecycle rule (deploy/README.md).
        writer.finish().await.map(|_| ()).map_err(backend)
    }

    /// Write a task's `metrics.json`, the completion marker, create-only: the
    /// first attempt to finish wins and a later (stale) writer gets
    /// [`StoreError::Exists`] instead of overwriting a finished cell. Call it
    /// after everything else of the attempt is written.
    pub async fn put_metrics(
        &self,
        sweep: &str,
        id: &TaskId,
        metrics: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(metrics).expect("a JSON value always serializes");
        self.put_create(&layout::metrics(sweep, id), Bytes::from(body))
            .await
    }

    /// Write an object only if nothing is at its key yet.
    pub(crate) async fn put_create(&self, rel: &str, data: Bytes) -> Result<(), StoreError> {
        let key = self.key(rel);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .inner
            .put_opts(&key, PutPayload::from(data), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StoreError::Exists {
                key: key.to_string(),
            }),
            Err(source) => Err(StoreError::Backend {
                key: key.to_string(),
                source,
            }),
        }
    }

    /// After an attempt's `metrics.json` was created: move its features to
    /// the cell's `features.safetensors` (only the winner gets here, so no
    /// stale writer ever replaces a finished cell's features).
    pub async fn promote_features(
        &self,
        sweep: &str,
        id: &TaskId,
        attempt: &str,
    ) -> Result<(), StoreError> {
        let from = self.key(&layout::attempt_features(sweep, id, attempt));
        let to = self.key(&layout::features(sweep, id));
        let backend = |key: &ObjPath| {
            let key = key.to_string();
            move |source| StoreError::Backend { key, source }
        };
        self.inner.copy(&from, &to).await.map_err(backend(&from))?;
        self.inner.delete(&from).await.map_err(backend(&from))
    }

    /// A completed cell's leftovers: promote features an attempt wrote but
    /// did not promote (it stopped between `metrics.json` and the move), and
    /// delete every other attempt's objects and any staging file of an
    /// interrupted upload (`<name>#<n>` on file stores). Returns what was
    /// removed.
    pub async fn tidy_completed(&self, sweep: &str, id: &TaskId) -> Result<usize, StoreError> {
        let prefix = layout::task_dir(sweep, id);
        let keys = self.list(&prefix).await?;
        let has_final = keys
            .iter()
            .any(|k| layout::is_features_key(k) && !layout::is_attempt_key(k));
        let mut promoted = has_final;
        let mut removed = 0;
        for k in &keys {
            let stray = layout::is_attempt_key(k) || k.contains('#');
            if !stray {
                continue;
            }
            if !promoted && layout::is_attempt_key(k) && layout::is_features_key(k) {
                let to = self.key(&layout::features(sweep, id));
                let from = self.key(k);
                self.inner
                    .copy(&from, &to)
                    .await
                    .map_err(|source| StoreError::Backend {
                        key: from.to_string(),
                        source,
                    })?;
                promoted = true;
            }
            let key = self.key(k);
            match self.inner.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                Err(source) => {
                    return Err(StoreError::Backend {
                        key: key.to_string(),
                        source,
                    })
                }
            }
        }
        Ok(removed)
    }

    /// A task's `metrics.json` if it is a valid result of that task: it
    /// parses, has this build's schema and names the task. `None` when absent
    /// or invalid (an invalid one is logged; it never counts as complete).
    pub async fn read_valid_metrics(
        &self,
        sweep: &str,
        id: &TaskId,
    ) -> Result<Option<crate::metrics::CellMetrics>, StoreError> {
        let rel = layout::metrics(sweep, id);
        let Some(bytes) = self.get_bytes(&rel).await? else {
            return Ok(None);
        };
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|t| crate::metrics::CellMetrics::from_json(t).map_err(|e| e.to_string()));
        match parsed {
            Ok(m) if m.task_id == id.0 && m.spec.id() == *id => Ok(Some(m)),
            Ok(m) => {
                tracing::warn!(key = %rel, names = %m.task_id, "metrics.json belongs to another task: not a result of this one");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(key = %rel, error = %e, "metrics.json is not a valid result: it does not count as complete");
                Ok(None)
            }
        }
    }

    /// A task's metrics, `None` when the task is not complete.
    pub async fn get_metrics(
        &self,
        sweep: &str,
        id: &TaskId,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let rel = layout::metrics(sweep, id);
        let Some(bytes) = self.get_bytes(&rel).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Json { key: rel, source })
    }

    /// A task's spec as stored, `None` when absent.
    pub async fn get_spec(&self, sweep: &str, id: &TaskId) -> Result<Option<TaskSpec>, StoreError> {
        let rel = layout::spec(sweep, id);
        let Some(bytes) = self.get_bytes(&rel).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Json { key: rel, source })
    }

    /// Check that the sweep's results follow this build's spec schema, and
    /// mark a new sweep with it. A sweep with results but no marker was
    /// written before schemas were recorded (schema 1).
    pub async fn check_schema(&self, sweep: &str) -> Result<(), StoreError> {
        let rel = layout::schema(sweep);
        let found = match self.get_bytes(&rel).await? {
            Some(bytes) => {
                serde_json::from_slice::<SchemaMarker>(&bytes)
                    .map_err(|source| StoreError::Json {
                        key: rel.clone(),
                        source,
                    })?
                    .spec_schema
            }
            None if self.list(&layout::tasks(sweep)).await?.is_empty() => SPEC_SCHEMA,
            None => 1,
        };
        if found != SPEC_SCHEMA {
            return Err(StoreError::Schema {
                url: self.url.clone(),
                sweep: sweep.to_string(),
                found,
            });
        }
        let body = serde_json::to_vec(&SchemaMarker {
            spec_schema: SPEC_SCHEMA,
        })
        .expect("marker serializes");
        self.put_bytes(&rel, Bytes::from(body)).await
    }

    /// Record the task ids of the grid being served (the report lists other
    /// cells of the sweep separately).
    pub async fn put_grid_ids(&self, sweep: &str, ids: &[TaskId]) -> Result<(), StoreError> {
        let body = serde_json::to_vec(&GridIds {
            task_ids: ids.to_vec(),
        })
        .expect("ids serialize");
        self.put_bytes(&layout::grid_ids(sweep), Bytes::from(body))
            .await
    }

    /// The task ids of the grid last served, when recorded.
    pub async fn get_grid_ids(&self, sweep: &str) -> Result<Option<HashSet<TaskId>>, StoreError> {
        let rel = layout::grid_ids(sweep);
        let Some(bytes) = self.get_bytes(&rel).await? else {
            return Ok(None);
        };
        let ids: GridIds = serde_json::from_slice(&bytes)
            .map_err(|source| StoreError::Json { key: rel, source })?;
        Ok(Some(ids.task_ids.into_iter().collect()))
    }

    /// Whether a task is complete (its `metrics.json` exists).
    pub async fn is_complete(&self, sweep: &str, id: &TaskId) -> Result<bool, StoreError> {
        self.exists(&layout::metrics(sweep, id)).await
    }

    /// Every task of a sweep whose `metrics.json` exists: one listing, no per-task requests.
    pub async fn list_completed(&self, sweep: &str) -> Result<HashSet<TaskId>, StoreError> {
        let keys = self.list(&layout::tasks(sweep)).await?;
        Ok(keys
            .iter()
            .filter_map(|k| layout::completed_task(sweep, k))
            .collect())
    }
}

/// A URL as it may be shown (logs, errors, `/status`): user info and query
/// values removed, since either may hold credentials.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("");
                let _ = u.set_password(None);
            }
            let keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
            u.set_query(None);
            let mut shown = u.to_string();
            if !keys.is_empty() {
                // Values are elided; written by hand so the ellipsis is not percent-encoded.
                let q = keys
                    .iter()
                    .map(|k| format!("{k}=…"))
                    .collect::<Vec<_>>()
                    .join("&");
                shown.push('?');
                shown.push_str(&q);
            }
            shown
        }
        Err(_) => url.split(['?', '@']).next().unwrap_or_default().to_string(),
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::example_spec;

    /// The shared example spec in this module's sweep, varied by seed.
    fn spec(seed: u64) -> TaskSpec {
        TaskSpec {
            sweep: "sw".into(),
            seed,
            ..example_spec()
        }
    }

    async fn round_trip(store: Store) {
        let a = spec(0);
        let b = spec(1);
        for s in [&a, &b] {
            store.put_spec(s).await.unwrap();
        }
        // Three and a half parts: the multipart path, not a single put.
        let big = Bytes::from(
            (0..MULTIPART_CHUNK * 7 / 2)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>(),
        );
        store
            .put_features_multipart("sw", &a.id(), big.clone())
            .await
            .unwrap();
        assert!(
            store.list_completed("sw").await.unwrap().is_empty(),
            "no metrics yet: nothing complete"
        );
        store
            .put_metrics("sw", &a.id(), &serde_json::json!({"peak": 0.9}))
            .await
            .unwrap();
        let done = store.list_completed("sw").await.unwrap();
        assert_eq!(done, HashSet::from([a.id()]));
        assert_eq!(
            store.get_metrics("sw", &a.id()).await.unwrap().unwrap()["peak"],
            0.9
        );
        assert!(store.get_metrics("sw", &b.id()).await.unwrap().is_none());
        assert_eq!(store.get_spec("sw", &b.id()).await.unwrap().unwrap(), b);
        let got = store
            .get_bytes(&layout::features("sw", &a.id()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, big);
    }

    #[tokio::test]
    async fn file_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("runs").display());
        round_trip(Store::open(&url).unwrap()).await;
        assert!(
            dir.path().join("runs/sw/tasks").is_dir(),
            "layout is plain directories on disk"
        );
    }

    #[tokio::test]
    async fn memory_stores_are_shared_by_name() {
        round_trip(Store::open("memory://rt").unwrap()).await;
        let again = Store::open("memory://rt").unwrap();
        assert_eq!(again.list_completed("sw").await.unwrap().len(), 1);
        let other = Store::open("memory://other").unwrap();
        assert!(other.list_completed("sw").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn metrics_are_create_only_and_invalid_ones_do_not_count() {
        let store = Store::open("memory://create-only").unwrap();
        let id = TaskId("0123456789abcdef".into());
        store
            .put_metrics("s", &id, &serde_json::json!({"first": true}))
            .await
            .unwrap();
        let again = store
            .put_metrics("s", &id, &serde_json::json!({"second": true}))
            .await
            .unwrap_err();
        assert!(matches!(again, StoreError::Exists { .. }), "{again}");
        assert_eq!(
            store.get_metrics("s", &id).await.unwrap().unwrap()["first"],
            true
        );
        // `{"first": true}` is not a cell's metrics: not a valid result.
        assert!(store.read_valid_metrics("s", &id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn attempts_are_promoted_and_leftovers_tidied() {
        let store = Store::open("memory://attempts").unwrap();
        let id = TaskId("0123456789abcdef".into());
        for a in ["1-x", "2-y"] {
            store
                .put_bytes(
                    &layout::attempt_features("s", &id, a),
                    Bytes::from(a.to_string()),
                )
                .await
                .unwrap();
        }
        store.promote_features("s", &id, "2-y").await.unwrap();
        let got = store
            .get_bytes(&layout::features("s", &id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], b"2-y");
        assert_eq!(
            store.tidy_completed("s", &id).await.unwrap(),
            1,
            "the loser's attempt"
        );
        let left = store.list(&layout::task_dir("s", &id)).await.unwrap();
        assert_eq!(left, vec![layout::features("s", &id)]);
    }

    #[tokio::test]
    async fn a_second_coordinator_is_fenced_until_the_first_goes_stale() {
        let store = Store::open("memory://lock").unwrap();
        let lock = |instance: &str, at: u64| CoordinatorLock {
            instance: instance.into(),
            host: format!("host-{instance}"),
            pid: 1,
            refreshed_unix_ms: at,
        };
        store.acquire_lock("s", &lock("a", 1_000)).await.unwrap();
        let err = store
            .acquire_lock("s", &lock("b", 2_000))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
        // The first keeps refreshing; once it stops, the second takes over.
        store.refresh_lock("s", &lock("a", 10_000)).await.unwrap();
        assert!(store.acquire_lock("s", &lock("b", 20_000)).await.is_err());
        store
            .acquire_lock("s", &lock("b", 10_000 + LOCK_STALE_MS + 1))
            .await
            .unwrap();
        // The first finds it has been fenced out.
        let fenced = store
            .refresh_lock("s", &lock("a", 60_000))
            .await
            .unwrap_err();
        assert!(matches!(fenced, StoreError::Fenced { .. }));
    }

    #[tokio::test]
    async fn a_lock_left_by_an_exited_process_on_this_host_is_taken_over_at_once() {
        let store = Store::open("memory://lock-dead").unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let lock = |instance: &str, host: &str, pid: u32| CoordinatorLock {
            instance: instance.into(),
            host: host.into(),
            pid,
            refreshed_unix_ms: 1_000,
        };
        store
            .acquire_lock("s", &lock("dead", "h", dead_pid))
            .await
            .unwrap();
        // A fresh lock from another host is respected...
        let other_host = store.acquire_lock("s", &lock("b", "elsewhere", 7)).await;
        assert!(matches!(other_host, Err(StoreError::Fenced { .. })));
        // ...one from this host whose process is alive (this test) too...
        let me = std::process::id();
        store
            .release_lock("s", &lock("dead", "h", dead_pid))
            .await
            .unwrap();
        store
            .acquire_lock("s", &lock("live", "h", me))
            .await
            .unwrap();
        let live = store.acquire_lock("s", &lock("c", "h", 1)).await;
        assert!(matches!(live, Err(StoreError::Fenced { .. })));
        // ...but a process that has exited holds nothing, and an earlier life
        // of the same pid (a restarted container's pid 1) neither.
        store
            .release_lock("s", &lock("live", "h", me))
            .await
            .unwrap();
        store
            .acquire_lock("s", &lock("dead", "h", dead_pid))
            .await
            .unwrap();
        store
            .acquire_lock("s", &lock("new", "h", me))
            .await
            .unwrap();
        store
            .acquire_lock("s", &lock("newer", "h", me))
            .await
            .unwrap();
        assert_eq!(
            store.read_lock("s").await.unwrap().unwrap().instance,
            "newer"
        );
    }

    #[tokio::test]
    async fn stores_of_another_schema_are_refused() {
        let store = Store::open("memory://schema").unwrap();
        store.check_schema("new").await.unwrap();
        store.check_schema("new").await.unwrap();
        // Results without a marker: written by the previous layout.
        store
            .put_bytes("old/tasks/0123/metrics.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let err = store.check_schema("old").await.unwrap_err().to_string();
        assert!(
            err.contains("spec schema 1") && err.contains("new sweep name"),
            "{err}"
        );
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            redacted_url("s3://key:secret@bucket/p?endpoint=http://x&token=abc"),
            "s3://bucket/p?endpoint=…&token=…"
        );
        assert_eq!(redacted_url("file:///runs"), "file:///runs");
        assert_eq!(redacted_url("not a url?secret=1"), "not a url");
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(Store::open("gs://x")
            .unwrap_err()
            .to_string()
            .contains("expected a file://"));
        assert!(Store::open("s3://b/p?colour=red")
            .unwrap_err()
            .to_string()
            .contains("unknown option `colour`"));
        let s3 = Store::open(
            "s3://bucket/pre/fix?endpoint=http://127.0.0.1:9&allow_http=true&region=us-east-1",
        )
        .unwrap();
        assert_eq!(s3.key("sw/tasks").to_string(), "pre/fix/sw/tasks");
    }
}
