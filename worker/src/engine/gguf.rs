//! Reading a GGUF file as a complete model: HF-style config rebuilt from the
//! `<arch>.*` metadata, weights dequantized and renamed to HF names, and the
//! tokenizer rebuilt from `tokenizer.ggml.*` ([`super::tokenizer_gguf`]).
//!
//! Two conversions undo what llama.cpp's converter did to HF weights:
//! - `llama`: the rows of `attn_q` / `attn_k` were permuted per head (pairs
//!   interleaved for llama.cpp's rotary layout); we apply the inverse
//!   permutation, the same one transformers' GGUF loader applies.
//! - Gemma (`gemma`, `gemma2`, `gemma3`): every RMSNorm weight was stored as
//!   `1 + w`; we subtract 1, since our Gemma blocks (like HF's) scale by `1 + w`.

use super::tokenizer_gguf::{tokenizer_from_gguf, value_i64};
use super::EngineError;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// GGUF architectures we can rebuild (`general.architecture`).
pub(crate) const SUPPORTED_GGUF_ARCHS: &str = "llama, qwen2, gemma, gemma3";

/// Everything a GGUF file provides.
pub(crate) struct GgufModel {
    /// An HF-style `config.json` document rebuilt from the metadata.
    pub config_json: Json,
    /// Dequantized weights under HF names, on the CPU.
    pub tensors: HashMap<String, Tensor>,
    /// The tokenizer rebuilt from the metadata.
    pub tokenizer: tokenizers::Tokenizer,
}

fn format_err(path: &Path, message: impl Into<String>) -> EngineError {
    EngineError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

struct Meta<'a> {
    c: &'a Content,
    arch: String,
    path: PathBuf,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.c.metadata.get(&format!("{}.{key}", self.arch))
    }
    fn int_opt(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(value_i64)
    }
    fn int(&self, key: &str) -> Result<i64, EngineError> {
        self.int_opt(key).ok_or_else(|| {
            format_err(
                &self.path,
                format!("metadata `{}.{key}` missing or not an integer", self.arch),
            )
        })
    }
    fn float_opt(&self, key: &str) -> Option<f64> {
        match self.get(key) {
            Some(Value::F32(v)) => Some(*v as f64),
            Some(Value::F64(v)) => Some(*v),
            Some(other) => value_i64(other).map(|v| v as f64),
            None => None,
        }
    }
}

fn global_i64(c: &Content, key: &str) -> Option<i64> {
    c.metadata.get(key).and_then(value_i64)
}

