//! The sweep's task state machine, in memory, without I/O. Time is passed
//! in (`now`), so tests drive it with made-up instants.
//!
//! ```text
//!            lease                 complete (by the lease's holder)
//!  Pending ─────────▶ Leased ───────────────────────────────▶ Completed
//!     ▲                 │  task fault / stalled / lease expired
//!     │  attempts left  │  after heartbeats, first time on this worker
//!     ├─────────────────┤  (attempt charged)
//!     │  release,       │  attempts exhausted or permanent
//!     │  worker fault,  └──────────────────────────────────▶ Failed
//!     │  other expiries
//!     └─ (not charged)
//! ```
//!
//! - **Faults have owners.** A task fault (its data or spec cannot be
//!   computed) is charged to the task. A worker fault (this worker's data
//!   root, store, devices or version) releases the lease without charging
//!   the task; [`workers::QUARANTINE_AFTER`] in a row quarantine the worker
//!   (no leases for a growing cool-down, or until re-admitted), so one
//!   misconfigured node cannot fail the sweep.
//! - **Leases authorise.** A worker holds at most one lease; asking again
//!   while holding it returns it (a retried request never takes a second
//!   task). Completions, failures and heartbeats must name the worker's
//!   live lease (epoch, lease id, worker id); a completion from the holder
//!   of the task's last, lapsed lease is accepted while nobody else holds it
//!   (its result is in the store), anything else is refused.
//! - **Restarts keep in-flight work.** The epoch and the live leases can be
//!   saved ([`Scheduler::persisted_leases`]) and restored by a restarted
//!   coordinator, so workers' heartbeats and completions find their leases.
//! - **Nothing stalls silently.** A lease whose progress has not moved for
//!   the stall timeout is expired like a lapsed one; a pending task that no
//!   registered worker can run (device kind, verified precision, memory) is
//!   reported as unplaceable.
//!
//! Lease selection is O(number of queues): pending tasks wait in one FIFO per
//! (model, precision), so a lease never scans tasks. Removal from a queue is
//! lazy (a popped task that is no longer pending is skipped). Lease expiry
//! uses a min-heap of deadlines with lazy invalidation.
//!
//! Why this file is long: the sweep's state machine: every transition (lease,
//! heartbeat, complete, fail, lapse, stall, quarantine) updates the same counts
//! and queues, and is safest read in one place; views, workers and persistence
//! are already split out.

mod persisted;
pub mod views;
pub mod workers;

pub(crate) use persisted::PersistedLeases;
pub(crate) use views::{Dashboard, Snapshot};
pub use workers::fits;
pub(crate) use workers::WorkerInfo;

use cd_common::spec::{Precision, TaskId, TaskSpec};
use cd_common::verified::{self, DeviceKind};
use cd_proto::v1::TaskPhase;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One recorded failure of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// 1-based attempt that failed.
    pub attempt: u32,
    /// Worker that held the lease.
    pub worker: String,
    /// What went wrong (`lease expired` for a lapsed lease).
    pub error: String,
    /// Whether the worker said no retry can fix it.
    pub permanent: bool,
    /// Unix milliseconds.
    pub at_unix_ms: u64,
    /// A worker fault: recorded, not charged to the task.
    #[serde(default)]
    pub worker_fault: bool,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TaskState {
    /// Waiting in its queue.
    Pending,
    /// Held by a worker.
    Leased,
    /// `metrics.json` is in the store.
    Completed,
    /// Attempts exhausted or a permanent failure.
    Failed,
}

struct Lease {
    id: u64,
    worker: String,
    deadline: Instant,
    phase: TaskPhase,
    done: u64,
    total: u64,
    /// Last time the phase or the progress moved.
    moved_at: Instant,
    /// Heartbeats received on this lease (a restored lease counts as one).
    beats: u32,
}

struct Task {
    id: TaskId,
    spec_json: Arc<str>,
    dataset: String,
    queue: usize,
    state: TaskState,
    /// Attempts started and charged.
    attempts: u32,
    lease: Option<Lease>,
    /// The lease the task last had (id, worker), after it lapsed: its
    /// holder's completion is still accepted while nobody else holds it.
    last_lease: Option<(u64, String)>,
    /// Workers on which a lease of this task lapsed after heartbeating.
    lapsed_on: Vec<String>,
    failures: Vec<FailureRecord>,
}

