//! The example backend (`backends/example`, registered with one line in
//! `crates/liveload/src/registry.rs`) through the real binary: a new backend that declares no
//! policy gets the safe defaults on the command line too — the run asks for a cost confirmation
//! and its agent link is TLS — and runs end to end.
//!
//! Compiled only with the `example-cli` feature, which the test command turns on together with
//! the CLI's `example` feature (`scripts/test.sh`): a plain `cargo test` builds the CLI without
//! the example backend.
#![cfg(feature = "example-cli")]

use liveload_e2e::*;

#[test]
fn a_backend_added_with_one_registry_line_runs_from_the_cli_with_safe_defaults() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let common = [
        "run",
        "--backend",
        "example",
        "--users",
        "1",
        "--duration",
        "2s",
        "--base-url",
    ];
    // Billed by default: without --yes, and nobody at a terminal, nothing is created.
    let out = liveload(state.path())
        .args(common)
        .arg(&target)
        .arg(repo().join("examples/demo.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--yes") && stderr.contains("cost money"),
        "{stderr}"
    );
    assert!(
        !state.path().join("example").exists(),
        "no node was created"
    );
    // Confirmed: it runs over TLS (core's default for an undeclared link) and leaves nothing.
    let (code, report, out) = json_output(
        liveload(state.path())
            .args(common)
            .arg(&target)
            .args(["--yes", "--output", "json", "--no-report"])
            .arg(repo().join("examples/demo.yaml"))
            .env("LIVELOAD_LOG", "liveload_core=debug"),
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report["backend"], "example");
    assert_eq!(report["users_succeeded"], 1, "{report}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("tls: true"),
        "the spec carried TLS material: {log}"
    );
    let listed = liveload(state.path())
        .args(["nodes", "--backend", "example"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("no nodes"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
}
