//! `liveload bench`: measure liveload itself and print the figures. Never fails on time.
//!
//! - `boot`: cluster boot on the local backend for 1, 8 and 64 nodes (agents without a browser):
//!   time from the first create until every agent's facts are in, through the real run path.
//! - `users`: per-user cost of real Chromium on the demo page: PSS of the browser's whole process
//!   tree at 0, 10 and 40 users, marginal MiB per user, CPU % per user, the agent's own RSS, and
//!   the median time to set up one user (context + page).

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use liveload_core::agent_client::AgentConnection;
use liveload_core::error::exit_code;
use liveload_core::metrics::{LatencySummary, MetricsAggregate};
use liveload_core::proto::{
    AgentMessage, Assignment, ControllerMessage, Step, StepKind, WaitCondition,
};
use liveload_core::run::{self, Quiet, RunOptions};
use liveload_core::scenario::Scenario;
use liveload_core::sizing::{BrowserProfile, SizingConfig};
use liveload_core::{Backend, Error, NodeSpec, RunFilter, names};
use liveload_local::LocalBackend;
use tokio::time::Instant;

/// Options of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub which: Bench,
}

/// The benchmarks.
#[derive(Debug, Clone, Subcommand)]
pub enum Bench {
    /// Cluster boot time on the local backend (agents without a browser).
    Boot {
        /// Node counts to boot, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
        nodes: Vec<u32>,
        /// Repetitions per count (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeat: u32,
    },
    /// The controller's CPU cost to decode and merge one snapshot per second per node.
    Merge {
        /// Simulated nodes.
        #[arg(long, default_value_t = 256)]
        nodes: u32,
        /// Latency metrics per snapshot.
        #[arg(long, default_value_t = 20)]
        metrics: u32,
        /// Seconds of snapshots to merge.
        #[arg(long, default_value_t = 30)]
        seconds: u32,
    },
    /// Per-user memory, CPU and setup time with real Chromium on the demo page.
    Users {
        /// User counts to measure, comma-separated (0 = browser alone).
        #[arg(long, value_delimiter = ',', default_value = "0,10,40")]
        users: Vec<u64>,
        /// Seconds of CPU sampling at steady state, per count.
        #[arg(long, default_value_t = 10)]
        window: u64,
        /// Chromium executable.
        #[arg(long, env = "LIVELOAD_CHROMIUM")]
        chromium: Option<std::path::PathBuf>,
        /// Measure this page instead of the bundled demo target (users open it and stay).
        #[arg(long)]
        url: Option<String>,
    },
}

/// Run the chosen benchmark; returns the exit code.
pub async fn run(args: BenchArgs) -> i32 {
    let result = match args.which {
        Bench::Boot { nodes, repeat } => boot(&nodes, repeat).await,
        Bench::Merge {
            nodes,
            metrics,
            seconds,
        } => {
            merge(nodes, metrics, seconds);
            Ok(())
        }
        Bench::Users {
            users,
            window,
            chromium,
            url,
        } => users_bench(&users, Duration::from_secs(window), chromium, url).await,
    };
    match result {
        Ok(()) => exit_code::OK,
        Err(e) => crate::output::error(&e, crate::cli::OutputFormat::Text),
    }
}

fn bench_state_dir() -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix("liveload-bench-")
        .tempdir()
        .map_err(|e| Error::io("creating a state directory", e))
}

