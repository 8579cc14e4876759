//! Phase 5, dispatch: send every node its assignment, wait until each has prepared (browser
//! launched, contexts ready, users not started), then start them together.
//!
//! Preparing before starting keeps the start simultaneous: a node that is slow to launch its
//! browser does not start its users seconds after the others.

use std::collections::HashMap;

use liveload_proto::{AgentMessage, Assignment, ControllerMessage};
use tokio::time::Instant;

use super::boot::{Inbox, LiveNode};
use super::terms::node_terms;
use super::{RunOptions, next_message, send};
use crate::agent_client::message_name;
use crate::scenario::Scenario;
use crate::{Error, Result};

/// Where each node sits among the nodes kept, by the index its messages carry.
pub(super) type Positions = HashMap<usize, usize>;

/// The positions of `live`'s nodes by their node index.
pub(super) fn positions(live: &[LiveNode]) -> Positions {
    live.iter()
        .enumerate()
        .map(|(i, n)| (n.report.index as usize, i))
        .collect()
}

/// Send each node its assignment and wait for every `Prepared`; then send `Start` to all.
pub(super) async fn prepare_and_start(
    live: &[LiveNode],
    positions: &Positions,
    inbox: &mut Inbox,
    scenario: &Scenario,
    options: &RunOptions,
    run_id: &str,
) -> Result<()> {
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
            diagnostics: scenario.diagnostics(),
            allow_schemes: scenario.allow_schemes.clone(),
        };
        send(node, ControllerMessage::Prepare(Box::new(assignment)))?;
    }
    let mut prepared = 0;
    let deadline = Instant::now() + options.creation_timeout;
    while prepared < live.len() {
        let (position, message) = next_message(inbox, deadline, "prepare").await?;
        let Some(&i) = positions.get(&position) else {
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
    for node in live {
        send(node, ControllerMessage::Start)?;
    }
    Ok(())
}
