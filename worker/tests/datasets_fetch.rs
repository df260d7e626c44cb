//! Remote data roots through the real binary: an HF Hub dataset served from a
//! Hub cache the test builds itself (the `datasets--owner--name` layout with
//! refs, snapshots and blobs), offline by `HF_HUB_OFFLINE` and `--offline`, a
//! pinned revision, and the Hub fallback of a local root without IMDb. The
//! endpoint points at a closed port, so any network attempt would fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const IMDB_PROMPT: &str =
    "According to the movie review, judge whether it is Positive or Negative.";

/// The pyarrow-written IMDb sample in the Hub's layout (datasets/reference/imdb_hub).
fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../datasets/reference/imdb_hub/plain_text/test-00000-of-00001.parquet")
}

/// `<home>/hub/datasets--stanfordnlp--imdb` as the Hub client leaves it: the
/// file in blobs/, a symlink to it in snapshots/<commit>/, refs/main naming the commit.
fn fake_hub_cache(home: &Path) {
    let repo = home.join("hub/datasets--stanfordnlp--imdb");
    let blob = repo.join("blobs/5d41402abc4b2a76b9719d911017c592");
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::copy(sample(), &blob).unwrap();
    let snap = repo.join(format!("snapshots/{COMMIT}/plain_text"));
    std::fs::create_dir_all(&snap).unwrap();
    std::os::unix::fs::symlink(
        "../../../blobs/5d41402abc4b2a76b9719d911017c592",
        snap.join("test-00000-of-00001.parquet"),
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
}

fn show(home: &Path, data_root: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cd-worker"));
    cmd.args([
        "datasets",
        "show",
        "imdb",
        "--n",
        "1",
        "--data-root",
        data_root,
    ])
    .args(extra)
    .env("HF_HOME", home)
    .env("HF_ENDPOINT", "http://127.0.0.1:9")
    .env("CD_DATA_CACHE", home.join("data-cache"))
    .env_remove("HF_HUB_CACHE")
    .env_remove("HF_HUB_OFFLINE")
    .env_remove("HF_TOKEN")
    .env_remove("CD_DATA_ROOT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn hub_dataset_from_the_local_cache_without_network() {
    let home = tempfile::tempdir().unwrap();
    fake_hub_cache(home.path());
    let first = format!(
        "I rented I AM CURIOUS-YELLOW from my video store.<br /><br />Avoid. {IMDB_PROMPT}"
    );
    for (root, extra, env) in [
        // HF_HUB_OFFLINE, the Hub's own switch.
        (
            "hf://datasets/stanfordnlp/imdb".to_string(),
            &[][..],
            &[("HF_HUB_OFFLINE", "1")][..],
        ),
        // The flag; a revision given as the commit itself.
        (
            format!("hf://datasets/stanfordnlp/imdb@{COMMIT}"),
            &["--offline"][..],
            &[][..],
        ),
        // Online mode: a cached file is used without asking the (dead) endpoint.
        (
            "hf://datasets/stanfordnlp/imdb".to_string(),
            &[][..],
            &[][..],
        ),
    ] {
        let o = show(home.path(), &root, extra, env);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{root}: {out}\n{err}");
        assert!(out.contains(&first), "{root}: {out}");
        assert!(
            out.contains("file: plain_text/test-00000-of-00001.parquet"),
            "{out}"
        );
        assert!(out.contains("counts: negative=4 positive=3"), "{out}");
    }
    assert!(
        !home.path().join("data-cache").exists(),
        "Hub files are read from the Hub cache, not copied again"
    );
}

#[test]
fn a_local_root_without_imdb_falls_back_to_its_hub_repository() {
    let home = tempfile::tempdir().unwrap();
    fake_hub_cache(home.path());
    let empty = tempfile::tempdir().unwrap();
    let root = empty.path().display().to_string();
    let o = show(home.path(), &root, &[], &[("HF_HUB_OFFLINE", "1")]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(err.contains("trying the HF Hub"), "{err}");
    assert!(out.contains("counts: negative=4 positive=3"), "{out}");

    // A user export under the root wins: no Hub involved.
    std::fs::write(
        empty.path().join("imdb_test.jsonl"),
        "{\"text\": \"mine\", \"label\": 0}\n{\"text\": \"also mine\", \"label\": 1}\n",
    )
    .unwrap();
    let o = show(home.path(), &root, &[], &[("HF_HUB_OFFLINE", "1")]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("file: imdb_test.jsonl"), "{out}");
    assert!(!err.contains("trying the HF Hub"), "{err}");
}

#[test]
fn missing_hub_files_say_where_they_were_expected() {
    let home = tempfile::tempdir().unwrap();
    fake_hub_cache(home.path());
    // Offline, a revision the cache does not hold.
    let o = show(
        home.path(),
        "hf://datasets/stanfordnlp/imdb@v2",
        &["--offline"],
        &[],
    );
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}");
    for needle in [
        "hf://datasets/stanfordnlp/imdb@v2",
        "plain_text/test-*.parquet",
        "offline",
        "datasets--stanfordnlp--imdb/snapshots/<commit>/<file> with refs/v2",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in: {err}");
    }
    // Online, nothing cached, the endpoint unreachable: a Hub error naming the repo.
    let empty_home = tempfile::tempdir().unwrap();
    let o = show(
        empty_home.path(),
        "hf://datasets/stanfordnlp/imdb",
        &[],
        &[],
    );
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}");
    assert!(
        err.contains("hf://datasets/stanfordnlp/imdb@main") && err.contains("cannot list"),
        "{err}"
    );
}
