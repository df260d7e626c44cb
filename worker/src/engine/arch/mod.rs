//! Transformer building blocks shared by the architecture families, and the
//! [`Block`] interface each family's decoder layer implements.
//!
//! Conventions (all families): activations are `[batch, time, d]`, padding is
//! on the right, and attention is causal, so a real token never sees a pad
//! and no per-row mask is needed; positions are `offset..offset + time` for
//! every row. Attention is plain masked softmax attention made of batched
//! matmuls (device-generic: the same code runs on CPU and CUDA).
//!
//! Why this file is long: the blocks every family shares (linear, norms, MLP,
//! attention, RoPE and masks) and the CPU-kernel glue; splitting it by concern
//! is planned work, noted in ARCHITECTURE.md.

pub(crate) mod cpu_attention;
mod cpu_rows;
pub(crate) mod gemma;
pub(crate) mod gemma3;
pub(crate) mod llama;
pub(crate) mod qwen2;

pub(crate) use super::activation::Act;
use super::config::{LayerKind, ModelConfig, Rope, RopeScaling};
use super::cpu_isa;
use super::int8::Int8Weight;
#[cfg(target_arch = "x86_64")]
use super::packed_gemm::{amx::Bf16Panels, matmul_gated_bf16};
use super::packed_gemm::{matmul_gated, PackedMatrix};
use super::quant::Numerics;
use super::EngineError;
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Layout, Module, Storage, Tensor};
use candle_nn::VarBuilder;
pub(crate) use cpu_attention::Segment;

/// A projection `y = x Wᵀ + b`, dense or 8-bit quantised.
pub(crate) struct Linear {
    w: Weight,
    b: Option<Tensor>,
}

enum Weight {
    Dense(Tensor),
    Quant(QMatMul),
    /// LLM.int8 (precision `8`); adds its own bias.
    Int8(Int8Weight),
    /// f32 on a CPU with AVX2/FMA: laid out once for the packed kernel.
    Packed(PackedMatrix),
    /// bf16 on a CPU with AMX tiles (precision `16`, `Numerics::bf16_tiles`).
    #[cfg(target_arch = "x86_64")]
    PackedBf16(Bf16Panels),
}

/// Whether an f32 CPU projection uses the packed kernel (needs AVX2/FMA).
fn use_packed(w: &Tensor) -> bool {
    runs_cpu_kernels(w) && PackedMatrix::supported()
}

/// `Σ a[i]·b[i]` with sixteen independent partial sums, so the compiler can
/// keep them in one AVX-512 register or two AVX2 ones (in the callers'
/// instruction-set variants) instead of one long dependency chain
/// (the CPU attention's scores, the CPU RMSNorm's sum of squares).
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The f32 contents of a contiguous CPU tensor's storage.
pub(super) fn cpu_f32<'a>(storage: &'a Storage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let Storage::Cpu(cpu) = storage else {
        candle_core::bail!("the engine's CPU kernels need CPU tensors")
    };
    let start = layout.start_offset();
    Ok(&cpu.as_slice::<f32>()?[start..start + layout.shape().elem_count()])
}

/// `x` (`[..., k]`) as a contiguous `[m, k]` matrix, plus its dims.
fn as_rows(x: &Tensor) -> candle_core::Result<(Tensor, Vec<usize>)> {
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let m: usize = dims[..dims.len() - 1].iter().product();
    Ok((x.reshape((m, k))?.contiguous()?, dims))
}

/// `y` (`[m, n]`) back to `x`'s leading dims, `[..., n]`.
fn from_rows(y: Tensor, mut dims: Vec<usize>) -> candle_core::Result<Tensor> {
    *dims.last_mut().expect("non-empty dims") = y.dim(1)?;
    y.reshape(dims)
}

/// Pack a CPU f32 `[out, inp]` weight.
pub(crate) fn pack(w: &Tensor) -> candle_core::Result<PackedMatrix> {
    let (n, k) = w.dims2()?;
    let w = w.contiguous()?;
    let (storage, layout) = w.storage_and_layout();
    Ok(PackedMatrix::pack(cpu_f32(&storage, layout)?, n, k))
}

