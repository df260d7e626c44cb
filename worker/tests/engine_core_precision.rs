//! How far reduced precisions move the representations from f32, per layer.
//!
//! For each precision (`16` bf16, `16-f16`, `8` LLM.int8, `q8_0` Q8_0
//! weights) the test extracts the `residual` and `post_attention_norm` sites
//! and prints, per layer, the mean cosine similarity to the f32 vectors (the
//! table in `docs/engine.md` comes from this test on SmolLM2). Floors per
//! layer: 0.99 for LLM.int8, 0.995 for Q8_0, 0.999 for bf16, 0.9999 for f16
//! (measured minimums on SmolLM2: 0.996, 0.998, 0.9997, 0.99999); a broken
//! path (wrong scale, transposed weight) lands far below.

use cd_common::spec::{ModelSource, Pooling, Precision, Site};
use cd_worker::engine::load::{load_model, LoadOptions};
use cd_worker::engine::ExtractOptions;
use ndarray::Array3;

mod engine_support;
use engine_support::{rerun_with_isa, smollm2_path, tiny_model};

fn texts() -> Vec<String> {
    [
        "The capital of France is Paris.",
        "Is this review positive or negative? The film was a joyless, overlong mess.",
        "the capital of france is paris .",
        "this movie was great , but the book was terrible and the story was long and slow .",
        "one two three four five six seven eight nine ten",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn extract(source: &ModelSource, precision: Precision, site: Site) -> Array3<f32> {
    let opts = LoadOptions {
        precision,
        ..LoadOptions::default()
    };
    let model = load_model(source, &opts).unwrap();
    let ex = ExtractOptions {
        site,
        pooling: Pooling::Last,
        batch_size: 8,
        ..ExtractOptions::default()
    };
    model.extract(&texts(), &ex, &mut |_| {}).unwrap().data
}

/// Mean over texts of cos(ours, f32), per layer.
fn cosines(a: &Array3<f32>, b: &Array3<f32>) -> Vec<f64> {
    let (n, l, _) = a.dim();
    (0..l)
        .map(|j| {
            (0..n)
                .map(|i| {
                    let x = a.slice(ndarray::s![i, j, ..]);
                    let y = b.slice(ndarray::s![i, j, ..]);
                    let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
                    let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
                    let ny: f64 = y.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
                    dot / (nx * ny).max(f64::MIN_POSITIVE)
                })
                .sum::<f64>()
                / n as f64
        })
        .collect()
}

fn check(label: &str, source: ModelSource, floors: &[(Precision, f64)]) {
    for site in [Site::Residual, Site::PostAttentionNorm] {
        let reference = extract(&source, Precision::F32, site);
        for &(precision, floor) in floors {
            let ours = extract(&source, precision, site);
            let cos = cosines(&ours, &reference);
            let row: Vec<String> = cos.iter().map(|c| format!("{c:.5}")).collect();
            println!(
                "{label} {} precision {precision}: {}",
                site.as_str(),
                row.join(" ")
            );
            for (layer, c) in cos.iter().enumerate() {
                assert!(
                    *c >= floor,
                    "{label} {} precision {precision}: layer {layer} cosine {c:.5} < {floor}",
                    site.as_str()
                );
            }
        }
    }
}

#[test]
fn reduced_precisions_stay_close_to_f32_on_smollm2() {
    let Some(path) = smollm2_path() else { return };
    let source = ModelSource::Gguf {
        path: path.to_string_lossy().into_owned(),
    };
    check(
        "smollm2",
        source,
        &[
            (Precision::Int8, 0.99),
            (Precision::Q8_0, 0.995),
            (Precision::Bf16, 0.999),
            (Precision::F16, 0.9999),
        ],
    );
}

#[test]
fn reduced_precisions_stay_close_to_f32_on_tiny_gemma3() {
    let Some(dir) = tiny_model("gemma3") else {
        return;
    };
    let source = ModelSource::Dir {
        path: dir.to_string_lossy().into_owned(),
    };
    check(
        "tiny gemma3",
        source,
        &[
            (Precision::Int8, 0.995),
            (Precision::Q8_0, 0.995),
            (Precision::Bf16, 0.999),
            (Precision::F16, 0.9999),
        ],
    );
}

/// On a CPU with AMX tiles, precision `16` runs its projections there; the
/// same floors must hold on the path every other CPU takes (candle's bf16
/// operations), so this binary runs its SmolLM2 test again with the tiles
/// turned off (`CD_CPU_ISA=avx512`; the choice is made once per process).
#[test]
fn bf16_without_amx_tiles_stays_close_to_f32_too() {
    use cd_worker::engine::cpu_isa::Isa;
    if Isa::detected() != Isa::Amx || smollm2_path().is_none() {
        eprintln!("skipped: the test above already ran the only bf16 path this machine has");
        return;
    }
    let (text, _) = rerun_with_isa(
        "avx512",
        &[
            "reduced_precisions_stay_close_to_f32_on_smollm2",
            "--exact",
            "--nocapture",
        ],
    );
    assert!(text.contains("test result: ok. 1 passed"), "{text}");
}
