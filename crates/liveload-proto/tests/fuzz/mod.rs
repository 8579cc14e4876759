//! The frame decoders' fuzz targets: a seed corpus of valid frames (every message, every step
//! kind), structure-aware mutations of them, and the checks every decoded frame must pass.
//!
//! Why property tests and not cargo-fuzz: they run on stable Rust inside `cargo test`, in
//! bounded time, with a fixed seed, so a CI failure reproduces anywhere and prints its input.

use std::collections::BTreeMap;

use liveload_proto::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm, RngSeed, TestCaseError};
use serde_json::{Value, json};

/// The seed of every run unless `LIVELOAD_FUZZ_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x11fe_10ad_0012_0007;

/// A number from the environment, for longer or different runs.
fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// The proptest configuration of a target that runs `default_cases` cases in the test command;
/// `LIVELOAD_FUZZ_CASES` and `LIVELOAD_FUZZ_SEED` replace the count and the seed. (The same
/// helper lives in liveload-core's, liveload-ssh's and liveload's tests: a shared test crate
/// would need this crate below liveload-core, a cycle.)
pub fn config(default_cases: u32) -> Config {
    let cases = env_number("LIVELOAD_FUZZ_CASES").map_or(default_cases, |n| n as u32);
    Config {
        cases,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(env_number("LIVELOAD_FUZZ_SEED").unwrap_or(DEFAULT_SEED)),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// Two JSON documents are equal, numbers to within a few ulps (serde_json's default float
/// parser is not always correctly rounded, so a float may come back one ulp away).
fn json_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            _ if x == y => true,
            (Some(x), Some(y)) => (x - y).abs() <= x.abs().max(y.abs()) * 4.0 * f64::EPSILON,
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

/// `message` survives a second trip: encoded, decoded by `decode`, it is the same message.
fn round_trips<T: serde::Serialize>(
    message: &T,
    decode: fn(&[u8]) -> Result<T, DecodeError>,
) -> Result<(), TestCaseError> {
    let frame = encode(message);
    let again = decode(frame.as_bytes())
        .map_err(|e| TestCaseError::fail(format!("re-encoded frame refused: {e}: {frame}")))?;
    let (a, b) = (
        serde_json::to_value(message).unwrap(),
        serde_json::to_value(&again).unwrap(),
    );
    prop_assert!(json_close(&a, &b), "{} != {}", a, b);
    Ok(())
}

/// Both decoders on `bytes`: each gives an error (oversize only above the limit) or a message
/// that round-trips.
pub fn decodes_consistently(bytes: &[u8]) -> Result<(), TestCaseError> {
    check_result(
        bytes,
        decode_controller(bytes).map(|m| round_trips(&m, decode_controller)),
    )?;
    check_result(
        bytes,
        decode_agent(bytes).map(|m| round_trips(&m, decode_agent)),
    )
}

fn check_result(
    bytes: &[u8],
    result: Result<Result<(), TestCaseError>, DecodeError>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(round_trip) => round_trip,
        Err(DecodeError::TooLarge(n)) => {
            prop_assert!(n == bytes.len() && n > MAX_FRAME_BYTES);
            Ok(())
        }
        Err(DecodeError::Malformed(_)) => {
            prop_assert!(bytes.len() <= MAX_FRAME_BYTES);
            Ok(())
        }
    }
}

/// One step of every kind (and every condition, check and source inside them).
fn every_step() -> Vec<Step> {
    let mut steps = element_steps();
    steps.extend(other_steps());
    let nested = vec![step(StepKind::Reload)];
    steps.push(step(StepKind::Group {
        steps: nested.clone(),
    }));
    steps.push(step(StepKind::Repeat {
        times: 2,
        steps: nested,
    }));
    steps
}

/// A step named `s`.
fn step(kind: StepKind) -> Step {
    Step {
        name: "s".into(),
        kind,
    }
}

/// A selector.
fn sel() -> String {
    "#x".to_string()
}

/// Steps that act on one element or the page.
fn element_steps() -> Vec<Step> {
    vec![
        step(StepKind::Navigate {
            url: "/{{user_id}}".into(),
        }),
        step(StepKind::Reload),
        step(StepKind::Click { selector: sel() }),
        step(StepKind::Fill {
            selector: sel(),
            value: "v".into(),
        }),
        step(StepKind::Clear { selector: sel() }),
        step(StepKind::Press {
            selector: None,
            key: "Enter".into(),
        }),
        step(StepKind::Check { selector: sel() }),
        step(StepKind::Uncheck { selector: sel() }),
        step(StepKind::Select {
            selector: sel(),
            value: "v".into(),
        }),
        step(StepKind::Hover { selector: sel() }),
        step(StepKind::Focus { selector: sel() }),
        step(StepKind::Blur { selector: sel() }),
    ]
}

/// Waits, assertions, variables and control flow.
fn other_steps() -> Vec<Step> {
    let wait = |condition| StepKind::WaitFor {
        condition,
        timeout_ms: Some(10),
    };
    vec![
        step(wait(WaitCondition::Visible { selector: sel() })),
        step(wait(WaitCondition::Hidden { selector: sel() })),
        step(wait(WaitCondition::Text { text: "t".into() })),
        step(wait(WaitCondition::Url {
            pattern: "*".into(),
        })),
        step(wait(WaitCondition::Js {
            expression: "true".into(),
        })),
        step(wait(WaitCondition::NetworkIdle { idle_ms: 5 })),
        step(wait(WaitCondition::LiveviewConnected)),
        step(wait(WaitCondition::LiveviewIdle { selector: sel() })),
        step(StepKind::LiveviewSubmit {
            form: sel(),
            wait_for: Some(sel()),
            timeout_ms: None,
        }),
        step(StepKind::Assert {
            check: AssertCheck::Text { text: "t".into() },
        }),
        step(StepKind::Assert {
            check: AssertCheck::Count {
                selector: sel(),
                count: 3,
            },
        }),
        step(StepKind::Assert {
            check: AssertCheck::Visible { selector: sel() },
        }),
        step(StepKind::Extract {
            var: "a".into(),
            selector: sel(),
            from: ExtractFrom::Text,
            secret: false,
        }),
        step(StepKind::Extract {
            var: "b".into(),
            selector: sel(),
            from: ExtractFrom::Value,
            secret: true,
        }),
        step(StepKind::Extract {
            var: "c".into(),
            selector: sel(),
            from: ExtractFrom::Attribute {
                name: "href".into(),
            },
            secret: false,
        }),
        step(StepKind::Think {
            min_ms: 1,
            max_ms: 2,
        }),
        step(StepKind::Eval {
            js: "1".into(),
            var: Some("d".into()),
            secret: true,
        }),
        step(StepKind::Halt),
        step(StepKind::Fail {
            message: "m".into(),
        }),
    ]
}

/// A valid frame of every message, both directions, as JSON to mutate.
fn seeds() -> Vec<Value> {
    let mut seeds = controller_seeds();
    seeds.extend(agent_seeds());
    seeds
}

/// Every message the controller sends.
fn controller_seeds() -> Vec<Value> {
    let assignment = Assignment {
        memory_budget_bytes: None,
        user_loop: Default::default(),
        trace_file: None,
        base_urls: Vec::new(),
        host_rules: Default::default(),
        engine: Default::default(),
        groups: Vec::new(),
        run_id: "r".into(),
        scenario: "s".into(),
        base_url: "http://127.0.0.1".into(),
        first_user_id: 0,
        users: 2,
        duration_ms: 1000,
        iteration_timeout_ms: 1000,
        start_interval_ms: 50,
        start_batch: 1,
        steps: every_step(),
        step_timeout_ms: 10_000,
        data: Some(DataTable {
            columns: vec!["email".into()],
            rows: vec![vec!["a@x".into()]],
            secret_columns: vec!["email".into()],
        }),
        workload: Workload::Open {
            rate_per_s: 1.5,
            ramp_to_per_s: 3.0,
        },
        throttle: Some(NodeThrottle {
            min_interval_us: Some(10),
            max_concurrent: Some(2),
        }),
        no_browser: false,
        diagnostics: Diagnostics {
            captures_per_error: 2,
            trace: Some(TraceOptions { screenshots: true }),
            max_iterations: Some(1),
        },
        allow_schemes: vec!["file".into()],
    };
    let controller = [
        ControllerMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: "t".repeat(16),
            controller_version: "0.1.0".into(),
        },
        ControllerMessage::Prepare(Box::new(assignment)),
        ControllerMessage::Start,
        ControllerMessage::Heartbeat,
        ControllerMessage::Stop { force: true },
        ControllerMessage::AddUsers {
            first_user_id: 4,
            count: 2,
        },
        ControllerMessage::RemoveUsers {
            count: 1,
            force: false,
        },
        ControllerMessage::Shutdown,
    ];
    controller
        .iter()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect()
}

