//! `y = x·Wᵀ` in f32 on x86-64 CPUs, with `W` packed once at load time and
//! the register tile chosen by the instruction set in use
//! ([`isa`](super::isa): AVX-512F or AVX2 + FMA).
//!
//! Why this exists: on the CPU nearly all of extraction is the seven
//! projections of every block, and candle's general matmul re-packs `W` on
//! every call and, on the 2-core benchmark machine, ran those shapes at about
//! half the rate of PyTorch's kernels (`docs/bench-extract.md` has the
//! per-shape figures and the command). A model's weights never change, so
//! they are laid out once in the order the inner loop reads them.
//!
//! Layout (the same for every instruction set, so packing does not depend on
//! the CPU): `W` (`[n, k]`, row-major, one row per output feature) becomes
//! `ceil(n / 16)` panels; panel `p` holds columns `16p..16p+16` of `Wᵀ` as
//! `k` consecutive rows of 16 floats (zero-padded past `n`), 64-byte aligned.
//!
//! Micro-kernels ([`avx2`], [`avx512`]): per step along `k` a kernel loads
//! one row of each panel of its tile and broadcasts one value from each row
//! of `x`, accumulating the whole tile in registers:
//! - AVX2: 6 rows × 1 panel (16 columns) in 12 of the 16 ymm registers;
//! - AVX-512: 8 rows × 3 adjacent panels (48 columns) in 24 of the 32 zmm
//!   registers, three panel loads and eight broadcasts per 24 multiply-adds.
//!
//! Blocking ([`blocking`], a per-process setting that changes no result): a
//! panel, once loaded, serves every row of `x` in the block, and blocks are
//! large (by default 4 MiB of `x`), so a batch of short texts reads each
//! weight from memory once per call: with L2-sized blocks the weights, which
//! do not fit in cache, were streamed again for every block, and that cost
//! more than keeping `x` in L2 saved. Threads take units of one tile's
//! panels × 48 rows from a shared counter ([`for_each_unit`]), each output
//! tile written by exactly one unit. The threads are
//! candle's own CPU pool, the one its elementwise operations run on: a second
//! pool (rayon's) would leave its threads spinning for cores that candle's
//! are spinning on, between every two operations.

use super::isa::{self, Isa};
use crate::engine::activation::Act;
pub use blocking::Blocking;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod bf16;
pub mod blocking;
#[cfg(test)]
mod tests;

/// Columns of one panel.
const NR: usize = 16;
/// Rows of `x` per unit of work handed to a thread (a multiple of every
/// kernel's tile rows).
const UNIT_ROWS: usize = 48;
/// `ln 2` split in two so that `n · LN2_HI` is exact (the vector
/// exponentials' range reduction).
#[cfg(target_arch = "x86_64")]
const LN2_HI: f32 = 0.693_359_4;
#[cfg(target_arch = "x86_64")]
const LN2_LO: f32 = -2.121_944_4e-4;
/// The polynomial for `eʳ − 1 − r` over `r²`, highest degree first (Cephes
/// `expf` coefficients), shared by every vector exponential so all
/// instruction sets give the same bits.
#[cfg(target_arch = "x86_64")]
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];
/// GELU's tanh form as a sigmoid: `z = GELU_2C · x · (1 + GELU_CUBIC · x²)`
/// (`2·√(2/π)` and the cubic coefficient of `gelu_pytorch_tanh`).
#[cfg(target_arch = "x86_64")]
const GELU_2C: f32 = 1.595_769;
#[cfg(target_arch = "x86_64")]
const GELU_CUBIC: f32 = 0.044_715;

/// The register tile of an instruction set's micro-kernel.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// Rows of `y` per tile.
    rows: usize,
    /// Adjacent panels per tile (16 columns each).
    panels: usize,
}

impl Geometry {
    fn of(isa: Isa) -> Geometry {
        match isa {
            Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => Geometry { rows: 8, panels: 3 },
            _ => Geometry { rows: 6, panels: 1 },
        }
    }
}

