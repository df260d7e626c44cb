//! Heartbeats of the running task's lease.
//!
//! While a task runs, the lease is extended every interval with the task's
//! phase and progress. When the coordinator says the lease is gone (it expired
//! and the task went to another worker, or the coordinator restarted without
//! it), the task is cancelled: it stops at its next checkpoint and uploads
//! nothing. An unreachable coordinator is not a lost lease: the task goes on
//! and its completion is retried later.

use super::client::Client;
use crate::pipeline::Progress;
use cd_proto::status::Reaction;
use cd_proto::v1::HeartbeatRequest;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why the heartbeat loop stopped the task.
#[derive(Debug, Default)]
pub(crate) struct LeaseState {
    /// The coordinator said the lease is gone.
    pub lost: AtomicBool,
    /// The coordinator refused our credentials.
    pub auth_refused: AtomicBool,
}

/// Heartbeat `lease_id` every `interval` until aborted or the lease is lost.
pub async fn run(
    mut client: Client,
    worker_id: String,
    lease_id: String,
    interval: Duration,
    progress: Arc<Progress>,
    state: Arc<LeaseState>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; the lease was just granted.
    tick.tick().await;
    loop {
        tick.tick().await;
        let (phase, done, total) = progress.snapshot();
        let req = HeartbeatRequest {
            worker_id: worker_id.clone(),
            lease_id: lease_id.clone(),
            phase: phase as i32,
            examples_done: done,
            examples_total: total,
            tokens_done: progress.tokens(),
        };
        match client.heartbeat(req).await {
            Ok(resp) if resp.get_ref().ok => {
                tracing::debug!(lease = %lease_id, phase = phase.label(), done, total, "heartbeat");
            }
            Ok(_) => {
                tracing::warn!(lease = %lease_id, "the coordinator says the lease is gone: abandoning the task");
                state.lost.store(true, Ordering::SeqCst);
                progress.cancel();
                return;
            }
            Err(status) => match Reaction::to(&status) {
                Reaction::Forget => {
                    tracing::warn!(lease = %lease_id, error = %status.message(), "lease unknown to the coordinator: abandoning the task");
                    state.lost.store(true, Ordering::SeqCst);
                    progress.cancel();
                    return;
                }
                Reaction::Stop => {
                    tracing::error!(error = %status.message(), "heartbeat refused: bad credentials");
                    state.auth_refused.store(true, Ordering::SeqCst);
                    state.lost.store(true, Ordering::SeqCst);
                    progress.cancel();
                    return;
                }
                Reaction::Retry | Reaction::Fail => {
                    tracing::warn!(lease = %lease_id, code = ?status.code(), error = %status.message(), "heartbeat failed: will retry");
                }
            },
        }
    }
}