struct Queue {
    model: String,
    precision: Precision,
    size_b: f64,
    pending: VecDeque<usize>,
    /// Tasks of this queue currently pending (the deque may hold stale entries).
    live: usize,
}

/// Counts of tasks per phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Tasks in the grid.
    pub total: u64,
    /// Waiting.
    pub pending: u64,
    /// Held by workers.
    pub leased: u64,
    /// Done.
    pub completed: u64,
    /// Given up.
    pub failed: u64,
}

/// A lease handed to a worker.
#[derive(Debug, Clone)]
pub struct Granted {
    /// Lease id as sent on the wire.
    pub lease_id: String,
    /// The task.
    pub task_id: TaskId,
    /// Canonical spec JSON.
    pub spec_json: Arc<str>,
    /// When the lease lapses.
    pub deadline: Instant,
    /// 1-based attempt.
    pub attempt: u32,
    /// A new lease (not the one the worker already held): it must be
    /// persisted before it is handed out, so a restart keeps it.
    pub fresh: bool,
}

/// The answer to a lease request.
#[derive(Debug, Clone, Default)]
pub struct LeaseAnswer {
    /// The lease (a new one, or the one the worker already holds).
    pub granted: Option<Granted>,
    /// No remaining task can ever run on this worker.
    pub nothing_for_worker: bool,
    /// The worker is quarantined: why and for how much longer.
    pub quarantined: Option<(String, Duration)>,
}

/// What a completion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteOutcome {
    /// Recorded now.
    Accepted,
    /// The task was already complete: nothing changed.
    Duplicate,
}

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The task's: charged.
    Task {
        /// No retry can fix it.
        permanent: bool,
    },
    /// The worker's: not charged; counts toward quarantine.
    Worker,
}

/// What a failure report did.
#[derive(Debug, Clone, PartialEq)]
pub enum FailOutcome {
    /// Back in the queue (charged).
    Requeued(FailureRecord),
    /// Marked failed for good.
    Failed(FailureRecord),
    /// A worker fault: back in the queue uncharged; the worker is
    /// quarantined for this long when this fault started one.
    WorkerFault(FailureRecord, Option<Duration>),
    /// The lease was not current (late report): ignored.
    Stale,
}

/// Errors a worker can cause.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    /// The worker never registered (or the coordinator restarted since).
    #[error("unknown worker `{0}`: register first")]
    UnknownWorker(String),
    /// The task id is not in this sweep.
    #[error("unknown task `{0}` in this sweep")]
    UnknownTask(String),
    /// A completion or failure that the caller's lease does not authorise.
    #[error("task `{task}`: worker `{worker}` holds no lease `{lease}` on it")]
    NotYourLease {
        /// The task.
        task: String,
        /// The caller.
        worker: String,
        /// The lease named.
        lease: String,
    },
}

/// Timing limits of the scheduler.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Attempts charged before a task fails.
    pub max_attempts: u32,
    /// A lease lapses this long after its last heartbeat.
    pub lease_ttl: Duration,
    /// A lease whose progress has not moved for this long is expired.
    pub stall_timeout: Duration,
    /// The same while the model loads, which reports no counts.
    pub load_stall_timeout: Duration,
}

/// The whole scheduling state of one sweep.
pub struct Scheduler {
    tasks: Vec<Task>,
    by_id: HashMap<TaskId, usize>,
    queues: Vec<Queue>,
    leases: HashMap<u64, usize>,
    /// The live lease of each worker.
    held_by: HashMap<String, u64>,
    expiry: BinaryHeap<Reverse<(Instant, u64)>>,
    workers: HashMap<String, WorkerInfo>,
    counts: Counts,
    limits: Limits,
    next_lease: u64,
    /// Random per sweep so leases of another coordinator never match; kept
    /// across restarts through [`Scheduler::persisted_leases`].
    epoch: u32,
    /// Device kinds the grid lets run its cells.
    devices: Vec<DeviceKind>,
}

