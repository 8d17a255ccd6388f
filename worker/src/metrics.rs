//! Prometheus metrics of a cluster, on the `prometheus-client` library.
//!
//! Every metric carries the cluster's name as its `cluster` label; tasks are
//! counted by function and outcome, durations by function, rejected packages
//! by reason. A function name the cluster does not know is counted as
//! `unknown`, so enqueueing made-up names cannot grow the exposition without end.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the duration histograms' buckets, in seconds.
const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label of a task function.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FuncLabel {
    /// The dotted function name, or `unknown`.
    pub func: String,
}

/// The labels of a finished task.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The dotted function name, or `unknown`.
    pub func: String,
    /// `success`, or the failure's kind (`failed`, `timeout`, `worker_lost`, …).
    pub outcome: String,
}

/// The label of a rejected package.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why it was rejected (`bad_signature`, `malformed`, …).
    pub reason: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Waits run longer than tasks do: a backlog is minutes or hours old.
const WAIT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
    14400.0,
];

fn wait_histogram() -> Histogram {
    Histogram::new(WAIT_BUCKETS)
}

/// Everything a cluster counts, registered for exposition.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Tasks handed to a worker, by function.
    pub tasks_started: Family<FuncLabel, Counter>,
    /// Tasks finished, by function and outcome.
    pub tasks_finished: Family<OutcomeLabels, Counter>,
    /// Packages that did not verify and were never run, by reason.
    pub packages_rejected: Family<ReasonLabel, Counter>,
    /// Worker processes replaced after a recycle, max_rss, timeout or death.
    pub reincarnations: Counter,
    /// Workers the kernel killed for the memory limit of their cgroup (the container's).
    pub oom_kills: Counter,
    /// Hooks not called because too many were running or waiting.
    pub hooks_dropped: Counter,
    /// Packages held in memory, not yet started.
    pub task_queue: Gauge,
    /// Finished tasks not yet saved.
    pub result_queue: Gauge,
    /// Packages waiting in the broker, as last read.
    pub broker_queue: Gauge,
    /// Seconds the oldest waiting package has waited, as last read; a series
    /// only where the broker can say (the SQL broker).
    pub broker_queue_age: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Live worker processes.
    pub workers: Gauge,
    /// Tasks running in workers now.
    pub tasks_running: Gauge,
    /// Seconds a task's function ran, by function.
    pub task_duration: Family<FuncLabel, Histogram, fn() -> Histogram>,
    /// Seconds from enqueue to start, by function.
    pub task_wait: Family<FuncLabel, Histogram, fn() -> Histogram>,
    /// Tasks finished with success, for Stat (exposed by `tasks_finished`).
    pub successes: Counter,
    /// Tasks finished without success, for Stat (exposed by `tasks_finished`).
    pub failures: Counter,
}

impl Metrics {
    /// The metrics of cluster `cluster`, every one labelled with its name.
    pub fn new(cluster: &str) -> Metrics {
        // A clone of each metric goes into the registry; both share one value.
        let label = [("cluster".into(), cluster.to_string().into())];
        let mut registry = Registry::with_prefix_and_labels("q8s", label.into_iter());
        let tasks_started = Family::default();
        registry.register(
            "tasks_started",
            "Tasks handed to a worker",
            tasks_started.clone(),
        );
        let tasks_finished = Family::default();
        registry.register(
            "tasks_finished",
            "Tasks finished, by function and outcome",
            tasks_finished.clone(),
        );
        let packages_rejected = Family::default();
        registry.register(
            "packages_rejected",
            "Packages that did not verify and were never run",
            packages_rejected.clone(),
        );
        let reincarnations = Counter::default();
        registry.register(
            "reincarnations",
            "Worker processes replaced after a recycle, max_rss, timeout or death",
            reincarnations.clone(),
        );
        let oom_kills = Counter::default();
        registry.register(
            "worker_oom_kills",
            "Workers the kernel killed for the memory limit of their cgroup (the container's)",
            oom_kills.clone(),
        );
        let hooks_dropped = Counter::default();
        registry.register(
            "hooks_dropped",
            "Hooks not called because too many were running or waiting",
            hooks_dropped.clone(),
        );
        let task_queue = Gauge::default();
        registry.register(
            "task_queue",
            "Packages held in memory, not yet started",
            task_queue.clone(),
        );
        let result_queue = Gauge::default();
        registry.register(
            "result_queue",
            "Finished tasks not yet saved",
            result_queue.clone(),
        );
        let broker_queue = Gauge::default();
        registry.register(
            "broker_queue",
            "Packages waiting in the broker",
            broker_queue.clone(),
        );
        let broker_queue_age = Family::default();
        registry.register(
            "broker_queue_age_seconds",
            "Seconds the oldest package waiting in the broker has waited",
            broker_queue_age.clone(),
        );
        let workers = Gauge::default();
        registry.register("workers", "Live worker processes", workers.clone());
        let tasks_running = Gauge::default();
        registry.register(
            "tasks_running",
            "Tasks running in workers now",
            tasks_running.clone(),
        );
        let task_duration = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register(
            "task_duration_seconds",
            "Seconds a task's function ran",
            task_duration.clone(),
        );
        let task_wait = Family::new_with_constructor(wait_histogram as fn() -> Histogram);
        registry.register(
            "task_wait_seconds",
            "Seconds from enqueue to start",
            task_wait.clone(),
        );
        Metrics {
            registry,
            tasks_started,
            tasks_finished,
            packages_rejected,
            reincarnations,
            oom_kills,
            hooks_dropped,
            task_queue,
            result_queue,
            broker_queue,
            broker_queue_age,
            workers,
            tasks_running,
            task_duration,
            task_wait,
            successes: Counter::default(),
            failures: Counter::default(),
        }
    }

    /// The OpenMetrics text exposition of every metric ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot render the metrics: {error}");
        }
        out
    }

    /// A finished task, counted by function and outcome.
    pub fn finished(&self, func: &str, outcome: &str) {
        if outcome == "success" {
            self.successes.inc();
        } else {
            self.failures.inc();
        }
        self.tasks_finished
            .get_or_create(&OutcomeLabels {
                func: func.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_labels_tasks_by_cluster_function_and_outcome() {
        let metrics = Metrics::new("reports");
        let duration = |func: &str| {
            metrics
                .task_duration
                .get_or_create(&FuncLabel { func: func.into() })
                .clone()
        };
        duration("math.sqrt").observe(0.0003);
        duration("math.sqrt").observe(0.02);
        duration("math.sqrt").observe(1000.0);
        metrics.finished("math.sqrt", "success");
        metrics.finished("math.sqrt", "timeout");
        let text = metrics.render();
        assert!(
            text.contains(
                "q8s_tasks_finished_total{cluster=\"reports\",func=\"math.sqrt\",outcome=\"timeout\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "q8s_task_duration_seconds_bucket{cluster=\"reports\",le=\"0.025\",func=\"math.sqrt\"} 2"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
