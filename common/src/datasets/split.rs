//! Seeded, stratified train/test splits and k-fold, plain or group-aware.
//!
//! Stratification works per class (or, for groups, per class-composition of a
//! group): the members are shuffled with a generator seeded from the seed and
//! the stratum, and a fixed share goes to training. Indices come back sorted.

use super::noise::example_rng;
use super::DatasetError;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

/// One train/test partition of example indices.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

fn too_few(detail: String) -> DatasetError {
    DatasetError::TooFew {
        dataset: "(split)".into(),
        detail,
    }
}

fn classes(labels: &[u8]) -> BTreeMap<u8, Vec<usize>> {
    let mut by: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by.entry(l).or_default().push(i);
    }
    by
}

fn check_two_classes(labels: &[u8]) -> Result<(), DatasetError> {
    let by = classes(labels);
    if by.len() < 2 {
        return Err(too_few(format!(
            "only one class among {} labels; a probe needs two",
            labels.len()
        )));
    }
    Ok(())
}

fn shuffled(mut v: Vec<usize>, seed: u64, stratum: &str) -> Vec<usize> {
    v.shuffle(&mut example_rng(seed, &format!("split/{stratum}"), 0));
    v
}

/// Share of each stratum that goes to training: round(n * frac), kept within
/// [1, n - 1] so both sides see every stratum.
fn n_train(n: usize, frac: f64) -> usize {
    ((n as f64 * frac).round() as usize).clamp(1, n - 1)
}

/// A stratified split with `train_frac` of each class in training (the Concept
/// Depth paper used 0.6). Each class needs at least 2 examples.
pub fn stratified_split(labels: &[u8], train_frac: f64, seed: u64) -> Result<Split, DatasetError> {
    check_frac(train_frac)?;
    check_two_classes(labels)?;
    let mut split = Split {
        train: Vec::new(),
        test: Vec::new(),
    };
    for (class, idx) in classes(labels) {
        if idx.len() < 2 {
            return Err(too_few(format!(
                "class {class} has {} example(s); a split needs at least 2 per class",
                idx.len()
            )));
        }
        let idx = shuffled(idx, seed, &format!("class{class}"));
        let k = n_train(idx.len(), train_frac);
        split.train.extend_from_slice(&idx[..k]);
        split.test.extend_from_slice(&idx[k..]);
    }
    split.train.sort_unstable();
    split.test.sort_unstable();
    Ok(split)
}

/// Stratified k-fold: fold f tests on every k-th shuffled member of each class
/// starting at f. Each class needs at least k examples.
pub fn kfold(labels: &[u8], k: usize, seed: u64) -> Result<Vec<Split>, DatasetError> {
    if k < 2 {
        return Err(too_few(format!("k-fold needs k >= 2, got {k}")));
    }
    check_two_classes(labels)?;
    let mut test_of: Vec<usize> = vec![0; labels.len()];
    for (class, idx) in classes(labels) {
        if idx.len() < k {
            return Err(too_few(format!(
                "class {class} has {} examples; {k}-fold needs at least {k} per class",
                idx.len()
            )));
        }
        for (pos, i) in shuffled(idx, seed, &format!("class{class}"))
            .into_iter()
            .enumerate()
        {
            test_of[i] = pos % k;
        }
    }
    Ok(folds_from(&test_of, k))
}

fn folds_from(test_of: &[usize], k: usize) -> Vec<Split> {
    (0..k)
        .map(|f| {
            let (test, train): (Vec<usize>, Vec<usize>) =
                (0..test_of.len()).partition(|&i| test_of[i] == f);
            Split { train, test }
        })
        .collect()
}

/// Groups keyed by their class composition (how many of each class they hold),
/// so that stratifying over groups also stratifies over examples.
/// Groups by class composition: composition -> group ids.
type Strata = BTreeMap<Vec<(u8, usize)>, Vec<usize>>;

