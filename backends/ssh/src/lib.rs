//! The SSH backend: load from machines you already have, with nothing pre-installed but `sshd`
//! and Chromium.
//!
//! For each node, liveload logs in to one host of the hosts file ([`hosts`]), checks its
//! architecture and Chromium, uploads the agent (once per version: the file is named by its
//! checksum), starts it bound to the host's `127.0.0.1` in its own session, and reaches it through
//! a `direct-tcpip` channel of the SSH connection ([`session`]) — no port opened on the host, the
//! link encrypted by SSH. `destroy` stops the agent and removes the node's directory; if the
//! connection drops instead, the agent's dead-man switch ends it after the grace period.
//! Agents are found again from their pid files ([`remote`]), so `liveload cleanup --backend ssh`
//! works after a crash.
//!
//! One node per host: a host is one machine, sized from the facts its agent measures (there is
//! no catalogue, so `expected_size` is `None` and `liveload plan` asks a probe agent).

#[cfg(feature = "cli")]
pub mod cli;
mod doctor;
pub mod hosts;
pub mod remote;
pub mod session;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use liveload_core::{
    AgentEndpoint, Backend, BackendError, BackendErrorKind, Billing, Error, LinkPath, NodeHandle,
    NodeSize, NodeSpec, Result, RunFilter,
};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use crate::hosts::{Auth, Host};
use crate::session::Connection;
pub use crate::session::HostKeyPolicy;

/// The SSH backend. Build with [`SshBackend::builder`].
pub struct SshBackend {
    hosts: Vec<Host>,
    policy: HostKeyPolicy,
    /// Agent executables by architecture (`uname -m`).
    agents: BTreeMap<String, PathBuf>,
    /// The remote directory as a shell word.
    root: String,
    connect_timeout: Duration,
    /// One connection per host, opened on first use and shared by every command and tunnel.
    connections: Vec<Mutex<Option<Arc<Connection>>>>,
    /// Bounds how many hosts are being connected to / set up at once.
    parallel: Semaphore,
    /// Agent checksums, computed once per file.
    checksums: Mutex<HashMap<PathBuf, String>>,
    /// Each ready node's local tunnel listener.
    tunnels: std::sync::Mutex<HashMap<String, JoinHandle<()>>>,
}

impl std::fmt::Debug for SshBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshBackend")
            .field("hosts", &self.hosts.len())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Options of an [`SshBackend`].
#[derive(Debug, Clone)]
pub struct SshBackendBuilder {
    hosts: Vec<Host>,
    known_hosts: Option<PathBuf>,
    accept_new: bool,
    agents: BTreeMap<String, PathBuf>,
    remote_dir: String,
    connect_timeout: Duration,
    parallel: usize,
}

impl SshBackendBuilder {
    /// The hosts to use (see [`hosts::load`]).
    pub fn hosts(mut self, hosts: Vec<Host>) -> Self {
        self.hosts = hosts;
        self
    }
    /// The `known_hosts` file (default `~/.ssh/known_hosts`).
    pub fn known_hosts(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_hosts = Some(path.into());
        self
    }
    /// Accept and record keys of hosts not in `known_hosts` yet (never a changed key).
    pub fn accept_new_host_keys(mut self, accept: bool) -> Self {
        self.accept_new = accept;
        self
    }
    /// The agent executable for hosts of architecture `arch` (`x86_64`, `aarch64`).
    pub fn agent_binary(mut self, arch: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.agents.insert(arch.into(), path.into());
        self
    }
    /// Where liveload keeps its files on each host (default `~/.liveload`).
    pub fn remote_dir(mut self, dir: impl Into<String>) -> Self {
        self.remote_dir = dir.into();
        self
    }
    /// How long a host may take to answer SSH (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// How many hosts are set up at once (default 32).
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }

    /// Build the backend.
    pub fn build(self) -> Result<SshBackend> {
        if self.hosts.is_empty() {
            return Err(Error::InvalidOption {
                option: "--hosts".into(),
                message: "the SSH backend needs a hosts file with at least one host".into(),
            });
        }
        let known_hosts = match self.known_hosts {
            Some(path) => path,
            None => {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".ssh/known_hosts")
            }
        };
        Ok(SshBackend {
            connections: self.hosts.iter().map(|_| Mutex::new(None)).collect(),
            hosts: self.hosts,
            policy: HostKeyPolicy {
                known_hosts,
                accept_new: self.accept_new,
            },
            agents: self.agents,
            root: remote::dir_word(&self.remote_dir),
            connect_timeout: self.connect_timeout,
            parallel: Semaphore::new(self.parallel),
            checksums: Mutex::default(),
            tunnels: std::sync::Mutex::default(),
        })
    }
}

