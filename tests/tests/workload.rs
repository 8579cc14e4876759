//! Workload semantics and metrics with real browsers, end to end through the CLI, proven by
//! what the demo target's server saw (`/seen/list`, `/probe/stats`): metrics equal to what the
//! server served, and a user's life: `on_start` once, exactly `iterations:` iterations,
//! `on_stop` once, each user its own CSV row (`mode: unique`) across several nodes,
//! generated values (`{{seq}}`, `{{uuid}}`) unique cluster-wide, and users of several nodes
//! meeting in groups at a `coordinate` step.

use std::collections::{BTreeMap, BTreeSet};

use liveload_e2e::*;

const USERS: u64 = 6;
const ITERATIONS: u64 = 3;

fn scenario() -> String {
    format!(
        r##"name: user-loop
base_url: http://127.0.0.1:1
users: {USERS}
duration: 90s
iterations: {ITERATIONS}
data: {{ file: users.csv, mode: unique }}
on_start:
  - navigate: "/seen?v=start-{{{{email}}}}"
    name: log in
steps:
  - navigate: "/seen?v=it-{{{{email}}}}-{{{{iteration}}}}-{{{{seq}}}}-{{{{uuid}}}}"
  - wait_for: "#seen"
on_stop:
  - navigate: "/seen?v=stop-{{{{email}}}}"
    name: log out
"##
    )
}

fn csv(rows: u64) -> String {
    let mut text = "email\n".to_string();
    for row in 0..rows {
        text.push_str(&format!("user{row}@example.com\n"));
    }
    text
}

#[test]
fn users_start_once_iterate_their_count_stop_once_each_with_its_own_row() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("users.csv"), csv(USERS)).unwrap();
    let path = scenario_file(state.path(), "loop.yaml", &scenario());
    let target = demo_target();
    // Two users per node: three nodes, so rows and sequences span nodes.
    let report = run_on_three_nodes(state.path(), &path, &target, 2);
    assert_eq!(report["nodes"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(report["iterations_ok"], USERS * ITERATIONS);
    assert_eq!(report["users_succeeded"], USERS);
    assert_eq!(report["counters"]["on_start_ok"], USERS);
    assert_eq!(report["counters"]["on_stop_ok"], USERS);
    assert_eq!(report["latencies"]["step:log in"]["count"], USERS);
    assert!(
        report["run_s"].as_f64().unwrap() < 80.0,
        "the run ends when every user is done, not at its duration"
    );

    let seen = http_get(target.trim_start_matches("http://"), "/seen/list");
    let seen: Vec<&str> = seen
        .lines()
        .map(|line| line.split_once(' ').unwrap().1)
        .collect();
    let emails: BTreeSet<String> = (0..USERS).map(|r| format!("user{r}@example.com")).collect();
    for phase in ["start", "stop"] {
        let mut of_phase: Vec<String> = seen
            .iter()
            .filter_map(|v| v.strip_prefix(&format!("{phase}-")))
            .map(str::to_string)
            .collect();
        of_phase.sort();
        assert_eq!(
            of_phase,
            emails.iter().cloned().collect::<Vec<_>>(),
            "{phase}: once per user, every row once"
        );
    }
    // Each user's iterations 0, 1, 2, in order, with its own row.
    let mut iterations: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let (mut seqs, mut uuids) = (BTreeSet::new(), BTreeSet::new());
    for value in seen.iter().filter_map(|v| v.strip_prefix("it-")) {
        let parts: Vec<&str> = value.rsplitn(8, '-').collect();
        // uuid (5 groups), seq, iteration, email.
        let [uuid_parts @ .., seq, iteration, email] = parts.as_slice() else {
            panic!("{value}");
        };
        iterations.entry(email).or_default().push(iteration);
        assert!(seqs.insert(seq.to_string()), "seq {seq} seen twice");
        let uuid: Vec<&str> = uuid_parts.iter().rev().copied().collect();
        assert!(uuids.insert(uuid.join("-")), "uuid seen twice");
    }
    assert_eq!(iterations.len() as u64, USERS, "{seen:?}");
    for (email, list) in &iterations {
        assert_eq!(list, &["0", "1", "2"], "{email}");
    }
    assert_eq!(seqs.len() as u64, USERS * ITERATIONS);
}

/// A group member as the server saw it: (arrival ms, index, user, group size, peers).
type Member = (u64, u64, u64, u64, String);

/// `coordinate`: 12 users on 3 nodes, arriving over 1.5 s, meet in groups of 4 through the
/// controller: exactly 3 full groups, members from several nodes, each member knowing its
/// group, and a group's members reaching the server close together (the skew is printed).
#[test]
fn users_on_several_nodes_meet_in_groups() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let path = scenario_file(
        state.path(),
        "rooms.yaml",
        r##"name: rooms
base_url: http://127.0.0.1:1
users: 12
duration: 60s
iterations: 1
steps:
  - think: 10ms..1500ms
  - coordinate: { name: room, group: 4, timeout: 20s }
  - navigate: "/seen?v=room-{{group_id}}-{{group_index}}-{{user_id}}-{{group_size}}-{{group_peers}}"
"##,
    );
    let target = demo_target();
    let report = run_on_three_nodes(state.path(), &path, &target, 4);
    let counters = &report["counters"];
    assert_eq!(counters["coordinate:room.groups"], 3, "{counters}");
    assert_eq!(counters["coordinate:room.grouped_users"], 12);
    assert!(counters["coordinate:room.partial_groups"].is_null());
    // User ids run over the nodes in order: which node each user ran on.
    let mut node_of = Vec::new();
    for (n, node) in report["nodes"].as_array().unwrap().iter().enumerate() {
        node_of.extend(std::iter::repeat_n(
            n,
            node["users"].as_u64().unwrap() as usize,
        ));
    }
    assert_eq!(node_of.len(), 12);
    let seen = http_get(target.trim_start_matches("http://"), "/seen/list");
    let mut groups: BTreeMap<u64, Vec<Member>> = BTreeMap::new();
    for line in seen.lines() {
        let (ms, value) = line.split_once(' ').unwrap();
        let fields: Vec<&str> = value
            .strip_prefix("room-")
            .unwrap()
            .splitn(5, '-')
            .collect();
        let number = |i: usize| fields[i].parse::<u64>().unwrap();
        groups.entry(number(0)).or_default().push((
            ms.parse().unwrap(),
            number(1),
            number(2),
            number(3),
            fields[4].to_string(),
        ));
    }
    assert_eq!(
        groups.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2],
        "{seen}"
    );
    let mut spanning = 0;
    for (id, members) in &groups {
        let mut indexes: Vec<u64> = members.iter().map(|m| m.1).collect();
        indexes.sort_unstable();
        assert_eq!(indexes, [0, 1, 2, 3], "group {id}: {members:?}");
        assert!(
            members.iter().all(|m| m.3 == 4 && m.4 == members[0].4),
            "{members:?}"
        );
        let mut users: Vec<u64> = members.iter().map(|m| m.2).collect();
        users.sort_unstable();
        let mut peers: Vec<u64> = members[0]
            .4
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect();
        peers.sort_unstable();
        assert_eq!(users, peers, "group {id}: its peers are its members");
        let nodes: BTreeSet<usize> = users.iter().map(|u| node_of[*u as usize]).collect();
        spanning += usize::from(nodes.len() > 1);
        let times: Vec<u64> = members.iter().map(|m| m.0).collect();
        let skew = times.iter().max().unwrap() - times.iter().min().unwrap();
        println!(
            "FIGURE group {id}: users {users:?} on nodes {nodes:?}, reached the server within {skew} ms"
        );
        assert!(skew < 3_000, "released together: {skew} ms");
    }
    let mut all: Vec<u64> = groups.values().flatten().map(|m| m.2).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..12).collect::<Vec<_>>(),
        "every user in exactly one group"
    );
    assert!(spanning >= 1, "groups form across nodes");
}

