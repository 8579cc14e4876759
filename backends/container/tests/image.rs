//! The agent image built and run for real: `images/agent/Dockerfile` built with podman (the
//! test support makes the base image from Debian's packages), its containers started under
//! memory, CPU and process limits through podman's Docker-compatible API, the agent's facts
//! checked against those limits (cgroup v1 on this CI host, v2 elsewhere), a real browser user
//! run inside with Chromium's sandbox on (under the shipped seccomp profile), tini as PID 1,
//! and the dead-man switch ending a container whose controller went silent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveload_container::NodeLimits;
use liveload_core::agent_client::AgentConnection;
use liveload_core::proto::{Step, StepKind, WaitCondition};
use liveload_core::run::{self, CostConfirmation, Quiet, RunOptions};
use liveload_core::scenario::Scenario;
use liveload_core::{Backend, NodeSpec, names, tls};
use liveload_test_support::container::{self, Engine, HOST_FROM_CONTAINER, OWNER_LABEL};

/// The limits the image runs under here: not the host's 2 cores and 24 GiB.
const LIMITS: NodeLimits = NodeLimits {
    memory_bytes: 1 << 30,
    cpus: 1.5,
    pids: 1024,
};

async fn engine() -> Engine {
    tokio::task::spawn_blocking(Engine::start).await.unwrap()
}

fn spec(run_id: &str, grace: Duration, tls: Option<tls::AgentTls>) -> NodeSpec {
    NodeSpec {
        run_id: run_id.to_string(),
        index: 0,
        token: names::new_token(),
        ttl: Duration::from_secs(300),
        grace,
        tls,
        no_browser: false,
    }
}

/// The host pid of the container's PID 1, through the engine.
fn init_pid(name: &str) -> u32 {
    let pid = container::podman_ok(&["inspect", "--format", "{{.State.Pid}}", name]);
    pid.trim().parse().expect("a running container has a pid")
}

/// Host pids of every process in the same container as `init` (same cgroup).
fn processes_of(init: u32) -> Vec<u32> {
    let cgroup = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok();
    let own = cgroup(init).expect("the container's init");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| cgroup(pid).as_ref() == Some(&own))
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn user_namespace(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap_or_default()
}

/// Inside a running node: tini is PID 1, the agent runs as the image's user, Chromium runs
/// without `--no-sandbox`, its renderers under seccomp in a user namespace of their own, and
/// the image's fonts are there. Returns the number of Chromium processes seen.
fn check_inside(name: &str) -> usize {
    let init = init_pid(name);
    assert!(
        cmdline(init).starts_with("/usr/bin/tini"),
        "{}",
        cmdline(init)
    );
    let pids = processes_of(init);
    let agent = *pids
        .iter()
        .find(|&&p| cmdline(p).starts_with("/usr/local/bin/liveload-agent"))
        .expect("the agent runs in the container");
    assert!(status_field(agent, "Uid").starts_with("10001"), "not root");
    let chromium: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| cmdline(p).contains("chromium"))
        .collect();
    for &pid in &chromium {
        assert!(!cmdline(pid).contains("--no-sandbox"), "{}", cmdline(pid));
    }
    let renderer = chromium
        .iter()
        .copied()
        .find(|&p| cmdline(p).contains("--type=renderer"))
        .expect("a renderer serves the user's page");
    assert_eq!(status_field(renderer, "Seccomp"), "2", "seccomp-bpf filter");
    assert_ne!(
        user_namespace(renderer),
        user_namespace(agent),
        "the renderer is in the sandbox's own user namespace"
    );
    for font in ["truetype/liberation", "truetype/noto"] {
        let dir = PathBuf::from(format!("/proc/{init}/root/usr/share/fonts/{font}"));
        assert!(dir.is_dir(), "{} missing", dir.display());
    }
    chromium.len()
}

fn browser_scenario(base_url: &str) -> Scenario {
    let steps = vec![
        Step {
            name: "open".into(),
            kind: StepKind::Navigate { url: "/".into() },
        },
        Step {
            name: "connected".into(),
            kind: StepKind::WaitFor {
                condition: WaitCondition::Visible {
                    selector: "body.phx-connected".into(),
                },
                timeout_ms: Some(10_000),
            },
        },
        Step {
            name: "think".into(),
            kind: StepKind::Think {
                min_ms: 500,
                max_ms: 1000,
            },
        },
    ];
    let mut scenario = Scenario::new("image", base_url, steps);
    scenario.users = 2;
    scenario.duration = Duration::from_secs(8);
    scenario.iteration_timeout = Duration::from_secs(30);
    scenario
}

