//! A multiple-choice cell end to end (`cd-worker cell`: SmolLM2-135M on the
//! first TruthfulQA items): its exported per-item scores
//! (`mc_scores.safetensors`) recompute, in `scripts/mc_recompute.py`, exactly
//! the MC1/MC2/MC3 of its `metrics.json` at every layer, lens and
//! normalisation.

mod engine_support;

use cd_common::probe::mc::{McConfig, ScoreDtype};
use cd_common::spec::{Site, TaskKind};
use engine_support::{in_ci, python, run_cell, shared_datasets, smollm2_cell_spec, smollm2_path};
use std::process::Command;

#[test]
fn exported_scores_recompute_the_reported_mc_metrics() {
    let Some(gguf) = smollm2_path() else { return };
    let data = shared_datasets().join("llama_analysis/data");
    if !data.join("TruthfulQA.csv").is_file() {
        assert!(!in_ci(), "{}: no TruthfulQA.csv", data.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("CD_HASH_CACHE", tmp.path().join("hashes"));
    for dtype in [ScoreDtype::F32, ScoreDtype::Bf16] {
        let mut spec = smollm2_cell_spec(&gguf, "mc", "truthfulqa_mc", &data);
        spec.kind = TaskKind::MultipleChoice;
        spec.site = Site::Residual;
        spec.probe = None;
        spec.depth = None;
        spec.mc = Some(McConfig {
            score_dtype: dtype,
            max_items: Some(3),
        });
        let cell = run_cell(&spec, tmp.path());
        let o = Command::new(python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../scripts/mc_recompute.py"
            ))
            .arg(cell.join("mc_scores.safetensors"))
            .arg(cell.join("metrics.json"))
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{dtype:?}: recomputed MC differs: {report}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
        assert_eq!(v["items"], 3);
        assert_eq!(v["rows_checked"], 2 * 2 * 31);
        println!("{dtype:?}: {report}");
    }
}
