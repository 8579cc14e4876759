//! The Fly.io backend: agent machines through the Machines REST API.
//!
//! Each node is a Fly Machine running the agent image, named `ll-<run id>-<index>` (so a
//! retried create never makes two), tagged in its metadata with the run id, node index and
//! expiry, `auto_destroy` with restart policy `no` (an agent that exits takes its machine with
//! it: the dead-man switch and TTL stop machines whose controller vanished), and configured
//! through core's launch contract: settings as `LIVELOAD_AGENT_*` environment variables, the
//! run token and TLS material as files Fly writes into the machine ([`LAUNCH_DIR`]) and the
//! agent deletes once read.
//!
//! Reaching agents ([`Reach`]), two ways:
//! - **public** (the default, works from a laptop): every machine exposes the agent port as a
//!   service on the app's public address, HTTPS on 443. Fly's edge terminates TLS with the
//!   app's certificate (`APP.fly.dev`, from a public CA, which the controller verifies) and
//!   routes each WebSocket to one machine by the `fly-force-instance-id` header. The hop from
//!   the edge to the machine runs inside Fly's network; the run token authenticates the link.
//! - **private**: the controller dials each machine's `private_ip` on the agent port over TLS
//!   pinned to the run's certificate, end to end — it must run inside the organisation's private
//!   network (a Fly machine, or `fly wireguard` from a laptop).

pub mod api;
#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
mod doctor;
pub mod guest;
pub mod registry;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use liveload_core::{
    AgentEndpoint, Backend, BackendError, BackendErrorKind, Error, NodeHandle, NodeSize, NodeSpec,
    ProxyTls, Result, RunFilter, Secret,
};
use tokio::time::Instant;

use base64::Engine as _;
use liveload_core::launch::var;

use crate::api::{
    CreateMachineRequest, Guest, Machine, MachineConfig, MachineFile, MachinePort, MachineService,
    Restart, UpdateMachineRequest,
};

/// Where the agent's launch files go inside a machine: a directory of the image owned by the
/// agent's user, mode 0700 (`images/agent/Dockerfile`).
pub const LAUNCH_DIR: &str = "/var/lib/liveload";
pub use crate::client::{FlyClient, Limits};

/// Metadata key of the run id.
pub const META_RUN: &str = "liveload_run_id";
/// Metadata key of the node index.
pub const META_NODE: &str = "liveload_node";
/// Metadata key of the machine's expiry (Unix seconds).
pub const META_EXPIRES: &str = "liveload_expires_at";
/// Metadata key of the warm pool a machine belongs to.
pub const META_POOL: &str = "liveload_pool";

/// How the controller reaches agent machines (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Through Fly's public edge with `fly-force-instance-id`.
    Public(PublicEdge),
    /// Each machine's private IP, TLS pinned to the run's certificate.
    Private,
}

impl Default for Reach {
    fn default() -> Self {
        Reach::Public(PublicEdge::default())
    }
}

/// Where Fly's edge is, for [`Reach::Public`]. Every field defaults from the app's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicEdge {
    /// `host:port` to dial (default `APP.fly.dev:443`).
    pub address: Option<String>,
    /// The name the edge's certificate carries (default `APP.fly.dev`).
    pub server_name: Option<String>,
    /// Root certificates (PEM) to trust on top of the system's (a test edge's CA).
    pub extra_roots_pem: Vec<String>,
}

/// The public port Fly's edge serves agents on.
pub const PUBLIC_PORT: u16 = 443;

/// The resolved public edge of one app.
#[derive(Debug, Clone)]
struct Edge {
    address: String,
    tls: ProxyTls,
}

/// The Fly backend. Build with [`FlyBackend::builder`].
#[derive(Debug)]
pub struct FlyBackend {
    client: FlyClient,
    image: Option<String>,
    regions: Vec<String>,
    guest: Guest,
    agent_port: u16,
    env: BTreeMap<String, String>,
    pool: Option<String>,
    /// `Some` in public mode.
    edge: Option<Edge>,
    /// Pool machines this process has taken for a run and not given back.
    claimed: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Stopped pool machines listed once and not handed out yet: listing is rate-limited per
    /// app (1/s), so listing for every node would make a pool as slow as creating.
    free: tokio::sync::Mutex<Vec<Machine>>,
}

