//! Bootstrap intervals of a cell's accuracy curve, peak and converging layers.
//!
//! The fitted probes stay fixed; what is resampled is the test set. One
//! resample draws, within every fold, as many test examples as the fold has,
//! uniformly with replacement, and uses the same draw at every layer (the
//! converging layer is a property of the whole curve, so the layers must move
//! together). Per resample `b` and layer `l` the accuracy is the mean over
//! folds of the resampled fold accuracies, exactly as the reported curve is
//! the mean over folds; from that curve come the peak and both converging
//! layers. An interval at confidence `1 − α` is the pair of percentiles
//! `(α/2, 1 − α/2)` of the `B` resampled values (linear interpolation between
//! order statistics, numpy's default); intervals of layer indices are widened
//! to whole layers (low rounded down, high up). Draws come from ChaCha8
//! seeded by the task seed, so reruns give the same intervals.

use crate::depth::{concept_depth, DepthConfig, RuleName};
use crate::rng::example_rng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

/// Bootstrap results of one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// Number of resamples `B`.
    pub resamples: usize,
    /// Coverage `1 − α` of every interval.
    pub confidence: f64,
    /// Peak accuracy.
    pub peak_accuracy: Interval,
    /// Peak layer index.
    pub peak_layer: Interval,
    /// Converging layer index under the `paper` rule.
    pub converging_layer_paper: Interval,
    /// Converging layer index under the `plateau` rule.
    pub converging_layer_plateau: Interval,
    /// Per layer, the interval of the mean accuracy (the band drawn in figures).
    pub accuracy: Vec<Interval>,
}

/// Whether each test example of a fold was classified correctly, per layer:
/// `correct[layer][k]` for the fold's `k`-th test example.
pub(crate) type FoldCorrectness = Vec<Vec<bool>>;

/// Bootstrap the curve of per-fold, per-layer test correctness
/// (`folds[f][layer][k]`); `None` when `config.bootstrap` is 0.
pub fn bootstrap(
    folds: &[FoldCorrectness],
    includes_embedding: bool,
    config: &DepthConfig,
    seed: u64,
) -> Option<Bootstrap> {
    let b_total = config.bootstrap;
    let n_layers = folds.first().map_or(0, Vec::len);
    if b_total == 0 || n_layers == 0 || folds.iter().any(|f| f.first().is_none_or(Vec::is_empty)) {
        return None;
    }
    let mut rng = example_rng(seed, "bootstrap", 0);
    let mut curves: Vec<Vec<f64>> = Vec::with_capacity(b_total);
    let mut weights: Vec<Vec<u32>> = folds.iter().map(|f| vec![0; f[0].len()]).collect();
    for _ in 0..b_total {
        for w in weights.iter_mut() {
            w.iter_mut().for_each(|c| *c = 0);
            let m = w.len();
            for _ in 0..m {
                w[rng.random_range(0..m)] += 1;
            }
        }
        let curve: Vec<f64> = (0..n_layers)
            .map(|l| {
                let sum: f64 = folds
                    .iter()
                    .zip(&weights)
                    .map(|(fold, w)| {
                        let hits: u32 = fold[l]
                            .iter()
                            .zip(w)
                            .filter(|(c, _)| **c)
                            .map(|(_, n)| n)
                            .sum();
                        f64::from(hits) / w.len() as f64
                    })
                    .sum();
                sum / folds.len() as f64
            })
            .collect();
        curves.push(curve);
    }
    let alpha = 1.0 - config.confidence;
    let interval = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        Interval {
            low: percentile(&v, alpha / 2.0),
            high: percentile(&v, 1.0 - alpha / 2.0),
        }
    };
    let layers = |v: Vec<f64>| {
        let i = interval(v);
        Interval {
            low: i.low.floor(),
            high: i.high.ceil(),
        }
    };
    let depths: Vec<_> = curves
        .iter()
        .map(|c| concept_depth(c, includes_embedding, config).expect("resampled curves are finite"))
        .collect();
    Some(Bootstrap {
        resamples: b_total,
        confidence: config.confidence,
        peak_accuracy: interval(depths.iter().map(|d| d.peak.accuracy).collect()),
        peak_layer: layers(depths.iter().map(|d| d.peak.layer as f64).collect()),
        converging_layer_paper: layers(
            depths
                .iter()
                .map(|d| d.converging_by(RuleName::Paper).layer as f64)
                .collect(),
        ),
        converging_layer_plateau: layers(
            depths
                .iter()
                .map(|d| d.converging_by(RuleName::Plateau).layer as f64)
                .collect(),
        ),
        accuracy: (0..n_layers)
            .map(|l| interval(curves.iter().map(|c| c[l]).collect()))
            .collect(),
    })
}

/// The `q`-quantile of sorted values, linear between order statistics
/// (numpy's default `percentile` method).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
        // np.percentile([1, 2, 3, 4], 25) == 1.75
        assert!((percentile(&v, 0.25) - 1.75).abs() < 1e-12);
    }

    #[test]
    fn intervals_cover_the_observed_curve_and_shrink_with_more_data() {
        // Layer accuracies 0.5, 0.7, 0.9, 0.9 on one fold of n test examples.
        let make = |n: usize| -> Vec<FoldCorrectness> {
            let layer = |acc: f64| (0..n).map(|k| (k as f64) < acc * n as f64).collect();
            vec![vec![layer(0.5), layer(0.7), layer(0.9), layer(0.9)]]
        };
        let cfg = DepthConfig::default();
        let small = bootstrap(&make(50), false, &cfg, 1).unwrap();
        let large = bootstrap(&make(2000), false, &cfg, 1).unwrap();
        for (l, acc) in [0.5, 0.7, 0.9, 0.9].iter().enumerate() {
            assert!(small.accuracy[l].low <= *acc && *acc <= small.accuracy[l].high);
            let w = |i: &Interval| i.high - i.low;
            assert!(w(&large.accuracy[l]) < w(&small.accuracy[l]));
        }
        assert!(large.peak_accuracy.low > 0.85 && large.peak_accuracy.high < 0.95);
        assert_eq!(bootstrap(&make(50), false, &cfg, 1), Some(small));
        let off = DepthConfig {
            bootstrap: 0,
            ..DepthConfig::default()
        };
        assert!(bootstrap(&make(50), false, &off, 1).is_none());
    }
}
