//! The extraction engine: a model's forward pass with named capture sites,
//! pooling and length-bucketed batching, on one or several devices.
//!
//! - [`ModelConfig`] normalises an HF `config.json`; [`Model::new`] builds the
//!   network from a `VarBuilder` (the loaders in this module produce both).
//! - [`Model::extract`] turns texts into `[N, L, d]` pooled features
//!   ([`extract`] has the batching and pooling rules).
//! - [`Model::score_mc`] (in [`logit_lens`]) scores multiple-choice continuations
//!   with the logit lens.
//! - [`family`] holds one module per architecture family, built from the
//!   generic [`layers`]; [`cpu`] is the CPU fast path those layers call;
//!   [`quant`] the precision scheme. `docs/engine.md` documents capture sites, padding,
//!   precision and each family's quirks.
//!
//! Why this file is long: the `Model` type and its forward/capture loop: the
//! capture sites, the device map and the per-layer pooling are one pass over
//! the blocks.

pub(crate) mod activation;
pub mod agreement;
mod config;
pub mod cpu;
mod error;
pub mod extract;
pub(crate) mod family;
mod gguf;
mod hf_config;
pub mod hub;
pub(crate) mod int8;
pub(crate) mod layers;
pub mod load;
pub mod logit_lens;
pub mod output;
pub(crate) mod quant;
pub mod random_model;
pub(crate) mod tokenizer_gguf;

pub use candle_core::Device;
pub use cd_common::spec::{Pooling, Precision, Site};
pub use config::{Arch, LayerKind, ModelConfig, Rope, RopeScaling};
pub use cpu::packed_gemm::PackedMatrix;
pub use error::EngineError;
pub use extract::{ExtractOptions, ExtractProgress, ExtractedFeatures};

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use cpu::{isa as cpu_isa, Segment};
use layers::positions;
use layers::{AttnCtx, Block, RmsNorm};
use quant::Numerics;

/// The dtype activations run in at `precision` (f32 for 32 and Q8_0, bf16
/// or f16 for the 16-bit schemes, f16 for LLM.int8's unquantised parts).
pub fn activation_dtype(precision: Precision) -> DType {
    Numerics::of(precision).act_dtype
}

/// Which device each part of the model lives on. Layers are placed in
/// contiguous ranges; hidden states cross a device boundary once per batch.
#[derive(Debug, Clone)]
pub struct DeviceMap {
    /// Token embeddings.
    pub embed: Device,
    /// One entry per block, in order.
    pub layers: Vec<Device>,
    /// Final norm and LM head.
    pub head: Device,
}

impl DeviceMap {
    /// Everything on one device.
    pub fn single(dev: Device, n_layers: usize) -> Self {
        DeviceMap {
            embed: dev.clone(),
            layers: vec![dev.clone(); n_layers],
            head: dev,
        }
    }
}

/// A loaded model ready to run: weights on their devices plus the tokenizer.
pub struct Model {
    cfg: ModelConfig,
    tokenizer: tokenizers::Tokenizer,
    precision: Precision,
    num: Numerics,
    devices: DeviceMap,
    embed: Tensor,
    embed_scale: Option<f64>,
    blocks: Vec<Box<dyn Block>>,
    final_norm: RmsNorm,
    lm_head: Tensor,
    lm_head_f32: std::sync::OnceLock<Tensor>,
    /// The LM head packed for the CPU kernel (f32, and rounded to bf16), for
    /// the logit lens; made on first use.
    lm_head_packed: [std::sync::OnceLock<PackedMatrix>; 2],
}

