//! Merging agents' metric snapshots exactly, and summarising them.
//!
//! Agents send per-interval deltas: HdrHistograms of latencies (microseconds, 3 significant
//! digits) and counter increments. The controller adds histograms bucket by bucket, so a
//! percentile over the whole cluster is as exact as one histogram that saw every sample: it never
//! averages percentiles.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use liveload_proto::MetricsSnapshot;
use serde::Serialize;

use crate::{Error, Result};

/// Significant digits of every latency histogram.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Counter names agents use.
pub mod counter {
    /// Iterations that completed every step.
    pub const ITERATIONS_OK: &str = "iterations_ok";
    /// Iterations that failed a step or timed out.
    pub const ITERATIONS_FAILED: &str = "iterations_failed";
    /// Users whose every iteration succeeded.
    pub const USERS_SUCCEEDED: &str = "users_succeeded";
    /// Users with at least one failed iteration, or that could not start.
    pub const USERS_FAILED: &str = "users_failed";
    /// Users started.
    pub const USERS_STARTED: &str = "users_started";
    /// Nodes lost during the run (agent died, link broken, silent past the grace).
    pub const NODES_LOST: &str = "nodes_lost";
}

/// Histogram names agents use, besides `step:<name>`.
pub mod histogram {
    /// Time to create one user's browser context and page.
    pub const USER_SETUP: &str = "user_setup";
    /// One whole iteration.
    pub const ITERATION: &str = "iteration";
}

/// A new, empty latency histogram: microseconds from 1, 3 significant digits, growing its
/// range as values arrive (a histogram of 1 s latencies stays ~80 KiB, not the ~180 KiB that a
/// fixed 1 h range costs).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits are valid")
}

/// The non-zero buckets of an encoded histogram, as `(value, count)`, read straight from
/// HdrHistogram's V2 encoding without building a histogram.
///
/// Merging a one-second snapshot this way touches its ~50 filled buckets instead of allocating
/// and scanning tens of thousands of counters; recording each bucket's value into a histogram
/// of the same precision lands in the same bucket, so merged percentiles are exact.
pub fn decode_buckets(bytes: &[u8]) -> std::result::Result<Vec<(u64, u64)>, String> {
    const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
    const HEADER: usize = 40;
    let be_u32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let be_u64 = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if bytes.len() < HEADER || be_u32(0) != V2_COOKIE {
        return Err("not a V2 histogram".into());
    }
    let payload_len = be_u32(4) as usize;
    let (normalizing_offset, digits, lowest) = (be_u32(8), be_u32(12), be_u64(16));
    let ratio = f64::from_be_bytes(bytes[32..40].try_into().expect("8 bytes"));
    if normalizing_offset != 0 || ratio != 1.0 || !(1..=5).contains(&digits) || lowest == 0 {
        return Err("unsupported histogram parameters".into());
    }
    let payload = bytes
        .get(HEADER..HEADER + payload_len)
        .ok_or("histogram payload is truncated")?;
    // Bucket geometry, as HdrHistogram computes it.
    let unit_magnitude = 63 - lowest.leading_zeros();
    let largest_single_unit = 2 * 10u64.pow(digits);
    let sub_bucket_count_magnitude = 64 - (largest_single_unit - 1).leading_zeros();
    let half_magnitude = sub_bucket_count_magnitude - 1;
    let half_count = 1u64 << half_magnitude;
    let value_for = |index: u64| -> Option<u64> {
        let mut bucket = (index >> half_magnitude) as i64 - 1;
        let mut sub_bucket = (index & (half_count - 1)) + half_count;
        if bucket < 0 {
            sub_bucket -= half_count;
            bucket = 0;
        }
        let shift = bucket as u32 + unit_magnitude;
        (shift < 64 && sub_bucket.leading_zeros() >= shift).then(|| sub_bucket << shift)
    };
    let mut buckets = Vec::new();
    let mut index: u64 = 0;
    let mut at = 0;
    while at < payload.len() {
        // LEB128, 9 bytes at most, the 9th carrying 8 bits; then zig-zag.
        let mut encoded: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = *payload.get(at).ok_or("truncated number in histogram")?;
            at += 1;
            if shift == 56 {
                encoded |= u64::from(byte) << 56;
                break;
            }
            encoded |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let number = ((encoded >> 1) as i64) ^ -((encoded & 1) as i64);
        if number < 0 {
            index = index
                .checked_add(number.unsigned_abs())
                .ok_or("histogram index overflow")?;
        } else {
            if number > 0 {
                let value = value_for(index).ok_or("histogram value out of range")?;
                buckets.push((value, number as u64));
            }
            index = index.checked_add(1).ok_or("histogram index overflow")?;
        }
    }
    Ok(buckets)
}

