//! `liveload` with `--backend fly`, against the stateful Fly test server (real agents behind
//! it): a whole run, and cleanup after a crash.

use liveload_test_support::fly_server;

use std::time::Duration;

use liveload_core::{Backend, NodeSpec, RunFilter, Secret, names};
use liveload_e2e::*;

/// Public mode (the default) through the test server's edge.
fn fly_args(server: &fly_server::FlyServer, dir: &std::path::Path) -> Vec<String> {
    let ca = dir.join("edge-ca.pem");
    std::fs::write(&ca, &server.edge_ca_pem).unwrap();
    let mut args = fly_private_args(server);
    args.extend([
        "--fly-edge".to_string(),
        server.edge.clone(),
        "--fly-edge-name".to_string(),
        fly_server::EDGE_NAME.to_string(),
        "--fly-edge-ca-file".to_string(),
        ca.display().to_string(),
    ]);
    args
}

/// The options every mode shares (add `--fly-mode private` for private mode: agents on their
/// private IPs, the test server's loopback addresses).
fn fly_private_args(server: &fly_server::FlyServer) -> Vec<String> {
    let port = server.state.lock().unwrap().agent_port;
    [
        "--backend",
        "fly",
        "--fly-app",
        "liveload-e2e",
        "--fly-api-url",
        &server.url,
        "--fly-image",
        "registry.fly.io/liveload-agent:e2e",
        "--fly-agent-port",
        &port.to_string(),
        "--fly-size",
        "shared-cpu-8x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_run_on_fly_boots_sizes_runs_reports_and_destroys() {
    let server = fly_server::start().await;
    let state = tempfile::tempdir().unwrap();
    let args = fly_args(&server, state.path());
    whole_run(&server, &state, args).await;
    assert!(
        server.state.lock().unwrap().edge_connections > 0,
        "public mode goes through the edge"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_run_in_private_mode_reaches_agents_on_their_private_ips() {
    let server = fly_server::start().await;
    let state = tempfile::tempdir().unwrap();
    let mut args = fly_private_args(&server);
    args.extend(["--fly-mode".into(), "private".into()]);
    whole_run(&server, &state, args).await;
    assert_eq!(
        server.state.lock().unwrap().edge_connections,
        0,
        "private mode bypasses the edge"
    );
}

/// `liveload run --backend fly`: plan, boot, facts, size, run with Chromium, report, destroy;
/// no machine left, no token in the output or the trace log.
async fn whole_run(server: &fly_server::FlyServer, state: &tempfile::TempDir, args: Vec<String>) {
    let target = demo_target();
    let out = tokio::task::spawn_blocking({
        let state = state.path().to_path_buf();
        move || {
            liveload(&state)
                .env("FLY_API_TOKEN", fly_server::TOKEN)
                .env("LIVELOAD_LOG", "trace")
                .args(["run", repo().join("examples/demo.yaml").to_str().unwrap()])
                .args(["--base-url", &target, "--users", "4", "--duration", "4s"])
                .args(["--contexts-per-core", "1", "--output", "json", "--yes"])
                .args(&args)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["backend"], "fly");
    assert_eq!(report["users_succeeded"], 4);
    // shared-cpu-8x plans 8 users per node at 1 context per core; each agent reports the
    // real (test) host's facts, so one node suffices.
    assert_eq!(report["plan"]["node_cores"], 8.0);
    assert!(
        server.state.lock().unwrap().machines.is_empty(),
        "every machine destroyed"
    );
    assert!(!stdout.contains(fly_server::TOKEN));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("node ready"),
        "trace logging is on: {stderr}"
    );
    assert!(
        !stderr.contains(fly_server::TOKEN),
        "the Fly token leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_destroys_a_crashed_runs_machines() {
    let server = fly_server::start().await;
    let port = server.state.lock().unwrap().agent_port;
    let fly = liveload_fly::FlyBackend::builder()
        .base_url(&server.url)
        .app("liveload-e2e")
        .token(Secret::new(fly_server::TOKEN))
        .image("img")
        .agent_port(port)
        .build()
        .unwrap();
    // A run whose controller died: its machines are still there.
    let run = names::new_run_id("crashed");
    for index in 0..2 {
        fly.create(&NodeSpec {
            run_id: run.clone(),
            index,
            token: names::new_token(),
            ttl: Duration::from_secs(300),
            grace: Duration::from_secs(300),
            tls: None,
            no_browser: true,
        })
        .await
        .unwrap();
    }
    let other = names::new_run_id("other");
    fly.create(&NodeSpec {
        run_id: other.clone(),
        index: 0,
        token: names::new_token(),
        ttl: Duration::from_secs(300),
        grace: Duration::from_secs(300),
        tls: None,
        no_browser: true,
    })
    .await
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let args = fly_args(&server, state.path());
    let out = tokio::task::spawn_blocking({
        let state = state.path().to_path_buf();
        let run = run.clone();
        move || {
            liveload(&state)
                .env("FLY_API_TOKEN", fly_server::TOKEN)
                .args(["cleanup", "--run", &run, "--output", "json"])
                .args(&args)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{json}");
    assert_eq!(json["destroyed"].as_array().unwrap().len(), 2);
    assert!(fly.list(&RunFilter::Run(run)).await.unwrap().is_empty());
    assert_eq!(
        fly.list(&RunFilter::Run(other.clone()))
            .await
            .unwrap()
            .len(),
        1,
        "other runs untouched"
    );
    for node in fly.list(&RunFilter::Run(other)).await.unwrap() {
        fly.destroy(&node).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_machines_are_never_created_without_confirmation() {
    let server = fly_server::start().await;
    let state = tempfile::tempdir().unwrap();
    let args = fly_args(&server, state.path());
    let out = tokio::task::spawn_blocking({
        let state = state.path().to_path_buf();
        move || {
            liveload(&state)
                .env("FLY_API_TOKEN", fly_server::TOKEN)
                .args(["run", repo().join("examples/demo.yaml").to_str().unwrap()])
                .args(&args)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--yes") && stderr.contains("node(s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("about $"),
        "the plan shows a cost: {stderr}"
    );
    assert!(
        server.state.lock().unwrap().creates.is_empty(),
        "nothing was created"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_from_a_warm_pool_starts_and_stops_instead_of_creating() {
    let server = fly_server::start().await;
    let state = tempfile::tempdir().unwrap();
    let mut args = fly_args(&server, state.path());
    args.extend(["--fly-pool".to_string(), "warm".to_string()]);
    let cli = |extra: Vec<String>| {
        let state = state.path().to_path_buf();
        // `liveload fly pool ...` is the Fly backend's own command: it takes the Fly options,
        // not `--backend` (the first two words of the shared options).
        let args = if extra[0] == "fly" {
            args[2..].to_vec()
        } else {
            args.clone()
        };
        tokio::task::spawn_blocking(move || {
            liveload(&state)
                .env("FLY_API_TOKEN", fly_server::TOKEN)
                .args(&extra)
                .args(&args)
                .output()
                .unwrap()
        })
    };
    let out = cli(vec![
        "fly".into(),
        "pool".into(),
        "create".into(),
        "--nodes".into(),
        "2".into(),
    ])
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 machine(s) created"));
    let target = demo_target();
    let out = cli(vec![
        "run".into(),
        repo().join("examples/demo.yaml").display().to_string(),
        "--base-url".into(),
        target,
        "--users".into(),
        "2".into(),
        "--duration".into(),
        "3s".into(),
        "--contexts-per-core".into(),
        "1".into(),
        "--yes".into(),
        "--output".into(),
        "json".into(),
    ])
    .await
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["users_succeeded"], 2);
    {
        let s = server.state.lock().unwrap();
        assert_eq!(s.creates.len(), 2, "the run created nothing");
        assert_eq!(s.machines.len(), 2, "and destroyed nothing");
        assert!(s.machines.values().all(|m| m.state == "stopped"));
    }
    let out = cli(vec!["fly".into(), "pool".into(), "destroy".into()])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(server.state.lock().unwrap().machines.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_above_max_cost_is_refused_before_fly_sees_a_create() {
    let server = fly_server::start().await;
    let state = tempfile::tempdir().unwrap();
    let args = fly_args(&server, state.path());
    let out = tokio::task::spawn_blocking({
        let state = state.path().to_path_buf();
        move || {
            liveload(&state)
                .env("FLY_API_TOKEN", fly_server::TOKEN)
                .args(["run", repo().join("examples/demo.yaml").to_str().unwrap()])
                .args(["--yes", "--max-cost", "0.0001", "--output", "json"])
                .args(&args)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("cost_cap_exceeded"), "{stdout}");
    assert!(
        server.state.lock().unwrap().creates.is_empty(),
        "the provider saw no create"
    );
}
