//! The QSchedule resource: Django Q's Schedule as a Kubernetes object, for a
//! QCluster, its slots enqueued by the operator (see [`crate::scheduler`]).
//!
//! The timing is the engine's: a spec reads back into the engine's
//! [`Schedule`] and [`Recurrence`], so `kubectl apply` and `q8s schedule`
//! agree on every next run, and the task options go through the engine's
//! one parser of `q_options`.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use q8s::TaskOptions;
use q8s::schedule::{Kind, Recurrence, Schedule, ScheduleError};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A schedule of tasks for a QCluster: Django Q's Schedule as a resource.
// Printcolumns repeat `type_`: clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "q8s.io",
    version = "v1alpha1",
    kind = "QSchedule",
    namespaced,
    shortname = "qs",
    status = "QScheduleStatus",
    doc = "A schedule of tasks for a QCluster: Django Q's Schedule as a resource",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Func", type_ = "string", json_path = ".spec.func"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.scheduleType"),
    // A date column shows a time to come as "<invalid>": the next run is shown as written.
    printcolumn(name = "Next Run", type_ = "string", json_path = ".status.nextRun"),
    printcolumn(name = "Last Run", type_ = "date", json_path = ".status.lastRun"),
    printcolumn(name = "Success", type_ = "boolean", json_path = ".status.lastSuccess"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = spec_rules)]
pub struct QScheduleSpec {
    /// The QCluster whose queue the runs go to, in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub cluster: String,
    /// The function each run calls, e.g. `reports.daily`.
    #[schemars(length(min = 1))]
    pub func: String,
    /// Positional arguments (any JSON values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "any_values")]
    pub args: Vec<Value>,
    /// Keyword arguments (any JSON values).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(schema_with = "any_object")]
    pub kwargs: Map<String, Value>,
    /// Called with each finished run: a function, a URL or `exec:PROGRAM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    /// How often it runs.
    pub schedule_type: ScheduleType,
    /// Minutes between runs, for the Minutes type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub minutes: Option<i32>,
    /// The cron expression, for the Cron type: five fields, or six with seconds first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The IANA time zone whose wall clock the calendar types and cron follow.
    #[serde(default = "utc")]
    #[schemars(schema_with = "time_zone")]
    pub time_zone: String,
    /// Runs: -1 (or less) forever, N that many in all; a Once schedule with negative repeats is deleted after it runs.
    #[serde(default = "forever")]
    pub repeats: i64,
    /// The first run; calendar types keep its day and time. Default: when the QSchedule was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Time>,
    /// Seconds a run may take; default: the QCluster's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout: Option<i64>,
    /// The runs' group; default: the QSchedule's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Save a successful run's result whatever the QCluster's saveLimit says (true), or never (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save: Option<bool>,
    /// Keep each result in the broker's cache (Redis): true, or for that many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "true_or_seconds")]
    pub cached: Option<Value>,
    /// Acknowledge a failed run, so it is not delivered again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_failure: Option<bool>,
    /// No slot runs while true; slots that pass meanwhile count as skipped.
    #[serde(default)]
    pub suspend: bool,
    /// Allow: every slot runs. Forbid: a slot is skipped while the last run has no result.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A slot found more than this many seconds late is skipped (and counted), not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
    /// After a time without runs (the operator down, the cluster missing): run every missed slot (true), or only one.
    #[serde(default = "yes")]
    pub catch_up: bool,
}

/// The seed's schedule types, plus Cron.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ScheduleType {
    /// Once, at nextRun.
    Once,
    /// Every `minutes` minutes.
    Minutes,
    /// Every hour.
    Hourly,
    /// Every day at nextRun's time.
    Daily,
    /// Every week on nextRun's weekday and time.
    Weekly,
    /// Every month on nextRun's day and time.
    Monthly,
    /// Every three months on nextRun's day and time.
    Quarterly,
    /// Every year on nextRun's day and time.
    Yearly,
    /// Whenever `cron` matches.
    Cron,
}

/// What a slot does while the last run has no result: CronJob's policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Every slot runs.
    #[default]
    Allow,
    /// A slot is skipped while the last run has no result.
    Forbid,
}

fn utc() -> String {
    "UTC".into()
}

fn forever() -> i64 {
    -1
}

fn yes() -> bool {
    true
}

fn any_values(_: &mut SchemaGenerator) -> Schema {
    Schema::try_from(json!({
        "type": "array",
        "items": {"x-kubernetes-preserve-unknown-fields": true},
    }))
    .unwrap_or_default()
}

fn any_object(_: &mut SchemaGenerator) -> Schema {
    Schema::try_from(json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    }))
    .unwrap_or_default()
}

/// Neither a structural schema nor CEL can say "true or seconds": the value
/// is kept as given and the engine's parser names `cached` when it is wrong.
fn true_or_seconds(_: &mut SchemaGenerator) -> Schema {
    Schema::try_from(json!({"x-kubernetes-preserve-unknown-fields": true})).unwrap_or_default()
}

/// Every zone the engine knows, so the apiserver refuses an unknown one by name.
fn time_zone(_: &mut SchemaGenerator) -> Schema {
    Schema::try_from(json!({
        "type": "string",
        "default": "UTC",
        "enum": q8s::schedule::zone_names(),
    }))
    .unwrap_or_default()
}

