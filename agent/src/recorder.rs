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
use liveload_proto::{ErrorOccurrence, FailureCapture, HistogramBlob, MetricsSnapshot};

#[derive(Default)]
struct Interval {
    histograms: BTreeMap<String, Histogram<u64>>,
    counters: BTreeMap<String, u64>,
    /// First occurrences of error messages first seen during this interval.
    errors: BTreeMap<String, ErrorOccurrence>,
}

/// Shared metrics of one agent.
#[derive(Default)]
pub struct Recorder {
    interval: Mutex<Interval>,
    active_users: AtomicU64,
    seq: AtomicU64,
    /// Distinct error messages seen so far (bounded, so messages with ids in them cannot
    /// grow the snapshot without limit), with the captures taken of each.
    error_kinds: Mutex<std::collections::HashMap<String, u32>>,
    /// Captures waiting for a snapshot with room for them.
    captures: Mutex<std::collections::VecDeque<FailureCapture>>,
    /// Captures taken in all (bounded by [`MAX_CAPTURES`]).
    captures_taken: AtomicU64,
    /// Console lines of a traced user, when tracing (`None`: not gathered).
    console: Mutex<Option<Vec<String>>>,
    /// Whether console lines are gathered (read on every console event, so an atomic).
    tracing_console: std::sync::atomic::AtomicBool,
    /// Samples the node's memory and CPU for each snapshot (made at the first).
    resources: Mutex<Option<crate::resources::Sampler>>,
    /// The memory watchdog's budget, bytes (0: no watchdog).
    memory_budget: AtomicU64,
    /// The watchdog tripped: no new iteration starts until memory is back under the low mark.
    memory_exhausted: std::sync::atomic::AtomicBool,
    /// Raw trace records (`liveload run --trace`), sent with the snapshots.
    pub records: crate::records::RecordBuffer,
}

/// Past this share of its budget the node holds new iterations.
const MEMORY_HIGH: f64 = 0.95;
/// Below this share it lets them start again (a gap, so it does not flap).
const MEMORY_LOW: f64 = 0.85;

/// The most distinct error messages one agent reports; the rest are counted together.
const MAX_ERROR_KINDS: usize = 50;

/// The longest error message kept, in characters: enough for the step's name, the page's URL
/// and the reason, short enough for a metric name and a table cell.
pub const MAX_ERROR_CHARS: usize = 300;

/// The most failure captures one agent takes over a run, whatever the scenario asks: each is
/// a screenshot and a DOM that travel to the controller.
const MAX_CAPTURES: u64 = 20;

