//! The `load_data` phase: the task's data root made local, its dataset read
//! and checked against the identity the task names.

use super::{Phase, Pipeline, PipelineError, TaskContext};
use crate::data_fetch::{resolve_for as resolve_data_root, FetchOptions};
use cd_common::datasets::{
    self, BinaryDataset, BinaryOptions, DataRoot, DatasetProvenance, McDataset, McOptions,
};
use cd_common::probe::mc::McConfig;
use cd_common::spec::{DatasetRef, ResolvedTask};
use std::collections::BTreeMap;
use std::time::Instant;

impl Pipeline {
    /// The spec's data root, made local: remote files the dataset needs are
    /// copied to the data cache first (see `data_fetch`).
    pub(super) fn data_root(
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

    /// The `load_data` phase of a probe task.
    pub(super) fn load_binary(
        &self,
        task: &ResolvedTask<'_>,
        ctx: &TaskContext<'_>,
        timings: &mut BTreeMap<String, f64>,
    ) -> Result<BinaryDataset, PipelineError> {
        let spec = task.spec;
        let opts = BinaryOptions {
            prompt_mode: spec.prompt_mode,
            noise: spec.noise,
            seed: spec.seed,
            max_per_class: None,
        };
        self.load_phase(task, ctx, timings, |root| {
            Ok(datasets::load_binary_of(
                task.dataset.manifest,
                task.dataset.param,
                root,
                &opts,
            )?)
        })
    }

    /// The `load_data` phase of a multiple-choice task.
    pub(super) fn load_mc(
        &self,
        task: &ResolvedTask<'_>,
        mc_cfg: &McConfig,
        ctx: &TaskContext<'_>,
        timings: &mut BTreeMap<String, f64>,
    ) -> Result<McDataset, PipelineError> {
        let opts = McOptions {
            seed: task.spec.seed,
            max_items: mc_cfg.max_items,
            ..McOptions::default()
        };
        self.load_phase(task, ctx, timings, |root| {
            Ok(datasets::load_mc_of(
                task.dataset.manifest,
                task.dataset.param,
                root,
                &opts,
            )?)
        })
    }

    /// What both kinds of task do around reading their dataset: enter the
    /// phase, make the data root local, `read` it, refuse files other than
    /// the ones the task's identity names, time it, stop if cancelled.
    fn load_phase<D: LoadedData>(
        &self,
        task: &ResolvedTask<'_>,
        ctx: &TaskContext<'_>,
        timings: &mut BTreeMap<String, f64>,
        read: impl FnOnce(&DataRoot) -> Result<D, PipelineError>,
    ) -> Result<D, PipelineError> {
        ctx.progress.set_phase(Phase::LoadData);
        let t = Instant::now();
        let root = self.data_root(task, ctx)?;
        let data = read(&root)?;
        check_dataset_identity(&task.spec.dataset, data.provenance())?;
        timings.insert("load_data".to_string(), t.elapsed().as_secs_f64());
        tracing::info!(
            dataset = %task.spec.dataset.name,
            size = data.size(),
            unit = D::UNIT,
            "dataset loaded"
        );
        ctx.progress.check()?;
        Ok(data)
    }
}

/// A dataset as the `load_data` phase sees it.
trait LoadedData {
    /// What [`LoadedData::size`] counts.
    const UNIT: &'static str;
    /// The files it was read from.
    fn provenance(&self) -> &DatasetProvenance;
    /// How many examples or items it holds.
    fn size(&self) -> usize;
}

impl LoadedData for BinaryDataset {
    const UNIT: &'static str = "examples";
    fn provenance(&self) -> &DatasetProvenance {
        &self.provenance
    }
    fn size(&self) -> usize {
        self.len()
    }
}

impl LoadedData for McDataset {
    const UNIT: &'static str = "items";
    fn provenance(&self) -> &DatasetProvenance {
        &self.provenance
    }
    fn size(&self) -> usize {
        self.items.len()
    }
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
