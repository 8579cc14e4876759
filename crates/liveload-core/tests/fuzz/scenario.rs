//! Target: `Scenario::from_yaml`, from arbitrary bytes and from structure-aware documents,
//! plus the nesting and alias inputs that crash naive recursive parsers.

use std::path::Path;
use std::time::{Duration, Instant};

use liveload_core::Error;
use liveload_core::run::{RunOptions, node_terms};
use liveload_core::scenario::{MAX_DURATION, Scenario};
use liveload_proto::{Assignment, ControllerMessage, Step, StepKind, decode_controller, encode};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::support::config;
use crate::yaml_gen;

/// The file every target's scenario claims to be (its data file, if any, is beside it).
const PATH: &str = "/nonexistent/fuzz/s.yaml";

/// Line breaks as YAML counts them (`\n`, `\r`, NEL, LS, PS): a bound for a parser's line.
fn line_breaks(text: &str) -> usize {
    text.chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count()
}

/// What every answer of `Scenario::from_yaml(path, text)` must satisfy.
pub fn check(
    path: &Path,
    text: &str,
    result: Result<Scenario, Error>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(scenario) => check_scenario(&scenario),
        Err(Error::Scenario {
            file,
            line,
            column,
            message,
        }) => {
            prop_assert_eq!(file.as_path(), path);
            prop_assert!(
                (1..=line_breaks(text) + 2).contains(&line),
                "line {} outside the input: {}",
                line,
                message
            );
            prop_assert!(
                (1..=text.chars().count() + 2).contains(&column),
                "column {} outside the input: {}",
                column,
                message
            );
            prop_assert!(!message.is_empty());
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "not a scenario error: {other:?}"
        ))),
    }
}

/// A valid scenario's promises, and the agent's: its assignment crosses the wire intact.
fn check_scenario(s: &Scenario) -> Result<(), TestCaseError> {
    prop_assert!(!s.steps.is_empty());
    for url in &s.base_urls {
        prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
    }
    prop_assert!(s.host_rules.check().is_ok(), "{:?}", s.host_rules);
    prop_assert!(!s.duration.is_zero() && s.duration <= MAX_DURATION);
    prop_assert!(s.iteration_timeout <= MAX_DURATION && s.step_timeout <= MAX_DURATION);
    for t in &s.thresholds {
        prop_assert!(t.limit.is_finite(), "{}", t.expr);
    }
    check_steps(&s.steps)?;
    let options = RunOptions::new("fuzz", s.users.max(1), s.duration);
    let terms = node_terms(s, &options, &[s.users.max(1)]).remove(0);
    let frame = ControllerMessage::Prepare(Box::new(Assignment {
        memory_budget_bytes: None,
        user_loop: Default::default(),
        trace_file: None,
        run_id: "fuzz-r1".into(),
        scenario: s.name.clone(),
        base_url: s.base_url().to_string(),
        base_urls: s.base_urls.clone(),
        host_rules: s.host_rules.clone(),
        engine: s.engine,
        groups: Vec::new(),
        first_user_id: 0,
        users: s.users,
        duration_ms: s.duration.as_millis() as u64,
        iteration_timeout_ms: s.iteration_timeout.as_millis() as u64,
        start_interval_ms: terms.start_interval.as_millis() as u64,
        start_batch: terms.start_batch,
        steps: s.steps.clone(),
        step_timeout_ms: s.step_timeout.as_millis() as u64,
        data: s.data.clone(),
        workload: terms.workload,
        throttle: terms.throttle,
        no_browser: false,
        diagnostics: s.diagnostics(),
        allow_schemes: s.allow_schemes.clone(),
    }));
    let decoded = decode_controller(encode(&frame).as_bytes())
        .map_err(|e| TestCaseError::fail(format!("the agent would refuse it: {e}")))?;
    prop_assert!(
        crate::metrics::json_close(
            &serde_json::to_value(&frame).unwrap(),
            &serde_json::to_value(&decoded).unwrap()
        ),
        "{frame:?} != {decoded:?}"
    );
    Ok(())
}

/// Think ranges are ordered, at every depth.
fn check_steps(steps: &[Step]) -> Result<(), TestCaseError> {
    for step in steps {
        match &step.kind {
            StepKind::Think { min_ms, max_ms } => prop_assert!(min_ms <= max_ms),
            StepKind::Group { steps } | StepKind::Repeat { steps, .. } => check_steps(steps)?,
            _ => {}
        }
    }
    Ok(())
}

