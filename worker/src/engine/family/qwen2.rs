//! Qwen2 (Qwen1.5, Qwen2, Qwen2.5): the LLaMA layer with biases on the
//! q/k/v projections (not on `o_proj`), SwiGLU, `w` norms.
//!
//! Config: sliding-window attention applies only when the config sets
//! `use_sliding_window`, and then (without a `layer_types` list) only to
//! layers from `max_window_layers` on.

use super::Family;
use crate::engine::config::{Fields, LayerKind};
use crate::engine::EngineError;

/// The Qwen2 family.
pub(crate) struct Qwen2;

impl Family for Qwen2 {
    fn name(&self) -> &'static str {
        "qwen2"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["qwen2"]
    }

    fn sliding_window(&self, f: &Fields<'_>) -> Result<Option<usize>, EngineError> {
        if f.bool_or("use_sliding_window", false)? {
            f.usize_opt("sliding_window")
        } else {
            Ok(None)
        }
    }

    fn default_layer_kinds(
        &self,
        f: &Fields<'_>,
        num_layers: usize,
        window: Option<usize>,
    ) -> Result<Vec<LayerKind>, EngineError> {
        if window.is_none() {
            return Ok(vec![LayerKind::Global; num_layers]);
        }
        let first = f.usize_opt("max_window_layers")?.unwrap_or(num_layers);
        Ok((0..num_layers)
            .map(|i| {
                if i >= first {
                    LayerKind::Sliding
                } else {
                    LayerKind::Global
                }
            })
            .collect())
    }

    /// q/k/v always carry biases, `o_proj` never (whatever `attention_bias` says).
    fn attention_biases(&self, _attention_bias: bool) -> (bool, bool) {
        (true, false)
    }
}
