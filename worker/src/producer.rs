//! The producer: signs tasks and puts them on the broker, without the result store.
//!
//! What a service, a schedule or the operator needs to enqueue: the cluster's
//! keys and its broker. A producer never opens the store, so with a Redis or
//! SQS broker it enqueues while the store is down or not there at all.
//!
//! ```no_run
//! # async fn example() -> Result<(), q8s::ClientError> {
//! use q8s::{Config, Producer, TaskRequest};
//! let producer = Producer::connect(Config::default()).await?;
//! let id = producer.enqueue(TaskRequest::new("math.copysign").arg(2).arg(-2)).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::broker::{self, Broker, Opened};
use crate::client::ClientError;
use crate::config::Config;
use crate::package::{Package, Signer};
use crate::task::{Cached, Task};

/// What to enqueue: the seed's `async(func, *args, hook, group, timeout, save, cached, sync, q_options, **kwargs)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskRequest {
    /// Dotted function name.
    pub func: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Function called with the finished task.
    pub hook: Option<String>,
    /// Group label.
    pub group: Option<String>,
    /// Seconds the task may run.
    pub timeout: Option<u64>,
    /// Overrides `save_limit` for this task's success.
    pub save: Option<bool>,
    /// Keep the result in the cache: true, or seconds.
    pub cached: Option<Cached>,
    /// Run now, in this process (or `None` for the configured `sync`).
    pub sync: Option<bool>,
    /// Overrides `ack_failures` for this task.
    pub ack_failure: Option<bool>,
}

impl TaskRequest {
    /// A request to run `func`.
    pub fn new(func: impl Into<String>) -> TaskRequest {
        TaskRequest {
            func: func.into(),
            ..TaskRequest::default()
        }
    }

    /// Adds a positional argument.
    pub fn arg(mut self, value: impl Into<Value>) -> TaskRequest {
        self.args.push(value.into());
        self
    }

    /// Adds a keyword argument.
    pub fn kwarg(mut self, name: &str, value: impl Into<Value>) -> TaskRequest {
        self.kwargs.insert(name.to_string(), value.into());
        self
    }

    /// Applies the seed's `q_options` dict: hook, group, timeout, save, cached, sync, ack_failure.
    /// Like the seed, these override the options set one by one.
    pub fn q_options(mut self, options: &Map<String, Value>) -> Result<TaskRequest, ClientError> {
        let invalid = |key: &str, expected: &str| {
            ClientError::Invalid(format!("q_options: `{key}` must be {expected}"))
        };
        for (key, value) in options {
            match key.as_str() {
                "hook" => {
                    self.hook = Some(
                        value
                            .as_str()
                            .ok_or_else(|| invalid(key, "a function name"))?
                            .into(),
                    )
                }
                "group" => {
                    self.group = Some(
                        value
                            .as_str()
                            .ok_or_else(|| invalid(key, "a string"))?
                            .into(),
                    )
                }
                "timeout" => {
                    self.timeout = Some(
                        value
                            .as_u64()
                            .filter(|t| *t > 0 && *t <= crate::task::MAX_TIMEOUT)
                            .ok_or_else(|| {
                                invalid(key, "a whole number of seconds, at most a year")
                            })?,
                    )
                }
                "save" => {
                    self.save = Some(
                        value
                            .as_bool()
                            .ok_or_else(|| invalid(key, "true or false"))?,
                    )
                }
                "sync" => {
                    self.sync = Some(
                        value
                            .as_bool()
                            .ok_or_else(|| invalid(key, "true or false"))?,
                    )
                }
                "ack_failure" => {
                    self.ack_failure = Some(
                        value
                            .as_bool()
                            .ok_or_else(|| invalid(key, "true or false"))?,
                    )
                }
                "cached" => {
                    self.cached = Some(match (value.as_bool(), value.as_u64()) {
                        (Some(true), _) => Cached::On,
                        (Some(false), _) => Cached::Off,
                        (None, Some(seconds)) => Cached::Seconds(seconds),
                        _ => return Err(invalid(key, "true, false or seconds")),
                    })
                }
                other => {
                    return Err(ClientError::Invalid(format!(
                        "q_options: unknown option `{other}`; the options are hook, group, timeout, save, cached, sync, ack_failure"
                    )));
                }
            }
        }
        Ok(self)
    }
}