async fn boot(counts: &[u32], repeat: u32) -> Result<(), Error> {
    println!("bench boot: local backend, agents without a browser, {repeat} runs per count");
    println!("{:>6} {:>12} {:>12}", "nodes", "median s", "all runs s");
    let mut medians = Vec::new();
    for &count in counts {
        let mut times = Vec::new();
        for _ in 0..repeat.max(1) {
            times.push(boot_once(count).await?);
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        medians.push((count, median));
        let all: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
        println!("{count:>6} {median:>12.3} {:>12}", all.join(","));
    }
    if let (Some((1, one)), Some(&(n, many))) = (
        medians.iter().find(|(c, _)| *c == 1).copied(),
        medians.last(),
    ) && n > 1
    {
        println!("ratio {n}/1 nodes: {:.2}", many / one);
    }
    Ok(())
}

/// One cluster of `count` browserless agents through the real run path; returns `boot_s`.
async fn boot_once(count: u32) -> Result<f64, Error> {
    let state = bench_state_dir()?;
    let backend: Arc<dyn Backend> = Arc::new(
        LocalBackend::builder()
            .state_dir(state.path())
            .nodes_per_host(count)
            .build()?,
    );
    let size = backend.expected_size().await?.expect("local announces");
    // Size so that each share hosts exactly one user: `count` users need `count` nodes.
    let sizing = SizingConfig {
        memory_safety_factor: 1.0,
        reserved_headroom_bytes: 0,
        profile: BrowserProfile {
            browser_memory_usage_bytes: 0,
            context_memory_usage_bytes: size.memory_bytes.max(2) / 2 + 1,
            browser_contexts_per_core: 1.5 / size.cores,
        },
    };
    let mut scenario = Scenario::new(
        "bench-boot",
        "http://127.0.0.1",
        vec![Step {
            name: "idle".into(),
            kind: StepKind::Think {
                min_ms: 10,
                max_ms: 10,
            },
        }],
    );
    scenario.users = count as u64;
    scenario.duration = Duration::from_millis(100);
    scenario.iteration_timeout = Duration::from_secs(5);
    let mut options = RunOptions::new("bench-boot", count as u64, scenario.duration);
    options.sizing = sizing;
    options.no_browser = true;
    options.start_interval = Duration::ZERO;
    let report = run::run(
        backend,
        &scenario,
        &options,
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await?;
    assert_eq!(report.nodes.len(), count as usize, "one user per node");
    Ok(report.boot_s)
}

/// Frames as agents send them: `nodes` x `seconds` snapshots of `metrics` histograms (50
/// samples each, 1-1000 ms) and 4 counters. Then time decoding and merging them all.
fn merge(nodes: u32, metrics: u32, seconds: u32) {
    use liveload_core::metrics::{encode_histogram, new_histogram};
    use liveload_core::proto::{MetricsSnapshot, decode_agent, encode};
    use rand::Rng as _;
    let mut rng = rand::rng();
    let mut frames = Vec::new();
    for second in 1..=seconds as u64 {
        for node in 0..nodes {
            let histograms = (0..metrics)
                .map(|m| {
                    let mut h = new_histogram();
                    for _ in 0..50 {
                        h.record(rng.random_range(1_000..1_000_000)).unwrap();
                    }
                    (format!("step:metric {m}"), encode_histogram(&h))
                })
                .collect();
            let counters = [
                "iterations_ok",
                "iterations_failed",
                "users_started",
                "step:x:failed",
            ]
            .iter()
            .map(|c| (c.to_string(), rng.random_range(0..100)))
            .collect();
            let snapshot = MetricsSnapshot {
                seq: second,
                elapsed_ms: second * 1000,
                active_users: 30,
                counters,
                histograms,
                ..Default::default()
            };
            frames.push((
                format!("node-{node}"),
                encode(&AgentMessage::Snapshot(snapshot)),
            ));
        }
    }
    let bytes: usize = frames.iter().map(|(_, f)| f.len()).sum();
    let started = std::time::Instant::now();
    let mut aggregate = MetricsAggregate::default();
    for (node, frame) in &frames {
        match decode_agent(frame.as_bytes()).expect("a valid frame") {
            AgentMessage::Snapshot(s) => aggregate.merge(node, &s).expect("merges"),
            _ => unreachable!("only snapshots were encoded"),
        }
    }
    aggregate.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let per_second = elapsed / seconds as f64;
    println!(
        "bench merge: {nodes} nodes x {metrics} histograms, one snapshot per node per second, {seconds} s of data"
    );
    println!(
        "frames: {} ({:.1} KiB each), decode + merge: {:.3} s total",
        frames.len(),
        bytes as f64 / frames.len() as f64 / 1024.0,
        elapsed
    );
    println!(
        "controller cost: {:.1} ms per second of run = {:.2} % of one core",
        per_second * 1000.0,
        per_second * 100.0
    );
    assert_eq!(aggregate.series.len(), seconds as usize);
}

/// Memory and CPU of an agent's process group: the agent itself and everything else (Chromium).
#[derive(Debug, Clone, Copy, Default)]
struct GroupSample {
    agent_rss_kib: u64,
    browser_pss_kib: u64,
    browser_processes: u32,
    cpu_ticks: u64,
}

fn sample_group(agent_pid: i32) -> GroupSample {
    let mut sample = GroupSample::default();
    for process in liveload_local::procfs::group(agent_pid) {
        sample.cpu_ticks += process.cpu_ticks;
        if process.pid == agent_pid {
            sample.agent_rss_kib = status_kib(process.pid, "VmRSS:");
        } else {
            sample.browser_processes += 1;
            sample.browser_pss_kib += smaps_pss_kib(process.pid);
        }
    }
    sample
}

fn status_kib(pid: i32, key: &str) -> u64 {
    read_kib(&format!("/proc/{pid}/status"), key)
}

fn smaps_pss_kib(pid: i32) -> u64 {
    read_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn read_kib(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn clock_ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second().max(1) as f64
}

struct UsersFigure {
    users: u64,
    browser_pss_mib: f64,
    browser_processes: u32,
    agent_rss_mib: f64,
    cpu_percent: f64,
    setup: Option<LatencySummary>,
}

async fn users_bench(
    counts: &[u64],
    window: Duration,
    chromium: Option<std::path::PathBuf>,
    url: Option<String>,
) -> Result<(), Error> {
    let (url, ready_selector) = match url {
        Some(url) => (url, "body"),
        None => {
            let target = demo_target::spawn(([127, 0, 0, 1], 0).into())
                .await
                .map_err(|e| Error::io("starting the demo target", e))?;
            (format!("http://{target}/"), "body.phx-connected")
        }
    };
    println!(
        "bench users: real Chromium on {url}, {}s CPU window",
        window.as_secs()
    );
    let mut figures = Vec::new();
    for &users in counts {
        figures.push(users_once(users, window, &url, ready_selector, chromium.clone()).await?);
    }
    println!(
        "{:>6} {:>14} {:>6} {:>14} {:>8} {:>14} {:>14}",
        "users",
        "browser PSS MiB",
        "procs",
        "agent RSS MiB",
        "CPU %",
        "setup p50 ms",
        "setup p95 ms"
    );
    for f in &figures {
        println!(
            "{:>6} {:>14.1} {:>6} {:>14.1} {:>8.1} {:>14} {:>14}",
            f.users,
            f.browser_pss_mib,
            f.browser_processes,
            f.agent_rss_mib,
            f.cpu_percent,
            f.setup.map_or("-".into(), |s| format!("{:.1}", s.p50_ms)),
            f.setup.map_or("-".into(), |s| format!("{:.1}", s.p95_ms)),
        );
    }
    if let Some(base) = figures.iter().find(|f| f.users == 0) {
        for f in figures.iter().filter(|f| f.users > 0) {
            println!(
                "marginal per user at {}: {:.1} MiB PSS, {:.2} % CPU",
                f.users,
                (f.browser_pss_mib - base.browser_pss_mib) / f.users as f64,
                (f.cpu_percent - base.cpu_percent) / f.users as f64,
            );
        }
    }
    Ok(())
}

async fn users_once(
    users: u64,
    window: Duration,
    url: &str,
    ready_selector: &str,
    chromium: Option<std::path::PathBuf>,
) -> Result<UsersFigure, Error> {
    let state = bench_state_dir()?;
    let backend = LocalBackend::builder()
        .state_dir(state.path())
        .chromium(chromium)
        .build()?;
    let run_id = names::new_run_id("bench-users");
    let token = names::new_token();
    let spec = NodeSpec {
        run_id: run_id.clone(),
        index: 0,
        token: token.clone(),
        ttl: Duration::from_secs(600),
        grace: Duration::from_secs(30),
        tls: None,
        no_browser: false,
    };
    let handle = backend.create(&spec).await?;
    let result = async {
        let endpoint =
            run::wait_ready_or_destroy(&backend, &handle, Duration::from_secs(30)).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut connection, _) =
            AgentConnection::connect(&handle.id, &endpoint, &token, deadline).await?;
        let agent_pid: i32 = handle
            .detail
            .trim_start_matches("pid ")
            .parse()
            .unwrap_or(0);
        let assignment = Assignment {
            memory_budget_bytes: None,
            run_id: run_id.clone(),
            scenario: "bench".into(),
            base_url: url.to_string(),
            first_user_id: 0,
            users,
            duration_ms: 600_000,
            iteration_timeout_ms: 20_000,
            start_interval_ms: 50,
            start_batch: 1,
            steps: vec![
                Step {
                    name: "open".into(),
                    kind: StepKind::Navigate { url: url.into() },
                },
                Step {
                    name: "connected".into(),
                    kind: StepKind::WaitFor {
                        condition: WaitCondition::Visible {
                            selector: ready_selector.into(),
                        },
                        timeout_ms: Some(10_000),
                    },
                },
                // Stay on the live page, like a person watching it.
                Step {
                    name: "watch".into(),
                    kind: StepKind::Think {
                        min_ms: 30_000,
                        max_ms: 30_000,
                    },
                },
            ],
            step_timeout_ms: 10_000,
            data: None,
            workload: Default::default(),
            throttle: None,
            no_browser: false,
            diagnostics: Default::default(),
            allow_schemes: Vec::new(),
        };
        connection
            .send(&ControllerMessage::Prepare(Box::new(assignment)))
            .await?;
        expect_prepared(&mut connection).await?;
        let mut metrics = MetricsAggregate::default();
        if users > 0 {
            connection.send(&ControllerMessage::Start).await?;
            // Wait until every user has set up, then let the page settle.
            let ramp_deadline = Instant::now() + Duration::from_secs(60);
            while metrics.active_users() < users
                || metrics
                    .histograms
                    .get("user_setup")
                    .is_none_or(|h| h.len() < users)
            {
                if Instant::now() > ramp_deadline {
                    break;
                }
                read_one(&mut connection, &mut metrics).await?;
            }
        }
        settle(&mut connection, &mut metrics, Duration::from_secs(3)).await?;
        let before = sample_group(agent_pid);
        let started = Instant::now();
        settle(&mut connection, &mut metrics, window).await?;
        let after = sample_group(agent_pid);
        let seconds = started.elapsed().as_secs_f64();
        let cpu_percent = (after.cpu_ticks.saturating_sub(before.cpu_ticks)) as f64
            / clock_ticks_per_second()
            / seconds
            * 100.0;
        let _ = connection.send(&ControllerMessage::Shutdown).await;
        Ok(UsersFigure {
            users,
            browser_pss_mib: after.browser_pss_kib as f64 / 1024.0,
            browser_processes: after.browser_processes,
            agent_rss_mib: after.agent_rss_kib as f64 / 1024.0,
            cpu_percent,
            setup: metrics.histograms.get("user_setup").map(LatencySummary::of),
        })
    }
    .await;
    backend.destroy(&handle).await?;
    let left = backend.list(&RunFilter::Run(run_id)).await?;
    debug_assert!(left.is_empty());
    result
}

async fn expect_prepared(connection: &mut AgentConnection) -> Result<(), Error> {
    match connection.recv().await? {
        AgentMessage::Prepared { .. } => Ok(()),
        AgentMessage::Failed { message } => Err(Error::RunFailed { message }),
        _ => Err(Error::RunFailed {
            message: "unexpected message before prepared".into(),
        }),
    }
}

async fn read_one(
    connection: &mut AgentConnection,
    metrics: &mut MetricsAggregate,
) -> Result<(), Error> {
    match connection.recv().await? {
        AgentMessage::Snapshot(s) | AgentMessage::Finished(s) => metrics.merge("bench", &s),
        AgentMessage::Failed { message } => Err(Error::RunFailed { message }),
        _ => Ok(()),
    }
}

/// Keep the link alive (heartbeats) and read snapshots for `period`.
async fn settle(
    connection: &mut AgentConnection,
    metrics: &mut MetricsAggregate,
    period: Duration,
) -> Result<(), Error> {
    // `--window` is any u64 of seconds: past the clock's range is a usage error, not a panic.
    let end = Instant::now()
        .checked_add(period)
        .ok_or_else(|| Error::InvalidOption {
            option: "--window".into(),
            message: format!("{} s is past what this clock can count", period.as_secs()),
        })?;
    while Instant::now() < end {
        connection.send(&ControllerMessage::Heartbeat).await?;
        let wait = (end - Instant::now()).min(Duration::from_secs(1));
        if let Ok(result) = tokio::time::timeout(wait, read_one(connection, metrics)).await {
            result?;
        }
    }
    Ok(())
}
