//! Grids: the TOML description of a sweep, its validation and its expansion
//! into one [`TaskSpec`] per cell.
//!
//! A grid is versioned (`version = 1`) and strict (`deny_unknown_fields`
//! everywhere). Every error names the file, the line and column, and the field
//! at fault, and nothing runs until the whole grid is valid. The field
//! reference, with an example for every field, is `docs/cluster.md` and the
//! commented grids in `grids/`.
//!
//! String values of `data_root`, `storage.url` and model paths may use
//! `${VAR}` or `${VAR:-default}`: the variable is read from the environment
//! when the grid is loaded, so one grid file works on several machines (the
//! quickstart grid finds its GGUF file this way).

use crate::datasets::{DatasetKind, NoiseKind, PromptMode};
use crate::spec::{ModelRef, ModelSource, Pooling, Precision, Site, TaskId, TaskKind, TaskSpec};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The only grid format version this build reads.
pub const GRID_VERSION: u32 = 1;

/// A grid that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    /// The file could not be read.
    #[error("{file}: cannot read grid: {source}")]
    Io {
        /// The grid file.
        file: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A problem located in the file.
    #[error("{file}:{line}:{column}: `{field}`: {message}")]
    Invalid {
        /// The grid file (or `<string>` for grids parsed from memory).
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Dotted path of the offending field (e.g. `models[2].name`).
        field: String,
        /// What was expected.
        message: String,
    },
}

/// The grid as written in TOML (`version = 1`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridFile {
    /// Format version; must be 1. Example: `version = 1`.
    pub version: Spanned<u32>,
    /// Sweep name: the storage prefix of every result. Example: `sweep = "full"`.
    pub sweep: Spanned<String>,
    /// Where workers find raw dataset files (may use `${VAR}`): a local path, an
    /// object-store URL (`s3://…`, `file://…`, `memory://…`) or a Hub dataset
    /// (`hf://datasets/OWNER/NAME[@REV]`); workers copy remote files to their
    /// data cache first (`docs/datasets.md`).
    /// Example: `data_root = "${CD_DATA_ROOT:-datasets/data}"`.
    pub data_root: Spanned<String>,
    /// Where results go.
    pub storage: StorageSection,
    /// Lease and retry limits; every field has a default.
    #[serde(default)]
    pub scheduling: SchedulingSection,
    /// How representations are captured; every field has a default.
    #[serde(default)]
    pub extraction: ExtractionSection,
    /// Probe settings passed through to [`TaskSpec::probe`] unchanged.
    /// Example: `[probe]` then `c = 1.0` and `split = { kind = "holdout", test_fraction = 0.4 }`
    /// (the fields of `cd_common::probe::ProbeConfig`, checked when the grid is read).
    #[serde(default)]
    pub probe: toml::Table,
    /// The models, one `[[models]]` table each.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    /// The axes crossed with every model.
    pub axes: AxesSection,
}

/// `[storage]`: one URL for everything.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// `file://DIR`, `s3://BUCKET/PREFIX?endpoint=...`, or `memory://`.
    /// Example: `url = "file://runs"`.
    pub url: Spanned<String>,
    /// Upload the `[N, L, d]` features of each cell next to its metrics.
    /// Example: `upload_features = false`. Default: true.
    #[serde(default = "default_true")]
    pub upload_features: bool,
}

/// `[scheduling]`: lease lifetime and retry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulingSection {
    /// Attempts before a task is marked failed. Example: `max_attempts = 3`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: Spanned<u32>,
    /// Seconds a lease lives without a heartbeat. Example: `lease_ttl_secs = 300`.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: Spanned<u64>,
    /// Seconds between worker heartbeats. Example: `heartbeat_interval_secs = 20`.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_secs: Spanned<u64>,
}

impl Default for SchedulingSection {
    fn default() -> Self {
        SchedulingSection {
            max_attempts: default_max_attempts(),
            lease_ttl_secs: default_lease_ttl(),
            heartbeat_interval_secs: default_heartbeat(),
        }
    }
}