/// Parse a node id `<host index>/<run>/<node index>`.
fn parse_id(id: &str) -> Option<(usize, &str, u32)> {
    let (host, rest) = id.split_once('/')?;
    let (run, index) = rest.rsplit_once('/')?;
    Some((host.parse().ok()?, run, index.parse().ok()?))
}

impl SshBackend {
    /// Start building an SSH backend.
    pub fn builder() -> SshBackendBuilder {
        SshBackendBuilder {
            hosts: Vec::new(),
            known_hosts: None,
            accept_new: false,
            agents: BTreeMap::new(),
            remote_dir: "~/.liveload".into(),
            connect_timeout: Duration::from_secs(10),
            parallel: 32,
        }
    }

    /// The hosts this backend uses.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The connection to host `i`, opened (or reopened) on demand.
    async fn connection(&self, i: usize) -> Result<Arc<Connection>> {
        let mut slot = self.connections[i].lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        let _permit = self.parallel.acquire().await.expect("never closed");
        let connection =
            session::connect(&self.hosts[i], &self.policy, self.connect_timeout).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Close every SSH connection (tunnels too). Agents left running end by their dead-man
    /// switch; `destroy` reconnects when it is called after this.
    pub async fn disconnect(&self) {
        for task in self.tunnels.lock().expect("not poisoned").drain() {
            task.1.abort();
        }
        for slot in &self.connections {
            if let Some(connection) = slot.lock().await.take() {
                connection.close().await;
            }
        }
    }

    async fn checksum(&self, path: &PathBuf) -> Result<String> {
        let mut cache = self.checksums.lock().await;
        if let Some(sum) = cache.get(path) {
            return Ok(sum.clone());
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| Error::InvalidOption {
                option: "--ssh-agent-bin".into(),
                message: format!("cannot read the agent {}: {e}", path.display()),
            })?;
        let sum: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        cache.insert(path.clone(), sum.clone());
        Ok(sum)
    }

    fn fail(host: &Host, kind: BackendErrorKind, message: String, hint: Option<String>) -> Error {
        Error::from(
            BackendError::new(
                "ssh",
                kind,
                format!("host {} ({}): {message}", host.name, host.target()),
            )
            .maybe_hint(hint),
        )
    }

    /// Check the host, upload the agent if this version is not there yet, and start it.
    async fn set_up(&self, i: usize, spec: &NodeSpec) -> Result<u32> {
        let host = &self.hosts[i];
        let connection = self.connection(i).await?;
        let seen = connection.exec(&remote::inspect(&self.root), b"").await?;
        let mut lines = seen.stdout.lines();
        let arch = lines.next().unwrap_or_default().trim().to_string();
        let chromium = lines.next().map(str::trim).filter(|p| !p.is_empty());
        let uploaded: Vec<&str> = lines.map(str::trim).collect();
        if chromium.is_none() && !spec.no_browser {
            return Err(Self::fail(
                host,
                BackendErrorKind::HostUnfit,
                "no Chromium on the PATH (looked for chromium-headless-shell, chromium, chromium-browser, google-chrome)".into(),
                Some("install it there: `sudo apt-get install chromium-headless-shell` on Debian".into()),
            ));
        }
        let agent = self.agents.get(&arch).ok_or_else(|| {
            Self::fail(
                host,
                BackendErrorKind::HostUnfit,
                format!("its architecture is {arch:?} and no agent binary was given for it"),
                Some(format!(
                    "build liveload-agent for {arch} and pass --ssh-agent-bin {arch}=PATH"
                )),
            )
        })?;
        let sum = self.checksum(agent).await?;
        // Named by its checksum: an agent of this exact version is there or it is not.
        let bin = format!("liveload-agent-{sum}");
        if !uploaded.contains(&bin.as_str()) {
            let bytes = tokio::fs::read(agent)
                .await
                .map_err(|e| Error::InvalidOption {
                    option: "--ssh-agent-bin".into(),
                    message: format!("cannot read the agent {}: {e}", agent.display()),
                })?;
            let put = connection
                .exec(&remote::upload(&self.root, &bin), &bytes)
                .await?;
            if put.status != Some(0) {
                return Err(Self::fail(
                    host,
                    BackendErrorKind::Other,
                    format!("uploading the agent failed: {}", put.stderr.trim()),
                    Some("check free space and permissions of the remote directory (--ssh-remote-dir)".into()),
                ));
            }
            tracing::info!(host = %host.name, bytes = bytes.len(), "uploaded the agent");
        }
        let env = self.setup_script(spec, host);
        let started = connection
            .exec(
                &remote::start(&self.root, &bin, &spec.run_id, spec.index),
                env.as_bytes(),
            )
            .await?;
        if started.status != Some(0) {
            return Err(Self::fail(
                host,
                BackendErrorKind::NodeFailed,
                format!("starting the agent failed: {}", started.stderr.trim()),
                None,
            ));
        }
        Ok(i as u32)
    }

    /// What the start script sources before it starts the agent: the launch contract's files
    /// written with `printf` (a shell builtin: the token is never on a command line) under
    /// umask 077 into the node's directory, and its settings as `KEY='value'` lines. The
    /// agent runs in that directory, so the files' paths are relative to it.
    fn setup_script(&self, spec: &NodeSpec, host: &Host) -> String {
        // The host's loopback only: the controller comes through the SSH tunnel.
        let mut settings = spec.agent_settings("127.0.0.1:0");
        settings.max_users = host.max_users;
        let launch = settings.launch(&spec.agent_secrets(), ".");
        let expires = liveload_core::names::unix_now_s().saturating_add(spec.ttl.as_secs());
        // When the node's lifetime ends, for `liveload cleanup --expired`.
        let mut script = format!("printf '%s' {expires} > expires\n");
        for file in &launch.files {
            script.push_str(&format!(
                "printf '%s' {} > {}\n",
                remote::quote(&file.contents),
                remote::quote(&file.name)
            ));
        }
        for (key, value) in &launch.env {
            script.push_str(&format!("{key}={}\n", remote::quote(value)));
        }
        script
    }
}

#[async_trait]
impl Backend for SshBackend {
    fn name(&self) -> &'static str {
        "ssh"
    }

