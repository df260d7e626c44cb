//! Load benchmark of the coordinator: many simulated workers pulling trivial
//! tasks over real gRPC on loopback.
//!
//! The coordinator runs as a separate process (the `cd-coordinator` binary
//! next to this example's executable, or `--coordinator-bin`), so its peak
//! memory (VmHWM) is its own. Its store is `memory://` with completion
//! verification switched off (`--no-verify-completion`): the benchmark
//! measures scheduling and RPC handling, not a storage backend, and no worker
//! writes results.
//!
//! Each simulated worker is a tokio task that registers, then loops
//! lease → work → complete until the sweep is done. Workers share
//! `--connections` HTTP/2 connections (default: one per worker, as real
//! workers have); every RPC is its own HTTP/2 stream either way.
//!
//! The load is a closed loop, so by Little's law the lease latency is at
//! least (RPCs in flight) / (RPC rate). With zero work time every worker
//! always has an RPC in flight, and 1000 workers at 5,000 cycles/s queue for
//! about 100 ms whatever the coordinator does. A worker therefore spends
//! `--work-ms` (mean; uniform within ±`--work-jitter`) on each task, and starts
//! at a random moment within one mean work time, as real workers do not run
//! in lockstep. The offered load is then at most workers / work time.
//!
//! `cargo run --release -p cd-coordinator --example load_bench -- --workers 1000 --tasks 100000`

use anyhow::Context;
use cd_proto::v1::coordinator_client::CoordinatorClient;
use cd_proto::v1::*;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

