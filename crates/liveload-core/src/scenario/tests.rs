//! End-to-end tests of the parser, and the helpers the submodules' tests share.

use liveload_proto::StepKind;

use super::*;

/// Parse `text` as if read from `s.yaml`.
pub(super) fn parse(text: &str) -> Result<Scenario> {
    Scenario::from_yaml(Path::new("s.yaml"), text)
}

/// The line, column and message of a scenario error (panics on any other error).
pub(super) fn location(err: Error) -> (usize, usize, String) {
    match err {
        Error::Scenario {
            line,
            column,
            message,
            ..
        } => (line, column, message),
        other => panic!("{other:?}"),
    }
}

/// The settings every test scenario needs, up to `steps:`.
pub(super) const HEAD: &str = "name: d\nbase_url: http://x\nsteps:\n";

#[test]
fn parses_minimal_scenario() {
    let s = parse(
            "name: demo\nbase_url: http://127.0.0.1:1/\nusers: 3\nduration: 2s\nsteps:\n  - navigate: /\n  - wait_for: '#x'\n  - think: 1s..2s\n",
        )
        .unwrap();
    assert_eq!(s.users, 3);
    assert_eq!(s.base_url(), "http://127.0.0.1:1");
    assert_eq!(s.duration, Duration::from_secs(2));
    assert_eq!(
        s.steps[2].kind,
        StepKind::Think {
            min_ms: 1000,
            max_ms: 2000
        }
    );
}

#[test]
fn every_step_kind_parses() {
    let text = format!(
        "{HEAD}{}",
        r##"  - navigate: /
  - reload
  - click: "#send"
  - fill: { selector: "#name", value: "user {{user_id}}" }
  - clear: "#name"
  - press: { selector: "#name", key: Enter }
  - check: "#agree"
  - uncheck: "#agree"
  - select: { selector: "#plan", value: pro }
  - hover: "#send"
  - focus: "#name"
  - blur: "#name"
  - wait_for: "#ticks"
  - wait_for: { selector: "#gone", state: hidden, timeout: 2s }
  - wait_for: { text: Live }
  - wait_for: { url: "*/" }
  - wait_for: { network_idle: 300ms }
  - wait_for: { js: "window.socket && window.socket.connected", timeout: 3s }
  - liveview_connected
  - liveview_connected: { timeout: 20s }
  - liveview_idle: "#live-form"
  - liveview_idle: { selector: "#live-form", timeout: 4s }
  - liveview_submit: { form: "#live-form", wait_for: "#live-result" }
  - assert: { text: Live }
  - assert: { selector: "li.item", count: 3 }
  - assert: { visible: "#ticks" }
  - extract: { var: plan, selector: "#plan", value: true }
  - extract: { var: link, selector: "a", attribute: href }
  - extract: { var: title, selector: h1 }
  - think: 10ms
  - eval: "document.title"
  - eval: { js: "1 + 1", var: two }
  - eval: { js: "'s3cret'", var: token, secret: true }
  - name: named
    navigate: "/?p={{plan}}&t={{two}}"
  - group: { name: checkout, steps: [ { click: "#send" } ] }
  - repeat: { times: 2, steps: [ reload ] }
  - halt
  - fail: "no {{title}}"
"##
    );
    let s = parse(&text).unwrap();
    assert_eq!(s.steps.len(), 38);
    assert_eq!(s.steps[33].name, "named");
    assert!(matches!(s.steps[34].kind, StepKind::Group { ref steps } if steps.len() == 1));
    assert_eq!(s.steps[34].name, "checkout");
    assert!(matches!(
        s.steps[32].kind,
        StepKind::Eval { secret: true, .. }
    ));
}

