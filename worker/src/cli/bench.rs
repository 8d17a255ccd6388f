//! `q8s bench`: the figures of the benchmark protocol (docs/benchmarks.md), as one JSON line.
//!
//! 1. Enqueue rate: N no-op tasks from this process, one call each, with no
//!    cluster running; then the batched form (one transaction per 1,000) on a
//!    queue of its own.
//! 2. Drain rate: with the N tasks waiting, the clock starts just before the
//!    cluster process starts and stops when the last result is saved (or, with
//!    saving off, the last package acknowledged).
//! 3. Latency (with `--rate`): a fresh idle cluster gets tasks open-loop at a
//!    fixed rate; latency is the task's finish minus its enqueue time.
//!
//! Peak RSS and PSS are summed over the cluster's processes, sampled every
//! 100 ms; per-process CPU seconds show what bounds the drain.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Exit, Failure, say};
use crate::client::{Client, ClientError};
use crate::cluster::worker::{proc_kib, rss_kib_of};
use crate::config::Config;
use crate::request::TaskRequest;

/// Cluster name the benchmark's tasks go to, so they never mix with real work.
const BENCH_QUEUE: &str = "q8s-bench";
/// Group of the drain run's tasks.
const DRAIN_GROUP: &str = "q8s-bench-drain";
/// Group of the latency run's tasks.
const LATENCY_GROUP: &str = "q8s-bench-latency";
/// Tasks per transaction in the batched enqueue.
const BATCH: usize = 1000;
/// Tasks in the batched enqueue measurement.
const BATCHED_TASKS: usize = 10_000;
/// How often completion and memory are checked.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Longest a drain or latency run may take before the benchmark gives up.
const RUN_LIMIT: Duration = Duration::from_secs(1800);

/// Options of `q8s bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Tasks to enqueue and drain.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Worker processes in the cluster.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Bytes of payload in each task's argument.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// Do not save successes (save_limit = -1).
    #[arg(long)]
    no_save: bool,
    /// Packages fetched from the broker per call.
    #[arg(long, default_value_t = 100)]
    bulk: usize,
    /// Packages the cluster holds in memory. The benchmark's default suits many short
    /// tasks; a cluster's own default is workers².
    #[arg(long, default_value_t = 200)]
    queue_limit: usize,
    /// Also measure latency: enqueue this many tasks per second, open-loop, into an idle cluster.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds the latency run lasts.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Skip the drain run (latency only).
    #[arg(long)]
    no_drain: bool,
}

#[derive(Debug, Default, Serialize)]
struct Memory {
    peak_rss_kib: u64,
    peak_pss_kib: u64,
}

