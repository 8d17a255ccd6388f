//! The monitor: saves finished tasks in batches, hands hooks to the hook runner, acknowledges the broker.
//!
//! A success is acknowledged. A failure (timeouts included) is acknowledged
//! only with `ack_failures` or the task's `ack_failure`, or once it has had
//! `max_attempts` deliveries; otherwise it is left for the broker to deliver
//! again after `retry`. Results are saved before anything is acknowledged, and
//! a store that is down is retried, never skipped: an acknowledged task always
//! has its result saved (or deliberately not, by `save_limit`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::hooks::HookRunner;
use super::{RESULT_BATCH, Shared};
use crate::broker::Receipt;
use crate::config::Config;
use crate::store;
use crate::task::ErrorKind;

/// How long the monitor waits for more results when only a few are waiting, so
/// saves go in batches; also the most it adds to a task's latency.
const RESULT_LINGER: Duration = Duration::from_millis(2);
/// A batch this large is saved at once, without lingering.
const LINGER_BELOW: usize = 64;

/// Failed attempts at saving a batch before its results are saved one by one.
const BATCH_ATTEMPTS: u32 = 3;
/// Pause before saving again when the store fails.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// A finished task on its way to the store.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The record, with the task's own `save`: what the store needs.
    pub stored: store::Finished,
    /// The task's own `ack_failure`.
    pub ack_failure: Option<bool>,
    /// Its delivery's receipt.
    pub receipt: Receipt,
    /// Keep the result in the broker's cache instead of the store.
    pub cached: Option<crate::task::Cached>,
}

/// Whether a finished task is acknowledged with the broker.
pub fn should_acknowledge(config: &Config, finished: &Finished) -> bool {
    let record = &finished.stored.record;
    let max_attempts = config.max_attempts;
    record.success
        || finished.ack_failure.unwrap_or(config.ack_failures)
        || (max_attempts > 0 && record.attempts >= max_attempts)
}

/// Runs until every sender is gone and the queue is empty.
pub async fn run(shared: Arc<Shared>, mut results: mpsc::UnboundedReceiver<Finished>) {
    let mut hooks = HookRunner::new(
        Arc::clone(&shared.registry),
        Duration::from_secs(shared.config.hook_timeout),
        shared.metrics.hooks_dropped.clone(),
    );
    let mut batch = Vec::with_capacity(RESULT_BATCH);
    while results.recv_many(&mut batch, RESULT_BATCH).await > 0 {
        if batch.len() < LINGER_BELOW {
            let more = RESULT_BATCH - batch.len();
            let _ = tokio::time::timeout(RESULT_LINGER, results.recv_many(&mut batch, more)).await;
        }
        save(&shared, &batch).await;
        shared
            .metrics
            .result_queue
            .dec_by(i64::try_from(batch.len()).unwrap_or(i64::MAX));
        for finished in &batch {
            hooks.start(&finished.stored.record);
        }
        acknowledge(&shared, &batch).await;
        batch.clear();
    }
    hooks.finish().await;
}

async fn save(shared: &Shared, batch: &[Finished]) {
    let (cached, stored): (Vec<&Finished>, Vec<&Finished>) = batch.iter().partition(|finished| {
        finished
            .cached
            .is_some_and(|c| c != crate::task::Cached::Off)
    });
    let mut records: Vec<&store::Finished> =
        stored.iter().map(|finished| &finished.stored).collect();
    for finished in cached {
        if !cache(shared, finished).await {
            // No cache to keep it in: the store keeps it rather than nobody.
            records.push(&finished.stored);
        }
    }
    let mut failures = 0;
    while let Err(error) = shared.store.save_all(&records).await {
        failures += 1;
        let message = format!(
            "monitor: cannot save {} results, retrying in {STORE_RETRY:?}: {error}",
            records.len()
        );
        tracing::error!("{message}");
        if failures == 1 {
            shared.reporter.cluster_error("store", &message);
        }
        if failures >= BATCH_ATTEMPTS {
            save_one_by_one(shared, &records).await;
            break;
        }
        tokio::time::sleep(STORE_RETRY).await;
    }
    for finished in batch {
        let record = &finished.stored.record;
        let outcome = match (record.success, record.error_kind) {
            (true, _) => "success",
            (false, Some(kind)) => kind.as_str(),
            (false, None) => ErrorKind::Failed.as_str(),
        };
        shared
            .metrics
            .finished(shared.func_label(&record.func), outcome);
        // Every failed attempt, as the seed reports each exception: Sentry
        // groups them into one issue per function and kind (the fingerprint).
        shared.reporter.task_failed(record);
    }
}

