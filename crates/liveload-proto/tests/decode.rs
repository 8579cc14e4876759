//! The decoders face untrusted bytes: they must never panic, must refuse oversize frames, and
//! must give back exactly what was encoded.

use std::collections::BTreeMap;

use liveload_proto::*;
use proptest::prelude::*;

mod fuzz;

fn arb_snapshot() -> impl Strategy<Value = MetricsSnapshot> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::btree_map("[a-z:_.]{1,20}", any::<u64>(), 0..8),
        proptest::collection::btree_map(
            "[a-z:_.]{1,20}",
            proptest::collection::vec(any::<u8>(), 0..64),
            0..4,
        ),
        proptest::collection::btree_map(".{1,40}", arb_occurrence(), 0..3),
        proptest::collection::vec(
            (
                ".{0,40}",
                arb_occurrence(),
                proptest::collection::vec(any::<u8>(), 0..64),
                ".*",
            ),
            0..2,
        ),
    )
        .prop_map(
            |(seq, elapsed_ms, active_users, counters, hists, errors, captures)| MetricsSnapshot {
                records: Vec::new(),
                resources: (seq % 2 == 0).then_some(liveload_proto::NodeResources {
                    memory_bytes: seq,
                    cpu_cores: (elapsed_ms % 1000) as f64 / 8.0,
                    processes: (active_users % 100) as u32,
                }),
                seq,
                elapsed_ms,
                active_users,
                counters,
                histograms: hists
                    .into_iter()
                    .map(|(k, v)| (k, HistogramBlob(v)))
                    .collect::<BTreeMap<_, _>>(),
                errors,
                captures: captures
                    .into_iter()
                    .map(|(error, occurrence, png, dom)| FailureCapture {
                        error,
                        occurrence,
                        png,
                        dom,
                    })
                    .collect(),
            },
        )
}

fn arb_occurrence() -> impl Strategy<Value = ErrorOccurrence> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(user_id, iteration, at_ms)| {
        ErrorOccurrence {
            user_id,
            iteration,
            at_ms,
        }
    })
}

fn arb_trace() -> impl Strategy<Value = AgentMessage> {
    (
        ".*",
        proptest::option::of(".*"),
        proptest::collection::vec((".{0,10}", ".*"), 0..3),
        proptest::collection::vec(any::<u8>(), 0..32),
        0u32..4,
    )
        .prop_map(|(name, error, vars, screenshot, depth)| {
            AgentMessage::Trace(Box::new(StepTrace {
                user_id: 1,
                iteration: 0,
                depth,
                name,
                phase: TracePhase::End,
                duration_ms: 1.5,
                error,
                vars,
                url: Some("http://h/".into()),
                console: vec!["log: hi".into()],
                screenshot,
            }))
        })
}

fn arb_agent_message() -> impl Strategy<Value = AgentMessage> {
    prop_oneof![
        arb_snapshot().prop_map(AgentMessage::Snapshot),
        arb_snapshot().prop_map(AgentMessage::Finished),
        arb_trace(),
        ".*".prop_map(|message| AgentMessage::Failed { message }),
        (any::<u32>(), any::<u32>()).prop_map(|(agent, controller)| AgentMessage::Rejected {
            reason: Rejection::ProtocolMismatch { agent, controller }
        }),
        (
            any::<u64>(),
            proptest::option::of(("[ -~]{0,30}", "[ -~]{0,30}"))
        )
            .prop_map(|(users, b)| AgentMessage::Prepared {
                users,
                browser: b.map(|(path, version)| BrowserInfo { path, version }),
            }),
    ]
}

