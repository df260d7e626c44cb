//! A spec bound to what it names: [`TaskSpec::resolve`] is the one place a
//! spec is checked and turned into work. The grid resolves every cell it
//! expands (so a grid that validates is a grid whose cells run), a worker
//! resolves the spec it leased once and executes the [`ResolvedTask`]:
//! the dataset's manifest is looked up here, once, and the kind-specific
//! settings arrive as a [`Work`] variant instead of optional fields.

use super::{SpecError, TaskKind, TaskSpec, MAX_BATCH};
use crate::datasets::{self, DatasetKind, DatasetManifest};
use crate::depth::DepthConfig;
use crate::probe::mc::McConfig;
use crate::probe::ProbeConfig;
use crate::spec::Pooling;

/// What a resolved cell computes, with its settings.
#[derive(Debug, Clone, Copy)]
pub enum Work<'s> {
    /// Per-layer probes on pooled features of a binary dataset.
    Probe {
        /// Probe, split and solver settings.
        probe: &'s ProbeConfig,
        /// Concept-depth rules and bootstrap.
        depth: &'s DepthConfig,
    },
    /// Per-layer logit-lens multiple-choice scoring.
    MultipleChoice {
        /// Scoring settings.
        mc: &'s McConfig,
    },
}

/// The dataset a cell names: its manifest and the parameter after the `/`
/// of its name (`coinflip_gen/2000` → `2000`).
#[derive(Debug, Clone, Copy)]
pub struct ResolvedDataset<'s> {
    /// The compiled-in manifest.
    pub manifest: &'static DatasetManifest,
    /// The name's parameter, if any.
    pub param: Option<&'s str>,
}

/// A checked spec with its dataset and work resolved.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedTask<'s> {
    /// The spec as written (its id, model, axes and presentation fields).
    pub spec: &'s TaskSpec,
    /// The dataset's manifest.
    pub dataset: ResolvedDataset<'s>,
    /// What to compute.
    pub work: Work<'s>,
}

impl TaskSpec {
    /// Check every value and bind the spec to its dataset's manifest and its
    /// kind's settings. Nothing downstream re-checks or looks these up.
    pub fn resolve(&self) -> Result<ResolvedTask<'_>, SpecError> {
        let bad = |m: String| Err(SpecError::Invalid(m));
        let work = match self.kind {
            TaskKind::Probe => {
                let (Some(probe), Some(depth)) = (&self.probe, &self.depth) else {
                    return bad("a probe task needs `probe` and `depth` settings".into());
                };
                if self.mc.is_some() {
                    return bad("a probe task takes no `mc` settings".into());
                }
                probe
                    .validate()
                    .map_err(|e| SpecError::Invalid(e.to_string()))?;
                depth.validate().map_err(SpecError::Invalid)?;
                Work::Probe { probe, depth }
            }
            TaskKind::MultipleChoice => {
                let Some(mc) = &self.mc else {
                    return bad("a multiple-choice task needs `mc` settings".into());
                };
                if self.probe.is_some() || self.depth.is_some() {
                    return bad(
                        "a multiple-choice task takes no `probe` or `depth` settings".into(),
                    );
                }
                mc.validate().map_err(SpecError::Invalid)?;
                if self.pooling != Pooling::Last {
                    return bad(
                        "multiple-choice tasks score the last token: pooling must be `last`".into(),
                    );
                }
                Work::MultipleChoice { mc }
            }
        };
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return bad(format!(
                "batch_size must be between 1 and {MAX_BATCH}, got {}",
                self.batch_size
            ));
        }
        let dataset_error = |message: String| SpecError::Dataset {
            name: self.dataset.name.clone(),
            message,
        };
        let (manifest, _) =
            datasets::check_name(&self.dataset.name).map_err(|e| dataset_error(e.to_string()))?;
        let param = self.dataset.name.split_once('/').map(|(_, p)| p);
        let wanted = match self.kind {
            TaskKind::Probe => DatasetKind::Binary,
            TaskKind::MultipleChoice => DatasetKind::MultipleChoice,
        };
        if manifest.kind != wanted {
            return Err(dataset_error(format!(
                "a {} task needs a {} dataset; `{}` is {}",
                self.kind.as_str(),
                wanted.as_str(),
                manifest.name,
                manifest.kind.as_str()
            )));
        }
        Ok(ResolvedTask {
            spec: self,
            dataset: ResolvedDataset { manifest, param },
            work,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::example_spec;

    #[test]
    fn a_probe_spec_resolves_to_its_manifest_and_settings() {
        let spec = example_spec();
        let task = spec.resolve().unwrap();
        assert_eq!(task.dataset.manifest.kind, DatasetKind::Binary);
        assert!(spec.dataset.name.starts_with(&task.dataset.manifest.name));
        assert!(matches!(task.work, Work::Probe { .. }));
    }

    #[test]
    fn a_parameter_is_bound_and_checked() {
        let mut spec = example_spec();
        spec.dataset.name = "coinflip_gen/300".into();
        let task = spec.resolve().unwrap();
        assert_eq!(task.dataset.param, Some("300"));
        assert_eq!(task.dataset.manifest.name, "coinflip_gen");
        spec.dataset.name = "coinflip_gen/many".into();
        let err = spec.resolve().unwrap_err().to_string();
        assert!(err.contains("coinflip_gen/many"), "{err}");
    }

    #[test]
    fn a_dataset_of_the_other_kind_or_unknown_is_refused() {
        let mut spec = example_spec();
        spec.dataset.name = "truthfulqa".into();
        let err = spec.resolve().unwrap_err().to_string();
        assert!(err.contains("a probe task needs a binary dataset"), "{err}");
        spec.dataset.name = "no_such_set".into();
        let err = spec.resolve().unwrap_err().to_string();
        assert!(err.contains("no_such_set"), "{err}");
    }

    #[test]
    fn settings_of_the_other_kind_are_refused() {
        let mut spec = example_spec();
        spec.mc = Some(McConfig::default());
        assert!(matches!(spec.resolve(), Err(SpecError::Invalid(_))));
        let mut spec = example_spec();
        spec.probe = None;
        assert!(matches!(spec.resolve(), Err(SpecError::Invalid(_))));
    }
}
