//! The container backend against the shared conformance suite: real containers of the agent
//! image (built with podman by the test support), on podman's Docker-compatible API service
//! started for each test, with real Chromium inside for the end-to-end check.

use std::sync::Arc;
use std::time::Duration;

use liveload_container::{ContainerBackend, NodeLimits};
use liveload_core::conformance::Harness;
use liveload_core::{LinkPath, RunFilter};
use liveload_test_support::container::{Engine, HOST_FROM_CONTAINER};

/// Each node: 1 GiB and one core, enough for the suite's two users.
const LIMITS: NodeLimits = NodeLimits {
    memory_bytes: 1 << 30,
    cpus: 1.0,
    pids: 4096,
};

async fn fixture() -> (Harness, Engine) {
    let engine = tokio::task::spawn_blocking(Engine::start).await.unwrap();
    let backend = engine.builder().limits(LIMITS).build().await.unwrap();
    let slow = engine
        .builder()
        .limits(LIMITS)
        .debug_delay_listen(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    // The target listens on this host's loopback; containers reach it through slirp4netns.
    let target = demo_target::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let harness = Harness {
        backend: Arc::new(backend),
        slow_backend: Arc::new(slow),
        target_url: Some(format!("http://{HOST_FROM_CONTAINER}:{}", target.port())),
        ready_timeout: Duration::from_secs(60),
    };
    (harness, engine)
}

/// The engine's own proof: no container with this test's label is left, of any run.
fn nothing_left(engine: Engine) {
    let left = engine.left();
    assert!(left.is_empty(), "containers left: {left:?}");
}

liveload_core::conformance_tests!(setup: fixture(), after: nothing_left);

/// The engine's default network (a bridge) works too: the agent's port is published on
/// 127.0.0.1 and the node is reached, measured and removed.
#[tokio::test(flavor = "multi_thread")]
async fn default_bridge_network_reaches_the_agent() {
    let (mut harness, engine) = fixture().await;
    let bridge: ContainerBackend = engine
        .builder()
        .limits(LIMITS)
        .network(None)
        .build()
        .await
        .unwrap();
    harness.backend = Arc::new(bridge);
    liveload_core::conformance::create_ready_facts_destroy(&harness).await;
    nothing_left(engine);
}

/// Policy: containers are free, and the link is treated as crossing a network (TLS pinned).
#[tokio::test(flavor = "multi_thread")]
async fn declares_free_nodes_on_a_pinned_link() {
    let (harness, engine) = fixture().await;
    assert_eq!(harness.backend.link_path(), LinkPath::Network);
    assert_eq!(harness.backend.billing(), liveload_core::Billing::Free);
    let size = harness.backend.expected_size().await.unwrap().unwrap();
    assert_eq!((size.memory_bytes, size.cores), (1 << 30, 1.0));
    assert!(harness.backend.node_limit().unwrap() >= 1);
    // `list` under all runs answers from the engine (labels), whatever else it holds.
    harness.backend.list(&RunFilter::All).await.unwrap();
    nothing_left(engine);
}

/// `host` networking is refused before anything is made, and so is a remote engine.
#[tokio::test(flavor = "multi_thread")]
async fn refuses_host_networking_and_remote_engines() {
    let host = ContainerBackend::builder()
        .network(Some("host".into()))
        .build()
        .await
        .unwrap_err();
    assert_eq!(host.code(), "invalid_option", "{host}");
    let remote = ContainerBackend::builder()
        .socket("tcp://127.0.0.1:2375")
        .build()
        .await
        .unwrap_err();
    assert_eq!(remote.code(), "invalid_option", "{remote}");
}