fn arb_controller_message() -> impl Strategy<Value = ControllerMessage> {
    prop_oneof![
        (any::<u32>(), ".*", ".*").prop_map(|(protocol_version, token, controller_version)| {
            ControllerMessage::Hello {
                protocol_version,
                token,
                controller_version,
            }
        }),
        Just(ControllerMessage::Start),
        Just(ControllerMessage::Heartbeat),
        Just(ControllerMessage::Shutdown),
        any::<bool>().prop_map(|force| ControllerMessage::Stop { force }),
        (any::<u64>(), any::<u64>(), ".*", 0u64..1000, 0u64..1000).prop_map(
            |(first_user_id, users, url, min_ms, extra)| {
                ControllerMessage::Prepare(Box::new(Assignment {
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
                    first_user_id,
                    users,
                    duration_ms: 1,
                    iteration_timeout_ms: 1,
                    start_interval_ms: 0,
                    start_batch: 1,
                    steps: vec![
                        Step {
                            name: "a".into(),
                            kind: StepKind::Navigate { url },
                        },
                        Step {
                            name: "b".into(),
                            kind: StepKind::Think {
                                min_ms,
                                max_ms: min_ms + extra,
                            },
                        },
                    ],
                    step_timeout_ms: 10_000,
                    data: None,
                    workload: Workload::Open {
                        rate_per_s: min_ms as f64,
                        ramp_to_per_s: 1.0,
                    },
                    throttle: Some(NodeThrottle {
                        min_interval_us: Some(extra),
                        max_concurrent: None,
                    }),
                    no_browser: false,
                    diagnostics: Default::default(),
                    allow_schemes: vec!["file".into()],
                }))
            }
        ),
    ]
}

proptest! {
    // These are the frame decoders' fuzz targets: seeded, with fixed case counts
    // (`LIVELOAD_FUZZ_CASES` for longer runs; see `fuzz::config`).
    #![proptest_config(fuzz::config(1500))]

    /// Arbitrary bytes: an error, or a message that survives a second trip over the wire.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz::decodes_consistently(&bytes)?;
    }

    #[test]
    fn json_shaped_garbage_never_panics(text in r#"\{"type":"[a-z_]{0,12}"(,"[a-z_]{1,10}":("[^"]{0,8}"|[0-9]{1,25}|null|\[\]|\{\}))*\}"#) {
        fuzz::decodes_consistently(text.as_bytes())?;
    }

    /// Valid frames of every message and step kind, mutated in their structure: wrong types,
    /// huge numbers, deep nesting, missing and unknown keys, swapped tags.
    #[test]
    fn mutated_valid_frames_decode_consistently(
        seed in fuzz::seed_frame(),
        mutations in proptest::collection::vec(fuzz::mutation(), 1..4),
    ) {
        let frame = fuzz::mutate(seed, &mutations);
        fuzz::decodes_consistently(frame.as_bytes())?;
    }

    #[test]
    fn agent_messages_round_trip(message in arb_agent_message()) {
        let frame = encode(&message);
        prop_assert_eq!(decode_agent(frame.as_bytes()).unwrap(), message);
    }

    #[test]
    fn controller_messages_round_trip(message in arb_controller_message()) {
        let frame = encode(&message);
        prop_assert_eq!(decode_controller(frame.as_bytes()).unwrap(), message);
    }
}

proptest! {
    // Each case parses 8 MiB in a debug build (about a second): a fixed handful, whatever
    // `LIVELOAD_FUZZ_CASES` says.
    #![proptest_config(proptest::test_runner::Config { cases: 16, ..fuzz::config(16) })]

    /// Frames a few bytes either side of the limit: refused above it, decoded at or below.
    #[test]
    fn frames_at_the_size_limit(seed in fuzz::seed_frame(), offset in -64i64..64) {
        fuzz::at_the_limit(&seed, offset)?;
    }
}

#[test]
fn oversize_frame_is_refused_before_parsing() {
    let frame = vec![b' '; MAX_FRAME_BYTES + 1];
    assert!(
        matches!(decode_agent(&frame), Err(DecodeError::TooLarge(n)) if n == MAX_FRAME_BYTES + 1)
    );
}

#[test]
fn unknown_message_type_is_malformed() {
    let err = decode_controller(br#"{"type":"format_disk"}"#).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed(_)), "{err}");
}

#[test]
fn bad_base64_in_histogram_is_malformed() {
    let frame = br#"{"type":"snapshot","seq":0,"elapsed_ms":0,"active_users":0,"counters":{},"histograms":{"x":"!!!"}}"#;
    assert!(matches!(
        decode_agent(frame),
        Err(DecodeError::Malformed(_))
    ));
}
