//! The layers every family is built from, and the [`Block`] interface each
//! family's decoder layer implements.
//!
//! - [`linear`]: projections `y = x Wᵀ + b`, weights stored per precision.
//! - [`norm`]: RMSNorm (`w` or `1 + w`), the residual add.
//! - [`mlp`]: the gated MLP.
//! - [`attention`]: self-attention and its per-forward context.
//! - [`positions`]: rotary tables and causal masks.
//!
//! Conventions (all families): activations are `[batch, time, d]`, padding
//! is on the right, and attention is causal, so a real token never sees a
//! pad and no per-row mask is needed; positions are `offset..offset + time`
//! for every row. Each layer runs device-generic candle operations, or the
//! CPU fast path (`engine::cpu`) where `cpu::runs_kernels` says so; the
//! layers call into `cpu`, never the other way round.

pub(crate) mod attention;
pub(crate) mod linear;
pub(crate) mod mlp;
pub(crate) mod norm;
pub(crate) mod positions;

pub(crate) use attention::{Attention, AttnCtx};
pub(crate) use linear::Linear;
pub(crate) use mlp::GatedMlp;
pub(crate) use norm::{residual_add, NormScale, RmsNorm};

use candle_core::Tensor;

/// What one decoder block produces.
pub(crate) struct BlockOut {
    /// The block's output residual stream `[b, t, d]` (`[texts, 1, d]` with
    /// [`AttnCtx::last_only`]).
    pub out: Tensor,
    /// The `post_attention_norm` capture site (the MLP's normed input), shaped as `out`.
    pub post_attn_norm: Tensor,
    /// Keys and values, when asked for.
    pub kv: Option<(Tensor, Tensor)>,
}

/// One decoder layer of some architecture family.
pub(crate) trait Block: Send + Sync {
    /// `x` `[b, t, d]` → the block's output and capture sites.
    fn forward(&self, x: &Tensor, ctx: &AttnCtx<'_>) -> candle_core::Result<BlockOut>;
}
