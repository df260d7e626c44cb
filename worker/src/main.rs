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
    /// List datasets or show the exact model inputs of one.
    #[command(subcommand)]
    Datasets(cd_worker::cli_datasets::DatasetsCommand),
    /// Run one task from a spec file without a coordinator, writing to a store.
    Cell(cd_worker::agent::cell::CellArgs),
    /// Benchmark or check a device on random weights of a named shape (docs/gpu.md).
    #[command(hide = true)]
    BenchRandom(cd_worker::bench_random::BenchRandomArgs),
}

fn main() -> Result<()> {
    cd_worker::logging::init();
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Extract(args)) => cd_worker::cli_extract::run(args)?,
        Some(Command::Datasets(cmd)) => cd_worker::cli_datasets::run(cmd)?,
        Some(Command::Cell(args)) => cd_worker::agent::cell::run(args)?,
        Some(Command::BenchRandom(args)) => cd_worker::bench_random::run(args)?,
        None => cd_worker::agent::run(cli.agent)?,
    };
    std::process::exit(code)
}
