//! The normalised model configuration ([`ModelConfig`]) and the field
//! reader ([`Fields`]) that `hf_config.rs` and the families read an HF
//! `config.json` with.
//!
//! HF configs are foreign documents with dozens of fields we do not use and
//! several spellings of the same thing across transformers versions (e.g.
//! `rope_theta` at the top level in v4, inside `rope_parameters` in v5), so
//! they are read field by field from a JSON value rather than through a
//! `deny_unknown_fields` struct; every required field that is missing or of
//! the wrong type is reported by name.
//!
//! This module sits below the families: they read their own quirks with
//! [`Fields`] and build layers from a [`ModelConfig`].

use super::activation::Act;
use super::EngineError;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The architecture families the engine implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// LLaMA-2/3, Mistral, SmolLM (and any `LlamaForCausalLM`).
    Llama,
    /// Qwen1.5/2/2.5: LLaMA with q/k/v biases.
    Qwen2,
    /// Gemma (1): `1 + w` RMSNorm, embedding scale, GeGLU (tanh).
    Gemma,
    /// Gemma-3 text models: q/k norms, sandwich norms, local/global layers.
    Gemma3,
}

/// How rotary frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: frequencies divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// LLaMA-3.1 style: low frequencies divided by `factor`, high kept, a
    /// smooth ramp between.
    Llama3 {
        /// The divisor for low frequencies.
        factor: f64,
        /// Wavelength threshold numerator divisor for the low band.
        low_freq_factor: f64,
        /// Wavelength threshold numerator divisor for the high band.
        high_freq_factor: f64,
        /// The pre-training context length.
        original_max_position: usize,
    },
}

/// One RoPE parameterisation (Gemma-3 has two: local and global layers).
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// The base wavelength.
    pub theta: f64,
    /// The scaling rule.
    pub scaling: RopeScaling,
}

/// Per-layer attention kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Attends to every earlier token.
    Global,
    /// Attends to the previous `sliding_window` tokens only.
    Sliding,
}

/// A model's shape and quirks, normalised across HF config spellings.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The architecture family.
    pub arch: Arch,
    /// Residual stream width `d`.
    pub hidden_size: usize,
    /// MLP inner width.
    pub intermediate_size: usize,
    /// Number of transformer blocks `L`.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (GQA when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE for global layers (all layers except Gemma-3's sliding ones).
    pub rope: Rope,
    /// RoPE for sliding-window layers (Gemma-3's local layers); `None` = same as `rope`.
    pub rope_local: Option<Rope>,
    /// Maximum context length.
    pub max_position: usize,
    /// Whether the LM head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Sliding attention window (keys with `q - k < window` are visible).
    pub sliding_window: Option<usize>,
    /// Kind of each layer (`num_layers` entries).
    pub layer_kinds: Vec<LayerKind>,
    /// Biases on q/k/v projections (Qwen2; LLaMA's `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (LLaMA's `attention_bias`).
    pub o_bias: bool,
    /// Biases on the MLP projections (LLaMA's `mlp_bias`).
    pub mlp_bias: bool,
    /// Attention score scale; `head_dim^-0.5` except Gemma-3 (`query_pre_attn_scalar^-0.5`).
    pub attn_scale: f64,
    /// tanh soft cap of the final logits (used by the logit lens only).
    pub final_logit_softcapping: Option<f64>,
    /// tanh soft cap of attention scores.
    pub attn_logit_softcapping: Option<f64>,
    /// The MLP nonlinearity the config's activation name means for this family.
    pub(crate) act: Act,
}

/// An HF config's fields, read one at a time with errors naming the file
/// and the field.
pub(crate) struct Fields<'a> {
    v: &'a Value,
    path: &'a Path,
}

impl<'a> Fields<'a> {
    /// The fields of `v`, the document at `path`.
    pub(crate) fn new(v: &'a Value, path: &'a Path) -> Self {
        Fields { v, path }
    }

    pub(crate) fn err(&self, field: &str, message: impl Into<String>) -> EngineError {
        EngineError::Config {
            path: PathBuf::from(self.path),
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn get(&self, field: &str) -> Option<&Value> {
        self.v.get(field).filter(|v| !v.is_null())
    }

    pub(crate) fn usize_opt(&self, field: &str) -> Result<Option<usize>, EngineError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                self.err(field, format!("expected a non-negative integer, found {v}"))
            }),
        }
    }

    pub(crate) fn usize(&self, field: &str) -> Result<usize, EngineError> {
        self.usize_opt(field)?
            .ok_or_else(|| self.err(field, "missing: expected a non-negative integer"))
    }

    pub(crate) fn f64_opt(&self, field: &str) -> Result<Option<f64>, EngineError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a number, found {v}"))),
        }
    }

    pub(crate) fn bool_or(&self, field: &str, default: bool) -> Result<bool, EngineError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(field, format!("expected true or false, found {v}"))),
        }
    }

    pub(crate) fn str_opt(&self, field: &str) -> Result<Option<&str>, EngineError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a string, found {v}"))),
        }
    }
}

/// One rope parameterisation from `params` (an object named `field` in
/// errors), `default_theta` when it has no `rope_theta`.
pub(crate) fn parse_rope(
    f: &Fields<'_>,
    params: Option<&Value>,
    field: &str,
    default_theta: f64,
) -> Result<Rope, EngineError> {
    let Some(p) = params.filter(|p| !p.is_null()) else {
        return Ok(Rope {
            theta: default_theta,
            scaling: RopeScaling::None,
        });
    };
    if !p.is_object() {
        return Err(f.err(field, format!("expected an object, found {p}")));
    }
    let num = |k: &str| -> Result<Option<f64>, EngineError> {
        match p.get(k).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                f.err(
                    &format!("{field}.{k}"),
                    format!("expected a number, found {v}"),
                )
            }),
        }
    };
    let need = |k: &str| -> Result<f64, EngineError> {
        num(k)?.ok_or_else(|| {
            f.err(
                &format!("{field}.{k}"),
                "missing: required by this rope_type",
            )
        })
    };
    let theta = num("rope_theta")?.unwrap_or(default_theta);
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max_position: need("original_max_position_embeddings")? as usize,
        },
        other => {
            return Err(f.err(
                &format!("{field}.rope_type"),
                format!("unsupported rope type `{other}`: expected default, linear or llama3"),
            ))
        }
    };
    Ok(Rope { theta, scaling })
}

/// The one RoPE of a family whose layers share it: transformers v5's
/// `rope_parameters`, else v4's `rope_scaling` with `rope_theta` on top.
pub(crate) fn single_rope(f: &Fields<'_>, top_theta: f64) -> Result<Rope, EngineError> {
    match f.get("rope_parameters") {
        Some(rp) => parse_rope(f, Some(rp), "rope_parameters", top_theta),
        None => parse_rope(f, f.get("rope_scaling"), "rope_scaling", top_theta),
    }
}

impl ModelConfig {
    /// The RoPE parameterisation of one layer.
    pub(crate) fn rope_for(&self, layer: usize) -> &Rope {
        match (self.layer_kinds[layer], &self.rope_local) {
            (LayerKind::Sliding, Some(local)) => local,
            _ => &self.rope,
        }
    }
}
