//! The normalised model configuration, read from an HF `config.json`.
//!
//! HF configs are foreign documents with dozens of fields we do not use and
//! several spellings of the same thing across transformers versions (e.g.
//! `rope_theta` at the top level in v4, inside `rope_parameters` in v5), so
//! they are read field by field from a JSON value rather than through a
//! `deny_unknown_fields` struct; every required field that is missing or of
//! the wrong type is reported by name.
//!
//! Why this file is long: one normalised config for every family, read from HF
//! `config.json`, with each family's defaults beside the field they fill.

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

impl Arch {
    /// The HF `model_type` names accepted for each family.
    const NAMES: &'static str = "llama, mistral, qwen2, gemma, gemma3_text (or gemma3)";

    /// The family's name as used in metadata.
    pub fn as_str(&self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma => "gemma",
            Arch::Gemma3 => "gemma3",
        }
    }

    fn from_model_type(t: &str) -> Option<Arch> {
        match t {
            "llama" | "mistral" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "gemma" => Some(Arch::Gemma),
            "gemma3_text" | "gemma3" => Some(Arch::Gemma3),
            _ => None,
        }
    }
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
}

struct Fields<'a> {
    v: &'a Value,
    path: &'a Path,
}

impl Fields<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> EngineError {
        EngineError::Config {
            path: PathBuf::from(self.path),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.v.get(field).filter(|v| !v.is_null())
    }

    fn usize_opt(&self, field: &str) -> Result<Option<usize>, EngineError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                self.err(field, format!("expected a non-negative integer, found {v}"))
            }),
        }
    }

    fn usize(&self, field: &str) -> Result<usize, EngineError> {
        self.usize_opt(field)?
            .ok_or_else(|| self.err(field, "missing: expected a non-negative integer"))
    }

    fn f64_opt(&self, field: &str) -> Result<Option<f64>, EngineError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a number, found {v}"))),
        }
    }

    fn bool_or(&self, field: &str, default: bool) -> Result<bool, EngineError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(field, format!("expected true or false, found {v}"))),
        }
    }

    fn str_opt(&self, field: &str) -> Result<Option<&str>, EngineError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a string, found {v}"))),
        }
    }
}

