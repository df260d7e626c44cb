//! Row-wise f32 operations for the CPU path (residual adds and RMSNorm), on
//! candle's CPU pool like the projections and attention.
//!
//! candle's own versions run on rayon's pool; on a machine with few cores
//! the two pools' idle threads spin against each other between every two
//! operations. These compute `x / sqrt(mean(x²) + eps) · alpha` in f32 as
//! candle does, except that the sum of squares runs in eight interleaved
//! partial sums (vectorisable; candle's single running sum is a chain of
//! dependent adds), so results differ from candle's by f32 rounding only;
//! a residual add is fused in front of the norm where a block has one.

use super::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::packed_gemm::SharedOut;
use super::{dot, f32_slice};
use candle_core::Tensor;

/// Contiguous f32 CPU data of `x` as rows of its last dimension.
fn rows_of(x: &Tensor) -> candle_core::Result<(Tensor, usize, usize)> {
    let x = x.contiguous()?;
    let d = x.dims().last().copied().unwrap_or(1);
    let n = x.elem_count() / d.max(1);
    Ok((x, n, d))
}

/// `a = x + y` (if `y`) and `rms_norm(a) · alpha`, row by row; returns
/// `(a, normed)`, both shaped as `x`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_unsafe))]
pub(crate) fn add_rms_norm(
    x: &Tensor,
    y: Option<&Tensor>,
    alpha: &Tensor,
    eps: f32,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (xc, rows, d) = rows_of(x)?;
    let yc = y.map(|y| y.contiguous()).transpose()?;
    if let Some(y) = &yc {
        if y.dims() != xc.dims() {
            candle_core::bail!("residual add of {:?} to {:?}", y.dims(), xc.dims())
        }
    }
    let alpha = alpha.contiguous()?;
    let mut sum = if yc.is_some() {
        vec![0f32; rows * d]
    } else {
        Vec::new()
    };
    let mut normed = vec![0f32; rows * d];
    {
        let (xs, xl) = xc.storage_and_layout();
        let xd = f32_slice(&xs, xl)?;
        let ys = yc.as_ref().map(|y| y.storage_and_layout());
        let yd = match &ys {
            Some((s, l)) => Some(f32_slice(s, l)?),
            None => None,
        };
        let (als, all) = alpha.storage_and_layout();
        let ad = f32_slice(&als, all)?;
        if ad.len() != d {
            candle_core::bail!("norm weight of {} for rows of {d}", ad.len())
        }
        let (sum_out, norm_out) = (SharedOut(sum.as_mut_ptr()), SharedOut(normed.as_mut_ptr()));
        let isa = isa::active();
        candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
            for r in range {
                let src = &xd[r * d..(r + 1) * d];
                // SAFETY: row `r` of each output belongs to this task alone.
                let dst = unsafe { std::slice::from_raw_parts_mut(norm_out.at(r * d), d) };
                let residual = yd.map(|yd| {
                    // SAFETY: as above; `sum` has `rows · d` elements when `y` is given.
                    let a = unsafe { std::slice::from_raw_parts_mut(sum_out.at(r * d), d) };
                    (&yd[r * d..(r + 1) * d], a)
                });
                // SAFETY: each variant runs only where the CPU has its
                // instructions (`active` never exceeds the detected set).
                unsafe {
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
                            norm_row_avx512(src, residual, ad, dst, eps)
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => norm_row_avx2(src, residual, ad, dst, eps),
                        _ => norm_row(src, residual, ad, dst, eps),
                    }
                }
            }
        });
    }
    let a = match yc {
        Some(_) => Tensor::from_vec(sum, xc.dims(), xc.device())?,
        None => xc.clone(),
    };
    let n = Tensor::from_vec(normed, xc.dims(), xc.device())?;
    Ok((a, n))
}

