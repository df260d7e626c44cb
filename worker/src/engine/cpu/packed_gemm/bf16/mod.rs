//! `y = x·Wᵀ` with bf16 inputs and f32 accumulation on the CPU (precision
//! `16` on CPUs with AVX512-BF16 or AMX-BF16): the weights' layout, the
//! rounding of `x`, the division of the output into blocks for the threads,
//! and the choice between the two block kernels.
//!
//! Why: both instruction sets multiply pairs of bf16 values into f32 sums at
//! twice (`vdpbf16ps`, [`avx512bf16`]) or about eight
//! times (`tdpbf16ps`, [`amx`]) the multiply-add rate of f32 on
//! the same core, and PyTorch's bf16 path uses them on these machines; the
//! bf16 weights also halve the bytes streamed per batch.
//!
//! Numerics: `x` is rounded to bf16 (nearest, ties to even, as PyTorch's
//! conversion), `W` is stored in bf16, every product is exact in f32 and sums
//! accumulate in f32. The result stays f32. The two kernels add the same
//! products in different orders, so they agree to f32 rounding, not bit for
//! bit.
//!
//! Layout of `W` (`[n, k]`): `k` is padded with zeros to a multiple of 32
//! (`kp`), `n` to a multiple of 32 (two 16-column panels per column group).
//! Panel `q` holds, for every pair of consecutive `k` (`kp / 2` rows), its 16
//! columns × 2 values: 64 bytes per row, the operand layout of both
//! `vdpbf16ps` (one row is one register) and `tdpbf16ps` (16 rows are one
//! tile). `x` is converted per call into bf16 rows of `kp` (rows padded to
//! 32).
//!
//! Work division: a unit is one column group (32 columns) × 32 rows, one
//! 32 × 32 block of `y`; the first thread to need a row block of `x`
//! rounds it for all.

mod amx;
mod avx512bf16;

use super::{for_each_unit, SharedOut};
use crate::engine::cpu::isa::{self, Isa};

/// Columns per panel and rows per AMX tile.
const T: usize = 16;
/// `k` per AMX tile (bf16 values per 64-byte tile row); `kp` is a multiple.
const KB: usize = 32;
/// Rows and columns of one unit's output block.
pub(crate) const BLOCK: usize = 2 * T;

/// The instructions a 32 × 32 block of bf16 products runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bf16Kernel {
    /// AVX512-BF16 `vdpbf16ps`: 16 lanes, each the sum of two products.
    DotPairs,
    /// AMX-BF16 `tdpbf16ps` on 16 × 16 f32 tiles.
    Tiles,
}

impl Bf16Kernel {
    /// Every kernel, best first.
    pub(crate) const ALL: [Bf16Kernel; 2] = [Bf16Kernel::Tiles, Bf16Kernel::DotPairs];

    /// The instruction set this kernel is the bf16 kernel of; a process
    /// whose active set is that one or better can run it.
    fn isa(self) -> Isa {
        match self {
            Bf16Kernel::Tiles => Isa::Amx,
            Bf16Kernel::DotPairs => Isa::Avx512Bf16,
        }
    }

    /// Whether this process can run the kernel.
    pub(crate) fn runs_here(self) -> bool {
        self.isa() <= isa::active()
    }

    /// The kernel of the active instruction set, if it has one: AMX tiles
    /// on [`Isa::Amx`], pairs on [`Isa::Avx512Bf16`].
    pub(crate) fn active() -> Option<Bf16Kernel> {
        let active = isa::active();
        Bf16Kernel::ALL.into_iter().find(|k| k.isa() == active)
    }

    /// [`Bf16Kernel::active`], for callers that checked [`available`].
    pub(crate) fn required() -> Bf16Kernel {
        Bf16Kernel::active().expect("no bf16 kernel runs in this process (see `bf16::available`)")
    }

    /// One 32 × 32 block: `out = x_block · W_groupᵀ` over all of `kp`,
    /// stored as 32 rows of 32 f32 `ld` floats apart.
    ///
    /// # Safety
    /// [`Bf16Kernel::runs_here`]; for [`Bf16Kernel::Tiles`] this thread is configured
    /// ([`amx::configure_thread`]); `x` holds 32 rows of `kp` bf16;
    /// `w` two panels of `kp / 2` rows of 32 bf16, 64-byte aligned; `out`
    /// is valid for those writes.
    unsafe fn block(self, x: &[u16], kp: usize, w: &[u16], out: *mut f32, ld: usize) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match self {
                Bf16Kernel::Tiles => amx::block(x, kp, w, out, ld),
                Bf16Kernel::DotPairs => avx512bf16::block(x, kp, w, out, ld),
            }
        }
    }
}

