//! Binary L2-regularised logistic regression by preconditioned Newton-CG.
//!
//! # Objective
//! For training rows `x_i` with labels `y_i ∈ {0,1}` (label 1 is the model's
//! positive side), the solver minimises
//!
//! `f(w, b) = (1/n) Σ_i [log(1 + exp(z_i)) − y_i z_i] + (λ/2) ‖w‖²`, with
//! `z_i = x̃_i·w + b` and `λ = 1/(C·n)`.
//!
//! scikit-learn's `LogisticRegression(penalty='l2', C)` minimises
//! `C Σ_i logloss_i + ½‖w‖²`; dividing by `C·n` gives the form above, so both
//! have the same minimiser (scikit-learn itself scales its objective this way
//! since 1.2). The intercept `b` is not penalised, as in scikit-learn.
//! `x̃ = (x − μ) ⊙ s` is the centred, optionally standardised row (`μ` the
//! training rows' mean, `s` their inverse standard deviation when
//! standardising, else 1). Centring changes nothing but the intercept's value
//! (it is unpenalised) and conditions the problem far better; `x̃` is never
//! materialised: passes read the raw rows and fold `μ, s` into the weights.
//!
//! # Method
//! Newton's method with an Armijo backtracking line search. The Newton
//! system is solved exactly for moderate widths (`direct_max_dim`); above
//! that by conjugate gradients, preconditioned with the exact inverse Hessian
//! through the Woodbury identity when the training rows fit an `n × n`
//! Cholesky (see `probe/woodbury.rs`), else with the Hessian's diagonal
//! (which absorbs the very different scales of raw LLM feature dimensions). Each CG step costs one pass over the rows that
//! computes `q = X̃p` and `X̃ᵀ(D q)` together (the row stays in cache), and
//! also accumulates `X̃d` for the Newton direction `d`, so the line search
//! costs O(n) rather than a pass. The gradient pass likewise fuses `X̃ᵀr` with
//! the preconditioner's `Σ D x²`. Rows are f32; dot products accumulate in f32
//! over 16 lanes and partial sums over blocks of rows go to f64.
//!
//! # Convergence
//! The fit stops when `‖∇f‖₂ ≤ tol · ‖∇f(0)‖₂` (default `tol = 1e-6`), i.e.
//! the gradient shrank a millionfold from the start; this is far stricter than
//! scikit-learn's default lbfgs stop (`max_iter=100`, which on raw
//! 4096-dimensional features typically ends unconverged). The caps are
//! `max_newton` Newton steps (default 100) and `max_cg` CG steps per Newton
//! step (default 250). The CG forcing term is `min(0.5, sqrt(‖g‖/‖g₀‖))`,
//! which gives superlinear convergence near the optimum. A fit that hits a cap
//! or whose line search cannot decrease `f` reports `converged = false`.
//!
//! Why this file is long: the Newton-CG solver, its line search and its
//! preconditioner are one algorithm whose steps refer to each other; cutting it
//! would scatter the math.

pub use super::rows::Rows;
use super::woodbury::{hess_vec, Affine, Kernel, Woodbury};
use super::ProbeError;
use serde::{Deserialize, Serialize};

/// Solver tolerances and caps (see the module docs for their meaning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SolverConfig {
    /// Relative gradient-norm tolerance.
    pub tol: f64,
    /// Maximum Newton iterations.
    pub max_newton: usize,
    /// Maximum conjugate-gradient iterations per Newton iteration.
    pub max_cg: usize,
    /// Up to this feature width the Newton system is solved exactly (Hessian
    /// by GEMM, Cholesky) instead of by CG; above it, Newton-CG.
    pub direct_max_dim: usize,
    /// Above `direct_max_dim`, when there are at most this many training
    /// rows, CG is preconditioned with the exact inverse Hessian through the
    /// Woodbury identity (an `n × n` Cholesky); otherwise with the Hessian's
    /// diagonal. 0 disables it.
    pub woodbury_max_rows: usize,
}

