//! `y = x·Wᵀ` with bf16 inputs and f32 accumulation on Intel AMX tiles
//! (precision `16` on CPUs with AMX-BF16).
//!
//! Why: an AMX unit multiplies a 16 × 32 bf16 tile by a 32 × 16 one into a
//! 16 × 16 f32 tile in one instruction (`tdpbf16ps`), about eight times the
//! multiply-add rate of AVX-512 f32 on the same core, which is what PyTorch's
//! bf16 path uses on these machines.
//!
//! Numerics: `x` is rounded to bf16 (nearest, ties to even, as PyTorch's
//! conversion), `W` is stored in bf16, every product is exact in f32 and sums
//! accumulate in f32. The result stays f32.
//!
//! Layout of `W` (`[n, k]`): `k` is padded with zeros to a multiple of 32
//! (`kp`), `n` to a multiple of 32 (two 16-column panels per column group).
//! Panel `q` holds, for every pair of consecutive `k` (`kp / 2` rows), its 16
//! columns × 2 values: 64 bytes per row, the layout `tdpbf16ps` reads its
//! second operand in, so one k-block of 32 is one contiguous 1 KiB tile.
//! `x` is converted per call into bf16 rows of `kp` (rows padded to 32).
//!
//! Register blocking: a unit of work is one column group (32 columns) × 32
//! rows, four f32 accumulator tiles (tmm0–3), two tiles of `x` (tmm4–5) and
//! two of `W` (tmm6–7) per k-block.
//!
//! Instructions are written with `asm!`: Rust has no stable AMX intrinsics.
//! Linux grants the tile state once per process (`cpu::isa`); the kernel
//! loads the tile configuration once per thread.

use super::{for_each_unit, SharedOut};
use crate::engine::cpu::isa::{self, Isa};
use std::arch::asm;
use std::cell::Cell;

/// Columns per panel and rows per tile.
const T: usize = 16;
/// `k` per tile (bf16 values per 64-byte tile row).
const KB: usize = 32;
/// Rows and columns of one unit's output block.
pub(crate) const BLOCK: usize = 2 * T;

/// Whether the bf16 tiles run in this process: the active instruction set
/// is [`Isa::Amx`] (which implies the tile state was granted).
pub(crate) fn available() -> bool {
    isa::active() == Isa::Amx
}

/// The tile configuration every unit uses: palette 1, eight tiles of 16
/// rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn all_full() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for t in 0..8 {
            c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
            c[48 + t] = T as u8; // rows
        }
        TileConfig(c)
    }
}

