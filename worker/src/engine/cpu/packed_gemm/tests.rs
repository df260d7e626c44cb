//! Every kernel this CPU can run, against textbook references in f64 and
//! against each other.

use super::*;

/// The instruction sets with a packed kernel that this CPU runs.
fn kernels_here() -> Vec<Isa> {
    let isas: Vec<Isa> = [Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|isa| *isa <= Isa::detected())
        .collect();
    if isas.is_empty() {
        eprintln!("skipped: this CPU runs no packed kernel, the generic path is used here");
    }
    isas
}

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

/// The largest absolute error of `y` against `want`, and the largest |want|
/// (the scale the tolerances are relative to).
fn worst_error(y: &[f32], want: &[f64]) -> (f64, f64) {
    let scale = want.iter().fold(0f64, |s, v| s.max(v.abs())).max(1e-12);
    let worst = y
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0f64, f64::max);
    (worst, scale)
}

/// Row counts around both tiles' heights (6, 12) and the row block, column
/// counts around the panel (16) and the two-panel tile (32), and a k large
/// enough for several row blocks.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (5, 17, 3),
    (6, 16, 64),
    (7, 33, 100),
    (12, 32, 64),
    (13, 15, 576),
    (25, 47, 200),
    (90, 48, 1536),
    (200, 40, 576),
];

#[test]
fn matches_the_triple_loop_on_edge_shapes() {
    for isa in kernels_here() {
        for &(m, n, k) in SHAPES {
            let x = matrix(m, k, 1 + m as u64);
            let w = matrix(n, k, 7 + n as u64);
            let packed = PackedMatrix::pack(&w, n, k);
            assert_eq!((packed.out_features(), packed.in_features()), (n, k));
            let y = packed.matmul_t_on(isa, Blocking::default(), &x, m);
            let want = reference(&x, &w, m, n, k);
            let (worst, scale) = worst_error(&y, &want);
            // f32 accumulation over k terms: a few ulps times sqrt(k).
            assert!(
                worst <= 1e-5 * scale,
                "{isa} [{m}, {k}]·[{n}, {k}]ᵀ: worst abs error {worst:e} against max |y| {scale:e}"
            );
        }
    }
}

#[test]
fn every_instruction_set_gives_the_same_bits() {
    // Each output is the same chain of multiply-adds along k in every
    // kernel, only the tile around it differs: results must agree exactly.
    let isas = kernels_here();
    for &(m, n, k) in SHAPES {
        let (x, w) = (matrix(m, k, 2), matrix(n, k, 3));
        let packed = PackedMatrix::pack(&w, n, k);
        let (g, u) = (
            PackedMatrix::pack(&w, n, k),
            PackedMatrix::pack(&matrix(n, k, 4), n, k),
        );
        let runs: Vec<_> = isas
            .iter()
            .map(|&isa| {
                (
                    isa,
                    packed.matmul_t_on(isa, Blocking::default(), &x, m),
                    matmul_gated_on(isa, Blocking::default(), &g, &u, Act::Silu, &x, m),
                )
            })
            .collect();
        for pair in runs.windows(2) {
            let ((a, ya, ga), (b, yb, gb)) = (&pair[0], &pair[1]);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(ya), bits(yb), "{a} and {b} differ on [{m}, {n}, {k}]");
            assert_eq!(
                bits(ga),
                bits(gb),
                "{a} and {b} gated differ on [{m}, {n}, {k}]"
            );
        }
    }
}

#[test]
fn every_blocking_gives_the_same_bits() {
    // Row blocks and k chunks only reorder which tile runs when; each output
    // stays one chain of multiply-adds along k, carried exactly between
    // chunks, so the bits must not move. Shapes: k shorter than a chunk,
    // k not a multiple of 4 or of the chunk, row blocks of one unit (48 rows)
    // and partial units, tiles narrower than a panel.
    let blockings = [
        Blocking::default(),
        Blocking::parse("k_chunk=4").unwrap(),
        Blocking::parse("k_chunk=64").unwrap(),
        Blocking::parse("k_chunk=256,row_block_kib=1").unwrap(),
        Blocking::parse("row_block_kib=200").unwrap(),
    ];
    let shapes = [
        (1, 1, 1),
        (7, 33, 101),
        (50, 17, 576),
        (130, 40, 250),
        (97, 48, 1536),
    ];
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for isa in kernels_here() {
        for &(m, n, k) in &shapes {
            let x = matrix(m, k, 5 + k as u64);
            let (g, u) = (
                PackedMatrix::pack(&matrix(n, k, 6), n, k),
                PackedMatrix::pack(&matrix(n, k, 8), n, k),
            );
            let want = reference(&x, &matrix(n, k, 6), m, n, k);
            let base = g.matmul_t_on(isa, Blocking::default(), &x, m);
            let (worst, scale) = worst_error(&base, &want);
            assert!(
                worst <= 1e-5 * scale,
                "{isa} [{m}, {n}, {k}]: {worst:e} of {scale:e}"
            );
            let base_gated =
                matmul_gated_on(isa, Blocking::default(), &g, &u, Act::GeluTanh, &x, m);
            for b in &blockings[1..] {
                let label = b.label();
                let y = g.matmul_t_on(isa, *b, &x, m);
                assert_eq!(bits(&y), bits(&base), "{isa} {label} on [{m}, {n}, {k}]");
                let gated = matmul_gated_on(isa, *b, &g, &u, Act::GeluTanh, &x, m);
                assert_eq!(
                    bits(&gated),
                    bits(&base_gated),
                    "{isa} {label} gated on [{m}, {n}, {k}]"
                );
            }
        }
    }
}

