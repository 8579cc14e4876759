//! Changing a running test from outside: add or remove users, and watch the live status. The
//! CLI serves these over HTTP (`liveload users add N`); a library caller uses the channel.

use liveload_proto::ControllerMessage;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::boot::LiveNode;
use crate::metrics::{LatencySummary, MetricsAggregate};
use crate::scenario::Scenario;
use crate::sizing::assign_users;

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
    /// What the nodes have cost so far, USD, when the backend knows its price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The latest second the cluster has closed (every node's snapshot of it merged): users,
    /// iterations and step percentiles of that second, as the report's charts draw them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_second: Option<crate::metrics::SecondPoint>,
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
    /// Its latest point: users, iterations, memory and CPU (none before its first snapshot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<super::series::SeriesPoint>,
    /// Why it runs hot, once it did (its latencies are suspect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot: Option<String>,
}

impl LiveStatus {
    pub(super) fn of(
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
                    now: None,
                    hot: None,
                })
                .collect(),
            counters: metrics.counters.clone(),
            latencies: metrics.summaries(),
            cost_usd: None,
            last_second: metrics.series.last().copied(),
        }
    }
}

/// The run's end of a control channel.
#[derive(Debug)]
pub struct ControlEnd {
    pub(super) requests: mpsc::UnboundedReceiver<ControlRequest>,
    pub(super) status: tokio::sync::watch::Sender<LiveStatus>,
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
pub(super) fn handle_control(
    request: ControlRequest,
    live: &mut [LiveNode],
    finished: &[bool],
    users: (&mut u64, &mut u64),
    scenario: &crate::scenario::Scenario,
) {
    let (users_now, users_total) = users;
    if matches!(scenario.load, crate::scenario::Load::Open { .. }) {
        // Users arrive at a rate in the open model: a count to add or remove has no meaning,
        // and accepting it silently would let a user believe the load changed.
        let refusal = Err(
            "this run uses the open model (users arrive at a rate): adding or removing users \
             applies to closed-model runs only; start another run with the rate you want"
                .to_string(),
        );
        match request {
            ControlRequest::AddUsers { reply, .. } | ControlRequest::RemoveUsers { reply, .. } => {
                let _ = reply.send(refusal);
            }
        }
        return;
    }
    match request {
        ControlRequest::AddUsers { reply, .. }
            if scenario.data_mode == crate::scenario::DataMode::Unique =>
        {
            // Each node received exactly its users' rows at the start.
            let _ = reply.send(Err(
                "this run's data uses mode unique: its rows were dealt \
                one per user at the start, so users cannot be added; start a run with more users"
                    .to_string(),
            ));
        }
        ControlRequest::AddUsers { count, reply } => {
            let answer = add_users(count, live, finished, users_now, users_total);
            let _ = reply.send(answer);
        }
        ControlRequest::RemoveUsers {
            count,
            force,
            reply,
        } => {
            let answer = remove_users(count, force, live, finished, users_now);
            let _ = reply.send(answer);
        }
    }
}

/// Spread `count` new users over the nodes' spare capacity (their facts decide it), or refuse
/// when the cluster has no room: a node is never pushed past what its memory and cores allow.
fn add_users(
    count: u64,
    live: &mut [LiveNode],
    finished: &[bool],
    users_now: &mut u64,
    users_total: &mut u64,
) -> Result<u64, String> {
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
        return Err(format!(
            "the cluster has room for {room} more users (each node's capacity comes from its facts); \
             start a run with more nodes for more"
        ));
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
    Ok(*users_now)
}

/// Stop `count` users, taken from the nodes in proportion to the users they run.
fn remove_users(
    count: u64,
    force: bool,
    live: &mut [LiveNode],
    finished: &[bool],
    users_now: &mut u64,
) -> Result<u64, String> {
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
    Ok(*users_now)
}
