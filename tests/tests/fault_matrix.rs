//! The fault matrix: one scenario per way a sweep can be hurt by a bad worker,
//! a bad token holder, a bad storage server or a bad grid, each run with real
//! processes (`cd-coordinator`, `cd-worker`s, an S3-compatible server).
//!
//! Every scenario that lets the sweep run ends with the same check: every
//! cell stored exactly once, complete and parseable, nothing lost, nothing
//! finished recomputed, and no attempt or staging leftovers. Scenarios that
//! must be refused check the exit code and the message. `docs/reliability.md`
//! lists the matrix and its results.

use cd_tests::fixtures::*;
use cd_tests::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const DONE_TIMEOUT: Duration = Duration::from_secs(300);

/// `LeaseTask` as `worker`: the lease id and task id, if a task was leased.
fn lease(cluster: &Cluster, worker: &str) -> Option<(String, String)> {
    cluster
        .lease_as(worker)
        .unwrap()
        .map(|l| (l.lease_id, l.task_id))
}

/// `CompleteTask` as `worker`: whether the coordinator accepted it.
fn complete(cluster: &Cluster, worker: &str, lease_id: &str, task_id: &str) -> bool {
    cluster.complete_as(worker, lease_id, task_id).unwrap()
}

/// No attempt objects or staging files are left beside finished cells
/// (empty directories a file-backed store keeps do not count).
fn assert_no_leftovers(cluster: &Cluster) {
    let tasks = cluster.results_dir.join(SWEEP).join("tasks");
    let mut left = Vec::new();
    let mut stack = vec![tasks];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let shown = path.to_string_lossy();
                if shown.contains("/attempts/") || shown.contains('#') {
                    left.push(path);
                }
            }
        }
    }
    assert!(left.is_empty(), "leftovers in storage: {left:?}");
}

/// How many times each task was leased, from the workers' logs.
fn leases_per_task(cluster: &Cluster) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for w in cluster.workers.values() {
        let log = std::fs::read_to_string(&w.log).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("task leased")) {
            if let Some(id) = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("task="))
            {
                *out.entry(id.to_string()).or_insert(0) += 1;
            }
        }
    }
    out
}

