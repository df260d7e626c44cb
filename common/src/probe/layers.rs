//! Probe every layer of a cell: one fit per (layer, fold), in parallel.
//!
//! Jobs are independent, so rayon spreads them over all cores; each job reads
//! its layer in place from the `[N, L, d]` feature array.

use super::bootstrap::FoldCorrectness;
use super::eval::{self, FoldMetrics};
use super::logistic::{self, Rows};
use super::split::{self, Fold};
use super::{ProbeConfig, ProbeError};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// FeatureView of one cell: row-major `[n, n_layers, d]` f32 with one label per example.
#[derive(Debug, Clone, Copy)]
pub struct FeatureView<'a> {
    /// The values.
    pub data: &'a [f32],
    /// Number of examples.
    pub n: usize,
    /// Number of captured layers.
    pub n_layers: usize,
    /// Vector width.
    pub d: usize,
    /// Label (0/1) of each example.
    pub labels: &'a [u8],
}

/// Result of one (layer, fold) fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldLayer {
    /// Fold index.
    pub fold: usize,
    /// Layer index.
    pub layer: usize,
    /// Test metrics.
    #[serde(flatten)]
    pub metrics: FoldMetrics,
    /// Newton iterations of the fit.
    pub newton_iterations: usize,
    /// Conjugate-gradient iterations (passes over the rows) of the fit.
    pub cg_iterations: usize,
    /// Whether the solver met its tolerance.
    pub converged: bool,
    /// Wall time of fit plus evaluation, seconds.
    pub seconds: f64,
}

/// All fits of a cell.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    /// The folds used (indices into the examples).
    pub folds: Vec<Fold>,
    /// One entry per (layer, fold), ordered by layer then fold.
    pub fits: Vec<FoldLayer>,
    /// Per fold, per layer, whether each test example (in `folds[f].test`
    /// order) was classified correctly: what the bootstrap resamples.
    pub correct: Vec<FoldCorrectness>,
    /// Wall time of all fits, seconds.
    pub seconds: f64,
}

/// Split with `config.split` and `seed` (`groups`: one id per example, for
/// grouped splits), then fit and evaluate every layer.
pub fn probe_all_layers(
    features: &FeatureView<'_>,
    groups: Option<&[usize]>,
    config: &ProbeConfig,
    seed: u64,
) -> Result<ProbeRun, ProbeError> {
    config.validate()?;
    let folds = split::make_folds(features.labels, groups, &config.split, seed)?;
    probe_with_folds(features, config, folds)
}

/// Fit and evaluate every layer on the given folds (e.g. group-aware splits
/// made by the datasets module, or a reference tool's indices).
pub fn probe_with_folds(
    features: &FeatureView<'_>,
    config: &ProbeConfig,
    folds: Vec<Fold>,
) -> Result<ProbeRun, ProbeError> {
    let FeatureView {
        data,
        n,
        n_layers,
        d,
        labels,
    } = *features;
    if labels.len() != n {
        return Err(ProbeError::Input(format!(
            "{n} examples but {} labels",
            labels.len()
        )));
    }
    // Validates the shape once for all layers.
    Rows::layer(data, n, n_layers, d, 0)?;
    for (k, f) in folds.iter().enumerate() {
        if f.train.is_empty() || f.test.is_empty() || f.train.iter().chain(&f.test).any(|&i| i >= n)
        {
            return Err(ProbeError::Input(format!(
                "fold {k} has an empty side or an index ≥ {n}"
            )));
        }
    }
    let start = Instant::now();
    let jobs: Vec<(usize, usize)> = (0..n_layers)
        .flat_map(|l| (0..folds.len()).map(move |k| (l, k)))
        .collect();
    let fits = jobs
        .par_iter()
        .map(|&(layer, k)| {
            let t0 = Instant::now();
            let x = Rows::layer(data, n, n_layers, d, layer)?;
            let fold = &folds[k];
            let y_train: Vec<u8> = fold.train.iter().map(|&i| labels[i]).collect();
            let y_test: Vec<u8> = fold.test.iter().map(|&i| labels[i]).collect();
            let model = logistic::fit(
                &x,
                &fold.train,
                &y_train,
                config.c,
                config.standardize,
                &config.solver,
            )?;
            let (metrics, correct) =
                evaluate(&model, &x, fold, &y_train, &y_test, config.positive_class);
            let fit = FoldLayer {
                fold: k,
                layer,
                metrics,
                newton_iterations: model.newton_iterations,
                cg_iterations: model.cg_iterations,
                converged: model.converged,
                seconds: t0.elapsed().as_secs_f64(),
            };
            Ok((fit, correct))
        })
        .collect::<Result<Vec<_>, ProbeError>>()?;
    let mut correct: Vec<FoldCorrectness> = vec![vec![Vec::new(); n_layers]; folds.len()];
    let fits = fits
        .into_iter()
        .map(|(fit, c)| {
            correct[fit.fold][fit.layer] = c;
            fit
        })
        .collect();
    Ok(ProbeRun {
        folds,
        fits,
        correct,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Test metrics of a fitted model and whether each test example was
/// classified correctly; label 1 is predicted when `x·w + b > 0`
/// (scikit-learn's `predict`), and AUC ranks the positive class's probability.
pub fn evaluate(
    model: &logistic::LogisticModel,
    x: &Rows<'_>,
    fold: &Fold,
    y_train: &[u8],
    y_test: &[u8],
    positive: u8,
) -> (FoldMetrics, Vec<bool>) {
    let z_test = model.decision(x, &fold.test);
    let z_train = model.decision(x, &fold.train);
    let predict = |z: &[f64]| -> Vec<u8> { z.iter().map(|&v| u8::from(v > 0.0)).collect() };
    let pred_test = predict(&z_test);
    // Probabilities in f64, as scikit-learn's predict_proba: saturated
    // probabilities tie exactly as they do there.
    let proba_pos: Vec<f64> = z_test
        .iter()
        .map(|&v| {
            let p1 = 1.0 / (1.0 + (-v).exp());
            if positive == 1 {
                p1
            } else {
                1.0 - p1
            }
        })
        .collect();
    let is_pos: Vec<bool> = y_test.iter().map(|&y| y == positive).collect();
    let majority = eval::majority_label(y_train);
    let metrics = FoldMetrics {
        accuracy: eval::accuracy(&pred_test, y_test),
        f1: eval::f1(&pred_test, y_test, positive),
        auc: eval::roc_auc(&proba_pos, &is_pos),
        baseline: y_test.iter().filter(|&&y| y == majority).count() as f64 / y_test.len() as f64,
        train_accuracy: eval::accuracy(&predict(&z_train), y_train),
    };
    let correct = pred_test.iter().zip(y_test).map(|(p, y)| p == y).collect();
    (metrics, correct)
}
