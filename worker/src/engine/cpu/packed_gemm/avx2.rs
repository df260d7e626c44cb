//! The AVX2 + FMA micro-kernel (8 f32 lanes, 16 ymm registers): 6 × 16
//! register tiles over one panel, and the 8-lane exponential for the gated
//! MLP's SiLU and GELU and the log-softmax normaliser.

use super::{TileOp, NR};
use crate::engine::activation::Act;
use std::arch::x86_64::*;

/// Rows of `y` per tile.
const MR: usize = 6;

/// One tile of up to 6 rows × 16 columns, dispatched to the kernel for its
/// row count.
///
/// # Safety
/// `t` satisfies [`TileOp`]'s contract with `t.rows ≤ 6`, `t.cols ≤ 16`;
/// the CPU has AVX2 and FMA.
pub(super) unsafe fn tile(t: &TileOp) {
    debug_assert!(t.rows <= MR && t.cols <= NR);
    // SAFETY: forwarded from the caller.
    unsafe {
        match t.rows {
            6 => kernel::<6>(t),
            5 => kernel::<5>(t),
            4 => kernel::<4>(t),
            3 => kernel::<3>(t),
            2 => kernel::<2>(t),
            1 => kernel::<1>(t),
            _ => unreachable!("AVX2 tiles have 1..=6 rows"),
        }
    }
}

/// `R × 16` tile: `c[r][j] (+)= Σ_{kk < kc} a[r·lda + kk] · b[kk·16 + j]`
/// for `j < cols` (see [`TileOp`]).
///
/// # Safety
/// See [`tile`].
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize>(t: &TileOp) {
    let TileOp {
        a,
        lda,
        kc,
        b,
        c,
        ldc,
        cols,
        accumulate,
        ..
    } = *t;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // SAFETY: all reads stay within `a` (R rows of kc at stride lda), `b`
    // (kc rows of 16) and the caller's `R × cols` block of `c`, all writes
    // within that block.
    unsafe {
        if accumulate {
            // The sums over the earlier chunks of k: the same chain of
            // multiply-adds goes on, so chunking changes no bit.
            for (r, row) in acc.iter_mut().enumerate() {
                *row = load_row(c.add(r * ldc), cols);
            }
        }
        // Panel rows are 64-byte aligned, so aligned loads apply (and, in
        // builds with debug assertions, compile to plain loads rather than
        // the byte copies `loadu` goes through there).
        let step = |acc: &mut [[__m256; 2]; R], kk: usize| {
            let b0 = _mm256_load_ps(b.add(kk * NR));
            let b1 = _mm256_load_ps(b.add(kk * NR + 8));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r * lda + kk));
                row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                row[1] = _mm256_fmadd_ps(av, b1, row[1]);
            }
        };
        // Four steps per iteration, as in the AVX-512 kernel: the row
        // addresses are computed once for four broadcasts each.
        let mut kk = 0;
        while kk + 4 <= kc {
            step(&mut acc, kk);
            step(&mut acc, kk + 1);
            step(&mut acc, kk + 2);
            step(&mut acc, kk + 3);
            kk += 4;
        }
        while kk < kc {
            step(&mut acc, kk);
            kk += 1;
        }
        for (r, row) in acc.iter().enumerate() {
            store_row(row, c.add(r * ldc), cols);
        }
    }
}

/// `dst[j] = act(g[j]) · u[j]` for `j < cols` of one tile row, both gates
/// as `x / (1 + e⁻ᶻ)` with the exponential from [`exp8`] and an IEEE
/// division (`z` as in `super::act_times`), 8 lanes at a time.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `g` and `u` hold 16 floats; `dst` must be
/// valid for `cols ≤ 16` writes.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn act_times(act: Act, g: *const f32, u: *const f32, dst: *mut f32, cols: usize) {
    let mut y = [_mm256_setzero_ps(); 2];
    for (h, v) in y.iter_mut().enumerate() {
        // SAFETY: `g` and `u` hold 16 floats (the caller's contract).
        unsafe {
            let x = _mm256_loadu_ps(g.add(8 * h));
            let z = match act {
                Act::Silu => x,
                Act::GeluTanh => {
                    let c = _mm256_set1_ps;
                    let x2 = _mm256_mul_ps(x, x);
                    let inner = _mm256_fmadd_ps(c(super::GELU_CUBIC), x2, c(1.0));
                    _mm256_mul_ps(_mm256_mul_ps(c(super::GELU_2C), x), inner)
                }
            };
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), z));
            let s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
            *v = _mm256_mul_ps(s, _mm256_loadu_ps(u.add(8 * h)));
        }
    }
    // SAFETY: `dst` is valid for `cols` writes (the caller's contract).
    unsafe { store_row(&y, dst, cols) }
}