/// A grid of `seeds` cells over the Cities stand-in under `data`.
fn cities_grid(models: &Path, data: &Path, seeds: usize) -> String {
    format!(
        r#"version = 1
sweep = "{SWEEP}"
data_root = "{}"
[storage]
url = "file://unused"
upload_features = false
[scheduling]
max_attempts = 2
lease_ttl_secs = 6
heartbeat_interval_secs = 1
[extraction]
site = "residual"
batch_size = 8
[probe]
split = {{ kind = "grouped", k = 3 }}
[[models]]
name = "qwen-tiny"
size_b = 0.001
source = {{ kind = "dir", path = "{}" }}
[axes]
datasets = ["cities"]
precisions = ["32"]
seeds = [{}]
"#,
        data.display(),
        models.join("qwen2_bias_tied").display(),
        (0..seeds)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[test]
fn a_worker_with_a_wrong_data_root_is_quarantined_and_the_sweep_completes() {
    let Some(models) = tiny_models() else { return };
    let place = tempfile::tempdir().unwrap();
    let data = place.path().join("data");
    cities_standin(&data);
    let mut cluster = ClusterBuilder::new(cities_grid(&models, &data, 6))
        .start()
        .unwrap();
    // The misconfigured node joins first and would, unchecked, fail every cell.
    let missing = place.path().join("not-mounted-here");
    cluster
        .start_worker("bad", &["--data-root", missing.to_str().unwrap()])
        .unwrap();
    let bad = wait_for("the bad worker's quarantine", DONE_TIMEOUT, || {
        let state = cluster.dashboard_state().ok()?;
        state["workers"]
            .as_array()?
            .iter()
            .find(|w| w["id"] == "bad" && w["state"] == "quarantined")
            .cloned()
    })
    .unwrap();
    let why = bad["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("not-mounted-here"),
        "the quarantine should name the missing data root: {bad}"
    );
    let s = cluster.status().unwrap();
    assert_eq!(
        (s.failed, s.completed),
        (0, 0),
        "a worker's own fault was charged to cells: {s:?}"
    );
    cluster.start_worker("good-1", &[]).unwrap();
    cluster.start_worker("good-2", &[]).unwrap();
    assert_sweep_completes(&cluster, DONE_TIMEOUT);
    assert_every_cell_once(&cluster);
    let st = cluster
        .wait_worker_exit("bad", Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        st.code(),
        Some(worker_exit::OK),
        "the quarantined worker exits when the sweep is done"
    );
}

#[test]
fn a_worker_killed_mid_upload_leaves_one_complete_cell() {
    let (Some(models), Some(s3)) = (tiny_models(), S3Server::binary()) else {
        return;
    };
    let grid = tiny_grid(&models, &["llama_gqa_rope3"], 3000, &["none"], &[0, 1]);
    let mut cluster = ClusterBuilder::new(grid).s3(s3).start().unwrap();
    cluster.start_worker("w0", &[]).unwrap();
    let log = cluster.worker("w0").log.clone();
    // Freeze the storage server once the worker has its data (extraction
    // takes seconds), so that its first result write hangs in flight; kill
    // the worker there, then thaw.
    cluster
        .wait_for_log(&log, "dataset loaded", DONE_TIMEOUT)
        .unwrap();
    let s3_pid = cluster.s3.as_ref().unwrap().pid().unwrap();
    signal(s3_pid, "STOP").unwrap();
    let frozen = cluster.wait_for_log(&log, "storage call what=\"write spec.json\"", DONE_TIMEOUT);
    std::thread::sleep(Duration::from_millis(500));
    cluster.kill_worker("w0").unwrap();
    signal(s3_pid, "CONT").unwrap();
    frozen.unwrap();
    let before = cluster.status().unwrap();
    assert_eq!(before.completed, 0, "the killed upload counted as complete");
    cluster.start_worker("w1", &[]).unwrap();
    assert_sweep_completes(&cluster, DONE_TIMEOUT);
    let files = assert_every_cell_once(&cluster);
    for (id, bytes) in cluster.task_files(SWEEP, "features.safetensors") {
        assert!(files.contains_key(&id));
        features_shape(&bytes);
    }
    assert_eq!(
        cluster.task_files(SWEEP, "features.safetensors").len(),
        files.len(),
        "a cell lacks its features"
    );
    assert_no_leftovers(&cluster);
}

#[test]
fn a_coordinator_restart_keeps_the_lease_in_flight() {
    let Some(models) = tiny_models() else { return };
    let grid = tiny_grid(
        &models,
        &["llama_gqa_rope3"],
        600,
        &["none", "prefix-aaa-bbb"],
        &[0],
    );
    let mut cluster = ClusterBuilder::new(grid).workers(1).start().unwrap();
    let log = cluster.worker("w0").log.clone();
    cluster
        .wait_for_log(&log, "task leased", DONE_TIMEOUT)
        .unwrap();
    cluster.kill_coordinator().unwrap();
    cluster.start_coordinator().unwrap();
    let after = cluster.status().unwrap();
    assert!(
        after.leased + after.completed >= 1,
        "the restarted coordinator forgot the lease in flight: {after:?}"
    );
    assert_sweep_completes(&cluster, DONE_TIMEOUT);
    assert_every_cell_once(&cluster);
    let leases = leases_per_task(&cluster);
    assert_eq!(leases.len() as u64, after.total, "leases seen: {leases:?}");
    assert!(
        leases.values().all(|&n| n == 1),
        "a task was leased twice across the restart (its work thrown away): {leases:?}\n{}",
        cluster.logs()
    );
}

#[test]
fn storage_down_for_thirty_seconds_loses_nothing() {
    let (Some(models), Some(s3)) = (tiny_models(), S3Server::binary()) else {
        return;
    };
    let grid = tiny_grid(
        &models,
        &["llama_gqa_rope3"],
        100,
        &["none", "prefix-aaa-bbb"],
        &[0],
    );
    let mut cluster = ClusterBuilder::new(grid).s3(s3).workers(1).start().unwrap();
    cluster
        .wait_for_status("one cell complete", DONE_TIMEOUT, |s| s.completed >= 1)
        .unwrap();
    let finished = cluster.metrics_files(SWEEP);
    cluster.s3.as_mut().unwrap().stop().unwrap();
    let down = Instant::now();
    // The outage itself is the fault: 30 s, several lease lifetimes.
    std::thread::sleep(Duration::from_secs(30));
    let during = cluster.status().unwrap();
    assert_eq!(during.failed, 0, "the outage failed cells: {during:?}");
    cluster.s3.as_mut().unwrap().restart().unwrap();
    assert!(down.elapsed() >= Duration::from_secs(30));
    assert_sweep_completes(&cluster, DONE_TIMEOUT);
    let after = assert_every_cell_once(&cluster);
    for (id, bytes) in &finished {
        assert_eq!(&after[id], bytes, "cell {id} was recomputed");
    }
    assert_no_leftovers(&cluster);
}

#[test]
fn a_client_flooding_lease_task_holds_one_lease_and_costs_no_attempt() {
    let Some(models) = tiny_models() else { return };
    let grid = tiny_grid(&models, &["llama_gqa_rope3"], 40, &["none"], &[0, 1, 2]);
    let mut cluster = ClusterBuilder::new(grid).start().unwrap();
    cluster.register_client("flood").unwrap();
    let first = lease(&cluster, "flood").expect("a task to lease");
    for _ in 0..200 {
        assert_eq!(
            lease(&cluster, "flood").as_ref(),
            Some(&first),
            "a repeated LeaseTask handed out another lease"
        );
    }
    let s = cluster.status().unwrap();
    assert_eq!((s.leased, s.pending), (1, 2), "{s:?}");
    // The flooding client vanishes with its lease; a real worker does the work.
    cluster.start_worker("w0", &[]).unwrap();
    assert_sweep_completes(&cluster, DONE_TIMEOUT);
    assert_every_cell_once(&cluster);
    let state = cluster.dashboard_state().unwrap();
    let flood = state["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "flood")
        .cloned()
        .expect("the flooding client is listed");
    assert!(
        flood["consecutive_faults"].as_u64().unwrap_or(0) >= 1,
        "the lapsed lease was not charged to the client that held it: {flood}"
    );
}

#[test]
fn forged_completions_from_another_worker_are_refused() {
    let Some(models) = tiny_models() else { return };
    let grid = tiny_grid(&models, &["llama_gqa_rope3"], 1500, &["none"], &[0, 1]);
    let mut cluster = ClusterBuilder::new(grid).workers(1).start().unwrap();
    let log = cluster.worker("w0").log.clone();
    cluster
        .wait_for_log(&log, "task leased", DONE_TIMEOUT)
        .unwrap();
    let victim = wait_for("w0's task in the dashboard", DONE_TIMEOUT, || {
        let state = cluster.dashboard_state().ok()?;
        state["workers"]
            .as_array()?
            .iter()
            .find(|w| w["id"] == "w0")?["task_id"]
            .as_str()
            .map(str::to_string)
    })
    .unwrap();
    cluster.register_client("forger").unwrap();
    let (own_lease, own_task) = lease(&cluster, "forger").expect("the other task");
    assert_ne!(own_task, victim);
    // Its own lease, someone else's task; the victim's name, a made-up lease.
    assert!(!complete(&cluster, "forger", &own_lease, &victim));
    assert!(!complete(&cluster, "w0", &own_lease, &victim));
    assert!(!complete(&cluster, "w0", "0-1", &victim));
    // Its own task, without a result in storage.
    assert!(!complete(&cluster, "forger", &own_lease, &own_task));
    let s = cluster.status().unwrap();
    assert_eq!((s.completed, s.failed), (0, 0), "{s:?}");
    assert_sweep_completes(&cluster, DONE_TIMEOUT);
    assert_every_cell_once(&cluster);
}

/// Run `cd-coordinator --grid <grid>` with extra flags; its exit code and stderr.
fn coordinator_once(dir: &Path, grid: &str, extra: &[&str]) -> (Option<i32>, String) {
    let path = dir.join("grid.toml");
    std::fs::write(&path, grid).unwrap();
    let out = Command::new(&bins().coordinator)
        .arg("--grid")
        .arg(&path)
        .args(extra)
        .env("CD_TOKEN", "t")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn grids_with_extreme_scheduling_values_are_refused() {
    let Some(models) = tiny_models() else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_grid(&models, &["llama_gqa_rope3"], 40, &["none"], &[0]);
    let store = format!("file://{}", dir.path().join("store").display());
    let cases = [
        (
            "lease_ttl_secs = 4",
            "lease_ttl_secs = 18446744073709551615",
            "scheduling.lease_ttl_secs",
        ),
        (
            "heartbeat_interval_secs = 1",
            "heartbeat_interval_secs = 0",
            "scheduling.heartbeat_interval_secs",
        ),
        (
            "max_attempts = 3",
            "max_attempts = 4294967295",
            "scheduling.max_attempts",
        ),
        (
            "coinflip_gen/40",
            "coinflip_gen/18446744073709551615",
            "axes.datasets",
        ),
        ("batch_size = 8", "batch_size = 0", "extraction.batch_size"),
    ];
    for (from, to, field) in cases {
        assert!(base.contains(from), "fixture lacks `{from}`");
        let (code, out) = coordinator_once(
            dir.path(),
            &base.replace(from, to),
            &["--store", &store, "--listen", "127.0.0.1:0"],
        );
        assert_eq!(
            code,
            Some(cd_proto::exit::coordinator::CONFIG),
            "`{to}` should be refused as a configuration error:\n{out}"
        );
        assert!(
            out.contains(field),
            "`{to}`: the error names no `{field}`:\n{out}"
        );
        assert!(!out.contains("panicked"), "`{to}` panicked:\n{out}");
    }
    assert!(
        !dir.path().join("store").join(SWEEP).join("tasks").exists(),
        "a refused grid wrote tasks"
    );
}

#[test]
fn a_second_coordinator_on_the_same_sweep_is_fenced() {
    let Some(models) = tiny_models() else { return };
    let grid = tiny_grid(&models, &["llama_gqa_rope3"], 200, &["none"], &[0, 1]);
    let cluster = ClusterBuilder::new(grid.clone())
        .workers(1)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = coordinator_once(
        dir.path(),
        &grid,
        &[
            "--store",
            &cluster.store_url,
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--http-listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
    );
    assert_eq!(
        code,
        Some(cd_proto::exit::coordinator::FENCED),
        "a second coordinator on a served sweep must stop:\n{out}"
    );
    assert!(
        out.contains("coordinator") && out.contains("lock"),
        "the refusal should say which lock holds the sweep:\n{out}"
    );
    assert_sweep_completes(&cluster, DONE_TIMEOUT);
    assert_every_cell_once(&cluster);
}
