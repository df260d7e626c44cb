//! The `metrics.json` of one cell: every per-layer number, how it was made,
//! and the concept-depth results.
//!
//! The schema is versioned by [`SCHEMA_VERSION`]; the file is written last by
//! a worker, so its presence marks a cell complete. Tables inside are arrays of
//! flat records so a pandas user reads each in one line:
//!
//! ```python
//! m = json.load(open("metrics.json"))
//! layers = pd.DataFrame(m["layers"])          # probe tasks: one row per layer
//! folds = pd.DataFrame(m["fold_layers"])      # one row per (layer, fold)
//! test_fold = np.array(m["split"]["test_fold"])  # per example: fold it is tested in, -1 = never
//! mc = pd.DataFrame(m["mc_layers"])           # multiple-choice tasks: (lens, length_normalised, layer)
//! ```
//!
//! See `docs/probes.md` for every field.

use crate::datasets::DatasetProvenance;
use crate::depth::{self, DepthConfig, DepthResult};
use crate::probe::bootstrap::{self, Bootstrap};
use crate::probe::eval::mean_std;
use crate::probe::layers::{FoldLayer, ProbeRun};
use crate::probe::mc::{self, Chance, LensScores, McLayer};
use crate::probe::split::{self, SplitConfig};
use crate::probe::{ProbeConfig, ProbeError};
use crate::spec::TaskSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the `metrics.json` layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 2;

/// Everything measured for one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellMetrics {
    /// Layout version ([`SCHEMA_VERSION`] when written).
    pub schema_version: u32,
    /// The task's stable id.
    pub task_id: String,
    /// The task specification, echoed in full.
    pub spec: TaskSpec,
    /// Number of examples (probe) or items (multiple choice).
    pub n_examples: usize,
    /// Number of captured layers (rows of `layers`).
    pub n_layers: usize,
    /// Whether capture index 0 is the embedding output (`residual` site).
    pub includes_embedding: bool,
    /// What the precision means (e.g. the LLM.int8 scheme), spelled out.
    pub precision_scheme: String,
    /// The raw files read (with their SHA-256), counts and load-time checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetProvenance>,
    /// Examples per label, `[class 0, class 1]` (probe tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_counts: Option<[usize; 2]>,
    /// Names of labels 0 and 1 when the dataset has them (e.g. `["false", "true"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<[String; 2]>,
    /// The label used as positive class for F1 and AUC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_class: Option<u8>,
    /// Probe settings after defaults were applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeConfig>,
    /// Seeds used.
    pub seeds: Seeds,
    /// The split, with every example's assignment (probe tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitRecord>,
    /// Sizes and class balance of every fold.
    #[serde(default)]
    pub folds: Vec<FoldInfo>,
    /// Probe results per layer (mean and std over folds).
    #[serde(default)]
    pub layers: Vec<LayerRow>,
    /// Probe results per (layer, fold).
    #[serde(default)]
    pub fold_layers: Vec<FoldLayer>,
    /// Multiple-choice results per (lens, length normalisation, layer).
    #[serde(default)]
    pub mc_layers: Vec<McLayer>,
    /// Chance levels of a multiple-choice task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mc_chance: Option<Chance>,
    /// Concept depth of the mean accuracy curve under both rules (probe tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<DepthResult>,
    /// Bootstrap intervals of the curve, the peak and the converging layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
    /// Versions of the software that produced the file (e.g. `cd-common`, `cd-worker`, git commit).
    pub versions: BTreeMap<String, String>,
    /// Wall times in seconds by phase (e.g. `load`, `extract`, `probe`, `total`).
    pub timings: BTreeMap<String, f64>,
}

/// Seeds of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seeds {
    /// The task's seed.
    pub task: u64,
    /// The seed of the split (equal to the task's seed unless stated).
    pub split: u64,
}

