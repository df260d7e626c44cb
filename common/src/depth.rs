//! Concept depth of one cell: where along the layers a concept becomes, and
//! stays, linearly readable.
//!
//! Input is a curve `a_0 … a_{L−1}` (test accuracy per captured layer, mean
//! over folds). Outputs, each as a layer index and a fraction of depth:
//!
//! - **peak**: `p = argmax_l a_l` (the first on ties) and `a_p`.
//! - **converging layer**, by one of two rules (chosen per grid):
//!   - `plateau` (default, principled): the first layer of the run of layers
//!     ending at the peak that all stay within `tolerance` of it,
//!     `c = min { l ≤ p : a_j ≥ a_p − tolerance for all j ∈ [l, p] }`.
//!     A later decline does not move it; noise below `tolerance` does not
//!     either.
//!   - `paper`: reproduces the published converging layers of the Concept
//!     Depth paper, whose rule was never published. It is the first layer
//!     `l ≥ min_layer` whose incoming change is small, `|a_l − a_{l−1}| ≤
//!     step_into`, and after which every consecutive change is small,
//!     `|a_{j+1} − a_j| ≤ step_after` for all `j ≥ l`; if no layer qualifies,
//!     the last layer. Its constants were found by a search over the
//!     published curves (see `docs/probes.md`); it matches 25 of the 27
//!     published converging layers of the three 7B models.
//! - **jumping layer**: the layer with the largest one-step gain,
//!   `J = argmax_{l ≥ 1} (a_l − a_{l−1})`, reported only when that gain is at
//!   least `jump_min`.
//!
//! Fractions of depth follow the paper: with `L` transformer blocks and a
//! capture per block (`post_attention_norm`), layer index `l` is at `(l+1)/L`;
//! when the capture includes the embedding output (`residual`, `L+1` vectors)
//! index `l` is at `l/L`.

use serde::{Deserialize, Serialize};

/// Thresholds of the concept-depth rules; every field has a default and a
/// grid may override any of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DepthConfig {
    /// How the converging layer is chosen.
    pub converge: ConvergeRule,
    /// Smallest one-step gain that counts as a jump (default 0.05).
    pub jump_min: f64,
}

impl Default for DepthConfig {
    fn default() -> Self {
        DepthConfig {
            converge: ConvergeRule::default(),
            jump_min: 0.05,
        }
    }
}

/// Rule for the converging layer (see the module docs for the formulas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConvergeRule {
    /// Start of the plateau that ends at the peak.
    Plateau {
        /// Allowed shortfall from the peak accuracy (default 0.01).
        #[serde(default = "default_tolerance")]
        tolerance: f64,
    },
    /// The rule fitted to the paper's published converging layers.
    Paper {
        /// Largest allowed change between consecutive later layers (default 0.0265).
        #[serde(default = "default_step_after")]
        step_after: f64,
        /// Largest allowed change into the converging layer (default 0.022).
        #[serde(default = "default_step_into")]
        step_into: f64,
        /// Earliest eligible layer index (default 2).
        #[serde(default = "default_min_layer")]
        min_layer: usize,
    },
}

fn default_tolerance() -> f64 {
    0.01
}
fn default_step_after() -> f64 {
    0.0265
}
fn default_step_into() -> f64 {
    0.022
}
fn default_min_layer() -> usize {
    2
}

impl Default for ConvergeRule {
    fn default() -> Self {
        ConvergeRule::Plateau {
            tolerance: default_tolerance(),
        }
    }
}

impl ConvergeRule {
    /// The paper-reproducing rule with its fitted constants.
    pub fn paper() -> Self {
        ConvergeRule::Paper {
            step_after: default_step_after(),
            step_into: default_step_into(),
            min_layer: default_min_layer(),
        }
    }
}

/// A layer located on the depth axis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthPoint {
    /// Layer index into the captured vectors (0-based).
    pub layer: usize,
    /// Position as a fraction of the model's depth (see module docs).
    pub fraction: f64,
    /// Accuracy at that layer.
    pub accuracy: f64,
}

/// Concept-depth results of one curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthResult {
    /// The thresholds used.
    pub config: DepthConfig,
    /// Peak accuracy and where.
    pub peak: DepthPoint,
    /// Converging layer.
    pub converging: DepthPoint,
    /// Jumping layer, when a gain of at least `jump_min` exists.
    pub jumping: Option<DepthPoint>,
}

/// Errors of depth computation.
#[derive(Debug, thiserror::Error)]
pub enum DepthError {
    /// The curve is empty or holds a non-finite value.
    #[error("accuracy curve must be non-empty and finite; {0}")]
    BadCurve(String),
}

/// Fraction of depth of layer index `layer` among `n_captured` captures.
pub fn depth_fraction(layer: usize, n_captured: usize, includes_embedding: bool) -> f64 {
    if includes_embedding {
        let blocks = n_captured.saturating_sub(1).max(1);
        layer as f64 / blocks as f64
    } else {
        (layer + 1) as f64 / n_captured.max(1) as f64
    }
}

/// Index of the first maximum.
pub fn peak_layer(acc: &[f64]) -> usize {
    let mut best = 0;
    for (l, &a) in acc.iter().enumerate() {
        if a > acc[best] {
            best = l;
        }
    }
    best
}

/// The converging layer index of `acc` under `rule`.
pub fn converging_layer(acc: &[f64], rule: &ConvergeRule) -> usize {
    let last = acc.len() - 1;
    match *rule {
        ConvergeRule::Plateau { tolerance } => {
            let p = peak_layer(acc);
            let floor = acc[p] - tolerance;
            let mut c = p;
            while c > 0 && acc[c - 1] >= floor {
                c -= 1;
            }
            c
        }
        ConvergeRule::Paper {
            step_after,
            step_into,
            min_layer,
        } => {
            // Scan from the end: `calm_from` is the first index from which all
            // consecutive changes stay within step_after.
            let mut calm_from = last;
            while calm_from > 0 && (acc[calm_from] - acc[calm_from - 1]).abs() <= step_after {
                calm_from -= 1;
            }
            (min_layer.max(calm_from).max(1)..=last)
                .find(|&l| (acc[l] - acc[l - 1]).abs() <= step_into)
                .unwrap_or(last)
        }
    }
}

/// The jumping layer index: the largest one-step gain, if at least `jump_min`.
pub fn jumping_layer(acc: &[f64], jump_min: f64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for l in 1..acc.len() {
        let gain = acc[l] - acc[l - 1];
        if best.is_none_or(|(_, g)| gain > g) {
            best = Some((l, gain));
        }
    }
    best.filter(|&(_, g)| g >= jump_min).map(|(l, _)| l)
}

/// Peak, converging and jumping layers of an accuracy curve.
pub fn concept_depth(
    acc: &[f64],
    includes_embedding: bool,
    config: &DepthConfig,
) -> Result<DepthResult, DepthError> {
    if acc.is_empty() {
        return Err(DepthError::BadCurve("it is empty".into()));
    }
    if let Some(l) = acc.iter().position(|a| !a.is_finite()) {
        return Err(DepthError::BadCurve(format!("layer {l} is {}", acc[l])));
    }
    let n = acc.len();
    let point = |layer: usize| DepthPoint {
        layer,
        fraction: depth_fraction(layer, n, includes_embedding),
        accuracy: acc[layer],
    };
    Ok(DepthResult {
        config: config.clone(),
        peak: point(peak_layer(acc)),
        converging: point(converging_layer(acc, &config.converge)),
        jumping: jumping_layer(acc, config.jump_min).map(point),
    })
}
