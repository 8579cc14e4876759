//! Server mode (`liveload serve`) end to end: the real binary on a free port, runs on the
//! local backend against the demo target, the history in SQLite and PostgreSQL, and the
//! dashboard driven in real Chromium. What the server claims is checked against what the
//! provider (the local backend's process groups) and the target saw.

use std::time::Duration;

use liveload_e2e::server::{Served, create_token};
use liveload_e2e::*;

/// A protocol-user scenario (no browser: fast) that keeps `users` busy for `duration`.
fn scenario(name: &str, target: &str, users: u64, duration: &str) -> String {
    format!(
        "name: {name}\nengine: http\nbase_url: {target}\nusers: {users}\nduration: {duration}\n\
         steps:\n  - request: /seen?v={name}\n  - think: 100ms\n"
    )
}

/// A run request for `yaml`.
fn request(yaml: &str) -> String {
    serde_json::json!({ "scenario_yaml": yaml }).to_string()
}

/// Every route the API serves: the OpenAPI document must list exactly these.
const ROUTES: &[(&str, &str)] = &[
    ("delete", "/runs/{id}"),
    ("delete", "/session"),
    ("get", "/backends"),
    ("get", "/metrics"),
    ("get", "/nodes"),
    ("get", "/runs"),
    ("get", "/runs/{id}"),
    ("get", "/runs/{id}/charts"),
    ("get", "/runs/{id}/events"),
    ("get", "/runs/{id}/points"),
    ("get", "/runs/{id}/report"),
    ("get", "/runs/{id}/result"),
    ("get", "/runs/{id}/status"),
    ("get", "/scenarios"),
    ("get", "/scenarios/{name}"),
    ("post", "/runs"),
    ("post", "/runs/{id}/users"),
    ("post", "/session"),
    ("put", "/scenarios/{name}"),
];

