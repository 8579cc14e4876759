//! `liveload bench`: measure liveload itself and print the figures. Never fails on time.
//!
//! - `boot`: cluster boot on the local backend for 1, 8 and 64 nodes (agents without a browser):
//!   time from the first create until every agent's facts are in, through the real run path.
//! - `users`: per-user cost of real Chromium on the demo page: PSS of the browser's whole process
//!   tree at 0, 10 and 40 users, marginal MiB per user, CPU % per user, the agent's own RSS, and
//!   the median time to set up one user (context + page).
//! - `protocol`: per-user cost of protocol users (`engine: http`) with a WebSocket each, idle
//!   or active: the agent's RSS and CPU, and `ws.reply` (`protocol.rs`).

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use liveload_core::error::exit_code;
use liveload_core::metrics::{LatencySummary, MetricsAggregate};
use liveload_core::proto::{
    AgentMessage, Assignment, ControllerMessage, Step, StepKind, WaitCondition,
};
use liveload_core::run::{self, Quiet, RunOptions};
use liveload_core::scenario::Scenario;
use liveload_core::sizing::{BrowserProfile, SizingConfig};
use liveload_core::{Backend, Error};
use liveload_local::LocalBackend;
use tokio::time::Instant;

mod link;
mod protocol;

use link::{clock_ticks_per_second, expect_prepared, read_one, sample_group, settle, with_agent};

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
        #[arg(long, conflicts_with = "page")]
        url: Option<String>,
        /// Which page of the bundled demo target: `demo` (its LiveView counter and chat) or
        /// `heavy` (`/table`: 2,000 rows re-rendered every second).
        #[arg(long, value_enum, default_value = "demo")]
        page: DemoPage,
    },
    /// Per-user memory and CPU of protocol users (`engine: http`), each with a WebSocket to the
    /// demo target: idle (reading the server's pushes) or active (a message and its reply a
    /// second).
    Protocol {
        /// User counts to measure, comma-separated (0 = the agent alone).
        #[arg(long, value_delimiter = ',', default_value = "0,1000,5000")]
        users: Vec<u64>,
        /// Users send a message and wait for its reply once a second.
        #[arg(long)]
        active: bool,
        /// The users' engine: `http` (a WebSocket each) or `liveview` (a joined LiveView each).
        #[arg(long, value_enum, default_value = "http")]
        engine: ProtocolEngine,
        /// Seconds of CPU sampling at steady state, per count.
        #[arg(long, default_value_t = 10)]
        window: u64,
    },
}

/// The engines `bench protocol` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolEngine {
    /// `engine: http`.
    Http,
    /// `engine: liveview`.
    Liveview,
}

/// A page of the bundled demo target to measure users on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoPage {
    /// `/`: the LiveView demo page.
    Demo,
    /// `/table`: the heavy page.
    Heavy,
}

impl DemoPage {
    /// The page's path and the selector that says it is live.
    fn path_and_ready(self) -> (&'static str, &'static str) {
        match self {
            DemoPage::Demo => ("/", "body.phx-connected"),
            DemoPage::Heavy => ("/table", "#rows[data-renders]"),
        }
    }

    /// A JavaScript condition that holds if the page kept behaving while it was watched: the
    /// demo page's LiveView socket is still connected; the heavy page re-rendered (about) once
    /// a second since it loaded — a throttled timer would fail it.
    fn still_behaving(self) -> &'static str {
        match self {
            DemoPage::Demo => "document.querySelector('body.phx-connected') !== null",
            DemoPage::Heavy => {
                "Number(document.getElementById('rows').dataset.renders) >= \
                 Math.floor(performance.now() / 1000 * 0.8)"
            }
        }
    }
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
            page,
        } => users_bench(&users, Duration::from_secs(window), chromium, url, page).await,
        Bench::Protocol {
            users,
            active,
            engine,
            window,
        } => {
            let engine = match engine {
                ProtocolEngine::Http => liveload_core::proto::Engine::Http,
                ProtocolEngine::Liveview => liveload_core::proto::Engine::Liveview,
            };
            protocol::bench(&users, (engine, active), Duration::from_secs(window)).await
        }
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