/// Options of a [`FlyBackend`].
#[derive(Debug, Clone)]
pub struct FlyBackendBuilder {
    base_url: String,
    app: Option<String>,
    token: Option<Secret>,
    image: Option<String>,
    regions: Vec<String>,
    guest: Guest,
    agent_port: u16,
    env: BTreeMap<String, String>,
    limits: Limits,
    pool: Option<String>,
    reach: Reach,
}

impl Default for FlyBackendBuilder {
    fn default() -> Self {
        FlyBackendBuilder {
            base_url: "https://api.machines.dev/v1".into(),
            app: None,
            token: None,
            image: None,
            regions: Vec::new(),
            guest: guest::preset_named("performance-2x")
                .expect("a preset")
                .guest,
            agent_port: 7070,
            env: BTreeMap::new(),
            limits: Limits::default(),
            pool: None,
            reach: Reach::default(),
        }
    }
}

impl FlyBackendBuilder {
    /// The Machines API base URL (default `https://api.machines.dev/v1`).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }
    /// The Fly app the machines belong to.
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.app = Some(app.into());
        self
    }
    /// The API token (never logged).
    pub fn token(mut self, token: Secret) -> Self {
        self.token = Some(token);
        self
    }
    /// The agent image (`registry.fly.io/APP:TAG`); needed to create machines, not to list or
    /// destroy them.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }
    /// Regions to spread nodes over, round-robin (default: Fly picks).
    pub fn regions(mut self, regions: Vec<String>) -> Self {
        self.regions = regions;
        self
    }
    /// Machine size.
    pub fn guest(mut self, guest: Guest) -> Self {
        self.guest = guest;
        self
    }
    /// The port agents listen on inside the machine (default 7070).
    pub fn agent_port(mut self, port: u16) -> Self {
        self.agent_port = port;
        self
    }
    /// Extra environment variables for the agents.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
    /// Client-side rate limits (default: Fly's documented limits).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Take nodes from this warm pool (stopped machines made by [`FlyBackend::create_pool`])
    /// instead of creating machines; at the end they are stopped, not destroyed.
    pub fn pool(mut self, pool: impl Into<String>) -> Self {
        self.pool = Some(pool.into());
        self
    }

    /// How the controller reaches agents (default: public, through Fly's edge).
    pub fn reach(mut self, reach: Reach) -> Self {
        self.reach = reach;
        self
    }

    /// Build the backend.
    pub fn build(self) -> Result<FlyBackend> {
        let app = self.app.ok_or_else(|| Error::InvalidOption {
            option: "--fly-app".into(),
            message:
                "no Fly app: pass --fly-app APP (or set FLY_APP); create one with `fly apps create`"
                    .into(),
        })?;
        // No token is no error yet: a plan needs none. Every API call says it is missing.
        let token = self.token;
        let edge = match self.reach {
            Reach::Private => None,
            Reach::Public(edge) => {
                let server_name = edge.server_name.unwrap_or_else(|| format!("{app}.fly.dev"));
                Some(Edge {
                    address: edge
                        .address
                        .unwrap_or_else(|| format!("{server_name}:{PUBLIC_PORT}")),
                    tls: ProxyTls {
                        server_name,
                        extra_roots_pem: edge.extra_roots_pem,
                    },
                })
            }
        };
        Ok(FlyBackend {
            client: FlyClient::new(&self.base_url, &app, token, self.limits)?,
            image: self.image,
            regions: self.regions,
            guest: self.guest,
            agent_port: self.agent_port,
            env: self.env,
            pool: self.pool,
            edge,
            claimed: std::sync::Mutex::default(),
            free: tokio::sync::Mutex::default(),
        })
    }
}

impl FlyBackend {
    /// Start building a Fly backend.
    pub fn builder() -> FlyBackendBuilder {
        FlyBackendBuilder::default()
    }

    /// In public mode, the edge's `host:port` and the name its certificate must carry.
    pub fn public_edge(&self) -> Option<(&str, &str)> {
        self.edge
            .as_ref()
            .map(|edge| (edge.address.as_str(), edge.tls.server_name.as_str()))
    }

    /// The API client.
    pub fn client(&self) -> &FlyClient {
        &self.client
    }

