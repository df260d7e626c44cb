//! The gated MLPs' nonlinearities, shared by the layers (`layers::mlp`) and
//! the CPU kernels' fused epilogues (`cpu::packed_gemm`); a leaf both import.

/// The MLP nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    /// SwiGLU (LLaMA, Qwen2).
    Silu,
    /// GeGLU with the tanh approximation of GELU (Gemma).
    GeluTanh,
}

impl Act {
    /// The nonlinearity on one f32 value (the packed CPU path's epilogue);
    /// the same formulas as candle's `silu` and (tanh) `gelu`.
    pub(crate) fn apply(self, x: f32) -> f32 {
        match self {
            Act::Silu => x / (1.0 + (-x).exp()),
            Act::GeluTanh => {
                const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
                0.5 * x * (1.0 + (SQRT_TWO_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh())
            }
        }
    }
}
