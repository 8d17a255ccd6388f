//! The pusher: pulls packages from the broker into the task queue, verifying each.
//!
//! It never holds more than `queue_limit` packages that no worker has taken:
//! it reserves room in the task queue before it dequeues. A package that does
//! not verify is failed with the broker, counted, logged without its payload,
//! and never run. A package delivered more than `max_attempts` times is given
//! up: saved as failed and acknowledged.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};

use super::monitor::Finished;
use super::task_queue::TaskQueue;
use super::{Held, Shared};
use crate::broker::Delivery;
use crate::metrics::ReasonLabel;
use crate::task::{ErrorKind, TaskError, TaskRecord};

/// Longest pause after a broker error, doubling from the poll interval.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Runs until `stop` turns true; returns when it has pushed its last package.
pub async fn run(
    shared: Arc<Shared>,
    tasks: mpsc::Sender<Held>,
    queue: Arc<TaskQueue>,
    results: mpsc::UnboundedSender<Finished>,
    mut stop: watch::Receiver<bool>,
) {
    let poll = Duration::from_secs_f64(shared.config.poll);
    let bulk = shared.config.bulk.max(1);
    // Refill once half the queue is free (up to `bulk`), so a full queue is not
    // topped up one package per dequeue as workers take them one by one.
    let low_water = bulk.min(tasks.max_capacity().div_ceil(2)).max(1);
    let mut backoff = poll;
    while !*stop.borrow() {
        let room = tasks.capacity().clamp(low_water, bulk.max(low_water));
        let permits = tokio::select! {
            permits = tasks.reserve_many(room) => match permits {
                Ok(permits) => permits,
                Err(_) => return,
            },
            _ = stop.changed() => break,
        };
        let deliveries = match shared.broker.dequeue(room).await {
            Ok(deliveries) => deliveries,
            Err(error) => {
                tracing::error!("pusher: cannot dequeue, retrying in {backoff:?}: {error}");
                drop(permits);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = poll;
        if deliveries.is_empty() {
            drop(permits);
            tokio::select! {
                _ = shared.broker.wait_for_work(poll) => {}
                _ = stop.changed() => break,
            }
            continue;
        }
        for (delivery, permit) in deliveries.into_iter().zip(permits) {
            if let Some(held) = accept(&shared, delivery, &results).await {
                shared.hold(&held.receipt, &held.task);
                queue.put(permit, held);
            }
        }
    }
}

/// Verifies a delivery; rejected and given-up packages are dealt with here.
async fn accept(
    shared: &Shared,
    delivery: Delivery,
    results: &mpsc::UnboundedSender<Finished>,
) -> Option<Held> {
    let task = match shared.signer.unpack(delivery.package.as_bytes()) {
        Ok(task) => task,
        Err(error) => {
            shared
                .metrics
                .packages_rejected
                .get_or_create(&ReasonLabel {
                    reason: error.category().to_string(),
                })
                .inc();
            let message = format!(
                "rejected a package ({}) that does not unpack; it is failed with the broker and never run: {error}",
                error.category()
            );
            tracing::error!(receipt = %delivery.receipt.0, reason = error.category(), "{message}");
            shared.reporter.cluster_error("rejected_package", &message);
            if let Err(error) = shared.broker.fail(&delivery.receipt).await {
                tracing::error!("cannot fail the rejected package with the broker: {error}");
            }
            return None;
        }
    };
    let max_attempts = shared.config.max_attempts;
    if max_attempts > 0 && delivery.attempt > max_attempts {
        let message = format!(
            "gave up after {max_attempts} attempts: the task never finished (its worker died or the cluster stopped each time)"
        );
        tracing::error!(task = %task.id, func = %task.func, "{message}");
        let now = Utc::now();
        let outcome = Err(TaskError::new(ErrorKind::WorkerLost, message));
        let record = TaskRecord::finished(&task, outcome, now, now, delivery.attempt);
        shared.metrics.result_queue.inc();
        let _ = results.send(Finished {
            stored: crate::store::Finished {
                record,
                save: task.save,
            },
            ack_failure: Some(true),
            receipt: delivery.receipt,
            cached: task.cached,
        });
        return None;
    }
    Some(Held {
        receipt: delivery.receipt,
        attempt: delivery.attempt,
        task,
    })
}
