//! `cd-bench random`: measure extraction on a device without
//! downloading a model, and check a device against the CPU.
//!
//! Three modes, each on randomly initialised weights of a named LLaMA-family
//! shape (`llama2-7b`, `llama2-13b`, `llama2-70b`, `smollm2-135m`, `tiny`) run
//! through the real engine (`Model::new` + `Model::extract`, the same code a
//! task runs):
//! - default: throughput. Texts of exactly `--seq` tokens in batches of
//!   `--batch`; reports tokens/s and model FLOP utilisation,
//!   `MFU = 2 × parameters × tokens/s / peak` (the parameter-count convention;
//!   the FLOPs extraction really executes are also reported).
//! - `--check`: the same random model (or a real one with `--model`) on the
//!   device at `--precision` against the CPU in f32; per layer the max
//!   |difference| relative to the layer's max |reference| and the smallest
//!   cosine over texts.
//! - `--ops`: time the layer's operations one by one at the benchmark's
//!   shapes, synchronising after each, to say where a forward pass's time goes.
//!
//! `--split N` spreads the layers over N handles of the first device (hidden
//! states then cross N-1 device boundaries per batch through host memory,
//! as between two GPUs), to measure the cost of a boundary and check that a
//! split model equals the unsplit one.
//!
//! Why this file is long: the benchmark's shapes, its per-op timing and its
//! device-against-CPU check share one random model build; it is a benchmark,
//! not product code.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use cd_worker::devices::{self, DeviceInfo, GpuSelection};
use cd_worker::engine::agreement::layer_agreement;
use cd_worker::engine::random_model::{build, random_texts, random_weights, shape_config};
use cd_worker::engine::{
    activation_dtype, load, DeviceMap, ExtractOptions, ModelConfig, Pooling, Precision, Site,
};
use cd_worker::placement::{self, BatchShape, ModelShape};
use clap::Args;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

