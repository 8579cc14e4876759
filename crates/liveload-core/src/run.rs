//! A whole run: plan → provision → measure → size → dispatch → observe → tear down.
//!
//! [`run`] is the one function the CLI calls. Its shape guarantees the promise users care most
//! about: every node the run creates is destroyed, whatever happens. The run itself is one
//! future raced against the interrupt signal; whichever ends first, [`teardown`] then destroys
//! every node this process created *and* every node the backend still lists for the run id (a
//! create whose answer was lost still carries the tag).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use liveload_proto::{
    AgentMessage, Assignment, ControllerMessage, NodeFacts, NodeThrottle, Workload,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::agent_client::{AgentConnection, AgentSender, message_name};
use crate::backend::{Backend, NodeHandle, NodeSize, NodeSpec, RunFilter, Secret};
use crate::metrics::{LatencySummary, MetricsAggregate, counter};
use crate::scenario::{Load, Scenario};
use crate::sizing::{NodeCapacity, SizingConfig, assign_users, necessary_nodes};
use crate::threshold::Verdict;
use crate::tls::Pin;
use crate::{Error, Result, names};

/// Everything a run needs besides the scenario and the backend.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The cluster's name (run ids, machine names, the lock); see [`names`].
    pub cluster_name: String,
    /// Users to simulate.
    pub users: u64,
    /// How long users iterate.
    pub duration: Duration,
    /// The most nodes the run may use.
    pub max_allowed_nodes: u64,
    /// How long one node may take from create to a completed handshake.
    pub creation_timeout: Duration,
    /// The sizing formula's knobs.
    pub sizing: SizingConfig,
    /// The agents' hard lifetime.
    pub ttl: Duration,
    /// The agents' dead-man grace period.
    pub grace: Duration,
    /// Serve the agent link over TLS pinned to a per-run certificate.
    pub tls: bool,
    /// Time between user starts on each node (0: all at once).
    pub start_interval: Duration,
    /// Run the agents without a browser (benchmarks of the cluster machinery).
    pub no_browser: bool,
}

impl RunOptions {
    /// Defaults for `users` over `duration`: 100 nodes at most, 120 s creation timeout, 30 s
    /// grace, a TTL of the duration plus 15 minutes, plain loopback links.
    pub fn new(cluster_name: impl Into<String>, users: u64, duration: Duration) -> Self {
        RunOptions {
            cluster_name: cluster_name.into(),
            users,
            duration,
            max_allowed_nodes: 100,
            creation_timeout: Duration::from_secs(120),
            sizing: SizingConfig::default(),
            ttl: duration + Duration::from_secs(15 * 60),
            grace: Duration::from_secs(30),
            tls: false,
            start_interval: Duration::ZERO,
            no_browser: false,
        }
    }

    /// Check every option before anything is created.
    pub fn validate(&self) -> Result<()> {
        names::validate_cluster_name(&self.cluster_name)?;
        if self.max_allowed_nodes == 0 {
            return Err(Error::MaxAllowedNodesInvalid { value: 0 });
        }
        if self.users == 0 {
            return Err(Error::InvalidOption {
                option: "--users".into(),
                message: "must be at least 1".into(),
            });
        }
        if self.duration.is_zero() {
            return Err(Error::InvalidOption {
                option: "--duration".into(),
                message: "must be more than 0".into(),
            });
        }
        if self.grace < Duration::from_secs(1) {
            return Err(Error::InvalidOption {
                option: "--grace".into(),
                message: "must be at least 1s".into(),
            });
        }
        self.sizing.validate()
    }
}

/// What the run is told while it goes on (the CLI draws progress from these).
#[derive(Debug, Clone)]
pub enum Event {
    /// The plan before any node is booted.
    Planned(Plan),
    /// Nodes are being booted.
    Booting {
        /// How many in this wave.
        nodes: u32,
    },
    /// One node answered the handshake with its facts.
    NodeReady(NodeReport),
    /// Users were assigned; nothing started yet.
    Assigned {
        /// Users per node, in node order.
        users: Vec<u64>,
    },
    /// Every agent received the start signal.
    Started,
    /// A snapshot was merged.
    Progress {
        /// Seconds since start.
        elapsed: Duration,
        /// Users running now, cluster-wide.
        active_users: u64,
        /// Iterations completed so far.
        iterations_ok: u64,
        /// Iterations failed so far.
        iterations_failed: u64,
        /// Iterations in the last complete second, cluster-wide.
        iterations_per_s: u64,
        /// p95 step latency in the last complete second, ms.
        step_p95_ms: f64,
        /// Nodes still running users.
        nodes: usize,
    },
    /// Teardown began.
    TearingDown {
        /// Nodes to destroy.
        nodes: usize,
    },
    /// One node was destroyed.
    NodeDestroyed {
        /// Its id.
        node: String,
    },
}

/// Something that listens to a run's [`Event`]s.
pub trait Observer: Send + Sync {
    /// Called for every event, in order.
    fn event(&self, event: &Event);
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: &Event) {}
}

/// How the cluster will be (or was) sized before booting.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Plan {
    /// Users requested.
    pub users: u64,
    /// Nodes to boot first.
    pub nodes: u64,
    /// Users one node can host, by the plan's figures.
    pub users_per_node: u64,
    /// Where the node size came from: `catalogue` (the backend's expected size) or `probe`
    /// (a booted node's facts).
    pub source: String,
    /// The node size the plan used.
    pub node_memory_bytes: u64,
    /// The node cores the plan used.
    pub node_cores: f64,
    /// The formula's intermediate figures.
    pub capacity: NodeCapacity,
    /// The limit in force (`max_allowed_nodes`, or lower if the backend holds fewer).
    pub max_nodes: u64,
    /// The sizing knobs used.
    pub sizing: SizingConfig,
    /// What one node costs per hour in USD, when the backend knows (cloud backends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_hourly_price: Option<f64>,
}

