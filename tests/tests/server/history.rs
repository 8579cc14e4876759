//! Persistence and recovery: a restarted server keeps its history (SQLite and PostgreSQL),
//! tears down what a crashed one held, and SIGTERM stops every run the clean way.

use std::time::Duration;

use liveload_e2e::server::{Served, create_token};
use liveload_e2e::*;

use crate::{request, scenario};

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