    fn handle(machine: &Machine) -> Option<NodeHandle> {
        Some(NodeHandle {
            id: machine.id.clone(),
            run_id: machine.meta(META_RUN)?.to_string(),
            index: machine.meta(META_NODE)?.parse().ok()?,
            detail: format!("{} {} {}", machine.name, machine.region, machine.state),
            expires_at_unix_s: machine.meta(META_EXPIRES).and_then(|e| e.parse().ok()),
        })
    }

    /// A pool machine's configuration at rest: the image and size, no run, no token.
    fn pool_config(&self, pool: &str) -> MachineConfig {
        let mut env = self.env.clone();
        env.insert(var::LISTEN.into(), format!("[::]:{}", self.agent_port));
        env.insert(var::NO_SANDBOX.into(), "true".into());
        MachineConfig {
            image: self.image.clone().unwrap_or_default(),
            env,
            files: Vec::new(),
            guest: Some(self.guest),
            metadata: [(META_POOL.to_string(), pool.to_string())]
                .into_iter()
                .collect(),
            // A pool machine survives its agent: it stops, and the next run starts it again.
            auto_destroy: false,
            restart: Some(Restart {
                policy: "no".into(),
            }),
            services: Vec::new(),
        }
    }

    /// Create `nodes` stopped machines in warm pool `pool` (once; creating is rate-limited at
    /// about one a second per app, starting is not).
    pub async fn create_pool(&self, pool: &str, nodes: u32) -> Result<Vec<Machine>> {
        let existing = self.pool_machines(pool).await?.len() as u32;
        let requests: Vec<CreateMachineRequest> = (existing..existing + nodes)
            .map(|i| CreateMachineRequest {
                name: format!("ll-pool-{pool}-{i}"),
                region: (!self.regions.is_empty())
                    .then(|| self.regions[i as usize % self.regions.len()].clone()),
                config: self.pool_config(pool),
                skip_launch: Some(true),
            })
            .collect();
        let created =
            futures_util::future::join_all(requests.iter().map(|r| self.client.create(r))).await;
        created.into_iter().collect()
    }

    /// Every machine of warm pool `pool`.
    pub async fn pool_machines(&self, pool: &str) -> Result<Vec<Machine>> {
        self.client
            .list(&[(META_POOL.to_string(), pool.to_string())])
            .await
    }

    /// Destroy every machine of warm pool `pool`; returns how many.
    pub async fn destroy_pool(&self, pool: &str) -> Result<usize> {
        let machines = self.pool_machines(pool).await?;
        for result in
            futures_util::future::join_all(machines.iter().map(|m| self.client.destroy(&m.id)))
                .await
        {
            result?;
        }
        Ok(machines.len())
    }

    /// Take a stopped machine of the pool and start it with the run's configuration.
    async fn start_from_pool(&self, pool: &str, spec: &NodeSpec) -> Result<Machine> {
        let machine = {
            let mut free = self.free.lock().await;
            if free.is_empty() {
                let claimed = self.claimed.lock().expect("not poisoned").clone();
                *free = self
                    .pool_machines(pool)
                    .await?
                    .into_iter()
                    .filter(|m| m.state == "stopped" && !claimed.contains(&m.id))
                    .collect();
            }
            let machine = free.pop().ok_or_else(|| Error::from(BackendError::new("fly", BackendErrorKind::Quota, format!("warm pool '{pool}' has no stopped machine left")).hint(format!(
                    "grow it with `liveload fly pool create --fly-pool {pool} --nodes N`, or run without --fly-pool"
                ))))?;
            self.claimed
                .lock()
                .expect("not poisoned")
                .insert(machine.id.clone());
            machine
        };
        let mut config = self.create_request(spec).config;
        config.auto_destroy = false;
        config.metadata.insert(META_POOL.into(), pool.into());
        let update = UpdateMachineRequest {
            config,
            skip_launch: None,
        };
        match self.client.update(&machine.id, &update).await {
            Ok(Some(started)) => Ok(started),
            Ok(None) | Err(_) => {
                self.claimed
                    .lock()
                    .expect("not poisoned")
                    .remove(&machine.id);
                Err(Error::from(BackendError::new(
                    "fly",
                    BackendErrorKind::NodeFailed,
                    format!(
                        "pool machine {} could not be started for the run",
                        machine.id
                    ),
                )))
            }
        }
    }