/// The image under `--memory 1g --cpus 1.5 --pids-limit 1024`: the agent's facts are those
/// limits, not the host's; then a whole run with a real browser user inside, checked from the
/// host while it runs; nothing is left.
#[tokio::test(flavor = "multi_thread")]
async fn the_image_runs_under_its_limits_with_a_sandboxed_browser() {
    let _heavy = container::heavy();
    let engine = engine().await;
    let profile =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/agent/chromium-seccomp.json");
    let backend = engine
        .builder()
        .limits(LIMITS)
        .seccomp_profile(Some(profile))
        .build()
        .await
        .unwrap();
    let backend = Arc::new(backend);
    let (agent_tls, pin) = tls::generate_run_certificate().unwrap();
    let spec = spec(
        &names::new_run_id("image"),
        Duration::from_secs(30),
        Some(agent_tls),
    );
    let started = Instant::now();
    let node = backend.create(&spec).await.unwrap();
    let mut endpoint = run::wait_ready_or_destroy(backend.as_ref(), &node, Duration::from_secs(60))
        .await
        .unwrap();
    eprintln!("container boot to ready: {:.2?}", started.elapsed());
    endpoint.tls = Some(pin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (connection, welcome) =
        AgentConnection::connect(&node.id, &endpoint, &spec.token, deadline)
            .await
            .unwrap();
    let facts = welcome.facts;
    connection.close().await;
    backend.destroy(&node).await.unwrap();
    assert_eq!(facts.cgroup_memory_limit_bytes, Some(1 << 30), "{facts:?}");
    assert_eq!(facts.cgroup_cpu_limit, Some(1.5), "{facts:?}");
    assert!(
        facts.total_memory_bytes > 2 << 30,
        "the host's memory shows: {facts:?}"
    );
    assert!(facts.effective_memory_bytes <= 1 << 30, "{facts:?}");
    assert_eq!(
        facts.effective_cores,
        1.5f64.min(facts.logical_cores as f64)
    );
    assert!(facts.chromium.is_some(), "Chromium found in the image");

    // A real browser user inside, watched from the host while the run goes on.
    let target = demo_target::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let scenario = browser_scenario(&format!("http://{HOST_FROM_CONTAINER}:{}", target.port()));
    let mut options = RunOptions::new("image", scenario.users, scenario.duration);
    options.creation_timeout = Duration::from_secs(60);
    options.cost_confirmation = Some(CostConfirmation::new("test"));
    let run = tokio::spawn({
        let (backend, scenario) = (backend.clone(), scenario.clone());
        async move {
            run::run(
                backend,
                &scenario,
                &options,
                Arc::new(Quiet),
                std::future::pending(),
            )
            .await
        }
    });
    let mut chromium = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while chromium == 0 && Instant::now() < end && !run.is_finished() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let running = container::containers_labelled(OWNER_LABEL, &engine.owner);
        if let Some(name) = running.first()
            && processes_of(init_pid(name))
                .iter()
                .any(|&p| cmdline(p).contains("--type=renderer"))
        {
            chromium = check_inside(name);
        }
    }
    let report = run.await.unwrap().unwrap();
    assert!(chromium > 0, "Chromium was seen running in the container");
    assert!(report.succeeded(), "{report:?}");
    assert!(report.iterations_ok > 0);
    let node = &report.nodes[0];
    assert_eq!(node.facts.cgroup_memory_limit_bytes, Some(1 << 30));
    eprintln!(
        "node ready after {:.2} s in a whole run",
        node.ready_after_s
    );
    assert!(engine.left().is_empty(), "{:?}", engine.left());
}