fn group_strata(labels: &[u8], groups: &[usize]) -> Result<Strata, DatasetError> {
    if labels.len() != groups.len() {
        return Err(too_few(format!(
            "{} labels but {} group ids",
            labels.len(),
            groups.len()
        )));
    }
    let mut members: BTreeMap<usize, BTreeMap<u8, usize>> = BTreeMap::new();
    for (&l, &g) in labels.iter().zip(groups) {
        *members.entry(g).or_default().entry(l).or_default() += 1;
    }
    let mut strata: Strata = BTreeMap::new();
    for (g, comp) in members {
        strata
            .entry(comp.into_iter().collect())
            .or_default()
            .push(g);
    }
    Ok(strata)
}

fn stratum_name(comp: &[(u8, usize)]) -> String {
    comp.iter()
        .map(|(c, n)| format!("{c}x{n}"))
        .collect::<Vec<_>>()
        .join("+")
}

/// A split that keeps every group (e.g. the true and false statement about one
/// city) on one side, so a probe cannot succeed by matching pairs.
pub fn group_stratified_split(
    labels: &[u8],
    groups: &[usize],
    train_frac: f64,
    seed: u64,
) -> Result<Split, DatasetError> {
    check_frac(train_frac)?;
    check_two_classes(labels)?;
    let strata = group_strata(labels, groups)?;
    let n_groups: usize = strata.values().map(Vec::len).sum();
    if n_groups < 2 {
        return Err(too_few(format!(
            "{n_groups} group(s); a group split needs at least 2"
        )));
    }
    let mut train_groups = std::collections::HashSet::new();
    for (comp, gs) in strata {
        let gs = shuffled(gs, seed, &format!("groups/{}", stratum_name(&comp)));
        // A stratum with a single group cannot be shared; it goes to training.
        let k = if gs.len() == 1 {
            1
        } else {
            n_train(gs.len(), train_frac)
        };
        train_groups.extend(gs[..k].iter().copied());
    }
    let (train, test): (Vec<usize>, Vec<usize>) =
        (0..labels.len()).partition(|&i| train_groups.contains(&groups[i]));
    let split = Split { train, test };
    for (side, idx) in [("training", &split.train), ("test", &split.test)] {
        check_two_classes(&idx.iter().map(|&i| labels[i]).collect::<Vec<_>>()).map_err(|_| {
            too_few(format!(
                "the group split leaves the {side} side with one class"
            ))
        })?;
    }
    Ok(split)
}

/// Group-aware stratified k-fold: whole groups are dealt round-robin to folds
/// within each class-composition stratum.
pub fn group_kfold(
    labels: &[u8],
    groups: &[usize],
    k: usize,
    seed: u64,
) -> Result<Vec<Split>, DatasetError> {
    if k < 2 {
        return Err(too_few(format!("k-fold needs k >= 2, got {k}")));
    }
    check_two_classes(labels)?;
    let strata = group_strata(labels, groups)?;
    let n_groups: usize = strata.values().map(Vec::len).sum();
    if n_groups < k {
        return Err(too_few(format!(
            "{n_groups} groups; {k}-fold needs at least {k}"
        )));
    }
    let mut fold_of_group = std::collections::HashMap::new();
    // Each stratum starts dealing at a different fold so small strata do not
    // all pile into fold 0.
    for (offset, (comp, gs)) in strata.into_iter().enumerate() {
        for (pos, g) in shuffled(gs, seed, &format!("groups/{}", stratum_name(&comp)))
            .into_iter()
            .enumerate()
        {
            fold_of_group.insert(g, (pos + offset) % k);
        }
    }
    let test_of: Vec<usize> = groups.iter().map(|g| fold_of_group[g]).collect();
    let folds = folds_from(&test_of, k);
    for (f, s) in folds.iter().enumerate() {
        check_two_classes(&s.test.iter().map(|&i| labels[i]).collect::<Vec<_>>())
            .map_err(|_| too_few(format!("group fold {f} has one class in its test side")))?;
    }
    Ok(folds)
}

fn check_frac(f: f64) -> Result<(), DatasetError> {
    if !(f > 0.0 && f < 1.0) {
        return Err(DatasetError::BadOption {
            what: "train fraction",
            value: f.to_string(),
            expected: "a number strictly between 0 and 1".into(),
        });
    }
    Ok(())
}
