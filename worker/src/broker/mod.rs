//! Brokers: the seed's broker surface as one trait, with delivery receipts.
//!
//! A dequeued package carries a [`Receipt`]. Until the receipt is acknowledged
//! (or failed, or released) the package is invisible to other consumers; when
//! its deadline passes it is delivered again. The deadline is never shorter
//! than the task's own timeout plus `receipt_margin`, and a cluster extends it
//! while the task runs.

pub mod redis;
pub mod sql;
#[cfg(feature = "sqs")]
pub mod sqs;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{BrokerKind, Config, broker_kind};
use crate::package::{Package, Signer};
use crate::stat::StatBoard;
use crate::store::{Database, DatabaseError};

pub use redis::RedisBroker;
pub use sql::SqlBroker;
#[cfg(feature = "sqs")]
pub use sqs::SqsBroker;

/// Why a broker call failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker's database failed.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// The configured broker is not available in this build.
    #[error("{0}")]
    Unsupported(String),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(String),
    /// SQS, or the SQS-compatible server, failed.
    #[error("sqs: {0}")]
    Sqs(String),
    /// The broker's settings are wrong: the message says which and how to fix them.
    #[error("{0}")]
    Config(String),
    /// The package is larger than this broker takes.
    #[error("{0}")]
    TooLarge(String),
    /// A receipt this broker did not issue.
    #[error("not a receipt of this broker: {0:?}")]
    BadReceipt(String),
}