/// The split a probe cell used, complete enough to refit on exactly its folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRecord {
    /// `sklearn`, `stratified`, `kfold` or `grouped`.
    pub kind: String,
    /// A short label, e.g. `sklearn(0.4, rs=42)`.
    pub label: String,
    /// The settings.
    pub config: SplitConfig,
    /// Number of folds (1 for a holdout).
    pub n_folds: usize,
    /// Per example (in dataset order): the fold whose test side holds it, or
    /// −1 when it only ever trains. Fold `f` trains on `test_fold != f`.
    pub test_fold: Vec<i32>,
    /// SHA-256 of `test_fold` as little-endian i32, to compare splits at a glance.
    pub assignment_sha256: String,
}

impl SplitRecord {
    /// Record the folds a run used over `n` examples.
    pub fn of(config: &SplitConfig, folds: &[split::Fold], n: usize) -> SplitRecord {
        use sha2::{Digest, Sha256};
        let test_fold = split::test_fold(folds, n);
        let bytes: Vec<u8> = test_fold.iter().flat_map(|f| f.to_le_bytes()).collect();
        SplitRecord {
            kind: config.kind().to_string(),
            label: config.label(),
            config: config.clone(),
            n_folds: folds.len(),
            test_fold,
            assignment_sha256: hex::encode(Sha256::digest(&bytes)),
        }
    }
}

/// One fold's sizes and balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldInfo {
    /// Fold index.
    pub fold: usize,
    /// Training examples.
    pub n_train: usize,
    /// Test examples.
    pub n_test: usize,
    /// Training examples per label.
    pub train_class_counts: [usize; 2],
    /// Test examples per label.
    pub test_class_counts: [usize; 2],
}

/// One layer's probe results, aggregated over folds (std is the population
/// standard deviation over folds; 0 with a single fold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRow {
    /// Capture index.
    pub layer: usize,
    /// Fraction of the model's depth (see `depth::depth_fraction`).
    pub depth_fraction: f64,
    /// Test accuracy, mean over folds.
    pub accuracy_mean: f64,
    /// Test accuracy, std over folds.
    pub accuracy_std: f64,
    /// F1 of the positive class, mean over folds.
    pub f1_mean: f64,
    /// F1 of the positive class, std over folds.
    pub f1_std: f64,
    /// ROC-AUC, mean over folds (absent if undefined in every fold).
    pub auc_mean: Option<f64>,
    /// ROC-AUC, std over folds.
    pub auc_std: Option<f64>,
    /// Majority-class baseline accuracy, mean over folds.
    pub baseline_mean: f64,
    /// Training accuracy, mean over folds.
    pub train_accuracy_mean: f64,
    /// Bootstrap interval of `accuracy_mean` (low end), when bootstrapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_ci_low: Option<f64>,
    /// Bootstrap interval of `accuracy_mean` (high end), when bootstrapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_ci_high: Option<f64>,
    /// Folds fitted.
    pub n_folds: usize,
    /// Folds whose solver met its tolerance.
    pub converged_folds: usize,
    /// Newton iterations, mean over folds.
    pub newton_iterations_mean: f64,
    /// Fit wall time summed over folds, seconds.
    pub fit_seconds: f64,
}

