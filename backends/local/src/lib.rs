//! The local backend: agents are child processes of the controller, on this host.
//!
//! It is the default backend (development, CI, a laptop) and the reference implementation of
//! [`Backend`]. What a cloud provider keeps in its API, this backend keeps in a per-run state
//! directory: one JSON record per node (pid, process group), so that `liveload cleanup` in
//! another process can find and kill a crashed run's agents.
//!
//! Nothing outlives the controller:
//! - each agent leads its own process group (Chromium and its helpers join it), so one signal to
//!   the group ends the whole node;
//! - each agent gets `PR_SET_PDEATHSIG = SIGTERM`: when the controller dies, even by SIGKILL, the
//!   kernel tells the agent, which closes Chromium and exits;
//! - and the agent's own dead-man switch ends it anyway if the controller goes silent.
//!
//! Local nodes share one host. The backend splits the host into `nodes_per_host` shares: each
//! agent reports 1/N of the host's memory and cores, and the backend never holds more than N
//! nodes per run, so N local nodes never claim N times the host.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(feature = "cli")]
pub mod cli;
mod doctor;
pub mod procfs;

use async_trait::async_trait;
use liveload_core::{
    AgentEndpoint, Backend, BackendError, BackendErrorKind, Billing, Error, LinkPath, NodeHandle,
    NodeSize, NodeSpec, Result, RunFilter,
};
use rustix::process::{self, Pid, Signal};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::watch;
use tokio::time::Instant;

/// Agents as local processes. Build with [`LocalBackend::builder`].
#[derive(Debug, Clone)]
pub struct LocalBackend {
    agent_bin: PathBuf,
    state_dir: PathBuf,
    nodes_per_host: u32,
    chromium: Option<PathBuf>,
    announce_size: bool,
    die_with_controller: bool,
    debug_delay_listen: Duration,
    /// Addresses announced by agents this process started, by node id.
    announced: Arc<Mutex<HashMap<String, watch::Receiver<Announcement>>>>,
}

/// What an agent's stdout said so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Announcement {
    /// Nothing yet.
    Pending,
    /// `LIVELOAD_AGENT_LISTENING <address>`.
    Listening(String),
    /// Stdout closed without an address: the agent exited.
    Exited,
}

/// Options of a [`LocalBackend`].
#[derive(Debug, Clone)]
pub struct LocalBackendBuilder {
    agent_bin: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    nodes_per_host: u32,
    chromium: Option<PathBuf>,
    announce_size: bool,
    die_with_controller: bool,
    debug_delay_listen: Duration,
}

impl Default for LocalBackendBuilder {
    fn default() -> Self {
        LocalBackendBuilder {
            agent_bin: None,
            state_dir: None,
            nodes_per_host: 1,
            chromium: None,
            announce_size: true,
            die_with_controller: true,
            debug_delay_listen: Duration::ZERO,
        }
    }
}

impl LocalBackendBuilder {
    /// The `liveload-agent` executable (default: `LIVELOAD_AGENT_BIN`, else next to the running
    /// executable, else on `PATH`).
    pub fn agent_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.agent_bin = Some(path.into());
        self
    }

    /// Where run records live (default: [`liveload_core::lock::default_state_dir`]).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Split the host into this many nodes (default 1): each reports 1/N of the host.
    pub fn nodes_per_host(mut self, n: u32) -> Self {
        self.nodes_per_host = n.max(1);
        self
    }

    /// The Chromium executable agents launch.
    pub fn chromium(mut self, path: Option<PathBuf>) -> Self {
        self.chromium = path;
        self
    }

    /// Whether [`Backend::expected_size`] reports the host's share (default) or `None`, which
    /// makes the run boot a probe node first.
    pub fn announce_size(mut self, announce: bool) -> Self {
        self.announce_size = announce;
        self
    }

    /// Whether agents get `PR_SET_PDEATHSIG` (default). Tests turn it off to simulate agents
    /// orphaned by a crash, which `liveload cleanup` must then find.
    pub fn die_with_controller(mut self, die: bool) -> Self {
        self.die_with_controller = die;
        self
    }

    /// Test hook: agents wait this long before listening (a slow boot).
    pub fn debug_delay_listen(mut self, delay: Duration) -> Self {
        self.debug_delay_listen = delay;
        self
    }

    /// Build the backend, finding the agent binary.
    pub fn build(self) -> Result<LocalBackend> {
        let agent_bin = match self.agent_bin {
            Some(path) => path,
            None => find_agent_bin().ok_or_else(|| {
                BackendError::new(
                    "local",
                    BackendErrorKind::BadImage,
                    "the liveload-agent executable was not found",
                )
                .hint("build it (cargo build -p liveload-agent) or point LIVELOAD_AGENT_BIN at it")
            })?,
        };
        Ok(LocalBackend {
            agent_bin,
            state_dir: self
                .state_dir
                .unwrap_or_else(liveload_core::lock::default_state_dir),
            nodes_per_host: self.nodes_per_host,
            chromium: self.chromium,
            announce_size: self.announce_size,
            die_with_controller: self.die_with_controller,
            debug_delay_listen: self.debug_delay_listen,
            announced: Arc::default(),
        })
    }
}

