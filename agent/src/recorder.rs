//! Where users record latencies and counts, and where snapshots are cut from.
//!
//! Every user task records into one shared interval; once a second the session takes the
//! interval (swapping in an empty one) and sends it as a delta. The cost of a snapshot depends on
//! the number of metric names, never on the number of users or samples.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use liveload_proto::{HistogramBlob, MetricsSnapshot};

#[derive(Default)]
struct Interval {
    histograms: BTreeMap<String, Histogram<u64>>,
    counters: BTreeMap<String, u64>,
}

/// Shared metrics of one agent.
#[derive(Default)]
pub struct Recorder {
    interval: Mutex<Interval>,
    active_users: AtomicU64,
    seq: AtomicU64,
    /// Distinct error messages seen so far (bounded, so messages with ids in them cannot
    /// grow the snapshot without limit).
    error_kinds: Mutex<std::collections::HashSet<String>>,
}

/// The most distinct error messages one agent reports; the rest are counted together.
const MAX_ERROR_KINDS: usize = 50;

/// Microseconds from 1, 3 significant digits, range grown as values arrive (small in memory
/// and on the wire).
fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits are valid")
}

impl Recorder {
    /// Record one latency under `name`.
    pub fn latency(&self, name: &str, elapsed: Duration) {
        let micros = (elapsed.as_micros() as u64).max(1);
        let mut interval = self.interval.lock().expect("not poisoned");
        let h = match interval.histograms.get_mut(name) {
            Some(h) => h,
            None => interval
                .histograms
                .entry(name.to_string())
                .or_insert_with(new_histogram),
        };
        // `record` grows the range (`saturating_record` would clamp to it); it fails only for
        // values near u64::MAX microseconds.
        let _ = h.record(micros);
    }

    /// Add `by` to counter `name`.
    pub fn count(&self, name: &str, by: u64) {
        let mut interval = self.interval.lock().expect("not poisoned");
        *interval.counters.entry(name.to_string()).or_default() += by;
    }

    /// Count a failed iteration's error under `error:<message>` (first line, at most 160
    /// characters).
    pub fn error(&self, message: &str) {
        let mut text: String = message
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(160)
            .collect();
        {
            let mut kinds = self.error_kinds.lock().expect("not poisoned");
            if !kinds.contains(&text) {
                if kinds.len() >= MAX_ERROR_KINDS {
                    text = "(other errors)".into();
                } else {
                    kinds.insert(text.clone());
                }
            }
        }
        self.count(&format!("error:{text}"), 1);
    }

    /// One more (`+1`) or one fewer (`-1`) user running.
    pub fn user_running(&self, running: bool) {
        if running {
            self.active_users.fetch_add(1, Ordering::Relaxed);
        } else {
            self.active_users.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Users running now.
    pub fn active_users(&self) -> u64 {
        self.active_users.load(Ordering::Relaxed)
    }

    /// Cut the interval: everything recorded since the last call, as a snapshot.
    pub fn take(&self, elapsed: Duration) -> MetricsSnapshot {
        let interval = std::mem::take(&mut *self.interval.lock().expect("not poisoned"));
        let mut serializer = V2Serializer::new();
        let histograms = interval
            .histograms
            .into_iter()
            .map(|(name, h)| {
                let mut bytes = Vec::new();
                serializer
                    .serialize(&h, &mut bytes)
                    .expect("serialising into a Vec cannot fail");
                (name, HistogramBlob(bytes))
            })
            .collect();
        MetricsSnapshot {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            elapsed_ms: elapsed.as_millis() as u64,
            active_users: self.active_users(),
            counters: interval.counters,
            histograms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_errors_are_bounded() {
        let r = Recorder::default();
        for i in 0..(MAX_ERROR_KINDS + 10) {
            r.error(&format!("step 'x': failed for user {i}\nmore detail"));
        }
        r.error("step 'x': failed for user 0");
        let s = r.take(Duration::from_secs(1));
        let errors: Vec<&String> = s
            .counters
            .keys()
            .filter(|k| k.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(s.counters["error:(other errors)"], 10);
        assert_eq!(s.counters["error:step 'x': failed for user 0"], 2);
    }

    #[test]
    fn take_returns_deltas() {
        let r = Recorder::default();
        r.latency("step:a", Duration::from_millis(5));
        r.latency("step:a", Duration::from_millis(7));
        r.count("iterations_ok", 2);
        let first = r.take(Duration::from_secs(1));
        assert_eq!(first.counters["iterations_ok"], 2);
        let h: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut &first.histograms["step:a"].0[..])
            .unwrap();
        assert_eq!(h.len(), 2);
        // Values keep their magnitude (3 significant digits), however small the start range.
        assert_eq!(h.equivalent_range(5_000), h.equivalent_range(h.min()));
        assert!((4_990..=5_010).contains(&h.min()), "{}", h.min());
        assert!((6_990..=7_010).contains(&h.max()), "{}", h.max());
        let second = r.take(Duration::from_secs(2));
        assert!(second.counters.is_empty() && second.histograms.is_empty());
        assert_eq!(second.seq, 1);
    }
}
