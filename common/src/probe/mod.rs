//! Per-layer linear probes and logit-lens multiple-choice scoring.
//!
//! This module owns everything between "features per layer" and "numbers per
//! layer": the L2-regularised logistic-regression solver ([`logistic`]), the
//! splits ([`split`]), the classification metrics ([`eval`]), the
//! all-layers driver that fits layers in parallel ([`layers`]), bootstrap
//! intervals of the curve and its depths ([`bootstrap`]), and the
//! multiple-choice metrics computed from per-layer candidate scores ([`mc`]).
//! [`npy`] reads `.npy` arrays (fixtures and benchmark inputs).

pub mod bootstrap;
mod dense;
pub mod eval;
pub mod layers;
pub mod logistic;
pub mod mc;
pub mod npy;
mod rows;
pub mod split;
mod woodbury;

use serde::{Deserialize, Serialize};
pub use split::{Fold, SplitConfig, SplitError};

/// Probe settings of a task (the `probe` object of a task spec).
///
/// Every field has a default, so `{}` is a valid configuration; unknown keys
/// are refused so a typo in a grid is caught before anything runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Inverse regularisation strength, as scikit-learn's `C` (default 1.0).
    pub c: f64,
    /// Standardise features (mean 0, variance 1) using statistics of the
    /// training fold only (default false: raw features, as the paper).
    pub standardize: bool,
    /// Which label (0 or 1) is the positive class for F1 and AUC (default 1).
    pub positive_class: u8,
    /// How examples are split into training and test sets.
    pub split: SplitConfig,
    /// Solver tolerances and caps.
    pub solver: logistic::SolverConfig,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            c: 1.0,
            standardize: false,
            positive_class: 1,
            split: SplitConfig::default(),
            solver: logistic::SolverConfig::default(),
        }
    }
}

impl ProbeConfig {
    /// Parse the opaque `probe` value of a task spec; `null` means defaults.
    pub fn from_json(value: &serde_json::Value) -> Result<ProbeConfig, ProbeError> {
        if value.is_null() {
            return Ok(ProbeConfig::default());
        }
        let cfg: ProbeConfig = serde_json::from_value(value.clone())
            .map_err(|e| ProbeError::Config(format!("probe settings: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check value ranges that serde cannot express.
    pub fn validate(&self) -> Result<(), ProbeError> {
        if !(self.c.is_finite() && self.c > 0.0) {
            return Err(ProbeError::Config(format!(
                "probe.c must be a positive finite number, got {}",
                self.c
            )));
        }
        if self.positive_class > 1 {
            return Err(ProbeError::Config(format!(
                "probe.positive_class must be 0 or 1, got {}",
                self.positive_class
            )));
        }
        self.split
            .validate()
            .map_err(|e| ProbeError::Config(e.to_string()))?;
        self.solver.validate()
    }
}

/// Errors of probing: bad settings or inputs that cannot be probed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Invalid probe settings.
    #[error("invalid probe configuration: {0}")]
    Config(String),
    /// Inputs of inconsistent shape or content.
    #[error("invalid probe input: {0}")]
    Input(String),
    /// The examples cannot be split as asked.
    #[error(transparent)]
    Split(#[from] SplitError),
    /// A `.npy` file that cannot be read.
    #[error("{path}: {msg}")]
    Npy {
        /// The file.
        path: String,
        /// What was wrong.
        msg: String,
    },
}
