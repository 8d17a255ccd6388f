//! The hook runner: calls finished tasks' hooks beside the result path, never in it.
//!
//! Each hook runs in a task of its own under `hook_timeout`, at most
//! [`HOOKS_AT_ONCE`] at a time; the monitor hands a record over and goes on
//! saving and acknowledging. A hook that fails, panics or hangs is logged and
//! given up at its timeout: it cannot stall or crash the sentinel. At stop,
//! hooks still running get what is left of one `hook_timeout`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::hook;
use crate::registry::Registry;
use crate::task::TaskRecord;

/// Hooks running at once; more wait their turn without holding a thread.
pub const HOOKS_AT_ONCE: usize = 16;
/// Hooks waiting for a turn, at most; beyond it a hook is not called, and counted.
pub const HOOKS_WAITING: usize = 10_000;

/// Calls hooks in the background.
#[derive(Debug)]
pub struct HookRunner {
    registry: Arc<Registry>,
    timeout: Duration,
    turns: Arc<Semaphore>,
    running: JoinSet<()>,
    dropped: Counter,
}

impl HookRunner {
    /// A runner calling hooks from `registry`, each for at most `timeout`;
    /// hooks not called because too many wait are counted in `dropped`.
    pub fn new(registry: Arc<Registry>, timeout: Duration, dropped: Counter) -> HookRunner {
        HookRunner {
            registry,
            timeout,
            turns: Arc::new(Semaphore::new(HOOKS_AT_ONCE)),
            running: JoinSet::new(),
            dropped,
        }
    }

    /// Starts the hook of `record`, if it has one; returns at once.
    pub fn start(&mut self, record: &TaskRecord) {
        if record.hook.is_none() {
            return;
        }
        while self.running.try_join_next().is_some() {}
        if self.running.len() >= HOOKS_AT_ONCE + HOOKS_WAITING {
            // Hooks that hang for their whole timeout, faster than it runs out:
            // holding every record until then would grow without end.
            self.dropped.inc();
            tracing::error!(
                task = %record.id,
                "{} hooks are running or waiting; the hook of this task is not called \
                 (hooks hang for their whole hook_timeout: fix the hook, or lower hook_timeout)",
                self.running.len()
            );
            return;
        }
        let record = record.clone();
        let registry = Arc::clone(&self.registry);
        let turns = Arc::clone(&self.turns);
        let timeout = self.timeout;
        self.running.spawn(async move {
            let Ok(_turn) = turns.acquire_owned().await else {
                return;
            };
            hook::call_and_log(registry, record, timeout).await;
        });
    }

    /// Waits for the hooks still running, at most one `hook_timeout` in all.
    pub async fn finish(mut self) {
        let waited = tokio::time::timeout(self.timeout + hook::GIVE_UP_AFTER, async {
            while self.running.join_next().await.is_some() {}
        })
        .await;
        if waited.is_err() {
            tracing::error!(
                "{} hooks did not finish within hook_timeout ({:?}) of the stop; given up",
                self.running.len(),
                self.timeout
            );
            self.running.abort_all();
        }
    }
}
