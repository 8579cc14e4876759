//! A user's life with real browsers, end to end through the CLI, proven by what the demo
//! target's server saw (`/seen/list`): `on_start` once, exactly `iterations:` iterations,
//! `on_stop` once, each user its own CSV row (`mode: unique`) across several nodes, and
//! generated values (`{{seq}}`, `{{uuid}}`) unique cluster-wide.

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
    let (code, report, output) = json_output(liveload(state.path()).args([
        "run",
        path.to_str().unwrap(),
        "--base-url",
        &target,
        "--local-nodes",
        "3",
        "--contexts-per-core",
        &format!("{}", 2.0 / (host_cores() / 3.0) + 0.01),
        "--output",
        "json",
    ]));
    assert_eq!(
        code,
        0,
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
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
    let seen: Vec<&str> = seen.lines().collect();
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

#[test]
fn the_user_loop_example_is_valid() {
    let state = tempfile::tempdir().unwrap();
    let example = repo().join("examples/user-loop.yaml");
    let (code, json, _) = json_output(liveload(state.path()).args([
        "validate",
        example.to_str().unwrap(),
        "--output",
        "json",
    ]));
    assert_eq!(code, 0, "{json}");
}

fn host_cores() -> f64 {
    std::thread::available_parallelism().unwrap().get() as f64
}
