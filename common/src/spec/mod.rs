//! The specification of one unit of work (a *cell*) and its identity.
//!
//! A [`TaskSpec`] is the resolved, typed description of a cell: the grid
//! builds it (validating every field on the way) and a worker executes it as
//! it is; nothing re-parses strings. It holds two kinds of fields:
//!
//! - **identity**: everything that changes the result (model and dataset
//!   *content*, precision, noise, prompt, capture, seed, probe, split, depth
//!   and multiple-choice settings, the spec schema). The [`TaskId`] is a hash
//!   of exactly these ([`TaskSpec::identity_json`]);
//! - **location and presentation**: where the files are (`data_root`, the
//!   model's path), the display name and size, the batch size and whether
//!   features are uploaded. Moving the data, renaming a model or changing the
//!   batch size keeps every id, so a sweep resumes without recomputing.
//!
//! Model identity is the Hub repository and revision, or the SHA-256 of the
//! weights and tokenizer files for local directories and GGUF files; dataset
//! identity is the SHA-256 of its manifest and of each raw file
//! (`crate::content`).
//!
//! Why this file is long: the spec's fields, their serde forms and the
//! canonical JSON that task ids hash must be read together; `resolve.rs`
//! already holds the checks.

mod resolve;

pub use resolve::{ResolvedDataset, ResolvedTask, Work};

use crate::datasets::{NoiseKind, PromptMode};
use crate::depth::DepthConfig;
use crate::probe::mc::McConfig;
use crate::probe::ProbeConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Version of the spec layout and of the id derivation. Bumped whenever ids
/// of unchanged cells would change; stores written by another version are
/// refused (see `storage::Store::check_schema`).
pub const SPEC_SCHEMA: u32 = 2;

/// Numeric precision a model runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Precision {
    /// `32`: f32 weights and activations.
    #[serde(rename = "32")]
    F32,
    /// `16`: bf16 weights and activations (what the paper used).
    #[serde(rename = "16")]
    Bf16,
    /// `16-f16`: f16 weights and activations.
    #[serde(rename = "16-f16")]
    F16,
    /// `8`: LLM.int8() as the paper's `load_in_8bit` ran it: int8 weights per
    /// output row for every linear layer but the LM head, f16 activations,
    /// vector-wise int8 activations with outlier columns (|x| ≥ 6) in f16.
    #[serde(rename = "8")]
    Int8,
    /// `q8_0`: GGML Q8_0 weights (blocks of 32 with one scale), f32 activations.
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl Precision {
    /// Every precision, in the order tables list them.
    pub const ALL: [Precision; 5] = [
        Precision::F32,
        Precision::Bf16,
        Precision::F16,
        Precision::Int8,
        Precision::Q8_0,
    ];

    /// The short name used in grids, CLIs and metadata (`32`, `16`, `16-f16`, `8`, `q8_0`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Precision::F32 => "32",
            Precision::Bf16 => "16",
            Precision::F16 => "16-f16",
            Precision::Int8 => "8",
            Precision::Q8_0 => "q8_0",
        }
    }

    /// What the precision means, for metadata and messages.
    pub fn scheme(&self) -> &'static str {
        match self {
            Precision::F32 => "f32 weights and activations",
            Precision::Bf16 => "bf16 weights and activations",
            Precision::F16 => "f16 weights and activations",
            Precision::Int8 => "LLM.int8(): int8 row-wise weights (LM head excepted), f16 activations, vector-wise int8 activations with |x| >= 6.0 outlier columns in f16",
            Precision::Q8_0 => "GGML Q8_0 weights (32-value blocks, f32 scale), f32 activations",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "32" | "f32" => Ok(Precision::F32),
            "16" | "bf16" => Ok(Precision::Bf16),
            "16-f16" | "f16" => Ok(Precision::F16),
            "8" | "int8" | "llm.int8" => Ok(Precision::Int8),
            "q8_0" => Ok(Precision::Q8_0),
            other => Err(format!(
                "unknown precision `{other}`: expected one of 32, 16, 16-f16, 8 (LLM.int8), q8_0"
            )),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where inside the network a representation is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    /// Embedding output plus every block's output (HF `hidden_states`): L+1 vectors.
    Residual,
    /// Output of each block's post-attention RMSNorm (the Concept Depth probe site): L vectors.
    PostAttentionNorm,
}

