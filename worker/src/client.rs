//! The client API: enqueue tasks (the seed's `async`), read results, groups, queue size.
//!
//! ```no_run
//! # async fn example() -> Result<(), q8s::ClientError> {
//! use q8s::{Client, Config, TaskRequest};
//! let client = Client::connect(Config::default()).await?;
//! let id = client.enqueue(TaskRequest::new("math.copysign").arg(2).arg(-2)).await?;
//! let outcome = client.result(&id).await?; // None until a cluster has run it
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value};

use crate::broker::{self, Broker, BrokerError};
use crate::config::{Cached, Config, ConfigError};
use crate::package::{PackageError, Signer};
use crate::registry::{Call, Registry, RegistryError};
use crate::store::{Database, DatabaseError, Finished, Store, StoreError};
use crate::task::{Task, TaskError, TaskRecord};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The task could not be packed (too large, no key).
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The broker failed.
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The registry could not be built.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
}

impl From<DatabaseError> for ClientError {
    fn from(error: DatabaseError) -> ClientError {
        ClientError::Store(StoreError::Database(error))
    }
}

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

/// A connection to a broker and a store, signing with the cluster's keys.
#[derive(Debug, Clone)]
pub struct Client {
    config: Arc<Config>,
    signer: Signer,
    broker: Arc<dyn Broker>,
    store: Store,
    registry: Arc<Registry>,
}

impl Client {
    /// Connects to the configured store and broker, with the built-in functions for `sync`.
    pub async fn connect(config: Config) -> Result<Client, ClientError> {
        let registry = Registry::with_builtins(&config.exec_allow)?;
        Client::connect_with_registry(config, registry).await
    }

