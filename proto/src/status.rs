//! Why the coordinator refuses a call, and what a worker does about it: the
//! one table between refusals and gRPC status codes, read in both
//! directions.
//!
//! The coordinator answers every refusal with [`Refusal::status`], which
//! sets the gRPC code and names the reason in the `cd-refusal` response
//! metadata; the worker reads it back with [`Refusal::of`] and decides with
//! [`Reaction::to`]. Two refusals may share a code (the code is for generic
//! gRPC tooling); the metadata is what tells them apart.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// The metadata key that names a refusal's reason.
pub(crate) const REFUSAL_KEY: &str = "cd-refusal";

/// A reason the coordinator refuses a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No or a wrong bearer token.
    BadToken,
    /// The worker is not registered (the coordinator restarted): register
    /// again.
    UnknownWorker,
    /// No such task in this sweep.
    UnknownTask,
    /// The lease named is not this worker's live lease of the task (it
    /// lapsed and another worker holds the task now): drop it.
    LeaseNotHeld,
    /// A completion came before a valid `metrics.json` is in the store.
    ResultMissing,
    /// A malformed request (ids too long, too many devices).
    BadRequest,
    /// The coordinator cannot answer now (its store is unreachable).
    Unavailable,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: [Refusal; 7] = [
        Refusal::BadToken,
        Refusal::UnknownWorker,
        Refusal::UnknownTask,
        Refusal::LeaseNotHeld,
        Refusal::ResultMissing,
        Refusal::BadRequest,
        Refusal::Unavailable,
    ];

    /// The name carried in the `cd-refusal` metadata.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::BadToken => "bad_token",
            Refusal::UnknownWorker => "unknown_worker",
            Refusal::UnknownTask => "unknown_task",
            Refusal::LeaseNotHeld => "lease_not_held",
            Refusal::ResultMissing => "result_missing",
            Refusal::BadRequest => "bad_request",
            Refusal::Unavailable => "unavailable",
        }
    }

    /// The gRPC code the refusal is sent with.
    pub fn code(self) -> Code {
        match self {
            Refusal::BadToken => Code::Unauthenticated,
            Refusal::UnknownWorker | Refusal::LeaseNotHeld | Refusal::ResultMissing => {
                Code::FailedPrecondition
            }
            Refusal::UnknownTask => Code::NotFound,
            Refusal::BadRequest => Code::InvalidArgument,
            Refusal::Unavailable => Code::Unavailable,
        }
    }

    /// The status to answer with: the code, the message and the reason.
    pub fn status(self, message: impl Into<String>) -> Status {
        let mut status = Status::new(self.code(), message);
        status
            .metadata_mut()
            .insert(REFUSAL_KEY, MetadataValue::from_static(self.label()));
        status
    }

    /// The refusal a status carries: its `cd-refusal` metadata, or for a
    /// status without it (a proxy's, or a transport error) the refusal its
    /// code alone means, if only one does.
    pub fn of(status: &Status) -> Option<Refusal> {
        if let Some(named) = status
            .metadata()
            .get(REFUSAL_KEY)
            .and_then(|v| v.to_str().ok())
        {
            return Refusal::ALL.into_iter().find(|r| r.label() == named);
        }
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => Some(Refusal::BadToken),
            Code::NotFound => Some(Refusal::UnknownTask),
            _ => None,
        }
    }
}

/// What a worker does about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// The coordinator is unreachable, overloaded or busy: retry with
    /// backoff.
    Retry,
    /// The coordinator refused the worker's credentials: stop (exit code
    /// [`crate::exit::worker::AUTH`]).
    Stop,
    /// The coordinator does not know this worker or lease (it restarted, or
    /// the lease went to another worker): register again or drop the lease,
    /// whichever the call was about.
    Forget,
    /// Anything else: a bug or a protocol mismatch.
    Fail,
}

impl Reaction {
    /// The reaction to a failed call's status.
    pub fn to(status: &Status) -> Reaction {
        if let Some(refusal) = Refusal::of(status) {
            return match refusal {
                Refusal::BadToken => Reaction::Stop,
                Refusal::UnknownWorker
                | Refusal::UnknownTask
                | Refusal::LeaseNotHeld
                | Refusal::ResultMissing => Reaction::Forget,
                Refusal::Unavailable => Reaction::Retry,
                Refusal::BadRequest => Reaction::Fail,
            };
        }
        match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown => Reaction::Retry,
            // A coordinator that names no reason: it may have restarted.
            Code::FailedPrecondition => Reaction::Forget,
            _ => Reaction::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_reads_back_as_itself() {
        for r in Refusal::ALL {
            let status = r.status("why");
            assert_eq!(status.code(), r.code());
            assert_eq!(status.message(), "why");
            assert_eq!(Refusal::of(&status), Some(r), "{r:?}");
        }
    }

    #[test]
    fn a_lost_lease_is_dropped_and_only_a_bad_token_stops_the_worker() {
        let stops: Vec<Refusal> = Refusal::ALL
            .into_iter()
            .filter(|r| Reaction::to(&r.status("")) == Reaction::Stop)
            .collect();
        assert_eq!(stops, [Refusal::BadToken]);
        assert_eq!(
            Reaction::to(&Refusal::LeaseNotHeld.status("")),
            Reaction::Forget
        );
        assert_eq!(
            Reaction::to(&Refusal::UnknownWorker.status("")),
            Reaction::Forget
        );
        assert_eq!(
            Reaction::to(&Refusal::Unavailable.status("")),
            Reaction::Retry
        );
    }

    #[test]
    fn statuses_without_a_reason_are_read_by_their_code() {
        assert_eq!(Reaction::to(&Status::unavailable("down")), Reaction::Retry);
        assert_eq!(Reaction::to(&Status::cancelled("")), Reaction::Retry);
        assert_eq!(Reaction::to(&Status::unauthenticated("")), Reaction::Stop);
        assert_eq!(
            Reaction::to(&Status::failed_precondition("")),
            Reaction::Forget
        );
        assert_eq!(Reaction::to(&Status::internal("bug")), Reaction::Fail);
        let mut odd = Status::failed_precondition("");
        odd.metadata_mut()
            .insert(REFUSAL_KEY, MetadataValue::from_static("from_the_future"));
        assert_eq!(Refusal::of(&odd), None);
    }
}
