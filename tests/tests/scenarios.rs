//! What a run sends where, measures and combines, end to end through the CLI with real
//! browsers and the demo target: users spread over several targets, host rules kept inside
//! the browser, Web Vitals per document, and several scenarios in one invocation.

use liveload_e2e::*;

/// Several targets and host rules in one run: six users spread round robin over two demo
/// targets (each serves exactly its users, the report times each target), `cdn.test` mapped to
/// the second target (the server sees it, though no resolver knows the name), and two hosts
/// mapped to that same server but blocked, one by `block_hosts`, one by `allow_hosts` leaving
/// it out: the server never sees them, and `hosts.blocked` counts each.
#[test]
fn users_spread_over_targets_and_the_browser_keeps_to_the_host_rules() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let (a, b) = (demo_target(), demo_target());
    let b_address = b.trim_start_matches("http://");
    // Credentials in a base URL reach the browser, never a metric's name.
    let a_with_credentials = a.replace("http://", "http://user:secret@");
    let fetch = |url: &str| format!("fetch('{url}', {{mode: 'no-cors'}})");
    let probe = format!(
        "Promise.allSettled([{}, {}, {}]).then(() => 1)",
        fetch("http://cdn.test/seen?v=cdn-{{user_id}}"),
        fetch("http://x.ads.test/seen?v=ads"),
        fetch("http://other.test/seen?v=other"),
    );
    let text = format!(
        r##"name: targets
base_urls: ["{a_with_credentials}", "{b}"]
users: 6
duration: 60s
iterations: 2
block_hosts: ["*.ads.test"]
allow_hosts: ["cdn.test"]
map_hosts:
  cdn.test: "{b_address}"
  "*.ads.test": "{b_address}"
  other.test: "{b_address}"
steps:
  - navigate: "/seen?v=user-{{{{user_id}}}}"
  - eval: "{probe}"
"##
    );
    let path = scenario_file(state.path(), "targets.yaml", &text);
    let (code, report, output) = json_output(liveload(state.path()).args([
        "run",
        path.to_str().unwrap(),
        "--output",
        "json",
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["iterations_ok"], 12, "{report}");
    let seen = |target: &str| -> Vec<String> {
        let list = http_get(target.trim_start_matches("http://"), "/seen/list");
        let mut values: Vec<String> = list
            .lines()
            .map(|line| line.split_once(' ').unwrap().1.to_string())
            .collect();
        values.sort();
        values
    };
    let twice = |values: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = values
            .iter()
            .flat_map(|v| [v.to_string(), v.to_string()])
            .collect();
        all.sort();
        all
    };
    assert_eq!(seen(&a), twice(&["user-0", "user-2", "user-4"]));
    let mut on_b: Vec<&str> = vec!["user-1", "user-3", "user-5"];
    let cdn: Vec<String> = (0..6).map(|u| format!("cdn-{u}")).collect();
    on_b.extend(cdn.iter().map(String::as_str));
    assert_eq!(
        seen(&b),
        twice(&on_b),
        "mapped, and nothing blocked got through"
    );
    assert_eq!(
        report["counters"]["hosts.blocked"],
        2 * 12,
        "{}",
        report["counters"]
    );
    for target in [&a, &b] {
        let metric = &report["latencies"][format!("target:{target}")];
        assert_eq!(metric["count"], 6, "{target}: {}", report["latencies"]);
    }
    assert!(
        !report.to_string().contains("secret"),
        "credentials leaked: {report}"
    );
}

/// Web Vitals, one set per document: the demo's `/vitals` page paints a heading, shifts its
/// layout without input and blocks 120 ms on a click; `/seen` after it paints and never
/// shifts. Each document's values are recorded once, when the next document reports or its
/// user ends. (The thinks let the click's event timing entry reach the page, which happens
/// after the next frame is presented; a navigation in that frame misses it.)
#[test]
fn web_vitals_are_measured_once_per_document() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let path = scenario_file(
        state.path(),
        "vitals.yaml",
        r##"name: vitals
base_url: http://127.0.0.1:1
users: 2
duration: 60s
iterations: 2
steps:
  - navigate: /vitals
  - wait_for: "body.shifted"
  - click: "#slow"
  - wait_for: "body.clicked"
  - think: 300ms
  - navigate: "/seen?v=after"
  - think: 300ms
"##,
    );
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
    let latencies = &report["latencies"];
    println!(
        "FIGURE vitals lcp {} cls {} inp {}",
        latencies["page.lcp"], latencies["page.cls"], latencies["page.inp"]
    );
    let documents = 2 * 2 * 2;
    assert_eq!(latencies["page.lcp"]["count"], documents, "{latencies}");
    assert_eq!(latencies["page.cls"]["count"], documents);
    assert_eq!(
        latencies["page.inp"]["count"],
        documents / 2,
        "clicked pages only"
    );
    let value = |metric: &str, field: &str| latencies[metric][field].as_f64().unwrap();
    assert!(value("page.lcp", "min_ms") > 0.0);
    assert!(
        value("page.inp", "min_ms") >= 120.0,
        "the click blocked 120 ms"
    );
    // Histograms hold at least 1 µs: a score of 0 reads as 0.001.
    assert!(value("page.cls", "min_ms") <= 0.001, "/seen never shifts");
    assert!(
        value("page.cls", "max_ms") > 10.0,
        "/vitals shifts: a score over 0.01"
    );
}

