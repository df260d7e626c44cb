//! The LLaMA decoder layer (LLaMA-2/3, Mistral, SmolLM; also the body of
//! Qwen2 and Gemma, which differ only in biases, norm parameterisation and
//! activation; see their modules).
//!
//! ```text
//! a = x + Attn(RMSNorm_in(x))          // GQA, RoPE, causal (sliding for Mistral)
//! n = RMSNorm_post_attention(a)        // ← capture site `post_attention_norm`
//! y = a + Down(act(Gate(n)) ⊙ Up(n))   // ← residual stream, capture site `residual`
//! ```

use super::{residual_add, Act, Attention, AttnCtx, Block, BlockOut, GatedMlp, RmsNorm};
use crate::engine::config::ModelConfig;
use crate::engine::quant::Numerics;
use crate::engine::EngineError;
use candle_core::Tensor;
use candle_nn::VarBuilder;

/// The knobs by which the LLaMA-shaped families differ.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flavor {
    /// RMSNorm scales by `1 + w` instead of `w`.
    pub norm_plus_one: bool,
    /// MLP nonlinearity.
    pub act: Act,
}

impl Flavor {
    /// Plain LLaMA: `w` norms, SwiGLU.
    pub(crate) const LLAMA: Flavor = Flavor {
        norm_plus_one: false,
        act: Act::Silu,
    };
}

/// One LLaMA-style decoder layer.
pub(crate) struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: GatedMlp,
}

impl DecoderLayer {
    pub(crate) fn load(
        vb: &VarBuilder,
        cfg: &ModelConfig,
        flavor: Flavor,
        num: &Numerics,
    ) -> Result<Self, EngineError> {
        let norm = |name: &str| {
            RmsNorm::load(
                vb,
                name,
                cfg.hidden_size,
                cfg.rms_eps,
                flavor.norm_plus_one,
                num.act_dtype,
            )
        };
        Ok(DecoderLayer {
            input_layernorm: norm("input_layernorm")?,
            self_attn: Attention::load(&vb.pp("self_attn"), cfg, None, num)?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            mlp: GatedMlp::load(&vb.pp("mlp"), cfg, flavor.act, num)?,
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
