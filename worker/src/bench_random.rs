//! `cd-worker bench-random`: measure extraction on a device without
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

use crate::devices::{self, DeviceInfo, GpuSelection};
use crate::engine::{
    load, DeviceMap, ExtractOptions, Features, Model, ModelConfig, Pooling, Precision, Site,
};
use crate::placement::{self, BatchShape, ModelShape};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::Args;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

/// Arguments of `cd-worker bench-random`.
#[derive(Debug, Args)]
pub struct BenchRandomArgs {
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
pub fn run(args: BenchRandomArgs) -> Result<i32> {
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

/// The HF `config.json` of a named shape, with `layers` overriding the depth.
pub fn shape_config(name: &str, layers: Option<usize>) -> Result<serde_json::Value> {
    // (hidden, intermediate, layers, heads, kv heads, vocab, tied, rope theta)
    let (h, i, l, nh, kv, v, tied, theta) = match name {
        "llama2-7b" => (4096, 11008, 32, 32, 32, 32000, false, 10_000.0),
        "llama2-13b" => (5120, 13824, 40, 40, 40, 32000, false, 10_000.0),
        "llama2-70b" => (8192, 28672, 80, 64, 8, 32000, false, 10_000.0),
        "smollm2-135m" => (576, 1536, 30, 9, 3, 49152, true, 100_000.0),
        "tiny" => (64, 128, 4, 4, 2, 512, false, 10_000.0),
        other => bail!("unknown --config `{other}`: expected llama2-7b, llama2-13b, llama2-70b, smollm2-135m or tiny"),
    };
    let l = match layers {
        Some(0) => bail!("--layers must be at least 1"),
        Some(n) if n > l => bail!("--layers {n}: the {name} shape has only {l} layers"),
        Some(n) => n,
        None => l,
    };
    Ok(serde_json::json!({
        "model_type": "llama", "hidden_size": h, "intermediate_size": i,
        "num_hidden_layers": l, "num_attention_heads": nh, "num_key_value_heads": kv,
        "vocab_size": v, "tie_word_embeddings": tied, "rope_theta": theta,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 4096
    }))
}

/// Uniform weights with the spread of a trained model's (std 0.02), norms
/// near 1. On a CUDA device they are drawn there (fast for 7B+); on the CPU
/// from a seeded SplitMix64, so a CPU map is reproducible and can be copied
/// to any device for comparisons.
pub fn random_weights(
    cfg: &ModelConfig,
    map: &DeviceMap,
    dtype: DType,
    seed: u64,
) -> Result<HashMap<String, Tensor>> {
    let (d, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    let mut rng = SplitMix64(seed);
    for dev in std::iter::once(&map.embed)
        .chain(&map.layers)
        .chain([&map.head])
    {
        if dev.is_cuda() {
            dev.set_seed(seed)?;
        }
    }
    let mut out = HashMap::new();
    let mut put = |name: String,
                   shape: &[usize],
                   dev: &Device,
                   center: f64,
                   rng: &mut SplitMix64|
     -> Result<()> {
        let a = 0.02 * 3f64.sqrt();
        let t = if dev.is_cuda() {
            (Tensor::rand(-a as f32, a as f32, shape, dev)? + center)?.to_dtype(dtype)?
        } else {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|_| (center + a * (2.0 * rng.next_f64() - 1.0)) as f32)
                .collect();
            Tensor::from_vec(data, shape, dev)?.to_dtype(dtype)?
        };
        out.insert(name, t);
        Ok(())
    };
    put(
        "model.embed_tokens.weight".into(),
        &[v, d],
        &map.embed,
        0.0,
        &mut rng,
    )?;
    for (l, dev) in map.layers.iter().enumerate() {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj", [q, d]),
            ("self_attn.k_proj", [kv, d]),
            ("self_attn.v_proj", [kv, d]),
            ("self_attn.o_proj", [d, q]),
            ("mlp.gate_proj", [i, d]),
            ("mlp.up_proj", [i, d]),
            ("mlp.down_proj", [d, i]),
        ] {
            put(format!("{p}.{name}.weight"), &shape, dev, 0.0, &mut rng)?;
        }
        put(
            format!("{p}.input_layernorm.weight"),
            &[d],
            dev,
            1.0,
            &mut rng,
        )?;
        put(
            format!("{p}.post_attention_layernorm.weight"),
            &[d],
            dev,
            1.0,
            &mut rng,
        )?;
    }
    put("model.norm.weight".into(), &[d], &map.head, 1.0, &mut rng)?;
    if !cfg.tie_word_embeddings {
        put("lm_head.weight".into(), &[v, d], &map.head, 0.0, &mut rng)?;
    }
    Ok(out)
}

/// A word-level tokenizer over `w0 … w{n-1}` (one token per whitespace-separated
/// word, no special tokens), so a text of `k` words is exactly `k` tokens.
pub fn word_tokenizer(n: usize) -> Result<tokenizers::Tokenizer> {
    let vocab: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|k| (format!("w{k}"), serde_json::Value::from(k)))
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}
    });
    tokenizers::Tokenizer::from_str(&json.to_string())
        .map_err(|e| anyhow::anyhow!("word tokenizer: {e}"))
}

