//! Process exit codes of the two binaries: one definition that the
//! binaries, the local runner, the tests and the Kubernetes Job's
//! `podFailurePolicy` (checked by `tests/tests/deploy_manifests.rs`) share.

/// `cd-worker` in agent mode.
pub mod worker {
    /// The sweep is done (`--idle-exit`), nothing left this worker can run,
    /// or `--max-tasks` were completed.
    pub const OK: i32 = 0;
    /// An unexpected internal error (transient until shown otherwise: the
    /// pod is restarted).
    pub const ERROR: i32 = 1;
    /// This worker's own configuration cannot work (also clap's code for
    /// usage errors): unreadable token file, bad `--gpus`, a CUDA build asked
    /// for devices it cannot open, TLS settings, a storage URL it cannot
    /// open. Permanent for this pod (the Job fails this index only).
    pub const CONFIG: i32 = 2;
    /// The coordinator refused the worker's token (e.g. during a token
    /// rotation): the pod is restarted and reads the token again.
    pub const AUTH: i32 = 3;
    /// The coordinator stayed unreachable longer than `--give-up-after-secs`.
    pub const UNREACHABLE: i32 = 4;
    /// Stopped by SIGTERM or SIGINT before the coordinator reported the sweep
    /// done (its task finished or its lease handed back). 128 + SIGTERM, what
    /// a shell reports for a process the signal ended: the worker's work is
    /// not over, so a Job must start the pod again rather than count it
    /// finished.
    pub const SIGNALLED: i32 = 143;
}

/// `cd-coordinator`.
pub mod coordinator {
    /// Served the sweep to its end (or stopped cleanly on a signal).
    pub const OK: i32 = 0;
    /// An unexpected error.
    pub const ERROR: i32 = 1;
    /// Bad command line, grid or token: nothing was started.
    pub const CONFIG: i32 = 2;
    /// Another coordinator serves the sweep (at start), or took it over
    /// (while serving): this one stops.
    pub const FENCED: i32 = 5;
    /// `--local-workers`: cells remain that no worker can run.
    pub const STUCK: i32 = 6;
    /// A panic: the process exits instead of serving from a poisoned state,
    /// so Kubernetes restarts it (and it resumes from the store).
    pub const PANIC: i32 = 70;
}
