//! `y = x·Wᵀ` in f32 on x86-64 CPUs with AVX2 and FMA, with `W` packed once at
//! load time.
//!
//! Why this exists: on the CPU nearly all of extraction is the seven
//! projections of every block, and candle's general matmul re-packs `W` on
//! every call and, on the 2-core benchmark machine, ran those shapes at about
//! half the rate of PyTorch's kernels (`docs/bench-extract.md` has the
//! per-shape figures and the command). A model's weights never change, so
//! they are laid out once in the order the inner loop reads them.
//!
//! Layout: `W` (`[n, k]`, row-major, one row per output feature) becomes
//! `ceil(n / 16)` panels; panel `p` holds columns `16p..16p+16` of `Wᵀ` as
//! `k` consecutive rows of 16 floats (zero-padded past `n`), 64-byte aligned.
//! The micro-kernel computes a 6 × 16 tile of `y` in 12 AVX registers:
//! per step along `k` it loads one panel row (two vectors) and broadcasts one
//! value from each of 6 rows of `x`.
//!
//! Blocking: a panel, once loaded, serves every row of `x` in the block,
//! and blocks are large (4 MiB of `x`), so a batch of short texts reads each
//! weight from memory once per call: with L2-sized blocks the weights, which
//! do not fit in cache, were streamed again for every block, and that cost
//! more than keeping `x` in L2 saved. Threads take units of one panel × 48
//! rows from a shared counter ([`for_each_unit`]), each output tile written
//! by exactly one unit. The threads are
//! candle's own CPU pool, the one its elementwise operations run on: a second
//! pool (rayon's) would leave its threads spinning for cores that candle's
//! are spinning on, between every two operations.

use super::arch::Act;

/// Rows of `y` per micro-tile.
const MR: usize = 6;
/// Columns of `y` per micro-tile (one panel).
const NR: usize = 16;
/// Bytes of `x` one row block may occupy (see the module's note on blocking).
const ROW_BLOCK_BYTES: usize = 4 << 20;
/// Rows of `x` per unit of work handed to a thread (with one panel).
const UNIT_ROWS: usize = 8 * MR;

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

/// Calls `f(state, panel, row, tile_rows, cols)` exactly once for every
/// tile of an `[m, n]` output with inner dimension `k`: a tile is rows
/// `row..row + tile_rows` (at most [`MR`]) by columns `16·panel..16·panel +
/// cols`. Row blocks run one after another (see the module's note on
/// blocking); within a block, units of one panel × [`UNIT_ROWS`] rows go to
/// the pool's threads ([`for_each_unit`]), unit `u` being panel
/// `u / groups`, so a thread's next unit mostly reuses the panel in cache.
fn for_each_tile<S>(
    m: usize,
    n: usize,
    k: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, usize, usize, usize) + Sync,
) {
    let n_panels = n.div_ceil(NR);
    let rows_per_block = (ROW_BLOCK_BYTES / (k.max(1) * 4) / MR * MR).max(MR);
    for row0 in (0..m).step_by(rows_per_block) {
        let rows = rows_per_block.min(m - row0);
        let groups = rows.div_ceil(UNIT_ROWS);
        for_each_unit(n_panels * groups, &init, |state, u| {
            let (p, g) = (u / groups, u % groups);
            let cols = NR.min(n - p * NR);
            let end = rows.min((g + 1) * UNIT_ROWS);
            let mut r = g * UNIT_ROWS;
            while r < end {
                let tile_rows = MR.min(end - r);
                f(state, p, row0 + r, tile_rows, cols);
                r += tile_rows;
            }
        });
    }
}

/// A weight matrix `W` (`[n, k]`) laid out for [`PackedMatrix::matmul_t`].
pub(crate) struct PackedMatrix {
    n: usize,
    k: usize,
    /// Panels, starting at `data[offset]` (64-byte aligned).
    data: Vec<f32>,
    offset: usize,
}