/// `liveload run a.yaml b.yaml`: every file is checked before anything starts; then each runs
/// on a cluster of its own, torn down before the next; one combined report compares them, and
/// the exit code is the failing scenario's.
#[test]
fn several_scenarios_run_one_after_another_with_a_combined_report() {
    several_scenarios(false);
}

/// The same sequence with `--reuse-cluster`: one cluster booted once serves both scenarios
/// (the same nodes, the second scenario boots nothing), each with its own run id and report.
#[test]
fn several_scenarios_share_one_cluster_when_asked() {
    several_scenarios(true);
}

fn several_scenarios(reuse_cluster: bool) {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let scenario = |name: &str, threshold: &str| {
        format!(
            "name: {name}\nbase_url: http://127.0.0.1:1\nusers: 2\nduration: 60s\niterations: 2\n\
             thresholds: [\"{threshold}\"]\nsteps:\n  - navigate: \"/seen?v={name}-{{{{user_id}}}}\"\n"
        )
    };
    let fast = scenario_file(
        state.path(),
        "fast.yaml",
        &scenario("fast", "p95(iteration) < 60s"),
    );
    let strict = scenario_file(
        state.path(),
        "strict.yaml",
        &scenario("strict", "p95(iteration) < 0.001ms"),
    );
    let broken = scenario_file(state.path(), "broken.yaml", "name: broken\nsteps: []\n");
    let reports = state.path().join("reports");
    let run = |files: &[&std::path::Path]| {
        let mut command = liveload(state.path());
        command.arg("run");
        command.args(files);
        command.args(["--base-url", &target, "--output", "json", "--report-dir"]);
        command.arg(&reports);
        if reuse_cluster {
            command.arg("--reuse-cluster");
        }
        command.output().unwrap()
    };

    let refused = run(&[&fast, &broken]);
    assert_eq!(
        refused.status.code(),
        Some(3),
        "a broken file stops everything"
    );
    assert!(local_runs(state.path()).is_empty(), "nothing was booted");
    assert!(http_get(target.trim_start_matches("http://"), "/seen/list").is_empty());

    let output = run(&[&fast, &strict]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(8),
        "the threshold's exit code\n{stdout}\n{stderr}"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        3,
        "one report per scenario, then the combined: {stdout}"
    );
    assert_ne!(lines[0]["run_id"], lines[1]["run_id"], "a run id each");
    let node_ids = |report: &serde_json::Value| -> Vec<String> {
        let nodes = report["nodes"].as_array().unwrap();
        nodes
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect()
    };
    if reuse_cluster {
        assert_eq!(node_ids(&lines[0]), node_ids(&lines[1]), "the same nodes");
        assert_eq!(lines[1]["boot_s"], 0.0, "the second booted nothing");
        let cluster = lines[0]["run_id"].as_str().unwrap().trim_end_matches("-1");
        assert_eq!(lines[1]["run_id"], format!("{cluster}-2"));
    } else {
        assert_ne!(node_ids(&lines[0]), node_ids(&lines[1]), "a cluster each");
    }
    let combined = &lines[2];
    assert_eq!(combined["exit_code"], 8);
    let entries = combined["scenarios"].as_array().unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| e["exit_code"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [0, 8]
    );
    for (entry, report) in entries.iter().zip(&lines) {
        assert_eq!(entry["run"]["run_id"], report["run_id"]);
        assert_eq!(entry["run"]["iterations_ok"], 4);
        let dir = reports.join(report["run_id"].as_str().unwrap());
        assert!(dir.join("report.html").exists(), "{dir:?}");
    }
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("combined.json")).unwrap())
            .unwrap();
    assert_eq!(&on_disk, combined);
    let table = std::fs::read_to_string(reports.join("combined.md")).unwrap();
    assert!(
        table.contains("failed (exit 8)") && table.contains("p95 vs first"),
        "{table}"
    );
    let page = std::fs::read_to_string(reports.join("combined.html")).unwrap();
    let first_run = lines[0]["run_id"].as_str().unwrap();
    assert!(
        page.contains(&format!("href=\"{first_run}/report.html\"")),
        "{page}"
    );
    // Both clusters are gone, and the second started after the first had ended.
    assert!(local_runs(state.path()).is_empty());
    let seen = http_get(target.trim_start_matches("http://"), "/seen/list");
    let (first, second): (Vec<&str>, Vec<&str>) = seen.lines().partition(|l| l.contains(" fast-"));
    assert_eq!((first.len(), second.len()), (4, 4), "{seen}");
    let ms = |line: &&str| line.split(' ').next().unwrap().parse::<u64>().unwrap();
    assert!(
        first.iter().map(ms).max() < second.iter().map(ms).min(),
        "one after another: {seen}"
    );
}
