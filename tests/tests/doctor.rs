//! `liveload doctor` on the local and SSH backends (each check passing and failing, set up
//! wrong on purpose), `plan` for Fly and EC2 without any credentials, and the errors that say
//! which credentials were looked for.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use liveload_core::Backend;
use liveload_core::doctor::{Check, Needs};
use liveload_core::error::exit_code;
use liveload_e2e::*;
use liveload_test_support::sshd::{Sshd, keygen};

/// The checks of a `doctor --output json` answer, by id (a repeated id keeps its failure).
fn checks(value: &serde_json::Value) -> BTreeMap<String, Check> {
    let mut by_id = BTreeMap::new();
    for c in value["checks"].as_array().expect("checks") {
        let check = Check {
            id: c["id"].as_str().unwrap().to_string(),
            passed: c["passed"].as_bool().unwrap(),
            detail: c["detail"].as_str().unwrap().to_string(),
            fix: c["fix"].as_str().map(str::to_string),
        };
        let keep_failure = by_id
            .get(&check.id)
            .is_some_and(|old: &Check| !old.passed && check.passed);
        if !keep_failure {
            by_id.insert(check.id.clone(), check);
        }
    }
    by_id
}

fn doctor(state: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, BTreeMap<String, Check>) {
    let mut command = liveload(state);
    command
        .arg("doctor")
        .args(args)
        .args(["--output", "json"])
        .envs(env.iter().copied());
    let (code, value, _) = json_output(&mut command);
    assert_eq!(value["passed"].as_bool(), Some(code == 0), "{value}");
    (code, checks(&value))
}

fn failed<'a>(checks: &'a BTreeMap<String, Check>, id: &str) -> &'a Check {
    let check = checks
        .get(id)
        .unwrap_or_else(|| panic!("no {id}: {checks:?}"));
    assert!(!check.passed, "{id} passed: {check:?}");
    assert!(
        check.fix.as_deref().is_some_and(|f| !f.is_empty()),
        "{check:?}"
    );
    check
}