#[test]
fn the_api_authenticates_validates_runs_streams_and_stops() {
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let token = create_token(state.path(), &[], "ci");
    let server = Served::start(state.path(), &[], &[]);

    // Auth: none, wrong, right.
    assert_eq!(server.call("GET", "/runs", "", None).0, 401);
    assert_eq!(server.call("GET", "/runs", "not-a-token", None).0, 401);
    let wrong_host = server.raw(
        "GET",
        "/api/v1/runs",
        &[
            format!("Authorization: Bearer {token}"),
            "Host: evil.example".into(),
        ],
        None,
    );
    assert_eq!(
        wrong_host.0, 421,
        "a rebound name is refused: {wrong_host:?}"
    );
    assert_eq!(
        server.json("GET", "/runs", &token, None, 200),
        serde_json::json!([])
    );

    // The OpenAPI document lists every route, and only those.
    let (status, document) = server.call("GET", "/openapi.json", "", None);
    assert_eq!(status, 200);
    let document: serde_json::Value = serde_json::from_str(&document).unwrap();
    let mut listed: Vec<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    listed.sort();
    let wanted: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, wanted);

    // An invalid scenario: 422 with the CLI's code, message, line and column.
    let bad = "name: bad\nbase_url: http://x\nusers: [\n";
    let answer = server.json("POST", "/runs", &token, Some(&request(bad)), 422);
    scenario_file(state.path(), "scenario.yaml", bad);
    let (code, cli, _) =
        json_output(liveload(state.path()).args(["validate", "scenario.yaml", "--output", "json"]));
    assert_eq!(code, 3);
    for field in ["error", "message", "line", "column"] {
        assert_eq!(answer[field], cli[field], "{field}: API {answer} CLI {cli}");
    }
    assert_eq!(answer["error"], "scenario_invalid");

    // Two scenarios at once; the same scenario twice is refused.
    let long = server.json(
        "POST",
        "/runs",
        &token,
        Some(&request(&scenario("long", &target, 3, "60s"))),
        201,
    );
    let short = server.json(
        "POST",
        "/runs",
        &token,
        Some(&request(&scenario("short", &target, 4, "3s"))),
        201,
    );
    let again = server.json(
        "POST",
        "/runs",
        &token,
        Some(&request(&scenario("long", &target, 1, "5s"))),
        409,
    );
    assert_eq!(again["error"], "scenario_is_already_running");
    let (long_id, short_id) = (
        long["id"].as_str().unwrap().to_string(),
        short["id"].as_str().unwrap().to_string(),
    );
    let running: Vec<serde_json::Value> = server
        .json("GET", "/runs", &token, None, 200)
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        running.iter().filter(|r| r["status"] == "running").count(),
        2
    );

    // The short one's events: points with users, then its end.
    let (status, events) = server.call("GET", &format!("/runs/{short_id}/events"), &token, None);
    assert_eq!(status, 200);
    let points: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .filter(|v: &serde_json::Value| v.get("second").is_some())
        .collect();
    assert!(points.iter().any(|p| p["active_users"] == 4), "{events}");
    assert!(events.contains("event: end"), "{events}");
    let ended = server.wait_ended(&short_id, &token, Duration::from_secs(60));
    assert_eq!(ended["status"], "passed", "{ended}");
    let result = server.json(
        "GET",
        &format!("/runs/{short_id}/result"),
        &token,
        None,
        200,
    );
    assert_eq!(result["users_succeeded"], 4, "{result}");
    let seen = http_get(target.trim_start_matches("http://"), "/seen/list");
    let visits = seen.lines().filter(|l| l.ends_with(" short")).count() as u64;
    assert_eq!(
        result["iterations_ok"], visits,
        "every iteration the server reports reached the target"
    );
    let (status, html) = server.call("GET", &format!("/runs/{short_id}/report"), &token, None);
    assert_eq!(status, 200);
    assert!(html.contains("<svg"), "the report has its charts");
    // The live charts are the report's: the same four, drawn over the seconds of the run.
    let (status, charts) = server.call("GET", &format!("/runs/{short_id}/charts"), &token, None);
    assert_eq!(status, 200);
    assert_eq!(
        charts.matches("<figure class=\"chart\"").count(),
        4,
        "{charts}"
    );
    assert!(charts.contains("Step latency, think excluded"));
    let drawn = charts
        .split("points=\"")
        .skip(1)
        .any(|rest| rest.split('"').next().unwrap_or("").split(' ').count() >= 2);
    assert!(drawn, "a line of at least two seconds: {charts}");
    let late = server.json(
        "POST",
        &format!("/runs/{short_id}/users"),
        &token,
        Some(r#"{"add":1}"#),
        409,
    );
    assert_eq!(late["error"], "run_ended");

    // The long one: its node is listed, users change through the API and the CLI.
    assert!(eventually(Duration::from_secs(60), || {
        server.json("GET", &format!("/runs/{long_id}"), &token, None, 200)["live"]["active_users"]
            == 3
    }));
    let nodes = server.json("GET", "/nodes", &token, None, 200);
    assert!(
        nodes[0]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["run_id"] == long_id.as_str()),
        "{nodes}"
    );
    let added = server.json(
        "POST",
        &format!("/runs/{long_id}/users"),
        &token,
        Some(r#"{"add":2}"#),
        200,
    );
    assert_eq!(added["target_users"], 5);
    let cli = liveload(state.path())
        .args([
            "users",
            "add",
            "1",
            "--server",
            &format!("http://{}", server.address),
            "--run",
            &long_id,
        ])
        .env("LIVELOAD_SERVER_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(String::from_utf8_lossy(&cli.stdout).contains("targets 6 users"));
    // The live status (and so the metrics) is refreshed every second.
    let mut metrics = String::new();
    let target_seen = eventually(Duration::from_secs(10), || {
        let (status, text) = server.call("GET", "/metrics", &token, None);
        assert_eq!(status, 200);
        metrics = text;
        metrics.contains(&format!("liveload_target_users{{run=\"{long_id}\"}} 6"))
    });
    assert!(target_seen, "{metrics}");
    assert!(
        metrics.contains("liveload_runs{status=\"passed\"} 1"),
        "{metrics}"
    );

    // Every route answers (none 404/405 for want of a handler).
    server.call(
        "PUT",
        "/scenarios/kept",
        &token,
        Some(&scenario("kept", &target, 1, "1s")),
    );
    for (method, path) in ROUTES {
        let path = path.replace("{id}", &short_id).replace("{name}", "kept");
        if *method == "delete" && path.starts_with("/runs") || path.ends_with("/events") {
            continue;
        }
        let (status, body) = server.call(&method.to_uppercase(), &path, &token, Some("{}"));
        assert!(
            status != 404 && status != 405,
            "{method} {path}: {status} {body}"
        );
    }

    // Stop it: torn down (no agent process left), recorded as stopped.
    let groups = agent_pids(state.path(), &long_id);
    assert!(!groups.is_empty());
    server.json("DELETE", &format!("/runs/{long_id}"), &token, None, 202);
    let stopped = server.wait_ended(&long_id, &token, Duration::from_secs(60));
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert!(
        processes_in_groups(&groups).is_empty(),
        "agents left: {:?}",
        processes_in_groups(&groups)
    );
    assert_eq!(
        server
            .call("DELETE", &format!("/runs/{long_id}"), &token, None)
            .0,
        409
    );

    // Logged at debug level, the token never appears.
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(!log.contains(&token), "the token was logged");
}

/// A restarted server keeps every finished run, and the run a crashed server held is marked
/// interrupted and its nodes destroyed before the new one listens.
fn restart_keeps_history_and_recovers(env: &[(&str, &str)]) {
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let token = create_token(state.path(), env, "ci");
    let server = Served::start(state.path(), env, &[]);
    let finished = server.json(
        "POST",
        "/runs",
        &token,
        Some(&request(&scenario("done", &target, 2, "2s"))),
        201,
    );
    let finished_id = finished["id"].as_str().unwrap().to_string();
    assert_eq!(
        server.wait_ended(&finished_id, &token, Duration::from_secs(60))["status"],
        "passed"
    );
    let held = server.json(
        "POST",
        "/runs",
        &token,
        Some(&request(&scenario("held", &target, 2, "300s"))),
        201,
    );
    let held_id = held["id"].as_str().unwrap().to_string();
    assert!(eventually(Duration::from_secs(60), || {
        server.json("GET", &format!("/runs/{held_id}"), &token, None, 200)["live"]["active_users"]
            == 2
    }));
    let groups = agent_pids(state.path(), &held_id);
    assert!(!groups.is_empty());
    // Freeze the agents first: an agent whose controller link breaks soon ends itself (its
    // dead-man switch), which would leave the server's recovery nothing to prove.
    for group in &groups {
        signal_group(*group, libc::SIGSTOP);
    }
    server.crash();
    let listed = || {
        let (_, nodes, _) = json_output(
            liveload(state.path()).args(["nodes", "--run", &held_id, "--output", "json"]),
        );
        nodes["nodes"].as_array().unwrap().len()
    };
    assert_eq!(
        listed(),
        1,
        "the provider still holds the crashed server's node"
    );
    let server = Served::start(state.path(), env, &[]);
    let record = server.json("GET", &format!("/runs/{held_id}"), &token, None, 200);
    assert_eq!(record["status"], "interrupted", "{record}");
    assert_eq!(
        listed(),
        0,
        "the interrupted run's node is destroyed at start-up"
    );
    assert!(
        processes_in_groups(&groups).is_empty(),
        "no agent process is left: {:?}",
        processes_in_groups(&groups)
    );
    let kept = server.json("GET", &format!("/runs/{finished_id}"), &token, None, 200);
    assert_eq!(kept["status"], "passed");
    let result = server.json(
        "GET",
        &format!("/runs/{finished_id}/result"),
        &token,
        None,
        200,
    );
    assert_eq!(result["users_succeeded"], 2);
    let points = server.json(
        "GET",
        &format!("/runs/{finished_id}/points"),
        &token,
        None,
        200,
    );
    assert!(
        !points.as_array().unwrap().is_empty(),
        "its per-second points are kept"
    );
    // A new run of the interrupted scenario is allowed (its lock died with the old server).
    let again = server.json(
        "POST",
        "/runs",
        &token,
        Some(&request(&scenario("held", &target, 1, "1s"))),
        201,
    );
    server.wait_ended(
        again["id"].as_str().unwrap(),
        &token,
        Duration::from_secs(60),
    );
}

#[test]
fn sqlite_history_survives_a_restart_and_a_crash_leaves_no_node() {
    restart_keeps_history_and_recovers(&[]);
}

#[test]
fn postgres_history_survives_a_restart_and_a_crash_leaves_no_node() {
    let postgres = liveload_test_support::postgres::Postgres::start();
    let url = postgres.fresh_database("restart");
    restart_keeps_history_and_recovers(&[("LIVELOAD_DATABASE", &url)]);
}

/// `liveload run --server` submits, follows, and exits as a local run would.
#[test]
fn run_with_server_submits_follows_and_reports() {
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let token = create_token(state.path(), &[], "cli");
    let server = Served::start(state.path(), &[], &[]);
    let file = scenario_file(
        state.path(),
        "remote.yaml",
        &scenario("remote", &target, 2, "2s"),
    );
    let url = format!("http://{}", server.address);
    let output = liveload(state.path())
        .args([
            "run",
            file.to_str().unwrap(),
            "--server",
            &url,
            "--output",
            "json",
        ])
        .env("LIVELOAD_SERVER_TOKEN", &token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["users_succeeded"], 2, "{report}");
    let id = report["run_id"].as_str().unwrap();
    let out = state.path().join("downloaded");
    let download = liveload(state.path())
        .args([
            "report",
            id,
            "--server",
            &url,
            "--out",
            out.to_str().unwrap(),
        ])
        .env("LIVELOAD_SERVER_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        download.status.success(),
        "{}",
        String::from_utf8_lossy(&download.stderr)
    );
    assert!(
        std::fs::read_to_string(out.join("report.html"))
            .unwrap()
            .contains("<svg")
    );
    // An invalid scenario exits 3 through the server as it does here, with its line.
    let bad = scenario_file(state.path(), "bad.yaml", "name: bad\nusers: [\n");
    let refused = liveload(state.path())
        .args(["run", bad.to_str().unwrap(), "--server", &url])
        .env("LIVELOAD_SERVER_TOKEN", &token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("scenario_invalid") && stderr.contains("line 2"),
        "{stderr}"
    );
    // Without a token the CLI says how to get one.
    let refused = liveload(state.path())
        .args(["nodes", "--server", &url])
        .env_remove("LIVELOAD_SERVER_TOKEN")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("LIVELOAD_SERVER_TOKEN"));
}

