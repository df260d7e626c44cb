//! The gRPC `Coordinator` service: protocol messages in, state transitions out.
//!
//! Every error a worker can cause maps to a `tonic::Status` in [`status_of`].
//! The scheduler lock is never held across an await: the store check of a
//! completion runs before the lock is taken.

use crate::shared::{unix_ms, Event, Shared};
use crate::state::views::shown;
use crate::state::{CompleteOutcome, FailOutcome, Fault, Heartbeat, StateError, WorkerInfo};
use cd_common::spec::TaskId;
use cd_common::verified::DeviceKind;
use cd_proto::status::Refusal;
use cd_proto::v1::coordinator_server::Coordinator;
use cd_proto::v1::*;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

/// The service; cheap to clone.
#[derive(Clone)]
pub(crate) struct CoordinatorService {
    shared: Arc<Shared>,
}

/// How long a new lease waits for its persistence before it is handed out
/// anyway (a restart in that window re-runs the cell; nothing is lost).
const PERSIST_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl CoordinatorService {
    /// Serve the given state.
    pub fn new(shared: Arc<Shared>) -> CoordinatorService {
        CoordinatorService { shared }
    }
}

/// The one mapping from state errors to gRPC codes.
fn status_of(e: StateError) -> Status {
    match e {
        // The worker re-registers on this code (the coordinator may have restarted).
        StateError::UnknownWorker(_) => Refusal::UnknownWorker.status(e.to_string()),
        StateError::UnknownTask(_) => Refusal::UnknownTask.status(e.to_string()),
        // Not the worker's credentials: its lease lapsed and went to another
        // worker. The worker drops it and carries on.
        StateError::NotYourLease { .. } => Refusal::LeaseNotHeld.status(e.to_string()),
    }
}

