//! Multi-head self-attention (GQA, RoPE, optional biases, q/k norms, soft
//! cap, sliding window) and the per-forward context each layer receives.
//!
//! Two paths compute the same thing. The device-generic one is written as
//! the papers write attention (rotate, `softmax(q kᵀ · scale + mask) v`, in
//! batched matmuls) and runs on CUDA and for 16-bit or 8-bit work on the
//! CPU; f32 on the CPU takes the engine's kernel (`cpu::attention`), which
//! reads the projections' row layout directly and keeps texts packed end to
//! end apart. The parity tests run both against transformers.

use super::{Linear, NormScale, RmsNorm};
use crate::engine::config::ModelConfig;
use crate::engine::cpu::{self, attention::HeadSpec, attention::Queries, Segment};
use crate::engine::quant::Numerics;
use crate::engine::EngineError;
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

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
    /// Load `q_proj`, `k_proj`, `v_proj`, `o_proj` under `vb`, and `q_norm`,
    /// `k_norm` (per head, before RoPE) when `qk_norm` says how they scale.
    pub(crate) fn load(
        vb: &VarBuilder,
        cfg: &ModelConfig,
        qk_norm: Option<NormScale>,
        num: &Numerics,
    ) -> Result<Self, EngineError> {
        let (d, h, kvh, hd) = (
            cfg.hidden_size,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
        );
        let dt = num.act_dtype;
        let norm =
            |name: &str, scale: NormScale| RmsNorm::load(vb, name, hd, cfg.rms_eps, scale, dt);
        Ok(Attention {
            q: Linear::load(vb, "q_proj", (h * hd, d), cfg.qkv_bias, num)?,
            k: Linear::load(vb, "k_proj", (kvh * hd, d), cfg.qkv_bias, num)?,
            v: Linear::load(vb, "v_proj", (kvh * hd, d), cfg.qkv_bias, num)?,
            o: Linear::load(vb, "o_proj", (d, h * hd), cfg.o_bias, num)?,
            q_norm: qk_norm.map(|s| norm("q_norm", s)).transpose()?,
            k_norm: qk_norm.map(|s| norm("k_norm", s)).transpose()?,
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
        let on_cpu_kernels = cpu::runs_kernels(x);
        // The CPU kernel asks queries of the rows that leave the layer only;
        // the generic path computes all and keeps those rows at the end.
        let xq = if on_cpu_kernels {
            ctx.rows_out(x)?
        } else {
            x.clone()
        };
        let (bq, tq, _) = xq.dims3()?;
        let mut q = self.q.forward(&xq)?.reshape((bq, tq, h, hd))?;
        let mut k = self.k.forward(x)?.reshape((b, t, kvh, hd))?;
        let v = self.v.forward(x)?.reshape((b, t, kvh, hd))?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        if on_cpu_kernels {
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
        let inputs = cpu::AttentionInputs {
            cos: ctx.cos,
            sin: ctx.sin,
            segments: ctx.segments,
            queries: if ctx.last_only {
                Queries::LastOfEach
            } else {
                Queries::All
            },
            prefix: ctx.prefix,
            spec: HeadSpec {
                heads: self.heads,
                kv_heads: self.kv_heads,
                head_dim: self.head_dim,
                scale: self.scale as f32,
                softcap: self.softcap.map(|c| c as f32),
                window: ctx.window,
            },
        };
        let out = cpu::attention_tensors(q, k, v, inputs)?;
        Ok((self.o.forward(&out)?, kept))
    }
}