fn parse_rope(
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

impl ModelConfig {
    /// Parse an HF `config.json`. `path_for_errors` names the file in errors.
    pub fn from_hf_config_json(text: &str, path_for_errors: &Path) -> Result<Self, EngineError> {
        let root: Value = serde_json::from_str(text).map_err(|e| EngineError::Config {
            path: path_for_errors.to_path_buf(),
            field: "(document)".into(),
            message: format!("not valid JSON: {e}"),
        })?;
        // Multimodal Gemma-3 checkpoints nest the language model's config.
        let model_type = root.get("model_type").and_then(Value::as_str).unwrap_or("");
        let v = match (model_type, root.get("text_config")) {
            ("gemma3", Some(tc)) if tc.is_object() => tc,
            _ => &root,
        };
        let f = Fields {
            v,
            path: path_for_errors,
        };
        let type_name = f
            .str_opt("model_type")?
            .or_else(|| (!model_type.is_empty()).then_some(model_type))
            .ok_or_else(|| f.err("model_type", "missing: expected the HF model type"))?;
        let arch =
            Arch::from_model_type(type_name).ok_or_else(|| EngineError::UnknownArchitecture {
                path: path_for_errors.to_path_buf(),
                found: type_name.to_string(),
                expected: Arch::NAMES.to_string(),
            })?;
        Self::from_fields(&f, arch)
    }

    fn from_fields(f: &Fields<'_>, arch: Arch) -> Result<Self, EngineError> {
        let hidden_size = f.usize("hidden_size")?;
        let num_heads = f.usize("num_attention_heads")?;
        let num_layers = f.usize("num_hidden_layers")?;
        if f.usize("vocab_size")? == 0 {
            return Err(f.err("vocab_size", "must be positive"));
        }
        if num_heads == 0 || num_layers == 0 || hidden_size == 0 {
            return Err(f.err(
                "hidden_size",
                "hidden_size, num_attention_heads and num_hidden_layers must be positive",
            ));
        }
        let num_kv_heads = f.usize_opt("num_key_value_heads")?.unwrap_or(num_heads);
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(f.err(
                "num_key_value_heads",
                format!("{num_kv_heads} does not divide num_attention_heads = {num_heads}"),
            ));
        }
        let head_dim = match f.usize_opt("head_dim")? {
            Some(h) => h,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(f.err(
                    "head_dim",
                    "missing and hidden_size is not a multiple of num_attention_heads",
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(f.err(
                "head_dim",
                format!("{head_dim} is odd: rotary embeddings need an even width"),
            ));
        }
        let (default_eps, default_theta, default_tie) = match arch {
            Arch::Llama => (1e-6, 10_000.0, false),
            Arch::Qwen2 => (1e-6, 10_000.0, false),
            Arch::Gemma => (1e-6, 10_000.0, true),
            Arch::Gemma3 => (1e-6, 1_000_000.0, true),
        };
        let rms_eps = f.f64_opt("rms_norm_eps")?.unwrap_or(default_eps);
        let top_theta = f.f64_opt("rope_theta")?.unwrap_or(default_theta);
        let max_position = f.usize_opt("max_position_embeddings")?.unwrap_or(4096);

        // transformers v5 writes `rope_parameters`; v4 writes `rope_theta` + `rope_scaling`.
        let (rope, rope_local) = if arch == Arch::Gemma3 {
            let local_theta = f.f64_opt("rope_local_base_freq")?.unwrap_or(10_000.0);
            let (global, local) = match f.get("rope_parameters") {
                Some(rp) if rp.get("full_attention").is_some() => (
                    parse_rope(
                        f,
                        rp.get("full_attention"),
                        "rope_parameters.full_attention",
                        top_theta,
                    )?,
                    parse_rope(
                        f,
                        rp.get("sliding_attention"),
                        "rope_parameters.sliding_attention",
                        local_theta,
                    )?,
                ),
                _ => (
                    parse_rope(f, f.get("rope_scaling"), "rope_scaling", top_theta)?,
                    Rope {
                        theta: local_theta,
                        scaling: RopeScaling::None,
                    },
                ),
            };
            (global, Some(local))
        } else {
            let rope = match f.get("rope_parameters") {
                Some(rp) => parse_rope(f, Some(rp), "rope_parameters", top_theta)?,
                None => parse_rope(f, f.get("rope_scaling"), "rope_scaling", top_theta)?,
            };
            (rope, None)
        };

        let sliding_window = match arch {
            Arch::Qwen2 if !f.bool_or("use_sliding_window", false)? => None,
            _ => f.usize_opt("sliding_window")?,
        };
        let layer_kinds = match f.get("layer_types") {
            Some(Value::Array(items)) => {
                if items.len() != num_layers {
                    return Err(f.err(
                        "layer_types",
                        format!(
                            "has {} entries, expected num_hidden_layers = {num_layers}",
                            items.len()
                        ),
                    ));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, t)| match t.as_str() {
                        Some("full_attention") => Ok(LayerKind::Global),
                        Some("sliding_attention") if sliding_window.is_some() => {
                            Ok(LayerKind::Sliding)
                        }
                        Some("sliding_attention") => Ok(LayerKind::Global),
                        _ => Err(f.err(
                            &format!("layer_types[{i}]"),
                            format!("expected full_attention or sliding_attention, found {t}"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some(other) => {
                return Err(f.err("layer_types", format!("expected a list, found {other}")))
            }
            None => match arch {
                Arch::Gemma3 => {
                    let pattern = f.usize_opt("sliding_window_pattern")?.unwrap_or(6).max(1);
                    (0..num_layers)
                        .map(|i| {
                            if (i + 1) % pattern != 0 && sliding_window.is_some() {
                                LayerKind::Sliding
                            } else {
                                LayerKind::Global
                            }
                        })
                        .collect()
                }
                Arch::Qwen2 if sliding_window.is_some() => {
                    let first = f.usize_opt("max_window_layers")?.unwrap_or(num_layers);
                    (0..num_layers)
                        .map(|i| {
                            if i >= first {
                                LayerKind::Sliding
                            } else {
                                LayerKind::Global
                            }
                        })
                        .collect()
                }
                _ if sliding_window.is_some() => vec![LayerKind::Sliding; num_layers],
                _ => vec![LayerKind::Global; num_layers],
            },
        };

        let attention_bias = f.bool_or("attention_bias", false)?;
        let (qkv_bias, o_bias) = match arch {
            Arch::Qwen2 => (true, false),
            _ => (attention_bias, attention_bias),
        };
        let attn_scale = match arch {
            Arch::Gemma3 => {
                let s = f.f64_opt("query_pre_attn_scalar")?.unwrap_or(256.0);
                if s <= 0.0 {
                    return Err(f.err("query_pre_attn_scalar", "must be positive"));
                }
                s.powf(-0.5)
            }
            _ => (head_dim as f64).powf(-0.5),
        };
        let act = f
            .str_opt("hidden_activation")?
            .or(f.str_opt("hidden_act")?)
            .unwrap_or(match arch {
                Arch::Gemma | Arch::Gemma3 => "gelu_pytorch_tanh",
                _ => "silu",
            });
        // Gemma's legacy `gelu` means the tanh approximation (as transformers reads it).
        let act_ok = match arch {
            Arch::Gemma | Arch::Gemma3 => matches!(act, "gelu_pytorch_tanh" | "gelu"),
            _ => act == "silu",
        };
        if !act_ok {
            return Err(f.err(
                "hidden_act",
                format!("unsupported activation `{act}` for {}", arch.as_str()),
            ));
        }
        Ok(ModelConfig {
            arch,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: f.usize("vocab_size")?,
            rms_eps,
            rope,
            rope_local,
            max_position,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", default_tie)?,
            sliding_window,
            layer_kinds,
            qkv_bias,
            o_bias,
            mlp_bias: f.bool_or("mlp_bias", false)?,
            attn_scale,
            final_logit_softcapping: f.f64_opt("final_logit_softcapping")?,
            attn_logit_softcapping: f.f64_opt("attn_logit_softcapping")?,
        })
    }

    /// The RoPE parameterisation of one layer.
    pub fn rope_for(&self, layer: usize) -> &Rope {
        match (self.layer_kinds[layer], &self.rope_local) {
            (LayerKind::Sliding, Some(local)) => local,
            _ => &self.rope,
        }
    }
}