/// The dashboard in real Chromium (driven by `liveload try`, liveload's own browser steps):
/// log in, open a running run's page, see its users and a step p95 arrive and update, stop it
/// from the page, find it stopped in the history.
#[test]
fn the_dashboard_shows_a_run_live_and_stops_it() {
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let token = create_token(state.path(), &[], "dashboard");
    let server = Served::start(state.path(), &[], &[]);
    let done = server.json(
        "POST",
        "/runs",
        &token,
        Some(&request(&scenario("done", &target, 2, "2s"))),
        201,
    );
    let done = done["id"].as_str().unwrap().to_string();
    server.wait_ended(&done, &token, Duration::from_secs(60));
    server.call(
        "PUT",
        "/scenarios/stored",
        &token,
        Some(&scenario("stored", &target, 1, "2s")),
    );
    let run = server.json(
        "POST",
        "/runs",
        &token,
        Some(&request(&scenario("watched", &target, 3, "300s"))),
        201,
    );
    let id = run["id"].as_str().unwrap();
    let steps = format!(
        r##"name: dashboard
base_url: http://{address}
users: 1
duration: 60s
iteration_timeout: 120s
steps:
  - navigate: /login
  - fill: {{ selector: "#token", value: "{token}" }}
  - click: "#login"
  - wait_for: "#runs"
  - assert: {{ selector: "tr[data-run='{id}']", count: 1 }}
  - navigate: /runs/{id}
  - wait_for: {{ js: "parseInt(document.getElementById('users').textContent) === 3" }}
  - wait_for: {{ js: "/^[0-9]+[.][0-9]$/.test(document.getElementById('p95').textContent)" }}
  - wait_for: {{ js: "(document.querySelector('#users-spark polyline')?.getAttribute('points') || '').split(' ').length >= 3" }}
  - click: "#stop"
  - wait_for: {{ selector: "#status [data-status=stopped]", timeout: 60s }}
  - navigate: /
  - wait_for: "tr[data-run='{id}'] [data-status=stopped]"
  - navigate: /start
  - select: {{ selector: "#scenario", value: "stored" }}
  - fill: {{ selector: "#users-input", value: "2" }}
  - click: "#start"
  - wait_for: {{ selector: "#status [data-status=passed]", timeout: 60s }}
  - wait_for: "iframe.report"
  - navigate: /
  - check: "#runs tbody tr:first-child input.pick"
  - check: "tr[data-run='{done}'] input.pick"
  - click: "#compare"
  - wait_for: "#comparison"
  - assert: {{ text: "iterations ok" }}
"##,
        address = server.address
    );
    let file = scenario_file(state.path(), "dashboard.yaml", &steps);
    let shots = std::env::var_os("LIVELOAD_DASHBOARD_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| state.path().join("shots"));
    let output = liveload(state.path())
        .args([
            "try",
            file.to_str().unwrap(),
            "--screenshots",
            shots.to_str().unwrap(),
        ])
        .env("LIVELOAD_CHROMIUM", chromium())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let record = server.json("GET", &format!("/runs/{id}"), &token, None, 200);
    assert_eq!(record["status"], "stopped", "{record}");
    // The run started from the form ran the stored scenario with the users it was given.
    let runs = server.json("GET", "/runs", &token, None, 200);
    let started = &runs[0];
    assert_eq!(started["scenario"], "stored", "{runs}");
    assert_eq!(started["users"], 2, "{runs}");
    assert_eq!(started["status"], "passed", "{runs}");
}

/// The dashboard's cookie cannot be used from another site, requests never read the server's
/// files, and the server's limits hold whatever a request asks.
#[test]
fn cookies_files_and_limits_are_held_by_the_server() {
    let state = tempfile::tempdir().unwrap();
    let token = create_token(state.path(), &[], "ci");
    let server = Served::start(state.path(), &[], &["--max-allowed-nodes", "3"]);
    let login = serde_json::json!({ "token": token }).to_string();
    // Login needs the dashboard's header (a cross-site form cannot send it).
    assert_eq!(server.call("POST", "/session", "", Some(&login)).0, 403);
    let dashboard = "X-Liveload-Dashboard: 1".to_string();
    let answer = server.exchange(
        "POST",
        "/api/v1/session",
        std::slice::from_ref(&dashboard),
        Some(&login),
    );
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let cookie_line = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap();
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"));
    let cookie = format!("Cookie: liveload_token={token}");
    assert_eq!(
        server
            .raw("GET", "/api/v1/runs", std::slice::from_ref(&cookie), None)
            .0,
        200
    );
    // A change with the cookie alone is refused; with the header it is heard.
    let change = Some(r#"{"scenario": "none"}"#);
    assert_eq!(
        server
            .raw(
                "POST",
                "/api/v1/runs",
                std::slice::from_ref(&cookie),
                change
            )
            .0,
        403
    );
    assert_eq!(
        server
            .raw("POST", "/api/v1/runs", &[cookie, dashboard], change)
            .0,
        422
    );

    // A scenario sent over the API cannot make the server read a file.
    let secret = state.path().join("secret.csv");
    std::fs::write(&secret, "password\nhunter2\n").unwrap();
    let reads = format!(
        "name: reads\nbase_url: http://127.0.0.1:1\nusers: 1\nduration: 1s\ndata:\n  file: {}\nsteps:\n  - request: /\n",
        secret.display()
    );
    let refused = server.json("POST", "/runs", &token, Some(&request(&reads)), 422);
    assert_eq!(refused["error"], "scenario_invalid");
    assert_eq!(refused["line"], 5, "{refused}");
    assert!(!refused.to_string().contains("hunter2"));
    let stored = server.call("PUT", "/scenarios/..%2Fetc", &token, Some("name: x\n"));
    assert_eq!(stored.0, 422, "{stored:?}");

    // The server's node cap is a ceiling.
    let over = serde_json::json!({
        "scenario_yaml": scenario("over", "http://127.0.0.1:1", 1, "1s"),
        "max_allowed_nodes": 4
    });
    let refused = server.json("POST", "/runs", &token, Some(&over.to_string()), 422);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 nodes"),
        "{refused}"
    );
}

/// `liveload serve` refuses to serve beyond loopback without TLS, and a database password on
/// its command line; `--server` refuses plain HTTP to another machine.
#[test]
fn serve_refuses_what_would_expose_a_secret() {
    let state = tempfile::tempdir().unwrap();
    let open = liveload(state.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(open.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&open.stderr).contains("--tls-cert"));
    let password = liveload(state.path())
        .args(["serve", "--database", "postgres://u:hunter2@127.0.0.1:1/x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&password.stderr);
    assert_eq!(password.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("LIVELOAD_DATABASE") && !stderr.contains("hunter2"),
        "{stderr}"
    );
    let remote = liveload(state.path())
        .args(["nodes", "--server", "http://192.0.2.1:7654"])
        .env("LIVELOAD_SERVER_TOKEN", "x")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&remote.stderr).contains("https://"));
}

/// SIGTERM stops the server the clean way: every run is stopped and torn down, and the
/// history says `stopped` (not `interrupted`) when it starts again.
#[test]
fn sigterm_tears_every_run_down() {
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let token = create_token(state.path(), &[], "ci");
    let server = Served::start(state.path(), &[], &[]);
    let run = server.json(
        "POST",
        "/runs",
        &token,
        Some(&request(&scenario("term", &target, 2, "300s"))),
        201,
    );
    let id = run["id"].as_str().unwrap().to_string();
    assert!(eventually(Duration::from_secs(60), || {
        server.json("GET", &format!("/runs/{id}"), &token, None, 200)["live"]["active_users"] == 2
    }));
    let groups = agent_pids(state.path(), &id);
    signal(server.pid(), libc::SIGTERM);
    assert!(
        server.wait_exit(Duration::from_secs(60)),
        "the server exits after tearing down"
    );
    assert!(processes_in_groups(&groups).is_empty());
    let server = Served::start(state.path(), &[], &[]);
    assert_eq!(
        server.json("GET", &format!("/runs/{id}"), &token, None, 200)["status"],
        "stopped"
    );
}
