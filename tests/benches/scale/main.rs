//! Hundreds of nodes on every backend that can hold them on one machine, at the providers'
//! documented limits: what booting, running and tearing down a large cluster costs the
//! controller, and how close the boot gets to the floor the limits set.
//!
//! ```text
//! cargo build --release -p liveload-agent
//! cargo bench -p liveload-e2e --bench scale
//! ```
//!
//! Per backend (browserless agents, one user per node, each iterating a 100-200 ms think):
//! - **local**: agent processes on this machine;
//! - **fly**: the stateful Fly test server (a real agent per machine) behind Fly's Machines API
//!   buckets (creates 1/s with bursts of 3 per app, other actions the same per machine);
//! - **fly-pool**: the same, starting a warm pool's stopped machines instead of creating them;
//! - **ec2**: moto behind EC2's token buckets (RunInstances 5 calls + 2/s, 1,000 instances +
//!   2/s), agents started locally by the test hook.
//!
//! It prints the time until every node is ready against the limits' floor, the controller's
//! CPU and resident memory while booting, over the run and during teardown, how long teardown
//! took, and how many requests the provider's buckets refused. The controller runs on its own
//! runtime whose threads are named `lv-ctl-N`, so its CPU is counted apart from the test
//! servers' (which share this process); memory is the whole process's. Never fails on time.
//!
//! `LIVELOAD_BENCH_NODES` (256), `LIVELOAD_BENCH_BACKENDS` (`local,fly,ec2`; `fly-pool` too),
//! `LIVELOAD_BENCH_RUN_S` (60) and `LIVELOAD_BENCH_SPEED` (1: the providers' own rates; 10
//! refills every bucket ten times faster, and the client's limits with them) change it.

mod sampler;

use std::sync::Arc;
use std::time::Duration;

use liveload_core::Backend;
use liveload_core::RunFilter;
use liveload_core::Secret;
use liveload_core::proto::{Step, StepKind};
use liveload_core::run::{self, CostConfirmation, RunOptions, RunReport};
use liveload_core::scenario::Scenario;
use liveload_test_support::fault_proxy::{FaultProxy, Faults, Flavor, ec2_buckets, fly_buckets};
use liveload_test_support::{fly_server, moto};

use sampler::{Phases, Sampler};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the bench was asked to do.
struct Settings {
    nodes: u64,
    run: Duration,
    speed: f64,
}

fn scenario(settings: &Settings) -> Scenario {
    let think = StepKind::Think {
        min_ms: 100,
        max_ms: 200,
    };
    let steps = vec![Step {
        name: "idle".into(),
        kind: think,
    }];
    let mut scenario = Scenario::new("scale", "http://127.0.0.1", steps);
    scenario.duration = settings.run;
    scenario
}

/// One user per node whatever the node reports, so `nodes` users need `nodes` nodes.
fn options(settings: &Settings, cores_per_node: f64) -> RunOptions {
    let mut options = RunOptions::new("scale", settings.nodes, settings.run);
    options.no_browser = true;
    options.max_allowed_nodes = settings.nodes;
    // Above the limits' floor: at Fly's 1/s, 256 creates take over four minutes.
    options.creation_timeout = Duration::from_secs(900);
    options.cost_confirmation = Some(CostConfirmation::new("bench"));
    options.sizing.memory_safety_factor = 1.0;
    options.sizing.reserved_headroom_bytes = 0;
    options.sizing.profile.browser_memory_usage_bytes = 0;
    options.sizing.profile.context_memory_usage_bytes = 1;
    options.sizing.profile.browser_contexts_per_core = 1.0 / cores_per_node;
    options
}

/// The controller's runtime: named threads (so the sampler can tell them apart), idle
/// blocking threads kept (a thread that exits takes its CPU time out of `/proc`).
fn controller_runtime(threads: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name(threads)
        .thread_keep_alive(Duration::from_secs(24 * 3600))
        .enable_all()
        .build()
        .expect("the controller's runtime")
}

/// Run the scenario on `backend` on the controller's runtime, sampled; print the figures.
async fn measure(
    name: &str,
    backend: Arc<dyn Backend>,
    settings: &Settings,
    cores_per_node: f64,
    faults: Option<&std::sync::Mutex<Faults>>,
) {
    static GENERATION: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let threads = sampler::controller_threads(generation);
    let phases = Arc::new(Phases::new(threads.clone()));
    let sampler = Sampler::start(phases.clone());
    let runtime = controller_runtime(&threads);
    let (scenario, options) = (scenario(settings), options(settings, cores_per_node));
    let observer = phases.clone();
    let task = runtime.spawn({
        let backend = backend.clone();
        async move {
            run::run(
                backend,
                &scenario,
                &options,
                observer,
                std::future::pending(),
            )
            .await
        }
    });
    let report = task.await.expect("the run's task").expect("the run");
    phases.finished();
    let figures = sampler.stop();
    let left = backend.list(&RunFilter::All).await.expect("list").len();
    print_figures(name, &report, &figures, left, faults);
    runtime.shutdown_background();
}

