//! Stat: the seed's cluster status, published by each cluster and read by any process.
//!
//! Every few seconds a cluster writes its Stat into the store with an expiry;
//! `Stat::get_all` returns the clusters whose Stat has not expired.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::broker::{Broker, BrokerError};
use crate::clock::{micros, now_micros};
use crate::store::{Database, StoreError};

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
}

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

    fn key(&self) -> String {
        format!("{}/{}", self.host, self.cluster_id)
    }

    /// Writes this Stat, readable until `ttl_seconds` from now.
    pub async fn publish(&self, db: &Database, ttl_seconds: i64) -> Result<(), StoreError> {
        let data = serde_json::to_string(self).map_err(|e| StoreError::Corrupt {
            id: self.key(),
            reason: e.to_string(),
        })?;
        sqlx::query(
            "INSERT INTO q8s_stat (cluster_key, cluster_id, host, data, expires) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (cluster_key) DO UPDATE SET data = excluded.data, expires = excluded.expires",
        )
        .bind(self.key())
        .bind(&self.cluster_id)
        .bind(&self.host)
        .bind(data)
        .bind(micros(self.timestamp) + ttl_seconds * 1_000_000)
        .execute(db.pool())
        .await?;
        // Expired rows of clusters long gone are of no use to anyone.
        sqlx::query("DELETE FROM q8s_stat WHERE expires < $1")
            .bind(now_micros() - 3_600 * 1_000_000)
            .execute(db.pool())
            .await?;
        Ok(())
    }

    /// Publishes where monitors look: the broker when it keeps Stats (Redis), else the store.
    pub async fn publish_to(
        &self,
        broker: &dyn Broker,
        db: &Database,
        ttl_seconds: i64,
    ) -> Result<(), StatError> {
        let data = serde_json::to_string(self).map_err(|e| StoreError::Corrupt {
            id: self.key(),
            reason: e.to_string(),
        })?;
        let ttl = std::time::Duration::from_secs(ttl_seconds.max(1) as u64);
        if !broker.publish_stat(&self.key(), &data, ttl).await? {
            self.publish(db, ttl_seconds).await?;
        }
        Ok(())
    }

    /// Every live cluster: from the broker when it keeps Stats (Redis), else from the store.
    pub async fn get_all_from(broker: &dyn Broker, db: &Database) -> Result<Vec<Stat>, StatError> {
        match broker.stats().await? {
            Some(stats) => Ok(stats
                .iter()
                .filter_map(|data| serde_json::from_str(data).ok())
                .collect()),
            None => Ok(Stat::get_all(db).await?),
        }
    }

    /// The live cluster with this id (or `host/id`), from the broker or the store.
    pub async fn get_from(
        broker: &dyn Broker,
        db: &Database,
        cluster_id: &str,
    ) -> Result<Option<Stat>, StatError> {
        Ok(Stat::get_all_from(broker, db)
            .await?
            .into_iter()
            .find(|stat| stat.cluster_id == cluster_id || stat.key() == cluster_id))
    }

    /// Every cluster whose Stat has not expired in the store, by host and id.
    pub async fn get_all(db: &Database) -> Result<Vec<Stat>, StoreError> {
        let rows = sqlx::query(
            "SELECT cluster_key, data FROM q8s_stat WHERE expires > $1 ORDER BY cluster_key",
        )
        .bind(now_micros())
        .fetch_all(db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let key: String = row.try_get("cluster_key")?;
                let data: String = row.try_get("data")?;
                serde_json::from_str(&data).map_err(|e| StoreError::Corrupt {
                    id: key,
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// The live cluster with this id (or `host/id`).
    pub async fn get(db: &Database, cluster_id: &str) -> Result<Option<Stat>, StoreError> {
        Ok(Stat::get_all(db)
            .await?
            .into_iter()
            .find(|stat| stat.cluster_id == cluster_id || stat.key() == cluster_id))
    }
}
