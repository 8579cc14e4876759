//! `liveload run` / `demo` end to end: real agents, real Chromium, the documented exit codes,
//! and nothing left running afterwards.

use std::time::Duration;

use liveload_e2e::*;

const FAILING: &str = r##"name: failing
base_url: http://127.0.0.1:1
users: 2
duration: 3s
iteration_timeout: 1500ms
steps:
  - navigate: /
  - wait_for: "#does-not-exist"
"##;

fn demo_scenario() -> std::path::PathBuf {
    repo().join("examples/demo.yaml")
}

/// Nothing of any run recorded in `state` is still alive.
fn assert_nothing_left(state: &std::path::Path) {
    for run in local_runs(state) {
        let pids = agent_pids(state, &run);
        assert!(
            processes_in_groups(&pids).is_empty(),
            "run {run} left processes behind"
        );
    }
}

#[test]
fn demo_with_twenty_users_succeeds_on_real_chromium() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let (code, report, out) = json_output(liveload(state.path()).args([
        "demo",
        "--users",
        "20",
        "--duration",
        "10s",
        "--output",
        "json",
    ]));
    assert_eq!(
        code,
        0,
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["users_succeeded"], 20, "{report}");
    assert_eq!(report["users_failed"], 0);
    let nodes = report["nodes"].as_array().unwrap();
    let assigned: u64 = nodes.iter().map(|n| n["users"].as_u64().unwrap()).sum();
    assert_eq!(assigned, 20);
    for node in nodes {
        assert!(node["facts"]["total_memory_bytes"].as_u64().unwrap() > 0);
        assert!(node["facts"]["logical_cores"].as_u64().unwrap() >= 1);
        let chromium = node["facts"]["chromium"]["version"].as_str().unwrap();
        assert!(chromium.contains("Chrom"), "{chromium}");
    }
    let latencies = report["latencies"].as_object().unwrap();
    let navigate = &latencies["step:navigate /"];
    assert!(navigate["count"].as_u64().unwrap() >= 20);
    assert!(navigate["p95_ms"].as_f64().unwrap() >= navigate["p50_ms"].as_f64().unwrap());
    assert!(report["iterations_ok"].as_u64().unwrap() >= 20);
    assert_nothing_left(state.path());
    assert!(local_runs(state.path()).is_empty(), "run records removed");
}