    /// Connects with `registry` for the functions `sync` runs and hooks call.
    pub async fn connect_with_registry(
        config: Config,
        registry: Registry,
    ) -> Result<Client, ClientError> {
        let signer = Signer::new(
            &config.secret_keys()?,
            &config.name,
            config.compress,
            config.max_package_size,
        )?;
        let database = Database::connect(&config.store).await?;
        let broker = broker::connect(&config, Some(&database)).await?;
        let store = Store::new(database, config.save_limit, config.failure_limit);
        Ok(Client {
            config: Arc::new(config),
            signer,
            broker,
            store,
            registry: Arc::new(registry),
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

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The signer.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Puts a task on the queue, or runs it now when `sync`; returns its id.
    pub async fn enqueue(&self, request: TaskRequest) -> Result<String, ClientError> {
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
        if cached != Cached::Off && self.broker.info().name != "redis" {
            return Err(ClientError::Invalid(
                "cached results are kept in Redis: set broker = \"redis://…\", or leave `cached` off".into(),
            ));
        }
        let sync = request.sync.unwrap_or(self.config.sync);
        let mut task = request.into_task();
        task.cached = Some(cached).filter(|c| *c != Cached::Off);
        let package = self.signer.pack(&task)?;
        if sync {
            // The same path as a cluster: verify the package, run, save, call the hook.
            let task = self.signer.unpack(package.as_bytes())?;
            self.run_now(task).await?;
        } else {
            self.broker
                .enqueue(&package, self.config.timeout_for(&task))
                .await?;
        }
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
            if request.sync.unwrap_or(self.config.sync) || request.func.trim().is_empty() {
                return Err(ClientError::Invalid(
                    "enqueue_all takes queued tasks with a function name; run sync tasks with enqueue".into(),
                ));
            }
            let task = request.into_task();
            packages.push((self.signer.pack(&task)?, self.config.timeout_for(&task)));
            ids.push(task.id);
        }
        self.broker.enqueue_all(&packages).await?;
        Ok(ids)
    }

    /// Runs `task` in this process, saves it and calls its hook.
    async fn run_now(&self, task: Task) -> Result<TaskRecord, ClientError> {
        let registry = Arc::clone(&self.registry);
        let timeout = self.config.timeout_for(&task).map(Duration::from_secs);
        let (task, record) = tokio::task::spawn_blocking(move || {
            let started = Utc::now();
            let outcome = registry.run(&task, timeout);
            let record = TaskRecord::finished(&task, outcome, started, Utc::now(), 1);
            (task, record)
        })
        .await
        .map_err(|e| ClientError::Invalid(format!("the task's thread failed: {e}")))?;
        let cached = match task.cached {
            Some(cached) => {
                let json = serde_json::to_string(&record)
                    .map_err(|e| ClientError::Invalid(e.to_string()))?;
                let entry = [(record.id.clone(), record.group.clone(), json)];
                self.broker.cache_results(&entry, cached.ttl()).await?
            }
            None => false,
        };
        if !cached {
            self.store
                .save(&Finished {
                    record: record.clone(),
                    save: task.save,
                })
                .await?;
        }
        if let Some(hook) = &record.hook {
            self.call_hook(hook, &record).await;
        }
        Ok(record)
    }

    /// Calls `hook` with the finished task; a failing hook is logged, never fatal.
    async fn call_hook(&self, hook: &str, record: &TaskRecord) {
        let registry = Arc::clone(&self.registry);
        let hook_name = hook.to_string();
        let argument = serde_json::to_value(record).unwrap_or(Value::Null);
        let outcome = tokio::task::spawn_blocking(move || {
            let args = [argument];
            let kwargs = Map::new();
            registry.call(&Call {
                func: &hook_name,
                args: &args,
                kwargs: &kwargs,
                timeout: None,
            })
        })
        .await;
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(task = %record.id, "hook {hook} failed: {error}"),
            Err(error) => tracing::error!(task = %record.id, "hook {hook} failed: {error}"),
        }
    }

    /// The outcome of a finished task by id or name: its result or its error; `None` if not finished.
    pub async fn result(
        &self,
        id_or_name: &str,
    ) -> Result<Option<Result<Value, TaskError>>, ClientError> {
        Ok(self.fetch(id_or_name).await?.map(|record| record.outcome()))
    }

    /// Waits up to `wait` for the task to finish, then gives its outcome.
    pub async fn wait_result(
        &self,
        id_or_name: &str,
        wait: Duration,
    ) -> Result<Option<Result<Value, TaskError>>, ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(outcome) = self.result(id_or_name).await? {
                return Ok(Some(outcome));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The whole record of a finished task by id or name.
    pub async fn fetch(&self, id_or_name: &str) -> Result<Option<TaskRecord>, ClientError> {
        if let Some(record) = self.store.fetch(id_or_name).await? {
            return Ok(Some(record));
        }
        // As in the seed, readers look in the cache when `cached` is their setting.
        if self.config.cached == Cached::Off {
            return Ok(None);
        }
        self.fetch_cached(id_or_name).await
    }

    /// A result kept in the broker's cache (a task enqueued with `cached`), by id.
    pub async fn fetch_cached(&self, id: &str) -> Result<Option<TaskRecord>, ClientError> {
        match self.broker.cached_result(id).await? {
            Some(json) => Ok(serde_json::from_str(&json).ok()),
            None => Ok(None),
        }
    }

    /// The cached records of a group, when results are cached (`cached` set).
    async fn cached_group(&self, group: &str) -> Result<Option<Vec<TaskRecord>>, ClientError> {
        if self.config.cached == Cached::Off {
            return Ok(None);
        }
        let records = self.broker.cached_group(group).await?;
        Ok(Some(
            records
                .iter()
                .filter_map(|json| serde_json::from_str(json).ok())
                .collect(),
        ))
    }

    /// Packages waiting in the broker (not those being processed).
    pub async fn queue_size(&self) -> Result<u64, ClientError> {
        Ok(self.broker.queue_size().await?)
    }

    /// Results of a group; failed ones too when `failures`.
    pub async fn result_group(
        &self,
        group: &str,
        failures: bool,
    ) -> Result<Vec<Value>, ClientError> {
        if let Some(records) = self.cached_group(group).await? {
            return Ok(records
                .into_iter()
                .filter(|record| failures || record.success)
                .map(|record| record.result)
                .collect());
        }
        Ok(self.store.result_group(group, failures).await?)
    }

    /// Tasks of a group; without failures when `failures` is false.
    pub async fn fetch_group(
        &self,
        group: &str,
        failures: bool,
    ) -> Result<Vec<TaskRecord>, ClientError> {
        if let Some(records) = self.cached_group(group).await? {
            return Ok(records
                .into_iter()
                .filter(|record| failures || record.success)
                .collect());
        }
        Ok(self.store.fetch_group(group, failures).await?)
    }

    /// Tasks in a group; failures only when `failures`.
    pub async fn count_group(&self, group: &str, failures: bool) -> Result<u64, ClientError> {
        if let Some(records) = self.cached_group(group).await? {
            return Ok(records
                .iter()
                .filter(|record| !failures || !record.success)
                .count() as u64);
        }
        Ok(self.store.count_group(group, failures).await?)
    }

    /// Removes a group label, or its tasks when `tasks`; returns how many tasks.
    pub async fn delete_group(&self, group: &str, tasks: bool) -> Result<u64, ClientError> {
        Ok(self.store.delete_group(group, tasks).await?)
    }

    /// Enqueues a failed task again as a new task and removes the failure; returns the new id.
    pub async fn retry_failure(&self, id_or_name: &str) -> Result<String, ClientError> {
        let record =
            self.store.fetch(id_or_name).await?.ok_or_else(|| {
                ClientError::Invalid(format!("no task with id or name {id_or_name}"))
            })?;
        if record.success {
            return Err(ClientError::Invalid(format!(
                "task {} succeeded; only failed tasks can be retried",
                record.id
            )));
        }
        let request = TaskRequest {
            func: record.func.clone(),
            args: record.args.clone(),
            kwargs: record.kwargs.clone(),
            hook: record.hook.clone(),
            group: record.group.clone(),
            ..TaskRequest::default()
        };
        // Enqueue first: if that fails, the failure stays where it was.
        let new_id = self.enqueue(request).await?;
        self.store.delete(&record.id).await?;
        Ok(new_id)
    }
}
