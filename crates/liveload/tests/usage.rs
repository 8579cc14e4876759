//! Usage errors of the `liveload` binary: caught before anything is created, exit code 2.

use std::process::Command;

fn liveload() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_liveload"));
    command.env(
        "LIVELOAD_STATE_DIR",
        std::env::temp_dir().join("liveload-usage-tests"),
    );
    command
}

fn scenario() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo.yaml")
}

fn json_error(args: &[&str]) -> (i32, serde_json::Value) {
    let out = liveload().args(args).output().unwrap();
    let code = out.status.code().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, value)
}

#[test]
fn max_allowed_nodes_must_be_positive() {
    for value in ["0", "-3"] {
        let s = scenario();
        let (code, json) = json_error(&[
            "plan",
            s.to_str().unwrap(),
            "--max-allowed-nodes",
            value,
            "--output",
            "json",
        ]);
        assert_eq!(code, 2, "{json}");
        assert_eq!(json["error"], "max_allowed_nodes_invalid");
    }
}

#[test]
fn cluster_name_invalid() {
    let s = scenario();
    let (code, json) = json_error(&[
        "plan",
        s.to_str().unwrap(),
        "--name",
        "Bad_Name",
        "--output",
        "json",
    ]);
    assert_eq!(code, 2);
    assert_eq!(json["error"], "cluster_name_invalid");
    assert!(json["hint"].as_str().unwrap().contains("--name"));
}

#[test]
fn zero_users_is_a_usage_error() {
    let s = scenario();
    let (code, json) = json_error(&[
        "plan",
        s.to_str().unwrap(),
        "--users",
        "0",
        "--output",
        "json",
    ]);
    assert_eq!(code, 2);
    assert_eq!(json["error"], "invalid_option");
}

#[test]
fn unknown_backend_is_refused_by_clap() {
    let out = liveload()
        .args(["plan", "x.yaml", "--backend", "mars"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

#[test]
fn plan_explains_its_figures() {
    let s = scenario();
    let out = liveload()
        .args(["plan", s.to_str().unwrap(), "--users", "10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Plan: 1 node(s)"), "{text}");
    assert!(
        text.contains("by memory") && text.contains("by cpu"),
        "{text}"
    );
}