    /// The create request for one node.
    pub fn create_request(&self, spec: &NodeSpec) -> CreateMachineRequest {
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_add(spec.ttl.as_secs());
        let mut settings = spec.agent_settings(format!("[::]:{}", self.agent_port));
        settings.no_sandbox = true;
        // In public mode Fly's edge terminates TLS and speaks plain HTTP to the machine, so
        // the agent must not expect TLS; in private mode TLS runs end to end, pinned.
        let mut secrets = spec.agent_secrets();
        if self.edge.is_some() {
            secrets.tls = None;
        }
        let launch = settings.launch(&secrets, LAUNCH_DIR);
        let mut env = self.env.clone();
        env.extend(launch.env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        // Fly writes the files as root before the agent starts. The image's launch directory
        // belongs to the agent's user with mode 0700, so the files can be readable (0644) by
        // that user without being readable by anyone else, and the agent deletes them once
        // read. They remain in the machine's config, readable through Fly's API by holders of
        // an org token: see backends/fly/README.md.
        let files = launch
            .files
            .iter()
            .map(|f| MachineFile {
                guest_path: format!("{LAUNCH_DIR}/{}", f.name),
                raw_value: base64::engine::general_purpose::STANDARD.encode(&f.contents),
                mode: Some(0o644),
            })
            .collect();
        let metadata = [
            (META_RUN.to_string(), spec.run_id.clone()),
            (META_NODE.to_string(), spec.index.to_string()),
            (META_EXPIRES.to_string(), expires.to_string()),
        ]
        .into_iter()
        .collect();
        CreateMachineRequest {
            name: spec.machine_name(),
            region: (!self.regions.is_empty())
                .then(|| self.regions[spec.index as usize % self.regions.len()].clone()),
            config: MachineConfig {
                image: self.image.clone().unwrap_or_default(),
                env,
                guest: Some(self.guest),
                metadata,
                auto_destroy: true,
                restart: Some(Restart {
                    policy: "no".into(),
                }),
                services: self.services(),
                files,
            },
            skip_launch: None,
        }
    }

    /// Public mode: the agent port behind Fly's edge, HTTPS on 443, routed by header.
    fn services(&self) -> Vec<MachineService> {
        if self.edge.is_none() {
            return Vec::new();
        }
        vec![MachineService {
            protocol: "tcp".into(),
            internal_port: self.agent_port,
            ports: vec![MachinePort {
                port: PUBLIC_PORT,
                handlers: vec!["tls".into(), "http".into()],
            }],
            autostart: Some(false),
            autostop: Some("off".into()),
        }]
    }

    /// Public mode: wait until the agent answers through Fly's edge. The edge accepts
    /// connections before the agent listens (and answers 502 then), so only a completed
    /// WebSocket upgrade counts.
    async fn wait_for_edge(
        &self,
        edge: &Edge,
        node: &NodeHandle,
        deadline: Instant,
    ) -> Result<AgentEndpoint> {
        let endpoint = AgentEndpoint {
            address: edge.address.clone(),
            tls: None,
            headers: vec![("fly-force-instance-id".into(), node.id.clone())],
            proxy: Some(edge.tls.clone()),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let last = match tokio::time::timeout(
                left.min(Duration::from_secs(5)),
                liveload_core::agent_client::probe(&endpoint),
            )
            .await
            {
                Ok(Ok(())) => return Ok(endpoint),
                Ok(Err(e)) => e,
                Err(_) => "no answer within 5 s".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(BackendError::new(
                    "fly",
                    BackendErrorKind::NotReady,
                    format!("the agent never answered through Fly's edge ({last})"),
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[async_trait]
impl Backend for FlyBackend {
    fn name(&self) -> &'static str {
        "fly"
    }

    async fn create(&self, spec: &NodeSpec) -> Result<NodeHandle> {
        if self.image.is_none() {
            return Err(Error::from(
                BackendError::new(
                    "fly",
                    BackendErrorKind::BadImage,
                    "the agent image is missing",
                )
                .hint("pass --fly-image registry.fly.io/APP:TAG (see images/agent)"),
            ));
        }
        let machine = match &self.pool {
            Some(pool) => self.start_from_pool(pool, spec).await?,
            None => self.client.create(&self.create_request(spec)).await?,
        };
        Ok(NodeHandle {
            id: machine.id.clone(),
            run_id: spec.run_id.clone(),
            index: spec.index,
            detail: format!("{} {}", machine.name, machine.region),
            expires_at_unix_s: None,
        })
    }

    async fn wait_ready(&self, node: &NodeHandle, deadline: Instant) -> Result<AgentEndpoint> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BackendError::new(
                    "fly",
                    BackendErrorKind::NotReady,
                    format!("machine {} never reached the started state", node.id),
                )
                .into());
            }
            if self.client.wait(&node.id, "started", left).await? {
                break;
            }
        }
        if let Some(edge) = &self.edge {
            return self.wait_for_edge(edge, node, deadline).await;
        }
        let machine = self.client.get(&node.id).await?.ok_or_else(|| {
            Error::from(
                BackendError::new(
                    "fly",
                    BackendErrorKind::NodeFailed,
                    format!("machine {} is gone before it was ready", node.id),
                )
                .hint("the agent may have exited at once: check the image with `fly logs`"),
            )
        })?;
        let ip = machine
            .private_ip
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| {
                Error::from(BackendError::new(
                    "fly",
                    BackendErrorKind::NodeFailed,
                    format!("machine {} has no private IP", node.id),
                ))
            })?;
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        let address = format!("{host}:{}", self.agent_port);
        // "started" means the machine's main process started; the agent listens a moment later.
        liveload_core::ready::wait_for_port("fly", &address, deadline).await?;
        Ok(AgentEndpoint {
            address,
            tls: None,
            headers: Vec::new(),
            proxy: None,
        })
    }

    async fn destroy(&self, node: &NodeHandle) -> Result<()> {
        match &self.pool {
            // A pool machine goes back to the pool: stopped, without the run's token or tags.
            Some(pool) => {
                self.client.stop(&node.id).await?;
                let rest = UpdateMachineRequest {
                    config: self.pool_config(pool),
                    skip_launch: Some(true),
                };
                self.client.update(&node.id, &rest).await?;
                self.claimed.lock().expect("not poisoned").remove(&node.id);
                Ok(())
            }
            None => self.client.destroy(&node.id).await,
        }
    }

    async fn list(&self, runs: &RunFilter) -> Result<Vec<NodeHandle>> {
        let filter = match runs {
            RunFilter::Run(id) => vec![(META_RUN.to_string(), id.clone())],
            RunFilter::All => Vec::new(),
        };
        Ok(self
            .client
            .list(&filter)
            .await?
            .iter()
            .filter_map(Self::handle)
            .filter(|h| runs.matches(&h.run_id))
            .collect())
    }

    /// Fly creates about one machine a second per app (client.rs has the limits, with the
    /// client's burst); starting a warm pool's stopped machines is limited per machine, not per app.
    fn create_rate(&self) -> Option<liveload_core::CreateRate> {
        if self.pool.is_some() {
            return None;
        }
        Some(liveload_core::CreateRate {
            per_second: self.client.limits().create_per_s,
            burst: self.client.limits().create_burst,
            per_call: 1,
            machines: None,
            advice: Some(
                "a warm pool starts machines in seconds: `liveload fly pool create --fly-pool NAME --nodes N` once, then run with --fly-pool NAME",
            ),
        })
    }

    fn hourly_price(&self) -> Option<f64> {
        guest::PRESETS
            .iter()
            .find(|p| p.guest == self.guest)
            .map(|p| p.usd_per_hour)
    }

    async fn doctor(
        &self,
        needs: &liveload_core::doctor::Needs,
    ) -> Vec<liveload_core::doctor::Check> {
        self.checks(needs).await
    }

    async fn expected_size(&self) -> Result<Option<NodeSize>> {
        Ok(Some(NodeSize {
            memory_bytes: u64::from(self.guest.memory_mb) * 1024 * 1024,
            cores: f64::from(self.guest.cpus),
            // Fly has no API for its presets: these are always its published figures.
            catalogue: Some(guest::CATALOGUE),
        }))
    }
}
