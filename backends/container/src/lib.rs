//! The container backend: each node is a container of the agent image (`images/agent`) under
//! its own memory and CPU limits, on a Docker-compatible engine on this host — Docker, or
//! podman's API service — reached through the Docker Engine API on a unix socket.
//!
//! One big host becomes several isolated, limited nodes: the kernel holds each container to
//! `--container-memory` and `--container-cpus` through its cgroup, and the agent inside reads
//! those limits (cgroup v1 or v2), so the controller sizes every node from what it really has.
//!
//! What the engine keeps, this backend reads back: each container is named
//! `ll-<run id>-<index>` and labelled with the run id, the index and the TTL's end, so
//! `liveload cleanup` in another process lists a crashed run's containers by label. A container
//! removes itself when its agent exits (the dead-man switch, the TTL, a shutdown): the agent is
//! PID 1's only child under tini, so its exit ends the container, and the engine's auto-remove
//! deletes it.
//!
//! Secrets follow the launch contract: the token and TLS key are uploaded as 0600 files of the
//! agent's user into the created container before it starts (see [`archive`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, LogsOptions, RemoveContainerOptions,
    StartContainerOptions, UploadToContainerOptions,
};
use futures_util::StreamExt as _;
use liveload_core::{
    AgentEndpoint, Backend, BackendError, BackendErrorKind, Billing, Error, LinkPath, NodeHandle,
    NodeSize, NodeSpec, Result, RunFilter,
};
use tokio::time::Instant;

pub mod archive;
#[cfg(feature = "cli")]
pub mod cli;
pub mod engine;
pub mod listing;

pub use engine::Flavor;

/// The label holding a container's run id: what `list` and `cleanup` select by.
pub const LABEL_RUN: &str = "io.liveload.run-id";
/// The label holding a container's node index.
pub const LABEL_INDEX: &str = "io.liveload.node-index";
/// The label holding when the agent's TTL ends (Unix seconds).
pub const LABEL_EXPIRES: &str = "io.liveload.expires-at";
/// The port the agent listens on inside its container (the image's `EXPOSE`).
pub const AGENT_PORT: u16 = 7070;
/// Where the launch files go inside the container: the image's 0700 directory of the
/// `liveload` user.
pub const LAUNCH_DIR: &str = "/var/lib/liveload";
/// The image used when none is given: what `docker build -t liveload-agent` makes.
pub const DEFAULT_IMAGE: &str = "liveload-agent";

/// Agents as containers. Build with [`ContainerBackend::builder`].
#[derive(Debug, Clone)]
pub struct ContainerBackend {
    docker: Docker,
    flavor: Flavor,
    socket: PathBuf,
    limits: NodeLimits,
    image: String,
    network: Option<String>,
    seccomp: Option<PathBuf>,
    labels: HashMap<String, String>,
    max_nodes: u64,
    debug_delay_listen: Duration,
}

/// The limits every node's container runs under.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeLimits {
    /// Memory, bytes (swap is not added: memory + swap is set to the same figure).
    pub memory_bytes: u64,
    /// CPU time, in cores (a CFS quota: 1.5 is 150 ms of CPU every 100 ms).
    pub cpus: f64,
    /// The most processes and threads (Chromium is many of both).
    pub pids: i64,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            memory_bytes: 2 << 30,
            cpus: 2.0,
            pids: 4096,
        }
    }
}

/// Options of a [`ContainerBackend`].
#[derive(Debug, Clone, Default)]
pub struct ContainerBackendBuilder {
    socket: Option<String>,
    limits: NodeLimits,
    image: Option<String>,
    network: Option<String>,
    seccomp: Option<PathBuf>,
    labels: HashMap<String, String>,
    max_nodes: Option<u64>,
    debug_delay_listen: Duration,
}

impl ContainerBackendBuilder {
    /// The engine's socket (a path or `unix://` URL; default: `DOCKER_HOST`, else Docker's or
    /// podman's usual socket).
    pub fn socket(mut self, socket: impl Into<String>) -> Self {
        self.socket = Some(socket.into());
        self
    }