/// Pack a CPU `[out, inp]` weight in bf16 for the AMX tiles (rounded to
/// bf16 if it is not already).
#[cfg(target_arch = "x86_64")]
fn pack_bf16(w: &Tensor) -> candle_core::Result<Bf16Panels> {
    let (n, k) = w.dims2()?;
    let bits: Vec<u16> = w
        .to_dtype(DType::BF16)?
        .flatten_all()?
        .to_vec1::<half::bf16>()?
        .into_iter()
        .map(half::bf16::to_bits)
        .collect();
    Ok(Bf16Panels::pack(&bits, n, k))
}

/// A projection for the AMX tiles (`Numerics::bf16_tiles`).
#[cfg(target_arch = "x86_64")]
fn bf16_tiles_weight(w: &Tensor) -> candle_core::Result<Weight> {
    Ok(Weight::PackedBf16(pack_bf16(w)?))
}

/// Never asked for: `bf16_tiles` needs the AMX instruction set, x86-64 only.
#[cfg(not(target_arch = "x86_64"))]
fn bf16_tiles_weight(_: &Tensor) -> candle_core::Result<Weight> {
    candle_core::bail!("AMX tiles exist only on x86-64")
}

/// `act(x·Gᵀ) ⊙ (x·Uᵀ)` through the packed kernel, for `x` `[..., k]` f32
/// on the CPU; the result has `x`'s leading dimensions.
fn packed_gated(
    x: &Tensor,
    g: &PackedMatrix,
    u: &PackedMatrix,
    act: Act,
) -> candle_core::Result<Tensor> {
    let (x2, dims) = as_rows(x)?;
    let m = x2.dim(0)?;
    let y = {
        let (storage, layout) = x2.storage_and_layout();
        matmul_gated(g, u, act, cpu_f32(&storage, layout)?, m)
    };
    from_rows(
        Tensor::from_vec(y, (m, g.out_features()), x.device())?,
        dims,
    )
}

/// `x·Wᵀ` through the packed kernel; `x` is a contiguous `[m, k]` f32 matrix on the CPU.
pub(crate) fn packed_matmul(x: &Tensor, w: &PackedMatrix) -> candle_core::Result<Tensor> {
    let (m, k) = x.dims2()?;
    if k != w.in_features() {
        candle_core::bail!(
            "[{m}, {k}] input to a projection of {} features",
            w.in_features()
        )
    }
    let y = {
        let (storage, layout) = x.storage_and_layout();
        w.matmul_t(cpu_f32(&storage, layout)?, m)
    };
    Tensor::from_vec(y, (m, w.out_features()), x.device())
}

impl Linear {
    /// Load `{vb}.{name}.weight` (`[out, inp]`) and, if `bias`, `{name}.bias`.
    pub(crate) fn load(
        vb: &VarBuilder,
        name: &str,
        (out, inp): (usize, usize),
        bias: bool,
        num: &Numerics,
    ) -> Result<Self, EngineError> {
        let vb = vb.pp(name);
        let wname = format!("{}.weight", vb.prefix());
        let w = vb
            .get((out, inp), "weight")
            .map_err(EngineError::weight(&wname))?;
        let w = if num.int8 {
            Weight::Int8(Int8Weight::quantize(&w).map_err(EngineError::weight(&wname))?)
        } else if num.quantize_linear {
            Weight::Quant(super::quant::q8_0(&w).map_err(EngineError::weight(&wname))?)
        } else if num.bf16_tiles {
            bf16_tiles_weight(&w).map_err(EngineError::weight(&wname))?
        } else if use_packed(&w) {
            Weight::Packed(pack(&w).map_err(EngineError::weight(&wname))?)
        } else {
            Weight::Dense(w)
        };
        let b = if bias {
            let bname = format!("{}.bias", vb.prefix());
            let b = vb.get(out, "bias").map_err(EngineError::weight(bname))?;
            // Biases stay in the activation dtype even when weights are quantised.
            Some(
                b.to_dtype(num.act_dtype)
                    .map_err(EngineError::weight(name))?,
            )
        } else {
            None
        };
        Ok(Linear { w, b })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (x2, dims) = as_rows(x)?;
        if let Weight::Int8(q) = &self.w {
            return from_rows(q.forward(&x2, self.b.as_ref())?, dims);
        }
        let y = match &self.w {
            Weight::Int8(_) => unreachable!("handled above"),
            Weight::Dense(w) => x2.matmul(&w.t()?)?,
            Weight::Quant(q) => q.forward(&x2)?,
            Weight::Packed(p) if x2.dtype() == DType::F32 => packed_matmul(&x2, p)?,
            Weight::Packed(_) => candle_core::bail!("f32 weights met {:?} activations", x2.dtype()),
            #[cfg(target_arch = "x86_64")]
            Weight::PackedBf16(p) => {
                let (m, k) = x2.dims2()?;
                if k != p.k() {
                    candle_core::bail!("[{m}, {k}] input to a projection of {} features", p.k())
                }
                let y = {
                    let (storage, layout) = x2.storage_and_layout();
                    p.matmul_t(cpu_f32(&storage, layout)?, m)
                };
                Tensor::from_vec(y, (m, p.n()), x2.device())?
            }
        };
        let y = match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        from_rows(y, dims)
    }
}