    /// The agent listens on the host's loopback; the controller reaches it through a
    /// `direct-tcpip` channel of the SSH connection, which SSH encrypts.
    fn link_path(&self) -> LinkPath {
        LinkPath::Tunnel
    }

    /// The user's own hosts: nothing liveload creates is billed.
    fn billing(&self) -> Billing {
        Billing::Free
    }

    async fn create(&self, spec: &NodeSpec) -> Result<NodeHandle> {
        let i = spec.index as usize;
        let Some(host) = self.hosts.get(i) else {
            return Err(Error::from(
                BackendError::new(
                    "ssh",
                    BackendErrorKind::Quota,
                    format!(
                        "node {} needs a host, and the hosts file has {}",
                        spec.index + 1,
                        self.hosts.len()
                    ),
                )
                .hint("add hosts to the hosts file, or lower --users / raise per-host capacity"),
            ));
        };
        let handle = NodeHandle {
            id: format!("{i}/{}/{}", spec.run_id, spec.index),
            run_id: spec.run_id.clone(),
            index: spec.index,
            detail: host.name.clone(),
            expires_at_unix_s: None,
        };
        if let Err(e) = self.set_up(i, spec).await {
            // Leave nothing half-started on the host.
            let _ = self.destroy(&handle).await;
            return Err(e);
        }
        Ok(handle)
    }