/// Whether bf16 projections run on one of the kernels in this process.
pub(crate) fn available() -> bool {
    Bf16Kernel::active().is_some()
}

/// `f32 → bf16` bits, nearest with ties to even (NaN stays a quiet NaN).
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// A weight matrix in bf16, laid out for [`Bf16Panels::matmul_t`].
pub(crate) struct Bf16Panels {
    n: usize,
    k: usize,
    kp: usize,
    /// Panels from `data[offset]`, 64-byte aligned.
    data: Vec<u16>,
    offset: usize,
}

impl Bf16Panels {
    /// Pack `w` (row-major `[n, k]`, given as bf16 bits).
    pub(crate) fn pack(w: &[u16], n: usize, k: usize) -> Bf16Panels {
        assert_eq!(w.len(), n * k, "packing a [{n}, {k}] matrix");
        let kp = k.div_ceil(KB) * KB;
        let panels = n.div_ceil(BLOCK) * 2;
        let len = panels * kp * T;
        let mut data = vec![0u16; len + 32];
        let offset = data.as_ptr().align_offset(64);
        assert!(
            offset < 32,
            "a u16 buffer reaches 64-byte alignment within 32 values"
        );
        let dst = &mut data[offset..offset + len];
        for (q, panel) in dst.chunks_exact_mut(kp * T).enumerate() {
            for j in 0..T.min(n.saturating_sub(q * T)) {
                let row = &w[(q * T + j) * k..(q * T + j + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[(kk / 2) * 2 * T + 2 * j + kk % 2] = v;
                }
            }
        }
        Bf16Panels {
            n,
            k,
            kp,
            data,
            offset,
        }
    }

    pub(crate) fn n(&self) -> usize {
        self.n
    }

    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// The two panels of column group `g`.
    fn group(&self, g: usize) -> &[u16] {
        let at = self.offset + g * 2 * self.kp * T;
        &self.data[at..at + 2 * self.kp * T]
    }

    /// `x·Wᵀ` for `x` row-major `[m, k]` f32 (rounded to bf16 first);
    /// row-major `[m, n]` f32.
    ///
    /// Panics unless [`available`].
    pub(crate) fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_t_on(Bf16Kernel::required(), x, m)
    }

