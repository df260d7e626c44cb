//! End-to-end tests of the cluster with real processes: `cd-coordinator`,
//! `cd-worker`s and a real S3-compatible server, on tiny random checkpoints
//! (and, when available, the real SmolLM2-135M GGUF).
//!
//! Fault tests kill real processes with SIGKILL: a worker mid-task, the
//! coordinator mid-sweep, the storage server mid-sweep. Each test checks what
//! ends up in storage: every cell's `metrics.json` exactly once, complete and
//! parseable, and nothing finished recomputed.

use cd_common::metrics::CellMetrics;
use cd_tests::fixtures::*;
use cd_tests::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const DONE_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn sweep_on_s3_stores_every_cell_once_with_features() {
    let (Some(models), Some(s3)) = (tiny_models(), S3Server::binary()) else {
        return;
    };
    let grid = tiny_grid(
        &models,
        &["llama_gqa_rope3", "qwen2_bias_tied"],
        40,
        &["none", "prefix-aaa-bbb"],
        &[0],
    );
    let cluster = ClusterBuilder::new(grid).s3(s3).workers(2).start().unwrap();
    let status = cluster.wait_for_sweep_done(DONE_TIMEOUT).unwrap();
    assert_eq!(
        (status.total, status.completed, status.failed),
        (4, 4, 0),
        "{}",
        cluster.logs()
    );
    let files = assert_every_cell_once(&cluster);
    let features = cluster.task_files(SWEEP, "features.safetensors");
    assert_eq!(
        features.len(),
        files.len(),
        "a cell lacks its features.safetensors"
    );
    for (id, bytes) in &features {
        let m = CellMetrics::from_json(std::str::from_utf8(&files[id]).unwrap()).unwrap();
        let shape = features_shape(bytes);
        assert_eq!(shape[0], m.n_examples, "{id}: features rows");
        assert_eq!(shape[1], m.n_layers, "{id}: features layers");
    }
    let specs = cluster.task_files(SWEEP, "spec.json");
    assert_eq!(specs.len(), files.len(), "a cell lacks its spec.json");
    // Both workers exit by themselves once the sweep is done (--idle-exit).
    let mut cluster = cluster;
    for id in ["w0", "w1"] {
        let st = cluster
            .wait_worker_exit(id, Duration::from_secs(60))
            .unwrap();
        assert_eq!(st.code(), Some(0), "worker {id} exit status");
    }
}

#[test]
fn killed_worker_task_is_leased_again_and_completed_once() {
    let Some(models) = tiny_models() else { return };
    let grid = tiny_grid(
        &models,
        &["llama_gqa_rope3"],
        200,
        &["none", "prefix-aaa-bbb"],
        &[0, 1],
    );
    let mut cluster = ClusterBuilder::new(grid).workers(1).start().unwrap();
    // Wait until the worker is inside a task (past loading, extracting), then kill it.
    let log = cluster.worker("w0").log.clone();
    cluster
        .wait_for_log(&log, "task leased", DONE_TIMEOUT)
        .unwrap();
    cluster.kill_worker("w0").unwrap();
    let before = cluster.status().unwrap();
    assert_eq!(
        before.leased, 1,
        "the killed worker's lease should still be held: {before:?}"
    );
    cluster.start_worker("w1", &[]).unwrap();
    assert_sweep_completes(&cluster, DONE_TIMEOUT);
    assert_every_cell_once(&cluster);
}

#[test]
fn coordinator_killed_and_restarted_recomputes_nothing() {
    let Some(models) = tiny_models() else { return };
    let grid = tiny_grid(
        &models,
        &["llama_gqa_rope3", "qwen2_bias_tied"],
        100,
        &["none", "prefix-aaa-bbb"],
        &[0, 1],
    );
    let mut cluster = ClusterBuilder::new(grid).workers(2).start().unwrap();
    let total = cluster
        .wait_for_status("two cells complete", DONE_TIMEOUT, |s| s.completed >= 2)
        .unwrap()
        .total;
    cluster.kill_coordinator().unwrap();
    // Everything stored now is finished work: none of it may be written again.
    let finished = cluster.metrics_files(SWEEP);
    assert!(
        finished.len() >= 2 && (finished.len() as u64) < total,
        "kill came too late: {} of {total}",
        finished.len()
    );
    cluster.start_coordinator().unwrap();
    let status = cluster.wait_for_sweep_done(DONE_TIMEOUT).unwrap();
    assert_eq!(
        (status.completed, status.failed),
        (total, 0),
        "{}",
        cluster.logs()
    );
    let after = assert_every_cell_once(&cluster);
    for (id, bytes) in &finished {
        assert_eq!(
            &after[id], bytes,
            "cell {id} finished before the restart but was written again"
        );
    }
}