impl Scheduler {
    /// A scheduler for these tasks, all pending.
    pub fn new(specs: &[TaskSpec], max_attempts: u32, lease_ttl: Duration) -> Scheduler {
        let mut queues: Vec<Queue> = Vec::new();
        let mut queue_of: HashMap<(String, Precision), usize> = HashMap::new();
        let mut tasks = Vec::with_capacity(specs.len());
        let mut by_id = HashMap::with_capacity(specs.len());
        for spec in specs {
            let id = spec.id();
            if by_id.contains_key(&id) {
                continue;
            }
            let key = (spec.model.name.clone(), spec.precision);
            let q = *queue_of.entry(key).or_insert_with(|| {
                queues.push(Queue {
                    model: spec.model.name.clone(),
                    precision: spec.precision,
                    size_b: spec.model.size_b,
                    pending: VecDeque::new(),
                    live: 0,
                });
                queues.len() - 1
            });
            let index = tasks.len();
            queues[q].pending.push_back(index);
            queues[q].live += 1;
            by_id.insert(id.clone(), index);
            tasks.push(Task {
                id,
                spec_json: Arc::from(spec.canonical_json()),
                dataset: spec.dataset.name.clone(),
                queue: q,
                state: TaskState::Pending,
                attempts: 0,
                lease: None,
                last_lease: None,
                lapsed_on: Vec::new(),
                failures: Vec::new(),
            });
        }
        let n = tasks.len() as u64;
        Scheduler {
            tasks,
            by_id,
            queues,
            leases: HashMap::new(),
            held_by: HashMap::new(),
            expiry: BinaryHeap::new(),
            workers: HashMap::new(),
            counts: Counts {
                total: n,
                pending: n,
                ..Counts::default()
            },
            limits: Limits {
                max_attempts,
                lease_ttl,
                stall_timeout: Duration::from_secs(3600),
                load_stall_timeout: Duration::from_secs(14400),
            },
            next_lease: 1,
            epoch: rand::random(),
            devices: DeviceKind::ALL.to_vec(),
        }
    }

    /// Lease cells only to workers of these device kinds (the grid's
    /// `scheduling.devices`), each only cells whose precision is verified on
    /// its kind.
    pub(crate) fn with_devices(mut self, devices: &[DeviceKind]) -> Scheduler {
        self.devices = devices.to_vec();
        self
    }

    /// Expire leases whose progress has not moved for `stall` (for
    /// `load` while the model loads, which reports no counts).
    pub(crate) fn with_stall_timeouts(mut self, stall: Duration, load: Duration) -> Scheduler {
        self.limits.stall_timeout = stall;
        self.limits.load_stall_timeout = load;
        self
    }

