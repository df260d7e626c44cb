//! What the scheduler knows of each worker: devices, liveness, progress
//! rates, and its fault record (consecutive worker faults, quarantine).

use cd_common::spec::Precision;
use cd_common::verified::DeviceKind;
use std::time::{Duration, Instant};

/// Consecutive worker faults after which a worker is quarantined.
pub(crate) const QUARANTINE_AFTER: u32 = 3;
/// How long a first quarantine lasts; each further one doubles it, up to
/// [`MAX_QUARANTINE`].
pub(crate) const QUARANTINE_BASE: Duration = Duration::from_secs(300);
/// The longest quarantine.
pub(crate) const MAX_QUARANTINE: Duration = Duration::from_secs(3600);

/// What a worker advertised when it registered, and what the scheduler has
/// seen of it since.
#[derive(Debug, Clone, Default)]
pub struct WorkerInfo {
    /// Host name, for logs and the dashboard.
    pub host: String,
    /// Advertised devices (`cuda:0`, `cpu`) with their memory in bytes.
    pub devices: Vec<(String, u64)>,
    /// Per-device memory in bytes, CUDA devices only when `cuda`.
    pub device_bytes: Vec<u64>,
    /// Whether the worker runs on CUDA devices (each loses a context reserve).
    pub cuda: bool,
    /// Model display name the worker last asked with.
    pub loaded_model: String,
    /// Last time the worker called in.
    pub last_seen: Option<Instant>,
    /// Worker faults in a row (reset by a completed or task-failed cell).
    pub consecutive_faults: u32,
    /// Quarantines so far (each doubles the next one's length).
    pub quarantines: u32,
    /// No lease until then, and why.
    pub quarantined: Option<(Instant, String)>,
    /// Progress rates from heartbeats.
    pub rates: Rates,
}

/// Examples and tokens per second, from successive heartbeats of one lease.
#[derive(Debug, Clone, Default)]
pub struct Rates {
    lease: u64,
    examples: u64,
    tokens: u64,
    at: Option<Instant>,
    /// Smoothed examples per second.
    pub examples_per_second: f64,
    /// Smoothed tokens per second.
    pub tokens_per_second: f64,
}

impl Rates {
    /// Fold in a heartbeat of `lease` reporting cumulative counts.
    pub fn update(&mut self, lease: u64, examples: u64, tokens: u64, now: Instant) {
        if let Some(at) = self.at.filter(|_| self.lease == lease) {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            if dt >= 0.5 {
                let ex = examples.saturating_sub(self.examples) as f64 / dt;
                let tok = tokens.saturating_sub(self.tokens) as f64 / dt;
                let smooth = |old: f64, new: f64| {
                    if old == 0.0 {
                        new
                    } else {
                        0.6 * old + 0.4 * new
                    }
                };
                self.examples_per_second = smooth(self.examples_per_second, ex);
                self.tokens_per_second = smooth(self.tokens_per_second, tok);
            } else {
                return;
            }
        } else if self.lease != lease {
            self.examples_per_second = 0.0;
            self.tokens_per_second = 0.0;
        }
        self.lease = lease;
        self.examples = examples;
        self.tokens = tokens;
        self.at = Some(now);
    }
}

impl WorkerInfo {
    /// Build from the advertised devices (name, kind, memory): the CUDA
    /// devices when there are any, otherwise the host memory of the CPUs.
    pub(crate) fn from_devices(host: String, devices: &[(String, DeviceKind, u64)]) -> WorkerInfo {
        let cuda: Vec<u64> = devices
            .iter()
            .filter(|(_, kind, _)| *kind == DeviceKind::Cuda)
            .map(|(_, _, b)| *b)
            .collect();
        let (device_bytes, is_cuda) = if cuda.is_empty() {
            (devices.iter().map(|(_, _, b)| *b).collect(), false)
        } else {
            (cuda, true)
        };
        WorkerInfo {
            host,
            devices: devices.iter().map(|(n, _, b)| (n.clone(), *b)).collect(),
            device_bytes,
            cuda: is_cuda,
            ..WorkerInfo::default()
        }
    }

