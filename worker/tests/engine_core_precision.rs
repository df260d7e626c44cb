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

/// On a CPU with AMX tiles or AVX512-BF16, precision `16` runs its
/// projections on the engine's bf16 kernel; the same floors must hold on
/// every lower path this CPU has (AVX512-BF16 pairs under AMX, candle's bf16
/// operations everywhere else), so this binary runs its SmolLM2 test again
/// under each (`CD_CPU_ISA`; the choice is made once per process).
#[test]
fn bf16_on_every_lower_path_stays_close_to_f32_too() {
    use cd_worker::engine::cpu::isa::Isa;
    let best = Isa::detected();
    let lower: Vec<&str> = [(Isa::Avx512Bf16, "avx512bf16"), (Isa::Avx512, "avx512")]
        .into_iter()
        .filter(|&(isa, _)| isa < best)
        .map(|(_, name)| name)
        .collect();
    if lower.is_empty() || smollm2_path().is_none() {
        eprintln!("skipped: the test above already ran the only bf16 path this machine has");
        return;
    }
    for isa in lower {
        let (text, _) = rerun_with_isa(
            isa,
            &[
                "reduced_precisions_stay_close_to_f32_on_smollm2",
                "--exact",
                "--nocapture",
            ],
        );
        assert!(text.contains("test result: ok. 1 passed"), "{isa}: {text}");
    }
}

/// The device check (`cd-bench random --check` runs the same comparison on a
/// GPU machine): on every device this build can open (the CPU always, every
/// CUDA device when built with `--features cuda`), each precision verified
/// for that device kind runs a randomly initialised model of SmolLM2's
/// widths (GQA, tied head; three layers) on texts of varied lengths, and
/// every layer must agree with the same weights on the CPU in f32: f32
/// within 1e-4 relative, the reduced precisions above their cosine floors.
#[test]
fn every_available_device_agrees_with_the_cpu_in_f32() {
    use candle_core::DType;
    use cd_common::verified::{is_verified, DeviceKind};
    use cd_worker::devices::{self, GpuSelection};
    use cd_worker::engine::agreement::layer_agreement;
    use cd_worker::engine::random_model::{build, random_texts, random_weights, shape_config};
    use cd_worker::engine::{DeviceMap, ModelConfig};
    use std::path::Path;

    let cfg_json = shape_config("smollm2-135m", Some(3)).unwrap();
    let cfg =
        ModelConfig::from_hf_config_json(&cfg_json.to_string(), Path::new("smollm2-135m")).unwrap();
    let cpu_map = DeviceMap::single(cd_worker::engine::Device::Cpu, cfg.num_layers);
    let weights = random_weights(&cfg, &cpu_map, DType::F32, 11).unwrap();
    let texts: Vec<String> = [40, 21, 7, 1, 37, 13]
        .iter()
        .enumerate()
        .flat_map(|(k, &len)| random_texts(1, len, cfg.vocab_size, k as u64))
        .collect();
    let opts = ExtractOptions {
        site: Site::Residual,
        pooling: Pooling::Last,
        batch_size: 4,
        max_tokens: None,
        add_special_tokens: false,
    };
    let reference = build(&cfg_json, weights.clone(), Precision::F32, cpu_map)
        .unwrap()
        .extract(&texts, &opts, &mut |_| {})
        .unwrap();

    let mut opened = devices::open(&GpuSelection::Cpu).unwrap();
    if cfg!(feature = "cuda") {
        match devices::open(&GpuSelection::All) {
            Ok(gpus) => opened.extend(gpus),
            Err(e) => eprintln!("no CUDA device to check ({e}): the CPU only"),
        }
    }
    let mut checked = 0;
    for device in &opened {
        let kind = if device.is_cuda() {
            DeviceKind::Cuda
        } else {
            DeviceKind::Cpu
        };
        for precision in [
            Precision::F32,
            Precision::Bf16,
            Precision::F16,
            Precision::Int8,
            Precision::Q8_0,
        ] {
            if !is_verified(precision, kind) {
                continue;
            }
            // The floors of `common/src/verified.rs`' evidence, per layer.
            let (max_rel, min_cos) = match precision {
                Precision::F32 => (1e-4, 0.999_999),
                Precision::F16 => (f64::INFINITY, 0.9999),
                Precision::Bf16 => (f64::INFINITY, 0.999),
                Precision::Q8_0 => (f64::INFINITY, 0.995),
                Precision::Int8 => (f64::INFINITY, 0.99),
            };
            let map = DeviceMap::single(device.device.clone(), cfg.num_layers);
            let got = build(&cfg_json, weights.clone(), precision, map)
                .unwrap()
                .extract(&texts, &opts, &mut |_| {})
                .unwrap();
            let layers = layer_agreement(&reference, &got).unwrap();
            assert_eq!(layers.len(), cfg.num_layers + 1);
            for a in &layers {
                eprintln!(
                    "{} at {precision}: layer {} rel {:.2e} cos {:.7}",
                    device.name, a.layer, a.rel, a.cos
                );
                assert!(
                    a.rel <= max_rel && a.cos >= min_cos,
                    "{} at {precision}, layer {}: rel {:.2e} (max {max_rel:e}), cosine {:.7} (min {min_cos})",
                    device.name,
                    a.layer,
                    a.rel,
                    a.cos
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "the CPU alone has five verified precisions");
}