fn deadline_ms(deadline: Instant) -> u64 {
    unix_ms()
        + deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let r = req.into_inner();
        if r.worker_id.is_empty() || r.worker_id.len() > 200 {
            return Err(Refusal::BadRequest.status("worker_id must be 1 to 200 bytes"));
        }
        if r.devices.len() > 64 {
            return Err(Refusal::BadRequest.status("at most 64 devices per worker"));
        }
        let devices: Vec<(String, DeviceKind, u64)> = r
            .devices
            .iter()
            .map(|d| {
                let kind = match d.kind_or_named() {
                    device::Kind::Cuda => DeviceKind::Cuda,
                    device::Kind::Cpu | device::Kind::Unspecified => DeviceKind::Cpu,
                };
                (d.name.clone(), kind, d.memory_bytes)
            })
            .collect();
        let info = WorkerInfo::from_devices(r.host.clone(), &devices);
        tracing::info!(worker = %shown(&r.worker_id), host = %shown(&r.host), devices = devices.len(), version = %shown(&r.version), "worker registered");
        self.shared.sched.lock().expect("scheduler lock").register(
            &r.worker_id,
            info,
            Instant::now(),
        );
        Ok(Response::new(RegisterResponse {
            sweep: self.shared.sweep.clone(),
            store_url: self.shared.store_url.clone(),
            heartbeat_interval_ms: self.shared.heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn lease_task(
        &self,
        req: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        let r = req.into_inner();
        let retry = self.shared.retry_after_ms();
        if !self.shared.is_leasing() {
            return Ok(Response::new(LeaseResponse {
                retry_after_ms: retry,
                ..LeaseResponse::default()
            }));
        }
        let started = Instant::now();
        let (answer, done) = {
            let mut s = self.shared.sched.lock().expect("scheduler lock");
            let answer = s
                .lease(&r.worker_id, &r.loaded_model, Instant::now())
                .map_err(status_of)?;
            (answer, s.done())
        };
        self.shared
            .metrics
            .lease_seconds
            .observe(started.elapsed().as_secs_f64());
        if answer.granted.as_ref().is_some_and(|g| g.fresh) {
            self.shared.metrics.leases_granted.inc();
            // Persist the lease before the worker hears of it: a coordinator
            // killed a moment later restarts knowing it, and the worker's
            // heartbeats and completion find it (nothing is recomputed).
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.shared.notify(Event::PersistLeases(tx));
            if tokio::time::timeout(PERSIST_LEASE_WAIT, rx).await.is_err() {
                tracing::warn!("persisting a new lease is slow: handing it out unpersisted");
            }
        }
        let lease = answer.granted.map(|g| {
            tracing::debug!(worker = %shown(&r.worker_id), task = %g.task_id, attempt = g.attempt, "task leased");
            Lease {
                lease_id: g.lease_id,
                task_id: g.task_id.0,
                spec_json: g.spec_json.to_string(),
                deadline_unix_ms: deadline_ms(g.deadline),
                attempt: g.attempt,
            }
        });
        let (quarantined, quarantined_for_ms) = answer
            .quarantined
            .map_or((String::new(), 0), |(why, left)| {
                (why, left.as_millis() as u64)
            });
        Ok(Response::new(LeaseResponse {
            lease,
            sweep_done: done,
            retry_after_ms: retry,
            nothing_for_worker: answer.nothing_for_worker,
            quarantined,
            quarantined_for_ms,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let deadline = self.shared.sched.lock().expect("scheduler lock").heartbeat(
            Heartbeat {
                worker_id: &r.worker_id,
                lease: &r.lease_id,
                phase: TaskPhase::from_wire(r.phase),
                done: r.examples_done,
                total: r.examples_total,
                tokens: r.tokens_done,
            },
            Instant::now(),
        );
        Ok(Response::new(match deadline {
            Some(d) => HeartbeatResponse {
                ok: true,
                deadline_unix_ms: deadline_ms(d),
            },
            None => HeartbeatResponse {
                ok: false,
                deadline_unix_ms: 0,
            },
        }))
    }

    async fn complete_task(
        &self,
        req: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        let r = req.into_inner();
        let task_id = TaskId(r.task_id);
        {
            // Authorised by the lease before anything else is looked at; a
            // duplicate of a completed task is acknowledged without the store.
            let s = self.shared.sched.lock().expect("scheduler lock");
            if s.is_completed(&task_id).map_err(status_of)? {
                return Ok(Response::new(CompleteResponse { accepted: false }));
            }
            s.authorises(&r.worker_id, &r.lease_id, &task_id)
                .map_err(status_of)?;
        }
        if let Some(store) = &self.shared.verify_store {
            match store.read_valid_metrics(&self.shared.sweep, &task_id).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(Refusal::ResultMissing.status(format!(
                        "task {task_id}: no valid metrics.json in the store ({}); write it before completing",
                        self.shared.store_url_shown
                    )))
                }
                Err(e) => {
                    self.shared.metrics.store_errors.inc();
                    return Err(Refusal::Unavailable.status(format!("checking task {task_id}: {e}")));
                }
            }
        }
        let outcome = self
            .shared
            .sched
            .lock()
            .expect("scheduler lock")
            .complete(&r.worker_id, &r.lease_id, &task_id)
            .map_err(status_of)?;
        let accepted = outcome == CompleteOutcome::Accepted;
        if accepted {
            tracing::info!(worker = %shown(&r.worker_id), task = %task_id, elapsed_ms = r.elapsed_ms, "task completed");
            self.shared.metrics.completions.inc();
            self.shared.notify(Event::Completed);
            self.shared.notify(Event::LeasesChanged);
        }
        Ok(Response::new(CompleteResponse { accepted }))
    }

    async fn fail_task(&self, req: Request<FailRequest>) -> Result<Response<FailResponse>, Status> {
        let r = req.into_inner();
        let fault = match cd_proto::v1::Fault::try_from(r.fault) {
            Ok(cd_proto::v1::Fault::Worker) => Fault::Worker,
            _ => Fault::Task {
                permanent: r.permanent,
            },
        };
        let error = shown(&r.error);
        let (task_id, outcome, history) = {
            let mut s = self.shared.sched.lock().expect("scheduler lock");
            let (task_id, outcome) = s.fail(
                &r.worker_id,
                &r.lease_id,
                &error,
                fault,
                Instant::now(),
                unix_ms(),
            );
            // The history is the lease's task's, whatever id the request names.
            let history = task_id.as_ref().map(|id| s.failures(id));
            (task_id, outcome, history)
        };
        let worker = shown(&r.worker_id);
        let requeued = match &outcome {
            FailOutcome::Requeued(f) => {
                tracing::warn!(%worker, task = ?task_id, attempt = f.attempt, %error, "task failed, re-queued");
                self.shared
                    .metrics
                    .failures
                    .with_label_values(&["task"])
                    .inc();
                true
            }
            FailOutcome::Failed(f) => {
                tracing::error!(%worker, task = ?task_id, attempt = f.attempt, permanent = f.permanent, %error, "task failed for good");
                self.shared
                    .metrics
                    .failures
                    .with_label_values(&["task"])
                    .inc();
                false
            }
            FailOutcome::WorkerFault(_, quarantine) => {
                self.shared
                    .metrics
                    .failures
                    .with_label_values(&["worker"])
                    .inc();
                match quarantine {
                    Some(length) => {
                        tracing::error!(%worker, task = ?task_id, %error, quarantine_secs = length.as_secs(), "worker fault: the worker is quarantined")
                    }
                    None => {
                        tracing::warn!(%worker, task = ?task_id, %error, "worker fault: task re-queued uncharged")
                    }
                }
                true
            }
            FailOutcome::Stale => {
                tracing::info!(%worker, lease = %shown(&r.lease_id), "late failure report ignored");
                return Ok(Response::new(FailResponse { requeued: false }));
            }
        };
        if let (Some(id), Some(history)) = (task_id, history) {
            self.shared.notify(Event::Failure(id, history));
        }
        self.shared.notify(Event::LeasesChanged);
        Ok(Response::new(FailResponse { requeued }))
    }

    async fn release_task(
        &self,
        req: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let r = req.into_inner();
        let released = self
            .shared
            .sched
            .lock()
            .expect("scheduler lock")
            .release(&r.worker_id, &r.lease_id);
        tracing::info!(worker = %shown(&r.worker_id), lease = %shown(&r.lease_id), released, "lease released");
        self.shared.notify(Event::LeasesChanged);
        Ok(Response::new(ReleaseResponse {}))
    }

    async fn sweep_status(
        &self,
        _req: Request<SweepStatusRequest>,
    ) -> Result<Response<SweepStatusResponse>, Status> {
        let s = self.shared.sched.lock().expect("scheduler lock");
        let c = s.counts();
        Ok(Response::new(SweepStatusResponse {
            sweep: self.shared.sweep.clone(),
            total: c.total,
            pending: c.pending,
            leased: c.leased,
            completed: c.completed,
            failed: c.failed,
            workers: s.worker_count() as u32,
        }))
    }
}

/// Checks `authorization: Bearer <token>` on every call.
#[derive(Clone)]
pub(crate) struct TokenCheck {
    expected: Arc<[u8]>,
}

impl TokenCheck {
    /// Accept only this token.
    pub fn new(token: &str) -> TokenCheck {
        TokenCheck {
            expected: Arc::from(format!("Bearer {token}").into_bytes()),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // Constant time in the token's length, so timing does not reveal a prefix.
        let same = given.len() == self.expected.len()
            && given
                .iter()
                .zip(self.expected.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(req)
        } else {
            Err(Refusal::BadToken.status("missing or wrong bearer token"))
        }
    }
}