/// Errors building or reading a metrics file.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Inconsistent probe results.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// Depth could not be computed.
    #[error(transparent)]
    Depth(#[from] depth::DepthError),
    /// Malformed JSON or a missing field.
    #[error("metrics.json: {0}")]
    Json(#[from] serde_json::Error),
    /// A file written by an incompatible version.
    #[error("metrics.json has schema_version {found}; this build reads {SCHEMA_VERSION}")]
    Version {
        /// The version found.
        found: u32,
    },
}

/// Aggregate per-(layer, fold) fits into per-layer rows.
pub fn layer_rows(run: &ProbeRun, n_layers: usize, includes_embedding: bool) -> Vec<LayerRow> {
    (0..n_layers)
        .map(|layer| {
            let fits: Vec<&FoldLayer> = run.fits.iter().filter(|f| f.layer == layer).collect();
            let ms = |get: &dyn Fn(&FoldLayer) -> f64| mean_std(fits.iter().map(|f| get(f)));
            let (acc_m, acc_s) = ms(&|f| f.metrics.accuracy).unwrap_or((f64::NAN, f64::NAN));
            let (f1_m, f1_s) = ms(&|f| f.metrics.f1).unwrap_or((f64::NAN, f64::NAN));
            let auc = ms(&|f| f.metrics.auc.unwrap_or(f64::NAN));
            LayerRow {
                layer,
                depth_fraction: depth::depth_fraction(layer, n_layers, includes_embedding),
                accuracy_mean: acc_m,
                accuracy_std: acc_s,
                f1_mean: f1_m,
                f1_std: f1_s,
                auc_mean: auc.map(|a| a.0),
                auc_std: auc.map(|a| a.1),
                baseline_mean: ms(&|f| f.metrics.baseline).map_or(f64::NAN, |a| a.0),
                train_accuracy_mean: ms(&|f| f.metrics.train_accuracy).map_or(f64::NAN, |a| a.0),
                accuracy_ci_low: None,
                accuracy_ci_high: None,
                n_folds: fits.len(),
                converged_folds: fits.iter().filter(|f| f.converged).count(),
                newton_iterations_mean: ms(&|f| f.newton_iterations as f64)
                    .map_or(f64::NAN, |a| a.0),
                fit_seconds: fits.iter().map(|f| f.seconds).sum(),
            }
        })
        .collect()
}

/// What a probe cell needs besides its fits.
#[derive(Debug, Clone)]
pub struct ProbeCellInputs<'a> {
    /// The task.
    pub spec: &'a TaskSpec,
    /// Label of every example.
    pub labels: &'a [u8],
    /// Names of labels 0 and 1, if known.
    pub class_names: Option<[String; 2]>,
    /// Number of captured layers.
    pub n_layers: usize,
    /// Whether capture 0 is the embedding output.
    pub includes_embedding: bool,
    /// Probe settings used.
    pub probe: &'a ProbeConfig,
    /// Concept-depth thresholds and bootstrap settings.
    pub depth: &'a DepthConfig,
    /// What was loaded.
    pub dataset: Option<DatasetProvenance>,
    /// Versions to record.
    pub versions: BTreeMap<String, String>,
    /// Timings to record.
    pub timings: BTreeMap<String, f64>,
}

fn counts(labels: &[u8], idx: &[usize]) -> [usize; 2] {
    let ones = idx.iter().filter(|&&i| labels[i] == 1).count();
    [idx.len() - ones, ones]
}

impl CellMetrics {
    /// Metrics of a probe cell from its fits.
    pub fn for_probe(
        inputs: ProbeCellInputs<'_>,
        run: &ProbeRun,
    ) -> Result<CellMetrics, MetricsError> {
        let mut layers = layer_rows(run, inputs.n_layers, inputs.includes_embedding);
        let curve: Vec<f64> = layers.iter().map(|r| r.accuracy_mean).collect();
        let depth = depth::concept_depth(&curve, inputs.includes_embedding, inputs.depth)?;
        let bootstrap = bootstrap::bootstrap(
            &run.correct,
            inputs.includes_embedding,
            inputs.depth,
            inputs.spec.seed,
        );
        if let Some(b) = &bootstrap {
            for (row, band) in layers.iter_mut().zip(&b.accuracy) {
                row.accuracy_ci_low = Some(band.low);
                row.accuracy_ci_high = Some(band.high);
            }
        }
        let all: Vec<usize> = (0..inputs.labels.len()).collect();
        let folds = run
            .folds
            .iter()
            .enumerate()
            .map(|(k, f)| FoldInfo {
                fold: k,
                n_train: f.train.len(),
                n_test: f.test.len(),
                train_class_counts: counts(inputs.labels, &f.train),
                test_class_counts: counts(inputs.labels, &f.test),
            })
            .collect();
        let mut timings = inputs.timings;
        timings.entry("probe".into()).or_insert(run.seconds);
        Ok(CellMetrics {
            schema_version: SCHEMA_VERSION,
            task_id: inputs.spec.id().0,
            spec: inputs.spec.clone(),
            n_examples: inputs.labels.len(),
            n_layers: inputs.n_layers,
            includes_embedding: inputs.includes_embedding,
            precision_scheme: inputs.spec.precision.scheme().to_string(),
            dataset: inputs.dataset,
            class_counts: Some(counts(inputs.labels, &all)),
            class_names: inputs.class_names,
            positive_class: Some(inputs.probe.positive_class),
            probe: Some(inputs.probe.clone()),
            seeds: Seeds {
                task: inputs.spec.seed,
                split: inputs.spec.seed,
            },
            split: Some(SplitRecord::of(
                &inputs.probe.split,
                &run.folds,
                inputs.labels.len(),
            )),
            folds,
            layers,
            fold_layers: run.fits.clone(),
            mc_layers: Vec::new(),
            mc_chance: None,
            depth: Some(depth),
            bootstrap,
            versions: inputs.versions,
            timings,
        })
    }

