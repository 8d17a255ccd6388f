//! The sentinel: starts and guards everything, and runs the stop procedure.
//!
//! Each worker slot has a driver task of its own that takes one task at a time
//! from the task queue, hands it to its worker process over that worker's own
//! pipes, and waits for the answer up to the task's timeout. A worker that
//! hangs or dies only ever holds its own task, so it never stalls the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Mutex as AsyncMutex, mpsc, watch};

use super::monitor::{self, Finished};
use super::pipe::Job;
use super::worker::{WorkerProcess, WorkerSpec};
use super::{Held, STAT_INTERVAL, STAT_TTL, Shared, affinity, http, pusher};
use crate::broker::{self, BrokerError, Receipt};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::package::PackageError;
use crate::registry::Registry;
use crate::stat::{self, SqlBoard, Stat, State};
use crate::store::{Database, DatabaseError, Store};
use crate::task::{ErrorKind, TaskError, TaskRecord};

/// Pause before starting a worker again when starting one failed.
const RESPAWN_PAUSE: Duration = Duration::from_secs(1);
/// Shortest interval between receipt extensions.
const MIN_KEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Why a cluster could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No usable secret key.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The store's database failed.
    #[error("store: {0}")]
    Database(#[from] DatabaseError),
    /// The broker failed.
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    /// A signal handler or the HTTP port could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// State the sentinel's own tasks read for Stat.
struct Progress {
    /// Tasks running in workers now.
    running: AtomicUsize,
    /// True once every slot has had its first worker.
    started: AtomicBool,
    /// True once the stop procedure began.
    stopping: AtomicBool,
    /// Slots that have a live worker.
    ready: AtomicUsize,
}

/// Runs a cluster until SIGTERM or SIGINT, then stops it as the seed does; returns when it has stopped.
pub async fn run(config: Config, registry: Registry, spec: WorkerSpec) -> Result<(), ClusterError> {
    let sentinel_pid = std::process::id();
    let cluster_id = sentinel_pid.to_string();
    let tob = Utc::now();
    tracing::info!("Q Cluster-{cluster_id} starting.");

    if let Some(path) = config.ensure_key_file()? {
        tracing::info!("signing with the key in {}", path.display());
    }
    let signer = config.signer()?;
    let database = Database::migrated(&config.store_url()).await?;
    let opened = broker::connect(&config, Some(&database)).await?;
    let board = opened
        .board
        .clone()
        .unwrap_or_else(|| Arc::new(SqlBoard(database.clone())));
    let store = Store::new(database.clone(), config.save_limit, config.failure_limit);
    let workers = config.workers;
    let queue_limit = config.queue_limit();
    let cpus = match config.cpu_affinity {
        Some(per_worker) => affinity::allowed_cpus()
            .map_err(|e| {
                ClusterError::Io(std::io::Error::other(format!(
                    "cannot read this process's CPUs: {e}"
                )))
            })
            .map(|cpus| affinity::assign(&cpus, workers, per_worker))?,
        None => None,
    };
    let http_address = format!("{}:{}", config.http_host, config.http_port);
    let listener = if config.http_port == 0 {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(&http_address)
                .await
                .map_err(|e| {
                    std::io::Error::other(format!(
                        "cannot listen on {http_address} (http_host, http_port): {e}"
                    ))
                })?,
        )
    };
    let shared = Arc::new(Shared {
        config,
        broker: opened.queue,
        cache: opened.cache,
        board,
        store,
        signer,
        registry: Arc::new(registry),
        metrics: Metrics::default(),
        held: Default::default(),
        pids: std::sync::Mutex::new(vec![0; workers]),
    });
    let progress = Arc::new(Progress {
        running: AtomicUsize::new(0),
        started: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        ready: AtomicUsize::new(0),
    });

    let (task_sender, task_receiver) = mpsc::channel::<Held>(queue_limit);
    let task_receiver = Arc::new(AsyncMutex::new(task_receiver));
    let (result_sender, result_receiver) = mpsc::unbounded_channel::<Finished>();
    let (stop_pushing, pusher_stop) = watch::channel(false);
    let stop_scheduling = pusher_stop.clone();
    let (stop_working, drivers_stop) = watch::channel(false);

    let mut drivers = Vec::with_capacity(workers);
    for slot in 1..=workers {
        let driver = Driver {
            shared: Arc::clone(&shared),
            progress: Arc::clone(&progress),
            slot,
            cpus: cpus.as_ref().map(|all| all[slot - 1].clone()),
            spec: spec.clone(),
            queue: Arc::clone(&task_receiver),
            results: result_sender.clone(),
            stop: drivers_stop.clone(),
        };
        drivers.push(tokio::spawn(driver.run()));
    }
    while progress.ready.load(Ordering::SeqCst) < workers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    progress.started.store(true, Ordering::SeqCst);

    let monitor = tokio::spawn(monitor::run(Arc::clone(&shared), result_receiver));
    tracing::info!("Process-1:{} monitoring at {sentinel_pid}", workers + 1);
    tracing::info!("Process-1 guarding cluster at {sentinel_pid}");
    let pusher = tokio::spawn(pusher::run(
        Arc::clone(&shared),
        task_sender,
        result_sender.clone(),
        pusher_stop,
    ));
    tracing::info!("Process-1:{} pushing tasks at {sentinel_pid}", workers + 2);
    let keeper = tokio::spawn(keep_receipts(Arc::clone(&shared)));
    let scheduler = shared.config.scheduler.then(|| {
        tokio::spawn(super::scheduler::run(
            Arc::clone(&shared),
            crate::store::Schedules::new(database.clone()),
            crate::clock::Clock::system(),
            stop_scheduling,
        ))
    });
    let stat_identity = StatIdentity {
        cluster_id: cluster_id.clone(),
        host: stat::host_name(),
        tob,
        sentinel: sentinel_pid,
    };
    let publisher = tokio::spawn(publish_stats(
        Arc::clone(&shared),
        Arc::clone(&progress),
        stat_identity.clone(),
    ));
    let server = listener.map(|listener| {
        tracing::info!("metrics, health and readiness on http://{http_address}");
        tokio::spawn(http::serve(listener, Arc::clone(&shared), workers))
    });
    tracing::info!("Q Cluster-{cluster_id} running.");

    wait_for_stop_signal().await?;
    tokio::spawn(async {
        if wait_for_stop_signal().await.is_ok() {
            tracing::error!(
                "second stop signal: exiting now; tasks held in memory return after their receipts expire"
            );
            std::process::exit(1);
        }
    });

    // The stop procedure.
    tracing::info!("Q Cluster-{cluster_id} stopping.");
    progress.stopping.store(true, Ordering::SeqCst);
    publish(&shared, &progress, &stat_identity).await;
    tracing::info!("Process-1 stopping cluster processes");
    let _ = stop_pushing.send(true);
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    let _ = pusher.await;
    tracing::info!("Process-1:{} stopped pushing tasks", workers + 2);
    let _ = stop_working.send(true);
    release_held(&shared, &task_receiver).await;
    for driver in drivers {
        let _ = driver.await;
    }
    drop(result_sender);
    let _ = monitor.await;
    tracing::info!("Process-1:{} stopped monitoring results", workers + 1);
    keeper.abort();
    publisher.abort();
    if let Some(server) = server {
        server.abort();
    }
    let stopped = stat_of(&shared, &progress, &stat_identity, State::Stopped);
    if let Err(error) = stopped.publish(shared.board.as_ref(), STAT_TTL).await {
        tracing::warn!("cannot publish the final Stat: {error}");
    }
    tracing::info!("Q Cluster-{cluster_id} has stopped.");
    Ok(())
}

