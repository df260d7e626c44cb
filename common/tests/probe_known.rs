//! Probes on data whose answer is known, metric conventions, splits, and a
//! cross-check against linfa-logistic (an independent solver).

use cd_common::probe::eval::{accuracy, f1, majority_label, roc_auc};
use cd_common::probe::layers::{evaluate, probe_all_layers, FeatureView};
use cd_common::probe::logistic::{fit, Rows, SolverConfig};
use cd_common::probe::split::{make_folds, Fold};
use cd_common::probe::{ProbeConfig, SplitConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller; test data only needs to be seeded, not fast.
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// `n × d` features where `f(label, rng, j)` draws column `j`.
fn dataset(
    n: usize,
    d: usize,
    seed: u64,
    f: impl Fn(u8, &mut ChaCha8Rng, usize) -> f32,
) -> (Vec<f32>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let label = u8::from(i % 5 < 2); // 40 % positives
        y.push(label);
        for j in 0..d {
            x.push(f(label, &mut rng, j));
        }
    }
    (x, y)
}

fn holdout(y: &[u8]) -> Fold {
    make_folds(y, None, &SplitConfig::default(), 7)
        .unwrap()
        .remove(0)
}

fn fit_eval(
    x: &[f32],
    y: &[u8],
    d: usize,
    standardize: bool,
) -> (
    cd_common::probe::logistic::LogisticModel,
    cd_common::probe::eval::FoldMetrics,
) {
    let rows = Rows::contiguous(x, y.len(), d).unwrap();
    let fold = holdout(y);
    let ytr: Vec<u8> = fold.train.iter().map(|&i| y[i]).collect();
    let yte: Vec<u8> = fold.test.iter().map(|&i| y[i]).collect();
    let model = fit(
        &rows,
        &fold.train,
        &ytr,
        1.0,
        standardize,
        &SolverConfig::default(),
    )
    .unwrap();
    let (m, _) = evaluate(&model, &rows, &fold, &ytr, &yte, 1);
    (model, m)
}

#[test]
fn separable_data_is_classified_perfectly() {
    let (x, y) = dataset(300, 20, 1, |l, r, _| {
        normal(r) + if l == 1 { 6.0 } else { -6.0 }
    });
    for standardize in [false, true] {
        let (model, m) = fit_eval(&x, &y, 20, standardize);
        assert!(model.converged, "{model:?}");
        assert_eq!(m.accuracy, 1.0);
        assert_eq!(m.auc, Some(1.0));
        assert_eq!(m.f1, 1.0);
    }
}

#[test]
fn label_noise_gives_chance_level() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (x, _) = dataset(600, 5, 2, |_, r, _| normal(r));
    let y: Vec<u8> = (0..600)
        .map(|_| u8::from(rng.random::<f64>() < 0.5))
        .collect();
    let (model, m) = fit_eval(&x, &y, 5, false);
    assert!(model.converged);
    assert!((m.auc.unwrap() - 0.5).abs() < 0.1, "auc {:?}", m.auc);
    assert!(m.accuracy < 0.6, "accuracy {}", m.accuracy);
}

#[test]
fn constant_features_learn_only_the_base_rate() {
    let (x, y) = dataset(250, 4, 4, |_, _, j| if j == 0 { 0.0 } else { 3.0 });
    for standardize in [false, true] {
        let (model, m) = fit_eval(&x, &y, 4, standardize);
        assert!(model.converged, "{model:?}");
        // The decision value is the training log-odds whatever the split of it
        // between weights and intercept (the penalty keeps weights small).
        let fold = holdout(&y);
        let pos = fold.train.iter().filter(|&&i| y[i] == 1).count() as f64;
        let log_odds = (pos / (fold.train.len() as f64 - pos)).ln();
        let z = 3.0 * model.w[1..].iter().map(|&w| f64::from(w)).sum::<f64>() + model.b;
        assert!(
            (z - log_odds).abs() < 1e-4,
            "decision {z} vs log-odds {log_odds}"
        );
        assert_eq!(model.w[0], 0.0);
        assert_eq!(m.accuracy, m.baseline, "predicts the majority class");
        assert_eq!(m.auc, Some(0.5), "all scores tie");
    }
}

#[test]
fn single_informative_feature_carries_the_weight() {
    let (x, y) = dataset(400, 10, 5, |l, r, j| {
        if j == 3 {
            f32::from(l) * 2.0 - 1.0 + 0.4 * normal(r)
        } else {
            normal(r)
        }
    });
    let (model, m) = fit_eval(&x, &y, 10, false);
    let top = (0..10)
        .max_by(|&a, &b| model.w[a].abs().total_cmp(&model.w[b].abs()))
        .unwrap();
    assert_eq!(top, 3);
    assert!(model.w[3] > 0.0, "positive class is label 1");
    assert!(m.accuracy >= 0.95, "{}", m.accuracy);
}

