//! The SQL broker (the seed's ORM broker) on SQLite and PostgreSQL.
//!
//! One row per package in `q8s_queue`. Dequeue sets `locked_until` to the
//! receipt's deadline in the same statement that selects the rows, so two
//! consumers never take the same row while its receipt is live; on PostgreSQL
//! the selection uses `FOR UPDATE SKIP LOCKED` so consumers do not queue up
//! behind each other's locks. SQLite serializes writers by itself.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgListener;
use tokio::sync::Mutex;

use super::{Broker, BrokerError, BrokerInfo, Delivery, Leases, Oldest, Receipt};
use crate::clock::{Clock, duration_micros};
use crate::package::Package;
use crate::store::{Database, Dialect};

/// The SQL broker for one queue (the cluster name).
#[derive(Debug)]
pub struct SqlBroker {
    db: Database,
    queue: String,
    leases: Leases,
    clock: Clock,
    /// PostgreSQL: the connection that listens for enqueue notifications, once opened.
    listener: Mutex<Option<PgListener>>,
}

impl SqlBroker {
    /// A broker for queue `queue` on `db`.
    pub fn new(db: Database, queue: &str, leases: Leases) -> SqlBroker {
        SqlBroker::with_clock(db, queue, leases, Clock::system())
    }

    /// A broker that reads time from `clock`, so tests can expire receipts without waiting.
    pub fn with_clock(db: Database, queue: &str, leases: Leases, clock: Clock) -> SqlBroker {
        SqlBroker {
            db,
            queue: queue.to_string(),
            leases,
            clock,
            listener: Mutex::new(None),
        }
    }

    /// The PostgreSQL notification channel of this queue.
    fn channel(&self) -> String {
        format!("q8s_{}", self.queue)
    }

    fn enqueue_sql(&self) -> &'static str {
        match self.db.dialect() {
            // Notify in the same round trip; listeners wake when the insert commits.
            Dialect::Postgres => {
                "WITH inserted AS (INSERT INTO q8s_queue \
                 (queue, payload, timeout_secs, enqueued_at, locked_until, deliveries) \
                 VALUES ($1, $2, $3, $4, 0, 0) RETURNING id), \
                 notified AS (SELECT pg_notify($5, '')) \
                 SELECT inserted.id FROM inserted, notified"
            }
            Dialect::Sqlite => {
                "INSERT INTO q8s_queue (queue, payload, timeout_secs, enqueued_at, locked_until, deliveries) \
                 VALUES ($1, $2, $3, $4, 0, 0) RETURNING id"
            }
        }
    }

    fn dequeue_sql(&self) -> &'static str {
        // The lease is max(retry, timeout + margin), in microseconds, computed per row.
        match self.db.dialect() {
            Dialect::Postgres => {
                "UPDATE q8s_queue SET deliveries = deliveries + 1, locked_until = $1 + \
                 CASE WHEN timeout_secs IS NOT NULL AND timeout_secs * 1000000 + $2 > $3 \
                 THEN timeout_secs * 1000000 + $2 ELSE $3 END \
                 WHERE id IN (SELECT id FROM q8s_queue WHERE queue = $4 AND locked_until <= $1 \
                 ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, payload, deliveries"
            }
            Dialect::Sqlite => {
                "UPDATE q8s_queue SET deliveries = deliveries + 1, locked_until = $1 + \
                 CASE WHEN timeout_secs IS NOT NULL AND timeout_secs * 1000000 + $2 > $3 \
                 THEN timeout_secs * 1000000 + $2 ELSE $3 END \
                 WHERE id IN (SELECT id FROM q8s_queue WHERE queue = $4 AND locked_until <= $1 \
                 ORDER BY id LIMIT $5) \
                 RETURNING id, payload, deliveries"
            }
        }
    }
}

/// Receipts acknowledged per statement: well under SQLite's limit on bound parameters.
const ACK_CHUNK: usize = 500;

#[async_trait]
impl Broker for SqlBroker {
    async fn enqueue(
        &self,
        package: &Package,
        timeout: Option<u64>,
    ) -> Result<String, BrokerError> {
        let row = sqlx::query(self.enqueue_sql())
            .bind(&self.queue)
            .bind(package.as_bytes())
            .bind(timeout.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
            .bind(self.clock.now_micros())
            .bind(self.channel())
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get::<i64, _>(0)?.to_string())
    }