/// Resolves after two animation frames, rejects when none come within a second.
const STILL_RENDERING: &str = "new Promise((rendered, stalled) => { \
    requestAnimationFrame(() => requestAnimationFrame(() => rendered('rendered'))); \
    setTimeout(() => stalled(new Error('no animation frame within 1 s')), 1000); })";

struct UsersFigure {
    users: u64,
    browser_pss_mib: f64,
    browser_processes: u32,
    agent_rss_mib: f64,
    cpu_percent: f64,
    /// The agent's own part of `cpu_percent`.
    agent_cpu_percent: f64,
    /// The renderers' part of `cpu_percent` (the pages' own work).
    renderer_cpu_percent: f64,
    setup: Option<LatencySummary>,
    /// WebSocket frames each user received per second in the window: the page still lives.
    frames_per_user_s: f64,
    /// Iterations failed and pages crashed during the whole measurement.
    failed: u64,
}

async fn users_bench(
    counts: &[u64],
    window: Duration,
    chromium: Option<std::path::PathBuf>,
    url: Option<String>,
    page: DemoPage,
) -> Result<(), Error> {
    let (url, ready_selector, behaving) = match url {
        Some(url) => (url, "body", "true"),
        None => {
            let target = demo_target::spawn(([127, 0, 0, 1], 0).into())
                .await
                .map_err(|e| Error::io("starting the demo target", e))?;
            let (path, ready) = page.path_and_ready();
            (
                format!("http://{target}{path}"),
                ready,
                page.still_behaving(),
            )
        }
    };
    let tuning: Vec<String> = liveload_core::launch::tuning::ALL
        .iter()
        .filter_map(|name| Some(format!("{name}={}", std::env::var(name).ok()?)))
        .collect();
    if !tuning.is_empty() {
        println!("Chromium tuning: {}", tuning.join(" "));
    }
    println!(
        "bench users: real Chromium on {url}, {}s CPU window",
        window.as_secs()
    );
    let mut figures = Vec::new();
    for &users in counts {
        figures.push(
            users_once(
                users,
                window,
                &url,
                (ready_selector, behaving),
                chromium.clone(),
            )
            .await?,
        );
    }
    println!(
        "{:>6} {:>14} {:>6} {:>14} {:>8} {:>11} {:>14} {:>14} {:>14} {:>12} {:>7}",
        "users",
        "browser PSS MiB",
        "procs",
        "agent RSS MiB",
        "CPU %",
        "agent CPU %",
        "renderers CPU %",
        "setup p50 ms",
        "setup p95 ms",
        "frames/user/s",
        "failed"
    );
    for f in &figures {
        println!(
            "{:>6} {:>14.1} {:>6} {:>14.1} {:>8.1} {:>11.2} {:>14.1} {:>14} {:>14} {:>12.2} {:>7}",
            f.users,
            f.browser_pss_mib,
            f.browser_processes,
            f.agent_rss_mib,
            f.cpu_percent,
            f.agent_cpu_percent,
            f.renderer_cpu_percent,
            f.setup.map_or("-".into(), |s| format!("{:.1}", s.p50_ms)),
            f.setup.map_or("-".into(), |s| format!("{:.1}", s.p95_ms)),
            f.frames_per_user_s,
            f.failed,
        );
    }
    if let Some(base) = figures.iter().find(|f| f.users == 0) {
        for f in figures.iter().filter(|f| f.users > 0) {
            println!(
                "marginal per user at {}: {:.1} MiB PSS, {:.2} % CPU ({:.2} % in renderers)",
                f.users,
                (f.browser_pss_mib - base.browser_pss_mib) / f.users as f64,
                (f.cpu_percent - base.cpu_percent) / f.users as f64,
                (f.renderer_cpu_percent - base.renderer_cpu_percent) / f.users as f64,
            );
        }
    }
    Ok(())
}