/// The agent executable: see [`liveload_core::agent_bin::find`].
pub fn find_agent_bin() -> Option<PathBuf> {
    liveload_core::agent_bin::find()
}

/// In the child before exec: ask the kernel for SIGTERM when the controller dies (even by
/// SIGKILL), and give up if it already has (between fork and this call). Linux only; elsewhere
/// the agent's dead-man switch alone ends orphans.
#[cfg(target_os = "linux")]
fn die_with_parent(parent: Pid) -> std::io::Result<()> {
    process::set_parent_process_death_signal(Some(Signal::TERM))?;
    if process::getppid() != Some(parent) {
        return Err(std::io::Error::from_raw_os_error(
            rustix::io::Errno::SRCH.raw_os_error(),
        ));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_parent: Pid) -> std::io::Result<()> {
    Ok(())
}

/// The only variables of the controller's environment an agent inherits: what a process needs
/// to find programs, fonts and its locale, and the agent's own log filter. Everything else
/// (`AWS_*`, `FLY_API_TOKEN`, `SSH_AUTH_SOCK`, ...) stays with the controller.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "RUST_BACKTRACE",
    liveload_core::launch::var::LOG,
];

/// What the backend records per node, for itself and for later processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeRecord {
    run_id: String,
    index: u32,
    pid: i32,
    log_file: PathBuf,
    /// When the agent's TTL ends (Unix seconds).
    #[serde(default)]
    expires_at_unix_s: Option<u64>,
}

impl LocalBackend {
    /// Start building a local backend.
    pub fn builder() -> LocalBackendBuilder {
        LocalBackendBuilder::default()
    }

