//! Resolving a model on the HF Hub to local files, with the Hub's own cache
//! layout (`<cache>/models--org--name/{refs/<rev>, snapshots/<commit>/<file>}`),
//! so a cache filled by Python's `huggingface_hub` serves us and vice versa.
//!
//! Conventions honoured:
//! - cache directory: the explicit one, else `HF_HUB_CACHE`, else `$HF_HOME/hub`,
//!   else `~/.cache/huggingface/hub`;
//! - token: `HF_TOKEN`, else the `token` file next to the cache (`$HF_HOME/token`);
//! - offline: the explicit switch or `HF_HUB_OFFLINE=1` resolves from the cache
//!   only and never opens a connection;
//! - endpoint: `HF_ENDPOINT` when set.

use super::EngineError;
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

/// Where and how to resolve Hub files.
#[derive(Debug, Clone, Default)]
pub(crate) struct HubOptions {
    /// Never touch the network: resolve from the cache only.
    pub offline: bool,
    /// The Hub cache directory (the one holding `models--*` folders).
    pub cache_dir: Option<PathBuf>,
}

/// Whether an env var holds a truthy value (`1`, `true`, `yes`, `on`).
fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// The cache directory the conventions above pick.
pub fn cache_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Ok(p) = std::env::var("HF_HUB_CACHE") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    Cache::from_env().path().clone()
}

/// A Hub repository resolved file by file.
pub(crate) struct HubRepo {
    repo_id: String,
    revision: String,
    offline: bool,
    cache: Cache,
    api: Option<hf_hub::api::sync::ApiRepo>,
    /// The repository's file list, fetched once when online.
    siblings: std::sync::OnceLock<Result<Vec<String>, String>>,
}

fn hub_err(repo: &str, message: String) -> EngineError {
    EngineError::Format {
        path: PathBuf::from(format!("hf://{repo}")),
        message,
    }
}

impl HubRepo {
    /// Prepare to resolve files of `repo_id` at `revision` (default `main`).
    pub fn new(
        repo_id: &str,
        revision: Option<&str>,
        opts: &HubOptions,
    ) -> Result<Self, EngineError> {
        let revision = revision.unwrap_or("main").to_string();
        let offline = opts.offline || env_flag("HF_HUB_OFFLINE");
        let dir = cache_dir(opts.cache_dir.as_deref());
        let cache = Cache::new(dir.clone());
        let api = if offline {
            None
        } else {
            let token = std::env::var("HF_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .or_else(|| cache.token());
            let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
                .with_token(token)
                .with_progress(false);
            if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
                builder = builder.with_endpoint(endpoint);
            }
            let api = builder
                .build()
                .map_err(|e| hub_err(repo_id, format!("cannot set up the Hub client: {e}")))?;
            Some(api.repo(Repo::with_revision(
                repo_id.to_string(),
                RepoType::Model,
                revision.clone(),
            )))
        };
        Ok(HubRepo {
            repo_id: repo_id.to_string(),
            revision,
            offline,
            cache,
            api,
            siblings: std::sync::OnceLock::new(),
        })
    }

    fn cached(&self, file: &str) -> Option<PathBuf> {
        let repo =
            Repo::with_revision(self.repo_id.clone(), RepoType::Model, self.revision.clone());
        let cache_repo = self.cache.repo(repo.clone());
        if let Some(p) = cache_repo.get(file) {
            return Some(p);
        }
        // A revision given as a commit hash has no ref file: look in its snapshot directly.
        let snapshot = self
            .cache
            .path()
            .join(repo.folder_name())
            .join("snapshots")
            .join(&self.revision)
            .join(file);
        snapshot.exists().then_some(snapshot)
    }

    /// Local path of `file`, downloading it unless offline. `Ok(None)` when
    /// the repository has no such file (so optional files can be probed).
    pub(crate) fn get_optional(&self, file: &str) -> Result<Option<PathBuf>, EngineError> {
        if let Some(p) = self.cached(file) {
            return Ok(Some(p));
        }
        let Some(api) = &self.api else {
            return Ok(None);
        };
        let listing = self.siblings.get_or_init(|| {
            api.info()
                .map(|info| info.siblings.into_iter().map(|s| s.rfilename).collect())
                .map_err(|e| e.to_string())
        });
        let files = listing.as_ref().map_err(|e| {
            hub_err(
                &self.repo_id,
                format!(
                    "cannot list the repository at revision `{}`: {e}",
                    self.revision
                ),
            )
        })?;
        if !files.iter().any(|f| f == file) {
            return Ok(None);
        }
        api.get(file).map(Some).map_err(|e| {
            hub_err(
                &self.repo_id,
                format!(
                    "cannot download `{file}` at revision `{}`: {e}",
                    self.revision
                ),
            )
        })
    }

    /// Local path of `file`; an error naming the repo, file and cache if absent.
    pub fn get(&self, file: &str) -> Result<PathBuf, EngineError> {
        self.get_optional(file)?.ok_or_else(|| {
            let how = if self.offline {
                format!(
                    "not in the Hub cache {} and offline mode is on (HF_HUB_OFFLINE or --offline): \
                     expected models--{}/snapshots/<commit>/{file} with refs/{} naming the commit",
                    self.cache.path().display(),
                    self.repo_id.replace('/', "--"),
                    self.revision
                )
            } else {
                format!(
                    "the repository has no `{file}` at revision `{}`",
                    self.revision
                )
            };
            hub_err(&self.repo_id, format!("`{file}`: {how}"))
        })
    }
}
