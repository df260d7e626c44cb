//! `cd-worker extract`: per-layer features for a JSONL file of texts, without
//! the cluster.
//!
//! ```text
//! cd-worker extract --model <dir|org/name[@rev]|file.gguf> --input texts.jsonl \
//!     --site residual --pooling last --precision 32 --batch-size 8 --out feats.safetensors
//! ```
//!
//! Each input line is a JSON object; `--text-field` (default `text`) names the
//! text and `--label-field`, when given, an integer (or boolean) label stored
//! beside the features. Blank lines are skipped.
//!
//! Exit codes: 0 success; 2 bad usage or input (unreadable/empty/malformed
//! JSONL, output directory missing); 3 the model cannot be loaded (missing or
//! corrupt files, unsupported architecture, unknown device); 1 anything else
//! (extraction or writing failed). On any failure no output file is left.

use crate::engine::load::{load_model, LoadOptions};
use crate::engine::output::{write_features, FeatureFile, OutputDtype, OutputMetadata};
use crate::engine::{Device, ExtractOptions, ExtractProgress, Pooling, Precision, Site};
use cd_common::spec::ModelSource;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Exit code: success.
pub(crate) const EXIT_OK: i32 = 0;
/// Exit code: extraction or writing failed.
pub(crate) const EXIT_OTHER: i32 = 1;
/// Exit code: bad usage or bad input file.
pub(crate) const EXIT_INPUT: i32 = 2;
/// Exit code: the model could not be loaded.
pub(crate) const EXIT_MODEL: i32 = 3;

/// Arguments of `cd-worker extract`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 ok, 2 usage or input error, 3 model error, 1 other failure. \
No output file is left behind on failure."
)]
pub struct ExtractArgs {
    /// Model: an HF-format directory, an HF Hub repo id (`org/name[@revision]`), or a `.gguf` file.
    #[arg(long)]
    pub model: String,
    /// JSONL file of texts, one JSON object per line.
    #[arg(long)]
    pub input: PathBuf,
    /// Output safetensors file (`features` [N, L, d], `token_counts`, optional `labels`).
    #[arg(long)]
    pub out: PathBuf,
    /// Capture site: `residual` (embeddings + every block, L+1 vectors) or `post_attention_norm` (L).
    #[arg(long, default_value = "residual")]
    pub site: Site,
    /// Pooling over a text's tokens: `last` (last real token) or `mean`.
    #[arg(long, default_value = "last")]
    pub pooling: Pooling,
    /// Precision: 32 (f32), 16 (bf16), 16-f16 (f16), 8 (8-bit weights).
    #[arg(long, default_value = "32")]
    pub precision: Precision,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// JSON field holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// JSON field holding an integer label (stored as `labels`).
    #[arg(long)]
    pub label_field: Option<String>,
    /// Hub models: never touch the network, resolve from the cache only.
    #[arg(long)]
    pub offline: bool,
    /// Hub models: cache directory (default: `HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Device: `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Keep at most this many tokens of each text (the first ones).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Element type of the stored features: f32 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: OutputDtype,
}

/// A failure with the exit code it maps to.
struct Failure {
    code: i32,
    err: anyhow::Error,
}

fn fail(code: i32) -> impl FnOnce(anyhow::Error) -> Failure {
    move |err| Failure { code, err }
}

/// Texts (and labels) read from a JSONL file.
#[derive(Debug)]
pub(crate) struct Inputs {
    /// One text per record.
    pub texts: Vec<String>,
    /// One label per record when a label field was requested.
    pub labels: Option<Vec<i64>>,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
}

/// Read a JSONL file. Errors name `file:line`, the field and what was expected.
pub(crate) fn read_jsonl(
    path: &Path,
    text_field: &str,
    label_field: Option<&str>,
) -> anyhow::Result<Inputs> {
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read input: {e}", path.display()))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (first bad byte at offset {}): expected JSONL",
            path.display(),
            e.valid_up_to()
        )
    })?;
    let mut texts = Vec::new();
    let mut labels = label_field.map(|_| Vec::new());
    for (i, line) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!("{at}: not valid JSON ({e}): expected one JSON object per line")
        })?;
        let obj = v
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("{at}: expected a JSON object, found {}", kind(&v)))?;
        let t = match obj.get(text_field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => anyhow::bail!("{at}: field `{text_field}`: expected a string, found {}", kind(other)),
            None => anyhow::bail!("{at}: field `{text_field}`: missing (set --text-field to the field holding the text)"),
        };
        if t.is_empty() {
            anyhow::bail!(
                "{at}: field `{text_field}`: empty text, expected at least one character"
            );
        }
        texts.push(t);
        if let (Some(field), Some(ls)) = (label_field, labels.as_mut()) {
            let l = match obj.get(field) {
                Some(serde_json::Value::Number(n)) if n.is_i64() => n.as_i64().expect("checked"),
                Some(serde_json::Value::Bool(b)) => *b as i64,
                Some(other) => anyhow::bail!(
                    "{at}: field `{field}`: expected an integer label, found {}",
                    kind(other)
                ),
                None => anyhow::bail!("{at}: field `{field}`: missing label"),
            };
            ls.push(l);
        }
    }
    if texts.is_empty() {
        anyhow::bail!(
            "{}: no records: expected at least one JSON object with a `{text_field}` field",
            path.display()
        );
    }
    Ok(Inputs {
        texts,
        labels,
        sha256,
    })
}

