//! The bf16 block kernel on AVX512-BF16 (`vdpbf16ps`,
//! [`Bf16Kernel::DotPairs`](super::Bf16Kernel)), for CPUs that have
//! the instruction but no AMX tiles (AMD Zen 4 and later, Intel Cooper Lake)
//! or that were told not to use them (`CD_CPU_ISA=avx512bf16`).
//!
//! `vdpbf16ps acc, a, b` adds to each of 16 f32 lanes the two products of
//! the lane's pair of bf16 values in `a` and `b`: one instruction does 32
//! multiply-adds where an f32 `vfmadd` does 16. A row of a panel
//! ([`super`]) is exactly such a `b`: 16 columns × one pair of
//! consecutive `k`; `a` is one pair of a row of `x` broadcast to all lanes.
//!
//! Register tile: 8 rows × 32 columns (both panels of a column group) in 16
//! accumulators, two panel rows and eight broadcasts per pair of `k`; a
//! 32 × 32 block is four such tiles, each reading the group's panels from
//! L2 (k = 1536: 96 KiB). k is walked in steps of four pairs.

use super::{BLOCK, T};
use std::arch::x86_64::*;

/// Rows of `y` per register tile.
const ROWS: usize = 8;

/// One 32 × 32 block: `out = x_block · W_groupᵀ` over all of `kp`, stored
/// as 32 rows of 32 f32 `ld` floats apart.
///
/// # Safety
/// The CPU has AVX-512F and AVX512-BF16; `x` holds 32 rows of `kp` bf16
/// (`kp` a multiple of 32); `w` two panels of `kp / 2` rows of 32 bf16,
/// 64-byte aligned; `out` is valid for 32 rows of 32 writes at stride `ld`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn block(x: &[u16], kp: usize, w: &[u16], out: *mut f32, ld: usize) {
    assert!(x.len() >= BLOCK * kp && w.len() >= 2 * kp * T && kp.is_multiple_of(8));
    for r0 in (0..BLOCK).step_by(ROWS) {
        // SAFETY: rows `r0..r0 + 8` of `x` and of `out` (asserted above and
        // the caller's contract).
        unsafe { tile(x[r0 * kp..].as_ptr(), kp, w.as_ptr(), out.add(r0 * ld), ld) };
    }
}

/// Rows `0..8` of `x` (stride `kp`) times both panels of `w` into 8 rows of
/// 32 f32 at `out` (stride `ld`).
///
/// # Safety
/// See [`block`]: `x` has 8 rows of `kp` bf16 and `out` 8 rows of 32.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile(x: *const u16, kp: usize, w: *const u16, out: *mut f32, ld: usize) {
    let pairs = kp / 2;
    // A pair of bf16 values of `x` read as one 32-bit word.
    let xw = x.cast::<i32>();
    let (w0, w1) = (w, w.wrapping_add(kp * T));
    let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
    // SAFETY: reads stay within 8 rows of `pairs` words of `x` and `pairs`
    // 64-byte rows of each panel (aligned); writes within 8 rows of 32 of
    // `out`.
    unsafe {
        let step = |acc: &mut [[__m512; 2]; ROWS], p: usize| {
            let b0: __m512bh = std::mem::transmute(_mm512_load_si512(w0.add(p * 2 * T).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_load_si512(w1.add(p * 2 * T).cast()));
            for (r, row) in acc.iter_mut().enumerate() {
                let a: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(xw.add(r * pairs + p).read_unaligned()));
                row[0] = _mm512_dpbf16_ps(row[0], a, b0);
                row[1] = _mm512_dpbf16_ps(row[1], a, b1);
            }
        };
        // `pairs` is a multiple of 4 (`kp` of 32).
        for p in (0..pairs).step_by(4) {
            step(&mut acc, p);
            step(&mut acc, p + 1);
            step(&mut acc, p + 2);
            step(&mut acc, p + 3);
        }
        for (r, row) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.add(r * ld), row[0]);
            _mm512_storeu_ps(out.add(r * ld + T), row[1]);
        }
    }
}
