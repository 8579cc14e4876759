//! The throttle gate every user of a node passes before each iteration.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// This node's share of the cluster-wide throttles: a least interval between iteration starts
/// and a most-at-once limit. Every user passes it before each iteration.
pub struct Gate {
    interval: Option<Duration>,
    next: tokio::sync::Mutex<Instant>,
    permits: Option<Arc<tokio::sync::Semaphore>>,
}

impl Gate {
    /// The gate for a node's throttle terms.
    pub fn new(throttle: &liveload_proto::NodeThrottle) -> Gate {
        Gate {
            interval: throttle.min_interval_us.map(Duration::from_micros),
            next: tokio::sync::Mutex::new(Instant::now()),
            permits: throttle
                .max_concurrent
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1) as usize))),
        }
    }

    /// Wait for the right to start an iteration; keep the returned permit while it runs.
    pub async fn enter(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = match &self.permits {
            Some(permits) => Some(
                permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed"),
            ),
            None => None,
        };
        if let Some(interval) = self.interval {
            // Reserve the next start slot, then wait for it outside the lock.
            let at = {
                let mut next = self.next.lock().await;
                let at = (*next).max(Instant::now());
                *next = at + interval;
                at
            };
            tokio::time::sleep_until(at).await;
        }
        permit
    }
}
