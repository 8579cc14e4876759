//! Runs of 64 nodes on every backend that can hold them here — local processes, the Fly test
//! server (Fly's create limit, time-scaled), EC2 on moto behind EC2's documented token buckets
//! (time-scaled) — with browserless agents: every node ready, none timed out, nothing left.
//! They assert behaviour, never speed; the figures come from `cargo bench -p liveload-e2e --bench scale`.
//!
//! Also EC2 through a storm (5xx, throttling, lost RunInstances answers): no instance is made
//! twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use liveload_core::proto::{Step, StepKind};
use liveload_core::run::{self, CostConfirmation, Quiet, RunOptions, RunReport};
use liveload_core::scenario::Scenario;
use liveload_core::{Backend, RunFilter, Secret};
use liveload_e2e::heavy;
use liveload_test_support::fault_proxy::{FaultProxy, Flavor, ec2_buckets, fly_buckets};
use liveload_test_support::{fly_server, moto};

const NODES: u64 = 64;

fn scenario() -> Scenario {
    let mut scenario = Scenario::new(
        "scale",
        "http://127.0.0.1",
        vec![Step {
            name: "idle".into(),
            kind: StepKind::Think {
                min_ms: 100,
                max_ms: 200,
            },
        }],
    );
    scenario.duration = Duration::from_secs(2);
    scenario
}

/// One user per node whatever the node's size, so `NODES` users need `NODES` nodes.
fn options(cores_per_node: f64) -> RunOptions {
    let mut options = RunOptions::new("scale", NODES, Duration::from_secs(2));
    options.no_browser = true;
    options.max_allowed_nodes = NODES;
    options.creation_timeout = Duration::from_secs(60);
    options.cost_confirmation = Some(CostConfirmation::new("test"));
    options.sizing.memory_safety_factor = 1.0;
    options.sizing.reserved_headroom_bytes = 0;
    options.sizing.profile.browser_memory_usage_bytes = 0;
    options.sizing.profile.context_memory_usage_bytes = 1;
    options.sizing.profile.browser_contexts_per_core = 1.0 / cores_per_node;
    options
}

async fn run(backend: Arc<dyn Backend>, options: &RunOptions) -> RunReport {
    let started = Instant::now();
    let report = run::run(
        backend.clone(),
        &scenario(),
        options,
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
    .expect("the run completes");
    assert_eq!(report.nodes.len(), NODES as usize, "every node ready");
    assert!(
        report.succeeded(),
        "every user succeeded: {:?}",
        report.counters
    );
    assert!(
        backend.list(&RunFilter::All).await.unwrap().is_empty(),
        "nothing left"
    );
    eprintln!(
        "{}: {NODES} nodes ready in {:.1} s (boot floor {:.1} s), run {:.1} s, wall {:.1} s",
        report.backend,
        report.boot_s,
        report.plan.boot_floor_s.unwrap_or(0.0),
        report.run_s,
        started.elapsed().as_secs_f64()
    );
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_local_nodes() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let backend = liveload_local::LocalBackend::builder()
        .state_dir(state.path())
        .nodes_per_host(NODES as u32)
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().unwrap().get() as f64 / NODES as f64;
    run(Arc::new(backend), &options(cores)).await;
}

/// Fly behind its documented Machines API limits (creates 1/s with bursts of 3 per app, other
/// actions the same per machine, gets 5/s bursts of 10), all ten times faster: a request
/// beyond them is answered 429, and the controller must never send one.
#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_fly_machines_at_the_create_limit_time_scaled() {
    let _heavy = heavy();
    let server = fly_server::start().await;
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = FaultProxy::start(port, Flavor::Fly);
    fly_buckets(&mut proxy.faults.lock().unwrap(), 10.0);
    let agent_port = server.state.lock().unwrap().agent_port;
    let fly = liveload_fly::FlyBackend::builder()
        .base_url(&proxy.url)
        .app("liveload-scale")
        .token(Secret::new(fly_server::TOKEN))
        .image("registry.fly.io/liveload-agent:test")
        .agent_port(agent_port)
        .limits(liveload_fly::Limits {
            // `Limits::default()`'s bursts, one below Fly's (jitter in reserve).
            create_per_s: 10.0,
            create_burst: 2,
            action_per_s: 10.0,
            action_burst: 2,
        })
        .reach(liveload_fly::Reach::Private)
        .build()
        .unwrap();
    // Each agent reports the test host's 2 cores: two "cores" per node -> one user.
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    let report = run(Arc::new(fly), &options(cores)).await;
    let floor = report.plan.boot_floor_s.unwrap();
    assert!(
        (6.1..=6.3).contains(&floor),
        "62 queued creates at 10/s: {floor}"
    );
    assert!(server.state.lock().unwrap().machines.is_empty());
    let faults = proxy.faults.lock().unwrap();
    let creates = server.state.lock().unwrap().creates.len();
    assert_eq!(
        faults.seen.get("POST /machines").copied(),
        Some(64),
        "{:?} server saw {creates}",
        faults.seen
    );
    assert_eq!(
        faults.throttled, 0,
        "never beyond Fly's limits: {:?}",
        faults.seen
    );
}

