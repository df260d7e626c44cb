//! Batching must not change a text's vectors: not the batch size, not its
//! batch mates (and so its padding), not the input order. The same input
//! gives the same bytes twice. Checked on tiny checkpoints with a sliding
//! window (Mistral) and with local/global layers (Gemma-3), at both sites and
//! both poolings, in f32.

use cd_common::spec::{ModelSource, Pooling, Precision, Site};
use cd_worker::engine::load::{load_model, LoadOptions};
use cd_worker::engine::{ExtractOptions, Model};
use ndarray::{Array3, Axis};

mod engine_support;
use engine_support::{extract, tiny_model};

/// Texts of very different lengths (1 to 30+ words) from the tiny vocabulary.
fn texts() -> Vec<String> {
    [
        "i",
        "the capital of france is paris .",
        "this movie was great , but the book was terrible and the story was long and slow .",
        "cat",
        "berlin is a city in germany ; rome is a city in italy ; madrid is a city in spain ? yes",
        "one two three four five six seven eight nine ten one two three four five six seven eight nine ten",
        "the dog",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn load(name: &str) -> Option<Model> {
    let dir = tiny_model(name)?;
    let source = ModelSource::Dir {
        path: dir.to_string_lossy().into_owned(),
    };
    let opts = LoadOptions {
        precision: Precision::F32,
        ..LoadOptions::default()
    };
    Some(load_model(&source, &opts).unwrap())
}

/// Largest |a − b| relative to max |b|.
fn rel_diff(a: &Array3<f32>, b: &Array3<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let max_ref = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    max_err / max_ref
}

fn check_invariance(name: &str) {
    let Some(model) = load(name) else { return };
    let texts = texts();
    for site in [Site::Residual, Site::PostAttentionNorm] {
        for pooling in [Pooling::Last, Pooling::Mean] {
            // Reference: each text alone, no padding at all.
            let alone = extract(&model, &texts, site, pooling, 1);
            let mut worst = 0f32;
            for bs in [2, 3, texts.len()] {
                let batched = extract(&model, &texts, site, pooling, bs);
                let d = rel_diff(&batched, &alone);
                worst = worst.max(d);
                assert!(
                    d <= 1e-6,
                    "{name} {site:?} {pooling:?}: batch {bs} moves vectors by {d:e} (relative)"
                );
            }
            // Same texts in reverse order: other batch mates, other padding.
            let rev: Vec<String> = texts.iter().rev().cloned().collect();
            let mut out = extract(&model, &rev, site, pooling, 3);
            out.invert_axis(Axis(0));
            let d = rel_diff(&out, &alone);
            worst = worst.max(d);
            assert!(
                d <= 1e-6,
                "{name} {site:?} {pooling:?}: reordering moves vectors by {d:e}"
            );
            println!(
                "{name} {site:?} {pooling:?}: worst relative difference vs unbatched {worst:e}"
            );
        }
    }
}

#[test]
fn mistral_sliding_vectors_do_not_depend_on_batching() {
    check_invariance("mistral_sliding");
}

#[test]
fn gemma3_vectors_do_not_depend_on_batching() {
    check_invariance("gemma3");
}

#[test]
fn same_input_gives_same_bytes() {
    let Some(model) = load("llama_gqa_rope3") else {
        return;
    };
    let texts = texts();
    let a = extract(&model, &texts, Site::Residual, Pooling::Mean, 3);
    let b = extract(&model, &texts, Site::Residual, Pooling::Mean, 3);
    let bytes = |x: &Array3<f32>| x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    assert!(bytes(&a) == bytes(&b), "two identical runs differ");
}

#[test]
fn features_are_in_input_order_with_token_counts() {
    let Some(model) = load("llama_gqa_rope3") else {
        return;
    };
    let texts = texts();
    let opts = ExtractOptions {
        batch_size: 4,
        ..ExtractOptions::default()
    };
    let mut seen = Vec::new();
    let f = model.extract(&texts, &opts, &mut |p| seen.push(p)).unwrap();
    let l = model.config().num_layers;
    assert_eq!(
        f.data.shape(),
        &[texts.len(), l + 1, model.config().hidden_size]
    );
    for (i, t) in texts.iter().enumerate() {
        let n = model.encode(t, true).unwrap().len();
        assert_eq!(f.token_counts[i] as usize, n, "text {i}");
    }
    let last = seen.last().unwrap();
    assert_eq!(last.texts_done, texts.len());
    assert_eq!(
        last.tokens_done,
        f.token_counts.iter().map(|&c| c as usize).sum::<usize>()
    );
    assert_eq!(seen.len(), texts.len().div_ceil(4));
}

#[test]
fn truncation_keeps_the_first_tokens() {
    let Some(model) = load("llama_gqa_rope3") else {
        return;
    };
    let long = vec!["one two three four five six seven eight nine ten".to_string()];
    let ids = model.encode(&long[0], true).unwrap();
    let prefix_text = vec!["one two three four".to_string()];
    let opts = ExtractOptions {
        max_tokens: Some(5),
        ..ExtractOptions::default()
    };
    let cut = model.extract(&long, &opts, &mut |_| {}).unwrap();
    assert_eq!(cut.token_counts, vec![5]);
    assert_eq!(&model.encode(&prefix_text[0], true).unwrap()[..], &ids[..5]);
    let whole = model
        .extract(&prefix_text, &ExtractOptions::default(), &mut |_| {})
        .unwrap();
    assert!(rel_diff(&cut.data, &whole.data) <= 1e-6);
}

#[test]
fn empty_input_and_empty_text_are_refused() {
    let Some(model) = load("llama_gqa_rope3") else {
        return;
    };
    let opts = ExtractOptions {
        add_special_tokens: false,
        ..ExtractOptions::default()
    };
    let err = model.extract(&[], &opts, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("no texts"), "{err}");
    let err = model
        .extract(&["cat".to_string(), String::new()], &opts, &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("#1"), "{err}");
}
