//! The result store: finished tasks in SQL, `save_limit`, and the group functions.

pub mod db;
pub mod schedules;

use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::clock::{from_micros, micros};
use crate::task::{ErrorKind, TaskRecord};
pub use db::{Database, DatabaseError, Dialect};
pub use schedules::{ScheduleStatus, Schedules};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// A stored row does not read back as a task.
    #[error("stored task {id} is corrupt: {reason}")]
    Corrupt {
        /// The task id.
        id: String,
        /// What does not parse.
        reason: String,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        StoreError::Database(DatabaseError::Query(error))
    }
}

/// A finished task to save, with its own `save` override if it had one.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The record to save.
    pub record: TaskRecord,
    /// The task's `save` option: overrides `save_limit`'s decision for a success.
    pub save: Option<bool>,
}

/// Values bound per saved task.
const COLUMNS_PER_ROW: usize = 14;
/// Tasks per INSERT statement: within every dialect's limit on bound parameters.
const ROWS_PER_INSERT: usize = 200;

const COLUMNS: &str = "id, name, func, hook, args, kwargs, result, error_kind, task_group, \
     enqueued, started, stopped, CASE WHEN success THEN 1 ELSE 0 END AS success_flag, attempts";

/// Finished tasks in a SQL database.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
    save_limit: i64,
    failure_limit: i64,
}

impl Store {
    /// A store on `db` keeping successes by `save_limit` and failures by `failure_limit`.
    pub fn new(db: Database, save_limit: i64, failure_limit: i64) -> Store {
        Store {
            db,
            save_limit,
            failure_limit,
        }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Saves one finished task; returns whether it was kept.
    pub async fn save(&self, finished: &Finished) -> Result<bool, StoreError> {
        Ok(self.save_all(&[finished]).await? == 1)
    }

    /// Saves finished tasks in one transaction, then prunes by the limits; returns how many were kept.
    ///
    /// A success is kept when its `save` says so, else when `save_limit` is not -1.
    /// Failures are always kept. A task saved twice (delivered again) keeps its last result.
    pub async fn save_all(&self, batch: &[&Finished]) -> Result<usize, StoreError> {
        let kept: Vec<&TaskRecord> = batch
            .iter()
            .filter(|f| !f.record.success || f.save.unwrap_or(self.save_limit >= 0))
            .map(|f| &f.record)
            .collect();
        if kept.is_empty() {
            return Ok(0);
        }
        // A task delivered twice may finish twice in one batch; keep its last result,
        // since one statement may not update the same row twice.
        let mut seen = std::collections::HashSet::new();
        let mut unique: Vec<&TaskRecord> = kept
            .iter()
            .rev()
            .filter(|record| seen.insert(record.id.as_str()))
            .copied()
            .collect();
        unique.reverse();
        let mut transaction = self.db.pool().begin().await?;
        for chunk in unique.chunks(ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|row| {
                    let first = row * COLUMNS_PER_ROW + 1;
                    format!("({})", self.db.placeholders(first, COLUMNS_PER_ROW))
                })
                .collect();
            let sql = format!(
                "INSERT INTO q8s_tasks (id, name, func, hook, args, kwargs, result, error_kind, \
                 task_group, enqueued, started, stopped, success, attempts) VALUES {} \
                 ON CONFLICT (id) DO UPDATE SET result = excluded.result, \
                 error_kind = excluded.error_kind, started = excluded.started, \
                 stopped = excluded.stopped, success = excluded.success, attempts = excluded.attempts",
                rows.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for record in chunk {
                query = query
                    .bind(record.id.clone())
                    .bind(record.name.clone())
                    .bind(record.func.clone())
                    .bind(record.hook.clone())
                    .bind(Value::Array(record.args.clone()).to_string())
                    .bind(Value::Object(record.kwargs.clone()).to_string())
                    .bind(record.result.to_string())
                    .bind(record.error_kind.map(ErrorKind::as_str))
                    .bind(record.group.clone())
                    .bind(micros(record.enqueued))
                    .bind(micros(record.started))
                    .bind(micros(record.stopped))
                    .bind(record.success)
                    .bind(i64::from(record.attempts));
            }
            query.execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        // The batch is saved; pruning that fails is retried with the next one.
        if kept.iter().any(|r| r.success)
            && self.save_limit > 0
            && let Err(error) = self.prune(true, self.save_limit).await
        {
            tracing::warn!("cannot prune old successes (save_limit): {error}");
        }
        if kept.iter().any(|r| !r.success)
            && self.failure_limit > 0
            && let Err(error) = self.prune(false, self.failure_limit).await
        {
            tracing::warn!("cannot prune old failures (failure_limit): {error}");
        }
        Ok(kept.len())
    }

    /// Deletes successes (or failures) older than the newest `keep`.
    async fn prune(&self, success: bool, keep: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM q8s_tasks WHERE success = $1 AND seq <= \
             (SELECT seq FROM q8s_tasks WHERE success = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2)",
        )
        .bind(success)
        .bind(keep)
        .execute(self.db.pool())
        .await?;
        Ok(deleted.rows_affected())
    }

    /// The task with this id or name (the newest, if names collide).
    pub async fn fetch(&self, id_or_name: &str) -> Result<Option<TaskRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM q8s_tasks WHERE id = $1 OR name = $1 ORDER BY seq DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id_or_name)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// The tasks of a group, oldest first; failures too unless `failures` is false.
    pub async fn fetch_group(
        &self,
        group: &str,
        failures: bool,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let filter = if failures { "" } else { " AND success = $2" };
        let sql = format!(
            "SELECT {COLUMNS} FROM q8s_tasks WHERE task_group = $1{filter} ORDER BY started, seq"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(group);
        if !failures {
            query = query.bind(true);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        rows.iter().map(record_from_row).collect()
    }

    /// The results of a group, oldest first; failed results too when `failures` is true.
    pub async fn result_group(
        &self,
        group: &str,
        failures: bool,
    ) -> Result<Vec<Value>, StoreError> {
        Ok(self
            .fetch_group(group, failures)
            .await?
            .into_iter()
            .map(|record| record.result)
            .collect())
    }

    /// How many tasks a group has; how many of them failed when `failures` is true.
    pub async fn count_group(&self, group: &str, failures: bool) -> Result<u64, StoreError> {
        let row = if failures {
            sqlx::query("SELECT COUNT(*) FROM q8s_tasks WHERE task_group = $1 AND success = $2")
                .bind(group)
                .bind(false)
                .fetch_one(self.db.pool())
                .await?
        } else {
            sqlx::query("SELECT COUNT(*) FROM q8s_tasks WHERE task_group = $1")
                .bind(group)
                .fetch_one(self.db.pool())
                .await?
        };
        Ok(row.try_get::<i64, _>(0)? as u64)
    }

    /// Removes the group label from its tasks, or deletes the tasks when `tasks` is true;
    /// returns how many tasks were affected.
    pub async fn delete_group(&self, group: &str, tasks: bool) -> Result<u64, StoreError> {
        let sql = if tasks {
            "DELETE FROM q8s_tasks WHERE task_group = $1"
        } else {
            "UPDATE q8s_tasks SET task_group = NULL WHERE task_group = $1"
        };
        let done = sqlx::query(sql).bind(group).execute(self.db.pool()).await?;
        Ok(done.rows_affected())
    }

    /// The newest failures, up to `limit`.
    pub async fn failures(&self, limit: i64) -> Result<Vec<TaskRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM q8s_tasks WHERE success = $1 ORDER BY seq DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(false)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Deletes the task with this id; returns whether there was one.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM q8s_tasks WHERE id = $1")
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many successes and failures are stored.
    pub async fn counts(&self) -> Result<(u64, u64), StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN success THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN success THEN 0 ELSE 1 END), 0) FROM q8s_tasks",
        )
        .fetch_one(self.db.pool())
        .await?;
        Ok((
            row.try_get::<i64, _>(0)? as u64,
            row.try_get::<i64, _>(1)? as u64,
        ))
    }
}

