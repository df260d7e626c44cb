//! What the coordinator keeps in the store besides workers' results: failure
//! histories (`<sweep>/state/failures/<task-id>.json`), the leases in flight
//! (`<sweep>/state/leases.json`, so a restart keeps them) and the report.
//! Also the resume path that rebuilds the scheduler from them.

use crate::report;
use crate::shared::{unix_ms, Event, Shared};
use crate::state::{FailureRecord, PersistedLeases, Scheduler};
use cd_common::spec::TaskId;
use cd_common::storage::{layout, Store, StoreError};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A task's failure history as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailureFile {
    /// The task.
    pub task_id: TaskId,
    /// Every failed attempt, oldest first.
    pub failures: Vec<FailureRecord>,
}

/// What resuming found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Resumed {
    /// Cells whose valid `metrics.json` is in the store.
    pub completed: usize,
    /// `metrics.json` files that are not valid results (the cells run again).
    pub invalid: usize,
    /// Tasks with a failure history.
    pub with_failures: usize,
    /// Leases of a previous run re-established.
    pub leases: usize,
}

/// Rebuild a fresh scheduler's state from the store: cells with a valid
/// `metrics.json` are never scheduled again (an invalid one, e.g. empty or
/// of another task, does not count), failure histories keep their attempt
/// counts, and the previous run's leases are re-established so its workers
/// carry on.
pub async fn resume(
    store: &Store,
    sweep: &str,
    sched: &mut Scheduler,
) -> Result<Resumed, StoreError> {
    let listed: Vec<TaskId> = store.list_completed(sweep).await?.into_iter().collect();
    let checked: Vec<(TaskId, bool)> = futures::stream::iter(listed)
        .map(|id| async move {
            let valid = store.read_valid_metrics(sweep, &id).await?.is_some();
            Ok::<_, StoreError>((id, valid))
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    let valid: Vec<TaskId> = checked
        .iter()
        .filter(|(_, v)| *v)
        .map(|(id, _)| id.clone())
        .collect();
    let invalid = checked.len() - valid.len();
    let completed = sched.restore_completed(valid.iter());
    let keys = store.list(&layout::failures(sweep)).await?;
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
    let leases = match store.get_bytes(&layout::leases(sweep)).await? {
        Some(bytes) => match serde_json::from_slice::<PersistedLeases>(&bytes) {
            Ok(saved) => sched.restore_leases(&saved, Instant::now()),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable leases.json ignored: in-flight work restarts");
                0
            }
        },
        None => 0,
    };
    Ok(Resumed {
        completed,
        invalid,
        with_failures,
        leases,
    })
}

/// Promote features a finished attempt left unpromoted and delete other
/// attempts' objects and interrupted uploads' staging files, for every
/// completed cell. Best effort, in the background: it only saves space.
pub(crate) async fn tidy(store: Store, sweep: String, ids: Vec<TaskId>) {
    let mut removed = 0;
    for id in ids {
        match store.tidy_completed(&sweep, &id).await {
            Ok(n) => removed += n,
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "tidying a completed cell failed");
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, "leftovers of finished attempts removed");
    }
}

/// Writes failure histories and the leases in flight as they change, and
/// refreshes the report (and the dashboard's figures) at most every
/// `report_every` while tasks complete. Runs until the channel closes.
pub(crate) async fn persist_forever(
    shared: Arc<Shared>,
    store: Option<Store>,
    mut events: mpsc::UnboundedReceiver<Event>,
    report_every: Duration,
) {
    let sweep = shared.sweep.clone();
    let mut dirty = false;
    let mut leases_dirty = false;
    let mut last_report = tokio::time::Instant::now();
    // Leases are written at most this often (a lease flood is one write).
    let lease_every = Duration::from_millis(500);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = tokio::time::sleep(report_every), if dirty => Some(Event::Completed),
            _ = tokio::time::sleep(lease_every), if leases_dirty => Some(Event::LeasesChanged),
        };
        let Some(event) = event else { break };
        match event {
            Event::Failure(id, failures) => {
                if let Some(store) = &store {
                    write_failures(&shared, store, &sweep, id, failures).await;
                }
            }
            Event::Completed => dirty = true,
            Event::LeasesChanged => {
                if leases_dirty {
                    if let Some(store) = &store {
                        write_leases(&shared, store, &sweep).await;
                    }
                    leases_dirty = false;
                } else {
                    leases_dirty = true;
                }
            }
            Event::PersistLeases(done) => {
                if let Some(store) = &store {
                    write_leases(&shared, store, &sweep).await;
                    leases_dirty = false;
                }
                let _ = done.send(());
                continue;
            }
            Event::Flush(done) => {
                if let Some(store) = &store {
                    write_leases(&shared, store, &sweep).await;
                    leases_dirty = false;
                    if dirty {
                        refresh_report(&shared, store, &sweep).await;
                        dirty = false;
                    }
                }
                let _ = done.send(());
                continue;
            }
        }
        if dirty && last_report.elapsed() >= report_every {
            if let Some(store) = &store {
                refresh_report(&shared, store, &sweep).await;
            }
            dirty = false;
            last_report = tokio::time::Instant::now();
        }
    }
}

async fn write_leases(shared: &Shared, store: &Store, sweep: &str) {
    let saved = shared
        .sched
        .lock()
        .expect("scheduler lock")
        .persisted_leases();
    let body = serde_json::to_vec(&saved).expect("leases serialize");
    if let Err(e) = store.put_bytes(&layout::leases(sweep), body.into()).await {
        shared.metrics.store_errors.inc();
        tracing::warn!(error = %e, "writing leases.json failed; a restart now would lose in-flight work");
    }
}

async fn write_failures(
    shared: &Shared,
    store: &Store,
    sweep: &str,
    task_id: TaskId,
    failures: Vec<FailureRecord>,
) {
    let rel = layout::failure(sweep, &task_id);
    let body = serde_json::to_vec_pretty(&FailureFile { task_id, failures })
        .expect("failure file serializes");
    // The store may be briefly away: retry a few times, then log (the history
    // is advisory; the in-memory state stays authoritative while we run).
    for attempt in 1..=5u32 {
        match store.put_bytes(&rel, body.clone().into()).await {
            Ok(()) => return,
            Err(e) => {
                shared.metrics.store_errors.inc();
                tracing::warn!(key = %rel, attempt, error = %e, "writing failure history failed");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
}

/// Rewrite the report and hand its figures to the dashboard.
pub(crate) async fn refresh_report(shared: &Shared, store: &Store, sweep: &str) {
    // Cells no registered worker can run are a live fact the stored results
    // cannot show: the report says so at its top.
    let warnings: Vec<String> = shared
        .sched
        .lock()
        .expect("scheduler lock")
        .unplaceable(std::time::Instant::now())
        .into_iter()
        .map(|(model, precision, pending)| {
            format!("{pending} cells of {model} at precision {precision} wait: no registered worker can run them (devices, memory or verified precisions)")
        })
        .collect();
    match report::write(store, sweep, None, &warnings).await {
        Ok(summary) => {
            tracing::info!(cells = summary.cells, "report refreshed");
            *shared.figures.write().expect("figures lock") =
                (Arc::from(summary.figures_json), unix_ms(), summary.cells);
        }
        Err(e) => {
            shared.metrics.store_errors.inc();
            tracing::warn!(error = %e, "report refresh failed");
        }
    }
}
