//! The sweep's task state machine, in memory, without I/O.
//!
//! ```text
//!            lease                complete (metrics.json present)
//!  Pending ─────────▶ Leased ───────────────────────────────▶ Completed
//!     ▲                 │  fail / lease expired
//!     │  attempts left  │  (attempt recorded)
//!     └─────────────────┤
//!        release        │  attempts exhausted or permanent
//!  (attempt not counted)└──────────────────────────────────▶ Failed
//! ```
//!
//! Lease selection is O(number of queues): pending tasks wait in one FIFO per
//! (model, precision), so a lease never scans tasks. Removal from a queue is
//! lazy (a popped task that is no longer pending is skipped), which keeps
//! completion of a re-queued task O(1). Lease expiry uses a min-heap of
//! deadlines with lazy invalidation (a heartbeat pushes a new deadline; stale
//! entries are skipped when popped).

use cd_common::spec::{Precision, TaskId, TaskSpec};
use cd_common::verified::{self, DeviceKind};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a worker advertised when it registered.
#[derive(Debug, Clone, Default)]
pub struct WorkerInfo {
    /// Host name, for logs and /status.
    pub host: String,
    /// Per-device memory in bytes, CUDA devices only when `cuda`.
    pub device_bytes: Vec<u64>,
    /// Whether the worker runs on CUDA devices (each loses a context reserve).
    pub cuda: bool,
    /// Model display name the worker last asked with.
    pub loaded_model: String,
    /// Last time the worker called in.
    pub last_seen: Option<Instant>,
}

impl WorkerInfo {
    /// Build from the advertised devices: CUDA devices when any are named `cuda:*`,
    /// otherwise the host memory of `cpu` devices.
    pub fn from_devices(host: String, devices: &[(String, u64)]) -> WorkerInfo {
        let cuda: Vec<u64> = devices
            .iter()
            .filter(|(n, _)| n.starts_with("cuda"))
            .map(|(_, b)| *b)
            .collect();
        let (device_bytes, is_cuda) = if cuda.is_empty() {
            (devices.iter().map(|(_, b)| *b).collect(), false)
        } else {
            (cuda, true)
        };
        WorkerInfo {
            host,
            device_bytes,
            cuda: is_cuda,
            ..WorkerInfo::default()
        }
    }
}

impl WorkerInfo {
    /// The kind of device the worker computes on.
    pub fn kind(&self) -> DeviceKind {
        if self.cuda {
            DeviceKind::Cuda
        } else {
            DeviceKind::Cpu
        }
    }
}

/// Whether a task's model fits on a worker. The one place the rule lives.
///
/// Uses the coarse weights-plus-allowance estimate shared with the worker's
/// placement planner (`cd_common::memory`). A worker that advertised no
/// memory is trusted to refuse (permanently) what it cannot load.
pub fn fits(worker: &WorkerInfo, size_b: f64, precision: Precision) -> bool {
    if worker.device_bytes.iter().all(|b| *b == 0) {
        return true;
    }
    cd_common::memory::fits(size_b, precision, &worker.device_bytes, worker.cuda)
}

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
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
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
    phase: String,
    done: u64,
    total: u64,
}

struct Task {
    id: TaskId,
    spec_json: Arc<str>,
    queue: usize,
    phase: Phase,
    /// Attempts started (leases handed out that were not released).
    attempts: u32,
    lease: Option<Lease>,
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
}

/// What a completion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteOutcome {
    /// Recorded now.
    Accepted,
    /// The task was already complete: nothing changed.
    Duplicate,
}

/// What a failure report did.
#[derive(Debug, Clone, PartialEq)]
pub enum FailOutcome {
    /// Back in the queue.
    Requeued(FailureRecord),
    /// Marked failed for good.
    Failed(FailureRecord),
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
}