async fn wait_for_stop_signal() -> Result<(), ClusterError> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// Hands every package held but not started back to the broker at once.
async fn release_held(shared: &Shared, queue: &AsyncMutex<mpsc::Receiver<Held>>) {
    let mut queue = queue.lock().await;
    queue.close();
    let mut released = 0;
    while let Some(held) = queue.recv().await {
        shared.metrics.task_queue.fetch_sub(1, Ordering::Relaxed);
        shared.let_go(&held.receipt);
        if let Err(error) = shared.broker.release(&held.receipt).await {
            tracing::error!(task = %held.task.id, "cannot hand a package back; it returns when its receipt expires: {error}");
        }
        released += 1;
    }
    if released > 0 {
        tracing::info!("handed {released} packages that had not started back to the broker");
    }
}

/// One worker slot: its process and the loop that feeds it.
struct Driver {
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    slot: usize,
    cpus: Option<Vec<usize>>,
    spec: WorkerSpec,
    queue: Arc<AsyncMutex<mpsc::Receiver<Held>>>,
    results: mpsc::UnboundedSender<Finished>,
    stop: watch::Receiver<bool>,
}

impl Driver {
    fn start_worker(&self) -> Option<WorkerProcess> {
        match WorkerProcess::spawn(&self.spec, self.slot, self.cpus.as_deref()) {
            Ok(worker) => {
                tracing::info!("Process-1:{} ready for work at {}", self.slot, worker.pid);
                if let Some(cpus) = &self.cpus {
                    tracing::info!("{} will use cpu {cpus:?}", worker.pid);
                }
                self.set_pid(worker.pid);
                Some(worker)
            }
            Err(error) => {
                tracing::error!(
                    "Process-1:{} cannot start a worker process: {error}",
                    self.slot
                );
                None
            }
        }
    }

