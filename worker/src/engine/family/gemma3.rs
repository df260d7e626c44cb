//! Gemma-3 text decoder layer (e.g. gemma-3-270m).
//!
//! ```text
//! a = x + RMSNorm_post_attention(Attn(RMSNorm_in(x)))   // q/k RMSNorm per head before RoPE
//! n = RMSNorm_pre_feedforward(a)                         // ← capture site `post_attention_norm`
//! y = a + RMSNorm_post_feedforward(Down(gelu_tanh(Gate(n)) ⊙ Up(n)))
//! ```
//!
//! Every norm (including q/k norms) scales by `1 + w`; embeddings are scaled
//! by `sqrt(d)` as in Gemma (1); the MLP is GeGLU (tanh). Layers alternate
//! between sliding-window attention with the local RoPE base
//! (`rope_local_base_freq`, 10k) and global attention with the global base
//! (`rope_theta`, 1M): `layer_types` in the config says which, else every
//! `sliding_window_pattern`-th layer is global. transformers v5 spells the
//! two bases as `rope_parameters.{full,sliding}_attention`. Scores are
//! scaled by `query_pre_attn_scalar^-0.5`, not `head_dim^-0.5`.
//!
//! Capture site: HF's `post_attention_layernorm` here normalises the
//! attention *output* before the residual add; the semantic of
//! `post_attention_norm` ("the MLP's input, after the norm that follows
//! attention") is `pre_feedforward_layernorm`'s output, which is what we
//! capture.

use super::gemma::gelu_tanh;
use super::{sqrt_hidden_rounded, Family};
use crate::engine::activation::Act;
use crate::engine::config::{self, Fields, LayerKind, ModelConfig, Rope, RopeScaling};
use crate::engine::layers::{
    residual_add, Attention, AttnCtx, Block, BlockOut, GatedMlp, NormScale, RmsNorm,
};
use crate::engine::quant::Numerics;
use crate::engine::EngineError;
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

/// The Gemma-3 text family.
pub(crate) struct Gemma3;

impl Family for Gemma3 {
    fn name(&self) -> &'static str {
        "gemma3"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["gemma3_text", "gemma3"]
    }

    /// `Gemma3ForConditionalGeneration` (`model_type` `gemma3`) nests the
    /// text model's config.
    fn nests_text_config(&self) -> bool {
        true
    }

    fn default_rope_theta(&self) -> f64 {
        1_000_000.0
    }

    fn ties_embeddings_by_default(&self) -> bool {
        true
    }

    fn ropes(&self, f: &Fields<'_>, top_theta: f64) -> Result<(Rope, Option<Rope>), EngineError> {
        let local_theta = f.f64_opt("rope_local_base_freq")?.unwrap_or(10_000.0);
        let (global, local) = match f.get("rope_parameters") {
            Some(rp) if rp.get("full_attention").is_some() => (
                config::parse_rope(
                    f,
                    rp.get("full_attention"),
                    "rope_parameters.full_attention",
                    top_theta,
                )?,
                config::parse_rope(
                    f,
                    rp.get("sliding_attention"),
                    "rope_parameters.sliding_attention",
                    local_theta,
                )?,
            ),
            _ => (
                config::parse_rope(f, f.get("rope_scaling"), "rope_scaling", top_theta)?,
                Rope {
                    theta: local_theta,
                    scaling: RopeScaling::None,
                },
            ),
        };
        Ok((global, Some(local)))
    }

    fn default_layer_kinds(
        &self,
        f: &Fields<'_>,
        num_layers: usize,
        window: Option<usize>,
    ) -> Result<Vec<LayerKind>, EngineError> {
        let pattern = f.usize_opt("sliding_window_pattern")?.unwrap_or(6).max(1);
        Ok((0..num_layers)
            .map(|i| {
                if (i + 1) % pattern != 0 && window.is_some() {
                    LayerKind::Sliding
                } else {
                    LayerKind::Global
                }
            })
            .collect())
    }

    fn attention_scale(&self, f: &Fields<'_>, _head_dim: usize) -> Result<f64, EngineError> {
        let s = f.f64_opt("query_pre_attn_scalar")?.unwrap_or(256.0);
        if s <= 0.0 {
            return Err(f.err("query_pre_attn_scalar", "must be positive"));
        }
        Ok(s.powf(-0.5))
    }

    fn default_activation(&self) -> &'static str {
        "gelu_pytorch_tanh"
    }

    fn activation(&self, name: &str) -> Option<Act> {
        gelu_tanh(name)
    }

    fn norm_scale(&self) -> NormScale {
        NormScale::OnePlusWeight
    }

    fn embedding_scale(&self, hidden_size: usize, dtype: DType) -> Option<f64> {
        Some(sqrt_hidden_rounded(hidden_size, dtype))
    }

    fn load_block(
        &self,
        vb: &VarBuilder,
        cfg: &ModelConfig,
        num: &Numerics,
    ) -> Result<Box<dyn Block>, EngineError> {
        Ok(Box::new(DecoderLayer::load(vb, cfg, num)?))
    }
}

/// One Gemma-3 decoder layer.
pub(crate) struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    mlp: GatedMlp,
    post_feedforward_layernorm: RmsNorm,
}

impl DecoderLayer {
    /// Load the layer under `vb`.
    pub(crate) fn load(
        vb: &VarBuilder,
        cfg: &ModelConfig,
        num: &Numerics,
    ) -> Result<Self, EngineError> {
        let scale = Gemma3.norm_scale();
        let norm = |name: &str| {
            RmsNorm::load(vb, name, cfg.hidden_size, cfg.rms_eps, scale, num.act_dtype)
        };
        Ok(DecoderLayer {
            input_layernorm: norm("input_layernorm")?,
            self_attn: Attention::load(&vb.pp("self_attn"), cfg, Some(scale), num)?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: norm("pre_feedforward_layernorm")?,
            mlp: GatedMlp::load(&vb.pp("mlp"), cfg, cfg.act, num)?,
            post_feedforward_layernorm: norm("post_feedforward_layernorm")?,
        })
    }
}

impl Block for DecoderLayer {
    fn forward(&self, x: &Tensor, ctx: &AttnCtx<'_>) -> candle_core::Result<BlockOut> {
        let (attn, kv) = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, ctx)?;
        let (a, n) = self.pre_feedforward_layernorm.add_forward(
            &ctx.rows_out(x)?,
            &self.post_attention_layernorm.forward(&attn)?,
        )?;
        let m = self
            .post_feedforward_layernorm
            .forward(&self.mlp.forward(&n)?)?;
        Ok(BlockOut {
            out: residual_add(&a, &m)?,
            post_attn_norm: n,
            kv,
        })
    }
}
