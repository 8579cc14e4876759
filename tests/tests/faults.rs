//! Faults on the local backend, through the real binary: an agent killed mid-run, the
//! controller hung up on (SIGHUP) or frozen past the grace, and a teardown that cannot finish.
//! Each ends with the provider's own proof — no process of the run left on this machine.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use liveload_core::run::{self, Quiet, RunOptions};
use liveload_core::{AgentEndpoint, Backend, NodeHandle, NodeSize, NodeSpec, Result, RunFilter};
use liveload_e2e::*;
use liveload_local::LocalBackend;
use tokio::time::Instant;

/// SIGKILL a whole process group: a node's agent and its Chromium die together, as when the
/// machine does.
fn kill_group(pgid: i32) {
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// `liveload demo` on two local nodes, two users each (each node is half of this host and
/// holds two users), for `duration`, as JSON.
fn two_node_demo(state: &std::path::Path, duration: &str, extra: &[&str]) -> std::process::Child {
    liveload(state)
        .args([
            "demo",
            "--local-nodes",
            "2",
            "--users",
            "4",
            "--duration",
            duration,
            "--start-interval",
            "0s",
            "--output",
            "json",
            "--no-report",
            "--grace",
            "5s",
            "--contexts-per-core",
            &format!("{}", 2.0 / host_cores_share()),
        ])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until the run's Chromium processes run (users started) in every agent's group.
fn wait_for_users(agents: &[i32]) {
    assert!(
        eventually(Duration::from_secs(60), || {
            agents.iter().all(|a| {
                processes_in_groups(&[*a])
                    .iter()
                    .any(|(_, cmd)| cmd.contains("liveload-chromium-"))
            })
        }),
        "Chromium never started on every node"
    );
}

fn assert_nothing_left(agents: &[i32]) {
    assert!(
        eventually(Duration::from_secs(10), || processes_in_groups(agents)
            .is_empty()),
        "left running: {:?}",
        processes_in_groups(agents)
    );
}

#[test]
fn a_node_killed_mid_run_is_reported_and_the_others_finish() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let mut child = two_node_demo(state.path(), "10s", &[]);
    let (_, agents) = wait_for_agents(state.path(), &mut child, 2);
    wait_for_users(&agents);
    std::thread::sleep(Duration::from_secs(2));
    kill_group(agents[0]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "run-failed code: {stderr}");
    // When the loss was seen: the run's own log line, relative to its start.
    eprintln!(
        "FIGURE node killed: reported {}",
        stderr
            .lines()
            .find(|l| l.contains("node lost"))
            .unwrap_or("(no log line)")
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lost = report["lost_nodes"].as_array().expect("lost nodes listed");
    assert_eq!(lost.len(), 1, "{report}");
    assert_eq!(lost[0]["users_failed"], 2, "its two users failed: {report}");
    assert!(lost[0]["reason"].as_str().unwrap().len() > 5);
    // The other node finished its users, and their metrics are whole.
    let survivor = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] != lost[0]["id"])
        .unwrap();
    assert!(
        survivor["iterations_ok"].as_u64().unwrap() > 0,
        "{survivor}"
    );
    assert_eq!(report["users_succeeded"], 2, "{report}");
    assert_eq!(report["counters"]["nodes_lost"], 1);
    assert_nothing_left(&agents);
}

#[test]
fn abort_on_node_loss_stops_the_run() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let mut child = two_node_demo(state.path(), "60s", &["--on-node-loss", "abort"]);
    let (_, agents) = wait_for_agents(state.path(), &mut child, 2);
    wait_for_users(&agents);
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = std::time::Instant::now();
    kill_group(agents[1]);
    let out = child.wait_with_output().unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(40),
        "the run stopped instead of running its 60 s"
    );
    assert_eq!(out.status.code(), Some(7));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["aborted"].as_str().unwrap().contains("lost"),
        "{report}"
    );
    assert_nothing_left(&agents);
}