impl PackedMatrix {
    /// Whether this CPU can run the packed kernel (x86-64 with AVX2 and FMA).
    pub(crate) fn supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Pack `w`, a row-major `[n, k]` matrix. Panics if `w.len() != n * k`.
    pub(crate) fn pack(w: &[f32], n: usize, k: usize) -> Self {
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

    fn panels(&self) -> &[f32] {
        &self.data[self.offset..self.offset + self.n.div_ceil(NR) * self.k * NR]
    }

    /// `x·Wᵀ` for `x` a row-major `[m, k]` matrix; returns row-major `[m, n]`.
    /// Panics if `x.len() != m * k` or if the CPU lacks AVX2/FMA
    /// (check [`PackedMatrix::supported`] first).
    pub(crate) fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
        assert!(Self::supported(), "the packed kernel needs AVX2 and FMA");
        if m == 0 || n == 0 || k == 0 {
            return vec![0f32; m * n];
        }
        // Not zeroed: the tiles below write every element (see the end).
        let mut y: Vec<f32> = Vec::with_capacity(m * n);
        let panels = self.panels();
        let out = SharedOut(y.as_mut_ptr());
        for_each_tile(
            m,
            n,
            k,
            || (),
            |_, p, r, tile_rows, cols| {
                let panel = &panels[p * k * NR..(p + 1) * k * NR];
                let a = &x[r * k..(r + tile_rows) * k];
                // SAFETY: each tile of `y` is handed out once (`for_each_tile`),
                // `a` holds `tile_rows` full rows and `panel` `k` rows of 16, and
                // the CPU features were checked above.
                unsafe { tile(tile_rows, a, k, panel, out.at(r * n + p * NR), n, cols) };
            },
        );
        // SAFETY: `for_each_tile` covers every (row, column); all were written.
        unsafe { y.set_len(m * n) };
        y
    }
}

/// `gate(x·Gᵀ) ⊙ (x·Uᵀ)` for a gated MLP's two input projections, in one
/// pass: each 6 × 16 tile of both products is computed into registers and
/// combined before it is stored, so neither `[m, n]` product is ever
/// written out. `g` and `u` must have the same shape.
pub(crate) fn matmul_gated(
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
    assert!(
        PackedMatrix::supported(),
        "the packed kernel needs AVX2 and FMA"
    );
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    // Not zeroed: every element is written below (see the end).
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    let (gp, up) = (g.panels(), u.panels());
    let out = SharedOut(y.as_mut_ptr());
    let tiles = || ([0f32; MR * NR], [0f32; MR * NR]);
    for_each_tile(m, n, k, tiles, |(tg, tu), p, r, tile_rows, cols| {
        let panel = p * k * NR..(p + 1) * k * NR;
        let a = &x[r * k..(r + tile_rows) * k];
        // SAFETY: the tiles go to this thread's buffers of MR × NR; `a`
        // holds `tile_rows` rows of k, each panel k rows of 16; the CPU
        // features were checked above.
        unsafe {
            tile(tile_rows, a, k, &gp[panel.clone()], tg.as_mut_ptr(), NR, NR);
            tile(tile_rows, a, k, &up[panel], tu.as_mut_ptr(), NR, NR);
        }
        for rr in 0..tile_rows {
            // Row `r + rr`, columns `16p..16p + cols` of `y`: this tile's
            // alone (`for_each_tile` hands each tile out once).
            let dst = out.at((r + rr) * n + p * NR);
            let (tg, tu) = (&tg[rr * NR..][..NR], &tu[rr * NR..][..NR]);
            if let Act::Silu = gate {
                // SAFETY: the CPU features were checked above; `dst` has
                // `cols` elements of this tile's.
                unsafe { silu_times(tg, tu, dst, cols) };
                continue;
            }
            for j in 0..cols {
                // SAFETY: as above.
                unsafe { dst.add(j).write(gate.apply(tg[j]) * tu[j]) };
            }
        }
    });
    // SAFETY: `for_each_tile` covers every (row, column); all were written.
    unsafe { y.set_len(m * n) };
    y
}