#[test]
fn gated_product_matches_the_unfused_computation() {
    for isa in kernels_here() {
        for &(m, n, k) in &[(1, 5, 7), (13, 40, 64), (90, 33, 576), (25, 70, 96)] {
            let x = matrix(m, k, 3 + m as u64);
            let (g, u) = (matrix(n, k, 11), matrix(n, k, 12));
            let (gr, ur) = (reference(&x, &g, m, n, k), reference(&x, &u, m, n, k));
            let (gp, up) = (PackedMatrix::pack(&g, n, k), PackedMatrix::pack(&u, n, k));
            for gate in [Act::Silu, Act::GeluTanh] {
                let y = matmul_gated_on(isa, Blocking::default(), &gp, &up, gate, &x, m);
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
                        "{isa} {gate:?} [{m}, {n}, {k}] element {i}: {v} against {want}"
                    );
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn vector_exp_stays_within_a_few_ulps_of_f64() {
    if Isa::detected() < Isa::Avx2 {
        return;
    }
    let xs: Vec<f32> = (0..=35_000).map(|i| -87.0 + i as f32 * 0.005).collect();
    let mut worst = 0f64;
    for chunk in xs.chunks(16).filter(|c| c.len() == 16) {
        let mut got = [0f32; 16];
        // SAFETY: AVX2/FMA checked above; 8 floats in and out per half.
        unsafe {
            use std::arch::x86_64::*;
            for h in 0..2 {
                let v = avx2::exp8(_mm256_loadu_ps(chunk.as_ptr().add(8 * h)));
                _mm256_storeu_ps(got.as_mut_ptr().add(8 * h), v);
            }
        }
        if Isa::detected() >= Isa::Avx512 {
            let mut wide = [0f32; 16];
            // SAFETY: AVX-512F checked just above; 16 floats in and out.
            unsafe {
                use std::arch::x86_64::*;
                let v = avx512::exp16(_mm512_loadu_ps(chunk.as_ptr()));
                _mm512_storeu_ps(wide.as_mut_ptr(), v);
            }
            assert_eq!(
                got.map(f32::to_bits),
                wide.map(f32::to_bits),
                "exp8 and exp16 at {chunk:?}"
            );
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
fn log_softmax_normaliser_agrees_across_instruction_sets() {
    let row: Vec<f32> = matrix(1, 49_157, 9).iter().map(|v| v * 30.0).collect();
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let want: f64 = row.iter().map(|v| ((v - max) as f64).exp()).sum();
    for isa in [Isa::Generic, Isa::Avx2, Isa::Avx512] {
        if isa > Isa::detected() {
            continue;
        }
        let got = sum_exp_shifted_on(isa, &row, max) as f64;
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "{isa}: {got} against {want}"
        );
    }
}

#[test]
fn empty_inputs_give_empty_or_zero_outputs() {
    for isa in kernels_here() {
        let packed = PackedMatrix::pack(&matrix(3, 4, 1), 3, 4);
        assert!(packed
            .matmul_t_on(isa, Blocking::default(), &[], 0)
            .is_empty());
        let zero_k = PackedMatrix::pack(&[], 5, 0);
        assert_eq!(
            zero_k.matmul_t_on(isa, Blocking::default(), &[], 2),
            vec![0f32; 10]
        );
    }
}

#[test]
#[should_panic(expected = "cannot run on this CPU")]
fn the_generic_path_has_no_packed_kernel() {
    PackedMatrix::pack(&matrix(3, 4, 1), 3, 4).matmul_t_on(
        Isa::Generic,
        Blocking::default(),
        &matrix(1, 4, 2),
        1,
    );
}

/// bf16 bits of `v`, rounded by the `half` crate (the reference rounding).
#[cfg(target_arch = "x86_64")]
fn bf16_bits(v: &[f32]) -> Vec<u16> {
    v.iter()
        .map(|&x| half::bf16::from_f32(x).to_bits())
        .collect()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn bf16_rounding_matches_the_half_crate() {
    let mut xs: Vec<f32> = matrix(1, 100_000, 5).iter().map(|v| v * 1e3).collect();
    // Ties in both directions, the largest finite values, infinities, zeros.
    xs.extend([
        f32::from_bits(0x3f80_8000),
        f32::from_bits(0x3f81_8000),
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
    ]);
    for x in xs {
        assert_eq!(bf16::to_bf16(x), half::bf16::from_f32(x).to_bits(), "{x:e}");
    }
    assert!(half::bf16::from_bits(bf16::to_bf16(f32::NAN)).is_nan());
}

/// The bf16 kernels this process can run: AMX tiles on [`Isa::Amx`], and
/// the `vdpbf16ps` pairs there too (their CPUs have AVX512-BF16).
#[cfg(target_arch = "x86_64")]
fn bf16_kernels_here() -> Vec<bf16::Bf16Kernel> {
    bf16::Bf16Kernel::ALL
        .into_iter()
        .filter(|k| k.runs_here())
        .collect()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn bf16_kernels_match_the_triple_loop_on_bf16_inputs() {
    let kernels = bf16_kernels_here();
    if kernels.is_empty() {
        eprintln!("skipped: no bf16 kernel in this process (CD_CPU_ISA or the CPU)");
        return;
    }
    // Rows and columns around the 8-row and 16-row tiles and the 32 × 32
    // block, k around the 32-value k-block.
    for &(m, n, k) in &[
        (1, 1, 1),
        (5, 17, 3),
        (9, 16, 32),
        (16, 16, 32),
        (33, 47, 70),
        (64, 96, 576),
        (100, 40, 1536),
    ] {
        let round = |v: Vec<f32>| -> Vec<f32> {
            v.iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect()
        };
        let x = matrix(m, k, 21 + m as u64);
        let w = round(matrix(n, k, 22 + n as u64));
        let packed = bf16::Bf16Panels::pack(&bf16_bits(&w), n, k);
        let want = reference(&round(x.clone()), &w, m, n, k);
        let u = round(matrix(n, k, 23));
        let up = bf16::Bf16Panels::pack(&bf16_bits(&u), n, k);
        let want_u = reference(&round(x.clone()), &u, m, n, k);
        for &kernel in &kernels {
            let y = packed.matmul_t_on(kernel, &x, m);
            let (worst, scale) = worst_error(&y, &want);
            assert!(
                worst <= 1e-5 * scale,
                "{kernel:?} [{m}, {n}, {k}]: worst {worst:e} against {scale:e}"
            );
            for gate in [Act::Silu, Act::GeluTanh] {
                let gated = matmul_gated_bf16_on(kernel, &packed, &up, gate, &x, m);
                for (i, v) in gated.iter().enumerate() {
                    let a = want[i];
                    let act = match gate {
                        Act::Silu => a / (1.0 + (-a).exp()),
                        Act::GeluTanh => {
                            let c = (2.0 / std::f64::consts::PI).sqrt();
                            0.5 * a * (1.0 + (c * (a + 0.044715 * a * a * a)).tanh())
                        }
                    };
                    let want = act * want_u[i];
                    assert!(
                        (*v as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{kernel:?} {gate:?} [{m}, {n}, {k}] element {i}: {v} against {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn softmax_numerators_agree_with_libm_on_every_length() {
    // Lengths around both vector widths, values spanning the clamp range.
    for len in [1, 7, 8, 9, 15, 16, 17, 31, 33, 100] {
        let row: Vec<f32> = matrix(1, len, len as u64)
            .iter()
            .map(|v| v * 60.0)
            .collect();
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut got = row.clone();
        let sum = exp_shifted_in_place(&mut got, max);
        let mut want_sum = 0f64;
        for (g, x) in got.iter().zip(&row) {
            let want = ((x - max) as f64).exp();
            want_sum += want;
            assert!(
                (*g as f64 - want).abs() <= 4.0 * f32::EPSILON as f64 * want.max(1e-30),
                "{len}: {g} vs {want}"
            );
        }
        assert!(
            (sum as f64 - want_sum).abs() <= 1e-6 * want_sum,
            "{len}: {sum} vs {want_sum}"
        );
    }
}
