//! Multiple-choice metrics from per-layer candidate scores (logit lens).
//!
//! The worker scores every candidate continuation of an item at every layer
//! (the sum of its tokens' log-probabilities under the LM head applied to that
//! layer's hidden state) once per lens mode, and hands the sums and token
//! counts here. Each lens mode is an independent [`McScores`]; the
//! length-normalised variant (mean log-probability per token) is derived here
//! from the same sums, so one worker pass yields four score variants.
//!
//! Per item and layer, with `T` the true and `F` the false candidates' scores:
//! - MC1 = 1 when `max T > max F`, else 0 (a tie is a failure, and counted);
//! - MC3 = `|{t ∈ T : t > max F}| / |T|`.
//!
//! The per-layer value is the mean over items. Chance levels are reported per
//! task: `chance = mean_items(1 / n_options)` and, for MC1 with several true
//! options, `chance_mc1 = mean_items(|T| / n_options)`.

use super::ProbeError;
use serde::{Deserialize, Serialize};

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
pub struct McItem {
    /// `sums[layer][candidate]`: sum of the candidate's token log-probabilities.
    pub sums: Vec<Vec<f32>>,
    /// Number of scored tokens of each candidate (≥ 1).
    pub n_tokens: Vec<usize>,
    /// Whether each candidate is a true answer.
    pub correct: Vec<bool>,
}

/// All items of a task scored under one lens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McScores {
    /// The lens the scores were computed with.
    pub lens: Lens,
    /// The items.
    pub items: Vec<McItem>,
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
    /// `mean(n_true / n_options)`: MC1 of a random ranking.
    pub chance_mc1: f64,
}

/// MC1 and MC3 of one item's scores (`scores[c]`), and whether MC1 tied.
pub fn item_mc(scores: &[f64], correct: &[bool]) -> (f64, f64, bool) {
    let best = |want: bool| {
        scores
            .iter()
            .zip(correct)
            .filter(|(_, &c)| c == want)
            .map(|(&s, _)| s)
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let (best_true, best_false) = (best(true), best(false));
    let n_true = correct.iter().filter(|&&c| c).count();
    let above = scores
        .iter()
        .zip(correct)
        .filter(|(&s, &c)| c && s > best_false)
        .count();
    let mc1 = if best_true > best_false { 1.0 } else { 0.0 };
    (mc1, above as f64 / n_true as f64, best_true == best_false)
}

fn validate(scores: &McScores) -> Result<usize, ProbeError> {
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

/// Per-layer MC1/MC3 for the raw sums and the length-normalised scores
/// (rows ordered by variant, then layer).
pub fn mc_layers(scores: &McScores) -> Result<Vec<McLayer>, ProbeError> {
    let n_layers = validate(scores)?;
    let n_items = scores.items.len();
    let mut rows = Vec::with_capacity(2 * n_layers);
    for length_normalised in [false, true] {
        for layer in 0..n_layers {
            let (mut mc1, mut mc3, mut ties) = (0.0, 0.0, 0usize);
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
                let (a, b, tie) = item_mc(&s, &it.correct);
                mc1 += a;
                mc3 += b;
                ties += usize::from(tie);
            }
            rows.push(McLayer {
                layer,
                lens: scores.lens,
                length_normalised,
                mc1: mc1 / n_items as f64,
                mc3: mc3 / n_items as f64,
                mc1_ties: ties,
                n_items,
            });
        }
    }
    Ok(rows)
}

/// Chance levels of a set of items.
pub fn chance(items: &[McItem]) -> Chance {
    let n = items.len().max(1) as f64;
    let (mut c, mut c1) = (0.0, 0.0);
    for it in items {
        let n_opt = it.correct.len() as f64;
        c += 1.0 / n_opt;
        c1 += it.correct.iter().filter(|&&x| x).count() as f64 / n_opt;
    }
    Chance {
        chance: c / n,
        chance_mc1: c1 / n,
    }
}