/// EC2 on moto behind EC2's documented RunInstances buckets (5 calls + 2/s; 1,000 instances
/// + 2/s), refilled ten times faster: calls beyond them would be answered RequestLimitExceeded.
/// The backend launches the 64 nodes in one call (a batch), so the request bucket never
/// empties.
#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_ec2_instances_behind_the_token_buckets() {
    let _heavy = heavy();
    let moto = moto::Moto::start();
    let proxy = FaultProxy::start(moto.port, Flavor::Ec2);
    ec2_buckets(&mut proxy.faults.lock().unwrap(), 10.0);
    let ami = moto::known_ami(moto.options()).await;
    let (agents, _dir) = moto::local_agents();
    let ec2 = moto::backend(moto.options_at(&proxy.url), &ami, agents).await;
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    run(Arc::new(ec2), &options(cores)).await;
    let (seen, throttled) = {
        let faults = proxy.faults.lock().unwrap();
        (
            faults.seen.get("RunInstances").copied().unwrap_or(0),
            faults.throttled,
        )
    };
    assert_eq!(seen, 1, "one RunInstances call for 64 nodes");
    assert_eq!(throttled, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn ec2_rides_out_a_storm_without_making_an_instance_twice() {
    let moto = moto::Moto::start();
    let proxy = FaultProxy::start(moto.port, Flavor::Ec2);
    let ami = moto::known_ami(moto.options()).await;
    let (agents, _dir) = moto::local_agents();
    let ec2 = Arc::new(moto::backend(moto.options_at(&proxy.url), &ami, agents).await);
    let mut options = options(std::thread::available_parallelism().unwrap().get() as f64);
    options.users = 4;
    {
        // Creates meet, back to back: a second of 500s, two of RequestLimitExceeded, then
        // three and a half in which moto starts the instances and the answer is lost. The
        // windows follow the retry policy's delays (200 ms doubling, with up to as much again
        // in jitter): attempts 1-3 fall in the first second, the 4th between 1.4 and 2.8 s,
        // the 5th between 3.0 and 6.0 s, so each window sees at least one. (With a 1 s
        // throttle window, a jittered 4th attempt could skip it.)
        let mut faults = proxy.faults.lock().unwrap();
        let now = Instant::now();
        faults.creates_only = true;
        faults.errors_until = Some(now + Duration::from_secs(1));
        faults.throttle_until = Some(now + Duration::from_secs(3));
        faults.lose_until = Some(now + Duration::from_millis(6500));
    }
    let report = run::run(
        ec2.clone(),
        &scenario(),
        &options,
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
    .expect("the run completes through the storm");
    assert_eq!(report.nodes.len(), 4);
    let (errored, throttled, lost) = {
        let f = proxy.faults.lock().unwrap();
        (f.errored, f.throttled, f.lost)
    };
    assert!(
        errored > 0 && throttled > 0 && lost > 0,
        "the storm happened: {errored} errors, {throttled} throttled, {lost} lost"
    );
    // Straight to moto: every instance the run ever had, terminated or not, one per node.
    let direct = moto::backend(moto.options(), &ami, Arc::new(moto::NeverReady)).await;
    let described = direct
        .ec2()
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{}", liveload_ec2::TAG_RUN))
                .values(&report.run_id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let made = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .count();
    assert_eq!(made, 4, "one instance per node, none made twice");
    assert!(ec2.list(&RunFilter::All).await.unwrap().is_empty());
}
