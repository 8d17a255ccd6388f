//! Cluster commands: `cluster`, the internal `worker-process`, `info`, `stat`.

use chrono::Utc;
use serde::Serialize;

use super::{Exit, Failure, GlobalArgs, RegistryFactory, say};
use crate::cluster::{self, ClusterError, WorkerSpec};
use crate::config::{Config, Sources};
use crate::registry::Registry;
use crate::stat::{self, Stat};
use crate::store::{Database, Store};

impl From<ClusterError> for Failure {
    fn from(error: ClusterError) -> Failure {
        let exit = match &error {
            ClusterError::Config(_) | ClusterError::Package(_) | ClusterError::Report(_) => {
                Exit::Usage
            }
            ClusterError::Broker(error) if error.is_usage() => Exit::Usage,
            ClusterError::Database(error) if error.is_usage() => Exit::Usage,
            ClusterError::Database(_) | ClusterError::Broker(_) => Exit::Unavailable,
            ClusterError::Io(_) => Exit::Failed,
        };
        Failure::new(exit, error.to_string())
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(error: crate::store::StoreError) -> Failure {
        Failure::new(Exit::Unavailable, format!("store: {error}"))
    }
}

impl From<crate::stat::StatError> for Failure {
    fn from(error: crate::stat::StatError) -> Failure {
        Failure::new(Exit::Unavailable, error.to_string())
    }
}

impl From<crate::store::DatabaseError> for Failure {
    fn from(error: crate::store::DatabaseError) -> Failure {
        let exit = if error.is_usage() {
            Exit::Usage
        } else {
            Exit::Unavailable
        };
        Failure::new(exit, format!("store: {error}"))
    }
}

pub(super) async fn cluster(
    config: Config,
    registry: Registry,
    config_args: Vec<String>,
) -> Result<Exit, Failure> {
    let program = std::env::current_exe().map_err(|e| {
        Failure::new(
            Exit::Failed,
            format!("cannot find this program to start workers: {e}"),
        )
    })?;
    cluster::run(
        config,
        registry,
        WorkerSpec {
            program,
            config_args,
        },
    )
    .await?;
    Ok(Exit::Ok)
}

/// The worker side runs without an async runtime: one task at a time, blocking on its pipes.
pub(super) fn worker_process(
    global: GlobalArgs,
    slot: usize,
    cpus: Option<&[usize]>,
    registry: &RegistryFactory,
) -> Exit {
    let run = || -> Result<(), String> {
        let config = Config::load(&Sources::from_process(global.config, global.set))
            .map_err(|e| e.to_string())?;
        let registry = registry(&config).map_err(|e| e.to_string())?;
        cluster::run_worker_process(&registry, cpus).map_err(|e| e.to_string())
    };
    match run() {
        Ok(()) => Exit::Ok,
        Err(error) => {
            eprintln!("q8s worker {slot}: {error}");
            Exit::Failed
        }
    }
}

/// The seed's qinfo summary.
#[derive(Debug, Serialize)]
struct Summary {
    label: String,
    clusters: usize,
    workers: usize,
    restarts: u64,
    queued: u64,
    successes: u64,
    failures: u64,
    schedules: u64,
    tasks_per_hour: f64,
    rate: f64,
    rate_unit: &'static str,
    average_seconds: Option<f64>,
}

/// The task rate over 24 hours in the unit that suits its size, as the seed shows it.
fn rate(tasks_per_day: u64) -> (f64, &'static str) {
    let per_day = tasks_per_day as f64;
    if per_day >= 86_400.0 {
        (per_day / 86_400.0, "Tasks/second")
    } else if per_day >= 1_440.0 {
        (per_day / 1_440.0, "Tasks/minute")
    } else if per_day >= 24.0 {
        (per_day / 24.0, "Tasks/hour")
    } else {
        (per_day, "Tasks/day")
    }
}

pub(super) async fn info(config: Config, json: bool) -> Result<Exit, Failure> {
    let database = Database::connect(&config.store_url()).await?;
    let store = Store::new(database.clone(), config.save_limit, config.failure_limit);
    let opened = crate::broker::connect(&config, Some(&database))
        .await
        .map_err(|e| Failure::from(crate::client::ClientError::from(e)))?;
    let board = stat::board_of(&opened, &database);
    let stats = Stat::all(board.as_ref()).await?;
    let (successes, failures) = store.counts().await?;
    let day_ago = crate::clock::micros(Utc::now()) - 86_400 * 1_000_000;
    let activity = store.activity_since(day_ago).await?;
    let (rate, rate_unit) = rate(activity.tasks);
    let summary = Summary {
        label: config.label.clone(),
        clusters: stats.len(),
        workers: stats.iter().map(|s| s.workers.len()).sum(),
        restarts: stats.iter().map(|s| s.reincarnations).sum(),
        queued: opened
            .queue
            .queue_size()
            .await
            .map_err(|e| Failure::from(crate::client::ClientError::from(e)))?,
        successes,
        failures,
        schedules: crate::store::Schedules::new(database.clone())
            .count()
            .await?,
        tasks_per_hour: activity.tasks as f64 / 24.0,
        rate,
        rate_unit,
        average_seconds: activity.average_seconds,
    };
    if json {
        say(serde_json::to_string(&summary)
            .map_err(|e| Failure::new(Exit::Failed, e.to_string()))?)?;
        return Ok(Exit::Ok);
    }
    let average = summary
        .average_seconds
        .map_or("-".to_string(), |seconds| format!("{seconds:.4}"));
    say(format_args!("-- {} summary --", summary.label))?;
    say(format_args!(
        "Clusters   {:<8} Workers    {:<8} Restarts   {}",
        summary.clusters, summary.workers, summary.restarts
    ))?;
    say(format_args!(
        "Queued     {:<8} Successes  {:<8} Failures   {}",
        summary.queued, summary.successes, summary.failures
    ))?;
    say(format_args!(
        "Schedules  {:<8} {:<12} {:<6.2} Avg time   {average}",
        summary.schedules, summary.rate_unit, summary.rate
    ))?;
    Ok(Exit::Ok)
}

/// Hours, minutes and seconds, as the seed's monitor shows uptime.
pub(super) fn uptime(seconds: f64) -> String {
    let seconds = seconds.max(0.0) as u64;
    format!(
        "{}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

pub(super) async fn stat(config: Config, json: bool) -> Result<Exit, Failure> {
    let board = stat::board(&config, None).await?;
    let stats = Stat::all(board.as_ref()).await?;
    if json {
        say(serde_json::to_string(&stats).map_err(|e| Failure::new(Exit::Failed, e.to_string()))?)?;
        return Ok(Exit::Ok);
    }
    say(format_args!(
        "{:<20} {:<8} {:<9} {:>4} {:>6} {:>6} {:>4} {:>9}",
        "Host", "Id", "State", "Pool", "TQ", "RQ", "RC", "Up"
    ))?;
    for stat in &stats {
        say(format_args!(
            "{:<20} {:<8} {:<9} {:>4} {:>6} {:>6} {:>4} {:>9}",
            stat.host,
            stat.cluster_id,
            format!("{:?}", stat.state),
            stat.workers.len(),
            stat.task_queue,
            stat.result_queue,
            stat.reincarnations,
            uptime(stat.uptime())
        ))?;
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_picks_the_unit_that_suits_its_size() {
        assert_eq!(rate(172_800), (2.0, "Tasks/second"));
        assert_eq!(rate(2_880), (2.0, "Tasks/minute"));
        assert_eq!(rate(48), (2.0, "Tasks/hour"));
        assert_eq!(rate(3), (3.0, "Tasks/day"));
    }

    #[test]
    fn uptime_reads_like_the_seed_monitor() {
        assert_eq!(uptime(75.0), "0:01:15");
        assert_eq!(uptime(618.0), "0:10:18");
    }
}