#[test]
fn auc_counts_ties_as_half_like_sklearn() {
    // sklearn.metrics.roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert_eq!(
        roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
        Some(0.75)
    );
    // roc_auc_score([0, 1, 0, 1], [0.2, 0.5, 0.5, 0.9]) == 0.875
    assert_eq!(
        roc_auc(&[0.2, 0.5, 0.5, 0.9], &[false, true, false, true]),
        Some(0.875)
    );
    assert_eq!(roc_auc(&[0.5; 4], &[false, true, false, true]), Some(0.5));
    assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
}

#[test]
fn f1_uses_the_named_positive_class() {
    let truth = [1, 1, 0, 0, 0];
    let pred = [1, 0, 0, 0, 1];
    assert!((f1(&pred, &truth, 1) - 0.5).abs() < 1e-12);
    // Class 0: tp=2, fp=1, fn=1.
    assert!((f1(&pred, &truth, 0) - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(
        f1(&[0, 0], &[0, 0], 1),
        0.0,
        "undefined F1 is 0 as sklearn's zero_division=0"
    );
    assert_eq!(accuracy(&pred, &truth), 0.6);
    assert_eq!(majority_label(&[1, 1, 0]), 1);
    assert_eq!(majority_label(&[1, 0]), 0, "ties go to the smaller label");
}

#[test]
fn splits_are_seeded_stratified_and_disjoint() {
    let y: Vec<u8> = (0..103).map(|i| u8::from(i % 3 == 0)).collect();
    let a = make_folds(&y, None, &SplitConfig::default(), 11).unwrap();
    assert_eq!(
        a,
        make_folds(&y, None, &SplitConfig::default(), 11).unwrap()
    );
    assert_ne!(
        a,
        make_folds(&y, None, &SplitConfig::default(), 12).unwrap()
    );
    let f = &a[0];
    let pos_test = f.test.iter().filter(|&&i| y[i] == 1).count();
    assert_eq!(pos_test, (35.0f64 * 0.4).round() as usize);
    assert_eq!(f.test.len() + f.train.len(), 103);
    let folds = make_folds(&y, None, &SplitConfig::Kfold { k: 5 }, 1).unwrap();
    let mut seen = vec![0; 103];
    for f in &folds {
        assert!(f.test.len() == 20 || f.test.len() == 21);
        let p = f.test.iter().filter(|&&i| y[i] == 1).count();
        assert!(p == 7 || p == 6, "stratified: {p} positives");
        f.test.iter().for_each(|&i| seen[i] += 1);
        assert!(f.train.iter().all(|i| !f.test.contains(i)));
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "every example tested exactly once"
    );
    assert!(
        make_folds(&[0, 0, 0, 1], None, &SplitConfig::default(), 0).is_err(),
        "one positive cannot be split"
    );
    assert!(
        make_folds(&[0, 2], None, &SplitConfig::default(), 0).is_err(),
        "labels must be 0/1"
    );
}

#[test]
fn all_layers_in_parallel_with_kfold_mean_and_folds() {
    let (n, layers, d) = (200, 4, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let labels: Vec<u8> = (0..n).map(|i| u8::from(i % 2 == 0)).collect();
    let mut data = Vec::with_capacity(n * layers * d);
    for &y in &labels {
        for l in 0..layers {
            for _ in 0..d {
                data.push(normal(&mut rng) + (f32::from(y) * 2.0 - 1.0) * 0.5 * l as f32);
            }
        }
    }
    let cfg = ProbeConfig {
        split: SplitConfig::Kfold { k: 4 },
        ..ProbeConfig::default()
    };
    let run = probe_all_layers(
        &FeatureView {
            data: &data,
            n,
            n_layers: layers,
            d,
            labels: &labels,
        },
        None,
        &cfg,
        0,
    )
    .unwrap();
    assert_eq!(run.fits.len(), layers * 4);
    let rows = cd_common::metrics::layer_rows(&run, layers, false);
    assert!(
        rows[0].accuracy_mean < 0.65,
        "layer 0 has no signal: {}",
        rows[0].accuracy_mean
    );
    assert!(rows[3].accuracy_mean > 0.9);
    assert!(rows
        .iter()
        .all(|r| r.n_folds == 4 && r.converged_folds == 4 && r.accuracy_std >= 0.0));
    assert!(rows.iter().all(|r| (r.baseline_mean - 0.5).abs() < 0.02));
}

/// linfa-logistic reaches the same accuracy on the same split; its
/// probabilities are of the *more frequent* training class, so its AUC equals
/// ours only after mapping that class to our positive label.
#[test]
fn agrees_with_linfa_logistic_including_its_positive_class() {
    use linfa::prelude::*;
    use linfa_logistic::LogisticRegression;
    use ndarray::{Array1, Array2};
    // 40 % positives: label 1 is the *less* frequent class.
    let d = 6;
    let (x, y) = dataset(500, d, 8, |l, r, j| {
        normal(r) + if j < 2 { f32::from(l) * 1.5 } else { 0.0 }
    });
    let fold = holdout(&y);
    let rows = Rows::contiguous(&x, y.len(), d).unwrap();
    let ytr: Vec<u8> = fold.train.iter().map(|&i| y[i]).collect();
    let yte: Vec<u8> = fold.test.iter().map(|&i| y[i]).collect();
    let ours = fit(
        &rows,
        &fold.train,
        &ytr,
        1.0,
        false,
        &SolverConfig::default(),
    )
    .unwrap();
    let (m, _) = evaluate(&ours, &rows, &fold, &ytr, &yte, 1);

    let take = |idx: &[usize]| {
        Array2::from_shape_fn((idx.len(), d), |(i, j)| f64::from(x[idx[i] * d + j]))
    };
    let train = Dataset::new(
        take(&fold.train),
        Array1::from_iter(ytr.iter().map(|&v| v as usize)),
    );
    // linfa minimises Σ logloss + α/2 ‖w‖², so α = 1/C.
    let linfa = LogisticRegression::default()
        .alpha(1.0)
        .max_iterations(1000)
        .fit(&train)
        .unwrap();
    let xt = take(&fold.test);
    let pred = linfa.predict(&xt);
    let pred_u8: Vec<u8> = pred.iter().map(|&v| v as u8).collect();
    assert!((accuracy(&pred_u8, &yte) - m.accuracy).abs() <= 0.005);
    assert_eq!(
        linfa.labels().pos.class,
        0,
        "linfa's positive class is the frequent one here"
    );
    let p_linfa = linfa.predict_probabilities(&xt).to_vec();
    let is_one: Vec<bool> = yte.iter().map(|&v| v == 1).collect();
    let naive = roc_auc(&p_linfa, &is_one).unwrap();
    assert!(
        (naive - (1.0 - m.auc.unwrap())).abs() < 0.005,
        "read naively, linfa's AUC is flipped"
    );
    let p_one: Vec<f64> = p_linfa.iter().map(|p| 1.0 - p).collect();
    assert!((roc_auc(&p_one, &is_one).unwrap() - m.auc.unwrap()).abs() < 0.005);
}

#[test]
fn woodbury_newton_cg_matches_the_direct_newton_step_on_wide_data() {
    // Fewer training rows than features, with an offset and a few massive
    // dimensions like raw activations: the regime of the Woodbury path.
    let (n, d) = (250, 400);
    let (x, y) = dataset(n, d, 11, |label, rng, j| {
        let signal = if j < 4 { f32::from(label) * 0.8 } else { 0.0 };
        let scale = if j < 3 {
            60.0
        } else {
            1.0 + (j % 7) as f32 * 0.2
        };
        5.0 + signal + scale * normal(rng)
    });
    let rows = Rows::contiguous(&x, n, d).unwrap();
    let fold = holdout(&y);
    let ytr: Vec<u8> = fold.train.iter().map(|&i| y[i]).collect();
    assert!(fold.train.len() < d);
    for standardize in [false, true] {
        let solve =
            |cfg: SolverConfig| fit(&rows, &fold.train, &ytr, 1.0, standardize, &cfg).unwrap();
        let direct = solve(SolverConfig::default());
        let woodbury = solve(SolverConfig {
            direct_max_dim: 0,
            ..SolverConfig::default()
        });
        let jacobi = solve(SolverConfig {
            direct_max_dim: 0,
            woodbury_max_rows: 0,
            max_cg: 5000,
            ..SolverConfig::default()
        });
        for (name, m) in [("woodbury", &woodbury), ("jacobi", &jacobi)] {
            assert!(m.converged, "{name} standardize={standardize}: {m:?}");
            let diff: f64 =
                m.w.iter()
                    .zip(&direct.w)
                    .map(|(a, b)| f64::from(a - b).powi(2))
                    .sum::<f64>()
                    .sqrt();
            let norm: f64 = direct
                .w
                .iter()
                .map(|a| f64::from(*a).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                diff / norm < 1e-3,
                "{name} standardize={standardize}: relative weight gap {:.2e}",
                diff / norm
            );
            assert!((m.b - direct.b).abs() < 1e-3 * (1.0 + direct.b.abs()));
        }
        // The exact-inverse preconditioner needs a handful of CG steps per
        // Newton step where the diagonal one needs many.
        assert!(
            woodbury.cg_iterations * 3 < jacobi.cg_iterations,
            "woodbury {} vs jacobi {} CG steps",
            woodbury.cg_iterations,
            jacobi.cg_iterations
        );
    }
}
