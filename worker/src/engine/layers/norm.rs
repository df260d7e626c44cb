//! RMSNorm, with the residual add fused in front where a block has one.

use crate::engine::cpu;
use crate::engine::EngineError;
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

/// How a family stores its RMSNorm scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NormScale {
    /// The stored weight is the scale `w` (LLaMA, Qwen2).
    Weight,
    /// The stored weight is an offset from one: the scale is `1 + w`
    /// (Gemma's parameterisation).
    OnePlusWeight,
}

/// RMSNorm: `x / sqrt(mean(x²) + eps) * alpha`, where `alpha` is `w` or
/// `1 + w` ([`NormScale`], folded in once at load).
pub(crate) struct RmsNorm {
    alpha: Tensor,
    alpha_f32: Tensor,
    eps: f32,
}

impl RmsNorm {
    /// Load `{vb}.{name}.weight` (`[dim]`); `dtype` is the activation dtype.
    pub(crate) fn load(
        vb: &VarBuilder,
        name: &str,
        dim: usize,
        eps: f64,
        scale: NormScale,
        dtype: DType,
    ) -> Result<Self, EngineError> {
        let full = format!("{}.weight", vb.pp(name).prefix());
        let w = vb
            .pp(name)
            .get_with_hints_dtype(dim, "weight", Default::default(), DType::F32)
            .map_err(EngineError::weight(&full))?;
        let alpha = match scale {
            NormScale::Weight => w,
            NormScale::OnePlusWeight => (w + 1.0).map_err(EngineError::weight(&full))?,
        };
        let alpha_f32 = alpha.clone();
        let alpha = alpha.to_dtype(dtype).map_err(EngineError::weight(&full))?;
        Ok(RmsNorm {
            alpha,
            alpha_f32,
            eps: eps as f32,
        })
    }

    /// The norm of `x` (`[..., dim]`).
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if cpu::runs_kernels(x) {
            return Ok(cpu::rows::add_rms_norm(x, None, &self.alpha_f32, self.eps)?.1);
        }
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.alpha, self.eps)
    }

    /// `a = x + y` and this norm of `a`: `(a, norm(a))` (one pass on the CPU in f32).
    pub(crate) fn add_forward(
        &self,
        x: &Tensor,
        y: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        if cpu::runs_kernels(x) {
            return cpu::rows::add_rms_norm(x, Some(y), &self.alpha_f32, self.eps);
        }
        let a = (x + y)?;
        let n = self.forward(&a)?;
        Ok((a, n))
    }

    /// The same norm with f32 weights, for f32 states whatever the model dtype.
    pub(crate) fn forward_f32(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.alpha_f32, self.eps)
    }
}

/// `x + y` (the residual stream's adds; on the CPU pool in f32).
pub(crate) fn residual_add(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    if cpu::runs_kernels(x) {
        return cpu::rows::add(x, y);
    }
    x + y
}
