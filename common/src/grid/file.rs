//! The grid as written in TOML: every table and field, each with its
//! default, range and an example. Values keep their byte spans so that
//! [`super::build`] can point at the field at fault.

use crate::datasets::PromptMode;
use crate::depth::DepthConfig;
use crate::probe::mc::McConfig;
use crate::probe::ProbeConfig;
use crate::spec::{Pooling, Site};
use crate::verified::DeviceKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// The grid file (`version = 1`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GridFile {
    /// Format version; must be 1. Example: `version = 1`.
    pub version: Spanned<u32>,
    /// Sweep name: the storage prefix of every result. Example: `sweep = "full"`.
    pub sweep: Spanned<String>,
    /// Where workers find raw dataset files (may use `${VAR}`): a local path, an
    /// object-store URL (`s3://…`, `file://…`, `memory://…`) or a Hub dataset
    /// (`hf://datasets/OWNER/NAME[@REV]`); workers copy remote files to their
    /// data cache first (`docs/datasets.md`). Not part of any task id.
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
    /// Probe settings (`ProbeConfig`): `c`, `standardize`, `positive_class`,
    /// `split`, `solver`. Example: `split = { kind = "sklearn", test_size = 0.4, random_state = 42 }`.
    #[serde(default)]
    pub probe: Option<Spanned<ProbeConfig>>,
    /// Concept-depth rules and bootstrap (`DepthConfig`). Example: `rule = "paper"`.
    #[serde(default)]
    pub depth: Option<Spanned<DepthConfig>>,
    /// Multiple-choice scoring (`McConfig`): `score_dtype` (`f32` or `bf16`),
    /// `max_items` (1 ..= 1000000). Example: `score_dtype = "bf16"`.
    #[serde(default)]
    pub mc: Option<Spanned<McConfig>>,
    /// Content pins of datasets whose files the coordinator cannot read, by
    /// registry name. Example: `[datasets.sarcasm]` then `sha256 = ["3f0c…"]`.
    #[serde(default)]
    pub datasets: BTreeMap<String, Spanned<DatasetPins>>,
    /// The models, one `[[models]]` table each.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    /// The axes crossed with every model.
    pub axes: AxesSection,
}

/// `[storage]`: one URL for everything.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StorageSection {
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
pub(crate) struct SchedulingSection {
    /// Attempts before a task is marked failed, 1 ..= 100. Example: `max_attempts = 3`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: Spanned<u32>,
    /// Seconds a lease lives without a heartbeat, 1 ..= 86400. Example: `lease_ttl_secs = 300`.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: Spanned<u64>,
    /// Seconds between worker heartbeats, 1 ..= lease_ttl_secs − 1. Example: `heartbeat_interval_secs = 20`.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_secs: Spanned<u64>,
    /// Seconds a lease may report no progress (same phase, same count) before
    /// it is expired like a lapsed one, 60 ..= 86400. Example:
    /// `stall_timeout_secs = 1800`. Default: 3600.
    #[serde(default = "default_stall")]
    pub stall_timeout_secs: Spanned<u64>,
    /// The same watchdog while the model loads (`load_model`: downloads and
    /// weight transfers report no counts), 60 ..= 86400. Example:
    /// `load_stall_timeout_secs = 7200`. Default: 14400.
    #[serde(default = "default_load_stall")]
    pub load_stall_timeout_secs: Spanned<u64>,
    /// Device kinds that may run this sweep's cells (`cpu`, `cuda`); a worker
    /// gets only cells whose precision is verified on its kind
    /// (`cd_common::verified`). Example: `devices = ["cuda"]`. Default: both.
    #[serde(default = "default_devices")]
    pub devices: Spanned<Vec<DeviceKind>>,
}

impl Default for SchedulingSection {
    fn default() -> Self {
        SchedulingSection {
            max_attempts: default_max_attempts(),
            lease_ttl_secs: default_lease_ttl(),
            heartbeat_interval_secs: default_heartbeat(),
            stall_timeout_secs: default_stall(),
            load_stall_timeout_secs: default_load_stall(),
            devices: default_devices(),
        }
    }
}

