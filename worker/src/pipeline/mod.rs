//! Execute one task: model → dataset → features → probes (or multiple-choice
//! scores) → storage.
//!
//! The order of writes is the contract with the coordinator: `spec.json`, then
//! the optional `features.safetensors` (multipart), then `metrics.json` LAST, so
//! the presence of `metrics.json` means the task is complete. A task whose
//! `metrics.json` already exists is not recomputed. Nothing is written after
//! the task was cancelled (lease lost, shutdown), and storage failures are
//! retried with backoff for a bounded time before the task fails.
//!
//! The model stays loaded between tasks of the same model and precision:
//! loading a large model for every cell would dominate a sweep.

use crate::backoff::Backoff;
use crate::data_fetch::{resolve_for as resolve_data_root, FetchError, FetchOptions};
use crate::devices::DeviceInfo;
use crate::engine::extract::{ExtractOptions, ExtractProgress};
use crate::engine::load::{open_model, LoadOptions};
use crate::engine::logit_lens::{Lens, McInput};
use crate::engine::output::{write_features, FeatureFile, OutputDtype, OutputMetadata};
use crate::engine::{DeviceMap, EngineError, Model};
use cd_common::datasets::{
    self, BinaryDataset, BinaryOptions, DataRoot, DatasetError, DatasetProvenance, McDataset,
    McOptions,
};
use cd_common::depth::DepthConfig;
use cd_common::metrics::{CellMetrics, MetricsError, ProbeCellInputs};
use cd_common::probe::layers::{probe_all_layers, FeatureView};
use cd_common::probe::mc::McConfig;
use cd_common::probe::split::test_fold;
use cd_common::probe::ProbeConfig;
use cd_common::probe::ProbeError;
use cd_common::spec::{
    DatasetRef, ModelSource, Precision, ResolvedTask, Site, TaskKind, TaskSpec, Work,
};
use cd_common::storage::{layout, Store, StoreError};
use ndarray::{s, Array3};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod progress;
mod workload;

use cd_proto::v1::TaskPhase as Phase;
pub use progress::Progress;
use workload::Workload;

/// Why a task did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The task was cancelled (its lease is gone or the worker is shutting down).
    #[error("task cancelled")]
    Cancelled,
    /// The spec itself cannot be executed.
    #[error("task spec: {0}")]
    Spec(String),
    /// Loading or running the model failed.
    #[error("model `{model}`: {source}")]
    Engine {
        /// The model's display name.
        model: String,
        /// What the engine said.
        source: EngineError,
    },
    /// The model does not fit the worker's devices.
    #[error("model `{model}`: {message}")]
    Placement {
        /// The model's display name.
        model: String,
        /// The planner's refusal.
        message: String,
    },
    /// The dataset could not be loaded.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The dataset files this worker read are not the ones the task names
    /// (its data root holds other content than the coordinator hashed).
    #[error("dataset `{dataset}`: the files read here have SHA-256 {found:?}, but the task was made for {expected:?}; this node's data root holds other data")]
    DataMismatch {
        /// The dataset.
        dataset: String,
        /// What the task's identity names.
        expected: Vec<String>,
        /// What was read.
        found: Vec<String>,
    },
    /// A remote data root could not be copied locally (boxed: object-store
    /// errors are large and every task result carries this type).
    #[error(transparent)]
    DataFetch(#[from] Box<FetchError>),
    /// Probing failed.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The metrics could not be built.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Storage kept failing past the retry budget.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A local scratch file could not be written.
    #[error("scratch file: {0}")]
    Scratch(String),
}

impl PipelineError {
    /// Whether the failure is this worker's rather than the task's: its data
    /// root, copy of the data, model files, devices, store or software
    /// version. Another worker may well compute the cell, so it is reported
    /// as a worker fault (not charged to the task; repeated ones quarantine
    /// the worker).
    pub fn is_worker_fault(&self) -> bool {
        match self {
            PipelineError::Spec(_)
            | PipelineError::Placement { .. }
            | PipelineError::DataMismatch { .. }
            | PipelineError::DataFetch(_)
            | PipelineError::Store(_)
            | PipelineError::Scratch(_) => true,
            PipelineError::Engine { source, .. } => !matches!(source, EngineError::Input { .. }),
            PipelineError::Dataset(e) => e.is_local(),
            PipelineError::Cancelled | PipelineError::Probe(_) | PipelineError::Metrics(_) => false,
        }
    }