/// RMSNorm: `x / sqrt(mean(x²) + eps) * alpha`, where `alpha` is `w` (LLaMA,
/// Qwen2) or `1 + w` (Gemma's parameterisation, folded in once at load).
pub(crate) struct RmsNorm {
    alpha: Tensor,
    alpha_f32: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn load(
        vb: &VarBuilder,
        name: &str,
        dim: usize,
        eps: f64,
        plus_one: bool,
        dtype: DType,
    ) -> Result<Self, EngineError> {
        let full = format!("{}.weight", vb.pp(name).prefix());
        let w = vb
            .pp(name)
            .get_with_hints_dtype(dim, "weight", Default::default(), DType::F32)
            .map_err(EngineError::weight(&full))?;
        let alpha = if plus_one {
            (w + 1.0).map_err(EngineError::weight(&full))?
        } else {
            w
        };
        let alpha_f32 = alpha.clone();
        let alpha = alpha.to_dtype(dtype).map_err(EngineError::weight(&full))?;
        Ok(RmsNorm {
            alpha,
            alpha_f32,
            eps: eps as f32,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if runs_cpu_kernels(x) {
            return Ok(cpu_rows::add_rms_norm(x, None, &self.alpha_f32, self.eps)?.1);
        }
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.alpha, self.eps)
    }

    /// `a = x + y` and this norm of `a`: `(a, norm(a))` (one pass on the CPU in f32).
    pub(crate) fn add_forward(
        &self,
        x: &Tensor,
        y: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        if runs_cpu_kernels(x) {
            return cpu_rows::add_rms_norm(x, Some(y), &self.alpha_f32, self.eps);
        }
        let a = (x + y)?;
        let n = self.forward(&a)?;
        Ok((a, n))
    }

    /// The same norm with f32 weights, for f32 states whatever the model dtype.
    pub(crate) fn forward_f32(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.alpha_f32, self.eps)
    }
}

/// Gated MLP: `down(act(gate(x)) * up(x))`.
pub(crate) struct GatedMlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    act: Act,
}

