//! The `extract` phase: features of every text at every layer, in chunks of
//! batches so that cancellation and progress are seen between them.

use super::{Phase, Pipeline, PipelineError, Progress};
use crate::engine::extract::{ExtractOptions, ExtractProgress};
use cd_common::spec::TaskSpec;
use ndarray::{s, Array3};

impl Pipeline {
    /// Extract `[N, L, d]` features in chunks, reporting progress and
    /// stopping between chunks when cancelled. Extraction does not depend on
    /// batch composition, so chunking does not change the result.
    pub(super) fn extract(
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
}
