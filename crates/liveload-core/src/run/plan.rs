//! Phase 1, plan: how many nodes of which size the users need, and what that costs — before
//! anything is created.
//!
//! The plan comes from the backend's catalogue when it knows its node size in advance
//! ([`Backend::expected_size`]); otherwise from the real facts of one probe node. Either way
//! it is only the starting point: every node's own facts decide its share later (see
//! [`super::size`]).

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::boot::wait_ready_or_destroy;
use super::{RunOptions, link_needs_tls};
use crate::agent_client::AgentConnection;
use crate::backend::{Backend, NodeSize, NodeSpec};
use crate::sizing::{NodeCapacity, SizingConfig, necessary_nodes};
use crate::{Error, Result, names};

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
    /// When the size is the backend's built-in catalogue rather than the provider's answer for
    /// this account: which catalogue, and that it was not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_note: Option<String>,
    /// The formula's intermediate figures.
    pub capacity: NodeCapacity,
    /// The limit in force (`max_allowed_nodes`, or lower if the backend holds fewer).
    pub max_nodes: u64,
    /// The sizing knobs used.
    pub sizing: SizingConfig,
    /// What one node costs per hour in USD, when the backend knows (cloud backends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_hourly_price: Option<f64>,
    /// The least time creating the planned nodes takes at the provider's documented create
    /// rate, in seconds (each node's boot comes on top), when the provider limits creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_floor_s: Option<f64>,
    /// How to boot faster, when the floor is long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_advice: Option<String>,
}

impl Plan {
    /// Fill in the boot-time floor from `backend`'s create rate.
    pub fn with_boot_floor(mut self, backend: &dyn Backend) -> Plan {
        if let Some(rate) = backend.create_rate() {
            let floor = rate.floor(self.nodes).as_secs_f64();
            self.boot_floor_s = Some(floor);
            // A minute of queued creates is worth a hint; less is noise.
            if floor >= 60.0 {
                self.boot_advice = rate.advice.map(str::to_string);
            }
        }
        self
    }
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
            size_note: size.catalogue.map(|from| {
                format!("catalogue figures ({from}); not checked against your account")
            }),
            capacity,
            max_nodes,
            sizing: *sizing,
            node_hourly_price: None,
            boot_floor_s: None,
            boot_advice: None,
        })
    }
}

/// The most nodes a run may hold: `max_allowed_nodes`, or less when the backend itself holds
/// fewer (the local backend's shares of one host).
pub fn max_nodes(backend: &dyn Backend, options: &RunOptions) -> u64 {
    backend
        .node_limit()
        .map_or(options.max_allowed_nodes, |limit| {
            limit.min(options.max_allowed_nodes)
        })
}

/// What a run would take and cost, from the catalogue, for the confirmation a billed backend
/// needs. Core computes it; the CLI (or an API) shows it and asks.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// The backend's name.
    pub backend: &'static str,
    /// The catalogue plan.
    pub plan: Plan,
    /// Hours each node is expected to be billed: the run's duration, plus the creation timeout
    /// (a node may take that long to boot), plus the boot-time floor of the provider's create
    /// rate. Iterations that run past the duration and teardown come on top; the cap on the
    /// cost so far (`--max-cost`) holds whatever happens.
    pub hours: f64,
    /// The estimated cost in USD, when the backend knows its price.
    pub cost_usd: Option<f64>,
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} backend: {} node(s) of {:.1} GiB / {:.0} cores for {} users",
            self.backend,
            self.plan.nodes,
            self.plan.node_memory_bytes as f64 / (1u64 << 30) as f64,
            self.plan.node_cores,
            self.plan.users
        )?;
        if let Some(cost) = self.cost_usd {
            write!(f, ", about ${cost:.2} for {:.0} min", self.hours * 60.0)?;
        }
        if let Some(floor) = self.plan.boot_floor_s.filter(|f| *f >= 1.0) {
            write!(
                f,
                "; creating them takes at least {} at the provider's rate limit",
                human_duration(floor)
            )?;
        }
        if let Some(advice) = &self.plan.boot_advice {
            write!(f, " ({advice})")?;
        }
        Ok(())
    }
}

/// `95 s`, `5.6 min`.
pub fn human_duration(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{:.1} min", seconds / 60.0)
    }
}

/// The catalogue estimate of a run, or `None` when the backend has no catalogue (its nodes are
/// known only once measured).
pub async fn estimate(backend: &dyn Backend, options: &RunOptions) -> Result<Option<Estimate>> {
    let Some(size) = backend.expected_size().await? else {
        return Ok(None);
    };
    let mut plan = Plan::from_size(
        options.users,
        size,
        "catalogue",
        &options.sizing,
        max_nodes(backend, options),
    )?;
    plan.node_hourly_price = backend.hourly_price();
    let plan = plan.with_boot_floor(backend);
    let hours = ((options.duration)
        .saturating_add(options.creation_timeout)
        .as_secs_f64()
        + plan.boot_floor_s.unwrap_or(0.0))
        / 3600.0;
    let cost_usd = plan
        .node_hourly_price
        .map(|price| price * plan.nodes as f64 * hours);
    Ok(Some(Estimate {
        backend: backend.name(),
        plan,
        hours,
        cost_usd,
    }))
}

/// Plan without running: from the backend's catalogue when it has one, else by booting one
/// probe node, reading its facts over the agent link and destroying it (SSH hosts, or any
/// backend whose nodes are only known once measured).
pub async fn plan(backend: &dyn Backend, options: &RunOptions) -> Result<Plan> {
    if let Some(estimate) = estimate(backend, options).await? {
        return Ok(estimate.plan);
    }
    // A probe node is a real node: a billed backend needs the user's consent for it too.
    super::require_confirmation(backend, options, None)?;
    let tls = if link_needs_tls(backend, options) {
        Some(crate::tls::generate_run_certificate()?)
    } else {
        None
    };
    let spec = NodeSpec {
        run_id: names::new_run_id(&format!("{}-plan", options.cluster_name)),
        index: 0,
        token: names::new_token(),
        ttl: options
            .creation_timeout
            .saturating_add(Duration::from_secs(60)),
        grace: Duration::from_secs(30),
        tls: tls.as_ref().map(|(agent, _)| agent.clone()),
        no_browser: options.no_browser,
    };
    let node = backend.create(&spec).await?;
    let measured = async {
        let mut endpoint = wait_ready_or_destroy(backend, &node, options.creation_timeout).await?;
        if let (Some((_, pin)), None, None) = (&tls, &endpoint.tls, &endpoint.proxy) {
            endpoint.tls = Some(pin.clone());
        }
        let deadline = super::deadline_after(Instant::now(), options.creation_timeout);
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
        catalogue: None,
    };
    let max_nodes = max_nodes(backend, options);
    let mut plan = Plan::from_size(options.users, size, "probe", &options.sizing, max_nodes)?;
    if capacity.users < plan.users_per_node {
        // The host's own cap (max_users) is lower than its size allows.
        plan.users_per_node = capacity.users;
        plan.capacity = capacity;
        plan.nodes = necessary_nodes(options.users, capacity.users, max_nodes)?;
    }
    plan.node_hourly_price = backend.hourly_price();
    Ok(plan.with_boot_floor(backend))
}
