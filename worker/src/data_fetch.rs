//! Remote data roots made local. Before a dataset is loaded, the worker copies
//! exactly the files its manifest needs (the first `source.files` entry present
//! at the root: one file, or every shard a wildcard entry matches) to local
//! disk; the loaders then read them from [`DataRoot::Local`].
//!
//! - Object stores (`s3://`, `memory://`, any URL [`Store::open`] accepts, with
//!   its conventions: `AWS_*` environment, `?endpoint=…&path_style=true`): the
//!   copies live in the data cache under a key derived from the root URL and
//!   each object's path, size and ETag, are written to a temporary directory
//!   and renamed into place (never half there), and are reused by later tasks
//!   as long as the objects are unchanged.
//! - HF Hub dataset repositories (`hf://datasets/<owner>/<name>[@revision]`):
//!   files go through the Hub's own cache (`datasets--owner--name/snapshots/…`,
//!   shared with Python's `huggingface_hub`), whose snapshot directory is the
//!   local root. A cached file is used without the network; with
//!   `HF_HUB_OFFLINE=1` (or the worker's offline switch) only the cache is read.
//! - A local root that lacks a dataset whose manifest names a Hub repository
//!   (`source.hub_repo`, e.g. IMDb's `stanfordnlp/imdb`) falls back to that
//!   repository, as the paper's code loads it from the Hub.
//!
//! Data cache directory: the explicit one, else `CD_DATA_CACHE`, else
//! `$XDG_CACHE_HOME/concept-depth/data`, else `~/.cache/concept-depth/data`.

use crate::engine::hub;
use cd_common::datasets::{self, Candidate, DataRoot, DatasetError, DatasetManifest};
use cd_common::storage::{Store, StoreError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where copies go and whether the network may be used.
#[derive(Debug, Clone, Default)]
pub(crate) struct FetchOptions {
    /// Data cache for object-store copies (see the module docs for the default).
    pub cache_dir: Option<PathBuf>,
    /// The HF Hub cache (the directory holding `datasets--*`); default as for models.
    pub hub_cache: Option<PathBuf>,
    /// Read Hub files from the cache only (`HF_HUB_OFFLINE=1` has the same effect).
    pub offline: bool,
}

/// Why a data root could not be made local. Messages name the URL or key and
/// what was expected there.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The dataset name or the root itself is invalid.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// None of the manifest's files exists at the root.
    #[error("dataset `{dataset}`: none of its files exists at {root}; looked for {tried}{detail}")]
    NotFound {
        /// Registry name.
        dataset: String,
        /// The root as written.
        root: String,
        /// The manifest's candidate paths.
        tried: String,
        /// Where else was looked, and how to fix it.
        detail: String,
    },
    /// The object store failed (or refused the URL).
    #[error("data root {root}: {source}")]
    Store {
        /// The root as written.
        root: String,
        /// The storage error, naming the key.
        source: StoreError,
    },
    /// An object changed size while it was copied, or the copy is short.
    #[error("data root {root}: `{key}`: expected {expected} bytes, got {got}")]
    Size {
        /// The root as written.
        root: String,
        /// Root-relative key.
        key: String,
        /// Size the store announced.
        expected: u64,
        /// Size received.
        got: u64,
    },
    /// The Hub could not be reached or refused a request.
    #[error("hf://datasets/{repo}@{revision}: {message}")]
    Hub {
        /// `owner/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
        /// What failed.
        message: String,
    },
    /// The local cache could not be written.
    #[error("data cache {}: {source}", path.display())]
    Cache {
        /// The file or directory involved.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl FetchError {
    /// Whether retrying cannot help: a bad name or URL, or files that are not
    /// there. Network and disk failures may pass.
    pub(crate) fn is_permanent(&self) -> bool {
        match self {
            FetchError::Dataset(_) | FetchError::NotFound { .. } => true,
            FetchError::Store { source, .. } => matches!(source, StoreError::Url { .. }),
            FetchError::Size { .. } | FetchError::Hub { .. } | FetchError::Cache { .. } => false,
        }
    }
}

/// The data cache directory the conventions in the module docs pick.
pub(crate) fn data_cache_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(p) = var("CD_DATA_CACHE") {
        return PathBuf::from(p);
    }
    let base = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("concept-depth").join("data")
}