    /// The kind of device the worker computes on.
    pub fn kind(&self) -> DeviceKind {
        if self.cuda {
            DeviceKind::Cuda
        } else {
            DeviceKind::Cpu
        }
    }

    /// Why and for how much longer the worker is quarantined, if it is.
    pub fn quarantine(&self, now: Instant) -> Option<(Duration, &str)> {
        let (until, why) = self.quarantined.as_ref()?;
        (*until > now).then(|| (until.saturating_duration_since(now), why.as_str()))
    }

    /// Count a worker fault; quarantine after [`QUARANTINE_AFTER`] in a row.
    /// Returns the quarantine's length when one starts.
    pub fn fault(&mut self, error: &str, now: Instant) -> Option<Duration> {
        self.consecutive_faults += 1;
        if self.consecutive_faults < QUARANTINE_AFTER {
            return None;
        }
        let length = QUARANTINE_BASE
            .checked_mul(1 << self.quarantines.min(8))
            .unwrap_or(MAX_QUARANTINE)
            .min(MAX_QUARANTINE);
        self.quarantines += 1;
        self.consecutive_faults = 0;
        self.quarantined = Some((
            now + length,
            format!("{QUARANTINE_AFTER} worker faults in a row; the last: {error}"),
        ));
        Some(length)
    }

    /// The worker ran a cell to a conclusion: its fault streak ends.
    pub(crate) fn succeeded(&mut self) {
        self.consecutive_faults = 0;
    }

    /// Lift a quarantine (operator's re-admission, or its end).
    pub(crate) fn readmit(&mut self) {
        self.quarantined = None;
        self.consecutive_faults = 0;
    }
}

/// Whether a task's model fits on a worker. The one place the rule lives.
///
/// Uses the coarse weights-plus-allowance estimate shared with the worker's
/// placement planner (`cd_common::memory`). A worker that advertised no
/// memory is trusted to refuse (as a worker fault) what it cannot load.
pub fn fits(worker: &WorkerInfo, size_b: f64, precision: Precision) -> bool {
    if worker.device_bytes.iter().all(|b| *b == 0) {
        return true;
    }
    cd_common::memory::fits(size_b, precision, &worker.device_bytes, worker.cuda)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_faults_in_a_row_quarantine_and_quarantines_grow() {
        let t0 = Instant::now();
        let mut w = WorkerInfo::default();
        assert_eq!(w.fault("a", t0), None);
        assert_eq!(w.fault("b", t0), None);
        assert_eq!(w.fault("c", t0), Some(QUARANTINE_BASE));
        let (left, why) = w.quarantine(t0).unwrap();
        assert_eq!(left, QUARANTINE_BASE);
        assert!(why.contains("the last: c"), "{why}");
        assert!(
            w.quarantine(t0 + QUARANTINE_BASE).is_none(),
            "over by itself"
        );
        for _ in 0..2 {
            w.fault("x", t0);
        }
        assert_eq!(w.fault("x", t0), Some(2 * QUARANTINE_BASE));
        w.readmit();
        assert!(w.quarantine(t0).is_none());
        w.fault("y", t0);
        w.succeeded();
        assert_eq!(w.consecutive_faults, 0, "a success ends the streak");
    }

    #[test]
    fn rates_follow_one_lease_and_restart_with_the_next() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        r.update(1, 0, 0, t0);
        r.update(1, 100, 1000, t0 + Duration::from_secs(2));
        assert_eq!((r.examples_per_second, r.tokens_per_second), (50.0, 500.0));
        r.update(2, 5, 50, t0 + Duration::from_secs(3));
        assert_eq!(r.examples_per_second, 0.0, "a new lease starts over");
    }
}
