//! LiveView users two ways, proven by one server: the demo target's LiveView (`/lv`), which
//! speaks Phoenix LiveView's wire protocol. Phoenix's own JavaScript client (npm
//! `phoenix_live_view`, pinned, installed by the test command) runs it in real Chromium
//! (`engine: browser`): that proves the server. The same scenario then runs with liveload's
//! native client (`engine: liveview`), and both must cause the same server-side effects
//! (joins, clicks, form changes and saves, patches, leaves, counted by the server) and
//! measure the same server delay in `liveview.event`.

use liveload_e2e::*;

const USERS: u64 = 2;
const ITERATIONS: u64 = 2;

/// The scenario, for `engine`. Each iteration: load the page, click twice (a `phx-value`
/// each), type into a `phx-change` form and submit it (the server takes 100 ms to save), type
/// again and clear the field, patch the URL, navigate live to another view and back, leave through a
/// server-side `live_redirect`, and reload.
fn scenario(engine: &str) -> String {
    format!(
        r##"name: lv-{engine}
engine: {engine}
base_url: http://127.0.0.1:1
users: {USERS}
duration: 90s
iterations: {ITERATIONS}
iteration_timeout: 60s
steps:
  - navigate: /lv
  - liveview_connected
  - click: "#inc"
  - wait_for: {{ text: "Count: 1" }}
  - click: "#add5"
  - wait_for: {{ selector: "#count", state: visible }}
  - wait_for: {{ text: "Count: 6" }}
  - fill: {{ selector: "#note-text", value: "note{{{{user_id}}}}" }}
  - wait_for: {{ text: "Typed 5 characters" }}
  - liveview_submit: {{ form: "#note", wait_for: "li.note" }}
  - assert: {{ text: "Saved: note{{{{user_id}}}}" }}
  - assert: {{ selector: "li.note", count: 1 }}
  - extract: {{ var: count, selector: "#count" }}
  - fill: {{ selector: "#note-text", value: "abc" }}
  - wait_for: {{ text: "Typed 3 characters" }}
  - clear: "#note-text"
  - wait_for: {{ text: "Typed 0 characters" }}
  - select: {{ selector: "#size", value: "large" }}
  - extract: {{ var: size, selector: "#size", value: true }}
  - fill: {{ selector: "#note-text", value: "{{{{size}}}}" }}
  - wait_for: {{ text: "Typed 5 characters" }}
  - click: "#next-page"
  - wait_for: {{ url: "*page=2" }}
  - wait_for: {{ text: "Page 2" }}
  - click: "#to-other"
  - wait_for: {{ text: "Visits: 1" }}
  - click: "#back"
  - wait_for: {{ text: "Count: 0" }}
  - click: "#leave"
  - wait_for: {{ text: "Visits: 2" }}
  - wait_for: {{ url: "*/lv/other" }}
  - reload
  - wait_for: {{ text: "Visits: 1" }}
"##
    )
}

/// Run `engine`'s scenario against a fresh demo target: the report and the server's counts.
fn run(engine: &str) -> (serde_json::Value, serde_json::Value) {
    let state = tempfile::tempdir().unwrap();
    let path = scenario_file(state.path(), "lv.yaml", &scenario(engine));
    let target = demo_target();
    let address = target.trim_start_matches("http://").to_string();
    if engine == "browser" {
        let (status, body) = http_request(&address, "/lv/assets/phoenix_live_view.js", &[]);
        assert_eq!(
            status, 200,
            "the real LiveView client must be installed: {body}"
        );
    }
    let (code, report, output) = run_json(state.path(), &path, &target, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code, 0, "{engine}: {report}\n{stderr}");
    let stats: serde_json::Value = serde_json::from_str(&http_get(&address, "/lv/stats")).unwrap();
    (report, stats)
}

