//! Reading an HF `config.json` into a [`ModelConfig`]: the fields every
//! family shares are read here, and wherever families differ (defaults,
//! RoPE layout, sliding-window rules, biases, score scale, activation names)
//! the config's [`Family`](super::family::Family) answers.

use super::config::{Arch, Fields, LayerKind, ModelConfig};
use super::EngineError;
use serde_json::Value;
use std::path::Path;

impl ModelConfig {
    /// Parse an HF `config.json`. `path_for_errors` names the file in errors.
    pub fn from_hf_config_json(text: &str, path_for_errors: &Path) -> Result<Self, EngineError> {
        let root: Value = serde_json::from_str(text).map_err(|e| EngineError::Config {
            path: path_for_errors.to_path_buf(),
            field: "(document)".into(),
            message: format!("not valid JSON: {e}"),
        })?;
        // A multimodal checkpoint of some families nests the language
        // model's config under `text_config`.
        let model_type = root.get("model_type").and_then(Value::as_str).unwrap_or("");
        let outer = Arch::from_model_type(model_type);
        let v = match (outer, root.get("text_config")) {
            (Some(arch), Some(tc)) if tc.is_object() && arch.family().nests_text_config() => tc,
            _ => &root,
        };
        let f = Fields::new(v, path_for_errors);
        let type_name = f
            .str_opt("model_type")?
            .or_else(|| (!model_type.is_empty()).then_some(model_type))
            .ok_or_else(|| f.err("model_type", "missing: expected the HF model type"))?;
        let arch =
            Arch::from_model_type(type_name).ok_or_else(|| EngineError::UnknownArchitecture {
                path: path_for_errors.to_path_buf(),
                found: type_name.to_string(),
                expected: Arch::model_type_names(),
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
        let family = arch.family();
        let rms_eps = f.f64_opt("rms_norm_eps")?.unwrap_or(1e-6);
        let top_theta = f
            .f64_opt("rope_theta")?
            .unwrap_or(family.default_rope_theta());
        let max_position = f.usize_opt("max_position_embeddings")?.unwrap_or(4096);
        let (rope, rope_local) = family.ropes(f, top_theta)?;
        let sliding_window = family.sliding_window(f)?;
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
            None => family.default_layer_kinds(f, num_layers, sliding_window)?,
        };

        let attention_bias = f.bool_or("attention_bias", false)?;
        let (qkv_bias, o_bias) = family.attention_biases(attention_bias);
        let attn_scale = family.attention_scale(f, head_dim)?;
        let act_name = f
            .str_opt("hidden_activation")?
            .or(f.str_opt("hidden_act")?)
            .unwrap_or(family.default_activation());
        let act = family.activation(act_name).ok_or_else(|| {
            f.err(
                "hidden_act",
                format!("unsupported activation `{act_name}` for {}", arch.as_str()),
            )
        })?;
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
            tie_word_embeddings: f
                .bool_or("tie_word_embeddings", family.ties_embeddings_by_default())?,
            sliding_window,
            layer_kinds,
            qkv_bias,
            o_bias,
            mlp_bias: f.bool_or("mlp_bias", false)?,
            attn_scale,
            act,
            final_logit_softcapping: f.f64_opt("final_logit_softcapping")?,
            attn_logit_softcapping: f.f64_opt("attn_logit_softcapping")?,
        })
    }
}