impl BrokerError {
    /// Whether the caller must change the command or configuration (rather than wait for the broker).
    pub fn is_usage(&self) -> bool {
        match self {
            BrokerError::Unsupported(_) | BrokerError::Config(_) | BrokerError::TooLarge(_) => true,
            BrokerError::Database(error) => error.is_usage(),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for BrokerError {
    fn from(error: sqlx::Error) -> BrokerError {
        BrokerError::Database(DatabaseError::Query(error))
    }
}

/// Proof of one delivery, used to acknowledge, fail, release or extend it.
///
/// The SQL and Redis brokers write it `"<package id>.<delivery number>"`: the
/// delivery number lets a broker refuse to extend or release a delivery that was
/// superseded. The SQS broker's receipts are SQS's own receipt handles.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(pub String);

impl Receipt {
    /// The receipt of delivery number `delivery` of package `id`.
    pub fn new(id: i64, delivery: i64) -> Receipt {
        Receipt(format!("{id}.{delivery}"))
    }

    /// The package id and delivery number, or an error for a receipt this code did not write.
    pub fn parts(&self) -> Result<(i64, i64), BrokerError> {
        self.0
            .split_once('.')
            .and_then(|(id, delivery)| Some((id.parse().ok()?, delivery.parse().ok()?)))
            .ok_or_else(|| BrokerError::BadReceipt(self.0.clone()))
    }
}

/// What a broker knows of its oldest waiting package, for the queue age.
#[derive(Debug)]
pub enum Oldest {
    /// How long it has waited; zero when nothing waits.
    Age(Duration),
    /// The package itself: the broker keeps no enqueue time beside it.
    Package(Package),
    /// The broker cannot say.
    Unknown,
}

impl Oldest {
    /// How long the oldest package has waited at `now`; a package is read with
    /// `signer`, and one that does not verify has no age to give.
    pub fn age(self, signer: &Signer, now: DateTime<Utc>) -> Option<Duration> {
        match self {
            Oldest::Age(age) => Some(age),
            Oldest::Package(package) => {
                let task = signer.unpack(package.as_bytes()).ok()?;
                Some((now - task.enqueued).to_std().unwrap_or(Duration::ZERO))
            }
            Oldest::Unknown => None,
        }
    }
}

/// A package handed out by `dequeue`, with its receipt.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Acknowledge with this when the task is done.
    pub receipt: Receipt,
    /// The package, not yet verified.
    pub package: Package,
    /// How many times this package has been delivered, this time included.
    pub attempt: u32,
}

/// Name and version of a broker, for `q8s info`.
#[derive(Debug, Clone)]
pub struct BrokerInfo {
    /// Broker kind, e.g. `sql/sqlite`.
    pub name: String,
    /// Where it is, password hidden.
    pub location: String,
}

/// The seed's broker surface, with receipts on every broker.
#[async_trait]
pub trait Broker: Send + Sync + std::fmt::Debug {
    /// Puts a package on the queue; `timeout` is the task's own limit, for its receipt. Returns the broker's id.
    async fn enqueue(&self, package: &Package, timeout: Option<u64>)
    -> Result<String, BrokerError>;
    /// Puts several packages on the queue at once (one transaction where the broker has them).
    async fn enqueue_all(&self, packages: &[(Package, Option<u64>)]) -> Result<(), BrokerError> {
        for (package, timeout) in packages {
            self.enqueue(package, *timeout).await?;
        }
        Ok(())
    }
    /// Puts a package on the queue unless one with `key` was put there in the
    /// last `window`: true when it was enqueued, false when refused as a
    /// repeat. The check and the enqueue are one step, so a producer that dies
    /// after enqueueing can enqueue again without a task running twice.
    async fn enqueue_once(
        &self,
        package: &Package,
        timeout: Option<u64>,
        key: &str,
        window: Duration,
    ) -> Result<bool, BrokerError> {
        let _ = (package, timeout, key, window);
        Err(BrokerError::Unsupported(format!(
            "the {} broker cannot refuse a package it was given before: use Redis or a SQL database \
             (on SQS, a FIFO queue) for what must be enqueued exactly once",
            self.info().name
        )))
    }
    /// Takes up to `bulk` packages that are waiting or whose receipt expired.
    async fn dequeue(&self, bulk: usize) -> Result<Vec<Delivery>, BrokerError>;
    /// The task is done: remove the package.
    async fn acknowledge(&self, receipt: &Receipt) -> Result<(), BrokerError>;
    /// Several tasks are done.
    async fn acknowledge_all(&self, receipts: &[Receipt]) -> Result<(), BrokerError> {
        for receipt in receipts {
            self.acknowledge(receipt).await?;
        }
        Ok(())
    }
    /// Waits until a package may be waiting, at most `poll`: a notification where the
    /// broker has them, else simply `poll`. Called after an empty dequeue.
    async fn wait_for_work(&self, poll: Duration) {
        tokio::time::sleep(poll).await;
    }
    /// The package cannot be processed (it does not verify): discard it.
    async fn fail(&self, receipt: &Receipt) -> Result<(), BrokerError>;
    /// Removes a package whatever its state.
    async fn delete(&self, receipt: &Receipt) -> Result<(), BrokerError>;
    /// Hands a package back at once, without counting the delivery (it never started).
    async fn release(&self, receipt: &Receipt) -> Result<(), BrokerError>;
    /// Hands a package back at once with the delivery counted: the worker running it died,
    /// so it is delivered again now rather than when its receipt runs out (`max_attempts` holds).
    async fn requeue(&self, receipt: &Receipt) -> Result<(), BrokerError>;
    /// Pushes the deadlines of running tasks' receipts `lease` into the future.
    async fn extend(&self, receipts: &[Receipt], lease: Duration) -> Result<(), BrokerError>;
    /// Removes every package of this queue; returns how many.
    async fn purge_queue(&self) -> Result<u64, BrokerError>;
    /// Removes the queue itself.
    async fn delete_queue(&self) -> Result<(), BrokerError>;
    /// Packages waiting to be delivered (not those in flight).
    async fn queue_size(&self) -> Result<u64, BrokerError>;
    /// Packages delivered and not yet acknowledged, whose receipts are live.
    async fn lock_size(&self) -> Result<u64, BrokerError>;
    /// What the broker knows of its oldest waiting package: its age (SQL), the
    /// package, whose enqueue time is inside it (Redis), or nothing (SQS
    /// publishes it only to CloudWatch).
    async fn oldest_waiting(&self) -> Result<Oldest, BrokerError> {
        Ok(Oldest::Unknown)
    }
    /// Whether the broker answers.
    async fn ping(&self) -> Result<(), BrokerError>;
    /// Name and location.
    fn info(&self) -> BrokerInfo;
}

/// A cache of finished tasks' records, kept apart from the store: what `cached` uses.
///
/// Only some brokers have one (Redis); [`connect`] says which by handing one out or not.
#[async_trait]
pub trait ResultCache: Send + Sync + std::fmt::Debug {
    /// Keeps finished tasks' records (id, group, JSON) for `ttl` (`None`: no expiry).
    async fn cache_results(
        &self,
        records: &[(String, Option<String>, String)],
        ttl: Option<Duration>,
    ) -> Result<(), BrokerError>;
    /// A cached record (JSON) by task id.
    async fn cached_result(&self, id: &str) -> Result<Option<String>, BrokerError>;
    /// The cached records (JSON) of a group, oldest first.
    async fn cached_group(&self, group: &str) -> Result<Vec<String>, BrokerError>;
}

/// A broker as [`connect`] opens it: its queue, and what else it can do.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The queue operations.
    pub queue: Arc<dyn Broker>,
    /// Its result cache, when it has one.
    pub cache: Option<Arc<dyn ResultCache>>,
    /// Its Stat board, when it keeps Stats itself (else the store does).
    pub board: Option<Arc<dyn StatBoard>>,
}

impl Opened {
    fn queue_only(queue: Arc<dyn Broker>) -> Opened {
        Opened {
            queue,
            cache: None,
            board: None,
        }
    }
}

/// How long receipts last: at least `retry`, and at least the task's timeout plus `margin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leases {
    /// The configured `retry`.
    pub retry: Duration,
    /// The configured `receipt_margin`.
    pub margin: Duration,
}

