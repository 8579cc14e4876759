//! What the benchmarks share: talking to one agent directly (prepared, snapshots, heartbeats)
//! and measuring its process group (memory, CPU).

use std::time::Duration;

use liveload_core::agent_client::AgentConnection;
use liveload_core::metrics::MetricsAggregate;
use liveload_core::proto::{AgentMessage, ControllerMessage};
use liveload_core::{Backend, Error, NodeSpec, RunFilter, names};
use liveload_local::LocalBackend;
use tokio::time::Instant;

/// Memory and CPU of an agent's process group: the agent itself and everything else (Chromium).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct GroupSample {
    /// The agent's resident memory.
    pub agent_rss_kib: u64,
    /// The browser's processes' proportional memory.
    pub browser_pss_kib: u64,
    /// How many browser processes.
    pub browser_processes: u32,
    /// The whole group's CPU, and the agent's own part of it.
    pub cpu_ticks: u64,
    /// The agent's own CPU.
    pub agent_cpu_ticks: u64,
    /// The renderers' CPU: the pages' own work (script, style, layout, paint, frames), which
    /// any tool driving the same Chromium on the same page pays alike.
    pub renderer_cpu_ticks: u64,
}

/// Sample the process group led by the agent `agent_pid`.
pub(super) fn sample_group(agent_pid: i32) -> GroupSample {
    let mut sample = GroupSample::default();
    for process in liveload_local::procfs::group(agent_pid) {
        sample.cpu_ticks += process.cpu_ticks;
        if process.pid == agent_pid {
            sample.agent_cpu_ticks = process.cpu_ticks;
            sample.agent_rss_kib = status_kib(process.pid, "VmRSS:");
        } else {
            // Chromium rewrites its helpers' command lines into one string: a substring test.
            let cmdline =
                std::fs::read(format!("/proc/{}/cmdline", process.pid)).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("--type=renderer") {
                sample.renderer_cpu_ticks += process.cpu_ticks;
            }
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

/// The kernel's clock ticks per second (CPU times in `/proc` are counted in them).
pub(super) fn clock_ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second().max(1) as f64
}

/// Wait for the agent's `Prepared` (a `Failed` is the run's error).
pub(super) async fn expect_prepared(connection: &mut AgentConnection) -> Result<(), Error> {
    match connection.recv().await? {
        AgentMessage::Prepared { .. } => Ok(()),
        AgentMessage::Failed { message } => Err(Error::RunFailed { message }),
        _ => Err(Error::RunFailed {
            message: "unexpected message before prepared".into(),
        }),
    }
}

/// Read one message from the agent, merging a snapshot into `metrics`.
pub(super) async fn read_one(
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
pub(super) async fn settle(
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

/// One local agent booted for a benchmark and connected.
pub(super) struct BenchAgent {
    /// The link to it.
    pub connection: AgentConnection,
    /// Its process id (it leads its process group: Chromium's processes are in it).
    pub pid: i32,
    /// The run id it was booted under.
    pub run_id: String,
}

/// Boot one agent on `backend` (run `<name>-...`, living `ttl`), connect to it, and run `body`
/// with it; the agent is destroyed, and checked gone, whatever `body` returned.
pub(super) async fn with_agent<T>(
    backend: &LocalBackend,
    (name, ttl, no_browser): (&str, Duration, bool),
    body: impl AsyncFnOnce(&mut BenchAgent) -> Result<T, Error>,
) -> Result<T, Error> {
    let run_id = names::new_run_id(name);
    let token = names::new_token();
    let spec = NodeSpec {
        run_id: run_id.clone(),
        index: 0,
        token: token.clone(),
        ttl,
        grace: Duration::from_secs(30),
        tls: None,
        no_browser,
    };
    let handle = backend.create(&spec).await?;
    let result = async {
        let endpoint =
            liveload_core::run::wait_ready_or_destroy(backend, &handle, Duration::from_secs(30))
                .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (connection, _) =
            AgentConnection::connect(&handle.id, &endpoint, &token, deadline).await?;
        let pid = handle
            .detail
            .trim_start_matches("pid ")
            .parse()
            .unwrap_or(0);
        let mut agent = BenchAgent {
            connection,
            pid,
            run_id: run_id.clone(),
        };
        body(&mut agent).await
    }
    .await;
    backend.destroy(&handle).await?;
    let left = backend.list(&RunFilter::Run(run_id)).await?;
    debug_assert!(left.is_empty());
    result
}