    async fn enqueue_all(&self, packages: &[(Package, Option<u64>)]) -> Result<(), BrokerError> {
        let mut transaction = self.db.pool().begin().await?;
        for (package, timeout) in packages {
            sqlx::query(self.enqueue_sql())
                .bind(&self.queue)
                .bind(package.as_bytes())
                .bind(timeout.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
                .bind(self.clock.now_micros())
                .bind(self.channel())
                .fetch_one(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn enqueue_once(
        &self,
        package: &Package,
        timeout: Option<u64>,
        key: &str,
        window: Duration,
    ) -> Result<bool, BrokerError> {
        let now = self.clock.now_micros();
        let until = now.saturating_add(duration_micros(window));
        let mut transaction = self.db.pool().begin().await?;
        sqlx::query("DELETE FROM q8s_once WHERE queue = $1 AND expires <= $2")
            .bind(&self.queue)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        // The marker's primary key refuses a second insert while it lives;
        // the transaction puts the marker and the package in together.
        let marked = sqlx::query(
            "INSERT INTO q8s_once (queue, once_key, expires) VALUES ($1, $2, $3) \
             ON CONFLICT (queue, once_key) DO NOTHING",
        )
        .bind(&self.queue)
        .bind(key)
        .bind(until)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if marked == 0 {
            transaction.rollback().await?;
            return Ok(false);
        }
        sqlx::query(self.enqueue_sql())
            .bind(&self.queue)
            .bind(package.as_bytes())
            .bind(timeout.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
            .bind(now)
            .bind(self.channel())
            .fetch_one(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(true)
    }

    async fn wait_for_work(&self, poll: Duration) {
        if self.db.dialect() != Dialect::Postgres {
            tokio::time::sleep(poll).await;
            return;
        }
        let mut listener = self.listener.lock().await;
        if listener.is_none() {
            match PgListener::connect(self.db.connect_url()).await {
                Ok(mut connected) => match connected.listen(&self.channel()).await {
                    Ok(()) => *listener = Some(connected),
                    Err(error) => {
                        tracing::warn!("cannot LISTEN for new tasks, polling instead: {error}")
                    }
                },
                Err(error) => {
                    tracing::warn!("cannot LISTEN for new tasks, polling instead: {error}")
                }
            }
        }
        match listener.as_mut() {
            Some(connected) => {
                if let Ok(Err(error)) = tokio::time::timeout(poll, connected.recv()).await {
                    tracing::warn!("LISTEN connection failed, reconnecting: {error}");
                    *listener = None;
                }
            }
            None => tokio::time::sleep(poll).await,
        }
    }

    async fn dequeue(&self, bulk: usize) -> Result<Vec<Delivery>, BrokerError> {
        let rows = sqlx::query(self.dequeue_sql())
            .bind(self.clock.now_micros())
            .bind(duration_micros(self.leases.margin))
            .bind(duration_micros(self.leases.retry))
            .bind(&self.queue)
            .bind(i64::try_from(bulk.max(1)).unwrap_or(i64::MAX))
            .fetch_all(self.db.pool())
            .await?;
        let mut deliveries = rows
            .iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                let delivery: i64 = row.try_get("deliveries")?;
                Ok((
                    id,
                    Delivery {
                        receipt: Receipt::new(id, delivery),
                        package: Package::from_bytes(row.try_get("payload")?),
                        attempt: u32::try_from(delivery).unwrap_or(u32::MAX),
                    },
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        deliveries.sort_by_key(|(id, _)| *id);
        Ok(deliveries
            .into_iter()
            .map(|(_, delivery)| delivery)
            .collect())
    }

    async fn acknowledge(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        self.delete(receipt).await
    }

    async fn acknowledge_all(&self, receipts: &[Receipt]) -> Result<(), BrokerError> {
        let ids = receipts
            .iter()
            .map(|receipt| receipt.parts().map(|(id, _)| id))
            .collect::<Result<Vec<i64>, BrokerError>>()?;
        for chunk in ids.chunks(ACK_CHUNK) {
            let sql = format!(
                "DELETE FROM q8s_queue WHERE id IN ({})",
                self.db.placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(self.db.pool()).await?;
        }
        Ok(())
    }

    async fn fail(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        self.delete(receipt).await
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        let (id, _) = receipt.parts()?;
        sqlx::query("DELETE FROM q8s_queue WHERE id = $1")
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn release(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        let (id, delivery) = receipt.parts()?;
        sqlx::query(
            "UPDATE q8s_queue SET locked_until = 0, deliveries = deliveries - 1 \
             WHERE id = $1 AND deliveries = $2",
        )
        .bind(id)
        .bind(delivery)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    async fn requeue(&self, receipt: &Receipt) -> Result<(), BrokerError> {
        let (id, delivery) = receipt.parts()?;
        sqlx::query("UPDATE q8s_queue SET locked_until = 0 WHERE id = $1 AND deliveries = $2")
            .bind(id)
            .bind(delivery)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn extend(&self, receipts: &[Receipt], lease: Duration) -> Result<(), BrokerError> {
        let now = self.clock.now_micros();
        let deadline = now.saturating_add(duration_micros(lease));
        let mut transaction = self.db.pool().begin().await?;
        for receipt in receipts {
            let (id, delivery) = receipt.parts()?;
            // Only while this delivery still holds the package (its lock not run
            // out, nor given back by requeue): never extend someone else's.
            sqlx::query(
                "UPDATE q8s_queue SET locked_until = $1 \
                 WHERE id = $2 AND deliveries = $3 AND locked_until < $1 AND locked_until > $4",
            )
            .bind(deadline)
            .bind(id)
            .bind(delivery)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn purge_queue(&self) -> Result<u64, BrokerError> {
        let done = sqlx::query("DELETE FROM q8s_queue WHERE queue = $1")
            .bind(&self.queue)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected())
    }

    async fn delete_queue(&self) -> Result<(), BrokerError> {
        // Queues are rows of a shared table: deleting one is purging it.
        self.purge_queue().await.map(|_| ())
    }

    async fn queue_size(&self) -> Result<u64, BrokerError> {
        let row =
            sqlx::query("SELECT COUNT(*) FROM q8s_queue WHERE queue = $1 AND locked_until <= $2")
                .bind(&self.queue)
                .bind(self.clock.now_micros())
                .fetch_one(self.db.pool())
                .await?;
        Ok(row.try_get::<i64, _>(0)? as u64)
    }

    async fn lock_size(&self) -> Result<u64, BrokerError> {
        let row =
            sqlx::query("SELECT COUNT(*) FROM q8s_queue WHERE queue = $1 AND locked_until > $2")
                .bind(&self.queue)
                .bind(self.clock.now_micros())
                .fetch_one(self.db.pool())
                .await?;
        Ok(row.try_get::<i64, _>(0)? as u64)
    }

    async fn oldest_waiting(&self) -> Result<Oldest, BrokerError> {
        let now = self.clock.now_micros();
        // Ids grow with enqueue time: the first waiting id is the oldest, and
        // the queue's (queue, id) index finds it without reading the rest.
        let row = sqlx::query(
            "SELECT enqueued_at FROM q8s_queue WHERE queue = $1 AND locked_until <= $2 \
             ORDER BY id LIMIT 1",
        )
        .bind(&self.queue)
        .bind(now)
        .fetch_optional(self.db.pool())
        .await?;
        let oldest: Option<i64> = row.map(|row| row.try_get(0)).transpose()?;
        Ok(Oldest::Age(oldest.map_or(Duration::ZERO, |enqueued| {
            Duration::from_micros(u64::try_from(now - enqueued).unwrap_or(0))
        })))
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        sqlx::query("SELECT 1").execute(self.db.pool()).await?;
        Ok(())
    }

    fn info(&self) -> BrokerInfo {
        let dialect = match self.db.dialect() {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        };
        BrokerInfo {
            name: format!("sql/{dialect}"),
            location: self.db.url().to_string(),
        }
    }
}
