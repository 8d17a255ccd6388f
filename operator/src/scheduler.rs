//! The operator's scheduler: each QSchedule's due slots enqueued on its
//! QCluster's queue, each exactly once.
//!
//! A pass over one QSchedule at `now`:
//! 1. slots written down earlier but not recorded (`status.pending`: the
//!    operator died, or lost its Lease, between writing them and recording
//!    them) are enqueued again and recorded;
//! 2. the engine's `plan` says which slots are due (its schedule arithmetic
//!    and catch-up: there is no second implementation); slots past the
//!    starting deadline, or forbidden while the last run has no result, are
//!    skipped and counted;
//! 3. the slots to run go into `status.pending`, written with the
//!    resourceVersion the pass read, so a replica working from a stale copy
//!    (a leader that lost its Lease a moment ago) is refused by the apiserver
//!    before it enqueues anything;
//! 4. each is enqueued with [`q8s::Producer::enqueue_once`] under a task id
//!    derived from the QSchedule's uid and the slot: the broker refuses an id
//!    it took in the last [`ONCE_WINDOW`];
//! 5. the status records the runs and empties `pending`.
//!
//! Killed anywhere, the next pass (this replica's or the next leader's)
//! starts at 1; the broker refuses what already went in, so each slot runs once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use q8s::schedule::{Kind, Recurrence, Schedule, plan};
use sha2::{Digest, Sha256};

use crate::conditions::{condition, holds};
use crate::link::{Link, Links, Waiting};
use crate::metrics::Telemetry;
use crate::observe::BROKER_TIMEOUT;
use crate::qcluster::QCluster;
use crate::qschedule::{
    LastTask, PendingRun, QSchedule, QScheduleStatus, engine_schedule, instant, repeats_left,
};
use crate::reconciler::FIELD_MANAGER;

/// How long a broker refuses a slot's task id a second time: an operator
/// down for longer than this between writing a slot down and recording it
/// could run that slot twice.
pub const ONCE_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How soon a schedule waiting for its QCluster or broker looks again.
const WAIT_RETRY: Duration = Duration::from_secs(10);
/// How often a run without a result yet is looked for while the schedule waits.
const RESULT_POLL: Duration = Duration::from_secs(5);
/// How soon a pass whose write was refused (the object changed) runs again.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);
/// Slots skipped in one pass at most while suspended (the rest at the next).
const MAX_SKIPS_PER_PASS: usize = 10_000;

/// Why a pass failed: the apiserver, to be retried.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A call to the apiserver failed.
    #[error("apiserver: {0}")]
    Kube(#[from] kube::Error),
    /// The status could not be written as JSON.
    #[error("cannot serialize the status: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl SchedulerError {
    /// A stable name for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            SchedulerError::Kube(_) => "apiserver",
            SchedulerError::Serialize(_) => "serialize",
        }
    }
}

/// What every pass needs, and the QClusters' producers between passes.
pub struct Scheduler {
    client: Client,
    recorder: Recorder,
    qclusters: Store<QCluster>,
    links: Links,
    telemetry: Arc<Telemetry>,
}