#[test]
fn moving_the_data_and_the_model_and_renaming_it_recomputes_nothing() {
    let Some(models) = tiny_models() else { return };
    let place = tempfile::tempdir().unwrap();
    let (model_a, data_a) = (
        place.path().join("models-a/qwen"),
        place.path().join("data-a"),
    );
    copy_dir(&models.join("qwen2_bias_tied"), &model_a);
    cities_standin(&data_a);
    let grid = |model: &Path, data: &Path, name: &str, batch: usize| {
        format!(
            r#"version = 1
sweep = "{SWEEP}"
data_root = "{}"
[storage]
url = "file://unused"
upload_features = false
[scheduling]
max_attempts = 2
lease_ttl_secs = 10
heartbeat_interval_secs = 2
[extraction]
site = "residual"
batch_size = {batch}
[probe]
split = {{ kind = "grouped", k = 3 }}
[[models]]
name = "{name}"
size_b = 0.001
source = {{ kind = "dir", path = "{}" }}
[axes]
datasets = ["cities"]
precisions = ["32"]
seeds = [0, 1, 2, 3]
"#,
            data.display(),
            model.display()
        )
    };
    let mut cluster = ClusterBuilder::new(grid(&model_a, &data_a, "qwen-tiny", 8))
        .workers(1)
        .start()
        .unwrap();
    let status = cluster.wait_for_sweep_done(DONE_TIMEOUT).unwrap();
    assert_eq!(
        (status.completed, status.failed),
        (4, 0),
        "{}",
        cluster.logs()
    );
    let before = assert_every_cell_once(&cluster);
    cluster.kill_coordinator().unwrap();

    // Move both, rename the model, change the batch size: the same cells.
    let (model_b, data_b) = (
        place.path().join("elsewhere/weights"),
        place.path().join("mnt/data"),
    );
    std::fs::create_dir_all(model_b.parent().unwrap()).unwrap();
    std::fs::create_dir_all(data_b.parent().unwrap()).unwrap();
    std::fs::rename(&model_a, &model_b).unwrap();
    std::fs::rename(&data_a, &data_b).unwrap();
    std::fs::write(
        &cluster.grid_path,
        grid(&model_b, &data_b, "Qwen (renamed)", 32),
    )
    .unwrap();
    assert_eq!(
        grid_task_ids(&cluster.grid_path)
            .unwrap()
            .into_iter()
            .collect::<BTreeSet<_>>(),
        before.keys().cloned().collect::<BTreeSet<_>>(),
        "the moved grid names other cells"
    );
    cluster.start_coordinator().unwrap();
    let status = cluster.status().unwrap();
    assert_eq!(
        (status.total, status.completed, status.pending),
        (4, 4, 0),
        "after the move every cell is already complete\n{}",
        cluster.logs()
    );
    assert_eq!(
        cluster.metrics_files(SWEEP),
        before,
        "nothing was rewritten"
    );
}

#[test]
fn storage_outage_is_retried_and_nothing_is_half_written() {
    let (Some(models), Some(s3)) = (tiny_models(), S3Server::binary()) else {
        return;
    };
    let grid = tiny_grid(
        &models,
        &["llama_gqa_rope3"],
        100,
        &["none", "prefix-aaa-bbb"],
        &[0, 1],
    );
    let mut cluster = ClusterBuilder::new(grid).s3(s3).workers(1).start().unwrap();
    let log = cluster.worker("w0").log.clone();
    cluster
        .wait_for_status("one cell complete", DONE_TIMEOUT, |s| s.completed >= 1)
        .unwrap();
    cluster.s3.as_mut().unwrap().stop().unwrap();
    // The worker must notice the outage and keep retrying, not fail the task.
    cluster
        .wait_for_log(&log, "storage call failed", DONE_TIMEOUT)
        .unwrap();
    cluster.s3.as_mut().unwrap().restart().unwrap();
    assert_sweep_completes(&cluster, DONE_TIMEOUT);
    let files = assert_every_cell_once(&cluster);
    for (id, bytes) in cluster.task_files(SWEEP, "features.safetensors") {
        assert!(files.contains_key(&id));
        features_shape(&bytes);
    }
}

#[test]
fn workers_with_a_wrong_or_missing_token_are_refused() {
    let Some(models) = tiny_models() else { return };
    let grid = tiny_grid(&models, &["llama_gqa_rope3"], 40, &["none"], &[0]);
    let mut cluster = ClusterBuilder::new(grid).start().unwrap();
    cluster
        .start_worker_with_token("wrong", Some("not-the-token"), &[])
        .unwrap();
    cluster.start_worker_with_token("none", None, &[]).unwrap();
    for id in ["wrong", "none"] {
        let st = cluster
            .wait_worker_exit(id, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            st.code(),
            Some(worker_exit::AUTH),
            "worker `{id}` should exit with code 3 (refused credentials)"
        );
    }
    let s = cluster.status().unwrap();
    assert_eq!(
        (s.leased, s.completed),
        (0, 0),
        "a refused worker got work: {s:?}"
    );
}

