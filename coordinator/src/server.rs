//! Starting and stopping a coordinator: resume from the store, serve gRPC and
//! HTTP, run the reaper and persister, and shut down gracefully.

use crate::http::{self, HttpAuth};
use crate::persist;
use crate::service::{CoordinatorService, TokenCheck};
use crate::shared::Shared;
use crate::state::Scheduler;
use anyhow::Context;
use cd_common::grid::Grid;
use cd_common::storage::{CoordinatorLock, Store, StoreError, LOCK_REFRESH_MS};
use cd_proto::v1::coordinator_server::CoordinatorServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Everything needed to serve one sweep.
pub struct ServerConfig {
    /// The validated grid.
    pub grid: Grid,
    /// Storage URL (the grid's, or the `--store` override).
    pub store_url: String,
    /// Bearer token every RPC must carry.
    pub token: String,
    /// gRPC address (`127.0.0.1:0` picks a port).
    pub listen: SocketAddr,
    /// HTTP address for probes and `/status`.
    pub http_listen: SocketAddr,
    /// PEM certificate chain and key: serve TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Check that `metrics.json` exists before accepting a completion.
    pub verify_completion: bool,
    /// Minimum time between report refreshes while tasks complete.
    pub report_every: Duration,
    /// A second, read-only token for the dashboard, `/status` and `/metrics`.
    pub dashboard_token: Option<String>,
}

impl ServerConfig {
    /// Defaults for a grid: loopback ports picked by the OS, verification on.
    pub fn for_grid(grid: Grid, token: &str) -> ServerConfig {
        ServerConfig {
            store_url: grid.storage_url.clone(),
            grid,
            token: token.to_string(),
            listen: "127.0.0.1:0".parse().expect("valid address"),
            http_listen: "127.0.0.1:0".parse().expect("valid address"),
            tls: None,
            verify_completion: true,
            report_every: Duration::from_secs(10),
            dashboard_token: None,
        }
    }
}

/// A running coordinator.
pub struct Running {
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// The shared state (tests and the local runner read progress from it).
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    servers: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// Resume from the store, bind, and serve in the background.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<Running> {
    if cfg.token.is_empty() {
        anyhow::bail!("refusing to serve without a token: pass --token-file or set CD_TOKEN");
    }
    let grid = &cfg.grid;
    let store = Store::open(&cfg.store_url).with_context(|| {
        format!(
            "opening store {}",
            crate::shared::redacted_url(&cfg.store_url)
        )
    })?;
    // One coordinator per sweep: a second one would hand out the same cells.
    let lock = CoordinatorLock {
        instance: format!("{:016x}", rand::random::<u64>()),
        host: hostname(),
        pid: std::process::id(),
        refreshed_unix_ms: crate::shared::unix_ms(),
    };
    match store.acquire_lock(&grid.sweep, &lock).await {
        Ok(()) => {}
        Err(e @ StoreError::Fenced { .. }) => {
            // Not an error of this process: another one serves the sweep.
            eprintln!(
                "error: taking the coordinator lock of sweep {}: {e}",
                grid.sweep
            );
            std::process::exit(cd_proto::exit::coordinator::FENCED);
        }
        Err(e) => return Err(e).with_context(|| format!("taking sweep {}", grid.sweep)),
    }
    store
        .check_schema(&grid.sweep)
        .await
        .with_context(|| format!("opening sweep {}", grid.sweep))?;
    store
        .put_grid_ids(&grid.sweep, &grid.task_ids())
        .await
        .with_context(|| format!("recording the grid of sweep {}", grid.sweep))?;
    let mut sched = Scheduler::new(
        &grid.tasks,
        grid.scheduling.max_attempts,
        grid.scheduling.lease_ttl,
    )
    .with_devices(&grid.scheduling.devices)
    .with_stall_timeouts(
        grid.scheduling.stall_timeout,
        grid.scheduling.load_stall_timeout,
    );
    let resumed = persist::resume(&store, &grid.sweep, &mut sched)
        .await
        .with_context(|| {
            format!(
                "resuming sweep {} from {}",
                grid.sweep,
                crate::shared::redacted_url(&cfg.store_url)
            )
        })?;
    let counts = sched.counts();
    tracing::info!(
        sweep = %grid.sweep,
        tasks = counts.total,
        completed = resumed.completed,
        invalid_results = resumed.invalid,
        with_failures = resumed.with_failures,
        leases_kept = resumed.leases,
        pending = counts.pending,
        "state rebuilt from the store"
    );
    let completed_ids: Vec<_> = grid
        .task_ids()
        .into_iter()
        .filter(|id| sched.is_completed(id).unwrap_or(false))
        .collect();
    let verify = cfg.verify_completion.then(|| store.clone());
    let (shared, events) = Shared::new(
        grid.sweep.clone(),
        cfg.store_url.clone(),
        grid.scheduling.heartbeat_interval,
        sched,
        verify,
    );
    let tidier = tokio::spawn(persist::tidy(
        store.clone(),
        grid.sweep.clone(),
        completed_ids,
    ));
    let lock_keeper = tokio::spawn(keep_lock(store.clone(), grid.sweep.clone(), lock));

