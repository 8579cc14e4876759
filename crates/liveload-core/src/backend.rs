//! The [`Backend`] trait: how liveload gets machines that run its agent.
//!
//! Every provider (local processes, Fly Machines, EC2, SSH hosts) implements this one trait and
//! passes the one conformance suite in [`crate::conformance`]. The trait is deliberately small:
//! a backend creates, waits for, lists and destroys machines. Everything shared — timeouts,
//! destroying a node that missed its deadline, sizing, talking to the agent — lives once in
//! core, so no provider re-implements it.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::Result;
use crate::tls::Pin;

/// What to create: one node of one run.
///
/// Holds the run token, so it is deliberately not `Debug`-printed field by field.
#[derive(Clone)]
pub struct NodeSpec {
    /// The run this node belongs to; every provider tags the machine with it.
    pub run_id: String,
    /// The node's index in the run (0-based); with the run id it names the machine.
    pub index: u32,
    /// The per-run secret the agent checks on `Hello`. Never logged.
    pub token: Secret,
    /// The agent exits at this age whatever happens (hard lifetime).
    pub ttl: Duration,
    /// The agent exits when the controller has been silent this long (dead-man switch).
    pub grace: Duration,
    /// TLS material for the agent's listener, when the path to it leaves the host.
    pub tls: Option<crate::tls::AgentTls>,
    /// Start the agent without a browser (benchmarks of the cluster machinery).
    pub no_browser: bool,
}

impl Debug for NodeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSpec")
            .field("run_id", &self.run_id)
            .field("index", &self.index)
            .field("ttl", &self.ttl)
            .field("grace", &self.grace)
            .field("tls", &self.tls.is_some())
            .field("no_browser", &self.no_browser)
            .finish_non_exhaustive()
    }
}

impl NodeSpec {
    /// A stable machine name for this node: `ll-<run id>-<index>`.
    pub fn machine_name(&self) -> String {
        format!("ll-{}-{}", self.run_id, self.index)
    }

    /// The agent's settings for this node, listening on `listen`; a backend adds its own
    /// (host share, sandbox, a cap on users) before turning them into a
    /// [`Launch`](crate::launch::Launch).
    pub fn agent_settings(&self, listen: impl Into<String>) -> crate::launch::AgentSettings {
        crate::launch::AgentSettings {
            listen: listen.into(),
            run_id: self.run_id.clone(),
            ttl_s: self.ttl.as_secs(),
            grace_s: self.grace.as_secs(),
            no_browser: self.no_browser,
            ..Default::default()
        }
    }

    /// The agent's secrets: the token, and the TLS material when the agent serves TLS itself.
    pub fn agent_secrets(&self) -> crate::launch::AgentSecrets {
        crate::launch::AgentSecrets {
            token: self.token.expose().to_string(),
            tls: self
                .tls
                .as_ref()
                .map(|t| (t.cert_pem.clone(), t.key_pem.clone())),
        }
    }
}

/// Write a launch's files into `dir` on this host (created 0700 if missing): each file new,
/// mode 0600, never through a symlink (`O_CREAT | O_EXCL` refuses an existing path, link or
/// not). For backends whose agents run on this host, and for test stand-ins of remote ones.
pub fn write_launch_files(
    dir: &std::path::Path,
    files: &[crate::launch::LaunchFile],
) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    for file in files {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(&file.name))?;
        out.write_all(file.contents.as_bytes())?;
    }
    Ok(())
}

/// A string that must never reach a log or a report: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A machine the provider holds for a run, as the provider describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHandle {
    /// The provider's id of the machine (process group, Fly machine id, EC2 instance id, host).
    pub id: String,
    /// The run the machine is tagged with.
    pub run_id: String,
    /// The node index it was created with.
    pub index: u32,
    /// A human description (`pid 1234`, `iad shared-cpu-2x`).
    pub detail: String,
    /// When the machine's lifetime ends (Unix seconds), from the provider's tag, when the
    /// backend records one: `liveload cleanup --expired` destroys machines past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_unix_s: Option<u64>,
}

/// How the controller reaches one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// `host:port` to dial.
    pub address: String,
    /// The TLS certificate to pin, or `None` for plain TCP (loopback or an SSH tunnel only).
    pub tls: Option<Pin>,
    /// Extra HTTP headers on the WebSocket upgrade (e.g. Fly's `fly-force-instance-id`).
    pub headers: Vec<(String, String)>,
    /// The agent sits behind a TLS-terminating proxy (Fly's edge in public mode): the
    /// controller verifies the proxy's certificate with public CAs instead of pinning the run's
    /// certificate, and `tls` is ignored. The run token still authenticates the agent link.
    pub proxy: Option<ProxyTls>,
}

