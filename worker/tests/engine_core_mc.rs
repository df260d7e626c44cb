//! Logit-lens multiple-choice scores against HF transformers.
//!
//! `tests/fixtures/mc_reference.json` is written by
//! `scripts/fixtures/make_mc_reference.py`, which runs every candidate as one
//! full sequence in PyTorch (no prefix sharing), so this also checks that our
//! shared-prefix KV reuse changes nothing. Tolerance: |ours − ref| ≤ 1e-4 ·
//! max(1, |ref|) for every layer, candidate and mode (f32).

use cd_common::spec::{ModelSource, Precision};
use cd_worker::engine::load::{load_model, LoadOptions};
use cd_worker::engine::logit_lens::{Lens, McInput};
use serde_json::Value;

mod engine_support;
use engine_support::{fixtures, tiny_model};

fn check(name: &str) {
    let Some(dir) = tiny_model(name) else { return };
    let text = std::fs::read_to_string(fixtures().join("mc_reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let entry = &reference["models"][name];
    let sha = std::fs::read_to_string(dir.join("CONTENT_SHA256")).unwrap();
    assert_eq!(
        entry["content_sha256"].as_str().unwrap(),
        sha.trim(),
        "{name}: checkpoint differs from the fixture's"
    );
    let source = ModelSource::Dir {
        path: dir.to_string_lossy().into_owned(),
    };
    let opts = LoadOptions {
        precision: Precision::F32,
        ..LoadOptions::default()
    };
    let model = load_model(&source, &opts).unwrap();
    let mut worst = 0f64;
    for item in entry["items"].as_array().unwrap() {
        let input = McInput {
            prompt: item["prompt"].as_str().unwrap().to_string(),
            candidates: item["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect(),
        };
        let n_tokens: Vec<usize> = item["n_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap() as usize)
            .collect();
        for (mode, key) in [(Lens::Faithful, "faithful"), (Lens::Normed, "normed")] {
            let ours = model.score_mc(&input, mode).unwrap();
            assert_eq!(
                ours.n_tokens, n_tokens,
                "{name}: token counts for {:?}",
                input.prompt
            );
            let want = item[key].as_array().unwrap();
            assert_eq!(ours.scores.len(), want.len(), "{name}: layer count");
            for (l, (row, wrow)) in ours.scores.iter().zip(want).enumerate() {
                for (c, (&o, w)) in row.iter().zip(wrow.as_array().unwrap()).enumerate() {
                    let w = w.as_f64().unwrap();
                    let err = (o as f64 - w).abs() / w.abs().max(1.0);
                    worst = worst.max(err);
                    assert!(
                        err <= 1e-4,
                        "{name} {key} layer {l} candidate {c} of {:?}: ours {o}, transformers {w}",
                        input.prompt
                    );
                }
            }
        }
    }
    println!("{name}: worst relative error {worst:.2e} (tolerance 1e-4)");
}

#[test]
fn llama_logit_lens_matches_transformers() {
    check("llama_gqa_rope3");
}

#[test]
fn mistral_sliding_logit_lens_matches_transformers() {
    check("mistral_sliding");
}

#[test]
fn qwen2_logit_lens_matches_transformers() {
    check("qwen2_bias_tied");
}

#[test]
fn gemma_logit_lens_matches_transformers() {
    check("gemma");
}

#[test]
fn gemma3_logit_lens_matches_transformers() {
    check("gemma3");
}

#[test]
fn length_normalised_divides_by_token_count() {
    let Some(dir) = tiny_model("llama_gqa_rope3") else {
        return;
    };
    let source = ModelSource::Dir {
        path: dir.to_string_lossy().into_owned(),
    };
    let model = load_model(&source, &LoadOptions::default()).unwrap();
    let item = McInput {
        prompt: "the capital of france is".into(),
        candidates: vec![" paris".into(), " a big old city".into()],
    };
    let s = model.score_mc(&item, Lens::Normed).unwrap();
    let norm = s.length_normalised();
    for (row, nrow) in s.scores.iter().zip(&norm) {
        for ((&v, &nv), &k) in row.iter().zip(nrow).zip(&s.n_tokens) {
            assert_eq!(nv, v / k as f32);
        }
    }
    assert_eq!(s.n_tokens, vec![1, 4]);
}

/// Both lenses from one forward pass give exactly what two separate passes
/// give; the bf16 arithmetic gives bf16-representable sums close to f32.
#[test]
fn one_forward_serves_both_lenses_and_bf16_rounds_as_the_original() {
    use cd_worker::engine::logit_lens::ScoreDtype;
    let Some(dir) = tiny_model("llama_gqa_rope3") else {
        return;
    };
    let model = load_model(
        &ModelSource::Dir {
            path: dir.to_string_lossy().into_owned(),
        },
        &LoadOptions::default(),
    )
    .unwrap();
    let item = McInput {
        prompt: "the capital of france is".into(),
        candidates: vec![
            " paris .".into(),
            " rome".into(),
            " a city in germany".into(),
        ],
    };
    let both = model
        .score_mc_lenses(&item, &[Lens::Faithful, Lens::Normed], ScoreDtype::F32)
        .unwrap();
    for (mode, one) in [Lens::Faithful, Lens::Normed].iter().zip(&both) {
        assert_eq!(&model.score_mc(&item, *mode).unwrap(), one, "{mode:?}");
    }
    let bf = model
        .score_mc_lenses(&item, &[Lens::Faithful], ScoreDtype::Bf16)
        .unwrap();
    for (row_bf, row_f) in bf[0].scores.iter().zip(&both[0].scores) {
        for (b, f) in row_bf.iter().zip(row_f) {
            assert_eq!(half::bf16::from_f32(*b).to_f32(), *b, "a bf16 sum: {b}");
            // Per token, bf16 keeps ~3 significant digits of each log-probability.
            assert!((b - f).abs() <= 0.02 * f.abs().max(1.0), "{b} vs {f}");
        }
    }
}
