//! The coordinator over real gRPC on loopback, with a scripted worker client:
//! leases, heartbeats, expiry and re-queue, attempt limits, idempotent
//! completion, auth refusal, model fit, HTTP probes and resume from a store.

use cd_common::grid::Grid;
use cd_common::metrics::CellMetrics;
use cd_common::spec::{TaskId, TaskSpec};
use cd_common::storage::Store;
use cd_coordinator::server::{self, Running, ServerConfig};
use cd_proto::status::{Reaction, Refusal};
use cd_proto::v1::coordinator_client::CoordinatorClient;
use cd_proto::v1::*;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const TOKEN: &str = "s3cret-token";

fn grid_text(store: &str, sweep: &str, ttl: u64, attempts: u32, extra_model: bool) -> String {
    let mut g = format!(
        r#"
version = 1
sweep = "{sweep}"
data_root = "/data"
[storage]
url = "{store}"
[scheduling]
max_attempts = {attempts}
lease_ttl_secs = {ttl}
heartbeat_interval_secs = 1
[[models]]
name = "small"
size_b = 0.1
source = {{ kind = "hub", repo = "org/small" }}
[[models]]
name = "big"
size_b = 70.0
source = {{ kind = "hub", repo = "org/big" }}
"#
    );
    if extra_model {
        g.push_str("[[models]]\nname = \"extra\"\nsize_b = 0.2\nsource = { kind = \"hub\", repo = \"org/extra\" }\n");
    }
    g.push_str("[axes]\ndatasets = [\"cities\", \"coinflip\"]\nprecisions = [\"32\"]\n");
    g
}

fn grid(store: &str, sweep: &str, ttl: u64, attempts: u32) -> Grid {
    Grid::parse(
        &grid_text(store, sweep, ttl, attempts, false),
        Path::new("test.toml"),
    )
    .unwrap()
}

async fn start(grid: Grid) -> Running {
    server::start(ServerConfig::for_grid(grid, TOKEN))
        .await
        .unwrap()
}

type AddToken = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send>;
type Client = CoordinatorClient<InterceptedService<Channel, AddToken>>;

async fn client(running: &Running, token: Option<&str>) -> Client {
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let header = token.map(|t| {
        format!("Bearer {t}")
            .parse::<tonic::metadata::MetadataValue<_>>()
            .unwrap()
    });
    let f: AddToken = Box::new(move |mut req| {
        if let Some(h) = &header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    });
    CoordinatorClient::with_interceptor(channel, f)
}

async fn register(c: &mut Client, id: &str, memory: u64) {
    c.register(RegisterRequest {
        worker_id: id.into(),
        host: "test".into(),
        devices: vec![Device {
            name: "cpu".into(),
            memory_bytes: memory,
            kind: device::Kind::Cpu as i32,
        }],
        version: "t".into(),
    })
    .await
    .unwrap();
}