/// A TLS-terminating proxy in front of agents, verified like any HTTPS site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTls {
    /// The name the proxy's certificate must carry; also sent as SNI and `Host`
    /// (`my-app.fly.dev`).
    pub server_name: String,
    /// Root certificates (PEM) trusted on top of the system's: a private CA, or a test CA.
    pub extra_roots_pem: Vec<String>,
}

/// The size of a node from the provider's catalogue, for planning only: facts decide sizing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NodeSize {
    /// Memory the node will have, in bytes.
    pub memory_bytes: u64,
    /// Cores the node will have.
    pub cores: f64,
    /// Where the figures come from when they are the backend's built-in catalogue (Fly's
    /// published presets; EC2's common families when no credentials could ask the account),
    /// with its date; `None` when the provider answered for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<&'static str>,
}

/// How fast a provider accepts creates, from its documented limits: what a plan's boot-time
/// floor is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CreateRate {
    /// Create calls per second, sustained.
    pub per_second: f64,
    /// Calls allowed at once after a quiet spell.
    pub burst: u32,
    /// Machines one call creates (1, or a batch).
    pub per_call: u32,
    /// A second bucket counting machines rather than calls, when the provider has one (EC2's
    /// resource bucket): the slower of the two buckets sets the floor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machines: Option<MachineBucket>,
    /// What would make boot faster, when the floor is long (a warm pool, say).
    #[serde(skip)]
    pub advice: Option<&'static str>,
}

/// A provider's bucket of machines created: `burst` at once after a quiet spell, then
/// `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MachineBucket {
    /// Machines created per second, sustained.
    pub per_second: f64,
    /// Machines that may be created at once after a quiet spell.
    pub burst: u32,
}

impl CreateRate {
    /// The least time creating `nodes` machines takes at this rate: the later of the call
    /// bucket's and (when there is one) the machine bucket's.
    pub fn floor(&self, nodes: u64) -> Duration {
        let calls = nodes.div_ceil(u64::from(self.per_call.max(1)));
        let queued_calls = calls.saturating_sub(u64::from(self.burst));
        let mut floor = queued_calls as f64 / self.per_second.max(1e-9);
        if let Some(machines) = self.machines {
            let queued = nodes.saturating_sub(u64::from(machines.burst));
            floor = floor.max(queued as f64 / machines.per_second.max(1e-9));
        }
        Duration::from_secs_f64(floor)
    }
}

/// Which runs to list or clean up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunFilter {
    /// One run.
    Run(String),
    /// Every liveload run the provider holds.
    All,
}

impl RunFilter {
    /// Does this filter select `run_id`?
    pub fn matches(&self, run_id: &str) -> bool {
        match self {
            RunFilter::Run(id) => id == run_id,
            RunFilter::All => true,
        }
    }
}

/// How the controller's link to an agent travels. Declared by the backend
/// ([`Backend::link_path`]), enforced by core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPath {
    /// The agent runs on this host and listens on its loopback interface (local processes).
    Loopback,
    /// The link rides inside a tunnel the backend encrypts itself and ends on this host's
    /// loopback (an SSH `direct-tcpip` channel).
    Tunnel,
    /// The link crosses a network. Core always encrypts it: TLS pinned to the run's
    /// certificate, or CA-verified TLS to a proxy the backend names
    /// ([`AgentEndpoint::proxy`]). The default, so a backend that forgets to declare its path
    /// gets the safe one.
    Network,
}

/// Whether a backend's machines cost money. Declared by the backend ([`Backend::billing`]),
/// enforced by core: a billed run needs a [`crate::run::CostConfirmation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Billing {
    /// Nothing beyond what the user already pays for (this host, their own SSH hosts).
    Free,
    /// Every node is billed by a provider. The default: fail closed.
    Billed,
}

/// A provider of agent machines.
///
/// Two policies have safe defaults that a backend may relax but never needs to register:
/// [`Backend::link_path`] (default [`LinkPath::Network`]: core encrypts every link) and
/// [`Backend::billing`] (default [`Billing::Billed`]: core requires a cost confirmation).
#[async_trait]
pub trait Backend: Send + Sync + Debug {
    /// The backend's short name (`local`, `fly`, `ec2`, `ssh`).
    fn name(&self) -> &'static str;

    /// How the agent link travels. Core requires TLS for [`LinkPath::Network`] and refuses a
    /// plaintext link to any non-loopback address whatever a backend declares.
    fn link_path(&self) -> LinkPath {
        LinkPath::Network
    }

    /// Whether nodes cost money; core asks for a confirmation before creating billed nodes.
    fn billing(&self) -> Billing {
        Billing::Billed
    }