#[test]
fn unique_data_with_fewer_rows_than_users_is_refused_before_anything_starts() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("users.csv"), csv(USERS)).unwrap();
    let path = scenario_file(state.path(), "loop.yaml", &scenario());
    for command in ["plan", "run"] {
        let (code, json, _) = json_output(liveload(state.path()).args([
            command,
            path.to_str().unwrap(),
            "--users",
            "7",
            "--output",
            "json",
        ]));
        assert_eq!(code, 3, "{command}: {json}");
        assert_eq!(json["error"], "data_rows_too_few");
        assert_eq!(
            (json["rows"].as_u64(), json["users"].as_u64()),
            (Some(6), Some(7))
        );
        assert!(
            json["message"].as_str().unwrap().contains("users.csv"),
            "{json}"
        );
    }
    assert!(local_runs(state.path()).is_empty(), "nothing was booted");
}

/// Every page, HTTP, WebSocket and console metric equals what the other side of the wire saw:
/// 3 users x 2 iterations of `/probe`, whose server counts what it served.
#[test]
fn page_http_websocket_and_console_metrics_match_what_the_server_served() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let path = scenario_file(
        state.path(),
        "probe.yaml",
        r##"name: probe
base_url: http://127.0.0.1:1
users: 3
duration: 60s
iterations: 2
steps:
  - navigate: /probe
  - wait_for: "body.done"
  - think: 300ms
"##,
    );
    let target = demo_target();
    let trace = state.path().join("trace.jsonl");
    let (code, report, output) = json_output(liveload(state.path()).args([
        "run",
        path.to_str().unwrap(),
        "--base-url",
        &target,
        "--trace",
        trace.to_str().unwrap(),
        "--output",
        "json",
    ]));
    assert_eq!(
        code,
        0,
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    check_trace(&trace, &report);
    let stats: serde_json::Value = serde_json::from_str(&http_get(
        target.trim_start_matches("http://"),
        "/probe/stats",
    ))
    .unwrap();
    let served = |name: &str| stats[name].as_u64().unwrap();
    let visits = 6;
    assert_eq!(served("documents"), visits, "{stats}");
    assert_eq!(
        (served("ok"), served("missing"), served("fail")),
        (2 * visits, visits, visits)
    );
    assert_eq!(
        (served("sockets"), served("frames_in"), served("frames_out")),
        (visits, 3 * visits, 4 * visits)
    );
    let counters = &report["counters"];
    let counted = |name: &str| counters[name].as_u64().unwrap_or(0);
    println!("FIGURE server {stats}; liveload {counters}");
    assert_eq!(
        counted("http.requests"),
        served("documents") + served("ok") + served("missing") + served("fail"),
        "{counters}"
    );
    assert_eq!(
        counted("http.status.2xx"),
        served("documents") + served("ok")
    );
    assert_eq!(counted("http.status.4xx"), served("missing"));
    assert_eq!(counted("http.status.5xx"), served("fail"));
    assert_eq!(counted("ws.connections"), served("sockets"));
    assert_eq!(counted("ws.frames_sent"), served("frames_in"));
    assert_eq!(counted("ws.frames_received"), served("frames_out"));
    assert_eq!(
        counted("ws.bytes_sent"),
        served("frames_in") * "frame 0".len() as u64
    );
    assert_eq!(counted("browser.console_errors"), visits);
    assert_eq!(counted("browser.exceptions"), visits);
    let latencies = &report["latencies"];
    for name in ["page.ttfb", "page.dom_content_loaded", "page.load"] {
        assert_eq!(
            latencies[name]["count"], visits,
            "{name}: one per navigation"
        );
    }
    assert!(
        latencies["page.ttfb"]["p50_ms"].as_f64().unwrap()
            <= latencies["page.load"]["p50_ms"].as_f64().unwrap()
    );
    assert_eq!(
        latencies["http.ttfb"]["count"],
        counted("http.requests"),
        "one per response"
    );
}

