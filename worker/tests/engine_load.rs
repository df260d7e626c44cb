//! Model loading: directories (single and sharded), the Hub cache offline, GGUF,
//! and the errors a user sees for broken inputs (each must name the file and
//! what was expected).

mod engine_support;

use cd_common::spec::{ModelSource, Pooling, Site};
use cd_worker::engine::load::{load_model, open_model, LoadOptions};
use cd_worker::engine::Model;
use engine_support::{extract, smollm2_path, tiny_model};
use std::path::{Path, PathBuf};

fn dir_source(p: &Path) -> ModelSource {
    ModelSource::Dir {
        path: p.display().to_string(),
    }
}

fn load_err(source: &ModelSource, opts: &LoadOptions) -> String {
    match load_model(source, opts) {
        Ok(_) => panic!("loading {source:?} should fail"),
        Err(e) => e.to_string(),
    }
}

/// The error of loading the model directory `dir` with default options.
fn dir_load_err(dir: &Path) -> String {
    load_err(&dir_source(dir), &LoadOptions::default())
}

/// Copy a model directory so a test can break it.
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// A writable copy of the tiny model `name` for a test to break; `None` (the
/// test returns early) where `tiny_model` finds no tiny models.
fn breakable_copy(name: &str) -> Option<tempfile::TempDir> {
    let src = tiny_model(name)?;
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&src, tmp.path());
    Some(tmp)
}

fn features(model: &Model) -> Vec<f32> {
    let texts = vec![
        "the capital of france is paris .".to_string(),
        "yes".to_string(),
    ];
    extract(model, &texts, Site::Residual, Pooling::Last, 2)
        .into_raw_vec_and_offset()
        .0
}

/// Remove `file` from a copy of the tiny model `name`: loading must fail with
/// an error naming that file as missing.
fn check_missing_file_is_named(name: &str, file: &str) {
    let Some(tmp) = breakable_copy(name) else {
        return;
    };
    std::fs::remove_file(tmp.path().join(file)).unwrap();
    let e = dir_load_err(tmp.path());
    assert!(e.contains(file) && e.contains("missing"), "{e}");
}

#[test]
fn missing_config_names_the_file() {
    check_missing_file_is_named("llama_gqa_rope3", "config.json");
}

#[test]
fn missing_tokenizer_names_the_file() {
    check_missing_file_is_named("llama_gqa_rope3", "tokenizer.json");
}

#[test]
fn unknown_architecture_names_what_was_found_and_what_is_supported() {
    let Some(tmp) = breakable_copy("llama_gqa_rope3") else {
        return;
    };
    let cfg_path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["model_type"] = "gpt_neox".into();
    cfg["architectures"] = serde_json::json!(["GPTNeoXForCausalLM"]);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = dir_load_err(tmp.path());
    assert!(e.contains("config.json"), "{e}");
    assert!(
        e.contains("gpt_neox") && e.contains("GPTNeoXForCausalLM"),
        "{e}"
    );
    assert!(e.contains("llama"), "supported list missing: {e}");
}

#[test]
fn truncated_safetensors_is_reported_as_such() {
    let Some(tmp) = breakable_copy("llama_gqa_rope3") else {
        return;
    };
    let w = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = dir_load_err(tmp.path());
    assert!(
        e.contains("model.safetensors") && e.contains("truncated or corrupt"),
        "{e}"
    );
}

#[test]
fn missing_tensor_is_named_with_the_files_searched() {
    let Some(tmp) = breakable_copy("llama_gqa_rope3") else {
        return;
    };
    // Rewrite the weights without one tensor (with the safetensors crate, as a user might).
    let w = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| k != "model.layers.2.mlp.up_proj.weight")
        .collect();
    safetensors::serialize_to_file(kept, None, &w).unwrap();
    let e = dir_load_err(tmp.path());
    assert!(e.contains("model.layers.2.mlp.up_proj.weight"), "{e}");
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn missing_shard_is_named() {
    check_missing_file_is_named("llama_sharded_tied", "model-00002-of-00002.safetensors");
}

/// Lay out `src` the way `huggingface_hub` caches a repo: content-addressed
/// blobs, a snapshot of symlinks per commit, and `refs/main` naming the commit.
fn fake_hub_cache(src: &Path, cache: &Path, repo: &str, commit: &str) -> PathBuf {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    let blobs = root.join("blobs");
    let snap = root.join("snapshots").join(commit);
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(root.join("refs")).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        use sha2::Digest;
        let blob = blobs.join(hex::encode(sha2::Sha256::digest(&bytes)));
        std::fs::write(&blob, &bytes).unwrap();
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(blob.file_name().unwrap()),
            snap.join(e.file_name()),
        )
        .unwrap();
    }
    std::fs::write(root.join("refs").join("main"), commit).unwrap();
    root
}

#[test]
fn hub_offline_resolves_from_a_hub_style_cache() {
    let Some(src) = tiny_model("llama_sharded_tied") else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    fake_hub_cache(&src, cache.path(), "tiny-org/tiny-llama", commit);
    let opts = LoadOptions {
        offline: true,
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    let hub = ModelSource::Hub {
        repo: "tiny-org/tiny-llama".into(),
        revision: None,
    };
    let from_hub = load_model(&hub, &opts).unwrap();
    let from_dir = load_model(&dir_source(&src), &LoadOptions::default()).unwrap();
    assert_eq!(features(&from_hub), features(&from_dir));

    // A commit hash as revision resolves without a ref file.
    let pinned = ModelSource::Hub {
        repo: "tiny-org/tiny-llama".into(),
        revision: Some(commit.into()),
    };
    assert!(open_model(&pinned, &opts).is_ok());

    // Anything not in the cache fails without touching the network, naming what is missing.
    let absent = ModelSource::Hub {
        repo: "tiny-org/absent".into(),
        revision: None,
    };
    let e = load_err(&absent, &opts);
    assert!(
        e.contains("tiny-org/absent") && e.contains("config.json") && e.contains("offline"),
        "{e}"
    );
}

#[test]
fn truncated_gguf_is_reported_as_such() {
    let Some(gguf) = smollm2_path() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut.gguf");
    let bytes = std::fs::read(&gguf).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 1_000_000]).unwrap();
    let e = load_err(
        &ModelSource::Gguf {
            path: cut.display().to_string(),
        },
        &LoadOptions::default(),
    );
    assert!(e.contains("cut.gguf"), "{e}");
    assert!(e.contains("bytes") && e.contains("remaining"), "{e}");
    // A file that is not GGUF at all.
    let junk = tmp.path().join("junk.gguf");
    std::fs::write(&junk, b"definitely not a gguf file").unwrap();
    let e = load_err(
        &ModelSource::Gguf {
            path: junk.display().to_string(),
        },
        &LoadOptions::default(),
    );
    assert!(e.contains("junk.gguf") && e.contains("GGUF"), "{e}");
}