    let (stop, stop_rx) = watch::channel(false);
    let grpc = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding gRPC on {}", cfg.listen))?;
    let grpc_addr = grpc.local_addr()?;
    let http_listener = TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("binding HTTP on {}", cfg.http_listen))?;
    let http_addr = http_listener.local_addr()?;

    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &cfg.tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .context("configuring TLS")?;
    }
    let svc = CoordinatorServer::with_interceptor(
        CoordinatorService::new(shared.clone()),
        TokenCheck::new(&cfg.token),
    );
    let mut grpc_stop = stop_rx.clone();
    let router = builder.add_service(svc);
    let grpc_task = tokio::spawn(async move {
        // TCP_NODELAY on every accepted connection. hyper may flush a response's
        // HEADERS and its DATA/trailers in separate writes; with Nagle on, the
        // second waits for the client's (delayed) ACK, up to 40 ms per RPC.
        // `Server::serve` sets it, but serving our own listener does not.
        let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
        router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            })
            .await
            .context("gRPC server")
    });
    let http_task = tokio::spawn(http::serve(
        http_listener,
        shared.clone(),
        HttpAuth::new(&cfg.token, cfg.dashboard_token.as_deref()),
        HttpAuth::new(&cfg.token, None),
        stop_rx,
    ));

    let ttl = grid.scheduling.lease_ttl;
    let tick = (ttl / 10).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let reaper = tokio::spawn(shared.clone().reap_forever(tick));
    let persister = tokio::spawn(persist::persist_forever(
        shared.clone(),
        Some(store.clone()),
        events,
        cfg.report_every,
    ));
    // The dashboard starts with the report as it stands.
    {
        let shared = shared.clone();
        let sweep = grid.sweep.clone();
        tokio::spawn(async move { persist::refresh_report(&shared, &store, &sweep).await });
    }
    tracing::info!(grpc = %grpc_addr, http = %http_addr, tls = cfg.tls.is_some(), "coordinator serving");
    Ok(Running {
        grpc_addr,
        http_addr,
        shared,
        stop,
        tasks: vec![reaper, persister, tidier, lock_keeper],
        servers: vec![grpc_task, http_task],
    })
}

impl Running {
    /// Graceful shutdown: stop leasing, persist everything and refresh the
    /// report, then stop the servers. Workers holding leases keep them until
    /// they expire; a restarted coordinator re-queues what never completed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shared.stop_leasing();
        self.shared.flush().await;
        self.release_lock().await;
        let _ = self.stop.send(true);
        for server in self.servers {
            server.await.context("server task panicked")??;
        }
        for task in self.tasks {
            task.abort();
        }
        tracing::info!("coordinator stopped");
        Ok(())
    }

    async fn release_lock(&self) {
        // The keeper holds the lock's identity; a clean stop lets the next
        // coordinator start without waiting for it to go stale.
        if let Ok(store) = Store::open(&self.shared.store_url) {
            if let Ok(Some(held)) = store.read_lock(&self.shared.sweep).await {
                if held.pid == std::process::id() {
                    let _ = store.release_lock(&self.shared.sweep, &held).await;
                }
            }
        }
    }

    /// Stop abruptly without persisting (tests simulating a crash).
    pub fn abort(self) {
        for t in self.tasks {
            t.abort();
        }
        for s in self.servers {
            s.abort();
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Refresh the sweep's coordinator lock until the process ends; when another
/// coordinator has taken it, exit at once (two coordinators must never hand
/// out the same cells).
async fn keep_lock(store: Store, sweep: String, mut lock: CoordinatorLock) {
    let mut interval = tokio::time::interval(Duration::from_millis(LOCK_REFRESH_MS));
    interval.tick().await;
    loop {
        interval.tick().await;
        lock.refreshed_unix_ms = crate::shared::unix_ms();
        match store.refresh_lock(&sweep, &lock).await {
            Ok(()) => {}
            Err(e @ StoreError::Fenced { .. }) => {
                tracing::error!(error = %e, "this coordinator was fenced out of its sweep: exiting");
                std::process::exit(cd_proto::exit::coordinator::FENCED);
            }
            Err(e) => tracing::warn!(error = %e, "refreshing the coordinator lock failed"),
        }
    }
}
