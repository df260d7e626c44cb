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
//! Layout under the URL's root:
//! ```text
//! <sweep>/tasks/<task-id>/spec.json              the TaskSpec (canonical JSON)
//! <sweep>/tasks/<task-id>/features.safetensors   [N, L, d] features (optional, multipart)
//! <sweep>/tasks/<task-id>/mc_scores.safetensors  per-item candidate scores (multiple choice)
//! <sweep>/tasks/<task-id>/metrics.json           written LAST: its presence = task complete
//! <sweep>/state/failures/<task-id>.json          failure history kept by the coordinator
//! <sweep>/state/schema.json                      the spec schema the sweep's ids follow
//! <sweep>/state/grid.json                        task ids of the grid last served
//! <sweep>/report/...                             tables, figures, index.html
//! ```
//!
//! Task ids depend on the spec schema ([`crate::spec::SPEC_SCHEMA`]): a store
//! whose sweep holds results of another schema is refused
//! ([`Store::check_schema`]) rather than silently recomputed beside them.

use crate::spec::{TaskId, TaskSpec, SPEC_SCHEMA};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

/// Size of each part of a multipart upload (S3 requires ≥ 5 MiB except the last).
pub const MULTIPART_CHUNK: usize = 16 << 20;

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
pub struct GridIds {
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

    /// `<sweep>/tasks/<id>/<file>` relative to the root.
    pub fn task_file(sweep: &str, id: &TaskId, file: &str) -> String {
        format!("{sweep}/tasks/{id}/{file}")
    }

    /// Relative key of a task's features (`features.safetensors`).
    pub fn features_rel(sweep: &str, id: &TaskId) -> String {
        Store::task_file(sweep, id, "features.safetensors")
    }

    /// Relative key of a multiple-choice task's per-item scores (`mc_scores.safetensors`).
    pub fn mc_scores_rel(sweep: &str, id: &TaskId) -> String {
        Store::task_file(sweep, id, "mc_scores.safetensors")
    }

    /// Relative key of a task's metrics (the completion marker).
    pub fn metrics_rel(sweep: &str, id: &TaskId) -> String {
        Store::task_file(sweep, id, "metrics.json")
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
        let rel = Store::task_file(&spec.sweep, &spec.id(), "spec.json");
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
        let key = self.key(&Store::features_rel(sweep, id));
        let backend = |source| StoreError::Backend {
            key: key.to_string(),
            source,
        };
        let upload = self.inner.put_multipart(&key).await.map_err(backend)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
        for chunk in data.chunks(MULTIPART_CHUNK) {
            writer.wait_for_capacity(4).await.map_err(backend)?;
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
        self.put_file(&Store::features_rel(sweep, id), path).await
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
            writer.wait_for_capacity(4).await.map_err(backend)?;
            writer.write(&buf[..n]);
        }
        writer.finish().await.map(|_| ()).map_err(backend)
    }

    /// Write a task's `metrics.json`: the completion marker, so call it last.
    pub async fn put_metrics(
        &self,
        sweep: &str,
        id: &TaskId,
        metrics: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(metrics).expect("a JSON value always serializes");
        self.put_bytes(&Store::metrics_rel(sweep, id), Bytes::from(body))
            .await
    }

    /// A task's metrics, `None` when the task is not complete.
    pub async fn get_metrics(
        &self,
        sweep: &str,
        id: &TaskId,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let rel = Store::metrics_rel(sweep, id);
        let Some(bytes) = self.get_bytes(&rel).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Json { key: rel, source })
    }

    /// A task's spec as stored, `None` when absent.
    pub async fn get_spec(&self, sweep: &str, id: &TaskId) -> Result<Option<TaskSpec>, StoreError> {
        let rel = Store::task_file(sweep, id, "spec.json");
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
        let rel = format!("{sweep}/state/schema.json");
        let found = match self.get_bytes(&rel).await? {
            Some(bytes) => {
                serde_json::from_slice::<SchemaMarker>(&bytes)
                    .map_err(|source| StoreError::Json {
                        key: rel.clone(),
                        source,
                    })?
                    .spec_schema
            }
            None if self.list(&format!("{sweep}/tasks")).await?.is_empty() => SPEC_SCHEMA,
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
        self.put_bytes(&format!("{sweep}/state/grid.json"), Bytes::from(body))
            .await
    }

    /// The task ids of the grid last served, when recorded.
    pub async fn get_grid_ids(&self, sweep: &str) -> Result<Option<HashSet<TaskId>>, StoreError> {
        let rel = format!("{sweep}/state/grid.json");
        let Some(bytes) = self.get_bytes(&rel).await? else {
            return Ok(None);
        };
        let ids: GridIds = serde_json::from_slice(&bytes)
            .map_err(|source| StoreError::Json { key: rel, source })?;
        Ok(Some(ids.task_ids.into_iter().collect()))
    }

    /// Whether a task is complete (its `metrics.json` exists).
    pub async fn is_complete(&self, sweep: &str, id: &TaskId) -> Result<bool, StoreError> {
        self.exists(&Store::metrics_rel(sweep, id)).await
    }

    /// Every task of a sweep whose `metrics.json` exists: one listing, no per-task requests.
    pub async fn list_completed(&self, sweep: &str) -> Result<HashSet<TaskId>, StoreError> {
        let keys = self.list(&format!("{sweep}/tasks")).await?;
        Ok(keys
            .iter()
            .filter_map(|k| {
                let rest = k.strip_prefix(&format!("{sweep}/tasks/"))?;
                let (id, file) = rest.split_once('/')?;
                (file == "metrics.json").then(|| TaskId(id.to_string()))
            })
            .collect())
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
            .get_bytes(&Store::task_file("sw", &a.id(), "features.safetensors"))
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
