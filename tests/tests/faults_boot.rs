//! Faults during boot and on the network, on every backend where they make sense: the
//! controller SIGKILLed while its nodes are being created (local, Fly, EC2, SSH), the network
//! to one agent cut (a black hole: nothing arrives, nothing is refused), and an SSH host that
//! vanishes mid-run. Each ends with the provider's own proof that nothing of the run is left:
//! the process table, the Fly test server's machines, moto's instances, the SSH host's
//! processes. Each prints its time to a clean state (the README's Reliability table).

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use liveload_core::run::{self, RunOptions};
use liveload_core::{AgentEndpoint, Backend, NodeHandle, NodeSize, NodeSpec, Result, RunFilter};
use liveload_e2e::*;
use liveload_local::LocalBackend;
use liveload_test_support::sshd::{Sshd, agents_of_run};
use liveload_test_support::{fly_server, moto};

/// The grace every run here uses: agents that hear nothing from their controller this long
/// end themselves.
const GRACE: &str = "4s";

/// `liveload run` of the demo scenario with `args`, in the background.
fn spawn_run(state: &std::path::Path, env: &[(&str, &str)], args: &[String]) -> Child {
    let scenario = repo().join("examples/demo.yaml");
    liveload(state)
        .envs(env.iter().copied())
        .arg("run")
        .arg(scenario)
        .args(["--base-url", "http://127.0.0.1:9", "--duration", "30s"])
        .args(["--grace", GRACE, "--yes", "--output", "json", "--no-report"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every process on this machine started for any run id in `runs`.
fn agents_of(runs: &[String]) -> Vec<u32> {
    runs.iter().flat_map(|r| agents_of_run(r)).collect()
}

/// Wait until no agent of `runs` is left; returns how long that took.
fn wait_agents_gone(runs: &[String], within: Duration) -> Duration {
    let started = Instant::now();
    assert!(
        eventually(within, || agents_of(runs).is_empty()),
        "agents still running {:?} after {within:?}",
        agents_of(runs)
    );
    started.elapsed()
}

/// `liveload cleanup --all --force` with `args`; returns how long it took.
fn cleanup(state: &std::path::Path, env: &[(&str, &str)], args: &[String]) -> Duration {
    let started = Instant::now();
    let out = liveload(state)
        .envs(env.iter().copied())
        .args(["cleanup", "--all", "--force", "--output", "json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

#[test]
fn controller_killed_during_boot_on_local_leaves_nothing() {
    // Two nodes of half this host, one user each.
    let per_core = 2.0 / std::thread::available_parallelism().unwrap().get() as f64;
    let state = tempfile::tempdir().unwrap();
    // Agents that take 3 s to listen: the controller dies after creating them, before any
    // is ready.
    let args = strings(&[
        "--local-nodes",
        "2",
        "--users",
        "2",
        "--contexts-per-core",
        &per_core.to_string(),
        "--local-debug-delay-listen-ms",
        "3000",
    ]);
    let mut child = spawn_run(state.path(), &[], &args);
    let (run, agents) = wait_for_agents(state.path(), &mut child, 2);
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = wait_agents_gone(&[run], Duration::from_secs(10));
    assert!(processes_in_groups(&agents).is_empty());
    eprintln!(
        "FIGURE local boot kill: agents gone {:.1}s after the SIGKILL",
        gone.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_killed_during_boot_on_fly_leaves_nothing_after_cleanup() {
    let server = fly_server::start().await;
    let state = tempfile::tempdir().unwrap();
    let port = server.state.lock().unwrap().agent_port.to_string();
    let args = strings(&[
        "--backend",
        "fly",
        "--fly-app",
        "boot-kill",
        "--fly-api-url",
        &server.url,
        "--fly-image",
        "registry.fly.io/liveload-agent:e2e",
        "--fly-agent-port",
        &port,
        "--fly-mode",
        "private",
        "--fly-size",
        "shared-cpu-8x",
        "--users",
        "12",
        "--contexts-per-core",
        "0.5",
    ]);
    let env = [("FLY_API_TOKEN", fly_server::TOKEN)];
    let mut child = spawn_run(state.path(), &env, &args);
    // Kill as soon as the provider holds a machine: creates sent, nodes not yet recorded.
    assert!(eventually(Duration::from_secs(60), || !server
        .state
        .lock()
        .unwrap()
        .machines
        .is_empty()));
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let runs: Vec<String> = {
        let s = server.state.lock().unwrap();
        let mut runs: Vec<String> = s
            .machines
            .values()
            .filter_map(|m| {
                m.config["metadata"][liveload_fly::META_RUN]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        runs.sort();
        runs.dedup();
        runs
    };
    assert!(!runs.is_empty(), "machines carry their run id");
    // Agents hear nothing from a dead controller: each ends itself within the grace.
    let gone = wait_agents_gone(&runs, Duration::from_secs(15));
    // The provider still holds the machines (stopped, as Fly keeps them): cleanup finds them.
    assert!(!server.state.lock().unwrap().machines.is_empty());
    let took = cleanup(state.path(), &env, &args[..args.len() - 4]);
    assert!(
        server.state.lock().unwrap().machines.is_empty(),
        "every machine destroyed"
    );
    eprintln!(
        "FIGURE fly boot kill: agents gone {:.1}s after the SIGKILL; cleanup {:.1}s; clean {:.1}s after the kill",
        gone.as_secs_f64(),
        took.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_killed_during_boot_on_ec2_leaves_nothing_after_cleanup() {
    let server = moto::Moto::start();
    let ami = moto::known_ami(server.options()).await;
    let state = tempfile::tempdir().unwrap();
    let args = strings(&[
        "--backend",
        "ec2",
        "--ec2-region",
        "us-east-1",
        "--ec2-endpoint-url",
        &server.url,
        "--ec2-instance-type",
        "c7i.large",
        "--ec2-ami",
        &ami,
        "--ec2-test-local-agents",
        "--users",
        "2",
    ]);
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let ec2 = liveload_ec2::Ec2Backend::builder()
        .client(server.options())
        .build()
        .await
        .unwrap();
    let mut child = spawn_run(state.path(), &env, &args);
    let mut held = Vec::new();
    for _ in 0..600 {
        held = ec2.list(&RunFilter::All).await.unwrap();
        if !held.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!held.is_empty(), "the run launched an instance");
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let runs: Vec<String> = held.iter().map(|n| n.run_id.clone()).collect();
    let gone = wait_agents_gone(&runs, Duration::from_secs(15));
    // The instances are still running in the provider until cleanup terminates them.
    assert!(!ec2.list(&RunFilter::All).await.unwrap().is_empty());
    let took = tokio::task::spawn_blocking({
        let state = state.path().to_path_buf();
        let args = args[..args.len() - 2].to_vec();
        move || cleanup(&state, &env, &args)
    })
    .await
    .unwrap();
    assert!(
        ec2.list(&RunFilter::All).await.unwrap().is_empty(),
        "every instance terminated"
    );
    eprintln!(
        "FIGURE ec2 boot kill: agents gone {:.1}s after the SIGKILL; cleanup {:.1}s; clean {:.1}s after the kill",
        gone.as_secs_f64(),
        took.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
}

fn ssh_args(server: &Sshd, hosts: usize) -> Vec<String> {
    strings(&[
        "--backend",
        "ssh",
        "--hosts",
        &server.hosts_file(hosts).display().to_string(),
        "--ssh-known-hosts",
        &server.known_hosts.display().to_string(),
        "--ssh-remote-dir",
        &server.remote_dir.display().to_string(),
    ])
}

/// The run ids of agents started under `server`'s remote directory.
fn ssh_runs(server: &Sshd) -> Vec<String> {
    std::fs::read_dir(server.remote_dir.join("runs"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn controller_killed_during_boot_on_ssh_leaves_nothing() {
    let server = Sshd::start();
    let state = tempfile::tempdir().unwrap();
    let mut args = ssh_args(&server, 2);
    args.extend(strings(&["--users", "2"]));
    let mut child = spawn_run(state.path(), &[], &args);
    // Kill once an agent was started on a host: its SSH connection dies with the controller.
    assert!(eventually(Duration::from_secs(60), || {
        !agents_of(&ssh_runs(&server)).is_empty()
    }));
    child.kill().unwrap();
    child.wait().unwrap();
    let runs = ssh_runs(&server);
    let gone = wait_agents_gone(&runs, Duration::from_secs(15));
    let took = cleanup(state.path(), &[], &args[..args.len() - 2]);
    eprintln!(
        "FIGURE ssh boot kill: agents gone {:.1}s after the SIGKILL; cleanup {:.1}s",
        gone.as_secs_f64(),
        took.as_secs_f64()
    );
}

/// A TCP forwarder that can be cut: once cut, it forwards nothing either way and closes
/// nothing — a black hole, as when a route dies or a firewall starts dropping packets.
async fn cuttable_proxy(upstream: String, cut: Arc<AtomicBool>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, cut.clone()));
            tokio::spawn(pump(server_read, client_write, cut.clone()));
        }
    });
    address
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            // Hold both ends open and never deliver: nothing arrives, nothing is refused.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// The local backend, with node 1's link through a [`cuttable_proxy`].
#[derive(Debug)]
struct CutOne {
    inner: LocalBackend,
    cut: Arc<AtomicBool>,
}

#[async_trait]
impl Backend for CutOne {
    fn name(&self) -> &'static str {
        "local"
    }
    fn link_path(&self) -> liveload_core::LinkPath {
        self.inner.link_path()
    }
    fn billing(&self) -> liveload_core::Billing {
        self.inner.billing()
    }
    async fn create(&self, spec: &NodeSpec) -> Result<NodeHandle> {
        self.inner.create(spec).await
    }
    async fn wait_ready(
        &self,
        node: &NodeHandle,
        deadline: tokio::time::Instant,
    ) -> Result<AgentEndpoint> {
        let mut endpoint = self.inner.wait_ready(node, deadline).await?;
        if node.index == 1 {
            endpoint.address = cuttable_proxy(endpoint.address.clone(), self.cut.clone()).await;
        }
        Ok(endpoint)
    }
    async fn destroy(&self, node: &NodeHandle) -> Result<()> {
        self.inner.destroy(node).await
    }
    async fn list(&self, runs: &RunFilter) -> Result<Vec<NodeHandle>> {
        self.inner.list(runs).await
    }
    async fn expected_size(&self) -> Result<Option<NodeSize>> {
        self.inner.expected_size().await
    }
    fn node_limit(&self) -> Option<u64> {
        self.inner.node_limit()
    }
}

/// Whether users started, and when each node was lost, as the run reported them.
#[derive(Default)]
struct LossClock {
    started: AtomicBool,
    lost: std::sync::Mutex<Vec<(String, Instant)>>,
}

impl run::Observer for LossClock {
    fn event(&self, event: &run::Event) {
        match event {
            run::Event::Started => self.started.store(true, Ordering::SeqCst),
            run::Event::NodeLost { node, .. } => self
                .lost
                .lock()
                .unwrap()
                .push((node.clone(), Instant::now())),
            _ => {}
        }
    }
}

/// Poll `check` every 50 ms until it holds or `timeout` passes (without blocking the runtime).
async fn eventually_async(timeout: Duration, check: impl Fn() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_black_holed_agent_is_lost_within_the_grace_and_the_run_goes_on() {
    let state = tempfile::tempdir().unwrap();
    let local = LocalBackend::builder()
        .state_dir(state.path())
        .nodes_per_host(2)
        .build()
        .unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let backend = Arc::new(CutOne {
        inner: local.clone(),
        cut: cut.clone(),
    });
    let mut scenario = liveload_core::scenario::Scenario::new(
        "black-hole",
        "http://127.0.0.1",
        vec![liveload_core::proto::Step {
            name: "idle".into(),
            kind: liveload_core::proto::StepKind::Think {
                min_ms: 50,
                max_ms: 100,
            },
        }],
    );
    scenario.duration = Duration::from_secs(14);
    let mut options = RunOptions::new("black-hole", 4, Duration::from_secs(14));
    options.no_browser = true;
    options.grace = Duration::from_secs(3);
    let cores = std::thread::available_parallelism().unwrap().get() as f64 / 2.0;
    options.sizing.profile.browser_contexts_per_core = 2.0 / cores;
    let clock = Arc::new(LossClock::default());
    let running = tokio::spawn({
        let (backend, clock) = (backend.clone(), clock.clone());
        async move { run::run(backend, &scenario, &options, clock, std::future::pending()).await }
    });
    // Once users run on both nodes (and a little more), the network to node 1 dies.
    assert!(
        eventually_async(Duration::from_secs(60), || clock
            .started
            .load(Ordering::SeqCst))
        .await,
        "the run started"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    cut.store(true, Ordering::SeqCst);
    let cut_at = Instant::now();
    let report = running
        .await
        .unwrap()
        .expect("the run completes with the other node");
    let lost = clock.lost.lock().unwrap().clone();
    assert_eq!(lost.len(), 1, "{lost:?}");
    let detected = lost[0].1.duration_since(cut_at);
    // Silence is counted from the last word heard (up to a snapshot period, 1 s, before the
    // cut) and checked once a second: noticed between the grace less 1 s and the grace plus
    // 1 s, never at once.
    assert!(
        detected >= Duration::from_secs(2) && detected < Duration::from_secs(8),
        "lost {detected:?} after the cut"
    );
    assert_eq!(report.lost_nodes.len(), 1);
    assert!(
        report.lost_nodes[0]
            .reason
            .contains("no word from its agent"),
        "{:?}",
        report.lost_nodes
    );
    assert_eq!(
        report.lost_nodes[0].users_failed, 2,
        "its users count failed"
    );
    assert_eq!(report.users_succeeded, 2, "the other node's users finished");
    // The black-holed agent hears nothing either and ends itself; teardown killed the rest.
    assert!(eventually(Duration::from_secs(10), || {
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
    }));
    eprintln!(
        "FIGURE black hole: node lost {:.1}s after the cut (grace 3s)",
        detected.as_secs_f64()
    );
}

/// Two hosts; mid-run one vanishes — its sshd, its connections and its processes gone at
/// once, as when a machine loses power. The run reports it and goes on with the other host;
/// teardown ends within its deadline with the other host clean.
#[test]
fn an_ssh_host_that_vanishes_mid_run_is_reported_and_teardown_finishes() {
    let _heavy = heavy();
    let stays = Sshd::start();
    let vanishes = Sshd::start();
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // One hosts file naming both servers, one node each.
    let mut text = String::new();
    for (name, server) in [("stays", &stays), ("vanishes", &vanishes)] {
        text.push_str(&format!(
            "[[host]]\nname = \"{name}\"\naddress = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nidentity = \"{}\"\n\n",
            server.port,
            liveload_test_support::sshd::current_user(),
            server.user_key.display()
        ));
    }
    let hosts = dir.path().join("hosts.toml");
    std::fs::write(&hosts, text).unwrap();
    let known = dir.path().join("known_hosts");
    let keys = [&stays, &vanishes]
        .iter()
        .map(|s| std::fs::read_to_string(&s.known_hosts).unwrap())
        .collect::<String>();
    std::fs::write(&known, keys).unwrap();
    let remote = dir.path().join("remote");
    let target = demo_target();
    // One user per node: each host is this machine, with all its cores.
    let one_user_per_node =
        (1.0 / std::thread::available_parallelism().unwrap().get() as f64).to_string();
    let child = liveload(state.path())
        .args(["run", repo().join("examples/demo.yaml").to_str().unwrap()])
        .args(["--base-url", &target, "--users", "2", "--duration", "20s"])
        .args([
            "--contexts-per-core",
            &one_user_per_node,
            "--grace",
            GRACE,
            "--yes",
            "--output",
            "json",
        ])
        .args([
            "--no-report",
            "--teardown-timeout",
            "20s",
            "--backend",
            "ssh",
        ])
        .arg("--hosts")
        .arg(&hosts)
        .arg("--ssh-known-hosts")
        .arg(&known)
        .arg("--ssh-remote-dir")
        .arg(&remote)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both hosts run an agent with Chromium: the run is under way.
    let run_dirs = || -> Vec<String> {
        std::fs::read_dir(remote.join("runs"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(eventually(Duration::from_secs(60), || {
        run_dirs().len() == 1 && agents_of(&run_dirs()).len() >= 2
    }));
    let run = run_dirs().remove(0);
    std::thread::sleep(Duration::from_secs(4));
    // The host vanishes: sshd, its sessions, and the agent it ran (node 1's directory).
    let vanished_agent: u32 = std::fs::read_to_string(remote.join("runs").join(&run).join("1/pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    vanishes.kill_sessions();
    drop(vanishes);
    signal_group(vanished_agent as i32, libc::SIGKILL);
    let vanished_at = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The run ended; teardown could not confirm the vanished host's node gone (it cannot be
    // reached): exit 9 naming that node, with the run's results kept.
    assert_eq!(out.status.code(), Some(9), "{stderr}");
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"], "teardown_incomplete", "{error}");
    let held = error["nodes"].as_array().unwrap();
    assert_eq!(
        held.len(),
        1,
        "only the vanished host's node is in doubt: {error}"
    );
    assert!(held[0].as_str().unwrap().starts_with("1/"), "{error}");
    let report = &error["report"];
    let lost = report["lost_nodes"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "{report}");
    assert_eq!(
        report["users_succeeded"], 1,
        "the other host's user finished: {report}"
    );
    // Nothing of the run is left on the host that stayed (nor anywhere on this machine).
    let clean = wait_agents_gone(&[run], Duration::from_secs(15));
    eprintln!(
        "FIGURE ssh vanish: run ended {:.1}s after the host vanished; agents gone {:.1}s later",
        vanished_at.elapsed().as_secs_f64() - clean.as_secs_f64(),
        clean.as_secs_f64()
    );
}
