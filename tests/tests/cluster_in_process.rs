//! The in-process cluster tier: the coordinator and several agents as
//! libraries on one tokio runtime, a `memory://` store and tiny checkpoints.
//! The code paths are those of the real-process tier (`cluster.rs`): gRPC over
//! loopback, each agent's executor thread and heartbeats, create-only
//! results in a store the coordinator checks, only without starting
//! processes, so a whole sweep takes about a second. Faults that need a real
//! process (signals, kills, exit codes) stay in `cluster.rs` and
//! `fault_matrix.rs`.

use cd_common::grid::Grid;
use cd_common::storage::Store;
use cd_coordinator::server::{self, ServerConfig};
use cd_proto::v1::coordinator_client::CoordinatorClient;
use cd_proto::v1::{device, Device, LeaseRequest, RegisterRequest};
use cd_tests::tiny_models;
use cd_worker::agent::{run_in_process, AgentArgs};
use clap::Parser;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: &str = "in-process-token";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    agent: AgentArgs,
}

/// Two tiny architectures × Coinflip with and without noise: four cells.
fn grid(store: &str, models: &Path, data: &Path, lease_ttl_secs: u64) -> Grid {
    let text = format!(
        r#"
version = 1
sweep = "inproc"
data_root = "{data}"
[storage]
url = "{store}"
upload_features = true
[scheduling]
max_attempts = 3
lease_ttl_secs = {lease_ttl_secs}
heartbeat_interval_secs = 1
[extraction]
batch_size = 8
[depth]
bootstrap = 10
[[models]]
name = "tiny-llama"
size_b = 0.001
source = {{ kind = "dir", path = "{llama}" }}
[[models]]
name = "tiny-qwen2"
size_b = 0.002
source = {{ kind = "dir", path = "{qwen}" }}
[axes]
datasets = ["coinflip_gen/60"]
precisions = ["32"]
noise = ["none", "prefix-aaa-bbb"]
"#,
        data = data.display(),
        llama = models.join("llama_gqa_rope3").display(),
        qwen = models.join("qwen2_bias_tied").display(),
    );
    Grid::parse(&text, Path::new("inproc.toml")).expect("the test grid is valid")
}

/// A scratch directory holding the agents' token file, and that file's path.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    (tmp, token_file)
}

/// A coordinator serving `grid`, and the gRPC URL agents dial.
async fn coordinator(grid: Grid) -> (server::Running, String) {
    let running = server::start(ServerConfig::for_grid(grid, TOKEN))
        .await
        .unwrap();
    let url = format!("http://{}", running.grpc_addr);
    (running, url)
}

fn agent_args(coordinator: &str, token_file: &Path, id: &str) -> AgentArgs {
    agent_args_with(coordinator, token_file, id, &[])
}

fn agent_args_with(coordinator: &str, token_file: &Path, id: &str, extra: &[&str]) -> AgentArgs {
    let mut argv = vec![
        "cd-worker",
        "--coordinator",
        coordinator,
        "--token-file",
        token_file.to_str().unwrap(),
        "--worker-id",
        id,
        "--gpus",
        "cpu",
        "--idle-exit",
    ];
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).agent
}

/// Six seeds of a Cities-format dataset read from the files under `data`.
fn cities_grid(store: &str, models: &Path, data: &Path) -> Grid {
    let text = format!(
        r#"
version = 1
sweep = "inproc"
data_root = "{data}"
[storage]
url = "{store}"
upload_features = false
[scheduling]
max_attempts = 2
lease_ttl_secs = 30
heartbeat_interval_secs = 1
[extraction]
batch_size = 8
[probe]
split = {{ kind = "grouped", k = 3 }}
[[models]]
name = "tiny-qwen2"
size_b = 0.001
source = {{ kind = "dir", path = "{qwen}" }}
[axes]
datasets = ["cities"]
precisions = ["32"]
seeds = [0, 1, 2, 3, 4, 5]
"#,
        data = data.display(),
        qwen = models.join("qwen2_bias_tied").display(),
    );
    Grid::parse(&text, Path::new("inproc-cities.toml")).expect("the test grid is valid")
}

/// `GET /api/state` of the coordinator's HTTP port, as JSON.
async fn dashboard_state(http: std::net::SocketAddr) -> serde_json::Value {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(http).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // HTTP/1.0: the whole body, never chunked.
        write!(
            conn,
            "GET /api/state HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        conn.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(
            head.starts_with("HTTP/1.") && head.contains(" 200 "),
            "{head}"
        );
        serde_json::from_str(body).unwrap()
    })
    .await
    .unwrap()
}