/// Runs `f(state, unit)` for every unit in `0..n` on candle's CPU pool,
/// threads taking one unit at a time from a shared counter, each with its
/// own `state` from `init`. Fine-grained units keep both cores busy to the
/// end of an operation: with the pool's own chunking (a sixteenth of the
/// work per grab on two threads) one core waited for the other for about a
/// thirty-second of every operation. Must not be called from inside the pool.
pub(crate) fn for_each_unit<S>(
    n: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize) + Sync,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    if n == 0 {
        return;
    }
    let next = AtomicUsize::new(0);
    candle_core::utils::barrier_pool().execute(|_| {
        let mut state = init();
        loop {
            let unit = next.fetch_add(1, Ordering::Relaxed);
            if unit >= n {
                break;
            }
            f(&mut state, unit);
        }
    });
}

/// One register tile's pass over one chunk of `k`, as [`for_each_tile`]
/// hands it out.
#[derive(Debug, Clone, Copy)]
struct TileStep {
    /// The tile's first panel (columns `16·panel..`).
    panel: usize,
    /// Columns of the tile (`≤ 16 · geo.panels`).
    cols: usize,
    /// The tile's first row of `y` (and of `x`).
    row: usize,
    /// Rows of the tile (`≤ geo.rows`).
    rows: usize,
    /// The tile's rows relative to its unit's first row (`< UNIT_ROWS`).
    unit_row: usize,
    /// The chunk of `k`: steps `first..first + len` (the tile's last
    /// chunk, whose sums are final, ends at `k`).
    first: usize,
    len: usize,
}

/// Calls `f(state, step)` for every tile of an `[m, n]` output with inner
/// dimension `k` and every chunk of `k` ([`Blocking::k_chunks`]), each
/// tile's chunks in `k` order: a tile is rows `row..row + rows` (at most
/// `geo.rows`) by columns `16·panel..16·panel + cols` (`cols ≤ 16 ·
/// geo.panels`). Row blocks of `blocking.row_block_bytes` of `x` run one
/// after another (see the module's note on blocking); within a block, units
/// of one tile's panels × [`UNIT_ROWS`] rows go to the pool's threads
/// ([`for_each_unit`]), unit `u` being column group `u / groups`, so a
/// thread's next unit mostly reuses the panels in cache. Within a unit, each
/// chunk passes over all of the unit's tiles before the next chunk starts
/// (with one chunk: tile after tile). Every tile belongs to one unit, so one
/// thread sees all of a tile's chunks.
fn for_each_tile<S>(
    (m, n, k): (usize, usize, usize),
    geo: Geometry,
    blocking: Blocking,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, TileStep) + Sync,
) {
    let cols_per_tile = NR * geo.panels;
    let n_col_groups = n.div_ceil(cols_per_tile);
    let rows_per_block =
        (blocking.row_block_bytes / (k.max(1) * 4) / UNIT_ROWS * UNIT_ROWS).max(UNIT_ROWS);
    for row0 in (0..m).step_by(rows_per_block) {
        let rows = rows_per_block.min(m - row0);
        let groups = rows.div_ceil(UNIT_ROWS);
        for_each_unit(n_col_groups * groups, &init, |state, u| {
            let (c, g) = (u / groups, u % groups);
            let cols = cols_per_tile.min(n - c * cols_per_tile);
            let (unit0, end) = (g * UNIT_ROWS, rows.min((g + 1) * UNIT_ROWS));
            for (first, len) in blocking.k_chunks(k) {
                let mut r = unit0;
                while r < end {
                    let tile_rows = geo.rows.min(end - r);
                    let step = TileStep {
                        panel: c * geo.panels,
                        cols,
                        row: row0 + r,
                        rows: tile_rows,
                        unit_row: r - unit0,
                        first,
                        len,
                    };
                    f(state, step);
                    r += tile_rows;
                }
            }
        });
    }
}

