//! `cd-bench matmul`: the CPU projection kernels one shape at a time.
//!
//! For each `m × n × k` shape (`y[m, n] = x[m, k]·W[n, k]ᵀ`, the form of every
//! projection in a block) it times candle's general matmul and the packed
//! kernel the engine uses for f32 on the CPU, on the same random inputs, and
//! prints GFLOP/s (`2mnk / seconds`) per kernel as Markdown rows, plus the
//! largest difference between the two results. `scripts/bench_matmul.sh`
//! runs PyTorch's `linear` on the same shapes in the same run.
//!
//! With `--blockings`, the packed kernel runs under each blocking given
//! (row block size, k chunks: `cpu::blocking`), round after round in the
//! same process so that drift in the machine's speed reaches all of them,
//! and the table gives each one's median GFLOP/s and its ratio to the
//! first; their results must agree bit for bit.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use cd_worker::engine::cpu::blocking::Blocking;
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
    /// Blockings of the packed kernel to compare, `;`-separated, each
    /// `default` or `row_block_kib=N,k_chunk=N|off` (e.g.
    /// `default;k_chunk=256;row_block_kib=1024`); the first is the baseline.
    #[arg(long)]
    pub blockings: Option<String>,
    /// Rounds over the blockings (each round times every blocking for
    /// `--seconds / --rounds`).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

/// `--blockings`: the blockings in order, or why one is not valid.
fn parse_blockings(text: &str) -> Result<Vec<Blocking>> {
    let blockings = text
        .split(';')
        .filter(|s| !s.trim().is_empty())
        .map(|s| Blocking::parse(s).map_err(|e| anyhow::anyhow!("--blockings: {e}")))
        .collect::<Result<Vec<_>>>()?;
    if blockings.is_empty() {
        bail!("--blockings: expected at least one blocking, e.g. `default;k_chunk=256`");
    }
    Ok(blockings)
}

/// How a blocking is named in the table's header.
fn blocking_name(b: &Blocking) -> String {
    match b.label() {
        label if label.is_empty() => "default".to_string(),
        label => label,
    }
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
    if let Some(spec) = &args.blockings {
        return compare_blockings(&shapes, &parse_blockings(spec)?, &args);
    }
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

/// `--blockings`: the packed kernel under each blocking, interleaved over
/// `args.rounds` rounds; prints the median GFLOP/s of each and the ratios
/// to the first. Fails if two blockings give different bits.
fn compare_blockings(
    shapes: &[(usize, usize, usize)],
    blockings: &[Blocking],
    args: &MatmulArgs,
) -> Result<i32> {
    let rounds = args.rounds.max(1);
    let slice = Duration::from_secs_f64(args.seconds / rounds as f64);
    let names: Vec<String> = blockings.iter().map(blocking_name).collect();
    let mut header = vec!["m".to_string(), "n".into(), "k".into()];
    header.extend(names.iter().map(|n| format!("{n} GFLOP/s")));
    header.extend(names[1..].iter().map(|n| format!("{n} / {}", names[0])));
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    let dev = Device::Cpu;
    for &(m, n, k) in shapes {
        let x = Tensor::randn(0f32, 1., (m, k), &dev)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let w = Tensor::randn(0f32, 1., (n, k), &dev)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let packed = PackedMatrix::pack(&w, n, k);
        let bits = |b: Blocking| -> Vec<u32> {
            let y = packed.matmul_t_blocked(b, &x, m);
            y.iter().map(|v| v.to_bits()).collect()
        };
        let first = bits(blockings[0]);
        for (b, name) in blockings.iter().zip(&names).skip(1) {
            if bits(*b) != first {
                bail!(
                    "[{m}, {n}, {k}]: blocking {name} gives other results than {}",
                    names[0]
                );
            }
        }
        let mut per_call: Vec<Vec<f64>> = vec![Vec::new(); blockings.len()];
        for _ in 0..rounds {
            for (b, times) in blockings.iter().zip(&mut per_call) {
                times.push(time_per_call(slice, args.cpu_time, || {
                    std::hint::black_box(packed.matmul_t_blocked(*b, &x, m));
                    Ok(())
                })?);
            }
        }
        let flops = 2.0 * (m * n * k) as f64;
        let medians: Vec<f64> = per_call.iter_mut().map(|t| median(t)).collect();
        let mut row = vec![m.to_string(), n.to_string(), k.to_string()];
        row.extend(medians.iter().map(|t| format!("{:.1}", flops / t / 1e9)));
        row.extend(
            medians[1..]
                .iter()
                .map(|t| format!("{:.3}", medians[0] / t)),
        );
        println!("| {} |", row.join(" | "));
    }
    Ok(0)
}

/// The median of `values` (sorted in place; not empty).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}
