//! Protocol users (`engine: http`) end to end through the CLI against the demo target, proven
//! by what the server saw: each user logs in once and keeps its own cookie across iterations,
//! requests carry templated headers and JSON, answers are checked and read into variables,
//! WebSocket replies are matched among the server's pushes, and every metric equals the
//! traffic the scenario made. No browser is started.

use liveload_e2e::*;

const USERS: u64 = 20;
const ITERATIONS: u64 = 3;

fn scenario() -> String {
    format!(
        r##"name: api
engine: http
base_url: http://127.0.0.1:1
users: {USERS}
duration: 60s
iterations: {ITERATIONS}
on_start:
  - name: login
    request:
      method: POST
      url: /api/login
      json: {{ email: "user{{{{user_id}}}}@example.com", remember: true }}
      expect: {{ status: 200, json: {{ "$.ok": true }} }}
  - extract: {{ var: token, json: "$.token", secret: true }}
steps:
  - name: me
    request:
      url: /api/me
      headers: {{ Authorization: "Bearer {{{{token}}}}" }}
      expect: {{ json: {{ "$.email": "user{{{{user_id}}}}@example.com" }} }}
  - extract: {{ var: who, header: X-User }}
  - request: "/seen?v=api-{{{{who}}}}-{{{{iteration}}}}"
  - extract: {{ var: seen, regex: "seen api-(\\w+)@" }}
  - ws_connect: /live
  - ws_send: '{{"submit": "{{{{seen}}}} {{{{iteration}}}}"}}'
  - ws_expect: {{ json: {{ "$.saved": "user{{{{user_id}}}} {{{{iteration}}}}" }}, timeout: 5s }}
  - extract: {{ var: saved, json: "$.saved", from: ws }}
  - ws_close
  - request: "/seen?v=ws-{{{{saved}}}}"
  - request: {{ url: /api/missing, expect: {{ status: 404 }} }}
  - think: 100ms
"##
    )
}

#[test]
fn protocol_users_keep_their_cookies_check_answers_and_count_what_they_sent() {
    let state = tempfile::tempdir().unwrap();
    let path = scenario_file(state.path(), "api.yaml", &scenario());
    let target = demo_target();
    let (code, report, output) = json_output(liveload(state.path()).args([
        "run",
        path.to_str().unwrap(),
        "--base-url",
        &target,
        "--output",
        "json",
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let visits = USERS * ITERATIONS;
    assert_eq!(report["iterations_ok"], visits, "{report}");
    assert_eq!(report["users_succeeded"], USERS);
    let seen = http_get(target.trim_start_matches("http://"), "/seen/list");
    let mut values: Vec<String> = seen
        .lines()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect();
    values.sort();
    let mut wanted: Vec<String> = (0..USERS)
        .flat_map(|u| {
            (0..ITERATIONS).flat_map(move |i| {
                [
                    format!("api-user{u}@example.com-{i}"),
                    format!("ws-user{u} {i}"),
                ]
            })
        })
        .collect();
    wanted.sort();
    assert_eq!(
        values, wanted,
        "each user its own cookie, header and iteration"
    );
    let counters = &report["counters"];
    let counted = |name: &str| counters[name].as_u64().unwrap_or(0);
    assert_eq!(counted("http.requests"), USERS + 4 * visits, "{counters}");
    assert_eq!(counted("http.status.2xx"), USERS + 3 * visits);
    assert_eq!(counted("http.status.4xx"), visits);
    assert_eq!(counted("ws.connections"), visits);
    assert_eq!(counted("ws.frames_sent"), visits);
    let latencies = &report["latencies"];
    assert_eq!(latencies["step:me"]["count"], visits);
    assert_eq!(latencies["step:login"]["count"], USERS);
    assert_eq!(latencies["http.ttfb"]["count"], counted("http.requests"));
    let reply = &latencies["ws.reply"];
    assert_eq!(reply["count"], visits);
    // The server answers after 150 ms; histograms keep 3 significant digits.
    assert!(
        reply["min_ms"].as_f64().unwrap() >= 149.0,
        "the server answers after 150 ms: {reply}"
    );
    assert!(
        !report.to_string().contains("t-user"),
        "the secret token stays out of the report"
    );
}

#[test]
fn steps_of_the_other_engine_are_refused_with_their_line() {
    let state = tempfile::tempdir().unwrap();
    for (name, text, says, line) in [
        (
            "browser-in-http.yaml",
            "name: a\nengine: http\nbase_url: http://x\nsteps:\n  - request: /\n  - click: '#b'\n",
            "is a browser step",
            6,
        ),
        (
            "http-in-browser.yaml",
            "name: a\nbase_url: http://x\nsteps:\n  - navigate: /\n  - request: /api\n",
            "is a protocol step",
            5,
        ),
        (
            "bad-path.yaml",
            "name: a\nengine: http\nbase_url: http://x\nsteps:\n  - request: /\n  - extract: { var: v, json: \"$..a\" }\n",
            "JSON path",
            6,
        ),
    ] {
        let path = scenario_file(state.path(), name, text);
        let (code, json, _) = json_output(liveload(state.path()).args([
            "validate",
            path.to_str().unwrap(),
            "--output",
            "json",
        ]));
        assert_eq!(code, 3, "{name}: {json}");
        let message = json["message"].as_str().unwrap();
        assert!(message.contains(says), "{name}: {message}");
        assert_eq!(json["line"], line, "{name}: located at the step: {json}");
    }
}