/// Every message an agent sends.
fn agent_seeds() -> Vec<Value> {
    let facts = NodeFacts {
        hostname: "h".into(),
        arch: "x86_64".into(),
        total_memory_bytes: 1 << 33,
        available_memory_bytes: 1 << 32,
        logical_cores: 4,
        cgroup_memory_limit_bytes: Some(1 << 31),
        cgroup_cpu_limit: Some(1.5),
        host_share: Some(2),
        effective_memory_bytes: 1 << 30,
        effective_cores: 0.75,
        chromium: Some(BrowserInfo {
            path: "/c".into(),
            version: "1".into(),
        }),
        max_users: Some(10),
    };
    let snapshot = MetricsSnapshot {
        records: Vec::new(),
        resources: Some(liveload_proto::NodeResources {
            memory_bytes: 300 << 20,
            cpu_cores: 0.75,
            processes: 7,
        }),
        seq: 1,
        elapsed_ms: 1000,
        active_users: 2,
        counters: BTreeMap::from([("iterations_ok".to_string(), 3)]),
        histograms: BTreeMap::from([("step:s".to_string(), HistogramBlob(vec![0x1c, 0x84, 7]))]),
        errors: BTreeMap::from([("error:e".to_string(), occurrence())]),
        captures: vec![FailureCapture {
            error: "error:e".into(),
            occurrence: occurrence(),
            png: vec![0x89, b'P', b'N', b'G'],
            dom: "<html></html>".into(),
        }],
    };
    let agent = [
        AgentMessage::Welcome {
            protocol_version: 1,
            agent_version: "0.1.0".into(),
            facts,
        },
        AgentMessage::Rejected {
            reason: Rejection::Unauthorized,
        },
        AgentMessage::Rejected {
            reason: Rejection::ProtocolMismatch {
                agent: 1,
                controller: 2,
            },
        },
        AgentMessage::Rejected {
            reason: Rejection::Busy,
        },
        AgentMessage::Rejected {
            reason: Rejection::ExpectedHello,
        },
        AgentMessage::Prepared {
            users: 2,
            browser: None,
        },
        AgentMessage::Snapshot(snapshot.clone()),
        AgentMessage::Finished(snapshot),
        AgentMessage::Trace(Box::new(StepTrace {
            user_id: 0,
            iteration: 0,
            depth: 1,
            name: "click #x".into(),
            phase: TracePhase::End,
            duration_ms: 1.5,
            error: Some("e".into()),
            vars: vec![("a".into(), "[secret]".into())],
            url: Some("http://127.0.0.1/".into()),
            console: vec!["log: hi".into()],
            screenshot: vec![1, 2, 3],
        })),
        AgentMessage::Failed {
            message: "m".into(),
        },
    ];
    agent
        .iter()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect()
}