/// The rules that span fields, checked by the apiserver when the object is applied.
fn spec_rules(schema: &mut Schema) {
    schema.insert(
        "x-kubernetes-validations".into(),
        json!([
            {
                "rule": "self.scheduleType != 'Cron' || has(self.cron)",
                "message": "a Cron schedule needs cron: an expression such as '0 9 * * 1', or '*/2 * * * * *' with seconds",
                "fieldPath": ".cron",
                "reason": "FieldValueRequired",
            },
            {
                "rule": "!has(self.cron) || self.scheduleType == 'Cron'",
                "message": "cron is read only by scheduleType Cron",
                "fieldPath": ".cron",
                "reason": "FieldValueInvalid",
            },
            {
                "rule": "self.scheduleType != 'Minutes' || has(self.minutes)",
                "message": "a Minutes schedule needs minutes: the minutes between runs, 1 or more",
                "fieldPath": ".minutes",
                "reason": "FieldValueRequired",
            },
            {
                "rule": "!has(self.minutes) || self.scheduleType == 'Minutes'",
                "message": "minutes is read only by scheduleType Minutes",
                "fieldPath": ".minutes",
                "reason": "FieldValueInvalid",
            },
        ]),
    );
}

/// Why a QSchedule's spec cannot run (the schema cannot tell them all).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The timing: a cron expression the engine refuses, say.
    #[error(transparent)]
    Timing(#[from] ScheduleError),
    /// A task option with a value it does not take.
    #[error(transparent)]
    Options(#[from] q8s::options::OptionsError),
}

impl QScheduleSpec {
    /// The engine's kind of this spec's timing.
    pub fn kind(&self) -> Result<Kind, ScheduleError> {
        let name = serde_json::to_value(self.schedule_type)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let minutes = self.minutes.and_then(|m| u32::try_from(m).ok());
        Kind::from_parts(&name, minutes, self.cron.as_deref())
    }

    /// The task options of its runs, read by the engine's parser of the seed's `q_options`.
    pub fn task_options(&self) -> Result<TaskOptions, q8s::options::OptionsError> {
        let mut q_options = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                q_options.insert(name.into(), value);
            }
        };
        put("hook", self.hook.clone().map(Value::from));
        put("group", self.group.clone().map(Value::from));
        put("timeout", self.timeout.map(Value::from));
        put("save", self.save.map(Value::from));
        put("cached", self.cached.clone());
        put("ack_failure", self.ack_failure.map(Value::from));
        TaskOptions::from_q_options(&q_options)
    }
}

/// The instant a status or spec time names.
pub fn instant(at: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(at.0.as_microsecond())
}

/// The first run of a QSchedule: its spec's nextRun, else its creation.
pub fn anchor(qschedule: &QSchedule) -> DateTime<Utc> {
    let time = qschedule
        .spec
        .next_run
        .as_ref()
        .or(qschedule.metadata.creation_timestamp.as_ref());
    // Whole seconds, as every time in a status is written: a fraction in the
    // spec would give slots that never match what is read back.
    time.and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
        .unwrap_or_else(|| DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_default())
}

/// The engine's Schedule for a QSchedule as its status left it, and its timing.
pub fn engine_schedule(qschedule: &QSchedule) -> Result<(Schedule, Recurrence), SpecError> {
    let spec = &qschedule.spec;
    let kind = spec.kind()?;
    let anchor = anchor(qschedule);
    let recurrence = q8s::schedule::record::recurrence(kind.clone(), &spec.time_zone, anchor)?;
    let status = qschedule.status.clone().unwrap_or_default();
    let next_run = status
        .next_run
        .as_ref()
        .and_then(instant)
        .or_else(|| recurrence.next_after(anchor - chrono::Duration::seconds(1)))
        .unwrap_or(anchor);
    let schedule = Schedule {
        id: 0,
        name: qschedule.metadata.name.clone(),
        func: spec.func.clone(),
        hook: spec.hook.clone(),
        args: spec.args.clone(),
        kwargs: spec.kwargs.clone(),
        kind,
        tz: spec.time_zone.clone(),
        repeats: repeats_left(spec.repeats, status.runs),
        anchor,
        next_run,
        last_run: status.last_run.as_ref().and_then(instant),
        task: status.last_task.as_ref().map(|t| t.id.clone()),
        options: spec.task_options()?,
        paused: spec.suspend,
    };
    Ok((schedule, recurrence))
}

/// Runs left of `repeats` after `runs`: the spec says how many in all, the
/// seed's count-down follows (negative ones keep counting down).
pub fn repeats_left(repeats: i64, runs: i64) -> i64 {
    repeats.saturating_sub(runs)
}

/// What the operator last did with a QSchedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QScheduleStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready and Stalled, in kstatus' vocabulary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The next slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Time>,
    /// The last slot run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Time>,
    /// The task of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task: Option<LastTask>,
    /// Whether the last run succeeded, once its result can be read (the QCluster's store or cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<bool>,
    /// Slots run.
    #[serde(default)]
    pub runs: i64,
    /// Slots skipped: suspended, past their starting deadline, or forbidden while the last run had no result.
    #[serde(default)]
    pub skipped: i64,
    /// Runs left (negative: forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats_left: Option<i64>,
    /// Slots written down before their tasks were enqueued: after a crash they
    /// are enqueued again under the same task ids, which the broker refuses as
    /// repeats, so each runs once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingRun>,
}

/// A run's task: its id and its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LastTask {
    /// The task id (`q8s fetch ID`).
    pub id: String,
    /// Its humanized name.
    pub name: String,
}

/// A slot being enqueued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PendingRun {
    /// The slot.
    pub slot: Time,
    /// Its task id, the same every time this slot is enqueued.
    pub id: String,
}
