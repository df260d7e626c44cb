//! The CPU fast path: the engine's own kernels for f32 (and bf16 where the
//! CPU has AVX512-BF16 or AMX)
//! work on the CPU, and the glue between them and candle tensors.
//!
//! Everything here runs on candle's CPU thread pool (one pool for the
//! projections, attention and row operations, so no second pool spins
//! against it). What lives where:
//!
//! - [`isa`]: which instruction set the kernels use, chosen once per process
//!   (`CD_CPU_ISA`), and the `CD_CPU_KERNELS` switch, read once.
//! - [`packed_gemm`]: projections on weights packed once at load (f32
//!   panels; bf16 panels for `vdpbf16ps` or AMX tiles), the fused gated
//!   MLP, vector exponentials; [`blocking`]: how the f32 products walk
//!   their operands (`CD_CPU_ROW_BLOCK_KIB`, `CD_CPU_K_CHUNK`), read once.
//! - [`attention`]: softmax attention straight from the projections' row
//!   layout, texts packed end to end kept apart by [`Segment`]s.
//! - [`rows`]: residual adds and RMSNorm, row by row.
//! - this file: when a tensor takes the fast path ([`runs_kernels`]) and the
//!   conversions between tensors and the kernels' slices.
//!
//! This module imports nothing from the rest of the engine except the
//! activation enum ([`Act`]), a leaf: the generic layers call into it, never
//! the other way round.

pub(crate) mod attention;
pub mod isa;
pub(crate) mod packed_gemm;
pub(crate) mod rows;

pub(crate) use attention::Segment;
pub use packed_gemm::blocking;

use crate::engine::activation::Act;
use candle_core::{DType, Layout, Storage, Tensor};
#[cfg(target_arch = "x86_64")]
use packed_gemm::bf16::Bf16Panels;
use packed_gemm::PackedMatrix;

/// Whether work on `x` takes the engine's CPU kernels: f32 on the CPU, with
/// the kernels enabled (`CD_CPU_KERNELS` is not `0`).
pub(crate) fn runs_kernels(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && isa::kernels_enabled()
}

/// Whether an f32 CPU weight is packed for the projection kernel (needs the
/// kernels on and AVX2/FMA or better).
pub(crate) fn packs_weight(w: &Tensor) -> bool {
    runs_kernels(w) && PackedMatrix::supported()
}

/// `Σ a[i]·b[i]` with sixteen independent partial sums, so the compiler can
/// keep them in one AVX-512 register or two AVX2 ones (in the callers'
/// instruction-set variants) instead of one long dependency chain
/// (the attention's scores, RMSNorm's sum of squares).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The f32 contents of a contiguous CPU tensor's storage.
pub(crate) fn f32_slice<'a>(
    storage: &'a Storage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let Storage::Cpu(cpu) = storage else {
        candle_core::bail!("the engine's CPU kernels need CPU tensors")
    };
    let start = layout.start_offset();
    Ok(&cpu.as_slice::<f32>()?[start..start + layout.shape().elem_count()])
}

/// `x` (`[..., k]`) as a contiguous `[m, k]` matrix, plus its dims.
pub(crate) fn as_rows(x: &Tensor) -> candle_core::Result<(Tensor, Vec<usize>)> {
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let m: usize = dims[..dims.len() - 1].iter().product();
    Ok((x.reshape((m, k))?.contiguous()?, dims))
}

/// `y` (`[m, n]`) back to `x`'s leading dims, `[..., n]`.
pub(crate) fn from_rows(y: Tensor, mut dims: Vec<usize>) -> candle_core::Result<Tensor> {
    *dims.last_mut().expect("non-empty dims") = y.dim(1)?;
    y.reshape(dims)
}

/// Pack a CPU f32 `[out, inp]` weight for the projection kernel.
pub(crate) fn pack(w: &Tensor) -> candle_core::Result<PackedMatrix> {
    let (n, k) = w.dims2()?;
    let w = w.contiguous()?;
    let (storage, layout) = w.storage_and_layout();
    Ok(PackedMatrix::pack(f32_slice(&storage, layout)?, n, k))
}

