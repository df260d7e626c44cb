//! Softmax attention for f32 states on the CPU, straight from the
//! projections' row layout.
//!
//! The device-generic path transposes queries, keys and values to
//! `[b, heads, t, hd]`, rotates them, and builds attention from batched
//! matmuls, a mask add and a softmax: for the short texts probing runs on,
//! each of those is a tiny operation with its own pass over memory. Here
//! each (text, key head) pair is one task on candle's CPU pool: it rotates
//! that head's keys once into a local buffer (after any cached prefix),
//! then, for every query head of its group, rotates each query row, scores
//! only the keys the causal (and sliding-window) rule lets it see, takes the
//! softmax in f32 and writes the weighted sum of values straight into the
//! `[rows, heads · hd]` layout the output projection reads.
//!
//! The arithmetic is the generic path's: half-split rotary embedding
//! (`x₁·cos − x₂·sin`, `x₂·cos + x₁·sin`), scores scaled after the dot
//! product, soft-capped when configured, softmax with the running maximum
//! subtracted. Keys a query may not see are skipped rather than given
//! `−∞` (their `exp` would add exactly zero).

use super::dot;
use super::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::packed_gemm::{exp_shifted_in_place, for_each_unit, SharedOut};

/// Where one text's rows sit in a pass's flattened rows: rows
/// `start..start + len` hold positions `prefix..prefix + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    /// First row.
    pub start: usize,
    /// Rows (tokens) in the text.
    pub len: usize,
}

/// Head geometry and score rules of one attention layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadSpec {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub softcap: Option<f32>,
    /// Sliding window: a query at position `p` sees keys at `p − w + 1 ..= p`.
    pub window: Option<usize>,
}

/// Keys and values of a cached prefix shared by every text:
/// `[kv_heads, len, head_dim]` each, keys already rotated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prefix<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub len: usize,
}

/// Which rows ask queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queries {
    /// Every row of every segment; `q` and the output have the input's rows.
    All,
    /// Only each segment's last row; `q` and the output have one row per
    /// segment, in segment order.
    LastOfEach,
}

/// Rotary tables: row `i` (`head_dim / 2` values) is position `prefix + i`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RopeTables<'a> {
    pub cos: &'a [f32],
    pub sin: &'a [f32],
}

/// `dst = rotate(src)` with the tables' row `pos` (half-split convention).
#[inline(always)]
fn rotate(src: &[f32], rope: &RopeTables<'_>, pos: usize, dst: &mut [f32]) {
    let half = src.len() / 2;
    let (cos, sin) = (
        &rope.cos[pos * half..(pos + 1) * half],
        &rope.sin[pos * half..(pos + 1) * half],
    );
    let (x1, x2) = src.split_at(half);
    let (d1, d2) = dst.split_at_mut(half);
    for i in 0..half {
        d1[i] = x1[i] * cos[i] - x2[i] * sin[i];
        d2[i] = x2[i] * cos[i] + x1[i] * sin[i];
    }
}

