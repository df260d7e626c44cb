//! Logit-lens multiple-choice scoring ("Probing LLaMA across scales and
//! layers"): at every layer, score each candidate continuation by the sum of
//! the log-probabilities of its tokens under the LM head applied to that
//! layer's residual state.
//!
//! - Layers follow the `residual` site: entry 0 is the embeddings, entry `L`
//!   the final norm's output (the HF `hidden_states` convention the paper's
//!   code read), so the last entry is the model's own prediction.
//! - [`LensMode::Faithful`] applies the LM head to the raw residual (as the
//!   paper did); [`LensMode::Normed`] applies the final norm first. At entry
//!   `L` both are the same, the state being normed already.
//! - Prompt and continuation are tokenised together; byte offsets decide
//!   which tokens belong to the continuation (a token straddling the boundary
//!   does). The token prefix shared by all candidates is run once and its keys
//!   and values are reused for every candidate.
//! - Logits and log-softmax are computed in f32 whatever the model precision.

use crate::engine::{Capture, EngineError, Model};
use candle_core::{DType, Tensor, D};

/// One multiple-choice item.
#[derive(Debug, Clone)]
pub struct McInput {
    /// The question, exactly as it precedes each continuation.
    pub prompt: String,
    /// Candidate continuations, appended verbatim to the prompt (include any
    /// leading space).
    pub candidates: Vec<String>,
}

/// Whether the final norm is applied before the LM head at inner layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LensMode {
    /// LM head on the raw residual stream (the paper's choice).
    Faithful,
    /// Final norm, then LM head.
    Normed,
}

/// Per-layer candidate scores.
#[derive(Debug, Clone, PartialEq)]
pub struct McScores {
    /// `[layer][candidate]`: summed log-probability of the candidate's tokens
    /// (`L + 1` layers).
    pub scores: Vec<Vec<f32>>,
    /// Tokens scored per candidate.
    pub n_tokens: Vec<usize>,
}

impl McScores {
    /// Scores divided by each candidate's token count.
    pub fn length_normalised(&self) -> Vec<Vec<f32>> {
        self.scores
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&self.n_tokens)
                    .map(|(s, &n)| s / n as f32)
                    .collect()
            })
            .collect()
    }
}

/// A candidate after joint tokenisation.
struct Tokenised {
    ids: Vec<u32>,
    /// Index of the first continuation token.
    cont_start: usize,
}

fn tokenise(model: &Model, item: &McInput, c: usize) -> Result<Tokenised, EngineError> {
    let text = format!("{}{}", item.prompt, item.candidates[c]);
    let enc = model
        .tokenizer()
        .encode(text.as_str(), true)
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    let boundary = item.prompt.len();
    let specials = enc.get_special_tokens_mask();
    let cont_start = enc
        .get_offsets()
        .iter()
        .enumerate()
        .position(|(k, &(_, end))| specials[k] == 0 && end > boundary)
        .ok_or_else(|| EngineError::Input {
            index: Some(c),
            message: format!(
                "candidate {:?} adds no token to the prompt",
                item.candidates[c]
            ),
        })?;
    if cont_start == 0 {
        return Err(EngineError::Input {
            index: Some(c),
            message: "the continuation starts at the first token: expected a prompt or a BOS token before it".into(),
        });
    }
    Ok(Tokenised {
        ids: enc.get_ids().to_vec(),
        cont_start,
    })
}

impl Model {
    /// Score every candidate of `item` at every layer.
    pub fn score_mc(&self, item: &McInput, mode: LensMode) -> Result<McScores, EngineError> {
        if item.candidates.is_empty() {
            return Err(EngineError::Input {
                index: None,
                message: "a multiple-choice item needs at least one candidate".into(),
            });
        }
        let toks = (0..item.candidates.len())
            .map(|c| tokenise(self, item, c))
            .collect::<Result<Vec<_>, _>>()?;
        // Shared prefix: common to every candidate and ending before the
        // position that predicts the first continuation token.
        let first = &toks[0].ids;
        let shared = toks
            .iter()
            .map(|t| {
                let lcp = t.ids.iter().zip(first).take_while(|(a, b)| a == b).count();
                lcp.min(t.cont_start - 1)
            })
            .min()
            .unwrap_or(0);
        let head_dev = self.devices().head.clone();
        let fwd = EngineError::forward(None);
        let prefix_kv = if shared > 0 {
            let ids =
                Tensor::from_vec(first[..shared].to_vec(), (1, shared), &self.devices().embed)
                    .map_err(fwd)?;
            Some(self.forward(&ids, None, None, true, &mut |_| Ok(()))?)
        } else {
            None
        };
        let rows: Vec<&[u32]> = toks.iter().map(|t| &t.ids[shared..]).collect();
        let ids = crate::engine::extract::right_padded(&rows, &self.devices().embed)
            .map_err(EngineError::forward(None))?;
        let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        // Which states predict which tokens: state at suffix position k - 1 - shared
        // predicts token k, for every continuation token k.
        let mut gather = Vec::new();
        let mut targets = Vec::new();
        let mut n_tokens = Vec::new();
        for (r, tk) in toks.iter().enumerate() {
            for k in tk.cont_start..tk.ids.len() {
                gather.push((r * t + k - 1 - shared) as u32);
                targets.push(tk.ids[k]);
            }
            n_tokens.push(tk.ids.len() - tk.cont_start);
        }
        let n = gather.len();
        let last = self.config().num_layers;
        let lm_head = self.lm_head_f32().map_err(EngineError::forward(None))?;
        let targets =
            Tensor::from_vec(targets, (n, 1), &head_dev).map_err(EngineError::forward(None))?;
        let mut gather_by_dev: Vec<(candle_core::Device, Tensor)> = Vec::new();
        let mut per_layer: Vec<Vec<f32>> = vec![Vec::new(); last + 1];
        let softcap = self.config().final_logit_softcapping;
        self.forward(&ids, None, prefix_kv.as_deref(), false, &mut |c| {
            let Capture::Residual { index, h } = c else {
                return Ok(());
            };
            let dev = h.device().clone();
            let idx = match gather_by_dev.iter().find(|(d, _)| d.same_device(&dev)) {
                Some((_, g)) => g.clone(),
                None => {
                    let g = Tensor::from_vec(gather.clone(), n, &dev)?;
                    gather_by_dev.push((dev.clone(), g.clone()));
                    g
                }
            };
            let (b, tt, d) = h.dims3()?;
            let states = h
                .reshape((b * tt, d))?
                .index_select(&idx, 0)?
                .to_device(&head_dev)?;
            let states = states.to_dtype(DType::F32)?;
            let states = if mode == LensMode::Normed && index < last {
                self.final_norm_f32(&states)?
            } else {
                states
            };
            let logits = states.matmul(&lm_head.t()?)?;
            let logits = match softcap {
                Some(cap) => ((logits / cap)?.tanh()? * cap)?,
                None => logits,
            };
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            per_layer[index] = logp.gather(&targets, 1)?.flatten_all()?.to_vec1::<f32>()?;
            Ok(())
        })?;
        let scores = per_layer
            .into_iter()
            .map(|lp| {
                let mut out = Vec::with_capacity(n_tokens.len());
                let mut at = 0;
                for &k in &n_tokens {
                    out.push(lp[at..at + k].iter().sum());
                    at += k;
                }
                out
            })
            .collect();
        Ok(McScores { scores, n_tokens })
    }
}
