//! `<sweep>/state/coordinator.lock`: one coordinator serves a sweep at a
//! time. It takes the lock with a create-if-absent write, refreshes it, and a
//! lock nobody refreshed for [`LOCK_STALE_MS`] (or left by an exited process
//! on this host) is taken over.

use super::{layout, Store, StoreError};
use bytes::Bytes;

/// `<sweep>/state/coordinator.lock`: which coordinator serves the sweep. It
/// refreshes the lock every [`LOCK_REFRESH_MS`]; a lock not refreshed for
/// [`LOCK_STALE_MS`] is abandoned and may be taken over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CoordinatorLock {
    /// Random per coordinator process.
    pub instance: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Unix milliseconds of the last refresh.
    pub refreshed_unix_ms: u64,
}

impl CoordinatorLock {
    /// Whether `self`, a lock found in the store, was left by a coordinator
    /// that is provably gone: one on the same host whose process has exited,
    /// or an earlier life of this very process slot (same host and pid, e.g.
    /// pid 1 of a restarted container). Such a lock is taken over at once
    /// instead of after [`LOCK_STALE_MS`].
    pub(crate) fn left_by_a_dead_process(&self, me: &CoordinatorLock) -> bool {
        self.instance != me.instance
            && self.host == me.host
            && (self.pid == me.pid || !process_alive(self.pid))
    }
}

/// Whether a process with this pid runs on this host (Linux `/proc`; a
/// zombie counts as gone). Elsewhere every process is assumed alive.
fn process_alive(pid: u32) -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// How often a coordinator refreshes its lock.
pub const LOCK_REFRESH_MS: u64 = 10_000;
/// After how long without a refresh a lock counts as abandoned.
pub(crate) const LOCK_STALE_MS: u64 = 45_000;

impl Store {
    /// The sweep's lock as found in the store (an unreadable one reads as
    /// none: it is treated as abandoned).
    pub async fn read_lock(&self, sweep: &str) -> Result<Option<CoordinatorLock>, StoreError> {
        let rel = layout::coordinator_lock(sweep);
        match self.get_bytes(&rel).await? {
            // An unreadable lock is treated as abandoned.
            Some(b) => Ok(serde_json::from_slice(&b).ok()),
            None => Ok(None),
        }
    }

    /// Take the sweep's coordinator lock, refusing ([`StoreError::Fenced`])
    /// while another coordinator keeps it fresh; an abandoned one is taken over.
    pub async fn acquire_lock(&self, sweep: &str, me: &CoordinatorLock) -> Result<(), StoreError> {
        let rel = layout::coordinator_lock(sweep);
        let body = || Bytes::from(serde_json::to_vec(me).expect("lock serializes"));
        for _ in 0..2 {
            match self.put_create(&rel, body()).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Exists { .. }) => {}
                Err(e) => return Err(e),
            }
            if let Some(held) = self.read_lock(sweep).await? {
                let age = me.refreshed_unix_ms.saturating_sub(held.refreshed_unix_ms);
                if held.left_by_a_dead_process(me) {
                    tracing::warn!(host = %held.host, pid = held.pid, "taking over the coordinator lock of an exited process on this host");
                } else if held.instance != me.instance && age < LOCK_STALE_MS {
                    return Err(StoreError::Fenced {
                        sweep: sweep.to_string(),
                        holder: format!("host {}, pid {}", held.host, held.pid),
                        age_secs: age / 1000,
                        wait_secs: (LOCK_STALE_MS - age).div_ceil(1000),
                    });
                }
            }
            // Abandoned (or unreadable): remove it and try once more.
            let key = self.key(&rel);
            match self.inner.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(StoreError::Backend {
                        key: key.to_string(),
                        source,
                    })
                }
            }
        }
        Err(StoreError::Fenced {
            sweep: sweep.to_string(),
            holder: "another coordinator that took the lock meanwhile".into(),
            age_secs: 0,
            wait_secs: LOCK_STALE_MS / 1000,
        })
    }

    /// Refresh the lock; [`StoreError::Fenced`] when another coordinator has
    /// taken it (this one must stop serving).
    pub async fn refresh_lock(&self, sweep: &str, me: &CoordinatorLock) -> Result<(), StoreError> {
        if let Some(held) = self.read_lock(sweep).await? {
            if held.instance != me.instance {
                return Err(StoreError::Fenced {
                    sweep: sweep.to_string(),
                    holder: format!("host {}, pid {}", held.host, held.pid),
                    age_secs: me.refreshed_unix_ms.saturating_sub(held.refreshed_unix_ms) / 1000,
                    wait_secs: 0,
                });
            }
        }
        let body = Bytes::from(serde_json::to_vec(me).expect("lock serializes"));
        self.put_bytes(&layout::coordinator_lock(sweep), body).await
    }

    /// Give the lock up (clean shutdown), if it is still this coordinator's.
    pub async fn release_lock(&self, sweep: &str, me: &CoordinatorLock) -> Result<(), StoreError> {
        if self
            .read_lock(sweep)
            .await?
            .is_some_and(|h| h.instance == me.instance)
        {
            let key = self.key(&layout::coordinator_lock(sweep));
            let _ = self.inner.delete(&key).await;
        }
        Ok(())
    }
}