/// One register tile's work for an instruction set's micro-kernel:
/// `c[r][j] (+)= Σ_{kk < kc} a[r·lda + kk] · b[⌊j/16⌋·ldb + kk·16 + j mod 16]`
/// for `r < rows`, `j < cols`, added to what `c` holds when `accumulate`
/// (the sums over the earlier chunks of `k`).
///
/// Contract (the kernels' safety condition): `a` is valid for `rows` rows
/// of `kc` floats at stride `lda`; `b` points at `ceil(cols / 16)` panels
/// of `kc` rows of 16 floats at stride `ldb`, every row 64-byte aligned; `c`
/// is valid for a `rows × cols` block at row stride `ldc` that no one else
/// touches meanwhile; `rows` and `cols` fit the kernel's tile.
#[derive(Clone, Copy)]
// Only the x86-64 micro-kernels read it; elsewhere no packed kernel runs.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct TileOp {
    rows: usize,
    a: *const f32,
    lda: usize,
    kc: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
}

impl TileOp {
    /// The work of `step` for `x` (`[m, k]`, row-major) times the tile's
    /// panels `b` (as [`PackedMatrix::tile_panels`] gives them, `k` rows of
    /// 16 per panel), into `c` at row stride `ldc`. Panics if `x` or `b` do
    /// not cover the step.
    fn new(step: &TileStep, x: &[f32], k: usize, b: &[f32], (c, ldc): (*mut f32, usize)) -> Self {
        let TileStep {
            row,
            rows,
            first,
            len,
            cols,
            ..
        } = *step;
        assert!(first + len <= k && x.len() >= (row + rows) * k);
        assert!(b.len() >= cols.div_ceil(NR) * k * NR);
        TileOp {
            rows,
            a: x[row * k + first..].as_ptr(),
            lda: k,
            kc: len,
            b: b[first * NR..].as_ptr(),
            ldb: k * NR,
            c,
            ldc,
            cols,
            accumulate: first > 0,
        }
    }
}

/// A weight matrix `W` (`[n, k]`) laid out for [`PackedMatrix::matmul_t`].
pub struct PackedMatrix {
    n: usize,
    k: usize,
    /// Panels, starting at `data[offset]` (64-byte aligned).
    data: Vec<f32>,
    offset: usize,
}

/// Panics unless `isa` has a packed kernel and this CPU can run it.
fn assert_runs(isa: Isa) {
    assert!(
        isa >= Isa::Avx2 && isa <= Isa::detected(),
        "the packed kernel for {isa} cannot run on this CPU (best: {})",
        Isa::detected()
    );
}

impl PackedMatrix {
    /// Whether the packed kernels run in this process: the active
    /// instruction set ([`isa::active`]) is AVX2 or better.
    pub fn supported() -> bool {
        isa::active() >= Isa::Avx2
    }