    /// A failure no retry can fix (bad spec, dataset or probe settings, model
    /// that does not fit): the coordinator should not re-queue it.
    pub fn is_permanent(&self) -> bool {
        match self {
            PipelineError::Spec(_)
            | PipelineError::Placement { .. }
            | PipelineError::DataMismatch { .. }
            | PipelineError::Dataset(_)
            | PipelineError::Probe(_)
            | PipelineError::Metrics(_) => true,
            // Input errors (a text that tokenises to nothing) repeat on every
            // worker; load errors may be a transient download or disk problem.
            PipelineError::Engine { source, .. } => matches!(source, EngineError::Input { .. }),
            PipelineError::DataFetch(e) => e.is_permanent(),
            PipelineError::Cancelled | PipelineError::Store(_) | PipelineError::Scratch(_) => false,
        }
    }
}

/// A finished task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Root-relative key of the task's `metrics.json`.
    pub metrics_key: String,
    /// True when `metrics.json` already existed and nothing was recomputed.
    pub already_complete: bool,
}

/// Where and how models are loaded.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The worker's devices (one CPU, or CUDA devices in order).
    pub devices: Vec<DeviceInfo>,
    /// Never touch the network for Hub models.
    pub offline: bool,
    /// Hub cache directory.
    pub model_cache: Option<PathBuf>,
    /// Where copies of remote data roots go (`None`: `data_fetch`'s default,
    /// which reads `CD_DATA_CACHE`).
    pub data_cache: Option<PathBuf>,
    /// Where this node keeps the datasets, when it is not the grid's
    /// `data_root` (another mount point, a local copy). Tasks are
    /// content-addressed, so files that differ from the grid's are refused as
    /// a data mismatch rather than silently used.
    pub data_root: Option<String>,
    /// How long storage writes are retried before the task fails.
    pub store_retry_budget: Duration,
    /// Texts per extraction chunk, as a multiple of the batch size: between
    /// chunks the task checks for cancellation and reports progress.
    pub chunk_batches: usize,
}

impl PipelineOptions {
    /// Defaults for the given devices.
    pub fn new(devices: Vec<DeviceInfo>) -> Self {
        PipelineOptions {
            devices,
            offline: false,
            model_cache: None,
            data_cache: None,
            data_root: None,
            store_retry_budget: Duration::from_secs(600),
            chunk_batches: 8,
        }
    }
}

struct Loaded {
    source: ModelSource,
    precision: Precision,
    name: String,
    model: Model,
}

/// Executes tasks one after the other, keeping the last model loaded.
pub struct Pipeline {
    opts: PipelineOptions,
    loaded: Option<Loaded>,
}

/// Everything one execution needs besides the spec.
pub struct TaskContext<'a> {
    /// Where results go.
    pub store: &'a Store,
    /// Runtime the (async) storage calls run on; the pipeline itself runs on
    /// a plain thread and blocks on them.
    pub runtime: &'a tokio::runtime::Handle,
    /// Shared with the heartbeat loop.
    pub progress: &'a Progress,
    /// Names this attempt's objects before it wins (the lease id, or
    /// `cell-<pid>` outside a sweep): attempts never overwrite each other.
    pub attempt: &'a str,
}

impl Pipeline {
    /// A pipeline with no model loaded yet.
    pub fn new(opts: PipelineOptions) -> Self {
        Pipeline { opts, loaded: None }
    }

    /// Drop the loaded model (after a panic left it in an unknown state).
    pub fn unload(&mut self) {
        self.loaded = None;
    }

    /// Display name of the model loaded now, if any.
    pub fn loaded_model(&self) -> Option<&str> {
        self.loaded.as_ref().map(|l| l.name.as_str())
    }

