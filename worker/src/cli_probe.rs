//! `cd-worker probe`: per-layer linear probes on a features file written by
//! `cd-worker extract`, without the cluster.
//!
//! ```text
//! cd-worker probe feats.safetensors --out metrics.json [--c 1.0] [--standardize] \
//!     [--seed 0] [--split stratified|sklearn|kfold|grouped] [--test-fraction 0.4] \
//!     [--random-state 42] [--kfold 5] [--positive-class 1] [--depth-rule paper|plateau] \
//!     [--bootstrap 1000]
//! ```
//!
//! Reads `features` (`[N, L, d]`, f32 or f16), `labels` (`[N]`, integer 0/1),
//! `groups` (`[N]`, for `--split grouped`) and the `__metadata__` (`site`
//! decides whether capture 0 is the embedding; `model`, `pooling`,
//! `precision` are echoed in the spec), fits one probe per layer and fold
//! (layers in parallel), prints a per-layer table and writes `metrics.json`
//! (schema v2, `docs/probes.md`). The spec's model and dataset identities are
//! the features file's SHA-256: a local run has no grid to name them.
//!
//! Exit codes: 0 success; 2 bad usage or input (unreadable file, missing or
//! misshapen tensor, labels not 0/1 or a single class, bad settings, output
//! directory missing); 1 anything else (writing failed). On any failure no
//! output file is left.
//!
//! Why this file is long: `cd-worker probe` checks every input of a features
//! file with file-and-field errors and writes the same metrics as a sweep cell;
//! its input checks dominate the length.

use cd_common::datasets::{NoiseKind, PromptMode};
use cd_common::depth::{DepthConfig, RuleName};
use cd_common::metrics::{CellMetrics, ProbeCellInputs};
use cd_common::probe::layers::{probe_all_layers, FeatureView};
use cd_common::probe::{ProbeConfig, SplitConfig};
use cd_common::spec::{
    DatasetIdentity, DatasetRef, ModelIdentity, ModelRef, ModelSource, Pooling, Precision, Site,
    TaskKind, TaskSpec, SPEC_SCHEMA,
};
use clap::{Args, ValueEnum};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Exit code: success.
pub(crate) const EXIT_OK: i32 = 0;
/// Exit code: writing the output failed.
pub(crate) const EXIT_OTHER: i32 = 1;
/// Exit code: bad usage, settings or input file.
pub(crate) const EXIT_INPUT: i32 = 2;

/// Converging-layer rule the report leads with (`docs/probes.md`); both are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DepthRule {
    /// First layer of the run within `--depth-tolerance` of the peak that ends at it.
    Plateau,
    /// The rule fitted to the paper's published converging layers.
    Paper,
}

/// How examples are split (`docs/probes.md`, "Splits").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitKind {
    /// Seeded stratified holdout of `--test-fraction` of each class.
    Stratified,
    /// scikit-learn's `train_test_split(test_size=--test-fraction, random_state=--random-state)`.
    Sklearn,
    /// Stratified k-fold with `--kfold` folds.
    Kfold,
    /// Whole groups (the file's `groups` tensor) on one side; k-fold with `--kfold`.
    Grouped,
}