impl Site {
    /// The name used on the command line and in metadata.
    pub fn as_str(&self) -> &'static str {
        match self {
            Site::Residual => "residual",
            Site::PostAttentionNorm => "post_attention_norm",
        }
    }
}

impl std::str::FromStr for Site {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "residual" => Ok(Site::Residual),
            "post_attention_norm" => Ok(Site::PostAttentionNorm),
            other => Err(format!(
                "unknown capture site `{other}`: expected residual or post_attention_norm"
            )),
        }
    }
}

/// How a text's token vectors are reduced to one vector per layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The last real (non-pad) token.
    Last,
    /// The mean over real tokens.
    Mean,
}

impl Pooling {
    /// The name used on the command line and in metadata.
    pub fn as_str(&self) -> &'static str {
        match self {
            Pooling::Last => "last",
            Pooling::Mean => "mean",
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "last" => Ok(Pooling::Last),
            "mean" => Ok(Pooling::Mean),
            other => Err(format!("unknown pooling `{other}`: expected last or mean")),
        }
    }
}

/// Where a model's weights come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSource {
    /// A local HF-format directory (`config.json`, `*.safetensors`, `tokenizer.json`).
    Dir { path: String },
    /// A repository on the HF Hub, optionally at a revision.
    Hub {
        repo: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<String>,
    },
    /// A single GGUF file (weights and tokenizer).
    Gguf { path: String },
}

impl ModelSource {
    /// Interpret a CLI `--model` argument: an existing `.gguf` file, an existing
    /// directory, otherwise an HF Hub repo id (`org/name[@revision]`).
    pub fn parse_cli(arg: &str) -> ModelSource {
        let p = std::path::Path::new(arg);
        if arg.ends_with(".gguf") {
            return ModelSource::Gguf {
                path: arg.to_string(),
            };
        }
        if p.is_dir() {
            return ModelSource::Dir {
                path: arg.to_string(),
            };
        }
        match arg.split_once('@') {
            Some((repo, rev)) => ModelSource::Hub {
                repo: repo.to_string(),
                revision: Some(rev.to_string()),
            },
            None => ModelSource::Hub {
                repo: arg.to_string(),
                revision: None,
            },
        }
    }

    /// The identity of a Hub source (repository and revision, `main` when
    /// none is pinned); `None` for local files, whose identity is their content.
    pub fn hub_identity(&self) -> Option<ModelIdentity> {
        match self {
            ModelSource::Hub { repo, revision } => Some(ModelIdentity::Hub {
                repo: repo.clone(),
                revision: revision.clone().unwrap_or_else(|| "main".into()),
            }),
            _ => None,
        }
    }
}

/// What a model *is*, independent of where its files are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelIdentity {
    /// A Hub repository at a revision (`main` when the grid pins none: pin a
    /// commit for results that stay reproducible when the repository moves on).
    Hub {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
    },
    /// SHA-256 of the weights and tokenizer (`crate::content`).
    Content {
        /// Lower-case hex.
        sha256: String,
    },
}

impl fmt::Display for ModelIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelIdentity::Hub { repo, revision } => write!(f, "hf:{repo}@{revision}"),
            ModelIdentity::Content { sha256 } => write!(f, "sha256:{sha256}"),
        }
    }
}

/// What a task computes from the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Concept Depth: per-layer linear probes on pooled features of a binary dataset.
    Probe,
    /// Probing across scales: per-layer logit-lens multiple-choice scoring.
    MultipleChoice,
}

impl TaskKind {
    /// The kind as messages name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskKind::Probe => "probe",
            TaskKind::MultipleChoice => "multiple-choice",
        }
    }
}

/// A model as named by a grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// Display name, unique within a grid (e.g. `Qwen1.5-7B`).
    pub name: String,
    /// Where the weights come from.
    pub source: ModelSource,
    /// Parameter count in billions, used to order models in reports and size memory.
    pub size_b: f64,
    /// What the weights are (part of the task id).
    pub identity: ModelIdentity,
}

