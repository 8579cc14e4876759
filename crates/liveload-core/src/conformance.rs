//! The one conformance suite every [`Backend`] must pass.
//!
//! Each check is a public async function taking a [`Harness`], so a backend's test file runs
//! them as separate tests (one `#[tokio::test]` each) against its own real provider: local
//! processes, the Fly spec-validating server, the EC2 emulator, a real sshd. Every check ends by
//! asserting that the backend lists zero nodes for the runs it made: nothing leaks.
//!
//! Every backend runs all of them through [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! async fn setup() -> (Harness, Sshd) { /* start the provider, build the harness */ }
//! liveload_core::conformance_tests!(setup: setup(), after: |sshd: Sshd| {
//!     assert!(sshd.run_dirs().is_empty()); // the provider's own "nothing left" check
//! });
//! ```
//!
//! A check added here runs against every backend at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::agent_client::AgentConnection;
use crate::backend::{Backend, NodeHandle, NodeSpec, RunFilter, Secret};
use crate::proto::{Step, StepKind};
use crate::run::{self, Quiet, RunOptions};
use crate::scenario::Scenario;
use crate::{Error, names};

/// What a backend under test gives the suite.
pub struct Harness {
    /// The backend under test.
    pub backend: Arc<dyn Backend>,
    /// The same provider configured so its nodes take several seconds to become ready (for the
    /// creation-timeout check).
    pub slow_backend: Arc<dyn Backend>,
    /// A URL of a page the agents can load, for the end-to-end run with real Chromium; `None`
    /// runs the end-to-end check without a browser.
    pub target_url: Option<String>,
    /// How long a normal node may take to become ready.
    pub ready_timeout: Duration,
}

impl Harness {
    fn spec(&self, run_id: &str, index: u32) -> NodeSpec {
        NodeSpec {
            run_id: run_id.to_string(),
            index,
            token: names::new_token(),
            ttl: Duration::from_secs(300),
            grace: Duration::from_secs(30),
            tls: None,
            no_browser: self.target_url.is_none(),
        }
    }

    fn new_run(&self) -> String {
        names::new_run_id("conformance")
    }

    async fn assert_no_nodes(&self, run_id: &str) {
        let left = self
            .backend
            .list(&RunFilter::Run(run_id.to_string()))
            .await
            .expect("list works");
        assert!(left.is_empty(), "run {run_id} leaked nodes: {left:?}");
    }
}

/// One `#[tokio::test]` per conformance check. `setup` is an async expression giving
/// `(Harness, guard)` anew for each test (the guard keeps the provider up: a server, a temp
/// directory); `after` is called with the guard once the check passed, for the provider's own
/// proof that nothing is left.
#[macro_export]
macro_rules! conformance_tests {
    (setup: $setup:expr, after: $after:expr $(,)?) => {
        $crate::conformance_tests!(@each $setup, $after;
            create_ready_facts_destroy,
            destroy_is_idempotent,
            list_shows_the_node_then_none,
            creation_timeout_destroys_the_node,
            wrong_token_is_refused,
            tls_link_is_pinned,
            parallel_creates_are_distinct,
            end_to_end_run_leaves_nothing,
        );
    };
    (@each $setup:expr, $after:expr; $($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $check() {
            let (harness, guard) = $setup.await;
            $crate::conformance::$check(&harness).await;
            ($after)(guard);
        }
    )*};
}

/// Run every check, one after another.
pub async fn run_all(harness: &Harness) {
    create_ready_facts_destroy(harness).await;
    destroy_is_idempotent(harness).await;
    list_shows_the_node_then_none(harness).await;
    creation_timeout_destroys_the_node(harness).await;
    wrong_token_is_refused(harness).await;
    tls_link_is_pinned(harness).await;
    parallel_creates_are_distinct(harness).await;
    end_to_end_run_leaves_nothing(harness).await;
}

/// create → wait_ready → handshake → real facts → destroy → nothing listed.
pub async fn create_ready_facts_destroy(h: &Harness) {
    let run_id = h.new_run();
    let spec = h.spec(&run_id, 0);
    let node = h.backend.create(&spec).await.expect("create");
    assert_eq!(node.run_id, run_id, "the handle carries the run id");
    assert_eq!(node.index, 0);
    let endpoint = run::wait_ready_or_destroy(h.backend.as_ref(), &node, h.ready_timeout)
        .await
        .expect("the node becomes ready");
    let deadline = Instant::now() + h.ready_timeout;
    let (connection, welcome) =
        AgentConnection::connect(&node.id, &endpoint, &spec.token, deadline)
            .await
            .expect("handshake with the run token");
    let facts = welcome.facts;
    assert!(facts.total_memory_bytes > 0, "{facts:?}");
    assert!(facts.effective_memory_bytes > 0, "{facts:?}");
    assert!(
        facts.effective_memory_bytes <= facts.total_memory_bytes,
        "{facts:?}"
    );
    assert!(facts.effective_cores > 0.0, "{facts:?}");
    assert!(!facts.arch.is_empty());
    connection.close().await;
    h.backend.destroy(&node).await.expect("destroy");
    h.assert_no_nodes(&run_id).await;
}