impl Plan {
    /// Plan from a node size (the backend's catalogue or a probe's facts).
    pub fn from_size(
        users: u64,
        size: NodeSize,
        source: &'static str,
        sizing: &SizingConfig,
        max_nodes: u64,
    ) -> Result<Plan> {
        let capacity = sizing.capacity_of_size(&size);
        if capacity.users == 0 {
            return Err(Error::NodeTooSmall {
                node: format!("({source} size)"),
                memory_mib: capacity.usable_memory_bytes / (1024 * 1024),
                cores: size.cores,
                needed_mib: (sizing.profile.browser_memory_usage_bytes
                    + sizing.profile.context_memory_usage_bytes)
                    / (1024 * 1024),
            });
        }
        let nodes = necessary_nodes(users, capacity.users, max_nodes)?;
        Ok(Plan {
            users,
            nodes,
            users_per_node: capacity.users,
            source: source.to_string(),
            node_memory_bytes: size.memory_bytes,
            node_cores: size.cores,
            capacity,
            max_nodes,
            sizing: *sizing,
            node_hourly_price: None,
        })
    }
}

/// Plan without running: from the backend's catalogue when it has one, else by booting one
/// probe node, reading its facts over the agent link and destroying it (SSH hosts, or any
/// backend whose nodes are only known once measured).
pub async fn plan(backend: &dyn Backend, options: &RunOptions) -> Result<Plan> {
    let max_nodes = backend
        .node_limit()
        .map_or(options.max_allowed_nodes, |limit| {
            limit.min(options.max_allowed_nodes)
        });
    if let Some(size) = backend.expected_size().await? {
        let mut plan =
            Plan::from_size(options.users, size, "catalogue", &options.sizing, max_nodes)?;
        plan.node_hourly_price = backend.hourly_price();
        return Ok(plan);
    }
    let tls = if options.tls {
        Some(crate::tls::generate_run_certificate()?)
    } else {
        None
    };
    let spec = NodeSpec {
        run_id: names::new_run_id(&format!("{}-plan", options.cluster_name)),
        index: 0,
        token: names::new_token(),
        ttl: options.creation_timeout + Duration::from_secs(60),
        grace: Duration::from_secs(30),
        tls: tls.as_ref().map(|(agent, _)| agent.clone()),
        no_browser: options.no_browser,
    };
    let node = backend.create(&spec).await?;
    let measured = async {
        let mut endpoint = wait_ready_or_destroy(backend, &node, options.creation_timeout).await?;
        if let (Some((_, pin)), None) = (&tls, &endpoint.tls) {
            endpoint.tls = Some(pin.clone());
        }
        let deadline = Instant::now() + options.creation_timeout;
        let (connection, welcome) =
            AgentConnection::connect(&node.id, &endpoint, &spec.token, deadline).await?;
        connection.close().await;
        Ok::<_, Error>(welcome.facts)
    }
    .await;
    // The probe is destroyed whatever happened (again, if waiting already did: idempotent).
    let destroyed = backend.destroy(&node).await;
    let facts = measured?;
    destroyed?;
    let capacity = options.sizing.check_node(&node.id, &facts)?;
    let size = NodeSize {
        memory_bytes: facts.effective_memory_bytes,
        cores: facts.effective_cores,
    };
    let mut plan = Plan::from_size(options.users, size, "probe", &options.sizing, max_nodes)?;
    if capacity.users < plan.users_per_node {
        // The host's own cap (max_users) is lower than its size allows.
        plan.users_per_node = capacity.users;
        plan.capacity = capacity;
        plan.nodes = necessary_nodes(options.users, capacity.users, max_nodes)?;
    }
    plan.node_hourly_price = backend.hourly_price();
    Ok(plan)
}

/// One node of a run, as measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NodeReport {
    /// The provider's id.
    pub id: String,
    /// The node's index.
    pub index: u32,
    /// The agent's version.
    pub agent_version: String,
    /// What the agent measured.
    pub facts: NodeFacts,
    /// Users the facts allow.
    pub capacity: NodeCapacity,
    /// Users assigned (0 until assignment).
    pub users: u64,
    /// First user id of the node's range.
    pub first_user_id: u64,
    /// Seconds from create to a completed handshake.
    pub ready_after_s: f64,
    /// Iterations this node completed (filled at the end of the run).
    #[serde(default)]
    pub iterations_ok: u64,
    /// Iterations this node failed.
    #[serde(default)]
    pub iterations_failed: u64,
    /// Metric snapshots received from this node (one a second while healthy).
    #[serde(default)]
    pub snapshots: u64,
}

/// Version of the `result.json` schema ([`RunReport`]); bumped on incompatible changes.
pub const RESULT_SCHEMA_VERSION: u32 = 1;

/// What a finished run reports; serialised as `result.json` (see README, "Result file").
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct RunReport {
    /// [`RESULT_SCHEMA_VERSION`] of this document.
    pub schema_version: u32,
    /// liveload's version.
    pub liveload_version: String,
    /// The backend that provided the nodes.
    pub backend: String,
    /// When users started, as Unix milliseconds.
    pub started_at_unix_ms: u64,
    /// The run's id.
    pub run_id: String,
    /// The scenario's name.
    pub scenario: String,
    /// The plan it started from.
    pub plan: Plan,
    /// Every node that ran users.
    pub nodes: Vec<NodeReport>,
    /// Users requested.
    pub users: u64,
    /// Users whose every iteration succeeded.
    pub users_succeeded: u64,
    /// Users that failed an iteration or could not start.
    pub users_failed: u64,
    /// Iterations that passed.
    pub iterations_ok: u64,
    /// Iterations that failed.
    pub iterations_failed: u64,
    /// Seconds from the first create to every agent's facts in.
    pub boot_s: f64,
    /// Seconds from the start signal to every agent finished.
    pub run_s: f64,
    /// Latency percentiles by metric (`step:<name>`, `iteration`, `user_setup`).
    pub latencies: std::collections::BTreeMap<String, LatencySummary>,
    /// Counters by name, cluster totals.
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Every threshold's verdict.
    pub thresholds: Vec<Verdict>,
    /// Why the run stopped early, when a threshold aborted it.
    pub aborted: Option<String>,
    /// One point per second of the run.
    pub series: Vec<crate::metrics::SecondPoint>,
    /// The workload model, in words (and how latency was measured).
    #[serde(default)]
    pub workload: String,
}

