//! Target: `Threshold::parse`, the pass/fail expressions of a scenario.

use liveload_core::threshold::{Comparison, Measure, Threshold};
use proptest::prelude::*;

use crate::support::config;

/// A metric name: mostly ordinary, sometimes holding the characters the parser splits on.
fn metric() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z:_ /.#-]{1,20}",
        "[a-z]{1,5}[()<>=%][a-z]{0,5}",
        any::<String>(),
    ]
}

/// `(symbol, operator)`.
fn comparison() -> impl Strategy<Value = (&'static str, Comparison)> {
    prop_oneof![
        Just(("<", Comparison::Less)),
        Just(("<=", Comparison::LessOrEqual)),
        Just((">", Comparison::Greater)),
        Just((">=", Comparison::GreaterOrEqual)),
    ]
}

/// A threshold assembled from valid parts, or from parts of which any may be wrong.
fn expression() -> impl Strategy<Value = String> {
    let function = prop_oneof![
        Just("p95".to_string()),
        Just("p99.9".to_string()),
        "p[0-9.]{0,8}",
        Just("avg".to_string()),
        Just("count".to_string()),
        Just("error_rate".to_string()),
        "[a-z]{0,6}",
    ];
    let limit = prop_oneof![
        "[0-9]{1,4}(ms|s|m|h)?",
        "[0-9]{1,400}(\\.[0-9]{0,5})?(ms|s|m|h|%)?",
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("-1".to_string()),
        Just("1e308".to_string()),
        ".{0,6}",
    ];
    (
        function,
        metric(),
        "[ ]{0,2}",
        comparison(),
        limit,
        any::<bool>(),
    )
        .prop_map(|(function, metric, gap, (symbol, _), limit, parens)| {
            if parens {
                format!("{function}({metric}){gap}{symbol}{gap}{limit}")
            } else {
                format!("{function}{gap}{symbol}{limit}")
            }
        })
}

proptest! {
    #![proptest_config(config(2500))]

    /// Any text: a threshold whose parts are sane, or a message.
    #[test]
    fn any_expression_parses_sanely_or_explains(
        text in prop_oneof![any::<String>(), expression()],
        abort in any::<bool>(),
    ) {
        match Threshold::parse(&text, abort) {
            Ok(t) => {
                prop_assert_eq!(&t.expr, text.trim());
                prop_assert!(t.limit.is_finite(), "{text:?}: {}", t.limit);
                prop_assert_eq!(t.abort_on_fail, abort);
                match &t.measure {
                    Measure::Percentile { metric, p } => {
                        prop_assert!((0.0..=100.0).contains(p));
                        prop_assert!(!metric.is_empty());
                    }
                    Measure::Avg { metric }
                    | Measure::Min { metric }
                    | Measure::Max { metric }
                    | Measure::Count { metric } => prop_assert!(!metric.is_empty()),
                    Measure::ErrorRate => {}
                }
            }
            Err(message) => prop_assert!(!message.is_empty()),
        }
    }

    /// A well-formed threshold reads back as written: its metric, operator and limit.
    #[test]
    fn valid_thresholds_read_back_as_written(
        function in prop_oneof![Just("avg"), Just("max"), Just("p50"), Just("p99.9")],
        metric in "[a-z][a-z:_ /.#-]{0,20}",
        (symbol, op) in comparison(),
        millis in 0u64..10_000_000,
    ) {
        let metric = metric.trim().to_string();
        let text = format!("{function}({metric}) {symbol} {millis}ms");
        let t = Threshold::parse(&text, false).unwrap();
        prop_assert_eq!(t.op, op);
        prop_assert_eq!(t.limit, millis as f64);
        let parsed_metric = match t.measure {
            Measure::Percentile { metric, .. } | Measure::Avg { metric } | Measure::Max { metric } => metric,
            other => panic!("{other:?}"),
        };
        prop_assert_eq!(parsed_metric, metric);
    }
}