/// Destroying twice is fine: "already gone" is success.
pub async fn destroy_is_idempotent(h: &Harness) {
    let run_id = h.new_run();
    let node = h.backend.create(&h.spec(&run_id, 0)).await.expect("create");
    run::wait_ready_or_destroy(h.backend.as_ref(), &node, h.ready_timeout)
        .await
        .expect("ready");
    h.backend.destroy(&node).await.expect("first destroy");
    h.backend.destroy(&node).await.expect("second destroy");
    h.assert_no_nodes(&run_id).await;
}

/// `list` finds the node by its run id (and under "all runs"), not under another run, then not
/// after destroy.
pub async fn list_shows_the_node_then_none(h: &Harness) {
    let run_id = h.new_run();
    let node = h.backend.create(&h.spec(&run_id, 3)).await.expect("create");
    let listed = h
        .backend
        .list(&RunFilter::Run(run_id.clone()))
        .await
        .expect("list");
    let found: Vec<&NodeHandle> = listed.iter().filter(|n| n.id == node.id).collect();
    assert_eq!(found.len(), 1, "listed once by run id: {listed:?}");
    assert_eq!(found[0].run_id, run_id, "tagged with the run id");
    assert_eq!(found[0].index, 3, "tagged with the node index");
    let all = h.backend.list(&RunFilter::All).await.expect("list all");
    assert!(all.iter().any(|n| n.id == node.id), "listed under all runs");
    let other = h
        .backend
        .list(&RunFilter::Run(h.new_run()))
        .await
        .expect("list other");
    assert!(
        other.iter().all(|n| n.id != node.id),
        "not listed under another run"
    );
    h.backend.destroy(&node).await.expect("destroy");
    h.assert_no_nodes(&run_id).await;
}

/// A node that misses its creation deadline yields `cluster_node_creation_timeout` and is
/// destroyed.
pub async fn creation_timeout_destroys_the_node(h: &Harness) {
    let run_id = h.new_run();
    let node = h
        .slow_backend
        .create(&h.spec(&run_id, 0))
        .await
        .expect("create");
    let timeout = Duration::from_millis(300);
    match run::wait_ready_or_destroy(h.slow_backend.as_ref(), &node, timeout).await {
        Err(e @ Error::ClusterNodeCreationTimeout { .. }) => {
            assert_eq!(e.code(), "cluster_node_creation_timeout");
        }
        other => panic!("expected cluster_node_creation_timeout, got {other:?}"),
    }
    h.assert_no_nodes(&run_id).await;
}