impl RunReport {
    /// Did every user succeed?
    pub fn succeeded(&self) -> bool {
        self.users_failed == 0 && self.users_succeeded == self.users
    }

    /// Did every threshold hold?
    pub fn thresholds_passed(&self) -> bool {
        self.thresholds.iter().all(|t| t.passed)
    }
}

/// Nodes this process created and has not destroyed yet.
type Created = Arc<Mutex<Vec<NodeHandle>>>;

/// Run `scenario` on `backend`. Every node is destroyed before this returns, on success, error or
/// when `interrupt` completes (Ctrl-C).
pub async fn run(
    backend: Arc<dyn Backend>,
    scenario: &Scenario,
    options: &RunOptions,
    observer: Arc<dyn Observer>,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<RunReport> {
    run_controlled(backend, scenario, options, observer, interrupt, None).await
}

/// [`run`], taking add/remove-users requests from `control` and publishing its live status
/// there (the CLI serves both over HTTP).
pub async fn run_controlled(
    backend: Arc<dyn Backend>,
    scenario: &Scenario,
    options: &RunOptions,
    observer: Arc<dyn Observer>,
    interrupt: impl std::future::Future<Output = ()>,
    mut control: Option<ControlEnd>,
) -> Result<RunReport> {
    options.validate()?;
    let run_id = names::new_run_id(&options.cluster_name);
    let created: Created = Arc::default();
    let outcome = tokio::select! {
        outcome = run_cluster(backend.clone(), scenario, options, &run_id, created.clone(), observer.clone(), control.as_mut()) => outcome,
        _ = interrupt => Err(Error::Interrupted),
    };
    let teardown_result = teardown(backend.as_ref(), &run_id, &created, observer.as_ref()).await;
    let report = outcome?;
    teardown_result?;
    Ok(report)
}

/// Destroy every node of `run_id`: the ones this process created and any the backend still
/// lists. Returns the first destroy error after trying every node.
pub async fn teardown(
    backend: &dyn Backend,
    run_id: &str,
    created: &Created,
    observer: &dyn Observer,
) -> Result<()> {
    let mut nodes: Vec<NodeHandle> = std::mem::take(&mut *created.lock().expect("not poisoned"));
    if let Ok(listed) = backend.list(&RunFilter::Run(run_id.to_string())).await {
        for node in listed {
            if !nodes.iter().any(|n| n.id == node.id) {
                nodes.push(node);
            }
        }
    }
    tracing::info!(run_id, nodes = nodes.len(), "tearing down");
    observer.event(&Event::TearingDown { nodes: nodes.len() });
    // One batch first (EC2 terminates a thousand instances a call); if it fails, node by node,
    // so every node gets its own try and the error names the one that failed.
    if backend.destroy_all(&nodes).await.is_ok() {
        for node in &nodes {
            observer.event(&Event::NodeDestroyed {
                node: node.id.clone(),
            });
        }
        return Ok(());
    }
    let results = join_all(nodes.iter().map(|node| async move {
        let result = backend.destroy(node).await;
        if result.is_ok() {
            observer.event(&Event::NodeDestroyed {
                node: node.id.clone(),
            });
        }
        result
    }))
    .await;
    results.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()))
}

/// A node that answered, with the link the run talks to it through.
struct LiveNode {
    report: NodeReport,
    handle: NodeHandle,
    commands: mpsc::UnboundedSender<ControllerMessage>,
}

/// Messages from every node's reader task, tagged with the node's index.
type Inbox = mpsc::UnboundedReceiver<(usize, Result<AgentMessage>)>;

struct Booter<'a> {
    backend: Arc<dyn Backend>,
    options: &'a RunOptions,
    run_id: &'a str,
    token: Secret,
    tls: Option<(crate::tls::AgentTls, Pin)>,
    created: Created,
    observer: Arc<dyn Observer>,
    inbox_tx: mpsc::UnboundedSender<(usize, Result<AgentMessage>)>,
}

