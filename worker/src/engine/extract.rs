//! Texts in, pooled per-layer vectors out.
//!
//! Batching: texts are tokenised once, sorted by token count (longest first,
//! ties by input order) and cut into batches of `batch_size`. Where the
//! model runs f32 on the CPU ([`Model::packs_texts`]), a batch's texts are
//! packed end to end into one row and no pad is ever computed; elsewhere
//! each batch pads to nearly its own length, on the right. Either way
//! attention is causal and per text, every text's positions are `0..len`,
//! and a text's vectors do not depend on its batch mates.
//!
//! Pooling happens on the device that produced each layer's state; only
//! `[batch, d]` f32 per layer leaves it.

use super::{Capture, EngineError, Model, Pooling, Site};
use candle_core::{DType, Device, Tensor};
use ndarray::Array3;

/// How to extract.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Which capture site.
    pub site: Site,
    /// How token vectors are reduced to one vector per layer.
    pub pooling: Pooling,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Keep at most this many tokens of each text (the first ones); `None`: all.
    pub max_tokens: Option<usize>,
    /// Let the tokenizer's post-processor add its special tokens (e.g. BOS),
    /// as transformers does by default.
    pub add_special_tokens: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            site: Site::Residual,
            pooling: Pooling::Last,
            batch_size: 8,
            max_tokens: None,
            add_special_tokens: true,
        }
    }
}

/// Progress after each batch.
#[derive(Debug, Clone, Copy)]
pub struct ExtractProgress {
    /// Texts finished so far.
    pub texts_done: usize,
    /// Texts in the whole job.
    pub texts_total: usize,
    /// Real (non-pad) tokens processed so far.
    pub tokens_done: usize,
    /// Real tokens in the whole job.
    pub tokens_total: usize,
}

/// Extracted features.
#[derive(Debug, Clone)]
pub struct ExtractedFeatures {
    /// `[N, L, d]` in input order (`L` per [`Model::num_capture_layers`]).
    pub data: Array3<f32>,
    /// Tokens each text was run with (after truncation, special tokens included).
    pub token_counts: Vec<u32>,
}

impl Model {
    /// Tokenise `text` the way extraction does.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, EngineError> {
        let enc = self
            .tokenizer()
            .encode(text, add_special_tokens)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Extract one pooled vector per layer for every text.
    pub fn extract(
        &self,
        texts: &[String],
        opts: &ExtractOptions,
        progress: &mut dyn FnMut(ExtractProgress),
    ) -> Result<ExtractedFeatures, EngineError> {
        if texts.is_empty() {
            return Err(EngineError::Input {
                index: None,
                message: "no texts to extract: expected at least one".into(),
            });
        }
        if opts.batch_size == 0 {
            return Err(EngineError::Input {
                index: None,
                message: "batch size must be at least 1".into(),
            });
        }
        let mut tokens = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let mut ids =
                self.encode(text, opts.add_special_tokens)
                    .map_err(|e| EngineError::Input {
                        index: Some(i),
                        message: e.to_string(),
                    })?;
            if let Some(max) = opts.max_tokens {
                ids.truncate(max);
            }
            if ids.is_empty() {
                return Err(EngineError::Input {
                    index: Some(i),
                    message: "text tokenises to nothing: expected at least one token".into(),
                });
            }
            tokens.push(ids);
        }
        let n_layers = self.num_capture_layers(opts.site);
        let d = self.config().hidden_size;
        let mut data = Array3::<f32>::zeros((texts.len(), n_layers, d));
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].len()));
        let tokens_total = tokens.iter().map(Vec::len).sum();
        let mut done = ExtractProgress {
            texts_done: 0,
            texts_total: texts.len(),
            tokens_done: 0,
            tokens_total,
        };
        for batch in order.chunks(opts.batch_size) {
            let rows: Vec<&[u32]> = batch.iter().map(|&i| tokens[i].as_slice()).collect();
            let pooled = self.extract_batch(&rows, opts)?;
            for (r, &i) in batch.iter().enumerate() {
                for (l, layer) in pooled.iter().enumerate() {
                    data.slice_mut(ndarray::s![i, l, ..])
                        .assign(&ndarray::ArrayView1::from(&layer[r * d..(r + 1) * d]));
                }
            }
            done.texts_done += batch.len();
            done.tokens_done += rows.iter().map(|r| r.len()).sum::<usize>();
            progress(done);
        }
        let token_counts = tokens.iter().map(|t| t.len() as u32).collect();
        Ok(ExtractedFeatures { data, token_counts })
    }

    /// One batch → per capture layer, `[rows × d]` f32 row-major.
    fn extract_batch(
        &self,
        rows: &[&[u32]],
        opts: &ExtractOptions,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let lens: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let packed = self.packs_texts();
        let dev = &self.devices().embed;
        let ids = if packed {
            let flat: Vec<u32> = rows.concat();
            let n = flat.len();
            Tensor::from_vec(flat, (1, n), dev)
        } else {
            right_padded(rows, dev)
        }
        .map_err(EngineError::forward(None))?;
        let mut pools = PoolCache::new(&lens, packed, opts.pooling);
        let n_layers = self.num_capture_layers(opts.site);
        let mut pooled: Vec<Option<Tensor>> = vec![None; n_layers];
        let site = opts.site;
        let packing = packed.then_some(super::Packed {
            lens: &lens,
            // Last-token pooling needs nothing else from the last block.
            last_only: opts.pooling == Pooling::Last,
        });
        self.forward(&ids, packing, None, false, &mut |c| {
            let (slot, h) = match (site, c) {
                (Site::Residual, Capture::Residual { index, h }) => (index, h),
                (Site::PostAttentionNorm, Capture::PostAttentionNorm { layer, h }) => (layer, h),
                _ => return Ok(()),
            };
            pooled[slot] = Some(pools.pool(h)?);
            Ok(())
        })?;
        // One transfer per contiguous run of layers on the same device.
        let mut out = Vec::with_capacity(n_layers);
        let mut start = 0;
        let pooled: Vec<Tensor> = pooled
            .into_iter()
            .map(|p| p.expect("every layer captured"))
            .collect();
        while start < pooled.len() {
            let dev = pooled[start].device().clone();
            let mut end = start + 1;
            while end < pooled.len() && pooled[end].device().same_device(&dev) {
                end += 1;
            }
            let host = Tensor::stack(&pooled[start..end], 0)
                .and_then(|t| t.to_device(&Device::Cpu))
                .and_then(|t| t.to_vec3::<f32>())
                .map_err(EngineError::forward(None))?;
            for layer in host {
                out.push(layer.into_iter().flatten().collect());
            }
            start = end;
        }
        Ok(out)
    }
}

