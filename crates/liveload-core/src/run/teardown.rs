//! Phase 7, tear down: destroy every node of the run — the ones this process created and any the
//! backend still lists under the run's id (a create whose answer was lost still carries the
//! tag) — within a deadline, and say exactly what is left when it cannot.
//!
//! Teardown must end: a stalled provider or host cannot hold the controller forever. When the
//! deadline passes, the error names every node still held and the `liveload cleanup` command
//! that finishes the job; the agents' dead-man switch and TTL end them meanwhile.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::{Created, Event, Observer};
use crate::backend::{Backend, NodeHandle, RunFilter};
use crate::{Error, Result};

/// How often teardown asks the provider for the run's nodes before going on without its list.
const LIST_ATTEMPTS: u32 = 3;

/// Destroy every node of `run_id` within `timeout`: the ones this process created and any the
/// backend still lists. Returns [`Error::TeardownIncomplete`] naming what is left when a node
/// could not be destroyed or the deadline passed.
pub async fn teardown(
    backend: &dyn Backend,
    run_id: &str,
    created: &Created,
    observer: &dyn Observer,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut nodes: Vec<NodeHandle> = std::mem::take(&mut *created.lock().expect("not poisoned"));
    for node in list_run(backend, run_id, deadline).await {
        if !nodes.iter().any(|n| n.id == node.id) {
            nodes.push(node);
        }
    }
    tracing::info!(run_id, nodes = nodes.len(), "tearing down");
    observer.event(&Event::TearingDown {
        run_id: run_id.to_string(),
        nodes: nodes.iter().map(|n| n.id.clone()).collect(),
    });
    let destroyed =
        tokio::time::timeout_at(deadline, destroy_every(backend, &nodes, observer)).await;
    let left: Vec<String> = match destroyed {
        Ok(failed) => failed,
        Err(_) => {
            tracing::warn!(run_id, "teardown deadline passed");
            // Whatever the provider still lists is what is left; without an answer, all.
            let still = list_once(backend, run_id).await.unwrap_or(nodes);
            still.into_iter().map(|n| n.id).collect()
        }
    };
    if left.is_empty() {
        return Ok(());
    }
    Err(Error::TeardownIncomplete {
        backend: backend.name(),
        run_id: run_id.to_string(),
        nodes: left,
        timeout,
        report: None,
    })
}

/// The backend's list of the run's nodes, asked up to [`LIST_ATTEMPTS`] times; failures are
/// logged and teardown goes on with what this process created.
async fn list_run(backend: &dyn Backend, run_id: &str, deadline: Instant) -> Vec<NodeHandle> {
    for attempt in 1..=LIST_ATTEMPTS {
        match list_once(backend, run_id).await {
            Ok(nodes) => return nodes,
            Err(e) => {
                tracing::warn!(run_id, attempt, error = %e, "listing the run's nodes failed");
                if Instant::now() + Duration::from_secs(1) >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Vec::new()
}

async fn list_once(backend: &dyn Backend, run_id: &str) -> Result<Vec<NodeHandle>> {
    backend.list(&RunFilter::Run(run_id.to_string())).await
}

/// One batch first (EC2 terminates a thousand instances a call); if it fails, node by node,
/// so every node gets its own try. Returns the ids that could not be destroyed.
async fn destroy_every(
    backend: &dyn Backend,
    nodes: &[NodeHandle],
    observer: &dyn Observer,
) -> Vec<String> {
    let destroyed = |node: &NodeHandle| {
        observer.event(&Event::NodeDestroyed {
            node: node.id.clone(),
        })
    };
    if backend.destroy_all(nodes).await.is_ok() {
        nodes.iter().for_each(destroyed);
        return Vec::new();
    }
    let results = join_all(nodes.iter().map(|node| async move {
        match backend.destroy(node).await {
            Ok(()) => {
                destroyed(node);
                None
            }
            Err(e) => {
                tracing::warn!(node = %node.id, error = %e, "destroying a node failed");
                Some(node.id.clone())
            }
        }
    }))
    .await;
    results.into_iter().flatten().collect()
}
