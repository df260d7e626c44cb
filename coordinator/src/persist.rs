//! What the coordinator keeps in the store besides workers' results: failure
//! histories (`<sweep>/state/failures/<task-id>.json`) and the report. Also
//! the resume path that rebuilds the scheduler from them.

use crate::report;
use crate::shared::Event;
use crate::state::{FailureRecord, Scheduler};
use cd_common::spec::TaskId;
use cd_common::storage::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::mpsc;

/// A task's failure history as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureFile {
    /// The task.
    pub task_id: TaskId,
    /// Every failed attempt, oldest first.
    pub failures: Vec<FailureRecord>,
}

fn failure_rel(sweep: &str, id: &TaskId) -> String {
    format!("{sweep}/state/failures/{id}.json")
}

/// Rebuild a fresh scheduler's state from the store: completed tasks
/// (`metrics.json` present) are never scheduled again, and failure histories
/// keep their attempt counts. Returns (completed, with failures) counts.
pub async fn resume(
    store: &Store,
    sweep: &str,
    sched: &mut Scheduler,
) -> Result<(usize, usize), StoreError> {
    let completed = store.list_completed(sweep).await?;
    let restored = sched.restore_completed(completed.iter());
    let keys = store.list(&format!("{sweep}/state/failures")).await?;
    let mut with_failures = 0;
    for key in keys.iter().filter(|k| k.ends_with(".json")) {
        let Some(bytes) = store.get_bytes(key).await? else {
            continue;
        };
        match serde_json::from_slice::<FailureFile>(&bytes) {
            Ok(file) => {
                sched.restore_failures(&file.task_id, file.failures);
                with_failures += 1;
            }
            Err(e) => tracing::warn!(key = %key, error = %e, "unreadable failure history ignored"),
        }
    }
    Ok((restored, with_failures))
}

/// Writes failure histories as they happen and refreshes the report at most
/// every `report_every` while tasks complete. Runs until the channel closes.
pub async fn persist_forever(
    store: Option<Store>,
    sweep: String,
    mut events: mpsc::UnboundedReceiver<Event>,
    report_every: Duration,
) {
    let mut dirty = false;
    let mut last_report = tokio::time::Instant::now();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = tokio::time::sleep(report_every), if dirty => Some(Event::Completed),
        };
        let Some(event) = event else { break };
        match event {
            Event::Failure(id, failures) => {
                if let Some(store) = &store {
                    write_failures(store, &sweep, id, failures).await;
                }
            }
            Event::Completed => dirty = true,
            Event::Flush(done) => {
                if let Some(store) = &store {
                    if dirty {
                        refresh_report(store, &sweep).await;
                        dirty = false;
                    }
                }
                let _ = done.send(());
                continue;
            }
        }
        if dirty && last_report.elapsed() >= report_every {
            if let Some(store) = &store {
                refresh_report(store, &sweep).await;
            }
            dirty = false;
            last_report = tokio::time::Instant::now();
        }
    }
}

async fn write_failures(store: &Store, sweep: &str, task_id: TaskId, failures: Vec<FailureRecord>) {
    let rel = failure_rel(sweep, &task_id);
    let body = serde_json::to_vec_pretty(&FailureFile { task_id, failures })
        .expect("failure file serializes");
    // The store may be briefly away: retry a few times, then log (the history
    // is advisory; the in-memory state stays authoritative while we run).
    for attempt in 1..=5u32 {
        match store.put_bytes(&rel, body.clone().into()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(key = %rel, attempt, error = %e, "writing failure history failed");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
}

async fn refresh_report(store: &Store, sweep: &str) {
    match report::write(store, sweep, None).await {
        Ok(summary) => tracing::info!(cells = summary.cells, "report refreshed"),
        Err(e) => tracing::warn!(error = %e, "report refresh failed"),
    }
}