/// `dst[j] = silu(g[j]) · u[j]` for `j < cols` of one tile row,
/// `silu(x) = x / (1 + e⁻ˣ)` with the exponential from [`exp8`] and an IEEE
/// division, 8 lanes at a time.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `dst` must be valid for `cols ≤ 16` writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_times(g: &[f32], u: &[f32], dst: *mut f32, cols: usize) {
    use std::arch::x86_64::*;
    assert!(g.len() >= NR && u.len() >= NR && cols <= NR);
    let mut y = [_mm256_setzero_ps(); 2];
    for (h, v) in y.iter_mut().enumerate() {
        // SAFETY: `g` and `u` hold at least 16 floats (asserted above).
        unsafe {
            let x = _mm256_loadu_ps(g.as_ptr().add(8 * h));
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
            let s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
            *v = _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr().add(8 * h)));
        }
    }
    // SAFETY: `dst` is valid for `cols` writes (the caller's contract).
    unsafe {
        if cols == NR {
            _mm256_storeu_ps(dst, y[0]);
            _mm256_storeu_ps(dst.add(8), y[1]);
        } else {
            let mut buf = [0f32; NR];
            _mm256_storeu_ps(buf.as_mut_ptr(), y[0]);
            _mm256_storeu_ps(buf.as_mut_ptr().add(8), y[1]);
            std::ptr::copy_nonoverlapping(buf.as_ptr(), dst, cols);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn silu_times(_: &[f32], _: &[f32], _: *mut f32, _: usize) {
    unreachable!("PackedMatrix::supported() is false off x86-64")
}

/// `eˣ` in 8 lanes, within a few units in the last place of f32 over
/// `[-87, 88]` (inputs are clamped to that range, where the result stays a
/// normal float): `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-7 Taylor-like
/// polynomial for `eʳ` (Cephes `expf` coefficients), and `2ⁿ` built in the
/// exponent bits.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let c = _mm256_set1_ps;
    let x = _mm256_min_ps(_mm256_max_ps(x, c(-87.0)), c(88.0));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        c(std::f32::consts::LOG2_E),
    ));
    // ln 2 split in two so that n · LN2_HI is exact.
    let r = _mm256_fnmadd_ps(n, c(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, c(-2.121_944_4e-4), r);
    let mut p = c(1.987_569_1e-4);
    for coef in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, c(coef));
    }
    let p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, c(1.0)));
    let two_n = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(two_n))
}

/// `Σ_j e^(row[j] − max)` in f32, eight lanes at a time (AVX2/FMA when the
/// CPU has them, [`exp8`]; scalar otherwise): the normaliser of a log-softmax.
pub(crate) fn sum_exp_shifted(row: &[f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if PackedMatrix::supported() {
        // SAFETY: AVX2 and FMA were just checked; loads stay inside `row`.
        return unsafe { sum_exp_shifted_avx2(row, max) };
    }
    row.iter().map(|v| (v - max).exp()).sum()
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_exp_shifted_avx2(row: &[f32], max: f32) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| (v - max).exp()).sum();
    for c in chunks {
        acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m)));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
    lanes.iter().sum::<f32>() + tail
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