/// Where an error first happened, for the snapshot seeds.
fn occurrence() -> ErrorOccurrence {
    ErrorOccurrence {
        user_id: 1,
        iteration: 2,
        at_ms: 3,
    }
}

/// One of the valid seed frames.
pub fn seed_frame() -> impl Strategy<Value = Value> {
    proptest::sample::select(seeds())
}

/// Text that replaces a placeholder string after printing: numbers JSON allows but no Rust
/// integer or float holds.
const HUGE: [&str; 5] = [
    "18446744073709551616",
    "-9223372036854775809",
    "1e400",
    "-0.0e-400",
    "123456789012345678901234567890.5",
];

/// A change to one node of a frame.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Replace the node (picked by index among all nodes) with a value of another type.
    Replace(prop::sample::Index, Value),
    /// Replace it with a number too large for its type (an index into [`HUGE`]).
    Huge(prop::sample::Index, usize),
    /// Wrap it in this many nested arrays or objects.
    Nest(prop::sample::Index, usize, bool),
    /// Remove one key of the object it is in, or add an unknown one.
    Key(prop::sample::Index, Option<String>),
    /// Set every tag (`type`, `kind`, `until`, `check`, `source`, `model`) found to this.
    Tag(String),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,8}".prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1, "a", null])),
    ];
    let tag = prop_oneof![
        Just("prepare".to_string()),
        Just("snapshot".to_string()),
        Just("welcome".to_string()),
        Just("group".to_string()),
        Just("wait_for".to_string()),
        Just("open".to_string()),
        "[a-z_]{0,10}",
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), value).prop_map(|(i, v)| Mutation::Replace(i, v)),
        (any::<prop::sample::Index>(), 0..HUGE.len()).prop_map(|(i, h)| Mutation::Huge(i, h)),
        (
            any::<prop::sample::Index>(),
            prop_oneof![1usize..8, 100usize..300],
            any::<bool>()
        )
            .prop_map(|(i, n, arrays)| Mutation::Nest(i, n, arrays)),
        (
            any::<prop::sample::Index>(),
            proptest::option::of("[a-z_]{1,10}")
        )
            .prop_map(|(i, k)| Mutation::Key(i, k)),
        tag.prop_map(Mutation::Tag),
    ]
}

