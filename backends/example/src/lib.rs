//! A minimal backend, the one `docs/adding-a-backend.md` walks through: each node is a
//! `liveload-agent` process on this machine, recorded in a directory the way a cloud provider
//! records machines in its API.
//!
//! It declares no policy, on purpose: it inherits the trait's safe defaults, so core treats
//! its links as crossing a network (TLS, pinned to the run's certificate) and its nodes as
//! billed (a run needs a cost confirmation). A real backend for local processes would declare
//! [`liveload_core::LinkPath::Loopback`] and [`liveload_core::Billing::Free`], as the local
//! backend does.
//!
//! What it shows, in about 150 lines: `create` starts the agent through core's launch contract
//! (settings as environment variables, secrets as files), `wait_ready` reads the address the
//! agent announces, `destroy` is idempotent, `list` answers from the records so another
//! process can clean up, and the conformance suite proves all of it
//! (`tests/conformance.rs`).

#[cfg(feature = "cli")]
pub mod cli;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use liveload_core::{
    AgentEndpoint, Backend, BackendError, BackendErrorKind, NodeHandle, NodeSize, NodeSpec, Result,
    RunFilter,
};
use tokio::io::AsyncBufReadExt as _;
use tokio::time::Instant;

/// Agents as processes, records under `root/<run id>/<index>/`.
#[derive(Debug, Clone)]
pub struct ExampleBackend {
    /// Where node records live (the "provider's API").
    pub root: PathBuf,
    /// The agent executable.
    pub agent: PathBuf,
    /// Test hook: agents wait this long before listening.
    pub delay_listen: Duration,
}

fn failed(message: String) -> liveload_core::Error {
    BackendError::new("example", BackendErrorKind::NodeFailed, message).into()
}

impl ExampleBackend {
    fn node_dir(&self, run_id: &str, index: u32) -> PathBuf {
        self.root.join(run_id).join(index.to_string())
    }

    /// The pid recorded for a node, if its agent still runs (the run id in its environment
    /// guards against a recycled pid).
    fn live_pid(&self, run_id: &str, index: u32) -> Option<i32> {
        let text = std::fs::read_to_string(self.node_dir(run_id, index).join("pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let tag = format!("{}={run_id}", liveload_core::launch::var::RUN_ID);
        environ
            .split(|b| *b == 0)
            .any(|entry| entry == tag.as_bytes())
            .then_some(pid)
    }
}

#[async_trait]
impl Backend for ExampleBackend {
    fn name(&self) -> &'static str {
        "example"
    }

    async fn create(&self, spec: &NodeSpec) -> Result<NodeHandle> {
        let dir = self.node_dir(&spec.run_id, spec.index);
        let _ = std::fs::remove_dir_all(&dir);
        let launch = spec
            .agent_settings("127.0.0.1:0")
            .launch(&spec.agent_secrets(), &dir.display().to_string());
        liveload_core::backend::write_launch_files(&dir, &launch.files)
            .map_err(|e| failed(format!("writing {}: {e}", dir.display())))?;
        let mut child = tokio::process::Command::new(&self.agent)
            .env_clear()
            // PATH only, for finding Chromium: nothing of the controller's environment (cloud
            // credentials, SSH agent) reaches an agent.
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(launch.env.iter().map(|(k, v)| (*k, v)))
            .arg("--debug-delay-listen-ms")
            .arg(self.delay_listen.as_millis().to_string())
            .process_group(0) // its own group: destroy ends Chromium with it
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed(format!("starting {}: {e}", self.agent.display())))?;
        let pid = child.id().unwrap_or_default();
        std::fs::write(dir.join("pid"), pid.to_string())
            .map_err(|e| failed(format!("recording node {}: {e}", spec.index)))?;
        // The agent prints `LIVELOAD_AGENT_LISTENING <address>` once; keep it for wait_ready.
        let stdout = child.stdout.take().expect("piped");
        let announced = dir.join("address");
        tokio::spawn(async move {
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(stdout);
            if reader.read_line(&mut line).await.is_ok()
                && let Some(address) = line.trim().strip_prefix("LIVELOAD_AGENT_LISTENING ")
            {
                let _ = std::fs::write(announced, address);
            }
            let _ = child.wait().await; // reap it
        });
        // `list` knows the agent by the run id in its environment, which the process has only
        // once it has exec'd (between fork and exec it still carries this process's): return
        // when a `list` would find it, so a create is never followed by a list that misses it.
        for _ in 0..200 {
            if self.live_pid(&spec.run_id, spec.index).is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(NodeHandle {
            id: format!("example-{}-{}", spec.run_id, spec.index),
            run_id: spec.run_id.clone(),
            index: spec.index,
            detail: format!("pid {pid}"),
            expires_at_unix_s: None,
        })
    }

    async fn wait_ready(&self, node: &NodeHandle, deadline: Instant) -> Result<AgentEndpoint> {
        let file = self.node_dir(&node.run_id, node.index).join("address");
        while Instant::now() < deadline {
            if let Ok(address) = std::fs::read_to_string(&file) {
                return Ok(AgentEndpoint {
                    address,
                    tls: None, // core pins the run's certificate: this is a "network" link
                    headers: Vec::new(),
                    proxy: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(BackendError::new(
            "example",
            BackendErrorKind::NotReady,
            "no address announced",
        )
        .into())
    }

    async fn destroy(&self, node: &NodeHandle) -> Result<()> {
        if let Some(pid) = self.live_pid(&node.run_id, node.index)
            && let Some(group) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = std::fs::remove_dir_all(self.node_dir(&node.run_id, node.index));
        let _ = std::fs::remove_dir(self.root.join(&node.run_id));
        Ok(())
    }

    async fn list(&self, runs: &RunFilter) -> Result<Vec<NodeHandle>> {
        let mut nodes = Vec::new();
        for run in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let run_id = run.file_name().to_string_lossy().into_owned();
            if !runs.matches(&run_id) {
                continue;
            }
            for node in std::fs::read_dir(run.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let Ok(index) = node.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if let Some(pid) = self.live_pid(&run_id, index) {
                    nodes.push(NodeHandle {
                        id: format!("example-{run_id}-{index}"),
                        run_id: run_id.clone(),
                        index,
                        detail: format!("pid {pid}"),
                        expires_at_unix_s: None,
                    });
                }
            }
        }
        Ok(nodes)
    }

    async fn expected_size(&self) -> Result<Option<NodeSize>> {
        Ok(None) // measured on a probe node, like SSH hosts
    }
}
