//! Phases 3 and 4, measure and size: boot in the order the backend allows, then let every
//! node's own facts decide its share of the users.
//!
//! Boot order: when the backend knows its node size in advance, plan from the catalogue and
//! boot every node at once; when it does not, boot one probe node, plan from its facts, then
//! boot the rest at once. Nodes that turn out smaller than planned get company (the shortfall
//! is booted, up to the node limit) — nothing is dispatched until every node passed sizing.

use liveload_proto::ControllerMessage;

use super::boot::{Booter, LiveNode};
use super::plan::{Plan, max_nodes};
use super::{Event, RunOptions};
use crate::backend::NodeSize;
use crate::sizing::assign_users;
use crate::{Error, Result};

/// Plan and boot the first wave: all planned nodes from the catalogue, or a probe node and then
/// the rest.
pub(super) async fn plan_and_boot(booter: &Booter<'_>, live: &mut Vec<LiveNode>) -> Result<Plan> {
    let options = booter.options;
    let max_nodes = max_nodes(booter.backend.as_ref(), options);
    let plan = match booter.backend.expected_size().await? {
        Some(size) => {
            let plan =
                Plan::from_size(options.users, size, "catalogue", &options.sizing, max_nodes)?
                    .with_boot_floor(booter.backend.as_ref());
            booter.observer.event(&Event::Planned(plan.clone()));
            booter.boot(0..plan.nodes as u32, live).await?;
            plan
        }
        None => {
            booter.boot(0..1, live).await?;
            let facts = &live[0].report.facts;
            options.sizing.check_node(&live[0].report.id, facts)?;
            let size = NodeSize {
                memory_bytes: facts.effective_memory_bytes,
                cores: facts.effective_cores,
                catalogue: None,
            };
            let plan = Plan::from_size(options.users, size, "probe", &options.sizing, max_nodes)?
                .with_boot_floor(booter.backend.as_ref());
            booter.observer.event(&Event::Planned(plan.clone()));
            booter.boot(1..plan.nodes as u32, live).await?;
            plan
        }
    };
    Ok(plan)
}

/// Check every node against the sizing rules and boot more nodes until their real capacity
/// holds the users (or the node limit says it cannot).
pub(super) async fn boot_shortfall(booter: &Booter<'_>, live: &mut Vec<LiveNode>) -> Result<()> {
    let options = booter.options;
    let max_nodes = max_nodes(booter.backend.as_ref(), options);
    loop {
        for node in live.iter() {
            options
                .sizing
                .check_node(&node.report.id, &node.report.facts)?;
        }
        let Some(extra) = shortfall(live, options, max_nodes)? else {
            return Ok(());
        };
        let from = live.len() as u32;
        booter.boot(from..from + extra as u32, live).await?;
    }
}

/// How many more nodes the users need, judged by the smallest node seen; `None` when the nodes
/// already hold every user.
fn shortfall(live: &[LiveNode], options: &RunOptions, max_nodes: u64) -> Result<Option<u64>> {
    let capacity: u64 = live.iter().map(|n| n.report.capacity.users).sum();
    if capacity >= options.users {
        return Ok(None);
    }
    let smallest = live
        .iter()
        .map(|n| n.report.capacity.users)
        .min()
        .unwrap_or(1)
        .max(1);
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
    Ok(Some(extra))
}

/// Give `live`'s nodes ranges of `users` users by capacity (some may get none).
pub(super) fn share_users(booter: &Booter<'_>, users: u64, live: &mut [LiveNode]) {
    let capacities: Vec<u64> = live.iter().map(|n| n.report.capacity.users).collect();
    let shares = assign_users(users, &capacities);
    let mut next_user = 0;
    for (node, users) in live.iter_mut().zip(&shares) {
        node.report.users = *users;
        node.report.first_user_id = next_user;
        next_user += users;
    }
    tracing::info!(run_id = booter.run_id, users = ?shares, "users assigned");
    booter.observer.event(&Event::Assigned { users: shares });
}

/// Assign user ranges by capacity, before any browser context exists anywhere; destroy nodes
/// left without users now rather than idling them until the end. Returns the nodes kept.
pub(super) async fn assign(booter: &Booter<'_>, mut live: Vec<LiveNode>) -> Vec<LiveNode> {
    share_users(booter, booter.options.users, &mut live);
    let (idle, kept): (Vec<_>, Vec<_>) = live.into_iter().partition(|n| n.report.users == 0);
    for node in idle {
        let _ = node.commands.send(ControllerMessage::Shutdown);
        if booter.backend.destroy(&node.handle).await.is_ok() {
            booter
                .created
                .lock()
                .expect("not poisoned")
                .retain(|n| n.id != node.handle.id);
        }
    }
    kept
}
