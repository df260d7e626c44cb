//! Seeded stratified splits: one holdout split or k folds.
//!
//! Splits are a function of `(labels, config, seed)` only, so every worker and
//! every retry of a task evaluates on the same examples. Within each class the
//! example indices are shuffled with ChaCha8 seeded from `seed`; a holdout takes
//! `round(n_c · test_fraction)` of class `c` (at least one, leaving at least
//! one for training); k-fold deals the shuffled indices of all classes, class
//! after class, round-robin to the folds, so folds differ in size by at most
//! one and every class is spread evenly.

use super::{ProbeError, SplitConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One train/test partition of example indices (both sorted ascending).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fold {
    /// Indices of training examples.
    pub train: Vec<usize>,
    /// Indices of test examples.
    pub test: Vec<usize>,
}

/// Indices of each class, in example order.
fn by_class(labels: &[u8]) -> Result<[Vec<usize>; 2], ProbeError> {
    let mut classes: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for (i, &y) in labels.iter().enumerate() {
        match y {
            0 | 1 => classes[y as usize].push(i),
            other => {
                return Err(ProbeError::Input(format!(
                    "label of example {i} is {other}; expected 0 or 1"
                )))
            }
        }
    }
    Ok(classes)
}

/// Split `labels` (0/1) according to `config`, seeded by `seed`.
pub fn make_folds(labels: &[u8], config: &SplitConfig, seed: u64) -> Result<Vec<Fold>, ProbeError> {
    let mut classes = by_class(labels)?;
    let min_needed = match *config {
        SplitConfig::Holdout { .. } => 2,
        SplitConfig::Kfold { k } => k.max(2),
    };
    for (c, idx) in classes.iter().enumerate() {
        if idx.len() < min_needed {
            return Err(ProbeError::Input(format!(
                "class {c} has {} examples; this split needs at least {min_needed} per class",
                idx.len()
            )));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for idx in classes.iter_mut() {
        idx.shuffle(&mut rng);
    }
    let mut folds = match *config {
        SplitConfig::Holdout { test_fraction } => {
            let mut fold = Fold {
                train: Vec::new(),
                test: Vec::new(),
            };
            for idx in &classes {
                let n = idx.len();
                let n_test = ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1);
                fold.test.extend_from_slice(&idx[..n_test]);
                fold.train.extend_from_slice(&idx[n_test..]);
            }
            vec![fold]
        }
        SplitConfig::Kfold { k } => {
            let mut tests: Vec<Vec<usize>> = vec![Vec::new(); k];
            let mut next = 0usize;
            for idx in &classes {
                for &i in idx {
                    tests[next % k].push(i);
                    next += 1;
                }
            }
            tests
                .into_iter()
                .map(|test| {
                    let mut in_test = vec![false; labels.len()];
                    for &i in &test {
                        in_test[i] = true;
                    }
                    let train = (0..labels.len()).filter(|&i| !in_test[i]).collect();
                    Fold { train, test }
                })
                .collect()
        }
    };
    for f in folds.iter_mut() {
        f.train.sort_unstable();
        f.test.sort_unstable();
    }
    Ok(folds)
}

/// Splits made by the datasets module (e.g. group-aware splits that keep
/// Cities/Counterfact pairs together) are probed as they are.
impl From<crate::datasets::split::Split> for Fold {
    fn from(s: crate::datasets::split::Split) -> Self {
        let (mut train, mut test) = (s.train, s.test);
        train.sort_unstable();
        test.sort_unstable();
        Fold { train, test }
    }
}
