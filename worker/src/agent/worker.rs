//! The agent's main loop: register, lease, execute, report.
//!
//! Why this file is long: the agent's main loop (register, lease, run,
//! complete, fail, release) is one state machine whose retries and shutdown
//! paths must be read together.

use super::client::{self, Client};
use super::executor::{Done, Executor};
use super::heartbeat::{self, LeaseState};
use super::identity;
use super::shutdown::Shutdown;
use super::{AgentArgs, AgentError};
use crate::backoff::Backoff;
use crate::pipeline::{Pipeline, PipelineError, PipelineOptions, Progress};
use cd_common::spec::TaskSpec;
use cd_common::storage::Store;
use cd_proto::exit::worker as exit;
use cd_proto::status::Reaction;
use cd_proto::v1::{
    CompleteRequest, FailRequest, Fault as WireFault, Lease, LeaseRequest, RegisterRequest,
    ReleaseRequest,
};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whose fault a failed task is (see the protocol's `Fault`).
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The task's own.
    Task {
        /// No retry can fix it.
        permanent: bool,
    },
    /// This worker's.
    Worker,
}

/// A lease id as a storage path segment for the attempt's objects.
fn attempt_tag(lease_id: &str) -> String {
    lease_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The longest the agent waits between two lease requests when idle.
const MAX_IDLE_WAIT: Duration = Duration::from_secs(30);

/// How often a quarantined agent asks again: often enough that an operator's
/// re-admission takes effect, and an `--idle-exit` agent leaves, within
/// seconds (a lease request is one cheap RPC), not at the end of a long wait.
const QUARANTINE_POLL: Duration = Duration::from_secs(5);

/// A call that did not succeed and is not worth retrying.
enum CallError {
    /// The coordinator does not know the worker or the lease.
    Unknown(tonic::Status),
    /// Any other non-transient refusal.
    Other(tonic::Status),
    /// Fatal: stop the agent.
    Fatal(AgentError),
}

struct Agent {
    args: AgentArgs,
    client: Client,
    worker_id: String,
    host: String,
    devices: Vec<cd_proto::v1::Device>,
    heartbeat_every: Duration,
    store: Option<Store>,
    shutdown: Shutdown,
    executor: Executor,
    loaded_model: Option<String>,
    completed: u64,
    /// The last lease answer said the sweep is done.
    sweep_done: bool,
}

/// Run the agent until the sweep is done, `--max-tasks` are completed, or a
/// shutdown is requested.
pub async fn run(args: AgentArgs) -> Result<i32, AgentError> {
    let shutdown = Shutdown::listen()
        .map_err(|e| AgentError::Config(format!("installing signal handlers: {e}")))?;
    let host = identity::hostname();
    let worker_id = identity::worker_id(&args, &host);
    let token = identity::token(&args)?;
    let devices = identity::open_devices(&args.gpus)?;
    let client = client::connect(
        &args.coordinator,
        token.as_deref(),
        args.tls_ca.as_deref(),
        args.tls_domain.as_deref(),
    )?;
    let mut opts = PipelineOptions::new(devices.clone());
    opts.offline = args.offline;
    opts.model_cache = args.model_cache.clone();
    opts.data_cache = args.data_cache.clone();
    opts.data_root = args.data_root.clone();
    let executor = Executor::spawn(Pipeline::new(opts), tokio::runtime::Handle::current())
        .map_err(|e| AgentError::Config(format!("starting the executor thread: {e}")))?;
    tracing::info!(
        worker = %worker_id,
        coordinator = %args.coordinator,
        devices = ?devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        "worker starting"
    );
    let mut agent = Agent {
        devices: identity::advertised(&devices),
        args,
        client,
        worker_id,
        host,
        heartbeat_every: Duration::from_secs(10),
        store: None,
        shutdown,
        executor,
        loaded_model: None,
        completed: 0,
        sweep_done: false,
    };
    agent.work().await
}

impl Agent {
    /// Call the coordinator, retrying transient failures with backoff until
    /// it answers, `--give-up-after-secs` passes, or (when `stop_on_shutdown`)
    /// a shutdown is requested, which yields `Ok(None)`.
    async fn call<T, F, Fut>(
        &self,
        what: &'static str,
        stop_on_shutdown: bool,
        mut f: F,
    ) -> Result<Option<T>, CallError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = Backoff::default_rpc();
        let mut down_since: Option<Instant> = None;
        loop {
            if stop_on_shutdown && self.shutdown.requested() {
                return Ok(None);
            }
            let status = match f(self.client.clone()).await {
                Ok(resp) => {
                    if let Some(since) = down_since {
                        tracing::info!(
                            call = what,
                            down_secs = since.elapsed().as_secs(),
                            "coordinator reachable again"
                        );
                    }
                    return Ok(Some(resp.into_inner()));
                }
                Err(status) => status,
            };
            match Reaction::to(&status) {
                Reaction::Stop => {
                    return Err(CallError::Fatal(AgentError::Auth(
                        status.message().to_string(),
                    )))
                }
                Reaction::Forget => return Err(CallError::Unknown(status)),
                Reaction::Fail => return Err(CallError::Other(status)),
                Reaction::Retry => {}
            }
            let since = *down_since.get_or_insert_with(Instant::now);
            if let Some(limit) = self.args.give_up_after_secs {
                if since.elapsed() >= Duration::from_secs(limit) {
                    return Err(CallError::Fatal(AgentError::Unreachable {
                        url: self.args.coordinator.clone(),
                        secs: since.elapsed().as_secs(),
                        last: status.message().to_string(),
                    }));
                }
            }
            let delay = backoff.next_delay();
            tracing::warn!(call = what, code = ?status.code(), error = %status.message(), retry_in_ms = delay.as_millis() as u64, "coordinator call failed");
            if stop_on_shutdown {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.shutdown.wait() => return Ok(None),
                }
            } else {
                tokio::time::sleep(delay).await;
            }
        }
    }

    async fn register(&mut self) -> Result<bool, AgentError> {
        let req = RegisterRequest {
            worker_id: self.worker_id.clone(),
            host: self.host.clone(),
            devices: self.devices.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let resp = match self
            .call("register", true, |mut c| {
                let req = req.clone();
                async move { c.register(req).await }
            })
            .await
        {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(false),
            Err(CallError::Fatal(e)) => return Err(e),
            Err(CallError::Unknown(s) | CallError::Other(s)) => {
                // A plaintext client talking to a TLS port (or the reverse)
                // sees an HTTP/2 protocol error: this worker's setting.
                if self.args.coordinator.starts_with("http://")
                    && s.message().contains("h2 protocol error")
                {
                    return Err(AgentError::Config(format!(
                        "the coordinator at {} does not speak plaintext gRPC ({}); if it serves TLS, use an https:// address and --tls-ca",
                        self.args.coordinator,
                        s.message()
                    )));
                }
                return Err(AgentError::Protocol(format!(
                    "register refused: {}: {}",
                    s.code(),
                    s.message()
                )));
            }
        };
        if resp.heartbeat_interval_ms > 0 {
            self.heartbeat_every = Duration::from_millis(resp.heartbeat_interval_ms);
        }
        let store = Store::open(&resp.store_url).map_err(|e| {
            AgentError::Config(format!("storage announced by the coordinator: {e}"))
        })?;
        tracing::info!(sweep = %resp.sweep, store = %cd_common::storage::redacted_url(&resp.store_url), heartbeat_ms = self.heartbeat_every.as_millis() as u64, "registered");
        self.store = Some(store);
        Ok(true)
    }

    /// The exit code after a shutdown request: the work is over only if the
    /// coordinator said the sweep is done; otherwise the worker was taken
    /// away mid-sweep and must not look finished to whoever runs it.
    fn stopped_code(&self) -> i32 {
        if self.sweep_done {
            exit::OK
        } else {
            exit::SIGNALLED
        }
    }

    async fn work(&mut self) -> Result<i32, AgentError> {
        if !self.register().await? {
            return Ok(self.stopped_code());
        }
        loop {
            if self.shutdown.requested() {
                tracing::info!(completed = self.completed, "shut down");
                return Ok(self.stopped_code());
            }
            if self.args.max_tasks.is_some_and(|m| self.completed >= m) {
                tracing::info!(completed = self.completed, "--max-tasks reached");
                return Ok(exit::OK);
            }
            let req = LeaseRequest {
                worker_id: self.worker_id.clone(),
                loaded_model: self.loaded_model.clone().unwrap_or_default(),
            };
            let resp = match self
                .call("lease", true, |mut c| {
                    let req = req.clone();
                    async move { c.lease_task(req).await }
                })
                .await
            {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(CallError::Fatal(e)) => return Err(e),
                Err(CallError::Unknown(s)) => {
                    tracing::warn!(error = %s.message(), "the coordinator does not know this worker: registering again");
                    // A shutdown during registration is seen at the top of the loop.
                    self.register().await?;
                    continue;
                }
                Err(CallError::Other(s)) => {
                    return Err(AgentError::Protocol(format!(
                        "lease refused: {}: {}",
                        s.code(),
                        s.message()
                    )))
                }
            };
            self.sweep_done = resp.lease.is_none() && resp.sweep_done;
            match resp.lease {
                Some(lease) => {
                    if self.run_lease(lease).await? {
                        tracing::info!(
                            completed = self.completed,
                            "shut down after handing the lease back"
                        );
                        return Ok(self.stopped_code());
                    }
                }
                None if resp.sweep_done && self.args.idle_exit => {
                    tracing::info!(completed = self.completed, "sweep done: exiting");
                    return Ok(exit::OK);
                }
                None if resp.nothing_for_worker && self.args.idle_exit => {
                    tracing::info!(
                        completed = self.completed,
                        "nothing left that this worker can run (device kind, verified precision or memory): exiting"
                    );
                    return Ok(exit::OK);
                }
                None if !resp.quarantined.is_empty() => {
                    // Quarantined after repeated worker faults: ask again
                    // soon (an operator may re-admit the worker, or the sweep
                    // may end), never later than the quarantine's end.
                    let wait = Duration::from_millis(resp.quarantined_for_ms.max(1000))
                        .min(QUARANTINE_POLL);
                    tracing::warn!(
                        why = %resp.quarantined,
                        left_secs = resp.quarantined_for_ms / 1000,
                        "quarantined by the coordinator: no tasks for now"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shutdown.wait() => {}
                    }
                }
                None => {
                    let wait =
                        Duration::from_millis(resp.retry_after_ms.max(200)).min(MAX_IDLE_WAIT);
                    tracing::debug!(
                        wait_ms = wait.as_millis() as u64,
                        sweep_done = resp.sweep_done,
                        "no task now"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shutdown.wait() => {}
                    }
                }
            }
        }
    }

    /// Execute one leased task. Returns true when the worker must exit now
    /// (shutdown with the lease handed back).
    async fn run_lease(&mut self, lease: Lease) -> Result<bool, AgentError> {
        // Version skew between coordinator and worker shows here as a schema
        // error; it is reported, never guessed around.
        let spec: TaskSpec = match TaskSpec::from_json(&lease.spec_json) {
            Ok(s) => s,
            Err(e) => {
                // This worker's version cannot read it; another may.
                self.fail(
                    &lease,
                    format!("the leased spec does not parse: {e}"),
                    Fault::Worker,
                )
                .await?;
                return Ok(false);
            }
        };
        if spec.id().0 != lease.task_id {
            let msg = format!(
                "the leased spec hashes to {} but the task id is {}",
                spec.id(),
                lease.task_id
            );
            self.fail(&lease, msg, Fault::Worker).await?;
            return Ok(false);
        }
        let store = self.store.clone().expect("registered before leasing");
        tracing::info!(task = %lease.task_id, attempt = lease.attempt, model = %spec.model.name, dataset = %spec.dataset.name, precision = %spec.precision, noise = %spec.noise, "task leased");
        let started = Instant::now();
        let progress = Arc::new(Progress::default());
        let state = Arc::new(LeaseState::default());
        let hb = tokio::spawn(heartbeat::run(
            self.client.clone(),
            self.worker_id.clone(),
            lease.lease_id.clone(),
            self.heartbeat_every,
            progress.clone(),
            state.clone(),
        ));
        let mut reply =
            self.executor
                .submit(spec, store, progress.clone(), attempt_tag(&lease.lease_id));
        let done = tokio::select! {
            done = &mut reply => done,
            _ = self.shutdown.wait() => {
                let grace = Duration::from_secs(self.args.shutdown_grace_secs);
                tracing::info!(task = %lease.task_id, grace_secs = grace.as_secs(), "shutdown: finishing the current task within the grace period");
                match tokio::time::timeout(grace, &mut reply).await {
                    Ok(done) => done,
                    Err(_) => {
                        progress.cancel();
                        hb.abort();
                        self.release(&lease).await;
                        return Ok(true);
                    }
                }
            }
        };
        hb.abort();
        let Done {
            result,
            loaded_model,
        } = done.map_err(|_| AgentError::Protocol("the executor thread died".into()))?;
        self.loaded_model = loaded_model;
        if state.auth_refused.load(Ordering::SeqCst) {
            return Err(AgentError::Auth("heartbeat refused".into()));
        }
        match result {
            Ok(outcome) => {
                self.complete(&lease, &outcome.metrics_key, started.elapsed())
                    .await?;
                self.completed += 1;
            }
            Err(_) if state.lost.load(Ordering::SeqCst) => {
                tracing::warn!(task = %lease.task_id, "task abandoned: its lease is gone, nothing was uploaded after that");
            }
            Err(PipelineError::Cancelled) => {
                // Only the heartbeat loop and shutdown cancel; shutdown is handled above.
                tracing::warn!(task = %lease.task_id, "task cancelled");
            }
            Err(e) => {
                let fault = if e.is_worker_fault() {
                    Fault::Worker
                } else {
                    Fault::Task {
                        permanent: e.is_permanent(),
                    }
                };
                tracing::error!(task = %lease.task_id, error = %e, ?fault, "task failed");
                self.fail(&lease, e.to_string(), fault).await?;
            }
        }
        Ok(false)
    }

    async fn complete(
        &self,
        lease: &Lease,
        metrics_key: &str,
        elapsed: Duration,
    ) -> Result<(), AgentError> {
        let req = CompleteRequest {
            worker_id: self.worker_id.clone(),
            lease_id: lease.lease_id.clone(),
            task_id: lease.task_id.clone(),
            metrics_key: metrics_key.to_string(),
            elapsed_ms: elapsed.as_millis() as u64,
        };
        // The result is already in storage: keep trying through a shutdown
        // too, bounded by the grace period.
        let call = self.call("complete", false, |mut c| {
            let req = req.clone();
            async move { c.complete_task(req).await }
        });
        let result = if self.shutdown.requested() {
            match tokio::time::timeout(Duration::from_secs(self.args.shutdown_grace_secs), call)
                .await
            {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(task = %lease.task_id, "shutdown: completion not acknowledged in time; the stored result stays and is found on resume");
                    return Ok(());
                }
            }
        } else {
            call.await
        };
        match result {
            Ok(Some(resp)) => {
                tracing::info!(task = %lease.task_id, accepted = resp.accepted, "task completed");
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(CallError::Fatal(e)) => Err(e),
            Err(CallError::Unknown(s) | CallError::Other(s)) => {
                // A late completion of a lease the coordinator forgot: the
                // result is in storage, which is what counts.
                tracing::warn!(task = %lease.task_id, code = ?s.code(), error = %s.message(), "completion not recorded; the stored result stays");
                Ok(())
            }
        }
    }

    async fn fail(&self, lease: &Lease, error: String, fault: Fault) -> Result<(), AgentError> {
        let (permanent, wire) = match fault {
            Fault::Task { permanent } => (permanent, WireFault::Task),
            Fault::Worker => (false, WireFault::Worker),
        };
        let req = FailRequest {
            worker_id: self.worker_id.clone(),
            lease_id: lease.lease_id.clone(),
            task_id: lease.task_id.clone(),
            error,
            permanent,
            fault: wire as i32,
        };
        match self
            .call("fail", true, |mut c| {
                let req = req.clone();
                async move { c.fail_task(req).await }
            })
            .await
        {
            Ok(Some(resp)) => {
                tracing::info!(task = %lease.task_id, requeued = resp.requeued, "failure reported");
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(CallError::Fatal(e)) => Err(e),
            Err(CallError::Unknown(s) | CallError::Other(s)) => {
                tracing::warn!(task = %lease.task_id, error = %s.message(), "failure report not recorded");
                Ok(())
            }
        }
    }

    /// Hand a lease back on shutdown: one attempt, briefly, since the lease
    /// expires by itself if the coordinator cannot be reached.
    async fn release(&self, lease: &Lease) {
        let mut client = self.client.clone();
        let req = ReleaseRequest {
            worker_id: self.worker_id.clone(),
            lease_id: lease.lease_id.clone(),
        };
        match tokio::time::timeout(Duration::from_secs(5), client.release_task(req)).await {
            Ok(Ok(_)) => tracing::info!(task = %lease.task_id, "lease handed back"),
            Ok(Err(s)) => {
                tracing::warn!(task = %lease.task_id, error = %s.message(), "releasing the lease failed; it will expire")
            }
            Err(_) => {
                tracing::warn!(task = %lease.task_id, "releasing the lease timed out; it will expire")
            }
        }
    }
}