impl Booter<'_> {
    fn spec(&self, index: u32) -> NodeSpec {
        NodeSpec {
            run_id: self.run_id.to_string(),
            index,
            token: self.token.clone(),
            ttl: self.options.ttl,
            grace: self.options.grace,
            tls: self.tls.as_ref().map(|(agent, _)| agent.clone()),
            no_browser: self.options.no_browser,
        }
    }

    /// Boot nodes `indices` all at once; each either answers with its facts or is destroyed.
    async fn boot(&self, indices: std::ops::Range<u32>, live: &mut Vec<LiveNode>) -> Result<()> {
        self.observer.event(&Event::Booting {
            nodes: indices.len() as u32,
        });
        let results = join_all(indices.map(|i| self.boot_one(i))).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok((handle, connection, report)) => {
                    let commands = spawn_link(
                        report.index as usize,
                        connection,
                        self.inbox_tx.clone(),
                        heartbeat_interval(self.options.grace),
                    );
                    self.observer.event(&Event::NodeReady(report.clone()));
                    live.push(LiveNode {
                        report,
                        handle,
                        commands,
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(run_id = %self.run_id, backend = self.backend.name()))]
    async fn boot_one(&self, index: u32) -> Result<(NodeHandle, AgentConnection, NodeReport)> {
        let started = Instant::now();
        let deadline = started + self.options.creation_timeout;
        let spec = self.spec(index);
        // `NodeSpec`'s Debug prints `***` for the token.
        tracing::debug!(?spec, "creating node");
        let handle = self.backend.create(&spec).await?;
        tracing::debug!(node = %handle.id, detail = %handle.detail, "node created");
        self.created
            .lock()
            .expect("not poisoned")
            .push(handle.clone());
        match self.await_agent(&handle, deadline).await {
            Ok((connection, welcome)) => {
                let capacity = self.options.sizing.capacity_of(&welcome.facts);
                let report = NodeReport {
                    id: handle.id.clone(),
                    index,
                    agent_version: welcome.agent_version,
                    facts: welcome.facts,
                    capacity,
                    users: 0,
                    first_user_id: 0,
                    ready_after_s: started.elapsed().as_secs_f64(),
                    iterations_ok: 0,
                    iterations_failed: 0,
                    snapshots: 0,
                };
                tracing::info!(
                    node = %report.id,
                    memory = report.facts.effective_memory_bytes,
                    cores = report.facts.effective_cores,
                    capacity = report.capacity.users,
                    ready_after_s = report.ready_after_s,
                    "node ready"
                );
                Ok((handle, connection, report))
            }
            Err(e) => {
                tracing::warn!(node = %handle.id, error = %e, "node failed to become ready; destroying it");
                // A node that missed its deadline or refused us is destroyed now, not at the
                // end of the run: it costs money and may never answer.
                if self.backend.destroy(&handle).await.is_ok() {
                    self.created
                        .lock()
                        .expect("not poisoned")
                        .retain(|n| n.id != handle.id);
                }
                Err(e)
            }
        }
    }

    async fn await_agent(
        &self,
        handle: &NodeHandle,
        deadline: Instant,
    ) -> Result<(AgentConnection, crate::agent_client::Welcome)> {
        let endpoint = wait_ready(
            self.backend.as_ref(),
            handle,
            deadline,
            self.options.creation_timeout,
        )
        .await?;
        let mut endpoint = endpoint;
        if let (Some((_, pin)), None) = (&self.tls, &endpoint.tls) {
            // The backend reached the agent over a path it does not encrypt itself: pin the
            // run's certificate.
            endpoint.tls = Some(pin.clone());
        }
        AgentConnection::connect(&handle.id, &endpoint, &self.token, deadline)
            .await
            .map_err(|e| match e {
                Error::AgentConnection { .. } if Instant::now() >= deadline => {
                    Error::ClusterNodeCreationTimeout {
                        node: handle.id.clone(),
                        timeout: self.options.creation_timeout,
                    }
                }
                e => e,
            })
    }
}

/// [`Backend::wait_ready`], cut at `deadline` even if the backend overruns it.
pub async fn wait_ready(
    backend: &dyn Backend,
    handle: &NodeHandle,
    deadline: Instant,
    timeout: Duration,
) -> Result<crate::backend::AgentEndpoint> {
    match tokio::time::timeout_at(deadline, backend.wait_ready(handle, deadline)).await {
        // The backend saw the deadline pass; report the timeout the user set.
        Ok(Err(Error::ClusterNodeCreationTimeout { node, .. })) => {
            Err(Error::ClusterNodeCreationTimeout { node, timeout })
        }
        Ok(result) => result,
        Err(_) => Err(Error::ClusterNodeCreationTimeout {
            node: handle.id.clone(),
            timeout,
        }),
    }
}

/// [`wait_ready`], and on any error destroy the node before returning the error.
pub async fn wait_ready_or_destroy(
    backend: &dyn Backend,
    handle: &NodeHandle,
    timeout: Duration,
) -> Result<crate::backend::AgentEndpoint> {
    let deadline = Instant::now() + timeout;
    match wait_ready(backend, handle, deadline, timeout).await {
        Ok(endpoint) => Ok(endpoint),
        Err(e) => {
            backend.destroy(handle).await?;
            Err(e)
        }
    }
}

fn heartbeat_interval(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_millis(200), Duration::from_secs(2))
}

/// Start the tasks that own one agent link: a writer that sends commands and heartbeats, and a
/// reader that forwards every message into the run's inbox. Dropping the returned sender closes
/// the link.
fn spawn_link(
    position: usize,
    connection: AgentConnection,
    inbox: mpsc::UnboundedSender<(usize, Result<AgentMessage>)>,
    heartbeat: Duration,
) -> mpsc::UnboundedSender<ControllerMessage> {
    let (sender, mut receiver) = connection.into_split();
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(sender, commands_rx, heartbeat));
    tokio::spawn(async move {
        loop {
            let message = receiver.recv().await;
            let failed = message.is_err();
            if inbox.send((position, message)).is_err() || failed {
                break;
            }
        }
    });
    commands_tx
}

async fn write_loop(
    mut sender: AgentSender,
    mut commands: mpsc::UnboundedReceiver<ControllerMessage>,
    heartbeat: Duration,
) {
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            command = commands.recv() => match command {
                Some(command) => command,
                None => break,
            },
            _ = ticker.tick() => ControllerMessage::Heartbeat,
        };
        if sender.send(&message).await.is_err() {
            return;
        }
    }
    sender.close().await;
}