    async fn wait_ready(&self, node: &NodeHandle, deadline: Instant) -> Result<AgentEndpoint> {
        let (i, run, index) = parse_id(&node.id).ok_or_else(|| bad_id(&node.id))?;
        let host = &self.hosts[i];
        let connection = self.connection(i).await?;
        let tenths = deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .div_ceil(100) as u64;
        let ready = connection
            .exec(&remote::wait_ready(&self.root, run, index, tenths), b"")
            .await?;
        match ready.status {
            Some(0) => {}
            Some(4) => {
                return Err(Error::from(BackendError::new(
                    "ssh",
                    BackendErrorKind::NotReady,
                    format!(
                        "the agent of node {} has not written its ready file",
                        node.id
                    ),
                )));
            }
            _ => {
                return Err(Self::fail(
                    host,
                    BackendErrorKind::NodeFailed,
                    format!("the agent exited before listening: {}", ready.stderr.trim()),
                    None,
                ));
            }
        }
        let announced: serde_json::Value =
            serde_json::from_str(ready.stdout.trim()).map_err(|e| {
                Self::fail(
                    host,
                    BackendErrorKind::NodeFailed,
                    format!("the agent's ready file is unreadable: {e}"),
                    None,
                )
            })?;
        let port = announced["address"]
            .as_str()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .ok_or_else(|| {
                Self::fail(
                    host,
                    BackendErrorKind::NodeFailed,
                    format!("the agent announced no port: {announced}"),
                    None,
                )
            })?;
        let (address, tunnel) = connection.forward(port).await.map_err(|e| Error::Io {
            context: "opening the local end of the SSH tunnel".into(),
            source: e,
        })?;
        if let Some(old) = self
            .tunnels
            .lock()
            .expect("not poisoned")
            .insert(node.id.clone(), tunnel)
        {
            old.abort();
        }
        Ok(AgentEndpoint {
            address,
            tls: None,
            headers: Vec::new(),
            proxy: None,
        })
    }

    async fn destroy(&self, node: &NodeHandle) -> Result<()> {
        let (i, run, index) = parse_id(&node.id).ok_or_else(|| bad_id(&node.id))?;
        if let Some(tunnel) = self.tunnels.lock().expect("not poisoned").remove(&node.id) {
            tunnel.abort();
        }
        let connection = self.connection(i).await?;
        connection
            .exec(&remote::stop(&self.root, run, index), b"")
            .await?;
        Ok(())
    }

    async fn list(&self, runs: &RunFilter) -> Result<Vec<NodeHandle>> {
        let listed = futures_util::future::join_all((0..self.hosts.len()).map(|i| async move {
            let connection = self.connection(i).await?;
            let out = connection.exec(&remote::list(&self.root), b"").await?;
            Ok::<_, Error>((i, out.stdout))
        }))
        .await;
        // Each host on its own: one unreachable host must not hide every other host's nodes
        // from teardown or cleanup. Only when no host answers is listing an error.
        let mut nodes = Vec::new();
        let mut failures = Vec::new();
        for result in listed {
            let (i, stdout) = match result {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::warn!(error = %e, "listing a host's nodes failed; going on with the others");
                    failures.push(e);
                    continue;
                }
            };
            for line in stdout.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (run, index, pid, alive, expires) = match fields[..] {
                    [run, index, pid, alive, expires] => (run, index, pid, alive, expires),
                    [run, index, pid, alive] => (run, index, pid, alive, "-"),
                    _ => continue,
                };
                let Ok(index) = index.parse::<u32>() else {
                    continue;
                };
                // Node `i` of a run always lives on host `i`; two entries of the hosts file
                // may be one machine (another port or user) and see each other's files.
                if index as usize != i || !runs.matches(run) {
                    continue;
                }
                nodes.push(NodeHandle {
                    id: format!("{i}/{run}/{index}"),
                    run_id: run.to_string(),
                    index,
                    detail: format!(
                        "{} pid {pid}{}",
                        self.hosts[i].name,
                        if alive == "1" {
                            ""
                        } else {
                            " (exited; files left)"
                        }
                    ),
                    expires_at_unix_s: expires.parse().ok(),
                });
            }
        }
        if !failures.is_empty() && failures.len() == self.hosts.len() {
            return Err(failures.remove(0));
        }
        Ok(nodes)
    }

    async fn doctor(
        &self,
        needs: &liveload_core::doctor::Needs,
    ) -> Vec<liveload_core::doctor::Check> {
        self.checks(needs).await
    }

    async fn expected_size(&self) -> Result<Option<NodeSize>> {
        // No catalogue: each host's agent measures it.
        Ok(None)
    }

    fn node_limit(&self) -> Option<u64> {
        Some(self.hosts.len() as u64)
    }
}

fn bad_id(id: &str) -> Error {
    Error::from(BackendError::new(
        "ssh",
        BackendErrorKind::Other,
        format!("'{id}' is not an SSH node id (host/run/index)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_round_trip() {
        assert_eq!(parse_id("3/run-a-b/7"), Some((3, "run-a-b", 7)));
        assert_eq!(parse_id("x/run/7"), None);
        assert_eq!(parse_id("1/run"), None);
    }
}
