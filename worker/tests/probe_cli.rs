//! `cd-worker probe` as a real process on features files written with the
//! extractor's own writer: metrics against the library's probe on the same
//! data, known answers (a separable layer, a noise layer), and clear refusals
//! of bad files with no output left behind.

mod engine_support;

use cd_common::metrics::{CellMetrics, LayerRow};
use cd_common::probe::layers::{probe_all_layers, FeatureView};
use cd_common::probe::{ProbeConfig, SplitConfig};
use cd_worker::engine::output::{write_features, FeatureFile, OutputDtype, OutputMetadata};
use ndarray::Array3;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const N: usize = 120;
const L: usize = 3;
const D: usize = 8;

/// Layer 0: noise; layer 1: dimension 0 separates the classes by a margin;
/// layer 2: a weak signal on dimension 1 under noise.
fn data() -> (Array3<f32>, Vec<i64>) {
    // A fixed linear congruential sequence: uniform noise in [-0.5, 0.5).
    let mut state = 5u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let labels: Vec<i64> = (0..N).map(|i| i64::from(i % 3 == 0)).collect();
    let mut x = Array3::<f32>::zeros((N, L, D));
    for i in 0..N {
        let y = labels[i] as f32;
        for j in 0..D {
            x[[i, 0, j]] = noise();
            x[[i, 1, j]] = if j == 0 {
                3.0 * (2.0 * y - 1.0) + noise()
            } else {
                noise()
            };
            x[[i, 2, j]] = if j == 1 { 0.4 * y + noise() } else { noise() };
        }
    }
    (x, labels)
}

fn metadata() -> OutputMetadata {
    OutputMetadata {
        model: "tiny.gguf".into(),
        site: "residual".into(),
        pooling: "last".into(),
        precision: "32".into(),
        ..OutputMetadata::default()
    }
}

fn write(path: &Path, x: &Array3<f32>, labels: Option<&[i64]>, dtype: OutputDtype) {
    let counts = vec![4usize; x.dim().0];
    write_features(
        path,
        &FeatureFile {
            features: x.view(),
            token_counts: &counts,
            labels,
            test_fold: None,
            groups: None,
            dtype,
            metadata: &metadata(),
        },
    )
    .unwrap();
}

fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cd-worker"))
        .arg("probe")
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Each layer's mean accuracy and AUC equal the library's `(accuracy, AUC)`.
fn assert_layers_match(layers: &[LayerRow], want: &[(f64, f64)]) {
    for (row, (acc, auc)) in layers.iter().zip(want) {
        assert!(
            (row.accuracy_mean - acc).abs() < 1e-12,
            "layer {}",
            row.layer
        );
        assert!(
            (row.auc_mean.unwrap() - auc).abs() < 1e-12,
            "layer {}",
            row.layer
        );
    }
}

fn library_run(x: &Array3<f32>, labels: &[i64], cfg: &ProbeConfig, seed: u64) -> Vec<(f64, f64)> {
    let y: Vec<u8> = labels.iter().map(|&v| v as u8).collect();
    let (n, n_layers, d) = x.dim();
    let run = probe_all_layers(
        &FeatureView {
            data: x.as_slice().unwrap(),
            n,
            n_layers,
            d,
            labels: &y,
        },
        None,
        cfg,
        seed,
    )
    .unwrap();
    let m = cd_common::metrics::layer_rows(&run, n_layers, true);
    m.iter()
        .map(|r| (r.accuracy_mean, r.auc_mean.unwrap()))
        .collect()
}