/// Keeps one result in the broker's cache; false when the broker has none or it failed.
async fn cache(shared: &Shared, finished: &Finished) -> bool {
    let record = &finished.stored.record;
    let Ok(json) = serde_json::to_string(record) else {
        return false;
    };
    let ttl = finished.cached.and_then(crate::task::Cached::ttl);
    let entry = [(record.id.clone(), record.group.clone(), json)];
    let Some(cache) = &shared.cache else {
        return false;
    };
    match cache.cache_results(&entry, ttl).await {
        Ok(()) => true,
        Err(error) => {
            tracing::error!(task = %record.id, "cannot cache the result, saving it to the store: {error}");
            false
        }
    }
}

/// Saves records one at a time, so one that can never be saved cannot hold
/// back the others: it is logged, with its result, and left out. A store that
/// is down is still waited for.
async fn save_one_by_one(shared: &Shared, records: &[&store::Finished]) {
    for record in records {
        let mut failures = 0;
        while let Err(error) = shared.store.save(record).await {
            failures += 1;
            if failures >= BATCH_ATTEMPTS && shared.store.database().pool().acquire().await.is_ok()
            {
                tracing::error!(
                    task = %record.record.id,
                    result = %record.record.result,
                    "monitor: this result cannot be saved and is left out: {error}"
                );
                break;
            }
            tokio::time::sleep(STORE_RETRY).await;
        }
    }
}

async fn acknowledge(shared: &Shared, batch: &[Finished]) {
    let receipts: Vec<Receipt> = batch
        .iter()
        .filter(|finished| should_acknowledge(&shared.config, finished))
        .map(|finished| finished.receipt.clone())
        .collect();
    for finished in batch {
        // Acknowledged or not, the cluster no longer holds it: a failure left
        // unacknowledged is delivered again when its receipt runs out.
        shared.let_go(&finished.receipt);
    }
    if receipts.is_empty() {
        return;
    }
    if let Err(error) = shared.broker.acknowledge_all(&receipts).await {
        // The results are saved; the packages will be delivered again after
        // their receipts expire, and saved again over the same ids.
        tracing::error!(
            "monitor: cannot acknowledge {} tasks: {error}",
            receipts.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Task, TaskError, TaskRecord};
    use chrono::Utc;
    use serde_json::Value;

    fn finished(success: bool, attempts: u32, ack_failure: Option<bool>) -> Finished {
        let task = Task::new("q8s.noop");
        let outcome = if success {
            Ok(Value::Null)
        } else {
            Err(TaskError::failed("no"))
        };
        Finished {
            stored: store::Finished {
                record: TaskRecord::finished(&task, outcome, Utc::now(), Utc::now(), attempts),
                save: None,
            },
            ack_failure,
            receipt: Receipt("1.1".into()),
            cached: None,
        }
    }

    #[test]
    fn successes_are_acknowledged_and_failures_only_when_configured() {
        let mut config = Config::default();
        assert!(should_acknowledge(&config, &finished(true, 1, None)));
        assert!(!should_acknowledge(&config, &finished(false, 1, None)));
        assert!(should_acknowledge(&config, &finished(false, 1, Some(true))));
        config.ack_failures = true;
        assert!(should_acknowledge(&config, &finished(false, 1, None)));
        assert!(!should_acknowledge(
            &config,
            &finished(false, 1, Some(false))
        ));
    }

    #[test]
    fn failure_is_acknowledged_once_it_used_its_attempts() {
        let mut config = Config {
            max_attempts: 3,
            ..Config::default()
        };
        assert!(!should_acknowledge(&config, &finished(false, 2, None)));
        assert!(should_acknowledge(&config, &finished(false, 3, None)));
        config.max_attempts = 0;
        assert!(!should_acknowledge(&config, &finished(false, 99, None)));
    }
}
