//! Numeric precision: which dtype activations run in and whether projection
//! weights are 8-bit.
//!
//! | precision | weights                                   | activations |
//! |-----------|-------------------------------------------|-------------|
//! | `32`      | f32                                       | f32         |
//! | `16`      | bf16                                      | bf16; on CPUs with AVX512-BF16 or AMX: bf16 into each projection, f32 sums and f32 between projections |
//! | `16-f16`  | f16                                       | f16         |
//! | `8`       | LLM.int8: int8 per output row for every q/k/v/o/gate/up/down matrix | f16 (int8 per token inside each projection, outlier columns in f16) |
//! | `q8_0`    | Q8_0 for every q/k/v/o/gate/up/down matrix | f32         |
//!
//! LLM.int8 is `super::int8`. Q8_0 (the GGML format): each row is cut into blocks of 32 weights stored
//! as 32 signed bytes and one f16 scale `max|w| / 127`; candle's quantised
//! matmul also quantises the activations to Q8_0 blocks on CPU. Embeddings,
//! norms and the LM head stay f32. Norms and softmax always run in f32 inside
//! (candle's fused RMSNorm accumulates in f32; attention scores are upcast).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Tensor};
use cd_common::spec::Precision;

/// How a precision setting translates into dtypes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Numerics {
    /// The dtype of activations (and of dense weights).
    pub act_dtype: DType,
    /// Whether projection matrices are stored as Q8_0.
    pub quantize_linear: bool,
    /// Whether projection matrices are LLM.int8 (`super::int8`).
    pub int8: bool,
    /// Precision `16` on the CPU's bf16 kernels (`super::cpu::packed_gemm::bf16`:
    /// AVX512-BF16 pairs or AMX tiles): weights
    /// stored in bf16, projections on bf16 inputs with f32 accumulation,
    /// everything between them in f32 (`act_dtype` is then f32).
    pub bf16_packed: bool,
}

impl Numerics {
    /// The dtype weights are read in: bf16 for the bf16 kernels (rounded as a
    /// bf16 checkpoint stores them), else the activations' (f32 for Q8_0,
    /// which quantises from f32).
    pub(crate) fn weight_dtype(&self) -> DType {
        if self.bf16_packed {
            DType::BF16
        } else if self.quantize_linear {
            DType::F32
        } else {
            self.act_dtype
        }
    }

    /// Precision `16` on the bf16 kernels, where the process has one and every
    /// layer runs on the CPU with the engine's kernels; `self` otherwise.
    pub(crate) fn on_cpu_bf16_kernels(self, precision: Precision, all_cpu: bool) -> Numerics {
        let tiles = precision == Precision::Bf16
            && all_cpu
            && super::cpu::isa::kernels_enabled()
            && super::cpu::packed_gemm::bf16_kernels_run();
        if !tiles {
            return self;
        }
        Numerics {
            act_dtype: DType::F32,
            bf16_packed: true,
            ..self
        }
    }

    pub(crate) fn of(p: Precision) -> Numerics {
        match p {
            Precision::F32 => Numerics {
                act_dtype: DType::F32,
                quantize_linear: false,
                int8: false,
                bf16_packed: false,
            },
            Precision::Bf16 => Numerics {
                act_dtype: DType::BF16,
                quantize_linear: false,
                int8: false,
                bf16_packed: false,
            },
            Precision::F16 => Numerics {
                act_dtype: DType::F16,
                quantize_linear: false,
                int8: false,
                bf16_packed: false,
            },
            Precision::Q8_0 => Numerics {
                act_dtype: DType::F32,
                quantize_linear: true,
                int8: false,
                bf16_packed: false,
            },
            Precision::Int8 => Numerics {
                act_dtype: DType::F16,
                quantize_linear: false,
                int8: true,
                bf16_packed: false,
            },
        }
    }
}

/// Quantise a `[out, in]` weight to Q8_0 on its own device.
pub(crate) fn q8_0(w: &Tensor) -> candle_core::Result<QMatMul> {
    let (_, inp) = w.dims2()?;
    if inp % GgmlDType::Q8_0.block_size() != 0 {
        candle_core::bail!(
            "cannot quantise to Q8_0: row length {inp} is not a multiple of {}",
            GgmlDType::Q8_0.block_size()
        );
    }
    // candle quantises on the CPU only; the blocks then go to the weight's device.
    let w_cpu = w
        .to_dtype(DType::F32)?
        .to_device(&candle_core::Device::Cpu)?;
    let q = QTensor::quantize_onto(&w_cpu, GgmlDType::Q8_0, w.device())?;
    QMatMul::from_qtensor(q)
}