impl Leases {
    /// The receipts of `config`.
    pub fn from_config(config: &Config) -> Leases {
        Leases {
            retry: Duration::from_secs(config.retry),
            margin: Duration::from_secs(config.receipt_margin),
        }
    }

    /// How long the receipt of a task with `timeout` seconds lasts.
    pub fn lease(&self, timeout: Option<u64>) -> Duration {
        let by_timeout = timeout.map_or(Duration::ZERO, |t| {
            Duration::from_secs(t).saturating_add(self.margin)
        });
        self.retry.max(by_timeout)
    }
}

/// The broker `config` names, with the capabilities it has; `store` is reused when the
/// broker is on the store's database.
pub async fn connect(config: &Config, store: Option<&Database>) -> Result<Opened, BrokerError> {
    if let Some((option, _)) = config.foreign_brokers.iter().next() {
        return Err(BrokerError::Unsupported(format!(
            "option `{option}` names a broker q8s does not have; \
             use broker = \"sqlite://…\", \"postgres://…\", \"redis://…\" or \"sqs://…\""
        )));
    }
    let kind = broker_kind(&config.broker).map_err(BrokerError::Unsupported)?;
    match kind {
        BrokerKind::Sqlite | BrokerKind::Postgres => {
            let database = match store {
                Some(database) if config.broker == config.store_url() => database.clone(),
                _ => Database::connect(&config.broker).await?,
            };
            Ok(Opened::queue_only(Arc::new(SqlBroker::new(
                database,
                &config.name,
                Leases::from_config(config),
            ))))
        }
        BrokerKind::Redis => {
            let redis = connect_redis(config).await?;
            Ok(Opened {
                queue: redis.clone(),
                cache: Some(redis.clone()),
                board: Some(redis),
            })
        }
        #[cfg(feature = "sqs")]
        BrokerKind::Sqs => Ok(Opened::queue_only(Arc::new(
            SqsBroker::connect(
                &sqs::SqsSettings::from_config(config)?,
                &config.name,
                Leases::from_config(config),
                Duration::from_secs_f64(config.poll),
            )
            .await?,
        ))),
        #[cfg(not(feature = "sqs"))]
        BrokerKind::Sqs => Err(BrokerError::Unsupported(
            "this q8s was built without the SQS broker; build it with `--features sqs` \
             (on by default), or use a sqlite://, postgres:// or redis:// broker"
                .into(),
        )),
    }
}

async fn connect_redis(config: &Config) -> Result<Arc<RedisBroker>, BrokerError> {
    Ok(Arc::new(
        RedisBroker::connect(
            &config.broker,
            &config.name,
            Leases::from_config(config),
            crate::clock::Clock::system(),
        )
        .await?,
    ))
}

/// The broker `config` names when it has the capabilities beyond a queue (Redis:
/// the result cache and the Stat board); opens nothing for the others.
async fn capable(config: &Config) -> Result<Option<Arc<RedisBroker>>, BrokerError> {
    match broker_kind(&config.broker).map_err(BrokerError::Unsupported)? {
        BrokerKind::Redis => Ok(Some(connect_redis(config).await?)),
        BrokerKind::Sqlite | BrokerKind::Postgres | BrokerKind::Sqs => Ok(None),
    }
}

/// The Stat board of the broker `config` names, when it keeps one (Redis); opens nothing else.
pub async fn stat_board(config: &Config) -> Result<Option<Arc<dyn StatBoard>>, BrokerError> {
    Ok(capable(config)
        .await?
        .map(|redis| redis as Arc<dyn StatBoard>))
}

/// The result cache of the broker `config` names, when it has one (Redis); opens nothing else.
pub async fn result_cache(config: &Config) -> Result<Option<Arc<dyn ResultCache>>, BrokerError> {
    Ok(capable(config)
        .await?
        .map(|redis| redis as Arc<dyn ResultCache>))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_retry_or_timeout_plus_margin_whichever_is_longer() {
        let leases = Leases {
            retry: Duration::from_secs(60),
            margin: Duration::from_secs(30),
        };
        assert_eq!(leases.lease(None), Duration::from_secs(60));
        assert_eq!(leases.lease(Some(10)), Duration::from_secs(60));
        assert_eq!(leases.lease(Some(300)), Duration::from_secs(330));
    }
}