/// `[rows, max_len]` u32 ids, right-padded with token 0 (never attended to).
pub(crate) fn right_padded(rows: &[&[u32]], dev: &Device) -> candle_core::Result<Tensor> {
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut flat = vec![0u32; rows.len() * t];
    for (r, row) in rows.iter().enumerate() {
        flat[r * t..r * t + row.len()].copy_from_slice(row);
    }
    Tensor::from_vec(flat, (rows.len(), t), dev)
}

/// Pools a pass's states (`[b, t, d]`, padded or packed) to one f32 row
/// per text, with per-device index tensors built once.
struct PoolCache<'a> {
    lens: &'a [usize],
    /// Texts packed end to end in one row (else one padded row each).
    packed: bool,
    pooling: Pooling,
    per_device: Vec<(Device, Tensor)>,
}

impl<'a> PoolCache<'a> {
    fn new(lens: &'a [usize], packed: bool, pooling: Pooling) -> Self {
        PoolCache {
            lens,
            packed,
            pooling,
            per_device: Vec::new(),
        }
    }

    /// Where text `r`'s rows start among the pass's rows (`t` per padded
    /// row, or all `t` in one packed row).
    fn starts(&self, t: usize) -> candle_core::Result<Vec<usize>> {
        let segments = if self.packed {
            super::segments(1, t, Some(self.lens))?
        } else {
            super::segments(self.lens.len(), t, None)?
        };
        Ok(segments.iter().map(|s| s.start).collect())
    }

    fn helper(&mut self, dev: &Device, t: usize) -> candle_core::Result<Tensor> {
        if let Some((_, x)) = self.per_device.iter().find(|(d, _)| d.same_device(dev)) {
            return Ok(x.clone());
        }
        let n = self.lens.len();
        let starts = self.starts(t)?;
        let x = match (self.pooling, self.packed) {
            // Flat row index of each text's last token.
            (Pooling::Last, _) => {
                let idx: Vec<u32> = starts
                    .iter()
                    .zip(self.lens)
                    .map(|(&s, &l)| (s + l - 1) as u32)
                    .collect();
                Tensor::from_vec(idx, n, dev)?
            }
            // Averaging weights `[b, 1, t]`: 1/len on real tokens, 0 on pads.
            (Pooling::Mean, false) => {
                let mut w = vec![0f32; n * t];
                for (r, &l) in self.lens.iter().enumerate() {
                    w[r * t..r * t + l].fill(1.0 / l as f32);
                }
                Tensor::from_vec(w, (n, 1, t), dev)?
            }
            // Packed: `[n, T]`, 1/len on each text's own rows.
            (Pooling::Mean, true) => {
                let mut w = vec![0f32; n * t];
                for (r, (&s, &l)) in starts.iter().zip(self.lens).enumerate() {
                    w[r * t + s..r * t + s + l].fill(1.0 / l as f32);
                }
                Tensor::from_vec(w, (n, t), dev)?
            }
        };
        self.per_device.push((dev.clone(), x.clone()));
        Ok(x)
    }

    fn pool(&mut self, h: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = h.dims3()?;
        if self.pooling == Pooling::Last && t == 1 && b == self.lens.len() {
            // One row per text already (a last block that computed only the
            // last tokens; or texts of one token, padded to nothing).
            return h.reshape((b, d))?.to_dtype(DType::F32);
        }
        let helper = self.helper(h.device(), t)?;
        match (self.pooling, self.packed) {
            (Pooling::Last, _) => h
                .reshape((b * t, d))?
                .index_select(&helper, 0)?
                .to_dtype(DType::F32),
            (Pooling::Mean, false) => helper.matmul(&h.to_dtype(DType::F32)?)?.reshape((b, d)),
            (Pooling::Mean, true) => helper.matmul(&h.to_dtype(DType::F32)?.reshape((t, d))?),
        }
    }
}