fn print_figures(
    name: &str,
    report: &RunReport,
    figures: &sampler::Figures,
    left: usize,
    faults: Option<&std::sync::Mutex<Faults>>,
) {
    let floor = report.plan.boot_floor_s.unwrap_or(0.0);
    println!(
        "{name}: {} nodes ready in {:.1} s (limits' floor {floor:.1} s); {} of {} users ok, {} iterations",
        report.nodes.len(),
        report.boot_s,
        report.users_succeeded,
        report.users,
        report.iterations_ok,
    );
    for phase in &figures.phases {
        println!(
            "  {:<9} {:>6.1} s  controller CPU {:>6.2} s = {:>5.1} % of a core  process RSS peak {:>6.1} MiB",
            phase.name,
            phase.wall_s,
            phase.cpu_s,
            100.0 * phase.cpu_s / phase.wall_s.max(1e-9),
            phase.peak_rss_mib,
        );
    }
    if let Some(faults) = faults {
        let f = faults.lock().unwrap();
        let calls: u32 = f.seen.values().sum();
        println!(
            "  provider: {calls} API calls, {} refused by its buckets; {:?}",
            f.throttled, f.seen
        );
    }
    println!("  left behind after teardown: {left}");
}

#[tokio::main]
async fn main() {
    let settings = Settings {
        nodes: env_or("LIVELOAD_BENCH_NODES", 256),
        run: Duration::from_secs(env_or("LIVELOAD_BENCH_RUN_S", 60)),
        speed: env_or("LIVELOAD_BENCH_SPEED", 1.0),
    };
    let backends: String = env_or("LIVELOAD_BENCH_BACKENDS", "local,fly,ec2".to_string());
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    println!(
        "bench scale: {} nodes, {} s run, provider limits x{} ({} cores here)",
        settings.nodes,
        settings.run.as_secs(),
        settings.speed,
        cores
    );
    for backend in backends.split(',').map(str::trim) {
        match backend {
            "local" => local(&settings, cores).await,
            "fly" => fly(&settings, cores, false).await,
            "fly-pool" => fly(&settings, cores, true).await,
            "ec2" => ec2(&settings, cores).await,
            other => eprintln!("unknown backend {other}: local, fly, fly-pool or ec2"),
        }
    }
}

async fn local(settings: &Settings, cores: f64) {
    let state = tempfile::tempdir().unwrap();
    let backend = liveload_local::LocalBackend::builder()
        .state_dir(state.path())
        .nodes_per_host(settings.nodes as u32)
        .build()
        .unwrap();
    // Every local node reports this machine's cores: that share of them is one user.
    let per_node = cores / settings.nodes as f64;
    measure("local", Arc::new(backend), settings, per_node, None).await;
}

/// Fly, creating every machine, or (`pooled`) starting a warm pool's stopped machines. The
/// pool is made first straight at the test server, unmeasured and unthrottled: at Fly's real
/// rate that is the once-only `liveload fly pool create`.
async fn fly(settings: &Settings, cores: f64, pooled: bool) {
    let server = fly_server::start().await;
    let pool = "bench";
    if pooled {
        let maker = liveload_fly::FlyBackend::builder()
            .base_url(&server.url)
            .app("liveload-bench")
            .token(Secret::new(fly_server::TOKEN))
            .image("registry.fly.io/liveload-agent:bench")
            .limits(liveload_fly::Limits {
                create_per_s: 1000.0,
                create_burst: 1000,
                action_per_s: 1000.0,
                action_burst: 1000,
            })
            .reach(liveload_fly::Reach::Private)
            .pool(pool)
            .build()
            .unwrap();
        maker
            .create_pool(pool, settings.nodes as u32)
            .await
            .unwrap();
    }
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = FaultProxy::start(port, Flavor::Fly);
    fly_buckets(&mut proxy.faults.lock().unwrap(), settings.speed);
    let agent_port = server.state.lock().unwrap().agent_port;
    let defaults = liveload_fly::Limits::default();
    let fly = liveload_fly::FlyBackend::builder()
        .base_url(&proxy.url)
        .app("liveload-bench")
        .token(Secret::new(fly_server::TOKEN))
        .image("registry.fly.io/liveload-agent:bench")
        .agent_port(agent_port)
        .limits(liveload_fly::Limits {
            create_per_s: defaults.create_per_s * settings.speed,
            action_per_s: defaults.action_per_s * settings.speed,
            ..defaults
        })
        .reach(liveload_fly::Reach::Private);
    let fly = if pooled { fly.pool(pool) } else { fly }.build().unwrap();
    let name = if pooled { "fly-pool" } else { "fly" };
    // Each machine's agent reports this host's cores; a node is the whole of them.
    measure(name, Arc::new(fly), settings, cores, Some(&proxy.faults)).await;
}

async fn ec2(settings: &Settings, cores: f64) {
    let moto = moto::Moto::start();
    let proxy = FaultProxy::start(moto.port, Flavor::Ec2);
    ec2_buckets(&mut proxy.faults.lock().unwrap(), settings.speed);
    let ami = moto::known_ami(moto.options()).await;
    let (agents, _dir) = moto::local_agents();
    let ec2 = moto::backend(moto.options_at(&proxy.url), &ami, agents).await;
    measure("ec2", Arc::new(ec2), settings, cores, Some(&proxy.faults)).await;
}