    fn set_pid(&self, pid: u32) {
        if let Ok(mut pids) = self.shared.pids.lock() {
            let before = pids[self.slot - 1];
            pids[self.slot - 1] = pid;
            match (before == 0, pid == 0) {
                (true, false) => {
                    self.progress.ready.fetch_add(1, Ordering::SeqCst);
                    self.shared.metrics.workers.fetch_add(1, Ordering::Relaxed);
                }
                (false, true) => {
                    self.progress.ready.fetch_sub(1, Ordering::SeqCst);
                    self.shared.metrics.workers.fetch_sub(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }

    fn reincarnation(&self) {
        self.set_pid(0);
        self.shared
            .metrics
            .reincarnations
            .fetch_add(1, Ordering::Relaxed);
    }

    async fn run(mut self) {
        let mut worker: Option<WorkerProcess> = None;
        loop {
            if *self.stop.borrow() {
                break;
            }
            let Some(current) = worker.as_mut() else {
                worker = self.start_worker();
                if worker.is_none() {
                    tokio::time::sleep(RESPAWN_PAUSE).await;
                }
                continue;
            };
            let queue = Arc::clone(&self.queue);
            let held = tokio::select! {
                biased;
                _ = self.stop.changed() => break,
                status = current.exited() => {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    tracing::error!("Process-1:{} {} died while idle ({status}); reincarnating", self.slot, current.pid);
                    let young = current.started.elapsed() < RESPAWN_PAUSE;
                    if let Some(dead) = worker.take() {
                        dead.kill().await;
                    }
                    self.reincarnation();
                    if young {
                        // A worker that cannot even start must not be restarted in a tight loop.
                        tokio::time::sleep(RESPAWN_PAUSE).await;
                    }
                    continue;
                }
                held = async move { queue.lock().await.recv().await } => match held {
                    Some(held) => held,
                    None => break,
                },
            };
            self.shared
                .metrics
                .task_queue
                .fetch_sub(1, Ordering::Relaxed);
            self.progress.running.fetch_add(1, Ordering::SeqCst);
            let keep = self.work(current, held).await;
            self.progress.running.fetch_sub(1, Ordering::SeqCst);
            if !keep {
                if let Some(old) = worker.take() {
                    old.kill().await;
                }
                self.reincarnation();
            }
            if let Some(current) = worker.as_ref()
                && let Some(reason) = self.needs_recycling(current)
            {
                tracing::info!(
                    "Process-1:{} {} recycled after {reason}",
                    self.slot,
                    current.pid
                );
                if let Some(old) = worker.take() {
                    old.retire().await;
                }
                self.reincarnation();
            }
        }
        if let Some(worker) = worker {
            worker.retire().await;
        }
        self.set_pid(0);
        tracing::info!("Process-1:{} stopped doing work", self.slot);
    }

    /// Why the worker should be replaced after its last task, if it should.
    fn needs_recycling(&self, worker: &WorkerProcess) -> Option<String> {
        let config = &self.shared.config;
        if worker.tasks_done >= config.recycle {
            return Some(format!("{} tasks (recycle)", worker.tasks_done));
        }
        // Reading /proc costs as much as a no-op task: only when there is a limit.
        let limit = config.max_rss?;
        let rss = super::worker::rss_kib_of(&worker.pid.to_string());
        (rss > limit).then(|| format!("using {rss} KiB, over max_rss {limit} KiB"))
    }

    /// Runs one task on `worker`; returns false when the worker must be replaced.
    async fn work(&self, worker: &mut WorkerProcess, held: Held) -> bool {
        let metrics = &self.shared.metrics;
        metrics.tasks_started.fetch_add(1, Ordering::Relaxed);
        let waited = (Utc::now() - held.task.enqueued)
            .num_microseconds()
            .unwrap_or(0);
        metrics.task_wait.observe(waited as f64 / 1e6);
        let limit = self.shared.timeout_of(&held.task);
        let job = Job {
            task: held.task.clone(),
            timeout_ms: limit.map(|l| l.as_millis() as u64),
        };
        let started = Utc::now();
        let answer = match limit {
            Some(limit) => tokio::time::timeout(limit, worker.run(&job)).await,
            None => Ok(worker.run(&job).await),
        };
        match answer {
            Ok(Ok(done)) => {
                let ran = (done.stopped - done.started)
                    .num_microseconds()
                    .unwrap_or(0);
                metrics.task_duration.observe(ran as f64 / 1e6);
                let record = TaskRecord::finished(
                    &held.task,
                    done.outcome,
                    done.started,
                    done.stopped,
                    held.attempt,
                );
                self.finish(record, &held);
                true
            }
            Ok(Err(lost)) => {
                self.shared.let_go(&held.receipt);
                match self.shared.broker.requeue(&held.receipt).await {
                    Ok(()) => tracing::error!(
                        task = %held.task.id,
                        "Process-1:{} died running {} ({lost}); the task goes back to the broker now, attempt {} counted",
                        self.slot,
                        held.task.func,
                        held.attempt
                    ),
                    Err(error) => tracing::error!(
                        task = %held.task.id,
                        "Process-1:{} died running {} ({lost}); it cannot go back to the broker now ({error}), so it returns when its receipt expires",
                        self.slot,
                        held.task.func
                    ),
                }
                false
            }
            Err(_) => {
                let limit = limit.unwrap_or_default();
                tracing::warn!(
                    task = %held.task.id,
                    "Process-1:{} timed out running {} after {limit:?}; killing {}",
                    self.slot,
                    held.task.func,
                    worker.pid
                );
                let error = TaskError::new(
                    ErrorKind::Timeout,
                    format!("task exceeded its timeout of {limit:?}"),
                );
                let record =
                    TaskRecord::finished(&held.task, Err(error), started, Utc::now(), held.attempt);
                self.finish(record, &held);
                false
            }
        }
    }

    fn finish(&self, record: TaskRecord, held: &Held) {
        self.shared
            .metrics
            .result_queue
            .fetch_add(1, Ordering::Relaxed);
        let finished = Finished {
            stored: crate::store::Finished {
                record,
                save: held.task.save,
            },
            ack_failure: held.task.ack_failure,
            receipt: held.receipt.clone(),
            cached: held.task.cached,
        };
        if self.results.send(finished).is_err() {
            // Stop extending its receipt, so it really is delivered again.
            self.shared.let_go(&held.receipt);
            tracing::error!(task = %held.task.id, "the monitor is gone; the task will be delivered again");
        }
    }
}

/// Extends the receipts of every held task, often enough that none expires while held.
async fn keep_receipts(shared: Arc<Shared>) {
    let interval = Duration::from_secs(shared.config.retry)
        .div_f64(3.0)
        .max(MIN_KEEP_INTERVAL);
    loop {
        tokio::time::sleep(interval).await;
        let mut by_lease: std::collections::BTreeMap<Duration, Vec<Receipt>> = Default::default();
        if let Ok(held) = shared.held.lock() {
            for (receipt, lease) in held.iter() {
                by_lease.entry(*lease).or_default().push(receipt.clone());
            }
        }
        for (lease, receipts) in by_lease {
            if let Err(error) = shared.broker.extend(&receipts, lease).await {
                tracing::error!("cannot extend {} receipts: {error}", receipts.len());
            }
        }
    }
}

#[derive(Debug, Clone)]
struct StatIdentity {
    cluster_id: String,
    host: String,
    tob: chrono::DateTime<Utc>,
    sentinel: u32,
}

fn stat_of(shared: &Shared, progress: &Progress, identity: &StatIdentity, state: State) -> Stat {
    let metrics = &shared.metrics;
    Stat {
        cluster_id: identity.cluster_id.clone(),
        host: identity.host.clone(),
        name: shared.config.name.clone(),
        state,
        workers: shared
            .pids
            .lock()
            .map(|pids| pids.iter().copied().filter(|pid| *pid != 0).collect())
            .unwrap_or_default(),
        task_queue: metrics.task_queue.load(Ordering::Relaxed),
        result_queue: metrics.result_queue.load(Ordering::Relaxed),
        reincarnations: metrics.reincarnations.load(Ordering::Relaxed),
        tob: identity.tob,
        timestamp: Utc::now(),
        sentinel: identity.sentinel,
        pusher: identity.sentinel,
        monitor: identity.sentinel,
        queue_limit: shared.config.queue_limit() as u64,
    }
    .with_progress(progress)
}

impl Stat {
    fn with_progress(mut self, progress: &Progress) -> Stat {
        if self.state == State::Stopped {
            return self;
        }
        self.state = if progress.stopping.load(Ordering::SeqCst) {
            State::Stopping
        } else if !progress.started.load(Ordering::SeqCst) {
            State::Starting
        } else if progress.running.load(Ordering::SeqCst) > 0 || self.task_queue > 0 {
            State::Working
        } else {
            State::Idle
        };
        self
    }
}

async fn publish(shared: &Shared, progress: &Progress, identity: &StatIdentity) {
    let stat = stat_of(shared, progress, identity, State::Idle);
    if let Err(error) = stat.publish(shared.board.as_ref(), STAT_TTL).await {
        tracing::warn!("cannot publish Stat: {error}");
    }
}

async fn publish_stats(shared: Arc<Shared>, progress: Arc<Progress>, identity: StatIdentity) {
    loop {
        publish(&shared, &progress, &identity).await;
        if let Ok(size) = shared.broker.queue_size().await {
            shared.metrics.broker_queue.store(size, Ordering::Relaxed);
        }
        tokio::time::sleep(STAT_INTERVAL).await;
    }
}
