//! The client: the producer and the reader together, plus `sync` runs in this process.
//!
//! ```no_run
//! # async fn example() -> Result<(), q8s::ClientError> {
//! use q8s::{Client, Config, TaskRequest};
//! let client = Client::connect(Config::default()).await?;
//! let id = client.enqueue(TaskRequest::new("math.copysign").arg(2).arg(-2)).await?;
//! let outcome = client.reader().result(&id).await?; // None until a cluster has run it
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::broker::{self, Broker, BrokerError};
use crate::config::{Config, ConfigError};
use crate::package::{PackageError, Signer};
use crate::producer::Producer;
use crate::reader::Reader;
use crate::registry::{Registry, RegistryError};
use crate::request::TaskRequest;
use crate::store::{Database, DatabaseError, Finished, Store, StoreError};
use crate::task::{Task, TaskRecord};

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

impl From<crate::options::OptionsError> for ClientError {
    fn from(error: crate::options::OptionsError) -> ClientError {
        ClientError::Invalid(error.to_string())
    }
}

impl ClientError {
    /// A stable name for the kind of error, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            ClientError::Config(error) => error.category(),
            ClientError::Package(error) => error.category(),
            ClientError::Broker(_) => "broker",
            ClientError::Store(_) => "store",
            ClientError::Registry(_) => "registry",
            ClientError::Invalid(_) => "invalid_request",
        }
    }
}

impl From<DatabaseError> for ClientError {
    fn from(error: DatabaseError) -> ClientError {
        ClientError::Store(StoreError::Database(error))
    }
}

/// A producer and a reader on one configuration, with the functions `sync` runs and hooks call.
#[derive(Debug, Clone)]
pub struct Client {
    producer: Producer,
    reader: Reader,
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
        config.validate()?;
        let config = Arc::new(config);
        let database = Database::connect(&config.store_url()).await?;
        let opened = broker::connect(&config, Some(&database)).await?;
        Ok(Client {
            producer: Producer::new(Arc::clone(&config), &opened)?,
            reader: Reader::new(Arc::clone(&config), database, opened.cache.clone()),
            registry: Arc::new(registry),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        self.producer.config()
    }

    /// The producer: enqueueing without the store.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The reader: results, records and groups.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        self.producer.broker()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        self.reader.store()
    }

    /// The signer.
    pub fn signer(&self) -> &Signer {
        self.producer.signer()
    }

    /// Puts a task on the queue, or runs it now when `sync`; returns its id.
    pub async fn enqueue(&self, request: TaskRequest) -> Result<String, ClientError> {
        if !request.options.sync.unwrap_or(self.config().sync) {
            return self.producer.enqueue(request).await;
        }
        // The same path as a cluster: verify the package, run, save, call the hook.
        let (_, package) = self.producer.pack(request)?;
        let task = self.signer().unpack(package.as_bytes())?;
        let id = task.id.clone();
        self.run_now(task).await?;
        Ok(id)
    }

    /// Puts many tasks on the queue in one broker call (one transaction on SQL); returns their ids.
    pub async fn enqueue_all(
        &self,
        requests: Vec<TaskRequest>,
    ) -> Result<Vec<String>, ClientError> {
        self.producer.enqueue_all(requests).await
    }

    /// Runs `task` in this process, saves it and calls its hook.
    async fn run_now(&self, task: Task) -> Result<TaskRecord, ClientError> {
        let registry = Arc::clone(&self.registry);
        let timeout = self.config().timeout_for(&task).map(Duration::from_secs);
        let (task, record) = tokio::task::spawn_blocking(move || {
            let started = Utc::now();
            let outcome = registry.run(&task, timeout);
            let record = TaskRecord::finished(&task, outcome, started, Utc::now(), 1);
            (task, record)
        })
        .await
        .map_err(|e| ClientError::Invalid(format!("the task's thread failed: {e}")))?;
        match (task.cached, self.reader.cache().await?) {
            (Some(cached), Some(cache)) => {
                let json = serde_json::to_string(&record)
                    .map_err(|e| ClientError::Invalid(e.to_string()))?;
                let entry = [(record.id.clone(), record.group.clone(), json)];
                cache.cache_results(&entry, cached.ttl()).await?;
            }
            _ => {
                self.store()
                    .save(&Finished {
                        record: record.clone(),
                        save: task.save,
                    })
                    .await?;
            }
        }
        let timeout = Duration::from_secs(self.config().hook_timeout);
        crate::hook::call_and_log(Arc::clone(&self.registry), record.clone(), timeout).await;
        Ok(record)
    }

    /// Packages waiting in the broker (not those being processed).
    pub async fn queue_size(&self) -> Result<u64, ClientError> {
        Ok(self.broker().queue_size().await?)
    }

    /// Enqueues a failed task again as a new task and removes the failure; returns the new id.
    pub async fn retry_failure(&self, id_or_name: &str) -> Result<String, ClientError> {
        let record =
            self.store().fetch(id_or_name).await?.ok_or_else(|| {
                ClientError::Invalid(format!("no task with id or name {id_or_name}"))
            })?;
        if record.success {
            return Err(ClientError::Invalid(format!(
                "task {} succeeded; only failed tasks can be retried",
                record.id
            )));
        }
        let mut request = TaskRequest {
            func: record.func.clone(),
            args: record.args.clone(),
            kwargs: record.kwargs.clone(),
            ..TaskRequest::default()
        };
        request.options.hook = record.hook.clone();
        request.options.group = record.group.clone();
        // Enqueue first: if that fails, the failure stays where it was.
        let new_id = self.enqueue(request).await?;
        self.store().delete(&record.id).await?;
        Ok(new_id)
    }
}
