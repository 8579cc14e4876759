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
use super::prepare::Positions;
use super::{Event, Observer, RunOptions, next_message};
use crate::agent_client::message_name;
use crate::metrics::{MetricsAggregate, counter};
use crate::scenario::Scenario;
use crate::{Error, Result};

/// What observing a run produced, for the report.
pub(super) struct Observed {
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
}

/// The run's view while it observes.
pub(super) struct Observation<'a> {
    pub live: Vec<LiveNode>,
    pub positions: &'a Positions,
    pub scenario: &'a Scenario,
    pub options: &'a RunOptions,
    pub run_id: &'a str,
    pub observer: &'a dyn Observer,
}

/// What one message did to the run.
enum Outcome {
    /// Nothing the loop must act on.
    Merged,
    /// A threshold failed and the run is stopping: the deadline shrinks.
    Aborted,
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
        let mut finished = vec![false; self.live.len()];
        let mut aborted: Option<String> = None;
        // Saturating, then capped: a scenario built in code may hold any duration.
        let mut deadline = super::deadline_after(
            started,
            (self.options.duration)
                .saturating_add(self.scenario.iteration_timeout)
                .saturating_add(Duration::from_secs(30)),
        );
        let mut users_now = self.options.users;
        let mut users_total = self.options.users;
        let mut status_tick = tokio::time::interval(Duration::from_secs(1));
        let (mut requests, status) = match control {
            Some(c) => (Some(&mut c.requests), Some(&c.status)),
            None => (None, None),
        };
        while finished.iter().any(|f| !f) {
            let (position, message) = tokio::select! {
                message = next_message(inbox, deadline, "run") => message?,
                Some(request) = async {
                    match requests.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    handle_control(request, &mut self.live, &finished, &mut users_now, &mut users_total);
                    continue;
                }
                _ = status_tick.tick() => {
                    if let Some(status) = status {
                        status.send_replace(LiveStatus::of(self.run_id, self.scenario, &self.live, users_now, started, &metrics));
                    }
                    continue;
                }
            };
            let Some(&i) = self.positions.get(&position) else {
                continue;
            };
            let outcome =
                self.on_message(i, message?, &mut metrics, &mut finished, &mut aborted)?;
            if let Outcome::Aborted = outcome {
                deadline = Instant::now() + Duration::from_secs(30);
            }
            self.progress(&metrics, &finished, started);
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
        let observed = Observed {
            metrics,
            aborted,
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
        finished: &mut [bool],
        aborted: &mut Option<String>,
    ) -> Result<Outcome> {
        let node_id = &self.live[i].report.id;
        match message {
            AgentMessage::Snapshot(snapshot) => {
                metrics.merge(node_id, &snapshot)?;
                if aborted.is_some() {
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
                *aborted = Some(threshold.expr.clone());
                for node in &self.live {
                    let _ = node.commands.send(ControllerMessage::Stop { force: true });
                }
                Ok(Outcome::Aborted)
            }
            AgentMessage::Finished(snapshot) => {
                metrics.merge(node_id, &snapshot)?;
                finished[i] = true;
                Ok(Outcome::Merged)
            }
            AgentMessage::Failed { message } => Err(Error::RunFailed {
                message: format!("node {node_id}: {message}"),
            }),
            other => Err(Error::AgentConnection {
                node: node_id.clone(),
                message: format!("unexpected {} during the run", message_name(&other)),
            }),
        }
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