/// One tile of up to 6 rows, dispatched to the kernel for that row count.
///
/// # Safety
/// `a` holds `rows` rows of `k`; `b` holds `k` rows of 16; `c` points at a
/// `rows × cols` block with row stride `ldc`; the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
unsafe fn tile(rows: usize, a: &[f32], k: usize, b: &[f32], c: *mut f32, ldc: usize, cols: usize) {
    debug_assert!(a.len() >= rows * k && b.len() >= k * NR);
    let (a, b) = (a.as_ptr(), b.as_ptr());
    // SAFETY: forwarded from the caller.
    unsafe {
        match rows {
            6 => kernel::<6>(a, k, b, c, ldc, cols),
            5 => kernel::<5>(a, k, b, c, ldc, cols),
            4 => kernel::<4>(a, k, b, c, ldc, cols),
            3 => kernel::<3>(a, k, b, c, ldc, cols),
            2 => kernel::<2>(a, k, b, c, ldc, cols),
            1 => kernel::<1>(a, k, b, c, ldc, cols),
            _ => unreachable!("tiles have 1..=6 rows"),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile(_: usize, _: &[f32], _: usize, _: &[f32], _: *mut f32, _: usize, _: usize) {
    unreachable!("PackedMatrix::supported() is false off x86-64")
}

/// `R × 16` tile: `c[r][j] = Σ_kk a[r·k + kk] · b[kk·16 + j]` for `j < cols`.
///
/// # Safety
/// See [`tile`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize>(
    a: *const f32,
    k: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // SAFETY: all reads stay within `a` (R rows of k) and `b` (k rows of 16),
    // all writes within the caller's `R × cols` block of `c`.
    unsafe {
        // Panel rows are 64-byte aligned, so aligned loads apply (and, in
        // builds with debug assertions, compile to plain loads rather than
        // the byte copies `loadu` goes through there).
        for kk in 0..k {
            let b0 = _mm256_load_ps(b.add(kk * NR));
            let b1 = _mm256_load_ps(b.add(kk * NR + 8));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r * k + kk));
                row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                row[1] = _mm256_fmadd_ps(av, b1, row[1]);
            }
        }
        if cols == NR {
            for (r, row) in acc.iter().enumerate() {
                _mm256_storeu_ps(c.add(r * ldc), row[0]);
                _mm256_storeu_ps(c.add(r * ldc + 8), row[1]);
            }
        } else {
            let mut buf = [0f32; NR];
            for (r, row) in acc.iter().enumerate() {
                _mm256_storeu_ps(buf.as_mut_ptr(), row[0]);
                _mm256_storeu_ps(buf.as_mut_ptr().add(8), row[1]);
                std::ptr::copy_nonoverlapping(buf.as_ptr(), c.add(r * ldc), cols);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random matrix (no RNG dependency needed).
    fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..rows * cols)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// The textbook triple loop in f64, the reference.
    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|kk| x[i * k + kk] as f64 * w[j * k + kk] as f64)
                    .sum();
            }
        }
        y
    }

    #[test]
    fn matches_the_triple_loop_on_edge_shapes() {
        if !PackedMatrix::supported() {
            eprintln!("skipped: this CPU has no AVX2/FMA, the packed kernel is never used here");
            return;
        }
        // Row counts around the 6-row tile and the row block, column counts
        // around the 16-wide panel, and a k large enough for several row blocks.
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 17, 3),
            (6, 16, 64),
            (7, 33, 100),
            (13, 15, 576),
            (90, 48, 1536),
            (200, 40, 576),
        ] {
            let x = matrix(m, k, 1 + m as u64);
            let w = matrix(n, k, 7 + n as u64);
            let packed = PackedMatrix::pack(&w, n, k);
            assert_eq!((packed.out_features(), packed.in_features()), (n, k));
            let y = packed.matmul_t(&x, m);
            let want = reference(&x, &w, m, n, k);
            let scale = want.iter().fold(0f64, |s, v| s.max(v.abs())).max(1e-12);
            let worst = y
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0f64, f64::max);
            // f32 accumulation over k terms: a few ulps times sqrt(k).
            assert!(
                worst <= 1e-5 * scale,
                "[{m}, {k}]·[{n}, {k}]ᵀ: worst abs error {worst:e} against max |y| {scale:e}"
            );
        }
    }

    #[test]
    fn gated_product_matches_the_unfused_computation() {
        if !PackedMatrix::supported() {
            eprintln!("skipped: this CPU has no AVX2/FMA, the packed kernel is never used here");
            return;
        }
        for &(m, n, k) in &[(1, 5, 7), (13, 40, 64), (90, 33, 576)] {
            let x = matrix(m, k, 3 + m as u64);
            let (g, u) = (matrix(n, k, 11), matrix(n, k, 12));
            let (gr, ur) = (reference(&x, &g, m, n, k), reference(&x, &u, m, n, k));
            let (gp, up) = (PackedMatrix::pack(&g, n, k), PackedMatrix::pack(&u, n, k));
            for gate in [Act::Silu, Act::GeluTanh] {
                let y = matmul_gated(&gp, &up, gate, &x, m);
                for (i, v) in y.iter().enumerate() {
                    let (a, b) = (gr[i], ur[i]);
                    let act = match gate {
                        Act::Silu => a / (1.0 + (-a).exp()),
                        Act::GeluTanh => {
                            let c = (2.0 / std::f64::consts::PI).sqrt();
                            0.5 * a * (1.0 + (c * (a + 0.044715 * a * a * a)).tanh())
                        }
                    };
                    let want = act * b;
                    assert!(
                        (*v as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{gate:?} [{m}, {n}, {k}] element {i}: {v} against {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn vector_exp_stays_within_a_few_ulps_of_f64() {
        if !PackedMatrix::supported() {
            return;
        }
        let xs: Vec<f32> = (0..=35_000).map(|i| -87.0 + i as f32 * 0.005).collect();
        let mut worst = 0f64;
        for chunk in xs.chunks(8).filter(|c| c.len() == 8) {
            let mut got = [0f32; 8];
            // SAFETY: AVX2/FMA checked above; 8 floats in and out.
            unsafe {
                use std::arch::x86_64::*;
                let v = exp8(_mm256_loadu_ps(chunk.as_ptr()));
                _mm256_storeu_ps(got.as_mut_ptr(), v);
            }
            for (x, g) in chunk.iter().zip(got) {
                let want = (*x as f64).exp();
                worst = worst.max((g as f64 - want).abs() / want);
            }
        }
        // f32 has 24 significant bits: one unit in the last place is ≤ 1.2e-7.
        assert!(
            worst < 4.0 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
    }

    #[test]
    fn empty_inputs_give_empty_or_zero_outputs() {
        if !PackedMatrix::supported() {
            return;
        }
        let packed = PackedMatrix::pack(&matrix(3, 4, 1), 3, 4);
        assert!(packed.matmul_t(&[], 0).is_empty());
        let zero_k = PackedMatrix::pack(&[], 5, 0);
        assert_eq!(zero_k.matmul_t(&[], 2), vec![0f32; 10]);
    }
}
