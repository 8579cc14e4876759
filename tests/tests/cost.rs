//! `--max-cost` through the library: a billed run whose estimate is above the cap is refused
//! before any create; one whose cost so far reaches the cap is stopped and torn down; a cap
//! on a backend whose price is unknown is refused rather than guessed.
//!
//! The backend is the local one, billed at $3,600 a node-hour ($1 a second), so costs move
//! within seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use liveload_core::proto::{Step, StepKind};
use liveload_core::run::{self, CostConfirmation, Quiet, RunOptions};
use liveload_core::scenario::Scenario;
use liveload_core::{
    AgentEndpoint, Backend, LinkPath, NodeHandle, NodeSize, NodeSpec, Result, RunFilter,
};
use liveload_local::LocalBackend;
use tokio::time::Instant;

/// Local processes that bill like a (very expensive) cloud.
#[derive(Debug)]
struct Pricey {
    inner: LocalBackend,
    price: Option<f64>,
    creates: AtomicU32,
}

#[async_trait]
impl Backend for Pricey {
    fn name(&self) -> &'static str {
        "pricey"
    }
    fn link_path(&self) -> LinkPath {
        LinkPath::Loopback
    }
    // Billing: the default (billed).
    fn hourly_price(&self) -> Option<f64> {
        self.price
    }
    async fn create(&self, spec: &NodeSpec) -> Result<NodeHandle> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.inner.create(spec).await
    }
    async fn wait_ready(&self, node: &NodeHandle, deadline: Instant) -> Result<AgentEndpoint> {
        self.inner.wait_ready(node, deadline).await
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

fn pricey(state: &std::path::Path, price: Option<f64>) -> Arc<Pricey> {
    Arc::new(Pricey {
        inner: LocalBackend::builder().state_dir(state).build().unwrap(),
        price,
        creates: AtomicU32::new(0),
    })
}

/// One user whose iteration thinks for `think_ms`; the run's duration is one second.
fn scenario(think_ms: u64) -> Scenario {
    let mut scenario = Scenario::new(
        "cost",
        "http://127.0.0.1",
        vec![Step {
            name: "think".into(),
            kind: StepKind::Think {
                min_ms: think_ms,
                max_ms: think_ms,
            },
        }],
    );
    scenario.duration = Duration::from_secs(1);
    scenario.iteration_timeout = Duration::from_secs(60);
    scenario
}

fn options(max_cost: f64, creation_timeout: Duration) -> RunOptions {
    let mut options = RunOptions::new("cost", 1, Duration::from_secs(1));
    options.no_browser = true;
    options.creation_timeout = creation_timeout;
    options.cost_confirmation = Some(CostConfirmation::new("test"));
    options.max_cost_usd = Some(max_cost);
    options
}

#[tokio::test(flavor = "multi_thread")]
async fn an_estimate_above_the_cap_is_refused_before_any_create() {
    let state = tempfile::tempdir().unwrap();
    let backend = pricey(state.path(), Some(3600.0));
    // 1 node x $1/s x (1 s + 5 s creation timeout) = $6 > $0.50.
    let err = run::run(
        backend.clone(),
        &scenario(10),
        &options(0.5, Duration::from_secs(5)),
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "cost_cap_exceeded", "{err}");
    assert!(err.to_string().contains("$6.00"), "{err}");
    assert_eq!(
        backend.creates.load(Ordering::SeqCst),
        0,
        "no create was sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_stopped_and_torn_down_when_its_cost_reaches_the_cap() {
    let state = tempfile::tempdir().unwrap();
    let backend = pricey(state.path(), Some(3600.0));
    // Estimated at $2 (1 s + 1 s), but its one iteration thinks for 30 s: the cost so far
    // reaches $4 after about 4 s, long before the iteration ends.
    let started = std::time::Instant::now();
    let report = run::run(
        backend.clone(),
        &scenario(30_000),
        &options(4.0, Duration::from_secs(1)),
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
    .expect("the run ends with a report");
    assert!(report.cost_cap_reached, "{report:?}");
    assert!(
        report
            .aborted
            .as_deref()
            .unwrap_or_default()
            .contains("cost cap"),
        "{:?}",
        report.aborted
    );
    let cost = report.cost_usd.unwrap();
    assert!(
        (4.0..10.0).contains(&cost),
        "stopped near the cap: ${cost:.2}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "did not wait for the iteration"
    );
    assert!(backend.list(&RunFilter::All).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cap_without_a_price_is_refused_rather_than_guessed() {
    let state = tempfile::tempdir().unwrap();
    let backend = pricey(state.path(), None);
    let err = run::run(
        backend.clone(),
        &scenario(10),
        &options(100.0, Duration::from_secs(5)),
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "cost_unknown", "{err}");
    assert_eq!(backend.creates.load(Ordering::SeqCst), 0);
}
