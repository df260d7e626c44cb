//! Randomly initialised models of a named shape, for benchmarks and device
//! checks that must not download weights: the real engine
//! ([`Model::new`](super::Model::new)) over uniform weights with a trained
//! model's spread, and a word-level tokenizer under which a text of `k`
//! words is exactly `k` tokens.

use super::{DeviceMap, Model, ModelConfig, Precision};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

/// The shapes [`shape_config`] knows, as `--config` names them.
pub(crate) const SHAPES: &[&str] = &[
    "llama2-7b",
    "llama2-13b",
    "llama2-70b",
    "smollm2-135m",
    "tiny",
];

/// The HF `config.json` of a named shape, with `layers` overriding the depth.
pub fn shape_config(name: &str, layers: Option<usize>) -> Result<serde_json::Value> {
    // (hidden, intermediate, layers, heads, kv heads, vocab, tied, rope theta)
    let (h, i, l, nh, kv, v, tied, theta) = match name {
        "llama2-7b" => (4096, 11008, 32, 32, 32, 32000, false, 10_000.0),
        "llama2-13b" => (5120, 13824, 40, 40, 40, 32000, false, 10_000.0),
        "llama2-70b" => (8192, 28672, 80, 64, 8, 32000, false, 10_000.0),
        "smollm2-135m" => (576, 1536, 30, 9, 3, 49152, true, 100_000.0),
        "tiny" => (64, 128, 4, 4, 2, 512, false, 10_000.0),
        other => bail!(
            "unknown model shape `{other}`: expected one of {}",
            SHAPES.join(", ")
        ),
    };
    let l = match layers {
        Some(0) => bail!("a model needs at least 1 layer"),
        Some(n) if n > l => bail!("{n} layers: the {name} shape has only {l}"),
        Some(n) => n,
        None => l,
    };
    Ok(serde_json::json!({
        "model_type": "llama", "hidden_size": h, "intermediate_size": i,
        "num_hidden_layers": l, "num_attention_heads": nh, "num_key_value_heads": kv,
        "vocab_size": v, "tie_word_embeddings": tied, "rope_theta": theta,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 4096
    }))
}

/// Uniform weights with the spread of a trained model's (std 0.02), norms
/// near 1. On a CUDA device they are drawn there (fast for 7B+); on the CPU
/// from a seeded SplitMix64, so a CPU map is reproducible and can be copied
/// to any device for comparisons.
pub fn random_weights(
    cfg: &ModelConfig,
    map: &DeviceMap,
    dtype: DType,
    seed: u64,
) -> Result<HashMap<String, Tensor>> {
    let (d, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    let mut rng = SplitMix64(seed);
    for dev in std::iter::once(&map.embed)
        .chain(&map.layers)
        .chain([&map.head])
    {
        if dev.is_cuda() {
            dev.set_seed(seed)?;
        }
    }
    let mut out = HashMap::new();
    let mut put = |name: String,
                   shape: &[usize],
                   dev: &Device,
                   center: f64,
                   rng: &mut SplitMix64|
     -> Result<()> {
        let a = 0.02 * 3f64.sqrt();
        let t = if dev.is_cuda() {
            (Tensor::rand(-a as f32, a as f32, shape, dev)? + center)?.to_dtype(dtype)?
        } else {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|_| (center + a * (2.0 * rng.next_f64() - 1.0)) as f32)
                .collect();
            Tensor::from_vec(data, shape, dev)?.to_dtype(dtype)?
        };
        out.insert(name, t);
        Ok(())
    };
    put(
        "model.embed_tokens.weight".into(),
        &[v, d],
        &map.embed,
        0.0,
        &mut rng,
    )?;
    for (l, dev) in map.layers.iter().enumerate() {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj", [q, d]),
            ("self_attn.k_proj", [kv, d]),
            ("self_attn.v_proj", [kv, d]),
            ("self_attn.o_proj", [d, q]),
            ("mlp.gate_proj", [i, d]),
            ("mlp.up_proj", [i, d]),
            ("mlp.down_proj", [d, i]),
        ] {
            put(format!("{p}.{name}.weight"), &shape, dev, 0.0, &mut rng)?;
        }
        put(
            format!("{p}.input_layernorm.weight"),
            &[d],
            dev,
            1.0,
            &mut rng,
        )?;
        put(
            format!("{p}.post_attention_layernorm.weight"),
            &[d],
            dev,
            1.0,
            &mut rng,
        )?;
    }
    put("model.norm.weight".into(), &[d], &map.head, 1.0, &mut rng)?;
    if !cfg.tie_word_embeddings {
        put("lm_head.weight".into(), &[v, d], &map.head, 0.0, &mut rng)?;
    }
    Ok(out)
}

