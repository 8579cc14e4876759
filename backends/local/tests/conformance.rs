//! The local backend against the shared conformance suite, with real agents and real Chromium.

use std::sync::Arc;
use std::time::Duration;

use liveload_core::conformance::{self, Harness};
use liveload_local::LocalBackend;

struct Fixture {
    harness: Harness,
    _state: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let state = tempfile::tempdir().unwrap();
    let backend = LocalBackend::builder()
        .state_dir(state.path())
        .nodes_per_host(4)
        .build()
        .expect("liveload-agent is built (cargo build --workspace --bins)");
    let slow = LocalBackend::builder()
        .state_dir(state.path())
        .debug_delay_listen(Duration::from_secs(5))
        .build()
        .unwrap();
    let target = demo_target::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    Fixture {
        harness: Harness {
            backend: Arc::new(backend),
            slow_backend: Arc::new(slow),
            target_url: Some(format!("http://{target}")),
            ready_timeout: Duration::from_secs(30),
        },
        _state: state,
    }
}

#[tokio::test]
async fn create_ready_facts_destroy() {
    conformance::create_ready_facts_destroy(&fixture().await.harness).await;
}

#[tokio::test]
async fn destroy_is_idempotent() {
    conformance::destroy_is_idempotent(&fixture().await.harness).await;
}

#[tokio::test]
async fn list_shows_the_node_then_none() {
    conformance::list_shows_the_node_then_none(&fixture().await.harness).await;
}

#[tokio::test]
async fn creation_timeout_destroys_the_node() {
    conformance::creation_timeout_destroys_the_node(&fixture().await.harness).await;
}

#[tokio::test]
async fn wrong_token_is_refused() {
    conformance::wrong_token_is_refused(&fixture().await.harness).await;
}

#[tokio::test]
async fn tls_link_is_pinned() {
    conformance::tls_link_is_pinned(&fixture().await.harness).await;
}

#[tokio::test]
async fn parallel_creates_are_distinct() {
    conformance::parallel_creates_are_distinct(&fixture().await.harness).await;
}

#[tokio::test]
async fn end_to_end_run_with_real_chromium_leaves_nothing() {
    conformance::end_to_end_run_leaves_nothing(&fixture().await.harness).await;
}

#[tokio::test]
async fn end_to_end_run_without_browser_leaves_nothing() {
    let mut f = fixture().await;
    f.harness.target_url = None;
    conformance::end_to_end_run_leaves_nothing(&f.harness).await;
}