/// A script standing in for Chromium: it knows its version and fails to start.
fn broken_chromium(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("chromium-that-fails");
    std::fs::write(
        &path,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'Chromium 1.0'; exit 0; }\necho 'error while loading shared libraries: libnss3.so' >&2\nexit 127\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn local_doctor_passes_on_a_good_setup_with_its_plan() {
    let state = tempfile::tempdir().unwrap();
    let chromium = chromium();
    let scenario = repo().join("examples/demo.yaml");
    let (code, checks) = doctor(
        state.path(),
        &[
            scenario.to_str().unwrap(),
            "--users",
            "4",
            "--chromium",
            chromium.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, exit_code::OK, "{checks:?}");
    for id in [
        "local.options",
        "plan",
        "local.agent",
        "local.chromium",
        "local.chromium_starts",
        "local.state_dir",
    ] {
        assert!(checks[id].passed, "{id}: {:?}", checks[id]);
    }
    assert!(
        checks["plan"].detail.starts_with("4 users: 1 node(s)"),
        "{:?}",
        checks["plan"]
    );
    assert!(checks["local.chromium"].detail.contains("Chromium"));
    assert!(checks["local.agent"].detail.contains(&format!(
        "protocol {}",
        liveload_core::proto::PROTOCOL_VERSION
    )));
}

#[test]
fn local_doctor_names_each_broken_part_and_its_fix() {
    let state = tempfile::tempdir().unwrap();
    // Chromium that exists and cannot start; a state directory others can write into; a plan
    // this host cannot hold.
    let chromium = broken_chromium(state.path());
    let shared = state.path().join("shared-state");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let scenario = repo().join("examples/demo.yaml");
    let (code, checks) = doctor(
        state.path(),
        &[
            scenario.to_str().unwrap(),
            "--users",
            "1000000",
            "--chromium",
            chromium.to_str().unwrap(),
        ],
        &[("LIVELOAD_STATE_DIR", shared.to_str().unwrap())],
    );
    assert_eq!(code, exit_code::DOCTOR_FAILED);
    assert!(
        failed(&checks, "plan").detail.contains("nodes"),
        "{:?}",
        checks["plan"]
    );
    assert!(checks["local.chromium"].passed, "found, version 1.0");
    let start = failed(&checks, "local.chromium_starts");
    assert!(
        start.detail.contains("libnss3"),
        "Chromium's own words: {start:?}"
    );
    let dir = failed(&checks, "local.state_dir");
    assert!(dir.detail.contains("others can write"), "{dir:?}");
    assert!(dir.fix.as_deref().unwrap().contains("chmod 700"));

    // Options that do not make a backend: the first thing to fix, and nothing else is asked.
    let (code, checks) = doctor(state.path(), &["--backend", "fly"], &[("FLY_APP", "")]);
    assert_eq!(code, exit_code::DOCTOR_FAILED);
    assert!(
        failed(&checks, "fly.options").detail.contains("--fly-app"),
        "{checks:?}"
    );
    assert_eq!(checks.len(), 1);

    // No Chromium at all.
    let (_, checks) = doctor(state.path(), &["--chromium", "/nonexistent/chromium"], &[]);
    assert!(
        failed(&checks, "local.chromium")
            .fix
            .as_deref()
            .unwrap()
            .contains("apt-get install")
    );
    assert!(!checks.contains_key("local.chromium_starts"));

    // An "agent" that is not one (an old build, a wrong file): it prints no check report.
    let (code, checks) = doctor(state.path(), &[], &[("LIVELOAD_AGENT_BIN", "/bin/true")]);
    assert_eq!(code, exit_code::DOCTOR_FAILED);
    assert!(
        failed(&checks, "local.agent")
            .fix
            .as_deref()
            .unwrap()
            .contains("liveload-agent")
    );
}

/// Without any credentials, `plan` for the cloud backends still says what a run would take and
/// cost, from built-in catalogues, and says they are not checked; nothing of the SDKs is logged.
#[test]
fn cloud_plans_need_no_credentials() {
    let state = tempfile::tempdir().unwrap();
    let scenario = repo().join("examples/demo.yaml");
    let bare = |args: &[&str]| {
        let out = Command::new(bin("liveload"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", state.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("LIVELOAD_STATE_DIR", state.path())
            .arg("plan")
            .arg(&scenario)
            .args(["--users", "1000"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = bare(&[
        "--backend",
        "fly",
        "--fly-app",
        "myapp",
        "--fly-image",
        "registry.fly.io/myapp:v1",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("node(s)") && stdout.contains("Cost: about $"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Fly's published machine presets"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not checked against your account"),
        "{stdout}"
    );
    let (code, stdout, stderr) = bare(&[
        "--backend",
        "ec2",
        "--ec2-region",
        "us-east-1",
        "--ec2-ami",
        "ami-12345678",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    // c7i.large: 2 vCPUs, 4 GiB.
    assert!(stdout.contains("4.0 GiB memory, 2.00 cores"), "{stdout}");
    assert!(
        stdout.contains("common EC2 types") && stdout.contains("Cost: about $"),
        "{stdout}"
    );
    assert!(stderr.trim().is_empty(), "nothing logged: {stderr}");
}

/// A command that must reach the provider, without credentials: the error names every source
/// looked at and the fix, and no SDK log line reaches stderr.
#[test]
fn missing_credentials_are_named_with_the_sources_tried() {
    let state = tempfile::tempdir().unwrap();
    let bare = |args: &[&str]| {
        let out = Command::new(bin("liveload"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", state.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("LIVELOAD_STATE_DIR", state.path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stderr) = bare(&["nodes", "--backend", "ec2", "--ec2-region", "us-east-1"]);
    assert_eq!(code, Some(exit_code::PROVISIONING), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one error line and its hint, no SDK log: {stderr}"
    );
    assert!(lines[0].starts_with("error[backend_error]"), "{stderr}");
    for source in [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "web identity",
        "(ECS)",
        "instance metadata",
    ] {
        assert!(lines[0].contains(source), "names {source}: {stderr}");
    }
    assert!(
        lines[1].contains("hint:") && lines[1].contains("aws sso login"),
        "{stderr}"
    );

    let (code, stderr) = bare(&["nodes", "--backend", "fly", "--fly-app", "myapp"]);
    assert_eq!(code, Some(exit_code::PROVISIONING), "{stderr}");
    assert!(
        stderr.contains("no Fly API token") && stderr.contains("FLY_API_TOKEN"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--fly-token-file") && stderr.contains("fly tokens create"),
        "{stderr}"
    );
}

fn ids(checks: &[Check]) -> Vec<(&str, bool)> {
    checks.iter().map(|c| (c.id.as_str(), c.passed)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_doctor_checks_every_host_and_the_capacity() {
    let sshd = Sshd::start();
    let mut hosts = sshd.hosts(2);
    hosts[0].max_users = Some(5);
    hosts[1].max_users = Some(5);
    let ssh = sshd.builder(hosts.clone()).build().unwrap();
    let needs = Needs {
        users: Some(10),
        ..Needs::default()
    };
    let checks = ssh.doctor(&needs).await;
    assert!(checks.iter().all(|c| c.passed), "{checks:?}");
    for id in [
        "ssh.reach",
        "ssh.host_key",
        "ssh.auth",
        "ssh.chromium",
        "ssh.agent",
    ] {
        assert_eq!(
            checks.iter().filter(|c| c.id == id).count(),
            2,
            "{id} per host"
        );
    }
    assert!(
        checks
            .iter()
            .any(|c| c.id == "ssh.capacity" && c.detail.contains("(10)"))
    );

    // Too many users for the hosts' caps.
    let needs = Needs {
        users: Some(11),
        ..Needs::default()
    };
    let checks = ssh.doctor(&needs).await;
    let capacity = checks.iter().find(|c| c.id == "ssh.capacity").unwrap();
    assert!(
        !capacity.passed && capacity.detail.contains("add up to 10"),
        "{capacity:?}"
    );

    // A host whose port answers nothing, one whose key is unknown, one that refuses the key.
    let dir = tempfile::tempdir().unwrap();
    let mut gone = sshd.hosts(1).remove(0);
    gone.name = "gone".into();
    gone.port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ssh = sshd.builder(vec![gone]).build().unwrap();
    let checks = ssh.doctor(&Needs::default()).await;
    assert_eq!(ids(&checks), [("ssh.reach", false)], "{checks:?}");
    assert!(checks[0].detail.contains("gone"), "{checks:?}");
    let empty = dir.path().join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let ssh = sshd
        .builder(sshd.hosts(1))
        .known_hosts(&empty)
        .build()
        .unwrap();
    let checks = ssh.doctor(&Needs::default()).await;
    assert_eq!(ids(&checks), [("ssh.reach", true), ("ssh.host_key", false)]);
    assert!(
        checks[1]
            .fix
            .as_deref()
            .unwrap()
            .contains("--ssh-accept-new"),
        "{checks:?}"
    );
    let stranger = dir.path().join("stranger");
    keygen(&stranger);
    let mut refused = sshd.hosts(1);
    refused[0].auth = liveload_ssh::Auth::IdentityFile(stranger);
    let ssh = sshd.builder(refused).build().unwrap();
    let checks = ssh.doctor(&Needs::default()).await;
    assert_eq!(
        ids(&checks),
        [
            ("ssh.reach", true),
            ("ssh.host_key", true),
            ("ssh.auth", false)
        ]
    );
}

/// A host whose login PATH has no Chromium (sshd sets the session's PATH), and no agent for
/// its architecture.
#[tokio::test(flavor = "multi_thread")]
async fn ssh_doctor_finds_a_host_without_chromium_or_agent() {
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/usr/bin/uname", bin.path().join("uname")).unwrap();
    let sshd = Sshd::start_with(&format!("SetEnv PATH={}", bin.path().display()));
    let ssh = sshd
        .builder(sshd.hosts(1))
        .agent_binary("mips64", "/nonexistent/agent")
        .build()
        .unwrap();
    let checks = ssh.doctor(&Needs::default()).await;
    let chromium = checks.iter().find(|c| c.id == "ssh.chromium").unwrap();
    assert!(
        !chromium.passed && chromium.fix.as_deref().unwrap().contains("apt-get"),
        "{checks:?}"
    );
    let agent = checks.iter().find(|c| c.id == "ssh.agent").unwrap();
    assert!(
        agent.passed,
        "this machine's architecture has its agent: {agent:?}"
    );
    let ssh = liveload_ssh::SshBackend::builder()
        .hosts(sshd.hosts(1))
        .known_hosts(sshd.known_hosts.clone())
        .agent_binary("mips64", "/nonexistent/agent")
        .build()
        .unwrap();
    let checks = ssh.doctor(&Needs::default()).await;
    let agent = checks.iter().find(|c| c.id == "ssh.agent").unwrap();
    assert!(!agent.passed, "{agent:?}");
    assert!(agent.detail.contains(std::env::consts::ARCH) && agent.detail.contains("mips64"));
    assert!(
        agent.fix.as_deref().unwrap().contains("--ssh-agent-bin"),
        "{agent:?}"
    );
}
