//! Exponential backoff with jitter, for every retry loop of the worker.
//!
//! Jitter spreads the retries of many workers that lost the same coordinator
//! (or storage) at the same moment, so they do not come back in lockstep.

use rand::Rng;
use std::time::Duration;

/// Delays of successive retries: `initial · 2^k`, capped at `max`, each drawn
/// uniformly from the upper half of that value.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Start at `initial`, never wait longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        debug_assert!(initial <= max, "backoff initial delay above its cap");
        Backoff { max, next: initial }
    }

    /// The worker's default for RPCs and storage: 200 ms doubling up to 10 s.
    pub(crate) fn default_rpc() -> Self {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
    }

    /// The delay before the next retry; each call doubles the base.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = base / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        let bases = [100u64, 200, 400, 800, 800, 800];
        for (d, base) in delays.iter().zip(bases) {
            let ms = d.as_millis() as u64;
            assert!(
                ms >= base / 2 && ms <= base,
                "delay {ms} ms outside [{}, {base}]",
                base / 2
            );
        }
    }
}
