//! A dataset read from a real S3-compatible server (`s3s-fs`): the worker
//! copies exactly the files the manifest needs (here IMDb's Hub layout, two
//! Parquet shards found by listing) into its data cache, reuses the copy while
//! the objects are unchanged, and copies again when one changes; a probe task
//! (`cd-worker cell`) with that data root goes through the same copy.

use cd_common::metrics::CellMetrics;
use cd_common::spec::{example_spec, DatasetIdentity, DatasetRef, ModelSource, Site, TaskSpec};
use cd_common::storage::Store;
use cd_tests::*;
use sha2::{Digest, Sha256};
use std::process::Output;

fn show(
    worker: &std::path::Path,
    url: &str,
    env: &[(String, String)],
    cache: &std::path::Path,
) -> Output {
    std::process::Command::new(worker)
        .args(["datasets", "show", "imdb", "--n", "1", "--data-root", url])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("CD_DATA_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("CD_DATA_ROOT")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn imdb_shards_from_s3_are_copied_once_and_refreshed_when_changed() {
    let Some(bin) = S3Server::binary() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(bin, &tmp.path().join("s3"), &tmp.path().join("s3.log")).unwrap();
    // The only test in this file: setting the process environment is safe here.
    for (k, v) in server.env() {
        std::env::set_var(k, v);
    }
    let url = server.url("raw");
    let store = Store::open(&url).unwrap();
    let sample = std::fs::read(
        workspace_root().join("datasets/reference/imdb_hub/plain_text/test-00000-of-00001.parquet"),
    )
    .unwrap();
    for shard in ["00000", "00001"] {
        store
            .put_bytes(
                &format!("plain_text/test-{shard}-of-00002.parquet"),
                sample.clone().into(),
            )
            .await
            .unwrap();
    }
    // Not needed by IMDb: must not be copied.
    store
        .put_bytes(
            "plain_text/train-00000-of-00001.parquet",
            sample.clone().into(),
        )
        .await
        .unwrap();

    let cache = tmp.path().join("data-cache");
    let worker = &bins().worker;
    let run = |expect: &str| {
        let o = show(worker, &url, &server.env(), &cache);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{out}\n{err}\n{}",
            tail(&tmp.path().join("s3.log"), 20)
        );
        assert!(out.contains(expect), "expected `{expect}` in {out}");
        err
    };
    let err = run("counts: negative=8 positive=6");
    assert_eq!(err.matches("copied from the data root").count(), 2, "{err}");
    let copies: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(copies.len(), 1, "one copy directory");
    let copy = copies[0].as_ref().unwrap().path();
    assert!(copy
        .join("plain_text/test-00001-of-00002.parquet")
        .is_file());
    assert!(!copy
        .join("plain_text/train-00000-of-00001.parquet")
        .exists());

    // Unchanged objects: the copy is reused, nothing downloaded.
    let err = run("counts: negative=8 positive=6");
    assert!(err.contains("reusing the cached copy"), "{err}");
    assert!(!err.contains("copied from the data root"), "{err}");

    // A third shard appears: a new copy of what is there now.
    store
        .put_bytes(
            "plain_text/test-00002-of-00002.parquet",
            sample.clone().into(),
        )
        .await
        .unwrap();
    let err = run("counts: negative=12 positive=9");
    assert_eq!(err.matches("copied from the data root").count(), 3, "{err}");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);

    // A task with this data root goes through the same resolution: the
    // pipeline reuses the copy and probes all 21 reviews.
    let Some(models) = tiny_models() else { return };
    let mut spec = example_spec();
    spec.sweep = "s3data".into();
    spec.model.name = "tiny-qwen".into();
    spec.model.source = ModelSource::Dir {
        path: models.join("qwen2_bias_tied").display().to_string(),
    };
    spec.data_root = url.clone();
    spec.site = Site::Residual;
    // The three shards, in load order, are the same sample file.
    let shard_sha = hex::encode(Sha256::digest(&sample));
    spec.dataset = DatasetRef {
        name: "imdb".into(),
        identity: DatasetIdentity {
            manifest_sha256: cd_common::content::manifest_sha256(
                cd_common::datasets::find("imdb").unwrap().0,
            ),
            files_sha256: vec![shard_sha.clone(); 3],
        },
    };
    spec.upload_features = false;
    let spec_path = tmp.path().join("spec.json");
    std::fs::write(&spec_path, spec.canonical_json()).unwrap();
    let results = tmp.path().join("results");
    let o = std::process::Command::new(worker)
        .args(["cell", "--spec"])
        .arg(&spec_path)
        .arg("--store")
        .arg(format!("file://{}", results.display()))
        // The flag, not the variable: the copy made above is only found if
        // `--data-cache` reaches the pipeline.
        .arg("--data-cache")
        .arg(&cache)
        .envs(server.env())
        .env_remove("CD_DATA_CACHE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "cd-worker cell failed: {err}");
    assert!(err.contains("reusing the cached copy"), "{err}");
    let key = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let m = CellMetrics::from_json(&std::fs::read_to_string(results.join(key)).unwrap()).unwrap();
    assert_eq!(m.n_examples, 21);

    // A task made for other data (two shards) is refused, naming both.
    let mut other: TaskSpec = spec.clone();
    other.dataset.identity.files_sha256 = vec![shard_sha; 2];
    std::fs::write(&spec_path, other.canonical_json()).unwrap();
    let o = std::process::Command::new(worker)
        .args(["cell", "--spec"])
        .arg(&spec_path)
        .arg("--store")
        .arg(format!("file://{}", results.display()))
        .arg("--data-cache")
        .arg(&cache)
        .envs(server.env())
        .env_remove("CD_DATA_CACHE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("holds other data"), "{err}");
}
