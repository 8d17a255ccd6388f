//! The task: what travels in a package, and the record a finished task leaves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest timeout accepted, in seconds: a year. Longer work should not hold a receipt.
pub const MAX_TIMEOUT: u64 = 365 * 24 * 3600;

/// How long results are kept in the cache (`cached`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Cached {
    /// Results go to the store.
    Off,
    /// Results go to the cache with no expiry.
    On,
    /// Results go to the cache for this many seconds.
    Seconds(u64),
}

impl Cached {
    /// How long a cached result is kept: `None` for no expiry.
    pub fn ttl(self) -> Option<std::time::Duration> {
        match self {
            Cached::Seconds(seconds) => Some(std::time::Duration::from_secs(seconds)),
            Cached::Off | Cached::On => None,
        }
    }
}

/// A task as it travels inside a package: which function, its arguments and its options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Unique id: a UUID v4 in 32 hex digits, as Django Q's `uuid4().hex`.
    pub id: String,
    /// Humanized four-word name derived from the id.
    pub name: String,
    /// Dotted name of the function in the registry, e.g. `math.copysign`.
    pub func: String,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// Function called with the finished task's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    /// Group label, for the group functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Seconds the task may run; overrides the cluster's `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Overrides the cluster's `save_limit` decision for a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save: Option<bool>,
    /// Overrides the cluster's `ack_failures` for this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_failure: Option<bool>,
    /// Keep the result in the broker's cache (Redis) instead of the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<Cached>,
    /// When the task was enqueued.
    pub enqueued: DateTime<Utc>,
}

impl Task {
    /// A new task for `func` with a fresh id and its humanized name, enqueued now.
    pub fn new(func: impl Into<String>) -> Task {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = crate::humanize::humanize(&id);
        Task {
            id,
            name,
            func: func.into(),
            args: Vec::new(),
            kwargs: Map::new(),
            hook: None,
            group: None,
            timeout: None,
            save: None,
            ack_failure: None,
            cached: None,
            enqueued: Utc::now(),
        }
    }
}

/// Why a task failed; stored with the failure and used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No function of that name is registered.
    UnknownFunction,
    /// The arguments do not fit the function.
    BadArguments,
    /// The function ran and returned an error.
    Failed,
    /// The function panicked.
    Panicked,
    /// The task ran longer than its timeout.
    Timeout,
    /// The worker running the task died.
    WorkerLost,
}

impl ErrorKind {
    /// The stable snake_case name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UnknownFunction => "unknown_function",
            ErrorKind::BadArguments => "bad_arguments",
            ErrorKind::Failed => "failed",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Timeout => "timeout",
            ErrorKind::WorkerLost => "worker_lost",
        }
    }

    /// Parses the stored name; unknown names read as `Failed`.
    pub fn parse(text: &str) -> ErrorKind {
        match text {
            "unknown_function" => ErrorKind::UnknownFunction,
            "bad_arguments" => ErrorKind::BadArguments,
            "panicked" => ErrorKind::Panicked,
            "timeout" => ErrorKind::Timeout,
            "worker_lost" => ErrorKind::WorkerLost,
            _ => ErrorKind::Failed,
        }
    }
}

/// A failed task's error: its kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, for people.
    pub message: String,
}

impl TaskError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> TaskError {
        TaskError {
            kind,
            message: message.into(),
        }
    }

    /// The function ran and failed.
    pub fn failed(message: impl Into<String>) -> TaskError {
        TaskError::new(ErrorKind::Failed, message)
    }

    /// The arguments do not fit the function.
    pub fn bad_arguments(message: impl Into<String>) -> TaskError {
        TaskError::new(ErrorKind::BadArguments, message)
    }
}

/// What a finished task leaves in the store: the seed's Task model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's id.
    pub id: String,
    /// The task's humanized name.
    pub name: String,
    /// The function that ran.
    pub func: String,
    /// The hook, if any.
    pub hook: Option<String>,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// The function's result; for a failure, the error message as a JSON string.
    pub result: Value,
    /// For a failure, what kind of failure.
    pub error_kind: Option<ErrorKind>,
    /// Group label.
    pub group: Option<String>,
    /// When the task was enqueued.
    pub enqueued: DateTime<Utc>,
    /// When a worker started it.
    pub started: DateTime<Utc>,
    /// When it finished.
    pub stopped: DateTime<Utc>,
    /// Whether it succeeded.
    pub success: bool,
    /// How many times it was delivered to a worker.
    pub attempts: u32,
}

impl TaskRecord {
    /// The record of `task` that ran from `started` to `stopped` with `outcome`.
    pub fn finished(
        task: &Task,
        outcome: Result<Value, TaskError>,
        started: DateTime<Utc>,
        stopped: DateTime<Utc>,
        attempts: u32,
    ) -> TaskRecord {
        let (result, error_kind, success) = match outcome {
            Ok(value) => (value, None, true),
            Err(error) => (Value::String(error.message), Some(error.kind), false),
        };
        TaskRecord {
            id: task.id.clone(),
            name: task.name.clone(),
            func: task.func.clone(),
            hook: task.hook.clone(),
            args: task.args.clone(),
            kwargs: task.kwargs.clone(),
            result,
            error_kind,
            group: task.group.clone(),
            enqueued: task.enqueued,
            started,
            stopped,
            success,
            attempts,
        }
    }

    /// The outcome again: the result, or the error it failed with.
    pub fn outcome(&self) -> Result<Value, TaskError> {
        match self.error_kind {
            None if self.success => Ok(self.result.clone()),
            kind => {
                let message = match &self.result {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                Err(TaskError::new(kind.unwrap_or(ErrorKind::Failed), message))
            }
        }
    }

    /// Seconds between enqueue and finish: the time spent in the cluster, waiting included.
    pub fn time_taken(&self) -> f64 {
        (self.stopped - self.enqueued)
            .num_microseconds()
            .unwrap_or(i64::MAX) as f64
            / 1e6
    }
}