/// A local root from which `dataset` loads: `root` itself when it is local and
/// holds the files (or the dataset is generated), otherwise a local copy of
/// the files it needs. Object-store calls block on `runtime`; call this from
/// a plain thread, not from inside the runtime.
pub fn resolve(
    root: &DataRoot,
    dataset: &str,
    opts: &FetchOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<DataRoot, FetchError> {
    let (manifest, _) = datasets::find(dataset)?;
    resolve_for(root, manifest, opts, runtime)
}

/// [`resolve`] for a manifest already found (a resolved task's).
pub(crate) fn resolve_for(
    root: &DataRoot,
    manifest: &DatasetManifest,
    opts: &FetchOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<DataRoot, FetchError> {
    let Some(spec) = &manifest.source else {
        // Generated: no files to fetch.
        return Ok(root.clone());
    };
    let not_found = |detail: String| FetchError::NotFound {
        dataset: manifest.name.clone(),
        root: root.to_string(),
        tried: spec.files.join(", "),
        detail,
    };
    match root {
        DataRoot::Local(dir) => {
            if datasets::find_source_files(dir, &spec.files)?.is_some() {
                return Ok(root.clone());
            }
            let Some(repo) = &spec.hub_repo else {
                // The loader reports the miss with its own hint.
                return Ok(root.clone());
            };
            tracing::info!(dataset = %manifest.name, %repo, "not under the local data root: trying the HF Hub");
            match hub_files(repo, None, &spec.files, opts)? {
                Some(snapshot) => Ok(DataRoot::Local(snapshot)),
                None => Err(not_found(format!(
                    ", nor in the HF dataset {repo} ({})",
                    hub_where(repo, "main", opts)
                ))),
            }
        }
        DataRoot::ObjectStore(url) => {
            let store = Store::open(url.as_str()).map_err(|source| FetchError::Store {
                root: root.to_string(),
                source,
            })?;
            runtime
                .block_on(store_files(&store, root, &manifest.name, &spec.files, opts))?
                .map(DataRoot::Local)
                .ok_or_else(|| not_found(String::new()))
        }
        DataRoot::HfHub { repo, revision } => {
            let rev = revision.as_deref().unwrap_or("main");
            hub_files(repo, revision.as_deref(), &spec.files, opts)?
                .map(DataRoot::Local)
                .ok_or_else(|| not_found(format!(" ({})", hub_where(repo, rev, opts))))
        }
    }
}

/// Copy the selected objects into the data cache (or reuse an earlier copy of
/// the same versions); `None` when no candidate exists in the store.
async fn store_files(
    store: &Store,
    root: &DataRoot,
    dataset: &str,
    files: &[String],
    opts: &FetchOptions,
) -> Result<Option<PathBuf>, FetchError> {
    let found = store
        .select_candidates(files)
        .await
        .map_err(|source| FetchError::Store {
            root: root.to_string(),
            source,
        })?;
    let Some(found) = found else {
        return Ok(None);
    };
    // Keyed by what was read: the root, and each object's path, size and
    // version. A changed object gets a new copy; an unchanged one is reused.
    let mut key = Sha256::new();
    key.update(store.url().as_bytes());
    for (rel, meta) in &found {
        let version = meta
            .e_tag
            .clone()
            .unwrap_or_else(|| meta.last_modified.to_rfc3339());
        key.update(format!("\0{rel}\0{}\0{version}", meta.size).as_bytes());
    }
    let cache = data_cache_dir(opts.cache_dir.as_deref());
    let dest = cache.join(&hex::encode(key.finalize())[..32]);
    if dest.is_dir() {
        tracing::info!(%dataset, root = %root, copy = %dest.display(), "reusing the cached copy");
        return Ok(Some(dest));
    }
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Cache { path, source }
    };
    std::fs::create_dir_all(&cache).map_err(cache_err(&cache))?;
    remove_stale_partials(&cache);
    let tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempdir_in(&cache)
        .map_err(cache_err(&cache))?;
    for (rel, meta) in &found {
        let bytes = store
            .get_bytes(rel)
            .await
            .map_err(|source| FetchError::Store {
                root: root.to_string(),
                source,
            })?
            .ok_or_else(|| FetchError::Size {
                root: root.to_string(),
                key: rel.clone(),
                expected: meta.size,
                got: 0,
            })?;
        if bytes.len() as u64 != meta.size {
            return Err(FetchError::Size {
                root: root.to_string(),
                key: rel.clone(),
                expected: meta.size,
                got: bytes.len() as u64,
            });
        }
        let path = tmp.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(cache_err(parent))?;
        }
        std::fs::write(&path, &bytes).map_err(cache_err(&path))?;
        tracing::info!(%dataset, key = %rel, bytes = bytes.len(), "copied from the data root");
    }
    // The whole directory appears at once; if another worker on this machine
    // renamed its identical copy first, keep that one.
    let staged = tmp.keep();
    if let Err(e) = std::fs::rename(&staged, &dest) {
        let _ = std::fs::remove_dir_all(&staged);
        if !dest.is_dir() {
            return Err(FetchError::Cache {
                path: dest,
                source: e,
            });
        }
    }
    Ok(Some(dest))
}