fn kind(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(b) => format!("boolean {b}"),
        serde_json::Value::Number(n) => format!("number {n}"),
        serde_json::Value::String(_) => "a string".into(),
        serde_json::Value::Array(_) => "an array".into(),
        serde_json::Value::Object(_) => "an object".into(),
    }
}

/// Parse `cpu` or `cuda:N` (`cuda` alone means `cuda:0`).
pub(crate) fn parse_device(s: &str) -> anyhow::Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let idx = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| anyhow::anyhow!("--device `{s}`: expected cpu or cuda:N"))?,
                None => anyhow::bail!("--device `{s}`: expected cpu or cuda:N"),
            };
            Device::new_cuda(idx).map_err(|e| anyhow::anyhow!("--device `{s}`: {e}"))
        }
    }
}

/// Run the command. Returns the process exit code; errors are printed here.
pub fn run(args: ExtractArgs) -> anyhow::Result<i32> {
    match run_inner(&args) {
        Ok(()) => Ok(EXIT_OK),
        Err(f) => {
            eprintln!("error: {:#}", f.err);
            Ok(f.code)
        }
    }
}

fn run_inner(args: &ExtractArgs) -> Result<(), Failure> {
    if args.batch_size == 0 {
        return Err(fail(EXIT_INPUT)(anyhow::anyhow!(
            "--batch-size must be at least 1"
        )));
    }
    if args.max_tokens == Some(0) {
        return Err(fail(EXIT_INPUT)(anyhow::anyhow!(
            "--max-tokens must be at least 1"
        )));
    }
    let out_dir = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        return Err(fail(EXIT_INPUT)(anyhow::anyhow!(
            "--out {}: directory {} does not exist",
            args.out.display(),
            out_dir.display()
        )));
    }
    let inputs = read_jsonl(&args.input, &args.text_field, args.label_field.as_deref())
        .map_err(fail(EXIT_INPUT))?;

    let device = parse_device(&args.device).map_err(fail(EXIT_MODEL))?;
    let source = ModelSource::parse_cli(&args.model);
    let opts = LoadOptions {
        precision: args.precision,
        device,
        device_map: None,
        offline: args.offline,
        cache_dir: args.cache_dir.clone(),
        revision: None,
    };
    let t_load = Instant::now();
    let model = load_model(&source, &opts).map_err(|e| {
        fail(EXIT_MODEL)(
            anyhow::Error::new(e).context(format!("cannot load model `{}`", args.model)),
        )
    })?;
    tracing::info!(model = %args.model, seconds = t_load.elapsed().as_secs_f64(), "model loaded");

    let bar = ProgressBar::with_draw_target(
        Some(inputs.texts.len() as u64),
        ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} texts  {msg}  ETA {eta}",
        )
        .expect("valid template"),
    );
    let started = Instant::now();
    let mut on_progress = |p: ExtractProgress| {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(p.texts_done as u64);
        bar.set_message(format!(
            "{:.1} texts/s, {:.0} tokens/s",
            p.texts_done as f64 / secs,
            p.tokens_done as f64 / secs
        ));
    };
    let xopts = ExtractOptions {
        site: args.site,
        pooling: args.pooling,
        batch_size: args.batch_size,
        max_tokens: args.max_tokens,
        ..ExtractOptions::default()
    };
    let feats = model
        .extract(&inputs.texts, &xopts, &mut on_progress)
        .map_err(|e| fail(EXIT_OTHER)(anyhow::Error::new(e).context("extraction failed")))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let tokens: u64 = feats.token_counts.iter().map(|&c| c as u64).sum();

    let mut extra = BTreeMap::new();
    extra.insert("input".to_string(), args.input.display().to_string());
    extra.insert("text_field".to_string(), args.text_field.clone());
    if let Some(l) = &args.label_field {
        extra.insert("label_field".to_string(), l.clone());
    }
    extra.insert("batch_size".to_string(), args.batch_size.to_string());
    if let Some(m) = args.max_tokens {
        extra.insert("max_tokens".to_string(), m.to_string());
    }
    extra.insert(
        "architecture".to_string(),
        model.config().arch.as_str().to_string(),
    );
    let meta = OutputMetadata {
        model: args.model.clone(),
        site: args.site.as_str().into(),
        pooling: args.pooling.as_str().into(),
        precision: args.precision.as_str().into(),
        input_sha256: Some(inputs.sha256.clone()),
        extra,
    };
    let counts: Vec<usize> = feats.token_counts.iter().map(|&c| c as usize).collect();
    let file = FeatureFile {
        features: feats.data.view(),
        token_counts: &counts,
        labels: inputs.labels.as_deref(),
        test_fold: None,
        groups: None,
        dtype: args.dtype,
        metadata: &meta,
    };
    write_features(&args.out, &file).map_err(|e| fail(EXIT_OTHER)(anyhow::Error::new(e)))?;
    let (n, l, d) = feats.data.dim();
    eprintln!(
        "wrote {} ([{n}, {l}, {d}] {}), {n} texts, {tokens} tokens in {secs:.2}s ({:.1} texts/s, {:.0} tokens/s; CPU kernels {}{})",
        args.out.display(),
        args.dtype.as_str(),
        n as f64 / secs.max(1e-9),
        tokens as f64 / secs.max(1e-9),
        crate::engine::cpu::isa::active(),
        // A blocking other than the default, as the variables set it.
        match crate::engine::cpu::blocking::Blocking::active().label() {
            label if label.is_empty() => label,
            label => format!(" {label}"),
        }
    );
    Ok(())
}