/// Encode a histogram as agents send it (V2 serialization).
pub fn encode_histogram(h: &Histogram<u64>) -> liveload_proto::HistogramBlob {
    use hdrhistogram::serialization::Serializer as _;
    let mut bytes = Vec::new();
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("serialising into a Vec cannot fail");
    liveload_proto::HistogramBlob(bytes)
}

/// Decode a histogram an agent sent.
pub fn decode_histogram(bytes: &[u8]) -> std::result::Result<Histogram<u64>, String> {
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("bad histogram: {e:?}"))
}

/// Everything the cluster recorded, merged.
#[derive(Debug, Default)]
pub struct MetricsAggregate {
    /// Counters, summed over nodes.
    pub counters: BTreeMap<String, u64>,
    /// Histograms, merged over nodes.
    pub histograms: BTreeMap<String, Histogram<u64>>,
    /// Per node: counters and histograms of that node alone.
    pub nodes: BTreeMap<String, NodeAggregate>,
    /// Finished seconds of the run, in order.
    pub series: Vec<SecondPoint>,
    /// Where each error was first seen, and the failures captured.
    pub failures: crate::failures::Failures,
    /// Seconds still receiving snapshots (agents' seconds arrive within a second or two of
    /// each other).
    pending: BTreeMap<u64, PendingSecond>,
}

/// One second of the run, cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct SecondPoint {
    /// Seconds since the start signal (the end of the interval).
    pub second: u64,
    /// Users running, summed over nodes.
    pub active_users: u64,
    /// Iterations completed in this second.
    pub iterations_ok: u64,
    /// Iterations failed in this second.
    pub iterations_failed: u64,
    /// Steps executed in this second (all but `think`).
    pub steps: u64,
    /// Median step latency in this second, ms (0 without steps).
    pub step_p50_ms: f64,
    /// 95th percentile step latency, ms.
    pub step_p95_ms: f64,
    /// 99th percentile step latency, ms.
    pub step_p99_ms: f64,
}

#[derive(Debug, Default)]
struct PendingSecond {
    active_users: u64,
    iterations_ok: u64,
    iterations_failed: u64,
    steps: Option<Histogram<u64>>,
}

/// How many seconds a second stays open for late snapshots.
const SECOND_LAG: u64 = 2;

/// One node's own metrics: its health, not its latencies (those are merged cluster-wide;
/// keeping a copy per node would cost nodes x metrics histograms).
#[derive(Debug, Default)]
pub struct NodeAggregate {
    /// Counters of this node.
    pub counters: BTreeMap<String, u64>,
    /// Users running at the last snapshot.
    pub active_users: u64,
    /// Snapshots received.
    pub snapshots: u64,
}

impl MetricsAggregate {
    /// Add one snapshot from `node`.
    pub fn merge(&mut self, node: &str, snapshot: &MetricsSnapshot) -> Result<()> {
        // Snapshots are cut at whole seconds after start (give or take scheduling). Every sum
        // below saturates: an agent's numbers are untrusted, and a wrong total is its bug to
        // show in the report, not a reason for the controller to panic.
        let second = snapshot.elapsed_ms.saturating_add(500) / 1000;
        let node_metrics = self.nodes.entry(node.to_string()).or_default();
        node_metrics.active_users = snapshot.active_users;
        node_metrics.snapshots += 1;
        let pending = self.pending.entry(second).or_default();
        pending.active_users = pending.active_users.saturating_add(snapshot.active_users);
        for (name, blob) in &snapshot.histograms {
            let buckets = decode_buckets(&blob.0).map_err(|message| Error::AgentConnection {
                node: node.to_string(),
                message: format!("bad histogram '{name}': {message}"),
            })?;
            let total = self
                .histograms
                .entry(name.clone())
                .or_insert_with(new_histogram);
            record_buckets(total, &buckets);
            // The per-second latency is the app's: `think` only measures the simulated user.
            if name.starts_with("step:") && !name.starts_with("step:think") {
                record_buckets(pending.steps.get_or_insert_with(new_histogram), &buckets);
            }
        }
        for (name, value) in &snapshot.counters {
            for total in [
                node_metrics.counters.entry(name.clone()).or_default(),
                self.counters.entry(name.clone()).or_default(),
            ] {
                *total = total.saturating_add(*value);
            }
            let in_second = match name.as_str() {
                counter::ITERATIONS_OK => &mut pending.iterations_ok,
                counter::ITERATIONS_FAILED => &mut pending.iterations_failed,
                _ => continue,
            };
            *in_second = in_second.saturating_add(*value);
        }
        self.failures.merge(node, snapshot);
        // Close the seconds no agent will report any more.
        let open_from = second.saturating_sub(SECOND_LAG);
        let closed: Vec<u64> = self.pending.range(..open_from).map(|(s, _)| *s).collect();
        for s in closed {
            self.close_second(s);
        }
        Ok(())
    }

