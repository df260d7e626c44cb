//! Read-only views of the state for `/status` and the dashboard. Strings
//! that come from workers (errors, phases, host names) are bounded and
//! stripped of control characters here, once, before anything shows them.

use super::{Counts, Scheduler, TaskState};
use serde::Serialize;
use std::time::Instant;

/// Longest worker-provided string a view shows (characters).
pub(crate) const MAX_SHOWN: usize = 500;

/// A worker-provided string made safe to show: control characters replaced,
/// cut to [`MAX_SHOWN`] characters (HTML escaping is the renderer's job).
pub fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_SHOWN)
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect();
    if s.chars().count() > MAX_SHOWN {
        out.push('…');
    }
    out
}

/// `/status` body (without the sweep name and `done`, added by the handler).
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Task counts.
    pub counts: Counts,
    /// Registered workers.
    pub workers: usize,
    /// Leases in flight.
    pub leases: Vec<LeaseView>,
    /// Tasks given up.
    pub failed: Vec<FailedView>,
    /// Pending cells no registered worker can run, by model and precision.
    pub unplaceable: Vec<UnplaceableView>,
}

/// One lease in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    /// Task id.
    pub task_id: String,
    /// Model display name.
    pub model: String,
    /// Dataset.
    pub dataset: String,
    /// Worker holding it.
    pub worker: String,
    /// 1-based attempt.
    pub attempt: u32,
    /// Last reported phase.
    pub phase: String,
    /// Progress.
    pub examples_done: u64,
    /// Progress denominator.
    pub examples_total: u64,
    /// Time left before the lease lapses.
    pub expires_in_ms: u64,
}

/// One failed task in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct FailedView {
    /// Task id.
    pub task_id: String,
    /// Model display name.
    pub model: String,
    /// Dataset.
    pub dataset: String,
    /// The last error (bounded).
    pub last_error: String,
    /// Attempts made.
    pub attempts: u32,
}

/// Cells nobody can run.
#[derive(Debug, Clone, Serialize)]
pub struct UnplaceableView {
    /// Model display name.
    pub model: String,
    /// Precision.
    pub precision: String,
    /// Pending cells.
    pub pending: u64,
}

/// Per (model, precision) progress.
#[derive(Debug, Clone, Serialize)]
pub struct ModelView {
    /// Model display name.
    pub model: String,
    /// Precision.
    pub precision: String,
    /// Cells.
    pub total: u64,
    /// Waiting.
    pub pending: u64,
    /// Running.
    pub leased: u64,
    /// Done.
    pub completed: u64,
    /// Given up.
    pub failed: u64,
}

/// One worker as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    /// Worker id.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Devices, e.g. `cuda:0 79.6 GiB`.
    pub devices: Vec<String>,
    /// `busy`, `idle` or `quarantined`.
    pub state: &'static str,
    /// Current cell.
    pub task_id: Option<String>,
    /// Its model.
    pub model: Option<String>,
    /// Its dataset.
    pub dataset: Option<String>,
    /// Its phase.
    pub phase: Option<String>,
    /// Progress.
    pub examples_done: Option<u64>,
    /// Progress denominator.
    pub examples_total: Option<u64>,
    /// Smoothed examples per second of the current cell.
    pub examples_per_second: f64,
    /// Smoothed tokens per second of the current cell.
    pub tokens_per_second: f64,
    /// Milliseconds since the worker last called in.
    pub last_seen_ms_ago: Option<u64>,
    /// Worker faults in a row.
    pub consecutive_faults: u32,
    /// Why it is quarantined, and for how long still.
    pub last_error: Option<String>,
    /// Quarantine left, in milliseconds.
    pub quarantined_for_ms: Option<u64>,
}

