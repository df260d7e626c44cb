//! Logit-lens multiple-choice scoring ("Probing LLaMA across scales and
//! layers"): at every layer, score each candidate continuation by the sum of
//! the log-probabilities of its tokens under the LM head applied to that
//! layer's residual state.
//!
//! - Layers follow the `residual` site: entry 0 is the embeddings, entry `L`
//!   the final norm's output (the HF `hidden_states` convention the paper's
//!   code read), so the last entry is the model's own prediction.
//! - [`Lens::Faithful`] applies the LM head to the raw residual (as the
//!   paper did); [`Lens::Normed`] applies the final norm first. At entry
//!   `L` both are the same, the state being normed already.
//! - Prompt and continuation are tokenised together; byte offsets decide
//!   which tokens belong to the continuation (a token straddling the boundary
//!   does). The token prefix shared by all candidates is run once and its keys
//!   and values are reused for every candidate.
//! - One forward pass serves every requested lens: each layer's states are
//!   gathered once and scored under each lens.
//! - Arithmetic ([`ScoreDtype`]): `f32` computes logits, log-softmax and
//!   sums in f32 whatever the model precision. `bf16` reproduces the original
//!   code on a bf16 model: states and LM head rounded to bf16, each logit
//!   rounded to bf16 (the bf16 matmul's output), log-softmax computed in f32
//!   from those and rounded to bf16, and each candidate's sum accumulated in
//!   f32 and rounded to bf16 (torch's `sum` of a bf16 tensor). Rounding makes
//!   candidates tie more often; ties fail MC1, as in the original.

use super::{Capture, EngineError, Model};
use candle_core::{DType, Tensor};
pub use cd_common::probe::mc::{Lens, ScoreDtype};

/// One multiple-choice item.
#[derive(Debug, Clone)]
pub struct McInput {
    /// The question, exactly as it precedes each continuation.
    pub prompt: String,
    /// Candidate continuations, appended verbatim to the prompt (include any
    /// leading space).
    pub candidates: Vec<String>,
}

/// Per-layer candidate scores.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateScores {
    /// `[layer][candidate]`: summed log-probability of the candidate's tokens
    /// (`L + 1` layers).
    pub scores: Vec<Vec<f32>>,
    /// Tokens scored per candidate.
    pub n_tokens: Vec<usize>,
}

impl CandidateScores {
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

/// Round an f32 tensor to bf16 and back (round half to even).
fn bf16(t: &Tensor) -> candle_core::Result<Tensor> {
    t.to_dtype(DType::BF16)?.to_dtype(DType::F32)
}

impl Model {
    /// Score every candidate of `item` at every layer under one lens, in f32.
    pub fn score_mc(&self, item: &McInput, mode: Lens) -> Result<CandidateScores, EngineError> {
        let mut all = self.score_mc_lenses(item, &[mode], ScoreDtype::F32)?;
        Ok(all.remove(0))
    }

    /// Score every candidate of `item` at every layer under each of `modes`,
    /// from one forward pass, in the arithmetic `dtype` says (one
    /// [`CandidateScores`] per mode, in order).
    pub fn score_mc_lenses(
        &self,
        item: &McInput,
        modes: &[Lens],
        dtype: ScoreDtype,
    ) -> Result<Vec<CandidateScores>, EngineError> {
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
        let bf16_head = dtype == ScoreDtype::Bf16;
        let mut gather_by_dev: Vec<(candle_core::Device, Tensor)> = Vec::new();
        let mut per_layer: Vec<Vec<Vec<f32>>> = vec![vec![Vec::new(); last + 1]; modes.len()];
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
            for (m, mode) in modes.iter().enumerate() {
                // The last entry is normed already: both lenses are the same there.
                if m > 0 && index == last {
                    per_layer[m][index] = per_layer[0][index].clone();
                    continue;
                }
                let lensed = if *mode == Lens::Normed && index < last {
                    self.final_norm_f32(&states)?
                } else {
                    states.clone()
                };
                let lensed = match dtype {
                    ScoreDtype::F32 => lensed,
                    ScoreDtype::Bf16 => bf16(&lensed)?,
                };
                per_layer[m][index] = self.target_log_probs(&lensed, &targets, bf16_head)?;
            }
            Ok(())
        })?;
        let sum = |values: &[f32]| -> f32 {
            let s: f32 = values.iter().sum();
            match dtype {
                ScoreDtype::F32 => s,
                ScoreDtype::Bf16 => half::bf16::from_f32(s).to_f32(),
            }
        };
        Ok(per_layer
            .into_iter()
            .map(|layers| {
                let scores = layers
                    .into_iter()
                    .map(|lp| {
                        let mut out = Vec::with_capacity(n_tokens.len());
                        let mut at = 0;
                        for &k in &n_tokens {
                            out.push(sum(&lp[at..at + k]));
                            at += k;
                        }
                        out
                    })
                    .collect();
                CandidateScores {
                    scores,
                    n_tokens: n_tokens.clone(),
                }
            })
            .collect())
    }
}
