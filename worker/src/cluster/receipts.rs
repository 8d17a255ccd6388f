//! The receipt keeper: extends the receipts of every task the cluster holds.
//!
//! A held task's receipt must not run out while it waits in the task queue or
//! runs, or the broker would hand it to another cluster. Every `retry`/3
//! seconds the keeper extends each held receipt by the lease it needs.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::broker::Receipt;

/// Shortest interval between receipt extensions.
const MIN_KEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Extends the receipts of every held task, often enough that none expires while held.
pub async fn keep_alive(shared: Arc<Shared>) {
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
