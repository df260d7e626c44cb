//! Shared vocabulary of concept-depth.
//!
//! This crate knows nothing of gRPC or candle: it owns the task specification
//! ([`spec`]), and (in their own modules) grids, datasets and prompts, probes
//! and metrics, concept-depth rules and the storage layout. Both the worker and
//! the coordinator depend on it; it depends on neither.

pub mod content;
pub mod datasets;
pub mod depth;
pub mod grid;
pub mod memory;
pub mod metrics;
pub mod probe;
mod rng;
pub mod spec;
pub mod storage;
pub mod tables;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod verified;
