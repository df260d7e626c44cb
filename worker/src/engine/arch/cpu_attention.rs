//! Softmax attention for f32 states on the CPU, in one pass per head.
//!
//! The device-generic path builds attention from batched matmuls, a mask
//! add, a softmax and layout copies: for the short texts probing runs on,
//! each of those is a tiny operation, and the matmuls go to a second thread
//! pool whose threads then spin against candle's. Here each (text, head)
//! pair is one task on candle's CPU pool that computes its scores, masked
//! softmax and weighted sum of values row by row and writes the result
//! straight into the `[b, t, heads · head_dim]` layout the output
//! projection reads. The arithmetic is the same as the generic path's
//! (scores scaled, soft-capped when configured, masked, softmax in f32).

use super::cpu_f32;
use crate::engine::packed_gemm::SharedOut;
use candle_core::Tensor;

/// `Σ a[i]·b[i]` with eight independent partial sums, so the compiler can
/// keep them in one vector register instead of one long dependency chain.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Attention of `q` (`[b, heads, t, hd]`) over `k`, `v` (`[b, kv_heads, s, hd]`,
/// query head `i` reading key head `i / (heads / kv_heads)`), with an additive
/// `mask` (`[t, s]`, 0 or -inf) shared by every text; returns `[b, t, heads · hd]`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f32,
    softcap: Option<f32>,
) -> candle_core::Result<Tensor> {
    let (b, heads, t, hd) = q.dims4()?;
    let (_, kv_heads, s, _) = k.dims4()?;
    if mask.dims() != [t, s] {
        candle_core::bail!("attention mask is {:?}, expected [{t}, {s}]", mask.dims());
    }
    let group = heads / kv_heads;
    let (q, k, v, mask) = (
        q.contiguous()?,
        k.contiguous()?,
        v.contiguous()?,
        mask.contiguous()?,
    );
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (ms, ml) = mask.storage_and_layout();
    let (qd, kd, vd, md) = (
        cpu_f32(&qs, ql)?,
        cpu_f32(&ks, kl)?,
        cpu_f32(&vs, vl)?,
        cpu_f32(&ms, ml)?,
    );
    let mut out = vec![0f32; b * t * heads * hd];
    let dst = SharedOut(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(b * heads, |range| {
        let mut scores = vec![0f32; s];
        for unit in range {
            let (bi, hi) = (unit / heads, unit % heads);
            let kv = bi * kv_heads + hi / group;
            let keys = &kd[kv * s * hd..(kv + 1) * s * hd];
            let values = &vd[kv * s * hd..(kv + 1) * s * hd];
            for ti in 0..t {
                let query = &qd[((bi * heads + hi) * t + ti) * hd..][..hd];
                let mut max = f32::NEG_INFINITY;
                for (si, score) in scores.iter_mut().enumerate() {
                    let key = &keys[si * hd..(si + 1) * hd];
                    let mut x = dot(query, key) * scale;
                    if let Some(c) = softcap {
                        x = (x / c).tanh() * c;
                    }
                    x += md[ti * s + si];
                    max = max.max(x);
                    *score = x;
                }
                let mut sum = 0f32;
                for score in scores.iter_mut() {
                    *score = (*score - max).exp();
                    sum += *score;
                }
                // SAFETY: slots (bi, ti, hi, 0..hd) belong to this unit alone.
                let row = unsafe {
                    std::slice::from_raw_parts_mut(dst.at(((bi * t + ti) * heads + hi) * hd), hd)
                };
                for (si, &p) in scores.iter().enumerate() {
                    let p = p / sum;
                    for (o, val) in row.iter_mut().zip(&values[si * hd..(si + 1) * hd]) {
                        *o += p * val;
                    }
                }
            }
        }
    });
    drop((qs, ks, vs, ms));
    Tensor::from_vec(out, (b, t, heads * hd), q.device())
}
