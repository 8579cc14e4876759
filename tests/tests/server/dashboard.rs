//! The dashboard in real Chromium.

use std::time::Duration;

use liveload_e2e::server::{Served, create_token};
use liveload_e2e::*;

use crate::{request, scenario};

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
