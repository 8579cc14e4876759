//! Structure-aware scenario documents: the real keys and step kinds, with values that are
//! right, of the wrong type, huge, deeply nested or odd strings.
//!
//! Documents are built as `serde_yaml_ng::Value`s and printed by serde_yaml_ng, so most of
//! them get past the YAML parser and exercise what comes after it (serde's shape checks,
//! lowering); the scenario target also mutates the printed text to reach the parser's edges.

use proptest::prelude::*;
use serde_yaml_ng::{Mapping, Number, Value};

/// Every step kind, as written in files (the parser's own list).
const KINDS: &[&str] = liveload_core::scenario::STEP_KINDS;

/// Keys that appear inside step arguments and sections.
const INNER_KEYS: &[&str] = &[
    "selector",
    "value",
    "key",
    "text",
    "url",
    "network_idle",
    "state",
    "timeout",
    "form",
    "wait_for",
    "count",
    "visible",
    "var",
    "attribute",
    "js",
    "name",
    "steps",
    "times",
    "model",
    "ramp_up",
    "ramp_steps",
    "rate",
    "ramp_to",
    "max_users",
    "interarrival",
    "parallelism",
    "expr",
    "abort_on_fail",
    "file",
    "bogus",
];

/// Strings a scenario might hold, and strings that test its edges.
pub fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z#./ ]{0,12}",
        2 => prop_oneof![
            Just("1s".to_string()),
            Just("1s..3s".to_string()),
            Just("3s..1s".to_string()),
            Just("500ms".to_string()),
            Just("6000000000000000000m".to_string()),
            Just("87601h".to_string()),
            Just("10/s".to_string()),
            Just("0/s".to_string()),
            Just("18446744073709551616/1m".to_string()),
            Just("http://127.0.0.1:1".to_string()),
            Just("p95(step:x) < 1s".to_string()),
            Just("error_rate < NaN%".to_string()),
            Just("open".to_string()),
            Just("closed".to_string()),
            Just("hidden".to_string()),
        ],
        1 => "\\{\\{[a-z_ ]{0,10}(\\}\\})?",
        1 => any::<String>(),
        1 => "[0-9]{1,400}(\\.[0-9]{1,3})?(ms|s|m|h)?",
    ]
}

/// A scalar of any YAML type, with huge and odd numbers.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => odd_string().prop_map(Value::String),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
        1 => any::<u64>().prop_map(|n| Value::Number(n.into())),
        1 => any::<i64>().prop_map(|n| Value::Number(n.into())),
        1 => prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            Just(1e300),
        ]
        .prop_map(|f| Value::Number(Number::from(f))),
    ]
}

/// Any value: scalars, and lists and maps of them up to a few levels deep.
pub fn any_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            proptest::collection::vec((proptest::sample::select(INNER_KEYS), inner), 0..4)
                .prop_map(|entries| {
                    Value::Mapping(
                        entries
                            .into_iter()
                            .map(|(k, v)| (Value::String(k.to_string()), v))
                            .collect(),
                    )
                }),
        ]
    })
}

/// A map of some of the keys arguments use, each with a plausible or an arbitrary value.
fn argument_map(steps: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    let value = prop_oneof![3 => scalar(), 1 => any_value(), 1 => steps];
    proptest::collection::vec((proptest::sample::select(INNER_KEYS), value), 0..4).prop_map(
        |entries| {
            Value::Mapping(
                entries
                    .into_iter()
                    .map(|(k, v)| (Value::String(k.to_string()), v))
                    .collect(),
            )
        },
    )
}