    /// Pack `w`, a row-major `[n, k]` matrix. Panics if `w.len() != n * k`.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "packing a [{n}, {k}] matrix");
        let panels = n.div_ceil(NR);
        let len = panels * k * NR;
        // 16 spare floats let the panels start on a 64-byte boundary.
        let mut data = vec![0f32; len + 16];
        let offset = data.as_ptr().align_offset(64);
        assert!(
            offset < 16,
            "an f32 buffer reaches 64-byte alignment within 16 floats"
        );
        if k == 0 {
            return PackedMatrix { n, k, data, offset };
        }
        let dst = &mut data[offset..offset + len];
        for (p, panel) in dst.chunks_exact_mut(k * NR).enumerate() {
            let cols = NR.min(n - p * NR);
            for j in 0..cols {
                let row = &w[(p * NR + j) * k..(p * NR + j + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * NR + j] = v;
                }
            }
        }
        PackedMatrix { n, k, data, offset }
    }

    /// Output features (`n`).
    pub(crate) fn out_features(&self) -> usize {
        self.n
    }

    /// Input features (`k`).
    pub(crate) fn in_features(&self) -> usize {
        self.k
    }

    /// The panels a tile of `cols` columns starting at panel `p` reads.
    fn tile_panels(&self, p: usize, cols: usize) -> &[f32] {
        let (k, from) = (self.k, self.offset + p * self.k * NR);
        &self.data[from..from + cols.div_ceil(NR) * k * NR]
    }

    /// `x·Wᵀ` for `x` a row-major `[m, k]` matrix; returns row-major `[m, n]`.
    /// Panics if `x.len() != m * k` or if the packed kernels do not run here
    /// (check [`PackedMatrix::supported`] first).
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_t_on(isa::active(), Blocking::active(), x, m)
    }

    /// [`PackedMatrix::matmul_t`] with `blocking` instead of the process's
    /// (the same bits, at another speed: see [`blocking`]).
    pub fn matmul_t_blocked(&self, blocking: Blocking, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_t_on(isa::active(), blocking, x, m)
    }

    /// [`PackedMatrix::matmul_t`] through `isa`'s kernel.
    fn matmul_t_on(&self, isa: Isa, blocking: Blocking, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
        assert_runs(isa);
        if m == 0 || n == 0 || k == 0 {
            return vec![0f32; m * n];
        }
        // Not zeroed: the tiles below write every element (see the end).
        let mut y: Vec<f32> = Vec::with_capacity(m * n);
        let out = SharedOut(y.as_mut_ptr());
        for_each_tile(
            (m, n, k),
            Geometry::of(isa),
            blocking,
            || (),
            |_, step| {
                let b = self.tile_panels(step.panel, step.cols);
                let c = out.at(step.row * n + step.panel * NR);
                let op = TileOp::new(&step, x, k, b, (c, n));
                // SAFETY: each tile of `y` goes to one thread, its chunks in k
                // order (`for_each_tile`); `TileOp::new` checked `x` and `b`;
                // the CPU runs `isa` (asserted above).
                unsafe { tile(isa, &op) };
            },
        );
        // SAFETY: `for_each_tile` covers every (row, column) and each tile's
        // first chunk writes (rather than adds to) its block: all written.
        unsafe { y.set_len(m * n) };
        y
    }
}

/// `gate(x·Gᵀ) ⊙ (x·Uᵀ)` for a gated MLP's two input projections, in one
/// pass: each register tile of both products is computed and combined
/// before it is stored, so neither `[m, n]` product is ever written out.
/// `g` and `u` must have the same shape.
pub(crate) fn matmul_gated(
    g: &PackedMatrix,
    u: &PackedMatrix,
    gate: Act,
    x: &[f32],
    m: usize,
) -> Vec<f32> {
    matmul_gated_on(isa::active(), Blocking::active(), g, u, gate, x, m)
}

