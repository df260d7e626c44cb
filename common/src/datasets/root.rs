//! Where raw dataset files live.

use super::DatasetError;
use std::path::{Path, PathBuf};

/// The root under which a dataset's files are looked up (see each manifest's
/// `source.files`).
///
/// Only [`DataRoot::Local`] is read by the loaders. A remote root is resolved by
/// the worker before loading: it copies the manifest's `source.files` from the
/// object store (`s3://bucket/prefix/<file>`, `file://...`) or downloads them
/// from an HF Hub dataset repository into a local cache directory, then calls
/// the loaders with `DataRoot::Local(cache_dir)`. Keeping the network out of
/// this crate keeps loading pure and testable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataRoot {
    /// A local directory.
    Local(PathBuf),
    /// An object-store URL (`s3://`, `gs://`, `file://`, `memory://`...).
    ObjectStore(url::Url),
    /// An HF Hub dataset repository, written `hf://datasets/<org>/<name>[@rev]`.
    HfHub {
        repo: String,
        revision: Option<String>,
    },
}

impl DataRoot {
    /// Interpret a task spec's `data_root` string: `hf://datasets/org/name[@rev]`,
    /// a URL with a scheme (`s3://...`), or otherwise a local path.
    pub fn parse(s: &str) -> Result<DataRoot, DatasetError> {
        if let Some(rest) = s.strip_prefix("hf://") {
            let repo = rest.strip_prefix("datasets/").unwrap_or(rest);
            let (repo, revision) = match repo.split_once('@') {
                Some((r, v)) => (r.to_string(), Some(v.to_string())),
                None => (repo.to_string(), None),
            };
            if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
                return Err(DatasetError::BadOption {
                    what: "data root",
                    value: s.to_string(),
                    expected: "hf://datasets/<org>/<name>[@revision]".into(),
                });
            }
            return Ok(DataRoot::HfHub { repo, revision });
        }
        if s.contains("://") {
            let url = url::Url::parse(s).map_err(|e| DatasetError::BadOption {
                what: "data root",
                value: s.to_string(),
                expected: format!("a local directory or a valid URL ({e})"),
            })?;
            if url.scheme() == "file" {
                if let Ok(p) = url.to_file_path() {
                    return Ok(DataRoot::Local(p));
                }
            }
            return Ok(DataRoot::ObjectStore(url));
        }
        Ok(DataRoot::Local(PathBuf::from(s)))
    }

    /// The local directory, or an error for a remote root that was not resolved.
    pub fn local_dir(&self) -> Result<&Path, DatasetError> {
        match self {
            DataRoot::Local(p) => Ok(p),
            other => Err(DatasetError::RemoteRoot {
                root: other.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for DataRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataRoot::Local(p) => write!(f, "{}", p.display()),
            DataRoot::ObjectStore(u) => write!(f, "{u}"),
            DataRoot::HfHub {
                repo,
                revision: None,
            } => write!(f, "hf://datasets/{repo}"),
            DataRoot::HfHub {
                repo,
                revision: Some(r),
            } => write!(f, "hf://datasets/{repo}@{r}"),
        }
    }
}
