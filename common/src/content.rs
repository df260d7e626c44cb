//! Content identities: what a model's weights and a dataset's files *are*,
//! independent of where they lie, for task ids (`crate::spec`).
//!
//! - A local model directory is the SHA-256 of a listing `name<TAB>sha256\n`
//!   (sorted by name) of the files that determine its forward pass:
//!   `config.json`, `tokenizer.json`, `model.safetensors.index.json` and every
//!   `*.safetensors`. A GGUF file is the SHA-256 of the file.
//! - A dataset is the SHA-256 of its manifest (as parsed, so comments do not
//!   count; generated datasets add their generator's version) and of each raw
//!   file it reads, in load order.
//!
//! Object-store data roots (`s3://…`) are read through the store: the same
//! candidate rule as the loaders, each object streamed through SHA-256.
//!
//! Hashing a 140 GB model takes minutes, so file hashes are cached on disk
//! keyed by (canonical path, size, modification time): one small file per
//! entry under `$CD_HASH_CACHE` (default `~/.cache/concept-depth/hashes`),
//! written by rename so concurrent processes never read a torn entry. A cache
//! that cannot be written only costs time.

use crate::datasets::{self, DataRoot, DatasetManifest};
use crate::spec::DatasetIdentity;
use crate::storage::Store;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A content hash that could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A model directory without the files a model needs.
    #[error("{path}: {message}")]
    NotAModel {
        /// The directory.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// The dataset's files are neither readable here nor pinned.
    #[error("{0}")]
    Unresolved(String),
    /// The dataset itself is unknown or unreadable.
    #[error(transparent)]
    Dataset(#[from] datasets::DatasetError),
    /// An object-store data root could not be read.
    #[error("data root {root}: {message}")]
    Store {
        /// The root URL.
        root: String,
        /// What failed.
        message: String,
    },
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CD_HASH_CACHE") {
        return Some(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache/concept-depth/hashes"))
}

fn cache_key(path: &Path, meta: &std::fs::Metadata) -> Option<String> {
    let canonical = std::fs::canonicalize(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    let key = format!("{}\0{}\0{mtime}", canonical.display(), meta.len());
    Some(hex::encode(Sha256::digest(key.as_bytes())))
}

/// SHA-256 (lower-case hex) of a file's bytes, from the cache when the file
/// has not changed since it was last hashed.
pub(crate) fn file_sha256(path: &Path) -> Result<String, ContentError> {
    let io = |source| ContentError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let cached = cache_key(path, &meta);
    if let Some(hex) = cached.as_deref().and_then(cache_get) {
        return Ok(hex);
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hex = hex::encode(hasher.finalize());
    if let Some(key) = cached {
        cache_put(&key, &hex);
    }
    Ok(hex)
}

/// The files of a model directory that decide its forward pass, sorted.
fn model_files(dir: &Path) -> Result<Vec<String>, ContentError> {
    let listing = std::fs::read_dir(dir).map_err(|source| ContentError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|source| ContentError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let wanted = name == "config.json"
            || name == "tokenizer.json"
            || name == "model.safetensors.index.json"
            || name.ends_with(".safetensors");
        if wanted && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    for needed in ["config.json", "tokenizer.json"] {
        if !names.iter().any(|n| n == needed) {
            return Err(ContentError::NotAModel {
                path: dir.to_path_buf(),
                message: format!("no {needed}: not an HF-format model directory"),
            });
        }
    }
    if !names.iter().any(|n| n.ends_with(".safetensors")) {
        return Err(ContentError::NotAModel {
            path: dir.to_path_buf(),
            message: "no *.safetensors weights".into(),
        });
    }
    Ok(names)
}

/// SHA-256 of a local model: a GGUF file's bytes, or a directory's listing of
/// its files' hashes (see the module docs).
pub fn model_sha256(path: &Path) -> Result<String, ContentError> {
    if !path.is_dir() {
        return file_sha256(path);
    }
    let mut listing = String::new();
    for name in model_files(path)? {
        let sha = file_sha256(&path.join(&name))?;
        listing.push_str(&format!("{name}\t{sha}\n"));
    }
    Ok(hex::encode(Sha256::digest(listing.as_bytes())))
}

/// Version of the built-in generators' output; part of a generated
/// dataset's identity, so bump it whenever a generator's items change.
pub(crate) const GENERATOR_VERSION: u32 = 2;

/// SHA-256 of a manifest as parsed (generated datasets: plus [`GENERATOR_VERSION`]).
pub fn manifest_sha256(manifest: &DatasetManifest) -> String {
    let mut text = serde_json::to_string(manifest).expect("manifests always serialize");
    if manifest.generator.is_some() {
        text.push_str(&format!("\0generator-version={GENERATOR_VERSION}"));
    }
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The identity of a dataset named in a grid (`name` may carry `/param`).
///
/// Raw files are hashed where the data root is a readable local directory
/// that holds them; otherwise `pins` (the grid's `[datasets.NAME] sha256`)
/// and then the manifest's own `expected_sha256` stand for them. Workers
/// check the files they load against the result.
pub fn dataset_identity(
    name: &str,
    data_root: &str,
    pins: Option<&[String]>,
) -> Result<DatasetIdentity, ContentError> {
    let (manifest, _) = datasets::find(name)?;
    let manifest_sha256 = manifest_sha256(manifest);
    let Some(source) = &manifest.source else {
        return Ok(DatasetIdentity {
            manifest_sha256,
            files_sha256: Vec::new(),
        });
    };
    let mut unreadable = String::new();
    match DataRoot::parse(data_root)? {
        DataRoot::Local(dir) => {
            if let Some(found) = datasets::find_source_files(&dir, &source.files)? {
                let files_sha256 = found
                    .iter()
                    .map(|rel| file_sha256(&dir.join(rel)))
                    .collect::<Result<_, _>>()?;
                return Ok(DatasetIdentity {
                    manifest_sha256,
                    files_sha256,
                });
            }
        }
        DataRoot::ObjectStore(url) => match object_hashes(url.as_str(), &source.files) {
            Ok(Some(files_sha256)) => {
                return Ok(DatasetIdentity {
                    manifest_sha256,
                    files_sha256,
                })
            }
            Ok(None) => {}
            // An unreachable store leaves the pins to stand for the content.
            Err(e) => unreadable = format!(" ({e})"),
        },
        DataRoot::HfHub { .. } => {}
    }
    let files_sha256 = match (pins, &source.expected_sha256) {
        (Some(pins), _) => pins.iter().map(|p| p.to_ascii_lowercase()).collect(),
        (None, Some(expected)) => vec![expected.to_ascii_lowercase()],
        (None, None) => {
            return Err(ContentError::Unresolved(format!(
                "dataset `{}`: its files are not pinned by its manifest and none of {} is readable under data_root `{data_root}` here{unreadable}; \
                 run the coordinator where the data root is readable, or pin the files' content in the grid: \
                 [datasets.{}] sha256 = [\"<sha256sum of each file, in load order>\"]",
                manifest.name,
                source.files.join(", "),
                manifest.name
            )))
        }
    };
    Ok(DatasetIdentity {
        manifest_sha256,
        files_sha256,
    })
}

/// SHA-256 of the files a dataset reads from an object store (the first
/// candidate present), each cached by (URL, key, size, version); `None` when
/// no candidate exists there. Runs on a thread of its own so that it can be
/// called from synchronous code inside or outside an async runtime.
fn object_hashes(url: &str, candidates: &[String]) -> Result<Option<Vec<String>>, ContentError> {
    let (url, candidates) = (url.to_string(), candidates.to_vec());
    let err = {
        let root = url.clone();
        move |message: String| ContentError::Store {
            root: root.clone(),
            message,
        }
    };
    let work = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let store = Store::open(&url).map_err(|e| e.to_string())?;
            let Some(found) = store
                .select_candidates(&candidates)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(None);
            };
            let mut hashes = Vec::with_capacity(found.len());
            for (key, meta) in found {
                let version = meta
                    .e_tag
                    .clone()
                    .unwrap_or_else(|| meta.last_modified.to_rfc3339());
                let id = format!("object\0{url}\0{key}\0{}\0{version}", meta.size);
                let entry = hex::encode(Sha256::digest(id.as_bytes()));
                if let Some(hex) = cache_get(&entry) {
                    hashes.push(hex);
                    continue;
                }
                let hex = store
                    .sha256(&key)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("`{key}` disappeared while being read"))?;
                cache_put(&entry, &hex);
                hashes.push(hex);
            }
            Ok::<_, String>(Some(hashes))
        })
    });
    work.join()
        .map_err(|_| err("hashing thread panicked".into()))?
        .map_err(err)
}