#[derive(Debug, Serialize)]
struct Latency {
    rate: f64,
    tasks: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// The value at quantile `q` (0..=1) of sorted `values`, by the nearest-rank method.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(super) async fn bench(
    mut config: Config,
    config_args: Vec<String>,
    args: BenchArgs,
) -> Result<Exit, Failure> {
    if args.tasks == 0 || args.workers == 0 || args.bulk == 0 {
        return Err(Failure::new(
            Exit::Usage,
            "--tasks, --workers and --bulk must be 1 or more",
        ));
    }
    config.name = BENCH_QUEUE.into();
    config.save_limit = if args.no_save { -1 } else { 0 };
    let queue_limit = args.queue_limit.max(1);
    config.ensure_key_file()?;
    crate::store::Database::migrate_all(&config).await?;
    let client = Client::connect(config.clone()).await?;
    let payload = "x".repeat(args.payload);
    let broker = client.broker().clone();
    // SQS allows one purge a minute: purge only what needs it.
    if broker.queue_size().await.map_err(ClientError::from)?
        + broker.lock_size().await.map_err(ClientError::from)?
        > 0
    {
        broker.purge_queue().await.map_err(ClientError::from)?;
    }
    client.reader().delete_group(DRAIN_GROUP, true).await?;
    client.reader().delete_group(LATENCY_GROUP, true).await?;

    let cluster_flags = vec![
        format!("name={BENCH_QUEUE}"),
        format!("workers={}", args.workers),
        format!("bulk={}", args.bulk),
        format!("queue_limit={queue_limit}"),
        format!("save_limit={}", config.save_limit),
        "http_port=0".into(),
    ];
    let mut report = json!({
        "broker": crate::config::redact(&config.broker),
        "store": crate::config::redact(&config.store_url()),
        "tasks": args.tasks,
        "workers": args.workers,
        "payload_bytes": args.payload,
        "save": !args.no_save,
        "bulk": args.bulk,
        "queue_limit": queue_limit,
    });

    if !args.no_drain {
        let request = TaskRequest::new("q8s.noop")
            .arg(payload.clone())
            .group(DRAIN_GROUP);
        let started = Instant::now();
        for _ in 0..args.tasks {
            client.enqueue(request.clone()).await?;
        }
        let enqueue_seconds = started.elapsed().as_secs_f64();
        report["enqueue_rate"] = json!(args.tasks as f64 / enqueue_seconds);
        report["enqueue_batched_rate"] =
            json!(batched_enqueue_rate(&config, &payload, args.tasks).await?);

        let started = Instant::now();
        let mut cluster = start_cluster(&config_args, &cluster_flags)?;
        let mut memory = Memory::default();
        loop {
            sample_memory(cluster.id(), &mut memory);
            let done = if args.no_save {
                broker.queue_size().await.map_err(ClientError::from)?
                    + broker.lock_size().await.map_err(ClientError::from)?
                    == 0
            } else {
                client.reader().count_group(DRAIN_GROUP, false).await? >= args.tasks as u64
            };
            if done {
                break;
            }
            if started.elapsed() > RUN_LIMIT || cluster.try_wait().ok().flatten().is_some() {
                let _ = cluster.kill();
                return Err(Failure::new(
                    Exit::Failed,
                    "the cluster stopped or took too long; run it by hand to see its log",
                ));
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
        let drain_seconds = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(cluster.id());
        stop_cluster(cluster)?;
        report["drain_seconds"] = json!(drain_seconds);
        report["drain_rate"] = json!(args.tasks as f64 / drain_seconds);
        report["memory"] = json!(memory);
        report["cpu_seconds"] = cpu;
    }

    if let Some(rate) = args.rate {
        report["latency"] = json!(
            latency(
                &client,
                &config_args,
                &cluster_flags,
                rate,
                args.duration,
                &payload
            )
            .await?
        );
    }
    say(report)?;
    Ok(Exit::Ok)
}

/// Tasks per second enqueued in transactions of `BATCH`, on a queue of their own:
/// `BATCHED_TASKS`, or as many as the run has tasks if that is fewer.
async fn batched_enqueue_rate(
    config: &Config,
    payload: &str,
    tasks: usize,
) -> Result<f64, Failure> {
    let mut batch_config = config.clone();
    batch_config.name = format!("{BENCH_QUEUE}-batched");
    let client = Client::connect(batch_config).await?;
    let request = TaskRequest::new("q8s.noop").arg(payload.to_string());
    let batches = (BATCHED_TASKS.min(tasks) / BATCH).max(1);
    let started = Instant::now();
    for _ in 0..batches {
        client.enqueue_all(vec![request.clone(); BATCH]).await?;
    }
    let rate = (batches * BATCH) as f64 / started.elapsed().as_secs_f64();
    client
        .broker()
        .purge_queue()
        .await
        .map_err(ClientError::from)?;
    Ok(rate)
}

async fn latency(
    client: &Client,
    config_args: &[String],
    cluster_flags: &[String],
    rate: f64,
    duration: f64,
    payload: &str,
) -> Result<Latency, Failure> {
    if !(rate > 0.0 && duration > 0.0) {
        return Err(Failure::new(
            Exit::Usage,
            "--rate and --duration must be more than 0",
        ));
    }
    let mut cluster = start_cluster(config_args, cluster_flags)?;
    // Let the cluster finish starting: the run measures an idle cluster, not start-up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut request = TaskRequest::new("q8s.noop")
        .arg(payload.to_string())
        .group(LATENCY_GROUP);
    request.options.save = Some(true);
    let count = (rate * duration).round() as usize;
    let started = tokio::time::Instant::now();
    for n in 0..count {
        tokio::time::sleep_until(started + Duration::from_secs_f64(n as f64 / rate)).await;
        client.enqueue(request.clone()).await?;
    }
    let waiting = Instant::now();
    while client.reader().count_group(LATENCY_GROUP, false).await? < count as u64 {
        if waiting.elapsed() > RUN_LIMIT || cluster.try_wait().ok().flatten().is_some() {
            let _ = cluster.kill();
            return Err(Failure::new(Exit::Failed, "the latency run did not finish"));
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    stop_cluster(cluster)?;
    let mut latencies: Vec<f64> = client
        .reader()
        .fetch_group(LATENCY_GROUP, false)
        .await?
        .iter()
        .map(|record| {
            (record.stopped - record.enqueued)
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1000.0
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(Latency {
        rate,
        tasks: count,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
    })
}

fn start_cluster(config_args: &[String], flags: &[String]) -> Result<Child, Failure> {
    let program: PathBuf = std::env::current_exe()
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot find this program: {e}")))?;
    let mut command = Command::new(program);
    command.args(config_args);
    for flag in flags {
        command.arg("--set").arg(flag);
    }
    command
        .arg("cluster")
        .env("Q8S_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot start a cluster: {e}")))
}

fn stop_cluster(mut cluster: Child) -> Result<(), Failure> {
    let pid = nix::unistd::Pid::from_raw(cluster.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    cluster
        .wait()
        .map(|_| ())
        .map_err(|e| Failure::new(Exit::Failed, format!("waiting for the cluster: {e}")))
}

/// The cluster's processes: the sentinel and its children.
fn cluster_pids(sentinel: u32) -> Vec<u32> {
    let mut pids = vec![sentinel];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            if parent_of(pid) == Some(sentinel) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Fields of /proc/PID/stat after the command name (field 3 onwards).
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(") ")?.1;
    Some(after_name.split_whitespace().map(str::to_string).collect())
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(&pid.to_string())?.get(1)?.parse().ok()
}

fn sample_memory(sentinel: u32, memory: &mut Memory) {
    let pids = cluster_pids(sentinel);
    let rss: u64 = pids.iter().map(|pid| rss_kib_of(&pid.to_string())).sum();
    let pss: u64 = pids
        .iter()
        .map(|pid| proc_kib(&pid.to_string(), "smaps_rollup", "Pss:"))
        .sum();
    memory.peak_rss_kib = memory.peak_rss_kib.max(rss);
    memory.peak_pss_kib = memory.peak_pss_kib.max(pss);
}

/// The sum of two clock-tick fields of /proc/PID/stat (PID may be `self`), in seconds. Fields
/// count from 0 after the command name: utime and stime are 11 and 12, the
/// reaped children's cutime and cstime 13 and 14.
fn stat_seconds(pid: &str, fields: [usize; 2], ticks_per_second: f64) -> f64 {
    let Some(values) = stat_fields(pid) else {
        return 0.0;
    };
    let ticks = |index: usize| {
        values
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(fields[0]) + ticks(fields[1])) / ticks_per_second
}

/// utime and stime.
const OWN_CPU: [usize; 2] = [11, 12];
/// cutime and cstime: recycled workers, once reaped.
const CHILDREN_CPU: [usize; 2] = [13, 14];

/// CPU seconds of the sentinel, each worker, and this benchmark process.
fn cpu_seconds(sentinel: u32) -> Value {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let workers: Vec<f64> = cluster_pids(sentinel)
        .into_iter()
        .filter(|pid| *pid != sentinel)
        .map(|pid| stat_seconds(&pid.to_string(), OWN_CPU, ticks))
        .collect();
    let sentinel_stat = sentinel.to_string();
    json!({
        "sentinel": stat_seconds(&sentinel_stat, OWN_CPU, ticks),
        "workers": workers,
        "recycled_workers": stat_seconds(&sentinel_stat, CHILDREN_CPU, ticks),
        "bench_client": stat_seconds("self", OWN_CPU, ticks),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.50), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