impl GatedMlp {
    pub(crate) fn load(
        vb: &VarBuilder,
        cfg: &ModelConfig,
        act: Act,
        num: &Numerics,
    ) -> Result<Self, EngineError> {
        let (d, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(GatedMlp {
            gate: Linear::load(vb, "gate_proj", (i, d), b, num)?,
            up: Linear::load(vb, "up_proj", (i, d), b, num)?,
            down: Linear::load(vb, "down_proj", (d, i), b, num)?,
            act,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let (Weight::Packed(g), Weight::Packed(u), None, None, DType::F32) = (
            &self.gate.w,
            &self.up.w,
            &self.gate.b,
            &self.up.b,
            x.dtype(),
        ) {
            return self.down.forward(&packed_gated(x, g, u, self.act)?);
        }
        #[cfg(target_arch = "x86_64")]
        if let (Weight::PackedBf16(g), Weight::PackedBf16(u), None, None) =
            (&self.gate.w, &self.up.w, &self.gate.b, &self.up.b)
        {
            let (x2, dims) = as_rows(x)?;
            let m = x2.dim(0)?;
            let y = {
                let (storage, layout) = x2.storage_and_layout();
                matmul_gated_bf16(g, u, self.act, cpu_f32(&storage, layout)?, m)
            };
            let y = from_rows(Tensor::from_vec(y, (m, g.n()), x.device())?, dims)?;
            return self.down.forward(&y);
        }
        let g = self.gate.forward(x)?;
        let g = match self.act {
            Act::Silu => candle_nn::ops::silu(&g)?,
            // candle's `gelu` is the tanh approximation (HF `gelu_pytorch_tanh`).
            Act::GeluTanh => g.gelu()?,
        };
        self.down.forward(&(g * self.up.forward(x)?)?)
    }
}

/// Per-forward inputs of one attention layer: rotary tables for its
/// positions, its additive mask, where each text's rows are, and an
/// optional cached prefix.
pub(crate) struct AttnCtx<'a> {
    /// `[time, head_dim / 2]`, activation dtype; row `i` is position `prefix + i`.
    pub cos: &'a Tensor,
    /// `[time, head_dim / 2]`, activation dtype.
    pub sin: &'a Tensor,
    /// `[time, prefix + time]`, 0 or -inf, in f32.
    pub mask: &'a Tensor,
    /// Each text's rows in the flattened `[b · t]` rows: `b` segments of `t`
    /// rows for a padded batch, or several texts packed end to end in one
    /// row of `[1, T]` (only the CPU attention kernel serves those).
    pub segments: &'a [Segment],
    /// The sliding window of this layer, if it has one.
    pub window: Option<usize>,
    /// Only each text's last token leaves this layer (the rest is needed
    /// only as keys and values): the block's outputs are `[texts, 1, d]`.
    pub last_only: bool,
    /// Keys and values of a shared prefix (`[1, kv_heads, prefix, head_dim]`).
    pub prefix: Option<&'a (Tensor, Tensor)>,
    /// Whether to return this pass's keys and values (to serve as a prefix).
    pub keep_kv: bool,
}

impl AttnCtx<'_> {
    /// The rows of `x` (`[b, t, d]`) that leave this layer: all of them, or
    /// with [`AttnCtx::last_only`] each text's last row, `[texts, 1, d]`.
    pub(crate) fn rows_out(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if !self.last_only {
            return Ok(x.clone());
        }
        let (b, t, d) = x.dims3()?;
        let idx: Vec<u32> = self
            .segments
            .iter()
            .map(|s| (s.start + s.len - 1) as u32)
            .collect();
        let n = idx.len();
        let idx = Tensor::from_vec(idx, n, x.device())?;
        x.reshape((b * t, d))?
            .index_select(&idx, 0)?
            .reshape((n, 1, d))
    }
}

/// Multi-head self-attention with GQA, RoPE, optional biases and q/k norms.
pub(crate) struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f64,
    softcap: Option<f64>,
}

impl Attention {
    pub(crate) fn load(
        vb: &VarBuilder,
        cfg: &ModelConfig,
        qk_norm_plus_one: Option<bool>,
        num: &Numerics,
    ) -> Result<Self, EngineError> {
        let (d, h, kvh, hd) = (
            cfg.hidden_size,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
        );
        let (qk_norm, dt) = (qk_norm_plus_one, num.act_dtype);
        let norm =
            |name: &str, plus_one: bool| RmsNorm::load(vb, name, hd, cfg.rms_eps, plus_one, dt);
        Ok(Attention {
            q: Linear::load(vb, "q_proj", (h * hd, d), cfg.qkv_bias, num)?,
            k: Linear::load(vb, "k_proj", (kvh * hd, d), cfg.qkv_bias, num)?,
            v: Linear::load(vb, "v_proj", (kvh * hd, d), cfg.qkv_bias, num)?,
            o: Linear::load(vb, "o_proj", (d, h * hd), cfg.o_bias, num)?,
            q_norm: qk_norm.map(|p| norm("q_norm", p)).transpose()?,
            k_norm: qk_norm.map(|p| norm("k_norm", p)).transpose()?,
            heads: h,
            kv_heads: kvh,
            head_dim: hd,
            scale: cfg.attn_scale,
            softcap: cfg.attn_logit_softcapping,
        })
    }

