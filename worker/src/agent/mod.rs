//! The task-pulling agent: register, lease, execute, upload, complete. (Being built.)

use clap::Args;

/// Flags of `cd-worker` when it joins a sweep.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Coordinator gRPC endpoint.
    #[arg(long, env = "CD_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,
    /// Devices: `cpu`, `all`, or CUDA ordinals such as `0,1`.
    #[arg(long, default_value = "cpu")]
    pub gpus: String,
}

/// Join the sweep and work until it is done. Returns the process exit code.
pub fn run(_args: AgentArgs) -> anyhow::Result<i32> {
    anyhow::bail!("the agent is not built yet")
}
