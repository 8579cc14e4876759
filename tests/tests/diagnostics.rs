//! Finding out why a step failed, end to end: `liveload try` (every step as it runs, with its
//! result, URL, variables, console and screenshots), `on_failure: screenshot` (the first
//! failures' screenshots and DOMs in the report folder, linked from the report, with the
//! error's first occurrence), and secrets kept out of all of it.

use std::path::Path;

use liveload_e2e::*;

/// A CSV whose `password` column is secret.
const USERS_CSV: &str = "email,password\nada@example.com,pw-SECRET-1\n";

/// The secret values the tests must never find in an output.
const SECRETS: [&str; 2] = ["pw-SECRET-1", "XYZZY"];

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} shows the secret {secret}:\n{text}"
        );
    }
}

/// Is `png` a PNG Chromium decodes, and of what size? Renders a page that loads it.
fn decoded_by_chromium(dir: &Path, png: &str) -> String {
    let page = dir.join("decode-check.html");
    std::fs::write(
        &page,
        format!(
            "<img src=\"{png}\" onload=\"document.title = 'decoded ' + this.naturalWidth + 'x' + this.naturalHeight\" onerror=\"document.title = 'broken'\">"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let title = dom
        .split("<title>")
        .nth(1)
        .and_then(|t| t.split("</title>").next());
    title.unwrap_or("(no title)").to_string()
}

const TRY_SCENARIO: &str = r##"name: try-me
base_url: http://127.0.0.1:1
step_timeout: 3s
data: { file: users.csv, secret: [password] }
steps:
  - navigate: /actionability
  - fill: { selector: "#password", value: "{{password}}" }
  - fill: { selector: "#token", value: "{{email}}" }
  - eval: { js: "document.title", var: title }
  - eval: { js: "'tok-' + 'XYZZY'", var: token, secret: true }
  - eval: "console.log('hello', 42)"
  - group:
      name: sign in
      steps:
        - click: "#ready"
  - fail: "login failed for {{email}} with {{password}} and {{token}}"
"##;

#[test]
fn try_shows_every_step_as_it_runs_and_keeps_secrets_out() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let target = demo_target();
    scenario_file(dir.path(), "users.csv", USERS_CSV);
    let scenario = scenario_file(dir.path(), "try.yaml", TRY_SCENARIO);
    let shots = dir.path().join("shots");
    let out = liveload(dir.path())
        .args(["try", scenario.to_str().unwrap(), "--base-url", &target])
        .arg("--screenshots")
        .arg(&shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the iteration failed:\n{stdout}\n{stderr}"
    );
    let page = format!("{target}/actionability");
    for expected in [
        format!("trying 'try-me' as user 0 against {target}"),
        format!("navigate /actionability  -> {page}"),
        "fill #password  -> ".to_string(),
        "set title = \"Actionability\"".to_string(),
        "set token = \"[secret]\"".to_string(),
        "console log: hello 42".to_string(),
        "sign in ...".to_string(),
        "  click #ready  -> ".to_string(),
        format!(
            "error: step 'fail' at {page}: login failed for ada@example.com with [secret] and [secret]"
        ),
        "iteration failed: step 'fail'".to_string(),
    ] {
        assert!(stdout.contains(&expected), "no `{expected}` in:\n{stdout}");
    }
    let statuses: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w == "ok" || *w == "FAIL")
        .collect();
    assert_eq!(statuses.len(), 9, "eight steps and the group:\n{stdout}");
    assert_eq!(statuses.iter().filter(|s| **s == "FAIL").count(), 1);
    assert_no_secret("try's output", &stdout);
    assert_no_secret("try's log", &stderr);
    // One screenshot per step (not for the group: its step showed the page).
    let mut pictures: Vec<String> = std::fs::read_dir(&shots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    pictures.sort();
    assert_eq!(pictures.len(), 8, "{pictures:?}");
    assert_eq!(pictures[0], "01-navigate-actionability.png");
    assert_eq!(
        decoded_by_chromium(&shots, &pictures[1]),
        "decoded 800x600",
        "{pictures:?}"
    );
}

const FAILING_SCENARIO: &str = r##"name: fails-with-pictures
base_url: http://127.0.0.1:1
users: 2
duration: 4s
iteration_timeout: 10s
step_timeout: 3s
on_failure: screenshot
data: { file: users.csv, secret: [password] }
steps:
  - navigate: /actionability
  - fill: { selector: "#password", value: "{{password}}" }
  - fill: { selector: "#token", value: "{{password}}" }
  - wait_for: { text: "{{password}}", timeout: 300ms }
"##;

#[test]
fn on_failure_screenshot_keeps_the_first_failures_in_the_report() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let target = demo_target();
    scenario_file(dir.path(), "users.csv", USERS_CSV);
    let scenario = scenario_file(dir.path(), "fails.yaml", FAILING_SCENARIO);
    let reports = dir.path().join("out");
    let (code, report, out) = json_output(liveload(dir.path()).args([
        "run",
        scenario.to_str().unwrap(),
        "--base-url",
        &target,
        "--report-dir",
        reports.to_str().unwrap(),
        "--output",
        "json",
    ]));
    assert_eq!(
        code,
        7,
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let message = format!(
        "step 'wait_for text {{{{password}}}}' at {target}/actionability: text '[secret]' not reached within 300ms"
    );
    assert!(
        report["counters"][format!("error:{message}")]
            .as_u64()
            .unwrap()
            >= 4,
        "every iteration failed with the whole message, secret redacted: {report}"
    );
    let first = &report["failures"]["first"][&message];
    assert_eq!(first["iteration"], 0, "{report}");
    assert!(first["user_id"].as_u64().unwrap() < 2, "{report}");
    assert_eq!(first["node"], report["nodes"][0]["id"], "{report}");
    let captures = report["failures"]["captures"].as_array().unwrap();
    assert_eq!(
        captures.len(),
        3,
        "the first three failures of the error: {report}"
    );
    let html = std::fs::read_to_string(reports.join("report.html")).unwrap();
    for capture in captures {
        assert_eq!(capture["error"], message.as_str());
        let png = capture["screenshot"].as_str().unwrap();
        let dom = capture["dom"].as_str().unwrap();
        assert_eq!(
            decoded_by_chromium(&reports, png),
            "decoded 800x600",
            "{png}"
        );
        let text = std::fs::read_to_string(reports.join(dom)).unwrap();
        assert!(
            text.contains("id=\"covered\"") && text.contains("value=\"[secret]\""),
            "{text}"
        );
        assert_no_secret(dom, &text);
        assert!(html.contains(&format!(
            "<a href=\"{}\">screenshot</a>",
            png.replace('/', "&#x2f;")
        )));
        assert!(html.contains(&format!(
            "<a href=\"{}\">DOM</a>",
            dom.replace('/', "&#x2f;")
        )));
    }
    assert!(
        html.contains("iteration 0, +"),
        "the first occurrence is shown: {html}"
    );
    for file in ["result.json", "report.html", "report.md"] {
        assert_no_secret(file, &std::fs::read_to_string(reports.join(file)).unwrap());
    }
}

/// An iteration cut by its timeout names the step it was in: a step that hangs past the
/// iteration's timeout (here a wait with a longer timeout of its own) is where to look, and
/// "iteration timed out" alone does not say which.
#[test]
fn an_iteration_timeout_names_the_step_it_cut() {
    let _heavy = liveload_e2e::heavy();
    let dir = tempfile::tempdir().unwrap();
    let target = demo_target();
    let scenario = scenario_file(
        dir.path(),
        "hang.yaml",
        "name: hang\nbase_url: http://x\nusers: 1\nduration: 1s\niteration_timeout: 2s\nsteps:\n  \
         - navigate: /\n  - wait_for: { selector: '#never', timeout: 20s }\n",
    );
    let (code, report, _) = run_json(dir.path(), &scenario, &target, &[]);
    assert_eq!(code, 7, "{report}");
    let first = report["failures"]["first"].as_object().unwrap();
    let errors: Vec<&String> = first.keys().collect();
    assert_eq!(
        errors,
        ["iteration timed out after 2s during step 'wait_for #never'"],
        "{report}"
    );
}