    /// The limits of each node (default 2 GiB, 2 cores, 4096 processes).
    pub fn limits(mut self, limits: NodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The agent image (default [`DEFAULT_IMAGE`]); it must already be on the engine.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// The network containers join (default: the engine's default bridge). `host` is refused:
    /// it would put the agent's port on every interface of this host.
    pub fn network(mut self, network: Option<String>) -> Self {
        self.network = network;
        self
    }

    /// A seccomp profile (JSON) for the containers, for engines whose default profile refuses
    /// the user namespaces Chromium's sandbox needs (Docker's): `images/agent/chromium-seccomp.json`.
    pub fn seccomp_profile(mut self, path: Option<PathBuf>) -> Self {
        self.seccomp = path;
        self
    }

    /// An extra label on every container (tests tag theirs to find them through the engine).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The most nodes one run may hold (default: as many of these limits as this host's memory
    /// and cores hold, at least one).
    pub fn max_nodes(mut self, max: Option<u64>) -> Self {
        self.max_nodes = max;
        self
    }

    /// Test hook: agents wait this long before listening (a slow boot).
    pub fn debug_delay_listen(mut self, delay: Duration) -> Self {
        self.debug_delay_listen = delay;
        self
    }

    /// Check the options, connect to the engine and ask what it is.
    pub async fn build(self) -> Result<ContainerBackend> {
        let limits = self.limits;
        let no_cpu = !limits.cpus.is_finite() || limits.cpus <= 0.0;
        if limits.memory_bytes < 64 << 20 || no_cpu || limits.pids < 64 {
            return Err(Error::InvalidOption {
                option: "--container-memory / --container-cpus / --container-pids".into(),
                message: "each node needs at least 64 MiB, some CPU and 64 processes".into(),
            });
        }
        if self.network.as_deref() == Some("host") {
            return Err(Error::InvalidOption {
                option: "--container-network".into(),
                message: "host networking would put every agent's port on every interface of \
                          this host; use a bridge network (the default)"
                    .into(),
            });
        }
        let socket = engine::find_socket(self.socket.as_deref())?;
        let docker = engine::connect(&socket)?;
        let flavor = engine::flavor(&docker).await?;
        let max_nodes = self
            .max_nodes
            .unwrap_or_else(|| nodes_this_host_holds(&limits));
        Ok(ContainerBackend {
            docker,
            flavor,
            socket,
            limits,
            image: self.image.unwrap_or_else(|| DEFAULT_IMAGE.into()),
            network: self.network,
            seccomp: self.seccomp,
            labels: self.labels,
            max_nodes: max_nodes.max(1),
            debug_delay_listen: self.debug_delay_listen,
        })
    }
}

/// How many nodes of `limits` this host's memory and cores hold.
fn nodes_this_host_holds(limits: &NodeLimits) -> u64 {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let by_memory = system.total_memory() / limits.memory_bytes;
    let by_cpu = (cores / limits.cpus).floor() as u64;
    by_memory.min(by_cpu)
}

fn failed(kind: BackendErrorKind, message: impl Into<String>) -> Error {
    BackendError::new("container", kind, message).into()
}

impl ContainerBackend {
    /// Start building a container backend.
    pub fn builder() -> ContainerBackendBuilder {
        ContainerBackendBuilder::default()
    }

    /// The engine's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Which engine answers.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The engine's client (tests ask it for proof that nothing is left).
    pub fn engine(&self) -> &Docker {
        &self.docker
    }

