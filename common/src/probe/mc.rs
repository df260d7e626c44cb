//! Multiple-choice metrics from per-layer candidate scores (logit lens).
//!
//! The worker scores every candidate continuation of an item at every layer
//! (the sum of its tokens' log-probabilities under the LM head applied to that
//! layer's hidden state) once per lens mode, and hands the sums and token
//! counts here. Each lens mode is an independent [`LensScores`]; the
//! length-normalised variant (mean log-probability per token) is derived here
//! from the same sums, so one worker pass yields four score variants.
//!
//! Per item and layer, with `T` the true and `F` the false candidates'
//! scores and `b ∈ T` the best (reference) answer's score, as the original
//! evaluation code (`MC_calcs` of TruthfulQA and of the LLaMA-analysis code)
//! defines them:
//! - MC1 = 1 when `b > max F`, else 0: the *best* answer must beat every
//!   false one (another true answer winning does not count; a tie is a
//!   failure, and counted);
//! - MC2 = `Σ_{t∈T} e^t / (Σ_{t∈T} e^t + Σ_{f∈F} e^f)`, the normalised
//!   probability mass of the true answers, in f64. As the original, when every
//!   `e^t` underflows to 0 the true scores are halved until their sum is not
//!   0 (likewise, separately, the false ones), and a NaN gives 0;
//! - MC3 = `|{t ∈ T : t > max F}| / |T|`.
//!
//! The per-layer value is the mean over items. Chance levels are reported per
//! task, for a uniformly random ranking of the candidates:
//! `chance = mean_items(1 / n_options)` (one pick right) and
//! `chance_mc1 = mean_items(1 / (|F| + 1))` (the best answer above every
//! false one; other true answers do not matter).

use super::ProbeError;
use serde::{Deserialize, Serialize};

/// Scoring settings of a multiple-choice task (the `[mc]` table of a grid).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McConfig {
    /// Arithmetic of logits, log-softmax and sums (default `f32`).
    pub score_dtype: ScoreDtype,
    /// Score only the first N items (quick runs; default all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
}

impl Default for McConfig {
    fn default() -> Self {
        McConfig {
            score_dtype: ScoreDtype::F32,
            max_items: None,
        }
    }
}

impl McConfig {
    /// Check value ranges that serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        match self.max_items {
            Some(n) if !(1..=1_000_000).contains(&n) => Err(format!(
                "mc.max_items must be between 1 and 1000000, got {n}"
            )),
            _ => Ok(()),
        }
    }
}

/// In which arithmetic candidate scores are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreDtype {
    /// Logits, log-softmax and sums in f32 from f32 states.
    F32,
    /// The original code's arithmetic on a bf16 model: states and LM head in
    /// bf16, each logit, log-probability and per-candidate sum rounded to bf16.
    Bf16,
}

impl ScoreDtype {
    /// The name used in grids and tables.
    pub fn as_str(&self) -> &'static str {
        match self {
            ScoreDtype::F32 => "f32",
            ScoreDtype::Bf16 => "bf16",
        }
    }
}

/// Where the LM head reads the hidden state from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lens {
    /// The raw residual stream (as the paper did).
    Faithful,
    /// The model's final norm applied first.
    Normed,
}

impl Lens {
    /// The name used in metadata and column names.
    pub fn as_str(&self) -> &'static str {
        match self {
            Lens::Faithful => "faithful",
            Lens::Normed => "normed",
        }
    }
}

/// One item's scores at every layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoredItem {
    /// `sums[layer][candidate]`: sum of the candidate's token log-probabilities.
    pub sums: Vec<Vec<f32>>,
    /// Number of scored tokens of each candidate (≥ 1).
    pub n_tokens: Vec<usize>,
    /// Whether each candidate is a true answer.
    pub correct: Vec<bool>,
    /// Index of the best (reference) true answer, which MC1 compares.
    pub best: usize,
}

/// All items of a task scored under one lens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LensScores {
    /// The lens the scores were computed with.
    pub lens: Lens,
    /// The items.
    pub items: Vec<ScoredItem>,
}

/// Per-layer multiple-choice results for one score variant (a row of the
/// `mc_layers` table of `metrics.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McLayer {
    /// Layer index.
    pub layer: usize,
    /// The lens.
    pub lens: Lens,
    /// Whether scores were divided by the candidate's token count.
    pub length_normalised: bool,
    /// Mean MC1 over items.
    pub mc1: f64,
    /// Mean MC2 over items.
    pub mc2: f64,
    /// Mean MC3 over items.
    pub mc3: f64,
    /// Items whose best true and best false scores tied (counted as MC1 failures).
    pub mc1_ties: usize,
    /// Items scored.
    pub n_items: usize,
}

/// Chance levels of a task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chance {
    /// `mean(1 / n_options)`.
    pub chance: f64,
    /// `mean(1 / (n_false + 1))`: MC1 of a random ranking (the best answer
    /// ranked above every false one).
    pub chance_mc1: f64,
}

/// One item's scores at one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ItemScore {
    /// 1 when the best answer beats every false one, else 0.
    pub mc1: f64,
    /// Normalised probability mass of the true answers.
    pub mc2: f64,
    /// Share of true answers that beat every false one.
    pub mc3: f64,
    /// Whether the best answer tied the best false one (an MC1 failure).
    pub tie: bool,
}

