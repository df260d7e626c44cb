//! Parity of the probe solver with scikit-learn on a committed fixture
//! (`scripts/probe_fixture.py`): same features, same split, every layer, raw
//! and standardised features.

use cd_common::probe::layers::evaluate;
use cd_common::probe::logistic::{fit, Rows, SolverConfig};
use cd_common::probe::npy;
use cd_common::probe::split::Fold;
use serde_json::Value;
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probe")
}

fn as_usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn matches_sklearn_on_every_layer_direct_newton() {
    check(&SolverConfig::default());
}

#[test]
fn matches_sklearn_on_every_layer_newton_cg() {
    check(&SolverConfig {
        direct_max_dim: 0,
        ..SolverConfig::default()
    });
}

fn check(solver: &SolverConfig) {
    let dir = fixture_dir();
    let feats = npy::read_f32(&dir.join("features.npy")).unwrap();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sklearn.json")).unwrap()).unwrap();
    let (n, n_layers, d) = (feats.shape[0], feats.shape[1], feats.shape[2]);
    let labels: Vec<u8> = as_usizes(&meta["labels"])
        .into_iter()
        .map(|v| v as u8)
        .collect();
    let fold = Fold {
        train: as_usizes(&meta["train"]),
        test: as_usizes(&meta["test"]),
    };
    let y_train: Vec<u8> = fold.train.iter().map(|&i| labels[i]).collect();
    let y_test: Vec<u8> = fold.test.iter().map(|&i| labels[i]).collect();
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for layer in 0..n_layers {
        let x = Rows::layer(&feats.data, n, n_layers, d, layer).unwrap();
        for (key, standardize) in [("raw", false), ("standardized", true)] {
            let sk = &meta["layers"][layer][key];
            let model = fit(&x, &fold.train, &y_train, 1.0, standardize, solver).unwrap();
            assert!(
                model.converged,
                "layer {layer} {key}: solver did not converge: {model:?}"
            );
            let (m, _) = evaluate(&model, &x, &fold, &y_train, &y_test, 1);
            let acc_gap = (m.accuracy - sk["accuracy"].as_f64().unwrap()).abs();
            let auc_gap = (m.auc.unwrap() - sk["auc"].as_f64().unwrap()).abs();
            assert!(
                acc_gap <= 0.005,
                "layer {layer} {key}: accuracy {} vs sklearn {}",
                m.accuracy,
                sk["accuracy"]
            );
            assert!(
                auc_gap <= 0.005,
                "layer {layer} {key}: auc {:?} vs sklearn {}",
                m.auc,
                sk["auc"]
            );
            assert!(
                (m.f1 - sk["f1"].as_f64().unwrap()).abs() <= 0.01,
                "layer {layer} {key}: f1"
            );
            // Both solvers reach the same optimum: the weights agree closely.
            let coef: Vec<f64> = sk["coef_raw"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let diff: f64 = coef
                .iter()
                .zip(&model.w)
                .map(|(a, &b)| (a - f64::from(b)).powi(2))
                .sum::<f64>()
                .sqrt();
            let norm: f64 = coef.iter().map(|a| a * a).sum::<f64>().sqrt();
            let rel = diff / norm;
            assert!(
                rel <= 2e-3,
                "layer {layer} {key}: ‖w − w_sklearn‖/‖w_sklearn‖ = {rel:.2e}"
            );
            worst = (worst.0.max(acc_gap), worst.1.max(auc_gap), worst.2.max(rel));
        }
    }
    println!(
        "worst gaps over layers: accuracy {:.4}, auc {:.5}, relative weight error {:.2e}",
        worst.0, worst.1, worst.2
    );
}