/// `[extraction]`: capture settings shared by all cells.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtractionSection {
    /// `residual` or `post_attention_norm`. Example: `site = "post_attention_norm"`.
    #[serde(default = "default_site")]
    pub site: Spanned<Site>,
    /// `last` or `mean` (multiple-choice tasks require `last`). Example: `pooling = "last"`.
    #[serde(default = "default_pooling")]
    pub pooling: Spanned<Pooling>,
    /// Texts per forward pass, 1 ..= 4096. Example: `batch_size = 8`. Not part of any task id.
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

/// `[datasets.NAME]`: the content of a dataset's raw files, for coordinators
/// that cannot read them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatasetPins {
    /// SHA-256 of each raw file, in load order (`sha256sum FILE`).
    pub sha256: Vec<String>,
}

/// One `[[models]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelEntry {
    /// Display name, unique in the grid; not part of any task id. Example: `name = "Qwen1.5-7B"`.
    pub name: Spanned<String>,
    /// Parameter count in billions, in (0, 10000] (orders reports; sizes memory). Example: `size_b = 7.7`.
    pub size_b: Spanned<f64>,
    /// Where the weights come from: `{ kind = "hub", repo = "Qwen/Qwen1.5-7B", revision = "…" }`,
    /// `{ kind = "dir", path = "/models/x" }` or `{ kind = "gguf", path = "${CD_SMOLLM2_GGUF}" }`;
    /// local sources may add `sha256 = "…"` (their content) for coordinators that cannot read them.
    pub source: Spanned<toml::Table>,
    /// Overrides `axes.precisions` for this model. Example: `precisions = ["8"]`.
    #[serde(default)]
    pub precisions: Option<Vec<Spanned<String>>>,
}

/// `[axes]`: the lists crossed with every model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AxesSection {
    /// Dataset names from the registry. Example: `datasets = ["cities", "coinflip"]`.
    pub datasets: Spanned<Vec<Spanned<String>>>,
    /// Precisions: `32`, `16`, `16-f16`, `8` (LLM.int8), `q8_0`. Example: `precisions = ["32", "16", "8"]`.
    pub precisions: Spanned<Vec<Spanned<String>>>,
    /// Noise kinds: `none`, `prefix-aaa-bbb`, `typos:P`. Example: `noise = ["none", "prefix-aaa-bbb"]`.
    #[serde(default = "default_noise")]
    pub noise: Spanned<Vec<Spanned<String>>>,
    /// Prompt modes: `paper` or `cd-legacy`. Example: `prompt_modes = ["paper", "cd-legacy"]`.
    #[serde(default = "default_prompt_modes")]
    pub prompt_modes: Spanned<Vec<Spanned<PromptMode>>>,
    /// Seeds for noise, splits, bootstrap and generators. Example: `seeds = [0, 1, 2]`.
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
fn default_stall() -> Spanned<u64> {
    Spanned::new(0..0, 3600)
}
fn default_load_stall() -> Spanned<u64> {
    Spanned::new(0..0, 14400)
}
fn default_devices() -> Spanned<Vec<DeviceKind>> {
    Spanned::new(0..0, DeviceKind::ALL.to_vec())
}
fn default_site() -> Spanned<Site> {
    Spanned::new(0..0, Site::PostAttentionNorm)
}
fn default_pooling() -> Spanned<Pooling> {
    Spanned::new(0..0, Pooling::Last)
}
fn default_batch() -> Spanned<usize> {
    Spanned::new(0..0, 8)
}
fn default_noise() -> Spanned<Vec<Spanned<String>>> {
    Spanned::new(0..0, vec![Spanned::new(0..0, "none".into())])
}
fn default_prompt_modes() -> Spanned<Vec<Spanned<PromptMode>>> {
    Spanned::new(0..0, vec![Spanned::new(0..0, PromptMode::Paper)])
}
fn default_seeds() -> Spanned<Vec<u64>> {
    Spanned::new(0..0, vec![0])
}
