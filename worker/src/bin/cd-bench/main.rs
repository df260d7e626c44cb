//! `cd-bench`: benchmarks and device checks of the worker's engine, kept out
//! of `cd-worker` (which carries only what a sweep or a user runs).
//!
//! - `cd-bench random`: extraction throughput, op-by-op timings and a
//!   device-against-CPU check on randomly initialised models of a named
//!   shape (`docs/gpu.md`), for machines without model downloads.
//! - `cd-bench matmul`: the CPU projection kernels shape by shape
//!   (`scripts/bench_matmul.sh` runs PyTorch beside it).

mod matmul;
mod random;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// concept-depth engine benchmarks.
#[derive(Debug, Parser)]
#[command(name = "cd-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark or check a device on random weights of a named shape.
    Random(random::RandomArgs),
    /// Time the CPU projection kernels (candle's matmul and the packed one) per shape.
    Matmul(matmul::MatmulArgs),
}

fn main() -> Result<()> {
    cd_worker::logging::init();
    let cli = Cli::parse();
    // A `CD_CPU_ISA` this CPU cannot honour stops the run: a benchmark
    // labelled with an instruction set must have used it.
    // So does a blocking variable that is not a valid value.
    let isa = cd_worker::engine::cpu::isa::check_env().map_err(|e| e.to_string());
    let blocking = cd_worker::engine::cpu::blocking::check_env().map_err(|e| e.to_string());
    if let Err(e) = isa.and(blocking) {
        eprintln!("error: {e}");
        std::process::exit(cd_proto::exit::worker::CONFIG)
    }
    let code = match cli.command {
        Command::Random(args) => random::run(args)?,
        Command::Matmul(args) => matmul::run(args)?,
    };
    std::process::exit(code)
}
