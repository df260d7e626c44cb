//! Probe benchmark: fit every layer of `DIR/features.npy` on the split in
//! `DIR/train.npy` / `DIR/test.npy` and print per-layer metrics and wall time
//! as JSON (read by `scripts/bench_probe.sh`).
//!
//! `cargo bench -p cd-common --bench bench_probe -- DIR [--standardize]`

use cd_common::probe::layers::{probe_with_folds, FeatureView};
use cd_common::probe::npy;
use cd_common::probe::split::Fold;
use cd_common::probe::ProbeConfig;
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let dir = PathBuf::from(
        args.first()
            .expect("usage: bench_probe DIR [--standardize]"),
    );
    let standardize = args.iter().any(|a| a == "--standardize");
    let t_load = Instant::now();
    let feats = npy::read_f32(&dir.join("features.npy")).expect("features");
    let labels: Vec<u8> = npy::read_i64(&dir.join("labels.npy"))
        .expect("labels")
        .data
        .iter()
        .map(|&v| v as u8)
        .collect();
    let idx = |name: &str| -> Vec<usize> {
        npy::read_i64(&dir.join(name))
            .expect("split")
            .data
            .iter()
            .map(|&v| v as usize)
            .collect()
    };
    let fold = Fold {
        train: idx("train.npy"),
        test: idx("test.npy"),
    };
    let load_s = t_load.elapsed().as_secs_f64();
    let (n, mut n_layers, d) = (feats.shape[0], feats.shape[1], feats.shape[2]);
    let mut data = feats.data;
    // `--layers a,b`: probe only these layers (a copy of them).
    if let Some(k) = args.iter().position(|a| a == "--layers") {
        let pick: Vec<usize> = args[k + 1]
            .split(',')
            .map(|v| v.parse().expect("layer index"))
            .collect();
        let mut sub = Vec::with_capacity(n * pick.len() * d);
        for i in 0..n {
            for &l in &pick {
                sub.extend_from_slice(&data[(i * n_layers + l) * d..(i * n_layers + l + 1) * d]);
            }
        }
        data = sub;
        n_layers = pick.len();
    }
    let cfg = ProbeConfig {
        standardize,
        ..ProbeConfig::default()
    };
    let features = FeatureView {
        data: &data,
        n,
        n_layers,
        d,
        labels: &labels,
    };
    let t = Instant::now();
    let run = probe_with_folds(&features, &cfg, vec![fold]).expect("probe");
    let fit_s = t.elapsed().as_secs_f64();
    let layers: Vec<serde_json::Value> = run
        .fits
        .iter()
        .map(|f| {
            serde_json::json!({
                "layer": f.layer,
                "accuracy": f.metrics.accuracy,
                "auc": f.metrics.auc,
                "newton": f.newton_iterations,
                "cg": f.cg_iterations,
                "converged": f.converged,
                "seconds": f.seconds,
            })
        })
        .collect();
    let out = serde_json::json!({
        "tool": "cd-common",
        "shape": [n, n_layers, d],
        "threads": rayon::current_num_threads(),
        "standardize": standardize,
        "load_seconds": load_s,
        "fit_seconds": fit_s,
        "layers": layers,
    });
    println!("{out}");
}
