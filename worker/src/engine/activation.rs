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