async fn lease(c: &mut Client, id: &str, loaded: &str) -> LeaseResponse {
    c.lease_task(LeaseRequest {
        worker_id: id.into(),
        loaded_model: loaded.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

fn spec_of(l: &Lease) -> TaskSpec {
    serde_json::from_str(&l.spec_json).unwrap()
}

/// Write a valid (empty) result for `spec`, as a worker would before completing.
async fn write_metrics(store_url: &str, spec: &TaskSpec) {
    let store = Store::open(store_url).unwrap();
    store.put_spec(spec).await.unwrap();
    let value = serde_json::to_value(CellMetrics::placeholder(spec)).unwrap();
    store
        .put_metrics(&spec.sweep, &spec.id(), &value)
        .await
        .unwrap();
}

/// One lease each for fresh workers `{prefix}-0`, `{prefix}-1`, … until none
/// is granted (a worker holds at most one lease); returns `(worker, lease)`.
async fn drain(c: &mut Client, prefix: &str, memory: u64, loaded: &str) -> Vec<(String, Lease)> {
    let mut out = Vec::new();
    for i in 0.. {
        let id = format!("{prefix}-{i}");
        register(c, &id, memory).await;
        match lease(c, &id, loaded).await.lease {
            Some(l) => out.push((id, l)),
            None => break,
        }
    }
    out
}

async fn complete(c: &mut Client, worker: &str, l: &Lease) -> Result<bool, Status> {
    c.complete_task(CompleteRequest {
        worker_id: worker.into(),
        lease_id: l.lease_id.clone(),
        task_id: l.task_id.clone(),
        metrics_key: String::new(),
        elapsed_ms: 1,
    })
    .await
    .map(|r| r.into_inner().accepted)
}

/// A bare heartbeat (no progress) for `l`; whether the coordinator still holds the lease.
async fn heartbeat_ok(c: &mut Client, worker: &str, l: &Lease) -> bool {
    c.heartbeat(HeartbeatRequest {
        tokens_done: 0,
        worker_id: worker.into(),
        lease_id: l.lease_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .ok
}

async fn status(c: &mut Client) -> SweepStatusResponse {
    c.sweep_status(SweepStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

const GIB: u64 = 1 << 30;

#[tokio::test]
async fn refuses_calls_without_the_right_token() {
    let running = start(grid("memory://auth", "auth", 60, 3)).await;
    for token in [None, Some("wrong")] {
        let mut c = client(&running, token).await;
        let err = c.sweep_status(SweepStatusRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "token {token:?}");
    }
    let mut ok = client(&running, Some(TOKEN)).await;
    assert_eq!(status(&mut ok).await.total, 4);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn lease_heartbeat_complete_is_idempotent_and_checked_against_the_store() {
    let url = "memory://complete";
    let running = start(grid(url, "complete", 60, 3)).await;
    let mut c = client(&running, Some(TOKEN)).await;
    // Unregistered workers are told to register (the coordinator may have restarted).
    let err = c
        .lease_task(LeaseRequest {
            worker_id: "w".into(),
            loaded_model: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    register(&mut c, "w", 64 * GIB).await;
    let l = lease(&mut c, "w", "").await.lease.unwrap();
    assert_eq!(l.attempt, 1);
    let spec = spec_of(&l);
    assert_eq!(
        spec.id().0,
        l.task_id,
        "the spec on the wire hashes to the task id"
    );

    let hb = c
        .heartbeat(HeartbeatRequest {
            tokens_done: 0,
            worker_id: "w".into(),
            lease_id: l.lease_id.clone(),
            phase: TaskPhase::Extract as i32,
            examples_done: 3,
            examples_total: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.ok && hb.deadline_unix_ms > 0);

    // No metrics.json yet: the completion is refused and nothing changes.
    let err = complete(&mut c, "w", &l).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert_eq!(status(&mut c).await.completed, 0);

    write_metrics(url, &spec).await;
    assert!(complete(&mut c, "w", &l).await.unwrap());
    // Duplicate and late completions are acknowledged and ignored.
    assert!(!complete(&mut c, "w", &l).await.unwrap());
    assert!(!complete(&mut c, "other", &l).await.unwrap());
    let s = status(&mut c).await;
    assert_eq!((s.completed, s.leased), (1, 0));
    // The finished lease is gone.
    assert!(!heartbeat_ok(&mut c, "w", &l).await);
    // An id outside the sweep is an error, not a silent success.
    let bogus = Lease {
        task_id: "0000000000000000".into(),
        ..l.clone()
    };
    assert_eq!(
        complete(&mut c, "w", &bogus).await.unwrap_err().code(),
        Code::NotFound
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn expired_leases_are_requeued_and_attempts_are_bounded() {
    let running = start(grid("memory://expiry", "expiry", 2, 2)).await;
    let mut c = client(&running, Some(TOKEN)).await;
    register(&mut c, "w", 64 * GIB).await;
    let first = lease(&mut c, "w", "small").await.lease.unwrap();
    // Heartbeats keep it alive past one ttl.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(
            heartbeat_ok(&mut c, "w", &first).await,
            "a heartbeating lease must not lapse"
        );
    }
    // Silence: the lease lapses and the task comes back with attempt 2.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(
        !heartbeat_ok(&mut c, "w", &first).await,
        "an expired lease is gone"
    );
    // The re-queued task goes to the back of its queue; other workers drain until it reappears.
    let mut held = drain(&mut c, "d", 64 * GIB, "small").await;
    let at = held
        .iter()
        .position(|(_, l)| l.task_id == first.task_id)
        .expect("the expired task is leased again");
    let (second_worker, second) = held.remove(at);
    assert_eq!(second.attempt, 2);
    // The stale lease can no longer fail the task.
    let stale = c
        .fail_task(FailRequest {
            fault: 0,
            worker_id: "w".into(),
            lease_id: first.lease_id.clone(),
            task_id: first.task_id.clone(),
            error: "late".into(),
            permanent: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!stale.requeued);
    // Nor complete it: the refusal says the lease is gone, which a worker
    // answers by dropping the lease, not by stopping as on a bad token.
    write_metrics("memory://expiry", &spec_of(&first)).await;
    let late = complete(&mut c, "w", &first).await.unwrap_err();
    assert_eq!(Refusal::of(&late), Some(Refusal::LeaseNotHeld), "{late:?}");
    assert_eq!(Reaction::to(&late), Reaction::Forget);
    // Second attempt fails: max_attempts = 2 reached, the task is failed for good.
    let r = c
        .fail_task(FailRequest {
            fault: 0,
            worker_id: second_worker.clone(),
            lease_id: second.lease_id.clone(),
            task_id: second.task_id.clone(),
            error: "boom".into(),
            permanent: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.requeued);
    assert_eq!(status(&mut c).await.failed, 1);
    for (w, l) in held {
        c.release_task(ReleaseRequest {
            worker_id: w,
            lease_id: l.lease_id,
        })
        .await
        .unwrap();
    }
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn failures_requeue_until_permanent_and_release_does_not_count() {
    let running = start(grid("memory://fail", "fail", 60, 3)).await;
    let mut c = client(&running, Some(TOKEN)).await;
    register(&mut c, "w", 0).await;
    let l = lease(&mut c, "w", "").await.lease.unwrap();
    c.release_task(ReleaseRequest {
        worker_id: "w".into(),
        lease_id: l.lease_id.clone(),
    })
    .await
    .unwrap();
    // Released: it goes to the back of its queue, and the attempt is not counted.
    let mut held = drain(&mut c, "d", 0, "").await;
    assert_eq!(held.len(), 4, "every task is leasable again");
    let at = held
        .iter()
        .position(|(_, x)| x.task_id == l.task_id)
        .unwrap();
    let (again_worker, again) = held.remove(at);
    assert_eq!(
        again.attempt, 1,
        "a released lease does not use up an attempt"
    );
    let r = c
        .fail_task(FailRequest {
            fault: 0,
            worker_id: again_worker,
            lease_id: again.lease_id.clone(),
            task_id: again.task_id.clone(),
            error: "model does not fit".into(),
            permanent: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.requeued, "a permanent failure is not retried");
    assert_eq!(status(&mut c).await.failed, 1);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn leases_prefer_the_loaded_model_and_respect_memory() {
    let url = "memory://fit";
    let running = start(grid(url, "fit", 60, 3)).await;
    let mut c = client(&running, Some(TOKEN)).await;
    // 8 GiB of host memory: the 70B model (280 GB at f32) never fits.
    let got: Vec<TaskSpec> = drain(&mut c, "small-box", 8 * GIB, "small")
        .await
        .iter()
        .map(|(_, l)| spec_of(l))
        .collect();
    assert_eq!(got.len(), 2, "only the small model's two cells fit");
    assert!(got.iter().all(|s| s.model.name == "small"));
    // A big worker with `big` loaded gets big cells.
    register(&mut c, "big-box", 4096 * GIB).await;
    let l = lease(&mut c, "big-box", "big").await;
    assert_eq!(spec_of(&l.lease.unwrap()).model.name, "big");
    assert!(!l.sweep_done);
    running.shutdown().await.unwrap();
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, "").await
}

/// GET with extra request header lines (each ending in `\r\n`).
async fn http_get_with(addr: std::net::SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf[9..12].parse().unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (code, body)
}

#[tokio::test]
async fn http_probes_and_status() {
    let running = start(grid("memory://http", "http", 60, 3)).await;
    assert_eq!(http_get(running.http_addr, "/healthz").await.0, 200);
    assert_eq!(http_get(running.http_addr, "/readyz").await.0, 200);
    let mut c = client(&running, Some(TOKEN)).await;
    register(&mut c, "w", 0).await;
    let l = lease(&mut c, "w", "").await.lease.unwrap();
    assert_eq!(
        http_get(running.http_addr, "/status").await.0,
        401,
        "the status view needs a token"
    );
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    let (code, body) = http_get_with(running.http_addr, "/status", &bearer).await;
    assert_eq!(code, 200);
    // Chunked or not, the JSON object is in the body.
    let json: serde_json::Value =
        serde_json::from_str(&body[body.find('{').unwrap()..=body.rfind('}').unwrap()]).unwrap();
    assert_eq!(json["sweep"], "http");
    assert_eq!(json["counts"]["leased"], 1);
    assert_eq!(json["leases"][0]["task_id"], l.task_id.as_str());
    running.shared.stop_leasing();
    assert_eq!(
        http_get(running.http_addr, "/readyz").await.0,
        503,
        "unready while shutting down"
    );
    assert!(
        lease(&mut c, "w", "").await.lease.is_none(),
        "no leases while shutting down"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn resumes_from_a_file_store_and_schedules_only_new_cells() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let running = start(grid(&url, "resume", 60, 3)).await;
    let mut c = client(&running, Some(TOKEN)).await;
    register(&mut c, "w", 0).await;
    let done = lease(&mut c, "w", "").await.lease.unwrap();
    write_metrics(&url, &spec_of(&done)).await;
    assert!(complete(&mut c, "w", &done).await.unwrap());
    let bad = lease(&mut c, "w", "").await.lease.unwrap();
    c.fail_task(FailRequest {
        fault: 0,
        worker_id: "w".into(),
        lease_id: bad.lease_id.clone(),
        task_id: bad.task_id.clone(),
        error: "bad dataset file".into(),
        permanent: true,
    })
    .await
    .unwrap();
    // A third task is leased and still running when the coordinator stops.
    let lost = lease(&mut c, "w", "").await.lease.unwrap();
    running.shutdown().await.unwrap();
    let history = std::fs::read_to_string(
        dir.path()
            .join(format!("resume/state/failures/{}.json", bad.task_id)),
    )
    .unwrap();
    assert!(history.contains("bad dataset file"));

    // Same store, grid grown by one model: 4 old cells + 2 new.
    let text = grid_text(&url, "resume", 60, 3, true);
    let running = start(Grid::parse(&text, Path::new("grown.toml")).unwrap()).await;
    let mut c = client(&running, Some(TOKEN)).await;
    let s = status(&mut c).await;
    assert_eq!(
        (s.total, s.completed, s.failed, s.pending, s.leased),
        (6, 1, 1, 3, 1),
        "the in-flight lease survives the restart"
    );
    // Its worker carries on with the same lease id once it has registered again.
    register(&mut c, "w", 0).await;
    assert!(heartbeat_ok(&mut c, "w", &lost).await);
    let leased: Vec<String> = drain(&mut c, "w2", 0, "")
        .await
        .into_iter()
        .map(|(_, l)| l.task_id)
        .collect();
    assert_eq!(leased.len(), 3);
    assert!(
        !leased.contains(&done.task_id),
        "a completed cell is never recomputed"
    );
    assert!(
        !leased.contains(&bad.task_id),
        "a permanently failed cell stays failed"
    );
    assert!(
        !leased.contains(&lost.task_id),
        "a restored lease is not handed to anyone else"
    );
    // Given back, it is scheduled again.
    c.release_task(ReleaseRequest {
        worker_id: "w".into(),
        lease_id: lost.lease_id.clone(),
    })
    .await
    .unwrap();
    register(&mut c, "w3", 0).await;
    assert_eq!(
        lease(&mut c, "w3", "").await.lease.unwrap().task_id,
        lost.task_id
    );
    let report_index = dir.path().join("resume/report/index.html");
    assert!(report_index.is_file(), "shutdown refreshes the report");
    running.shutdown().await.unwrap();
    let _ = TaskId(String::new());
}

#[tokio::test]
async fn the_sweep_ends_when_every_task_is_terminal() {
    let url = "memory://done";
    let running = start(grid(url, "done", 60, 1)).await;
    let mut c = client(&running, Some(TOKEN)).await;
    register(&mut c, "w", 0).await;
    let mut n = 0;
    loop {
        let r = lease(&mut c, "w", "").await;
        let Some(l) = r.lease else {
            assert!(r.sweep_done);
            break;
        };
        n += 1;
        if n % 2 == 0 {
            write_metrics(url, &spec_of(&l)).await;
            assert!(complete(&mut c, "w", &l).await.unwrap());
        } else {
            c.fail_task(FailRequest {
                fault: 0,
                worker_id: "w".into(),
                lease_id: l.lease_id,
                task_id: l.task_id,
                error: "x".into(),
                permanent: false,
            })
            .await
            .unwrap();
        }
    }
    let s = status(&mut c).await;
    assert_eq!((n, s.completed, s.failed), (4, 2, 2));
    running.shutdown().await.unwrap();
}
