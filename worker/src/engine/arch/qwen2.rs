//! Qwen2 (Qwen1.5, Qwen2, Qwen2.5): the LLaMA layer with biases on the
//! q/k/v projections (not on `o_proj`), SwiGLU, `w` norms. Sliding-window
//! attention applies only when the config sets `use_sliding_window`, and then
//! only to layers from `max_window_layers` on (see `config.rs`).

use super::llama::{DecoderLayer, Flavor};
use crate::engine::config::ModelConfig;
use crate::engine::quant::Numerics;
use crate::engine::EngineError;
use candle_nn::VarBuilder;

/// Load one Qwen2 layer; the biases come from `cfg.qkv_bias`, which the config
/// parser sets for every Qwen2 checkpoint.
pub(crate) fn load_layer(
    vb: &VarBuilder,
    cfg: &ModelConfig,
    num: &Numerics,
) -> Result<DecoderLayer, EngineError> {
    debug_assert!(cfg.qkv_bias && !cfg.o_bias);
    DecoderLayer::load(vb, cfg, Flavor::LLAMA, num)
}
