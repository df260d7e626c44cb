//! The specification of one unit of work (a *cell*) and its stable identity.
//!
//! A [`TaskSpec`] fully describes what a worker must compute; its [`TaskId`] is
//! a hash of its canonical JSON form, so the same cell always maps to the same
//! storage keys, retries and resumes agree without a database.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Numeric precision a model runs in, named as the Concept Depth CLI names it.
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
    /// `8`: 8-bit weights (Q8_0 blocks of 32, f32 scale), f32 activations.
    #[serde(rename = "8")]
    Int8,
}

impl Precision {
    /// The short name used in grids, CLIs and metadata (`32`, `16`, `16-f16`, `8`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Precision::F32 => "32",
            Precision::Bf16 => "16",
            Precision::F16 => "16-f16",
            Precision::Int8 => "8",
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
            "8" | "int8" | "q8_0" => Ok(Precision::Int8),
            other => Err(format!(
                "unknown precision `{other}`: expected one of 32, 16, 16-f16, 8"
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

/// A model as named by a grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// Display name, unique within a grid (e.g. `Qwen1.5-7B`).
    pub name: String,
    /// Where the weights come from.
    pub source: ModelSource,
    /// Parameter count in billions, used to order models in reports.
    pub size_b: f64,
}

/// Everything a worker needs to compute one cell. Serialized canonically to
/// derive the [`TaskId`]; adding a field changes every id, so new fields must
/// be `Option` with `skip_serializing_if = "Option::is_none"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Sweep name (a storage prefix).
    pub sweep: String,
    pub kind: TaskKind,
    pub model: ModelRef,
    /// Dataset name from the registry (e.g. `cities`, `truthfulqa_mc`).
    pub dataset: String,
    /// Where the raw dataset files live (local dir, object-store URL or `hf://`).
    pub data_root: String,
    pub precision: Precision,
    /// Noise kind name with parameters, e.g. `none`, `prefix-aaa-bbb`, `typos:0.05`.
    pub noise: String,
    /// Prompt mode: `paper` (per-dataset prompts) or `cd-legacy`.
    pub prompt_mode: String,
    pub site: Site,
    pub pooling: Pooling,
    /// Seed for noise, splits and probe initialisation.
    pub seed: u64,
    /// Probe settings, opaque here (owned by the probe module), as a JSON value.
    pub probe: serde_json::Value,
    /// Batch size for extraction.
    pub batch_size: usize,
    /// Upload the `[N, L, d]` features next to the metrics.
    pub upload_features: bool,
}

/// Stable identity of a task: the first 16 hex digits of the SHA-256 of the
/// spec's canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub String);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TaskSpec {
    /// Canonical JSON: struct fields in declaration order, object keys of
    /// free-form values sorted (serde_json's default map is a BTreeMap).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("TaskSpec always serializes")
    }

    /// The task's stable id.
    pub fn id(&self) -> TaskId {
        let digest = Sha256::digest(self.canonical_json().as_bytes());
        TaskId(hex::encode(&digest[..8]))
    }
}

/// A fully populated spec for tests in this crate, so every module's tests
/// start from the same valid task instead of repeating the literal.
#[cfg(test)]
pub(crate) fn example_spec() -> TaskSpec {
    TaskSpec {
        sweep: "s".into(),
        kind: TaskKind::Probe,
        model: ModelRef {
            name: "m".into(),
            source: ModelSource::Dir { path: "/m".into() },
            size_b: 0.1,
        },
        dataset: "cities".into(),
        data_root: "/d".into(),
        precision: Precision::F32,
        noise: "none".into(),
        prompt_mode: "paper".into(),
        site: Site::Residual,
        pooling: Pooling::Last,
        seed: 0,
        probe: serde_json::json!({"c": 1.0}),
        batch_size: 8,
        upload_features: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_stable_and_sensitive() {
        let a = example_spec();
        assert_eq!(a.id(), example_spec().id());
        assert_eq!(a.id().0.len(), 16);
        let mut b = example_spec();
        b.seed = 1;
        assert_ne!(a.id(), b.id());
        let round: TaskSpec = serde_json::from_str(&a.canonical_json()).unwrap();
        assert_eq!(round.id(), a.id());
    }

    #[test]
    fn precision_names_round_trip() {
        for p in [
            Precision::F32,
            Precision::Bf16,
            Precision::F16,
            Precision::Int8,
        ] {
            assert_eq!(p.as_str().parse::<Precision>().unwrap(), p);
        }
        assert!("4".parse::<Precision>().is_err());
    }
}