/// Arguments of `cd-worker probe`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 ok, 2 usage or input error, 1 other failure. \
No output file is left behind on failure."
)]
pub struct ProbeArgs {
    /// FeatureView file from `cd-worker extract` (needs a `labels` tensor: extract with --label-field).
    pub features: PathBuf,
    /// Output metrics file (schema v2, see docs/probes.md).
    #[arg(long)]
    pub out: PathBuf,
    /// Inverse regularisation strength, as scikit-learn's `C`.
    #[arg(long, default_value_t = 1.0)]
    pub c: f64,
    /// Standardise features with training-fold statistics.
    #[arg(long)]
    pub standardize: bool,
    /// Seed of the split and the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How examples are split (default: stratified, or kfold when --kfold is given).
    #[arg(long, value_enum)]
    pub split: Option<SplitKind>,
    /// Held-out fraction (of every class for stratified, of all examples for sklearn).
    #[arg(long, default_value_t = 0.4)]
    pub test_fraction: f64,
    /// numpy seed of `--split sklearn` (default: --seed).
    #[arg(long)]
    pub random_state: Option<u32>,
    /// Number of folds (k-fold cross-validation).
    #[arg(long)]
    pub kfold: Option<usize>,
    /// Label (0 or 1) that is the positive class of F1 and AUC.
    #[arg(long, default_value_t = 1)]
    pub positive_class: u8,
    /// Converging-layer rule the table leads with (both are always computed).
    #[arg(long, value_enum, default_value_t = DepthRule::Paper)]
    pub depth_rule: DepthRule,
    /// Tolerance of the plateau rule (accuracy points as a fraction).
    #[arg(long, default_value_t = 0.01)]
    pub depth_tolerance: f64,
    /// Bootstrap resamples of the test examples for intervals (0: none).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Dataset name recorded in the spec (default: the features file's stem).
    #[arg(long)]
    pub dataset: Option<String>,
}

/// A failure with the exit code it maps to.
struct Failure {
    code: i32,
    err: anyhow::Error,
}

fn input_err(err: anyhow::Error) -> Failure {
    Failure {
        code: EXIT_INPUT,
        err,
    }
}

/// Run the command. Returns the process exit code; errors are printed here.
pub fn run(args: ProbeArgs) -> anyhow::Result<i32> {
    match run_inner(&args) {
        Ok(()) => Ok(EXIT_OK),
        Err(f) => {
            eprintln!("error: {:#}", f.err);
            Ok(f.code)
        }
    }
}

/// What a features file holds for probing.
#[derive(Debug)]
pub struct FeatureInput {
    /// `[n, n_layers, d]` row-major values.
    pub data: Vec<f32>,
    /// Examples.
    pub n: usize,
    /// Captured layers.
    pub n_layers: usize,
    /// Vector width.
    pub d: usize,
    /// Label (0/1) of each example.
    pub labels: Vec<u8>,
    /// Group id of each example, when the file has a `groups` tensor.
    pub groups: Option<Vec<usize>>,
    /// SHA-256 of the file.
    pub sha256: String,
    /// The file's `__metadata__`.
    pub metadata: HashMap<String, String>,
}

