//! The gated MLP: `down(act(gate(x)) ⊙ up(x))`.

use super::Linear;
use crate::engine::activation::Act;
use crate::engine::config::ModelConfig;
use crate::engine::quant::Numerics;
use crate::engine::EngineError;
use candle_core::Tensor;
use candle_nn::VarBuilder;

/// Gated MLP: `down(act(gate(x)) * up(x))`.
pub(crate) struct GatedMlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    act: Act,
}

impl GatedMlp {
    /// Load `gate_proj`, `up_proj` and `down_proj` under `vb`.
    pub(crate) fn load(
        vb: &VarBuilder,
        cfg: &ModelConfig,
        act: Act,
        num: &Numerics,
    ) -> Result<Self, EngineError> {
        let (d, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(GatedMlp {
            gate: Linear::load(vb, "gate_proj", (i, d), b, num)?,
            up: Linear::load(vb, "up_proj", (i, d), b, num)?,
            down: Linear::load(vb, "down_proj", (d, i), b, num)?,
            act,
        })
    }

    /// `x` `[..., d]` → `[..., d]`.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(gated) = self.gate.fused_gated(&self.up, self.act, x) {
            return self.down.forward(&gated?);
        }
        let g = self.gate.forward(x)?;
        let g = match self.act {
            Act::Silu => candle_nn::ops::silu(&g)?,
            // candle's `gelu` is the tanh approximation (HF `gelu_pytorch_tanh`).
            Act::GeluTanh => g.gelu()?,
        };
        self.down.forward(&(g * self.up.forward(x)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu;
    use candle_core::{DType, Device};
    use cd_common::spec::Precision;
    use std::collections::HashMap;

    /// A config with only the widths the MLP reads.
    fn config(d: usize, i: usize) -> ModelConfig {
        let json = format!(
            r#"{{"model_type": "llama", "hidden_size": {d}, "intermediate_size": {i},
                "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 8}}"#
        );
        ModelConfig::from_hf_config_json(&json, std::path::Path::new("config.json")).unwrap()
    }

    /// `down(act(x Gᵀ) ⊙ x Uᵀ)` written out with candle's plain operations.
    fn reference(x: &Tensor, w: &HashMap<String, Tensor>, act: Act) -> Tensor {
        let g = x.matmul(&w["gate_proj.weight"].t().unwrap()).unwrap();
        let g = match act {
            Act::Silu => candle_nn::ops::silu(&g).unwrap(),
            Act::GeluTanh => g.gelu().unwrap(),
        };
        let u = x.matmul(&w["up_proj.weight"].t().unwrap()).unwrap();
        (g * u)
            .unwrap()
            .matmul(&w["down_proj.weight"].t().unwrap())
            .unwrap()
    }

    #[test]
    fn the_gated_mlp_computes_down_of_act_gate_times_up() {
        let (d, i, rows) = (32, 48, 7);
        let dev = Device::Cpu;
        let cfg = config(d, i);
        let mut w = HashMap::new();
        for (name, shape) in [
            ("gate_proj", (i, d)),
            ("up_proj", (i, d)),
            ("down_proj", (d, i)),
        ] {
            let t = (Tensor::randn(0f32, 1.0, shape, &dev).unwrap() * 0.2).unwrap();
            w.insert(format!("{name}.weight"), t);
        }
        let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &dev);
        let num = Numerics::of(Precision::F32);
        let x = Tensor::randn(0f32, 1.0, (rows, d), &dev).unwrap();
        for act in [Act::Silu, Act::GeluTanh] {
            let mlp = GatedMlp::load(&vb, &cfg, act, &num).unwrap();
            // On a CPU with the kernels this runs the fused packed path,
            // elsewhere the composed one; both must be the formula.
            assert_eq!(
                mlp.gate.fused_gated(&mlp.up, act, &x).is_some(),
                cpu::packs_weight(&w["gate_proj.weight"])
            );
            let got = mlp.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            let want = reference(&x, &w, act).to_vec2::<f32>().unwrap();
            for (g, e) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!(
                    (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{act:?}: {g} vs {e}"
                );
            }
        }
    }
}
