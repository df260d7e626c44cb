//! The task-pulling agent: register, lease, execute, upload, complete.
//!
//! See `docs/agent.md` for the lifecycle, retries, exit codes and shutdown.

mod args;

pub use args::AgentArgs;

/// Join the sweep and work until it is done. Returns the process exit code.
pub fn run(_args: AgentArgs) -> anyhow::Result<i32> {
    anyhow::bail!("the agent is not built yet")
}
