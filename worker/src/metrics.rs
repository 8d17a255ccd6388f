//! Prometheus metrics of a cluster, rendered in the text exposition format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the duration histograms' buckets, in seconds.
const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

/// A histogram of durations with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds, so it can be an atomic integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation of `seconds`.
    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        if let Some(index) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Everything a cluster counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Tasks handed to a worker.
    pub tasks_started: AtomicU64,
    /// Tasks that succeeded.
    pub tasks_succeeded: AtomicU64,
    /// Tasks that failed, timeouts included.
    pub tasks_failed: AtomicU64,
    /// Tasks killed at their timeout.
    pub tasks_timed_out: AtomicU64,
    /// Packages that did not verify and were never run.
    pub packages_rejected: AtomicU64,
    /// Worker processes started again after a recycle, max_rss, timeout or death.
    pub reincarnations: AtomicU64,
    /// Packages held in memory, not yet started.
    pub task_queue: AtomicU64,
    /// Finished tasks not yet saved.
    pub result_queue: AtomicU64,
    /// Packages waiting in the broker, as last read.
    pub broker_queue: AtomicU64,
    /// Live worker processes.
    pub workers: AtomicU64,
    /// Seconds a task's function ran.
    pub task_duration: Histogram,
    /// Seconds from enqueue to start.
    pub task_wait: Histogram,
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "q8s_tasks_started_total",
                "Tasks handed to a worker.",
                &self.tasks_started,
            ),
            (
                "q8s_tasks_succeeded_total",
                "Tasks that succeeded.",
                &self.tasks_succeeded,
            ),
            (
                "q8s_tasks_failed_total",
                "Tasks that failed, timeouts included.",
                &self.tasks_failed,
            ),
            (
                "q8s_tasks_timed_out_total",
                "Tasks killed at their timeout.",
                &self.tasks_timed_out,
            ),
            (
                "q8s_packages_rejected_total",
                "Packages that did not verify and were never run.",
                &self.packages_rejected,
            ),
            (
                "q8s_reincarnations_total",
                "Worker processes replaced after a recycle, max_rss, timeout or death.",
                &self.reincarnations,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "q8s_task_queue",
                "Packages held in memory, not yet started.",
                &self.task_queue,
            ),
            (
                "q8s_result_queue",
                "Finished tasks not yet saved.",
                &self.result_queue,
            ),
            (
                "q8s_broker_queue",
                "Packages waiting in the broker.",
                &self.broker_queue,
            ),
            ("q8s_workers", "Live worker processes.", &self.workers),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        self.task_duration.render(
            &mut out,
            "q8s_task_duration_seconds",
            "Seconds a task's function ran.",
        );
        self.task_wait.render(
            &mut out,
            "q8s_task_wait_seconds",
            "Seconds from enqueue to start.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_exposition() {
        let metrics = Metrics::default();
        metrics.task_duration.observe(0.0003);
        metrics.task_duration.observe(0.02);
        metrics.task_duration.observe(1000.0);
        metrics.tasks_started.fetch_add(3, Ordering::Relaxed);
        let text = metrics.render();
        assert!(text.contains("q8s_tasks_started_total 3"), "{text}");
        assert!(
            text.contains("q8s_task_duration_seconds_bucket{le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("q8s_task_duration_seconds_bucket{le=\"0.025\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("q8s_task_duration_seconds_bucket{le=\"300\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("q8s_task_duration_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.contains("q8s_task_duration_seconds_count 3"), "{text}");
    }
}