/// One hidden state handed to a capture callback during a forward pass.
pub(crate) enum Capture<'a> {
    /// Residual stream entry `index` (0 = embeddings; `L` = final-norm output).
    Residual { index: usize, h: &'a Tensor },
    /// The `post_attention_norm` site of block `layer`.
    PostAttentionNorm { layer: usize, h: &'a Tensor },
}

/// Rotary tables and masks for one (device, layer kind) pair, built once per pass.
struct LayerInputs {
    device: Device,
    kind: LayerKind,
    rope_local: bool,
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
    window: Option<usize>,
}

impl Model {
    /// Build the network from HF-named weights (`model.embed_tokens.weight`,
    /// `model.layers.{i}.…`, `model.norm.weight`, `lm_head.weight`). Weights
    /// are converted to the precision's dtype on their device.
    pub fn new(
        cfg: ModelConfig,
        vb: VarBuilder,
        tokenizer: tokenizers::Tokenizer,
        precision: Precision,
        devices: DeviceMap,
    ) -> Result<Self, EngineError> {
        if devices.layers.len() != cfg.num_layers {
            return Err(EngineError::DeviceMap(format!(
                "{} layer devices given for a model with {} layers",
                devices.layers.len(),
                cfg.num_layers
            )));
        }
        // candle's CUDA Q8_0 matmul gave wrong results (cosine 0.95, NaN at
        // hidden 576) when measured on an H100: refuse rather than publish them.
        let every_device = || {
            std::iter::once(&devices.embed)
                .chain(devices.layers.iter())
                .chain(std::iter::once(&devices.head))
        };
        let on_cuda = every_device().any(|d| d.is_cuda());
        // Only pairs checked against a reference run (cd_common::verified).
        let kind = if on_cuda {
            cd_common::verified::DeviceKind::Cuda
        } else {
            cd_common::verified::DeviceKind::Cpu
        };
        cd_common::verified::check(precision, kind).map_err(EngineError::DeviceMap)?;
        let all_cpu = every_device().all(Device::is_cpu);
        let num = Numerics::of(precision).on_cpu_bf16_kernels(precision, all_cpu);
        let vb = vb.set_dtype(num.weight_dtype());
        // Read in the weights' dtype, then held in the activations' (the bf16
        // kernels' embeddings: bf16 values in f32).
        let as_act = |t: Tensor| t.to_dtype(num.act_dtype);
        let root = ["model", "model.language_model", "language_model.model"]
            .into_iter()
            .find(|p| vb.contains_tensor(&format!("{p}.embed_tokens.weight")))
            .ok_or_else(|| EngineError::Weight {
                tensor: "model.embed_tokens.weight".into(),
                source: Box::new(candle_core::Error::Msg("not found in the weights".into())),
            })?;
        let body = vb.pp(root);
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        let embed_name = format!("{root}.embed_tokens.weight");
        let embed = body
            .clone()
            .set_device(devices.embed.clone())
            .pp("embed_tokens")
            .get_with_hints_dtype((v, d), "weight", Default::default(), num.weight_dtype())
            .and_then(as_act)
            .map_err(EngineError::weight(&embed_name))?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for (i, dev) in devices.layers.iter().enumerate() {
            let lvb = body
                .clone()
                .set_device(dev.clone())
                .pp(format!("layers.{i}"));
            blocks.push(cfg.arch.family().load_block(&lvb, &cfg, &num)?);
        }
        let head_vb = body.clone().set_device(devices.head.clone());
        let final_norm = RmsNorm::load(
            &head_vb,
            "norm",
            d,
            cfg.rms_eps,
            cfg.arch.family().norm_scale(),
            num.act_dtype,
        )?;
        let lm_head = if cfg.tie_word_embeddings || !vb.contains_tensor("lm_head.weight") {
            if !cfg.tie_word_embeddings {
                tracing::warn!(
                    "no lm_head.weight although embeddings are not tied: using the embeddings"
                );
            }
            embed
                .to_device(&devices.head)
                .map_err(EngineError::weight(&embed_name))?
        } else {
            vb.clone()
                .set_device(devices.head.clone())
                .get_with_hints_dtype(
                    (v, d),
                    "lm_head.weight",
                    Default::default(),
                    num.weight_dtype(),
                )
                .and_then(as_act)
                .map_err(EngineError::weight("lm_head.weight"))?
        };
        let mut tokenizer = tokenizer;
        // Batching and truncation are ours; a tokenizer.json's own settings would fight them.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| EngineError::Tokenizer(format!("cannot disable truncation: {e}")))?;
        Ok(Model {
            embed_scale: cfg
                .arch
                .family()
                .embedding_scale(cfg.hidden_size, num.act_dtype),
            cfg,
            tokenizer,
            precision,
            num,
            devices,
            embed,
            blocks,
            final_norm,
            lm_head,
            lm_head_f32: std::sync::OnceLock::new(),
            lm_head_packed: Default::default(),
        })
    }

    /// The normalised configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The tokenizer (padding and truncation disabled).
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// The precision the model runs in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The device placement.
    pub fn devices(&self) -> &DeviceMap {
        &self.devices
    }

    /// How many vectors per text a site yields: `L + 1` for `residual`, `L`
    /// for `post_attention_norm`.
    pub(crate) fn num_capture_layers(&self, site: Site) -> usize {
        match site {
            Site::Residual => self.cfg.num_layers + 1,
            Site::PostAttentionNorm => self.cfg.num_layers,
        }
    }

    /// The LM head in f32 (converted once, on first use: only the logit lens needs it).
    pub(crate) fn lm_head_f32(&self) -> candle_core::Result<Tensor> {
        if let Some(w) = self.lm_head_f32.get() {
            return Ok(w.clone());
        }
        let w = self.lm_head.to_dtype(DType::F32)?;
        Ok(self.lm_head_f32.get_or_init(|| w).clone())
    }

    /// The log-probability, under the LM head, of `targets[i]` after state
    /// `states[i]` (f32, `[n, d]`): `z[t] − log Σ_v e^z[v]` with
    /// `z = states · Wᵀ` (soft-capped when the model caps its logits). With
    /// `bf16`, the head's weights and every logit are rounded to bf16 and
    /// each log-probability too (the logit lens's bf16 arithmetic). On a CPU
    /// with the engine's kernels the head is packed once and the
    /// log-softmax is fused, one row at a time, without materialising it;
    /// elsewhere candle's matmul, log-softmax and gather.
    pub(crate) fn target_log_probs(
        &self,
        states: &Tensor,
        targets: &[u32],
        bf16: bool,
    ) -> candle_core::Result<Vec<f32>> {
        let round_t = |w: Tensor| -> candle_core::Result<Tensor> {
            if bf16 {
                w.to_dtype(DType::BF16)?.to_dtype(DType::F32)
            } else {
                Ok(w)
            }
        };
        let round = |v: f32| {
            if bf16 {
                half::bf16::from_f32(v).to_f32()
            } else {
                v
            }
        };
        let softcap = self.cfg.final_logit_softcapping.map(|c| c as f32);
        let w = self.lm_head_f32()?;
        // The head (f32, on the head's device with `states`) takes the packed
        // kernel when a projection weight there would.
        if cpu::packs_weight(&w) {
            let slot = &self.lm_head_packed[usize::from(bf16)];
            let packed = match slot.get() {
                Some(p) => p,
                None => {
                    let p = cpu::pack(&round_t(w)?)?;
                    slot.get_or_init(|| p)
                }
            };
            return cpu::lm_head_log_probs(packed, states, targets, softcap, round);
        }
        let logits = round_t(states.matmul(&round_t(w)?.t()?)?)?;
        let logits = match softcap {
            Some(cap) => round_t(((logits / f64::from(cap))?.tanh()? * f64::from(cap))?)?,
            None => logits,
        };
        let logp = round_t(candle_nn::ops::log_softmax(
            &logits,
            candle_core::D::Minus1,
        )?)?;
        let idx = Tensor::from_vec(targets.to_vec(), (targets.len(), 1), states.device())?;
        logp.gather(&idx, 1)?.flatten_all()?.to_vec1::<f32>()
    }

    /// The final norm computed in f32 on f32 states (logit lens).
    pub(crate) fn final_norm_f32(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        self.final_norm.forward_f32(h)
    }

    /// Whether texts may be packed end to end into one row of ids (see
    /// [`Model::forward`]): every layer runs f32 on the CPU with the engine's
    /// CPU kernels, whose attention keeps packed texts apart.
    pub(crate) fn packs_texts(&self) -> bool {
        self.num.act_dtype == DType::F32
            && self.devices.layers.iter().all(Device::is_cpu)
            && cpu_isa::kernels_enabled()
    }

    /// Run the network on token ids `[b, t]` (u32, any device), calling
    /// `capture` with every residual entry and every post-attention-norm
    /// state, each on the device that produced it. `packed: None`: the rows
    /// are right-padded texts. `packed: Some(..)` (only where
    /// [`Model::packs_texts`]): `b = 1` and the row holds texts of the given
    /// lengths end to end, each at positions `0..len`, none seeing another;
    /// with [`Packed::last_only`], the last block computes (and captures)
    /// only each text's last token, `[texts, 1, d]`.
    /// With `prefix`, the ids continue a cached prefix (batch 1, broadcast
    /// over the texts). With `keep_kv`, returns every layer's keys and values
    /// (to be used as a prefix later).
    pub(crate) fn forward(
        &self,
        ids: &Tensor,
        packed: Option<Packed<'_>>,
        prefix: Option<&[(Tensor, Tensor)]>,
        keep_kv: bool,
        capture: &mut dyn FnMut(Capture<'_>) -> candle_core::Result<()>,
    ) -> Result<Vec<(Tensor, Tensor)>, EngineError> {
        let (b, t) = ids.dims2().map_err(EngineError::forward(None))?;
        let segments =
            segments(b, t, packed.map(|p| p.lens)).map_err(EngineError::forward(None))?;
        let last_only = packed.is_some_and(|p| p.last_only);
        // Rotary tables and masks cover the longest text's positions.
        let span = segments.iter().map(|s| s.len).max().unwrap_or(0);
        let offset = match prefix {
            Some(p) => p
                .first()
                .map(|(k, _)| k.dim(2))
                .transpose()
                .map_err(EngineError::forward(None))?,
            None => None,
        }
        .unwrap_or(0);
        let mut h = self
            .embed_tokens(ids, b, t)
            .map_err(EngineError::forward(None))?;
        capture(Capture::Residual { index: 0, h: &h }).map_err(EngineError::forward(None))?;
        let mut inputs: Vec<LayerInputs> = Vec::new();
        let mut kvs = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let dev = &self.devices.layers[i];
            let out = (|| -> candle_core::Result<_> {
                if !h.device().same_device(dev) {
                    h = h.to_device(dev)?;
                }
                let li = self.layer_inputs(&mut inputs, i, dev, offset, span)?;
                let ctx = AttnCtx {
                    cos: &li.cos,
                    sin: &li.sin,
                    mask: &li.mask,
                    segments: &segments,
                    window: li.window,
                    last_only: last_only && i + 1 == self.blocks.len(),
                    prefix: prefix.map(|p| &p[i]),
                    keep_kv,
                };
                block.forward(&h, &ctx)
            })()
            .map_err(EngineError::forward(Some(i)))?;
            capture(Capture::PostAttentionNorm {
                layer: i,
                h: &out.post_attn_norm,
            })
            .map_err(EngineError::forward(Some(i)))?;
            h = out.out;
            if let Some(kv) = out.kv {
                kvs.push(kv);
            }
            if i + 1 < self.blocks.len() {
                capture(Capture::Residual {
                    index: i + 1,
                    h: &h,
                })
                .map_err(EngineError::forward(Some(i)))?;
            }
        }
        // HF convention: the last hidden state is the final norm's output.
        let last = (|| -> candle_core::Result<Tensor> {
            let h = if h.device().same_device(&self.devices.head) {
                h
            } else {
                h.to_device(&self.devices.head)?
            };
            self.final_norm.forward(&h)
        })()
        .map_err(EngineError::forward(None))?;
        capture(Capture::Residual {
            index: self.blocks.len(),
            h: &last,
        })
        .map_err(EngineError::forward(None))?;
        Ok(kvs)
    }

    fn embed_tokens(&self, ids: &Tensor, b: usize, t: usize) -> candle_core::Result<Tensor> {
        let ids = ids.to_device(&self.devices.embed)?.flatten_all()?;
        let h = self
            .embed
            .index_select(&ids, 0)?
            .reshape((b, t, self.cfg.hidden_size))?;
        match self.embed_scale {
            Some(s) => h * s,
            None => Ok(h),
        }
    }

    fn layer_inputs<'a>(
        &self,
        cache: &'a mut Vec<LayerInputs>,
        layer: usize,
        dev: &Device,
        offset: usize,
        t: usize,
    ) -> candle_core::Result<&'a LayerInputs> {
        let kind = self.cfg.layer_kinds[layer];
        let rope_local = kind == LayerKind::Sliding && self.cfg.rope_local.is_some();
        let found = cache.iter().position(|c| {
            c.device.same_device(dev) && c.kind == kind && c.rope_local == rope_local
        });
        let idx = match found {
            Some(i) => i,
            None => {
                let rope = self.cfg.rope_for(layer);
                let (cos, sin) = positions::rope_tables(
                    rope,
                    self.cfg.head_dim,
                    offset,
                    t,
                    self.num.act_dtype,
                    dev,
                )?;
                let mask = positions::causal_mask(kind, self.cfg.sliding_window, offset, t, dev)?;
                let window = match kind {
                    LayerKind::Sliding => self.cfg.sliding_window,
                    _ => None,
                };
                cache.push(LayerInputs {
                    device: dev.clone(),
                    kind,
                    rope_local,
                    cos,
                    sin,
                    mask,
                    window,
                });
                cache.len() - 1
            }
        };
        Ok(&cache[idx])
    }
}

/// Texts packed end to end in one row of ids (see [`Model::forward`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packed<'a> {
    /// Each text's token count, in row order.
    pub lens: &'a [usize],
    /// Whether only each text's last token is needed out of the last block.
    pub last_only: bool,
}

/// The texts' rows in a pass over `[b, t]` ids: `b` padded rows of `t`, or
/// (`packed`) one row holding texts of the given lengths end to end.
fn segments(b: usize, t: usize, packed: Option<&[usize]>) -> candle_core::Result<Vec<Segment>> {
    let Some(lens) = packed else {
        return Ok((0..b)
            .map(|r| Segment {
                start: r * t,
                len: t,
            })
            .collect());
    };
    if b != 1 || lens.iter().sum::<usize>() != t || lens.contains(&0) {
        candle_core::bail!("packed texts of lengths {lens:?} do not fill ids of [{b}, {t}]")
    }
    Ok(lens
        .iter()
        .scan(0, |start, &len| {
            let s = Segment { start: *start, len };
            *start += len;
            Some(s)
        })
        .collect())
}