/// Attention over row-major projections: `q` is `[rows, heads · hd]`, `k`
/// and `v` are `[rows, kv_heads · hd]` (unrotated; query head `i` reads key
/// head `i / (heads / kv_heads)`). Every text attends causally within its
/// own segment, after the optional shared prefix. Returns `q`'s shape,
/// `[query rows, heads · hd]`; with [`Queries::All`], rows outside every
/// segment stay zero.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    segments: &[Segment],
    queries: Queries,
    rope: RopeTables<'_>,
    prefix: Option<Prefix<'_>>,
    spec: HeadSpec,
) -> Vec<f32> {
    let HeadSpec {
        heads,
        kv_heads,
        head_dim: hd,
        ..
    } = spec;
    let rows = k.len() / (kv_heads * hd);
    let q_rows = match queries {
        Queries::All => rows,
        Queries::LastOfEach => segments.len(),
    };
    assert_eq!(
        q.len(),
        q_rows * heads * hd,
        "queries are not [{q_rows}, {heads}·{hd}]"
    );
    assert_eq!(v.len(), k.len(), "values and keys differ in shape");
    let mut out = vec![0f32; q_rows * heads * hd];
    let dst = SharedOut(out.as_mut_ptr());
    let isa = isa::active();
    // Texts come longest first, so the largest units are taken first.
    for_each_unit(segments.len() * kv_heads, Buffers::default, |buf, unit| {
        let (si, kvh) = (unit / kv_heads, unit % kv_heads);
        let seg = segments[si];
        // Query rows `first..len` of the segment, the first at row
        // `q_row0` of `q` and the output.
        let (first, q_row0) = match queries {
            Queries::All => (0, seg.start),
            Queries::LastOfEach => (seg.len - 1, si),
        };
        let unit = Unit {
            seg,
            kvh,
            first,
            q_row0,
            rope: &rope,
            prefix,
            spec,
            dst,
        };
        // SAFETY: one task per (segment, key head); it writes the query
        // heads of its group in its segment's rows, which no other task
        // touches. Each variant runs only where the CPU has its instructions
        // (`isa::active` never exceeds the detected set).
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => head_group_avx512(q, k, v, &unit, buf),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => head_group_avx2(q, k, v, &unit, buf),
                _ => head_group(q, k, v, &unit, buf),
            }
        }
    });
    out
}

/// One task's share of the work: a segment and one key head.
#[derive(Clone, Copy)]
struct Unit<'a> {
    seg: Segment,
    kvh: usize,
    /// The first query row, counted within the segment.
    first: usize,
    /// Where query `first` sits in `q` and the output.
    q_row0: usize,
    rope: &'a RopeTables<'a>,
    prefix: Option<Prefix<'a>>,
    spec: HeadSpec,
    dst: SharedOut,
}

/// [`head_group`] compiled for AVX2/FMA, so its loops use 8-wide vectors.
///
/// # Safety
/// As [`head_group`]; and the CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_group_avx2(q: &[f32], k: &[f32], v: &[f32], unit: &Unit<'_>, buf: &mut Buffers) {
    // SAFETY: forwarded from the caller.
    unsafe { head_group(q, k, v, unit, buf) }
}

/// [`head_group`] compiled for AVX-512F, so its loops use 16-wide vectors.
///
/// # Safety
/// As [`head_group`]; and the CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn head_group_avx512(q: &[f32], k: &[f32], v: &[f32], unit: &Unit<'_>, buf: &mut Buffers) {
    // SAFETY: forwarded from the caller.
    unsafe { head_group(q, k, v, unit, buf) }
}

/// Per-task scratch space, reused across the task's units.
#[derive(Default)]
struct Buffers {
    keys: Vec<f32>,
    values: Vec<f32>,
    query: Vec<f32>,
    scores: Vec<f32>,
}