/// `[extraction]`: capture settings shared by all cells.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractionSection {
    /// `residual` or `post_attention_norm`. Example: `site = "post_attention_norm"`.
    #[serde(default = "default_site")]
    pub site: Spanned<String>,
    /// `last` or `mean` (multiple-choice tasks require `last`). Example: `pooling = "last"`.
    #[serde(default = "default_pooling")]
    pub pooling: Spanned<String>,
    /// Texts per forward pass. Example: `batch_size = 8`.
    #[serde(default = "default_batch")]
    pub batch_size: Spanned<usize>,
}

impl Default for ExtractionSection {
    fn default() -> Self {
        ExtractionSection {
            site: default_site(),
            pooling: default_pooling(),
            batch_size: default_batch(),
        }
    }
}

/// One `[[models]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Display name, unique in the grid. Example: `name = "Qwen1.5-7B"`.
    pub name: Spanned<String>,
    /// Parameter count in billions (orders reports; sizes memory). Example: `size_b = 7.7`.
    pub size_b: Spanned<f64>,
    /// Where the weights come from: `{ kind = "hub", repo = "Qwen/Qwen1.5-7B" }`,
    /// `{ kind = "dir", path = "/models/x" }` or `{ kind = "gguf", path = "${CD_SMOLLM2_GGUF}" }`.
    pub source: Spanned<toml::Table>,
    /// Overrides `axes.precisions` for this model. Example: `precisions = ["8"]`.
    #[serde(default)]
    pub precisions: Option<Vec<Spanned<String>>>,
}

/// `[axes]`: the lists crossed with every model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxesSection {
    /// Dataset names from the registry. Example: `datasets = ["cities", "coinflip"]`.
    pub datasets: Spanned<Vec<Spanned<String>>>,
    /// Precisions: `32`, `16`, `16-f16`, `8`. Example: `precisions = ["32", "16", "8"]`.
    pub precisions: Spanned<Vec<Spanned<String>>>,
    /// Noise kinds: `none`, `prefix-aaa-bbb`, `typos:P`. Example: `noise = ["none", "prefix-aaa-bbb"]`.
    #[serde(default = "default_noise")]
    pub noise: Spanned<Vec<Spanned<String>>>,
    /// Prompt modes: `paper` or `cd-legacy`. Example: `prompt_modes = ["paper"]`.
    #[serde(default = "default_prompt_modes")]
    pub prompt_modes: Spanned<Vec<Spanned<String>>>,
    /// Seeds for noise, splits and probes. Example: `seeds = [0, 1, 2]`.
    #[serde(default = "default_seeds")]
    pub seeds: Spanned<Vec<u64>>,
}

fn default_true() -> bool {
    true
}
fn default_max_attempts() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}
fn default_lease_ttl() -> Spanned<u64> {
    Spanned::new(0..0, 300)
}
fn default_heartbeat() -> Spanned<u64> {
    Spanned::new(0..0, 20)
}
fn default_site() -> Spanned<String> {
    Spanned::new(0..0, "post_attention_norm".into())
}
fn default_pooling() -> Spanned<String> {
    Spanned::new(0..0, "last".into())
}
fn default_batch() -> Spanned<usize> {
    Spanned::new(0..0, 8)
}
fn default_noise() -> Spanned<Vec<Spanned<String>>> {
    Spanned::new(0..0, vec![Spanned::new(0..0, "none".into())])
}
fn default_prompt_modes() -> Spanned<Vec<Spanned<String>>> {
    Spanned::new(0..0, vec![Spanned::new(0..0, "paper".into())])
}
fn default_seeds() -> Spanned<Vec<u64>> {
    Spanned::new(0..0, vec![0])
}

/// Scheduling limits after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduling {
    /// Attempts before a task is marked failed (≥ 1).
    pub max_attempts: u32,
    /// How long a lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// How often workers heartbeat (less than `lease_ttl`).
    pub heartbeat_interval: Duration,
}

/// A validated grid: everything the coordinator needs to serve the sweep.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Sweep name.
    pub sweep: String,
    /// Storage URL (after `${VAR}` expansion).
    pub storage_url: String,
    /// Scheduling limits.
    pub scheduling: Scheduling,
    /// One spec per cell, in expansion order (models as listed, then datasets,
    /// precisions, noise kinds, prompt modes, seeds).
    pub tasks: Vec<TaskSpec>,
}