#[test]
fn the_real_client_and_the_native_client_cause_the_same_server_effects() {
    let (browser, browser_stats) = run("browser");
    let (native, native_stats) = run("liveview");
    let visits = USERS * ITERATIONS;
    for (engine, report) in [("browser", &browser), ("liveview", &native)] {
        assert_eq!(report["iterations_ok"], visits, "{engine}: {report}");
    }
    // Per iteration: joins on load, /lv/other, back to /lv, /lv/other again, the reload; two
    // clicks; five changes (each typing arrives as one input; the clearing, the select);
    // one save; one patch; three live navigations (two links, one server-side) leave a view.
    let per_iteration = serde_json::json!({
        "joins": 5, "clicks": 2, "changes": 5, "saves": 1, "patches": 1, "leaves": 3,
    });
    for (engine, stats) in [("browser", &browser_stats), ("liveview", &native_stats)] {
        for (name, count) in per_iteration.as_object().unwrap() {
            assert_eq!(
                stats[name].as_u64().unwrap(),
                count.as_u64().unwrap() * visits,
                "{engine}: {name} in {stats}"
            );
        }
    }
    for (engine, report) in [("browser", &browser), ("liveview", &native)] {
        let latencies = &report["latencies"];
        // Events pushed: inc, add5, five changes (type, type, clear, select, type), save, leave; plus one patch; five joins.
        assert_eq!(
            latencies["liveview.event"]["count"],
            9 * visits,
            "{engine}: {latencies}"
        );
        assert_eq!(latencies["liveview.patch"]["count"], visits, "{engine}");
        assert_eq!(latencies["liveview.join"]["count"], 5 * visits, "{engine}");
        // The save takes the server 100 ms: both clients see it in the push-to-reply time,
        // and nothing else is slow on this machine.
        let event = &latencies["liveview.event"];
        let max = event["max_ms"].as_f64().unwrap();
        assert!((99.0..2_000.0).contains(&max), "{engine}: {event}");
        assert!(
            event["min_ms"].as_f64().unwrap() < 99.0,
            "{engine}: {event}"
        );
        let counters = &report["counters"];
        assert_eq!(
            counters["liveview.events"],
            10 * visits,
            "{engine}: {counters}"
        );
        assert_eq!(
            counters["liveview.replies"],
            10 * visits,
            "{engine}: {counters}"
        );
        assert!(
            counters["liveview.diffs"].as_u64().unwrap() >= 5 * visits,
            "{engine}"
        );
    }
}

#[test]
fn the_native_client_merges_server_pushes_and_says_what_it_cannot_do() {
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    // `tick=1`: the server pushes a `diff` every second, outside any reply.
    let ticks = "name: ticks\nengine: liveview\nbase_url: http://127.0.0.1:1\nusers: 1\n\
                 iterations: 1\nsteps:\n  - navigate: /lv?tick=1\n  \
                 - wait_for: { text: \"tick 2\", timeout: 10s }\n  - click: \"#title\"\n";
    let path = scenario_file(state.path(), "ticks.yaml", ticks);
    let (code, report, _) = run_json(state.path(), &path, &target, &[]);
    assert_eq!(
        code, 7,
        "the click on a plain heading fails the user: {report}"
    );
    assert_eq!(
        report["latencies"]["step:wait_for text tick 2"]["count"], 1,
        "{report}"
    );
    assert_eq!(
        report["counters"]["step:wait_for text tick 2:failed"],
        serde_json::Value::Null
    );
    let failures = report.to_string();
    assert!(
        failures.contains("has nothing LiveView acts on"),
        "the failure says why: {failures}"
    );
}

#[test]
fn the_liveview_example_runs_without_a_browser() {
    let state = tempfile::tempdir().unwrap();
    let example = repo().join("examples/liveview.yaml");
    let target = demo_target();
    let extra = ["--users", "20", "--duration", "3s"];
    let (code, report, output) = run_json(state.path(), &example, &target, &extra);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["users_failed"], 0, "{report}");
    let ok = report["iterations_ok"].as_u64().unwrap();
    assert!(ok >= 20, "every user finished an iteration: {report}");
    let stats: serde_json::Value =
        serde_json::from_str(&http_get(target.trim_start_matches("http://"), "/lv/stats")).unwrap();
    assert!(stats["saves"].as_u64().unwrap() >= ok, "{stats}");
    assert_eq!(
        report["nodes"][0]["facts"]["chromium"],
        serde_json::Value::Null
    );
}