/// [`matmul_gated`] through `isa`'s kernels.
fn matmul_gated_on(
    isa: Isa,
    blocking: Blocking,
    g: &PackedMatrix,
    u: &PackedMatrix,
    gate: Act,
    x: &[f32],
    m: usize,
) -> Vec<f32> {
    let (n, k) = (g.n, g.k);
    assert_eq!(
        (u.n, u.k),
        (n, k),
        "gate and up projections differ in shape"
    );
    assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
    assert_runs(isa);
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    // Not zeroed: every element is written below (see the end).
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    let out = SharedOut(y.as_mut_ptr());
    let geo = Geometry::of(isa);
    let ld = NR * geo.panels;
    // Per thread, one unit of each product (its sums carried between the
    // chunks of k), combined before it is stored.
    let units = || (vec![0f32; UNIT_ROWS * ld], vec![0f32; UNIT_ROWS * ld]);
    for_each_tile((m, n, k), geo, blocking, units, |(tg, tu), step| {
        let (at, cols) = (step.unit_row * ld, step.cols);
        // The step for one product, into this thread's unit buffer for it.
        let op = |w: &PackedMatrix, unit: &mut [f32]| {
            assert!(unit.len() >= at + step.rows * ld);
            TileOp::new(
                &step,
                x,
                k,
                w.tile_panels(step.panel, cols),
                (unit[at..].as_mut_ptr(), ld),
            )
        };
        let (og, ou) = (op(g, tg), op(u, tu));
        // SAFETY: the tiles go to this thread's unit buffers (`UNIT_ROWS`
        // rows of `ld`, checked above); `TileOp::new` checked `x` and the
        // panels; the CPU runs `isa` (asserted above).
        unsafe {
            tile(isa, &og);
            tile(isa, &ou);
        }
        if step.first + step.len < k {
            return; // sums over the later chunks of k still to come
        }
        for rr in 0..step.rows {
            // Row `row + rr`, columns `16·panel..16·panel + cols` of `y`: this
            // tile's alone (`for_each_tile` hands each tile to one thread).
            let dst = out.at((step.row + rr) * n + step.panel * NR);
            let (tg, tu) = (&tg[at + rr * ld..][..ld], &tu[at + rr * ld..][..ld]);
            for c0 in (0..cols).step_by(NR) {
                let (g16, u16) = (&tg[c0..c0 + NR], &tu[c0..c0 + NR]);
                // SAFETY: the CPU runs `isa`; `dst` has `cols` elements
                // of this tile's, `c0 + min(16, cols − c0)` of them here.
                unsafe { act_times(isa, gate, g16, u16, dst.add(c0), NR.min(cols - c0)) };
            }
        }
    });
    // SAFETY: `for_each_tile` covers every (row, column); all were written.
    unsafe { y.set_len(m * n) };
    y
}

/// Whether bf16 projections run on one of the CPU's bf16 kernels in this
/// process ([`bf16::available`]; never off x86-64).
pub(crate) fn bf16_kernels_run() -> bool {
    #[cfg(target_arch = "x86_64")]
    return bf16::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`matmul_gated`] for bf16 weights ([`bf16`]): both products of each
/// 32 × 32 block in f32, combined before they are stored.
///
/// Panics unless a bf16 kernel runs in this process ([`bf16::available`]).
#[cfg(target_arch = "x86_64")]
pub(crate) fn matmul_gated_bf16(
    g: &bf16::Bf16Panels,
    u: &bf16::Bf16Panels,
    gate: Act,
    x: &[f32],
    m: usize,
) -> Vec<f32> {
    matmul_gated_bf16_on(bf16::Bf16Kernel::required(), g, u, gate, x, m)
}

/// [`matmul_gated_bf16`] on `kernel`.
#[cfg(target_arch = "x86_64")]
fn matmul_gated_bf16_on(
    kernel: bf16::Bf16Kernel,
    g: &bf16::Bf16Panels,
    u: &bf16::Bf16Panels,
    gate: Act,
    x: &[f32],
    m: usize,
) -> Vec<f32> {
    use bf16::BLOCK;
    let n = g.n();
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    let out = SharedOut(y.as_mut_ptr());
    g.for_each_block(kernel, x, m, &[g, u], |row, col, rows, cols, blocks| {
        for r in 0..rows {
            let (gr, ur) = (
                &blocks[0][r * BLOCK..][..BLOCK],
                &blocks[1][r * BLOCK..][..BLOCK],
            );
            // Row `row + r`, columns `col..col + cols`: this block's alone.
            let dst = out.at((row + r) * n + col);
            for c0 in (0..cols).step_by(NR) {
                // SAFETY: both bf16 kernels imply AVX-512F; 16 floats from `c0` in
                // each block row; `dst` has `cols` elements of this block's.
                unsafe {
                    avx512::act_times(
                        gate,
                        gr[c0..].as_ptr(),
                        ur[c0..].as_ptr(),
                        dst.add(c0),
                        NR.min(cols - c0),
                    )
                };
            }
        }
    });
    // SAFETY: the blocks cover every (row, column); all were written.
    unsafe { y.set_len(m * n) };
    y
}