/// The trace at sample 1.0 holds exactly what the metrics counted: a record per HTTP response,
/// per step and per iteration, each user's in time order.
fn check_trace(path: &std::path::Path, report: &serde_json::Value) {
    let text = std::fs::read_to_string(path).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let of_kind = |kind: &str| records.iter().filter(|r| r["kind"] == kind).count() as u64;
    let counters = &report["counters"];
    assert_eq!(of_kind("http"), counters["http.requests"].as_u64().unwrap());
    assert_eq!(
        of_kind("iteration"),
        report["iterations_ok"].as_u64().unwrap()
    );
    let mut steps: BTreeMap<String, u64> = BTreeMap::new();
    for r in records.iter().filter(|r| r["kind"] == "step") {
        *steps
            .entry(r["name"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for (name, count) in &steps {
        assert_eq!(
            report["latencies"][format!("step:{name}")]["count"],
            *count,
            "{name}"
        );
    }
    assert_eq!(steps.len(), 3, "{steps:?}");
    let mut last: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for r in &records {
        let key = (
            r["node"].as_str().unwrap().to_string(),
            r["user"].as_u64().unwrap(),
        );
        let t = r["t_ms"].as_u64().unwrap();
        assert!(
            last.insert(key, t).is_none_or(|before| before <= t),
            "ordered per user: {r}"
        );
    }
    let statuses: BTreeSet<u64> = records
        .iter()
        .filter_map(|r| r["status"].as_u64())
        .collect();
    assert!(
        statuses.contains(&404) && statuses.contains(&500),
        "{statuses:?}"
    );
    println!(
        "FIGURE trace: {} records, {} bytes",
        records.len(),
        text.len()
    );
}

#[test]
fn the_workload_examples_are_valid() {
    let state = tempfile::tempdir().unwrap();
    for example in [
        "examples/user-loop.yaml",
        "examples/targets.yaml",
        "examples/api.yaml",
        "examples/liveview.yaml",
        "examples/mix.yaml",
    ] {
        let example = repo().join(example);
        let (code, json, _) = json_output(liveload(state.path()).args([
            "validate",
            example.to_str().unwrap(),
            "--output",
            "json",
        ]));
        assert_eq!(code, 0, "{example:?}: {json}");
    }
}

/// Run `path` against `target` on three local nodes of `per_node` users each (sized so by
/// `--contexts-per-core`); the report, once the run succeeded.
fn run_on_three_nodes(
    state: &std::path::Path,
    path: &std::path::Path,
    target: &str,
    per_node: u32,
) -> serde_json::Value {
    let contexts_per_core = f64::from(per_node) / (host_cores() / 3.0) + 0.01;
    let (code, report, output) = json_output(liveload(state).args([
        "run",
        path.to_str().unwrap(),
        "--base-url",
        target,
        "--local-nodes",
        "3",
        "--contexts-per-core",
        &contexts_per_core.to_string(),
        "--output",
        "json",
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code, 0, "{report}\n{stderr}");
    report
}

fn host_cores() -> f64 {
    std::thread::available_parallelism().unwrap().get() as f64
}