/// One (segment, key head) unit: every query head of the group, every row.
///
/// # Safety
/// The caller gives each (segment, key head) pair to exactly one task, so
/// the output slots this writes are written by nobody else.
#[inline(always)]
unsafe fn head_group(q: &[f32], k: &[f32], v: &[f32], unit: &Unit<'_>, buf: &mut Buffers) {
    let Unit {
        seg,
        kvh,
        first,
        q_row0,
        rope,
        prefix,
        spec,
        dst,
    } = *unit;
    let (heads, kv_heads, hd) = (spec.heads, spec.kv_heads, spec.head_dim);
    let group = heads / kv_heads;
    let p = prefix.map_or(0, |x| x.len);
    let s = p + seg.len;
    buf.keys.resize(s * hd, 0.0);
    buf.values.resize(s * hd, 0.0);
    buf.query.resize(hd, 0.0);
    buf.scores.resize(s, 0.0);
    if let Some(pre) = prefix {
        let from = kvh * p * hd..(kvh + 1) * p * hd;
        buf.keys[..p * hd].copy_from_slice(&pre.keys[from.clone()]);
        buf.values[..p * hd].copy_from_slice(&pre.values[from]);
    }
    let kv_stride = kv_heads * hd;
    for j in 0..seg.len {
        let at = (seg.start + j) * kv_stride + kvh * hd;
        let key = &mut buf.keys[(p + j) * hd..(p + j + 1) * hd];
        rotate(&k[at..at + hd], rope, j, key);
        buf.values[(p + j) * hd..(p + j + 1) * hd].copy_from_slice(&v[at..at + hd]);
    }
    let q_stride = heads * hd;
    for hi in kvh * group..(kvh + 1) * group {
        for i in first..seg.len {
            let row = q_row0 + i - first;
            rotate(
                &q[row * q_stride + hi * hd..][..hd],
                rope,
                i,
                &mut buf.query,
            );
            // Absolute positions: this query p + i, key slot j is position j.
            let qp = p + i;
            let lo = spec.window.map_or(0, |w| (qp + 1).saturating_sub(w));
            let scores = &mut buf.scores[lo..=qp];
            let mut max = f32::NEG_INFINITY;
            for (j, score) in (lo..=qp).zip(scores.iter_mut()) {
                let mut x = dot(&buf.query, &buf.keys[j * hd..(j + 1) * hd]) * spec.scale;
                if let Some(c) = spec.softcap {
                    x = (x / c).tanh() * c;
                }
                max = max.max(x);
                *score = x;
            }
            let sum = exp_shifted_in_place(scores, max);
            // SAFETY: row `row`, head `hi` belongs to this unit alone (see above).
            let out =
                unsafe { std::slice::from_raw_parts_mut(dst.at(row * q_stride + hi * hd), hd) };
            for e in scores.iter_mut() {
                *e /= sum;
            }
            weighted_values(&buf.values, hd, lo, scores, out);
        }
    }
}