/// Pack a CPU `[out, inp]` weight in bf16 for the bf16 kernels (rounded to
/// bf16 if it is not already).
#[cfg(target_arch = "x86_64")]
pub(crate) fn pack_bf16(w: &Tensor) -> candle_core::Result<Bf16Panels> {
    let (n, k) = w.dims2()?;
    let bits: Vec<u16> = w
        .to_dtype(DType::BF16)?
        .flatten_all()?
        .to_vec1::<half::bf16>()?
        .into_iter()
        .map(half::bf16::to_bits)
        .collect();
    Ok(Bf16Panels::pack(&bits, n, k))
}

/// `kernel` over the rows of `x`, a contiguous `[m, k]` f32 matrix on the
/// CPU (handed to it as one slice and `m`); its `[m, n]` output as a tensor.
fn over_rows(
    x: &Tensor,
    n: usize,
    kernel: impl FnOnce(&[f32], usize) -> Vec<f32>,
) -> candle_core::Result<Tensor> {
    let m = x.dim(0)?;
    let y = {
        let (storage, layout) = x.storage_and_layout();
        kernel(f32_slice(&storage, layout)?, m)
    };
    Tensor::from_vec(y, (m, n), x.device())
}

/// Refuse an `[m, k]` input to a projection that takes `features` columns.
fn check_width(x: &Tensor, features: usize) -> candle_core::Result<()> {
    let (m, k) = x.dims2()?;
    if k != features {
        candle_core::bail!("[{m}, {k}] input to a projection of {features} features")
    }
    Ok(())
}

/// `x·Wᵀ` through the packed kernel; `x` is a contiguous `[m, k]` f32 matrix on the CPU.
pub(crate) fn packed_matmul(x: &Tensor, w: &PackedMatrix) -> candle_core::Result<Tensor> {
    check_width(x, w.in_features())?;
    over_rows(x, w.out_features(), |rows, m| w.matmul_t(rows, m))
}

/// `x·Wᵀ` on the bf16 kernels (input rows rounded to bf16, f32 sums); `x` is a
/// contiguous `[m, k]` f32 matrix on the CPU.
#[cfg(target_arch = "x86_64")]
pub(crate) fn bf16_matmul(x: &Tensor, w: &Bf16Panels) -> candle_core::Result<Tensor> {
    check_width(x, w.k())?;
    over_rows(x, w.n(), |rows, m| w.matmul_t(rows, m))
}

/// `act(x·Gᵀ) ⊙ (x·Uᵀ)` through the packed kernel, for `x` `[..., k]` f32
/// on the CPU; the result has `x`'s leading dimensions.
pub(crate) fn packed_gated(
    x: &Tensor,
    g: &PackedMatrix,
    u: &PackedMatrix,
    act: Act,
) -> candle_core::Result<Tensor> {
    let (x2, dims) = as_rows(x)?;
    let y = over_rows(&x2, g.out_features(), |rows, m| {
        packed_gemm::matmul_gated(g, u, act, rows, m)
    })?;
    from_rows(y, dims)
}

/// `act(x·Gᵀ) ⊙ (x·Uᵀ)` on the bf16 kernels, for `x` `[..., k]` f32 on the
/// CPU; the result has `x`'s leading dimensions.
#[cfg(target_arch = "x86_64")]
pub(crate) fn bf16_gated(
    x: &Tensor,
    g: &Bf16Panels,
    u: &Bf16Panels,
    act: Act,
) -> candle_core::Result<Tensor> {
    let (x2, dims) = as_rows(x)?;
    let y = over_rows(&x2, g.n(), |rows, m| {
        packed_gemm::matmul_gated_bf16(g, u, act, rows, m)
    })?;
    from_rows(y, dims)
}