/// Rebuild an HF `config.json` for the file's architecture.
fn config_json(m: &Meta<'_>, vocab_size: usize, has_output: bool) -> Result<Json, EngineError> {
    let hidden = m.int("embedding_length")?;
    let layers = m.int("block_count")?;
    let heads = m.int("attention.head_count")?;
    let kv_heads = m.int_opt("attention.head_count_kv").unwrap_or(heads);
    let head_dim = m
        .int_opt("attention.key_length")
        .unwrap_or(hidden / heads.max(1));
    let eps = m
        .float_opt("attention.layer_norm_rms_epsilon")
        .unwrap_or(1e-6);
    let ctx = m.int_opt("context_length").unwrap_or(4096);
    let ff = m.int("feed_forward_length")?;
    let theta = m.float_opt("rope.freq_base").unwrap_or(10000.0);
    let mut cfg = json!({
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": eps,
        "max_position_embeddings": ctx,
        "rope_theta": theta,
        "tie_word_embeddings": !has_output,
        "bos_token_id": global_i64(m.c, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": global_i64(m.c, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": global_i64(m.c, "tokenizer.ggml.padding_token_id"),
    });
    let obj = cfg.as_object_mut().expect("object literal");
    // Linear rope scaling is the only kind GGUF metadata spells out.
    if let Some(Value::String(kind)) = m.get("rope.scaling.type") {
        match kind.as_str() {
            "none" => {}
            "linear" => {
                let factor = m.float_opt("rope.scaling.factor").unwrap_or(1.0);
                obj.insert("rope_scaling".into(), json!({"rope_type": "linear", "factor": factor}));
            }
            other => {
                return Err(format_err(
                    &m.path,
                    format!("`{}.rope.scaling.type` is `{other}`: only linear rope scaling is supported in GGUF files", m.arch),
                ))
            }
        }
    }
    // The HF class, model type and activation (under the key each family's
    // config uses) that the architecture's GGUF metadata leaves implicit.
    let (class, model_type, act_key, act) = match m.arch.as_str() {
        "llama" => ("LlamaForCausalLM", "llama", "hidden_act", "silu"),
        "qwen2" => ("Qwen2ForCausalLM", "qwen2", "hidden_act", "silu"),
        "gemma" => (
            "GemmaForCausalLM",
            "gemma",
            "hidden_activation",
            "gelu_pytorch_tanh",
        ),
        "gemma3" => (
            "Gemma3ForCausalLM",
            "gemma3_text",
            "hidden_activation",
            "gelu_pytorch_tanh",
        ),
        other => {
            return Err(EngineError::UnknownArchitecture {
                path: m.path.clone(),
                found: format!("general.architecture = {other}"),
                expected: SUPPORTED_GGUF_ARCHS.to_string(),
            })
        }
    };
    obj.insert("architectures".into(), json!([class]));
    obj.insert("model_type".into(), json!(model_type));
    obj.insert(act_key.into(), json!(act));
    if m.arch == "gemma3" {
        // Not in the metadata: llama.cpp and transformers both use these.
        obj.insert("rope_local_base_freq".into(), json!(10000.0));
        // Gemma-3 27B scales queries by hidden/heads, the others by head_dim
        // (llama.cpp's rule; the 27B model is the one with 62 layers).
        let scalar = if layers == 62 {
            hidden / heads
        } else {
            head_dim
        };
        obj.insert("query_pre_attn_scalar".into(), json!(scalar));
        let window = m.int_opt("attention.sliding_window").unwrap_or(4096);
        obj.insert("sliding_window".into(), json!(window));
        // Five sliding-window layers, then one global, repeating.
        let types: Vec<&str> = (0..layers)
            .map(|i| {
                if (i + 1) % 6 == 0 {
                    "full_attention"
                } else {
                    "sliding_attention"
                }
            })
            .collect();
        obj.insert("layer_types".into(), json!(types));
    }
    Ok(cfg)
}

/// The HF name of a GGUF tensor, or `None` for tensors we do not use.
fn hf_name(arch: &str, gguf: &str) -> Option<String> {
    let (base, suffix) = gguf.rsplit_once('.')?; // suffix: weight | bias
    let global = match base {
        "token_embd" => Some("model.embed_tokens"),
        "output_norm" => Some("model.norm"),
        "output" => Some("lm_head"),
        _ => None,
    };
    if let Some(g) = global {
        return Some(format!("{g}.{suffix}"));
    }
    let rest = base.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let gemma3 = arch == "gemma3" || arch == "gemma2";
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        // In Gemma-2/3 blocks `ffn_norm` is the norm before the MLP, and the
        // post-attention norm is its own tensor.
        "ffn_norm" if gemma3 => "pre_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "post_attention_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Refuse hyperparameters no model can have, or that disagree with the
/// tensors in the file, naming the metadata key: they would otherwise divide
/// by zero, allocate without bound or silently compute something else.
fn check_hyperparameters(m: &Meta<'_>, embedding_rows: usize) -> Result<(), EngineError> {
    let bad = |key: &str, value: i64, expected: String| {
        format_err(
            &m.path,
            format!("metadata `{}.{key}` = {value}: expected {expected}", m.arch),
        )
    };
    let hidden = m.int("embedding_length")?;
    if hidden < 1 {
        return Err(bad(
            "embedding_length",
            hidden,
            "a positive hidden size".into(),
        ));
    }
    let heads = m.int("attention.head_count")?;
    if heads < 1 || heads > hidden {
        return Err(bad(
            "attention.head_count",
            heads,
            format!("between 1 and embedding_length = {hidden}"),
        ));
    }
    if let Some(kv) = m.int_opt("attention.head_count_kv") {
        if kv < 1 || heads % kv != 0 {
            return Err(bad(
                "attention.head_count_kv",
                kv,
                format!("a positive divisor of attention.head_count = {heads}"),
            ));
        }
    }
    let head_dim = m.int_opt("attention.key_length").unwrap_or(hidden / heads);
    if head_dim < 1 || (m.int_opt("attention.key_length").is_none() && hidden % heads != 0) {
        return Err(bad(
            "attention.head_count",
            heads,
            format!("a divisor of embedding_length = {hidden}"),
        ));
    }
    // The blocks the file holds tensors for.
    let present =
        m.c.tensor_infos
            .keys()
            .filter_map(|k| {
                k.strip_prefix("blk.")?
                    .split('.')
                    .next()?
                    .parse::<i64>()
                    .ok()
            })
            .max()
            .map_or(0, |last| last + 1);
    let blocks = m.int("block_count")?;
    if blocks < 1 || blocks != present {
        return Err(bad(
            "block_count",
            blocks,
            format!("the {present} blocks (`blk.N.*` tensors) the file holds"),
        ));
    }
    if let Some(vocab) = m.int_opt("vocab_size") {
        if vocab != embedding_rows as i64 {
            return Err(bad(
                "vocab_size",
                vocab,
                format!("the {embedding_rows} rows of `token_embd.weight`"),
            ));
        }
    }
    if let Some(rope) = m.int_opt("rope.dimension_count") {
        if rope < 2 || rope % 2 != 0 || rope > head_dim {
            return Err(bad(
                "rope.dimension_count",
                rope,
                format!("an even number between 2 and the head size {head_dim}"),
            ));
        }
    }
    let ff = m.int("feed_forward_length")?;
    if ff < 1 {
        return Err(bad("feed_forward_length", ff, "a positive size".into()));
    }
    Ok(())
}

/// Inverse of llama.cpp's per-head row permutation of Q/K projections:
/// GGUF row `h*hd + 2*i + j` holds HF row `h*hd + j*hd/2 + i`.
fn unpermute_rows(t: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let half = rows / n_head / 2;
    let rest: usize = dims[1..].iter().product();
    t.reshape((n_head, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// Read a GGUF file: metadata, tokenizer and dequantized weights (stored as
/// `dtype` on the CPU; the model moves them to their devices).
pub(crate) fn read_gguf(path: &Path, dtype: DType) -> Result<GgufModel, EngineError> {
    let io = |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    header::check(&mut file, path)?;
    std::io::Seek::rewind(&mut file).map_err(io)?;
    let content = Content::read(&mut file).map_err(|e| {
        format_err(
            path,
            format!("not a readable GGUF file (corrupt or truncated?): {e}"),
        )
    })?;
    let arch = match content.metadata.get("general.architecture") {
        Some(Value::String(a)) => a.clone(),
        _ => {
            return Err(format_err(
                path,
                "metadata `general.architecture` missing: expected e.g. llama",
            ))
        }
    };
    if !["llama", "qwen2", "gemma", "gemma3"].contains(&arch.as_str()) {
        return Err(EngineError::UnknownArchitecture {
            path: path.to_path_buf(),
            found: format!("general.architecture = {arch}"),
            expected: SUPPORTED_GGUF_ARCHS.to_string(),
        });
    }
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(format_err(
            path,
            "the file carries `rope_freqs.weight` (LLaMA-3.1-style rope frequency factors), which GGUF \
             loading does not support yet: use the HF-format checkpoint instead",
        ));
    }
    let tokenizer = tokenizer_from_gguf(&content, &arch).map_err(|e| {
        format_err(
            path,
            format!("cannot rebuild the tokenizer from GGUF metadata: {e}"),
        )
    })?;
    let vocab_size = match content.tensor_infos.get("token_embd.weight") {
        Some(info) => info.shape.dims()[0],
        None => {
            return Err(format_err(
                path,
                "no `token_embd.weight` tensor: expected token embeddings",
            ))
        }
    };
    let meta = Meta {
        c: &content,
        arch: arch.clone(),
        path: path.to_path_buf(),
    };
    let config = config_json(
        &meta,
        vocab_size,
        content.tensor_infos.contains_key("output.weight"),
    )?;
    check_hyperparameters(&meta, vocab_size)?;
    let heads = meta.int("attention.head_count")? as usize;
    let kv_heads = meta
        .int_opt("attention.head_count_kv")
        .map(|v| v as usize)
        .unwrap_or(heads);

    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = HashMap::with_capacity(names.len());
    for name in names {
        let Some(hf) = hf_name(&arch, name) else {
            tracing::warn!(tensor = %name, file = %path.display(), "unused gguf tensor");
            continue;
        };
        let bad = |e: candle_core::Error| format_err(path, format!("tensor `{name}`: {e}"));
        let q = content.tensor(&mut file, name, &Device::Cpu).map_err(bad)?;
        let mut t = q.dequantize(&Device::Cpu).map_err(bad)?;
        if arch == "llama" {
            if name.contains(".attn_q.") {
                t = unpermute_rows(&t, heads).map_err(bad)?;
            } else if name.contains(".attn_k.") {
                t = unpermute_rows(&t, kv_heads).map_err(bad)?;
            }
        }
        if arch.starts_with("gemma") && name.ends_with("norm.weight") {
            t = (t - 1.0).map_err(bad)?;
        }
        let t = t.to_dtype(dtype).map_err(bad)?;
        tensors.insert(hf, t);
    }
    Ok(GgufModel {
        config_json: config,
        tensors,
        tokenizer,
    })
}

mod header;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hf() {
        for (arch, gguf, hf) in [
            ("llama", "token_embd.weight", "model.embed_tokens.weight"),
            (
                "llama",
                "blk.3.attn_q.weight",
                "model.layers.3.self_attn.q_proj.weight",
            ),
            (
                "llama",
                "blk.0.ffn_norm.weight",
                "model.layers.0.post_attention_layernorm.weight",
            ),
            (
                "gemma3",
                "blk.0.ffn_norm.weight",
                "model.layers.0.pre_feedforward_layernorm.weight",
            ),
            (
                "gemma3",
                "blk.1.post_attention_norm.weight",
                "model.layers.1.post_attention_layernorm.weight",
            ),
            (
                "qwen2",
                "blk.2.attn_k.bias",
                "model.layers.2.self_attn.k_proj.bias",
            ),
        ] {
            assert_eq!(hf_name(arch, gguf).unwrap(), hf, "{arch} `{gguf}`");
        }
        assert!(hf_name("llama", "rope_freqs.weight").is_none());
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2).reshape(w.shape)
        let (n_head, hd, inp) = (2usize, 4usize, 3usize);
        let hf: Vec<f32> = (0..n_head * hd * inp).map(|x| x as f32).collect();
        let hf = Tensor::from_vec(hf, (n_head * hd, inp), &Device::Cpu).unwrap();
        let permuted = hf
            .reshape((n_head, 2, hd / 2, inp))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((n_head * hd, inp))
            .unwrap();
        let back = unpermute_rows(&permuted, n_head).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), hf.to_vec2::<f32>().unwrap());
        assert_ne!(
            permuted.to_vec2::<f32>().unwrap(),
            hf.to_vec2::<f32>().unwrap()
        );
    }
}
