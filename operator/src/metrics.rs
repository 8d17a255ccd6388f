//! What the operator counts, in OpenMetrics: reconciles by outcome, errors by
//! category, reconcile durations, whether it leads, and each QCluster's queue
//! depth and workers (read from the QClusters' status when scraped, so a
//! deleted QCluster leaves no stale series).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::qcluster::QCluster;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The categories of failed reconciles ([`crate::reconciler::ReconcileError::category`]).
pub const ERROR_CATEGORIES: [&str; 3] = ["apiserver", "serialize", "randomness"];
/// Why a QSchedule slot is skipped.
pub const SKIP_REASONS: [&str; 3] = ["suspended", "deadline", "forbidden"];

/// A reconcile's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ready`, `progressing`, `broker_unreachable`, `stalled`, `paused` or `error`.
    pub outcome: String,
}

/// An error's category.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    /// `apiserver`, `serialize` or `randomness`.
    pub category: String,
}

/// Why a schedule's slot was skipped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabel {
    /// `suspended`, `deadline` or `forbidden`.
    pub reason: String,
}

/// One QCluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QClusterLabels {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub qcluster: String,
}

/// Everything the operator counts.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles, by outcome.
    pub reconciles: Family<OutcomeLabel, Counter>,
    /// Failed reconciles, by category.
    pub errors: Family<CategoryLabel, Counter>,
    /// Seconds one reconcile took.
    pub duration: Histogram,
    /// 1 while this replica holds the Lease.
    pub leader: Gauge,
    /// QSchedule slots enqueued.
    pub schedule_runs: Counter,
    /// QSchedule slots skipped, by reason.
    pub schedule_skips: Family<SkipLabel, Counter>,
    /// QSchedule slots that could not be enqueued yet (they are tried again).
    pub schedule_enqueue_errors: Counter,
    queued: Family<QClusterLabels, Gauge>,
    workers: Family<QClusterLabels, Gauge>,
    clusters: Family<QClusterLabels, Gauge>,
    replicas_desired: Family<QClusterLabels, Gauge>,
    rendering: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("q8s_operator");
        let reconciles = Family::default();
        registry.register("reconciles", "Reconciles, by outcome", reconciles.clone());
        let errors = Family::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by category",
            errors.clone(),
        );
        let duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "reconcile_duration_seconds",
            "Seconds one reconcile took",
            duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease and reconciles",
            leader.clone(),
        );
        let schedule_runs = Counter::default();
        registry.register(
            "schedule_runs",
            "QSchedule slots enqueued",
            schedule_runs.clone(),
        );
        let schedule_skips = Family::default();
        registry.register(
            "schedule_skips",
            "QSchedule slots skipped, by reason",
            schedule_skips.clone(),
        );
        let schedule_enqueue_errors = Counter::default();
        registry.register(
            "schedule_enqueue_errors",
            "QSchedule slots that could not be enqueued yet (they are tried again)",
            schedule_enqueue_errors.clone(),
        );
        let queued = Family::default();
        registry.register(
            "queue_depth",
            "Packages waiting in each QCluster's broker, as its status last said",
            queued.clone(),
        );
        let workers = Family::default();
        registry.register(
            "workers",
            "Worker processes of each QCluster's live clusters, as its status last said",
            workers.clone(),
        );
        let clusters = Family::default();
        registry.register(
            "clusters",
            "Live clusters (pods publishing a Stat) of each QCluster, as its status last said",
            clusters.clone(),
        );
        let replicas_desired = Family::default();
        registry.register(
            "replicas_desired",
            "Clusters (pods) each QCluster asks for: its spec.replicas",
            replicas_desired.clone(),
        );
        // Every category and reason starts at zero, so a dashboard or an alert
        // sees a series (and a rate of 0) before the first one happens.
        for category in ERROR_CATEGORIES {
            let _ = errors.get_or_create(&CategoryLabel {
                category: category.to_string(),
            });
        }
        for reason in SKIP_REASONS {
            let _ = schedule_skips.get_or_create(&SkipLabel {
                reason: reason.to_string(),
            });
        }
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            schedule_runs,
            schedule_skips,
            schedule_enqueue_errors,
            queued,
            workers,
            clusters,
            replicas_desired,
            rendering: std::sync::Mutex::new(()),
        }
    }
}

impl Metrics {
    /// Counts one reconcile's outcome.
    pub fn reconciled(&self, outcome: &str) {
        self.reconciles
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts `count` skipped slots.
    pub fn skipped(&self, reason: &str, count: u64) {
        self.schedule_skips
            .get_or_create(&SkipLabel {
                reason: reason.into(),
            })
            .inc_by(count);
    }

    /// Counts one failed reconcile.
    pub fn failed(&self, category: &str) {
        self.reconciled("error");
        self.errors
            .get_or_create(&CategoryLabel {
                category: category.into(),
            })
            .inc();
    }

    /// The OpenMetrics text, the per-QCluster gauges read from the status of
    /// the QClusters in `stores` (one per namespace watched) now.
    pub fn render(&self, stores: &[Store<QCluster>]) -> String {
        // Two scrapes at once must not see each other's half-filled gauges.
        let _rendering = self
            .rendering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.queued.clear();
        self.workers.clear();
        self.clusters.clear();
        self.replicas_desired.clear();
        for qcluster in stores.iter().flat_map(Store::state) {
            let labels = QClusterLabels {
                namespace: qcluster.namespace().unwrap_or_default(),
                qcluster: qcluster.name_any(),
            };
            self.replicas_desired
                .get_or_create(&labels)
                .set(i64::from(qcluster.spec.replicas));
            // No totals: the operator cannot count the clusters (no status
            // yet, the broker unreachable, a store it cannot read), so it says
            // nothing rather than "none".
            let Some(totals) = qcluster.status.as_ref().and_then(|s| s.totals.as_ref()) else {
                continue;
            };
            self.clusters.get_or_create(&labels).set(totals.clusters);
            if let Some(queued) = totals.queued {
                self.queued.get_or_create(&labels).set(queued);
            }
            self.workers.get_or_create(&labels).set(totals.workers);
        }
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot render the metrics: {error}");
        }
        out
    }
}

/// What the operator's HTTP endpoints read: its metrics, the QClusters it
/// sees, and whether it can talk to the apiserver.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// The counters.
    pub metrics: Metrics,
    qclusters: Mutex<Vec<Store<QCluster>>>,
    apiserver: AtomicBool,
}

impl Telemetry {
    /// The QClusters a reconciler watches, for the per-QCluster gauges: one
    /// store per namespace watched, added when its reconciler starts;
    /// [`Telemetry::not_watching`] forgets them when this replica stops leading.
    pub fn watching(&self, qclusters: Store<QCluster>) {
        self.qclusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(qclusters);
    }

    /// Forgets the watched QClusters: this replica stopped reconciling.
    pub fn not_watching(&self) {
        self.qclusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Whether the last call to the apiserver answered.
    pub fn set_apiserver(&self, answers: bool) {
        self.apiserver.store(answers, Ordering::SeqCst);
    }

    /// Whether the last call to the apiserver answered: what `/readyz` says.
    pub fn apiserver(&self) -> bool {
        self.apiserver.load(Ordering::SeqCst)
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let qclusters = self
            .qclusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.metrics.render(&qclusters)
    }
}