/// The inputs of [`attention_tensors`] besides queries, keys and values.
pub(crate) struct AttentionInputs<'a> {
    /// Rotary tables `[time, head_dim / 2]`, f32.
    pub cos: &'a Tensor,
    /// Rotary tables `[time, head_dim / 2]`, f32.
    pub sin: &'a Tensor,
    /// Each text's rows.
    pub segments: &'a [Segment],
    /// Which queries are asked.
    pub queries: attention::Queries,
    /// Keys (rotated) and values of a shared prefix, `[1, kv_heads, len, hd]`.
    pub prefix: Option<&'a (Tensor, Tensor)>,
    /// Heads, widths, scale, soft cap, window.
    pub spec: attention::HeadSpec,
}

/// [`attention::attention`] on tensors: f32 CPU `q` (`[b, t, heads, hd]`,
/// or `[texts, 1, heads, hd]` for the last queries only), `k` and `v`
/// (`[b, t, kv_heads, hd]`), all unrotated; returns `[b, t, heads · hd]` in
/// the output projection's layout.
pub(crate) fn attention_tensors(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    inputs: AttentionInputs<'_>,
) -> candle_core::Result<Tensor> {
    let (b, t, h, hd) = q.dims4()?;
    let c = |x: &Tensor| x.contiguous();
    let (q, k, v, cos, sin) = (c(q)?, c(k)?, c(v)?, c(inputs.cos)?, c(inputs.sin)?);
    let prefix = match inputs.prefix {
        Some((pk, pv)) => Some((c(pk)?, c(pv)?)),
        None => None,
    };
    let out = {
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (cs, cl) = cos.storage_and_layout();
        let (ss, sl) = sin.storage_and_layout();
        let pre = prefix
            .as_ref()
            .map(|(pk, pv)| (pk.storage_and_layout(), pv.storage_and_layout()));
        let prefix = match &pre {
            Some(((pks, pkl), (pvs, pvl))) => Some(attention::Prefix {
                keys: f32_slice(pks, pkl)?,
                values: f32_slice(pvs, pvl)?,
                // `[1, kv_heads, len, hd]`
                len: pkl.dims()[2],
            }),
            None => None,
        };
        let rope = attention::RopeTables {
            cos: f32_slice(&cs, cl)?,
            sin: f32_slice(&ss, sl)?,
        };
        attention::attention(
            f32_slice(&qs, ql)?,
            f32_slice(&ks, kl)?,
            f32_slice(&vs, vl)?,
            inputs.segments,
            inputs.queries,
            rope,
            prefix,
            inputs.spec,
        )
    };
    Tensor::from_vec(out, (b, t, h * hd), q.device())
}

/// Log-probabilities of `targets` under `packed` (the LM head, `[vocab,
/// d]`) for f32 CPU `states` `[n, d]`: each row's logits are formed, rounded
/// by `round`, soft-capped when `softcap` is set, and reduced with a fused
/// log-sum-exp, never materialising `[n, vocab]` log-probabilities.
pub(crate) fn lm_head_log_probs(
    packed: &PackedMatrix,
    states: &Tensor,
    targets: &[u32],
    softcap: Option<f32>,
    round: impl Fn(f32) -> f32 + Sync,
) -> candle_core::Result<Vec<f32>> {
    use rayon::prelude::*;
    let (n, d) = states.dims2()?;
    if d != packed.in_features() {
        candle_core::bail!(
            "[{n}, {d}] states for an LM head of {} features",
            packed.in_features()
        )
    }
    let x: Vec<f32> = states.contiguous()?.flatten_all()?.to_vec1()?;
    let mut logits = packed.matmul_t(&x, n);
    let v = packed.out_features();
    Ok(logits
        .par_chunks_mut(v)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            for z in row.iter_mut() {
                let mut y = round(*z);
                if let Some(cap) = softcap {
                    y = round((y / cap).tanh() * cap);
                }
                *z = y;
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + packed_gemm::sum_exp_shifted(row, max).ln();
            round(row[t as usize] - lse)
        })
        .collect())
}