/// The most capture bytes sent in one snapshot (frames are limited to 8 MiB; captures are
/// base64 in JSON, a third larger). The rest wait for the next snapshot.
const MAX_CAPTURE_BYTES_PER_SNAPSHOT: usize = 4 * 1024 * 1024;

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

    /// Count a failed iteration's error under `error:<message>` (on one line, at most
    /// [`MAX_ERROR_CHARS`] characters), noting where a message was first seen; returns the
    /// message as counted. The caller has redacted secrets from `message`.
    pub fn error(&self, message: &str, occurrence: Option<ErrorOccurrence>) -> String {
        let mut text = crate::steps::one_line(message, MAX_ERROR_CHARS);
        let first = {
            let mut kinds = self.error_kinds.lock().expect("not poisoned");
            if kinds.contains_key(&text) {
                false
            } else if kinds.len() >= MAX_ERROR_KINDS {
                text = "(other errors)".into();
                false
            } else {
                kinds.insert(text.clone(), 0);
                true
            }
        };
        let mut interval = self.interval.lock().expect("not poisoned");
        *interval
            .counters
            .entry(format!("error:{text}"))
            .or_default() += 1;
        if first && let Some(occurrence) = occurrence {
            interval.errors.insert(text.clone(), occurrence);
        }
        text
    }

    /// Should a capture of error `key` be taken, given at most `per_error` per message? Says
    /// yes at most `per_error` times per message (and [`MAX_CAPTURES`] in all), counting the
    /// yes as taken.
    pub fn wants_capture(&self, key: &str, per_error: u32) -> bool {
        let mut kinds = self.error_kinds.lock().expect("not poisoned");
        let Some(taken) = kinds.get_mut(key) else {
            return false; // "(other errors)": not one message, nothing to show.
        };
        if *taken >= per_error || self.captures_taken.load(Ordering::Relaxed) >= MAX_CAPTURES {
            return false;
        }
        *taken += 1;
        self.captures_taken.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Queue a capture for the next snapshot with room for it.
    pub fn capture(&self, capture: FailureCapture) {
        self.captures
            .lock()
            .expect("not poisoned")
            .push_back(capture);
    }

    /// Start gathering console lines for a traced user.
    pub fn trace_console(&self) {
        *self.console.lock().expect("not poisoned") = Some(Vec::new());
        self.tracing_console.store(true, Ordering::Relaxed);
    }

    /// Are console lines gathered? (When not, pages' console messages are not even turned
    /// into text.)
    pub fn traces_console(&self) -> bool {
        self.tracing_console.load(Ordering::Relaxed)
    }

    /// A console message or exception of the page, kept only while tracing.
    pub fn console_line(&self, line: String) {
        if let Some(lines) = self.console.lock().expect("not poisoned").as_mut() {
            lines.push(line);
        }
    }

    /// The console lines gathered since the last call (none when not tracing).
    pub fn take_console(&self) -> Vec<String> {
        self.console
            .lock()
            .expect("not poisoned")
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Captures for one snapshot: in order, as many as fit [`MAX_CAPTURE_BYTES_PER_SNAPSHOT`]
    /// (at least one, so none waits forever; a single capture is bounded by its parts).
    fn take_captures(&self) -> Vec<FailureCapture> {
        let mut queue = self.captures.lock().expect("not poisoned");
        let mut taken = Vec::new();
        let mut bytes = 0;
        while let Some(next) = queue.front() {
            let size = next.png.len() + next.dom.len();
            if !taken.is_empty() && bytes + size > MAX_CAPTURE_BYTES_PER_SNAPSHOT {
                break;
            }
            bytes += size;
            taken.extend(queue.pop_front());
        }
        taken
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

    /// Arm the memory watchdog with the node's budget (bytes; `None`: disarmed), measuring
    /// the node by its cgroup's working set when `cgroup_alone` (a memory-limited group this
    /// agent has to itself), else by its process group's PSS (only its own without a browser).
    pub fn watch_resources(&self, budget: Option<u64>, cgroup_alone: bool, browser: bool) {
        self.memory_budget
            .store(budget.unwrap_or(0), Ordering::Relaxed);
        let sampler = crate::resources::Sampler::new(cgroup_alone);
        *self.resources.lock().expect("not poisoned") = Some(if browser {
            sampler
        } else {
            sampler.without_browser()
        });
    }

    /// Whether the watchdog holds new iterations now.
    pub fn memory_exhausted(&self) -> bool {
        self.memory_exhausted.load(Ordering::Relaxed)
    }

    /// Sample the node's memory and CPU, and move the watchdog: trip past [`MEMORY_HIGH`] of
    /// the budget (counted once per trip, `node_memory_exhausted`), release under
    /// [`MEMORY_LOW`].
    fn sample_resources(&self) -> liveload_proto::NodeResources {
        let sample = self
            .resources
            .lock()
            .expect("not poisoned")
            .get_or_insert_with(|| crate::resources::Sampler::new(false))
            .sample();
        let budget = self.memory_budget.load(Ordering::Relaxed) as f64;
        let used = sample.memory_bytes as f64;
        if budget > 0.0 {
            if used > MEMORY_HIGH * budget && !self.memory_exhausted() {
                self.memory_exhausted.store(true, Ordering::Relaxed);
                self.count("node_memory_exhausted", 1);
                tracing::warn!(
                    used_mib = sample.memory_bytes >> 20,
                    budget_mib = (budget as u64) >> 20,
                    "memory near the node's budget: holding new iterations"
                );
            } else if used < MEMORY_LOW * budget && self.memory_exhausted() {
                self.memory_exhausted.store(false, Ordering::Relaxed);
                tracing::info!("memory back under the budget: iterations resume");
            }
        }
        sample
    }

    /// Cut the interval: everything recorded since the last call, as a snapshot.
    pub fn take(&self, elapsed: Duration) -> MetricsSnapshot {
        let (records, dropped) = self.records.take();
        if dropped > 0 {
            self.count("trace.records_dropped", dropped);
        }
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
            errors: interval.errors,
            captures: self.take_captures(),
            resources: Some(self.sample_resources()),
            records,
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
            r.error(&format!("step 'x': failed for user {i}\nmore detail"), None);
        }
        r.error("step 'x': failed for user 0 more detail", None);
        let s = r.take(Duration::from_secs(1));
        let errors: Vec<&String> = s
            .counters
            .keys()
            .filter(|k| k.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(s.counters["error:(other errors)"], 10);
        assert_eq!(
            s.counters["error:step 'x': failed for user 0 more detail"],
            2
        );
    }

    #[test]
    fn messages_stay_whole_up_to_the_bound_with_their_first_occurrence() {
        let r = Recorder::default();
        let long = format!(
            "step 'eval js' at http://h/p: JavaScript error: {}",
            "x".repeat(400)
        );
        let at = |at_ms| ErrorOccurrence {
            user_id: 3,
            iteration: 7,
            at_ms,
        };
        let key = r.error(&long, Some(at(1200)));
        assert_eq!(key.chars().count(), MAX_ERROR_CHARS);
        assert!(key.starts_with("step 'eval js' at http://h/p: JavaScript error: xxx"));
        r.error(&long, Some(at(5000)));
        let s = r.take(Duration::from_secs(1));
        assert_eq!(s.counters[&format!("error:{key}")], 2);
        assert_eq!(s.errors[&key], at(1200), "the first occurrence, once");
        r.error(&long, Some(at(9000)));
        assert!(r.take(Duration::from_secs(2)).errors.is_empty());
    }

    #[test]
    fn captures_are_bounded_per_message_and_sent_in_order() {
        let r = Recorder::default();
        let key = r.error("boom", None);
        assert!(r.wants_capture(&key, 2));
        assert!(r.wants_capture(&key, 2));
        assert!(!r.wants_capture(&key, 2), "two per message");
        assert!(!r.wants_capture("never counted", 2));
        let big = |n: u64| FailureCapture {
            error: key.clone(),
            occurrence: ErrorOccurrence {
                user_id: n,
                iteration: 0,
                at_ms: 0,
            },
            png: vec![0; MAX_CAPTURE_BYTES_PER_SNAPSHOT / 2 + 1],
            dom: String::new(),
        };
        r.capture(big(1));
        r.capture(big(2));
        let first = r.take(Duration::from_secs(1)).captures;
        assert_eq!(first.len(), 1, "the second waits for room");
        let second = r.take(Duration::from_secs(2)).captures;
        assert_eq!(second[0].occurrence.user_id, 2);
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
