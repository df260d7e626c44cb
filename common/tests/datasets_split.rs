//! Seeded, stratified splits and k-fold, plain and group-aware.

use cd_common::datasets::{
    group_kfold, group_stratified_split, kfold, stratified_split, DatasetError,
};
use std::collections::HashSet;

fn labels(n0: usize, n1: usize) -> Vec<u8> {
    let mut l = vec![0u8; n0];
    l.extend(vec![1u8; n1]);
    l
}

#[test]
fn stratified_split_keeps_class_shares_and_is_seeded() {
    let y = labels(300, 200);
    let s = stratified_split(&y, 0.6, 42).unwrap();
    assert_eq!(s.train.len() + s.test.len(), 500);
    let train: HashSet<_> = s.train.iter().collect();
    assert!(s.test.iter().all(|i| !train.contains(i)), "disjoint");
    assert_eq!(s.train.iter().filter(|&&i| y[i] == 0).count(), 180);
    assert_eq!(s.train.iter().filter(|&&i| y[i] == 1).count(), 120);
    assert_eq!(s, stratified_split(&y, 0.6, 42).unwrap());
    assert_ne!(s, stratified_split(&y, 0.6, 43).unwrap());
}

#[test]
fn splits_refuse_one_class_and_too_few() {
    assert!(matches!(
        stratified_split(&labels(10, 0), 0.6, 1),
        Err(DatasetError::TooFew { .. })
    ));
    assert!(matches!(
        stratified_split(&labels(10, 1), 0.6, 1),
        Err(DatasetError::TooFew { .. })
    ));
    assert!(matches!(
        kfold(&labels(10, 3), 5, 1),
        Err(DatasetError::TooFew { .. })
    ));
    assert!(matches!(
        stratified_split(&labels(5, 5), 1.0, 1),
        Err(DatasetError::BadOption { .. })
    ));
}

#[test]
fn kfold_tests_every_example_once() {
    let y = labels(53, 47);
    let folds = kfold(&y, 5, 7).unwrap();
    assert_eq!(folds.len(), 5);
    let mut seen = vec![0; y.len()];
    for f in &folds {
        assert_eq!(f.train.len() + f.test.len(), y.len());
        for &i in &f.test {
            seen[i] += 1;
        }
        let ones = f.test.iter().filter(|&&i| y[i] == 1).count();
        assert!((9..=10).contains(&ones), "stratified: {ones}");
    }
    assert!(seen.iter().all(|&c| c == 1));
}

#[test]
fn group_splits_keep_pairs_together() {
    // 100 pairs (one true, one false statement each) plus 10 lone true ones.
    let mut y = Vec::new();
    let mut g = Vec::new();
    for p in 0..100 {
        y.extend([0u8, 1]);
        g.extend([p, p]);
    }
    for p in 100..110 {
        y.push(0);
        g.push(p);
    }
    let s = group_stratified_split(&y, &g, 0.6, 3).unwrap();
    let train_groups: HashSet<_> = s.train.iter().map(|&i| g[i]).collect();
    assert!(
        s.test.iter().all(|&i| !train_groups.contains(&g[i])),
        "no group on both sides"
    );
    assert_eq!(train_groups.len(), 60 + 6);
    assert_eq!(s, group_stratified_split(&y, &g, 0.6, 3).unwrap());
    let folds = group_kfold(&y, &g, 5, 3).unwrap();
    let mut seen = vec![0; y.len()];
    for f in &folds {
        let tg: HashSet<_> = f.train.iter().map(|&i| g[i]).collect();
        assert!(f.test.iter().all(|&i| !tg.contains(&g[i])));
        for &i in &f.test {
            seen[i] += 1;
        }
    }
    assert!(seen.iter().all(|&c| c == 1));
}
