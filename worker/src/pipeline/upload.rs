//! Writing a task's results: `spec.json`, the features or multiple-choice
//! scores, each storage call retried with backoff for a bounded time while
//! the task is not cancelled.

use super::{Phase, Pipeline, PipelineError, Progress, TaskContext};
use crate::backoff::Backoff;
use crate::engine::output::{write_features, FeatureFile, OutputDtype, OutputMetadata};
use cd_common::probe::mc::McConfig;
use cd_common::spec::TaskSpec;
use cd_common::storage::{layout, StoreError};
use ndarray::Array3;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

impl Pipeline {
    /// Write every item's per-layer candidate scores (`mc_scores.safetensors`)
    /// beside the metrics, so anyone can recompute MC1/MC2/MC3.
    pub(super) fn upload_mc_scores(
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
    pub(super) fn upload_spec_and_features(
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
    pub(super) fn store_call<T, F, Fut>(
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
pub(super) struct Probed<'a> {
    pub(super) labels: &'a [u8],
    pub(super) test_fold: &'a [i32],
    pub(super) groups: Option<&'a [usize]>,
}

/// Sleep in short steps so a cancellation is seen quickly.
fn sleep_unless_cancelled(total: Duration, progress: &Progress) {
    let step = Duration::from_millis(50);
    let end = Instant::now() + total;
    while Instant::now() < end && !progress.is_cancelled() {
        std::thread::sleep(step.min(end.saturating_duration_since(Instant::now())));
    }
}
