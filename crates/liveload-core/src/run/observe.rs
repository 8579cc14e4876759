//! Phase 6, observe: merge every node's snapshots as they arrive, judge abort thresholds on the
//! cluster-wide data, answer control requests and publish the live status, until every node
//! has finished.
//!
//! Snapshots carry whole histograms, so merging is exact: a cluster percentile is computed
//! from every node's recorded values, never by averaging the nodes' percentiles.

use std::time::Duration;

use liveload_proto::{AgentMessage, ControllerMessage};
use tokio::time::Instant;

use super::boot::{Inbox, LiveNode};
use super::control::{ControlEnd, LiveStatus, handle_control};
use super::coordinate::{Coordinator, Release};
use super::prepare::Positions;
use super::series::{NodeSeries, points_per_node};
use super::{Event, Observer, RunOptions, next_message};
use crate::agent_client::message_name;
use crate::metrics::{MetricsAggregate, counter};
use crate::scenario::Scenario;
use crate::{Error, Result};

/// A node lost during the run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct LostNode {
    /// The node's id.
    pub id: String,
    /// What happened: the link broke (the agent died), or it fell silent past the grace.
    pub reason: String,
    /// Its users that had not finished when it was lost: counted failed.
    pub users_failed: u64,
    /// Seconds after the start signal.
    pub at_s: f64,
}

/// What observing a run produced, for the report.
pub(super) struct Observed {
    /// Nodes lost during the run.
    pub lost: Vec<LostNode>,
    /// Every node's metrics, merged.
    pub metrics: MetricsAggregate,
    /// The threshold that aborted the run, if one did.
    pub aborted: Option<String>,
    /// Seconds from the start signal to every node finished.
    pub run_s: f64,
    /// Users the run had in all (the assignment plus every `users add`).
    pub users_total: u64,
    /// When users started, as Unix milliseconds.
    pub started_at_unix_ms: u64,
    /// Each node's time series, in node order.
    pub series: Vec<NodeSeries>,
    /// What the nodes cost until the end of observation, when the backend knows its price.
    pub cost_usd: Option<f64>,
    /// The run stopped because its cost reached `--max-cost`.
    pub cost_cap_reached: bool,
}

/// The run's view while it observes.
pub(super) struct Observation<'a> {
    pub live: Vec<LiveNode>,
    pub positions: &'a Positions,
    pub scenario: &'a Scenario,
    pub options: &'a RunOptions,
    pub run_id: &'a str,
    pub observer: &'a dyn Observer,
    /// What one node costs per hour, USD, when known.
    pub hourly_price: Option<f64>,
}

/// What one message did to the run.
enum Outcome {
    /// Nothing the loop must act on.
    Merged,
    /// The run is stopping (a threshold failed, or a node was lost under the abort policy):
    /// the deadline shrinks.
    Aborted,
}

/// The state of every node while the run goes on.
struct Progress {
    finished: Vec<bool>,
    last_heard: Vec<Instant>,
    lost: Vec<LostNode>,
    aborted: Option<String>,
    cost_cap_reached: bool,
    /// Each node's time series, by node id (nodes added at runtime get theirs on arrival).
    series: std::collections::BTreeMap<String, NodeSeries>,
    /// Groups forming at `coordinate` steps.
    coordinator: Coordinator,
    /// The `--trace` file, when asked for.
    trace: Option<super::trace_file::TraceWriter>,
}