#[test]
fn probe_writes_metrics_equal_to_the_library_and_known_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (x, labels) = data();
    let feats = dir.path().join("feats.safetensors");
    write(&feats, &x, Some(&labels), OutputDtype::F32);

    for (extra, cfg) in [
        (vec![], ProbeConfig::default()),
        (
            vec!["--kfold", "4", "--standardize", "--c", "0.5"],
            ProbeConfig {
                c: 0.5,
                standardize: true,
                split: SplitConfig::Kfold { k: 4 },
                ..ProbeConfig::default()
            },
        ),
        (
            vec!["--split", "sklearn", "--random-state", "42"],
            ProbeConfig {
                split: SplitConfig::Sklearn {
                    test_size: 0.4,
                    random_state: Some(42),
                },
                ..ProbeConfig::default()
            },
        ),
    ] {
        let out = dir.path().join("metrics.json");
        let mut args = vec![s(&feats), "--out", s(&out), "--seed", "3"];
        args.extend(extra.iter().copied());
        let res = probe(&args);
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        let m = CellMetrics::from_json(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!((m.n_examples, m.n_layers), (N, L));
        assert_eq!(m.class_counts, Some([80, 40]));
        assert!(
            m.includes_embedding,
            "site residual: capture 0 is the embedding"
        );
        assert_eq!(m.probe.as_ref(), Some(&cfg));
        assert_eq!(m.seeds.split, 3);
        let k = match cfg.split {
            SplitConfig::Kfold { k } => k,
            _ => 1,
        };
        assert_eq!(m.folds.len(), k);
        // The split is recorded per example: fold f tests where test_fold == f.
        let split = m.split.as_ref().unwrap();
        assert_eq!(split.test_fold.len(), N);
        assert_eq!(split.n_folds, k);
        for f in &m.folds {
            let tested = split
                .test_fold
                .iter()
                .filter(|&&t| t == f.fold as i32)
                .count();
            assert_eq!(tested, f.n_test);
        }
        assert_eq!(m.fold_layers.len(), k * L);
        // Same numbers as the library on the same data, split and settings.
        let want = library_run(&x, &labels, &cfg, 3);
        assert_layers_match(&m.layers, &want);
        for row in &m.layers {
            assert_eq!(row.converged_folds, k);
        }
        // Independent of the library: layer 1 is separable with a margin, so
        // every fold classifies it perfectly; layer 0 is noise.
        assert_eq!(m.layers[1].accuracy_mean, 1.0);
        assert_eq!(m.layers[1].auc_mean, Some(1.0));
        assert!(m.layers[0].accuracy_mean < 0.8, "{:?}", m.layers[0]);
        assert_eq!(m.depth.as_ref().unwrap().peak.layer, 1);
        // The table: a header, one line per layer, the depth line.
        let stdout = String::from_utf8(res.stdout).unwrap();
        assert_eq!(stdout.lines().count(), L + 2, "{stdout}");
        assert!(stdout.contains("peak: layer 1"), "{stdout}");
        std::fs::remove_file(&out).unwrap();
    }

    // f16 features (extract --dtype f16) are read too.
    let f16 = dir.path().join("f16.safetensors");
    write(&f16, &x, Some(&labels), OutputDtype::F16);
    let out = dir.path().join("m16.json");
    let res = probe(&[s(&f16), "--out", s(&out)]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let m = CellMetrics::from_json(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(m.layers[1].accuracy_mean, 1.0);
}

#[test]
fn probe_reads_what_extract_writes() {
    // The real pipeline of two commands: extract on a tiny checkpoint, then probe.
    let Some(model) = engine_support::tiny_model("llama_gqa_rope3") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.jsonl");
    let mut lines = String::new();
    for i in 0..24 {
        let (word, label) = if i % 2 == 0 { ("cat", 1) } else { ("dog", 0) };
        lines.push_str(&format!(
            "{{\"text\": \"the {word} number {i} sat here\", \"label\": {label}}}\n"
        ));
    }
    std::fs::write(&input, lines).unwrap();
    let feats = dir.path().join("feats.safetensors");
    let ex = Command::new(env!("CARGO_BIN_EXE_cd-worker"))
        .args([
            "extract",
            "--model",
            s(&model),
            "--input",
            s(&input),
            "--out",
            s(&feats),
        ])
        .args([
            "--label-field",
            "label",
            "--site",
            "post_attention_norm",
            "--pooling",
            "mean",
        ])
        .output()
        .unwrap();
    assert!(
        ex.status.success(),
        "{}",
        String::from_utf8_lossy(&ex.stderr)
    );
    let out = dir.path().join("metrics.json");
    let res = probe(&[s(&feats), "--out", s(&out), "--kfold", "3", "--seed", "9"]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let m = CellMetrics::from_json(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let read = cd_worker::cli_probe::read_features(&feats).unwrap();
    assert_eq!((m.n_examples, m.n_layers), (read.n, read.n_layers));
    assert_eq!(m.n_examples, 24);
    assert!(
        !m.includes_embedding,
        "post_attention_norm has no embedding capture"
    );
    assert_eq!(
        m.spec.model.source,
        cd_common::spec::ModelSource::Dir {
            path: s(&model).into()
        }
    );
    let y: Vec<i64> = read.labels.iter().map(|&v| i64::from(v)).collect();
    let x = Array3::from_shape_vec((read.n, read.n_layers, read.d), read.data).unwrap();
    let cfg = ProbeConfig {
        split: SplitConfig::Kfold { k: 3 },
        ..ProbeConfig::default()
    };
    let want = library_run(&x, &y, &cfg, 9);
    assert_layers_match(&m.layers, &want);
}

/// Run a failing case: exit code, message fragments, and no output file.
fn refused(file: &Path, extra: &[&str], code: i32, needles: &[&str]) {
    let out: PathBuf = file.with_extension("json");
    let mut args = vec![s(file), "--out", s(&out)];
    args.extend_from_slice(extra);
    let res = probe(&args);
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(code), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert!(!out.exists(), "partial output left at {}", out.display());
    assert!(res.stdout.is_empty(), "no table on failure");
}

#[test]
fn bad_inputs_are_refused_with_the_file_and_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let (x, labels) = data();

    let no_labels = dir.path().join("nolabels.safetensors");
    write(&no_labels, &x, None, OutputDtype::F32);
    refused(
        &no_labels,
        &[],
        2,
        &[
            "nolabels.safetensors",
            "no `labels` tensor",
            "--label-field",
        ],
    );

    let one_class = dir.path().join("oneclass.safetensors");
    write(&one_class, &x, Some(&vec![1; N]), OutputDtype::F32);
    refused(
        &one_class,
        &[],
        2,
        &["oneclass.safetensors", "single class"],
    );

    let multi = dir.path().join("multi.safetensors");
    let three: Vec<i64> = (0..N as i64).map(|i| i % 3).collect();
    write(&multi, &x, Some(&three), OutputDtype::F32);
    refused(
        &multi,
        &[],
        2,
        &["multi.safetensors", "value 2 at example 2", "0 or 1"],
    );

    // A 2-D `features` tensor, written with the safetensors crate directly.
    let flat = dir.path().join("flat.safetensors");
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let lab: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "features",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![N, L * D], &bytes)
                .unwrap(),
        ),
        (
            "labels",
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![N], &lab).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, &flat).unwrap();
    refused(
        &flat,
        &[],
        2,
        &[
            "flat.safetensors",
            "`features` has shape [120, 24]",
            "[N, L, d]",
        ],
    );

    let not_st = dir.path().join("garbage.safetensors");
    std::fs::write(&not_st, b"not a tensor file").unwrap();
    refused(
        &not_st,
        &[],
        2,
        &["garbage.safetensors", "not a safetensors file"],
    );

    let good = dir.path().join("good.safetensors");
    write(&good, &x, Some(&labels), OutputDtype::F32);
    refused(
        &good,
        &["--kfold", "1"],
        2,
        &["k must be between 2 and 100"],
    );
    refused(
        &good,
        &["--kfold", "50"],
        2,
        &["good.safetensors", "--kfold 50", "smaller class has 40"],
    );
    refused(
        &good,
        &["--positive-class", "2"],
        2,
        &["positive_class must be 0 or 1"],
    );
    let res = probe(&[s(&good), "--out", "/nonexistent-dir/metrics.json"]);
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("does not exist"));
}