/// What a dataset *is*, independent of where its files are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetIdentity {
    /// SHA-256 of the dataset's manifest (class rules, caps, prompts, generator).
    pub manifest_sha256: String,
    /// SHA-256 of each raw file, in load order; empty for generated datasets.
    pub files_sha256: Vec<String>,
}

/// A dataset as a task names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRef {
    /// Registry name with any `/parameter` (e.g. `cities`, `coinflip_gen/2000`).
    pub name: String,
    /// What the data is (part of the task id).
    pub identity: DatasetIdentity,
}

/// Everything a worker needs to compute one cell, resolved and typed.
///
/// Adding a field changes the layout: bump [`SPEC_SCHEMA`] when it changes
/// the identity of existing cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// [`SPEC_SCHEMA`] when written.
    pub schema: u32,
    /// Sweep name (a storage prefix).
    pub sweep: String,
    /// Probe or multiple choice.
    pub kind: TaskKind,
    /// The model.
    pub model: ModelRef,
    /// The dataset.
    pub dataset: DatasetRef,
    /// Where the raw dataset files live (local dir, object-store URL or `hf://`).
    pub data_root: String,
    /// Numeric precision.
    pub precision: Precision,
    /// Input perturbation.
    pub noise: NoiseKind,
    /// `paper` (per-dataset prompts) or `cd-legacy`.
    pub prompt_mode: PromptMode,
    /// Capture site.
    pub site: Site,
    /// Token pooling.
    pub pooling: Pooling,
    /// Seed for noise, splits, bootstrap and generated datasets.
    pub seed: u64,
    /// Probe settings (probe tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeConfig>,
    /// Concept-depth rules and bootstrap (probe tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<DepthConfig>,
    /// Scoring settings (multiple-choice tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mc: Option<McConfig>,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Upload the `[N, L, d]` features next to the metrics.
    pub upload_features: bool,
}

/// Stable identity of a task: the first 16 hex digits of the SHA-256 of the
/// spec's identity fields ([`TaskSpec::identity_json`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub String);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fields of a spec that change its result, in a fixed order.
#[derive(Serialize)]
struct Identity<'a> {
    schema: u32,
    kind: TaskKind,
    model: &'a ModelIdentity,
    dataset: &'a str,
    dataset_identity: &'a DatasetIdentity,
    precision: Precision,
    noise: &'a NoiseKind,
    prompt_mode: PromptMode,
    site: Site,
    pooling: Pooling,
    seed: u64,
    probe: &'a Option<ProbeConfig>,
    depth: &'a Option<DepthConfig>,
    mc: &'a Option<McConfig>,
}

impl TaskSpec {
    /// The whole spec as canonical JSON (fields in declaration order, maps
    /// sorted): what `spec.json` holds and what a lease carries.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("TaskSpec always serializes")
    }

    /// Canonical JSON of the identity fields only: what the id hashes.
    pub(crate) fn identity_json(&self) -> String {
        serde_json::to_string(&Identity {
            schema: self.schema,
            kind: self.kind,
            model: &self.model.identity,
            dataset: &self.dataset.name,
            dataset_identity: &self.dataset.identity,
            precision: self.precision,
            noise: &self.noise,
            prompt_mode: self.prompt_mode,
            site: self.site,
            pooling: self.pooling,
            seed: self.seed,
            probe: &self.probe,
            depth: &self.depth,
            mc: &self.mc,
        })
        .expect("identity always serializes")
    }

    /// The task's stable id.
    pub fn id(&self) -> TaskId {
        let digest = Sha256::digest(self.identity_json().as_bytes());
        TaskId(hex::encode(&digest[..8]))
    }

    /// Parse a spec received from a coordinator or read from a store,
    /// refusing other layouts with the version found.
    pub fn from_json(text: &str) -> Result<TaskSpec, SpecError> {
        #[derive(Deserialize)]
        struct Schema {
            #[serde(default)]
            schema: Option<u32>,
        }
        let found = serde_json::from_str::<Schema>(text)
            .map_err(|e| SpecError::Json(e.to_string()))?
            .schema
            .unwrap_or(1);
        if found != SPEC_SCHEMA {
            return Err(SpecError::Schema { found });
        }
        let spec: TaskSpec =
            serde_json::from_str(text).map_err(|e| SpecError::Json(e.to_string()))?;
        spec.resolve()?;
        Ok(spec)
    }
}