/// Everything the dashboard's state panel needs.
#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    /// Task counts.
    pub counts: Counts,
    /// Per model and precision.
    pub models: Vec<ModelView>,
    /// Workers.
    pub workers: Vec<WorkerView>,
    /// Failed cells.
    pub failures: Vec<FailedView>,
    /// Cells nobody can run.
    pub unplaceable: Vec<UnplaceableView>,
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl Scheduler {
    fn failed_views(&self) -> Vec<FailedView> {
        self.tasks
            .iter()
            .filter(|t| t.state == TaskState::Failed)
            .map(|t| FailedView {
                task_id: t.id.0.clone(),
                model: self.queues[t.queue].model.clone(),
                dataset: t.dataset.clone(),
                last_error: t
                    .failures
                    .last()
                    .map(|f| shown(&f.error))
                    .unwrap_or_default(),
                attempts: t.attempts,
            })
            .collect()
    }

    fn unplaceable_views(&self, now: Instant) -> Vec<UnplaceableView> {
        self.unplaceable(now)
            .into_iter()
            .map(|(model, precision, pending)| UnplaceableView {
                model,
                precision: precision.as_str().to_string(),
                pending,
            })
            .collect()
    }

    /// A snapshot for `/status`: leases in flight, failed and unplaceable tasks.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut leases: Vec<LeaseView> = self
            .leases
            .values()
            .filter_map(|&t| {
                let task = &self.tasks[t];
                let l = task.lease.as_ref()?;
                Some(LeaseView {
                    task_id: task.id.0.clone(),
                    model: self.queues[task.queue].model.clone(),
                    dataset: task.dataset.clone(),
                    worker: shown(&l.worker),
                    attempt: task.attempts,
                    phase: l.phase.label().to_string(),
                    examples_done: l.done,
                    examples_total: l.total,
                    expires_in_ms: l.deadline.saturating_duration_since(now).as_millis() as u64,
                })
            })
            .collect();
        leases.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Snapshot {
            counts: self.counts,
            workers: self.workers.len(),
            leases,
            failed: self.failed_views(),
            unplaceable: self.unplaceable_views(now),
        }
    }

    /// The dashboard's view: counts per model, workers with their current
    /// cell and rates, failures and unplaceable cells.
    pub fn dashboard(&self, now: Instant) -> Dashboard {
        let mut models: Vec<ModelView> = self
            .queues
            .iter()
            .map(|q| ModelView {
                model: q.model.clone(),
                precision: q.precision.as_str().to_string(),
                total: 0,
                pending: 0,
                leased: 0,
                completed: 0,
                failed: 0,
            })
            .collect();
        for t in &self.tasks {
            let m = &mut models[t.queue];
            m.total += 1;
            match t.state {
                TaskState::Pending => m.pending += 1,
                TaskState::Leased => m.leased += 1,
                TaskState::Completed => m.completed += 1,
                TaskState::Failed => m.failed += 1,
            }
        }
        let mut workers: Vec<WorkerView> = self
            .workers
            .iter()
            .map(|(id, w)| {
                let lease = self
                    .held_by
                    .get(id)
                    .and_then(|l| self.leases.get(l))
                    .map(|&t| &self.tasks[t]);
                let quarantine = w.quarantine(now);
                let state = match (quarantine.is_some(), lease.is_some()) {
                    (true, _) => "quarantined",
                    (false, true) => "busy",
                    (false, false) => "idle",
                };
                let l = lease.and_then(|t| t.lease.as_ref());
                WorkerView {
                    id: shown(id),
                    host: shown(&w.host),
                    devices: w
                        .devices
                        .iter()
                        .map(|(n, b)| format!("{} {}", shown(n), gib(*b)))
                        .collect(),
                    state,
                    task_id: lease.map(|t| t.id.0.clone()),
                    model: lease.map(|t| self.queues[t.queue].model.clone()),
                    dataset: lease.map(|t| t.dataset.clone()),
                    phase: l.map(|l| l.phase.label().to_string()),
                    examples_done: l.map(|l| l.done),
                    examples_total: l.map(|l| l.total),
                    examples_per_second: if l.is_some() {
                        w.rates.examples_per_second
                    } else {
                        0.0
                    },
                    tokens_per_second: if l.is_some() {
                        w.rates.tokens_per_second
                    } else {
                        0.0
                    },
                    last_seen_ms_ago: w
                        .last_seen
                        .map(|s| now.saturating_duration_since(s).as_millis() as u64),
                    consecutive_faults: w.consecutive_faults,
                    last_error: quarantine.map(|(_, why)| shown(why)),
                    quarantined_for_ms: quarantine.map(|(left, _)| left.as_millis() as u64),
                }
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Dashboard {
            counts: self.counts,
            models,
            workers,
            failures: self.failed_views(),
            unplaceable: self.unplaceable_views(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_strings_are_bounded_and_control_free() {
        assert_eq!(shown("a\u{7}b\nc"), "a b\nc");
        let long = "x".repeat(2 * MAX_SHOWN);
        let s = shown(&long);
        assert_eq!(s.chars().count(), MAX_SHOWN + 1);
        assert!(s.ends_with('…'));
    }
}