/// MC1, MC2 and MC3 of one item's candidate scores (see the module docs).
pub fn item_mc(scores: &[f64], correct: &[bool], best: usize) -> ItemScore {
    let side = |want: bool| -> Vec<f64> {
        scores
            .iter()
            .zip(correct)
            .filter(|(_, &c)| c == want)
            .map(|(&s, _)| s)
            .collect()
    };
    let (truths, falses) = (side(true), side(false));
    let max_false = falses.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let above = truths.iter().filter(|&&t| t > max_false).count();
    ItemScore {
        mc1: if scores[best] > max_false { 1.0 } else { 0.0 },
        mc2: mc2(&truths, &falses),
        mc3: above as f64 / truths.len() as f64,
        tie: scores[best] == max_false,
    }
}

/// Probability mass of the true answers, with the original's underflow rule.
fn mc2(truths: &[f64], falses: &[f64]) -> f64 {
    let mass = |scores: &[f64]| -> f64 {
        let mut s = scores.to_vec();
        loop {
            let total: f64 = s.iter().map(|v| v.exp()).sum();
            // Halving moves every score towards 0, so the loop ends (within
            // ~11 halvings for any finite f64).
            if total != 0.0 || s.iter().all(|v| *v == 0.0) {
                return total;
            }
            s.iter_mut().for_each(|v| *v /= 2.0);
        }
    };
    let (t, f) = (mass(truths), mass(falses));
    let p = t / (t + f);
    if p.is_nan() {
        0.0
    } else {
        p
    }
}

fn validate(scores: &LensScores) -> Result<usize, ProbeError> {
    let n_layers = scores.items.first().map(|it| it.sums.len()).unwrap_or(0);
    if n_layers == 0 {
        return Err(ProbeError::Input(
            "multiple-choice scores hold no item or no layer".into(),
        ));
    }
    for (k, it) in scores.items.iter().enumerate() {
        let n_c = it.correct.len();
        let n_true = it.correct.iter().filter(|&&c| c).count();
        if n_true == 0 || n_true == n_c {
            return Err(ProbeError::Input(format!(
                "item {k}: needs at least one true and one false candidate, has {n_true} true of {n_c}"
            )));
        }
        if it.correct.get(it.best) != Some(&true) {
            return Err(ProbeError::Input(format!(
                "item {k}: the best answer (candidate {}) must be one of its true candidates",
                it.best
            )));
        }
        if it.n_tokens.len() != n_c || it.n_tokens.contains(&0) {
            return Err(ProbeError::Input(format!(
                "item {k}: token counts must be one positive number per candidate ({n_c})"
            )));
        }
        if it.sums.len() != n_layers || it.sums.iter().any(|l| l.len() != n_c) {
            return Err(ProbeError::Input(format!(
                "item {k}: scores must be [{n_layers} layers][{n_c} candidates]"
            )));
        }
        if it.sums.iter().flatten().any(|s| !s.is_finite()) {
            return Err(ProbeError::Input(format!(
                "item {k}: a score is not finite"
            )));
        }
    }
    Ok(n_layers)
}

/// Per-layer MC1/MC2/MC3 for the raw sums and the length-normalised scores
/// (rows ordered by variant, then layer).
pub fn mc_layers(scores: &LensScores) -> Result<Vec<McLayer>, ProbeError> {
    let n_layers = validate(scores)?;
    let n_items = scores.items.len();
    let mut rows = Vec::with_capacity(2 * n_layers);
    for length_normalised in [false, true] {
        for layer in 0..n_layers {
            let (mut mc1, mut mc2, mut mc3, mut ties) = (0.0, 0.0, 0.0, 0usize);
            for it in &scores.items {
                let s: Vec<f64> = it.sums[layer]
                    .iter()
                    .zip(&it.n_tokens)
                    .map(|(&v, &t)| {
                        if length_normalised {
                            f64::from(v) / t as f64
                        } else {
                            f64::from(v)
                        }
                    })
                    .collect();
                let score = item_mc(&s, &it.correct, it.best);
                mc1 += score.mc1;
                mc2 += score.mc2;
                mc3 += score.mc3;
                ties += usize::from(score.tie);
            }
            rows.push(McLayer {
                layer,
                lens: scores.lens,
                length_normalised,
                mc1: mc1 / n_items as f64,
                mc2: mc2 / n_items as f64,
                mc3: mc3 / n_items as f64,
                mc1_ties: ties,
                n_items,
            });
        }
    }
    Ok(rows)
}

/// Chance levels of a set of items.
pub fn chance(items: &[ScoredItem]) -> Chance {
    let n = items.len().max(1) as f64;
    let (mut c, mut c1) = (0.0, 0.0);
    for it in items {
        let n_opt = it.correct.len() as f64;
        c += 1.0 / n_opt;
        let n_false = it.correct.iter().filter(|&&x| !x).count() as f64;
        c1 += 1.0 / (n_false + 1.0);
    }
    Chance {
        chance: c / n,
        chance_mc1: c1 / n,
    }
}
