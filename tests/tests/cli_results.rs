//! What a finished or running test tells you, end to end through the CLI: thresholds and their
//! exit code, `abort_on_fail`, the HTML report, `liveload users` on a running test, the open
//! model, and a page crash counted as a failure.

use std::time::Duration;

use liveload_e2e::*;

#[test]
fn a_failing_threshold_exits_with_its_own_code() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let scenario = scenario_file(
        state.path(),
        "slow.yaml",
        "name: thresholds\nbase_url: http://127.0.0.1:1\nusers: 1\nduration: 2s\nthresholds:\n  - 'p95(step:navigate /) < 0.001ms'\n  - 'error_rate < 1%'\nsteps:\n  - navigate: /\n",
    );
    let (code, report, _) = json_output(liveload(state.path()).args([
        "demo",
        "--scenario",
        scenario.to_str().unwrap(),
        "--output",
        "json",
    ]));
    assert_eq!(code, 8, "{report}");
    assert_eq!(
        report["users_failed"], 0,
        "the users were fine; the threshold was not"
    );
    let verdicts = report["thresholds"].as_array().unwrap();
    assert_eq!(verdicts[0]["passed"], false);
    assert!(verdicts[0]["observed"].as_f64().unwrap() > 0.001);
    assert_eq!(verdicts[1]["passed"], true);
    assert!(report["aborted"].is_null());
}

#[test]
fn abort_on_fail_stops_the_run_early_and_leaves_nothing_running() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let scenario = scenario_file(
        state.path(),
        "abort.yaml",
        "name: abort\nbase_url: http://127.0.0.1:1\nusers: 2\nduration: 60s\niteration_timeout: 5s\nthresholds:\n  - { expr: 'error_rate < 1%', abort_on_fail: true }\nsteps:\n  - navigate: /\n  - assert: { text: 'not on this page' }\n",
    );
    let mut child = liveload(state.path())
        .args([
            "demo",
            "--scenario",
            scenario.to_str().unwrap(),
            "--output",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_, agents) = wait_for_agents(state.path(), &mut child, 1);
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(8), "{report}");
    assert_eq!(report["aborted"], "error_rate < 1%");
    assert_eq!(report["thresholds"][0]["aborted_run"], true);
    assert!(report["run_s"].as_f64().unwrap() < 30.0, "{report}");
    assert!(started.elapsed() < Duration::from_secs(40));
    assert!(
        processes_in_groups(&agents).is_empty(),
        "no agent or Chromium left"
    );
    assert!(local_runs(state.path()).is_empty());
}

