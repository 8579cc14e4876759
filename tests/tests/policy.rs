//! The policies core enforces for every caller, whatever the backend remembers to declare:
//! links that cross a network are always TLS, and billed machines need a cost confirmation.
//!
//! The backend under test wraps the local backend but declares nothing: it inherits the trait's
//! defaults (a network link, billed), exactly as a new backend would that forgot about policy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use liveload_core::proto::{Step, StepKind};
use liveload_core::run::{self, CostConfirmation, Quiet, RunOptions};
use liveload_core::scenario::Scenario;
use liveload_core::{
    AgentEndpoint, Backend, Billing, LinkPath, NodeHandle, NodeSize, NodeSpec, Result, RunFilter,
};
use liveload_local::LocalBackend;
use tokio::time::Instant;

/// A backend that declares no policy: every call goes to a local backend, except that it can
/// hand out a different address than the agent's (a backend bug) and records what it was asked.
#[derive(Debug)]
struct Undeclared {
    inner: LocalBackend,
    /// TLS material of every create (`true` when the spec carried some).
    specs_with_tls: Mutex<Vec<bool>>,
    creates: Mutex<u32>,
    /// Replace the address `wait_ready` returns (a backend that gets its address wrong).
    address_override: Option<String>,
    /// Declare a loopback link (while possibly handing out another address).
    claims_loopback: bool,
}

impl Undeclared {
    fn new(state: &std::path::Path) -> Self {
        Undeclared {
            inner: LocalBackend::builder().state_dir(state).build().unwrap(),
            specs_with_tls: Mutex::default(),
            creates: Mutex::default(),
            address_override: None,
            claims_loopback: false,
        }
    }
}

#[async_trait]
impl Backend for Undeclared {
    fn name(&self) -> &'static str {
        "undeclared"
    }

    fn link_path(&self) -> LinkPath {
        if self.claims_loopback {
            LinkPath::Loopback
        } else {
            LinkPath::Network // what the default says; spelled out only to allow the override
        }
    }

    async fn create(&self, spec: &NodeSpec) -> Result<NodeHandle> {
        *self.creates.lock().unwrap() += 1;
        self.specs_with_tls.lock().unwrap().push(spec.tls.is_some());
        self.inner.create(spec).await
    }

    async fn wait_ready(&self, node: &NodeHandle, deadline: Instant) -> Result<AgentEndpoint> {
        let mut endpoint = self.inner.wait_ready(node, deadline).await?;
        if let Some(address) = &self.address_override {
            endpoint.address = address.clone();
        }
        Ok(endpoint)
    }

    async fn destroy(&self, node: &NodeHandle) -> Result<()> {
        self.inner.destroy(node).await
    }

    async fn list(&self, runs: &RunFilter) -> Result<Vec<NodeHandle>> {
        self.inner.list(runs).await
    }

    async fn expected_size(&self) -> Result<Option<NodeSize>> {
        self.inner.expected_size().await
    }
}

/// A backend with no `link_path` or `billing` of its own: only the required methods.
#[derive(Debug)]
struct Minimal;

#[async_trait]
impl Backend for Minimal {
    fn name(&self) -> &'static str {
        "minimal"
    }
    async fn create(&self, _: &NodeSpec) -> Result<NodeHandle> {
        unreachable!("never called by these tests")
    }
    async fn wait_ready(&self, _: &NodeHandle, _: Instant) -> Result<AgentEndpoint> {
        unreachable!()
    }
    async fn destroy(&self, _: &NodeHandle) -> Result<()> {
        Ok(())
    }
    async fn list(&self, _: &RunFilter) -> Result<Vec<NodeHandle>> {
        Ok(Vec::new())
    }
    async fn expected_size(&self) -> Result<Option<NodeSize>> {
        Ok(None)
    }
}

fn scenario() -> Scenario {
    let mut scenario = Scenario::new(
        "policy",
        "http://127.0.0.1",
        vec![Step {
            name: "idle".into(),
            kind: StepKind::Think {
                min_ms: 10,
                max_ms: 20,
            },
        }],
    );
    scenario.users = 1;
    scenario.duration = Duration::from_millis(500);
    scenario.iteration_timeout = Duration::from_secs(5);
    scenario
}

/// A library caller's options: `tls` left at its default (false), browserless agents.
fn options() -> RunOptions {
    let mut options = RunOptions::new("policy", 1, Duration::from_millis(500));
    options.no_browser = true;
    options
}

#[test]
fn a_new_backend_inherits_the_safe_defaults() {
    assert_eq!(Minimal.link_path(), LinkPath::Network);
    assert_eq!(Minimal.billing(), Billing::Billed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_billed_backend_creates_nothing_without_a_cost_confirmation() {
    let state = tempfile::tempdir().unwrap();
    let backend = Arc::new(Undeclared::new(state.path()));
    let err = run::run(
        backend.clone(),
        &scenario(),
        &options(),
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "confirmation_required", "{err}");
    // The estimate the caller would confirm is in the error.
    assert!(err.to_string().contains("node(s)"), "{err}");
    assert_eq!(*backend.creates.lock().unwrap(), 0, "no create was sent");
    assert!(backend.list(&RunFilter::All).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_link_is_tls_even_when_the_library_caller_did_not_ask() {
    let state = tempfile::tempdir().unwrap();
    let backend = Arc::new(Undeclared::new(state.path()));
    let mut options = options();
    assert!(!options.tls, "the caller asks for nothing");
    options.cost_confirmation = Some(CostConfirmation::new("test"));
    let report = run::run(
        backend.clone(),
        &scenario(),
        &options,
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
    .expect("the run completes over TLS");
    assert!(report.succeeded());
    // Every agent was started with the run's TLS material, so it served only TLS, and the run
    // completed: the controller spoke TLS pinned to the run's certificate.
    let specs = backend.specs_with_tls.lock().unwrap().clone();
    assert!(
        !specs.is_empty() && specs.iter().all(|tls| *tls),
        "{specs:?}"
    );
    assert!(backend.list(&RunFilter::All).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_link_off_this_host_is_refused_whatever_the_backend_declares() {
    let state = tempfile::tempdir().unwrap();
    let mut backend = Undeclared::new(state.path());
    // A buggy backend: says "loopback" (so core adds no TLS) but hands out a network address.
    backend.claims_loopback = true;
    backend.address_override = Some("192.0.2.10:7070".into());
    let backend = Arc::new(backend);
    let mut options = options();
    options.cost_confirmation = Some(CostConfirmation::new("test"));
    let err = run::run(
        backend.clone(),
        &scenario(),
        &options,
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "insecure_link", "{err}");
    assert!(err.to_string().contains("192.0.2.10:7070"), "{err}");
    assert!(
        backend.list(&RunFilter::All).await.unwrap().is_empty(),
        "the node was destroyed"
    );
}
