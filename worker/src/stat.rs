//! Stat: the seed's cluster status, published by each cluster and read by any process.
//!
//! Every few seconds a cluster puts its Stat on a [`StatBoard`] with an
//! expiry: Redis when that is the broker (no SQL database needed), else the
//! SQL store. [`Stat::all`] reads every cluster whose Stat has not expired.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::broker::BrokerError;
use crate::clock::now_micros;
use crate::config::Config;
use crate::store::{Database, DatabaseError, StoreError};

/// Why a Stat could not be published or read.
#[derive(Debug, thiserror::Error)]
pub enum StatError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The broker failed.
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
}

impl From<DatabaseError> for StatError {
    fn from(error: DatabaseError) -> StatError {
        StatError::Store(StoreError::Database(error))
    }
}

/// Where Stats are kept with an expiry so that every monitor can read all clusters.
#[async_trait]
pub trait StatBoard: Send + Sync + std::fmt::Debug {
    /// Keeps `stat` (JSON) under `key` until `ttl` from now.
    async fn put(&self, key: &str, stat: &str, ttl: Duration) -> Result<(), StatError>;
    /// Every Stat (JSON) not yet expired, in key order.
    async fn live(&self) -> Result<Vec<String>, StatError>;
}

/// The board of the SQL store: the `q8s_stat` table.
#[derive(Debug, Clone)]
pub struct SqlBoard(pub Database);

#[async_trait]
impl StatBoard for SqlBoard {
    async fn put(&self, key: &str, stat: &str, ttl: Duration) -> Result<(), StatError> {
        let db = &self.0;
        let expires = now_micros() + i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2);
        sqlx::query(
            "INSERT INTO q8s_stat (cluster_key, cluster_id, host, data, expires) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (cluster_key) DO UPDATE SET data = excluded.data, expires = excluded.expires",
        )
        .bind(key)
        .bind(key.rsplit('/').next().unwrap_or(key))
        .bind(key.split('/').next().unwrap_or(key))
        .bind(stat)
        .bind(expires)
        .execute(db.pool())
        .await
        .map_err(StoreError::from)?;
        // Expired rows of clusters long gone are of no use to anyone.
        sqlx::query("DELETE FROM q8s_stat WHERE expires < $1")
            .bind(now_micros() - 3_600 * 1_000_000)
            .execute(db.pool())
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn live(&self) -> Result<Vec<String>, StatError> {
        let rows = sqlx::query("SELECT data FROM q8s_stat WHERE expires > $1 ORDER BY cluster_key")
            .bind(now_micros())
            .fetch_all(self.0.pool())
            .await
            .map_err(StoreError::from)?;
        Ok(rows
            .iter()
            .filter_map(|row| row.try_get::<String, _>("data").ok())
            .collect())
    }
}

/// The board of a broker already opened: its own when it keeps one, else the store's.
pub fn board_of(opened: &crate::broker::Opened, store: &Database) -> Arc<dyn StatBoard> {
    opened
        .board
        .clone()
        .unwrap_or_else(|| Arc::new(SqlBoard(store.clone())))
}

/// The board `config`'s clusters publish on: the broker's own when it keeps one
/// (Redis, without any SQL database), else the store's; `store` is reused when given.
pub async fn board(
    config: &Config,
    store: Option<&Database>,
) -> Result<Arc<dyn StatBoard>, StatError> {
    if let Some(board) = crate::broker::stat_board(config).await? {
        return Ok(board);
    }
    let database = match store {
        Some(database) => database.clone(),
        None => Database::connect(&config.store_url()).await?,
    };
    Ok(Arc::new(SqlBoard(database)))
}

/// A cluster's state, as the monitor shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Spawning workers and getting ready.
    Starting,
    /// Everything is ok, but there are no tasks to process.
    Idle,
    /// Processing tasks.
    Working,
    /// Taking no new tasks and finishing.
    Stopping,
    /// All tasks processed; shutting down.
    Stopped,
}

