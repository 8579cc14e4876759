//! Phase 7, tear down: destroy every node of the run — the ones this process created and any the
//! backend still lists under the run's id (a create whose answer was lost still carries the
//! tag).

use futures_util::future::join_all;

use super::{Created, Event, Observer};
use crate::Result;
use crate::backend::{Backend, NodeHandle, RunFilter};

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
