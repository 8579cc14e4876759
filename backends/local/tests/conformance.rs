//! The local backend against the shared conformance suite, with real agents and real Chromium.

use std::sync::Arc;
use std::time::Duration;

use liveload_core::conformance::Harness;
use liveload_local::LocalBackend;

/// A harness on a fresh state directory (kept alive by the returned guard).
async fn fixture() -> (Harness, tempfile::TempDir) {
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
    let harness = Harness {
        backend: Arc::new(backend),
        slow_backend: Arc::new(slow),
        target_url: Some(format!("http://{target}")),
        ready_timeout: Duration::from_secs(30),
    };
    (harness, state)
}

liveload_core::conformance_tests!(setup: fixture(), after: |_state: tempfile::TempDir| {});

/// The end-to-end check once more without a browser (the cluster machinery alone).
#[tokio::test(flavor = "multi_thread")]
async fn end_to_end_run_without_browser_leaves_nothing() {
    let (mut harness, _state) = fixture().await;
    harness.target_url = None;
    liveload_core::conformance::end_to_end_run_leaves_nothing(&harness).await;
}