/// What finished in a period: how many tasks, and their average run time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activity {
    /// Tasks that finished (successes and failures kept in the store).
    pub tasks: u64,
    /// Average seconds from start to stop, if any task finished.
    pub average_seconds: Option<f64>,
}

impl Store {
    /// Tasks that finished since `since` (microseconds since the epoch), for `q8s info`.
    pub async fn activity_since(&self, since: i64) -> Result<Activity, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(AVG(stopped - started) AS DOUBLE PRECISION) \
             FROM q8s_tasks WHERE stopped >= $1",
        )
        .bind(since)
        .fetch_one(self.db.pool())
        .await?;
        Ok(Activity {
            tasks: row.try_get::<i64, _>(0)? as u64,
            average_seconds: row.try_get::<Option<f64>, _>(1)?.map(|micros| micros / 1e6),
        })
    }
}

fn record_from_row(row: &AnyRow) -> Result<TaskRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |what: &str, error: serde_json::Error| StoreError::Corrupt {
        id: id.clone(),
        reason: format!("{what}: {error}"),
    };
    let args: Vec<Value> =
        serde_json::from_str(&row.try_get::<String, _>("args")?).map_err(|e| corrupt("args", e))?;
    let kwargs: Map<String, Value> = serde_json::from_str(&row.try_get::<String, _>("kwargs")?)
        .map_err(|e| corrupt("kwargs", e))?;
    let result: Value = serde_json::from_str(&row.try_get::<String, _>("result")?)
        .map_err(|e| corrupt("result", e))?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(TaskRecord {
        name: row.try_get("name")?,
        func: row.try_get("func")?,
        hook: row.try_get("hook")?,
        args,
        kwargs,
        result,
        error_kind: row
            .try_get::<Option<String>, _>("error_kind")?
            .map(|kind| ErrorKind::parse(&kind)),
        group: row.try_get("task_group")?,
        enqueued: from_micros(row.try_get("enqueued")?),
        started: from_micros(row.try_get("started")?),
        stopped: from_micros(row.try_get("stopped")?),
        success: row.try_get::<i64, _>("success_flag")? != 0,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        id,
    })
}