#[test]
fn text_output_prints_facts_users_per_node_and_percentiles() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let out = liveload(state.path())
        .args(["demo", "--users", "2", "--duration", "3s"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for needle in [
        "Nodes (facts measured by each agent)",
        "CAPACITY",
        "USERS",
        "p95",
        "2 succeeded, 0 failed",
        // The one row that is no time says its unit.
        "page.cls is the layout-shift score in thousandths",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn failing_users_exit_with_run_failed_code() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let scenario = scenario_file(state.path(), "failing.yaml", FAILING);
    let (code, report, _) = json_output(liveload(state.path()).args([
        "run",
        scenario.to_str().unwrap(),
        "--base-url",
        &target,
        "--output",
        "json",
    ]));
    assert_eq!(code, 7, "{report}");
    assert_eq!(report["users_failed"], 2);
    assert!(report["iterations_failed"].as_u64().unwrap() >= 2);
    assert_nothing_left(state.path());
}

#[test]
fn missing_chromium_is_a_run_failure_that_still_tears_down() {
    let state = tempfile::tempdir().unwrap();
    let (code, json, _) = json_output(liveload(state.path()).args([
        "demo",
        "--users",
        "1",
        "--duration",
        "2s",
        "--chromium",
        "/nonexistent/chromium",
        "--output",
        "json",
    ]));
    assert_eq!(code, 7, "{json}");
    assert_eq!(json["error"], "run_failed");
    assert!(
        json["message"].as_str().unwrap().contains("Chromium"),
        "{json}"
    );
    assert_nothing_left(state.path());
    assert!(local_runs(state.path()).is_empty());
}

#[test]
fn node_too_small() {
    let state = tempfile::tempdir().unwrap();
    let (code, json, _) = json_output(liveload(state.path()).args([
        "run",
        demo_scenario().to_str().unwrap(),
        "--browser-memory-mib",
        "100000000",
        "--output",
        "json",
    ]));
    assert_eq!(code, 5, "{json}");
    assert_eq!(json["error"], "node_too_small");
    assert!(local_runs(state.path()).is_empty(), "nothing was booted");
}

#[test]
fn necessary_nodes_exceeds_max_allowed_nodes() {
    let state = tempfile::tempdir().unwrap();
    let (code, json, _) = json_output(liveload(state.path()).args([
        "run",
        demo_scenario().to_str().unwrap(),
        "--users",
        "1000",
        "--contexts-per-core",
        "1",
        "--local-nodes",
        "2",
        "--max-allowed-nodes",
        "2",
        "--output",
        "json",
    ]));
    assert_eq!(code, 5, "{json}");
    assert_eq!(json["error"], "necessary_nodes_exceeds_max_allowed_nodes");
    // Each of 2 shares has (cores / 2) cores at 1 context per core.
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let per_node = (cores / 2).max(1);
    assert_eq!(json["necessary"], 1000u64.div_ceil(per_node), "{json}");
    assert_eq!(json["max_allowed"], 2);
    assert!(local_runs(state.path()).is_empty(), "nothing was booted");
}

#[test]
fn cluster_node_creation_timeout_destroys_the_node() {
    let state = tempfile::tempdir().unwrap();
    let (code, json, _) = json_output(liveload(state.path()).args([
        "demo",
        "--users",
        "1",
        "--creation-timeout",
        "500ms",
        "--local-debug-delay-listen-ms",
        "10000",
        "--output",
        "json",
    ]));
    assert_eq!(code, 6, "{json}");
    assert_eq!(json["error"], "cluster_node_creation_timeout");
    assert_nothing_left(state.path());
    assert!(local_runs(state.path()).is_empty());
}

#[test]
fn invalid_scenario_names_file_and_line() {
    let state = tempfile::tempdir().unwrap();
    let scenario = scenario_file(
        state.path(),
        "bad.yaml",
        "name: x\nbase_url: http://127.0.0.1:1\nsteps:\n  - navigate: /\n  - fly_to: moon\n",
    );
    let out = liveload(state.path())
        .args(["run", scenario.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:5:"), "{stderr}");
    assert!(stderr.contains("fly_to"), "{stderr}");
}

#[test]
fn missing_agent_binary_is_a_backend_error() {
    let state = tempfile::tempdir().unwrap();
    let (code, json, _) = json_output(
        liveload(state.path())
            .env("LIVELOAD_AGENT_BIN", "/nonexistent/liveload-agent")
            .args(["demo", "--users", "1", "--output", "json"]),
    );
    assert_eq!(code, 6, "{json}");
    assert_eq!(json["error"], "backend_error");
    assert_eq!(json["kind"], "bad_image");
}

#[test]
fn unusable_state_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, json, _) = json_output(
        liveload(dir.path())
            .env("LIVELOAD_STATE_DIR", "/dev/null/liveload")
            .args(["demo", "--users", "1", "--output", "json"]),
    );
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["error"], "io_error");
}

#[test]
fn scenario_is_already_running() {
    let state = tempfile::tempdir().unwrap();
    let mut first = liveload(state.path())
        .args([
            "demo",
            "--users",
            "1",
            "--duration",
            "60s",
            "--output",
            "json",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_agents(state.path(), &mut first, 1);
    let (code, json, _) = json_output(liveload(state.path()).args([
        "demo",
        "--users",
        "1",
        "--duration",
        "2s",
        "--output",
        "json",
    ]));
    signal(first.id(), libc::SIGTERM);
    let status = first.wait().unwrap();
    assert_eq!(code, 4, "{json}");
    assert_eq!(json["error"], "scenario_is_already_running");
    // The interrupted first run exits 130 and destroys its nodes.
    assert_eq!(status.code(), Some(130));
    assert_nothing_left(state.path());
    assert!(local_runs(state.path()).is_empty());
}

#[test]
fn sigkilled_controller_leaves_no_agent_or_chromium_within_grace() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(5);
    let mut controller = liveload(state.path())
        .args([
            "demo",
            "--users",
            "3",
            "--duration",
            "120s",
            "--grace",
            "5s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_, agents) = wait_for_agents(state.path(), &mut controller, 1);
    // Wait until Chromium runs in the agents' groups (users have started).
    assert!(
        eventually(Duration::from_secs(60), || {
            processes_in_groups(&agents)
                .iter()
                .any(|(_, cmd)| cmd.contains("liveload-chromium-"))
        }),
        "Chromium never started"
    );
    signal(controller.id(), libc::SIGKILL);
    let killed = std::time::Instant::now();
    controller.wait().unwrap();
    let gone = eventually(grace, || processes_in_groups(&agents).is_empty());
    assert!(
        gone,
        "still running after the grace period: {:?}",
        processes_in_groups(&agents)
    );
    eprintln!(
        "FIGURE controller killed mid-run: agents and Chromium gone {:.1}s after the SIGKILL",
        killed.elapsed().as_secs_f64()
    );
}

#[test]
fn cleanup_removes_a_crashed_runs_agents() {
    let state = tempfile::tempdir().unwrap();
    // Agents not tied to the controller, with a long grace: as after a crash where the
    // dead-man switch has not fired yet.
    let mut controller = liveload(state.path())
        .args([
            "demo",
            "--users",
            "2",
            "--local-nodes",
            "2",
            "--contexts-per-core",
            "1",
            "--duration",
            "120s",
            "--grace",
            "120s",
            "--local-keep-orphans",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (run_id, agents) = wait_for_agents(state.path(), &mut controller, 1);
    std::thread::sleep(Duration::from_millis(500));
    signal(controller.id(), libc::SIGKILL);
    controller.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !processes_in_groups(&agents).is_empty(),
        "orphaned agents survive the crash"
    );
    let (code, listed, _) = json_output(liveload(state.path()).args(["nodes", "--output", "json"]));
    assert_eq!(code, 0);
    assert!(!listed["nodes"].as_array().unwrap().is_empty(), "{listed}");

    let (code, cleaned, _) =
        json_output(liveload(state.path()).args(["cleanup", "--run", &run_id, "--output", "json"]));
    assert_eq!(code, 0, "{cleaned}");
    let destroyed = cleaned["destroyed"].as_array().unwrap();
    assert!(!destroyed.is_empty());
    assert!(destroyed.iter().all(|n| n["run_id"] == run_id.as_str()));
    assert!(
        processes_in_groups(&agents).is_empty(),
        "cleanup killed every agent and Chromium"
    );
    let (_, listed, _) = json_output(liveload(state.path()).args(["nodes", "--output", "json"]));
    assert!(listed["nodes"].as_array().unwrap().is_empty(), "{listed}");
}

#[test]
fn the_run_token_never_reaches_the_controllers_logs_even_at_trace() {
    let state = tempfile::tempdir().unwrap();
    // The agent reads its token from a file and deletes it: a wrapper named like the agent
    // keeps a copy for the test before starting the real one.
    let wrapper_dir = tempfile::tempdir().unwrap();
    let (wrapper, captured) = token_capturing_agent(wrapper_dir.path());
    let child = liveload(state.path())
        .env("LIVELOAD_AGENT_BIN", &wrapper)
        .env("LIVELOAD_LOG", "trace")
        .args(["demo", "--users", "1", "--duration", "3s", "--tls"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    let (_, agents) = wait_for_agents(state.path(), &mut child, 1);
    let token = std::fs::read_to_string(&captured).expect("the agent was started with a token");
    // Not in the agent's environment (Chromium would inherit it), only in the deleted file.
    let environ = std::fs::read(format!("/proc/{}/environ", agents[0])).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains(&token),
        "the token is in the agent's environment"
    );
    assert!(token.len() >= 32);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stderr.contains("creating node") && stderr.contains("node ready"),
        "logging is on: {stderr}"
    );
    assert!(!stderr.contains(&token), "the token leaked into the log");
    assert!(!stdout.contains(&token), "the token leaked into the report");
}

#[test]
fn every_step_kind_runs_green_against_the_demo_target() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let scenario = repo().join("examples/every-step.yaml");
    let (code, report, out) = json_output(liveload(state.path()).args([
        "demo",
        "--scenario",
        scenario.to_str().unwrap(),
        "--output",
        "json",
    ]));
    assert_eq!(
        code,
        0,
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["users_succeeded"], 2);
    assert_eq!(report["iterations_failed"], 0);
    let names: Vec<&String> = report["latencies"].as_object().unwrap().keys().collect();
    // Every kind shows up as a timed step (halt included; fail is never reached).
    for prefix in [
        "step:navigate",
        "step:reload",
        "step:click",
        "step:fill",
        "step:clear",
        "step:press",
        "step:check",
        "step:uncheck",
        "step:select",
        "step:hover",
        "step:focus",
        "step:blur",
        "step:wait_for #",
        "step:wait_for text",
        "step:wait_for url",
        "step:wait_for network_idle",
        "step:wait_for js",
        "step:wait_for #flash hidden",
        "step:liveview_connected",
        "step:liveview_idle",
        "step:liveview_submit",
        "step:assert text",
        "step:assert count",
        "step:assert visible",
        "step:extract",
        "step:think",
        "step:eval",
        "group:sign up",
        "step:halt",
        "step:open about",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(prefix)),
            "no metric {prefix}: {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.starts_with("step:fail")),
        "halt ends the iteration"
    );
    // CSV data and extracted variables reached the page: the live form saved the CSV name.
    let saved = &report["latencies"]["step:assert text Saved {{name}}"];
    assert_eq!(saved["count"], report["iterations_ok"]);
}

#[test]
fn a_failing_step_fails_the_iteration_and_names_the_step() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let scenario = scenario_file(
        state.path(),
        "assert.yaml",
        "name: wrong-count\nbase_url: http://127.0.0.1:1\nusers: 1\nduration: 2s\nsteps:\n  - navigate: /\n  - assert: { selector: li.item, count: 4 }\n  - fail: unreachable\n",
    );
    let (code, report, _) = json_output(liveload(state.path()).args([
        "demo",
        "--scenario",
        scenario.to_str().unwrap(),
        "--output",
        "json",
    ]));
    assert_eq!(code, 7, "{report}");
    assert_eq!(report["users_failed"], 1);
    assert!(
        report["counters"]["step:assert count li.item = 4:failed"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(
        report["counters"].get("step:fail:failed").is_none(),
        "stops at the failing step"
    );
}

#[test]
fn validate_exit_codes() {
    let state = tempfile::tempdir().unwrap();
    let good = repo().join("examples/every-step.yaml");
    let out = liveload(state.path())
        .args(["validate", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid scenario 'every-step'"));
    for (name, text, line, expect) in [
        (
            "unknown.yaml",
            "name: x\nbase_url: http://h\nsteps:\n  - teleport: /\n",
            4,
            "teleport",
        ),
        (
            "type.yaml",
            "name: x\nbase_url: http://h\nsteps:\n  - repeat: { times: lots, steps: [reload] }\n",
            4,
            "invalid",
        ),
        (
            "duration.yaml",
            "name: x\nbase_url: http://h\nduration: 3 weeks\nsteps:\n  - reload\n",
            3,
            "unknown unit",
        ),
        (
            "selector.yaml",
            "name: x\nbase_url: http://h\nsteps:\n  - fill: { value: x }\n",
            4,
            "selector",
        ),
        (
            "template.yaml",
            "name: x\nbase_url: http://h\nsteps:\n  - navigate: /{{who}}\n",
            4,
            "who",
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
        assert_eq!(json["error"], "scenario_invalid");
        assert_eq!(json["line"], line, "{name}: {json}");
        assert!(
            json["message"].as_str().unwrap().contains(expect),
            "{name}: {json}"
        );
    }
}

/// `liveload bench users` measures pages that still behave *and render*: a Chromium switch
/// that stops frames (`--disable-threaded-compositing`, in headless mode) cuts CPU per user
/// threefold while the page's socket and DOM look alive, so the bench's check for two
/// animation frames must count its user as failed, and pass the default browser's.
#[test]
fn bench_users_counts_a_page_that_stops_rendering_as_failed() {
    let state = tempfile::tempdir().unwrap();
    let failed_with = |browser_args: &str| {
        let out = liveload(state.path())
            .args(["bench", "users", "--users", "1", "--window", "1"])
            .env("LIVELOAD_BROWSER_ARGS", browser_args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let row = text
            .lines()
            .find(|line| line.split_whitespace().next() == Some("1"))
            .unwrap_or_else(|| panic!("no row for 1 user in:\n{text}"));
        let failed: u64 = row.split_whitespace().last().unwrap().parse().unwrap();
        (failed, text)
    };
    let (failed, text) = failed_with("");
    assert_eq!(failed, 0, "the default browser renders:\n{text}");
    let (failed, text) = failed_with("--disable-threaded-compositing");
    assert_eq!(failed, 1, "a page without frames is no measure:\n{text}");
}
