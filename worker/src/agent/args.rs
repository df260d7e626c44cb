//! Command-line flags of `cd-worker` when it joins a sweep.
//!
//! Deployment manifests are written against these names: keep them stable.

use clap::Args;
use std::path::PathBuf;

/// Flags of `cd-worker` when it joins a sweep (no subcommand).
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Coordinator gRPC endpoint (`http://HOST:PORT`, or `https://` with TLS).
    #[arg(long, env = "CD_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,
    /// Devices: `cpu`, `all` (every visible CUDA device), or CUDA ordinals such as `0,1`.
    #[arg(long, env = "CD_GPUS", default_value = "cpu")]
    pub gpus: String,
    /// File holding the shared bearer token. Without it the token is read from
    /// the `CD_TOKEN` environment variable (never from a flag, so it stays out of `ps`).
    #[arg(long, env = "CD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Worker identity, unique in the sweep. Default: `<hostname>-<pid>`.
    #[arg(long, env = "CD_WORKER_ID")]
    pub worker_id: Option<String>,
    /// PEM file of the CA that signed the coordinator's certificate (enables TLS
    /// verification against it; `https://` without it uses the system roots).
    #[arg(long, env = "CD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Server name to verify in the coordinator's certificate, when it differs
    /// from the host in `--coordinator`.
    #[arg(long, env = "CD_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// Cache directory for Hugging Face Hub downloads (default: `HF_HOME` rules).
    #[arg(long, env = "CD_MODEL_CACHE")]
    pub model_cache: Option<PathBuf>,
    /// Directory for local copies of remote data roots (object-store URLs,
    /// Hub datasets). Default: `XDG_CACHE_HOME` or `~/.cache`, then
    /// `concept-depth/data`.
    #[arg(long, env = "CD_DATA_CACHE")]
    pub data_cache: Option<PathBuf>,
    /// This node's data root (a directory, object-store URL or Hub dataset),
    /// used instead of the grid's `data_root`. The files must be the ones the
    /// grid was made from: tasks name their data by content.
    #[arg(long, env = "CD_DATA_ROOT")]
    pub data_root: Option<String>,
    /// Never touch the network for models: Hub models must already be cached.
    #[arg(long, env = "CD_OFFLINE")]
    pub offline: bool,
    /// Exit (code 0) after completing this many tasks.
    #[arg(long, env = "CD_MAX_TASKS")]
    pub max_tasks: Option<u64>,
    /// Exit (code 0) as soon as the coordinator says the sweep is done, instead
    /// of waiting for a new sweep.
    #[arg(long, env = "CD_IDLE_EXIT")]
    pub idle_exit: bool,
    /// On SIGTERM/SIGINT, keep working on the current task for at most this many
    /// seconds; if it is not done by then, hand its lease back and exit.
    #[arg(long, env = "CD_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Give up (exit code 4) after the coordinator has been unreachable this
    /// long. Default: retry forever.
    #[arg(long, env = "CD_GIVE_UP_AFTER_SECS")]
    pub give_up_after_secs: Option<u64>,
}
