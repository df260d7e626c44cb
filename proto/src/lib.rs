//! Generated types and services of `proto/conceptdepth.proto`.
//!
//! The `.proto` is the source of truth; this crate only includes what the build
//! script generates from it.

#![allow(clippy::all, missing_docs)]

/// Version 1 of the coordinator protocol.
pub mod v1 {
    tonic::include_proto!("conceptdepth.v1");
}
