//! Execute one task: dataset → model → features → probes (or multiple-choice
//! scores) → storage. The dataset comes first so the model's memory plan can
//! use its real token lengths.
//!
//! Beside this file: `data.rs` (the `load_data` phase), `extract.rs` (the
//! `extract` phase), `upload.rs` (results to storage, with retries),
//! `error.rs` (whose fault a failure is), `progress.rs` (what the heartbeats
//! report), `workload.rs` (the largest batch, for memory planning).
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

use crate::devices::DeviceInfo;
use crate::engine::load::{open_model, LoadOptions};
use crate::engine::logit_lens::{Lens, McInput};
use crate::engine::{DeviceMap, Model};
use cd_common::datasets::{BinaryDataset, McDataset};
use cd_common::depth::DepthConfig;
use cd_common::metrics::{CellMetrics, ProbeCellInputs};
use cd_common::probe::layers::{probe_all_layers, FeatureView};
use cd_common::probe::mc::McConfig;
use cd_common::probe::split::test_fold;
use cd_common::probe::ProbeConfig;
use cd_common::spec::{ModelSource, Precision, ResolvedTask, Site, TaskKind, TaskSpec, Work};
use cd_common::storage::{layout, Store, StoreError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod data;
mod error;
mod extract;
mod progress;
mod upload;
mod workload;

use crate::placement::BatchShape;
use cd_proto::v1::TaskPhase as Phase;
pub use error::PipelineError;
pub use progress::Progress;
use upload::Probed;
use workload::Workload;

/// A finished task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Root-relative key of the task's `metrics.json`.
    pub metrics_key: String,
    /// True when `metrics.json` already existed and nothing was recomputed.
    pub already_complete: bool,
}

/// Where and how models are loaded.
#[derive(Debug, Clone)]
pub(crate) struct PipelineOptions {
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
    /// The largest batch its CUDA placement was planned for (`None` on the
    /// CPU, where nothing is planned).
    planned_for: Option<BatchShape>,
}

/// Executes tasks one after the other, keeping the last model loaded.
pub(crate) struct Pipeline {
    opts: PipelineOptions,
    loaded: Option<Loaded>,
}

/// Everything one execution needs besides the spec.
pub(crate) struct TaskContext<'a> {
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
    pub(crate) fn unload(&mut self) {
        self.loaded = None;
    }

    /// Display name of the model loaded now, if any.
    pub fn loaded_model(&self) -> Option<&str> {
        self.loaded.as_ref().map(|l| l.name.as_str())
    }

    /// Run one task to completion and write its results.
    pub(crate) fn execute(
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
    /// A loaded model is reused when its placement was planned for a batch
    /// at least as large as this workload's; otherwise it is placed again
    /// for the larger of the two, so that a later task with longer texts
    /// cannot run out of device memory on a plan made for shorter ones.
    fn ensure_model(
        &mut self,
        spec: &TaskSpec,
        workload: Workload<'_>,
    ) -> Result<(), PipelineError> {
        let name = spec.model.name.clone();
        let placement_err = |message| PipelineError::Placement {
            model: name.clone(),
            message,
        };
        // Set when the loaded model is placed again: the union of its plan and
        // this workload's largest batch (already measured with the same tokenizer).
        let mut replan_for = None;
        if let Some(l) = &self.loaded {
            if l.source == spec.model.source && l.precision == spec.precision {
                let Some(planned) = l.planned_for else {
                    tracing::debug!(model = %l.name, "reusing loaded model");
                    return Ok(());
                };
                let needed = workload
                    .largest_batch(l.model.tokenizer())
                    .map_err(placement_err)?;
                if planned.covers(needed) {
                    tracing::debug!(model = %l.name, "reusing loaded model");
                    return Ok(());
                }
                tracing::info!(
                    model = %l.name,
                    planned_batch = planned.batch, planned_tokens = planned.seq,
                    batch = needed.batch, tokens = needed.seq,
                    "placing the model again: this task's largest batch exceeds its plan"
                );
                replan_for = Some(planned.union(needed));
            }
        }
        // Free the old model first: two large models rarely fit side by side.
        self.loaded = None;
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
        let mut planned_for = None;
        let devices = if self.opts.devices.iter().any(DeviceInfo::is_cuda) {
            let batch = match replan_for {
                Some(batch) => batch,
                None => workload
                    .largest_batch(&files.tokenizer)
                    .map_err(placement_err)?,
            };
            planned_for = Some(batch);
            tracing::info!(model = %name, batch = batch.batch, tokens = batch.seq, "planning placement for the largest batch");
            let (_, map) =
                crate::placement::place(&files.config, spec.precision, batch, &self.opts.devices)
                    .map_err(|e| placement_err(e.to_string()))?;
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
            planned_for,
        });
        Ok(())
    }

    fn model(&self) -> &Model {
        &self.loaded.as_ref().expect("ensure_model ran first").model
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
