//! The AVX-512F micro-kernel (16 f32 lanes, 32 zmm registers): 8 × 48
//! register tiles over three adjacent panels, and the 16-lane exponential for
//! the gated MLP's SiLU and GELU and the log-softmax normaliser.
//!
//! Why 8 × 48: per step along `k` the kernel loads one row of each of three
//! panels and multiplies it with 8 broadcast values of `x` into 24
//! accumulators (28 of the 32 registers in use), so eleven loads feed 24
//! multiply-adds and only eight rows of `x` are streamed. Measured on a
//! 2-core AVX-512 machine (`cd-bench matmul`, SmolLM2's shapes): one
//! thread reached ~89 % of the FMA peak against ~80 % for a 12 × 32 tile
//! (two panels) and ~81 % for 6 × 64 (four panels); k is unrolled by four so
//! the row addresses are computed once per four broadcasts.

use super::{TileOp, NR};
use crate::engine::activation::Act;
use std::arch::x86_64::*;

/// Rows of `y` per tile.
const MR: usize = 8;

/// Lanes `0..cols` of a 16-lane vector (`cols ≤ 16`).
fn lanes(cols: usize) -> __mmask16 {
    debug_assert!(cols <= NR);
    ((1u32 << cols) - 1) as __mmask16
}

/// One tile of up to 8 rows × 48 columns, dispatched to the kernel for its
/// row count and panel count.
///
/// # Safety
/// `t` satisfies [`TileOp`]'s contract with `t.rows ≤ 8`, `t.cols ≤ 48`;
/// the CPU has AVX-512F.
pub(super) unsafe fn tile(t: &TileOp) {
    debug_assert!(t.rows <= MR && t.cols <= 3 * NR);
    macro_rules! by_rows {
        ($np:literal) => {
            match t.rows {
                8 => kernel::<8, $np>(t),
                7 => kernel::<7, $np>(t),
                6 => kernel::<6, $np>(t),
                5 => kernel::<5, $np>(t),
                4 => kernel::<4, $np>(t),
                3 => kernel::<3, $np>(t),
                2 => kernel::<2, $np>(t),
                1 => kernel::<1, $np>(t),
                _ => unreachable!("AVX-512 tiles have 1..=8 rows"),
            }
        };
    }
    // SAFETY: forwarded from the caller; a tile of ≤ 16 columns reads one panel.
    unsafe {
        if t.cols > 2 * NR {
            by_rows!(3)
        } else if t.cols > NR {
            by_rows!(2)
        } else {
            by_rows!(1)
        }
    }
}

/// `R × 16·P` tile: `c[r][16p + j] (+)= Σ_{kk < kc} a[r·lda + kk] ·
/// b[p·ldb + kk·16 + j]` for `16p + j < cols` (see [`TileOp`]).
///
/// # Safety
/// See [`tile`]; `b` holds `P` panels.
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize, const P: usize>(t: &TileOp) {
    let TileOp {
        a,
        lda,
        kc,
        b,
        ldb,
        c,
        ldc,
        cols,
        accumulate,
        ..
    } = *t;
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    // Lanes of panel `p` inside the tile's `cols`.
    let width = |p: usize| cols.saturating_sub(p * NR).min(NR);
    // SAFETY: all reads stay within `a` (R rows of kc at stride lda), `b`
    // (P panels of kc rows of 16 at stride ldb, aligned) and the caller's
    // `R × cols` block of `c`, all writes within that block.
    unsafe {
        if accumulate {
            // The sums over the earlier chunks of k: the same chain of
            // multiply-adds goes on, so chunking changes no bit.
            for (r, row) in acc.iter_mut().enumerate() {
                for (p, v) in row.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(lanes(width(p)), c.add(r * ldc + p * NR));
                }
            }
        }
        // One step along k: row `kk` of each panel times column `kk` of
        // the tile's rows of `a`.
        let step = |acc: &mut [[__m512; P]; R], kk: usize| {
            let mut bv = [_mm512_setzero_ps(); P];
            for (p, v) in bv.iter_mut().enumerate() {
                *v = _mm512_load_ps(b.add(p * ldb + kk * NR));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * lda + kk));
                for (acc, b) in row.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(av, *b, *acc);
                }
            }
        };
        // Four steps per iteration: the eight row addresses are computed
        // once for four broadcasts each (constant offsets), which keeps the
        // integer work that shares ports with the FMA units small.
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
            for (p, v) in row.iter().enumerate() {
                let at = c.add(r * ldc + p * NR);
                let n = width(p);
                if n == NR {
                    _mm512_storeu_ps(at, *v);
                } else {
                    _mm512_mask_storeu_ps(at, lanes(n), *v);
                }
            }
        }
    }
}