impl Observation<'_> {
    /// Observe until every node has finished, taking control requests meanwhile.
    pub async fn run(
        mut self,
        inbox: &mut Inbox,
        control: Option<&mut ControlEnd>,
    ) -> Result<(Vec<LiveNode>, Observed)> {
        let started = Instant::now();
        let started_at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut metrics = MetricsAggregate::default();
        let mut p = Progress {
            finished: vec![false; self.live.len()],
            last_heard: vec![started; self.live.len()],
            lost: Vec::new(),
            aborted: None,
            cost_cap_reached: false,
            series: std::collections::BTreeMap::new(),
            coordinator: Coordinator::for_scenario(self.scenario),
            trace: match &self.options.trace {
                Some(trace) => Some(super::trace_file::TraceWriter::create(&trace.path)?),
                None => None,
            },
        };
        // Saturating, then capped: a scenario built in code may hold any duration. A user's
        // last iteration may end an iteration timeout after the duration, and its `on_stop`
        // one more.
        let on_stop = !self.scenario.user_loop.on_stop.is_empty();
        let after_duration =
            (self.scenario.iteration_timeout).saturating_mul(1 + u32::from(on_stop));
        let mut deadline = super::deadline_after(
            started,
            (self.options.duration)
                .saturating_add(after_duration)
                .saturating_add(Duration::from_secs(30)),
        );
        let mut users_now = self.options.users;
        let mut users_total = self.options.users;
        let mut status_tick = tokio::time::interval(Duration::from_secs(1));
        let (mut requests, status) = match control {
            Some(c) => (Some(&mut c.requests), Some(&c.status)),
            None => (None, None),
        };
        while p.finished.iter().any(|f| !f) {
            let group_due = p.coordinator.next_deadline();
            let (position, message) = tokio::select! {
                message = next_message(inbox, deadline, "run") => message?,
                _ = async move {
                    match group_due {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    for release in p.coordinator.expired(Instant::now()) {
                        self.send_release(&release);
                    }
                    continue;
                }
                Some(request) = async {
                    match requests.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    handle_control(request, &mut self.live, &p.finished, (&mut users_now, &mut users_total), self.scenario);
                    continue;
                }
                _ = status_tick.tick() => {
                    if let Outcome::Aborted = self.find_silent(&mut p, &mut metrics, started) {
                        deadline = Instant::now() + Duration::from_secs(30);
                    }
                    if let Outcome::Aborted = self.check_cost(&mut p) {
                        deadline = Instant::now() + Duration::from_secs(30);
                    }
                    if let Some(status) = status {
                        let mut now = LiveStatus::of(self.run_id, self.scenario, &self.live, users_now, started, &metrics);
                        now.cost_usd = self.cost_so_far();
                        for node in &mut now.nodes {
                            if let Some(series) = p.series.get(&node.id) {
                                node.now = series.points.last().copied();
                                node.hot = series.hot.clone();
                            }
                        }
                        status.send_replace(now);
                    }
                    continue;
                }
            };
            let Some(&i) = self.positions.get(&position) else {
                continue;
            };
            let outcome = match message {
                Ok(message) => {
                    p.last_heard[i] = Instant::now();
                    self.on_message(i, message, &mut metrics, &mut p)?
                }
                // The link broke: the agent died, or its machine did.
                Err(e) if !p.finished[i] => {
                    self.lose(i, e.to_string(), &mut metrics, &mut p, started)
                }
                Err(_) => Outcome::Merged,
            };
            if let Outcome::Aborted = outcome {
                deadline = Instant::now() + Duration::from_secs(30);
            }
            self.progress(&metrics, &p.finished, started);
        }
        if let Some(status) = status {
            let mut last = LiveStatus::of(
                self.run_id,
                self.scenario,
                &self.live,
                users_now,
                started,
                &metrics,
            );
            last.phase = "finished".into();
            status.send_replace(last);
        }
        if let Some(trace) = p.trace.take() {
            tracing::info!(
                records = trace.written,
                refused = trace.refused,
                "trace written"
            );
            if let Err(e) = trace.finish() {
                tracing::warn!(error = %e, "the trace file is incomplete");
            }
        }
        let cost_usd = self.cost_so_far();
        let mut series: Vec<NodeSeries> = p.series.into_values().collect();
        series.iter_mut().for_each(NodeSeries::finish);
        series.sort_by_key(|s| {
            self.live
                .iter()
                .position(|n| n.report.id == s.node)
                .unwrap_or(usize::MAX)
        });
        let observed = Observed {
            series,
            cost_usd,
            cost_cap_reached: p.cost_cap_reached,
            lost: p.lost,
            metrics,
            aborted: p.aborted,
            run_s: started.elapsed().as_secs_f64(),
            users_total,
            started_at_unix_ms,
        };
        Ok((self.live, observed))
    }

    /// Merge one node's message; abort thresholds are judged on every merge.
    fn on_message(
        &self,
        i: usize,
        message: AgentMessage,
        metrics: &mut MetricsAggregate,
        p: &mut Progress,
    ) -> Result<Outcome> {
        let node_id = &self.live[i].report.id;
        if let AgentMessage::Snapshot(snapshot) | AgentMessage::Finished(snapshot) = &message
            && let Some(trace) = p.trace.as_mut()
        {
            let budget = self.options.trace.as_ref().map_or(0, |t| t.bytes_per_s);
            // A trace that cannot be written (a full disk) ends the trace, not the run.
            if let Err(e) = trace.write(node_id, &snapshot.records, budget) {
                tracing::warn!(error = %e, "the trace file stops here");
                p.trace = None;
            }
        }
        if let AgentMessage::Snapshot(snapshot) | AgentMessage::Finished(snapshot) = &message {
            let limit = points_per_node(self.live.len());
            p.series
                .entry(node_id.clone())
                .or_insert_with(|| {
                    // The closed model makes every user's context at the start.
                    let contexts = match self.scenario.load {
                        crate::scenario::Load::Open { .. } => 0,
                        _ => self.live[i].report.users,
                    };
                    NodeSeries::new(
                        node_id,
                        &self.live[i].report.facts,
                        &self.options.sizing,
                        contexts,
                    )
                })
                .push(snapshot, limit);
        }
        match message {
            AgentMessage::Snapshot(snapshot) => {
                metrics.merge(node_id, &snapshot)?;
                if p.aborted.is_some() {
                    return Ok(Outcome::Merged);
                }
                let failing = self
                    .scenario
                    .thresholds
                    .iter()
                    .find(|t| t.abort_on_fail && t.failing_now(metrics));
                let Some(threshold) = failing else {
                    return Ok(Outcome::Merged);
                };
                tracing::warn!(threshold = %threshold.expr, "threshold failed; aborting the run");
                p.aborted = Some(threshold.expr.clone());
                self.stop_all();
                Ok(Outcome::Aborted)
            }
            AgentMessage::Finished(snapshot) => {
                metrics.merge(node_id, &snapshot)?;
                p.finished[i] = true;
                Ok(Outcome::Merged)
            }
            AgentMessage::Failed { message } => Err(Error::RunFailed {
                message: format!("node {node_id}: {message}"),
            }),
            AgentMessage::Arrived { point, user_id } => {
                for release in p.coordinator.arrive(&point, (i, user_id), Instant::now()) {
                    self.send_release(&release);
                }
                Ok(Outcome::Merged)
            }
            other => Err(Error::AgentConnection {
                node: node_id.clone(),
                message: format!("unexpected {} during the run", message_name(&other)),
            }),
        }
    }

    /// What the nodes have cost so far: each node bills from its create's acceptance.
    fn cost_so_far(&self) -> Option<f64> {
        let price = self.hourly_price?;
        let node_hours: f64 = self
            .live
            .iter()
            .map(|n| n.created_at.elapsed().as_secs_f64() / 3600.0)
            .sum();
        Some(price * node_hours)
    }

    /// Stop the run when its cost so far reaches `--max-cost`.
    fn check_cost(&self, p: &mut Progress) -> Outcome {
        let (Some(cap), Some(cost)) = (self.options.max_cost_usd, self.cost_so_far()) else {
            return Outcome::Merged;
        };
        if cost < cap || p.aborted.is_some() {
            return Outcome::Merged;
        }
        tracing::warn!(cost, cap, "the cost cap is reached; stopping the run");
        p.aborted = Some(format!("cost cap ${cap:.2} reached (${cost:.2} so far)"));
        p.cost_cap_reached = true;
        self.stop_all();
        Outcome::Aborted
    }

    /// Tell every node with a member of `release` that its group goes on.
    fn send_release(&self, release: &Release) {
        let members: Vec<u64> = release.members.iter().map(|(_, user)| *user).collect();
        for node in release.nodes() {
            if let Some(live) = self.live.get(node) {
                let _ = live.commands.send(ControllerMessage::Release {
                    point: release.point.clone(),
                    group_id: release.group_id,
                    wanted: release.wanted,
                    members: members.clone(),
                });
            }
        }
    }

    fn stop_all(&self) {
        for node in &self.live {
            let _ = node.commands.send(ControllerMessage::Stop { force: true });
        }
    }

    /// Nodes silent past the grace period (a frozen agent, a cut network) are lost: the agent
    /// itself gives up on the controller after the same grace.
    fn find_silent(
        &self,
        p: &mut Progress,
        metrics: &mut MetricsAggregate,
        started: Instant,
    ) -> Outcome {
        let grace = self.options.grace;
        let silent: Vec<usize> = (0..self.live.len())
            .filter(|&i| !p.finished[i] && p.last_heard[i].elapsed() > grace)
            .collect();
        let mut outcome = Outcome::Merged;
        for i in silent {
            let reason = format!("no word from its agent for {grace:?} (the grace period)");
            if let Outcome::Aborted = self.lose(i, reason, metrics, p, started) {
                outcome = Outcome::Aborted;
            }
        }
        outcome
    }

    /// Node `i` is lost: its unfinished users count as failed, the report names it, and the
    /// run goes on with the other nodes — or stops, under `--on-node-loss abort`.
    fn lose(
        &self,
        i: usize,
        reason: String,
        metrics: &mut MetricsAggregate,
        p: &mut Progress,
        started: Instant,
    ) -> Outcome {
        let node = &self.live[i];
        p.finished[i] = true;
        // Close the link: a late answer from a frozen agent is not merged any more.
        let _ = node.commands.send(ControllerMessage::Shutdown);
        let users_failed = metrics.lose_node(&node.report.id, node.report.users);
        tracing::warn!(node = %node.report.id, %reason, users_failed, "node lost");
        self.observer.event(&Event::NodeLost {
            node: node.report.id.clone(),
            reason: reason.clone(),
        });
        p.lost.push(LostNode {
            id: node.report.id.clone(),
            reason: reason.clone(),
            users_failed,
            at_s: started.elapsed().as_secs_f64(),
        });
        if self.options.on_node_loss == super::NodeLoss::Abort && p.aborted.is_none() {
            p.aborted = Some(format!("node {} lost: {reason}", node.report.id));
            self.stop_all();
            return Outcome::Aborted;
        }
        Outcome::Merged
    }

    fn progress(&self, metrics: &MetricsAggregate, finished: &[bool], started: Instant) {
        let last = metrics.series.last();
        self.observer.event(&Event::Progress {
            elapsed: started.elapsed(),
            active_users: metrics.active_users(),
            iterations_ok: metrics.counter(counter::ITERATIONS_OK),
            iterations_failed: metrics.counter(counter::ITERATIONS_FAILED),
            iterations_per_s: last
                .map_or(0, |p| p.iterations_ok.saturating_add(p.iterations_failed)),
            step_p95_ms: last.map_or(0.0, |p| p.step_p95_ms),
            nodes: self.live.len() - finished.iter().filter(|f| **f).count(),
        });
    }
}