/// Runs the scheduler for `namespace`'s QSchedules (all when `None`) until dropped.
pub async fn run(client: Client, namespace: Option<String>, telemetry: Arc<Telemetry>) {
    let (qschedules, qclusters) = match &namespace {
        Some(namespace) => (
            Api::<QSchedule>::namespaced(client.clone(), namespace),
            Api::<QCluster>::namespaced(client.clone(), namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (cluster_store, writer) = kube::runtime::reflector::store();
    let clusters = watcher(qclusters, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let controller = Controller::new(qschedules, watcher::Config::default());
    let schedules = controller.store();
    let scheduler = Arc::new(Scheduler {
        recorder: Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER)),
        client,
        qclusters: cluster_store,
        links: Links::default(),
        telemetry,
    });
    // A QCluster that appears or changes wakes the schedules that name it.
    let wakes = move |qcluster: QCluster| {
        let namespace = qcluster.namespace();
        let name = qcluster.name_any();
        schedules
            .state()
            .iter()
            .filter(|qs| qs.namespace() == namespace && qs.spec.cluster == name)
            .map(|qs| ObjectRef::from_obj(qs.as_ref()))
            .collect::<Vec<_>>()
    };
    controller
        .watches_stream(clusters, wakes)
        .run(reconcile, error_policy, scheduler)
        .for_each(|outcome| async move {
            match outcome {
                Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => tracing::warn!("schedule controller: {error}"),
            }
        })
        .await;
}

fn error_policy(
    qschedule: Arc<QSchedule>,
    error: &SchedulerError,
    scheduler: Arc<Scheduler>,
) -> Action {
    scheduler.telemetry.metrics.failed(error.category());
    tracing::error!(
        qschedule = %key_of(&qschedule),
        category = error.category(),
        "schedule pass failed, trying again in {WAIT_RETRY:?}: {error}"
    );
    Action::requeue(WAIT_RETRY)
}

fn key_of(qschedule: &QSchedule) -> String {
    format!(
        "{}/{}",
        qschedule.namespace().unwrap_or_default(),
        qschedule.name_any()
    )
}

/// A status time, in whole seconds as Kubernetes writes them.
fn time(at: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(at.timestamp()).unwrap_or_default())
}

/// The task id of `slot` of the QSchedule with `uid`: the same every time the
/// slot is enqueued, different for every slot and schedule (32 hex digits,
/// shaped as a version 8 UUID).
pub fn slot_id(uid: &str, slot: DateTime<Utc>) -> String {
    let digest = Sha256::digest(format!("{uid}/{}", slot.timestamp_micros()).as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One pass over a QSchedule: what is pending, then what is due.
async fn reconcile(
    qschedule: Arc<QSchedule>,
    scheduler: Arc<Scheduler>,
) -> Result<Action, SchedulerError> {
    // The watch can lag behind this operator's own writes: a schedule that
    // looks due or pending is read again, so a pass acts on what is stored.
    let now = Utc::now();
    let status = qschedule.status.clone().unwrap_or_default();
    let looks_due = !status.pending.is_empty()
        || status
            .next_run
            .as_ref()
            .and_then(instant)
            .is_none_or(|next| next <= now);
    let current = if looks_due {
        let api = Api::<QSchedule>::namespaced(
            scheduler.client.clone(),
            &qschedule.namespace().unwrap_or_default(),
        );
        match api.get_opt(&qschedule.name_any()).await? {
            Some(current) => Arc::new(current),
            None => return Ok(Action::await_change()),
        }
    } else {
        qschedule
    };
    let mut pass = Pass::new(&current, &scheduler);
    let action = pass.run().await?;
    scheduler.telemetry.set_apiserver(true);
    Ok(action)
}

/// A pass over one QSchedule: the object as read, the status being written,
/// and the resourceVersion every write is conditional on.
struct Pass<'a> {
    qschedule: &'a QSchedule,
    scheduler: &'a Scheduler,
    status: QScheduleStatus,
    written: QScheduleStatus,
    resource_version: Option<String>,
    api: Api<QSchedule>,
}

/// A write refused because the object changed since it was read.
enum Written {
    Done,
    Conflict,
}

impl<'a> Pass<'a> {
    fn new(qschedule: &'a QSchedule, scheduler: &'a Scheduler) -> Pass<'a> {
        let status = qschedule.status.clone().unwrap_or_default();
        Pass {
            qschedule,
            scheduler,
            written: status.clone(),
            status,
            resource_version: qschedule.metadata.resource_version.clone(),
            api: Api::namespaced(
                scheduler.client.clone(),
                &qschedule.namespace().unwrap_or_default(),
            ),
        }
    }

    fn generation(&self) -> Option<i64> {
        self.qschedule.metadata.generation
    }

    async fn run(&mut self) -> Result<Action, SchedulerError> {
        let spec = &self.qschedule.spec;
        let now = Utc::now();
        let (mut schedule, recurrence) = match engine_schedule(self.qschedule) {
            Ok(parts) => parts,
            Err(error) => {
                let message = format!("{error}; fix the spec");
                return self.stall("InvalidSchedule", &message).await;
            }
        };
        // A cron that never matches would run its anchor and nothing more.
        if schedule.kind != Kind::Once
            && recurrence
                .next_after(schedule.anchor - chrono::Duration::seconds(1))
                .is_none()
        {
            let message = "the cron expression matches no date: fix spec.cron";
            return self.stall("InvalidSchedule", message).await;
        }
        // A changed spec starts again from now, after the last run (its runs
        // and skips are kept).
        let changed = self
            .status
            .observed_generation
            .is_some_and(|seen| Some(seen) != self.generation());
        if changed {
            let last = self.status.last_run.as_ref().and_then(instant);
            let from = (now - chrono::Duration::seconds(1))
                .max(schedule.anchor - chrono::Duration::seconds(1))
                .max(last.unwrap_or(DateTime::<Utc>::MIN_UTC));
            schedule.next_run = recurrence.next_after(from).unwrap_or(schedule.anchor);
        }
        self.status.next_run = Some(time(schedule.next_run));
        self.status.observed_generation = self.generation();
        self.status.repeats_left = Some(repeats_left(spec.repeats, self.status.runs));

        // 1. What an earlier pass wrote down but did not record: settled
        // first, whatever the spec says now, so it is never enqueued later.
        if !self.status.pending.is_empty() {
            let link = match self.link().await {
                Ok(link) => link,
                Err(waiting) => return self.wait(waiting).await,
            };
            let pending = self.status.pending.clone();
            if let Err(waiting) = self.enqueue(&link, &schedule, &pending).await {
                return self.wait(waiting).await;
            }
            // Refused or not, each went in once: all are runs.
            self.record(&pending, &pending);
            if let Written::Conflict = self.write().await? {
                return Ok(Action::requeue(CONFLICT_RETRY));
            }
        }
        if let Some(action) = self.finished(&schedule).await? {
            return Ok(action);
        }
        if spec.suspend {
            // The last run's outcome is still followed while suspended.
            if let Ok(link) = self.link().await {
                self.read_last_success(&link).await;
            }
            return self.suspended(&recurrence, schedule.next_run, now).await;
        }
        let link = match self.link().await {
            Ok(link) => link,
            Err(waiting) => return self.wait(waiting).await,
        };
        let unreadable = self.results(&link).err();
        self.read_last_success(&link).await;

        // 2. What is due.
        if schedule.next_run > now {
            return self.rest(&schedule, &unreadable, now).await;
        }
        schedule.repeats = repeats_left(spec.repeats, self.status.runs);
        let due = plan(&schedule, &recurrence, now, spec.catch_up);
        let deadline = spec
            .starting_deadline_seconds
            .map(chrono::Duration::seconds);
        let (late, mut runs): (Vec<_>, Vec<_>) = due
            .runs
            .iter()
            .copied()
            .partition(|slot| deadline.is_some_and(|d| now - *slot > d));
        let mut forbidden = 0;
        if spec.concurrency_policy == crate::qschedule::ConcurrencyPolicy::Forbid {
            if let Some(why) = &unreadable {
                let message = format!("concurrencyPolicy Forbid needs the runs' results: {why}");
                return self.stall("InvalidSchedule", &message).await;
            }
            // While the last run has no result, no slot runs; otherwise one does.
            let busy = self.status.last_task.is_some() && self.status.last_success.is_none();
            let keep = usize::from(!busy).min(runs.len());
            forbidden = runs.len() - keep;
            runs.truncate(keep);
        }
        self.skip(
            late.len(),
            "deadline",
            "missed by more than startingDeadlineSeconds",
        )
        .await;
        self.skip(
            forbidden,
            "forbidden",
            "the last run has no result yet (concurrencyPolicy Forbid)",
        )
        .await;
        self.status.next_run = Some(time(due.next_run));
        let uid = self.qschedule.metadata.uid.clone().unwrap_or_default();
        self.status.pending = runs
            .iter()
            .map(|slot| PendingRun {
                slot: time(*slot),
                id: slot_id(&uid, *slot),
            })
            .collect();

        // A request the broker would refuse is a spec to fix, found before
        // anything is written down.
        if !runs.is_empty()
            && let Err(error) = link.producer.pack(self.request(&schedule))
        {
            let message = format!("a run cannot be enqueued: {error}; fix the spec");
            return self.stall("InvalidSchedule", &message).await;
        }

        // 3. Written down first, conditional on what this pass read.
        if let Written::Conflict = self.write().await? {
            return Ok(Action::requeue(CONFLICT_RETRY));
        }
        // 4. Enqueued, a repeat refused by the broker.
        let pending = self.status.pending.clone();
        if !pending.is_empty() {
            let fresh = match self.enqueue(&link, &schedule, &pending).await {
                Ok(fresh) => fresh,
                Err(waiting) => return self.wait(waiting).await,
            };
            // 5. Recorded: a slot refused here had run and been recorded before.
            // The condition the pass ends with goes in the same write.
            self.record(&pending, &fresh);
            match self.finished_message(&schedule) {
                Some(message) => self.ready("Finished", &message),
                None => {
                    self.scheduled(&schedule, &unreadable);
                }
            }
            if let Written::Conflict = self.write().await? {
                return Ok(Action::requeue(CONFLICT_RETRY));
            }
        }
        // A Once schedule skipped (its deadline) is kept, Finished, not deleted.
        if due.delete && !pending.is_empty() {
            return self.delete().await;
        }
        if let Some(action) = self.finished(&schedule).await? {
            return Ok(action);
        }
        self.rest(&schedule, &unreadable, now).await
    }

    /// The named QCluster's producer and results, or why the schedule waits.
    async fn link(&self) -> Result<Arc<Link>, Waiting> {
        let namespace = self.qschedule.namespace().unwrap_or_default();
        let spec = &self.qschedule.spec;
        let Some(qcluster) = self
            .scheduler
            .qclusters
            .get(&ObjectRef::new(&spec.cluster).within(&namespace))
        else {
            return Err(Waiting {
                reason: "ClusterNotFound",
                message: format!(
                    "QCluster {} does not exist in this namespace; the slots run (by catchUp) once it does",
                    spec.cluster
                ),
            });
        };
        self.scheduler
            .links
            .get(&self.scheduler.client, &qcluster)
            .await
    }

    /// The request each run enqueues: the engine's, never run where it is made.
    fn request(&self, schedule: &Schedule) -> q8s::TaskRequest {
        let mut request = schedule.request();
        request.options.sync = Some(false);
        request
    }

    /// Enqueues `pending` in order; returns the runs the broker took fresh
    /// (the others it refused as repeats). A broker that fails leaves them all pending.
    async fn enqueue(
        &self,
        link: &Link,
        schedule: &Schedule,
        pending: &[PendingRun],
    ) -> Result<Vec<PendingRun>, Waiting> {
        let mut taken = Vec::new();
        for run in pending {
            let request = self.request(schedule);
            let enqueued = tokio::time::timeout(
                BROKER_TIMEOUT,
                link.producer.enqueue_once(request, &run.id, ONCE_WINDOW),
            )
            .await
            .unwrap_or_else(|_| {
                Err(q8s::ClientError::Invalid(format!(
                    "the broker did not answer within {BROKER_TIMEOUT:?}"
                )))
            });
            match enqueued {
                Ok(fresh) => {
                    if fresh && let Some(pause) = pause_after_enqueue() {
                        tracing::warn!(
                            task = %run.id,
                            "Q8S_TEST_PAUSE_AFTER_ENQUEUE: pausing {pause:?} after an enqueue, before recording it"
                        );
                        tokio::time::sleep(pause).await;
                    }
                    if fresh {
                        taken.push(run.clone());
                    } else {
                        tracing::info!(
                            qschedule = %key_of(self.qschedule),
                            task = %run.id,
                            "the slot was enqueued before this pass: the broker refused it again"
                        );
                    }
                }
                Err(error) => {
                    self.scheduler
                        .telemetry
                        .metrics
                        .schedule_enqueue_errors
                        .inc();
                    let message = format!(
                        "the slot {} could not be enqueued; it is tried again: {error}",
                        run.slot.0
                    );
                    self.publish(EventType::Warning, "EnqueueFailed", &message)
                        .await;
                    let reason = if matches!(&error, q8s::ClientError::Broker(b) if b.is_usage()) {
                        "BrokerUnusable"
                    } else {
                        "BrokerUnreachable"
                    };
                    return Err(Waiting { reason, message });
                }
            }
        }
        Ok(taken)
    }

    /// The slots of `pending` are settled: `ran` of them counted as runs,
    /// the last remembered; `pending` emptied.
    fn record(&mut self, pending: &[PendingRun], ran: &[PendingRun]) {
        if pending.is_empty() {
            return;
        }
        self.status.pending.clear();
        let Some(last) = ran.last() else {
            return;
        };
        let count = ran.len() as i64;
        self.status.runs = self.status.runs.saturating_add(count);
        self.status.last_run = Some(last.slot.clone());
        self.status.last_task = Some(LastTask {
            id: last.id.clone(),
            name: q8s::humanize::humanize(&last.id),
        });
        self.status.last_success = None;
        self.status.repeats_left =
            Some(repeats_left(self.qschedule.spec.repeats, self.status.runs));
        self.scheduler
            .telemetry
            .metrics
            .schedule_runs
            .inc_by(count as u64);
    }

    /// Where this schedule's run results go, by its own `cached` and `save`
    /// (a `cached` other than false caches), or why they cannot be read.
    fn results<'l>(&self, link: &'l Link) -> Result<crate::link::Results<'l>, String> {
        let spec = &self.qschedule.spec;
        let cached = spec
            .cached
            .as_ref()
            .map(|c| c != &serde_json::Value::Bool(false));
        link.results(cached, spec.save)
    }

    async fn read_last_success(&mut self, link: &Link) {
        if self.status.last_success.is_some() {
            return;
        }
        let (Some(task), Ok(results)) = (&self.status.last_task, self.results(link)) else {
            return;
        };
        self.status.last_success = results.success(&task.id).await;
    }

    /// Counts `count` skipped slots, with an event saying why.
    async fn skip(&mut self, count: usize, reason: &str, why: &str) {
        if count == 0 {
            return;
        }
        self.status.skipped = self.status.skipped.saturating_add(count as i64);
        self.scheduler
            .telemetry
            .metrics
            .skipped(reason, count as u64);
        let message = format!("{count} slot(s) skipped: {why}");
        self.publish(EventType::Warning, "SlotsSkipped", &message)
            .await;
    }

    /// Suspended: the slots that pass are skipped, not caught up on resume.
    async fn suspended(
        &mut self,
        recurrence: &Recurrence,
        mut next: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Action, SchedulerError> {
        let mut skipped = 0;
        let mut more = true;
        while next <= now && skipped < MAX_SKIPS_PER_PASS {
            skipped += 1;
            match recurrence.next_after(next) {
                Some(after) => next = after,
                None => {
                    more = false;
                    break;
                }
            }
        }
        self.status.next_run = Some(time(next));
        if skipped > 0 {
            self.status.skipped = self.status.skipped.saturating_add(skipped as i64);
            self.scheduler
                .telemetry
                .metrics
                .skipped("suspended", skipped as u64);
        }
        let message = "suspend is true: no slot runs; the slots that pass are counted as skipped";
        self.ready("Suspended", message);
        self.write().await?;
        let waiting_result = self.status.last_task.is_some() && self.status.last_success.is_none();
        Ok(match (more, waiting_result) {
            (true, true) => Action::requeue(until(next, now).min(RESULT_POLL)),
            (true, false) => Action::requeue(until(next, now)),
            (false, true) => Action::requeue(RESULT_POLL),
            (false, false) => Action::await_change(),
        })
    }

    /// Done for good: a Once schedule whose slot ran (or passed while
    /// suspended), or no repeats left.
    async fn finished(&mut self, schedule: &Schedule) -> Result<Option<Action>, SchedulerError> {
        let once_ran = schedule.kind == Kind::Once && self.status.runs > 0;
        if once_ran && self.qschedule.spec.repeats < 0 {
            return self.delete().await.map(Some);
        }
        let Some(message) = self.finished_message(schedule) else {
            return Ok(None);
        };
        self.ready("Finished", &message);
        self.write().await?;
        Ok(Some(Action::await_change()))
    }

    /// The Finished condition's message when no slot is left, as [`Pass::finished`] decides.
    fn finished_message(&self, schedule: &Schedule) -> Option<String> {
        let spec = &self.qschedule.spec;
        let once = schedule.kind == Kind::Once;
        let once_over = once && (self.status.runs > 0 || self.status.skipped > 0);
        let used_up = spec.repeats >= 0 && repeats_left(spec.repeats, self.status.runs) <= 0;
        (once_over || used_up).then(|| {
            format!(
                "ran {} time(s), {} slot(s) skipped; no slot is left",
                self.status.runs, self.status.skipped
            )
        })
    }

    /// Nothing due: Ready until the next slot.
    async fn rest(
        &mut self,
        schedule: &Schedule,
        unreadable: &Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Action, SchedulerError> {
        let next = self.scheduled(schedule, unreadable);
        self.write().await?;
        let mut wait = until(next, now);
        if self.status.last_task.is_some()
            && self.status.last_success.is_none()
            && unreadable.is_none()
        {
            wait = wait.min(RESULT_POLL);
        }
        Ok(Action::requeue(wait))
    }

    /// Ready, Scheduled until the next run, which it returns.
    fn scheduled(&mut self, schedule: &Schedule, unreadable: &Option<String>) -> DateTime<Utc> {
        let next = self
            .status
            .next_run
            .as_ref()
            .and_then(instant)
            .unwrap_or(schedule.next_run);
        let message = match unreadable {
            Some(why) => format!("next run {next}; lastSuccess is not read: {why}"),
            None => format!("next run {next}"),
        };
        self.ready("Scheduled", &message);
        next
    }

    fn ready(&mut self, reason: &str, message: &str) {
        let old = &self.written.conditions;
        let generation = self.generation();
        self.status.conditions = vec![
            condition(old, "Ready", true, reason, message, generation),
            condition(old, "Stalled", false, reason, message, generation),
        ];
    }

    /// Waiting for the QCluster or its broker: Stalled with the reason, tried again soon.
    async fn wait(&mut self, waiting: Waiting) -> Result<Action, SchedulerError> {
        self.stall(waiting.reason, &waiting.message).await?;
        Ok(Action::requeue(WAIT_RETRY))
    }

    async fn stall(&mut self, reason: &str, message: &str) -> Result<Action, SchedulerError> {
        let old = self.written.conditions.clone();
        let generation = self.generation();
        let newly = !holds(&old, "Stalled", "True")
            || !old
                .iter()
                .any(|c| c.type_ == "Stalled" && c.reason == reason);
        self.status.conditions = vec![
            condition(&old, "Ready", false, reason, message, generation),
            condition(&old, "Stalled", true, reason, message, generation),
        ];
        self.status.observed_generation = generation;
        if newly {
            self.publish(EventType::Warning, reason, message).await;
        }
        self.write().await?;
        Ok(Action::await_change())
    }

    /// Writes the status unless unchanged, conditional on the resourceVersion last read or written.
    async fn write(&mut self) -> Result<Written, SchedulerError> {
        if self.status == self.written {
            return Ok(Written::Done);
        }
        let mut object = self.qschedule.clone();
        object.metadata.resource_version = self.resource_version.clone();
        object.metadata.managed_fields = None;
        object.status = Some(self.status.clone());
        match self
            .api
            .replace_status(&self.qschedule.name_any(), &PostParams::default(), &object)
            .await
        {
            Ok(written) => {
                self.resource_version = written.metadata.resource_version;
                self.written = self.status.clone();
                Ok(Written::Done)
            }
            Err(kube::Error::Api(response)) if response.code == 409 => {
                tracing::info!(
                    qschedule = %key_of(self.qschedule),
                    "the QSchedule changed since this pass read it: reading it again"
                );
                Ok(Written::Conflict)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A Once schedule with negative repeats goes once it ran, as the seed deletes the row.
    async fn delete(&mut self) -> Result<Action, SchedulerError> {
        let name = self.qschedule.name_any();
        let message = "a Once schedule with negative repeats is deleted once it ran";
        self.publish(EventType::Normal, "Deleted", message).await;
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(response)) if response.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        Ok(Action::await_change())
    }

    async fn publish(&self, type_: EventType, reason: &str, note: &str) {
        let recorder = &self.scheduler.recorder;
        crate::events::publish(recorder, self.qschedule, "Schedule", type_, reason, note).await;
    }
}

/// The pause `Q8S_TEST_PAUSE_AFTER_ENQUEUE` (seconds) asks for: how the
/// tests kill the operator at the one point where a slot is enqueued but not
/// yet recorded. Never set outside them.
fn pause_after_enqueue() -> Option<Duration> {
    let seconds = std::env::var("Q8S_TEST_PAUSE_AFTER_ENQUEUE").ok()?;
    seconds.parse().ok().map(Duration::from_secs)
}

/// The wait from `now` until `next` (a little after, so the slot is due when woken).
fn until(next: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (next - now)
        .to_std()
        .unwrap_or_default()
        .saturating_add(Duration::from_millis(5))
}