/// `dst[j] = act(g[j]) · u[j]` for `j < cols` of one tile row, 16 lanes at
/// once, both gates as `x / (1 + e⁻ᶻ)` with the exponential from [`exp16`]
/// and an IEEE division (`z` as in `super::act_times`; the same
/// arithmetic as the AVX2 version, lane for lane).
///
/// # Safety
/// The CPU must have AVX-512F; `g` and `u` hold 16 floats; `dst` must be
/// valid for `cols ≤ 16` writes.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn act_times(act: Act, g: *const f32, u: *const f32, dst: *mut f32, cols: usize) {
    // SAFETY: 16 floats in `g` and `u`, `cols` writes to `dst` (masked).
    unsafe {
        let x = _mm512_loadu_ps(g);
        let z = match act {
            Act::Silu => x,
            Act::GeluTanh => {
                let c = _mm512_set1_ps;
                let x2 = _mm512_mul_ps(x, x);
                let inner = _mm512_fmadd_ps(c(super::GELU_CUBIC), x2, c(1.0));
                _mm512_mul_ps(_mm512_mul_ps(c(super::GELU_2C), x), inner)
            }
        };
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), z));
        let s = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e));
        let y = _mm512_mul_ps(s, _mm512_loadu_ps(u));
        _mm512_mask_storeu_ps(dst, lanes(cols), y);
    }
}

/// `eˣ` in 16 lanes: the algorithm and constants of the AVX2 `exp8`, so
/// both give the same bits.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn exp16(x: __m512) -> __m512 {
    let c = _mm512_set1_ps;
    let x = _mm512_min_ps(_mm512_max_ps(x, c(-87.0)), c(88.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, c(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, c(super::LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, c(super::LN2_LO), r);
    let mut p = c(super::EXP_POLY[0]);
    for &coef in &super::EXP_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, c(coef));
    }
    let p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, c(1.0)));
    let two_n = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    _mm512_mul_ps(p, _mm512_castsi512_ps(two_n))
}

/// `Σ_j e^(row[j] − max)`, 16 lanes at a time.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn sum_exp_shifted(row: &[f32], max: f32) -> f32 {
    let m = _mm512_set1_ps(max);
    let mut acc = _mm512_setzero_ps();
    let chunks = row.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|v| (v - max).exp()).sum();
    for c in chunks {
        // SAFETY: `c` holds 16 floats.
        acc = _mm512_add_ps(acc, unsafe {
            exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), m))
        });
    }
    _mm512_reduce_add_ps(acc) + tail
}

/// `row[j] = e^(row[j] − max)`, returning their sum; 16 lanes at a time.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn exp_shifted_in_place(row: &mut [f32], max: f32) -> f32 {
    let m = _mm512_set1_ps(max);
    let mut acc = _mm512_setzero_ps();
    let mut chunks = row.chunks_exact_mut(16);
    for c in &mut chunks {
        // SAFETY: `c` holds 16 floats.
        unsafe {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), m));
            _mm512_storeu_ps(c.as_mut_ptr(), e);
            acc = _mm512_add_ps(acc, e);
        }
    }
    let rest = chunks.into_remainder();
    if rest.is_empty() {
        return _mm512_reduce_add_ps(acc);
    }
    // The last 1..15 values through the same vector exponential, masked.
    let mask = lanes(rest.len());
    // SAFETY: masked loads and stores touch only `rest`'s elements.
    unsafe {
        let x = _mm512_mask_loadu_ps(m, mask, rest.as_ptr());
        let e = exp16(_mm512_sub_ps(x, m));
        _mm512_mask_storeu_ps(rest.as_mut_ptr(), mask, e);
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(mask, e));
    }
    _mm512_reduce_add_ps(acc)
}