/// `out += Σ_j w_j · values[lo + j]` for the softmax weights `w` (rows of
/// `hd` in `values`), sixteen output lanes at a time: each group of lanes is
/// summed over every key in a local accumulator and added to `out` once.
/// Adding into `out` key by key made every key wait for the previous key's
/// store to be read back (a fifth of attention's time); the sum's order, one
/// key after another from zero, is the same, and so are the bits.
#[inline(always)]
fn weighted_values(values: &[f32], hd: usize, lo: usize, weights: &[f32], out: &mut [f32]) {
    const LANES: usize = 16;
    let rows = &values[lo * hd..(lo + weights.len()) * hd];
    let full = hd / LANES * LANES;
    for c0 in (0..full).step_by(LANES) {
        // A fixed width, so the accumulator stays in registers.
        let mut acc = [0f32; LANES];
        for (&w, row) in weights.iter().zip(rows.chunks_exact(hd)) {
            let v: &[f32; LANES] = row[c0..c0 + LANES].try_into().expect("16 lanes");
            for l in 0..LANES {
                acc[l] += w * v[l];
            }
        }
        for (o, a) in out[c0..c0 + LANES].iter_mut().zip(&acc) {
            *o += a;
        }
    }
    for c in full..hd {
        let mut acc = 0f32;
        for (&w, row) in weights.iter().zip(rows.chunks_exact(hd)) {
            acc += w * row[c];
        }
        out[c] += acc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Straightforward f64 attention of one text (no prefix) for comparison.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        seg: Segment,
        rope: &RopeTables<'_>,
        spec: HeadSpec,
        row: usize,
        head: usize,
    ) -> Vec<f64> {
        let hd = spec.head_dim;
        let half = hd / 2;
        let rot = |x: &[f32], pos: usize| -> Vec<f64> {
            let mut r = vec![0f64; hd];
            for i in 0..half {
                let (c, s) = (
                    rope.cos[pos * half + i] as f64,
                    rope.sin[pos * half + i] as f64,
                );
                r[i] = x[i] as f64 * c - x[i + half] as f64 * s;
                r[i + half] = x[i + half] as f64 * c + x[i] as f64 * s;
            }
            r
        };
        let kvh = head / (spec.heads / spec.kv_heads);
        let i = row - seg.start;
        let qr = rot(&q[row * spec.heads * hd + head * hd..][..hd], i);
        let visible: Vec<usize> = (0..=i)
            .filter(|&j| spec.window.is_none_or(|w| i - j < w))
            .collect();
        let scores: Vec<f64> = visible
            .iter()
            .map(|&j| {
                let kr = rot(
                    &k[(seg.start + j) * spec.kv_heads * hd + kvh * hd..][..hd],
                    j,
                );
                let x = qr.iter().zip(&kr).map(|(a, b)| a * b).sum::<f64>() * spec.scale as f64;
                match spec.softcap {
                    Some(c) => (x / c as f64).tanh() * c as f64,
                    None => x,
                }
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        let mut out = vec![0f64; hd];
        for (&j, w) in visible.iter().zip(&e) {
            let vr = &v[(seg.start + j) * spec.kv_heads * hd + kvh * hd..][..hd];
            for (o, x) in out.iter_mut().zip(vr) {
                *o += w / sum * *x as f64;
            }
        }
        out
    }

    #[test]
    fn packed_texts_match_a_per_text_reference_with_gqa_windows_and_softcap() {
        let spec = HeadSpec {
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
            scale: 0.35,
            softcap: Some(5.0),
            window: Some(3),
        };
        let segments = [
            Segment { start: 0, len: 5 },
            Segment { start: 5, len: 1 },
            Segment { start: 6, len: 4 },
        ];
        let rows = 10;
        let (q, k, v) = (
            values(rows * 4 * 8, 1),
            values(rows * 2 * 8, 2),
            values(rows * 2 * 8, 3),
        );
        let (cos, sin) = (values(5 * 4, 4), values(5 * 4, 5));
        let rope = RopeTables {
            cos: &cos,
            sin: &sin,
        };
        let out = attention(&q, &k, &v, &segments, Queries::All, rope, None, spec);
        // Last rows only: the same values, one row per text.
        let last: Vec<f32> = segments
            .iter()
            .flat_map(|s| q[(s.start + s.len - 1) * 32..][..32].to_vec())
            .collect();
        let lasts = attention(
            &last,
            &k,
            &v,
            &segments,
            Queries::LastOfEach,
            rope,
            None,
            spec,
        );
        for (si, seg) in segments.iter().enumerate() {
            let row = seg.start + seg.len - 1;
            assert_eq!(&lasts[si * 32..][..32], &out[row * 32..][..32]);
        }
        for seg in segments {
            for row in seg.start..seg.start + seg.len {
                for head in 0..4 {
                    let want = reference(&q, &k, &v, seg, &rope, spec, row, head);
                    let got = &out[row * 32 + head * 8..][..8];
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (*g as f64 - w).abs() < 1e-5,
                            "row {row} head {head}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_text_gives_the_same_bytes_alone_and_packed_with_others() {
        let spec = HeadSpec {
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            scale: 0.5,
            softcap: None,
            window: None,
        };
        let (q, k, v) = (values(9 * 8, 7), values(9 * 4, 8), values(9 * 4, 9));
        let (cos, sin) = (values(6 * 2, 10), values(6 * 2, 11));
        let rope = RopeTables {
            cos: &cos,
            sin: &sin,
        };
        let packed = attention(
            &q,
            &k,
            &v,
            &[Segment { start: 0, len: 3 }, Segment { start: 3, len: 6 }],
            Queries::All,
            rope,
            None,
            spec,
        );
        let alone = attention(
            &q[3 * 8..],
            &k[3 * 4..],
            &v[3 * 4..],
            &[Segment { start: 0, len: 6 }],
            Queries::All,
            rope,
            None,
            spec,
        );
        assert_eq!(&packed[3 * 8..], &alone[..]);
    }
}