/// One tile's chunk through `isa`'s micro-kernel.
///
/// # Safety
/// `op` satisfies [`TileOp`]'s contract for `isa`'s tile; the CPU runs `isa`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_unsafe, unused_variables))]
unsafe fn tile(isa: Isa, op: &TileOp) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => avx512::tile(op),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::tile(op),
            _ => unreachable!("no packed kernel for {isa} (asserted by the callers)"),
        }
    }
}

/// `dst[j] = act(g[j]) · u[j]` for `j < cols ≤ 16` of one tile row, with
/// `isa`'s vector exponential: both gates are `x / (1 + e⁻ᶻ)`, with `z = x`
/// for SiLU and `z = 2·√(2/π)·(x + 0.044715·x³)` for GELU's tanh form
/// (`½·(1 + tanh(t)) = 1 / (1 + e⁻²ᵗ)`, so no tanh is needed; equal to
/// candle's `silu` and tanh `gelu` to f32 rounding).
///
/// # Safety
/// The CPU runs `isa`; `g` and `u` hold 16 floats; `dst` is valid for `cols`
/// writes.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_unsafe, unused_variables))]
unsafe fn act_times(isa: Isa, act: Act, g: &[f32], u: &[f32], dst: *mut f32, cols: usize) {
    assert!(g.len() >= NR && u.len() >= NR && cols <= NR);
    // SAFETY: forwarded from the caller.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
                avx512::act_times(act, g.as_ptr(), u.as_ptr(), dst, cols)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::act_times(act, g.as_ptr(), u.as_ptr(), dst, cols),
            _ => unreachable!("no packed kernel for {isa} (asserted by the callers)"),
        }
    }
}

/// `Σ_j e^(row[j] − max)` in f32: the normaliser of a log-softmax, in
/// vectors of the active instruction set (scalar on the generic path).
pub(crate) fn sum_exp_shifted(row: &[f32], max: f32) -> f32 {
    sum_exp_shifted_on(isa::active(), row, max)
}

fn sum_exp_shifted_on(isa: Isa, row: &[f32], max: f32) -> f32 {
    assert!(isa <= Isa::detected(), "{isa} does not run on this CPU");
    // SAFETY: the CPU runs `isa` (asserted above); loads stay inside `row`.
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => unsafe { avx512::sum_exp_shifted(row, max) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::sum_exp_shifted(row, max) },
        _ => {
            // Sixteen running sums, as the vector versions keep: one long
            // chain of f32 adds over a vocabulary loses about 1e-5.
            let mut lanes = [0f32; 16];
            for chunk in row.chunks(16) {
                for (s, v) in lanes.iter_mut().zip(chunk) {
                    *s += (v - max).exp();
                }
            }
            lanes.iter().sum()
        }
    }
}

/// `row[j] = e^(row[j] − max)` in place, returning their sum (a softmax's
/// numerators and normaliser), with the active instruction set's vector
/// exponential (libm's on the generic path).
pub(crate) fn exp_shifted_in_place(row: &mut [f32], max: f32) -> f32 {
    // SAFETY: `active` never exceeds what the CPU has.
    match isa::active() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => unsafe {
            avx512::exp_shifted_in_place(row, max)
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::exp_shifted_in_place(row, max) },
        _ => {
            let mut sum = 0f32;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            sum
        }
    }
}

/// An output buffer's pointer, shared by parallel tasks that each write a
/// disjoint part of it (tiles here, heads in the CPU attention).
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: users write disjoint elements only (see `matmul_t`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The address of element `i` (a method, so closures capture the whole
    /// wrapper and not its raw-pointer field).
    pub(crate) fn at(self, i: usize) -> *mut f32 {
        // SAFETY: callers stay inside the output buffer.
        unsafe { self.0.add(i) }
    }
}