#[derive(Parser, Debug)]
struct Args {
    /// Simulated workers.
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    /// Tasks in the generated grid (rounded up to a multiple of 10 models).
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// HTTP/2 connections shared by the workers (0 = one per worker).
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Coordinator binary (default: `cd-coordinator` next to this executable's directory).
    #[arg(long)]
    coordinator_bin: Option<PathBuf>,
    /// Mean simulated work per task in milliseconds, between lease and
    /// complete. The default, 150 ms, makes 1000 workers offer up to 6,667
    /// cycles/s, a third above the 5,000/s floor. With zero, every worker
    /// hammers the coordinator in a closed loop and lease latency is just
    /// queueing (Little's law: workers / RPC rate).
    #[arg(long, default_value_t = 150)]
    work_ms: u64,
    /// Spread of the work time as a fraction of `--work-ms`: each task takes a
    /// uniform draw from `work_ms × (1 ± jitter)`.
    #[arg(long, default_value_t = 0.5)]
    work_jitter: f64,
    /// The coordinator's `RUST_LOG`. At `info` it logs one line per completion,
    /// which is what a production coordinator does (its tasks take minutes).
    #[arg(long, default_value = "warn")]
    coordinator_log: String,
    /// gRPC port for the coordinator.
    #[arg(long, default_value_t = 50_151)]
    port: u16,
}

const TOKEN: &str = "load-bench-token";
const MODELS: usize = 10;

fn write_grid(path: &std::path::Path, tasks: usize) -> anyhow::Result<usize> {
    let per_model = tasks.div_ceil(MODELS);
    let mut g = String::from(
        "version = 1\nsweep = \"load-bench\"\ndata_root = \"/nowhere\"\n[storage]\nurl = \"memory://bench\"\nupload_features = false\n[scheduling]\nmax_attempts = 3\nlease_ttl_secs = 120\nheartbeat_interval_secs = 30\n",
    );
    for m in 0..MODELS {
        g.push_str(&format!(
            "[[models]]\nname = \"m{m}\"\nsize_b = {}.0\nsource = {{ kind = \"hub\", repo = \"bench/m{m}\" }}\n",
            m + 1
        ));
    }
    let seeds: Vec<String> = (0..per_model).map(|s| s.to_string()).collect();
    g.push_str(&format!(
        "[axes]\ndatasets = [\"coinflip\"]\nprecisions = [\"16\"]\nseeds = [{}]\n",
        seeds.join(",")
    ));
    std::fs::write(path, g)?;
    Ok(per_model * MODELS)
}

/// User + system CPU seconds of a process (`/proc/PID/stat`, in USER_HZ = 100 ticks).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn authed(
    token: &'static str,
) -> impl FnMut(Request<()>) -> Result<Request<()>, tonic::Status> + Clone {
    let value: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("ascii token");
    move |mut req: Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let grid = dir.path().join("bench.toml");
    let total = write_grid(&grid, args.tasks)?;
    let bin = match &args.coordinator_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(|p| p.parent())
            .context("locating the target directory")?
            .join("cd-coordinator"),
    };
    let addr = format!("127.0.0.1:{}", args.port);
    let mut child = std::process::Command::new(&bin)
        .args(["--grid"])
        .arg(&grid)
        .args([
            "--listen",
            &addr,
            "--http-listen",
            "127.0.0.1:0",
            "--no-verify-completion",
        ])
        .env("CD_TOKEN", TOKEN)
        .env("RUST_LOG", &args.coordinator_log)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("coordinator.log"))?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
    // Wait for the coordinator to rebuild its state and listen.
    let started = Instant::now();
    let probe = loop {
        match endpoint.connect().await {
            Ok(ch) => break ch,
            Err(_)
                if started.elapsed() < Duration::from_secs(120) && child.try_wait()?.is_none() =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => {
                let log =
                    std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap_or_default();
                return Err(e).context(format!("coordinator did not come up; its log:\n{log}"));
            }
        }
    };
    let startup = started.elapsed();
    let rss_idle = vm_hwm_kib(pid).unwrap_or(0);

    let conns = if args.connections == 0 {
        args.workers
    } else {
        args.connections
    };
    let mut channels: Vec<Channel> = Vec::with_capacity(conns);
    for _ in 0..conns {
        channels.push(endpoint.connect().await?);
    }
    anyhow::ensure!(
        (0.0..1.0).contains(&args.work_jitter),
        "--work-jitter must be in [0, 1)"
    );
    let done = Arc::new(AtomicU64::new(0));
    let cpu0 = (
        cpu_secs(&pid.to_string()).unwrap_or(0.0),
        cpu_secs("self").unwrap_or(0.0),
    );
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(args.workers);
    for w in 0..args.workers {
        let channel = channels[w % conns].clone();
        let done = done.clone();
        let mean = args.work_ms as f64;
        let spread = mean * args.work_jitter;
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(w as u64);
            // Workers come up at different moments, not in lockstep: spread over
            // one mean work time, arrivals start at the steady-state rate instead
            // of a burst of 1000 registrations.
            let start = Duration::from_secs_f64(rng.random_range(0.0..1.0) * mean / 1000.0);
            let mut draw = move || {
                let ms = if spread > 0.0 {
                    rng.random_range(mean - spread..mean + spread)
                } else {
                    mean
                };
                Duration::from_secs_f64(ms / 1000.0)
            };
            tokio::time::sleep(start).await;
            let mut c = CoordinatorClient::with_interceptor(channel, authed(TOKEN));
            let id = format!("sim-{w}");
            c.register(RegisterRequest {
                worker_id: id.clone(),
                host: "bench".into(),
                devices: vec![Device {
                    name: "cuda:0".into(),
                    memory_bytes: 80 << 30,
                    kind: device::Kind::Cuda as i32,
                }],
                version: "bench".into(),
            })
            .await?;
            let mut lat = Vec::with_capacity(256);
            let mut loaded = String::new();
            loop {
                let t = Instant::now();
                let r = c
                    .lease_task(LeaseRequest {
                        worker_id: id.clone(),
                        loaded_model: loaded.clone(),
                    })
                    .await?
                    .into_inner();
                lat.push(t.elapsed().as_micros() as u32);
                let Some(l) = r.lease else {
                    if r.sweep_done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(r.retry_after_ms.min(200))).await;
                    continue;
                };
                if loaded.is_empty() {
                    // The model name is the spec's; a real worker knows it from the spec too.
                    let spec: serde_json::Value = serde_json::from_str(&l.spec_json)?;
                    loaded = spec["model"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                }
                let work = draw();
                if !work.is_zero() {
                    tokio::time::sleep(work).await;
                }
                let accepted = c
                    .complete_task(CompleteRequest {
                        worker_id: id.clone(),
                        lease_id: l.lease_id,
                        task_id: l.task_id,
                        metrics_key: String::new(),
                        elapsed_ms: 0,
                    })
                    .await?
                    .into_inner()
                    .accepted;
                anyhow::ensure!(accepted, "a fresh completion must be accepted");
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all: Vec<u32> = Vec::new();
    for h in handles {
        all.extend(h.await??);
    }
    let elapsed = t0.elapsed();
    let coord_cpu = cpu_secs(&pid.to_string()).unwrap_or(0.0) - cpu0.0;
    let client_cpu = cpu_secs("self").unwrap_or(0.0) - cpu0.1;
    let rss_peak = vm_hwm_kib(pid).unwrap_or(0);
    let mut probe_client = CoordinatorClient::with_interceptor(probe, authed(TOKEN));
    let status = probe_client
        .sweep_status(SweepStatusRequest {})
        .await?
        .into_inner();
    // SIGTERM: the graceful path.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit = child.wait()?;
    let log = std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap_or_default();
    let log_lines = log.lines().count();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();

    all.sort_unstable();
    let q = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    let completed = done.load(Ordering::Relaxed);
    let rate = completed as f64 / elapsed.as_secs_f64();
    let mut out = std::io::stdout().lock();
    writeln!(out, "workers            {}", args.workers)?;
    writeln!(out, "connections        {conns}")?;
    writeln!(
        out,
        "work per task      {} ms ± {:.0}% (offered load at most {:.0} cycles/s)",
        args.work_ms,
        args.work_jitter * 100.0,
        if args.work_ms == 0 {
            f64::INFINITY
        } else {
            args.workers as f64 * 1000.0 / args.work_ms as f64
        }
    )?;
    writeln!(out, "tasks              {total}")?;
    writeln!(
        out,
        "completed          {completed} (coordinator says {} completed, {} pending)",
        status.completed, status.pending
    )?;
    writeln!(
        out,
        "coordinator start  {:.2} s (grid expansion + state)",
        startup.as_secs_f64()
    )?;
    writeln!(out, "wall               {:.2} s", elapsed.as_secs_f64())?;
    writeln!(out, "lease+complete/s   {rate:.0}")?;
    writeln!(
        out,
        "lease latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  (n={})",
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0),
        all.len()
    )?;
    writeln!(
        out,
        "cpu per cycle      coordinator {:.0} µs, benchmark client {:.0} µs ({:.2} and {:.2} cores busy)",
        coord_cpu * 1e6 / completed.max(1) as f64,
        client_cpu * 1e6 / completed.max(1) as f64,
        coord_cpu / elapsed.as_secs_f64(),
        client_cpu / elapsed.as_secs_f64()
    )?;
    writeln!(
        out,
        "coordinator VmHWM  {:.1} MiB (after start: {:.1} MiB)",
        rss_peak as f64 / 1024.0,
        rss_idle as f64 / 1024.0
    )?;
    writeln!(
        out,
        "coordinator log    {log_lines} lines at {}, {} warnings or errors",
        args.coordinator_log,
        warnings.len()
    )?;
    for w in warnings.iter().take(10) {
        writeln!(out, "  {w}")?;
    }
    writeln!(out, "coordinator exit   {exit}")?;
    anyhow::ensure!(
        completed as usize == total && status.completed as usize == total,
        "not every task completed exactly once"
    );
    Ok(())
}