    /// The container's definition: the image, the launch settings as its environment, the
    /// labels, and the limits.
    fn container_body(&self, spec: &NodeSpec, env: Vec<String>) -> Result<ContainerCreateBody> {
        let mut labels = self.labels.clone();
        labels.insert(LABEL_RUN.into(), spec.run_id.clone());
        labels.insert(LABEL_INDEX.into(), spec.index.to_string());
        let expires = liveload_core::names::unix_now_s().saturating_add(spec.ttl.as_secs());
        labels.insert(LABEL_EXPIRES.into(), expires.to_string());
        let port = format!("{AGENT_PORT}/tcp");
        // Published on 127.0.0.1 only, on a port the engine picks: nothing off this host can
        // dial an agent, and parallel nodes never race for a port.
        let bindings = HashMap::from([(
            port.clone(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }]),
        )]);
        let mut security = vec!["no-new-privileges".to_string()];
        if let Some(profile) = &self.seccomp {
            security.push(self.seccomp_option(profile)?);
        }
        let cmd = (!self.debug_delay_listen.is_zero()).then(|| {
            let ms = self.debug_delay_listen.as_millis().to_string();
            vec!["--debug-delay-listen-ms".to_string(), ms]
        });
        let memory = i64::try_from(self.limits.memory_bytes).unwrap_or(i64::MAX);
        Ok(ContainerCreateBody {
            image: Some(self.image.clone()),
            env: Some(env),
            cmd,
            labels: Some(labels),
            exposed_ports: Some(vec![port]),
            host_config: Some(HostConfig {
                memory: Some(memory),
                memory_swap: Some(memory),
                nano_cpus: Some((self.limits.cpus * 1e9) as i64),
                pids_limit: Some(self.limits.pids),
                // The agent's user holds no capability anyway; the bounding set keeps only
                // SYS_CHROOT, because seccomp profiles (Docker's, podman's) allow `chroot`
                // only to containers that have it, and Chromium's sandbox chroots inside its
                // own user namespace.
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(vec!["SYS_CHROOT".into()]),
                security_opt: Some(security),
                port_bindings: Some(bindings),
                network_mode: self.network.clone(),
                auto_remove: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// podman's API reads `seccomp=` as a path on its host; Docker's as the profile itself
    /// (its CLI inlines the file).
    fn seccomp_option(&self, profile: &Path) -> Result<String> {
        let absolute = std::path::absolute(profile)
            .map_err(|e| Error::io(format!("finding {}", profile.display()), e))?;
        match self.flavor {
            Flavor::Podman => Ok(format!("seccomp={}", absolute.display())),
            Flavor::Docker => {
                let text = std::fs::read_to_string(&absolute)
                    .map_err(|e| Error::io(format!("reading {}", absolute.display()), e))?;
                Ok(format!("seccomp={text}"))
            }
        }
    }

    /// Create the container, removing a leftover of the same name from a create whose answer
    /// was lost (same run and index: it is ours, and its token may not be this one).
    async fn create_container(&self, name: &str, body: ContainerCreateBody) -> Result<()> {
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if engine::status(&e) == Some(409) => {
                self.remove(name).await?;
                self.docker
                    .create_container(Some(options), body)
                    .await
                    .map(|_| ())
                    .map_err(|e| engine::engine_error("creating the container", e))
            }
            Err(e) => Err(engine::engine_error(
                &format!("creating a container of image {}", self.image),
                e,
            )),
        }
    }

    /// Upload the launch files and start the container.
    async fn upload_and_start(
        &self,
        name: &str,
        files: &[liveload_core::launch::LaunchFile],
    ) -> Result<()> {
        let tar = archive::launch_archive(files)
            .map_err(|e| Error::io("packing the launch files".to_string(), e))?;
        let options = UploadToContainerOptions {
            path: LAUNCH_DIR.into(),
            ..Default::default()
        };
        self.docker
            .upload_to_container(name, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(|e| engine::engine_error("uploading the launch files", e))?;
        self.docker
            .start_container(name, None::<StartContainerOptions>)
            .await
            .map_err(|e| engine::engine_error("starting the container", e))
    }

    /// Force-remove a container; already gone (or going) is success.
    async fn remove(&self, name: &str) -> Result<()> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if engine::status(&e) == Some(404) => Ok(()),
            // Removal already under way (the container's own auto-remove): wait for it.
            Err(e) if matches!(engine::status(&e), Some(409) | Some(500)) => {
                let end = Instant::now() + Duration::from_secs(10);
                while Instant::now() < end {
                    if self.state(name).await?.is_none() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(engine::engine_error(&format!("removing {name}"), e))
            }
            Err(e) => Err(engine::engine_error(&format!("removing {name}"), e)),
        }
    }

    /// The container's state and its published agent port; `None` once it is gone.
    async fn state(&self, name: &str) -> Result<Option<(String, Option<u16>)>> {
        let inspected = match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspected) => inspected,
            Err(e) if engine::status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(engine::engine_error(&format!("inspecting {name}"), e)),
        };
        let status = inspected
            .state
            .and_then(|s| s.status)
            .map_or_else(|| "unknown".to_string(), |s| s.to_string());
        let port = inspected
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|ports| ports.get(&format!("{AGENT_PORT}/tcp")).cloned().flatten())
            .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse().ok());
        Ok(Some((status, port)))
    }

    /// Look once at a starting node. The agent's own announcement decides, not an open port:
    /// Docker's port proxy accepts connections before anything listens inside.
    async fn look(&self, name: &str) -> Result<Seen> {
        let Some((status, port)) = self.state(name).await? else {
            return Ok(Seen::Gone(format!(
                "container {name} exited and was removed before its agent listened"
            )));
        };
        let (stdout, stderr) = self.output(name).await;
        if status == "exited" || status == "dead" {
            return Ok(Seen::Gone(format!(
                "container {name} {status} before its agent listened; its log ends with:\n{stderr}"
            )));
        }
        Ok(match (port, stdout.contains(LISTENING)) {
            (Some(port), true) => Seen::Listening(port),
            (port, _) => Seen::Waiting(format!(
                "container {name} {status}, port {}, agent not listening yet",
                port.map_or("not published".into(), |p| p.to_string())
            )),
        })
    }

    /// What the container printed so far: stdout (the agent's one line, its address) and the
    /// last lines of stderr (its log, for a failure message).
    async fn output(&self, name: &str) -> (String, String) {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: "200".into(),
            ..Default::default()
        };
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let mut logs = self.docker.logs(name, Some(options));
        while let Some(Ok(chunk)) = logs.next().await {
            match chunk {
                bollard::container::LogOutput::StdOut { message } => {
                    stdout.push_str(&String::from_utf8_lossy(&message))
                }
                other => stderr.push_str(&other.to_string()),
            }
        }
        let tail: Vec<&str> = stderr.lines().collect();
        (stdout, tail[tail.len().saturating_sub(10)..].join("\n"))
    }
}

