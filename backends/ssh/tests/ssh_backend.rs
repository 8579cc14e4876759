//! The SSH backend against a real OpenSSH server (a private `sshd` per test): the shared
//! conformance suite end to end with real Chromium, then what only SSH has — host keys, keys,
//! a connection that dies mid-run, a host without Chromium.

use liveload_test_support::sshd as common;

use std::sync::Arc;
use std::time::Duration;

use liveload_core::agent_client::AgentConnection;
use liveload_core::conformance::Harness;
use liveload_core::proto::ControllerMessage;
use liveload_core::{Backend, BackendErrorKind, Error, NodeSpec, RunFilter, names, run};
use liveload_ssh::Auth;
use tokio::time::Instant;

fn spec(run_id: &str, index: u32) -> NodeSpec {
    NodeSpec {
        run_id: run_id.to_string(),
        index,
        token: names::new_token(),
        ttl: Duration::from_secs(120),
        grace: Duration::from_secs(30),
        tls: None,
        no_browser: true,
    }
}

/// An agent that takes 10 s to start: a wrapper script that sleeps, then runs the real one.
fn slow_agent(sshd: &common::Sshd) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = sshd.dir.path().join("slow-agent");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nsleep 10\nexec {} \"$@\"\n",
            common::agent_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

async fn harness(sshd: &common::Sshd) -> Harness {
    let target = demo_target::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let slow = sshd
        .builder(sshd.hosts(4))
        .agent_binary(std::env::consts::ARCH, slow_agent(sshd))
        .build()
        .unwrap();
    Harness {
        backend: Arc::new(sshd.backend(4)),
        slow_backend: Arc::new(slow),
        target_url: Some(format!("http://{target}")),
        ready_timeout: Duration::from_secs(30),
    }
}

/// The suite's harness on a fresh sshd (the guard).
async fn setup() -> (Harness, common::Sshd) {
    let sshd = common::Sshd::start();
    (harness(&sshd).await, sshd)
}

