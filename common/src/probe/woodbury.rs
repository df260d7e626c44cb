//! Exact-Newton preconditioner for wide problems (fewer training rows than
//! features), through the Woodbury identity on an `n × n` system.
//!
//! With `X̃` the centred (optionally standardised) training rows, `D` the
//! logistic curvature weights and `λ = 1/(C·n)`, the weight block of the
//! Hessian is `H_ww = X̃ᵀ D X̃ / n + λ I` (d × d) and
//!
//! `H_ww⁻¹ v = (v − X̃ᵀ √D M⁻¹ √D X̃ v) / λ`,   `M = I/C + √D K √D`,
//!
//! where `K = X̃ X̃ᵀ` is the `n × n` kernel of the training rows. `K` is formed
//! once per fit by one (lower-triangular) f32 GEMM; each refresh of the
//! preconditioner costs one `n × n` Cholesky of `M` in f64. The unpenalised
//! intercept is eliminated by its Schur complement, so the operator applied is
//! the exact inverse of the full `(d + 1)` Hessian at the `D` it was built
//! with (up to the f32 rounding in `K`). The Newton-CG loop uses it as the CG
//! preconditioner with exact Hessian-vector products, so rounding in `K`
//! costs CG iterations, never accuracy.

use super::dense;
use super::rows::Rows;

/// The kernel `K = X̃ X̃ᵀ` (lower triangle) of the training rows.
pub(crate) struct Kernel {
    k: Vec<f64>,
    n: usize,
}

impl Kernel {
    /// Form `K` from the training rows, centred by `mu` and scaled by `s`.
    pub(crate) fn new(x: &Rows<'_>, rows: &[usize], mu: &[f64], s: &[f64]) -> Kernel {
        let (n, d) = (rows.len(), x.d());
        let mut xt = vec![0.0f64; n * d];
        for (out, &i) in xt.chunks_exact_mut(d).zip(rows) {
            for (((o, &v), m), sc) in out.iter_mut().zip(x.row(i)).zip(mu).zip(s) {
                *o = (f64::from(v) - m) * sc;
            }
        }
        Kernel {
            k: dense::gram_lower(&xt, n, d),
            n,
        }
    }
}

/// `H⁻¹` of the full Hessian at one set of curvature weights.
pub(crate) struct Woodbury {
    /// Cholesky factor of `M` (lower, row-major `n × n`).
    l: Vec<f64>,
    sqrt_d: Vec<f64>,
    /// `X̃ᵀ D 1 / n`: the Hessian's weight–intercept column.
    h: Vec<f64>,
    /// `H_ww⁻¹ h`.
    q: Vec<f64>,
    /// Schur complement of the intercept, `1ᵀD1/n − hᵀ H_ww⁻¹ h`.
    sigma: f64,
    lam: f64,
}

/// The centring and scaling folded into every pass over the raw rows.
pub(crate) struct Affine<'a> {
    pub(crate) mu: &'a [f64],
    pub(crate) s: &'a [f64],
}

impl Woodbury {
    /// Build the operator for curvature weights `dd` (one per training row).
    /// `sdx = Σ_i D_i x_i` over raw rows and `sum_d = Σ_i D_i` come from the
    /// gradient pass. `None` if `M` or the Schur complement is not positive.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        kernel: &Kernel,
        x: &Rows<'_>,
        rows: &[usize],
        aff: &Affine<'_>,
        dd: &[f32],
        sdx: &[f64],
        sum_d: f64,
        c: f64,
        lam: f64,
    ) -> Option<Woodbury> {
        let n = kernel.n;
        let nf = n as f64;
        let sqrt_d: Vec<f64> = dd.iter().map(|&v| f64::from(v).max(0.0).sqrt()).collect();
        let mut l = vec![0.0f64; n * n];
        for i in 0..n {
            let (src, dst) = (
                &kernel.k[i * n..i * n + i + 1],
                &mut l[i * n..i * n + i + 1],
            );
            let si = sqrt_d[i];
            for ((o, &kv), &sj) in dst.iter_mut().zip(src).zip(&sqrt_d) {
                *o = si * kv * sj;
            }
            dst[i] += 1.0 / c;
        }
        if !dense::cholesky_in_place(&mut l, n) {
            return None;
        }
        let h: Vec<f64> = (0..x.d())
            .map(|j| aff.s[j] * (sdx[j] - aff.mu[j] * sum_d) / nf)
            .collect();
        let mut op = Woodbury {
            l,
            sqrt_d,
            h,
            q: Vec::new(),
            sigma: 0.0,
            lam,
        };
        let q = op.hww_inv(x, rows, aff, &op.h);
        let sigma = sum_d / nf - dot(&op.h, &q);
        if !(sigma > 0.0 && sigma.is_finite()) {
            return None;
        }
        op.q = q;
        op.sigma = sigma;
        Some(op)
    }

    /// `H⁻¹ v` for `v = [v_w; v_b]` of length `d + 1`.
    pub(crate) fn apply(
        &self,
        x: &Rows<'_>,
        rows: &[usize],
        aff: &Affine<'_>,
        v: &[f64],
    ) -> Vec<f64> {
        let d = x.d();
        let mut out = self.hww_inv(x, rows, aff, &v[..d]);
        let t = (v[d] - dot(&self.h, &out)) / self.sigma;
        for (o, q) in out.iter_mut().zip(&self.q) {
            *o -= q * t;
        }
        out.push(t);
        out
    }

    /// `H_ww⁻¹ v` by Woodbury: two f64 passes over the rows and a Cholesky solve.
    fn hww_inv(&self, x: &Rows<'_>, rows: &[usize], aff: &Affine<'_>, v: &[f64]) -> Vec<f64> {
        let n = rows.len();
        let v_eff: Vec<f64> = v.iter().zip(aff.s).map(|(a, b)| a * b).collect();
        let shift = -dot(aff.mu, &v_eff);
        let mut y: Vec<f64> = rows
            .iter()
            .zip(&self.sqrt_d)
            .map(|(&i, &sd)| sd * (passes::dot(x.row(i), &v_eff) + shift))
            .collect();
        dense::cholesky_solve(&self.l, n, &mut y);
        y.iter_mut().zip(&self.sqrt_d).for_each(|(a, b)| *a *= b);
        let sum_y: f64 = y.iter().sum();
        let xty = passes::xt_y(x, rows, &y);
        v.iter()
            .zip(&xty)
            .zip(aff.mu.iter().zip(aff.s))
            .map(|((&vj, &tj), (&m, &sc))| (vj - sc * (tj - m * sum_y)) / self.lam)
            .collect()
    }
}

