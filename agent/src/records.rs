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
}

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

    /// Milliseconds since the start signal.
    pub fn now_ms(&self) -> u64 {
        let started = self.state.lock().expect("not poisoned").started;
        started.map_or(0, |s| {
            u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX)
        })
    }

    /// Keep `record` for the next snapshot, unless this second's budget is spent (then it is
    /// dropped and counted).
    pub fn push(&self, record: TraceRecord) {
        let mut state = self.state.lock().expect("not poisoned");
        let Some(config) = state.config else {
            return;
        };
        let size = serde_json::to_vec(&record).map_or(0, |v| v.len() as u64);
        let second = record.t_ms / 1000;
        if second != state.second {
            state.second = second;
            state.spent = 0;
        }
        if state.spent.saturating_add(size) > config.bytes_per_s {
            state.dropped += 1;
            return;
        }
        state.spent += size;
        state.pending.push(record);
    }

    /// The records kept since the last call, in order, and how many were dropped.
    pub fn take(&self) -> (Vec<TraceRecord>, u64) {
        let mut state = self.state.lock().expect("not poisoned");
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
}

impl PageRecording {
    /// The page now runs `user`'s `iteration`, recorded or not.
    pub fn set(&self, on: bool, user: u64, iteration: u64) {
        self.user.store(user, Ordering::Relaxed);
        self.iteration.store(iteration, Ordering::Relaxed);
        self.on.store(on, Ordering::Relaxed);
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

/// `url` without its query string and fragment (where tokens travel).
pub fn without_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_string()
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
        for t in [10, 20, 30, 40, 50] {
            buffer.push(record(t));
        }
        buffer.push(record(1_010)); // a new second, a new budget
        let (kept, dropped) = buffer.take();
        let times: Vec<u64> = kept.iter().map(|r| r.t_ms).collect();
        assert_eq!(times, [10, 20, 30, 1_010]);
        assert_eq!(dropped, 2);
        assert!(buffer.sample());
        assert_eq!(without_query("http://h/p?token=x#f"), "http://h/p");
    }
}