    /// The directory holding run records.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn runs_dir(&self) -> PathBuf {
        self.state_dir.join("runs")
    }

    fn run_dir(&self, run_id: &str) -> PathBuf {
        self.runs_dir().join(run_id)
    }

    fn record_path(&self, run_id: &str, index: u32) -> PathBuf {
        self.run_dir(run_id).join(format!("node-{index}.json"))
    }

    fn read_record(&self, run_id: &str, index: u32) -> Option<NodeRecord> {
        let text = std::fs::read_to_string(self.record_path(run_id, index)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn handle(record: &NodeRecord) -> NodeHandle {
        NodeHandle {
            id: format!("ll-{}-{}", record.run_id, record.index),
            run_id: record.run_id.clone(),
            index: record.index,
            detail: format!("pid {}", record.pid),
            expires_at_unix_s: record.expires_at_unix_s,
        }
    }
}

/// Is `pid` alive and really this run's agent (not a recycled pid)? Its executable is
/// `liveload-agent` and its environment carries the run's id (the launch contract's
/// `LIVELOAD_AGENT_RUN_ID`).
fn is_agent_of(pid: i32, run_id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // A zombie keeps its cmdline empty; it is not alive in any useful sense.
    let is_agent = cmdline
        .split(|&b| b == 0)
        .next()
        .is_some_and(|a| a.ends_with(b"liveload-agent"));
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let expected = format!("{}={run_id}", liveload_core::launch::var::RUN_ID);
    is_agent
        && environ
            .split(|&b| b == 0)
            .any(|entry| entry == expected.as_bytes())
}

/// Does any process remain in process group `pgid`?
fn group_alive(pgid: i32) -> bool {
    Pid::from_raw(pgid).is_some_and(|group| process::test_kill_process_group(group).is_ok())
}

/// Send `signal` to every process of group `pgid` (best effort: a group that is gone is fine).
fn signal_group(pgid: i32, signal: Signal) {
    if let Some(group) = Pid::from_raw(pgid) {
        let _ = process::kill_process_group(group, signal);
    }
}

/// Is process group `pgid` made only of leftovers of a liveload agent (its Chromium, whose
/// profile directory carries liveload's prefix)? Guards against signalling a stranger's group
/// after the agent's pid was recycled.
fn group_is_agent_leftovers(pgid: i32) -> bool {
    let members = procfs::group(pgid);
    !members.is_empty()
        && members
            .iter()
            .all(|p| p.cmdline().contains("liveload-chromium-"))
}

fn backend_error(kind: BackendErrorKind, message: String) -> Error {
    BackendError::new("local", kind, message).into()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn link_path(&self) -> LinkPath {
        LinkPath::Loopback
    }

    fn billing(&self) -> Billing {
        Billing::Free
    }

    async fn create(&self, spec: &NodeSpec) -> Result<NodeHandle> {
        use std::os::unix::process::CommandExt as _;

        let run_dir = self.run_dir(&spec.run_id);
        liveload_core::state::private_dir(&self.state_dir)?;
        liveload_core::state::private_dir(&run_dir)?;
        let log_file = run_dir.join(format!("node-{}.log", spec.index));
        let log = std::fs::File::create(&log_file)
            .map_err(|e| Error::io(format!("creating {}", log_file.display()), e))?;

        // The launch contract: settings as environment variables, secrets as 0600 files in
        // the node's own directory that the agent deletes once read.
        let mut settings = spec.agent_settings("127.0.0.1:0");
        settings.host_share = Some(self.nodes_per_host);
        settings.chromium = self.chromium.as_ref().map(|p| p.display().to_string());
        let files_dir = run_dir.join(format!("node-{}.d", spec.index));
        let launch = settings.launch(&spec.agent_secrets(), &files_dir.display().to_string());
        let _ = std::fs::remove_dir_all(&files_dir); // a retried create starts clean
        liveload_core::backend::write_launch_files(&files_dir, &launch.files)
            .map_err(|e| Error::io(format!("writing {}", files_dir.display()), e))?;
        let mut command = std::process::Command::new(&self.agent_bin);
        // A cleared environment plus an allowlist: the controller's cloud credentials, SSH
        // agent socket and tokens never reach the agent, nor the Chromium it starts.
        command.env_clear();
        // The operator's Chromium tuning passes too (`launch::tuning`).
        for name in INHERITED_ENV
            .iter()
            .chain(liveload_core::launch::tuning::ALL)
        {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .envs(launch.env.iter().map(|(k, v)| (*k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log);
        if !self.debug_delay_listen.is_zero() {
            command
                .arg("--debug-delay-listen-ms")
                .arg(self.debug_delay_listen.as_millis().to_string());
        }
        let die_with_controller = self.die_with_controller;
        let parent = process::getpid();
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe work is allowed: it makes single system calls (setsid, prctl,
        // getppid) through rustix, which allocates nothing for them, and its error path builds
        // an `io::Error` from a raw errno without allocating.
        unsafe {
            command.pre_exec(move || {
                // Own process group: destroy signals the whole group, Chromium included.
                let _ = process::setsid();
                if die_with_controller {
                    die_with_parent(parent)?;
                }
                Ok(())
            });
        }
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                BackendError::new(
                    "local",
                    BackendErrorKind::BadImage,
                    format!("cannot start {}: {e}", self.agent_bin.display()),
                )
                .hint("check LIVELOAD_AGENT_BIN or rebuild liveload-agent")
            })?;
        let pid = child.id().unwrap_or(0) as i32;
        // The agent announces its address on stdout; read it as it comes, no polling.
        let (announce, announced) = watch::channel(Announcement::Pending);
        let stdout = child.stdout.take();
        tokio::spawn(async move {
            let mut line = String::new();
            let said = match stdout {
                Some(out) => {
                    let mut reader = tokio::io::BufReader::new(out);
                    reader.read_line(&mut line).await.ok()
                }
                None => None,
            };
            let announcement = match (said, line.strip_prefix("LIVELOAD_AGENT_LISTENING ")) {
                (Some(n), Some(address)) if n > 0 => Announcement::Listening(address.trim().into()),
                _ => Announcement::Exited,
            };
            let _ = announce.send(announcement);
            // Reap the child when it exits so it never lingers as a zombie.
            let _ = child.wait().await;
        });
        let record = NodeRecord {
            run_id: spec.run_id.clone(),
            index: spec.index,
            pid,
            log_file,
            expires_at_unix_s: Some(
                liveload_core::names::unix_now_s().saturating_add(spec.ttl.as_secs()),
            ),
        };
        let path = self.record_path(&spec.run_id, spec.index);
        liveload_core::state::write_private_file(
            &path,
            &serde_json::to_vec(&record).expect("a record serialises"),
        )?;
        // `list` knows an agent by its executable and the run id in its environment, which
        // the child has only once it has exec'd (before, it is a copy of this process): return
        // when a `list` would find it.
        for _ in 0..200 {
            if is_agent_of(pid, &spec.run_id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let handle = Self::handle(&record);
        self.announced
            .lock()
            .expect("not poisoned")
            .insert(handle.id.clone(), announced);
        Ok(handle)
    }

    async fn wait_ready(&self, node: &NodeHandle, deadline: Instant) -> Result<AgentEndpoint> {
        let record = self.read_record(&node.run_id, node.index).ok_or_else(|| {
            backend_error(
                BackendErrorKind::NodeFailed,
                format!("node {} has no record", node.id),
            )
        })?;
        let announced = self
            .announced
            .lock()
            .expect("not poisoned")
            .get(&node.id)
            .cloned();
        let Some(mut announced) = announced else {
            return Err(backend_error(
                BackendErrorKind::NodeFailed,
                format!(
                    "node {} was started by another liveload process; only it can wait for it",
                    node.id
                ),
            ));
        };
        let outcome = tokio::time::timeout_at(
            deadline,
            announced.wait_for(|a| *a != Announcement::Pending),
        )
        .await;
        match outcome {
            Err(_) => Err(backend_error(
                BackendErrorKind::NotReady,
                format!("the agent of node {} has not announced its port", node.id),
            )),
            Ok(Ok(announcement)) => match &*announcement {
                Announcement::Listening(address) => Ok(AgentEndpoint {
                    address: address.clone(),
                    tls: None,
                    headers: Vec::new(),
                    proxy: None,
                }),
                _ => Err(backend_error(
                    BackendErrorKind::NodeFailed,
                    format!(
                        "the agent of node {} exited before it was ready; its log ends with:\n{}",
                        node.id,
                        tail(&record.log_file, 10)
                    ),
                )),
            },
            Ok(Err(_)) => Err(backend_error(
                BackendErrorKind::NodeFailed,
                format!("lost track of node {}", node.id),
            )),
        }
    }

    async fn destroy(&self, node: &NodeHandle) -> Result<()> {
        let Some(record) = self.read_record(&node.run_id, node.index) else {
            return Ok(()); // Already gone.
        };
        if is_agent_of(record.pid, &record.run_id) {
            // The agent leads its group: SIGTERM lets it close Chromium; SIGKILL after 3 s.
            signal_group(record.pid, Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while group_alive(record.pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if group_alive(record.pid) {
                signal_group(record.pid, Signal::KILL);
            }
        } else if group_alive(record.pid) && group_is_agent_leftovers(record.pid) {
            // The agent is gone but Chromium processes of its group remain.
            signal_group(record.pid, Signal::KILL);
        }
        let _ = std::fs::remove_file(&record.log_file);
        let _ = std::fs::remove_dir_all(
            self.run_dir(&node.run_id)
                .join(format!("node-{}.d", node.index)),
        );
        self.announced
            .lock()
            .expect("not poisoned")
            .remove(&node.id);
        let _ = std::fs::remove_file(self.record_path(&node.run_id, node.index));
        // The last node of a run takes the run's directory with it.
        let _ = std::fs::remove_dir(self.run_dir(&node.run_id));
        Ok(())
    }

    async fn list(&self, runs: &RunFilter) -> Result<Vec<NodeHandle>> {
        let mut nodes = Vec::new();
        let Ok(run_dirs) = std::fs::read_dir(self.runs_dir()) else {
            return Ok(nodes);
        };
        for run_dir in run_dirs.flatten() {
            let run_id = run_dir.file_name().to_string_lossy().to_string();
            if !runs.matches(&run_id) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(run_dir.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(text) = std::fs::read_to_string(entry.path()) else {
                    continue;
                };
                if entry.path().extension().is_none_or(|e| e != "json") {
                    continue;
                }
                if let Ok(record) = serde_json::from_str::<NodeRecord>(&text) {
                    // A record whose agent is dead but whose group lives is still listed, so
                    // cleanup kills the leftovers.
                    if is_agent_of(record.pid, &record.run_id)
                        || (group_alive(record.pid) && group_is_agent_leftovers(record.pid))
                    {
                        nodes.push(Self::handle(&record));
                    }
                }
            }
        }
        nodes.sort_by(|a, b| (&a.run_id, a.index).cmp(&(&b.run_id, b.index)));
        Ok(nodes)
    }

    async fn doctor(
        &self,
        _needs: &liveload_core::doctor::Needs,
    ) -> Vec<liveload_core::doctor::Check> {
        self.checks().await
    }

    async fn expected_size(&self) -> Result<Option<NodeSize>> {
        if !self.announce_size {
            return Ok(None);
        }
        let mut system = sysinfo::System::new();
        system.refresh_memory();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let share = self.nodes_per_host as u64;
        Ok(Some(NodeSize {
            memory_bytes: system.available_memory() / share,
            cores: cores / share as f64,
            catalogue: None,
        }))
    }

    fn node_limit(&self) -> Option<u64> {
        Some(self.nodes_per_host as u64)
    }
}