    /// `x`: `[b, t, d]` → `([b, t, d], kept keys/values)`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        ctx: &AttnCtx<'_>,
    ) -> candle_core::Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let (b, t, _) = x.dims3()?;
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        let cpu = runs_cpu_kernels(x);
        // The CPU kernel asks queries of the rows that leave the layer only;
        // the generic path computes all and keeps those rows at the end.
        let xq = if cpu { ctx.rows_out(x)? } else { x.clone() };
        let (bq, tq, _) = xq.dims3()?;
        let mut q = self.q.forward(&xq)?.reshape((bq, tq, h, hd))?;
        let mut k = self.k.forward(x)?.reshape((b, t, kvh, hd))?;
        let v = self.v.forward(x)?.reshape((b, t, kvh, hd))?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        if cpu {
            return self.cpu_forward(&q, &k, &v, ctx);
        }
        if ctx.segments.len() != b {
            candle_core::bail!("texts packed into one row need the CPU attention kernel")
        }
        let q = q.transpose(1, 2)?.contiguous()?;
        let k = k.transpose(1, 2)?.contiguous()?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let q = candle_nn::rotary_emb::rope(&q, ctx.cos, ctx.sin)?;
        let k = candle_nn::rotary_emb::rope(&k, ctx.cos, ctx.sin)?;
        let kept = if ctx.keep_kv {
            Some((k.clone(), v.clone()))
        } else {
            None
        };
        let (k, v) = match ctx.prefix {
            // `cat` of a broadcast view may come back with permuted strides;
            // the batched matmuls below need a standard layout.
            Some((pk, pv)) => (
                Tensor::cat(&[&pk.broadcast_as((b, kvh, pk.dim(2)?, hd))?, &k], 2)?.contiguous()?,
                Tensor::cat(&[&pv.broadcast_as((b, kvh, pv.dim(2)?, hd))?, &v], 2)?.contiguous()?,
            ),
            None => (k, v),
        };
        let s = k.dim(2)?;
        // GQA without copying keys: the `g = h / kvh` query heads sharing a key
        // head are stacked along time, `[b, kvh, g·t, hd]` (HF's repeat_kv order).
        let g = h / kvh;
        let q = (q * self.scale)?.reshape((b, kvh, g * t, hd))?;
        // On CUDA, 16-bit scores go into softmax as they are: candle's kernel
        // sums the exponentials in f32 (as HF's eager path does after rounding
        // scores to the dtype), and skipping the f32 copies of `[b, h, t, s]`
        // took a LLaMA-2-7B layer at 32×256 tokens from 10.8 to 9.9 ms on an
        // H100 (docs/bench-gpu.md). The CPU kernel computes in the input dtype,
        // so the CPU keeps the upcast; soft-capped scores always upcast.
        let in_dtype = q.device().is_cuda() && self.softcap.is_none();
        let scores = q.matmul(&k.t()?)?;
        let scores = if in_dtype {
            scores
        } else {
            scores.to_dtype(DType::F32)?
        };
        let scores = match self.softcap {
            Some(c) => ((scores / c)?.tanh()? * c)?,
            None => scores,
        };
        let mask = ctx.mask.to_dtype(scores.dtype())?;
        let scores = scores.reshape((b, h, t, s))?.broadcast_add(&mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let out = probs
            .reshape((b, kvh, g * t, s))?
            .matmul(&v.contiguous()?)?;
        let out = out
            .reshape((b, h, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, h * hd))?;
        Ok((self.o.forward(&ctx.rows_out(&out)?)?, kept))
    }
    /// The attention part on the CPU kernel, for f32 `k`, `v` (`[b, t,
    /// kv_heads, hd]`) and `q` (`[b, t, heads, hd]`, or `[texts, 1, heads,
    /// hd]` with [`AttnCtx::last_only`]), all unrotated.
    fn cpu_forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        ctx: &AttnCtx<'_>,
    ) -> candle_core::Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let (b, t, h, hd) = q.dims4()?;
        let queries = if ctx.last_only {
            cpu_attention::Queries::LastOfEach
        } else {
            cpu_attention::Queries::All
        };
        // Kept keys and values are a prefix for later passes: `[b, kv_heads, t, hd]`, keys rotated.
        let kept = if ctx.keep_kv {
            let kt = k.transpose(1, 2)?.contiguous()?;
            Some((
                candle_nn::rotary_emb::rope(&kt, ctx.cos, ctx.sin)?,
                v.transpose(1, 2)?.contiguous()?,
            ))
        } else {
            None
        };
        let spec = cpu_attention::HeadSpec {
            heads: h,
            kv_heads: self.kv_heads,
            head_dim: hd,
            scale: self.scale as f32,
            softcap: self.softcap.map(|c| c as f32),
            window: ctx.window,
        };
        let c = |x: &Tensor| x.contiguous();
        let (q, k, v, cos, sin) = (c(q)?, c(k)?, c(v)?, c(ctx.cos)?, c(ctx.sin)?);
        let prefix = match ctx.prefix {
            Some((pk, pv)) => Some((c(pk)?, c(pv)?)),
            None => None,
        };
        let out = {
            let (qs, ql) = q.storage_and_layout();
            let (ks, kl) = k.storage_and_layout();
            let (vs, vl) = v.storage_and_layout();
            let (cs, cl) = cos.storage_and_layout();
            let (ss, sl) = sin.storage_and_layout();
            let pre = prefix
                .as_ref()
                .map(|(pk, pv)| (pk.storage_and_layout(), pv.storage_and_layout()));
            let prefix = match &pre {
                Some(((pks, pkl), (pvs, pvl))) => Some(cpu_attention::Prefix {
                    keys: cpu_f32(pks, pkl)?,
                    values: cpu_f32(pvs, pvl)?,
                    // `[1, kv_heads, len, hd]`
                    len: pkl.dims()[2],
                }),
                None => None,
            };
            let rope = cpu_attention::RopeTables {
                cos: cpu_f32(&cs, cl)?,
                sin: cpu_f32(&ss, sl)?,
            };
            cpu_attention::attention(
                cpu_f32(&qs, ql)?,
                cpu_f32(&ks, kl)?,
                cpu_f32(&vs, vl)?,
                ctx.segments,
                queries,
                rope,
                prefix,
                spec,
            )
        };
        let out = Tensor::from_vec(out, (b, t, h * hd), q.device())?;
        Ok((self.o.forward(&out)?, kept))
    }
}