/// Loads the tile configuration in this thread if it has not been yet.
///
/// # Safety
/// [`available`] must have returned true.
unsafe fn configure_thread() {
    thread_local!(static DONE: Cell<bool> = const { Cell::new(false) });
    DONE.with(|done| {
        if !done.get() {
            let cfg = TileConfig::all_full();
            // SAFETY: a valid palette-1 configuration; the caller checked AMX.
            unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
            done.set(true);
        }
    });
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
        let n = self.n;
        let mut y: Vec<f32> = Vec::with_capacity(m * n);
        let out = SharedOut(y.as_mut_ptr());
        self.for_each_unit_of(x, m, 1, |buf, xblock, rb, g| {
            let (row, col) = (rb * BLOCK, g * BLOCK);
            let (rows, cols) = (BLOCK.min(m - row), BLOCK.min(n - col));
            // SAFETY (both branches): AMX runs here (`for_each_unit_of`);
            // rows `row..row + rows`, columns `col..col + cols` of `y`
            // belong to this unit alone.
            if (rows, cols) == (BLOCK, BLOCK) {
                // A whole block goes straight into `y`.
                unsafe { block(xblock, self.kp, self.group(g), out.at(row * n + col), n) };
                return;
            }
            let buf = &mut buf[0];
            unsafe { block(xblock, self.kp, self.group(g), buf.as_mut_ptr(), BLOCK) };
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
        self.for_each_unit_of(x, m, mats.len(), |bufs, xblock, rb, g| {
            for (w, buf) in mats.iter().zip(bufs.iter_mut()) {
                // SAFETY: AMX runs here (`for_each_unit_of`); `buf` is 32 × 32.
                unsafe { block(xblock, self.kp, w.group(g), buf.as_mut_ptr(), BLOCK) };
            }
            let (row, col) = (rb * BLOCK, g * BLOCK);
            f(row, col, BLOCK.min(m - row), BLOCK.min(n - col), bufs);
        });
    }

    /// Calls `f(buffers, x_block, row_block, column_group)` once for every
    /// 32 × 32 block of the `[m, n]` output, on the pool's threads, each
    /// thread with `buffers` 32 × 32 f32 scratch blocks and its tiles
    /// configured. `x_block` is row block `row_block` of `x` in bf16 (32
    /// rows of `kp`), converted by the first unit that needs it, so the
    /// conversion is shared by the threads too.
    fn for_each_unit_of(
        &self,
        x: &[f32],
        m: usize,
        buffers: usize,
        f: impl Fn(&mut [[f32; BLOCK * BLOCK]], &[u16], usize, usize) + Sync,
    ) {
        use std::sync::atomic::{AtomicU8, Ordering};
        let (n, k, kp) = (self.n, self.k, self.kp);
        assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
        assert!(
            available(),
            "AMX-BF16 tiles are not available to this process"
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
                            // after the release below; AMX-BF16 CPUs have
                            // AVX512-BF16 (`cpu::isa` checks both).
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
                // SAFETY: AMX was checked above.
                unsafe { configure_thread() };
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

/// One 32 × 32 block: `out = x_block · W_groupᵀ` over all of `kp`, stored
/// as 32 rows of 32 f32 `ld` floats apart.
///
/// # Safety
/// AMX is available and this thread configured ([`configure_thread`]);
/// `x` holds 32 rows of `kp` bf16; `w` two panels of `kp / 2` rows of 32
/// bf16, 64-byte aligned; `out` is valid for those writes.
unsafe fn block(x: &[u16], kp: usize, w: &[u16], out: *mut f32, ld: usize) {
    debug_assert!(x.len() >= BLOCK * kp && w.len() >= 2 * kp * T);
    let (xs, ws) = (kp * 2, 64usize); // row strides in bytes
    let (x0, x1) = (x.as_ptr(), x[T * kp..].as_ptr());
    let (w0, w1) = (w.as_ptr(), w[kp * T..].as_ptr());
    // SAFETY: every load stays in `x` (rows 0..32, values kb·32..kb·32+32)
    // and `w` (rows kb·16..kb·16+16 of each panel); stores fill `out`.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for kb in 0..kp / KB {
            asm!(
                "tileloadd tmm4, [{x0} + {xs}*1]",
                "tileloadd tmm5, [{x1} + {xs}*1]",
                "tileloadd tmm6, [{w0} + {ws}*1]",
                "tileloadd tmm7, [{w1} + {ws}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                x0 = in(reg) x0.add(kb * KB),
                x1 = in(reg) x1.add(kb * KB),
                w0 = in(reg) w0.add(kb * T * KB),
                w1 = in(reg) w1.add(kb * T * KB),
                xs = in(reg) xs,
                ws = in(reg) ws,
                options(nostack, readonly)
            );
        }
        let o = out;
        let os = ld * 4; // bytes per output row
        asm!(
            "tilestored [{c00} + {os}*1], tmm0",
            "tilestored [{c01} + {os}*1], tmm1",
            "tilestored [{c10} + {os}*1], tmm2",
            "tilestored [{c11} + {os}*1], tmm3",
            c00 = in(reg) o,
            c01 = in(reg) o.add(T),
            c10 = in(reg) o.add(T * ld),
            c11 = in(reg) o.add(T * ld + T),
            os = in(reg) os,
            options(nostack)
        );
    }
}
