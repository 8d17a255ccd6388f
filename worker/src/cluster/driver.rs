//! The driver: one per worker slot, feeding its worker process one task at a time.
//!
//! A driver takes a task from the task queue, hands it to its worker over that
//! worker's own pipes, and waits for the answer up to the task's timeout. A
//! worker that hangs or dies only ever holds its own task, so it never stalls
//! the others; one that dies mid-task hands its task back to the broker at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};

use super::monitor::Finished;
use super::pipe::Job;
use super::task_queue::TaskQueue;
use super::worker::{WorkerProcess, WorkerSpec};
use super::{Held, Progress, Shared};
use crate::metrics::FuncLabel;
use crate::task::{ErrorKind, TaskError, TaskRecord};

/// Pause before starting a worker again when starting one failed.
const RESPAWN_PAUSE: Duration = Duration::from_secs(1);

/// One worker slot: its process and the loop that feeds it.
pub struct Driver {
    /// What the sentinel's tasks share.
    pub shared: Arc<Shared>,
    /// What Stat reads of the drivers.
    pub progress: Arc<Progress>,
    /// The slot, from 1.
    pub slot: usize,
    /// The CPUs this slot's worker is pinned to, if any.
    pub cpus: Option<Vec<usize>>,
    /// How to start a worker process.
    pub spec: WorkerSpec,
    /// Where tasks come from.
    pub queue: Arc<TaskQueue>,
    /// Where finished tasks go.
    pub results: mpsc::UnboundedSender<Finished>,
    /// Turns true when the drivers are to stop.
    pub stop: watch::Receiver<bool>,
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
                    self.shared.metrics.workers.inc();
                }
                (false, true) => {
                    self.progress.ready.fetch_sub(1, Ordering::SeqCst);
                    self.shared.metrics.workers.dec();
                }
                _ => {}
            }
        }
    }

    /// What killed a worker this slot did not stop: `status`, and the
    /// kernel's OOM killer when it killed in this cgroup since the last look.
    fn death(&self, status: String) -> String {
        let Some(limit) = self
            .shared
            .oom
            .as_ref()
            .and_then(|oom| oom.killed_since_last_look())
        else {
            return status;
        };
        self.shared.metrics.oom_kills.inc();
        let limit = limit.map_or_else(String::new, |bytes| format!(" of {} MiB", bytes >> 20));
        format!(
            "{status}: the kernel killed it for the container's memory limit{limit}; raise the limit, or set max_rss below it so workers are replaced first"
        )
    }

    fn reincarnation(&self) {
        self.set_pid(0);
        self.shared.metrics.reincarnations.inc();
    }

    /// Feeds this slot's worker until the stop or the queue's end; returns once its worker has exited.
    pub async fn run(mut self) {
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
            let held = tokio::select! {
                biased;
                _ = self.stop.changed() => break,
                status = current.exited() => {
                    let status = self.death(status.map_or_else(|e| e.to_string(), |s| s.to_string()));
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
                held = self.queue.take() => match held {
                    Some(held) => held,
                    None => break,
                },
            };
            self.progress.running.fetch_add(1, Ordering::SeqCst);
            self.shared.metrics.tasks_running.inc();
            let keep = self.work(current, held).await;
            self.shared.metrics.tasks_running.dec();
            self.progress.running.fetch_sub(1, Ordering::SeqCst);
            if !keep {
                if let Some(old) = worker.take() {
                    old.kill().await;
                }
                self.reincarnation();
            }
            let recycle = match worker.as_ref() {
                Some(current) => self.needs_recycling(current).await,
                None => None,
            };
            if let Some(current) = worker.as_ref()
                && let Some(reason) = recycle
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
    async fn needs_recycling(&self, worker: &WorkerProcess) -> Option<String> {
        let config = &self.shared.config;
        if worker.tasks_done >= config.recycle {
            return Some(format!("{} tasks (recycle)", worker.tasks_done));
        }
        // Reading /proc costs as much as a no-op task: only when there is a limit,
        // and off the runtime's thread.
        let limit = config.max_rss?;
        let pid = worker.pid.to_string();
        let rss = tokio::task::spawn_blocking(move || super::worker::rss_kib_of(&pid))
            .await
            .unwrap_or(0);
        (rss > limit).then(|| format!("using {rss} KiB, over max_rss {limit} KiB"))
    }

    /// Runs one task on `worker`; returns false when the worker must be replaced.
    async fn work(&self, worker: &mut WorkerProcess, held: Held) -> bool {
        let metrics = &self.shared.metrics;
        let func = FuncLabel {
            func: self.shared.func_label(&held.task.func).to_string(),
        };
        metrics.tasks_started.get_or_create(&func).inc();
        let waited = (Utc::now() - held.task.enqueued)
            .num_microseconds()
            .unwrap_or(0);
        metrics
            .task_wait
            .get_or_create(&func)
            .observe(waited as f64 / 1e6);
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
                metrics
                    .task_duration
                    .get_or_create(&func)
                    .observe(ran as f64 / 1e6);
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
                let lost = self.death(lost.to_string());
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
                // A task that kills its worker every time comes back at once:
                // this slot waits before its next worker, so such a task runs at
                // most once a second here until max_attempts gives up on it.
                tokio::time::sleep(RESPAWN_PAUSE).await;
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
        self.shared.metrics.result_queue.inc();
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