/// Stores the first `cols ≤ 16` lanes of a 16-lane row (two vectors) at
/// `dst`: straight from the registers for a whole row, through a stack
/// buffer for a partial one.
///
/// # Safety
/// `dst` must be valid for `cols` writes; the CPU has AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_row(row: &[__m256; 2], dst: *mut f32, cols: usize) {
    // SAFETY: at most `cols` floats reach `dst` (the caller's contract).
    unsafe {
        if cols == NR {
            _mm256_storeu_ps(dst, row[0]);
            _mm256_storeu_ps(dst.add(8), row[1]);
        } else {
            let mut buf = [0f32; NR];
            _mm256_storeu_ps(buf.as_mut_ptr(), row[0]);
            _mm256_storeu_ps(buf.as_mut_ptr().add(8), row[1]);
            std::ptr::copy_nonoverlapping(buf.as_ptr(), dst, cols);
        }
    }
}

/// The first `cols ≤ 16` floats at `src` as a 16-lane row (two vectors),
/// the lanes past `cols` zero: the inverse of [`store_row`].
///
/// # Safety
/// `src` must be valid for `cols` reads; the CPU has AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_row(src: *const f32, cols: usize) -> [__m256; 2] {
    // SAFETY: at most `cols` floats are read from `src` (the caller's contract).
    unsafe {
        if cols == NR {
            [_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8))]
        } else {
            let mut buf = [0f32; NR];
            std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), cols);
            [
                _mm256_loadu_ps(buf.as_ptr()),
                _mm256_loadu_ps(buf.as_ptr().add(8)),
            ]
        }
    }
}

/// `eˣ` in 8 lanes, within a few units in the last place of f32 over
/// `[-87, 88]` (inputs are clamped to that range, where the result stays a
/// normal float): `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-7 Taylor-like
/// polynomial for `eʳ` (Cephes `expf` coefficients), and `2ⁿ` built in the
/// exponent bits.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp8(x: __m256) -> __m256 {
    let c = _mm256_set1_ps;
    let x = _mm256_min_ps(_mm256_max_ps(x, c(-87.0)), c(88.0));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        c(std::f32::consts::LOG2_E),
    ));
    // ln 2 split in two so that n · LN2_HI is exact.
    let r = _mm256_fnmadd_ps(n, c(super::LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, c(super::LN2_LO), r);
    let mut p = c(super::EXP_POLY[0]);
    for &coef in &super::EXP_POLY[1..] {
        p = _mm256_fmadd_ps(p, r, c(coef));
    }
    let p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, c(1.0)));
    let two_n = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(two_n))
}

/// `Σ_j e^(row[j] − max)`, 8 lanes at a time.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn sum_exp_shifted(row: &[f32], max: f32) -> f32 {
    let m = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| (v - max).exp()).sum();
    for c in chunks {
        // SAFETY: `c` holds 8 floats.
        acc = _mm256_add_ps(acc, unsafe {
            exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m))
        });
    }
    let mut lanes = [0f32; 8];
    // SAFETY: 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    lanes.iter().sum::<f32>() + tail
}

/// `row[j] = e^(row[j] − max)`, returning their sum; 8 lanes at a time.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp_shifted_in_place(row: &mut [f32], max: f32) -> f32 {
    let m = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` holds 8 floats.
        unsafe {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
            acc = _mm256_add_ps(acc, e);
        }
    }
    let rest = chunks.into_remainder();
    let mut tail = 0f32;
    if !rest.is_empty() {
        // The last 1..7 values through the same vector exponential.
        let mut buf = [max; 8];
        buf[..rest.len()].copy_from_slice(rest);
        // SAFETY: 8 floats in and out of `buf`.
        unsafe {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(buf.as_ptr()), m));
            _mm256_storeu_ps(buf.as_mut_ptr(), e);
        }
        rest.copy_from_slice(&buf[..rest.len()]);
        tail = rest.iter().sum();
    }
    let mut lanes = [0f32; 8];
    // SAFETY: 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    lanes.iter().sum::<f32>() + tail
}
