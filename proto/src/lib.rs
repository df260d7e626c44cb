//! Generated types and services of `proto/conceptdepth.proto`.
//!
//! The `.proto` is the source of truth; this crate includes what the build
//! script generates from it, and what both sides of the protocol must agree
//! on besides messages: the binaries' exit codes ([`exit`]), the refusals and
//! what a worker does about each ([`status`]), the names of task phases
//! ([`phase`]) and how a registration's device kinds are read ([`device`]).

pub mod device;
pub mod exit;
pub mod phase;
pub mod status;

/// Version 1 of the coordinator protocol.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("conceptdepth.v1");
}
