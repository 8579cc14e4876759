//! The example backend passes the same conformance suite as every real backend.

use std::sync::Arc;
use std::time::Duration;

use liveload_core::conformance::Harness;
use liveload_example_backend::ExampleBackend;

async fn fixture() -> (Harness, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let agent = liveload_core::agent_bin::find().expect("liveload-agent is built");
    let backend = |delay| ExampleBackend {
        root: root.path().to_path_buf(),
        agent: agent.clone(),
        delay_listen: delay,
    };
    let target = demo_target::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let harness = Harness {
        backend: Arc::new(backend(Duration::ZERO)),
        slow_backend: Arc::new(backend(Duration::from_secs(5))),
        target_url: Some(format!("http://{target}")),
        ready_timeout: Duration::from_secs(30),
    };
    (harness, root)
}

/// The provider's own proof: no record directory and no agent process of any run is left.
fn nothing_left(root: tempfile::TempDir) {
    let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "records left: {left:?}");
}

liveload_core::conformance_tests!(setup: fixture(), after: nothing_left);