/// Whether attention on `x` runs the CPU kernel: f32 on the CPU, with the
/// engine's CPU kernels enabled.
pub(crate) fn runs_cpu_kernels(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && cpu_isa::kernels_enabled()
}

/// `x + y` (the residual stream's adds; on the CPU pool in f32).
pub(crate) fn residual_add(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    if runs_cpu_kernels(x) {
        return cpu_rows::add(x, y);
    }
    x + y
}

/// What one decoder block produces.
pub(crate) struct BlockOut {
    /// The block's output residual stream `[b, t, d]` (`[texts, 1, d]` with
    /// [`AttnCtx::last_only`]).
    pub out: Tensor,
    /// The `post_attention_norm` capture site (the MLP's normed input), shaped as `out`.
    pub post_attn_norm: Tensor,
    /// Keys and values, when asked for.
    pub kv: Option<(Tensor, Tensor)>,
}

/// One decoder layer of some architecture family.
pub(crate) trait Block: Send + Sync {
    fn forward(&self, x: &Tensor, ctx: &AttnCtx<'_>) -> candle_core::Result<BlockOut>;
}

/// Build block `i` of the configured family from `vb` (already at `model.layers.{i}`).
pub(crate) fn load_block(
    vb: &VarBuilder,
    cfg: &ModelConfig,
    num: &Numerics,
) -> Result<Box<dyn Block>, EngineError> {
    use super::config::Arch;
    Ok(match cfg.arch {
        Arch::Llama => Box::new(llama::DecoderLayer::load(
            vb,
            cfg,
            llama::Flavor::LLAMA,
            num,
        )?),
        Arch::Qwen2 => Box::new(qwen2::load_layer(vb, cfg, num)?),
        Arch::Gemma => Box::new(gemma::load_layer(vb, cfg, num)?),
        Arch::Gemma3 => Box::new(gemma3::DecoderLayer::load(vb, cfg, num)?),
    })
}

/// Whether the family's RMSNorms use the `1 + w` parameterisation.
pub(crate) fn norm_plus_one(cfg: &ModelConfig) -> bool {
    use super::config::Arch;
    matches!(cfg.arch, Arch::Gemma | Arch::Gemma3)
}

/// The factor the token embeddings are multiplied by (Gemma: `sqrt(d)`,
/// rounded to the activation dtype as transformers does).
pub(crate) fn embed_scale(cfg: &ModelConfig, dtype: DType) -> Option<f64> {
    use super::config::Arch;
    match cfg.arch {
        Arch::Gemma | Arch::Gemma3 => {
            let s = (cfg.hidden_size as f64).sqrt();
            Some(match dtype {
                DType::BF16 => half::bf16::from_f64(s).to_f64(),
                DType::F16 => half::f16::from_f64(s).to_f64(),
                DType::F32 => s as f32 as f64,
                _ => s,
            })
        }
        _ => None,
    }
}

/// Inverse rotary frequencies, computed in f32 as transformers does.
fn inv_freq(rope: &Rope, head_dim: usize) -> Vec<f32> {
    let base = rope.theta as f32;
    let raw: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    match &rope.scaling {
        RopeScaling::None => raw,
        RopeScaling::Linear { factor } => raw.iter().map(|f| f / *factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        } => {
            let (factor, lo, hi, old) = (
                *factor,
                *low_freq_factor,
                *high_freq_factor,
                *original_max_position as f64,
            );
            let (low_wavelen, high_wavelen) = (old / lo, old / hi);
            raw.iter()
                .map(|&f| {
                    let f = f as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f as f32
                    } else if wavelen > low_wavelen {
                        (f / factor) as f32
                    } else {
                        let smooth = (old / wavelen - lo) / (hi - lo);
                        ((1.0 - smooth) * f / factor + smooth * f) as f32
                    }
                })
                .collect()
        }
    }
}