/// The seed's Stat of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// The cluster id: the sentinel's process id, as in the seed.
    pub cluster_id: String,
    /// Host name (on Kubernetes, the pod name).
    pub host: String,
    /// The cluster name (the queue).
    pub name: String,
    /// Current state.
    pub state: State,
    /// Process ids of the worker pool.
    pub workers: Vec<u32>,
    /// Packages held in memory, not yet started (TQ).
    pub task_queue: u64,
    /// Finished tasks not yet saved (RQ).
    pub result_queue: u64,
    /// Worker processes replaced (RC).
    pub reincarnations: u64,
    /// Time of birth.
    pub tob: DateTime<Utc>,
    /// When this Stat was published.
    pub timestamp: DateTime<Utc>,
    /// The sentinel's process id.
    pub sentinel: u32,
    /// Where the pusher runs: a task of the sentinel process.
    pub pusher: u32,
    /// Where the monitor runs: a task of the sentinel process.
    pub monitor: u32,
    /// The cluster's queue_limit.
    pub queue_limit: u64,
    /// Tasks running in workers now.
    #[serde(default)]
    pub running: u64,
    /// Tasks finished with success since the time of birth.
    #[serde(default)]
    pub successes: u64,
    /// Tasks finished without success since the time of birth.
    #[serde(default)]
    pub failures: u64,
    /// Workers the kernel killed for the container's memory limit since the time of birth.
    #[serde(default)]
    pub oom_kills: u64,
    /// The node the cluster runs on, when it knows ([`NODE_VAR`]: on Kubernetes, the pod's node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The variable naming the node a cluster runs on; the operator's pods set it from `spec.nodeName`.
pub const NODE_VAR: &str = "Q8S_NODE_NAME";

/// Host name of this machine, or `localhost` when it cannot be read.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

impl Stat {
    /// Seconds since the time of birth.
    pub fn uptime(&self) -> f64 {
        (self.timestamp - self.tob).num_milliseconds() as f64 / 1000.0
    }

    /// Its key on a board: host and cluster id.
    pub fn key(&self) -> String {
        format!("{}/{}", self.host, self.cluster_id)
    }

    /// Puts this Stat on `board`, readable for `ttl`.
    pub async fn publish(&self, board: &dyn StatBoard, ttl: Duration) -> Result<(), StatError> {
        let data = serde_json::to_string(self).map_err(|e| StoreError::Corrupt {
            id: self.key(),
            reason: e.to_string(),
        })?;
        board.put(&self.key(), &data, ttl).await
    }

    /// Every live cluster on `board`.
    pub async fn all(board: &dyn StatBoard) -> Result<Vec<Stat>, StatError> {
        Ok(board
            .live()
            .await?
            .iter()
            .filter_map(|data| serde_json::from_str(data).ok())
            .collect())
    }

    /// The live cluster with this id (or `host/id`).
    pub async fn find(board: &dyn StatBoard, cluster_id: &str) -> Result<Option<Stat>, StatError> {
        Ok(Stat::all(board)
            .await?
            .into_iter()
            .find(|stat| stat.cluster_id == cluster_id || stat.key() == cluster_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_published_before_the_newer_fields_still_reads() {
        let old = r#"{"cluster_id":"17","host":"orion","name":"default","state":"Idle","workers":[18,19],
            "task_queue":0,"result_queue":0,"reincarnations":1,"tob":"2026-11-30T10:00:00Z",
            "timestamp":"2026-11-30T10:00:03Z","sentinel":17,"pusher":17,"monitor":17,"queue_limit":4}"#;
        let stat: Stat = serde_json::from_str(old).expect("an old Stat reads");
        assert_eq!((stat.running, stat.successes, stat.failures), (0, 0, 0));
        assert_eq!(stat.node, None);
        assert_eq!(stat.uptime(), 3.0);
    }
}