    /// Ask the provider for one machine running the agent, tagged with the run id, started with
    /// the token and TTL. Returns once the provider accepted the request, not when it is ready.
    async fn create(&self, spec: &NodeSpec) -> Result<NodeHandle>;

    /// The most nodes one [`create_batch`](Self::create_batch) call may be given: 1 (the
    /// default) means core calls [`create`](Self::create) per node, all at once. Providers
    /// whose API creates many machines per call (EC2's RunInstances with a count) raise it:
    /// their rate limits count calls, so a batch takes one round trip where nodes one by one
    /// would queue behind the limit.
    fn batch_limit(&self) -> u32 {
        1
    }

    /// Create several nodes (at most [`batch_limit`](Self::batch_limit)); one result per
    /// spec, in order. The default creates each with [`create`](Self::create), concurrently.
    async fn create_batch(&self, specs: &[NodeSpec]) -> Vec<Result<NodeHandle>> {
        futures_util::future::join_all(specs.iter().map(|s| self.create(s))).await
    }

    /// Wait until the node's agent accepts connections, and say how to reach it.
    ///
    /// Core cuts the wait at `deadline` and reports
    /// [`crate::Error::ClusterNodeCreationTimeout`]; a backend that gives up at the deadline
    /// itself returns a [`crate::BackendError`] of kind
    /// [`crate::BackendErrorKind::NotReady`] saying what it last saw, which core puts in the
    /// timeout error. The caller (core) destroys the node on any error; a backend need not.
    async fn wait_ready(&self, node: &NodeHandle, deadline: Instant) -> Result<AgentEndpoint>;

    /// Destroy the node. Idempotent: a node that is already gone is success.
    async fn destroy(&self, node: &NodeHandle) -> Result<()>;

    /// Destroy several nodes; providers with a batch call (EC2's `TerminateInstances`) override
    /// it. The default destroys them all at once, one call each, and reports the first error
    /// after trying every node.
    async fn destroy_all(&self, nodes: &[NodeHandle]) -> Result<()> {
        let results = futures_util::future::join_all(nodes.iter().map(|n| self.destroy(n))).await;
        results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
    }

    /// Every machine the provider still holds for the selected runs, from the provider's own
    /// tags or records, so that a later process can clean up after a crashed one.
    async fn list(&self, runs: &RunFilter) -> Result<Vec<NodeHandle>>;

    /// The node size the provider will give, from its catalogue, when known in advance.
    async fn expected_size(&self) -> Result<Option<NodeSize>>;

    /// What one node costs per hour while it runs, in USD, for the plan's estimate (`None`:
    /// free or unknown).
    fn hourly_price(&self) -> Option<f64> {
        None
    }

    /// How fast the provider accepts creates (`None`: no limit worth planning for). The plan
    /// prints the boot-time floor it implies; the creation timeout is counted from the
    /// provider's acceptance, so queued creates never time out for waiting.
    fn create_rate(&self) -> Option<CreateRate> {
        None
    }

    /// The most nodes this backend can hold for one run regardless of `max_allowed_nodes`
    /// (the local backend splits one host into a fixed number of shares).
    fn node_limit(&self) -> Option<u64> {
        None
    }

    /// Check what a run on this backend needs, creating nothing: credentials, image, network
    /// rules, hosts (`liveload doctor`). Each [`Check`](crate::doctor::Check) passes, or fails
    /// with the exact fix. `needs` holds the plan's figures when a scenario was given. The
    /// default checks nothing.
    async fn doctor(&self, needs: &crate::doctor::Needs) -> Vec<crate::doctor::Check> {
        let _ = needs;
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// EC2's buckets: 5 calls + 2/s and 1,000 instances + 2/s, 100 instances a call.
    fn ec2() -> CreateRate {
        CreateRate {
            per_second: 2.0,
            burst: 5,
            per_call: 100,
            machines: Some(MachineBucket {
                per_second: 2.0,
                burst: 1000,
            }),
            advice: None,
        }
    }

    #[test]
    fn the_slower_bucket_sets_the_floor() {
        // 256 instances: 3 calls, within both bursts.
        assert_eq!(ec2().floor(256), Duration::ZERO);
        // 1,100 instances: 11 calls (6 queued, 3 s), 100 instances queued (50 s).
        assert_eq!(ec2().floor(1100), Duration::from_secs(50));
        // One machine per call, no machine bucket (Fly): 10 creates, burst 2, 1/s.
        let fly = CreateRate {
            per_second: 1.0,
            burst: 2,
            per_call: 1,
            machines: None,
            advice: None,
        };
        assert_eq!(fly.floor(10), Duration::from_secs(8));
    }
}