/// Edits that take a printed document off the parser's well-trodden path.
#[derive(Debug, Clone)]
enum Mutation {
    /// Insert this text at a fraction of the length.
    Insert(f64, String),
    /// Remove up to this many characters from a fraction of the length.
    Remove(f64, usize),
    /// Cut the document at a fraction of its length.
    Truncate(f64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let fragment = prop_oneof![
        Just(":".to_string()),
        Just("- ".to_string()),
        Just("\n  ".to_string()),
        Just("[".to_string()),
        Just("{".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!binary ".to_string()),
        Just("'".to_string()),
        Just("\"\\u".to_string()),
        Just("\t".to_string()),
        any::<String>(),
    ];
    prop_oneof![
        (0.0..1.0, fragment).prop_map(|(at, text)| Mutation::Insert(at, text)),
        (0.0..1.0, 1usize..8).prop_map(|(at, n)| Mutation::Remove(at, n)),
        (0.0..1.0).prop_map(Mutation::Truncate),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in mutations {
        let at = |f: f64| ((chars.len() as f64 * f) as usize).min(chars.len());
        match m {
            Mutation::Insert(f, s) => {
                let i = at(*f);
                chars.splice(i..i, s.chars());
            }
            Mutation::Remove(f, n) => {
                let i = at(*f);
                let end = (i + n).min(chars.len());
                chars.drain(i..end);
            }
            Mutation::Truncate(f) => chars.truncate(at(*f)),
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(config(800))]

    /// Arbitrary bytes (as the lossy UTF-8 a file read would refuse or give).
    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let path = Path::new(PATH);
        check(path, &text, Scenario::from_yaml(path, &text))?;
    }

    /// Documents built from the real keys and step kinds, printed, and sometimes mutated.
    #[test]
    fn structured_documents(
        document in yaml_gen::scenario(),
        mutations in proptest::collection::vec(mutation(), 0..3),
    ) {
        let printed = serde_yaml_ng::to_string(&document).unwrap();
        let text = mutate(&printed, &mutations);
        let path = Path::new(PATH);
        check(path, &text, Scenario::from_yaml(path, &text))?;
    }
}

/// `text` is refused with a scenario error, quickly, and without overflowing the stack.
fn refused_quickly(what: &str, text: &str) -> String {
    let started = Instant::now();
    let path = Path::new(PATH);
    let result = Scenario::from_yaml(path, text);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{what}: took {:?}",
        started.elapsed()
    );
    let err = result.expect_err(what);
    check(path, text, Err(err.clone_for_test())).unwrap();
    err.to_string()
}

/// Clone a scenario error (the error type is not `Clone`: it can hold an I/O error).
trait CloneForTest {
    fn clone_for_test(&self) -> Error;
}

impl CloneForTest for Error {
    fn clone_for_test(&self) -> Error {
        match self {
            Error::Scenario {
                file,
                line,
                column,
                message,
            } => Error::Scenario {
                file: file.clone(),
                line: *line,
                column: *column,
                message: message.clone(),
            },
            other => panic!("not a scenario error: {other:?}"),
        }
    }
}

/// 100 000 nested flow sequences or maps: refused before parsing (libyaml would take minutes:
/// its scan is quadratic in flow depth). Deep block nesting reaches serde_yaml_ng's recursion
/// limit of 128 instead. Neither overflows the stack.
#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let depth = 100_000;
    let head = "name: d\nbase_url: http://x\nsteps: ";
    for (what, text) in [
        ("[[[", format!("{head}{}", "[".repeat(depth))),
        ("{a: {a:", format!("{head}{}", "{a: ".repeat(depth))),
        (
            "[[]]",
            format!("{head}{}{}\n", "[".repeat(depth), "]".repeat(depth)),
        ),
    ] {
        let message = refused_quickly(what, &text);
        assert!(
            message.contains("nested deeper than 128"),
            "{what}: {message}"
        );
    }
    // Groups in block style, 60 deep: serde_yaml_ng's recursion limit (128) stops them.
    let mut block = String::new();
    for level in 0..60 {
        let indent = " ".repeat(2 + level * 6);
        block.push_str(&format!(
            "{indent}- group:\n{indent}    name: g\n{indent}    steps:\n"
        ));
    }
    block.push_str(&format!("{}- reload\n", " ".repeat(2 + 60 * 6)));
    let message = refused_quickly(
        "block",
        &format!("name: d\nbase_url: http://x\nsteps:\n{block}"),
    );
    assert!(message.contains("recursion limit"), "{message}");
    // Nested groups: the deepest the YAML limit allows still crosses the wire (checked by
    // `check`); one more is refused.
    let group = |depth: usize| {
        let mut steps = "[reload]".to_string();
        for _ in 0..depth {
            steps = format!("[{{group: {{name: g, steps: {steps}}}}}]");
        }
        format!("name: d\nbase_url: http://x\nsteps: {steps}\n")
    };
    let path = Path::new(PATH);
    let deepest = (1..100)
        .take_while(|d| Scenario::from_yaml(path, &group(*d)).is_ok())
        .last()
        .unwrap();
    assert!(deepest >= 30, "{deepest}");
    check(
        path,
        &group(deepest),
        Scenario::from_yaml(path, &group(deepest)),
    )
    .unwrap();
    refused_quickly("groups", &group(deepest + 1));
}

/// Aliases that expand exponentially ("billion laughs"): `a40` stands for 2^40 `reload`
/// steps in groups forty deep. serde_yaml_ng refuses once it has followed 100 aliases per
/// event of the document (its "repetition limit"); the work until then grows with the square
/// of the document, so this 2.5 KB file still costs seconds in a debug build.
#[test]
fn alias_bombs_are_refused() {
    let mut text =
        "name: d\nbase_url: http://x\nsteps:\n  - group: {name: g, steps: &a0 [reload, reload]}\n"
            .to_string();
    for i in 1..=40 {
        let previous = format!("{{group: {{name: g, steps: *a{}}}}}", i - 1);
        text.push_str(&format!(
            "  - group: {{name: g, steps: &a{i} [{previous}, {previous}]}}\n"
        ));
    }
    let message = refused_quickly("aliases", &text);
    assert!(message.contains("repetition limit"), "{message}");
}