#[test]
fn sighup_tears_down_like_ctrl_c() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let mut child = two_node_demo(state.path(), "60s", &[]);
    let (_, agents) = wait_for_agents(state.path(), &mut child, 2);
    wait_for_users(&agents);
    signal(child.id(), libc::SIGHUP);
    let hung_up = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "FIGURE sighup: exited, every node destroyed, {:.1}s after the signal",
        hung_up.elapsed().as_secs_f64()
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Torn down by the controller itself, not by the dead-man switch (5 s grace).
    assert_nothing_left(&agents);
    assert!(local_runs(state.path()).is_empty());
}

#[test]
fn a_frozen_controller_loses_its_agents_and_still_tears_down_when_resumed() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let mut child = two_node_demo(state.path(), "60s", &[]);
    let (_, agents) = wait_for_agents(state.path(), &mut child, 2);
    wait_for_users(&agents);
    std::thread::sleep(Duration::from_secs(2));
    signal(child.id(), libc::SIGSTOP);
    let frozen = std::time::Instant::now();
    // The agents give up on a silent controller after the grace (5 s).
    assert!(
        eventually(Duration::from_secs(20), || processes_in_groups(&agents)
            .is_empty()),
        "agents outlived a frozen controller: {:?}",
        processes_in_groups(&agents)
    );
    eprintln!(
        "FIGURE frozen controller: agents gone {:.1}s after SIGSTOP (grace 5s)",
        frozen.elapsed().as_secs_f64()
    );
    signal(child.id(), libc::SIGCONT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["lost_nodes"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert!(local_runs(state.path()).is_empty(), "records cleaned up");
}

/// A local backend whose `destroy` never returns for node 0, which its provider keeps listing:
/// a cloud API that hangs on one machine.
#[derive(Debug)]
struct HangingDestroy(LocalBackend, std::sync::Mutex<Option<NodeHandle>>);

#[async_trait]
impl Backend for HangingDestroy {
    fn name(&self) -> &'static str {
        "hanging"
    }
    fn link_path(&self) -> liveload_core::LinkPath {
        self.0.link_path()
    }
    fn billing(&self) -> liveload_core::Billing {
        self.0.billing()
    }
    async fn create(&self, spec: &NodeSpec) -> Result<NodeHandle> {
        let node = self.0.create(spec).await?;
        if spec.index == 0 {
            *self.1.lock().unwrap() = Some(node.clone());
        }
        Ok(node)
    }
    async fn wait_ready(&self, node: &NodeHandle, deadline: Instant) -> Result<AgentEndpoint> {
        self.0.wait_ready(node, deadline).await
    }
    async fn destroy(&self, node: &NodeHandle) -> Result<()> {
        if node.index == 0 {
            std::future::pending::<()>().await;
        }
        self.0.destroy(node).await
    }
    async fn list(&self, runs: &RunFilter) -> Result<Vec<NodeHandle>> {
        let mut nodes = self.0.list(runs).await?;
        if let Some(held) = self.1.lock().unwrap().clone()
            && runs.matches(&held.run_id)
            && !nodes.contains(&held)
        {
            nodes.push(held);
        }
        Ok(nodes)
    }
    async fn expected_size(&self) -> Result<Option<NodeSize>> {
        self.0.expected_size().await
    }
    fn node_limit(&self) -> Option<u64> {
        self.0.node_limit()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_teardown_that_cannot_finish_stops_at_its_deadline_and_names_what_is_left() {
    let state = tempfile::tempdir().unwrap();
    let local = LocalBackend::builder()
        .state_dir(state.path())
        .nodes_per_host(2)
        .build()
        .unwrap();
    let backend = Arc::new(HangingDestroy(local.clone(), Default::default()));
    let mut scenario = liveload_core::scenario::Scenario::new(
        "hang",
        "http://127.0.0.1",
        vec![liveload_core::proto::Step {
            name: "idle".into(),
            kind: liveload_core::proto::StepKind::Think {
                min_ms: 10,
                max_ms: 20,
            },
        }],
    );
    scenario.duration = Duration::from_millis(500);
    let mut options = RunOptions::new("hang", 2, Duration::from_millis(500));
    options.no_browser = true;
    options.sizing.profile.browser_contexts_per_core = 1.0 / host_cores_share();
    options.teardown_timeout = Duration::from_secs(5);
    let started = std::time::Instant::now();
    let err = run::run(
        backend.clone(),
        &scenario,
        &options,
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(err.code(), "teardown_incomplete", "{err}");
    assert_eq!(err.exit_code(), 9);
    let hint = err.hint().unwrap();
    assert!(
        hint.contains("liveload cleanup --backend hanging --run "),
        "{hint}"
    );
    let held = backend.list(&RunFilter::All).await.unwrap();
    assert_eq!(held.len(), 1, "only the hanging node is left: {held:?}");
    assert!(err.to_string().contains(&held[0].id), "{err}");
    // Its agent still ended (it was told to shut down when the run ended): nothing of the
    // run runs on this machine.
    assert!(
        eventually(Duration::from_secs(10), || local_lists_nothing(&local)),
        "processes left"
    );
}

/// Contexts per core such that one node of this host's half holds exactly one user.
fn host_cores_share() -> f64 {
    std::thread::available_parallelism().unwrap().get() as f64 / 2.0
}

/// Does the local backend list no node of any run (checked from a plain thread)?
fn local_lists_nothing(local: &LocalBackend) -> bool {
    let local = local.clone();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(local.list(&RunFilter::All))
            .unwrap()
            .is_empty()
    })
    .join()
    .unwrap()
}

#[test]
fn cleanup_all_spares_a_run_still_going_on_unless_forced() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let mut child = two_node_demo(state.path(), "60s", &[]);
    let (run_id, agents) = wait_for_agents(state.path(), &mut child, 2);
    wait_for_users(&agents);
    std::thread::sleep(Duration::from_secs(2)); // users started (not only prepared)
    let out = liveload(state.path())
        .args(["cleanup", "--all"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("0 node(s) destroyed"), "{stdout}");
    assert!(
        stdout.contains(&run_id) && stdout.contains("--force"),
        "{stdout}"
    );
    assert!(
        agents
            .iter()
            .all(|a| !processes_in_groups(&[*a]).is_empty()),
        "the live run's nodes are untouched"
    );
    let out = liveload(state.path())
        .args(["cleanup", "--all", "--force"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 node(s) destroyed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_nothing_left(&agents);
    // The run loses both nodes and says so.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7));
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_expired_destroys_machines_past_their_lifetime_and_only_those() {
    let state = tempfile::tempdir().unwrap();
    let local = LocalBackend::builder()
        .state_dir(state.path())
        .die_with_controller(false)
        .build()
        .unwrap();
    let spec = |run: &str, ttl: u64| NodeSpec {
        run_id: run.to_string(),
        index: 0,
        token: liveload_core::names::new_token(),
        ttl: Duration::from_secs(ttl),
        grace: Duration::from_secs(300),
        tls: None,
        no_browser: true,
    };
    let expired = local.create(&spec("old-run", 1)).await.unwrap();
    let young = local.create(&spec("young-run", 600)).await.unwrap();
    for node in [&expired, &young] {
        local
            .wait_ready(node, Instant::now() + Duration::from_secs(30))
            .await
            .unwrap();
    }
    // A hung agent cannot end itself at its TTL: freeze the old one.
    let pid: u32 = expired.detail.trim_start_matches("pid ").parse().unwrap();
    signal(pid, libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = tokio::task::spawn_blocking({
        let dir = state.path().to_path_buf();
        move || {
            liveload(&dir)
                .args(["cleanup", "--expired"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 node(s) destroyed"), "{stdout}");
    assert!(
        stdout.contains("old-run") && !stdout.contains("young-run"),
        "{stdout}"
    );
    let left = local.list(&RunFilter::All).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].run_id, "young-run");
    local.destroy(&young).await.unwrap();
    assert!(local.list(&RunFilter::All).await.unwrap().is_empty());
}