/// `(H p, X̃ p_w + p_b)` with f64 passes: the Hessian-vector product of the
/// preconditioned CG (the f32 passes' rounding is of the order of `λ` in the
/// flattest directions of these problems) and the direction's decision values.
pub(crate) fn hess_vec(
    x: &Rows<'_>,
    rows: &[usize],
    aff: &Affine<'_>,
    dd: &[f32],
    lam: f64,
    p: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let d = x.d();
    let nf = rows.len() as f64;
    let v_eff: Vec<f64> = p[..d].iter().zip(aff.s).map(|(a, b)| a * b).collect();
    let shift = p[d] - dot(aff.mu, &v_eff);
    let (xtt, q, sum_t) = passes::hv(x, rows, &v_eff, shift, dd);
    let mut hp: Vec<f64> = (0..d)
        .map(|j| aff.s[j] * (xtt[j] - aff.mu[j] * sum_t) / nf + lam * p[j])
        .collect();
    hp.push(sum_t / nf);
    (hp, q)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// f64 passes over f32 rows: the preconditioner's products cancel to a small
/// remainder divided by `λ`, so they need more precision than the CG passes.
mod passes {
    use super::super::rows::Rows;

    #[inline(always)]
    fn dot_body(a: &[f32], b: &[f64]) -> f64 {
        const LANES: usize = 8;
        let mut acc = [0.0f64; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let tail: f64 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(&x, y)| f64::from(x) * y)
            .sum();
        for (x, y) in ca.zip(cb) {
            for k in 0..LANES {
                acc[k] += f64::from(x[k]) * y[k];
            }
        }
        acc.iter().sum::<f64>() + tail
    }

    #[inline(always)]
    fn xt_y_body(x: &Rows<'_>, rows: &[usize], y: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0f64; x.d()];
        for (&i, &yi) in rows.iter().zip(y) {
            for (o, &v) in out.iter_mut().zip(x.row(i)) {
                *o += yi * f64::from(v);
            }
        }
        out
    }

    #[inline(always)]
    fn hv_body(
        x: &Rows<'_>,
        rows: &[usize],
        v: &[f64],
        shift: f64,
        dd: &[f32],
    ) -> (Vec<f64>, Vec<f64>, f64) {
        let mut out = vec![0.0f64; x.d()];
        let mut q = Vec::with_capacity(rows.len());
        let mut sum_t = 0.0;
        for (&i, &di) in rows.iter().zip(dd) {
            let row = x.row(i);
            let qi = dot_body(row, v) + shift;
            q.push(qi);
            let t = f64::from(di) * qi;
            sum_t += t;
            for (o, &xv) in out.iter_mut().zip(row) {
                *o += t * f64::from(xv);
            }
        }
        (out, q, sum_t)
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use super::Rows;

        #[target_feature(enable = "avx2,fma")]
        pub(super) unsafe fn dot(a: &[f32], b: &[f64]) -> f64 {
            super::dot_body(a, b)
        }

        #[target_feature(enable = "avx2,fma")]
        pub(super) unsafe fn hv(
            x: &Rows<'_>,
            rows: &[usize],
            v: &[f64],
            shift: f64,
            dd: &[f32],
        ) -> (Vec<f64>, Vec<f64>, f64) {
            super::hv_body(x, rows, v, shift, dd)
        }

        #[target_feature(enable = "avx2,fma")]
        pub(super) unsafe fn xt_y(x: &Rows<'_>, rows: &[usize], y: &[f64]) -> Vec<f64> {
            super::xt_y_body(x, rows, y)
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn has_avx2() -> bool {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    /// `a·b` in f64.
    pub(super) fn dot(a: &[f32], b: &[f64]) -> f64 {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports the enabled features (checked above).
            return unsafe { avx2::dot(a, b) };
        }
        dot_body(a, b)
    }

    /// `Xᵀy` over `rows`, in f64.
    pub(super) fn xt_y(x: &Rows<'_>, rows: &[usize], y: &[f64]) -> Vec<f64> {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports the enabled features (checked above).
            return unsafe { avx2::xt_y(x, rows, y) };
        }
        xt_y_body(x, rows, y)
    }

    /// `(Xᵀt, q, Σt)` with `q_i = x_i·v + shift`, `t_i = D_i q_i`, in one f64 pass.
    pub(super) fn hv(
        x: &Rows<'_>,
        rows: &[usize],
        v: &[f64],
        shift: f64,
        dd: &[f32],
    ) -> (Vec<f64>, Vec<f64>, f64) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports the enabled features (checked above).
            return unsafe { avx2::hv(x, rows, v, shift, dd) };
        }
        hv_body(x, rows, v, shift, dd)
    }
}