impl Default for SolverConfig {
    fn default() -> Self {
        SolverConfig {
            tol: 1e-6,
            max_newton: 100,
            max_cg: 250,
            direct_max_dim: 1024,
            woodbury_max_rows: 6000,
        }
    }
}

impl SolverConfig {
    pub(crate) fn validate(&self) -> Result<(), ProbeError> {
        if !(self.tol.is_finite() && self.tol > 0.0) || self.max_newton == 0 || self.max_cg == 0 {
            return Err(ProbeError::Config(format!(
                "probe.solver needs tol > 0, max_newton ≥ 1 and max_cg ≥ 1, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// A fitted probe, expressed on raw (unstandardised) features:
/// `P(y = 1 | x) = σ(x·w + b)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticModel {
    /// Weights on raw features.
    pub w: Vec<f32>,
    /// Intercept on raw features.
    pub b: f64,
    /// Newton iterations taken.
    pub newton_iterations: usize,
    /// Conjugate-gradient iterations taken in total (each one pass over the rows).
    pub cg_iterations: usize,
    /// Whether the gradient tolerance was met.
    pub converged: bool,
    /// Final `‖∇f‖₂ / ‖∇f(0)‖₂`.
    pub relative_gradient: f64,
    /// Final objective value `f(w, b)` (mean-scaled, see module docs).
    pub objective: f64,
}

impl LogisticModel {
    /// Decision values `x·w + b` of the given rows.
    pub fn decision(&self, x: &Rows<'_>, rows: &[usize]) -> Vec<f64> {
        rows.iter()
            .map(|&i| kernels::dot(x.row(i), &self.w) as f64 + self.b)
            .collect()
    }
}

/// Numerically stable `log(1 + exp(z))`.
#[inline]
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

#[inline]
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Fit a probe on `rows` of `x` with labels `y` (0/1, one per entry of `rows`).
pub fn fit(
    x: &Rows<'_>,
    rows: &[usize],
    y: &[u8],
    c: f64,
    standardize: bool,
    cfg: &SolverConfig,
) -> Result<LogisticModel, ProbeError> {
    if rows.len() != y.len() || rows.is_empty() {
        return Err(ProbeError::Input(format!(
            "{} training rows but {} labels",
            rows.len(),
            y.len()
        )));
    }
    if let Some(&bad) = rows.iter().find(|&&i| i >= x.n()) {
        return Err(ProbeError::Input(format!(
            "row index {bad} out of range for {} rows",
            x.n()
        )));
    }
    let d = x.d();
    let n = rows.len();
    let nf = n as f64;
    let lam = 1.0 / (c * nf);
    let yf: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();

    // Centring is exact (the unpenalised intercept absorbs the shift, the
    // penalty on w is unchanged) and removes the huge eigenvalue the mean of
    // raw activations puts into the Hessian; standardising also rescales.
    let (mu, inv_sd) = column_stats(x, rows);
    let s = if standardize { inv_sd } else { vec![1.0; d] };

    // Parameters in standardised coordinates; z = X̃u + b is kept up to date.
    let mut u = vec![0.0f64; d];
    let mut b = 0.0f64;
    let mut z = vec![0.0f64; n];
    let mut r = vec![0.0f32; n];
    let mut dd = vec![0.0f32; n];

    let objective = |z: &[f64], u_norm2: f64| -> f64 {
        let loss: f64 = z
            .iter()
            .zip(&yf)
            .map(|(&zi, &yi)| softplus(zi) - yi * zi)
            .sum();
        loss / nf + 0.5 * lam * u_norm2
    };

    let mut g0_norm = f64::NAN;
    let mut rel = f64::INFINITY;
    let mut converged = false;
    let mut newton = 0;
    let mut cg_total = 0;
    let mut f_cur = objective(&z, 0.0);
    // Wide problems: CG preconditioned by the exact inverse Hessian at the
    // curvature of some earlier step, rebuilt when CG needs too many steps.
    let use_woodbury = d > cfg.direct_max_dim && n <= cfg.woodbury_max_rows;
    let mut kernel: Option<Kernel> = None;
    let mut woodbury: Option<Woodbury> = None;
    let mut last_cg = usize::MAX;
    let refactor_cg = refactor_after_cg(n, d);

    while newton < cfg.max_newton {
        // Residuals and curvature weights at the current point.
        let (mut sum_r, mut sum_d) = (0.0f64, 0.0f64);
        for i in 0..n {
            let p = sigmoid(z[i]);
            let ri = p - yf[i];
            let di = p * (1.0 - p);
            r[i] = ri as f32;
            dd[i] = di as f32;
            sum_r += ri;
            sum_d += di;
        }
        let (xtr, sdx2, sdx) = kernels::grad_pass(x, rows, &r, &dd);
        let mut g = vec![0.0f64; d + 1];
        for j in 0..d {
            g[j] = s[j] * (xtr[j] - mu[j] * sum_r) / nf + lam * u[j];
        }
        g[d] = sum_r / nf;
        let g_norm = norm(&g);
        if newton == 0 {
            g0_norm = g_norm.max(f64::MIN_POSITIVE);
        }
        rel = g_norm / g0_norm;
        if rel <= cfg.tol {
            converged = true;
            break;
        }
        // Jacobi preconditioner: the Hessian's diagonal.
        let mut m_inv = vec![0.0f64; d + 1];
        for j in 0..d {
            let h =
                s[j] * s[j] * (sdx2[j] - 2.0 * mu[j] * sdx[j] + mu[j] * mu[j] * sum_d) / nf + lam;
            m_inv[j] = 1.0 / h.max(lam);
        }
        m_inv[d] = 1.0 / (sum_d / nf).max(1e-12);
        let aff = Affine { mu: &mu, s: &s };
        if use_woodbury && (woodbury.is_none() || last_cg > refactor_cg) {
            let k = kernel.get_or_insert_with(|| Kernel::new(x, rows, &mu, &s));
            woodbury = Woodbury::new(k, x, rows, &aff, &dd, &sdx, sum_d, c, lam);
        }
        let precond = |res: &[f64]| -> Vec<f64> {
            match &woodbury {
                Some(op) => op.apply(x, rows, &aff, res),
                None => res.iter().zip(&m_inv).map(|(a, m)| a * m).collect(),
            }
        };
        let cg_before = cg_total;

        let (step, x_step) = if d <= cfg.direct_max_dim {
            direct_step(x, rows, &mu, &s, &dd, &g, lam)
        } else {
            None
        }
        .unwrap_or_else(|| {
            // Preconditioned CG on H step = −g, tracking X̃·step.
            let forcing = (g_norm / g0_norm).sqrt().min(0.5);
            let mut step = vec![0.0f64; d + 1];
            let mut x_step = vec![0.0f64; n];
            let mut res: Vec<f64> = g.iter().map(|v| -v).collect();
            let mut zres = precond(&res);
            let mut p = zres.clone();
            let mut rz = dot64(&res, &zres);
            let mut v_eff = vec![0.0f32; d];
            for _ in 0..cfg.max_cg {
                cg_total += 1;
                let (hp, q) = if woodbury.is_some() {
                    hess_vec(x, rows, &aff, &dd, lam, &p)
                } else {
                    let mut shift = p[d];
                    for j in 0..d {
                        let ve = s[j] * p[j];
                        v_eff[j] = ve as f32;
                        shift -= mu[j] * ve;
                    }
                    let (xtq, q, sum_t) = kernels::hv_pass(x, rows, &v_eff, shift as f32, &dd);
                    let mut hp = vec![0.0f64; d + 1];
                    for j in 0..d {
                        hp[j] = s[j] * (xtq[j] - mu[j] * sum_t) / nf + lam * p[j];
                    }
                    hp[d] = sum_t / nf;
                    (hp, q.iter().map(|&v| f64::from(v)).collect())
                };
                let php = dot64(&p, &hp);
                if php <= 0.0 {
                    break;
                }
                let alpha = rz / php;
                for j in 0..=d {
                    step[j] += alpha * p[j];
                    res[j] -= alpha * hp[j];
                }
                for i in 0..n {
                    x_step[i] += alpha * q[i];
                }
                if norm(&res) <= forcing * g_norm {
                    break;
                }
                zres = precond(&res);
                let rz_new = dot64(&res, &zres);
                let beta = rz_new / rz;
                rz = rz_new;
                for j in 0..=d {
                    p[j] = zres[j] + beta * p[j];
                }
            }
            (step, x_step)
        });
        cg_total += usize::from(d <= cfg.direct_max_dim);
        last_cg = cg_total - cg_before;

        // Armijo backtracking along the Newton direction, O(n) per trial.
        let slope = dot64(&g, &step);
        let u_norm2 = dot64(&u, &u);
        let u_step = dot64(&u, &step[..d]);
        let step_norm2 = dot64(&step[..d], &step[..d]);
        let mut alpha = 1.0f64;
        let mut accepted = None;
        let mut trial = vec![0.0f64; n];
        for _ in 0..40 {
            for i in 0..n {
                trial[i] = z[i] + alpha * x_step[i];
            }
            let reg = u_norm2 + 2.0 * alpha * u_step + alpha * alpha * step_norm2;
            let f_new = objective(&trial, reg);
            if f_new <= f_cur + 1e-4 * alpha * slope {
                accepted = Some(f_new);
                break;
            }
            alpha *= 0.5;
        }
        newton += 1;
        let Some(f_new) = accepted else {
            // No decrease is possible at f32 resolution: we are at the optimum
            // as far as the data's precision can tell, but say so honestly.
            break;
        };
        for j in 0..d {
            u[j] += alpha * step[j];
        }
        b += alpha * step[d];
        std::mem::swap(&mut z, &mut trial);
        f_cur = f_new;
    }

    // Express the model on raw features.
    let mut w = vec![0.0f32; d];
    let mut b_raw = b;
    for j in 0..d {
        let we = s[j] * u[j];
        w[j] = we as f32;
        b_raw -= mu[j] * we;
    }
    Ok(LogisticModel {
        w,
        b: b_raw,
        newton_iterations: newton,
        cg_iterations: cg_total,
        converged,
        relative_gradient: rel,
        objective: f_cur,
    })
}

/// CG steps of one Newton step above which the Woodbury preconditioner is
/// rebuilt at the current curvature before the next step: the preconditioner
/// stays exact for a while as the curvature weights settle, and reusing it
/// saves a Cholesky per Newton step.
fn refactor_after_cg(n: usize, d: usize) -> usize {
    // A refresh costs one n³/3 Cholesky at GEMM speed; a CG step about
    // 3 passes over the n × d rows plus two n² triangular solves at memory
    // speed, measured ~10x slower per flop. Refresh once the last Newton
    // step's CG work exceeded a refresh.
    let (n, d) = (n as f64, d as f64);
    let factor = n * n * n / 3.0;
    let cg_step = 10.0 * (3.0 * n * d + 2.0 * n * n);
    ((factor / cg_step) as usize).max(2)
}

/// The exact Newton step for moderate widths: `H = Ãᵀ Ã / n + λ I_w` with
/// `Ã_i = √D_i · [x̃_i, 1]` formed by one GEMM, solved by Cholesky, plus
/// `X̃·step` for the line search. `None` if `H` is not numerically positive
/// definite (the caller then falls back to CG).
fn direct_step(
    x: &Rows<'_>,
    rows: &[usize],
    mu: &[f64],
    s: &[f64],
    dd: &[f32],
    g: &[f64],
    lam: f64,
) -> Option<(Vec<f64>, Vec<f64>)> {
    let d = x.d();
    let n = rows.len();
    let nf = n as f64;
    let mut a = ndarray::Array2::<f64>::zeros((n, d + 1));
    for (k, &i) in rows.iter().enumerate() {
        let w = f64::from(dd[k]).sqrt();
        let row = x.row(i);
        let mut out = a.row_mut(k);
        for j in 0..d {
            out[j] = w * (f64::from(row[j]) - mu[j]) * s[j];
        }
        out[d] = w;
    }
    let mut h = a.t().dot(&a);
    h.mapv_inplace(|v| v / nf);
    for j in 0..d {
        h[[j, j]] += lam;
    }
    h[[d, d]] += 1e-12;
    let m = d + 1;
    let mut l = h.into_raw_vec_and_offset().0;
    // In-place Cholesky, lower triangle, row-major.
    for j in 0..m {
        let (done, rest) = l.split_at_mut(j * m);
        let row_j = &mut rest[..m];
        for k in 0..j {
            let row_k = &done[k * m..k * m + m];
            let dot: f64 = row_j[..k].iter().zip(&row_k[..k]).map(|(a, b)| a * b).sum();
            row_j[k] = (row_j[k] - dot) / row_k[k];
        }
        let diag = row_j[j] - row_j[..j].iter().map(|v| v * v).sum::<f64>();
        if !(diag > 0.0 && diag.is_finite()) {
            return None;
        }
        row_j[j] = diag.sqrt();
    }
    // Solve L Lᵀ step = −g.
    let mut y = vec![0.0f64; m];
    for i in 0..m {
        let dot: f64 = l[i * m..i * m + i]
            .iter()
            .zip(&y[..i])
            .map(|(a, b)| a * b)
            .sum();
        y[i] = (-g[i] - dot) / l[i * m + i];
    }
    let mut step = vec![0.0f64; m];
    for i in (0..m).rev() {
        let mut acc = y[i];
        for k in i + 1..m {
            acc -= l[k * m + i] * step[k];
        }
        step[i] = acc / l[i * m + i];
    }
    let mut v_eff = vec![0.0f32; d];
    let mut shift = step[d];
    for j in 0..d {
        let ve = s[j] * step[j];
        v_eff[j] = ve as f32;
        shift -= mu[j] * ve;
    }
    let x_step = rows
        .iter()
        .map(|&i| f64::from(kernels::dot(x.row(i), &v_eff)) + shift)
        .collect();
    Some((step, x_step))
}

/// Column means and inverse standard deviations of `rows` (population
/// variance, as scikit-learn's `StandardScaler`; constant columns get scale 1).
fn column_stats(x: &Rows<'_>, rows: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let d = x.d();
    let mut mean = vec![0.0f64; d];
    for &i in rows {
        for (m, &v) in mean.iter_mut().zip(x.row(i)) {
            *m += f64::from(v);
        }
    }
    let nf = rows.len() as f64;
    mean.iter_mut().for_each(|m| *m /= nf);
    let mut var = vec![0.0f64; d];
    for &i in rows {
        for ((s, &v), m) in var.iter_mut().zip(x.row(i)).zip(&mean) {
            let c = f64::from(v) - m;
            *s += c * c;
        }
    }
    let inv_std = var
        .iter()
        .map(|&s| {
            let sd = (s / nf).sqrt();
            // StandardScaler leaves (near-)constant columns unscaled.
            if sd < 10.0 * f64::EPSILON {
                1.0
            } else {
                1.0 / sd
            }
        })
        .collect();
    (mean, inv_std)
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot64(a, a).sqrt()
}

/// The passes over the rows: the only O(n·d) work of a fit.
mod kernels {
    use super::Rows;

    /// Rows per block whose f32 partial sums are flushed to f64.
    const BLOCK: usize = 64;
    const LANES: usize = 16;

    #[inline(always)]
    fn dot_body(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; LANES];
        let ca = a.chunks_exact(LANES);
        let cb = b.chunks_exact(LANES);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for k in 0..LANES {
                acc[k] += x[k] * y[k];
            }
        }
        let mut tail = 0.0f32;
        for (x, y) in ra.iter().zip(rb) {
            tail += x * y;
        }
        acc.iter().sum::<f32>() + tail
    }

    #[inline(always)]
    fn grad_body(
        x: &Rows<'_>,
        rows: &[usize],
        r: &[f32],
        dd: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let d = x.d();
        let (mut g, mut s2, mut s1) = (vec![0.0f64; d], vec![0.0f64; d], vec![0.0f64; d]);
        let (mut bg, mut bs2, mut bs1) = (vec![0.0f32; d], vec![0.0f32; d], vec![0.0f32; d]);
        for (block_rows, (block_r, block_d)) in rows
            .chunks(BLOCK)
            .zip(r.chunks(BLOCK).zip(dd.chunks(BLOCK)))
        {
            for ((&i, &ri), &di) in block_rows.iter().zip(block_r).zip(block_d) {
                let row = x.row(i);
                // Zipped iterators carry no bounds checks, so this vectorises.
                for (((&v, g), s1), s2) in row
                    .iter()
                    .zip(bg.iter_mut())
                    .zip(bs1.iter_mut())
                    .zip(bs2.iter_mut())
                {
                    let dv = di * v;
                    *g += ri * v;
                    *s1 += dv;
                    *s2 += dv * v;
                }
            }
            flush(&mut g, &mut bg);
            flush(&mut s1, &mut bs1);
            flush(&mut s2, &mut bs2);
        }
        (g, s2, s1)
    }

    #[inline(always)]
    fn hv_body(
        x: &Rows<'_>,
        rows: &[usize],
        v: &[f32],
        shift: f32,
        dd: &[f32],
    ) -> (Vec<f64>, Vec<f32>, f64) {
        let d = x.d();
        let mut out = vec![0.0f64; d];
        let mut bo = vec![0.0f32; d];
        let mut q = vec![0.0f32; rows.len()];
        let mut sum_t = 0.0f64;
        for (bi, block_rows) in rows.chunks(BLOCK).enumerate() {
            for (k, &i) in block_rows.iter().enumerate() {
                let idx = bi * BLOCK + k;
                let row = x.row(i);
                let qi = dot_body(row, v) + shift;
                q[idx] = qi;
                let t = dd[idx] * qi;
                sum_t += f64::from(t);
                for (o, &v) in bo.iter_mut().zip(row) {
                    *o += t * v;
                }
            }
            flush(&mut out, &mut bo);
        }
        (out, q, sum_t)
    }

    #[inline(always)]
    fn flush(total: &mut [f64], part: &mut [f32]) {
        for (t, p) in total.iter_mut().zip(part.iter_mut()) {
            *t += f64::from(*p);
            *p = 0.0;
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use super::Rows;

        #[target_feature(enable = "avx2,fma")]
        pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
            super::dot_body(a, b)
        }

        #[target_feature(enable = "avx2,fma")]
        pub(super) unsafe fn grad(
            x: &Rows<'_>,
            rows: &[usize],
            r: &[f32],
            dd: &[f32],
        ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
            super::grad_body(x, rows, r, dd)
        }

        #[target_feature(enable = "avx2,fma")]
        pub(super) unsafe fn hv(
            x: &Rows<'_>,
            rows: &[usize],
            v: &[f32],
            shift: f32,
            dd: &[f32],
        ) -> (Vec<f64>, Vec<f32>, f64) {
            super::hv_body(x, rows, v, shift, dd)
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn has_avx2() -> bool {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    /// `a·b` in f32.
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports the enabled features (checked above).
            return unsafe { avx2::dot(a, b) };
        }
        dot_body(a, b)
    }

    /// `(Xᵀr, Σ_i D_i x_i², Σ_i D_i x_i)` over `rows`, in one pass.
    pub(super) fn grad_pass(
        x: &Rows<'_>,
        rows: &[usize],
        r: &[f32],
        dd: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports the enabled features (checked above).
            return unsafe { avx2::grad(x, rows, r, dd) };
        }
        grad_body(x, rows, r, dd)
    }

    /// `(Xᵀt, q, Σt)` with `q_i = x_i·v + shift` and `t_i = D_i q_i`, in one pass.
    pub(super) fn hv_pass(
        x: &Rows<'_>,
        rows: &[usize],
        v: &[f32],
        shift: f32,
        dd: &[f32],
    ) -> (Vec<f64>, Vec<f32>, f64) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports the enabled features (checked above).
            return unsafe { avx2::hv(x, rows, v, shift, dd) };
        }
        hv_body(x, rows, v, shift, dd)
    }
}
