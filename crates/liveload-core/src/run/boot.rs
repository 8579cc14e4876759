//! Phase 2, provision: create nodes, wait for their agents, authenticate and read their facts.
//!
//! Nodes boot all at once — the provider's rate limits, enforced inside each backend, decide
//! how fast creates go out, never a small fixed parallelism here. A node that misses its
//! deadline or refuses us is destroyed at once: it costs money and may never answer.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use liveload_proto::{AgentMessage, ControllerMessage};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Created, Event, NodeReport, Observer, RunOptions};
use crate::agent_client::{AgentConnection, AgentSender, Welcome};
use crate::backend::{AgentEndpoint, Backend, NodeHandle, NodeSpec, Secret};
use crate::tls::{AgentTls, Pin};
use crate::{BackendErrorKind, Error, Result};

/// A node that answered, with the link the run talks to it through.
pub(super) struct LiveNode {
    /// What we know of it (facts, capacity, users).
    pub report: NodeReport,
    /// The provider's handle, to destroy it.
    pub handle: NodeHandle,
    /// Commands to its agent; dropping the sender closes the link.
    pub commands: mpsc::UnboundedSender<ControllerMessage>,
    /// When the provider accepted its create: it bills from about then.
    pub created_at: Instant,
}

/// Messages from every node's reader task, tagged with the node's index.
pub(super) type Inbox = mpsc::UnboundedReceiver<(usize, Result<AgentMessage>)>;

/// A node that answered: its handle, the commands to its link (already heartbeating), what it
/// measured, when its create was accepted.
type Booted = (
    NodeHandle,
    mpsc::UnboundedSender<ControllerMessage>,
    NodeReport,
    Instant,
);

/// Boots nodes of one run: everything a create needs, and where ready nodes report.
pub(super) struct Booter<'a> {
    pub backend: Arc<dyn Backend>,
    pub options: &'a RunOptions,
    pub run_id: &'a str,
    /// The run's TLS material and pin, when the link needs TLS.
    pub tls: Option<(AgentTls, Pin)>,
    pub created: Created,
    pub observer: Arc<dyn Observer>,
    pub inbox_tx: mpsc::UnboundedSender<(usize, Result<AgentMessage>)>,
}

impl<'a> Booter<'a> {
    /// A booter for run `run_id`, with the run's TLS material when its link needs TLS.
    pub fn new(
        backend: Arc<dyn Backend>,
        options: &'a RunOptions,
        run_id: &'a str,
        created: Created,
        observer: Arc<dyn Observer>,
        inbox_tx: mpsc::UnboundedSender<(usize, Result<AgentMessage>)>,
    ) -> Result<Self> {
        let tls = if super::link_needs_tls(backend.as_ref(), options) {
            Some(crate::tls::generate_run_certificate()?)
        } else {
            None
        };
        Ok(Booter {
            backend,
            options,
            run_id,
            tls,
            created,
            observer,
            inbox_tx,
        })
    }

    /// The spec of node `index`, with a token of its own: a node's token opens only that node,
    /// so a token read off one machine (Fly's config, EC2's user data) is worth one node.
    fn spec(&self, index: u32) -> NodeSpec {
        NodeSpec {
            run_id: self.run_id.to_string(),
            index,
            token: crate::names::new_token(),
            ttl: self.options.ttl,
            grace: self.options.grace,
            tls: self.tls.as_ref().map(|(agent, _)| agent.clone()),
            no_browser: self.options.no_browser,
        }
    }

