//! The scheduler: every second, enqueues the runs of due schedules.
//!
//! Every cluster runs one (unless `scheduler = false`). A run is claimed with
//! a conditional update of the schedule's row before its task is enqueued, so
//! with several clusters on one database each run is enqueued exactly once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::Shared;
use crate::broker::Broker;
use crate::client::ClientError;
use crate::clock::Clock;
use crate::config::Config;
use crate::package::Signer;
use crate::schedule::plan;
use crate::store::Schedules;

/// How often due schedules are looked for (the seed looked twice a minute).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Schedules handled per check, at most; the rest wait a second.
const SCHEDULES_PER_CHECK: i64 = 100;

/// What the scheduler needs: where schedules live, and how to enqueue.
#[derive(Debug, Clone, Copy)]
pub struct Scheduling<'a> {
    /// The schedules.
    pub schedules: &'a Schedules,
    /// Where their tasks go.
    pub broker: &'a dyn Broker,
    /// Signs their tasks.
    pub signer: &'a Signer,
    /// `catch_up` and the default `timeout`.
    pub config: &'a Config,
}

/// Enqueues every run due at `now`; returns the ids of the tasks enqueued.
///
/// A schedule whose timing no longer parses is logged and left alone.
pub async fn run_due(
    scheduling: Scheduling<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, ClientError> {
    let mut enqueued = Vec::new();
    for schedule in scheduling.schedules.due(now, SCHEDULES_PER_CHECK).await? {
        let recurrence = match schedule.recurrence() {
            Ok(recurrence) => recurrence,
            Err(error) => {
                tracing::error!(schedule = schedule.id, "schedule cannot run: {error}");
                continue;
            }
        };
        let due = plan(&schedule, &recurrence, now, scheduling.config.catch_up);
        if !scheduling.schedules.claim(&schedule, &due).await? {
            continue;
        }
        let mut last_task = None;
        for _ in &due.runs {
            let task = schedule.request().into_task();
            let queued = async {
                let package = scheduling.signer.pack(&task)?;
                let timeout = scheduling.config.timeout_for(&task);
                scheduling.broker.enqueue(&package, timeout).await?;
                Ok::<(), ClientError>(())
            }
            .await;
            if let Err(error) = queued {
                tracing::error!(
                    schedule = schedule.id,
                    "cannot enqueue a scheduled run, trying again next check: {error}"
                );
                if last_task.is_none() {
                    scheduling.schedules.unclaim(&schedule, &due).await?;
                }
                break;
            }
            enqueued.push(task.id.clone());
            last_task = Some(task.id);
        }
        if let (Some(task), false) = (&last_task, due.delete) {
            scheduling.schedules.set_task(schedule.id, task).await?;
        }
    }
    Ok(enqueued)
}

/// Checks every `CHECK_INTERVAL` until `stop` turns true, never stopping in
/// the middle of a check (a claimed run is always enqueued or given back).
pub(crate) async fn run(
    shared: Arc<Shared>,
    schedules: Schedules,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let scheduling = Scheduling {
            schedules: &schedules,
            broker: shared.broker.as_ref(),
            signer: &shared.signer,
            config: &shared.config,
        };
        if let Err(error) = run_due(scheduling, clock.now()).await {
            tracing::error!("scheduler: {error}");
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
            _ = stop.changed() => {}
        }
    }
}