/// JSON pointers of every node of `value`, root first.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {}
    }
}

/// Apply `mutations` to `frame` and print it.
pub fn mutate(mut frame: Value, mutations: &[Mutation]) -> String {
    for m in mutations {
        let mut all = Vec::new();
        pointers(&frame, String::new(), &mut all);
        let node = |i: &prop::sample::Index| all[i.index(all.len())].clone();
        match m {
            Mutation::Replace(i, v) => *frame.pointer_mut(&node(i)).unwrap() = v.clone(),
            Mutation::Huge(i, h) => {
                *frame.pointer_mut(&node(i)).unwrap() = json!(format!("@HUGE{h}@"))
            }
            Mutation::Nest(i, depth, arrays) => {
                let target = frame.pointer_mut(&node(i)).unwrap();
                for _ in 0..*depth {
                    let inner = target.take();
                    *target = if *arrays {
                        json!([inner])
                    } else {
                        json!({ "n": inner })
                    };
                }
            }
            Mutation::Key(i, key) => {
                let pointer = node(i);
                let parent = &pointer[..pointer.rfind('/').unwrap_or(0)];
                if let Some(Value::Object(map)) = frame.pointer_mut(parent) {
                    match key {
                        Some(k) => {
                            map.insert(k.clone(), json!(1));
                        }
                        None => {
                            let first = map.keys().next().cloned();
                            first.map(|k| map.remove(&k));
                        }
                    }
                }
            }
            Mutation::Tag(tag) => retag(&mut frame, tag),
        }
    }
    let mut text = frame.to_string();
    for (h, huge) in HUGE.iter().enumerate() {
        text = text.replace(&format!("\"@HUGE{h}@\""), huge);
    }
    text
}

/// Set every internally tagged enum's tag in `value` to `tag`.
fn retag(value: &mut Value, tag: &str) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if matches!(
                    k.as_str(),
                    "type" | "kind" | "until" | "check" | "source" | "model"
                ) {
                    *v = json!(tag);
                } else {
                    retag(v, tag);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| retag(v, tag)),
        _ => {}
    }
}

/// A seed frame padded with trailing spaces (valid JSON) to `MAX_FRAME_BYTES + offset` bytes.
pub fn at_the_limit(seed: &Value, offset: i64) -> Result<(), TestCaseError> {
    let mut frame = seed.to_string().into_bytes();
    let size = (MAX_FRAME_BYTES as i64 + offset) as usize;
    frame.resize(size, b' ');
    for too_large in [decode_controller(&frame).err(), decode_agent(&frame).err()] {
        match too_large {
            Some(DecodeError::TooLarge(n)) => prop_assert!(offset > 0 && n == size),
            // Only one decoder speaks this seed's direction; the other calls it malformed.
            Some(DecodeError::Malformed(_)) | None => prop_assert!(offset <= 0),
        }
    }
    decodes_consistently(&frame)
}