/// Arguments of `cd-bench random`.
#[derive(Debug, Args)]
pub struct RandomArgs {
    /// Model shape: llama2-7b, llama2-13b, llama2-70b, smollm2-135m, tiny.
    #[arg(long, default_value = "llama2-7b")]
    pub config: String,
    /// Keep only the first N layers (to fit a slice of a large model on one device).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Precision: 32, 16, 16-f16 or 8.
    #[arg(long, default_value = "16")]
    pub precision: Precision,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per text.
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// Devices: `cpu`, `all` or CUDA ordinals (only the first is used, see --split).
    #[arg(long, default_value = "0")]
    pub gpus: String,
    /// Spread the layers over this many handles of the first device.
    #[arg(long, default_value_t = 1)]
    pub split: usize,
    /// Untimed batches first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed batches.
    #[arg(long, default_value_t = 8)]
    pub iters: usize,
    /// Capture site.
    #[arg(long, default_value = "residual")]
    pub site: Site,
    /// The device's dense peak for this precision in TFLOP/s (H100 SXM bf16: 989.4).
    #[arg(long, default_value_t = 989.4)]
    pub peak_tflops: f64,
    /// Compare against the CPU in f32 instead of timing.
    #[arg(long)]
    pub check: bool,
    /// With --check: a real model (dir, hub id or .gguf) instead of random weights.
    #[arg(long)]
    pub model: Option<String>,
    /// Time the layer's operations one by one.
    #[arg(long)]
    pub ops: bool,
    /// Seed of the random weights and texts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Append the results as one JSON line to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Run the command. Returns the process exit code.
pub fn run(args: RandomArgs) -> Result<i32> {
    if args.batch == 0 || args.seq == 0 || args.iters == 0 || args.split == 0 {
        bail!("--batch, --seq, --iters and --split must be at least 1");
    }
    let opened = devices::open(&GpuSelection::from_str(&args.gpus)?)?;
    let first = opened.into_iter().next().context("no device opened")?;
    eprintln!(
        "device: {} ({}), {:.1} GiB free",
        first.name,
        first.model,
        gib(first.free_bytes)
    );
    let result = if args.check {
        check(&args, &first)?
    } else if args.ops {
        ops(&args, &first.device)?
    } else {
        throughput(&args, &first)?
    };
    println!("{result}");
    if let Some(path) = &args.json {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{result}")?;
    }
    Ok(0)
}

/// `n` contiguous layer ranges over `handles` (as equal as possible).
fn split_map(handles: &[Device], layers: usize) -> DeviceMap {
    let n = handles.len();
    DeviceMap {
        embed: handles[0].clone(),
        layers: (0..layers)
            .map(|l| handles[l * n / layers].clone())
            .collect(),
        head: handles[n - 1].clone(),
    }
}

/// `n` handles of `info`'s device: itself, then fresh handles of the same
/// CUDA ordinal (distinct candle devices with their own streams).
fn handles(info: &DeviceInfo, n: usize) -> Result<Vec<Device>> {
    let mut out = vec![info.device.clone()];
    for _ in 1..n {
        match &info.device {
            Device::Cuda(_) => {
                let ordinal: usize = info.name.trim_start_matches("cuda:").parse()?;
                out.push(Device::new_cuda(ordinal)?);
            }
            // One CPU: every handle is the same device.
            other => out.push(other.clone()),
        }
    }
    Ok(out)
}

/// Last-token pooling; special tokens only for real models (the word
/// tokenizer of random models has none).
fn extract_opts(site: Site, batch: usize, add_special_tokens: bool) -> ExtractOptions {
    ExtractOptions {
        site,
        pooling: Pooling::Last,
        batch_size: batch,
        max_tokens: None,
        add_special_tokens,
    }
}

fn throughput(args: &RandomArgs, info: &DeviceInfo) -> Result<serde_json::Value> {
    let cfg_json = shape_config(&args.config, args.layers)?;
    let cfg = ModelConfig::from_hf_config_json(&cfg_json.to_string(), Path::new(&args.config))?;
    let shape = ModelShape::from(&cfg);
    // Refuse early, with the planner's message, what will not fit.
    let budget = placement::DeviceBudget::of(info);
    let batch_shape = BatchShape {
        batch: args.batch,
        seq: args.seq,
    };
    let plan = placement::plan(&shape, args.precision, batch_shape, &[budget])?;
    eprintln!(
        "plan: {:.2} GiB of weights + {:.2} GiB activations on {}",
        gib(plan.loads[0].weight_bytes),
        gib(plan.loads[0].activation_bytes),
        info.name
    );
    let hs = handles(info, args.split)?;
    let map = split_map(&hs, cfg.num_layers);
    let t0 = Instant::now();
    let gen_dtype = if args.precision == Precision::Q8_0 {
        DType::F32
    } else {
        activation_dtype(args.precision)
    };
    let weights = random_weights(&cfg, &map, gen_dtype, args.seed)?;
    let model = build(&cfg_json, weights, args.precision, map)?;
    for h in &hs {
        h.synchronize()?;
    }
    let load_s = t0.elapsed().as_secs_f64();
    let texts = random_texts(
        args.batch * (args.warmup + args.iters),
        args.seq,
        cfg.vocab_size,
        args.seed,
    );
    let opts = extract_opts(args.site, args.batch, false);
    let (warm, timed) = texts.split_at(args.batch * args.warmup);
    if !warm.is_empty() {
        model.extract(warm, &opts, &mut |_| {})?;
    }
    let mut marks = vec![Instant::now()];
    let t1 = Instant::now();
    let feats = model.extract(timed, &opts, &mut |_| marks.push(Instant::now()))?;
    let wall = t1.elapsed().as_secs_f64();
    if let Some(pos) = feats.data.iter().position(|x| !x.is_finite()) {
        bail!("non-finite feature at flat index {pos}: the forward pass produced NaN or inf");
    }
    let mut per_batch: Vec<f64> = marks
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    per_batch.sort_by(f64::total_cmp);
    let median = per_batch[per_batch.len() / 2];
    let tokens = (args.batch * args.seq) as f64;
    let tok_s = tokens / median;
    let params = shape.params() as f64;
    // What extraction executes: every layer's matmuls plus the attention
    // products (QKᵀ and PV over the full padded square), no LM head.
    let attn = 4.0 * args.seq as f64 * (shape.heads * shape.head_dim) as f64 * shape.layers as f64;
    let executed = 2.0 * shape.matmul_params() as f64 + attn;
    let peak = args.peak_tflops * 1e12;
    let mfu = 2.0 * params * tok_s / peak;
    let out = serde_json::json!({
        "mode": "throughput", "config": args.config, "layers": shape.layers,
        "params": shape.params(), "precision": args.precision.as_str(), "batch": args.batch,
        "seq": args.seq, "site": args.site.as_str(), "split": args.split, "device": info.model,
        "load_s": round(load_s, 2), "median_batch_s": round(median, 5),
        "mean_batch_s": round(wall / args.iters as f64, 5), "tokens_per_s": round(tok_s, 0),
        "mfu_2n": round(mfu, 4), "executed_tflops": round(executed * tok_s / 1e12, 1),
        "mfu_executed": round(executed * tok_s / peak, 4), "peak_tflops": args.peak_tflops,
    });
    eprintln!(
        "{} {}L {} b={} s={} split={}: {:.0} tokens/s, median batch {:.1} ms, MFU(2N) {:.1}%",
        args.config,
        shape.layers,
        args.precision,
        args.batch,
        args.seq,
        args.split,
        tok_s,
        median * 1e3,
        100.0 * mfu
    );
    Ok(out)
}

fn check(args: &RandomArgs, info: &DeviceInfo) -> Result<serde_json::Value> {
    let opts = extract_opts(args.site, args.batch, args.model.is_some());
    let hs = handles(info, args.split)?;
    let (label, cpu_model, dev_model, texts) = match &args.model {
        None => {
            let cfg_json = shape_config(&args.config, args.layers)?;
            let cfg =
                ModelConfig::from_hf_config_json(&cfg_json.to_string(), Path::new(&args.config))?;
            let cpu_map = DeviceMap::single(Device::Cpu, cfg.num_layers);
            let weights = random_weights(&cfg, &cpu_map, DType::F32, args.seed)?;
            let cpu = build(&cfg_json, weights.clone(), Precision::F32, cpu_map)?;
            let dev = build(
                &cfg_json,
                weights,
                args.precision,
                split_map(&hs, cfg.num_layers),
            )?;
            // Texts of varied lengths, so padding is exercised too.
            let mut texts = Vec::new();
            for (k, len) in [
                args.seq,
                args.seq / 2 + 1,
                7,
                1,
                args.seq.saturating_sub(3),
                33,
            ]
            .into_iter()
            .enumerate()
            {
                texts.extend(random_texts(
                    1,
                    len.max(1),
                    cfg.vocab_size,
                    args.seed + k as u64,
                ));
            }
            (format!("random {}", args.config), cpu, dev, texts)
        }
        Some(m) => {
            let source = cd_common::spec::ModelSource::parse_cli(m);
            let lo = |precision, device_map| load::LoadOptions {
                precision,
                device: Device::Cpu,
                device_map: Some(device_map),
                ..Default::default()
            };
            let files = load::open_model(
                &source,
                &lo(Precision::F32, DeviceMap::single(Device::Cpu, 1)),
            )?;
            let n = files.config.num_layers;
            let cpu = files.build(Precision::F32, DeviceMap::single(Device::Cpu, n))?;
            let files = load::open_model(&source, &lo(args.precision, split_map(&hs, n)))?;
            let dev = files.build(args.precision, split_map(&hs, n))?;
            (
                m.clone(),
                cpu,
                dev,
                CHECK_TEXTS.iter().map(|s| s.to_string()).collect(),
            )
        }
    };
    let reference = cpu_model.extract(&texts, &opts, &mut |_| {})?;
    let got = dev_model.extract(&texts, &opts, &mut |_| {})?;
    let n = got.data.dim().0;
    let mut rows = Vec::new();
    let (mut worst_rel, mut worst_cos) = (0f64, 1f64);
    for a in layer_agreement(&reference, &got)? {
        worst_rel = worst_rel.max(a.rel);
        worst_cos = worst_cos.min(a.cos);
        eprintln!(
            "  layer {:>3}: max|diff|/max|ref| {:.2e}  min cosine {:.7}",
            a.layer, a.rel, a.cos
        );
        rows.push(serde_json::json!({"layer": a.layer, "rel": a.rel, "cos": a.cos}));
    }
    eprintln!(
        "{label} on {} at {} (split {}) vs cpu f32, {} texts: worst rel {worst_rel:.2e}, worst cosine {worst_cos:.7}",
        info.name, args.precision, args.split, n
    );
    Ok(serde_json::json!({
        "mode": "check", "model": label, "precision": args.precision.as_str(), "site": args.site.as_str(),
        "split": args.split, "device": info.model, "texts": n, "worst_rel": worst_rel,
        "worst_cos": worst_cos, "layers": rows,
    }))
}

/// Texts for checking a real model: varied lengths, digits, punctuation.
const CHECK_TEXTS: &[&str] = &[
    "The capital of France is Paris.",
    "Water boils at 100 degrees Celsius at sea level, and freezes at 0.",
    "Is the following statement true or false? The moon is made of cheese.",
    "In 1969, two astronauts walked on the Moon while a third orbited above; the mission, Apollo 11, returned safely.",
    "yes",
    "A quick brown fox jumps over the lazy dog. The dog did not react at all, which surprised the fox.",
];

fn ops(args: &RandomArgs, dev: &Device) -> Result<serde_json::Value> {
    let cfg_json = shape_config(&args.config, Some(1))?;
    let cfg = ModelConfig::from_hf_config_json(&cfg_json.to_string(), Path::new(&args.config))?;
    let shape = ModelShape::from(&cfg);
    let dt = activation_dtype(args.precision);
    let (b, t, d, i) = (args.batch, args.seq, shape.hidden, shape.intermediate);
    let (h, kvh, hd) = (shape.heads, shape.kv_heads, shape.head_dim);
    let m = b * t;
    let rnd =
        |s: &[usize]| -> Result<Tensor> { Ok(Tensor::rand(-0.03f32, 0.03, s, dev)?.to_dtype(dt)?) };
    let x = rnd(&[m, d])?;
    let wq = rnd(&[h * hd, d])?;
    let wkv = rnd(&[kvh * hd, d])?;
    let wg = rnd(&[i, d])?;
    let wd = rnd(&[d, i])?;
    let xi = rnd(&[m, i])?;
    let alpha = Tensor::ones(d, dt, dev)?;
    let q4 = rnd(&[b, h, t, hd])?;
    let k4 = rnd(&[b, kvh, t, hd])?;
    let cos = rnd(&[t, hd / 2])?;
    let scores = Tensor::rand(-1f32, 1., (b, h, t, t), dev)?;
    let mask = Tensor::zeros((t, t), DType::F32, dev)?;
    let g = h / kvh;
    let mut rows = Vec::new();
    let mut total = 0.0;
    let mut time = |name: &str,
                    flops: f64,
                    bytes: f64,
                    per_layer: f64,
                    f: &dyn Fn() -> candle_core::Result<Tensor>|
     -> Result<()> {
        for _ in 0..3 {
            f()?;
        }
        dev.synchronize()?;
        let reps = 20;
        let t0 = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        dev.synchronize()?;
        let s = t0.elapsed().as_secs_f64() / reps as f64;
        total += s * per_layer;
        eprintln!(
            "  {name:<34} {:>8.3} ms  x{per_layer}  {:>7.1} TFLOP/s  {:>7.1} GB/s",
            s * 1e3,
            flops / s / 1e12,
            bytes / s / 1e9
        );
        rows.push(
            serde_json::json!({"op": name, "ms": s * 1e3, "per_layer": per_layer,
            "tflops": flops / s / 1e12, "gbps": bytes / s / 1e9}),
        );
        Ok(())
    };
    let e = dt.size_in_bytes() as f64;
    let mf = |n: usize, k: usize| 2.0 * (m * n * k) as f64;
    let mb = |n: usize, k: usize| e * (m * k + n * k + m * n) as f64;
    time(
        "matmul q/o [m,d]x[d,d]",
        mf(h * hd, d),
        mb(h * hd, d),
        2.0,
        &|| x.matmul(&wq.t()?),
    )?;
    time(
        "matmul k/v [m,d]x[d,kv]",
        mf(kvh * hd, d),
        mb(kvh * hd, d),
        2.0,
        &|| x.matmul(&wkv.t()?),
    )?;
    time(
        "matmul gate/up [m,d]x[d,i]",
        mf(i, d),
        mb(i, d),
        2.0,
        &|| x.matmul(&wg.t()?),
    )?;
    time("matmul down [m,i]x[i,d]", mf(d, i), mb(d, i), 1.0, &|| {
        xi.matmul(&wd.t()?)
    })?;
    let att_f = 2.0 * (b * h * t * t * hd) as f64;
    // On CUDA the engine keeps 16-bit scores in their dtype; the f32 path (the
    // CPU's, and soft-capped scores) is timed for comparison but counted in
    // the layer's sum only when the precision is 32.
    let f32_path = if dt == DType::F32 { 1.0 } else { 0.0 };
    let sbytes = 4.0 * (b * h * t * t) as f64;
    let ebytes = e * (b * h * t * t) as f64;
    let qk_bytes = e * (2 * b * h * t * hd) as f64;
    time(
        "attn scores q·kᵀ, f32 copy",
        att_f,
        qk_bytes + sbytes,
        f32_path,
        &|| {
            q4.reshape((b, kvh, g * t, hd))?
                .matmul(&k4.t()?)?
                .to_dtype(DType::F32)
        },
    )?;
    time(
        "mask + softmax in f32, cast back",
        0.0,
        sbytes * 3.0 + ebytes,
        f32_path,
        &|| candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask)?)?.to_dtype(dt),
    )?;
    let scores_dt = scores.to_dtype(dt)?;
    let mask_dt = mask.to_dtype(dt)?;
    time(
        "attn scores q·kᵀ in dtype",
        att_f,
        qk_bytes + ebytes,
        1.0 - f32_path,
        &|| q4.reshape((b, kvh, g * t, hd))?.matmul(&k4.t()?),
    )?;
    time(
        "mask + softmax in dtype",
        0.0,
        ebytes * 3.0,
        1.0 - f32_path,
        &|| candle_nn::ops::softmax_last_dim(&scores_dt.broadcast_add(&mask_dt)?),
    )?;
    let probs = scores.to_dtype(dt)?;
    time(
        "attn probs·v",
        att_f,
        e * (b * h * t * t + 2 * b * h * t * hd) as f64,
        1.0,
        &|| probs.reshape((b, kvh, g * t, t))?.matmul(&k4),
    )?;
    let xb = x.reshape((b, t, d))?;
    time(
        "rms_norm [m,d]",
        0.0,
        2.0 * e * (m * d) as f64,
        2.0,
        &|| candle_nn::ops::rms_norm(&xb, &alpha, 1e-5),
    )?;
    time(
        "transpose+contiguous [b,t,h,hd]",
        0.0,
        2.0 * e * (m * d) as f64,
        4.0,
        &|| xb.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous(),
    )?;
    time(
        "rope [b,h,t,hd]",
        0.0,
        2.0 * e * (m * d) as f64,
        2.0,
        &|| candle_nn::rotary_emb::rope(&q4, &cos, &cos),
    )?;
    let gi = xi.clone();
    time(
        "silu(gate) * up [m,i]",
        0.0,
        4.0 * e * (m * i) as f64,
        1.0,
        &|| candle_nn::ops::silu(&gi)? * &xi,
    )?;
    time(
        "residual add [m,d]",
        0.0,
        3.0 * e * (m * d) as f64,
        2.0,
        &|| &x + &x,
    )?;
    let matmul_flops = 2.0 * shape.layer_matrix_params() as f64 * m as f64 + 2.0 * att_f;
    eprintln!(
        "sum per layer {:.3} ms for {m} tokens: {:.1} TFLOP/s if the layer were only these ops",
        total * 1e3,
        matmul_flops / total / 1e12
    );
    Ok(
        serde_json::json!({"mode": "ops", "config": args.config, "precision": args.precision.as_str(),
        "batch": b, "seq": t, "layer_ms": total * 1e3, "ops": rows}),
    )
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}
