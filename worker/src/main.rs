//! `cd-worker`: the concept-depth worker binary.
//!
//! Without a subcommand it joins a sweep: registers with the coordinator and
//! pulls tasks until the sweep is done. Subcommands run single jobs locally.

use anyhow::Result;
use clap::{Parser, Subcommand};

/// concept-depth worker.
#[derive(Debug, Parser)]
#[command(
    name = "cd-worker",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    agent: cd_worker::agent::AgentArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Extract per-layer features from a model for a JSONL file of texts.
    Extract(cd_worker::cli_extract::ExtractArgs),
    /// Fit per-layer probes on a features file from `extract`; write metrics.json.
    Probe(cd_worker::cli_probe::ProbeArgs),
    /// List datasets or show the exact model inputs of one.
    #[command(subcommand)]
    Datasets(cd_worker::cli_datasets::DatasetsCommand),
    /// Run one task from a spec file without a coordinator, writing to a store.
    Cell(cd_worker::agent::cell::CellArgs),
}

/// Keep freed memory in the process for reuse (glibc).
///
/// A forward pass allocates and frees the same activation-sized buffers
/// hundreds of times per batch. With glibc's defaults, buffers of a few MiB
/// are mapped and unmapped (or the heap top trimmed) each time, and every
/// reuse pays page faults and the kernel's zeroing of fresh pages; with these
/// settings they are recycled from the heap. Peak memory is unchanged: only
/// memory already used is kept.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only adjusts allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> Result<()> {
    keep_freed_memory();
    cd_worker::logging::init();
    let cli = Cli::parse();
    // A `CD_CPU_ISA` this CPU cannot honour stops every command before any
    // work: a run labelled with an instruction set must have used it.
    match cd_worker::engine::cpu::isa::check_env() {
        Ok(isa) => tracing::debug!("CPU kernels: {isa}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(cd_proto::exit::worker::CONFIG)
        }
    }
    // So does a blocking variable that is not a valid value.
    if let Err(e) = cd_worker::engine::cpu::blocking::check_env() {
        eprintln!("error: {e}");
        std::process::exit(cd_proto::exit::worker::CONFIG)
    }
    let code = match cli.command {
        Some(Command::Extract(args)) => cd_worker::cli_extract::run(args)?,
        Some(Command::Probe(args)) => cd_worker::cli_probe::run(args)?,
        Some(Command::Datasets(cmd)) => match cd_worker::cli_datasets::run(cmd) {
            Ok(code) => code,
            // A dataset file that cannot be read as its manifest says is an
            // input error (exit 2), reported with its file, row and field.
            Err(e)
                if e.downcast_ref::<cd_common::datasets::DatasetError>()
                    .is_some() =>
            {
                eprintln!("error: {e:#}");
                2
            }
            Err(e) => return Err(e),
        },
        Some(Command::Cell(args)) => cd_worker::agent::cell::run(args)?,
        None => cd_worker::agent::run(cli.agent)?,
    };
    std::process::exit(code)
}
