//! State shared by the gRPC service, the HTTP endpoints and the background
//! tasks (lease reaper, persister/report writer).

use crate::prometheus::Metrics;
use crate::state::{FailOutcome, FailureRecord, Scheduler};
use cd_common::spec::TaskId;
use cd_common::storage::Store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Work for the persister, which owns all writes the coordinator makes.
#[derive(Debug)]
pub enum Event {
    /// A task's failure history changed: write it.
    Failure(TaskId, Vec<FailureRecord>),
    /// A task completed: the report is out of date.
    Completed,
    /// Leases changed: persist them (so a restart keeps them).
    LeasesChanged,
    /// Write everything outstanding (and the report), then answer.
    Flush(oneshot::Sender<()>),
    /// Write the leases now, then answer (a new lease is persisted before
    /// the worker hears of it).
    PersistLeases(oneshot::Sender<()>),
}

pub use cd_common::storage::redacted_url;

/// Everything the service and the background tasks share.
pub struct Shared {
    /// Sweep name.
    pub sweep: String,
    /// Storage URL handed to workers.
    pub store_url: String,
    /// How often workers heartbeat.
    pub heartbeat_interval: Duration,
    /// The scheduler; never held across an await.
    pub sched: Mutex<Scheduler>,
    /// Set when completions must be checked against the store.
    pub verify_store: Option<Store>,
    /// The store URL as it may be shown.
    pub store_url_shown: String,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// When the coordinator started.
    pub started: Instant,
    /// Unix milliseconds at start.
    pub started_unix_ms: u64,
    /// The report's figures as JSON (`tables::curves`, `tables::mc_curves`)
    /// and when they were made, for the dashboard.
    pub figures: std::sync::RwLock<(Arc<str>, u64, usize)>,
    leasing: AtomicBool,
    events: mpsc::UnboundedSender<Event>,
}

impl Shared {
    /// Shared state plus the receiving end of its event channel.
    pub fn new(
        sweep: String,
        store_url: String,
        heartbeat_interval: Duration,
        sched: Scheduler,
        verify_store: Option<Store>,
    ) -> (Arc<Shared>, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Shared {
            sweep,
            store_url_shown: redacted_url(&store_url),
            store_url,
            heartbeat_interval,
            sched: Mutex::new(sched),
            verify_store,
            metrics: Metrics::new(),
            started: Instant::now(),
            started_unix_ms: unix_ms(),
            figures: std::sync::RwLock::new((Arc::from("{\"curves\":[],\"mc\":[]}"), 0, 0)),
            leasing: AtomicBool::new(true),
            events: tx,
        };
        (Arc::new(shared), rx)
    }

    /// Whether new leases are handed out (false once shutting down).
    pub(crate) fn is_leasing(&self) -> bool {
        self.leasing.load(Ordering::Relaxed)
    }

    /// Stop handing out leases (graceful shutdown).
    pub fn stop_leasing(&self) {
        self.leasing.store(false, Ordering::Relaxed);
    }

    /// Suggested wait before a worker asks again after getting no task.
    pub fn retry_after_ms(&self) -> u64 {
        (self.heartbeat_interval.as_millis() as u64 / 4).clamp(100, 2_000)
    }

    /// Queue work for the persister; dropped silently once it has stopped.
    pub(crate) fn notify(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Wait until the persister has written everything queued so far.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.events.send(Event::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Re-queue lapsed leases; runs until the process ends.
    pub(crate) async fn reap_forever(self: Arc<Self>, tick: Duration) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let reaped = {
                let mut s = self.sched.lock().expect("scheduler lock");
                let reaped = s.reap(Instant::now(), unix_ms());
                reaped
                    .into_iter()
                    .map(|(id, outcome)| (s.failures(&id), id, outcome))
                    .collect::<Vec<_>>()
            };
            let any = !reaped.is_empty();
            for (history, id, outcome) in reaped {
                match outcome {
                    FailOutcome::Requeued(f) => {
                        tracing::warn!(task = %id, worker = %f.worker, attempt = f.attempt, error = %f.error, "lease expired, task re-queued")
                    }
                    FailOutcome::Failed(f) => {
                        tracing::error!(task = %id, worker = %f.worker, attempt = f.attempt, error = %f.error, "lease expired, attempts exhausted")
                    }
                    FailOutcome::WorkerFault(..) | FailOutcome::Stale => continue,
                }
                self.metrics.leases_expired.inc();
                self.notify(Event::Failure(id, history));
            }
            if any {
                self.notify(Event::LeasesChanged);
            }
        }
    }
}