/// Read and check a features file. Errors name the file, the tensor or
/// metadata key, and what was expected.
pub fn read_features(path: &Path) -> anyhow::Result<FeatureInput> {
    let p = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{p}: cannot open features: {e}"))?;
    // SAFETY: the file is only read; a concurrent writer of the same path
    // would replace it by rename (as `extract` does), not modify it in place.
    let mmap = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| anyhow::anyhow!("{p}: cannot map features: {e}"))?;
    let st = SafeTensors::deserialize(&mmap)
        .map_err(|e| anyhow::anyhow!("{p}: not a safetensors file: {e}"))?;
    let (_, meta) = SafeTensors::read_metadata(&mmap)
        .map_err(|e| anyhow::anyhow!("{p}: unreadable safetensors header: {e}"))?;
    let metadata = meta.metadata().clone().unwrap_or_default();

    let feats = st.tensor("features").map_err(|_| {
        anyhow::anyhow!("{p}: no `features` tensor (expected [N, L, d] f32 or f16, as written by `cd-worker extract`)")
    })?;
    let &[n, n_layers, d] = feats.shape() else {
        anyhow::bail!(
            "{p}: tensor `features` has shape {:?}; expected 3 dimensions [N, L, d]",
            feats.shape()
        );
    };
    if n == 0 || n_layers == 0 || d == 0 {
        anyhow::bail!(
            "{p}: tensor `features` has an empty dimension: {:?}",
            feats.shape()
        );
    }
    let bytes = feats.data();
    let data: Vec<f32> = match feats.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => anyhow::bail!("{p}: tensor `features` has dtype {other:?}; expected F32 or F16"),
    };
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        let (row, rest) = (i / (n_layers * d), i % (n_layers * d));
        anyhow::bail!(
            "{p}: tensor `features` has a non-finite value at example {row}, layer {}, dimension {}",
            rest / d,
            rest % d
        );
    }

    let lab = st.tensor("labels").map_err(|_| {
        anyhow::anyhow!(
            "{p}: no `labels` tensor (expected [{n}] integers 0/1; extract with --label-field)"
        )
    })?;
    if lab.shape() != [n] {
        anyhow::bail!(
            "{p}: tensor `labels` has shape {:?}; expected [{n}] (one per example of `features`)",
            lab.shape()
        );
    }
    let raw: Vec<i64> = match lab.dtype() {
        Dtype::I64 => lab
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
        Dtype::I32 => lab
            .data()
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))))
            .collect(),
        Dtype::U8 | Dtype::BOOL => lab.data().iter().map(|&b| i64::from(b)).collect(),
        other => {
            anyhow::bail!("{p}: tensor `labels` has dtype {other:?}; expected I64, I32, U8 or BOOL")
        }
    };
    let mut labels = Vec::with_capacity(n);
    for (i, &v) in raw.iter().enumerate() {
        match v {
            0 | 1 => labels.push(v as u8),
            _ => anyhow::bail!(
                "{p}: tensor `labels` has value {v} at example {i}; a binary probe expects 0 or 1"
            ),
        }
    }
    let ones = labels.iter().filter(|&&v| v == 1).count();
    if ones == 0 || ones == n {
        anyhow::bail!(
            "{p}: tensor `labels` holds a single class ({} for all {n} examples); a probe needs examples of both 0 and 1",
            labels[0]
        );
    }
    let groups = match st.tensor("groups") {
        Ok(g) if g.dtype() == Dtype::I64 && g.shape() == [n] => Some(
            g.data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
                .collect(),
        ),
        Ok(g) => anyhow::bail!(
            "{p}: tensor `groups` has dtype {:?} and shape {:?}; expected I64 [{n}]",
            g.dtype(),
            g.shape()
        ),
        Err(_) => None,
    };
    use sha2::Digest;
    let sha256 = hex::encode(sha2::Sha256::digest(&mmap[..]));
    Ok(FeatureInput {
        data,
        n,
        n_layers,
        d,
        labels,
        groups,
        sha256,
        metadata,
    })
}

/// A metadata value parsed with `FromStr`, naming the key and file on error.
fn meta_field<T>(path: &Path, meta: &HashMap<String, String>, key: &str) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let v = meta.get(key).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: metadata has no `{key}` (expected the header written by `cd-worker extract`)",
            path.display()
        )
    })?;
    v.parse()
        .map_err(|e| anyhow::anyhow!("{}: metadata `{key}`: {e}", path.display()))
}