/// Wait until `worker`'s log shows `needle`, send it SIGTERM, and return how it exited.
fn sigterm_once_logged(
    cluster: &mut Cluster,
    worker: &str,
    needle: &str,
) -> std::process::ExitStatus {
    let log = cluster.worker(worker).log.clone();
    cluster.wait_for_log(&log, needle, DONE_TIMEOUT).unwrap();
    signal(cluster.worker(worker).child.id(), "TERM").unwrap();
    cluster
        .wait_worker_exit(worker, Duration::from_secs(30))
        .unwrap()
}

#[test]
fn sigterm_hands_the_lease_back_and_exits_143() {
    let Some(models) = tiny_models() else { return };
    let grid = tiny_grid(&models, &["llama_gqa_rope3"], 2000, &["none"], &[0]);
    let mut cluster = ClusterBuilder::new(grid).start().unwrap();
    cluster
        .start_worker("w0", &["--shutdown-grace-secs", "0"])
        .unwrap();
    let st = sigterm_once_logged(&mut cluster, "w0", "task leased");
    // Stopped mid-sweep: not 0, which a Kubernetes Indexed Job would count as
    // a finished index, but the code its podFailurePolicy ignores.
    assert_eq!(
        st.code(),
        Some(worker_exit::SIGNALLED),
        "exit status of a worker stopped by SIGTERM mid-sweep"
    );
    assert_eq!(worker_exit::SIGNALLED, 128 + 15, "128 + SIGTERM");
    let s = cluster.status().unwrap();
    if s.completed == 0 {
        // The task did not finish: its lease must be back at once, not after expiry.
        assert_eq!(s.leased, 0, "the lease was not handed back: {s:?}");
        assert!(
            cluster.metrics_files(SWEEP).is_empty(),
            "a cancelled task wrote metrics.json"
        );
    }
}

#[test]
fn sigterm_after_the_sweep_is_done_exits_zero() {
    let Some(models) = tiny_models() else { return };
    let grid = tiny_grid(&models, &["qwen2_bias_tied"], 40, &["none"], &[0]);
    let mut cluster = ClusterBuilder::new(grid).start().unwrap();
    cluster.start_polling_worker("w0", &[]).unwrap();
    // The worker has done the only cell and heard that the sweep is over.
    let st = sigterm_once_logged(&mut cluster, "w0", "sweep_done=true");
    assert_eq!(
        st.code(),
        Some(worker_exit::OK),
        "a worker stopped after the sweep is done has finished its work"
    );
    assert_eq!(cluster.status().unwrap().completed, 1);
}

#[test]
fn cell_subcommand_runs_one_task_and_is_idempotent() {
    let Some(models) = tiny_models() else { return };
    let grid = tiny_grid(&models, &["qwen2_bias_tied"], 40, &["none"], &[0]);
    let spec = cd_common::grid::Grid::parse(&grid, Path::new("grid.toml"))
        .unwrap()
        .tasks
        .remove(0);
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.canonical_json()).unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let run = || {
        let out = std::process::Command::new(&bins().worker)
            .args(["cell", "--spec"])
            .arg(&spec_path)
            .args(["--store", &store])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cd-worker cell failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let key = run();
    assert_eq!(key, format!("{SWEEP}/tasks/{}/metrics.json", spec.id()));
    let path = dir.path().join("store").join(&key);
    let first = std::fs::read(&path).unwrap();
    let m = CellMetrics::from_json(std::str::from_utf8(&first).unwrap()).unwrap();
    assert_eq!(m.spec, spec);
    assert_eq!(m.n_examples, 40);
    assert_eq!(run(), key);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        first,
        "a complete cell was recomputed"
    );
}

#[test]
fn smollm2_cell_through_the_cluster() {
    let Some(gguf) = smollm2_gguf() else { return };
    let grid = format!(
        r#"version = 1
sweep = "{SWEEP}"
data_root = "{data}"

[storage]
url = "file://unused"
upload_features = false

[scheduling]
lease_ttl_secs = 30
heartbeat_interval_secs = 2

[extraction]
site = "post_attention_norm"
pooling = "last"
batch_size = 8

[[models]]
name = "SmolLM2-135M"
size_b = 0.135
source = {{ kind = "gguf", path = "{gguf}" }}

[axes]
datasets = ["coinflip_gen/16"]
precisions = ["32"]
noise = ["none"]
prompt_modes = ["paper"]
seeds = [0]
"#,
        data = shared_datasets().join("cd").display(),
        gguf = gguf.display()
    );
    let cluster = ClusterBuilder::new(grid).workers(1).start().unwrap();
    let status = cluster
        .wait_for_sweep_done(Duration::from_secs(900))
        .unwrap();
    assert_eq!(
        (status.completed, status.failed),
        (1, 0),
        "{}",
        cluster.logs()
    );
    let files = assert_every_cell_once(&cluster);
    let m = CellMetrics::from_json(std::str::from_utf8(files.values().next().unwrap()).unwrap())
        .unwrap();
    assert_eq!(m.n_layers, 30, "SmolLM2 has 30 post-attention-norm sites");
    assert_eq!(m.n_examples, 16);
    assert!(
        cluster.task_files(SWEEP, "features.safetensors").is_empty(),
        "features uploaded although switched off"
    );
}
