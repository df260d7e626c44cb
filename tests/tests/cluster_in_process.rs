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
use std::collections::BTreeSet;
use std::path::Path;
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

fn agent_args(coordinator: &str, token_file: &Path, id: &str) -> AgentArgs {
    Cli::parse_from([
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
    ])
    .agent
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
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let store = format!("memory://inproc-sweep-{}", std::process::id());
    let grid = grid(&store, &models, tmp.path(), 30);
    let expected: BTreeSet<String> = grid.task_ids().into_iter().map(|id| id.0).collect();
    assert_eq!(expected.len(), 4);

    let started = Instant::now();
    let running = server::start(ServerConfig::for_grid(grid, TOKEN))
        .await
        .unwrap();
    let url = format!("http://{}", running.grpc_addr);
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
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let store = format!("memory://inproc-lapse-{}", std::process::id());
    let grid = grid(&store, &models, tmp.path(), 2);
    let expected: BTreeSet<String> = grid.task_ids().into_iter().map(|id| id.0).collect();
    let running = server::start(ServerConfig::for_grid(grid, TOKEN))
        .await
        .unwrap();
    let url = format!("http://{}", running.grpc_addr);

    // A client registers, takes a lease and is never heard of again.
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    let channel = tonic::transport::Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client =
        CoordinatorClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", header.clone());
            Ok(req)
        });
    client
        .register(RegisterRequest {
            worker_id: "vanished".into(),
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
    let taken = client
        .lease_task(LeaseRequest {
            worker_id: "vanished".into(),
            loaded_model: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .lease
        .expect("a lease for the vanishing client");
    drop(client);

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