    /// Boot nodes `indices` all at once; each either answers with its facts or is destroyed.
    pub async fn boot(
        &self,
        indices: std::ops::Range<u32>,
        live: &mut Vec<LiveNode>,
    ) -> Result<()> {
        self.observer.event(&Event::Booting {
            nodes: indices.len() as u32,
        });
        let results = self.create_and_wait(indices).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok((handle, commands, report, created_at)) => {
                    live.push(LiveNode {
                        report,
                        handle,
                        commands,
                        created_at,
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Create nodes `indices`: one create call each, all at once, or in batches where the
    /// provider creates many machines per call (EC2's RunInstances with a count).
    async fn create_and_wait(&self, indices: std::ops::Range<u32>) -> Vec<Result<Booted>> {
        let limit = self.backend.batch_limit().max(1) as usize;
        if limit == 1 {
            return join_all(indices.map(|i| self.boot_one(i))).await;
        }
        let specs: Vec<NodeSpec> = indices.map(|i| self.spec(i)).collect();
        join_all(specs.chunks(limit).map(|chunk| self.boot_batch(chunk)))
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One node, one create call.
    async fn boot_one(&self, index: u32) -> Result<Booted> {
        let started = Instant::now();
        let spec = self.spec(index);
        // `NodeSpec`'s Debug prints `***` for the token.
        tracing::debug!(?spec, "creating node");
        let handle = self.backend.create(&spec).await?;
        self.finish(&spec, handle, started, Instant::now()).await
    }

    /// Several nodes in one provider call; each then waits on its own.
    async fn boot_batch(&self, specs: &[NodeSpec]) -> Vec<Result<Booted>> {
        let started = Instant::now();
        tracing::debug!(
            nodes = specs.len(),
            first = specs[0].index,
            "creating a batch"
        );
        let handles = self.backend.create_batch(specs).await;
        let accepted = Instant::now();
        join_all(specs.iter().zip(handles).map(|(spec, handle)| async move {
            self.finish(spec, handle?, started, accepted).await
        }))
        .await
    }

    /// A created node: record it, wait for its agent, authenticate; destroy it on failure.
    ///
    /// The creation deadline measures the machine, not liveload's queue: a create that waited
    /// behind the provider's rate limit (Fly: about one a second per app) starts its clock when
    /// the provider accepted it.
    #[tracing::instrument(level = "debug", skip_all, fields(run_id = %self.run_id, node = %handle.id))]
    async fn finish(
        &self,
        spec: &NodeSpec,
        handle: NodeHandle,
        started: Instant,
        accepted: Instant,
    ) -> Result<Booted> {
        let deadline = accepted + self.options.creation_timeout;
        tracing::debug!(detail = %handle.detail, create_s = (accepted - started).as_secs_f64(), "node created");
        self.created
            .lock()
            .expect("not poisoned")
            .push(handle.clone());
        match self.await_agent(&handle, &spec.token, deadline).await {
            Ok((connection, welcome)) => {
                let mut report = self.node_report(&handle, spec.index, welcome, started);
                report.create_s = (accepted - started).as_secs_f64();
                // Heartbeats start now, not when the last node is up: at a provider's create
                // rate the cluster can take minutes to boot, and an agent left silent past its
                // grace would end itself (at Fly's 1/s, the first of 256 nodes waits ~4 min).
                let commands = spawn_link(
                    report.index as usize,
                    connection,
                    self.inbox_tx.clone(),
                    heartbeat_interval(self.options.grace),
                );
                self.observer.event(&Event::NodeReady(report.clone()));
                Ok((handle, commands, report, accepted))
            }
            Err(e) => {
                tracing::warn!(error = %e, "node failed to become ready; destroying it");
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

    fn node_report(
        &self,
        handle: &NodeHandle,
        index: u32,
        welcome: Welcome,
        started: Instant,
    ) -> NodeReport {
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
            create_s: 0.0,
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
        report
    }

    async fn await_agent(
        &self,
        handle: &NodeHandle,
        token: &Secret,
        deadline: Instant,
    ) -> Result<(AgentConnection, Welcome)> {
        let mut endpoint = wait_ready(
            self.backend.as_ref(),
            handle,
            deadline,
            self.options.creation_timeout,
        )
        .await?;
        if let (Some((_, pin)), None, None) = (&self.tls, &endpoint.tls, &endpoint.proxy) {
            // The backend reached the agent over a path it does not encrypt itself: pin the
            // run's certificate.
            endpoint.tls = Some(pin.clone());
        }
        AgentConnection::connect(&handle.id, &endpoint, token, deadline)
            .await
            .map_err(|e| match e {
                Error::AgentConnection { message, .. } if Instant::now() >= deadline => {
                    Error::ClusterNodeCreationTimeout {
                        node: handle.id.clone(),
                        timeout: self.options.creation_timeout,
                        last: Some(message),
                    }
                }
                e => e,
            })
    }
}

/// [`Backend::wait_ready`], cut at `deadline` even if the backend overruns it. A backend that
/// gave up at the deadline itself ([`BackendErrorKind::NotReady`]) has its last observation
/// carried into the timeout error.
pub async fn wait_ready(
    backend: &dyn Backend,
    handle: &NodeHandle,
    deadline: Instant,
    timeout: Duration,
) -> Result<AgentEndpoint> {
    let timed_out = |last| Error::ClusterNodeCreationTimeout {
        node: handle.id.clone(),
        timeout,
        last,
    };
    match tokio::time::timeout_at(deadline, backend.wait_ready(handle, deadline)).await {
        Ok(Err(Error::Backend(e))) if e.kind == BackendErrorKind::NotReady => {
            Err(timed_out(Some(e.message)))
        }
        Ok(Err(Error::ClusterNodeCreationTimeout { last, .. })) => Err(timed_out(last)),
        Ok(result) => result,
        Err(_) => Err(timed_out(None)),
    }
}

/// [`wait_ready`], and on any error destroy the node before returning the error.
pub async fn wait_ready_or_destroy(
    backend: &dyn Backend,
    handle: &NodeHandle,
    timeout: Duration,
) -> Result<AgentEndpoint> {
    let deadline = super::deadline_after(Instant::now(), timeout);
    match wait_ready(backend, handle, deadline, timeout).await {
        Ok(endpoint) => Ok(endpoint),
        Err(e) => {
            backend.destroy(handle).await?;
            Err(e)
        }
    }
}

/// Heartbeats well inside the agents' grace: four per grace period, between 200 ms and 2 s.
pub(super) fn heartbeat_interval(grace: Duration) -> Duration {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_well_inside_the_grace() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(30)),
            Duration::from_secs(2)
        );
        assert!(heartbeat_interval(Duration::from_secs(1)) <= Duration::from_millis(250));
    }
}