    /// Run one task to completion and write its results.
    pub fn execute(
        &mut self,
        spec: &TaskSpec,
        ctx: &TaskContext<'_>,
    ) -> Result<Outcome, PipelineError> {
        let started = Instant::now();
        let id = spec.id();
        let metrics_key = layout::metrics(&spec.sweep, &id);
        let progress = ctx.progress;
        progress.check()?;
        if self.store_call(ctx, "check completion", || {
            ctx.store.is_complete(&spec.sweep, &id)
        })? {
            tracing::info!(task = %id, "metrics.json already present: not recomputing");
            return Ok(Outcome {
                metrics_key,
                already_complete: true,
            });
        }

        // The one check of the spec: from here on the task's dataset and
        // settings are bound, nothing is looked up or re-checked.
        let task = spec
            .resolve()
            .map_err(|e| PipelineError::Spec(e.to_string()))?;
        let mut timings = BTreeMap::new();
        // The data first: its real token lengths size the memory plan.
        let metrics = match task.work {
            Work::Probe { probe, depth } => {
                let data = self.load_binary(&task, ctx, &mut timings)?;
                let workload = Workload::Texts {
                    texts: &data.texts,
                    batch_size: spec.batch_size,
                };
                self.load_model(spec, workload, progress, &mut timings)?;
                self.run_probe(&task, &data, probe, depth, ctx, &mut timings, started)?
            }
            Work::MultipleChoice { mc } => {
                let data = self.load_mc(&task, mc, ctx, &mut timings)?;
                let workload = Workload::Choices(&data.items);
                self.load_model(spec, workload, progress, &mut timings)?;
                self.run_mc(&task, &data, mc, ctx, &mut timings, started)?
            }
        };

        progress.set_phase(Phase::Upload);
        let value =
            serde_json::to_value(&metrics).map_err(|e| PipelineError::Scratch(e.to_string()))?;
        // Checked once more right before the completion marker: a cancelled
        // task must not mark itself complete.
        progress.check()?;
        match self.store_call(ctx, "write metrics.json", || {
            ctx.store.put_metrics(&spec.sweep, &id, &value)
        }) {
            Ok(()) => {}
            Err(PipelineError::Store(StoreError::Exists { .. })) => {
                // Another attempt finished first (this lease lapsed meanwhile):
                // its result stands; ours is dropped, never written over it.
                tracing::warn!(task = %id, "another attempt completed this cell first: keeping its result");
                let _ = ctx
                    .runtime
                    .block_on(ctx.store.tidy_completed(&spec.sweep, &id));
                return Ok(Outcome {
                    metrics_key,
                    already_complete: true,
                });
            }
            Err(e) => return Err(e),
        }
        if spec.upload_features && spec.kind == TaskKind::Probe {
            self.store_call(ctx, "promote features.safetensors", || {
                ctx.store.promote_features(&spec.sweep, &id, ctx.attempt)
            })?;
        }
        tracing::info!(task = %id, seconds = started.elapsed().as_secs_f64(), "task complete");
        Ok(Outcome {
            metrics_key,
            already_complete: false,
        })
    }

    /// The `load_model` phase: [`Pipeline::ensure_model`], timed.
    fn load_model(
        &mut self,
        spec: &TaskSpec,
        workload: Workload<'_>,
        progress: &Progress,
        timings: &mut BTreeMap<String, f64>,
    ) -> Result<(), PipelineError> {
        progress.set_phase(Phase::LoadModel);
        let t = Instant::now();
        self.ensure_model(spec, workload)?;
        timings.insert("load_model".to_string(), t.elapsed().as_secs_f64());
        progress.check()
    }

    /// Load the spec's model unless it is the one already loaded; on CUDA
    /// devices its placement is planned for the workload's largest batch.
    fn ensure_model(
        &mut self,
        spec: &TaskSpec,
        workload: Workload<'_>,
    ) -> Result<(), PipelineError> {
        if let Some(l) = &self.loaded {
            if l.source == spec.model.source && l.precision == spec.precision {
                tracing::debug!(model = %l.name, "reusing loaded model");
                return Ok(());
            }
        }
        // Free the old model first: two large models rarely fit side by side.
        self.loaded = None;
        let name = spec.model.name.clone();
        let engine_err = |source| PipelineError::Engine {
            model: name.clone(),
            source,
        };
        let first = self
            .opts
            .devices
            .first()
            .ok_or_else(|| PipelineError::Spec("the worker has no device".into()))?;
        let load = LoadOptions {
            precision: spec.precision,
            device: first.device.clone(),
            device_map: None,
            offline: self.opts.offline,
            cache_dir: self.opts.model_cache.clone(),
            revision: None,
        };
        tracing::info!(model = %name, precision = %spec.precision, "loading model");
        let files = open_model(&spec.model.source, &load).map_err(engine_err)?;
        let devices = if self.opts.devices.iter().any(DeviceInfo::is_cuda) {
            let batch = workload
                .largest_batch(&files.tokenizer)
                .map_err(|message| PipelineError::Placement {
                    model: name.clone(),
                    message,
                })?;
            tracing::info!(model = %name, batch = batch.batch, tokens = batch.seq, "planning placement for the largest batch");
            let (_, map) =
                crate::placement::place(&files.config, spec.precision, batch, &self.opts.devices)
                    .map_err(|e| PipelineError::Placement {
                    model: name.clone(),
                    message: e.to_string(),
                })?;
            map
        } else {
            DeviceMap::single(first.device.clone(), files.config.num_layers)
        };
        let model = files.build(spec.precision, devices).map_err(engine_err)?;
        self.loaded = Some(Loaded {
            source: spec.model.source.clone(),
            precision: spec.precision,
            name,
            model,
        });
        Ok(())
    }

