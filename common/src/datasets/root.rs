//! Where raw dataset files live.

use super::DatasetError;
use std::path::{Path, PathBuf};

/// The root under which a dataset's files are looked up (see each manifest's
/// `source.files`).
///
/// Only [`DataRoot::Local`] is read by the loaders. A remote root is made local
/// by the worker before loading (`cd_worker::data_fetch`): it copies the files
/// the manifest needs (see [`super::find_source_files`]) from the object store
/// into its data cache, or resolves them through the HF Hub cache, then calls
/// the loaders with `DataRoot::Local(dir)`. Keeping the network out of the
/// loaders keeps loading pure and testable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataRoot {
    /// A local directory.
    Local(PathBuf),
    /// An object-store URL as the storage layer opens it (`s3://`, `memory://`,
    /// a relative `file://dir`).
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
    pub(crate) fn local_dir(&self) -> Result<&Path, DatasetError> {
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
