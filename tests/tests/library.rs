//! The run lifecycle through the library: both boot orders, the shortfall boot when nodes turn
//! out smaller than planned, sizing errors from real facts, interrupts, and teardown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use liveload_core::proto::{Step, StepKind};
use liveload_core::run::{self, Event, Observer, RunOptions};
use liveload_core::scenario::Scenario;
use liveload_core::sizing::{BrowserProfile, SizingConfig};
use liveload_core::{
    AgentEndpoint, Backend, Error, NodeHandle, NodeSize, NodeSpec, Result, RunFilter,
};
use liveload_local::LocalBackend;
use tokio::time::Instant;

fn idle_scenario(users: u64) -> Scenario {
    let mut scenario = Scenario::new(
        "library",
        "http://127.0.0.1",
        vec![Step {
            name: "idle".into(),
            kind: StepKind::Think {
                min_ms: 10,
                max_ms: 20,
            },
        }],
    );
    scenario.users = users;
    scenario.duration = Duration::from_secs(1);
    scenario.iteration_timeout = Duration::from_secs(5);
    scenario
}

/// Sizing where one node of `cores` cores hosts exactly `per_node` users (memory never binds).
fn sizing_for(per_node: u64, cores: f64) -> SizingConfig {
    SizingConfig {
        memory_safety_factor: 1.0,
        reserved_headroom_bytes: 0,
        profile: BrowserProfile {
            browser_memory_usage_bytes: 0,
            context_memory_usage_bytes: 1,
            browser_contexts_per_core: (per_node as f64 + 0.5) / cores,
        },
    }
}

fn options(users: u64, sizing: SizingConfig) -> RunOptions {
    let mut options = RunOptions::new("library", users, Duration::from_secs(1));
    options.no_browser = true;
    options.sizing = sizing;
    options.start_interval = Duration::ZERO;
    options
}

fn host_cores() -> f64 {
    std::thread::available_parallelism().unwrap().get() as f64
}

/// Records events, to check the order of phases.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Observer for Recorder {
    fn event(&self, event: &Event) {
        let name = match event {
            Event::Planned(p) => format!("planned:{}:{}", p.source, p.nodes),
            Event::Booting { nodes } => format!("booting:{nodes}"),
            Event::NodeReady(_) => "ready".into(),
            Event::Assigned { users } => format!("assigned:{users:?}"),
            Event::Started => "started".into(),
            Event::Progress { .. } => return,
            Event::TearingDown { nodes, .. } => format!("teardown:{}", nodes.len()),
            Event::NodeLost { .. } => "lost".into(),
            Event::NodeDestroyed { .. } => "destroyed".into(),
        };
        self.0.lock().unwrap().push(name);
    }
}

/// A local backend splitting this host into `nodes` shares, with its state in `state`.
fn local(state: &tempfile::TempDir, nodes: u32) -> Arc<dyn Backend> {
    Arc::new(
        LocalBackend::builder()
            .state_dir(state.path())
            .nodes_per_host(nodes)
            .build()
            .unwrap(),
    )
}

/// A run without an observer or an interrupt.
async fn run_quiet(
    backend: &Arc<dyn Backend>,
    scenario: &Scenario,
    options: &RunOptions,
) -> Result<run::RunReport> {
    run::run(
        backend.clone(),
        scenario,
        options,
        Arc::new(run::Quiet),
        std::future::pending(),
    )
    .await
}

async fn assert_nothing_listed(backend: &dyn Backend) {
    let left = backend.list(&RunFilter::All).await.unwrap();
    assert!(left.is_empty(), "leaked: {left:?}");
}

#[tokio::test]
async fn catalogue_plan_boots_every_node_at_once() {
    let state = tempfile::tempdir().unwrap();
    let backend = local(&state, 4);
    let events = Arc::new(Recorder::default());
    let per_node_cores = host_cores() / 4.0;
    let report = run::run(
        backend.clone(),
        &idle_scenario(8),
        &options(8, sizing_for(2, per_node_cores)),
        events.clone(),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.nodes.len(), 4);
    let events = events.0.lock().unwrap().clone();
    assert_eq!(events[0], "planned:catalogue:4");
    assert_eq!(events[1], "booting:4", "one wave of four: {events:?}");
    assert!(
        events.iter().any(|e| e == "assigned:[2, 2, 2, 2]"),
        "{events:?}"
    );
    assert_nothing_listed(backend.as_ref()).await;
}