impl Grid {
    /// Read, validate and expand a grid file.
    pub fn load(path: &Path) -> Result<Grid, GridError> {
        let text = std::fs::read_to_string(path).map_err(|source| GridError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        Grid::parse(&text, path)
    }

    /// Validate and expand grid text; `file` is used in error messages only.
    pub fn parse(text: &str, file: &Path) -> Result<Grid, GridError> {
        let cx = Cx { text, file };
        let raw: GridFile = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            cx.err_at(
                span.start,
                &field_of(e.message(), text, span.start),
                e.message(),
            )
        })?;
        cx.build(raw)
    }

    /// The task ids of the grid, in expansion order.
    pub fn task_ids(&self) -> Vec<TaskId> {
        self.tasks.iter().map(TaskSpec::id).collect()
    }
}

/// The registry name (with any `/parameter` suffix kept) and task kind of a
/// dataset named in a grid, or the registry's explanation.
pub fn dataset_kind(name: &str) -> Result<(String, TaskKind), String> {
    let (manifest, param) = crate::datasets::find(name).map_err(|e| e.to_string())?;
    let kind = match manifest.kind {
        DatasetKind::Binary => TaskKind::Probe,
        DatasetKind::MultipleChoice => TaskKind::MultipleChoice,
    };
    let canonical = match param {
        Some(p) => format!("{}/{p}", manifest.name),
        None => manifest.name.clone(),
    };
    Ok((canonical, kind))
}

/// The canonical name of a noise kind, or why it is not one.
fn check_noise(noise: &str) -> Result<String, String> {
    NoiseKind::parse(noise)
        .map(|n| n.name())
        .map_err(|e| e.to_string())
}

/// Whether a precision can run a model from this kind of source.
///
/// A GGUF file carries its own (usually quantised) weights; re-casting them to
/// bf16/f16 or re-quantising to Q8_0 would measure something other than the
/// file, so GGUF models run at `32` only (weights as stored, f32 activations).
fn check_precision_for_source(p: Precision, source: &ModelSource) -> Result<(), String> {
    match (source, p) {
        (ModelSource::Gguf { .. }, Precision::F32) => Ok(()),
        (ModelSource::Gguf { .. }, other) => Err(format!(
            "precision `{other}` is impossible for a gguf model: its weights keep the file's own quantisation; use \"32\""
        )),
        _ => Ok(()),
    }
}