async fn users_once(
    users: u64,
    window: Duration,
    url: &str,
    (ready_selector, behaving): (&str, &str),
    chromium: Option<std::path::PathBuf>,
) -> Result<UsersFigure, Error> {
    // Each user watches until well past the CPU window: the ramp (50 ms apart, plus setup),
    // 3 s of settling, the window, and a margin; the checks are waited for after the window.
    let margin_ms = users.saturating_mul(150).saturating_add(4_000);
    let watch_ms = window
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
        .saturating_add(3_000)
        .saturating_add(margin_ms);
    let state = bench_state_dir()?;
    let backend = LocalBackend::builder()
        .state_dir(state.path())
        .chromium(chromium)
        .build()?;
    with_agent(
        &backend,
        ("bench-users", Duration::from_secs(600), false),
        async |agent| {
            let (connection, agent_pid, run_id) =
                (&mut agent.connection, agent.pid, agent.run_id.clone());
            let steps = vec![
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
                // Stay on the live page, like a person watching it, past the CPU window ...
                Step {
                    name: "watch".into(),
                    kind: StepKind::Think {
                        min_ms: watch_ms,
                        max_ms: watch_ms,
                    },
                },
                // ... then check it still behaves: an iteration fails if it does not.
                Step {
                    name: "still behaving".into(),
                    kind: StepKind::WaitFor {
                        condition: WaitCondition::Js {
                            expression: behaving.into(),
                        },
                        timeout_ms: Some(1_000),
                    },
                },
                // ... and still renders: a switch that stops frames (e.g.
                // `--disable-threaded-compositing` in headless) saves most of the CPU while the
                // page's socket and DOM look alive, but `requestAnimationFrame` never fires and
                // screenshots hang, so steps' actionability checks would too.
                Step {
                    name: "still rendering".into(),
                    kind: StepKind::Eval {
                        js: STILL_RENDERING.into(),
                        var: None,
                        secret: false,
                    },
                },
            ];
            let assignment = Assignment {
                duration_ms: 600_000,
                iteration_timeout_ms: watch_ms.saturating_add(15_000),
                start_interval_ms: 50,
                step_timeout_ms: 10_000,
                ..Assignment::new(&run_id, "bench", url, users, steps)
            };
            connection
                .send(&ControllerMessage::Prepare(Box::new(assignment)))
                .await?;
            expect_prepared(connection).await?;
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
                    read_one(connection, &mut metrics).await?;
                }
            }
            settle(connection, &mut metrics, Duration::from_secs(3)).await?;
            let frames = |m: &MetricsAggregate| m.counters.get("ws.frames_received").copied();
            let frames_before = frames(&metrics).unwrap_or(0);
            let before = sample_group(agent_pid);
            let started = Instant::now();
            settle(connection, &mut metrics, window).await?;
            let after = sample_group(agent_pid);
            let seconds = started.elapsed().as_secs_f64();
            let frames_in_window = frames(&metrics).unwrap_or(0).saturating_sub(frames_before);
            // Every user's first iteration ends with its check: wait for them (bounded).
            let ended = |m: &MetricsAggregate| {
                ["iterations_ok", "iterations_failed"]
                    .iter()
                    .filter_map(|name| m.counters.get(*name))
                    .sum::<u64>()
            };
            let checks_deadline = Instant::now() + Duration::from_millis(margin_ms + 10_000);
            while users > 0 && ended(&metrics) < users && Instant::now() < checks_deadline {
                settle(connection, &mut metrics, Duration::from_secs(1)).await?;
            }
            let failed = ["iterations_failed", "browser.page_crashes"]
                .iter()
                .filter_map(|name| metrics.counters.get(*name))
                .sum();
            let percent = |ticks: u64| ticks as f64 / clock_ticks_per_second() / seconds * 100.0;
            let cpu_percent = percent(after.cpu_ticks.saturating_sub(before.cpu_ticks));
            let agent_cpu_percent =
                percent(after.agent_cpu_ticks.saturating_sub(before.agent_cpu_ticks));
            let renderer_cpu_percent = percent(
                after
                    .renderer_cpu_ticks
                    .saturating_sub(before.renderer_cpu_ticks),
            );
            let _ = connection.send(&ControllerMessage::Shutdown).await;
            Ok(UsersFigure {
                users,
                browser_pss_mib: after.browser_pss_kib as f64 / 1024.0,
                browser_processes: after.browser_processes,
                agent_rss_mib: after.agent_rss_kib as f64 / 1024.0,
                cpu_percent,
                agent_cpu_percent,
                renderer_cpu_percent,
                setup: metrics.histograms.get("user_setup").map(LatencySummary::of),
                frames_per_user_s: frames_in_window as f64 / seconds / users.max(1) as f64,
                failed,
            })
        },
    )
    .await
}
