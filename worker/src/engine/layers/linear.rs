//! A projection `y = x Wᵀ + b`, its weight stored the way the precision and
//! the device want it (dense, Q8_0, LLM.int8, or packed for the CPU kernels).

use crate::engine::activation::Act;
use crate::engine::cpu;
#[cfg(target_arch = "x86_64")]
use crate::engine::cpu::packed_gemm::bf16::Bf16Panels;
use crate::engine::cpu::packed_gemm::PackedMatrix;
use crate::engine::int8::Int8Weight;
use crate::engine::quant::{self, Numerics};
use crate::engine::EngineError;
use candle_core::quantized::QMatMul;
use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

/// A projection `y = x Wᵀ + b`, dense or 8-bit quantised.
pub(crate) struct Linear {
    w: Weight,
    b: Option<Tensor>,
}

enum Weight {
    Dense(Tensor),
    Quant(QMatMul),
    /// LLM.int8 (precision `8`); adds its own bias.
    Int8(Int8Weight),
    /// f32 on a CPU with AVX2/FMA: laid out once for the packed kernel.
    Packed(PackedMatrix),
    /// bf16 on a CPU with AVX512-BF16 or AMX (precision `16`,
    /// `Numerics::bf16_packed`).
    #[cfg(target_arch = "x86_64")]
    PackedBf16(Bf16Panels),
}

/// A projection for the bf16 kernels (`Numerics::bf16_packed`).
#[cfg(target_arch = "x86_64")]
fn bf16_packed_weight(w: &Tensor) -> candle_core::Result<Weight> {
    Ok(Weight::PackedBf16(cpu::pack_bf16(w)?))
}

/// Never asked for: `bf16_packed` needs AVX512-BF16 or AMX, x86-64 only.
#[cfg(not(target_arch = "x86_64"))]
fn bf16_packed_weight(_: &Tensor) -> candle_core::Result<Weight> {
    candle_core::bail!("the bf16 kernels exist only on x86-64")
}

impl Linear {
    /// Load `{vb}.{name}.weight` (`[out, inp]`) and, if `bias`, `{name}.bias`.
    pub(crate) fn load(
        vb: &VarBuilder,
        name: &str,
        (out, inp): (usize, usize),
        bias: bool,
        num: &Numerics,
    ) -> Result<Self, EngineError> {
        let vb = vb.pp(name);
        let wname = format!("{}.weight", vb.prefix());
        let w = vb
            .get((out, inp), "weight")
            .map_err(EngineError::weight(&wname))?;
        let w = if num.int8 {
            Weight::Int8(Int8Weight::quantize(&w).map_err(EngineError::weight(&wname))?)
        } else if num.quantize_linear {
            Weight::Quant(quant::q8_0(&w).map_err(EngineError::weight(&wname))?)
        } else if num.bf16_packed {
            bf16_packed_weight(&w).map_err(EngineError::weight(&wname))?
        } else if cpu::packs_weight(&w) {
            Weight::Packed(cpu::pack(&w).map_err(EngineError::weight(&wname))?)
        } else {
            Weight::Dense(w)
        };
        let b = if bias {
            let bname = format!("{}.bias", vb.prefix());
            let b = vb.get(out, "bias").map_err(EngineError::weight(bname))?;
            // Biases stay in the activation dtype even when weights are quantised.
            Some(
                b.to_dtype(num.act_dtype)
                    .map_err(EngineError::weight(name))?,
            )
        } else {
            None
        };
        Ok(Linear { w, b })
    }

    /// `x Wᵀ + b` for `x` `[..., inp]`; the result is `[..., out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (x2, dims) = cpu::as_rows(x)?;
        let y = match &self.w {
            Weight::Int8(q) => return cpu::from_rows(q.forward(&x2, self.b.as_ref())?, dims),
            Weight::Dense(w) => x2.matmul(&w.t()?)?,
            Weight::Quant(q) => q.forward(&x2)?,
            Weight::Packed(p) if x2.dtype() == DType::F32 => cpu::packed_matmul(&x2, p)?,
            Weight::Packed(_) => candle_core::bail!("f32 weights met {:?} activations", x2.dtype()),
            #[cfg(target_arch = "x86_64")]
            Weight::PackedBf16(p) => cpu::bf16_matmul(&x2, p)?,
        };
        let y = match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        cpu::from_rows(y, dims)
    }

    /// `act(x Gᵀ) ⊙ (x Uᵀ)` in one fused pass of the CPU kernels, where
    /// `self` (the gate) and `up` are both packed the same way, bias-free,
    /// and `x` suits them; `None` where the caller must compose it.
    pub(crate) fn fused_gated(
        &self,
        up: &Linear,
        act: Act,
        x: &Tensor,
    ) -> Option<candle_core::Result<Tensor>> {
        if self.b.is_some() || up.b.is_some() {
            return None;
        }
        match (&self.w, &up.w) {
            (Weight::Packed(g), Weight::Packed(u)) if x.dtype() == DType::F32 => {
                Some(cpu::packed_gated(x, g, u, act))
            }
            #[cfg(target_arch = "x86_64")]
            (Weight::PackedBf16(g), Weight::PackedBf16(u)) => Some(cpu::bf16_gated(x, g, u, act)),
            _ => None,
        }
    }
}