/// One row: `a = x + y` into the residual's buffer when there is one, then
/// `dst = a / sqrt(mean(a²) + eps) · alpha`.
#[inline(always)]
fn norm_row(
    x: &[f32],
    residual: Option<(&[f32], &mut [f32])>,
    alpha: &[f32],
    dst: &mut [f32],
    eps: f32,
) {
    let row: &[f32] = match residual {
        Some((y, a)) => {
            for ((a, x), y) in a.iter_mut().zip(x).zip(y) {
                *a = x + y;
            }
            a
        }
        None => x,
    };
    let sum2 = dot(row, row);
    let m = (sum2 / row.len() as f32 + eps).sqrt();
    for ((o, v), w) in dst.iter_mut().zip(row).zip(alpha) {
        *o = *v / m * *w;
    }
}

/// [`norm_row`] compiled for AVX2/FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn norm_row_avx2(
    x: &[f32],
    residual: Option<(&[f32], &mut [f32])>,
    alpha: &[f32],
    dst: &mut [f32],
    eps: f32,
) {
    norm_row(x, residual, alpha, dst, eps)
}

/// [`norm_row`] compiled for AVX-512F.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn norm_row_avx512(
    x: &[f32],
    residual: Option<(&[f32], &mut [f32])>,
    alpha: &[f32],
    dst: &mut [f32],
    eps: f32,
) {
    norm_row(x, residual, alpha, dst, eps)
}

/// `x + y`, same shapes.
pub(crate) fn add(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let (xc, rows, d) = rows_of(x)?;
    let yc = y.contiguous()?;
    if yc.dims() != xc.dims() {
        candle_core::bail!("residual add of {:?} to {:?}", yc.dims(), xc.dims())
    }
    let mut out = vec![0f32; rows * d];
    {
        let (xs, xl) = xc.storage_and_layout();
        let (ys, yl) = yc.storage_and_layout();
        let (xd, yd) = (f32_slice(&xs, xl)?, f32_slice(&ys, yl)?);
        let dst = SharedOut(out.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
            for r in range {
                // SAFETY: row `r` belongs to this task alone.
                let o = unsafe { std::slice::from_raw_parts_mut(dst.at(r * d), d) };
                for ((o, x), y) in o.iter_mut().zip(&xd[r * d..]).zip(&yd[r * d..]) {
                    *o = x + y;
                }
            }
        });
    }
    Tensor::from_vec(out, xc.dims(), xc.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_add_and_norm_match_candle() {
        let dev = Device::Cpu;
        let vals = |n: usize, seed: f32| -> Vec<f32> {
            (0..n)
                .map(|i| (i as f32 * 0.37 + seed).sin() * 3.0)
                .collect()
        };
        let x = Tensor::from_vec(vals(5 * 7 * 24, 0.1), (5, 7, 24), &dev).unwrap();
        let y = Tensor::from_vec(vals(5 * 7 * 24, 2.0), (5, 7, 24), &dev).unwrap();
        let alpha = Tensor::from_vec(vals(24, 4.0), 24, &dev).unwrap();
        let (a, n) = add_rms_norm(&x, Some(&y), &alpha, 1e-6).unwrap();
        let want_a = (&x + &y).unwrap();
        let want_n = candle_nn::ops::rms_norm(&want_a, &alpha, 1e-6).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Sums: the same bytes. Norms: candle's up to f32 rounding of the sum
        // of squares (summed in another order here).
        let close = |got: Vec<f32>, want: Vec<f32>| {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
            }
        };
        assert_eq!(flat(&a), flat(&want_a));
        close(flat(&n), flat(&want_n));
        assert_eq!(flat(&add(&x, &y).unwrap()), flat(&want_a));
        let (same, n_only) = add_rms_norm(&x, None, &alpha, 1e-6).unwrap();
        assert_eq!(flat(&same), flat(&x));
        close(
            flat(&n_only),
            flat(&candle_nn::ops::rms_norm(&x, &alpha, 1e-6).unwrap()),
        );
        let wrong = Tensor::zeros((5, 7, 23), candle_core::DType::F32, &dev).unwrap();
        assert!(add(&x, &wrong).is_err());
    }
}
