//! Classification metrics of one fitted probe on its test fold.
//!
//! Conventions follow scikit-learn so numbers compare one to one: F1 of an
//! explicit positive class with 0 when undefined (`zero_division=0`), ROC-AUC
//! from probabilities with tied scores counted as half (the trapezoidal rule
//! over distinct thresholds, which equals the Mann-Whitney statistic with
//! mid-ranks), and the majority-class baseline of `DummyClassifier`
//! (`most_frequent`, ties going to the smaller label).

use serde::{Deserialize, Serialize};

/// Test-fold metrics of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FoldMetrics {
    /// Fraction of test examples whose predicted label is right.
    pub accuracy: f64,
    /// F1 of the positive class.
    pub f1: f64,
    /// ROC-AUC of the positive-class probability; `None` when the test fold
    /// holds a single class.
    pub auc: Option<f64>,
    /// Accuracy of always predicting the training fold's majority class.
    pub baseline: f64,
    /// Accuracy on the training fold (to see over-fitting).
    pub train_accuracy: f64,
}

/// Fraction of positions where `pred == truth`.
pub fn accuracy(pred: &[u8], truth: &[u8]) -> f64 {
    debug_assert_eq!(pred.len(), truth.len());
    if truth.is_empty() {
        return f64::NAN;
    }
    let right = pred.iter().zip(truth).filter(|(p, t)| p == t).count();
    right as f64 / truth.len() as f64
}

/// F1 score of class `positive`; 0 when precision and recall are both undefined or zero.
pub fn f1(pred: &[u8], truth: &[u8], positive: u8) -> f64 {
    let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
    for (&p, &t) in pred.iter().zip(truth) {
        match (p == positive, t == positive) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            (false, false) => {}
        }
    }
    let denom = 2 * tp + fp + fneg;
    if denom == 0 {
        return 0.0;
    }
    2.0 * tp as f64 / denom as f64
}

/// ROC-AUC of `scores` (higher means more likely positive) against
/// `is_positive`; ties between a positive and a negative count one half.
/// `None` when either class is absent.
pub fn roc_auc(scores: &[f64], is_positive: &[bool]) -> Option<f64> {
    debug_assert_eq!(scores.len(), is_positive.len());
    let n_pos = is_positive.iter().filter(|&&p| p).count();
    let n_neg = is_positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of mid-ranks (1-based) of the positives.
    let mut rank_sum = 0.0f64;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let mid_rank = (start + 1 + end) as f64 / 2.0;
        let pos_here = order[start..end]
            .iter()
            .filter(|&&i| is_positive[i])
            .count();
        rank_sum += mid_rank * pos_here as f64;
        start = end;
    }
    let u = rank_sum - (n_pos as f64) * (n_pos as f64 + 1.0) / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// The label `DummyClassifier(strategy="most_frequent")` predicts: the more
/// frequent label in `train`, 0 on a tie.
pub fn majority_label(train: &[u8]) -> u8 {
    let ones = train.iter().filter(|&&y| y == 1).count();
    u8::from(ones > train.len() - ones)
}

/// Mean and (population, `ddof=0`) standard deviation, skipping NaNs;
/// `None` when no finite value remains.
pub(crate) fn mean_std(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    Some((mean, var.sqrt()))
}
