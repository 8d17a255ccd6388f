//! Schedules in the store: create, read, pause, delete, and claim a due run.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Database, StoreError};
use crate::clock::{from_micros, micros};
use crate::options::TaskOptions;
use crate::schedule::{Due, Kind, Schedule};

const COLUMNS: &str = "id, name, func, hook, args, kwargs, schedule_type, minutes, cron, tz, repeats, \
     anchor, next_run, last_run, task, q_options, CASE WHEN paused THEN 1 ELSE 0 END AS paused_flag";

/// A schedule with the outcome of its last task, for listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScheduleStatus {
    /// The schedule.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// Whether its last task succeeded; `None` if it has not finished or was not saved.
    pub success: Option<bool>,
}

/// Schedules in a database.
#[derive(Debug, Clone)]
pub struct Schedules {
    db: Database,
}

impl Schedules {
    /// Schedules in `db`.
    pub fn new(db: Database) -> Schedules {
        Schedules { db }
    }

    /// Saves a new schedule (its `id` is ignored); returns its id.
    pub async fn create(&self, schedule: &Schedule) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO q8s_schedules (name, func, hook, args, kwargs, schedule_type, minutes, cron, tz, \
             repeats, anchor, next_run, last_run, task, q_options, paused) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, NULL, $13, $14) RETURNING id",
        )
        .bind(schedule.name.clone())
        .bind(schedule.func.clone())
        .bind(schedule.hook.clone())
        .bind(Value::Array(schedule.args.clone()).to_string())
        .bind(Value::Object(schedule.kwargs.clone()).to_string())
        .bind(schedule.kind.letter())
        .bind(schedule.kind.minutes().map(i64::from))
        .bind(schedule.kind.cron().map(str::to_string))
        .bind(schedule.tz.clone())
        .bind(schedule.repeats)
        .bind(micros(schedule.anchor))
        .bind(micros(schedule.next_run))
        .bind(Value::Object(schedule.options.to_q_options()).to_string())
        .bind(schedule.paused)
        .fetch_one(self.db.pool())
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Every schedule, with its last task's success, by id.
    pub async fn list(&self) -> Result<Vec<ScheduleStatus>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS}, (SELECT CASE WHEN t.success THEN 1 ELSE 0 END FROM q8s_tasks t \
             WHERE t.id = q8s_schedules.task) AS last_success FROM q8s_schedules ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ScheduleStatus {
                    schedule: schedule_from_row(row)?,
                    success: row
                        .try_get::<Option<i64>, _>("last_success")?
                        .map(|s| s != 0),
                })
            })
            .collect()
    }

    /// The schedule with this id or name.
    pub async fn get(&self, id_or_name: &str) -> Result<Option<Schedule>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM q8s_schedules WHERE name = $1 OR CAST(id AS TEXT) = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id_or_name)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    /// How many schedules exist.
    pub async fn count(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM q8s_schedules")
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get::<i64, _>(0)? as u64)
    }

    /// Deletes a schedule; returns whether there was one.
    pub async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM q8s_schedules WHERE id = $1")
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Pauses or resumes a schedule; returns whether there was one.
    pub async fn set_paused(&self, id: i64, paused: bool) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE q8s_schedules SET paused = $1 WHERE id = $2")
            .bind(paused)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Schedules due at `now`: not paused, runs left, oldest first.
    pub async fn due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Schedule>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM q8s_schedules WHERE next_run <= $1 AND repeats <> 0 \
             AND paused = $2 ORDER BY next_run LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(micros(now))
            .bind(false)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        // A row that does not read back (say, q_options edited by hand) is
        // paused, unclaimed, so it neither runs nor keeps the others waiting.
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            match schedule_from_row(row) {
                Ok(schedule) => due.push(schedule),
                Err(error) => {
                    tracing::error!(
                        "a due schedule cannot run and is paused; fix it and resume it: {error}"
                    );
                    let id: i64 = row.try_get("id")?;
                    self.set_paused(id, true).await?;
                }
            }
        }
        Ok(due)
    }

    /// Takes a due run for this process: moves `next_run` and `repeats` on (or
    /// deletes the schedule) only if nobody else did since `schedule` was read.
    /// Returns false when another cluster got there first.
    pub async fn claim(&self, schedule: &Schedule, due: &Due) -> Result<bool, StoreError> {
        let done = if due.delete {
            sqlx::query(
                "DELETE FROM q8s_schedules WHERE id = $1 AND next_run = $2 AND repeats = $3",
            )
            .bind(schedule.id)
            .bind(micros(schedule.next_run))
            .bind(schedule.repeats)
            .execute(self.db.pool())
            .await?
        } else {
            sqlx::query(
                "UPDATE q8s_schedules SET next_run = $1, repeats = $2, last_run = $3 \
                 WHERE id = $4 AND next_run = $5 AND repeats = $6",
            )
            .bind(micros(due.next_run))
            .bind(due.repeats)
            .bind(due.runs.last().map(|run| micros(*run)))
            .bind(schedule.id)
            .bind(micros(schedule.next_run))
            .bind(schedule.repeats)
            .execute(self.db.pool())
            .await?
        };
        Ok(done.rows_affected() == 1)
    }

    /// Gives a claimed run back after its task could not be enqueued.
    pub async fn unclaim(&self, schedule: &Schedule, due: &Due) -> Result<(), StoreError> {
        if due.delete {
            self.create(schedule).await?;
            return Ok(());
        }
        sqlx::query(
            "UPDATE q8s_schedules SET next_run = $1, repeats = $2, last_run = $3 \
             WHERE id = $4 AND next_run = $5",
        )
        .bind(micros(schedule.next_run))
        .bind(schedule.repeats)
        .bind(schedule.last_run.map(micros))
        .bind(schedule.id)
        .bind(micros(due.next_run))
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Records the id of the last task a schedule created.
    pub async fn set_task(&self, id: i64, task: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE q8s_schedules SET task = $1 WHERE id = $2")
            .bind(task)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}

fn schedule_from_row(row: &AnyRow) -> Result<Schedule, StoreError> {
    let id: i64 = row.try_get("id")?;
    let corrupt = |what: &str, reason: String| StoreError::Corrupt {
        id: format!("schedule {id}"),
        reason: format!("{what}: {reason}"),
    };
    let json = |column: &str| -> Result<Value, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text).map_err(|e| corrupt(column, e.to_string()))
    };
    let object = |value: Value, column: &str| match value {
        Value::Object(map) => Ok(map),
        other => Err(corrupt(column, format!("not an object: {other}"))),
    };
    let args = match json("args")? {
        Value::Array(items) => items,
        other => return Err(corrupt("args", format!("not an array: {other}"))),
    };
    let schedule_type: String = row.try_get("schedule_type")?;
    let minutes = row
        .try_get::<Option<i64>, _>("minutes")?
        .and_then(|m| u32::try_from(m).ok());
    let cron: Option<String> = row.try_get("cron")?;
    let kind = Kind::from_parts(&schedule_type, minutes, cron.as_deref())
        .map_err(|e| corrupt("schedule_type", e.to_string()))?;
    let options = TaskOptions::from_q_options(&object(json("q_options")?, "q_options")?)
        .map_err(|e| corrupt("q_options", e.to_string()))?;
    Ok(Schedule {
        id,
        name: row.try_get("name")?,
        func: row.try_get("func")?,
        hook: row.try_get("hook")?,
        args,
        kwargs: object(json("kwargs")?, "kwargs")?,
        kind,
        tz: row.try_get("tz")?,
        repeats: row.try_get("repeats")?,
        anchor: from_micros(row.try_get("anchor")?),
        next_run: from_micros(row.try_get("next_run")?),
        last_run: row.try_get::<Option<i64>, _>("last_run")?.map(from_micros),
        task: row.try_get("task")?,
        options,
        paused: row.try_get::<i64, _>("paused_flag")? != 0,
    })
}