/// The whole scheduling state of one sweep.
pub struct Scheduler {
    tasks: Vec<Task>,
    by_id: HashMap<TaskId, usize>,
    queues: Vec<Queue>,
    leases: HashMap<u64, usize>,
    expiry: BinaryHeap<Reverse<(Instant, u64)>>,
    workers: HashMap<String, WorkerInfo>,
    counts: Counts,
    max_attempts: u32,
    lease_ttl: Duration,
    next_lease: u64,
    /// Random per process so leases of a previous coordinator never match.
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
                queue: q,
                phase: Phase::Pending,
                attempts: 0,
                lease: None,
                failures: Vec::new(),
            });
        }
        let n = tasks.len() as u64;
        Scheduler {
            tasks,
            by_id,
            queues,
            leases: HashMap::new(),
            expiry: BinaryHeap::new(),
            workers: HashMap::new(),
            counts: Counts {
                total: n,
                pending: n,
                ..Counts::default()
            },
            max_attempts,
            lease_ttl,
            next_lease: 1,
            epoch: rand::random(),
            devices: DeviceKind::ALL.to_vec(),
        }
    }

    /// Lease cells only to workers of these device kinds (the grid's
    /// `scheduling.devices`), each only cells whose precision is verified on
    /// its kind.
    pub fn with_devices(mut self, devices: &[DeviceKind]) -> Scheduler {
        self.devices = devices.to_vec();
        self
    }

    /// Mark tasks complete from the store (resume). Unknown ids (cells of an
    /// older grid) are ignored.
    pub fn restore_completed<'a>(&mut self, ids: impl IntoIterator<Item = &'a TaskId>) -> usize {
        let mut n = 0;
        for id in ids {
            if let Some(&t) = self.by_id.get(id) {
                if self.tasks[t].phase == Phase::Pending {
                    self.set_phase(t, Phase::Completed);
                    n += 1;
                }
            }
        }
        n
    }

    /// Restore a task's failure history (resume); a task whose attempts are
    /// exhausted or that failed permanently stays failed.
    pub fn restore_failures(&mut self, id: &TaskId, history: Vec<FailureRecord>) {
        let Some(&t) = self.by_id.get(id) else { return };
        if self.tasks[t].phase != Phase::Pending {
            return;
        }
        let task = &mut self.tasks[t];
        task.attempts = history.iter().map(|f| f.attempt).max().unwrap_or(0);
        let given_up = history.iter().any(|f| f.permanent) || task.attempts >= self.max_attempts;
        task.failures = history;
        if given_up {
            self.set_phase(t, Phase::Failed);
        }
    }

    /// Record (or refresh) a worker.
    pub fn register(&mut self, worker_id: &str, mut info: WorkerInfo, now: Instant) {
        info.last_seen = Some(now);
        self.workers.insert(worker_id.to_string(), info);
    }

    /// Hand the worker one task, preferring its loaded model, or `None`.
    pub fn lease(
        &mut self,
        worker_id: &str,
        loaded_model: &str,
        now: Instant,
    ) -> Result<Option<Granted>, StateError> {
        let worker = self
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| StateError::UnknownWorker(worker_id.to_string()))?;
        worker.last_seen = Some(now);
        if worker.loaded_model != loaded_model {
            worker.loaded_model = loaded_model.to_string();
        }
        let worker = &*worker;
        let kind = worker.kind();
        let devices = &self.devices;
        let allowed = |p: Precision| devices.contains(&kind) && verified::is_verified(p, kind);
        let mut best: Option<usize> = None;
        for (q, queue) in self.queues.iter().enumerate() {
            if queue.live == 0
                || !allowed(queue.precision)
                || !fits(worker, queue.size_b, queue.precision)
            {
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
        let Some(q) = best else { return Ok(None) };
        let t = loop {
            let t = self.queues[q]
                .pending
                .pop_front()
                .expect("a live queue has a pending entry");
            if self.tasks[t].phase == Phase::Pending {
                break t;
            }
        };
        let lease_id = self.next_lease;
        self.next_lease += 1;
        let deadline = now + self.lease_ttl;
        let wire = self.wire_lease(lease_id);
        self.set_phase(t, Phase::Leased);
        let task = &mut self.tasks[t];
        task.attempts += 1;
        task.lease = Some(Lease {
            id: lease_id,
            worker: worker_id.to_string(),
            deadline,
            phase: String::new(),
            done: 0,
            total: 0,
        });
        self.leases.insert(lease_id, t);
        self.expiry.push(Reverse((deadline, lease_id)));
        Ok(Some(Granted {
            lease_id: wire,
            task_id: task.id.clone(),
            spec_json: task.spec_json.clone(),
            deadline,
            attempt: task.attempts,
        }))
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
    pub fn heartbeat(
        &mut self,
        worker_id: &str,
        lease: &str,
        phase: &str,
        done: u64,
        total: u64,
        now: Instant,
    ) -> Option<Instant> {
        if let Some(w) = self.workers.get_mut(worker_id) {
            w.last_seen = Some(now);
        }
        let t = self.held(worker_id, lease)?;
        let deadline = now + self.lease_ttl;
        let l = self.tasks[t].lease.as_mut().expect("held implies a lease");
        l.deadline = deadline;
        if l.phase != phase {
            l.phase = phase.to_string();
        }
        l.done = done;
        l.total = total;
        let id = l.id;
        self.expiry.push(Reverse((deadline, id)));
        Some(deadline)
    }

    /// Whether a task is already complete (checked before the store is asked).
    pub fn is_completed(&self, task_id: &TaskId) -> Result<bool, StateError> {
        let &t = self
            .by_id
            .get(task_id)
            .ok_or_else(|| StateError::UnknownTask(task_id.0.clone()))?;
        Ok(self.tasks[t].phase == Phase::Completed)
    }

    /// Record a completion. The caller has checked that `metrics.json` exists,
    /// so a completion is accepted even on a lapsed lease: the result is in
    /// the store either way, and a second worker now on it is told to stop at
    /// its next heartbeat.
    pub fn complete(&mut self, task_id: &TaskId) -> Result<CompleteOutcome, StateError> {
        let &t = self
            .by_id
            .get(task_id)
            .ok_or_else(|| StateError::UnknownTask(task_id.0.clone()))?;
        if self.tasks[t].phase == Phase::Completed {
            return Ok(CompleteOutcome::Duplicate);
        }
        self.drop_lease(t);
        self.set_phase(t, Phase::Completed);
        Ok(CompleteOutcome::Accepted)
    }

    /// Record a failure on a live lease: re-queue or give up.
    pub fn fail(
        &mut self,
        worker_id: &str,
        lease: &str,
        error: &str,
        permanent: bool,
        at_unix_ms: u64,
    ) -> FailOutcome {
        let Some(t) = self.held(worker_id, lease) else {
            return FailOutcome::Stale;
        };
        self.fail_task(t, error, permanent, at_unix_ms)
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
        };
        task.failures.push(record.clone());
        if permanent || task.attempts >= self.max_attempts {
            self.set_phase(t, Phase::Failed);
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

    /// Re-queue or fail every lease whose deadline has passed; returns the
    /// affected tasks with their outcome.
    pub fn reap(&mut self, now: Instant, at_unix_ms: u64) -> Vec<(TaskId, FailOutcome)> {
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
            let outcome = self.fail_task(t, "lease expired", false, at_unix_ms);
            out.push((self.tasks[t].id.clone(), outcome));
        }
        out
    }

    fn drop_lease(&mut self, t: usize) {
        if let Some(l) = self.tasks[t].lease.take() {
            self.leases.remove(&l.id);
        }
    }

    fn requeue(&mut self, t: usize) {
        self.set_phase(t, Phase::Pending);
        let q = self.tasks[t].queue;
        // Retries go to the back so one poisoned cell cannot monopolise a worker.
        self.queues[q].pending.push_back(t);
    }

    fn set_phase(&mut self, t: usize, to: Phase) {
        let from = self.tasks[t].phase;
        if from == to {
            return;
        }
        let q = self.tasks[t].queue;
        match from {
            Phase::Pending => {
                self.counts.pending -= 1;
                self.queues[q].live -= 1;
            }
            Phase::Leased => self.counts.leased -= 1,
            Phase::Completed => self.counts.completed -= 1,
            Phase::Failed => self.counts.failed -= 1,
        }
        match to {
            Phase::Pending => {
                self.counts.pending += 1;
                self.queues[q].live += 1;
            }
            Phase::Leased => self.counts.leased += 1,
            Phase::Completed => self.counts.completed += 1,
            Phase::Failed => self.counts.failed += 1,
        }
        self.tasks[t].phase = to;
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
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// A task's failure history (for persistence).
    pub fn failures(&self, task_id: &TaskId) -> Vec<FailureRecord> {
        self.by_id
            .get(task_id)
            .map(|&t| self.tasks[t].failures.clone())
            .unwrap_or_default()
    }

    /// A snapshot for `/status`: leases in flight and failed tasks.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let leases = self
            .leases
            .values()
            .filter_map(|&t| {
                let task = &self.tasks[t];
                let l = task.lease.as_ref()?;
                Some(LeaseView {
                    task_id: task.id.0.clone(),
                    model: self.queues[task.queue].model.clone(),
                    worker: l.worker.clone(),
                    attempt: task.attempts,
                    phase: l.phase.clone(),
                    examples_done: l.done,
                    examples_total: l.total,
                    expires_in_ms: l.deadline.saturating_duration_since(now).as_millis() as u64,
                })
            })
            .collect();
        let failed = self
            .tasks
            .iter()
            .filter(|t| t.phase == Phase::Failed)
            .map(|t| FailedView {
                task_id: t.id.0.clone(),
                model: self.queues[t.queue].model.clone(),
                last_error: t
                    .failures
                    .last()
                    .map(|f| f.error.clone())
                    .unwrap_or_default(),
                attempts: t.attempts,
            })
            .collect();
        Snapshot {
            counts: self.counts,
            workers: self.workers.len(),
            leases,
            failed,
        }
    }
}

/// `/status` body.
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
}

/// One lease in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    /// Task id.
    pub task_id: String,
    /// Model display name.
    pub model: String,
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
    /// The last error.
    pub last_error: String,
    /// Attempts made.
    pub attempts: u32,
}