/// A word-level tokenizer over `w0 … w{n-1}` (one token per whitespace-separated
/// word, no special tokens), so a text of `k` words is exactly `k` tokens.
pub(crate) fn word_tokenizer(n: usize) -> Result<tokenizers::Tokenizer> {
    let vocab: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|k| (format!("w{k}"), serde_json::Value::from(k)))
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}
    });
    tokenizers::Tokenizer::from_str(&json.to_string())
        .map_err(|e| anyhow::anyhow!("word tokenizer: {e}"))
}

/// `count` texts of `len` random words.
pub fn random_texts(count: usize, len: usize, vocab: usize, seed: u64) -> Vec<String> {
    let mut rng = SplitMix64(seed ^ 0x5eed);
    let words = vocab.min(4096) as u64;
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| format!("w{}", 1 + rng.next_u64() % (words - 1)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Build a model on `map` from a weight map (consumed: the model keeps what it needs).
pub fn build(
    cfg_json: &serde_json::Value,
    weights: HashMap<String, Tensor>,
    precision: Precision,
    map: DeviceMap,
) -> Result<Model> {
    let cfg = ModelConfig::from_hf_config_json(&cfg_json.to_string(), Path::new("<random model>"))?;
    let tokenizer = word_tokenizer(cfg.vocab_size.min(4096))?;
    let vb = VarBuilder::from_tensors(weights, DType::F32, &map.embed);
    Ok(Model::new(cfg, vb, tokenizer, precision, map)?)
}

/// SplitMix64: a tiny, seedable generator (reproducible weights without a
/// dependency).
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_word_tokenizer_are_exact() {
        let cfg = shape_config("llama2-70b", Some(40)).unwrap();
        assert_eq!(cfg["num_hidden_layers"], 40);
        assert!(shape_config("llama2-7b", Some(33))
            .unwrap_err()
            .to_string()
            .contains("has only 32"));
        assert!(shape_config("gpt5", None)
            .unwrap_err()
            .to_string()
            .contains("unknown model shape"));
        let cfg = shape_config("llama2-7b", None).unwrap();
        let cfg = ModelConfig::from_hf_config_json(&cfg.to_string(), Path::new("t")).unwrap();
        assert_eq!(
            (
                cfg.hidden_size,
                cfg.num_layers,
                cfg.num_heads,
                cfg.vocab_size
            ),
            (4096, 32, 32, 32000)
        );
        let tok = word_tokenizer(100).unwrap();
        let ids = tok
            .encode("w5 w99 w0 w7", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(ids, vec![5, 99, 0, 7]);
    }

    #[test]
    fn random_cpu_weights_are_reproducible() {
        let cfg_json = shape_config("tiny", None).unwrap();
        let cfg = ModelConfig::from_hf_config_json(&cfg_json.to_string(), Path::new("t")).unwrap();
        let map = DeviceMap::single(Device::Cpu, cfg.num_layers);
        let a = random_weights(&cfg, &map, DType::F32, 1).unwrap();
        let b = random_weights(&cfg, &map, DType::F32, 1).unwrap();
        let c = random_weights(&cfg, &map, DType::F32, 2).unwrap();
        let name = "model.layers.3.mlp.down_proj.weight";
        let v =
            |m: &HashMap<String, Tensor>| m[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&a), v(&b));
        assert_ne!(v(&a), v(&c));
        let std =
            (v(&a).iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v(&a).len() as f64).sqrt();
        assert!((std - 0.02).abs() < 0.002, "{std}");
    }
}