async fn run_cluster(
    backend: Arc<dyn Backend>,
    scenario: &Scenario,
    options: &RunOptions,
    run_id: &str,
    created: Created,
    observer: Arc<dyn Observer>,
    control: Option<&mut ControlEnd>,
) -> Result<RunReport> {
    let max_nodes = backend
        .node_limit()
        .map_or(options.max_allowed_nodes, |limit| {
            limit.min(options.max_allowed_nodes)
        });
    let (inbox_tx, mut inbox) = mpsc::unbounded_channel();
    let booter = Booter {
        backend: backend.clone(),
        options,
        run_id,
        token: names::new_token(),
        tls: if options.tls {
            Some(crate::tls::generate_run_certificate()?)
        } else {
            None
        },
        created,
        observer: observer.clone(),
        inbox_tx,
    };
    let boot_started = Instant::now();
    let mut live: Vec<LiveNode> = Vec::new();

    // Plan: from the catalogue when the backend knows its node size, else from a probe node.
    let plan = match backend.expected_size().await? {
        Some(size) => {
            let plan =
                Plan::from_size(options.users, size, "catalogue", &options.sizing, max_nodes)?;
            observer.event(&Event::Planned(plan.clone()));
            booter.boot(0..plan.nodes as u32, &mut live).await?;
            plan
        }
        None => {
            booter.boot(0..1, &mut live).await?;
            let facts = &live[0].report.facts;
            options.sizing.check_node(&live[0].report.id, facts)?;
            let size = NodeSize {
                memory_bytes: facts.effective_memory_bytes,
                cores: facts.effective_cores,
            };
            let plan = Plan::from_size(options.users, size, "probe", &options.sizing, max_nodes)?;
            observer.event(&Event::Planned(plan.clone()));
            booter.boot(1..plan.nodes as u32, &mut live).await?;
            plan
        }
    };

    // Size: every node's own facts decide its share. Boot the shortfall when nodes turned out
    // smaller than planned.
    loop {
        for node in &live {
            booter
                .options
                .sizing
                .check_node(&node.report.id, &node.report.facts)?;
        }
        let capacity: u64 = live.iter().map(|n| n.report.capacity.users).sum();
        if capacity >= options.users {
            break;
        }
        let smallest = live
            .iter()
            .map(|n| n.report.capacity.users)
            .min()
            .unwrap_or(1);
        let extra = (options.users - capacity).div_ceil(smallest);
        let necessary = live.len() as u64 + extra;
        if necessary > max_nodes {
            return Err(Error::NecessaryNodesExceedsMaxAllowedNodes {
                necessary,
                max_allowed: max_nodes,
                users: options.users,
                users_per_node: smallest,
            });
        }
        let from = live.len() as u32;
        booter.boot(from..from + extra as u32, &mut live).await?;
    }
    let boot_s = boot_started.elapsed().as_secs_f64();

    // Assign user ranges by capacity, before any context exists anywhere.
    let capacities: Vec<u64> = live.iter().map(|n| n.report.capacity.users).collect();
    let shares = assign_users(options.users, &capacities);
    let mut next_user = 0;
    for (node, users) in live.iter_mut().zip(&shares) {
        node.report.users = *users;
        node.report.first_user_id = next_user;
        next_user += users;
    }
    tracing::info!(run_id, users = ?shares, "users assigned");
    observer.event(&Event::Assigned {
        users: shares.clone(),
    });
    // Nodes left without users are destroyed now rather than idling until the end.
    let (idle, mut live): (Vec<_>, Vec<_>) = live.into_iter().partition(|n| n.report.users == 0);
    for node in idle {
        let _ = node.commands.send(ControllerMessage::Shutdown);
        if backend.destroy(&node.handle).await.is_ok() {
            booter
                .created
                .lock()
                .expect("not poisoned")
                .retain(|n| n.id != node.handle.id);
        }
    }
    // Inbox messages carry the node index; map it to the node's place among those kept.
    let original_to_live: std::collections::HashMap<usize, usize> = live
        .iter()
        .enumerate()
        .map(|(i, n)| (n.report.index as usize, i))
        .collect();

    // Prepare every node (browser launched, users not started), then start them together.
    let users_per_node: Vec<u64> = live.iter().map(|n| n.report.users).collect();
    let terms = node_terms(scenario, options, &users_per_node);
    for (node, terms) in live.iter().zip(terms) {
        let assignment = Assignment {
            run_id: run_id.to_string(),
            scenario: scenario.name.clone(),
            base_url: scenario.base_url.clone(),
            first_user_id: node.report.first_user_id,
            users: node.report.users,
            duration_ms: options.duration.as_millis() as u64,
            iteration_timeout_ms: scenario.iteration_timeout.as_millis() as u64,
            start_interval_ms: terms.start_interval.as_millis() as u64,
            start_batch: terms.start_batch,
            steps: scenario.steps.clone(),
            step_timeout_ms: scenario.step_timeout.as_millis() as u64,
            data: scenario.data.clone(),
            workload: terms.workload,
            throttle: terms.throttle,
            no_browser: options.no_browser,
        };
        send(node, ControllerMessage::Prepare(Box::new(assignment)))?;
    }
    let mut prepared = 0;
    let prepare_deadline = Instant::now() + options.creation_timeout;
    while prepared < live.len() {
        let (position, message) = next_message(&mut inbox, prepare_deadline, "prepare").await?;
        let Some(&i) = original_to_live.get(&position) else {
            continue;
        };
        match message? {
            AgentMessage::Prepared { .. } => prepared += 1,
            AgentMessage::Failed { message } => {
                return Err(Error::RunFailed {
                    message: format!("node {} could not prepare: {message}", live[i].report.id),
                });
            }
            other => {
                return Err(Error::AgentConnection {
                    node: live[i].report.id.clone(),
                    message: format!("expected prepared, got {}", message_name(&other)),
                });
            }
        }
    }
    for node in &live {
        send(node, ControllerMessage::Start)?;
    }
    observer.event(&Event::Started);
    let started = Instant::now();
    let started_at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);

    // Observe until every node has finished, taking control requests meanwhile.
    let mut metrics = MetricsAggregate::default();
    let mut finished = vec![false; live.len()];
    let mut aborted: Option<String> = None;
    let mut run_deadline =
        started + options.duration + scenario.iteration_timeout + Duration::from_secs(30);
    let mut users_now = options.users;
    let mut users_total = options.users;
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let (mut requests, status) = match control {
        Some(c) => (Some(&mut c.requests), Some(&c.status)),
        None => (None, None),
    };
    while finished.iter().any(|f| !f) {
        let (position, message) = tokio::select! {
            message = next_message(&mut inbox, run_deadline, "run") => message?,
            Some(request) = async {
                match requests.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                handle_control(request, &mut live, &finished, &mut users_now, &mut users_total);
                continue;
            }
            _ = status_tick.tick() => {
                if let Some(status) = status {
                    status.send_replace(LiveStatus::of(run_id, scenario, &live, users_now, started, &metrics));
                }
                continue;
            }
        };
        let Some(&i) = original_to_live.get(&position) else {
            continue;
        };
        let node_id = live[i].report.id.clone();
        match message? {
            AgentMessage::Snapshot(snapshot) => {
                metrics.merge(&node_id, &snapshot)?;
                // Abort thresholds are judged on every merge: the cluster-wide data so far.
                if aborted.is_none()
                    && let Some(t) = scenario
                        .thresholds
                        .iter()
                        .find(|t| t.abort_on_fail && t.failing_now(&metrics))
                {
                    tracing::warn!(threshold = %t.expr, "threshold failed; aborting the run");
                    aborted = Some(t.expr.clone());
                    for node in &live {
                        let _ = node.commands.send(ControllerMessage::Stop { force: true });
                    }
                    run_deadline = Instant::now() + Duration::from_secs(30);
                }
            }
            AgentMessage::Finished(snapshot) => {
                metrics.merge(&node_id, &snapshot)?;
                finished[i] = true;
            }
            AgentMessage::Failed { message } => {
                return Err(Error::RunFailed {
                    message: format!("node {node_id}: {message}"),
                });
            }
            other => {
                return Err(Error::AgentConnection {
                    node: node_id,
                    message: format!("unexpected {} during the run", message_name(&other)),
                });
            }
        }
        let last = metrics.series.last();
        observer.event(&Event::Progress {
            elapsed: started.elapsed(),
            active_users: metrics.active_users(),
            iterations_ok: metrics.counter(counter::ITERATIONS_OK),
            iterations_failed: metrics.counter(counter::ITERATIONS_FAILED),
            iterations_per_s: last.map_or(0, |p| p.iterations_ok + p.iterations_failed),
            step_p95_ms: last.map_or(0.0, |p| p.step_p95_ms),
            nodes: live.len() - finished.iter().filter(|f| **f).count(),
        });
    }
    if let Some(status) = status {
        let mut last = LiveStatus::of(run_id, scenario, &live, users_now, started, &metrics);
        last.phase = "finished".into();
        status.send_replace(last);
    }
    let run_s = started.elapsed().as_secs_f64();
    for node in &live {
        let _ = node.commands.send(ControllerMessage::Shutdown);
    }
    metrics.finish();
    let mut nodes: Vec<NodeReport> = live.iter().map(|n| n.report.clone()).collect();
    for node in &mut nodes {
        if let Some(m) = metrics.nodes.get(&node.id) {
            node.iterations_ok = m.counters.get(counter::ITERATIONS_OK).copied().unwrap_or(0);
            node.iterations_failed = m
                .counters
                .get(counter::ITERATIONS_FAILED)
                .copied()
                .unwrap_or(0);
            node.snapshots = m.snapshots;
        }
    }

    let thresholds = scenario
        .thresholds
        .iter()
        .map(|t| {
            let mut verdict = t.evaluate(&metrics);
            if aborted.as_deref() == Some(t.expr.as_str()) {
                verdict.passed = false;
                verdict.aborted_run = true;
            }
            verdict
        })
        .collect();
    Ok(RunReport {
        schema_version: RESULT_SCHEMA_VERSION,
        liveload_version: env!("CARGO_PKG_VERSION").to_string(),
        backend: backend.name().to_string(),
        started_at_unix_ms,
        run_id: run_id.to_string(),
        scenario: scenario.name.clone(),
        plan,
        nodes,
        // In the open model every arrival is a user.
        users: match scenario.load {
            Load::Open { .. } => metrics.counter(counter::USERS_STARTED),
            Load::Closed { .. } => users_total,
        },
        users_succeeded: metrics.counter(counter::USERS_SUCCEEDED),
        users_failed: metrics.counter(counter::USERS_FAILED),
        iterations_ok: metrics.counter(counter::ITERATIONS_OK),
        iterations_failed: metrics.counter(counter::ITERATIONS_FAILED),
        boot_s,
        run_s,
        latencies: metrics.summaries(),
        counters: metrics.counters.clone(),
        thresholds,
        aborted,
        series: std::mem::take(&mut metrics.series),
        workload: describe_load(&scenario.load),
    })
}