/// `cos`/`sin` tables `[time, head_dim/2]` for positions `offset..offset + time`.
pub(crate) fn rope_tables(
    rope: &Rope,
    head_dim: usize,
    offset: usize,
    time: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv = inv_freq(rope, head_dim);
    let half = inv.len();
    let mut cos = Vec::with_capacity(time * half);
    let mut sin = Vec::with_capacity(time * half);
    for p in offset..offset + time {
        for &f in &inv {
            // The angle is rounded to f32 like transformers' f32 outer product.
            let a = (p as f32 * f) as f64;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    let cos = Tensor::from_vec(cos, (time, half), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (time, half), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// Additive causal mask `[time, prefix + time]` (f32): query `i` sits at
/// position `prefix + i`; key `j` is visible when `j ≤ prefix + i` and, for
/// sliding layers, `prefix + i − j < window`.
pub(crate) fn causal_mask(
    kind: LayerKind,
    window: Option<usize>,
    prefix: usize,
    time: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let s = prefix + time;
    let mut m = vec![0f32; time * s];
    for i in 0..time {
        let qp = prefix + i;
        for j in 0..s {
            let hidden = j > qp
                || match (kind, window) {
                    (LayerKind::Sliding, Some(w)) => qp - j.min(qp) >= w,
                    _ => false,
                };
            if hidden {
                m[i * s + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(m, (time, s), device)
}
