//! The cluster's Stat: assembled from what the sentinel's tasks count, published every few seconds.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;

use super::{Progress, STAT_INTERVAL, STAT_TTL, Shared};
use crate::stat::{Stat, State};

/// What stays the same in every Stat of one cluster.
#[derive(Debug, Clone)]
pub struct StatIdentity {
    /// The cluster id: the sentinel's pid.
    pub cluster_id: String,
    /// The host name.
    pub host: String,
    /// Time of birth.
    pub tob: chrono::DateTime<Utc>,
    /// The sentinel's pid.
    pub sentinel: u32,
    /// The node, from [`crate::stat::NODE_VAR`].
    pub node: Option<String>,
}

/// The cluster's Stat now; `state` counts only when it is `Stopped`.
pub fn stat_of(
    shared: &Shared,
    progress: &Progress,
    identity: &StatIdentity,
    state: State,
) -> Stat {
    let metrics = &shared.metrics;
    Stat {
        cluster_id: identity.cluster_id.clone(),
        host: identity.host.clone(),
        name: shared.config.name.clone(),
        state,
        workers: shared
            .pids
            .lock()
            .map(|pids| pids.iter().copied().filter(|pid| *pid != 0).collect())
            .unwrap_or_default(),
        task_queue: u64::try_from(metrics.task_queue.get()).unwrap_or(0),
        result_queue: u64::try_from(metrics.result_queue.get()).unwrap_or(0),
        reincarnations: metrics.reincarnations.get(),
        tob: identity.tob,
        timestamp: Utc::now(),
        sentinel: identity.sentinel,
        pusher: identity.sentinel,
        monitor: identity.sentinel,
        queue_limit: shared.config.queue_limit() as u64,
        running: progress.running.load(Ordering::SeqCst) as u64,
        successes: metrics.successes.get(),
        failures: metrics.failures.get(),
        oom_kills: metrics.oom_kills.get(),
        node: identity.node.clone(),
    }
    .with_progress(progress)
}

impl Stat {
    fn with_progress(mut self, progress: &Progress) -> Stat {
        if self.state == State::Stopped {
            return self;
        }
        self.state = if progress.stopping.load(Ordering::SeqCst) {
            State::Stopping
        } else if !progress.started.load(Ordering::SeqCst) {
            State::Starting
        } else if progress.running.load(Ordering::SeqCst) > 0 || self.task_queue > 0 {
            State::Working
        } else {
            State::Idle
        };
        self
    }
}

/// Publishes the cluster's Stat now on its board.
pub async fn publish(shared: &Shared, progress: &Progress, identity: &StatIdentity) {
    let stat = stat_of(shared, progress, identity, State::Idle);
    if let Err(error) = stat.publish(shared.board.as_ref(), STAT_TTL).await {
        tracing::warn!("cannot publish Stat: {error}");
    }
}

/// Publishes the Stat every few seconds, and reads the broker's queue size
/// and the age of its oldest package for their gauges.
pub async fn publish_every_interval(
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    identity: StatIdentity,
) {
    loop {
        publish(&shared, &progress, &identity).await;
        if let Ok(size) = shared.broker.queue_size().await {
            shared
                .metrics
                .broker_queue
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        let oldest = shared.broker.oldest_waiting().await;
        let ages = &shared.metrics.broker_queue_age;
        match oldest.ok().and_then(|o| o.age(&shared.signer, Utc::now())) {
            Some(age) => {
                ages.get_or_create(&Vec::new()).set(age.as_secs_f64());
            }
            // Unknown now (a failed read, a package signed with a retired key):
            // no series rather than a stale age.
            None => {
                ages.remove(&Vec::new());
            }
        }
        tokio::time::sleep(STAT_INTERVAL).await;
    }
}
