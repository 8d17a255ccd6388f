//! The scheduler: every second, enqueues the runs of due schedules.
//!
//! Every cluster runs one (unless `scheduler = false`). A run is claimed with
//! a conditional update of the schedule's row before its task is enqueued, so
//! with several clusters on one database each run is enqueued exactly once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::client::ClientError;
use crate::clock::Clock;
use crate::producer::Producer;
use crate::schedule::plan;
use crate::store::Schedules;

/// How often due schedules are looked for (the seed looked twice a minute).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Schedules handled per check, at most; the rest wait a second.
const SCHEDULES_PER_CHECK: i64 = 100;

/// What the scheduler needs: where schedules live, and the producer their runs go through.
#[derive(Debug, Clone, Copy)]
pub struct Scheduling<'a> {
    /// The schedules.
    pub schedules: &'a Schedules,
    /// Signs and enqueues their runs, with the cluster's `catch_up`, `timeout` and `cached`.
    pub producer: &'a Producer,
}

/// Enqueues every run due at `now`; returns the ids of the tasks enqueued.
///
/// A schedule whose timing no longer parses is paused, with the reason logged,
/// so it neither runs nor holds up the others.
pub async fn run_due(
    scheduling: Scheduling<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, ClientError> {
    let mut enqueued = Vec::new();
    for schedule in scheduling.schedules.due(now, SCHEDULES_PER_CHECK).await? {
        let recurrence = match schedule.recurrence() {
            Ok(recurrence) => recurrence,
            Err(error) => {
                tracing::error!(
                    schedule = schedule.id,
                    "schedule cannot run and is paused; fix it and resume it: {error}"
                );
                scheduling.schedules.set_paused(schedule.id, true).await?;
                continue;
            }
        };
        let catch_up = scheduling.producer.config().catch_up;
        let due = plan(&schedule, &recurrence, now, catch_up);
        if !scheduling.schedules.claim(&schedule, &due).await? {
            continue;
        }
        let mut last_task = None;
        for _ in &due.runs {
            let mut request = schedule.request();
            // A scheduled run is queued for a cluster, never run in the scheduler.
            request.options.sync = Some(false);
            let queued = scheduling.producer.enqueue(request).await;
            let id = match queued {
                Ok(id) => id,
                Err(error) => {
                    tracing::error!(
                        schedule = schedule.id,
                        "cannot enqueue a scheduled run, trying again next check: {error}"
                    );
                    if last_task.is_none() {
                        scheduling.schedules.unclaim(&schedule, &due).await?;
                    }
                    break;
                }
            };
            enqueued.push(id.clone());
            last_task = Some(id);
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
    producer: Producer,
    schedules: Schedules,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let scheduling = Scheduling {
            schedules: &schedules,
            producer: &producer,
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