fn cache_get(key: &str) -> Option<String> {
    let hex = std::fs::read_to_string(cache_dir()?.join(key)).ok()?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

fn cache_put(key: &str, hex: &str) {
    let Some(dir) = cache_dir() else { return };
    // Best effort: a missing cache only costs the next run time.
    let _ = std::fs::create_dir_all(&dir).and_then(|()| {
        let tmp = dir.join(format!("{key}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, hex)?;
        std::fs::rename(&tmp, dir.join(key))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_hash_is_sha256_and_cache_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("CD_HASH_CACHE", dir.path().join("cache"));
        let f = dir.path().join("a.bin");
        std::fs::write(&f, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(file_sha256(&f).unwrap(), abc);
        assert_eq!(file_sha256(&f).unwrap(), abc, "from the cache");
        std::fs::write(&f, b"abcd").unwrap();
        assert_ne!(file_sha256(&f).unwrap(), abc, "size changed: rehashed");
    }

    #[test]
    fn model_dirs_need_config_tokenizer_and_weights() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        assert!(matches!(
            model_sha256(dir.path()),
            Err(ContentError::NotAModel { .. })
        ));
        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        std::fs::write(dir.path().join("model.safetensors"), "w").unwrap();
        let a = model_sha256(dir.path()).unwrap();
        std::fs::write(dir.path().join("README.md"), "docs do not count").unwrap();
        assert_eq!(model_sha256(dir.path()).unwrap(), a);
        std::fs::write(dir.path().join("model.safetensors"), "w2").unwrap();
        assert_ne!(model_sha256(dir.path()).unwrap(), a);
    }

    #[test]
    fn datasets_hash_readable_files_else_pins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        // Unreadable here: the manifest's pin stands for the file.
        let pinned = dataset_identity("cities", root, None).unwrap();
        assert_eq!(pinned.files_sha256.len(), 1);
        assert!(pinned.files_sha256[0].starts_with("f2560a0c"));
        // Readable: the file itself decides.
        std::fs::write(dir.path().join("cities.csv"), "statement,label,city\n").unwrap();
        let read = dataset_identity("cities", root, None).unwrap();
        assert_ne!(read.files_sha256, pinned.files_sha256);
        assert_eq!(read.manifest_sha256, pinned.manifest_sha256);
        // Unpinned and unreadable: refused with what to do.
        let err = dataset_identity("sarcasm", root, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[datasets.sarcasm] sha256"), "{err}");
        let pins = vec!["AB".repeat(32)];
        let ok = dataset_identity("sarcasm", root, Some(&pins)).unwrap();
        assert_eq!(ok.files_sha256, vec!["ab".repeat(32)]);
        // An object store is read (and hashed) like a directory.
        let url = "memory://content-test";
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = Store::open(url).unwrap();
        rt.block_on(store.put_bytes("cd/cities.csv", bytes::Bytes::from_static(b"x\n")))
            .unwrap();
        let remote = dataset_identity("cities", url, None).unwrap();
        assert_eq!(
            remote.files_sha256,
            vec![hex::encode(Sha256::digest(b"x\n"))]
        );
        // Generated datasets have no files.
        assert!(dataset_identity("coinflip_gen/10", root, None)
            .unwrap()
            .files_sha256
            .is_empty());
    }
}
