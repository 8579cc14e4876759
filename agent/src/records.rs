//! Raw trace records (`liveload run --trace`): which iterations are recorded, the records
//! waiting for the next snapshot, and the per-second byte budget that keeps tracing from
//! swamping the controller link.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use liveload_proto::{TraceFile, TraceRecord};
use tokio::time::Instant;

/// Records waiting for a snapshot, under the node's budget.
#[derive(Default)]
pub struct RecordBuffer {
    state: Mutex<BufferState>,
}

#[derive(Default)]
struct BufferState {
    config: Option<TraceFile>,
    started: Option<Instant>,
    pending: Vec<TraceRecord>,
    /// The second (since the start) the budget is counting, and the bytes spent in it.
    second: u64,
    spent: u64,
    dropped: u64,
    /// Bytes of `pending`, bounded by [`MAX_PENDING_BYTES`].
    pending_bytes: u64,
}

/// The most record bytes waiting for one snapshot, whatever the budget: a snapshot must stay
/// far below the protocol's 8 MiB frame limit (captures share it), even after a stall.
const MAX_PENDING_BYTES: u64 = 2 * 1024 * 1024;

impl RecordBuffer {
    /// Record as `config` says (`None`: nothing), timing records from `started`.
    pub fn configure(&self, config: Option<TraceFile>, started: Instant) {
        let mut state = self.state.lock().expect("not poisoned");
        state.config = config;
        state.started = Some(started);
    }

    /// Is the next iteration to be recorded? (Drawn per iteration, at the configured share.)
    pub fn sample(&self) -> bool {
        use rand::Rng as _;
        let sample = match self.state.lock().expect("not poisoned").config {
            Some(config) => config.sample,
            None => return false,
        };
        sample >= 1.0 || (sample > 0.0 && rand::rng().random::<f64>() < sample)
    }

    /// Keep `record` for the next snapshot, stamped with the time now (under the buffer's
    /// lock, so records are in time order whichever task made them), unless this second's
    /// budget is spent (then it is dropped and counted).
    pub fn push(&self, mut record: TraceRecord) {
        let mut state = self.state.lock().expect("not poisoned");
        let Some(config) = state.config else {
            return;
        };
        if let Some(started) = state.started {
            record.t_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        }
        let size = serde_json::to_vec(&record).map_or(0, |v| v.len() as u64);
        // Records made by different tasks may come a little out of order: a second's budget
        // starts only when time moves forward, never again for an earlier second.
        let second = record.t_ms / 1000;
        if second > state.second {
            state.second = second;
            state.spent = 0;
        }
        let pending = state.pending_bytes;
        if state.spent.saturating_add(size) > config.bytes_per_s
            || pending.saturating_add(size) > MAX_PENDING_BYTES
        {
            state.dropped += 1;
            return;
        }
        state.spent += size;
        state.pending_bytes += size;
        state.pending.push(record);
    }

    /// The records kept since the last call, in order, and how many were dropped.
    pub fn take(&self) -> (Vec<TraceRecord>, u64) {
        let mut state = self.state.lock().expect("not poisoned");
        state.pending_bytes = 0;
        (
            std::mem::take(&mut state.pending),
            std::mem::take(&mut state.dropped),
        )
    }
}

/// Whose iteration a page is in, and whether it is recorded: set by the user before each
/// iteration, read by the page's event watcher for its HTTP records.
#[derive(Default)]
pub struct PageRecording {
    on: AtomicBool,
    user: AtomicU64,
    iteration: AtomicU64,
    /// The user's secret values as the iteration began, redacted from the records' URLs.
    secrets: Mutex<crate::secrets::Secrets>,
}

impl PageRecording {
    /// The page now runs `user`'s `iteration`, recorded or not, with these secrets.
    pub fn set(&self, on: bool, user: u64, iteration: u64, secrets: &crate::secrets::Secrets) {
        if on {
            *self.secrets.lock().expect("not poisoned") = secrets.clone();
        }
        self.user.store(user, Ordering::Relaxed);
        self.iteration.store(iteration, Ordering::Relaxed);
        self.on.store(on, Ordering::Relaxed);
    }

    /// `url` as a record may hold it: without its query, fragment and credentials, and with
    /// the user's secret values redacted.
    pub fn url(&self, url: &str) -> String {
        let bare = without_query(url);
        self.secrets.lock().expect("not poisoned").redact(&bare)
    }

    /// `(user, iteration)` when the current iteration is recorded.
    pub fn current(&self) -> Option<(u64, u64)> {
        self.on.load(Ordering::Relaxed).then(|| {
            (
                self.user.load(Ordering::Relaxed),
                self.iteration.load(Ordering::Relaxed),
            )
        })
    }
}

/// `url` without its query string, fragment and `user:password@` (where tokens travel).
pub fn without_query(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use liveload_proto::RecordKind;

    fn record(t_ms: u64) -> TraceRecord {
        TraceRecord {
            t_ms,
            user: 1,
            iteration: 0,
            kind: RecordKind::Step,
            name: "navigate /".into(),
            duration_ms: 12.5,
            ok: true,
            status: None,
            url: None,
            error: None,
        }
    }

    #[test]
    fn records_past_the_budget_of_a_second_are_dropped_and_counted() {
        let buffer = RecordBuffer::default();
        buffer.push(record(0));
        assert!(
            buffer.take().0.is_empty(),
            "nothing without a configuration"
        );
        let size = serde_json::to_vec(&record(10)).unwrap().len() as u64;
        let config = TraceFile {
            sample: 1.0,
            bytes_per_s: 3 * size,
        };
        buffer.configure(Some(config), Instant::now());
        for _ in 0..5 {
            buffer.push(record(10));
        }
        let (kept, dropped) = buffer.take();
        assert_eq!(
            (kept.len(), dropped),
            (3, 2),
            "three fit this second's budget"
        );
        assert!(
            kept.windows(2).all(|w| w[0].t_ms <= w[1].t_ms),
            "stamped in order"
        );
        assert!(buffer.sample());
        assert_eq!(without_query("http://h/p?token=x#f"), "http://h/p");
        assert_eq!(without_query("https://ada:pw@h/p"), "https://h/p");
    }

    #[test]
    fn record_urls_lose_the_users_secrets() {
        let recording = PageRecording::default();
        let mut secrets = crate::secrets::Secrets::default();
        secrets.add("s3cr3t-token");
        recording.set(true, 4, 1, &secrets);
        let url = recording.url("https://h/reset/s3cr3t-token/confirm?more=s3cr3t-token");
        assert!(!url.contains("s3cr3t-token"), "{url}");
        assert!(url.starts_with("https://h/reset/"), "{url}");
        assert_eq!(recording.current(), Some((4, 1)));
    }
}
