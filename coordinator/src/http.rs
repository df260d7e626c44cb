//! HTTP endpoints for Kubernetes probes and dashboards:
//! `/healthz` (liveness: the process answers), `/readyz` (readiness: state is
//! rebuilt and leases are being handed out), `/status` (JSON progress).

use crate::shared::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The `/status` body.
#[derive(serde::Serialize)]
struct Status {
    sweep: String,
    done: bool,
    #[serde(flatten)]
    snapshot: crate::state::Snapshot,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    // The server only listens once the state is rebuilt, so the one way to be
    // unready is shutting down.
    if shared.is_leasing() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<Status> {
    let s = shared.sched.lock().expect("scheduler lock");
    Json(Status {
        sweep: shared.sweep.clone(),
        done: s.done(),
        snapshot: s.snapshot(Instant::now()),
    })
}

/// Serve until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}
