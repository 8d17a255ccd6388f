//! The reader: finished tasks' results, records and groups, from the store or the result cache.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use serde_json::Value;

use crate::broker::{self, ResultCache};
use crate::client::ClientError;
use crate::config::Config;
use crate::store::{Database, Store};
use crate::task::{Cached, TaskError, TaskRecord};

/// Reads what clusters saved: the store, and the result cache when the broker has one.
#[derive(Debug, Clone)]
pub struct Reader {
    config: Arc<Config>,
    store: Store,
    /// Opened when first needed: a reader of the store works while Redis is down.
    cache: OnceCell<Option<Arc<dyn ResultCache>>>,
}

impl Reader {
    /// Connects to the store `config` names; the broker's result cache is opened when first read.
    pub async fn connect(config: &Config) -> Result<Reader, ClientError> {
        config.validate()?;
        let database = Database::connect(&config.store_url()).await?;
        Ok(Reader {
            config: Arc::new(config.clone()),
            store: Store::new(database, config.save_limit, config.failure_limit),
            cache: OnceCell::new(),
        })
    }

    /// A reader on a store and cache already opened.
    pub(crate) fn new(
        config: Arc<Config>,
        database: Database,
        cache: Option<Arc<dyn ResultCache>>,
    ) -> Reader {
        Reader {
            store: Store::new(database, config.save_limit, config.failure_limit),
            config,
            cache: OnceCell::new_with(Some(cache)),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The result cache, when the broker has one (opening it on first use).
    pub async fn cache(&self) -> Result<Option<&Arc<dyn ResultCache>>, ClientError> {
        let cache = self
            .cache
            .get_or_try_init(|| broker::result_cache(&self.config))
            .await?;
        Ok(cache.as_ref())
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
        if self.config.cached == Cached::Off || self.cache().await?.is_none() {
            return Ok(None);
        }
        self.fetch_cached(id_or_name).await
    }

    /// A result kept in the result cache (a task enqueued with `cached`), by id.
    pub async fn fetch_cached(&self, id: &str) -> Result<Option<TaskRecord>, ClientError> {
        let cache = self.cache().await?.ok_or_else(|| {
            ClientError::Invalid(
                "this broker keeps no result cache: cached results live in Redis; \
                 set broker = \"redis://…\" to read them"
                    .into(),
            )
        })?;
        match cache.cached_result(id).await? {
            Some(json) => Ok(serde_json::from_str(&json).ok()),
            None => Ok(None),
        }
    }

    /// The cached records of a group, when results are cached (`cached` set and a cache there).
    async fn cached_group(&self, group: &str) -> Result<Option<Vec<TaskRecord>>, ClientError> {
        if self.config.cached == Cached::Off {
            return Ok(None);
        }
        let Some(cache) = self.cache().await? else {
            return Ok(None);
        };
        let records = cache.cached_group(group).await?;
        Ok(Some(
            records
                .iter()
                .filter_map(|json| serde_json::from_str(json).ok())
                .collect(),
        ))
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
}