/// The task spec recorded in `metrics.json`, from the file's metadata.
fn spec_for(
    args: &ProbeArgs,
    input: &FeatureInput,
    probe: &ProbeConfig,
    depth: &DepthConfig,
) -> anyhow::Result<TaskSpec> {
    let meta = &input.metadata;
    let path = &args.features;
    let site: Site = meta_field(path, meta, "site")?;
    let pooling: Pooling = meta_field(path, meta, "pooling")?;
    let precision: Precision = meta_field(path, meta, "precision")?;
    let model = meta.get("model").cloned().unwrap_or_default();
    let source = if model.ends_with(".gguf") {
        ModelSource::Gguf {
            path: model.clone(),
        }
    } else if Path::new(&model).is_dir() || model.is_empty() {
        ModelSource::Dir {
            path: model.clone(),
        }
    } else {
        ModelSource::Hub {
            repo: model.clone(),
            revision: None,
        }
    };
    let name = Path::new(&model)
        .file_stem()
        .map_or_else(|| model.clone(), |s| s.to_string_lossy().into_owned());
    let dataset = args.dataset.clone().unwrap_or_else(|| {
        path.file_stem()
            .map_or_else(|| "features".into(), |s| s.to_string_lossy().into_owned())
    });
    let prompt_mode = match meta.get("prompt_mode") {
        Some(m) => PromptMode::parse(m).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => PromptMode::Paper,
    };
    let noise = match meta.get("noise") {
        Some(n) => NoiseKind::parse(n).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => NoiseKind::None,
    };
    Ok(TaskSpec {
        schema: SPEC_SCHEMA,
        sweep: "local".into(),
        kind: TaskKind::Probe,
        model: ModelRef {
            name,
            identity: source.hub_identity().unwrap_or(ModelIdentity::Content {
                sha256: input.sha256.clone(),
            }),
            source,
            size_b: 0.0,
        },
        dataset: DatasetRef {
            name: dataset,
            identity: DatasetIdentity {
                manifest_sha256: String::new(),
                files_sha256: vec![input.sha256.clone()],
            },
        },
        data_root: path.display().to_string(),
        precision,
        noise,
        prompt_mode,
        site,
        pooling,
        seed: args.seed,
        probe: Some(probe.clone()),
        depth: Some(depth.clone()),
        mc: None,
        batch_size: meta
            .get("batch_size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        upload_features: false,
    })
}

fn settings(args: &ProbeArgs) -> anyhow::Result<(ProbeConfig, DepthConfig)> {
    let probe = ProbeConfig {
        c: args.c,
        standardize: args.standardize,
        positive_class: args.positive_class,
        split: match (args.split, args.kfold) {
            (Some(SplitKind::Sklearn), _) => SplitConfig::Sklearn {
                test_size: args.test_fraction,
                random_state: args.random_state,
            },
            (Some(SplitKind::Grouped), k) => SplitConfig::Grouped {
                k,
                test_fraction: args.test_fraction,
            },
            (Some(SplitKind::Kfold), None) => {
                anyhow::bail!("--split kfold needs --kfold K (the number of folds)")
            }
            (Some(SplitKind::Kfold), Some(k)) | (None, Some(k)) => SplitConfig::Kfold { k },
            (Some(SplitKind::Stratified), Some(_)) => {
                anyhow::bail!("--kfold is a k-fold split: drop --split stratified or --kfold")
            }
            (Some(SplitKind::Stratified), None) | (None, None) => SplitConfig::Stratified {
                test_fraction: args.test_fraction,
            },
        },
        ..ProbeConfig::default()
    };
    probe.validate()?;
    if !(args.depth_tolerance >= 0.0 && args.depth_tolerance < 1.0) {
        anyhow::bail!(
            "--depth-tolerance must be in [0, 1), got {}",
            args.depth_tolerance
        );
    }
    let depth = DepthConfig {
        rule: match args.depth_rule {
            DepthRule::Plateau => RuleName::Plateau,
            DepthRule::Paper => RuleName::Paper,
        },
        tolerance: args.depth_tolerance,
        bootstrap: args.bootstrap,
        ..DepthConfig::default()
    };
    depth.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((probe, depth))
}

fn run_inner(args: &ProbeArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let (probe, depth) = settings(args).map_err(input_err)?;
    let out_dir = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        return Err(input_err(anyhow::anyhow!(
            "--out {}: directory {} does not exist",
            args.out.display(),
            out_dir.display()
        )));
    }
    let t = Instant::now();
    let input = read_features(&args.features).map_err(input_err)?;
    let load_s = t.elapsed().as_secs_f64();
    let spec = spec_for(args, &input, &probe, &depth).map_err(input_err)?;
    if probe.split.needs_groups() && input.groups.is_none() {
        return Err(input_err(anyhow::anyhow!(
            "{}: --split grouped needs a `groups` tensor ([N] I64, written for datasets with a group field)",
            args.features.display()
        )));
    }
    if let SplitConfig::Kfold { k } = probe.split {
        let minority = input.labels.iter().filter(|&&v| v == 1).count();
        let minority = minority.min(input.n - minority);
        if k > minority {
            return Err(input_err(anyhow::anyhow!(
                "{}: --kfold {k} needs at least {k} examples of each class; the smaller class has {minority}",
                args.features.display()
            )));
        }
    }
    tracing::info!(
        file = %args.features.display(),
        examples = input.n,
        layers = input.n_layers,
        width = input.d,
        "probing features"
    );
    let run = probe_all_layers(
        &FeatureView {
            data: &input.data,
            n: input.n,
            n_layers: input.n_layers,
            d: input.d,
            labels: &input.labels,
        },
        input.groups.as_deref(),
        &probe,
        args.seed,
    )
    .map_err(|e| input_err(anyhow::anyhow!("{}: {e}", args.features.display())))?;
    let mut timings = BTreeMap::new();
    timings.insert("load".to_string(), load_s);
    timings.insert("probe".to_string(), run.seconds);
    timings.insert("total".to_string(), started.elapsed().as_secs_f64());
    let mut versions = BTreeMap::new();
    versions.insert("cd-worker".into(), env!("CARGO_PKG_VERSION").into());
    if let Some(v) = input.metadata.get("version") {
        versions.insert("extract".into(), v.clone());
    }
    let metrics = CellMetrics::for_probe(
        ProbeCellInputs {
            spec: &spec,
            labels: &input.labels,
            class_names: None,
            n_layers: input.n_layers,
            includes_embedding: spec.site == Site::Residual,
            probe: &probe,
            depth: &depth,
            versions,
            timings,
            dataset: None,
        },
        &run,
    )
    .map_err(|e| input_err(anyhow::anyhow!("{}: {e}", args.features.display())))?;
    write_atomic(&args.out, metrics.to_json().as_bytes()).map_err(|err| Failure {
        code: EXIT_OTHER,
        err,
    })?;
    print_table(&metrics);
    Ok(())
}

