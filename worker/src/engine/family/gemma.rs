//! Gemma (1): the LLaMA layer with three quirks.
//!
//! - RMSNorm scales by `1 + w` (weights are stored as offsets from one).
//! - The MLP is GeGLU with the tanh approximation of GELU (checkpoints saying
//!   `gelu` mean this, as transformers reads them).
//! - Token embeddings are multiplied by `sqrt(d)` rounded to the activation
//!   dtype; the LM head is tied to the embeddings unless the config says not.
//!
//! Its checkpoints also give an explicit `head_dim` (256 ≠ d / heads), which
//! the generic config reading already honours.

use super::{sqrt_hidden_rounded, Family};
use crate::engine::activation::Act;
use crate::engine::layers::NormScale;
use candle_core::DType;

/// The Gemma (1) family.
pub(crate) struct Gemma;

impl Family for Gemma {
    fn name(&self) -> &'static str {
        "gemma"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["gemma"]
    }

    fn ties_embeddings_by_default(&self) -> bool {
        true
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
}

/// Gemma's activation names: `gelu_pytorch_tanh`, and the legacy `gelu`,
/// which transformers reads as the same tanh approximation.
pub(crate) fn gelu_tanh(name: &str) -> Option<Act> {
    matches!(name, "gelu_pytorch_tanh" | "gelu").then_some(Act::GeluTanh)
}
