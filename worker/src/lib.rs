//! The concept-depth worker: turns a task into per-layer features and metrics.
//!
//! Data path: [`agent`] leases a task → [`engine`] loads the model and extracts
//! per-layer vectors → probes from `cd_common` score every layer → results go to
//! the object store. [`cli_extract`] and [`cli_datasets`] expose single steps.

pub mod agent;
pub(crate) mod backoff;
pub mod cli_datasets;
pub mod cli_extract;
pub mod cli_probe;
pub(crate) mod data_fetch;
pub mod devices;
pub mod engine;
pub mod logging;
pub mod pipeline;
pub mod placement;
