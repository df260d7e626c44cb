//! `cd-worker cell`: run one task from a spec file, without a coordinator.
//!
//! The same pipeline the agent runs, writing to the same storage layout, so a
//! cell can be debugged (or a sweep's single failed cell redone) by hand.

use super::identity;
use crate::pipeline::{Pipeline, PipelineOptions, Progress, TaskContext};
use anyhow::Context;
use cd_common::spec::TaskSpec;
use cd_common::storage::Store;
use clap::Args;
use std::path::PathBuf;

/// Flags of `cd-worker cell`.
#[derive(Debug, Clone, Args)]
pub struct CellArgs {
    /// A task spec as JSON (a `spec.json` from storage, or written by hand).
    #[arg(long)]
    pub spec: PathBuf,
    /// Storage URL results go to (`file://DIR`, `s3://BUCKET/PREFIX?...`).
    #[arg(long, default_value = "file://runs")]
    pub store: String,
    /// Devices: `cpu`, `all`, or CUDA ordinals such as `0,1`.
    #[arg(long, default_value = "cpu")]
    pub gpus: String,
    /// Cache directory for Hugging Face Hub downloads.
    #[arg(long, env = "CD_MODEL_CACHE")]
    pub model_cache: Option<PathBuf>,
    /// Directory for local copies of remote data roots (as the agent's flag).
    #[arg(long, env = "CD_DATA_CACHE")]
    pub data_cache: Option<PathBuf>,
    /// This node's data root (a directory, object-store URL or Hub dataset),
    /// used instead of the grid's `data_root`. The files must be the ones the
    /// grid was made from: tasks name their data by content.
    #[arg(long, env = "CD_DATA_ROOT")]
    pub data_root: Option<String>,
    /// Never touch the network for models.
    #[arg(long)]
    pub offline: bool,
}

/// Run the cell; prints the key of its `metrics.json`. Returns the exit code.
pub fn run(args: CellArgs) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading {}", args.spec.display()))?;
    let spec = TaskSpec::from_json(&text)
        .with_context(|| format!("{}: not a usable task spec", args.spec.display()))?;
    let devices = identity::open_devices(&args.gpus)?;
    let store = Store::open(&args.store)?;
    let mut opts = PipelineOptions::new(devices);
    opts.offline = args.offline;
    opts.model_cache = args.model_cache;
    opts.data_cache = args.data_cache;
    opts.data_root = args.data_root;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let progress = Progress::default();
    let attempt = format!("cell-{}", std::process::id());
    let ctx = TaskContext {
        store: &store,
        runtime: runtime.handle(),
        progress: &progress,
        attempt: &attempt,
    };
    let outcome = Pipeline::new(opts)
        .execute(&spec, &ctx)
        .with_context(|| format!("task {}", spec.id()))?;
    if outcome.already_complete {
        tracing::info!(task = %spec.id(), "already complete: nothing recomputed");
    }
    println!("{}", outcome.metrics_key);
    Ok(0)
}
