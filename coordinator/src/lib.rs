//! The concept-depth coordinator: grid → tasks → leases → report.
//!
//! - [`state`]: the task state machine and lease selection (no I/O),
//! - [`service`]: the gRPC `Coordinator` service and token check,
//! - [`server`]: resume from the store, serve gRPC and HTTP, shut down gracefully,
//! - [`persist`]: failure histories and the resume path,
//! - [`report`]: tables and figures from the store,
//! - [`local`]: `--local-workers`, worker processes beside the coordinator,
//! - [`cli`]: the command line (stable: deployment manifests use it).

pub mod cli;
pub mod http;
pub mod local;
pub mod persist;
pub(crate) mod prometheus;
pub mod report;
pub mod server;
pub mod service;
pub mod shared;
pub mod state;
