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
}

/// Histogram names agents use, besides `step:<name>`.
pub mod histogram {
    /// Time to create one user's browser context and page.
    pub const USER_SETUP: &str = "user_setup";
    /// One whole iteration.
    pub const ITERATION: &str = "iteration";
}

/// A new, empty latency histogram (1 µs to 1 h, auto-resizing, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, SIGNIFICANT_DIGITS)
        .expect("static bounds are valid");
    h.auto(true);
    h
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

/// One node's own metrics.
#[derive(Debug, Default)]
pub struct NodeAggregate {
    /// Counters of this node.
    pub counters: BTreeMap<String, u64>,
    /// Histograms of this node.
    pub histograms: BTreeMap<String, Histogram<u64>>,
    /// Users running at the last snapshot.
    pub active_users: u64,
    /// Snapshots received.
    pub snapshots: u64,
}

impl MetricsAggregate {
    /// Add one snapshot from `node`.
    pub fn merge(&mut self, node: &str, snapshot: &MetricsSnapshot) -> Result<()> {
        // Snapshots are cut at whole seconds after start (give or take scheduling).
        let second = (snapshot.elapsed_ms + 500) / 1000;
        let node_metrics = self.nodes.entry(node.to_string()).or_default();
        node_metrics.active_users = snapshot.active_users;
        node_metrics.snapshots += 1;
        let pending = self.pending.entry(second).or_default();
        pending.active_users += snapshot.active_users;
        for (name, blob) in &snapshot.histograms {
            let h = decode_histogram(&blob.0).map_err(|message| Error::AgentConnection {
                node: node.to_string(),
                message,
            })?;
            add_into(&mut node_metrics.histograms, name, &h);
            add_into(&mut self.histograms, name, &h);
            // The per-second latency is the app's: `think` only measures the simulated user.
            if name.starts_with("step:") && !name.starts_with("step:think") {
                pending
                    .steps
                    .get_or_insert_with(new_histogram)
                    .add(&h)
                    .expect("auto-resizing histograms accept any range");
            }
        }
        for (name, value) in &snapshot.counters {
            *node_metrics.counters.entry(name.clone()).or_default() += value;
            *self.counters.entry(name.clone()).or_default() += value;
            match name.as_str() {
                counter::ITERATIONS_OK => pending.iterations_ok += value,
                counter::ITERATIONS_FAILED => pending.iterations_failed += value,
                _ => {}
            }
        }
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

    /// A counter's cluster total (0 when never reported).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Users running right now, summed over nodes.
    pub fn active_users(&self) -> u64 {
        self.nodes.values().map(|n| n.active_users).sum()
    }

    /// Percentile summaries of every histogram, by name.
    pub fn summaries(&self) -> BTreeMap<String, LatencySummary> {
        self.histograms
            .iter()
            .map(|(name, h)| (name.clone(), LatencySummary::of(h)))
            .collect()
    }
}

fn add_into(map: &mut BTreeMap<String, Histogram<u64>>, name: &str, h: &Histogram<u64>) {
    let target = map.entry(name.to_string()).or_insert_with(new_histogram);
    // `auto(true)` makes `add` grow the range instead of failing.
    target
        .add(h)
        .expect("auto-resizing histograms accept any range");
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

    #[test]
    fn corrupt_histogram_is_an_agent_error() {
        let mut agg = MetricsAggregate::default();
        let snap = MetricsSnapshot {
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
}
