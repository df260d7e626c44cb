//! The part of the state a restarted coordinator needs to keep in-flight
//! work: the epoch (lease ids on the wire carry it) and the live leases. The
//! persister writes it to `<sweep>/state/leases.json` as it changes; a
//! restart restores the leases of tasks still pending, each with a fresh
//! deadline, so workers' heartbeats and completions find them.

use super::{Scheduler, TaskState};
use cd_common::spec::TaskId;
use cd_proto::v1::TaskPhase;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::time::Instant;

/// One live lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersistedLease {
    /// The task.
    pub task_id: TaskId,
    /// Lease id (without the epoch).
    pub lease_id: u64,
    /// The worker holding it.
    pub worker: String,
    /// Attempts charged, this one included.
    pub attempts: u32,
}

/// The epoch, the next lease id and every live lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersistedLeases {
    /// Lease-id epoch.
    pub epoch: u32,
    /// Next lease id to hand out.
    pub next_lease: u64,
    /// Live leases.
    pub leases: Vec<PersistedLease>,
}

impl Scheduler {
    /// What a restart needs to keep the leases in flight.
    pub(crate) fn persisted_leases(&self) -> PersistedLeases {
        let mut leases: Vec<PersistedLease> = self
            .leases
            .values()
            .filter_map(|&t| {
                let task = &self.tasks[t];
                let l = task.lease.as_ref()?;
                Some(PersistedLease {
                    task_id: task.id.clone(),
                    lease_id: l.id,
                    worker: l.worker.clone(),
                    attempts: task.attempts,
                })
            })
            .collect();
        leases.sort_by_key(|l| l.lease_id);
        PersistedLeases {
            epoch: self.epoch,
            next_lease: self.next_lease,
            leases,
        }
    }

    /// Take over a previous run's epoch and re-establish its leases on tasks
    /// that are still pending (after completed cells and failure histories
    /// were restored), each lapsing one lease lifetime from `now` unless its
    /// worker heartbeats. Returns the number restored.
    pub(crate) fn restore_leases(&mut self, saved: &PersistedLeases, now: Instant) -> usize {
        self.epoch = saved.epoch;
        self.next_lease = self.next_lease.max(saved.next_lease);
        let mut restored = 0;
        for l in &saved.leases {
            let Some(&t) = self.by_id.get(&l.task_id) else {
                continue;
            };
            if self.tasks[t].state != TaskState::Pending || self.held_by.contains_key(&l.worker) {
                continue;
            }
            let deadline = now + self.limits.lease_ttl;
            self.set_state(t, TaskState::Leased);
            let task = &mut self.tasks[t];
            task.attempts = task.attempts.max(l.attempts);
            task.lease = Some(super::Lease {
                id: l.lease_id,
                worker: l.worker.clone(),
                deadline,
                phase: TaskPhase::Starting,
                done: 0,
                total: 0,
                moved_at: now,
                beats: 1,
            });
            self.leases.insert(l.lease_id, t);
            self.held_by.insert(l.worker.clone(), l.lease_id);
            self.expiry.push(Reverse((deadline, l.lease_id)));
            self.next_lease = self.next_lease.max(l.lease_id + 1);
            restored += 1;
        }
        restored
    }
}
