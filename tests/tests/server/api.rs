//! The API: authentication, the OpenAPI document, validation, several runs at once, the
//! event stream, users changes, every route, stopping; and `liveload run --server`.

use std::time::Duration;

use liveload_e2e::server::{Served, create_token};
use liveload_e2e::*;

use crate::{ROUTES, request, scenario};

#[test]
fn the_api_authenticates_validates_runs_streams_and_stops() {
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let token = create_token(state.path(), &[], "ci");
    let server = Served::start(state.path(), &[], &[]);
    auth_and_document(&server, &token);
    invalid_scenario(&server, &token, state.path());
    let (long_id, short_id) = two_runs_at_once(&server, &token, &target);
    short_run_streams_and_reports(&server, &token, &target, &short_id);
    long_run_changes_users(&server, &token, state.path(), &long_id);
    every_route_answers(&server, &token, &target, &short_id);
    stop_tears_down(&server, &token, state.path(), &long_id);
    // Logged at debug level, the token never appears.
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(!log.contains(&token), "the token was logged");
}

/// No token, a wrong one, a rebound host name; then the OpenAPI document lists every route.
fn auth_and_document(server: &Served, token: &str) {
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
        server.json("GET", "/runs", token, None, 200),
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
}

/// An invalid scenario: 422 with the CLI's code, message, line and column.
fn invalid_scenario(server: &Served, token: &str, state: &std::path::Path) {
    // An invalid scenario: 422 with the CLI's code, message, line and column.
    let bad = "name: bad\nbase_url: http://x\nusers: [\n";
    let answer = server.json("POST", "/runs", token, Some(&request(bad)), 422);
    scenario_file(state, "scenario.yaml", bad);
    let (code, cli, _) =
        json_output(liveload(state).args(["validate", "scenario.yaml", "--output", "json"]));
    assert_eq!(code, 3);
    for field in ["error", "message", "line", "column"] {
        assert_eq!(answer[field], cli[field], "{field}: API {answer} CLI {cli}");
    }
    assert_eq!(answer["error"], "scenario_invalid");
}

/// Two scenarios at once; the same scenario twice is refused. The ids (long, short).
fn two_runs_at_once(server: &Served, token: &str, target: &str) -> (String, String) {
    // Two scenarios at once; the same scenario twice is refused.
    let long = server.json(
        "POST",
        "/runs",
        token,
        Some(&request(&scenario("long", target, 3, "60s"))),
        201,
    );
    let short = server.json(
        "POST",
        "/runs",
        token,
        Some(&request(&scenario("short", target, 4, "3s"))),
        201,
    );
    let again = server.json(
        "POST",
        "/runs",
        token,
        Some(&request(&scenario("long", target, 1, "5s"))),
        409,
    );
    assert_eq!(again["error"], "scenario_is_already_running");
    let (long_id, short_id) = (
        long["id"].as_str().unwrap().to_string(),
        short["id"].as_str().unwrap().to_string(),
    );
    let running: Vec<serde_json::Value> = server
        .json("GET", "/runs", token, None, 200)
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        running.iter().filter(|r| r["status"] == "running").count(),
        2
    );

    (long_id, short_id)
}

/// The short run's events, result, report and charts.
fn short_run_streams_and_reports(server: &Served, token: &str, target: &str, short_id: &str) {
    // The short one's events: points with users, then its end.
    let (status, events) = server.call("GET", &format!("/runs/{short_id}/events"), token, None);
    assert_eq!(status, 200);
    let points: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .filter(|v: &serde_json::Value| v.get("second").is_some())
        .collect();
    assert!(points.iter().any(|p| p["active_users"] == 4), "{events}");
    assert!(events.contains("event: end"), "{events}");
    let ended = server.wait_ended(short_id, token, Duration::from_secs(60));
    assert_eq!(ended["status"], "passed", "{ended}");
    let result = server.json("GET", &format!("/runs/{short_id}/result"), token, None, 200);
    assert_eq!(result["users_succeeded"], 4, "{result}");
    let seen = http_get(target.trim_start_matches("http://"), "/seen/list");
    let visits = seen.lines().filter(|l| l.ends_with(" short")).count() as u64;
    assert_eq!(
        result["iterations_ok"], visits,
        "every iteration the server reports reached the target"
    );
    let (status, html) = server.call("GET", &format!("/runs/{short_id}/report"), token, None);
    assert_eq!(status, 200);
    assert!(html.contains("<svg"), "the report has its charts");
    // The live charts are the report's: the same four, drawn over the seconds of the run.
    let (status, charts) = server.call("GET", &format!("/runs/{short_id}/charts"), token, None);
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
        token,
        Some(r#"{"add":1}"#),
        409,
    );
    assert_eq!(late["error"], "run_ended");
}

/// The long run: its node is listed, users change through the API and the CLI.
fn long_run_changes_users(server: &Served, token: &str, state: &std::path::Path, long_id: &str) {
    // The long one: its node is listed, users change through the API and the CLI.
    assert!(eventually(Duration::from_secs(60), || {
        server.json("GET", &format!("/runs/{long_id}"), token, None, 200)["live"]["active_users"]
            == 3
    }));
    let nodes = server.json("GET", "/nodes", token, None, 200);
    assert!(
        nodes[0]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["run_id"] == long_id),
        "{nodes}"
    );
    let added = server.json(
        "POST",
        &format!("/runs/{long_id}/users"),
        token,
        Some(r#"{"add":2}"#),
        200,
    );
    assert_eq!(added["target_users"], 5);
    let cli = liveload(state)
        .args([
            "users",
            "add",
            "1",
            "--server",
            &format!("http://{}", server.address),
            "--run",
            long_id,
        ])
        .env("LIVELOAD_SERVER_TOKEN", token)
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
        let (status, text) = server.call("GET", "/metrics", token, None);
        assert_eq!(status, 200);
        metrics = text;
        metrics.contains(&format!("liveload_target_users{{run=\"{long_id}\"}} 6"))
    });
    assert!(target_seen, "{metrics}");
    assert!(
        metrics.contains("liveload_runs{status=\"passed\"} 1"),
        "{metrics}"
    );
}

/// Every route answers (none 404/405 for want of a handler).
fn every_route_answers(server: &Served, token: &str, target: &str, short_id: &str) {
    // Every route answers (none 404/405 for want of a handler).
    server.call(
        "PUT",
        "/scenarios/kept",
        token,
        Some(&scenario("kept", target, 1, "1s")),
    );
    for (method, path) in ROUTES {
        let path = path.replace("{id}", short_id).replace("{name}", "kept");
        if *method == "delete" && path.starts_with("/runs") || path.ends_with("/events") {
            continue;
        }
        let (status, body) = server.call(&method.to_uppercase(), &path, token, Some("{}"));
        assert!(
            status != 404 && status != 405,
            "{method} {path}: {status} {body}"
        );
    }
}

/// Stop the long run: torn down (no agent process left), recorded as stopped.
fn stop_tears_down(server: &Served, token: &str, state: &std::path::Path, long_id: &str) {
    // Stop it: torn down (no agent process left), recorded as stopped.
    let groups = agent_pids(state, long_id);
    assert!(!groups.is_empty());
    server.json("DELETE", &format!("/runs/{long_id}"), token, None, 202);
    let stopped = server.wait_ended(long_id, token, Duration::from_secs(60));
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert!(
        processes_in_groups(&groups).is_empty(),
        "agents left: {:?}",
        processes_in_groups(&groups)
    );
    assert_eq!(
        server
            .call("DELETE", &format!("/runs/{long_id}"), token, None)
            .0,
        409
    );
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