#[test]
fn steps_that_need_a_browser_are_refused_in_the_liveview_engine() {
    let state = tempfile::tempdir().unwrap();
    for (name, text, line) in [
        (
            "hover.yaml",
            "name: a\nengine: liveview\nbase_url: http://x\nsteps:\n  - navigate: /\n  - hover: '#b'\n",
            6,
        ),
        (
            "js.yaml",
            "name: a\nengine: liveview\nbase_url: http://x\nsteps:\n  - navigate: /\n  - wait_for: { js: \"window.x\" }\n",
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
        assert!(message.contains("needs a browser"), "{name}: {message}");
        assert_eq!(json["line"], line, "{name}: located at the step: {json}");
    }
    // Protocol steps and the page steps mix in one liveview scenario.
    let mixed = "name: a\nengine: liveview\nbase_url: http://x\nsteps:\n  - request: /api\n  \
                 - navigate: /lv\n  - click: '#inc'\n";
    let path = scenario_file(state.path(), "mixed.yaml", mixed);
    let (code, json, _) = json_output(liveload(state.path()).args([
        "validate",
        path.to_str().unwrap(),
        "--output",
        "json",
    ]));
    assert_eq!(code, 0, "{json}");
}

#[test]
fn a_mixed_run_sizes_for_each_engine_and_reports_each_scenario_apart() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path();
    let page = "  - navigate: /lv\n  - liveview_connected\n  - click: \"#inc\"\n  \
                - wait_for: { text: \"Count: 1\" }\n";
    let browse = format!("name: browse\nbase_url: http://x\niterations: 2\nsteps:\n{page}");
    let native = format!(
        "name: native\nengine: liveview\nbase_url: http://x\niterations: 2\nsteps:\n{page}"
    );
    let api = "name: api\nengine: http\nbase_url: http://x\niterations: 2\nsteps:\n  - request: /health\n";
    scenario_file(dir, "browse.yaml", &browse);
    scenario_file(dir, "native.yaml", &native);
    scenario_file(dir, "api.yaml", api);
    let mix = "name: mixed\nbase_url: http://127.0.0.1:1\nduration: 60s\nmix:\n  \
               - { scenario: browse.yaml, users: 2 }\n  - { scenario: native.yaml, users: 20 }\n  \
               - { scenario: api.yaml, users: 20 }\n";
    let path = scenario_file(dir, "mix.yaml", mix);
    let target = demo_target();
    let (code, report, output) = run_json(dir, &path, &target, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["users"], 42, "{report}");
    assert_eq!(report["iterations_ok"], 84, "{report}");
    // Each scenario's steps and iterations apart, with its own users' counts.
    let latencies = &report["latencies"];
    for (name, users) in [("browse", 2), ("native", 20)] {
        assert_eq!(
            latencies[format!("step:{name}/click #inc")]["count"],
            2 * users,
            "{latencies}"
        );
        assert_eq!(latencies[format!("iteration:{name}")]["count"], 2 * users);
    }
    assert_eq!(
        latencies["step:api/GET /health"]["count"], 40,
        "{latencies}"
    );
    assert_eq!(latencies["iteration:api"]["count"], 40);
    // Browsers and native clients both joined the server's LiveView, each user twice.
    let stats: serde_json::Value =
        serde_json::from_str(&http_get(target.trim_start_matches("http://"), "/lv/stats")).unwrap();
    assert_eq!(stats["joins"], 44, "{stats}");
    assert_eq!(stats["clicks"], 44, "{stats}");
    // The plan sized the node for both engines: a browser's fixed cost, and per user the
    // average of 2 browser contexts and 40 protocol users.
    let profile = &report["plan"]["sizing"]["profile"];
    let mib = 1u64 << 20;
    assert_eq!(
        profile["browser_memory_usage_bytes"],
        160 * mib,
        "{profile}"
    );
    let memory = (2 * 24 * mib + 40 * 256 * 1024).div_ceil(42);
    assert_eq!(profile["context_memory_usage_bytes"], memory, "{profile}");
    let per_core = profile["browser_contexts_per_core"].as_f64().unwrap();
    let wanted = 42.0 / (2.0 / 15.0 + 40.0 / 1000.0);
    assert!((per_core - wanted).abs() < 1e-6, "{profile}");
    assert!(
        !report["nodes"][0]["facts"]["chromium"].is_null(),
        "the node started a browser"
    );
}
