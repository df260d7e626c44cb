//! Helpers shared by the engine's integration tests: locating (or generating)
//! the tiny random checkpoints and the SmolLM2 GGUF.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use cd_common::test_support::in_ci;

/// The committed fixtures directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The Python interpreter tests may call (`CD_PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("CD_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Directory of the tiny checkpoints (`CD_TINY_MODELS`), generating them with
/// `scripts/fixtures/make_tiny_models.py` when unset. `None` (skip) only
/// outside CI.
pub fn tiny_models_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("CD_TINY_MODELS") {
            return Some(PathBuf::from(d));
        }
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-models");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fixtures/make_tiny_models.py");
        let status = std::process::Command::new(python()).arg(&script).arg("--out").arg(&out).status();
        match status {
            Ok(s) if s.success() => Some(out),
            other => {
                let msg = format!(
                    "cannot generate tiny models with `{} {}` ({other:?}): set CD_TINY_MODELS or install numpy",
                    python(),
                    script.display()
                );
                assert!(!in_ci(), "{msg}");
                eprintln!("skipping: {msg}");
                None
            }
        }
    })
    .clone()
}

/// The tiny checkpoint `name`, or `None` (skip).
pub fn tiny_model(name: &str) -> Option<PathBuf> {
    tiny_models_dir().map(|d| d.join(name))
}

/// The SmolLM2 GGUF (`CD_SMOLLM2_GGUF`), or `None` (skip) outside CI.
pub fn smollm2_path() -> Option<PathBuf> {
    match std::env::var_os("CD_SMOLLM2_GGUF") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                !in_ci(),
                "CD_SMOLLM2_GGUF is not set (CI must provide the SmolLM2 GGUF)"
            );
            eprintln!("skipping: CD_SMOLLM2_GGUF is not set");
            None
        }
    }
}

/// Extract `texts` at one site and pooling with the given batch size (other
/// options default), panicking on error: the common call of the engine tests.
pub fn extract(
    model: &cd_worker::engine::Model,
    texts: &[String],
    site: cd_common::spec::Site,
    pooling: cd_common::spec::Pooling,
    batch_size: usize,
) -> ndarray::Array3<f32> {
    let opts = cd_worker::engine::ExtractOptions {
        site,
        pooling,
        batch_size,
        ..Default::default()
    };
    model.extract(texts, &opts, &mut |_| {}).unwrap().data
}

/// The shared datasets directory (`CD_SHARED_DATASETS`, default
/// `../shared/datasets` beside the workspace).
pub fn shared_datasets() -> PathBuf {
    match std::env::var_os("CD_SHARED_DATASETS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"),
    }
}

/// A task spec for SmolLM2 (the GGUF at `gguf`) on `dataset` under `data`,
/// with model and data named by content as a grid names them; everything
/// else as `example_spec` has it.
pub fn smollm2_cell_spec(
    gguf: &Path,
    sweep: &str,
    dataset: &str,
    data: &Path,
) -> cd_common::spec::TaskSpec {
    use cd_common::{content, spec};
    let mut s = spec::example_spec();
    s.sweep = sweep.into();
    s.model.name = "SmolLM2-135M".into();
    s.model.source = spec::ModelSource::Gguf {
        path: gguf.display().to_string(),
    };
    s.model.identity = spec::ModelIdentity::Content {
        sha256: content::model_sha256(gguf).unwrap(),
    };
    s.dataset = spec::DatasetRef {
        name: dataset.into(),
        identity: content::dataset_identity(dataset, data.to_str().unwrap(), None).unwrap(),
    };
    s.data_root = data.display().to_string();
    s
}

/// Run `cd-worker cell` on `spec` with a `file://` store under `dir`;
/// returns the directory of the cell's results.
pub fn run_cell(spec: &cd_common::spec::TaskSpec, dir: &Path) -> PathBuf {
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec.canonical_json()).unwrap();
    let results = dir.join("results");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_cd-worker"))
        .args(["cell", "--spec"])
        .arg(&spec_path)
        .arg("--store")
        .arg(format!("file://{}", results.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cd-worker cell: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    results.join(format!("{}/tasks/{}", spec.sweep, spec.id()))
}

/// Runs this test binary again with `CD_CPU_ISA=isa` (the engine chooses its
/// instruction set once per process, so another choice needs another
/// process) and libtest's `args`; panics unless it succeeds. Returns its
/// output, stdout then stderr, and how many tests it reports passed.
pub fn rerun_with_isa(isa: &str, args: &[&str]) -> (String, usize) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(args)
        .env("CD_CPU_ISA", isa)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "CD_CPU_ISA={isa}:\n{text}");
    let passed = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("test result: ok. ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    (text, passed)
}