    /// The spec's data root, made local: remote files the dataset needs are
    /// copied to the data cache first (see `data_fetch`).
    fn data_root(
        &self,
        task: &ResolvedTask<'_>,
        ctx: &TaskContext<'_>,
    ) -> Result<DataRoot, PipelineError> {
        let spec = task.spec;
        let fetch = FetchOptions {
            cache_dir: self.opts.data_cache.clone(),
            hub_cache: self.opts.model_cache.clone(),
            offline: self.opts.offline,
        };
        let root = DataRoot::parse(self.opts.data_root.as_deref().unwrap_or(&spec.data_root))?;
        resolve_data_root(&root, task.dataset.manifest, &fetch, ctx.runtime)
            .map_err(|e| PipelineError::DataFetch(Box::new(e)))
    }

    fn model(&self) -> &Model {
        &self.loaded.as_ref().expect("ensure_model ran first").model
    }

    /// The `load_data` phase of a probe task.
    fn load_binary(
        &self,
        task: &ResolvedTask<'_>,
        ctx: &TaskContext<'_>,
        timings: &mut BTreeMap<String, f64>,
    ) -> Result<BinaryDataset, PipelineError> {
        let (spec, progress) = (task.spec, ctx.progress);
        progress.set_phase(Phase::LoadData);
        let t = Instant::now();
        let root = self.data_root(task, ctx)?;
        let opts = BinaryOptions {
            prompt_mode: spec.prompt_mode,
            noise: spec.noise,
            seed: spec.seed,
            max_per_class: None,
        };
        let data =
            datasets::load_binary_of(task.dataset.manifest, task.dataset.param, &root, &opts)?;
        check_dataset_identity(&spec.dataset, &data.provenance)?;
        timings.insert("load_data".to_string(), t.elapsed().as_secs_f64());
        tracing::info!(dataset = %spec.dataset.name, examples = data.len(), "dataset loaded");
        progress.check()?;
        Ok(data)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_probe(
        &mut self,
        task: &ResolvedTask<'_>,
        data: &BinaryDataset,
        probe_cfg: &ProbeConfig,
        depth_cfg: &DepthConfig,
        ctx: &TaskContext<'_>,
        timings: &mut BTreeMap<String, f64>,
        started: Instant,
    ) -> Result<CellMetrics, PipelineError> {
        let (spec, progress) = (task.spec, ctx.progress);
        let t = Instant::now();
        let (features, token_counts) = self.extract(spec, &data.texts, progress)?;
        timings.insert("extract".to_string(), t.elapsed().as_secs_f64());

        progress.set_phase(Phase::Probe);
        let (n, n_layers, d) = features.dim();
        let flat = features
            .as_slice()
            .expect("features are built in standard layout");
        let run = probe_all_layers(
            &FeatureView {
                data: flat,
                n,
                n_layers,
                d,
                labels: &data.labels,
            },
            data.groups.as_deref(),
            probe_cfg,
            spec.seed,
        )?;
        progress.check()?;

        let split = test_fold(&run.folds, n);
        self.upload_spec_and_features(
            spec,
            ctx,
            &features,
            &token_counts,
            Some(&Probed {
                labels: &data.labels,
                test_fold: &split,
                groups: data.groups.as_deref(),
            }),
        )?;
        timings.insert("total".to_string(), started.elapsed().as_secs_f64());
        let metrics = CellMetrics::for_probe(
            ProbeCellInputs {
                spec,
                labels: &data.labels,
                class_names: Some(data.class_names.clone()),
                n_layers,
                includes_embedding: spec.site == Site::Residual,
                probe: probe_cfg,
                depth: depth_cfg,
                versions: versions(),
                timings: timings.clone(),
                dataset: Some(data.provenance.clone()),
            },
            &run,
        )?;
        Ok(metrics)
    }

    /// The `load_data` phase of a multiple-choice task.
    fn load_mc(
        &self,
        task: &ResolvedTask<'_>,
        mc_cfg: &McConfig,
        ctx: &TaskContext<'_>,
        timings: &mut BTreeMap<String, f64>,
    ) -> Result<McDataset, PipelineError> {
        let (spec, progress) = (task.spec, ctx.progress);
        progress.set_phase(Phase::LoadData);
        let t = Instant::now();
        let root = self.data_root(task, ctx)?;
        let opts = McOptions {
            seed: spec.seed,
            max_items: mc_cfg.max_items,
            ..McOptions::default()
        };
        let data = datasets::load_mc_of(task.dataset.manifest, task.dataset.param, &root, &opts)?;
        check_dataset_identity(&spec.dataset, &data.provenance)?;
        timings.insert("load_data".to_string(), t.elapsed().as_secs_f64());
        tracing::info!(dataset = %spec.dataset.name, items = data.items.len(), "dataset loaded");
        progress.check()?;
        Ok(data)
    }

    fn run_mc(
        &mut self,
        task: &ResolvedTask<'_>,
        data: &McDataset,
        mc_cfg: &McConfig,
        ctx: &TaskContext<'_>,
        timings: &mut BTreeMap<String, f64>,
        started: Instant,
    ) -> Result<CellMetrics, PipelineError> {
        let spec = task.spec;
        use cd_common::probe::mc::{LensScores, ScoredItem};
        let progress = ctx.progress;

        // Scoring is the forward pass here: report it as extraction.
        progress.set_phase(Phase::Extract);
        let t = Instant::now();
        let model = self.model();
        let engine_err = |source| PipelineError::Engine {
            model: spec.model.name.clone(),
            source,
        };
        let lenses = [Lens::Faithful, Lens::Normed];
        let mut per_lens: Vec<Vec<ScoredItem>> =
            vec![Vec::with_capacity(data.items.len()); lenses.len()];
        let total = data.items.len() as u64;
        for (i, item) in data.items.iter().enumerate() {
            progress.check()?;
            progress.set_counts(i as u64, total);
            let input = McInput {
                prompt: item.prompt.clone(),
                candidates: item.candidates.clone(),
            };
            // One forward pass scores both lenses.
            let scored = model
                .score_mc_lenses(&input, &lenses, mc_cfg.score_dtype)
                .map_err(engine_err)?;
            for (s, out) in scored.into_iter().zip(per_lens.iter_mut()) {
                out.push(ScoredItem {
                    sums: s.scores,
                    n_tokens: s.n_tokens,
                    correct: item.correct.clone(),
                    best: item.best,
                });
            }
        }
        progress.set_counts(total, total);
        timings.insert("score".to_string(), t.elapsed().as_secs_f64());
        let scores: Vec<LensScores> = lenses
            .iter()
            .zip(per_lens)
            .map(|(lens, items)| LensScores { lens: *lens, items })
            .collect();

        progress.set_phase(Phase::Upload);
        progress.check()?;
        self.store_call(ctx, "write spec.json", || ctx.store.put_spec(spec))?;
        self.upload_mc_scores(spec, mc_cfg, ctx, &scores)?;
        timings.insert("total".to_string(), started.elapsed().as_secs_f64());
        // The logit lens reads the residual stream, embedding output included.
        Ok(CellMetrics::for_mc(
            spec,
            &scores,
            true,
            versions(),
            timings.clone(),
        )?)
    }

    /// Extract `[N, L, d]` features in chunks, reporting progress and
    /// stopping between chunks when cancelled. Extraction does not depend on
    /// batch composition, so chunking does not change the result.
    fn extract(
        &self,
        spec: &TaskSpec,
        texts: &[String],
        progress: &Progress,
    ) -> Result<(Array3<f32>, Vec<usize>), PipelineError> {
        progress.set_phase(Phase::Extract);
        let model = self.model();
        let engine_err = |source| PipelineError::Engine {
            model: spec.model.name.clone(),
            source,
        };
        let opts = ExtractOptions {
            site: spec.site,
            pooling: spec.pooling,
            batch_size: spec.batch_size.max(1),
            ..ExtractOptions::default()
        };
        let n = texts.len();
        let n_layers = model.num_capture_layers(spec.site);
        let d = model.config().hidden_size;
        let mut data = Array3::<f32>::zeros((n, n_layers, d));
        let mut token_counts = Vec::with_capacity(n);
        let chunk = (opts.batch_size * self.opts.chunk_batches.max(1)).max(1);
        progress.set_counts(0, n as u64);
        for start in (0..n).step_by(chunk) {
            progress.check()?;
            let end = (start + chunk).min(n);
            let mut tokens_seen = 0usize;
            let mut report = |p: ExtractProgress| {
                progress.set_counts((start + p.texts_done) as u64, n as u64);
                progress.add_tokens(p.tokens_done.saturating_sub(tokens_seen) as u64);
                tokens_seen = p.tokens_done;
            };
            let part = model
                .extract(&texts[start..end], &opts, &mut report)
                .map_err(engine_err)?;
            if part.data.dim() != (end - start, n_layers, d) {
                return Err(PipelineError::Scratch(format!(
                    "engine returned features of shape {:?}, expected {:?}",
                    part.data.dim(),
                    (end - start, n_layers, d)
                )));
            }
            data.slice_mut(s![start..end, .., ..]).assign(&part.data);
            token_counts.extend(part.token_counts.iter().map(|&c| c as usize));
            progress.set_counts(end as u64, n as u64);
        }
        Ok((data, token_counts))
    }

    /// Write every item's per-layer candidate scores (`mc_scores.safetensors`)
    /// beside the metrics, so anyone can recompute MC1/MC2/MC3.
    fn upload_mc_scores(
        &self,
        spec: &TaskSpec,
        mc_cfg: &McConfig,
        ctx: &TaskContext<'_>,
        scores: &[cd_common::probe::mc::LensScores],
    ) -> Result<(), PipelineError> {
        use crate::engine::output::{write_mc_scores, McScoresFile};
        let Some(first) = scores.first() else {
            return Ok(());
        };
        let n_layers = first.items.first().map_or(0, |it| it.sums.len());
        let (mut item, mut n_tokens, mut is_true, mut is_best) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, it) in first.items.iter().enumerate() {
            for (c, &t) in it.correct.iter().enumerate() {
                item.push(i);
                n_tokens.push(it.n_tokens[c]);
                is_true.push(t);
                is_best.push(c == it.best);
            }
        }
        let sums: Vec<Vec<Vec<f32>>> = scores
            .iter()
            .map(|s| {
                (0..n_layers)
                    .map(|l| {
                        s.items
                            .iter()
                            .flat_map(|it| it.sums[l].iter().copied())
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let lenses: Vec<&str> = scores.iter().map(|s| s.lens.as_str()).collect();
        let mut metadata = BTreeMap::new();
        metadata.insert("task_id".to_string(), spec.id().0);
        metadata.insert("dataset".to_string(), spec.dataset.name.clone());
        metadata.insert("model".to_string(), spec.model.name.clone());
        metadata.insert(
            "score_dtype".to_string(),
            mc_cfg.score_dtype.as_str().to_string(),
        );
        metadata.insert("n_items".to_string(), first.items.len().to_string());
        let scratch = tempfile::tempdir().map_err(|e| PipelineError::Scratch(e.to_string()))?;
        let path = scratch.path().join("mc_scores.safetensors");
        write_mc_scores(
            &path,
            &McScoresFile {
                lenses: &lenses,
                sums: &sums,
                n_tokens: &n_tokens,
                item: &item,
                is_true: &is_true,
                is_best: &is_best,
                metadata,
            },
        )
        .map_err(|e| PipelineError::Scratch(e.to_string()))?;
        let rel = layout::mc_scores(&spec.sweep, &spec.id());
        self.store_call(ctx, "upload mc_scores.safetensors", || {
            ctx.store.put_file(&rel, &path)
        })
    }

    /// Write `spec.json` and, when asked, the features (multipart).
    fn upload_spec_and_features(
        &self,
        spec: &TaskSpec,
        ctx: &TaskContext<'_>,
        features: &Array3<f32>,
        token_counts: &[usize],
        probed: Option<&Probed<'_>>,
    ) -> Result<(), PipelineError> {
        let progress = ctx.progress;
        progress.set_phase(Phase::Upload);
        progress.check()?;
        self.store_call(ctx, "write spec.json", || ctx.store.put_spec(spec))?;
        if !spec.upload_features {
            return Ok(());
        }
        let scratch = tempfile::tempdir().map_err(|e| PipelineError::Scratch(e.to_string()))?;
        let path = scratch.path().join("features.safetensors");
        let labels_i64: Option<Vec<i64>> =
            probed.map(|p| p.labels.iter().map(|&v| v as i64).collect());
        let groups_i64: Option<Vec<i64>> = probed
            .and_then(|p| p.groups)
            .map(|g| g.iter().map(|&v| v as i64).collect());
        let mut extra = BTreeMap::new();
        extra.insert("task_id".to_string(), spec.id().0);
        extra.insert("dataset".to_string(), spec.dataset.name.clone());
        extra.insert("noise".to_string(), spec.noise.name());
        extra.insert(
            "prompt_mode".to_string(),
            spec.prompt_mode.as_str().to_string(),
        );
        if let Some(split) = spec.probe.as_ref().map(|p| &p.split) {
            extra.insert("split".to_string(), split.label());
        }
        let meta = OutputMetadata {
            model: spec.model.name.clone(),
            site: spec.site.as_str().to_string(),
            pooling: spec.pooling.as_str().to_string(),
            precision: spec.precision.as_str().to_string(),
            input_sha256: None,
            extra,
        };
        write_features(
            &path,
            &FeatureFile {
                features: features.view(),
                token_counts,
                labels: labels_i64.as_deref(),
                test_fold: probed.map(|p| p.test_fold),
                groups: groups_i64.as_deref(),
                dtype: OutputDtype::F32,
                metadata: &meta,
            },
        )
        .map_err(|e| PipelineError::Scratch(e.to_string()))?;
        let rel = layout::attempt_features(&spec.sweep, &spec.id(), ctx.attempt);
        self.store_call(ctx, "upload features.safetensors", || {
            ctx.store.put_file(&rel, &path)
        })
    }

    /// Run one storage call, retrying with backoff until it succeeds, the
    /// retry budget is spent, or the task is cancelled.
    fn store_call<T, F, Fut>(
        &self,
        ctx: &TaskContext<'_>,
        what: &str,
        mut op: F,
    ) -> Result<T, PipelineError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let mut backoff = Backoff::default_rpc();
        loop {
            ctx.progress.check()?;
            tracing::debug!(what, "storage call");
            match ctx.runtime.block_on(op()) {
                Ok(v) => return Ok(v),
                Err(e @ (StoreError::Url { .. } | StoreError::Exists { .. })) => {
                    return Err(e.into())
                }
                Err(e) if started.elapsed() >= self.opts.store_retry_budget => {
                    tracing::error!(what, error = %e, "storage still failing: giving up on the task");
                    return Err(e.into());
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(what, error = %e, retry_in_ms = delay.as_millis() as u64, "storage call failed");
                    sleep_unless_cancelled(delay, ctx.progress);
                }
            }
        }
    }
}

/// What a probe cell adds to its features file.
struct Probed<'a> {
    labels: &'a [u8],
    test_fold: &'a [i32],
    groups: Option<&'a [usize]>,
}

/// Refuse data whose files are not the ones the task's identity names.
fn check_dataset_identity(
    dataset: &DatasetRef,
    provenance: &DatasetProvenance,
) -> Result<(), PipelineError> {
    let found: Vec<String> = provenance
        .files
        .iter()
        .map(|f| f.sha256.to_ascii_lowercase())
        .collect();
    if found != dataset.identity.files_sha256 {
        return Err(PipelineError::DataMismatch {
            dataset: dataset.name.clone(),
            expected: dataset.identity.files_sha256.clone(),
            found,
        });
    }
    Ok(())
}

/// Sleep in short steps so a cancellation is seen quickly.
fn sleep_unless_cancelled(total: Duration, progress: &Progress) {
    let step = Duration::from_millis(50);
    let end = Instant::now() + total;
    while Instant::now() < end && !progress.is_cancelled() {
        std::thread::sleep(step.min(end.saturating_duration_since(Instant::now())));
    }
}

/// Versions recorded in every `metrics.json`.
fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert(
        "cd-worker".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    v
}
