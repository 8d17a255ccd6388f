//! The sentinel: starts and guards everything, and runs the stop procedure.
//!
//! It opens the store and the broker, starts one driver per worker slot
//! (`driver.rs`), the pusher, the monitor, the receipt keeper, Stat and the
//! HTTP endpoints, then waits for SIGTERM or SIGINT and stops them in the
//! seed's order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::driver::Driver;
use super::monitor::{self, Finished};
use super::stat::{self, StatIdentity};
use super::task_queue::TaskQueue;
use super::worker::WorkerSpec;
use super::{Progress, STAT_TTL, Shared, affinity, http, pusher, receipts};
use crate::broker::{self, BrokerError};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::package::{PackageError, Signer};
use crate::producer::Producer;
use crate::registry::Registry;
use crate::stat::State;
use crate::store::{Database, DatabaseError, Store};

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
    /// The error reporter's settings cannot be used.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
}

/// Runs a cluster until SIGTERM or SIGINT, then stops it as the seed does; returns when it has stopped.
pub async fn run(config: Config, registry: Registry, spec: WorkerSpec) -> Result<(), ClusterError> {
    let sentinel_pid = std::process::id();
    let cluster_id = sentinel_pid.to_string();
    let tob = Utc::now();
    tracing::info!("Q Cluster-{cluster_id} starting.");

    // Key files and this process's CPUs are read off the runtime's thread.
    let (config, signer, cpus) = tokio::task::spawn_blocking(move || read_setup(config))
        .await
        .map_err(|e| std::io::Error::other(format!("cluster setup: {e}")))??;
    // A bad DSN stops the cluster before it touches the store.
    let reporter = crate::report::Reporter::start(&config)?;
    let database = Database::migrate_all(&config).await?;
    let opened = broker::connect(&config, Some(&database)).await?;
    let board = crate::stat::board_of(&opened, &database);
    let store = Store::new(database.clone(), config.save_limit, config.failure_limit);
    let workers = config.workers;
    let queue_limit = config.queue_limit();
    // validate() checked that http_host is an IP address; IPv6 needs its brackets.
    let http_address = match config.http_host.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, config.http_port).to_string(),
        Err(_) => format!("{}:{}", config.http_host, config.http_port),
    };
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
    let metrics = Metrics::new(&config.name);
    // The scheduler's runs go the way every enqueue goes.
    let producer = Producer::from_parts(Arc::new(config.clone()), signer.clone(), &opened);
    let shared = Arc::new(Shared {
        config,
        broker: opened.queue,
        cache: opened.cache,
        board,
        store,
        signer,
        registry: Arc::new(registry),
        metrics,
        held: Default::default(),
        pids: std::sync::Mutex::new(vec![0; workers]),
        oom: super::oom::OomWatch::find(),
        reporter,
    });
    let progress = Arc::new(Progress::default());

    let (task_sender, task_queue) = TaskQueue::new(Arc::clone(&shared), queue_limit);
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
            queue: Arc::clone(&task_queue),
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
        Arc::clone(&task_queue),
        result_sender.clone(),
        pusher_stop,
    ));
    tracing::info!("Process-1:{} pushing tasks at {sentinel_pid}", workers + 2);
    let keeper = tokio::spawn(receipts::keep_alive(Arc::clone(&shared)));
    let scheduler = shared.config.scheduler.then(|| {
        tokio::spawn(super::scheduler::run(
            producer,
            crate::store::Schedules::new(database.clone()),
            crate::clock::Clock::system(),
            stop_scheduling,
        ))
    });
    let stat_identity = StatIdentity {
        cluster_id: cluster_id.clone(),
        host: crate::stat::host_name(),
        tob,
        sentinel: sentinel_pid,
        node: std::env::var(crate::stat::NODE_VAR)
            .ok()
            .filter(|node| !node.is_empty()),
    };
    let publisher = tokio::spawn(stat::publish_every_interval(
        Arc::clone(&shared),
        Arc::clone(&progress),
        stat_identity.clone(),
    ));
    let server = listener.map(|listener| {
        tracing::info!("metrics, health and readiness on http://{http_address}");
        tokio::spawn(http::serve(listener, Arc::clone(&shared)))
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
    stat::publish(&shared, &progress, &stat_identity).await;
    tracing::info!("Process-1 stopping cluster processes");
    let _ = stop_pushing.send(true);
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    let _ = pusher.await;
    tracing::info!("Process-1:{} stopped pushing tasks", workers + 2);
    let _ = stop_working.send(true);
    release_held(&shared, &task_queue).await;
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
    let stopped = stat::stat_of(&shared, &progress, &stat_identity, State::Stopped);
    if let Err(error) = stopped.publish(shared.board.as_ref(), STAT_TTL).await {
        tracing::warn!("cannot publish the final Stat: {error}");
    }
    tracing::info!("Q Cluster-{cluster_id} has stopped.");
    Ok(())
}

/// The CPUs of each worker slot, when `cpu_affinity` pins them.
type SlotCpus = Option<Vec<Vec<usize>>>;

/// The configuration with its key file made sure of, the signer, and each worker's CPUs.
fn read_setup(config: Config) -> Result<(Config, Signer, SlotCpus), ClusterError> {
    if let Some(path) = config.ensure_key_file()? {
        tracing::info!("signing with the key in {}", path.display());
    }
    let signer = config.signer()?;
    let cpus = match config.cpu_affinity {
        Some(per_worker) => affinity::allowed_cpus()
            .map_err(|e| {
                ClusterError::Io(std::io::Error::other(format!(
                    "cannot read this process's CPUs: {e}"
                )))
            })
            .map(|cpus| affinity::assign(&cpus, config.workers, per_worker))?,
        None => None,
    };
    Ok((config, signer, cpus))
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
async fn release_held(shared: &Shared, queue: &TaskQueue) {
    let mut released = 0;
    for held in queue.drain().await {
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
