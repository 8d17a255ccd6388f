//! The task queue: verified tasks held in memory, at most `queue_limit`, waiting for a driver.
//!
//! The pusher puts tasks in, drivers take them out, and the stop procedure
//! drains what is left; the `q8s_task_queue` gauge (Stat's TQ) is kept here
//! and nowhere else.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};

use super::{Held, Shared};

/// The receiving end of the task queue, shared by every driver.
#[derive(Debug)]
pub struct TaskQueue {
    shared: Arc<Shared>,
    receiver: Mutex<mpsc::Receiver<Held>>,
}

impl TaskQueue {
    /// A queue of at most `limit` tasks: the sender for the pusher, the queue for the drivers.
    pub fn new(shared: Arc<Shared>, limit: usize) -> (mpsc::Sender<Held>, Arc<TaskQueue>) {
        let (sender, receiver) = mpsc::channel(limit);
        let queue = TaskQueue {
            shared,
            receiver: Mutex::new(receiver),
        };
        (sender, Arc::new(queue))
    }

    /// Puts a task in the room `permit` reserved.
    pub fn put(&self, permit: mpsc::Permit<'_, Held>, held: Held) {
        self.gauge(1);
        permit.send(held);
    }

    /// The next task, once one is there; `None` when the queue is closed and empty.
    pub async fn take(&self) -> Option<Held> {
        let held = self.receiver.lock().await.recv().await;
        if held.is_some() {
            self.gauge(-1);
        }
        held
    }

    /// Closes the queue and takes every task still in it.
    pub async fn drain(&self) -> Vec<Held> {
        let mut receiver = self.receiver.lock().await;
        receiver.close();
        let mut left = Vec::new();
        while let Some(held) = receiver.recv().await {
            self.gauge(-1);
            left.push(held);
        }
        left
    }

    fn gauge(&self, change: i64) {
        self.shared.metrics.task_queue.inc_by(change);
    }
}