#[tokio::test]
async fn unknown_size_boots_one_probe_then_the_rest_together() {
    let state = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(
        LocalBackend::builder()
            .state_dir(state.path())
            .nodes_per_host(3)
            .announce_size(false)
            .build()
            .unwrap(),
    );
    let events = Arc::new(Recorder::default());
    let report = run::run(
        backend.clone(),
        &idle_scenario(6),
        &options(6, sizing_for(2, host_cores() / 3.0)),
        events.clone(),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.plan.source, "probe");
    assert_eq!(report.nodes.len(), 3);
    let events = events.0.lock().unwrap().clone();
    assert_eq!(
        &events[..3],
        ["booting:1", "ready", "planned:probe:3"],
        "{events:?}"
    );
    assert_eq!(events[3], "booting:2", "the rest in one wave: {events:?}");
    assert_nothing_listed(backend.as_ref()).await;
}

/// A backend whose catalogue promises twice the node it delivers.
#[derive(Debug)]
struct Overpromising(LocalBackend);

#[async_trait]
impl Backend for Overpromising {
    fn name(&self) -> &'static str {
        "overpromising"
    }
    // It wraps local processes: the local backend's policies, declared (the defaults would ask
    // for TLS and a cost confirmation, see tests/policy.rs).
    fn link_path(&self) -> liveload_core::LinkPath {
        self.0.link_path()
    }
    fn billing(&self) -> liveload_core::Billing {
        self.0.billing()
    }
    async fn create(&self, spec: &NodeSpec) -> Result<NodeHandle> {
        self.0.create(spec).await
    }
    async fn wait_ready(&self, node: &NodeHandle, deadline: Instant) -> Result<AgentEndpoint> {
        self.0.wait_ready(node, deadline).await
    }
    async fn destroy(&self, node: &NodeHandle) -> Result<()> {
        self.0.destroy(node).await
    }
    async fn list(&self, runs: &RunFilter) -> Result<Vec<NodeHandle>> {
        self.0.list(runs).await
    }
    async fn expected_size(&self) -> Result<Option<NodeSize>> {
        Ok(self.0.expected_size().await?.map(|s| NodeSize {
            memory_bytes: s.memory_bytes * 2,
            cores: s.cores * 2.0,
            ..s
        }))
    }
    fn node_limit(&self) -> Option<u64> {
        self.0.node_limit()
    }
}

#[tokio::test]
async fn nodes_smaller_than_planned_boot_the_shortfall() {
    let state = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(Overpromising(
        LocalBackend::builder()
            .state_dir(state.path())
            .nodes_per_host(4)
            .build()
            .unwrap(),
    ));
    let events = Arc::new(Recorder::default());
    // Real nodes host 2 users; the catalogue says 4 (twice the cores): plan 2, need 4.
    let report = run::run(
        backend.clone(),
        &idle_scenario(8),
        &options(8, sizing_for(2, host_cores() / 4.0)),
        events.clone(),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.plan.nodes, 2);
    assert_eq!(report.nodes.len(), 4);
    let events = events.0.lock().unwrap().clone();
    let waves: Vec<&String> = events.iter().filter(|e| e.starts_with("booting")).collect();
    assert_eq!(waves, ["booting:2", "booting:2"], "{events:?}");
    assert_nothing_listed(backend.as_ref()).await;
}

#[tokio::test]
async fn shortfall_beyond_the_limit_is_necessary_nodes_exceeds_max() {
    let state = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(Overpromising(
        LocalBackend::builder()
            .state_dir(state.path())
            .nodes_per_host(4)
            .build()
            .unwrap(),
    ));
    let mut opts = options(8, sizing_for(2, host_cores() / 4.0));
    opts.max_allowed_nodes = 3;
    let result = run::run(
        backend.clone(),
        &idle_scenario(8),
        &opts,
        Arc::new(run::Quiet),
        std::future::pending(),
    )
    .await;
    match result {
        Err(Error::NecessaryNodesExceedsMaxAllowedNodes {
            necessary,
            max_allowed,
            ..
        }) => {
            assert_eq!(necessary, 4);
            assert_eq!(max_allowed, 3);
        }
        other => panic!("{other:?}"),
    }
    assert_nothing_listed(backend.as_ref()).await;
}