/// The workload model in words, for reports.
pub fn describe_load(load: &Load) -> String {
    match load {
        Load::Closed { ramp_up: None, .. } => {
            "closed model: every user loops over the steps".into()
        }
        Load::Closed {
            ramp_up: Some(r),
            ramp_steps,
        } => format!(
            "closed model: users loop over the steps, starting over {r:?}{}",
            ramp_steps.map_or(String::new(), |s| format!(" in {s} steps"))
        ),
        Load::Open {
            rate,
            ramp_to,
            max_users,
        } => format!(
            "open model: {rate}{} arrivals/s, at most {max_users} at once; latency (`iteration`) is \
             measured from each arrival's scheduled time, so it is free of coordinated omission",
            ramp_to.map_or(String::new(), |r| format!(" rising to {r}"))
        ),
    }
}

/// Each node's share of the workload and of the cluster-wide throttles, by its share of users,
/// and the time between its user starts.
///
/// Splitting by share keeps every cluster-wide limit: the nodes' rates add up to the cluster's
/// rate and their parallelism to the cluster's parallelism, so the cluster never exceeds a
/// limit even though no node asks another for permission. (A node whose users are slow leaves
/// its share unused; the cluster then runs below the limit, never above.)
pub fn node_terms(
    scenario: &Scenario,
    options: &RunOptions,
    users_per_node: &[u64],
) -> Vec<NodeTerms> {
    let total: u64 = users_per_node.iter().sum::<u64>().max(1);
    let parallelism = scenario
        .throttle
        .parallelism
        .map(|limit| assign_users(limit, users_per_node));
    // The cluster-wide least time between iteration starts, from the rate and interarrival.
    let cluster_interval = [
        scenario
            .throttle
            .rate
            .map(|(limit, per)| per.as_secs_f64() / limit as f64),
        scenario.throttle.interarrival.map(|d| d.as_secs_f64()),
    ]
    .into_iter()
    .flatten()
    .reduce(f64::max);
    users_per_node
        .iter()
        .enumerate()
        .map(|(i, &users)| {
            let share = users as f64 / total as f64;
            let workload = match &scenario.load {
                Load::Closed { .. } => Workload::Closed,
                Load::Open { rate, ramp_to, .. } => Workload::Open {
                    rate_per_s: rate * share,
                    ramp_to_per_s: ramp_to.unwrap_or(*rate) * share,
                },
            };
            let throttle =
                (cluster_interval.is_some() || parallelism.is_some()).then(|| NodeThrottle {
                    min_interval_us: cluster_interval
                        .map(|seconds| (seconds / share.max(f64::MIN_POSITIVE) * 1e6) as u64),
                    max_concurrent: parallelism.as_ref().map(|p| p[i]),
                });
            let (start_interval, start_batch) = match &scenario.load {
                // A staircase: `steps` equal batches, one every ramp_up / steps.
                Load::Closed {
                    ramp_up: Some(ramp_up),
                    ramp_steps: Some(steps),
                } if users > 0 => (
                    *ramp_up / (*steps).max(1),
                    users.div_ceil(u64::from((*steps).max(1))),
                ),
                Load::Closed {
                    ramp_up: Some(ramp_up),
                    ..
                } if users > 0 => (*ramp_up / users.min(u32::MAX as u64) as u32, 1),
                _ => (options.start_interval, 1),
            };
            NodeTerms {
                workload,
                throttle,
                start_interval,
                start_batch,
            }
        })
        .collect()
}