/// A controller that goes silent: the agent's dead-man switch ends it, tini and the container
/// exit with it, and the engine removes the container.
#[tokio::test(flavor = "multi_thread")]
async fn the_dead_man_switch_ends_the_container() {
    let engine = engine().await;
    let backend = engine.builder().limits(LIMITS).build().await.unwrap();
    let (agent_tls, pin) = tls::generate_run_certificate().unwrap();
    let spec = spec(
        &names::new_run_id("silent"),
        Duration::from_secs(2),
        Some(agent_tls),
    );
    let node = backend.create(&spec).await.unwrap();
    let mut endpoint = run::wait_ready_or_destroy(&backend, &node, Duration::from_secs(60))
        .await
        .unwrap();
    endpoint.tls = Some(pin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (connection, _) = AgentConnection::connect(&node.id, &endpoint, &spec.token, deadline)
        .await
        .unwrap();
    // Silence: the connection stays open but no heartbeat ever comes.
    let silent = Instant::now();
    let end = Instant::now() + Duration::from_secs(30);
    while !engine.left().is_empty() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone = engine.left().is_empty();
    drop(connection);
    assert!(
        gone,
        "the container outlived its silent controller: {:?}",
        engine.left()
    );
    eprintln!(
        "container gone {:.1?} after the controller fell silent",
        silent.elapsed()
    );
}

/// A profile that under-estimates the page, in a real memory limit: the plan puts 12 browser
/// users into one 400 MiB container, where memory holds fewer. Near the limit the agent's
/// watchdog holds new iterations and records `node_memory_exhausted`: the node is not lost,
/// no renderer is killed (the OOM killer never has to choose), and nothing is left.
#[tokio::test(flavor = "multi_thread")]
async fn the_memory_watchdog_holds_iterations_before_the_oom_killer() {
    let _heavy = container::heavy();
    let engine = engine().await;
    let profile =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/agent/chromium-seccomp.json");
    let limits = NodeLimits {
        memory_bytes: 400 << 20,
        cpus: 1.5,
        pids: 1024,
    };
    let backend = engine
        .builder()
        .limits(limits)
        .seccomp_profile(Some(profile))
        .build()
        .await
        .unwrap();
    let target = demo_target::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let mut scenario = browser_scenario(&format!("http://{HOST_FROM_CONTAINER}:{}", target.port()));
    scenario.users = 12;
    scenario.duration = Duration::from_secs(20);
    let mut options = RunOptions::new("watchdog", scenario.users, scenario.duration);
    options.creation_timeout = Duration::from_secs(60);
    options.cost_confirmation = Some(CostConfirmation::new("test"));
    // 20 MiB for the browser and 5 per user: a tenth of what a page costs.
    options.sizing.reserved_headroom_bytes = 0;
    options.sizing.profile.browser_memory_usage_bytes = 20 << 20;
    options.sizing.profile.context_memory_usage_bytes = 5 << 20;
    options.sizing.profile.browser_contexts_per_core = 20.0;
    let report = run::run(
        Arc::new(backend),
        &scenario,
        &options,
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
    .unwrap();
    let counter = |name: &str| report.counters.get(name).copied().unwrap_or(0);
    let series = &report.node_series[0];
    let peak = series
        .points
        .iter()
        .map(|p| p.memory_bytes)
        .max()
        .unwrap_or(0);
    eprintln!(
        "FIGURE watchdog: peak {} MiB of a 400 MiB limit (budget {} MiB); node_memory_exhausted {}, iterations held {}, iterations ok {}; {}",
        peak >> 20,
        (400u64 * 8 / 10),
        counter("node_memory_exhausted"),
        counter("iterations_held_for_memory"),
        report.iterations_ok,
        series
            .memory_warning
            .as_deref()
            .unwrap_or("no memory warning")
    );
    assert_eq!(report.nodes.len(), 1, "the plan put every user in one node");
    assert!(
        counter("node_memory_exhausted") >= 1,
        "{:?}",
        report.counters
    );
    assert!(counter("iterations_held_for_memory") >= 1);
    assert!(
        series.memory_warning.is_some(),
        "the profile's under-estimate is reported"
    );
    assert!(
        report.lost_nodes.is_empty(),
        "the agent was not killed: {:?}",
        report.lost_nodes
    );
    assert_eq!(counter("browser.page_crashes"), 0, "no renderer was killed");
    assert!(engine.left().is_empty(), "{:?}", engine.left());
}