/// Location context for errors.
struct Cx<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Cx<'_> {
    fn err_at(&self, offset: usize, field: &str, message: &str) -> GridError {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        GridError::Invalid {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    fn err<T>(&self, s: &Spanned<T>, field: &str, message: impl AsRef<str>) -> GridError {
        self.err_at(s.span().start, field, message.as_ref())
    }

    fn expand(&self, s: &Spanned<String>, field: &str) -> Result<String, GridError> {
        expand_env(s.get_ref(), |k| std::env::var(k).ok()).map_err(|m| self.err(s, field, m))
    }

    fn build(&self, raw: GridFile) -> Result<Grid, GridError> {
        if *raw.version.get_ref() != GRID_VERSION {
            return Err(self.err(
                &raw.version,
                "version",
                format!(
                    "unsupported grid version {}: this build reads version 1",
                    raw.version.get_ref()
                ),
            ));
        }
        let sweep = raw.sweep.get_ref().clone();
        if sweep.is_empty()
            || !sweep
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(self.err(
                &raw.sweep,
                "sweep",
                "expected a non-empty name of letters, digits, `-`, `_` or `.`",
            ));
        }
        let data_root = self.expand(&raw.data_root, "data_root")?;
        let storage_url = self.expand(&raw.storage.url, "storage.url")?;
        if !["file://", "s3://", "memory://"]
            .iter()
            .any(|p| storage_url.starts_with(p))
        {
            return Err(self.err(
                &raw.storage.url,
                "storage.url",
                "expected a file://, s3:// or memory:// URL",
            ));
        }

        let sch = &raw.scheduling;
        if *sch.max_attempts.get_ref() == 0 {
            return Err(self.err(
                &sch.max_attempts,
                "scheduling.max_attempts",
                "must be at least 1",
            ));
        }
        if *sch.lease_ttl_secs.get_ref() == 0 {
            return Err(self.err(
                &sch.lease_ttl_secs,
                "scheduling.lease_ttl_secs",
                "must be at least 1",
            ));
        }
        if sch.heartbeat_interval_secs.get_ref() >= sch.lease_ttl_secs.get_ref()
            || *sch.heartbeat_interval_secs.get_ref() == 0
        {
            return Err(self.err(
                &sch.heartbeat_interval_secs,
                "scheduling.heartbeat_interval_secs",
                "must be at least 1 and shorter than lease_ttl_secs, or leases lapse between heartbeats",
            ));
        }
        let scheduling = Scheduling {
            max_attempts: *sch.max_attempts.get_ref(),
            lease_ttl: Duration::from_secs(*sch.lease_ttl_secs.get_ref()),
            heartbeat_interval: Duration::from_secs(*sch.heartbeat_interval_secs.get_ref()),
        };

        let ex = &raw.extraction;
        let site: Site = ex
            .site
            .get_ref()
            .parse()
            .map_err(|m: String| self.err(&ex.site, "extraction.site", m))?;
        let pooling: Pooling = ex
            .pooling
            .get_ref()
            .parse()
            .map_err(|m: String| self.err(&ex.pooling, "extraction.pooling", m))?;
        if *ex.batch_size.get_ref() == 0 {
            return Err(self.err(
                &ex.batch_size,
                "extraction.batch_size",
                "must be at least 1",
            ));
        }

        let axes = &raw.axes;
        let datasets = self.nonempty(&axes.datasets, "axes.datasets")?;
        let mut kinds = Vec::new();
        for (i, d) in datasets.iter().enumerate() {
            let field = format!("axes.datasets[{i}]");
            let (name, kind) = dataset_kind(d.get_ref()).map_err(|m| self.err(d, &field, m))?;
            if kinds.iter().any(|(n, _)| *n == name) {
                return Err(self.err(d, &field, format!("dataset `{name}` is listed twice")));
            }
            if kind == TaskKind::MultipleChoice && pooling == Pooling::Mean {
                return Err(self.err(
                    d,
                    &field,
                    "multiple-choice datasets score token log-probabilities, so extraction.pooling must be \"last\"",
                ));
            }
            kinds.push((name, kind));
        }
        let precisions = self.precisions(
            self.nonempty(&axes.precisions, "axes.precisions")?,
            "axes.precisions",
        )?;
        let noises = self.nonempty(&axes.noise, "axes.noise")?;
        let mut noise_names: Vec<String> = Vec::new();
        for (i, n) in noises.iter().enumerate() {
            let name = check_noise(n.get_ref())
                .map_err(|m| self.err(n, &format!("axes.noise[{i}]"), m))?;
            if noise_names.contains(&name) {
                return Err(self.err(
                    n,
                    &format!("axes.noise[{i}]"),
                    format!("noise `{name}` is listed twice"),
                ));
            }
            noise_names.push(name);
        }
        let modes = self.nonempty(&axes.prompt_modes, "axes.prompt_modes")?;
        for (i, m) in modes.iter().enumerate() {
            PromptMode::parse(m.get_ref())
                .map_err(|e| self.err(m, &format!("axes.prompt_modes[{i}]"), e.to_string()))?;
        }
        self.no_dupes(modes, "axes.prompt_modes")?;
        if axes.seeds.get_ref().is_empty() {
            return Err(self.err(&axes.seeds, "axes.seeds", "must list at least one seed"));
        }
        let mut seen_seeds = HashSet::new();
        if let Some(s) = axes
            .seeds
            .get_ref()
            .iter()
            .find(|s| !seen_seeds.insert(**s))
        {
            return Err(self.err(
                &axes.seeds,
                "axes.seeds",
                format!("seed {s} is listed twice"),
            ));
        }

        if raw.models.is_empty() {
            return Err(self.err_at(
                0,
                "models",
                "the grid lists no models: add at least one [[models]] table",
            ));
        }
        let probe = serde_json::to_value(&raw.probe)
            .map_err(|e| self.err_at(0, "probe", &e.to_string()))?;
        // Probe settings travel opaquely in every task; check them now so a
        // typo fails the grid, not every cell of the sweep on its workers.
        if kinds.iter().any(|(_, k)| *k == TaskKind::Probe) {
            if let Err(e) = crate::probe::ProbeConfig::from_json(&probe) {
                let offset = self.text.find("[probe]").unwrap_or(0);
                return Err(self.err_at(offset, "probe", &e.to_string()));
            }
        }
        let mut names = BTreeMap::new();
        let mut tasks = Vec::new();
        for (mi, m) in raw.models.iter().enumerate() {
            let name = m.name.get_ref();
            if name.trim().is_empty() {
                return Err(self.err(&m.name, &format!("models[{mi}].name"), "must not be empty"));
            }
            if let Some(first) = names.insert(name.clone(), m.name.span().start) {
                let (line, _) = line_col(self.text, first);
                return Err(self.err(
                    &m.name,
                    &format!("models[{mi}].name"),
                    format!("duplicate model name `{name}` (first defined on line {line})"),
                ));
            }
            let size_b = *m.size_b.get_ref();
            if !(size_b.is_finite() && size_b > 0.0) {
                return Err(self.err(
                    &m.size_b,
                    &format!("models[{mi}].size_b"),
                    "must be a positive number of billions",
                ));
            }
            let source = self.source(&m.source, mi)?;
            let model_precisions = match &m.precisions {
                Some(list) => {
                    let field = format!("models[{mi}].precisions");
                    if list.is_empty() {
                        return Err(self.err(&m.name, &field, "must list at least one precision"));
                    }
                    self.precisions(list, &field)?
                }
                None => precisions.clone(),
            };
            for (p, span) in &model_precisions {
                check_precision_for_source(*p, &source)
                    .map_err(|msg| self.err_at(*span, &format!("models[{mi}] precision"), &msg))?;
            }
            let model = ModelRef {
                name: name.clone(),
                source,
                size_b,
            };
            for (dataset, kind) in &kinds {
                for (precision, _) in &model_precisions {
                    for noise in &noise_names {
                        for mode in modes {
                            for seed in axes.seeds.get_ref() {
                                tasks.push(TaskSpec {
                                    sweep: sweep.clone(),
                                    kind: *kind,
                                    model: model.clone(),
                                    dataset: dataset.clone(),
                                    data_root: data_root.clone(),
                                    precision: *precision,
                                    noise: noise.clone(),
                                    prompt_mode: mode.get_ref().clone(),
                                    site,
                                    pooling,
                                    seed: *seed,
                                    probe: probe.clone(),
                                    batch_size: *ex.batch_size.get_ref(),
                                    upload_features: raw.storage.upload_features,
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(Grid {
            sweep,
            storage_url,
            scheduling,
            tasks,
        })
    }

    fn nonempty<'v>(
        &self,
        list: &'v Spanned<Vec<Spanned<String>>>,
        field: &str,
    ) -> Result<&'v [Spanned<String>], GridError> {
        if list.get_ref().is_empty() {
            return Err(self.err(list, field, "must list at least one value"));
        }
        Ok(list.get_ref())
    }

    fn no_dupes(&self, list: &[Spanned<String>], field: &str) -> Result<(), GridError> {
        let mut seen = HashSet::new();
        for (i, v) in list.iter().enumerate() {
            if !seen.insert(v.get_ref()) {
                return Err(self.err(
                    v,
                    &format!("{field}[{i}]"),
                    format!("`{}` is listed twice", v.get_ref()),
                ));
            }
        }
        Ok(())
    }

    fn precisions(
        &self,
        list: &[Spanned<String>],
        field: &str,
    ) -> Result<Vec<(Precision, usize)>, GridError> {
        let mut out: Vec<(Precision, usize)> = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let parsed: Precision = p
                .get_ref()
                .parse()
                .map_err(|m: String| self.err(p, &format!("{field}[{i}]"), m))?;
            if out.iter().any(|(q, _)| *q == parsed) {
                return Err(self.err(
                    p,
                    &format!("{field}[{i}]"),
                    format!("precision `{parsed}` is listed twice"),
                ));
            }
            out.push((parsed, p.span().start));
        }
        Ok(out)
    }

    fn source(&self, table: &Spanned<toml::Table>, mi: usize) -> Result<ModelSource, GridError> {
        let field = format!("models[{mi}].source");
        let t = table.get_ref();
        let kind = t.get("kind").and_then(toml::Value::as_str).ok_or_else(|| {
            self.err(
                table,
                &format!("{field}.kind"),
                "missing `kind`: expected one of dir, hub, gguf",
            )
        })?;
        let string = |key: &str| -> Result<String, GridError> {
            let v = t.get(key).and_then(toml::Value::as_str).ok_or_else(|| {
                self.err(
                    table,
                    &format!("{field}.{key}"),
                    format!("a `{kind}` source needs a string `{key}`"),
                )
            })?;
            expand_env(v, |k| std::env::var(k).ok())
                .map_err(|m| self.err(table, &format!("{field}.{key}"), m))
        };
        let allowed: &[&str] = match kind {
            "dir" | "gguf" => &["kind", "path"],
            "hub" => &["kind", "repo", "revision"],
            other => {
                return Err(self.err(
                    table,
                    &format!("{field}.kind"),
                    format!("unknown model source kind `{other}`: expected dir, hub or gguf"),
                ))
            }
        };
        if let Some(extra) = t.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(self.err(
                table,
                &format!("{field}.{extra}"),
                format!(
                    "unknown key `{extra}` for a `{kind}` source: expected {}",
                    allowed.join(", ")
                ),
            ));
        }
        let source = match kind {
            "dir" => ModelSource::Dir {
                path: string("path")?,
            },
            "gguf" => {
                let path = string("path")?;
                if !path.ends_with(".gguf") {
                    return Err(self.err(
                        table,
                        &format!("{field}.path"),
                        format!("`{path}` is not a .gguf file"),
                    ));
                }
                ModelSource::Gguf { path }
            }
            _ => {
                let repo = string("repo")?;
                if repo.split('/').count() != 2 || repo.starts_with('/') || repo.ends_with('/') {
                    return Err(self.err(
                        table,
                        &format!("{field}.repo"),
                        format!("`{repo}` is not a hub id `org/name`"),
                    ));
                }
                let revision = if t.contains_key("revision") {
                    Some(string("revision")?)
                } else {
                    None
                };
                ModelSource::Hub { repo, revision }
            }
        };
        Ok(source)
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// Best-effort field name for a toml error: the key on the error's line.
fn field_of(message: &str, text: &str, offset: usize) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some(end) = rest.find('`') {
            return rest[..end].to_string();
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some(end) = rest.find('`') {
            return rest[..end].to_string();
        }
    }
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    line.split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches(['[', ']'])
        .to_string()
}

/// Expand `${VAR}` and `${VAR:-default}` in `s` using `lookup`.
pub fn expand_env(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{inner}}}` is not a variable name"));
        }
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
version = 1
sweep = "t"
data_root = "/data"
[storage]
url = "memory://"
[[models]]
name = "a"
size_b = 1.0
source = { kind = "hub", repo = "org/a" }
[axes]
datasets = ["cities", "coinflip"]
precisions = ["32", "16"]
"#;

    fn parse(text: &str) -> Result<Grid, GridError> {
        Grid::parse(text, Path::new("g.toml"))
    }

    fn invalid(text: &str) -> (usize, String, String) {
        match parse(text).unwrap_err() {
            GridError::Invalid {
                line,
                field,
                message,
                ..
            } => (line, field, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn minimal_grid_expands_with_defaults() {
        let g = parse(MINIMAL).unwrap();
        assert_eq!(g.tasks.len(), 4);
        assert_eq!(g.scheduling.max_attempts, 3);
        assert!(g
            .tasks
            .iter()
            .all(|t| t.noise == "none" && t.prompt_mode == "paper" && t.seed == 0));
        let ids: HashSet<_> = g.task_ids().into_iter().collect();
        assert_eq!(ids.len(), 4, "cells must have distinct ids");
    }

    #[test]
    fn unknown_key_is_located() {
        let text = MINIMAL.replace("[axes]", "[axes]\ncolour = 1");
        let (line, field, msg) = invalid(&text);
        assert_eq!(line, 12);
        assert_eq!(field, "colour");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn bad_probe_settings_fail_the_grid_at_the_probe_table() {
        let text = format!("{MINIMAL}[probe]\nc = 1.0\nsplit = \"holdout\"\n");
        let (line, field, msg) = invalid(&text);
        assert_eq!((line, field.as_str()), (14, "probe"));
        assert!(msg.contains("invalid probe configuration"), "{msg}");
        let good = format!("{MINIMAL}[probe]\nc = 0.5\nsplit = {{ kind = \"kfold\", k = 5 }}\n");
        assert_eq!(parse(&good).unwrap().tasks.len(), 4);
    }

    #[test]
    fn unknown_dataset_and_source_kind() {
        let (line, field, msg) = invalid(&MINIMAL.replace("\"coinflip\"", "\"nope\""));
        assert_eq!((line, field.as_str()), (12, "axes.datasets[1]"));
        assert!(msg.contains("nope"), "{msg}");
        let (line, field, msg) = invalid(&MINIMAL.replace("kind = \"hub\"", "kind = \"ftp\""));
        assert_eq!((line, field.as_str()), (10, "models[0].source.kind"));
        assert!(msg.contains("unknown model source kind"));
    }

    #[test]
    fn duplicate_model_names_point_at_the_second() {
        let text = format!("{MINIMAL}[[models]]\nname = \"a\"\nsize_b = 2.0\nsource = {{ kind = \"hub\", repo = \"org/b\" }}\n");
        let (line, field, msg) = invalid(&text);
        assert_eq!((line, field.as_str()), (15, "models[1].name"));
        assert!(msg.contains("first defined on line 8"), "{msg}");
    }

    #[test]
    fn impossible_combinations_are_refused() {
        let gguf = MINIMAL.replace(
            "kind = \"hub\", repo = \"org/a\"",
            "kind = \"gguf\", path = \"/m.gguf\"",
        );
        let (_, _, msg) = invalid(&gguf);
        assert!(msg.contains("impossible for a gguf model"), "{msg}");
        let mc = MINIMAL
            .replace("\"coinflip\"", "\"truthfulqa_mc\"")
            .replace("[axes]", "[extraction]\npooling = \"mean\"\n[axes]");
        let (_, field, msg) = invalid(&mc);
        assert_eq!(field, "axes.datasets[1]");
        assert!(msg.contains("pooling must be"), "{msg}");
        let (_, field, _) = invalid(&MINIMAL.replace(
            "[axes]",
            "[scheduling]\nlease_ttl_secs = 10\nheartbeat_interval_secs = 10\n[axes]",
        ));
        assert_eq!(field, "scheduling.heartbeat_interval_secs");
    }

    #[test]
    fn empty_grids_are_refused() {
        let no_models = MINIMAL.replace("[[models]]\nname = \"a\"\nsize_b = 1.0\nsource = { kind = \"hub\", repo = \"org/a\" }\n", "");
        let (_, field, _) = invalid(&no_models);
        assert_eq!(field, "models");
        let (_, field, _) = invalid(&MINIMAL.replace("[\"cities\", \"coinflip\"]", "[]"));
        assert_eq!(field, "axes.datasets");
    }

    #[test]
    fn version_must_be_one() {
        let (line, field, _) = invalid(&MINIMAL.replace("version = 1", "version = 2"));
        assert_eq!((line, field.as_str()), (2, "version"));
    }

    #[test]
    fn env_expansion() {
        let look = |k: &str| (k == "A").then(|| "x".to_string());
        assert_eq!(expand_env("${A}/y", look).unwrap(), "x/y");
        assert_eq!(expand_env("${B:-d}/y", look).unwrap(), "d/y");
        assert!(expand_env("${B}", look)
            .unwrap_err()
            .contains("B is not set"));
        assert!(expand_env("${A", look).is_err());
    }

    #[test]
    fn shipped_grids_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grids");
        let full = Grid::load(&root.join("full.toml")).unwrap();
        assert_eq!(full.tasks.len(), 486);
        let ids: HashSet<_> = full.task_ids().into_iter().collect();
        assert_eq!(ids.len(), 486);
        let llama = Grid::load(&root.join("llama-analysis.toml")).unwrap();
        assert!(llama
            .tasks
            .iter()
            .all(|t| t.kind == TaskKind::MultipleChoice));
        // The quickstart names its model through an env var with a default path.
        let quick = Grid::load(&root.join("quickstart.toml")).unwrap();
        assert!(!quick.tasks.is_empty());
        assert!(quick.tasks.iter().all(|t| t.kind == TaskKind::Probe));
    }
}