/// A controller without the run token is refused, clearly.
pub async fn wrong_token_is_refused(h: &Harness) {
    let run_id = h.new_run();
    let node = h.backend.create(&h.spec(&run_id, 0)).await.expect("create");
    let endpoint = run::wait_ready_or_destroy(h.backend.as_ref(), &node, h.ready_timeout)
        .await
        .expect("ready");
    let deadline = Instant::now() + h.ready_timeout;
    let result =
        AgentConnection::connect(&node.id, &endpoint, &Secret::new("x".repeat(64)), deadline).await;
    h.backend.destroy(&node).await.expect("destroy");
    match result {
        Err(Error::AgentRejected { reason, .. }) => {
            assert!(reason.contains("token"), "{reason}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|(_, w)| w)),
    }
    h.assert_no_nodes(&run_id).await;
}

/// Over TLS, the controller reaches the agent only through the certificate it expects: this
/// run's certificate, pinned; or, behind a TLS-terminating proxy ([`crate::ProxyTls`]), the
/// proxy's certificate from a trusted CA — the same link without that CA is refused.
pub async fn tls_link_is_pinned(h: &Harness) {
    let run_id = h.new_run();
    let (agent_tls, pin) = crate::tls::generate_run_certificate().expect("certificate");
    let (_, other_pin) = crate::tls::generate_run_certificate().expect("certificate");
    let mut spec = h.spec(&run_id, 0);
    spec.tls = Some(agent_tls);
    let node = h.backend.create(&spec).await.expect("create");
    let endpoint = run::wait_ready_or_destroy(h.backend.as_ref(), &node, h.ready_timeout)
        .await
        .expect("ready");
    let deadline = Instant::now() + h.ready_timeout;
    let (mut wrong_endpoint, mut right_endpoint) = (endpoint.clone(), endpoint.clone());
    match &mut wrong_endpoint.proxy {
        Some(proxy) => proxy.extra_roots_pem.clear(),
        None => {
            wrong_endpoint.tls = Some(other_pin);
            right_endpoint.tls = Some(pin);
        }
    }
    let wrong = AgentConnection::connect(&node.id, &wrong_endpoint, &spec.token, deadline).await;
    let right = AgentConnection::connect(&node.id, &right_endpoint, &spec.token, deadline).await;
    h.backend.destroy(&node).await.expect("destroy");
    match wrong {
        Err(Error::AgentConnection { message, .. }) => {
            assert!(message.contains("TLS"), "{message}")
        }
        other => panic!(
            "a foreign certificate must be refused, got {:?}",
            other.map(|(_, w)| w)
        ),
    }
    let (_, welcome) = right.expect("the expected certificate is accepted");
    assert!(welcome.facts.total_memory_bytes > 0);
    h.assert_no_nodes(&run_id).await;
}

/// Creating several nodes at once gives distinct, ready nodes.
pub async fn parallel_creates_are_distinct(h: &Harness) {
    let run_id = h.new_run();
    let specs: Vec<NodeSpec> = (0..4).map(|i| h.spec(&run_id, i)).collect();
    let created = futures_util::future::join_all(specs.iter().map(|s| h.backend.create(s))).await;
    let nodes: Vec<NodeHandle> = created.into_iter().map(|r| r.expect("create")).collect();
    let ready = futures_util::future::join_all(
        nodes
            .iter()
            .map(|n| run::wait_ready_or_destroy(h.backend.as_ref(), n, h.ready_timeout)),
    )
    .await;
    // Distinct endpoints: an address each, or one proxy address with a header naming the node.
    let mut addresses: Vec<String> = ready
        .into_iter()
        .map(|r| r.expect("ready"))
        .map(|e| format!("{} {:?}", e.address, e.headers))
        .collect();
    let listed = h
        .backend
        .list(&RunFilter::Run(run_id.clone()))
        .await
        .expect("list");
    for node in &nodes {
        h.backend.destroy(node).await.expect("destroy");
    }
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 4, "four distinct agents");
    assert_eq!(listed.len(), 4, "four nodes listed: {listed:?}");
    h.assert_no_nodes(&run_id).await;
}

/// A whole run through [`run::run`]: boot, facts, size, run users, report, destroy.
pub async fn end_to_end_run_leaves_nothing(h: &Harness) {
    let (base_url, steps, no_browser) = match &h.target_url {
        Some(url) => (
            url.clone(),
            vec![
                Step {
                    name: "open".into(),
                    kind: StepKind::Navigate { url: "/".into() },
                },
                Step {
                    name: "body".into(),
                    kind: StepKind::WaitFor {
                        condition: crate::proto::WaitCondition::Visible {
                            selector: "body".into(),
                        },
                        timeout_ms: Some(10_000),
                    },
                },
            ],
            false,
        ),
        None => (
            "http://127.0.0.1".into(),
            vec![Step {
                name: "idle".into(),
                kind: StepKind::Think {
                    min_ms: 20,
                    max_ms: 40,
                },
            }],
            true,
        ),
    };
    let mut scenario = Scenario::new("conformance", &base_url, steps);
    scenario.users = 2;
    scenario.duration = Duration::from_secs(2);
    scenario.iteration_timeout = Duration::from_secs(20);
    let mut options = RunOptions::new("conformance", 2, scenario.duration);
    options.no_browser = no_browser;
    options.creation_timeout = h.ready_timeout;
    options.cost_confirmation = Some(run::CostConfirmation::new("conformance suite"));
    let report = run::run(
        h.backend.clone(),
        &scenario,
        &options,
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
    .expect("the run completes");
    assert!(report.succeeded(), "every user succeeded: {report:?}");
    assert!(report.iterations_ok > 0);
    assert!(!report.nodes.is_empty());
    for node in &report.nodes {
        assert!(node.facts.effective_memory_bytes > 0);
        assert_eq!(node.capacity, options.sizing.capacity_of(&node.facts));
    }
    h.assert_no_nodes(&report.run_id).await;
}