    /// [`Bf16Panels::matmul_t`] on `kernel` (panics unless it
    /// [runs here](Bf16Kernel::runs_here)).
    pub(crate) fn matmul_t_on(&self, kernel: Bf16Kernel, x: &[f32], m: usize) -> Vec<f32> {
        let n = self.n;
        let mut y: Vec<f32> = Vec::with_capacity(m * n);
        let out = SharedOut(y.as_mut_ptr());
        self.for_each_unit_of(kernel, x, m, 1, |buf, xblock, rb, g| {
            let (row, col) = (rb * BLOCK, g * BLOCK);
            let (rows, cols) = (BLOCK.min(m - row), BLOCK.min(n - col));
            // SAFETY (both branches): `kernel` runs here (`for_each_unit_of`);
            // rows `row..row + rows`, columns `col..col + cols` of `y`
            // belong to this unit alone.
            if (rows, cols) == (BLOCK, BLOCK) {
                // A whole block goes straight into `y`.
                unsafe { kernel.block(xblock, self.kp, self.group(g), out.at(row * n + col), n) };
                return;
            }
            let buf = &mut buf[0];
            unsafe { kernel.block(xblock, self.kp, self.group(g), buf.as_mut_ptr(), BLOCK) };
            for r in 0..rows {
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        buf[r * BLOCK..].as_ptr(),
                        out.at((row + r) * n + col),
                        cols,
                    )
                };
            }
        });
        // SAFETY: the units cover every (row, column) and all were written.
        unsafe { y.set_len(m * n) };
        y
    }

    /// Runs the products of `x` with every matrix of `mats` (same shape as
    /// `self`) one 32 × 32 block at a time: `f(row, col, rows, cols, blocks)`
    /// gets, for each matrix, the block as 32 rows of 32 f32 (the
    /// valid part `rows × cols`). Each block is handed out once.
    pub(crate) fn for_each_block(
        &self,
        kernel: Bf16Kernel,
        x: &[f32],
        m: usize,
        mats: &[&Bf16Panels],
        f: impl Fn(usize, usize, usize, usize, &[[f32; BLOCK * BLOCK]]) + Sync,
    ) {
        let n = self.n;
        assert!(
            mats.iter().all(|w| (w.n, w.k) == (n, self.k)),
            "matrices differ in shape"
        );
        self.for_each_unit_of(kernel, x, m, mats.len(), |bufs, xblock, rb, g| {
            for (w, buf) in mats.iter().zip(bufs.iter_mut()) {
                // SAFETY: `kernel` runs here (`for_each_unit_of`); `buf` is 32 × 32.
                unsafe { kernel.block(xblock, self.kp, w.group(g), buf.as_mut_ptr(), BLOCK) };
            }
            let (row, col) = (rb * BLOCK, g * BLOCK);
            f(row, col, BLOCK.min(m - row), BLOCK.min(n - col), bufs);
        });
    }

    /// Calls `f(buffers, x_block, row_block, column_group)` once
    /// for every 32 × 32 block of the `[m, n]` output, on the pool's
    /// threads, each thread with `buffers` 32 × 32 f32 scratch blocks (and
    /// its tiles configured, for [`Bf16Kernel::Tiles`]). Panics unless
    /// `kernel` [runs here](Bf16Kernel::runs_here). `x_block` is row block `row_block` of `x` in bf16 (32
    /// rows of `kp`), converted by the first unit that needs it, so the
    /// conversion is shared by the threads too.
    fn for_each_unit_of(
        &self,
        kernel: Bf16Kernel,
        x: &[f32],
        m: usize,
        buffers: usize,
        f: impl Fn(&mut [[f32; BLOCK * BLOCK]], &[u16], usize, usize) + Sync,
    ) {
        use std::sync::atomic::{AtomicU8, Ordering};
        let (n, k, kp) = (self.n, self.k, self.kp);
        assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
        assert!(
            kernel.runs_here(),
            "the {kernel:?} bf16 kernel does not run in this process"
        );
        if m == 0 || n == 0 {
            return;
        }
        let (row_blocks, col_groups) = (m.div_ceil(BLOCK), n.div_ceil(BLOCK));
        // Zeroed: padding columns and rows must be 0.
        let mut xb = vec![0u16; row_blocks * BLOCK * kp];
        let xb_ptr = SharedOut(xb.as_mut_ptr().cast());
        // Per row block: 0 not converted, 1 being converted, 2 ready.
        let ready: Vec<AtomicU8> = (0..row_blocks).map(|_| AtomicU8::new(0)).collect();
        for_each_unit(
            row_blocks * col_groups,
            || vec![[0f32; BLOCK * BLOCK]; buffers],
            |bufs, u| {
                // Column-major order: consecutive units reuse one group's weights.
                let (g, rb) = (u / row_blocks, u % row_blocks);
                let (lo, hi) = (rb * BLOCK, m.min((rb + 1) * BLOCK));
                let base = xb_ptr.at(0).cast::<u16>();
                match ready[rb].compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire) {
                    Ok(_) => {
                        for r in lo..hi {
                            // SAFETY: row `r` of `xb` is written by this unit
                            // alone (it won the exchange), read by others only
                            // after the release below; both kernels' CPUs
                            // have AVX512-BF16 (`cpu::isa` checks it).
                            unsafe {
                                let dst = std::slice::from_raw_parts_mut(base.add(r * kp), k);
                                round_row(&x[r * k..(r + 1) * k], dst);
                            }
                        }
                        ready[rb].store(2, Ordering::Release);
                    }
                    Err(_) => {
                        while ready[rb].load(Ordering::Acquire) != 2 {
                            std::hint::spin_loop();
                        }
                    }
                }
                // SAFETY: row block `rb` is converted (above) and no longer written.
                let xblock = unsafe { std::slice::from_raw_parts(base.add(lo * kp), BLOCK * kp) };
                if kernel == Bf16Kernel::Tiles {
                    // SAFETY: AMX runs here (asserted above).
                    unsafe { amx::configure_thread() };
                }
                f(bufs, xblock, rb, g);
            },
        );
    }
}

/// `dst[i] = to_bf16(src[i])`, 16 at a time with `vcvtneps2bf16` (the same
/// rounding: nearest, ties to even; NaN to a quiet NaN).
///
/// # Safety
/// The CPU must have AVX-512F and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_row(src: &[f32], dst: &mut [u16]) {
    use std::arch::x86_64::*;
    let (s16, d16) = (src.chunks_exact(16), dst.chunks_exact_mut(16));
    let (s_tail, d_tail) = (s16.remainder(), d16.into_remainder());
    for (d, &v) in d_tail.iter_mut().zip(s_tail) {
        *d = to_bf16(v);
    }
    for (s, d) in src.chunks_exact(16).zip(dst.chunks_exact_mut(16)) {
        // SAFETY: 16 floats in, 16 bf16 (32 bytes) out.
        unsafe {
            let h = _mm512_cvtneps_pbh(_mm512_loadu_ps(s.as_ptr()));
            _mm256_storeu_si256(
                d.as_mut_ptr().cast(),
                std::mem::transmute::<__m256bh, __m256i>(h),
            );
        }
    }
}