/// Largest batch size a spec may ask for.
pub(crate) const MAX_BATCH: usize = 4096;

/// A spec that cannot be executed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// Written by another layout version.
    #[error("task spec has schema {found}; this build reads schema {SPEC_SCHEMA} (coordinator and worker versions differ)")]
    Schema {
        /// The version found (1 when absent).
        found: u32,
    },
    /// Not a spec.
    #[error("task spec: {0}")]
    Json(String),
    /// Values out of range or missing settings.
    #[error("task spec: {0}")]
    Invalid(String),
    /// The dataset the spec names is unknown, of the other kind, or its
    /// name's parameter is not one the dataset takes.
    #[error("task spec: dataset `{name}`: {message}")]
    Dataset {
        /// The name as the spec writes it.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// A fully populated probe spec for tests (this crate's, and others' through
/// the `test-support` feature), so tests start from the same valid task
/// instead of repeating the literal.
#[cfg(any(test, feature = "test-support"))]
pub fn example_spec() -> TaskSpec {
    TaskSpec {
        schema: SPEC_SCHEMA,
        sweep: "s".into(),
        kind: TaskKind::Probe,
        model: ModelRef {
            name: "m".into(),
            source: ModelSource::Dir { path: "/m".into() },
            size_b: 0.1,
            identity: ModelIdentity::Content {
                sha256: "00".repeat(32),
            },
        },
        dataset: DatasetRef {
            name: "cities".into(),
            identity: DatasetIdentity {
                manifest_sha256: "11".repeat(32),
                files_sha256: vec!["22".repeat(32)],
            },
        },
        data_root: "/d".into(),
        precision: Precision::F32,
        noise: NoiseKind::None,
        prompt_mode: PromptMode::Paper,
        site: Site::Residual,
        pooling: Pooling::Last,
        seed: 0,
        probe: Some(ProbeConfig::default()),
        depth: Some(DepthConfig::default()),
        mc: None,
        batch_size: 8,
        upload_features: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_stable_and_sensitive_to_what_changes_results() {
        let a = example_spec();
        assert_eq!(a.id(), example_spec().id());
        assert_eq!(a.id().0.len(), 16);
        let mut b = example_spec();
        b.seed = 1;
        assert_ne!(a.id(), b.id());
        let mut c = example_spec();
        c.dataset.identity.files_sha256 = vec!["33".repeat(32)];
        assert_ne!(a.id(), c.id(), "other data, other cell");
        let round = TaskSpec::from_json(&a.canonical_json()).unwrap();
        assert_eq!(round, a);
    }

    #[test]
    fn id_ignores_locations_names_and_batching() {
        let a = example_spec();
        let mut b = example_spec();
        b.data_root = "s3://elsewhere/data".into();
        b.model.source = ModelSource::Gguf {
            path: "/moved/model.gguf".into(),
        };
        b.model.name = "renamed".into();
        b.model.size_b = 7.0;
        b.batch_size = 32;
        b.upload_features = false;
        b.sweep = "other".into();
        assert_eq!(a.id(), b.id());
    }

    #[test]
    fn other_schemas_are_refused_with_the_version() {
        let mut v: serde_json::Value =
            serde_json::from_str(&example_spec().canonical_json()).unwrap();
        v.as_object_mut().unwrap().remove("schema");
        let err = TaskSpec::from_json(&v.to_string()).unwrap_err();
        assert_eq!(err, SpecError::Schema { found: 1 });
        let mut mc = example_spec();
        mc.kind = TaskKind::MultipleChoice;
        assert!(matches!(mc.resolve(), Err(SpecError::Invalid(_))));
    }

    #[test]
    fn precision_names_round_trip() {
        for p in Precision::ALL {
            assert_eq!(p.as_str().parse::<Precision>().unwrap(), p);
        }
        assert!("4".parse::<Precision>().is_err());
    }
}
