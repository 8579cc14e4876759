//! What a finished run reports: the [`RunReport`] serialised as `result.json`, and how it is
//! built from the merged metrics once every node has finished.

use serde::Serialize;

use super::Plan;
use super::observe::Observed;
use super::terms::describe_load;
use crate::metrics::{LatencySummary, counter};
use crate::scenario::{Load, Scenario};
use crate::sizing::NodeCapacity;
use crate::threshold::Verdict;
use liveload_proto::NodeFacts;

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
    /// Seconds from the start of its create to a completed handshake.
    pub ready_after_s: f64,
    /// Seconds its create call took: waiting for the provider's rate limit (Fly creates about
    /// one machine a second per app) plus the call itself. The creation timeout starts after.
    #[serde(default)]
    pub create_s: f64,
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
pub const RESULT_SCHEMA_VERSION: u32 = 2;

/// What a finished run reports; serialised as `result.json` (see docs/metrics-and-reports.md).
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
    /// What the nodes cost from their creates to the end of the run, USD, when the backend
    /// knows its price (teardown's seconds are not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The run was stopped because its cost reached `--max-cost`.
    #[serde(default)]
    pub cost_cap_reached: bool,
    /// Nodes lost during the run, with why and how many users failed with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_nodes: Vec<super::LostNode>,
    /// Each node's time series (users, iterations, memory, CPU), bounded
    /// ([`super::series`]); a node that ran hot says why. New in schema version 2.
    #[serde(default)]
    pub node_series: Vec<super::series::NodeSeries>,
    /// Where each error was first seen, and the failures captured (`on_failure`).
    #[serde(default)]
    pub failures: crate::failures::Failures,
}

impl RunReport {
    /// The exit code of `liveload run` for this report: 10 when the cost cap stopped it, 8
    /// when a threshold failed, 7 when users failed, else 0.
    pub fn exit_code(&self) -> i32 {
        use crate::error::exit_code;
        if self.cost_cap_reached {
            exit_code::COST_CAP_REACHED
        } else if !self.thresholds_passed() {
            exit_code::THRESHOLD_FAILED
        } else if self.succeeded() {
            exit_code::OK
        } else {
            exit_code::RUN_FAILED
        }
    }

    /// Did every user succeed?
    pub fn succeeded(&self) -> bool {
        self.users_failed == 0 && self.users_succeeded == self.users && self.lost_nodes.is_empty()
    }

    /// Did every threshold hold?
    pub fn thresholds_passed(&self) -> bool {
        self.thresholds.iter().all(|t| t.passed)
    }
}

/// What the run knew before users started, for [`build`].
pub(super) struct Booted<'a> {
    /// The backend's name.
    pub backend: &'static str,
    /// The run's id.
    pub run_id: &'a str,
    /// The plan it started from.
    pub plan: Plan,
    /// Seconds from the first create to every agent's facts in.
    pub boot_s: f64,
}

/// The report of a finished run: per-node figures from each node's own metrics, cluster totals
/// from the exact merge, every threshold judged on the whole run.
pub(super) fn build(
    booted: Booted<'_>,
    scenario: &Scenario,
    mut nodes: Vec<NodeReport>,
    mut observed: Observed,
) -> RunReport {
    let metrics = &mut observed.metrics;
    metrics.finish();
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
            let mut verdict = t.evaluate(metrics);
            if observed.aborted.as_deref() == Some(t.expr.as_str()) {
                verdict.passed = false;
                verdict.aborted_run = true;
            }
            verdict
        })
        .collect();
    RunReport {
        schema_version: RESULT_SCHEMA_VERSION,
        liveload_version: env!("CARGO_PKG_VERSION").to_string(),
        backend: booted.backend.to_string(),
        started_at_unix_ms: observed.started_at_unix_ms,
        run_id: booted.run_id.to_string(),
        scenario: scenario.name.clone(),
        plan: booted.plan,
        nodes,
        // In the open model every arrival is a user.
        users: match scenario.load {
            Load::Open { .. } => metrics.counter(counter::USERS_STARTED),
            Load::Closed { .. } => observed.users_total,
        },
        users_succeeded: metrics.counter(counter::USERS_SUCCEEDED),
        users_failed: metrics.counter(counter::USERS_FAILED),
        iterations_ok: metrics.counter(counter::ITERATIONS_OK),
        iterations_failed: metrics.counter(counter::ITERATIONS_FAILED),
        boot_s: booted.boot_s,
        run_s: observed.run_s,
        latencies: metrics.summaries(),
        counters: metrics.counters.clone(),
        thresholds,
        aborted: observed.aborted,
        series: std::mem::take(&mut metrics.series),
        workload: describe_load(&scenario.load),
        cost_usd: observed.cost_usd,
        cost_cap_reached: observed.cost_cap_reached,
        lost_nodes: observed.lost,
        node_series: observed.series,
        failures: std::mem::take(&mut metrics.failures),
    }
}
