//! Memory arithmetic shared by the worker's placement planner and the
//! coordinator's "does this model fit on that worker" check.
//!
//! The worker plans exactly, from the model's config (see the worker's
//! `placement` module); the coordinator knows only a model's parameter count
//! (`size_b` in a grid) and a worker's advertised devices, so it uses the
//! coarse [`estimate_bytes`] / [`fits`] below. Both use the same bytes per
//! weight, so a model the coordinator refuses is one the planner would refuse
//! too, up to the activation allowance.

use crate::spec::Precision;

/// Bytes a `Q8_0` block takes: 32 signed 8-bit weights and one f16 scale.
pub(crate) const Q8_0_BLOCK_BYTES: u64 = 34;
/// Weights per `Q8_0` block.
pub(crate) const Q8_0_BLOCK_WEIGHTS: u64 = 32;

/// Memory every CUDA device loses before the model: the CUDA context, cuBLAS
/// workspaces and allocator slack (measured at about 0.5–0.8 GiB on an H100;
/// rounded up).
pub const CUDA_RESERVE_BYTES: u64 = 1 << 30;

/// Fraction of the weights' size the coarse estimate adds for activations and
/// allocator fragmentation. The exact planner computes activations from the
/// model's shape and batch; for the grid's models at batch 32 × 256 tokens
/// they stay below this (2–8 % of the weights, largest for small models).
pub(crate) const ACTIVATION_ALLOWANCE: f64 = 0.10;

/// Bytes per weight of a matrix (the attention and MLP projections, the LM
/// head) stored at `precision`.
pub fn matrix_bytes_per_weight(precision: Precision) -> f64 {
    match precision {
        Precision::F32 => 4.0,
        Precision::Bf16 | Precision::F16 => 2.0,
        // LLM.int8: one byte per weight plus a per-row f32 scale (negligible);
        // the LM head stays f16, a few percent of a large model.
        Precision::Int8 => 1.0,
        Precision::Q8_0 => Q8_0_BLOCK_BYTES as f64 / Q8_0_BLOCK_WEIGHTS as f64,
    }
}

/// Bytes per element of activations (and of the small tensors kept unquantized:
/// norms, biases, the embedding table) at `precision`. Q8_0 quantizes only
/// the weights and keeps f32 activations; LLM.int8 runs f16 activations.
pub fn activation_bytes(precision: Precision) -> u64 {
    match precision {
        Precision::F32 | Precision::Q8_0 => 4,
        Precision::Bf16 | Precision::F16 | Precision::Int8 => 2,
    }
}

/// Coarse bytes needed to run a model of `size_b` billion parameters at
/// `precision`: every weight at [`matrix_bytes_per_weight`] plus
/// [`ACTIVATION_ALLOWANCE`]. Per-device reserves are added by [`fits`].
pub(crate) fn estimate_bytes(size_b: f64, precision: Precision) -> u64 {
    let weights = size_b.max(0.0) * 1e9 * matrix_bytes_per_weight(precision);
    (weights * (1.0 + ACTIVATION_ALLOWANCE)).ceil() as u64
}

/// Whether a model of `size_b` billion parameters at `precision` fits on a
/// worker whose devices have `device_bytes` memory each, its layers split
/// across them. Each CUDA device first loses [`CUDA_RESERVE_BYTES`]; pass
/// `cuda = false` for a CPU-only worker (one entry: its host memory).
pub fn fits(size_b: f64, precision: Precision, device_bytes: &[u64], cuda: bool) -> bool {
    let reserve = if cuda { CUDA_RESERVE_BYTES } else { 0 };
    let usable: u64 = device_bytes.iter().map(|b| b.saturating_sub(reserve)).sum();
    estimate_bytes(size_b, precision) <= usable
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB80: u64 = 80 * (1 << 30);

    #[test]
    fn seventy_b_needs_two_gpus_in_bf16_one_in_int8() {
        assert!(fits(70.0, Precision::Bf16, &[GB80, GB80], true));
        assert!(!fits(70.0, Precision::Bf16, &[GB80], true));
        assert!(fits(70.0, Precision::Int8, &[GB80], true));
        assert!(!fits(70.0, Precision::F32, &[GB80, GB80], true));
    }

    #[test]
    fn small_models_fit_a_laptop() {
        assert!(fits(0.135, Precision::F32, &[8 << 30], false));
        assert!(fits(7.0, Precision::Bf16, &[24 << 30], true));
        assert!(!fits(13.0, Precision::Bf16, &[24 << 30], true));
    }

    #[test]
    fn q8_0_is_34_bytes_per_32_weights_and_int8_one_byte() {
        assert_eq!(matrix_bytes_per_weight(Precision::Q8_0), 1.0625);
        assert_eq!(estimate_bytes(1.0, Precision::Q8_0), 1_168_750_000);
        assert_eq!(matrix_bytes_per_weight(Precision::Int8), 1.0);
    }
}
