//! Numeric precision: which dtype activations run in and whether projection
//! weights are 8-bit.
//!
//! | precision | weights                                   | activations |
//! |-----------|-------------------------------------------|-------------|
//! | `32`      | f32                                       | f32         |
//! | `16`      | bf16                                      | bf16        |
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
}

impl Numerics {
    pub(crate) fn of(p: Precision) -> Numerics {
        match p {
            Precision::F32 => Numerics {
                act_dtype: DType::F32,
                quantize_linear: false,
                int8: false,
            },
            Precision::Bf16 => Numerics {
                act_dtype: DType::BF16,
                quantize_linear: false,
                int8: false,
            },
            Precision::F16 => Numerics {
                act_dtype: DType::F16,
                quantize_linear: false,
                int8: false,
            },
            Precision::Q8_0 => Numerics {
                act_dtype: DType::F32,
                quantize_linear: true,
                int8: false,
            },
            Precision::Int8 => Numerics {
                act_dtype: DType::F16,
                quantize_linear: false,
                int8: true,
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
