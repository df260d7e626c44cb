//! The task-pulling agent: register, lease, execute, upload, complete.
//!
//! [`run`] registers with the coordinator, then loops: lease a task (naming the
//! model it has loaded, which the coordinator prefers), execute it on the
//! [`executor`] thread that keeps the model loaded, heartbeat the lease while it
//! runs ([`heartbeat`]), and complete or fail it. Every call is retried with
//! backoff and jitter while the coordinator is unreachable ([`backoff`]); a
//! result is only ever reported after `metrics.json` is in storage, and nothing
//! is written for a task whose lease is gone. `docs/agent.md` documents the
//! lifecycle, the retries, the exit codes (`cd_proto::exit::worker`) and shutdown.

mod args;
pub mod cell;
mod client;
mod executor;
mod heartbeat;
mod identity;
mod shutdown;
mod worker;

pub use args::AgentArgs;
use cd_proto::exit::worker as exit;

/// Why the agent stopped before its work was done.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentError {
    /// Bad flags or settings.
    #[error("configuration: {0}")]
    Config(String),
    /// The coordinator refused the credentials.
    #[error("the coordinator refused this worker's credentials: {0}")]
    Auth(String),
    /// The coordinator could not be reached for too long.
    #[error("the coordinator at {url} has been unreachable for {secs} s (last error: {last})")]
    Unreachable {
        /// The coordinator URL.
        url: String,
        /// How long it has been unreachable.
        secs: u64,
        /// The last call's error.
        last: String,
    },
    /// The coordinator answered something the agent cannot act on.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl AgentError {
    /// The process exit code for this error (`cd_proto::exit::worker`).
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            AgentError::Config(_) => exit::CONFIG,
            AgentError::Auth(_) => exit::AUTH,
            AgentError::Unreachable { .. } => exit::UNREACHABLE,
            AgentError::Protocol(_) => exit::ERROR,
        }
    }
}

/// Join the sweep on the caller's runtime and work until it is done;
/// returns the exit code the process would have. Several agents may run in
/// one process (the in-process cluster tests do): each has its own executor
/// thread and client.
pub async fn run_in_process(args: AgentArgs) -> i32 {
    match worker::run(args).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, exit_code = e.exit_code(), "worker stopping");
            e.exit_code()
        }
    }
}

/// Join the sweep and work until it is done. Returns the process exit code.
pub fn run(args: AgentArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("cd-agent")
        .build()?;
    let result = runtime.block_on(worker::run(args));
    // The executor thread may still be inside a task after a shutdown that
    // handed its lease back: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            tracing::error!(error = %e, exit_code = e.exit_code(), "worker stopping");
            Ok(e.exit_code())
        }
    }
}