/// Write to a temporary file in the destination directory, then rename, so a
/// reader never sees a partial `metrics.json` and a failure leaves nothing.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let ctx = |e: std::io::Error| anyhow::anyhow!("{}: cannot write: {e}", path.display());
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(ctx)?;
    tmp.write_all(bytes).map_err(ctx)?;
    tmp.as_file().sync_all().map_err(ctx)?;
    tmp.persist(path).map_err(|e| ctx(e.error))?;
    Ok(())
}

/// One line per layer, then the concept depth, on stdout.
fn print_table(m: &CellMetrics) {
    let mut out = String::new();
    out.push_str("layer  depth  accuracy        f1      auc       baseline  converged\n");
    for r in &m.layers {
        out.push_str(&format!(
            "{:>5}  {:>5.3}  {:.4}±{:.4}  {:.4}  {:>8}  {:.4}    {}/{}\n",
            r.layer,
            r.depth_fraction,
            r.accuracy_mean,
            r.accuracy_std,
            r.f1_mean,
            r.auc_mean.map_or("-".into(), |a| format!("{a:.4}")),
            r.baseline_mean,
            r.converged_folds,
            r.n_folds
        ));
    }
    if let Some(d) = &m.depth {
        out.push_str(&format!(
            "peak: layer {} ({:.3}) accuracy {:.4}; converging (paper rule): layer {} ({:.3}); converging (plateau rule): layer {} ({:.3})",
            d.peak.layer,
            d.peak.fraction,
            d.peak.accuracy,
            d.converging_paper.layer,
            d.converging_paper.fraction,
            d.converging_plateau.layer,
            d.converging_plateau.fraction
        ));
        match &d.jumping {
            Some(j) => out.push_str(&format!(
                "; jumping: layer {} ({:.3})\n",
                j.layer, j.fraction
            )),
            None => out.push_str("; jumping: none\n"),
        }
    }
    print!("{out}");
}
