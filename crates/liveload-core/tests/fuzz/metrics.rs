//! Target: merging agents' metric snapshots (`MetricsAggregate::merge`), the controller's
//! first use of what an agent sends once the frame has decoded. An agent is a peer the
//! controller does not control (a bug, a different version, a compromised node): its counters,
//! clocks and histogram bytes may be anything.

use std::collections::BTreeMap;

use liveload_core::Error;
use liveload_core::metrics::{MetricsAggregate, encode_histogram, new_histogram};
use liveload_core::threshold::Threshold;
use liveload_proto::{ErrorOccurrence, HistogramBlob, MetricsSnapshot};
use proptest::prelude::*;

use crate::support::config;

/// Two JSON documents are equal, numbers to within a few ulps (serde_json's default float
/// parser is not always correctly rounded, so a float may come back one ulp away).
pub fn json_close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            _ if x == y => true,
            (Some(x), Some(y)) => (x - y).abs() <= (x.abs().max(y.abs())) * 4.0 * f64::EPSILON,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        _ => a == b,
    }
}

/// A histogram blob: a real one, a real one with some bytes changed, or arbitrary bytes.
fn blob() -> impl Strategy<Value = HistogramBlob> {
    let real =
        proptest::collection::vec(prop_oneof![1u64..10_000_000_000, 1u64..u64::MAX / 4], 0..20)
            .prop_map(|samples| {
                let mut h = new_histogram();
                for s in samples {
                    let _ = h.record(s);
                }
                encode_histogram(&h).0
            });
    prop_oneof![
        real.clone(),
        (
            real,
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
        )
            .prop_map(|(mut bytes, edits)| {
                for (at, byte) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                bytes
            }),
        proptest::collection::vec(any::<u8>(), 0..80),
    ]
    .prop_map(HistogramBlob)
}

/// A number an agent might send: small, or anywhere up to `u64::MAX`.
fn count() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..1000, any::<u64>(), Just(u64::MAX)]
}

fn snapshot() -> impl Strategy<Value = MetricsSnapshot> {
    (
        count(),
        count(),
        count(),
        proptest::collection::btree_map(
            prop_oneof![
                Just("iterations_ok".to_string()),
                Just("iterations_failed".to_string()),
                "[a-z_]{1,8}"
            ],
            count(),
            0..4,
        ),
        proptest::collection::btree_map(
            prop_oneof![
                Just("step:x".to_string()),
                Just("iteration".to_string()),
                "[a-z:]{1,8}"
            ],
            blob(),
            0..3,
        ),
        // First occurrences of errors: the merge keeps the earliest of each.
        proptest::collection::btree_map(
            "error:[a-z]{1,3}",
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(user_id, iteration, at_ms)| {
                ErrorOccurrence {
                    user_id,
                    iteration,
                    at_ms,
                }
            }),
            0..3,
        ),
    )
        .prop_map(
            |(seq, elapsed_ms, active_users, counters, histograms, errors)| MetricsSnapshot {
                records: Vec::new(),
                resources: None,
                seq,
                elapsed_ms,
                active_users,
                counters,
                histograms,
                errors,
                captures: Vec::new(),
            },
        )
}

proptest! {
    #![proptest_config(config(250))]

    /// Any sequence of snapshots from a few nodes merges, or fails as the agent's error;
    /// counters add up exactly (saturating at `u64::MAX`), seconds come out in order (a snapshot
    /// more than 2 s late can repeat a closed second: a known limit, not checked here), and
    /// summaries and thresholds can be computed on the result.
    #[test]
    fn any_snapshots_merge_or_fail_as_the_agents_error(
        snapshots in proptest::collection::vec((0usize..3, snapshot()), 1..8),
    ) {
        let mut agg = MetricsAggregate::default();
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for (node, snapshot) in &snapshots {
            match agg.merge(&format!("n{node}"), snapshot) {
                Ok(()) => {}
                Err(Error::AgentConnection { message, .. }) => {
                    prop_assert!(message.contains("histogram"), "{message}");
                    // Counters are merged only after every histogram decoded.
                    continue;
                }
                Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
            }
            for (name, value) in &snapshot.counters {
                let total = expected.entry(name.clone()).or_default();
                *total = total.saturating_add(*value);
            }
        }
        agg.finish();
        for (name, total) in &expected {
            prop_assert_eq!(agg.counter(name), *total, "{}", name);
        }
        prop_assert!(agg.series.windows(2).all(|w| w[0].second <= w[1].second));
        let _ = agg.active_users();
        let _ = agg.summaries();
        for expr in ["p99(step:x) < 1s", "max(iteration) < 1s", "error_rate < 1%", "count(step:x) > 1"] {
            let _ = Threshold::parse(expr, false).unwrap().evaluate(&agg);
        }
    }
}
