//! Gemma-3 text decoder layer (e.g. gemma-3-270m).
//!
//! ```text
//! a = x + RMSNorm_post_attention(Attn(RMSNorm_in(x)))   // q/k RMSNorm per head before RoPE
//! n = RMSNorm_pre_feedforward(a)                         // ← capture site `post_attention_norm`
//! y = a + RMSNorm_post_feedforward(Down(gelu_tanh(Gate(n)) ⊙ Up(n)))
//! ```
//!
//! Every norm (including q/k norms) scales by `1 + w`. Layers alternate
//! between sliding-window attention with the local RoPE base (10k) and global
//! attention with the global base (1M); `layer_types` in the config says which.
//! Scores are scaled by `query_pre_attn_scalar^-0.5`, not `head_dim^-0.5`.
//!
//! Capture site: HF's `post_attention_layernorm` here normalises the
//! attention *output* before the residual add; the semantic of
//! `post_attention_norm` ("the MLP's input, after the norm that follows
//! attention") is `pre_feedforward_layernorm`'s output, which is what we
//! capture.

use super::{residual_add, Act, Attention, AttnCtx, Block, BlockOut, GatedMlp, RmsNorm};
use crate::engine::config::ModelConfig;
use crate::engine::quant::Numerics;
use crate::engine::EngineError;
use candle_core::Tensor;
use candle_nn::VarBuilder;

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
    pub(crate) fn load(
        vb: &VarBuilder,
        cfg: &ModelConfig,
        num: &Numerics,
    ) -> Result<Self, EngineError> {
        let norm =
            |name: &str| RmsNorm::load(vb, name, cfg.hidden_size, cfg.rms_eps, true, num.act_dtype);
        Ok(DecoderLayer {
            input_layernorm: norm("input_layernorm")?,
            self_attn: Attention::load(&vb.pp("self_attn"), cfg, Some(true), num)?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: norm("pre_feedforward_layernorm")?,
            mlp: GatedMlp::load(&vb.pp("mlp"), cfg, Act::GeluTanh, num)?,
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
