//! Dense linear algebra for the Newton preconditioner: a Gram matrix by
//! blocked GEMM (lower triangle only) and a blocked Cholesky factorisation
//! with its triangular solves. GEMMs go through ndarray's `general_mat_mul`
//! (the `matrixmultiply` kernels); everything else is row-major slices.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, LinalgScalar, ShapeBuilder};

/// Rows (and columns) per block: large enough that the GEMM kernels run at
/// speed, small enough that the unblocked pieces stay cheap.
const NB: usize = 128;

/// Lower triangle (diagonal included) of `A Aᵀ` for a row-major `[n, k]`
/// matrix `a`, as a row-major `[n, n]` matrix; the strict upper triangle is
/// left zero. Row blocks only multiply against the rows before them, which
/// halves the work of a full GEMM.
pub(crate) fn gram_lower<T: LinalgScalar>(a: &[T], n: usize, k: usize) -> Vec<T> {
    let mut out = vec![T::zero(); n * n];
    let full = ArrayView2::from_shape((n, k), a).expect("gram input shape");
    for r0 in (0..n).step_by(NB * 4) {
        let r1 = (r0 + NB * 4).min(n);
        let lhs = full.slice(ndarray::s![r0..r1, ..]);
        let rhs = full.slice(ndarray::s![..r1, ..]);
        let mut dst = ArrayViewMut2::from_shape((r1 - r0, r1).strides((n, 1)), &mut out[r0 * n..])
            .expect("gram output view");
        general_mat_mul(T::one(), &lhs, &rhs.t(), T::zero(), &mut dst);
    }
    for i in 0..n {
        out[i * n + i + 1..(i + 1) * n].fill(T::zero());
    }
    out
}

/// In-place Cholesky factorisation `A = L Lᵀ` of a symmetric positive
/// definite row-major `[n, n]` matrix given by its lower triangle; on success
/// the lower triangle holds `L`. Returns `false` if a pivot is not positive
/// (the matrix is not numerically positive definite).
pub(crate) fn cholesky_in_place(a: &mut [f64], n: usize) -> bool {
    let mut panel = Vec::new();
    for k0 in (0..n).step_by(NB) {
        let k1 = (k0 + NB).min(n);
        let nb = k1 - k0;
        // Diagonal block, unblocked (left-looking within the block).
        for j in k0..k1 {
            for i in j..k1 {
                let (ri, rj) = (i * n, j * n);
                let mut s = a[ri + j];
                for m in k0..j {
                    s -= a[ri + m] * a[rj + m];
                }
                if i == j {
                    if !(s > 0.0 && s.is_finite()) {
                        return false;
                    }
                    a[ri + j] = s.sqrt();
                } else {
                    a[ri + j] = s / a[rj + j];
                }
            }
        }
        if k1 == n {
            break;
        }
        // Panel below the block: solve X L11ᵀ = A21 row by row.
        for i in k1..n {
            let ri = i * n;
            for j in k0..k1 {
                let rj = j * n;
                let mut s = a[ri + j];
                for m in k0..j {
                    s -= a[ri + m] * a[rj + m];
                }
                a[ri + j] = s / a[rj + j];
            }
        }
        // Trailing update A22 -= L21 L21ᵀ, lower triangle only, by row blocks.
        // The panel is copied out so the GEMM reads and writes disjoint buffers.
        let m = n - k1;
        panel.clear();
        panel.reserve(m * nb);
        for i in k1..n {
            panel.extend_from_slice(&a[i * n + k0..i * n + k1]);
        }
        let p = ArrayView2::from_shape((m, nb), &panel[..]).expect("panel shape");
        for r0 in (0..m).step_by(NB * 2) {
            let r1 = (r0 + NB * 2).min(m);
            let lhs = p.slice(ndarray::s![r0..r1, ..]);
            let rhs = p.slice(ndarray::s![..r1, ..]);
            let start = (k1 + r0) * n + k1;
            let mut dst = ArrayViewMut2::from_shape((r1 - r0, r1).strides((n, 1)), &mut a[start..])
                .expect("trailing view");
            general_mat_mul(-1.0f64, &lhs, &rhs.t(), 1.0f64, &mut dst);
        }
    }
    true
}

/// Solve `L Lᵀ x = b` in place with the factor from [`cholesky_in_place`].
pub(crate) fn cholesky_solve(l: &[f64], n: usize, b: &mut [f64]) {
    // Forward: L y = b (rows of L are contiguous).
    for i in 0..n {
        let row = &l[i * n..i * n + i];
        let s: f64 = row.iter().zip(&b[..i]).map(|(x, y)| x * y).sum();
        b[i] = (b[i] - s) / l[i * n + i];
    }
    // Backward: Lᵀ x = y, column-oriented so it also reads rows of L.
    for i in (0..n).rev() {
        let xi = b[i] / l[i * n + i];
        b[i] = xi;
        for (bk, lk) in b[..i].iter_mut().zip(&l[i * n..i * n + i]) {
            *bk -= lk * xi;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_random_spd_system() {
        // Sizes straddle the block size so every branch runs.
        for &n in &[1usize, 7, 128, 300] {
            let k = n + 5;
            let a: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5)
                .collect();
            let g = gram_lower(&a, n, k);
            // Check the Gram against a naive product.
            for i in 0..n {
                for j in 0..=i {
                    let want: f64 = (0..k)
                        .map(|m| f64::from(a[i * k + m]) * f64::from(a[j * k + m]))
                        .sum();
                    assert!((f64::from(g[i * n + j]) - want).abs() < 1e-3 * (1.0 + want.abs()));
                }
            }
            let mut m: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
            for i in 0..n {
                m[i * n + i] += 1.0;
            }
            let full = m.clone();
            assert!(cholesky_in_place(&mut m, n));
            let x_true: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            // b = full x (full symmetric from its lower triangle).
            let mut b = vec![0.0; n];
            for i in 0..n {
                for j in 0..n {
                    let v = if j <= i {
                        full[i * n + j]
                    } else {
                        full[j * n + i]
                    };
                    b[i] += v * x_true[j];
                }
            }
            cholesky_solve(&m, n, &mut b);
            for (x, t) in b.iter().zip(&x_true) {
                assert!((x - t).abs() < 1e-8, "n={n}: {x} vs {t}");
            }
        }
    }

    #[test]
    fn cholesky_refuses_an_indefinite_matrix() {
        let mut m = vec![1.0, 0.0, 2.0, 1.0];
        assert!(!cholesky_in_place(&mut m, 2));
    }
}