/// A list of steps, nesting `group` and `repeat` up to `depth` levels.
pub fn steps(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        // `- reload`, `- teleport`
        proptest::sample::select(KINDS).prop_map(|k| Value::String(k.to_string())),
        // `- kind: scalar`, with an optional name
        (
            proptest::sample::select(KINDS),
            scalar(),
            proptest::option::of(odd_string())
        )
            .prop_map(|(kind, arg, name)| step(kind, arg, name)),
    ];
    let step_list = |item: BoxedStrategy<Value>| {
        proptest::collection::vec(item, 0..5)
            .prop_map(Value::Sequence)
            .boxed()
    };
    if depth == 0 {
        return step_list(leaf.boxed());
    }
    let inner = steps(depth - 1);
    let with_map = (
        proptest::sample::select(KINDS),
        argument_map(inner.clone()),
        proptest::option::of(odd_string()),
    )
        .prop_map(|(kind, arg, name)| step(kind, arg, name));
    let nested = (
        prop_oneof![Just("group"), Just("repeat")],
        inner,
        prop_oneof![odd_string().prop_map(Value::String), scalar()],
    )
        .prop_map(|(kind, steps, label)| {
            let mut arg = Mapping::new();
            let key = if kind == "group" { "name" } else { "times" };
            arg.insert(key.into(), label);
            arg.insert("steps".into(), steps);
            step(kind, Value::Mapping(arg), None)
        });
    step_list(prop_oneof![3 => leaf, 2 => with_map, 1 => nested].boxed())
}

/// One step map: `{kind: arg}`, with `name:` when given.
fn step(kind: &str, arg: Value, name: Option<String>) -> Value {
    let mut map = Mapping::new();
    if let Some(name) = name {
        map.insert("name".into(), Value::String(name));
    }
    map.insert(kind.into(), arg);
    Value::Mapping(map)
}

/// A whole scenario document: usually the required keys, some optional ones, now and then a
/// stranger, each with a plausible or an arbitrary value.
pub fn scenario() -> impl Strategy<Value = Value> {
    let top = [
        ("name", 1u32),
        ("base_url", 1),
        ("users", 2),
        ("duration", 2),
        ("iteration_timeout", 3),
        ("step_timeout", 3),
        ("think_time", 3),
        ("data", 4),
        ("thresholds", 2),
        ("load", 2),
        ("throttle", 2),
        ("base_urls", 5),
        ("base_url_distribution", 6),
        ("block_hosts", 5),
        ("allow_hosts", 6),
        ("map_hosts", 5),
        ("bogus", 8),
    ];
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = top
        .into_iter()
        .map(|(key, rarity)| {
            let plausible = plausible(key);
            let value = prop_oneof![4 => plausible, 1 => any_value()];
            // Required keys are nearly always there; others show up now and then.
            let weight_absent = if rarity == 1 { 1 } else { rarity };
            prop_oneof![
                weight_absent => Just(None),
                4 => value.prop_map(move |v| Some((key.to_string(), v))),
            ]
            .boxed()
        })
        .collect();
    (fields, prop_oneof![4 => steps(3), 1 => any_value()]).prop_map(|(fields, steps)| {
        let mut map: Mapping = fields
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.into(), v))
            .collect();
        map.insert("steps".into(), steps);
        Value::Mapping(map)
    })
}

/// A value that fits `key` (or nearly does).
fn plausible(key: &str) -> BoxedStrategy<Value> {
    let text = |s: &'static str| Just(Value::String(s.to_string())).boxed();
    match key {
        "name" => text("demo"),
        "base_url" => prop_oneof![text("http://127.0.0.1:1/"), text("ftp://x")].boxed(),
        "users" => prop_oneof![(0u64..5).prop_map(|n| Value::Number(n.into())), scalar()].boxed(),
        "data" => prop_oneof![text("missing.csv"), any_value()].boxed(),
        "thresholds" => proptest::collection::vec(
            prop_oneof![
                odd_string().prop_map(Value::String),
                argument_map(Just(Value::Null).boxed()),
            ],
            0..3,
        )
        .prop_map(Value::Sequence)
        .boxed(),
        "load" | "throttle" | "map_hosts" => argument_map(Just(Value::Null).boxed()).boxed(),
        "base_urls" | "block_hosts" | "allow_hosts" => {
            let item = prop_oneof![
                text("http://127.0.0.1:2"),
                text("*.ads.test"),
                odd_string().prop_map(Value::String).boxed()
            ];
            proptest::collection::vec(item, 0..3)
                .prop_map(Value::Sequence)
                .boxed()
        }
        "base_url_distribution" => prop_oneof![text("per_node"), text("round_robin")].boxed(),
        _ => odd_string().prop_map(Value::String).boxed(),
    }
}
