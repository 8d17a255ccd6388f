//! The cluster: the seed's `qcluster`.
//!
//! One sentinel process (`sentinel.rs`) runs the pusher, the monitor, the
//! hook runner, the receipt keeper (`receipts.rs`), Stat (`stat.rs`) and the
//! HTTP endpoints as tasks, and one driver (`driver.rs`) per worker process.
//! A task flows: broker → pusher (verifies the signature) → the task queue
//! (`task_queue.rs`, at most `queue_limit` packages) → a driver → its worker
//! process → the driver → the result queue → monitor (saves, acknowledges,
//! hands the hook to the hook runner).

pub mod affinity;
mod driver;
mod hooks;
mod http;
mod monitor;
mod oom;
mod pipe;
mod pusher;
mod receipts;
pub mod scheduler;
mod sentinel;
mod stat;
mod task_queue;
pub(crate) mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use crate::broker::{Broker, Leases, Receipt, ResultCache};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::package::Signer;
use crate::registry::Registry;
use crate::store::Store;
use crate::task::Task;

pub use sentinel::{ClusterError, run};
pub use worker::{WorkerSpec, run_worker_process};

/// Seconds between Stat publications.
pub const STAT_INTERVAL: Duration = Duration::from_secs(3);
/// How long a published Stat stays readable.
pub const STAT_TTL: Duration = Duration::from_secs(10);
/// Finished tasks saved per store transaction, at most.
pub const RESULT_BATCH: usize = 1000;

/// A verified task the cluster holds, with its delivery.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The broker's receipt.
    pub receipt: Receipt,
    /// Which delivery of the package this is.
    pub attempt: u32,
    /// The task.
    pub task: Task,
}

/// What the drivers and the stop procedure tell Stat about the cluster's progress.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Tasks running in workers now.
    pub running: AtomicUsize,
    /// True once every slot has had its first worker.
    pub started: AtomicBool,
    /// True once the stop procedure began.
    pub stopping: AtomicBool,
    /// Slots that have a live worker.
    pub ready: AtomicUsize,
}

/// What the sentinel's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The configuration.
    pub config: Config,
    /// The broker.
    pub broker: Arc<dyn Broker>,
    /// The broker's result cache, when it has one.
    pub cache: Option<Arc<dyn ResultCache>>,
    /// Where Stat is published: the broker's board, else the store's.
    pub board: Arc<dyn crate::stat::StatBoard>,
    /// The result store.
    pub store: Store,
    /// Verifies packages.
    pub signer: Signer,
    /// Functions for hooks.
    pub registry: Arc<Registry>,
    /// Counters and histograms.
    pub metrics: Metrics,
    /// Receipts held (queued or running) and the lease each needs while held.
    pub held: Mutex<HashMap<Receipt, Duration>>,
    /// Worker process ids by slot (0 while a slot has none).
    pub pids: Mutex<Vec<u32>>,
    /// The memory cgroup's OOM kills, where they can be read.
    pub oom: Option<oom::OomWatch>,
    /// Where failures and the cluster's errors are reported (Sentry), if anywhere.
    pub reporter: crate::report::Reporter,
}

impl Shared {
    /// Receipt lengths for this cluster.
    pub fn leases(&self) -> Leases {
        Leases::from_config(&self.config)
    }

    /// The name metrics count `func` under: itself when this cluster has it, else `unknown`.
    pub fn func_label<'a>(&self, func: &'a str) -> &'a str {
        if self.registry.contains(func) {
            func
        } else {
            "unknown"
        }
    }

    /// The time limit of `task`: its own, else the cluster's.
    pub fn timeout_of(&self, task: &Task) -> Option<Duration> {
        self.config.timeout_for(task).map(Duration::from_secs)
    }

    /// Starts keeping `receipt` alive while the task is held.
    pub fn hold(&self, receipt: &Receipt, task: &Task) {
        let lease = self.leases().lease(self.config.timeout_for(task));
        if let Ok(mut held) = self.held.lock() {
            held.insert(receipt.clone(), lease);
        }
    }

    /// Stops keeping `receipt` alive: acknowledged, released, or left to expire.
    pub fn let_go(&self, receipt: &Receipt) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(receipt);
        }
    }
}