/// No run directory is left on the host once a check is done.
fn nothing_left(sshd: common::Sshd) {
    let left: Vec<_> = std::fs::read_dir(sshd.remote_dir.join("runs"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "run directories left on the host: {left:?}"
    );
}

liveload_core::conformance_tests!(setup: setup(), after: nothing_left);

fn backend_error(err: &Error) -> (BackendErrorKind, String, String) {
    match err {
        Error::Backend(e) => (
            e.kind,
            e.message.clone(),
            e.hint.clone().unwrap_or_default(),
        ),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_host_key_is_refused_unless_accepted_explicitly() {
    let sshd = common::Sshd::start();
    let empty = sshd.dir.path().join("empty_known_hosts");
    let strict = sshd
        .builder(sshd.hosts(1))
        .known_hosts(&empty)
        .build()
        .unwrap();
    let run = names::new_run_id("hostkey");
    let err = strict.create(&spec(&run, 0)).await.unwrap_err();
    let (kind, message, hint) = backend_error(&err);
    assert_eq!(kind, BackendErrorKind::HostKey);
    assert!(
        message.contains("host h0") && message.contains("SHA256:"),
        "{message}"
    );
    assert!(hint.contains("--ssh-accept-new"), "{hint}");
    assert!(!empty.exists(), "nothing recorded without consent");

    let accepting = sshd
        .builder(sshd.hosts(1))
        .known_hosts(&empty)
        .accept_new_host_keys(true)
        .build()
        .unwrap();
    let node = accepting.create(&spec(&run, 0)).await.unwrap();
    accepting.destroy(&node).await.unwrap();
    let recorded = std::fs::read_to_string(&empty).unwrap();
    assert!(
        recorded.contains(&format!("[127.0.0.1]:{}", sshd.port)),
        "{recorded}"
    );
    // Recorded now: the strict backend accepts it too.
    let node = strict.create(&spec(&run, 0)).await.unwrap();
    strict.destroy(&node).await.unwrap();
    assert!(common::agents_of_run(&run).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_host_key_is_always_refused() {
    let sshd = common::Sshd::start();
    let other = sshd.dir.path().join("other_host_key");
    common::keygen(&other);
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let fields: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let known = sshd.dir.path().join("stale_known_hosts");
    std::fs::write(
        &known,
        format!("[127.0.0.1]:{} {} {}\n", sshd.port, fields[0], fields[1]),
    )
    .unwrap();
    let backend = sshd
        .builder(sshd.hosts(1))
        .known_hosts(&known)
        .accept_new_host_keys(true)
        .build()
        .unwrap();
    let err = backend
        .create(&spec(&names::new_run_id("changed"), 0))
        .await
        .unwrap_err();
    let (kind, message, hint) = backend_error(&err);
    assert_eq!(kind, BackendErrorKind::HostKey);
    assert!(
        message.contains("differs") && message.contains(":1"),
        "{message}"
    );
    assert!(hint.contains("ssh-keygen -R"), "{hint}");
    assert_eq!(
        std::fs::read_to_string(&known).unwrap().lines().count(),
        1,
        "the recorded key is not replaced"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_is_an_auth_error_naming_the_host() {
    let sshd = common::Sshd::start();
    let stranger = sshd.dir.path().join("stranger");
    common::keygen(&stranger);
    let mut hosts = sshd.hosts(1);
    hosts[0].name = "lab-7".into();
    hosts[0].auth = Auth::IdentityFile(stranger);
    let backend = sshd.builder(hosts).build().unwrap();
    let err = backend
        .create(&spec(&names::new_run_id("auth"), 0))
        .await
        .unwrap_err();
    let (kind, message, hint) = backend_error(&err);
    assert_eq!(kind, BackendErrorKind::Auth);
    assert!(
        message.contains("host lab-7") && message.contains("refused"),
        "{message}"
    );
    assert!(hint.contains("authorized_keys"), "{hint}");
    // A missing key file is an auth error too, saying which file.
    let mut hosts = sshd.hosts(1);
    hosts[0].auth = Auth::IdentityFile("/nonexistent/id_ed25519".into());
    let backend = sshd.builder(hosts).build().unwrap();
    let err = backend
        .create(&spec(&names::new_run_id("auth"), 0))
        .await
        .unwrap_err();
    let (kind, message, _) = backend_error(&err);
    assert_eq!(kind, BackendErrorKind::Auth);
    assert!(message.contains("/nonexistent/id_ed25519"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_host_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sshd = common::Sshd::start();
    let mut hosts = sshd.hosts(1);
    hosts[0].port = port; // nothing listens there
    let backend = sshd.builder(hosts).build().unwrap();
    let err = backend
        .create(&spec(&names::new_run_id("gone"), 0))
        .await
        .unwrap_err();
    let (kind, message, _) = backend_error(&err);
    assert_eq!(kind, BackendErrorKind::Unreachable);
    assert!(message.contains("host h0"), "{message}");
}

/// A host that accepts TCP and never speaks SSH (a stalled sshd, a middlebox that holds the
/// connection): creating a node there fails at the connect timeout naming the host, and
/// listing still returns the nodes of the hosts that answer, so teardown reaches them.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_stalls_in_the_handshake_is_named_and_hides_no_other_node() {
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stall.local_addr().unwrap().port();
    // Accept and hold every connection, never answering (the thread ends with the test).
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in stall.incoming().flatten() {
            held.push(connection);
        }
    });
    let sshd = common::Sshd::start();
    let mut hosts = sshd.hosts(2);
    hosts[1].port = port;
    let backend = sshd
        .builder(hosts)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let run = names::new_run_id("stall");
    let answered = backend.create(&spec(&run, 0)).await.unwrap();
    let asked = Instant::now();
    let err = backend.create(&spec(&run, 1)).await.unwrap_err();
    // The timeout is honoured (the stalled host would hold the call forever otherwise).
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    eprintln!(
        "FIGURE ssh stall: the stalled host's node failed {:.1}s after its create (connect timeout 1s)",
        asked.elapsed().as_secs_f64()
    );
    let (kind, message, _) = backend_error(&err);
    assert_eq!(kind, BackendErrorKind::Unreachable);
    assert!(message.contains("host h1"), "{message}");
    let listed = backend.list(&RunFilter::Run(run.clone())).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, [answered.id.as_str()]);
    backend.destroy(&answered).await.unwrap();
    assert!(backend.list(&RunFilter::Run(run)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_without_chromium_is_refused_by_name_and_left_clean() {
    // This host's PATH has the shell tools liveload uses, and no Chromium.
    let sshd_probe = common::Sshd::start();
    let tools = sshd_probe.dir.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    for tool in [
        "sh",
        "uname",
        "cat",
        "cut",
        "sha256sum",
        "mkdir",
        "chmod",
        "mv",
        "rm",
        "rmdir",
        "setsid",
        "sleep",
        "tr",
        "grep",
        "tail",
    ] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let real = String::from_utf8(found.stdout).unwrap();
        std::os::unix::fs::symlink(real.trim(), tools.join(tool)).unwrap();
    }
    let sshd = common::Sshd::start_with(&format!("SetEnv PATH={}", tools.display()));
    let backend = sshd.backend(1);
    let run = names::new_run_id("nochrome");
    let mut browser_spec = spec(&run, 0);
    browser_spec.no_browser = false;
    let err = backend.create(&browser_spec).await.unwrap_err();
    let (kind, message, hint) = backend_error(&err);
    assert_eq!(kind, BackendErrorKind::HostUnfit);
    assert!(
        message.contains("host h0") && message.contains("Chromium"),
        "{message}"
    );
    assert!(hint.contains("chromium-headless-shell"), "{hint}");
    assert!(
        backend
            .list(&RunFilter::Run(run.clone()))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(common::agents_of_run(&run).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_is_uploaded_once_per_version() {
    let sshd = common::Sshd::start();
    let backend = sshd.backend(2);
    let run = names::new_run_id("upload");
    let first = backend.create(&spec(&run, 0)).await.unwrap();
    let bin_dir = sshd.remote_dir.join("bin");
    let uploaded: Vec<_> = std::fs::read_dir(&bin_dir).unwrap().flatten().collect();
    assert_eq!(uploaded.len(), 1);
    let stamp = uploaded[0].metadata().unwrap().modified().unwrap();
    let second = backend.create(&spec(&run, 1)).await.unwrap();
    let again: Vec<_> = std::fs::read_dir(&bin_dir).unwrap().flatten().collect();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].metadata().unwrap().modified().unwrap(),
        stamp,
        "the same version is not uploaded twice"
    );
    backend.destroy(&first).await.unwrap();
    backend.destroy(&second).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_listens_on_the_hosts_loopback_only_and_the_token_stays_off_disk() {
    let sshd = common::Sshd::start();
    let backend = sshd.backend(1);
    let run = names::new_run_id("loopback");
    let node_spec = spec(&run, 0);
    let node = backend.create(&node_spec).await.unwrap();
    let endpoint = run::wait_ready_or_destroy(&backend, &node, Duration::from_secs(30))
        .await
        .unwrap();
    let node_dir = sshd.remote_dir.join("runs").join(&run).join("0");
    let ready = std::fs::read_to_string(node_dir.join("ready")).unwrap();
    assert!(ready.contains("\"127.0.0.1:"), "{ready}");
    // The controller's side is a local tunnel, not the agent's own port.
    assert!(endpoint.address.starts_with("127.0.0.1:"));
    assert!(!ready.contains(&endpoint.address));
    // The environment file with the token is gone once the agent has started.
    assert!(!node_dir.join("env").exists());
    for entry in std::fs::read_dir(&node_dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            !text.contains(node_spec.token.expose()),
            "{:?}",
            entry.path()
        );
    }
    backend.destroy(&node).await.unwrap();
    assert!(!node_dir.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_ssh_connection_mid_run_ends_the_agent_within_the_grace_period() {
    let sshd = common::Sshd::start();
    let backend = sshd.backend(1);
    let run = names::new_run_id("severed");
    let mut node_spec = spec(&run, 0);
    node_spec.grace = Duration::from_secs(2);
    let node = backend.create(&node_spec).await.unwrap();
    let endpoint = run::wait_ready_or_destroy(&backend, &node, Duration::from_secs(30))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (connection, _) = AgentConnection::connect(&node.id, &endpoint, &node_spec.token, deadline)
        .await
        .unwrap();
    let (sender, _receiver) = connection.into_split();
    let beating = tokio::spawn(async move {
        let mut sender = sender;
        while sender.send(&ControllerMessage::Heartbeat).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // Heartbeats keep it alive past the grace period.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(common::agents_of_run(&run).len(), 1, "alive while heard");
    // The network dies: every SSH session is gone, so is the tunnel.
    sshd.kill_sessions();
    let cut = std::time::Instant::now();
    while !common::agents_of_run(&run).is_empty() {
        assert!(
            cut.elapsed() < Duration::from_secs(2 + 5),
            "the agent outlived its 2 s grace by more than 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "FIGURE ssh connection killed: agent gone {:.1}s after the cut (grace 2s)",
        cut.elapsed().as_secs_f64()
    );
    beating.abort();
    // destroy reconnects and removes the files.
    backend.destroy(&node).await.unwrap();
    assert!(backend.list(&RunFilter::Run(run)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn more_nodes_than_hosts_is_a_clear_error() {
    let sshd = common::Sshd::start();
    let backend = sshd.backend(1);
    assert_eq!(backend.node_limit(), Some(1));
    let err = backend
        .create(&spec(&names::new_run_id("many"), 1))
        .await
        .unwrap_err();
    let (kind, message, hint) = backend_error(&err);
    assert_eq!(kind, BackendErrorKind::Quota);
    assert!(message.contains("hosts file has 1"), "{message}");
    assert!(hint.contains("add hosts"), "{hint}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_behind_a_jump_host_is_reached_through_it() {
    let sshd = common::Sshd::start();
    let mut hosts = sshd.hosts(1);
    // The jump host is this same server; the target is reached from it over its loopback.
    let mut jump = hosts[0].clone();
    jump.name = "bastion".into();
    hosts[0].jump = Some(Box::new(jump));
    let backend = sshd.builder(hosts).build().unwrap();
    let run = names::new_run_id("jump");
    let node_spec = spec(&run, 0);
    let node = backend.create(&node_spec).await.unwrap();
    let endpoint = run::wait_ready_or_destroy(&backend, &node, Duration::from_secs(30))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (_, welcome) = AgentConnection::connect(&node.id, &endpoint, &node_spec.token, deadline)
        .await
        .unwrap();
    assert!(welcome.facts.logical_cores > 0);
    backend.destroy(&node).await.unwrap();
    assert!(common::agents_of_run(&run).is_empty());
}
