//! Concept depth of one cell: where along the layers a concept becomes, and
//! stays, linearly readable.
//!
//! Input is a curve `a_0 … a_{L−1}` (test accuracy per captured layer, mean
//! over folds). Outputs, each as a layer index and a fraction of depth:
//!
//! - **peak**: `p = argmax_l a_l` (the first on ties) and `a_p`.
//! - **converging layer**, by two rules, both always computed; the grid's
//!   `[depth] rule` says which one tables lead with:
//!   - `paper`: reproduces the published converging layers of the Concept
//!     Depth paper, whose rule was never published. It is the first layer
//!     `l ≥ min_layer` whose incoming change is small, `|a_l − a_{l−1}| ≤
//!     step_into`, and after which every consecutive change is small,
//!     `|a_{j+1} − a_j| ≤ step_after` for all `j ≥ l`; if no layer qualifies,
//!     the last layer. Its constants were found by a search over the
//!     published curves (see `docs/probes.md`); it matches 25 of the 27
//!     published converging layers of the three 7B models.
//!   - `plateau`: the first layer of the run of layers ending at the peak that
//!     all stay within `tolerance` of it,
//!     `c = min { l ≤ p : a_j ≥ a_p − tolerance for all j ∈ [l, p] }`.
//!     A later decline does not move it; noise below `tolerance` does not
//!     either. It matches 3 of the 27 published layers: it answers "where is
//!     the best accuracy first reached", not the paper's question.
//! - **jumping layer**: the layer with the largest one-step gain,
//!   `J = argmax_{l ≥ 1} (a_l − a_{l−1})`, reported only when that gain is at
//!   least `jump_min`.
//!
//! Fractions of depth follow the paper: with `L` transformer blocks and a
//! capture per block (`post_attention_norm`), layer index `l` is at `(l+1)/L`;
//! when the capture includes the embedding output (`residual`, `L+1` vectors)
//! index `l` is at `l/L`.

use serde::{Deserialize, Serialize};

/// Thresholds of the concept-depth rules and of their bootstrap (the `[depth]`
/// table of a grid); every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DepthConfig {
    /// Which converging rule tables lead with (default `paper`).
    pub rule: RuleName,
    /// `plateau`: allowed shortfall from the peak accuracy (default 0.01).
    pub tolerance: f64,
    /// `paper`: largest allowed change between consecutive later layers (default 0.0265).
    pub step_after: f64,
    /// `paper`: largest allowed change into the converging layer (default 0.022).
    pub step_into: f64,
    /// `paper`: earliest eligible layer index (default 2).
    pub min_layer: usize,
    /// Smallest one-step gain that counts as a jump (default 0.05).
    pub jump_min: f64,
    /// Bootstrap resamples of the test examples for intervals (default 1000; 0 = none).
    pub bootstrap: usize,
    /// Coverage of the bootstrap intervals (default 0.95).
    pub confidence: f64,
}

/// Most bootstrap resamples a grid may ask for.
pub(crate) const MAX_BOOTSTRAP: usize = 100_000;

impl Default for DepthConfig {
    fn default() -> Self {
        DepthConfig {
            rule: RuleName::Paper,
            tolerance: 0.01,
            step_after: 0.0265,
            step_into: 0.022,
            min_layer: 2,
            jump_min: 0.05,
            bootstrap: 1000,
            confidence: 0.95,
        }
    }
}

/// The two converging-layer rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleName {
    /// The rule fitted to the paper's published converging layers.
    Paper,
    /// Start of the plateau that ends at the peak.
    Plateau,
}

impl RuleName {
    /// The name used in grids and tables.
    pub fn as_str(&self) -> &'static str {
        match self {
            RuleName::Paper => "paper",
            RuleName::Plateau => "plateau",
        }
    }
}

/// A converging rule with its constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConvergeRule {
    /// Start of the plateau that ends at the peak.
    Plateau {
        /// Allowed shortfall from the peak accuracy.
        tolerance: f64,
    },
    /// The rule fitted to the paper's published converging layers.
    Paper {
        /// Largest allowed change between consecutive later layers.
        step_after: f64,
        /// Largest allowed change into the converging layer.
        step_into: f64,
        /// Earliest eligible layer index.
        min_layer: usize,
    },
}

impl DepthConfig {
    /// The named rule with this configuration's constants.
    pub fn rule_of(&self, name: RuleName) -> ConvergeRule {
        match name {
            RuleName::Paper => ConvergeRule::Paper {
                step_after: self.step_after,
                step_into: self.step_into,
                min_layer: self.min_layer,
            },
            RuleName::Plateau => ConvergeRule::Plateau {
                tolerance: self.tolerance,
            },
        }
    }

    /// Check value ranges that serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let unit = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("depth.{name} must be between 0 and 1, got {v}"))
            }
        };
        unit("tolerance", self.tolerance)?;
        unit("step_after", self.step_after)?;
        unit("step_into", self.step_into)?;
        unit("jump_min", self.jump_min)?;
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(format!(
                "depth.confidence must be strictly between 0 and 1, got {}",
                self.confidence
            ));
        }
        if self.min_layer > 10_000 {
            return Err(format!(
                "depth.min_layer must be at most 10000, got {}",
                self.min_layer
            ));
        }
        if self.bootstrap > MAX_BOOTSTRAP {
            return Err(format!(
                "depth.bootstrap must be at most {MAX_BOOTSTRAP} resamples, got {}",
                self.bootstrap
            ));
        }
        Ok(())
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

/// Concept-depth results of one curve under both converging rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthResult {
    /// The thresholds used.
    pub config: DepthConfig,
    /// Peak accuracy and where.
    pub peak: DepthPoint,
    /// Converging layer under the `paper` rule.
    pub converging_paper: DepthPoint,
    /// Converging layer under the `plateau` rule.
    pub converging_plateau: DepthPoint,
    /// Jumping layer, when a gain of at least `jump_min` exists.
    pub jumping: Option<DepthPoint>,
}

impl DepthResult {
    /// The converging layer under the rule the configuration leads with.
    pub fn converging(&self) -> &DepthPoint {
        self.converging_by(self.config.rule)
    }

    /// The converging layer under a named rule.
    pub(crate) fn converging_by(&self, rule: RuleName) -> &DepthPoint {
        match rule {
            RuleName::Paper => &self.converging_paper,
            RuleName::Plateau => &self.converging_plateau,
        }
    }
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

/// The converging layer index of a non-empty curve under `rule`.
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

/// Peak, converging (both rules) and jumping layers of an accuracy curve.
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
        converging_paper: point(converging_layer(acc, &config.rule_of(RuleName::Paper))),
        converging_plateau: point(converging_layer(acc, &config.rule_of(RuleName::Plateau))),
        jumping: jumping_layer(acc, config.jump_min).map(point),
    })
}
