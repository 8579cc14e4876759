//! Shared client-side limits for backends: a rate limiter and retries with backoff.
//!
//! Every provider has documented API rate limits; the backend calls [`RateLimiter::acquire`]
//! before each request so it never exceeds them, and wraps requests in [`retry`] so throttling
//! and transient failures are retried with exponential backoff and jitter — honouring the
//! server's `Retry-After` when it gives one. Parallelism is otherwise unbounded: the limits, not
//! a small fixed pool, decide how fast calls go out.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::Error;

/// A rate limiter in the GCRA style: `per_second` sustained, bursts of up to `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// The theoretical arrival time of the next request.
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `per_second` requests a second on average, `burst` at once after a quiet spell.
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs_f64(1.0 / per_second.max(1e-9)),
            burst: burst.max(1),
            next: Mutex::new(None),
        }
    }

    /// Wait until a request may go out, and count it.
    pub async fn acquire(&self) {
        let wait_until = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let tat = next.unwrap_or(now).max(now);
            // A request may go `burst - 1` intervals ahead of the theoretical arrival time.
            let allowance = self.interval * (self.burst - 1);
            let start = tat.checked_sub(allowance).unwrap_or(now).max(now);
            *next = Some(tat + self.interval);
            start
        };
        tokio::time::sleep_until(wait_until).await;
    }
}

/// The one retry policy for provider calls: exponential backoff from 200 ms to 10 s with
/// jitter, `max_attempts` tries in all. Whether to try again is the error's own answer
/// ([`Error::is_retryable`], set by the backend from the provider's status or error code,
/// never from message text); the server's `Retry-After` replaces the planned delay.
pub async fn retry<T, F, Fut>(max_attempts: usize, op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .with_max_times(max_attempts.saturating_sub(1));
    op.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(Error::is_retryable)
        .adjust(|e: &Error, planned| {
            e.as_backend()
                .and_then(|b| b.retry_after)
                .or(planned)
        })
        .notify(|e: &Error, after| tracing::debug!(error = %e, ?after, "provider call failed; retrying"))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendError, BackendErrorKind};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn limiter_allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(1.0, 3);
        let started = Instant::now();
        for _ in 0..3 {
            limiter.acquire().await;
        }
        assert!(
            started.elapsed() < Duration::from_millis(10),
            "a burst of 3 is immediate"
        );
        for _ in 0..3 {
            limiter.acquire().await;
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(3) && elapsed < Duration::from_millis(3100),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_honour_retry_after_and_stop_on_fatal() {
        let calls = Arc::new(AtomicU32::new(0));
        let started = Instant::now();
        let c = calls.clone();
        let result = retry(5, || {
            let c = c.clone();
            async move {
                match c.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(
                        BackendError::new("t", BackendErrorKind::RateLimited, "throttled")
                            .retry_after(Some(Duration::from_secs(7)))
                            .into(),
                    ),
                    _ => Ok(42),
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 42);
        assert!(
            started.elapsed() >= Duration::from_secs(7),
            "waited as told"
        );
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let result: Result<u32, Error> = retry(5, || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err(BackendError::new("t", BackendErrorKind::Auth, "bad token").into())
            }
        })
        .await;
        assert_eq!(
            result.unwrap_err().as_backend().unwrap().message,
            "bad token"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no retry of a fatal error");
    }
}
