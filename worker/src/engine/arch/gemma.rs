//! Gemma (1): the LLaMA layer with three quirks.
//!
//! - RMSNorm scales by `1 + w` (weights are stored as offsets from one).
//! - The MLP is GeGLU with the tanh approximation of GELU (checkpoints saying
//!   `gelu` mean this, as transformers reads them).
//! - Token embeddings are multiplied by `sqrt(d)` rounded to the activation
//!   dtype (see `arch::embed_scale`); the LM head is tied to the embeddings.

use super::llama::{DecoderLayer, Flavor};
use super::Act;
use crate::engine::config::ModelConfig;
use crate::engine::quant::Numerics;
use crate::engine::EngineError;
use candle_nn::VarBuilder;

/// Gemma's variant of the LLaMA layer.
pub(crate) const FLAVOR: Flavor = Flavor {
    norm_plus_one: true,
    act: Act::GeluTanh,
};

/// Load one Gemma layer.
pub(crate) fn load_layer(
    vb: &VarBuilder,
    cfg: &ModelConfig,
    num: &Numerics,
) -> Result<DecoderLayer, EngineError> {
    DecoderLayer::load(vb, cfg, FLAVOR, num)
}
