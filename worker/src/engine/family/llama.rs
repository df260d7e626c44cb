//! LLaMA (LLaMA-2/3, Mistral, SmolLM): the reference family. Its decoder
//! layer is also the body of Qwen2 and Gemma, which differ only in biases,
//! norm parameterisation and activation (see their files).
//!
//! ```text
//! a = x + Attn(RMSNorm_in(x))          // GQA, RoPE, causal (sliding for Mistral)
//! n = RMSNorm_post_attention(a)        // ← capture site `post_attention_norm`
//! y = a + Down(act(Gate(n)) ⊙ Up(n))   // ← residual stream, capture site `residual`
//! ```
//!
//! Config: SwiGLU, `w` norms, RoPE base 10k with `linear` or `llama3`
//! rescaling, optional `attention_bias` / `mlp_bias`, untied LM head unless
//! the config ties it. Mistral's `sliding_window` applies to every layer.

use super::Family;
use crate::engine::config::ModelConfig;
use crate::engine::layers::{
    residual_add, Attention, AttnCtx, Block, BlockOut, GatedMlp, NormScale, RmsNorm,
};
use crate::engine::quant::Numerics;
use crate::engine::EngineError;
use candle_core::Tensor;
use candle_nn::VarBuilder;

/// The LLaMA family: every [`Family`] default.
pub(crate) struct Llama;

impl Family for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["llama", "mistral"]
    }
}

/// One LLaMA-shaped decoder layer.
pub(crate) struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: GatedMlp,
}

impl DecoderLayer {
    /// Load the layer under `vb`; `norm_scale` is the family's RMSNorm
    /// parameterisation, the activation is `cfg.act`.
    pub(crate) fn load(
        vb: &VarBuilder,
        cfg: &ModelConfig,
        norm_scale: NormScale,
        num: &Numerics,
    ) -> Result<Self, EngineError> {
        let norm = |name: &str| {
            RmsNorm::load(
                vb,
                name,
                cfg.hidden_size,
                cfg.rms_eps,
                norm_scale,
                num.act_dtype,
            )
        };
        Ok(DecoderLayer {
            input_layernorm: norm("input_layernorm")?,
            self_attn: Attention::load(&vb.pp("self_attn"), cfg, None, num)?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            mlp: GatedMlp::load(&vb.pp("mlp"), cfg, cfg.act, num)?,
        })
    }
}

impl Block for DecoderLayer {
    fn forward(&self, x: &Tensor, ctx: &AttnCtx<'_>) -> candle_core::Result<BlockOut> {
        let (attn, kv) = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, ctx)?;
        let (a, n) = self
            .post_attention_layernorm
            .add_forward(&ctx.rows_out(x)?, &attn)?;
        let out = residual_add(&a, &self.mlp.forward(&n)?)?;
        Ok(BlockOut {
            out,
            post_attn_norm: n,
            kv,
        })
    }
}
