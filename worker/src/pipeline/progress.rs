//! Progress of the running task, shared between the pipeline (which moves
//! it) and the heartbeat loop (which reports it), and the task's
//! cancellation flag.

use super::PipelineError;
use cd_proto::v1::TaskPhase;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// Progress of the running task, shared with the heartbeat loop, and its
/// cancellation flag.
#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicI32,
    done: AtomicU64,
    total: AtomicU64,
    tokens: AtomicU64,
    cancelled: AtomicBool,
}

impl Progress {
    /// Current phase and examples done / total.
    pub fn snapshot(&self) -> (TaskPhase, u64, u64) {
        (
            TaskPhase::from_wire(self.phase.load(Ordering::Relaxed)),
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// Real tokens processed so far by the running task.
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }

    pub(super) fn add_tokens(&self, n: u64) {
        self.tokens.fetch_add(n, Ordering::Relaxed);
    }

    /// Ask the task to stop at its next checkpoint; it then writes nothing more.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether [`Progress::cancel`] was called.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    pub(super) fn set_phase(&self, phase: TaskPhase) {
        self.phase.store(phase as i32, Ordering::Relaxed);
    }

    pub(super) fn set_counts(&self, done: u64, total: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    pub(super) fn check(&self) -> Result<(), PipelineError> {
        if self.is_cancelled() {
            return Err(PipelineError::Cancelled);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_through_the_atomic() {
        let p = Progress::default();
        assert_eq!(p.snapshot().0, TaskPhase::Starting);
        for phase in TaskPhase::ALL {
            p.set_phase(phase);
            assert_eq!(p.snapshot().0, phase);
        }
        assert!(p.check().is_ok());
        p.cancel();
        assert!(matches!(p.check(), Err(PipelineError::Cancelled)));
    }
}