/// Staging directories of copies that never finished (a worker killed
/// mid-copy) are removed once they are an hour old: no live copy takes that long.
fn remove_stale_partials(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if stale && entry.file_name().to_string_lossy().starts_with(".partial-") {
            tracing::info!(dir = %entry.path().display(), "removing an unfinished copy");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether an env var holds a truthy value (`1`, `true`, `yes`, `on`).
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// What an offline lookup expects, for messages.
fn hub_where(repo: &str, revision: &str, opts: &FetchOptions) -> String {
    let cache = hub::cache_dir(opts.hub_cache.as_deref());
    let folder = format!("datasets--{}", repo.replace('/', "--"));
    let mode = if opts.offline || env_flag("HF_HUB_OFFLINE") {
        "offline: looked only in the Hub cache"
    } else {
        "not in the repository listing nor in the Hub cache"
    };
    format!(
        "{mode}: expected {}/{folder}/snapshots/<commit>/<file> with refs/{revision} naming the commit",
        cache.display()
    )
}

/// The snapshot directory of `repo` in the Hub cache holding the first
/// candidate, or `None`.
fn hub_cached(
    cache: &Path,
    repo: &str,
    revision: &str,
    files: &[String],
) -> Result<Option<PathBuf>, FetchError> {
    let folder = cache.join(format!("datasets--{}", repo.replace('/', "--")));
    // A branch or tag names its commit in refs/; a commit hash is the snapshot's name.
    let commit = std::fs::read_to_string(folder.join("refs").join(revision))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let snapshot = folder.join("snapshots").join(commit);
    if !snapshot.is_dir() {
        return Ok(None);
    }
    Ok(datasets::find_source_files(&snapshot, files)?.map(|_| snapshot))
}

/// Resolve the first candidate of a Hub dataset repository to its snapshot
/// directory: from the cache when present, else by listing the repository
/// and downloading the matching files (unless offline).
fn hub_files(
    repo: &str,
    revision: Option<&str>,
    files: &[String],
    opts: &FetchOptions,
) -> Result<Option<PathBuf>, FetchError> {
    use hf_hub::{Cache, Repo, RepoType};
    let rev = revision.unwrap_or("main").to_string();
    let cache_dir = hub::cache_dir(opts.hub_cache.as_deref());
    if let Some(snapshot) = hub_cached(&cache_dir, repo, &rev, files)? {
        tracing::info!(%repo, revision = %rev, snapshot = %snapshot.display(), "dataset files from the Hub cache");
        return Ok(Some(snapshot));
    }
    if opts.offline || env_flag("HF_HUB_OFFLINE") {
        return Ok(None);
    }
    let hub_err = |message: String| FetchError::Hub {
        repo: repo.to_string(),
        revision: rev.clone(),
        message,
    };
    let cache = Cache::new(cache_dir.clone());
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| cache.token());
    let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(cache)
        .with_token(token)
        .with_progress(false);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder
        .build()
        .map_err(|e| hub_err(format!("cannot set up the Hub client: {e}")))?
        .repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Dataset,
            rev.clone(),
        ));
    let listing: Vec<String> = api
        .info()
        .map_err(|e| hub_err(format!("cannot list the repository: {e}")))?
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .collect();
    let Some(selected) = files
        .iter()
        .map(|entry| Candidate::parse(entry).select(&listing))
        .find(|hits| !hits.is_empty())
    else {
        return Ok(None);
    };
    let mut snapshot = None;
    for file in &selected {
        let local = api
            .get(file)
            .map_err(|e| hub_err(format!("cannot download `{file}`: {e}")))?;
        tracing::info!(%repo, %file, "downloaded from the Hub");
        // `<snapshot>/<file>`: strip the file's own components.
        let depth = file.split('/').count();
        snapshot = local.ancestors().nth(depth).map(Path::to_path_buf);
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    fn sarcasm_lines(n: usize) -> String {
        (0..n)
            .map(|i| format!("{{\"headline\": \"h{i}\", \"is_sarcastic\": {}}}\n", i % 2))
            .collect()
    }

    #[test]
    fn memory_root_is_copied_once_and_reused_until_the_object_changes() {
        let rt = runtime();
        let store = Store::open("memory://data-fetch-test").unwrap();
        rt.block_on(store.put_bytes("cd/sarcasm.json", Bytes::from(sarcasm_lines(10))))
            .unwrap();
        // A later candidate that must not be fetched: the first present wins.
        rt.block_on(store.put_bytes(
            "Sarcasm_Headlines_Dataset.json",
            Bytes::from(sarcasm_lines(4)),
        ))
        .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let opts = FetchOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            ..FetchOptions::default()
        };
        let root = DataRoot::parse("memory://data-fetch-test").unwrap();
        let local = resolve(&root, "sarcasm", &opts, rt.handle()).unwrap();
        let DataRoot::Local(dir) = &local else {
            panic!("expected a local root, got {local}")
        };
        assert!(dir.starts_with(cache.path()));
        assert!(dir.join("cd/sarcasm.json").is_file());
        assert!(
            !dir.join("Sarcasm_Headlines_Dataset.json").exists(),
            "only the file the loader reads is copied"
        );
        let d = datasets::load_binary("sarcasm", &local, &Default::default()).unwrap();
        assert_eq!(d.class_counts(), [5, 5]);

        // Same object: same copy, nothing rewritten.
        let marker = dir.join("cd/marker");
        std::fs::write(&marker, "x").unwrap();
        assert_eq!(
            resolve(&root, "sarcasm", &opts, rt.handle()).unwrap(),
            local
        );
        assert!(marker.exists());

        // A new version of the object: a new copy with the new content.
        rt.block_on(store.put_bytes("cd/sarcasm.json", Bytes::from(sarcasm_lines(6))))
            .unwrap();
        let fresh = resolve(&root, "sarcasm", &opts, rt.handle()).unwrap();
        assert_ne!(fresh, local);
        let d = datasets::load_binary("sarcasm", &fresh, &Default::default()).unwrap();
        assert_eq!(d.class_counts(), [3, 3]);
        // An unfinished copy from a killed worker: removed once stale, not before.
        let stale = cache.path().join(".partial-killed");
        let fresh = cache.path().join(".partial-running");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::create_dir_all(&fresh).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        rt.block_on(store.put_bytes("cd/sarcasm.json", Bytes::from(sarcasm_lines(8))))
            .unwrap();
        resolve(&root, "sarcasm", &opts, rt.handle()).unwrap();
        assert!(!stale.exists() && fresh.exists());
        std::fs::remove_dir(&fresh).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(cache.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "no staging directory left behind");
    }

    #[test]
    fn missing_files_name_the_root_and_the_candidates() {
        let rt = runtime();
        let cache = tempfile::tempdir().unwrap();
        let opts = FetchOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            ..FetchOptions::default()
        };
        let root = DataRoot::parse("memory://data-fetch-empty").unwrap();
        let err = resolve(&root, "cities", &opts, rt.handle()).unwrap_err();
        let msg = err.to_string();
        assert!(err.is_permanent(), "{msg}");
        assert!(
            msg.contains("memory://data-fetch-empty") && msg.contains("cd/cities.csv"),
            "{msg}"
        );
        // Generated datasets need no files, whatever the root.
        assert_eq!(
            resolve(&root, "coinflip_gen", &opts, rt.handle()).unwrap(),
            root
        );
        // A scheme the store does not speak is refused up front, naming it.
        let gs = DataRoot::parse("gs://bucket/data").unwrap();
        let err = resolve(&gs, "cities", &opts, rt.handle()).unwrap_err();
        assert!(err.is_permanent() && err.to_string().contains("gs://bucket/data"));
    }

    #[test]
    fn file_url_and_local_roots_are_read_in_place() {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sarcasm.json"), sarcasm_lines(4)).unwrap();
        let opts = FetchOptions {
            cache_dir: Some(dir.path().join("cache")),
            ..FetchOptions::default()
        };
        let url = format!("file://{}", dir.path().display());
        let root = DataRoot::parse(&url).unwrap();
        let local = resolve(&root, "sarcasm", &opts, rt.handle()).unwrap();
        assert_eq!(local, DataRoot::Local(dir.path().to_path_buf()));
        assert!(!dir.path().join("cache").exists(), "nothing copied");
        let d = datasets::load_binary("sarcasm", &local, &Default::default()).unwrap();
        assert_eq!(d.class_counts(), [2, 2]);
    }
}