#[test]
fn waits_take_their_timeout_or_leave_it_to_step_timeout() {
    let s = parse(&format!(
        "{HEAD}{}",
        r##"  - wait_for: "#a"
  - wait_for: { js: "window.ready === true", timeout: 2s }
  - liveview_connected
  - liveview_connected: { timeout: 20s }
  - liveview_idle: { timeout: 3s }
  - liveview_submit: { form: "#f" }
"##
    ))
    .unwrap();
    let timeouts: Vec<Option<u64>> = s
        .steps
        .iter()
        .map(|step| match &step.kind {
            StepKind::WaitFor { timeout_ms, .. } => *timeout_ms,
            StepKind::LiveviewSubmit { timeout_ms, .. } => *timeout_ms,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        timeouts,
        [None, Some(2000), None, Some(20_000), Some(3000), None]
    );
    assert_eq!(s.steps[1].name, "wait_for js window.ready === true");
    assert!(matches!(
        &s.steps[1].kind,
        StepKind::WaitFor { condition: liveload_proto::WaitCondition::Js { expression }, .. }
            if expression == "window.ready === true"
    ));
}

#[test]
fn on_failure_keeps_screenshots_of_the_first_failures() {
    let with = |on_failure: &str| {
        parse(&format!(
            "name: d\nbase_url: http://x\non_failure: {on_failure}\nsteps:\n  - reload\n"
        ))
    };
    assert_eq!(
        with("screenshot").unwrap().diagnostics().captures_per_error,
        3
    );
    assert_eq!(
        with("{ action: screenshot, per_error: 5 }")
            .unwrap()
            .on_failure,
        OnFailure::Screenshot { per_error: 5 }
    );
    assert_eq!(with("none").unwrap().diagnostics().captures_per_error, 0);
    let (line, _, message) = location(with("photograph").unwrap_err());
    assert_eq!(line, 3);
    assert!(message.contains("photograph"), "{message}");
    assert!(with("{ action: screenshot, per_error: 0 }").is_err());
}

#[test]
fn unknown_step_names_line_and_column() {
    let (line, column, message) =
        location(parse(&format!("{HEAD}  - navigate: /\n  - teleport: /\n")).unwrap_err());
    assert_eq!(line, 5);
    assert!(column >= 3, "{column}");
    assert!(message.contains("teleport"), "{message}");
    assert!(
        message.contains("navigate"),
        "lists the known kinds: {message}"
    );
}

#[test]
fn wrong_type_is_located() {
    let (line, _, message) = location(
        parse(&format!(
            "{HEAD}  - navigate: /\n  - repeat: {{ times: many, steps: [reload] }}\n"
        ))
        .unwrap_err(),
    );
    assert_eq!(line, 5);
    assert!(message.contains("invalid"), "{message}");
}

#[test]
fn missing_selector_is_located() {
    let (line, _, message) = location(
        parse(&format!(
            "{HEAD}  - navigate: /\n  - fill: {{ value: x }}\n"
        ))
        .unwrap_err(),
    );
    assert_eq!(line, 5);
    assert!(message.contains("missing field `selector`"), "{message}");
    let (line, _, message) =
        location(parse(&format!("{HEAD}  - navigate: /\n  - click\n")).unwrap_err());
    assert_eq!(line, 5);
    assert!(message.contains("needs an argument"), "{message}");
}

#[test]
fn bad_duration_is_located() {
    let err = parse("name: d\nbase_url: http://x\nduration: 10 parsecs\nsteps:\n  - navigate: /\n")
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("s.yaml:3:11:"), "{text}");
    assert!(text.contains("unknown unit"), "{text}");
    let (line, _, _) =
        location(parse(&format!("{HEAD}  - navigate: /\n  - think: 3 fortnights\n")).unwrap_err());
    assert_eq!(line, 5);
}

#[test]
fn thresholds_parse_and_bad_ones_are_located() {
    let s = parse(&format!(
            "name: d\nbase_url: http://x\nthresholds:\n  - 'p95(step:x) < 1s'\n  - {{ expr: 'error_rate < 1%', abort_on_fail: true }}\n{}",
            "steps:\n  - reload\n"
        ))
        .unwrap();
    assert_eq!(s.thresholds.len(), 2);
    assert!(s.thresholds[1].abort_on_fail);
    let (line, _, message) = location(
            parse("name: d\nbase_url: http://x\nthresholds:\n  - 'p95(step:x) < soon'\nsteps:\n  - reload\n")
                .unwrap_err(),
        );
    assert_eq!(line, 4);
    assert!(message.contains("soon"), "{message}");
}

#[test]
fn untrusted_text_may_not_name_files_but_the_same_steps_parse() {
    let path = std::path::Path::new("sent.yaml");
    let inline = "name: d\nbase_url: http://x\nsteps:\n  - reload\n";
    assert!(Scenario::from_untrusted_yaml(path, inline).is_ok());
    for (text, line) in [
        (
            "name: d\nbase_url: http://x\ndata:\n  file: /etc/passwd\nsteps:\n  - reload\n",
            3,
        ),
        (
            "name: d\nmix:\n  - { scenario: ../other.yaml, users: 1 }\n",
            2,
        ),
    ] {
        let (at, _, message) = location(Scenario::from_untrusted_yaml(path, text).unwrap_err());
        assert_eq!(at, line, "{message}");
        assert!(message.contains("server"), "{message}");
    }
}