#[test]
fn the_html_report_renders_in_chromium_with_charts_and_tables() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let reports = state.path().join("out");
    let (code, report, _) = json_output(liveload(state.path()).args([
        "demo",
        "--users",
        "3",
        "--duration",
        "6s",
        "--report-dir",
        reports.to_str().unwrap(),
        "--output",
        "json",
    ]));
    assert_eq!(code, 0, "{report}");
    // result.json is the same document as the JSON output, versioned.
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("result.json")).unwrap())
            .unwrap();
    assert_eq!(result["schema_version"], 2);
    assert_eq!(result["run_id"], report["run_id"]);
    assert!(
        result["series"].as_array().unwrap().len() >= 4,
        "a point per second"
    );
    // The node's own series: a point a second, with what its agent and Chromium cost. Three
    // users' Chromium takes well over 50 MiB (PSS) and some CPU; the node's users are there.
    let node_series = result["node_series"].as_array().unwrap();
    assert_eq!(node_series.len(), 1, "one node");
    let points = node_series[0]["points"].as_array().unwrap();
    assert!(points.len() >= 4, "{points:?}");
    let peak = |field: &str| {
        points
            .iter()
            .map(|p| p[field].as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    assert!(peak("memory_bytes") > 50.0 * 1024.0 * 1024.0, "{points:?}");
    assert!(peak("cpu_cores") > 0.0, "{points:?}");
    assert_eq!(peak("users"), 3.0);
    let iterations: f64 = points
        .iter()
        .map(|p| p["iterations"].as_f64().unwrap())
        .sum();
    assert_eq!(
        iterations,
        result["iterations_ok"].as_f64().unwrap() + result["iterations_failed"].as_f64().unwrap(),
        "the node's points add up to the run's iterations"
    );
    let markdown = std::fs::read_to_string(reports.join("report.md")).unwrap();
    assert!(markdown.contains("## Steps (ms)") && markdown.contains("step:navigate /"));

    // Render the page in headless Chromium and read back the DOM it built.
    let html = reports.join("report.html");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("<script") && !page.contains("http://") && !page.contains("https://"),
        "self-contained: no script, no external resource"
    );
    let out = std::process::Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("id=\"verdict\"") && dom.contains("PASSED"),
        "{dom}"
    );
    let charts = dom.matches("<figure class=\"chart\"").count();
    assert_eq!(
        charts, 6,
        "active users, throughput, latency, errors; node memory and CPU"
    );
    assert!(dom.contains("id=\"node-charts\"") && dom.contains("Node memory"));
    // Every chart line has several points.
    for points in dom.split("points=\"").skip(1) {
        let points = &points[..points.find('"').unwrap()];
        assert!(
            points.split(' ').count() >= 4,
            "a line with few points: {points}"
        );
    }
    for table in ["id=\"steps\"", "id=\"nodes\""] {
        let start = dom.find(table).unwrap_or_else(|| panic!("no {table}"));
        let rows = dom[start..]
            .split("</table>")
            .next()
            .unwrap()
            .matches("<tr>")
            .count();
        assert!(rows >= 2, "{table} has rows");
    }

    // Re-render from result.json, and compare it with itself.
    let again = state.path().join("again");
    let out = liveload(state.path())
        .args([
            "report",
            reports.join("result.json").to_str().unwrap(),
            "--out",
            again.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(again.join("report.html")).unwrap(),
        page
    );
    let out = liveload(state.path())
        .args([
            "report",
            reports.join("result.json").to_str().unwrap(),
            reports.join("result.json").to_str().unwrap(),
            "--out",
            again.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let compare = String::from_utf8_lossy(&out.stdout);
    assert!(
        compare.contains("| step:navigate / |") && compare.contains("+0.0 %"),
        "{compare}"
    );
}

#[test]
fn users_add_and_remove_change_a_running_test() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let mut run = liveload(state.path())
        .args([
            "demo",
            "--users",
            "2",
            "--duration",
            "60s",
            "--start-interval",
            "0s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let address = control_address(state.path());
    let bearer = format!(
        "Authorization: Bearer {}",
        control_token(state.path(), "demo")
    );
    let active = |address: &str| -> u64 {
        let (_, body) = http_request(address, "/status", &[&bearer]);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        status["active_users"].as_u64().unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(60), || active(&address) == 2),
        "2 users run"
    );
    // Without the token, or addressed by another name (a DNS-rebound web page): refused.
    let (code, _) = http_request(&address, "/status", &[]);
    assert_eq!(code, 401, "no token");
    let (code, _) = http_request(&address, "/status", &["Authorization: Bearer wrong-token"]);
    assert_eq!(code, 401, "wrong token");
    let port = address.rsplit(':').next().unwrap();
    let (code, _) = http_request(
        &address,
        "/status",
        &[&bearer, &format!("Host: attacker.example:{port}")],
    );
    assert_eq!(code, 421, "foreign Host");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.path().join("control/demo.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the token file is private");

    let out = liveload(state.path())
        .args(["users", "add", "3"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("targets 5 users"));
    assert!(
        eventually(Duration::from_secs(30), || active(&address) == 5),
        "5 users run"
    );

    let out = liveload(state.path())
        .args(["users", "remove", "4", "--force"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        eventually(Duration::from_secs(30), || active(&address) == 1),
        "1 user runs"
    );

    // Beyond the cluster's capacity (30 users on this node at the default profile): refused.
    let out = liveload(state.path())
        .args(["users", "add", "1000"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("room for"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Prometheus metrics while it runs.
    let (_, metrics) = http_request(&address, "/metrics", &[&bearer]);
    assert!(metrics.contains("liveload_active_users 1"), "{metrics}");
    assert!(metrics.contains("liveload_latency_ms{metric=\"step:navigate /\",quantile=\"0.95\"}"));

    signal(run.id(), libc::SIGTERM);
    assert_eq!(run.wait().unwrap().code(), Some(130));
    assert!(local_runs(state.path()).is_empty());
    assert!(
        !state.path().join("control/demo.json").exists(),
        "control record removed"
    );
}

#[test]
fn the_open_model_example_runs_green() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let scenario = repo().join("examples/open-model.yaml");
    let (code, report, out) = json_output(liveload(state.path()).args([
        "demo",
        "--scenario",
        scenario.to_str().unwrap(),
        "--duration",
        "8s",
        "--output",
        "json",
    ]));
    assert_eq!(
        code,
        0,
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 1 -> 5 per second over 8 s: about 24 arrivals.
    let arrivals = report["users"].as_u64().unwrap();
    assert!((18..=26).contains(&arrivals), "{arrivals}");
    assert_eq!(report["users_succeeded"], arrivals);
    assert!(
        report["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["passed"] == true)
    );
    assert!(report["latencies"]["iteration"]["count"].as_u64().unwrap() >= 18);
    assert!(report["counters"].get("arrivals_dropped").is_none());
}

#[test]
fn a_page_crash_is_counted_and_fails_the_iteration() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let scenario = scenario_file(
        state.path(),
        "crash.yaml",
        // `chrome:` is opened only because the scenario lists it (see the scheme tests).
        "name: crash\nbase_url: http://127.0.0.1:1\nusers: 1\nduration: 1s\niteration_timeout: 3s\nallow_schemes: [chrome]\nsteps:\n  - navigate: /\n  - navigate: 'chrome://crash'\n",
    );
    let (code, report, _) = json_output(liveload(state.path()).args([
        "demo",
        "--scenario",
        scenario.to_str().unwrap(),
        "--output",
        "json",
    ]));
    assert_eq!(code, 7, "{report}");
    assert_eq!(report["counters"]["browser.page_crashes"], 1, "{report}");
    assert_eq!(report["users_failed"], 1);
}

/// `liveload calibrate` on the demo scenario (a two-step staircase), then `plan --profile`:
/// the plan's sizing is the profile's and its node count follows from it; a flag still wins
/// over the profile.
#[test]
fn calibrate_writes_a_profile_that_plan_uses() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let profile_path = state.path().join("profile.json");
    let scenario = repo().join("examples/demo.yaml");
    let out = liveload(state.path())
        .args([
            "calibrate",
            scenario.to_str().unwrap(),
            "--base-url",
            &target,
        ])
        .args(["--steps", "1,4", "--step-duration", "6s", "--out"])
        .arg(&profile_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("USERS") && stdout.contains("Profile: browser"),
        "{stdout}"
    );
    let profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&profile_path).unwrap()).unwrap();
    eprintln!("FIGURE calibrate demo: {profile}");
    let steps = profile["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    // Four users' Chromium costs more than one's: the staircase measured real browsers.
    assert!(
        steps[1]["memory_mib"].as_f64().unwrap() > steps[0]["memory_mib"].as_f64().unwrap(),
        "{profile}"
    );
    let per_user = profile["context_memory_mib"].as_u64().unwrap();
    let browser = profile["browser_memory_mib"].as_u64().unwrap();
    let per_core = profile["contexts_per_core"].as_f64().unwrap();
    assert!(
        per_user >= 1 && browser >= 50 && per_core > 0.0,
        "{profile}"
    );
    assert!(
        profile["measured_on"]["chromium"]
            .as_str()
            .unwrap()
            .contains("Chromium")
    );

    // The plan reads it; its node count is the profile's arithmetic on the node's size (Fly's
    // performance-4x from its catalogue: 4 cores, 8 GiB; no account needed to plan).
    let plan = |extra: &[&str]| fly_plan(state.path(), &scenario, 40, &profile_path, extra);
    let planned = plan(&[]);
    let sizing = &planned["sizing"]["profile"];
    assert_eq!(
        sizing["context_memory_usage_bytes"].as_u64(),
        Some(per_user << 20)
    );
    assert_eq!(
        sizing["browser_memory_usage_bytes"].as_u64(),
        Some(browser << 20)
    );
    assert_eq!(sizing["browser_contexts_per_core"].as_f64(), Some(per_core));
    let usable = planned["capacity"]["usable_memory_bytes"].as_u64().unwrap();
    let by_memory = usable.saturating_sub(browser << 20) / (per_user << 20);
    let by_cpu = (planned["node_cores"].as_f64().unwrap() * per_core).floor() as u64;
    let users_per_node = by_memory.min(by_cpu);
    assert!(users_per_node > 0, "{planned}");
    assert_eq!(planned["users_per_node"].as_u64(), Some(users_per_node));
    assert_eq!(
        planned["nodes"].as_u64(),
        Some(40u64.div_ceil(users_per_node))
    );
    // A following run of the same scenario at the profile's memory density: what the node
    // measures per user (its steady memory, less the profile's browser, over the users) is
    // within 20 % of what the profile says.
    let users = 8u64;
    let (code, run, _) = json_output(
        liveload(state.path())
            // As long as a calibration step, measured over the same steady half.
            .args(["demo", "--users", &users.to_string(), "--duration", "6s"])
            .args([
                "--contexts-per-core",
                "100",
                "--output",
                "json",
                "--no-report",
            ])
            .arg("--profile")
            .arg(&profile_path),
    );
    assert_eq!(code, 0, "{run}");
    let points = run["node_series"][0]["points"].as_array().unwrap();
    let mut steady: Vec<f64> = points
        .iter()
        .filter(|p| p["t_s"].as_f64().unwrap() >= 3.0 && p["users"].as_u64() == Some(users))
        .map(|p| p["memory_bytes"].as_f64().unwrap() / (1024.0 * 1024.0))
        .collect();
    steady.sort_by(f64::total_cmp);
    assert!(
        !steady.is_empty(),
        "no point with all {users} users running: {points:?}"
    );
    let memory = steady[steady.len() / 2];
    let measured = (memory - browser as f64) / users as f64;
    eprintln!(
        "FIGURE calibrate check: {users} users, node memory {memory:.0} MiB: {measured:.1} MiB per user measured, {per_user} in the profile"
    );
    assert!(
        (measured / per_user as f64 - 1.0).abs() <= 0.2,
        "{measured:.1} MiB per user measured vs {per_user} profiled"
    );
    // Flags win over the profile.
    let overridden = plan(&["--context-memory-mib", "99"]);
    assert_eq!(
        overridden["sizing"]["profile"]["context_memory_usage_bytes"].as_u64(),
        Some(99 << 20)
    );
}

/// Calibration matters: the heavy page (`/table`, 500 rows re-rendered every second) costs
/// each user several times the demo page's memory, and for the same users the plan needs
/// proportionally more nodes (memory-bound here: users per core is held out of it).
#[test]
fn a_heavy_page_calibrates_to_more_memory_per_user_and_more_nodes() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let heavy_yaml = std::fs::read_to_string(repo().join("examples/heavy.yaml"))
        .unwrap()
        .replace("navigate: /table", "navigate: /table?rows=500");
    let heavy_path = scenario_file(state.path(), "heavy.yaml", &heavy_yaml);
    let calibrate = |scenario: &std::path::Path, out: &str| {
        let path = state.path().join(out);
        let run = liveload(state.path())
            .arg("calibrate")
            .arg(scenario)
            .args([
                "--base-url",
                &target,
                "--steps",
                "1,3",
                "--step-duration",
                "6s",
            ])
            .arg("--out")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            run.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let profile: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        (path, profile["context_memory_mib"].as_u64().unwrap())
    };
    let (demo_profile, demo_per_user) = calibrate(&repo().join("examples/demo.yaml"), "demo.json");
    let (heavy_profile, heavy_per_user) = calibrate(&heavy_path, "heavy.json");
    assert!(
        (5..=100).contains(&demo_per_user),
        "the demo's own figure is plausible: {demo_per_user} MiB"
    );
    // Memory-bound: users per core is held out of the comparison.
    let nodes = |profile: &std::path::Path| {
        let demo = repo().join("examples/demo.yaml");
        fly_plan(
            state.path(),
            &demo,
            1000,
            profile,
            &["--contexts-per-core", "1000"],
        )["nodes"]
            .as_u64()
            .unwrap()
    };
    let (demo_nodes, heavy_nodes) = (nodes(&demo_profile), nodes(&heavy_profile));
    eprintln!(
        "FIGURE calibrate heavy vs demo: {heavy_per_user} vs {demo_per_user} MiB per user; 1000 users on performance-4x: {heavy_nodes} vs {demo_nodes} nodes"
    );
    assert!(
        heavy_per_user >= 2 * demo_per_user,
        "{heavy_per_user} vs {demo_per_user} MiB per user"
    );
    assert!(
        heavy_nodes >= 2 * demo_nodes,
        "{heavy_nodes} vs {demo_nodes} nodes"
    );
}

/// `liveload plan` of `users` on Fly's performance-4x from its catalogue (4 cores, 8 GiB; no
/// account needed) with `profile`, as JSON.
fn fly_plan(
    state: &std::path::Path,
    scenario: &std::path::Path,
    users: u64,
    profile: &std::path::Path,
    extra: &[&str],
) -> serde_json::Value {
    let (code, value, _) = json_output(
        liveload(state)
            .arg("plan")
            .arg(scenario)
            .args(["--users", &users.to_string(), "--backend", "fly"])
            .args([
                "--fly-app",
                "calibrated",
                "--fly-image",
                "registry.fly.io/calibrated:x",
            ])
            .args([
                "--fly-size",
                "performance-4x",
                "--max-allowed-nodes",
                "1000",
            ])
            .args(["--output", "json", "--profile"])
            .arg(profile)
            .args(extra),
    );
    assert_eq!(code, 0, "{value}");
    value["plan"].clone()
}
