//! `liveload` with `--backend ssh`, against a private OpenSSH server on 127.0.0.1: a whole run
//! with real Chromium, `plan` from a probe, cleanup after a crash, refusing an unknown host.

use liveload_test_support::sshd;

use std::time::Duration;

use liveload_core::{Backend, NodeSpec, RunFilter, names, run};
use liveload_e2e::*;

fn ssh_args(server: &sshd::Sshd, hosts: usize) -> Vec<String> {
    vec![
        "--backend".into(),
        "ssh".into(),
        "--hosts".into(),
        server.hosts_file(hosts).display().to_string(),
        "--ssh-known-hosts".into(),
        server.known_hosts.display().to_string(),
        "--ssh-remote-dir".into(),
        server.remote_dir.display().to_string(),
    ]
}

fn run_dirs(server: &sshd::Sshd) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(server.remote_dir.join("runs"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_run_over_ssh_uploads_runs_reports_and_leaves_nothing() {
    let server = sshd::Sshd::start();
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let args = ssh_args(&server, 2);
    let demo_yaml = repo().join("examples/demo.yaml");
    let out = liveload_output(
        state.path(),
        &[("LIVELOAD_LOG", "debug")],
        [
            strings(&[
                "run",
                demo_yaml.to_str().unwrap(),
                "--base-url",
                target.as_str(),
                "--users",
                "3",
                "--duration",
                "3s",
                "--output",
                "json",
            ]),
            args.clone(),
        ]
        .concat(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["backend"], "ssh");
    assert_eq!(report["users_succeeded"], 3);
    assert_eq!(report["plan"]["source"], "probe");
    assert!(run_dirs(&server).is_empty(), "{:?}", run_dirs(&server));
    let run_id = report["run_id"].as_str().unwrap();
    assert!(sshd::agents_of_run(run_id).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_over_ssh_measures_a_probe_host_and_leaves_nothing() {
    let server = sshd::Sshd::start();
    let state = tempfile::tempdir().unwrap();
    let args = ssh_args(&server, 3);
    let demo_yaml = repo().join("examples/demo.yaml");
    let out = liveload_output(
        state.path(),
        &[],
        [
            strings(&[
                "plan",
                demo_yaml.to_str().unwrap(),
                "--users",
                "2",
                "--output",
                "json",
            ]),
            args.clone(),
        ]
        .concat(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{json}");
    let plan = &json["plan"];
    // No catalogue for your own hosts: the size comes from a probe agent's measurement.
    assert_eq!(plan["source"], "probe");
    assert_eq!(plan["nodes"], 1);
    assert_eq!(plan["max_nodes"], 3, "never more nodes than hosts");
    assert!(plan["node_cores"].as_f64().unwrap() > 0.0);
    assert!(run_dirs(&server).is_empty(), "the probe is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_removes_a_crashed_runs_agents_and_files() {
    let server = sshd::Sshd::start();
    let backend = server.backend(2);
    let spec = |run: &str, index: u32| NodeSpec {
        run_id: run.to_string(),
        index,
        token: names::new_token(),
        ttl: Duration::from_secs(300),
        grace: Duration::from_secs(300),
        tls: None,
        no_browser: true,
    };
    // A run whose controller died: agents up, files there, nobody to destroy them.
    let crashed = names::new_run_id("crashed");
    for index in 0..2 {
        let node = backend.create(&spec(&crashed, index)).await.unwrap();
        run::wait_ready_or_destroy(&backend, &node, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let other = names::new_run_id("other");
    let kept = backend.create(&spec(&other, 0)).await.unwrap();
    backend.disconnect().await;
    assert_eq!(sshd::agents_of_run(&crashed).len(), 2);

    let state = tempfile::tempdir().unwrap();
    let args = ssh_args(&server, 2);
    let out = liveload_output(
        state.path(),
        &[],
        [
            strings(&["cleanup", "--run", crashed.as_str(), "--output", "json"]),
            args.clone(),
        ]
        .concat(),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sshd::agents_of_run(&crashed).is_empty(), "agents stopped");
    assert!(
        !server.remote_dir.join("runs").join(&crashed).exists(),
        "files removed"
    );
    // The other run is untouched.
    assert_eq!(sshd::agents_of_run(&other).len(), 1);
    let listed = backend.list(&RunFilter::Run(other.clone())).await.unwrap();
    assert_eq!(listed.len(), 1);
    backend.destroy(&kept).await.unwrap();
    assert!(sshd::agents_of_run(&other).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_host_is_refused_with_the_fix_and_nothing_starts() {
    let server = sshd::Sshd::start();
    let state = tempfile::tempdir().unwrap();
    let mut args = ssh_args(&server, 1);
    let empty = server.dir.path().join("fresh_known_hosts");
    let at = args.iter().position(|a| a == "--ssh-known-hosts").unwrap();
    args[at + 1] = empty.display().to_string();
    let demo_yaml = repo().join("examples/demo.yaml");
    let out = liveload_output(
        state.path(),
        &[],
        [
            strings(&[
                "run",
                demo_yaml.to_str().unwrap(),
                "--users",
                "1",
                "--duration",
                "1s",
            ]),
            args.clone(),
        ]
        .concat(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("host h0") && stderr.contains("--ssh-accept-new"),
        "{stderr}"
    );
    assert!(run_dirs(&server).is_empty());
}