/// `count` texts of `len` random words.
fn random_texts(count: usize, len: usize, vocab: usize, seed: u64) -> Vec<String> {
    let mut rng = SplitMix64(seed ^ 0x5eed);
    let words = vocab.min(4096) as u64;
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| format!("w{}", 1 + rng.next_u64() % (words - 1)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Build a model on `map` from a weight map (consumed: the model keeps what it needs).
pub fn build(
    cfg_json: &serde_json::Value,
    weights: HashMap<String, Tensor>,
    precision: Precision,
    map: DeviceMap,
) -> Result<Model> {
    let cfg = ModelConfig::from_hf_config_json(&cfg_json.to_string(), Path::new("<bench-random>"))?;
    let tokenizer = word_tokenizer(cfg.vocab_size.min(4096))?;
    let vb = VarBuilder::from_tensors(weights, DType::F32, &map.embed);
    Ok(Model::new(cfg, vb, tokenizer, precision, map)?)
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

fn throughput(args: &BenchRandomArgs, info: &DeviceInfo) -> Result<serde_json::Value> {
    let cfg_json = shape_config(&args.config, args.layers)?;
    let shape = ModelShape::from_hf_config(&cfg_json)?;
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
    let cfg = ModelConfig::from_hf_config_json(&cfg_json.to_string(), Path::new("<bench-random>"))?;
    let map = split_map(&hs, cfg.num_layers);
    let t0 = Instant::now();
    let gen_dtype = if args.precision == Precision::Q8_0 {
        DType::F32
    } else {
        dtype_of(args.precision)
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
    ensure_finite(&feats)?;
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

fn check(args: &BenchRandomArgs, info: &DeviceInfo) -> Result<serde_json::Value> {
    let opts = extract_opts(args.site, args.batch, args.model.is_some());
    let hs = handles(info, args.split)?;
    let (label, cpu_model, dev_model, texts) = match &args.model {
        None => {
            let cfg_json = shape_config(&args.config, args.layers)?;
            let cfg = ModelConfig::from_hf_config_json(
                &cfg_json.to_string(),
                Path::new("<bench-random>"),
            )?;
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
    ensure_finite(&got)?;
    let (n, layers, d) = reference.data.dim();
    let mut rows = Vec::new();
    let (mut worst_rel, mut worst_cos) = (0f64, 1f64);
    for l in 0..layers {
        let (mut max_ref, mut max_diff, mut min_cos) = (0f64, 0f64, 1f64);
        for t in 0..n {
            let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
            for k in 0..d {
                let (a, b) = (reference.data[[t, l, k]] as f64, got.data[[t, l, k]] as f64);
                max_ref = max_ref.max(a.abs());
                max_diff = max_diff.max((a - b).abs());
                dot += a * b;
                na += a * a;
                nb += b * b;
            }
            min_cos = min_cos.min(dot / (na.sqrt() * nb.sqrt()).max(f64::MIN_POSITIVE));
        }
        let rel = max_diff / max_ref.max(f64::MIN_POSITIVE);
        worst_rel = worst_rel.max(rel);
        worst_cos = worst_cos.min(min_cos);
        eprintln!("  layer {l:>3}: max|diff|/max|ref| {rel:.2e}  min cosine {min_cos:.7}");
        rows.push(serde_json::json!({"layer": l, "rel": rel, "cos": min_cos}));
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

fn ops(args: &BenchRandomArgs, dev: &Device) -> Result<serde_json::Value> {
    let cfg_json = shape_config(&args.config, Some(1))?;
    let shape = ModelShape::from_hf_config(&cfg_json)?;
    let dt = dtype_of(args.precision);
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

fn dtype_of(p: Precision) -> DType {
    match p {
        Precision::F32 | Precision::Q8_0 => DType::F32,
        Precision::Int8 => DType::F16,
        Precision::Bf16 => DType::BF16,
        Precision::F16 => DType::F16,
    }
}

fn ensure_finite(f: &Features) -> Result<()> {
    if let Some(pos) = f.data.iter().position(|x| !x.is_finite()) {
        bail!("non-finite feature at flat index {pos}: the forward pass produced NaN or inf");
    }
    Ok(())
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// SplitMix64: a tiny, seedable generator (reproducible weights without a
/// dependency).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_cpu_model_equals_the_unsplit_one_bit_for_bit() {
        // Two CPU handles are one device, so this checks the per-layer
        // placement plumbing (weights looked up per layer device, states
        // handed across the split) rather than a copy; the CUDA run of
        // `bench-random --check --split 2` checks real boundary copies.
        let cfg_json = shape_config("tiny", None).unwrap();
        let cfg = ModelConfig::from_hf_config_json(&cfg_json.to_string(), Path::new("t")).unwrap();
        let single = DeviceMap::single(Device::Cpu, cfg.num_layers);
        let weights = random_weights(&cfg, &single, DType::F32, 7).unwrap();
        let budgets = [
            placement::DeviceBudget {
                name: "cpu-a".into(),
                usable_bytes: 1 << 30,
            },
            placement::DeviceBudget {
                name: "cpu-b".into(),
                usable_bytes: 1 << 30,
            },
        ];
        let plan = placement::plan(
            &ModelShape::from(&cfg),
            Precision::F32,
            BatchShape { batch: 4, seq: 16 },
            &budgets,
        )
        .unwrap();
        assert_eq!(plan.boundaries(), 1, "{plan:?}");
        let infos: Vec<DeviceInfo> = budgets
            .iter()
            .map(|b| DeviceInfo {
                device: Device::Cpu,
                name: b.name.clone(),
                model: "cpu".into(),
                total_bytes: b.usable_bytes,
                free_bytes: b.usable_bytes,
            })
            .collect();
        let split = plan.device_map(&infos);
        let texts = random_texts(5, 11, cfg.vocab_size, 3);
        let texts: Vec<String> = texts
            .iter()
            .enumerate()
            .map(|(k, t)| t.split(' ').take(3 + 2 * k).collect::<Vec<_>>().join(" "))
            .collect();
        let opts = extract_opts(Site::Residual, 2, false);
        let a = build(&cfg_json, weights.clone(), Precision::F32, single).unwrap();
        let b = build(&cfg_json, weights, Precision::F32, split).unwrap();
        let fa = a.extract(&texts, &opts, &mut |_| {}).unwrap();
        let fb = b.extract(&texts, &opts, &mut |_| {}).unwrap();
        assert_eq!(fa.data.dim(), (5, cfg.num_layers + 1, cfg.hidden_size));
        assert!(fa.data.iter().any(|&x| x != 0.0));
        assert_eq!(
            fa.data, fb.data,
            "the split model must reproduce the unsplit one exactly"
        );
        assert_eq!(fa.token_counts, vec![3, 5, 7, 9, 11]);
    }

    #[test]
    fn shapes_and_word_tokenizer_are_exact() {
        let cfg = shape_config("llama2-70b", Some(40)).unwrap();
        assert_eq!(cfg["num_hidden_layers"], 40);
        assert!(shape_config("llama2-7b", Some(33))
            .unwrap_err()
            .to_string()
            .contains("only 32 layers"));
        assert!(shape_config("gpt5", None)
            .unwrap_err()
            .to_string()
            .contains("unknown --config"));
        let shape = ModelShape::from_hf_config(&shape_config("llama2-7b", None).unwrap()).unwrap();
        assert_eq!(shape, ModelShape::llama2_7b());
        let tok = word_tokenizer(100).unwrap();
        let ids = tok
            .encode("w5 w99 w0 w7", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(ids, vec![5, 99, 0, 7]);
    }

    #[test]
    fn random_cpu_weights_are_reproducible() {
        let cfg_json = shape_config("tiny", None).unwrap();
        let cfg = ModelConfig::from_hf_config_json(&cfg_json.to_string(), Path::new("t")).unwrap();
        let map = DeviceMap::single(Device::Cpu, cfg.num_layers);
        let a = random_weights(&cfg, &map, DType::F32, 1).unwrap();
        let b = random_weights(&cfg, &map, DType::F32, 1).unwrap();
        let c = random_weights(&cfg, &map, DType::F32, 2).unwrap();
        let name = "model.layers.3.mlp.down_proj.weight";
        let v =
            |m: &HashMap<String, Tensor>| m[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&a), v(&b));
        assert_ne!(v(&a), v(&c));
        let std =
            (v(&a).iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v(&a).len() as f64).sqrt();
        assert!((std - 0.02).abs() < 0.002, "{std}");
    }
}