/// The agent's announcement that it listens (its only line on stdout).
const LISTENING: &str = "LIVELOAD_AGENT_LISTENING ";

/// What one look at a starting node found.
enum Seen {
    /// The agent announced it listens, and the engine published its port here.
    Listening(u16),
    /// Not yet: what was seen, for the timeout's message.
    Waiting(String),
    /// The container ended (or was removed) first: why, with its log's last lines.
    Gone(String),
}

#[async_trait]
impl Backend for ContainerBackend {
    fn name(&self) -> &'static str {
        "container"
    }

    /// Not `Loopback`, though the controller dials 127.0.0.1: the engine forwards that port
    /// into the container's network namespace over a virtual network (a bridge, or slirp4netns)
    /// that other containers on it share — and a container with `CAP_NET_RAW`, Docker's
    /// default, can spoof its neighbours there. So the link is treated as crossing a network:
    /// core pins TLS to the run's certificate, which costs one handshake per node.
    fn link_path(&self) -> LinkPath {
        LinkPath::Network
    }

    /// Containers on this host cost nothing beyond the host.
    fn billing(&self) -> Billing {
        Billing::Free
    }

    async fn create(&self, spec: &NodeSpec) -> Result<NodeHandle> {
        let name = spec.machine_name();
        // Listen on every address of the container's own network namespace: the engine's
        // forwarding reaches it there, and only 127.0.0.1 of this host is published.
        let settings = spec.agent_settings(format!("0.0.0.0:{AGENT_PORT}"));
        let launch = settings.launch(&spec.agent_secrets(), LAUNCH_DIR);
        let env = launch.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let body = self.container_body(spec, env)?;
        self.create_container(&name, body).await?;
        if let Err(e) = self.upload_and_start(&name, &launch.files).await {
            let _ = self.remove(&name).await; // never leave a container behind
            return Err(e);
        }
        Ok(NodeHandle {
            id: name,
            run_id: spec.run_id.clone(),
            index: spec.index,
            detail: format!(
                "{} MiB, {} cpus, {}",
                self.limits.memory_bytes >> 20,
                self.limits.cpus,
                self.image
            ),
            expires_at_unix_s: Some(
                liveload_core::names::unix_now_s().saturating_add(spec.ttl.as_secs()),
            ),
        })
    }

    async fn wait_ready(&self, node: &NodeHandle, deadline: Instant) -> Result<AgentEndpoint> {
        loop {
            let last = match self.look(&node.id).await? {
                Seen::Listening(port) => {
                    return Ok(AgentEndpoint {
                        address: format!("127.0.0.1:{port}"),
                        tls: None, // a Network link: core pins the run's certificate
                        headers: Vec::new(),
                        proxy: None,
                    });
                }
                Seen::Gone(why) => return Err(failed(BackendErrorKind::NodeFailed, why)),
                Seen::Waiting(what) => what,
            };
            if Instant::now() >= deadline {
                return Err(failed(BackendErrorKind::NotReady, last));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn destroy(&self, node: &NodeHandle) -> Result<()> {
        self.remove(&node.id).await
    }

    async fn list(&self, runs: &RunFilter) -> Result<Vec<NodeHandle>> {
        let selector = match runs {
            RunFilter::Run(id) => format!("{LABEL_RUN}={id}"),
            RunFilter::All => LABEL_RUN.to_string(),
        };
        // Not bollard's list: it refuses podman's states Docker lacks (see `listing`).
        let containers = listing::containers_labelled(&self.socket, &selector).await?;
        let mut nodes: Vec<NodeHandle> = containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let run_id = labels.get(LABEL_RUN)?.clone();
                let name = c.names.first()?.trim_start_matches('/').to_string();
                Some(NodeHandle {
                    id: name,
                    run_id,
                    index: labels.get(LABEL_INDEX)?.parse().ok()?,
                    detail: c.status,
                    expires_at_unix_s: labels.get(LABEL_EXPIRES).and_then(|v| v.parse().ok()),
                })
            })
            .filter(|n| runs.matches(&n.run_id))
            .collect();
        nodes.sort_by(|a, b| (&a.run_id, a.index).cmp(&(&b.run_id, b.index)));
        Ok(nodes)
    }

    async fn expected_size(&self) -> Result<Option<NodeSize>> {
        Ok(Some(NodeSize {
            memory_bytes: self.limits.memory_bytes,
            cores: self.limits.cpus,
            catalogue: None,
        }))
    }

    fn node_limit(&self) -> Option<u64> {
        Some(self.max_nodes)
    }
}
