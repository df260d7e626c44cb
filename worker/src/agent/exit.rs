//! Process exit codes of `cd-worker` in agent mode.
//!
//! This file has no dependencies on purpose: the deployment tests include it
//! by path, so the Job's `podFailurePolicy` is checked against the very codes
//! the binary uses (`tests/tests/deploy_manifests.rs`).

/// The sweep is done (`--idle-exit`) or `--max-tasks` were completed.
pub const OK: i32 = 0;
/// An unexpected internal error.
pub const ERROR: i32 = 1;
/// Bad command line or configuration (also clap's code for usage errors):
/// unreadable token file, bad `--gpus`, TLS settings, storage URL.
pub const CONFIG: i32 = 2;
/// The coordinator refused the worker's token.
pub const AUTH: i32 = 3;
/// The coordinator stayed unreachable longer than `--give-up-after-secs`.
pub const UNREACHABLE: i32 = 4;
/// Stopped by SIGTERM or SIGINT before the coordinator reported the sweep done
/// (its task finished or its lease handed back). 128 + SIGTERM, what a shell
/// reports for a process the signal ended: the worker's work is not over, so
/// a Kubernetes Job must start the pod again rather than count it finished.
pub const SIGNALLED: i32 = 143;
