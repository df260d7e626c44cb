//! Time per multiple-choice item: both logit-lens modes from one forward
//! pass (what the pipeline does) against one forward pass per mode (what it
//! did before), on the same items in the same run, interleaved.
//!
//! ```sh
//! CD_SMOLLM2_GGUF=…/SmolLM2-135M-Instruct.Q4_1.gguf BENCH_ITEMS=8 BENCH_ROUNDS=3 \
//!     cargo bench -p cd-worker --bench bench_mc
//! ```
//! Items are TruthfulQA's first `BENCH_ITEMS` (from `CD_SHARED_DATASETS`,
//! default `../shared/datasets` beside the workspace). Prints each round and
//! the best and median seconds per item of each way, and their ratio.

use cd_common::datasets::{load_mc, DataRoot, McOptions};
use cd_common::spec::{ModelSource, Precision};
use cd_worker::engine::load::{load_model, LoadOptions};
use cd_worker::engine::logit_lens::{Lens, McInput, ScoreDtype};
use std::path::PathBuf;
use std::time::Instant;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

fn main() {
    let gguf = std::env::var("CD_SMOLLM2_GGUF").expect("set CD_SMOLLM2_GGUF to the SmolLM2 GGUF");
    let shared = std::env::var_os("CD_SHARED_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"));
    let items = env_usize("BENCH_ITEMS", 8);
    let rounds = env_usize("BENCH_ROUNDS", 3);
    let data = load_mc(
        "truthfulqa_mc",
        &DataRoot::Local(shared.join("llama_analysis/data")),
        &McOptions {
            max_items: Some(items),
            ..McOptions::default()
        },
    )
    .expect("TruthfulQA under the shared datasets");
    let model = load_model(
        &ModelSource::Gguf { path: gguf },
        &LoadOptions {
            precision: Precision::F32,
            ..LoadOptions::default()
        },
    )
    .expect("load SmolLM2");
    let inputs: Vec<McInput> = data
        .items
        .iter()
        .map(|it| McInput {
            prompt: it.prompt.clone(),
            candidates: it.candidates.clone(),
        })
        .collect();
    // Warm up (packs the LM head once).
    model
        .score_mc_lenses(&inputs[0], &[Lens::Faithful], ScoreDtype::F32)
        .unwrap();
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let t = Instant::now();
        for input in &inputs {
            for mode in [Lens::Faithful, Lens::Normed] {
                model.score_mc(input, mode).unwrap();
            }
        }
        two.push(t.elapsed().as_secs_f64() / inputs.len() as f64);
        let t = Instant::now();
        for input in &inputs {
            model
                .score_mc_lenses(input, &[Lens::Faithful, Lens::Normed], ScoreDtype::F32)
                .unwrap();
        }
        one.push(t.elapsed().as_secs_f64() / inputs.len() as f64);
        println!(
            "round {round}: two forward passes {:.3} s/item, one forward pass {:.3} s/item",
            two[round], one[round]
        );
    }
    let (b2, m2) = stats(two);
    let (b1, m1) = stats(one);
    println!(
        "{} items × {rounds} rounds: two passes best {b2:.3} median {m2:.3} s/item; one pass best {b1:.3} median {m1:.3} s/item; one/two = {:.2} (best), {:.2} (median)",
        inputs.len(),
        b1 / b2,
        m1 / m2
    );
}