/// Start `n` agents; wait for all of them and return their exit codes.
async fn run_agents(coordinator: &str, token_file: &Path, n: usize) -> Vec<i32> {
    let agents: Vec<_> = (0..n)
        .map(|i| {
            let args = agent_args(coordinator, token_file, &format!("agent-{i}"));
            tokio::spawn(run_in_process(args))
        })
        .collect();
    let mut codes = Vec::new();
    for a in agents {
        codes.push(
            tokio::time::timeout(Duration::from_secs(120), a)
                .await
                .expect("agents finish the sweep within two minutes")
                .expect("agent task"),
        );
    }
    codes
}

/// A client driven by hand: registered as `worker` with one CPU, holding
/// the lease it was just given.
async fn hand_driven_lease(url: &str, worker: &str) -> (Client, cd_proto::v1::Lease) {
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    let channel = tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = CoordinatorClient::with_interceptor(
        channel,
        Box::new(move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", header.clone());
            Ok(req)
        }) as Auth,
    );
    client
        .register(RegisterRequest {
            worker_id: worker.into(),
            host: "nowhere".into(),
            devices: vec![Device {
                name: "cpu".into(),
                memory_bytes: 64 << 30,
                kind: device::Kind::Cpu as i32,
            }],
            version: "test".into(),
        })
        .await
        .unwrap();
    let lease = client
        .lease_task(LeaseRequest {
            worker_id: worker.into(),
            loaded_model: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .lease
        .expect("a task to lease");
    (client, lease)
}

type Auth =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync>;
type Client = CoordinatorClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>,
>;

/// Claim `lease` complete as `worker` (no result was written by it);
/// whether the coordinator accepted the claim.
async fn claim_complete(client: &mut Client, worker: &str, lease: &cd_proto::v1::Lease) -> bool {
    client
        .complete_task(cd_proto::v1::CompleteRequest {
            worker_id: worker.into(),
            lease_id: lease.lease_id.clone(),
            task_id: lease.task_id.clone(),
            metrics_key: format!("inproc/tasks/{}/metrics.json", lease.task_id),
            elapsed_ms: 1,
        })
        .await
        .map(|r| r.into_inner().accepted)
        .unwrap_or(false)
}

/// The coordinator's counts.
async fn sweep_status(client: &mut Client) -> cd_proto::v1::SweepStatusResponse {
    client
        .sweep_status(cd_proto::v1::SweepStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Every stored `metrics.json` of the sweep: task id → its content.
async fn stored_metrics(store_url: &str) -> BTreeMap<String, serde_json::Value> {
    let store = Store::open(store_url).unwrap();
    let mut out = BTreeMap::new();
    for id in store.list_completed("inproc").await.unwrap() {
        let m = store.get_metrics("inproc", &id).await.unwrap().unwrap();
        out.insert(id.0, m);
    }
    out
}

async fn completed_ids(store_url: &str) -> BTreeSet<String> {
    Store::open(store_url)
        .unwrap()
        .list_completed("inproc")
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_agents_in_one_process_finish_a_sweep() {
    let Some(models) = tiny_models() else { return };
    let (tmp, token_file) = scratch();
    let store = format!("memory://inproc-sweep-{}", std::process::id());
    let grid = grid(&store, &models, tmp.path(), 30);
    let expected: BTreeSet<String> = grid.task_ids().into_iter().map(|id| id.0).collect();
    assert_eq!(expected.len(), 4);

    let started = Instant::now();
    let (running, url) = coordinator(grid).await;
    let codes = run_agents(&url, &token_file, 3).await;
    assert_eq!(
        codes,
        [0, 0, 0],
        "every agent exits 0 once the sweep is done"
    );
    assert_eq!(completed_ids(&store).await, expected);
    running.shutdown().await.unwrap();
    eprintln!("in-process sweep of 4 cells: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_taken_by_a_vanished_client_is_run_by_the_agents_after_it_lapses() {
    let Some(models) = tiny_models() else { return };
    let (tmp, token_file) = scratch();
    let store = format!("memory://inproc-lapse-{}", std::process::id());
    let grid = grid(&store, &models, tmp.path(), 2);
    let expected: BTreeSet<String> = grid.task_ids().into_iter().map(|id| id.0).collect();
    let (running, url) = coordinator(grid).await;

    // A client registers, takes a lease and is never heard of again.
    let taken = hand_driven_lease(&url, "vanished").await.1;

    // The agents run the other cells, then the lapsed one, and stop.
    let codes = run_agents(&url, &token_file, 2).await;
    assert_eq!(codes, [0, 0]);
    let done = completed_ids(&store).await;
    assert!(
        done.contains(&taken.task_id),
        "the lapsed cell was run again"
    );
    assert_eq!(done, expected);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_whose_copy_of_the_data_differs_is_quarantined_and_charges_no_cell() {
    let Some(models) = tiny_models() else { return };
    let (tmp, token_file) = scratch();
    let data = tmp.path().join("data");
    cd_tests::fixtures::cities_standin(&data);
    // Another node's copy: the same file with one statement edited.
    let stale = tmp.path().join("stale");
    cd_tests::fixtures::cities_standin(&stale);
    let csv = std::fs::read_to_string(stale.join("cities.csv")).unwrap();
    std::fs::write(stale.join("cities.csv"), csv.replacen("Paris", "Parys", 1)).unwrap();

    let store = format!("memory://inproc-stale-{}", std::process::id());
    let grid = cities_grid(&store, &models, &data);
    let expected: BTreeSet<String> = grid.task_ids().into_iter().map(|id| id.0).collect();
    assert_eq!(expected.len(), 6);
    let (running, url) = coordinator(grid).await;

    // The node with the stale copy joins alone: every cell it takes fails
    // the identity check, until it is quarantined.
    let args = agent_args_with(
        &url,
        &token_file,
        "stale-copy",
        &["--data-root", stale.to_str().unwrap()],
    );
    let stale_agent = tokio::spawn(run_in_process(args));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (worker, state) = loop {
        let state = dashboard_state(running.http_addr).await;
        let worker = state["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == "stale-copy" && w["state"] == "quarantined")
            .cloned();
        if let Some(w) = worker {
            break (w, state);
        }
        assert!(
            Instant::now() < deadline,
            "the stale node was not quarantined: {state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let why = worker["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("cities") && why.contains("other data"),
        "the quarantine should name the dataset whose files differ: {worker}"
    );
    assert_eq!(
        (&state["counts"]["failed"], &state["counts"]["completed"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "a node's stale data was charged to cells: {state}"
    );

    // A node with the right files finishes every cell, each once.
    let codes = run_agents(&url, &token_file, 1).await;
    assert_eq!(codes, [0]);
    assert_eq!(completed_ids(&store).await, expected);
    let state = dashboard_state(running.http_addr).await;
    assert_eq!(state["counts"]["failed"], 0, "{state}");
    stale_agent.abort();
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_and_unbacked_completions_change_nothing() {
    let Some(models) = tiny_models() else { return };
    let (tmp, token_file) = scratch();
    let store = format!("memory://inproc-liar-{}", std::process::id());
    // The liar's lease lapses after 2 s; the agent then runs that cell too.
    let grid = grid(&store, &models, tmp.path(), 2);
    let (running, url) = coordinator(grid).await;

    // A client leases a task and claims it complete without writing a result.
    let (mut liar, lease) = hand_driven_lease(&url, "liar").await;
    assert!(
        !claim_complete(&mut liar, "liar", &lease).await,
        "a completion without metrics.json in storage was accepted"
    );
    assert_eq!(sweep_status(&mut liar).await.completed, 0);

    // An agent runs the sweep, the liar's cell included once its lease lapses.
    assert_eq!(run_agents(&url, &token_file, 1).await, [0]);
    let done = sweep_status(&mut liar).await;
    assert_eq!((done.completed, done.failed), (done.total, 0), "{done:?}");
    let files = stored_metrics(&store).await;
    assert_eq!(files.len() as u64, done.total);

    // The same completion again, late and duplicated.
    for _ in 0..2 {
        assert!(
            !claim_complete(&mut liar, "liar", &lease).await,
            "a duplicate completion was recorded"
        );
    }
    let after = sweep_status(&mut liar).await;
    assert_eq!(
        (after.completed, after.failed, after.total),
        (done.completed, done.failed, done.total)
    );
    assert_eq!(
        stored_metrics(&store).await,
        files,
        "a duplicate completion changed stored results"
    );
    running.shutdown().await.unwrap();
}
