//! A real Concept Depth cell (SmolLM2-135M on Cities, the paper's probe site
//! and its exact split: scikit-learn's `train_test_split(test_size=0.4,
//! random_state=42)` over class-0-then-class-1 rows) run by `cd-worker cell`,
//! then refitted by scikit-learn on the exported features and the recorded
//! split (`scripts/sklearn_refit.py`): the same per-layer accuracy within 0.1
//! percentage point and AUC within 0.001, and scikit-learn's own split.

mod engine_support;

use cd_common::depth::DepthConfig;
use cd_common::probe::{ProbeConfig, SplitConfig};
use cd_common::spec::Site;
use engine_support::{in_ci, python, run_cell, shared_datasets, smollm2_cell_spec, smollm2_path};
use std::process::Command;

#[test]
fn scikit_learn_on_our_features_and_split_gives_our_numbers() {
    let Some(gguf) = smollm2_path() else { return };
    let data = shared_datasets().join("cd");
    if !data.join("cities.csv").is_file() {
        assert!(!in_ci(), "{}: no cities.csv", data.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("CD_HASH_CACHE", tmp.path().join("hashes"));
    let mut spec = smollm2_cell_spec(&gguf, "refit", "cities", &data);
    spec.site = Site::PostAttentionNorm;
    spec.batch_size = 16;
    spec.upload_features = true;
    spec.probe = Some(ProbeConfig {
        split: SplitConfig::Sklearn {
            test_size: 0.4,
            random_state: Some(42),
        },
        ..ProbeConfig::default()
    });
    spec.depth = Some(DepthConfig {
        bootstrap: 200,
        ..DepthConfig::default()
    });
    let cell = run_cell(&spec, tmp.path());
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cell.join("metrics.json")).unwrap()).unwrap();
    println!("cell timings (s): {}", metrics["timings"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/sklearn_refit.py");
    let o = Command::new(python())
        .arg(script)
        .arg(cell.join("features.safetensors"))
        .arg(cell.join("metrics.json"))
        .args(["--sklearn-split", "0.4", "42"])
        .args(["--max-accuracy-gap", "0.001", "--max-auc-gap", "0.001"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    if !o.status.success()
        && !in_ci()
        && String::from_utf8_lossy(&o.stderr).contains("No module named")
    {
        eprintln!("skipping: scikit-learn is not installed for {}", python());
        return;
    }
    assert!(
        o.status.success(),
        "scikit-learn disagrees: {report}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(v["split_identical"], true, "{report}");
    assert_eq!(v["n"], 1496);
    assert_eq!(v["layers"], 30);
    println!(
        "refit on {} layers: max accuracy gap {}, max AUC gap {}",
        v["layers"], v["max_accuracy_gap"], v["max_auc_gap"]
    );
}