    /// Close every second still open (at the end of the run).
    pub fn finish(&mut self) {
        let open: Vec<u64> = self.pending.keys().copied().collect();
        for s in open {
            self.close_second(s);
        }
    }

    fn close_second(&mut self, second: u64) {
        let Some(p) = self.pending.remove(&second) else {
            return;
        };
        let quantile = |q: f64| {
            p.steps
                .as_ref()
                .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        self.series.push(SecondPoint {
            second,
            active_users: p.active_users,
            iterations_ok: p.iterations_ok,
            iterations_failed: p.iterations_failed,
            steps: p.steps.as_ref().map_or(0, |h| h.len()),
            step_p50_ms: quantile(0.5),
            step_p95_ms: quantile(0.95),
            step_p99_ms: quantile(0.99),
        });
        self.series.sort_by_key(|point| point.second);
    }

    /// Node `node`, which ran `assigned` users, was lost: its users that had not finished count
    /// as failed (in the cluster's and the node's counters) and it runs none any more. Returns
    /// how many users that failed.
    pub fn lose_node(&mut self, node: &str, assigned: u64) -> u64 {
        let node_metrics = self.nodes.entry(node.to_string()).or_default();
        let done = node_metrics
            .counters
            .get(counter::USERS_SUCCEEDED)
            .copied()
            .unwrap_or(0)
            + node_metrics
                .counters
                .get(counter::USERS_FAILED)
                .copied()
                .unwrap_or(0);
        let failed = assigned.saturating_sub(done);
        node_metrics.active_users = 0;
        *node_metrics
            .counters
            .entry(counter::USERS_FAILED.to_string())
            .or_default() += failed;
        *self
            .counters
            .entry(counter::USERS_FAILED.to_string())
            .or_default() += failed;
        *self
            .counters
            .entry(counter::NODES_LOST.to_string())
            .or_default() += 1;
        failed
    }

    /// A counter's cluster total (0 when never reported).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Users running right now, summed over nodes.
    pub fn active_users(&self) -> u64 {
        self.nodes
            .values()
            .fold(0, |sum: u64, n| sum.saturating_add(n.active_users))
    }

    /// Percentile summaries of every histogram, by name.
    pub fn summaries(&self) -> BTreeMap<String, LatencySummary> {
        self.histograms
            .iter()
            .map(|(name, h)| (name.clone(), LatencySummary::of(h)))
            .collect()
    }
}

fn record_buckets(target: &mut Histogram<u64>, buckets: &[(u64, u64)]) {
    for &(value, count) in buckets {
        // `record_n` grows an auto-resizing histogram (`saturating_record_n` would clamp the
        // value to the current range). It fails only for values near u64::MAX, which no
        // latency in microseconds reaches; such a bucket is dropped.
        let _ = target.record_n(value, count);
    }
}

/// Percentiles of one latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Smallest, ms.
    pub min_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl LatencySummary {
    /// Summarise a microsecond histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::{Serializer, V2Serializer};
    use liveload_proto::HistogramBlob;
    use proptest::prelude::*;

    fn blob(h: &Histogram<u64>) -> HistogramBlob {
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(h, &mut bytes).unwrap();
        HistogramBlob(bytes)
    }

    proptest! {
        /// Splitting samples over K nodes and merging gives the same percentiles as one
        /// histogram that saw them all.
        #[test]
        fn merged_percentiles_equal_single_histogram(
            samples in proptest::collection::vec(1u64..10_000_000, 1..2000),
            nodes in 1usize..16,
        ) {
            let mut single = new_histogram();
            let mut parts: Vec<Histogram<u64>> = (0..nodes).map(|_| new_histogram()).collect();
            for (i, &s) in samples.iter().enumerate() {
                single.record(s).unwrap();
                parts[i % nodes].record(s).unwrap();
            }
            let mut agg = MetricsAggregate::default();
            for (i, p) in parts.iter().enumerate() {
                let snap = MetricsSnapshot {
                    records: Vec::new(),
                    histograms: [("step:x".to_string(), blob(p))].into_iter().collect(),
                    ..Default::default()
                };
                agg.merge(&format!("n{i}"), &snap).unwrap();
            }
            let merged = &agg.histograms["step:x"];
            for q in [0.5, 0.9, 0.95, 0.99, 1.0] {
                prop_assert_eq!(merged.value_at_quantile(q), single.value_at_quantile(q));
            }
            prop_assert_eq!(merged.len(), samples.len() as u64);
        }
    }

    #[test]
    fn counters_sum_per_node_and_cluster() {
        let mut agg = MetricsAggregate::default();
        let snap = |n| MetricsSnapshot {
            records: Vec::new(),
            active_users: n,
            counters: [(counter::ITERATIONS_OK.to_string(), n)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        agg.merge("a", &snap(3)).unwrap();
        agg.merge("b", &snap(4)).unwrap();
        agg.merge("a", &snap(5)).unwrap();
        assert_eq!(agg.counter(counter::ITERATIONS_OK), 12);
        assert_eq!(agg.nodes["a"].counters[counter::ITERATIONS_OK], 8);
        assert_eq!(agg.active_users(), 9);
    }

    #[test]
    fn seconds_merge_across_nodes_and_close_in_order() {
        let mut agg = MetricsAggregate::default();
        let snap = |second: u64, users: u64, ok: u64| MetricsSnapshot {
            records: Vec::new(),
            elapsed_ms: second * 1000 + 7,
            active_users: users,
            counters: [(counter::ITERATIONS_OK.to_string(), ok)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        for second in 1..=5 {
            agg.merge("a", &snap(second, 2, 1)).unwrap();
            agg.merge("b", &snap(second, 3, 2)).unwrap();
        }
        assert!(agg.series.len() < 5, "recent seconds stay open");
        agg.finish();
        assert_eq!(agg.series.len(), 5);
        for (i, point) in agg.series.iter().enumerate() {
            assert_eq!(point.second, i as u64 + 1);
            assert_eq!(point.active_users, 5);
            assert_eq!(point.iterations_ok, 3);
        }
    }

    /// Regression (issue 12, found by `tests/fuzz`): an agent's `elapsed_ms` near `u64::MAX`
    /// overflowed `elapsed_ms + 500`; counters and users near it overflowed their sums.
    #[test]
    fn numbers_near_u64_max_saturate() {
        let mut agg = MetricsAggregate::default();
        let snap = MetricsSnapshot {
            records: Vec::new(),
            elapsed_ms: u64::MAX,
            active_users: u64::MAX,
            counters: [(counter::ITERATIONS_OK.to_string(), u64::MAX)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        agg.merge("a", &snap).unwrap();
        agg.merge("b", &snap).unwrap();
        assert_eq!(agg.counter(counter::ITERATIONS_OK), u64::MAX);
        assert_eq!(agg.active_users(), u64::MAX);
        agg.finish();
        assert_eq!(agg.series[0].iterations_ok, u64::MAX);
    }

    /// Regression (issue 12): a zig-zag run of -2^63 and 2^63 - 1 moved the bucket index to
    /// `u64::MAX`, and the next zero count overflowed it.
    #[test]
    fn a_bucket_index_past_u64_max_is_an_error() {
        let mut h = new_histogram();
        h.record(1).unwrap();
        let mut bytes = blob(&h).0;
        let header = 40;
        // Zig-zag LEB128: -(2^63 - 1) then -(2^63 - 1) then -1, then a zero count.
        let skip_max: [u8; 9] = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let mut payload = Vec::new();
        payload.extend_from_slice(&skip_max);
        payload.extend_from_slice(&skip_max);
        payload.push(0x01);
        payload.push(0x00);
        bytes.truncate(header);
        bytes[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        assert_eq!(
            decode_buckets(&bytes).unwrap_err(),
            "histogram index overflow"
        );
    }

    #[test]
    fn corrupt_histogram_is_an_agent_error() {
        let mut agg = MetricsAggregate::default();
        let snap = MetricsSnapshot {
            records: Vec::new(),
            histograms: [("x".to_string(), HistogramBlob(vec![1, 2, 3]))]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        assert!(matches!(
            agg.merge("n", &snap),
            Err(Error::AgentConnection { .. })
        ));
    }

    proptest! {
        /// The bucket decoder agrees with hdrhistogram's own deserializer, and never panics
        /// on garbage.
        #[test]
        fn bucket_decoder_matches_the_reference(
            samples in proptest::collection::vec(1u64..100_000_000_000, 0..300),
            garbage in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut h = new_histogram();
            for s in &samples {
                h.record(*s).unwrap();
            }
            let blob = blob(&h);
            let reference = decode_histogram(&blob.0).unwrap();
            let mut rebuilt = new_histogram();
            record_buckets(&mut rebuilt, &decode_buckets(&blob.0).unwrap());
            prop_assert_eq!(rebuilt.len(), reference.len());
            for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
                prop_assert_eq!(rebuilt.value_at_quantile(q), reference.value_at_quantile(q));
            }
            let _ = decode_buckets(&garbage);
            let mut mangled = blob.0.clone();
            mangled.extend_from_slice(&garbage);
            let _ = decode_buckets(&mangled);
        }
    }
}
