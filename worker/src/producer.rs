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

use crate::broker::{self, Broker, Opened};
use crate::client::ClientError;
use crate::config::Config;
use crate::package::{Package, Signer};
use crate::request::TaskRequest;
use crate::task::{Cached, Task};

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
        Ok(Producer::from_parts(config, signer, opened))
    }

    /// A producer with a signer already made.
    pub(crate) fn from_parts(config: Arc<Config>, signer: Signer, opened: &Opened) -> Producer {
        Producer {
            config,
            signer,
            broker: Arc::clone(&opened.queue),
            caches: opened.cache.is_some(),
        }
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
        self.pack_as(request, None)
    }

    /// As [`pack`](Self::pack), the task taking the id `id` (and the name it humanizes to) when given.
    fn pack_as(
        &self,
        request: TaskRequest,
        id: Option<&str>,
    ) -> Result<(Task, Package), ClientError> {
        if request.func.trim().is_empty() {
            return Err(ClientError::Invalid(
                "a task needs a function name, e.g. math.copysign".into(),
            ));
        }
        request.options.check()?;
        let cached = request.options.cached.unwrap_or(self.config.cached);
        if cached != Cached::Off && !self.caches {
            return Err(ClientError::Invalid(
                "cached results are kept in Redis: set broker = \"redis://…\", or leave `cached` off".into(),
            ));
        }
        let mut task = request.into_task();
        if let Some(id) = id {
            if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ClientError::Invalid(format!(
                    "task id {id:?} must be 32 hexadecimal digits, as a UUID's"
                )));
            }
            task.id = id.to_ascii_lowercase();
            task.name = crate::humanize::humanize(&task.id);
        }
        task.cached = Some(cached).filter(|c| *c != Cached::Off);
        let package = self.signer.pack(&task)?;
        Ok((task, package))
    }

    /// Puts a task on the queue; returns its id. A request for `sync` needs a [`Client`](crate::Client).
    pub async fn enqueue(&self, request: TaskRequest) -> Result<String, ClientError> {
        if request.options.sync.unwrap_or(self.config.sync) {
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

    /// Puts a task with the id `id` (32 hex digits) on the queue unless one
    /// with that id went there in the last `window`: true when enqueued, false
    /// when refused as a repeat. A producer that may have died after
    /// enqueueing (the operator's schedules) enqueues again with the same id
    /// and the task still runs once. Brokers that cannot refuse a repeat
    /// (SQS standard queues) say so.
    pub async fn enqueue_once(
        &self,
        request: TaskRequest,
        id: &str,
        window: std::time::Duration,
    ) -> Result<bool, ClientError> {
        if request.options.sync.unwrap_or(self.config.sync) {
            return Err(ClientError::Invalid(
                "enqueue_once takes a queued task, not a sync one".into(),
            ));
        }
        let (task, package) = self.pack_as(request, Some(id))?;
        let enqueued = self
            .broker
            .enqueue_once(&package, self.config.timeout_for(&task), &task.id, window)
            .await?;
        Ok(enqueued)
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
            if request.options.sync.unwrap_or(self.config.sync) {
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