#[tokio::test]
async fn node_too_small_from_real_facts_destroys_the_probe() {
    let state = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(
        LocalBackend::builder()
            .state_dir(state.path())
            .announce_size(false)
            .build()
            .unwrap(),
    );
    let mut opts = options(1, SizingConfig::default());
    opts.sizing.profile.browser_memory_usage_bytes = u64::MAX / 2;
    let result = run::run(
        backend.clone(),
        &idle_scenario(1),
        &opts,
        Arc::new(run::Quiet),
        std::future::pending(),
    )
    .await;
    match result {
        Err(e @ Error::NodeTooSmall { .. }) => {
            assert_eq!(e.code(), "node_too_small");
            assert!(e.to_string().starts_with("node ll-library-"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_nothing_listed(backend.as_ref()).await;
}

#[tokio::test]
async fn interrupt_destroys_every_node() {
    let state = tempfile::tempdir().unwrap();
    let backend = local(&state, 2);
    let mut scenario = idle_scenario(2);
    scenario.duration = Duration::from_secs(60);
    let mut opts = options(2, sizing_for(1, host_cores() / 2.0));
    opts.duration = scenario.duration;
    let result = run::run(
        backend.clone(),
        &scenario,
        &opts,
        Arc::new(run::Quiet),
        tokio::time::sleep(Duration::from_secs(2)),
    )
    .await;
    assert!(matches!(result, Err(Error::Interrupted)), "{result:?}");
    assert_eq!(Error::Interrupted.exit_code(), 130);
    assert_nothing_listed(backend.as_ref()).await;
}

#[tokio::test]
async fn unreachable_agent_is_an_agent_connection_error() {
    let endpoint = AgentEndpoint {
        address: "127.0.0.1:1".into(),
        tls: None,
        headers: vec![],
        proxy: None,
    };
    let result = liveload_core::agent_client::AgentConnection::connect(
        "n",
        &endpoint,
        &liveload_core::Secret::new("t"),
        Instant::now() + Duration::from_secs(5),
    )
    .await;
    match result {
        Err(e @ Error::AgentConnection { .. }) => {
            assert_eq!(e.code(), "agent_connection_failed");
            assert_eq!(e.exit_code(), 6);
            assert!(e.to_string().contains("cannot connect"), "{e}");
        }
        other => panic!("{:?}", other.map(|(_, w)| w)),
    }
}

#[tokio::test]
async fn a_cluster_wide_rate_holds_across_three_nodes() {
    let state = tempfile::tempdir().unwrap();
    let backend = local(&state, 3);
    // 12 users over 3 nodes could run ~100 iterations a second; the cluster may start 20.
    let mut scenario = idle_scenario(12);
    scenario.duration = Duration::from_secs(6);
    scenario.throttle.rate = Some((20, Duration::from_secs(1)));
    let mut opts = options(12, sizing_for(4, host_cores() / 3.0));
    opts.duration = scenario.duration;
    let report = run_quiet(&backend, &scenario, &opts).await.unwrap();
    assert_eq!(report.nodes.len(), 3, "three nodes share the limit");
    let iterations = report.iterations_ok + report.iterations_failed;
    let window = scenario.duration.as_secs_f64();
    let limit = 20.0 * window;
    let busiest = report
        .series
        .iter()
        .map(|p| p.iterations_ok + p.iterations_failed)
        .max();
    eprintln!(
        "throttle: {iterations} iterations in {window} s under a 20/s limit; busiest second {busiest:?}"
    );
    // Never above the limit over the window (each node may start its first iteration at
    // once: +1 per node); within 15 % below it.
    assert!(
        iterations as f64 <= limit + 3.0,
        "{iterations} iterations > {limit} + 3"
    );
    assert!(
        iterations as f64 >= 0.85 * limit,
        "{iterations} iterations < 85 % of {limit}"
    );
    // No whole second of the run went above the limit either (+1 per node for alignment).
    for point in &report.series {
        let started = point.iterations_ok + point.iterations_failed;
        assert!(
            started <= 23,
            "second {}: {started} iterations",
            point.second
        );
    }
    assert_nothing_listed(backend.as_ref()).await;
}

#[tokio::test]
async fn parallelism_caps_iterations_in_flight_cluster_wide() {
    let state = tempfile::tempdir().unwrap();
    let backend = local(&state, 2);
    // Each iteration thinks 200 ms; 8 users but at most 2 iterations at once: ~10 per second.
    let mut scenario = idle_scenario(8);
    scenario.steps[0].kind = StepKind::Think {
        min_ms: 200,
        max_ms: 200,
    };
    scenario.duration = Duration::from_secs(4);
    scenario.throttle.parallelism = Some(2);
    let mut opts = options(8, sizing_for(4, host_cores() / 2.0));
    opts.duration = scenario.duration;
    let report = run_quiet(&backend, &scenario, &opts).await.unwrap();
    let iterations = report.iterations_ok;
    // Unthrottled, 8 users would do ~160; two at a time, at most 4 s / 0.2 s x 2 = 40 (+2).
    assert!((30..=42).contains(&iterations), "{iterations}");
    assert_nothing_listed(backend.as_ref()).await;
}

/// Coordinated omission: arrivals keep their schedule while the system is saturated (one
/// iteration at a time per node, each 300 ms, against 5 arrivals a second per node), so
/// later arrivals queue. `iteration` counts from the scheduled arrival and shows the queueing;
/// `iteration_service`, from the actual start, does not. Measured from the actual start,
/// `iteration` would equal `iteration_service` and this test would fail.
#[tokio::test]
async fn open_model_arrivals_follow_the_rate_and_count_from_their_schedule() {
    let state = tempfile::tempdir().unwrap();
    let backend = local(&state, 2);
    let mut scenario = idle_scenario(10);
    scenario.steps[0].kind = StepKind::Think {
        min_ms: 300,
        max_ms: 300,
    };
    scenario.duration = Duration::from_secs(4);
    scenario.load = liveload_core::scenario::Load::Open {
        rate: 10.0,
        ramp_to: None,
        max_users: 10,
    };
    scenario.throttle.parallelism = Some(2);
    let mut opts = options(10, sizing_for(5, host_cores() / 2.0));
    opts.duration = scenario.duration;
    let report = run_quiet(&backend, &scenario, &opts).await.unwrap();
    // 10 per second for 4 s, split over 2 nodes: ~39 arrivals scheduled; those past the 5 in
    // progress a node allows are dropped (counted), the others each a user that ran once.
    let dropped = report
        .counters
        .get("arrivals_dropped")
        .copied()
        .unwrap_or(0);
    assert!(
        (36..=40).contains(&(report.users + dropped)),
        "{} arrivals, {dropped} dropped",
        report.users
    );
    assert_eq!(report.users_succeeded, report.users);
    let iteration = &report.latencies["iteration"];
    let service = &report.latencies["iteration_service"];
    println!(
        "FIGURE queued arrivals: iteration p50 {:.0} ms p95 {:.0} ms; iteration_service p50 {:.0} ms p95 {:.0} ms",
        iteration.p50_ms, iteration.p95_ms, service.p50_ms, service.p95_ms
    );
    assert!(
        (290.0..600.0).contains(&service.p95_ms),
        "service is the 300 ms think: {service:?}"
    );
    assert!(
        iteration.p95_ms >= service.p95_ms + 500.0,
        "queued arrivals count their wait: {iteration:?} vs {service:?}"
    );
    assert_nothing_listed(backend.as_ref()).await;
}

/// `iterations:` ends each user after exactly that many, and the run then ends on its own,
/// long before its duration; `pacing:` spaces a user's iteration starts and is not latency.
#[tokio::test]
async fn iterations_and_pacing_bound_and_space_each_users_iterations() {
    let state = tempfile::tempdir().unwrap();
    let backend = local(&state, 1);
    let mut scenario = idle_scenario(4);
    scenario.duration = Duration::from_secs(60);
    scenario.user_loop.iterations = Some(3);
    scenario.user_loop.pacing_ms = Some(400);
    let mut opts = options(4, sizing_for(4, host_cores()));
    opts.duration = scenario.duration;
    let report = run_quiet(&backend, &scenario, &opts).await.unwrap();
    assert_eq!(report.iterations_ok, 12, "4 users x 3 iterations");
    assert_eq!(report.users_succeeded, 4);
    // Three starts 400 ms apart: 0.8 s at least, and nowhere near the 60 s duration.
    assert!(
        (0.8..30.0).contains(&report.run_s),
        "paced, then done: {} s",
        report.run_s
    );
    let iteration = &report.latencies["iteration"];
    assert!(
        iteration.p95_ms < 200.0,
        "the pacing wait is not latency: {iteration:?}"
    );

    // Without `iterations:`, the duration ends them: starts at 0, 1 and 2 s in 2.5 s (half a
    // second of margin either side of the last start).
    let mut scenario = idle_scenario(2);
    scenario.duration = Duration::from_millis(2500);
    scenario.user_loop.pacing_ms = Some(1000);
    let mut opts = options(2, sizing_for(2, host_cores()));
    opts.duration = scenario.duration;
    let report = run_quiet(&backend, &scenario, &opts).await.unwrap();
    assert_eq!(report.iterations_ok, 6, "2 users x 3 paced iterations");
    assert_nothing_listed(backend.as_ref()).await;
}

/// A `coordinate` group that cannot fill goes on at its timeout, counted partial: 5 users in
/// groups of 4 make one full group and one of 1.
#[tokio::test]
async fn a_coordination_group_short_of_members_goes_on_at_its_timeout() {
    let state = tempfile::tempdir().unwrap();
    let backend = local(&state, 2);
    let mut scenario = idle_scenario(5);
    scenario.steps.push(Step {
        name: "meet".into(),
        kind: StepKind::Coordinate {
            point: "room".into(),
            group: 4,
            timeout_ms: 500,
        },
    });
    scenario.duration = Duration::from_secs(30);
    scenario.user_loop.iterations = Some(1);
    let mut opts = options(5, sizing_for(3, host_cores() / 2.0));
    opts.duration = scenario.duration;
    let report = run_quiet(&backend, &scenario, &opts).await.unwrap();
    assert_eq!(report.users_succeeded, 5);
    let counter = |name: &str| report.counters.get(name).copied().unwrap_or(0);
    assert_eq!(counter("coordinate:room.groups"), 2);
    assert_eq!(counter("coordinate:room.grouped_users"), 5);
    assert_eq!(counter("coordinate:room.partial_groups"), 1);
    let waited = &report.latencies["step:meet"];
    assert!(
        waited.max_ms >= 450.0,
        "the last user waited out the timeout: {waited:?}"
    );
    assert_nothing_listed(backend.as_ref()).await;
}

#[tokio::test]
async fn a_staircase_ramp_starts_users_in_batches() {
    let state = tempfile::tempdir().unwrap();
    let backend = local(&state, 1);
    // 6 users in 3 steps over 3.6 s: 2 at 0 s, 4 from 1.2 s, 6 from 2.4 s — batches away from
    // the 1-second snapshot ticks, so each second's count is unambiguous.
    let mut scenario = idle_scenario(6);
    scenario.duration = Duration::from_secs(5);
    scenario.load = liveload_core::scenario::Load::Closed {
        ramp_up: Some(Duration::from_millis(3600)),
        ramp_steps: Some(3),
    };
    let mut opts = options(6, sizing_for(6, host_cores()));
    opts.duration = scenario.duration;
    let report = run_quiet(&backend, &scenario, &opts).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    let active: Vec<u64> = report.series.iter().map(|p| p.active_users).collect();
    assert_eq!(&active[..3], [2, 4, 6], "per second: {active:?}");
    assert!(
        report.workload.contains("in 3 steps"),
        "{}",
        report.workload
    );
    assert_nothing_listed(backend.as_ref()).await;
}
