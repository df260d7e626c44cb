//! Prometheus metrics of the coordinator, served at `/metrics`.
//!
//! Counters follow Prometheus naming (`_total`, `_seconds`); gauges that
//! mirror the scheduler (tasks by state, workers, per-worker rates) are set
//! from it on every scrape, so they are never stale.

use crate::state::{Counts, Dashboard};
use ::prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    /// Leases handed out.
    pub leases_granted: IntCounter,
    /// Leases that lapsed (no heartbeat) or stalled (no progress).
    pub leases_expired: IntCounter,
    /// Time to answer a `LeaseTask` call.
    pub lease_seconds: Histogram,
    /// Cells completed.
    pub completions: IntCounter,
    /// Failure reports, by fault (`task`, `worker`).
    pub failures: IntCounterVec,
    /// Store operations that failed (writes of histories and reports,
    /// completion checks).
    pub store_errors: IntCounter,
    tasks: IntGaugeVec,
    workers: IntGauge,
    quarantined: IntGauge,
    unplaceable: IntGauge,
    examples_per_second: GaugeVec,
    tokens_per_second: GaugeVec,
    up_seconds: Gauge,
}

impl Metrics {
    /// A fresh registry with every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("cd".into()), None).expect("a valid prefix");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let leases_granted = counter("leases_granted_total", "Leases handed out to workers.");
        let leases_expired = counter(
            "leases_expired_total",
            "Leases that lapsed without a heartbeat or stalled without progress.",
        );
        let completions = counter("tasks_completed_total", "Cells completed.");
        let store_errors = counter(
            "store_errors_total",
            "Store operations of the coordinator that failed.",
        );
        let failures = IntCounterVec::new(
            Opts::new("task_failures_total", "Failure reports, by whose fault."),
            &["fault"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(failures.clone()))
            .expect("unique metric");
        let lease_seconds = Histogram::with_opts(
            HistogramOpts::new("lease_request_seconds", "Time to answer LeaseTask.").buckets(vec![
                0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(lease_seconds.clone()))
            .expect("unique metric");
        let tasks = IntGaugeVec::new(Opts::new("tasks", "Cells by state."), &["state"])
            .expect("valid metric");
        registry
            .register(Box::new(tasks.clone()))
            .expect("unique metric");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let workers = gauge("workers", "Workers registered.");
        let quarantined = gauge(
            "workers_quarantined",
            "Workers quarantined after repeated faults.",
        );
        let unplaceable = gauge(
            "tasks_unplaceable",
            "Pending cells no registered worker can run.",
        );
        let rate = |name: &str, help: &str| {
            let g = GaugeVec::new(Opts::new(name, help), &["worker"]).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let examples_per_second = rate(
            "worker_examples_per_second",
            "Examples per second of each worker's current cell.",
        );
        let tokens_per_second = rate(
            "worker_tokens_per_second",
            "Tokens per second of each worker's current cell.",
        );
        let up_seconds = Gauge::new("up_seconds", "Seconds since the coordinator started.")
            .expect("valid metric");
        registry
            .register(Box::new(up_seconds.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            leases_granted,
            leases_expired,
            lease_seconds,
            completions,
            failures,
            store_errors,
            tasks,
            workers,
            quarantined,
            unplaceable,
            examples_per_second,
            tokens_per_second,
            up_seconds,
        }
    }

    /// The exposition text, after setting the gauges from the scheduler's view.
    pub fn render(&self, counts: Counts, view: &Dashboard, up_seconds: f64) -> String {
        for (state, n) in [
            ("pending", counts.pending),
            ("leased", counts.leased),
            ("completed", counts.completed),
            ("failed", counts.failed),
        ] {
            self.tasks.with_label_values(&[state]).set(n as i64);
        }
        self.workers.set(view.workers.len() as i64);
        self.quarantined.set(
            view.workers
                .iter()
                .filter(|w| w.state == "quarantined")
                .count() as i64,
        );
        self.unplaceable
            .set(view.unplaceable.iter().map(|u| u.pending).sum::<u64>() as i64);
        self.examples_per_second.reset();
        self.tokens_per_second.reset();
        for w in &view.workers {
            self.examples_per_second
                .with_label_values(&[w.id.as_str()])
                .set(w.examples_per_second);
            self.tokens_per_second
                .with_label_values(&[w.id.as_str()])
                .set(w.tokens_per_second);
        }
        self.up_seconds.set(up_seconds);
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("the exposition format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