/// One node's share of a run's workload and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTerms {
    /// How users arrive on the node.
    pub workload: Workload,
    /// Its share of the throttles.
    pub throttle: Option<NodeThrottle>,
    /// Time between two batches of user starts.
    pub start_interval: Duration,
    /// Users per batch.
    pub start_batch: u64,
}

/// A request to change a running test.
#[derive(Debug)]
pub enum ControlRequest {
    /// Start `count` more users; answers the new user count.
    AddUsers {
        /// How many.
        count: u64,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<std::result::Result<u64, String>>,
    },
    /// Stop `count` users (gracefully, or at once with `force`); answers the new user count.
    RemoveUsers {
        /// How many.
        count: u64,
        /// Stop now instead of after the current iteration.
        force: bool,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<std::result::Result<u64, String>>,
    },
}

/// A running test as the control endpoint shows it (refreshed every second).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveStatus {
    /// The run's id.
    pub run_id: String,
    /// The scenario's name.
    pub scenario: String,
    /// `running` or `finished` (`starting` before the first refresh).
    pub phase: String,
    /// Seconds since the start signal.
    pub elapsed_s: f64,
    /// Users the run should have now (after adds and removes).
    pub target_users: u64,
    /// Users running now, as the agents last reported.
    pub active_users: u64,
    /// Per node: id, assigned users, capacity.
    pub nodes: Vec<LiveNodeStatus>,
    /// Counters so far.
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Latency summaries so far.
    pub latencies: std::collections::BTreeMap<String, LatencySummary>,
}

/// One node in [`LiveStatus`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveNodeStatus {
    /// The node's id.
    pub id: String,
    /// Users assigned to it now.
    pub users: u64,
    /// Users its facts allow.
    pub capacity: u64,
}

impl LiveStatus {
    fn of(
        run_id: &str,
        scenario: &Scenario,
        live: &[LiveNode],
        target_users: u64,
        started: Instant,
        metrics: &MetricsAggregate,
    ) -> LiveStatus {
        LiveStatus {
            run_id: run_id.to_string(),
            scenario: scenario.name.clone(),
            phase: "running".into(),
            elapsed_s: started.elapsed().as_secs_f64(),
            target_users,
            active_users: metrics.active_users(),
            nodes: live
                .iter()
                .map(|n| LiveNodeStatus {
                    id: n.report.id.clone(),
                    users: n.report.users,
                    capacity: n.report.capacity.users,
                })
                .collect(),
            counters: metrics.counters.clone(),
            latencies: metrics.summaries(),
        }
    }
}

/// The run's end of a control channel.
#[derive(Debug)]
pub struct ControlEnd {
    requests: mpsc::UnboundedReceiver<ControlRequest>,
    status: tokio::sync::watch::Sender<LiveStatus>,
}

/// The controller's end of a control channel: send requests, watch the status.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    /// Requests to the run.
    pub requests: mpsc::UnboundedSender<ControlRequest>,
    /// The run's live status.
    pub status: tokio::sync::watch::Receiver<LiveStatus>,
}

/// A new control channel: give the [`ControlEnd`] to [`run_controlled`], keep the handle.
pub fn control_channel() -> (ControlHandle, ControlEnd) {
    let (requests_tx, requests) = mpsc::unbounded_channel();
    let (status, status_rx) = tokio::sync::watch::channel(LiveStatus {
        phase: "starting".into(),
        ..Default::default()
    });
    (
        ControlHandle {
            requests: requests_tx,
            status: status_rx,
        },
        ControlEnd { requests, status },
    )
}