    /// Mark tasks complete from the store (resume). Unknown ids (cells of an
    /// older grid) are ignored.
    pub(crate) fn restore_completed<'a>(
        &mut self,
        ids: impl IntoIterator<Item = &'a TaskId>,
    ) -> usize {
        let mut n = 0;
        for id in ids {
            if let Some(&t) = self.by_id.get(id) {
                if self.tasks[t].state == TaskState::Pending {
                    self.set_state(t, TaskState::Completed);
                    n += 1;
                }
            }
        }
        n
    }

    /// Restore a task's failure history (resume); a task whose attempts are
    /// exhausted or that failed permanently stays failed.
    pub(crate) fn restore_failures(&mut self, id: &TaskId, history: Vec<FailureRecord>) {
        let Some(&t) = self.by_id.get(id) else { return };
        if self.tasks[t].state != TaskState::Pending {
            return;
        }
        let task = &mut self.tasks[t];
        task.attempts = history
            .iter()
            .filter(|f| !f.worker_fault)
            .map(|f| f.attempt)
            .max()
            .unwrap_or(0);
        let given_up = history.iter().any(|f| f.permanent && !f.worker_fault)
            || task.attempts >= self.limits.max_attempts;
        task.failures = history;
        if given_up {
            self.set_state(t, TaskState::Failed);
        }
    }

    /// Record (or refresh) a worker, keeping what was seen of it before.
    pub fn register(&mut self, worker_id: &str, mut info: WorkerInfo, now: Instant) {
        info.last_seen = Some(now);
        match self.workers.get_mut(worker_id) {
            Some(known) => {
                known.host = info.host;
                known.devices = info.devices;
                known.device_bytes = info.device_bytes;
                known.cuda = info.cuda;
                known.last_seen = info.last_seen;
            }
            None => {
                self.workers.insert(worker_id.to_string(), info);
            }
        }
    }

    /// Whether a worker may run a queue's cells: kind allowed by the grid,
    /// precision verified on that kind, model fits.
    fn can_run(&self, worker: &WorkerInfo, q: &Queue) -> bool {
        let kind = worker.kind();
        self.devices.contains(&kind)
            && verified::is_verified(q.precision, kind)
            && fits(worker, q.size_b, q.precision)
    }

    /// Hand the worker one task, preferring its loaded model; the lease it
    /// already holds when it holds one.
    pub fn lease(
        &mut self,
        worker_id: &str,
        loaded_model: &str,
        now: Instant,
    ) -> Result<LeaseAnswer, StateError> {
        let worker = self
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| StateError::UnknownWorker(worker_id.to_string()))?;
        worker.last_seen = Some(now);
        if worker.loaded_model != loaded_model {
            worker.loaded_model = loaded_model.to_string();
        }
        if let Some((left, why)) = worker.quarantine(now) {
            return Ok(LeaseAnswer {
                quarantined: Some((why.to_string(), left)),
                ..LeaseAnswer::default()
            });
        }
        if worker.quarantined.is_some() {
            // The cool-down is over.
            worker.readmit();
        }
        if let Some(&held) = self.held_by.get(worker_id) {
            if let Some(&t) = self.leases.get(&held) {
                let task = &self.tasks[t];
                let l = task.lease.as_ref().expect("a held lease");
                return Ok(LeaseAnswer {
                    granted: Some(Granted {
                        lease_id: self.wire_lease(l.id),
                        task_id: task.id.clone(),
                        spec_json: task.spec_json.clone(),
                        deadline: l.deadline,
                        attempt: task.attempts,
                        fresh: false,
                    }),
                    ..LeaseAnswer::default()
                });
            }
        }
        let worker = &self.workers[worker_id];
        let mut best: Option<usize> = None;
        let mut runnable_left = false;
        for (q, queue) in self.queues.iter().enumerate() {
            if !self.can_run(worker, queue) {
                continue;
            }
            if queue.live > 0 || self.queue_has_leases(q) {
                runnable_left = true;
            }
            if queue.live == 0 {
                continue;
            }
            let preferred = !loaded_model.is_empty() && queue.model == loaded_model;
            if preferred {
                best = Some(q);
                break;
            }
            // Otherwise the queue with the most work left, so workers spread over models
            // and the biggest backlogs start first.
            if best.is_none_or(|b| queue.live > self.queues[b].live) {
                best = Some(q);
            }
        }
        let Some(q) = best else {
            return Ok(LeaseAnswer {
                nothing_for_worker: !runnable_left,
                ..LeaseAnswer::default()
            });
        };
        let t = loop {
            let t = self.queues[q]
                .pending
                .pop_front()
                .expect("a live queue has a pending entry");
            if self.tasks[t].state == TaskState::Pending {
                break t;
            }
        };
        let lease_id = self.next_lease;
        self.next_lease += 1;
        let deadline = now + self.limits.lease_ttl;
        let wire = self.wire_lease(lease_id);
        self.set_state(t, TaskState::Leased);
        let task = &mut self.tasks[t];
        task.attempts += 1;
        task.lease = Some(Lease {
            id: lease_id,
            worker: worker_id.to_string(),
            deadline,
            phase: TaskPhase::Starting,
            done: 0,
            total: 0,
            moved_at: now,
            beats: 0,
        });
        self.leases.insert(lease_id, t);
        self.held_by.insert(worker_id.to_string(), lease_id);
        self.expiry.push(Reverse((deadline, lease_id)));
        Ok(LeaseAnswer {
            granted: Some(Granted {
                lease_id: wire,
                task_id: task.id.clone(),
                spec_json: task.spec_json.clone(),
                deadline,
                attempt: task.attempts,
                fresh: true,
            }),
            ..LeaseAnswer::default()
        })
    }

    fn queue_has_leases(&self, q: usize) -> bool {
        self.leases.values().any(|&t| self.tasks[t].queue == q)
    }

    fn wire_lease(&self, id: u64) -> String {
        format!("{:08x}-{id}", self.epoch)
    }

    fn parse_lease(&self, wire: &str) -> Option<u64> {
        let (epoch, id) = wire.split_once('-')?;
        (u32::from_str_radix(epoch, 16).ok()? == self.epoch).then_some(())?;
        id.parse().ok()
    }

    /// The task a live lease of this worker holds.
    fn held(&self, worker_id: &str, lease: &str) -> Option<usize> {
        let id = self.parse_lease(lease)?;
        let t = *self.leases.get(&id)?;
        let l = self.tasks[t].lease.as_ref()?;
        (l.id == id && l.worker == worker_id).then_some(t)
    }

    /// Extend a lease and record progress; `None` when the lease is gone.
    pub fn heartbeat(&mut self, beat: Heartbeat<'_>, now: Instant) -> Option<Instant> {
        let t = self.held(beat.worker_id, beat.lease);
        if let Some(w) = self.workers.get_mut(beat.worker_id) {
            w.last_seen = Some(now);
            if let Some(id) = t.and_then(|t| self.tasks[t].lease.as_ref()).map(|l| l.id) {
                w.rates.update(id, beat.done, beat.tokens, now);
            }
        }
        let t = t?;
        let deadline = now + self.limits.lease_ttl;
        let l = self.tasks[t].lease.as_mut().expect("held implies a lease");
        l.deadline = deadline;
        if l.phase != beat.phase || l.done != beat.done {
            l.moved_at = now;
        }
        if l.phase != beat.phase {
            l.phase = beat.phase;
        }
        l.done = beat.done;
        l.total = beat.total;
        l.beats = l.beats.saturating_add(1);
        let id = l.id;
        self.expiry.push(Reverse((deadline, id)));
        Some(deadline)
    }

    /// Whether a task is already complete (checked before the store is asked).
    pub(crate) fn is_completed(&self, task_id: &TaskId) -> Result<bool, StateError> {
        let &t = self
            .by_id
            .get(task_id)
            .ok_or_else(|| StateError::UnknownTask(task_id.0.clone()))?;
        Ok(self.tasks[t].state == TaskState::Completed)
    }

    /// Whether `worker_id` may complete `task_id` with `lease` (checked
    /// before the store is asked): its live lease on the task, or the task's
    /// last lapsed lease while nobody else holds it.
    pub(crate) fn authorises(
        &self,
        worker_id: &str,
        lease: &str,
        task_id: &TaskId,
    ) -> Result<(), StateError> {
        let &t = self
            .by_id
            .get(task_id)
            .ok_or_else(|| StateError::UnknownTask(task_id.0.clone()))?;
        let refuse = || StateError::NotYourLease {
            task: task_id.0.clone(),
            worker: worker_id.to_string(),
            lease: lease.to_string(),
        };
        if self.held(worker_id, lease) == Some(t) {
            return Ok(());
        }
        let id = self.parse_lease(lease).ok_or_else(refuse)?;
        let task = &self.tasks[t];
        let lapsed = task.lease.is_none()
            && task
                .last_lease
                .as_ref()
                .is_some_and(|(last, w)| *last == id && w == worker_id);
        if lapsed {
            Ok(())
        } else {
            Err(refuse())
        }
    }

    /// Record a completion the caller's lease authorises (and whose
    /// `metrics.json` the caller found valid in the store).
    pub fn complete(
        &mut self,
        worker_id: &str,
        lease: &str,
        task_id: &TaskId,
    ) -> Result<CompleteOutcome, StateError> {
        if self.is_completed(task_id)? {
            return Ok(CompleteOutcome::Duplicate);
        }
        self.authorises(worker_id, lease, task_id)?;
        let t = self.by_id[task_id];
        self.drop_lease(t);
        self.set_state(t, TaskState::Completed);
        if let Some(w) = self.workers.get_mut(worker_id) {
            w.succeeded();
        }
        Ok(CompleteOutcome::Accepted)
    }

    /// Record a failure on a live lease: re-queue or give up (task fault),
    /// or re-queue uncharged and count it against the worker (worker fault).
    pub fn fail(
        &mut self,
        worker_id: &str,
        lease: &str,
        error: &str,
        fault: Fault,
        now: Instant,
        at_unix_ms: u64,
    ) -> (Option<TaskId>, FailOutcome) {
        let Some(t) = self.held(worker_id, lease) else {
            return (None, FailOutcome::Stale);
        };
        let id = self.tasks[t].id.clone();
        let outcome = match fault {
            Fault::Task { permanent } => {
                if let Some(w) = self.workers.get_mut(worker_id) {
                    w.succeeded();
                }
                self.fail_task(t, error, permanent, at_unix_ms)
            }
            Fault::Worker => self.worker_fault(t, worker_id, error, now, at_unix_ms),
        };
        (Some(id), outcome)
    }

    /// Put the task back uncharged and count the fault against the worker.
    fn worker_fault(
        &mut self,
        t: usize,
        worker_id: &str,
        error: &str,
        now: Instant,
        at_unix_ms: u64,
    ) -> FailOutcome {
        let task = &mut self.tasks[t];
        let record = FailureRecord {
            attempt: task.attempts,
            worker: worker_id.to_string(),
            error: error.to_string(),
            permanent: false,
            at_unix_ms,
            worker_fault: true,
        };
        task.failures.push(record.clone());
        self.drop_lease(t);
        self.tasks[t].attempts = self.tasks[t].attempts.saturating_sub(1);
        self.requeue(t);
        let quarantine = self
            .workers
            .get_mut(worker_id)
            .and_then(|w| w.fault(error, now));
        FailOutcome::WorkerFault(record, quarantine)
    }

    fn fail_task(
        &mut self,
        t: usize,
        error: &str,
        permanent: bool,
        at_unix_ms: u64,
    ) -> FailOutcome {
        let worker = self.tasks[t]
            .lease
            .as_ref()
            .map(|l| l.worker.clone())
            .unwrap_or_default();
        self.drop_lease(t);
        let task = &mut self.tasks[t];
        let record = FailureRecord {
            attempt: task.attempts,
            worker,
            error: error.to_string(),
            permanent,
            at_unix_ms,
            worker_fault: false,
        };
        task.failures.push(record.clone());
        if permanent || task.attempts >= self.limits.max_attempts {
            self.set_state(t, TaskState::Failed);
            FailOutcome::Failed(record)
        } else {
            self.requeue(t);
            FailOutcome::Requeued(record)
        }
    }

    /// Give a lease back without counting the attempt.
    pub fn release(&mut self, worker_id: &str, lease: &str) -> bool {
        let Some(t) = self.held(worker_id, lease) else {
            return false;
        };
        self.drop_lease(t);
        self.tasks[t].attempts = self.tasks[t].attempts.saturating_sub(1);
        self.requeue(t);
        true
    }

    /// Re-queue or fail every lease whose deadline has passed or whose
    /// progress has stalled; returns the affected tasks with their outcome.
    pub(crate) fn reap(&mut self, now: Instant, at_unix_ms: u64) -> Vec<(TaskId, FailOutcome)> {
        let mut out = Vec::new();
        while let Some(Reverse((deadline, id))) = self.expiry.peek().copied() {
            if deadline > now {
                break;
            }
            self.expiry.pop();
            let Some(&t) = self.leases.get(&id) else {
                continue;
            };
            let current = self.tasks[t]
                .lease
                .as_ref()
                .is_some_and(|l| l.id == id && l.deadline == deadline);
            if !current {
                continue;
            }
            let outcome = self.lapse(t, now, at_unix_ms);
            out.push((self.tasks[t].id.clone(), outcome));
        }
        // A watchdog per phase: progress must move within the phase's limit.
        let limits = self.limits;
        let limit_of = move |phase: TaskPhase| {
            if phase == TaskPhase::LoadModel {
                limits.load_stall_timeout
            } else {
                limits.stall_timeout
            }
        };
        let stalled: Vec<usize> =
            self.leases
                .values()
                .copied()
                .filter(|&t| {
                    self.tasks[t].lease.as_ref().is_some_and(|l| {
                        now.saturating_duration_since(l.moved_at) >= limit_of(l.phase)
                    })
                })
                .collect();
        for t in stalled {
            let (worker, phase) = {
                let l = self.tasks[t].lease.as_ref().expect("filtered");
                (l.worker.clone(), l.phase)
            };
            let stall = limit_of(phase);
            let error = format!("no progress for {} s in phase `{phase}`", stall.as_secs(),);
            if let Some(w) = self.workers.get_mut(&worker) {
                w.fault(&error, now);
            }
            let outcome = self.fail_task(t, &error, false, at_unix_ms);
            out.push((self.tasks[t].id.clone(), outcome));
        }
        out
    }

    /// A lease ran out without a heartbeat. Whose fault that is cannot be
    /// known (a killed node, or a cell that kills every worker), so it counts
    /// against the worker, and against the task only once per worker and
    /// only if the lease had heartbeated: a client that leases and vanishes,
    /// or keeps re-leasing under one id, can delay cells but never fail them,
    /// while a cell that brings down `max_attempts` different workers fails.
    fn lapse(&mut self, t: usize, now: Instant, at_unix_ms: u64) -> FailOutcome {
        const ERROR: &str = "lease expired";
        let (worker, beats) = {
            let l = self.tasks[t].lease.as_ref().expect("a lapsing lease");
            (l.worker.clone(), l.beats)
        };
        let charged = beats > 0 && !self.tasks[t].lapsed_on.contains(&worker);
        if !charged {
            return self.worker_fault(t, &worker, ERROR, now, at_unix_ms);
        }
        self.tasks[t].lapsed_on.push(worker.clone());
        if let Some(w) = self.workers.get_mut(&worker) {
            w.fault(ERROR, now);
        }
        self.fail_task(t, ERROR, false, at_unix_ms)
    }

    fn drop_lease(&mut self, t: usize) {
        if let Some(l) = self.tasks[t].lease.take() {
            self.leases.remove(&l.id);
            if self.held_by.get(&l.worker) == Some(&l.id) {
                self.held_by.remove(&l.worker);
            }
            self.tasks[t].last_lease = Some((l.id, l.worker));
        }
    }

    fn requeue(&mut self, t: usize) {
        self.set_state(t, TaskState::Pending);
        let q = self.tasks[t].queue;
        // Retries go to the back so one poisoned cell cannot monopolise a worker.
        self.queues[q].pending.push_back(t);
    }

    fn set_state(&mut self, t: usize, to: TaskState) {
        let from = self.tasks[t].state;
        if from == to {
            return;
        }
        let q = self.tasks[t].queue;
        match from {
            TaskState::Pending => {
                self.counts.pending -= 1;
                self.queues[q].live -= 1;
            }
            TaskState::Leased => self.counts.leased -= 1,
            TaskState::Completed => self.counts.completed -= 1,
            TaskState::Failed => self.counts.failed -= 1,
        }
        match to {
            TaskState::Pending => {
                self.counts.pending += 1;
                self.queues[q].live += 1;
            }
            TaskState::Leased => self.counts.leased += 1,
            TaskState::Completed => self.counts.completed += 1,
            TaskState::Failed => self.counts.failed += 1,
        }
        self.tasks[t].state = to;
    }

    /// Task counts per phase.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Whether every task is completed or failed.
    pub fn done(&self) -> bool {
        self.counts.pending == 0 && self.counts.leased == 0
    }

    /// Workers that registered.
    pub(crate) fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// A task's failure history (for persistence).
    pub fn failures(&self, task_id: &TaskId) -> Vec<FailureRecord> {
        self.by_id
            .get(task_id)
            .map(|&t| self.tasks[t].failures.clone())
            .unwrap_or_default()
    }

    /// Lift a worker's quarantine (operator command); false when unknown.
    pub(crate) fn readmit(&mut self, worker_id: &str) -> bool {
        match self.workers.get_mut(worker_id) {
            Some(w) => {
                w.readmit();
                true
            }
            None => false,
        }
    }

    /// Pending tasks that no registered, unquarantined worker can run
    /// (device kind, verified precision, memory), by (model, precision):
    /// `(model, precision, pending)`. Empty while no worker has registered.
    pub fn unplaceable(&self, now: Instant) -> Vec<(String, Precision, u64)> {
        if self.workers.is_empty() {
            return Vec::new();
        }
        self.queues
            .iter()
            .filter(|q| q.live > 0)
            .filter(|q| {
                !self
                    .workers
                    .values()
                    .any(|w| w.quarantine(now).is_none() && self.can_run(w, q))
            })
            .map(|q| (q.model.clone(), q.precision, q.live as u64))
            .collect()
    }

    /// Whether every task is terminal or unplaceable by the workers there are.
    pub fn stuck(&self, now: Instant) -> bool {
        self.counts.leased == 0
            && self.counts.pending > 0
            && self.unplaceable(now).iter().map(|u| u.2).sum::<u64>() == self.counts.pending
    }
}

/// What a heartbeat reports.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat<'a> {
    /// The worker.
    pub worker_id: &'a str,
    /// Its lease, as on the wire.
    pub lease: &'a str,
    /// The phase it is in.
    pub phase: TaskPhase,
    /// Examples done.
    pub done: u64,
    /// Examples in the task.
    pub total: u64,
    /// Tokens processed so far.
    pub tokens: u64,
}

#[cfg(test)]
mod tests;
