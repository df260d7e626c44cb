//! `cd-bench matmul`: the CPU projection kernels one shape at a time.
//!
//! For each `m × n × k` shape (`y[m, n] = x[m, k]·W[n, k]ᵀ`, the form of every
//! projection in a block) it times candle's general matmul and the packed
//! kernel the engine uses for f32 on the CPU, on the same random inputs, and
//! prints GFLOP/s (`2mnk / seconds`) per kernel as Markdown rows, plus the
//! largest difference between the two results. `scripts/bench_matmul.sh`
//! runs PyTorch's `linear` on the same shapes in the same run.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use cd_worker::engine::PackedMatrix;
use clap::Args;
use std::time::{Duration, Instant};

/// Arguments of `cd-bench matmul`.
#[derive(Debug, Args)]
pub struct MatmulArgs {
    /// Shapes as `m,n,k` separated by `;` (default: SmolLM2-135M's
    /// projections at 22, 180 and 700 rows: one short text, a batch of 8, a
    /// batch of 32).
    #[arg(long)]
    pub shapes: Option<String>,
    /// Seconds to spend timing each kernel on each shape.
    #[arg(long, default_value_t = 0.5)]
    pub seconds: f64,
    /// Divide by the process's CPU time instead of wall time (GFLOP per
    /// CPU-second: a kernel's efficiency per core, robust to a busy machine
    /// when run with one thread).
    #[arg(long)]
    pub cpu_time: bool,
}

/// Seconds of CPU time this process has used, all threads together.
fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

const DEFAULT_ROWS: [usize; 3] = [22, 180, 700];
/// SmolLM2-135M: q/o (576 → 576), k/v (576 → 192), gate/up (576 → 1536), down (1536 → 576).
const DEFAULT_NK: [(usize, usize); 4] = [(576, 576), (192, 576), (1536, 576), (576, 1536)];

fn parse_shapes(text: &str) -> Result<Vec<(usize, usize, usize)>> {
    text.split(';')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let v: Vec<usize> = s
                .split(',')
                .map(|x| x.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .with_context(|| format!("--shapes: `{s}` is not three integers m,n,k"))?;
            match v[..] {
                [m, n, k] if m > 0 && n > 0 && k > 0 => Ok((m, n, k)),
                _ => bail!("--shapes: `{s}`: expected three positive integers m,n,k"),
            }
        })
        .collect()
}

/// Run `f` repeatedly for about `budget` of wall time; returns seconds (wall,
/// or CPU with `cpu`) per call.
fn time_per_call(budget: Duration, cpu: bool, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up: page in, fill caches, start the thread pool
    let (start, cpu_start) = (Instant::now(), process_cpu_seconds());
    let mut calls = 0u32;
    while start.elapsed() < budget || calls < 3 {
        f()?;
        calls += 1;
    }
    let spent = if cpu {
        process_cpu_seconds() - cpu_start
    } else {
        start.elapsed().as_secs_f64()
    };
    Ok(spent / calls as f64)
}

/// Run the benchmark and print its table; returns the exit code (0).
pub fn run(args: MatmulArgs) -> Result<i32> {
    if !PackedMatrix::supported() {
        bail!("this CPU lacks AVX2/FMA: the engine uses candle's matmul only, nothing to compare");
    }
    let shapes = match &args.shapes {
        Some(s) => parse_shapes(s)?,
        None => DEFAULT_ROWS
            .iter()
            .flat_map(|&m| DEFAULT_NK.iter().map(move |&(n, k)| (m, n, k)))
            .collect(),
    };
    let budget = Duration::from_secs_f64(args.seconds);
    let dev = Device::Cpu;
    println!("| m | n | k | candle GFLOP/s | packed GFLOP/s | packed / candle | max rel. diff |");
    println!("|---|---|---|---|---|---|---|");
    for (m, n, k) in shapes {
        let x = Tensor::randn(0f32, 1., (m, k), &dev)?;
        let w = Tensor::randn(0f32, 1., (n, k), &dev)?;
        let packed = PackedMatrix::pack(&w.flatten_all()?.to_vec1::<f32>()?, n, k);
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let flops = 2.0 * (m * n * k) as f64;
        let candle = time_per_call(budget, args.cpu_time, || {
            x.matmul(&w.t()?)?;
            Ok(())
        })?;
        let ours = time_per_call(budget, args.cpu_time, || {
            std::hint::black_box(packed.matmul_t(&xv, m));
            Ok(())
        })?;
        let want = x.matmul(&w.t()?)?.flatten_all()?.to_vec1::<f32>()?;
        let got = packed.matmul_t(&xv, m);
        let scale = want.iter().fold(0f32, |s, v| s.max(v.abs()));
        let diff = want
            .iter()
            .zip(&got)
            .fold(0f32, |s, (a, b)| s.max((a - b).abs()));
        println!(
            "| {m} | {n} | {k} | {:.1} | {:.1} | {:.2} | {:.1e} |",
            flops / candle / 1e9,
            flops / ours / 1e9,
            candle / ours,
            diff / scale
        );
    }
    Ok(0)
}