    /// Metrics of a multiple-choice cell from its per-lens scores.
    pub fn for_mc(
        spec: &TaskSpec,
        scores: &[LensScores],
        includes_embedding: bool,
        versions: BTreeMap<String, String>,
        timings: BTreeMap<String, f64>,
    ) -> Result<CellMetrics, MetricsError> {
        let first = scores
            .first()
            .ok_or_else(|| ProbeError::Input("no multiple-choice scores were given".into()))?;
        let mut mc_layers = Vec::new();
        for s in scores {
            mc_layers.extend(mc::mc_layers(s)?);
        }
        let n_layers = first.items.first().map_or(0, |it| it.sums.len());
        Ok(CellMetrics {
            n_examples: first.items.len(),
            n_layers,
            includes_embedding,
            mc_layers,
            mc_chance: Some(mc::chance(&first.items)),
            versions,
            timings,
            ..CellMetrics::empty(spec)
        })
    }

    /// A structurally valid result with no measurements, for tests of the
    /// scheduler and the store that need a cell to count as complete.
    #[cfg(any(test, feature = "test-support"))]
    pub fn placeholder(spec: &TaskSpec) -> CellMetrics {
        CellMetrics::empty(spec)
    }

    /// The result of `spec` before anything is measured: identity, seeds and
    /// scheme filled in, every measurement empty.
    fn empty(spec: &TaskSpec) -> CellMetrics {
        CellMetrics {
            schema_version: SCHEMA_VERSION,
            task_id: spec.id().0,
            spec: spec.clone(),
            n_examples: 0,
            n_layers: 0,
            includes_embedding: false,
            precision_scheme: spec.precision.scheme().to_string(),
            dataset: None,
            class_counts: None,
            class_names: None,
            positive_class: None,
            probe: None,
            seeds: Seeds {
                task: spec.seed,
                split: spec.seed,
            },
            split: None,
            folds: Vec::new(),
            layers: Vec::new(),
            fold_layers: Vec::new(),
            mc_layers: Vec::new(),
            mc_chance: None,
            depth: None,
            bootstrap: None,
            versions: BTreeMap::new(),
            timings: BTreeMap::new(),
        }
    }

    /// Serialize as pretty JSON (NaN, which cannot occur in valid results, becomes null).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("metrics always serialize")
    }

    /// Parse a `metrics.json`, refusing other schema versions.
    pub fn from_json(text: &str) -> Result<CellMetrics, MetricsError> {
        #[derive(Deserialize)]
        struct Probe {
            schema_version: u32,
        }
        let v: Probe = serde_json::from_str(text)?;
        if v.schema_version != SCHEMA_VERSION {
            return Err(MetricsError::Version {
                found: v.schema_version,
            });
        }
        Ok(serde_json::from_str(text)?)
    }
}