/// Add users where capacity is spare, or remove them where users are, in proportion.
fn handle_control(
    request: ControlRequest,
    live: &mut [LiveNode],
    finished: &[bool],
    users_now: &mut u64,
    users_total: &mut u64,
) {
    match request {
        ControlRequest::AddUsers { count, reply } => {
            let spare: Vec<u64> = live
                .iter()
                .zip(finished)
                .map(|(n, done)| {
                    if *done {
                        0
                    } else {
                        n.report.capacity.users.saturating_sub(n.report.users)
                    }
                })
                .collect();
            let room: u64 = spare.iter().sum();
            if count > room {
                let _ = reply.send(Err(format!(
                    "the cluster has room for {room} more users (each node's capacity comes from its facts); \
                     start a run with more nodes for more"
                )));
                return;
            }
            for (node, share) in live.iter_mut().zip(assign_users(count, &spare)) {
                if share > 0 {
                    let _ = node.commands.send(ControllerMessage::AddUsers {
                        first_user_id: *users_total,
                        count: share,
                    });
                    *users_total += share;
                    node.report.users += share;
                }
            }
            *users_now += count;
            tracing::info!(count, users = *users_now, "users added");
            let _ = reply.send(Ok(*users_now));
        }
        ControlRequest::RemoveUsers {
            count,
            force,
            reply,
        } => {
            let assigned: Vec<u64> = live
                .iter()
                .zip(finished)
                .map(|(n, done)| if *done { 0 } else { n.report.users })
                .collect();
            let count = count.min(assigned.iter().sum());
            for (node, share) in live.iter_mut().zip(assign_users(count, &assigned)) {
                if share > 0 {
                    let _ = node.commands.send(ControllerMessage::RemoveUsers {
                        count: share,
                        force,
                    });
                    node.report.users -= share;
                }
            }
            *users_now -= count.min(*users_now);
            tracing::info!(count, force, users = *users_now, "users removed");
            let _ = reply.send(Ok(*users_now));
        }
    }
}

fn send(node: &LiveNode, message: ControllerMessage) -> Result<()> {
    node.commands
        .send(message)
        .map_err(|_| Error::AgentConnection {
            node: node.report.id.clone(),
            message: "the link to the agent is closed".into(),
        })
}

async fn next_message(
    inbox: &mut Inbox,
    deadline: Instant,
    phase: &str,
) -> Result<(usize, Result<AgentMessage>)> {
    match tokio::time::timeout_at(deadline, inbox.recv()).await {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(Error::RunFailed {
            message: format!("every agent link closed during {phase}"),
        }),
        Err(_) => Err(Error::RunFailed {
            message: format!("agents did not answer in time during {phase}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_before_anything_is_created() {
        let ok = RunOptions::new("demo", 1, Duration::from_secs(1));
        ok.validate().unwrap();
        let mut zero_nodes = ok.clone();
        zero_nodes.max_allowed_nodes = 0;
        assert_eq!(
            zero_nodes.validate().unwrap_err().code(),
            "max_allowed_nodes_invalid"
        );
        let mut bad_name = ok.clone();
        bad_name.cluster_name = "-x".into();
        assert_eq!(
            bad_name.validate().unwrap_err().code(),
            "cluster_name_invalid"
        );
        let mut no_users = ok.clone();
        no_users.users = 0;
        assert_eq!(no_users.validate().unwrap_err().code(), "invalid_option");
        let mut bad_factor = ok;
        bad_factor.sizing.memory_safety_factor = 1.5;
        assert_eq!(bad_factor.validate().unwrap_err().code(), "invalid_option");
    }

    #[test]
    fn throttles_and_arrivals_split_by_share_and_add_up() {
        let mut scenario = Scenario::new("s", "http://x", Vec::new());
        scenario.throttle.rate = Some((30, Duration::from_secs(1)));
        scenario.throttle.parallelism = Some(10);
        scenario.load = Load::Open {
            rate: 12.0,
            ramp_to: Some(24.0),
            max_users: 30,
        };
        let options = RunOptions::new("s", 30, Duration::from_secs(10));
        let terms = node_terms(&scenario, &options, &[10, 15, 5]);
        let rate: f64 = terms
            .iter()
            .map(|t| 1e6 / t.throttle.as_ref().unwrap().min_interval_us.unwrap() as f64)
            .sum();
        assert!(
            (rate - 30.0).abs() < 0.01,
            "node rates add up to the limit: {rate}"
        );
        let parallel: u64 = terms
            .iter()
            .map(|t| t.throttle.as_ref().unwrap().max_concurrent.unwrap())
            .sum();
        assert_eq!(parallel, 10);
        let arrivals: f64 = terms
            .iter()
            .map(|t| match &t.workload {
                Workload::Open { rate_per_s, .. } => *rate_per_s,
                Workload::Closed => 0.0,
            })
            .sum();
        assert!((arrivals - 12.0).abs() < 1e-9);
        scenario.load = Load::Closed {
            ramp_up: Some(Duration::from_secs(10)),
            ramp_steps: None,
        };
        let terms = node_terms(&scenario, &options, &[10, 20]);
        assert_eq!(terms[0].start_interval, Duration::from_secs(1));
        assert_eq!(terms[1].start_interval, Duration::from_millis(500));
        // A staircase of 4 steps over 10 s: batches every 2.5 s.
        scenario.load = Load::Closed {
            ramp_up: Some(Duration::from_secs(10)),
            ramp_steps: Some(4),
        };
        let terms = node_terms(&scenario, &options, &[10, 20]);
        assert_eq!(terms[0].start_interval, Duration::from_millis(2500));
        assert_eq!((terms[0].start_batch, terms[1].start_batch), (3, 5));
    }

    #[test]
    fn heartbeats_are_well_inside_the_grace() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(30)),
            Duration::from_secs(2)
        );
        assert!(heartbeat_interval(Duration::from_secs(1)) <= Duration::from_millis(250));
    }
}