impl TaskRequest {
    /// The task this request describes, with a fresh id.
    pub(crate) fn into_task(self) -> Task {
        let mut task = Task::new(self.func);
        task.args = self.args;
        task.kwargs = self.kwargs;
        task.hook = self.hook;
        task.group = self.group;
        task.timeout = self.timeout;
        task.save = self.save;
        task.ack_failure = self.ack_failure;
        task
    }
}

/// Signs tasks with the cluster's keys and enqueues them on its broker.
#[derive(Debug, Clone)]
pub struct Producer {
    config: Arc<Config>,
    signer: Signer,
    broker: Arc<dyn Broker>,
    caches: bool,
}

impl Producer {
    /// Connects to the broker `config` names; opens no store and migrates nothing.
    pub async fn connect(config: Config) -> Result<Producer, ClientError> {
        config.validate()?;
        let opened = broker::connect(&config, None).await?;
        Producer::new(Arc::new(config), &opened)
    }

    /// A producer on a broker already opened.
    pub(crate) fn new(config: Arc<Config>, opened: &Opened) -> Result<Producer, ClientError> {
        let signer = config.signer()?;
        Ok(Producer {
            config,
            signer,
            broker: Arc::clone(&opened.queue),
            caches: opened.cache.is_some(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The signer.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The task a request describes and its signed package, or why the request is refused.
    pub fn pack(&self, request: TaskRequest) -> Result<(Task, Package), ClientError> {
        if request.func.trim().is_empty() {
            return Err(ClientError::Invalid(
                "a task needs a function name, e.g. math.copysign".into(),
            ));
        }
        if request
            .timeout
            .is_some_and(|t| t == 0 || t > crate::task::MAX_TIMEOUT)
        {
            return Err(ClientError::Invalid(format!(
                "timeout must be between 1 and {} seconds (a year)",
                crate::task::MAX_TIMEOUT
            )));
        }
        let cached = request.cached.unwrap_or(self.config.cached);
        if cached != Cached::Off && !self.caches {
            return Err(ClientError::Invalid(
                "cached results are kept in Redis: set broker = \"redis://…\", or leave `cached` off".into(),
            ));
        }
        let mut task = request.into_task();
        task.cached = Some(cached).filter(|c| *c != Cached::Off);
        let package = self.signer.pack(&task)?;
        Ok((task, package))
    }

    /// Puts a task on the queue; returns its id. A request for `sync` needs a [`Client`](crate::Client).
    pub async fn enqueue(&self, request: TaskRequest) -> Result<String, ClientError> {
        if request.sync.unwrap_or(self.config.sync) {
            return Err(ClientError::Invalid(
                "a sync task runs here and saves its result: enqueue it with a Client, which opens the store".into(),
            ));
        }
        let (task, package) = self.pack(request)?;
        self.broker
            .enqueue(&package, self.config.timeout_for(&task))
            .await?;
        Ok(task.id)
    }

    /// Puts many tasks on the queue in one broker call (one transaction on SQL); returns their ids.
    /// Tasks that ask for `sync` are refused here: enqueue them one by one.
    pub async fn enqueue_all(
        &self,
        requests: Vec<TaskRequest>,
    ) -> Result<Vec<String>, ClientError> {
        let mut packages = Vec::with_capacity(requests.len());
        let mut ids = Vec::with_capacity(requests.len());
        for request in requests {
            if request.sync.unwrap_or(self.config.sync) {
                return Err(ClientError::Invalid(
                    "enqueue_all takes queued tasks; run sync tasks with enqueue".into(),
                ));
            }
            let (task, package) = self.pack(request)?;
            packages.push((package, self.config.timeout_for(&task)));
            ids.push(task.id);
        }
        self.broker.enqueue_all(&packages).await?;
        Ok(ids)
    }
}
