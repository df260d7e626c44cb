//! Why a task did not produce a result, and whose fault that is (the
//! worker's, released without charging the cell, or the cell's).

use crate::data_fetch::FetchError;
use crate::engine::EngineError;
use cd_common::datasets::DatasetError;
use cd_common::metrics::MetricsError;
use cd_common::probe::ProbeError;
use cd_common::storage::StoreError;

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
    pub(crate) fn is_worker_fault(&self) -> bool {
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
    pub(crate) fn is_permanent(&self) -> bool {
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
