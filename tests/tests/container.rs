//! `liveload --backend container` end to end: a whole run through the CLI on containers of the
//! agent image (built and served by podman through the test support), and `cleanup` finding a
//! crashed run's containers by label.

use std::time::Duration;

use liveload_container::{ContainerBackend, LABEL_RUN, NodeLimits};
use liveload_core::{Backend, NodeSpec, names};
use liveload_e2e::*;
use liveload_test_support::container::{self, Engine, HOST_FROM_CONTAINER, TEST_NETWORK};

const LIMITS: NodeLimits = NodeLimits {
    memory_bytes: 1 << 30,
    cpus: 1.5,
    pids: 1024,
};

async fn engine() -> Engine {
    tokio::task::spawn_blocking(Engine::start).await.unwrap()
}

fn spec(run_id: &str) -> NodeSpec {
    NodeSpec {
        run_id: run_id.to_string(),
        index: 0,
        token: names::new_token(),
        ttl: Duration::from_secs(300),
        grace: Duration::from_secs(300),
        tls: None,
        no_browser: true,
    }
}

/// `liveload run --backend container`: the CLI's options reach the containers, the report shows
/// the limits as facts, and no container of the run is left.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_runs_on_the_container_backend_and_leaves_nothing() {
    let _heavy = heavy();
    let engine = engine().await;
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let port = target.rsplit(':').next().unwrap().to_string();
    let demo_yaml = repo().join("examples/demo.yaml");
    let base_url = format!("http://{HOST_FROM_CONTAINER}:{port}");
    let socket = engine.service.socket.display().to_string();
    let args = strings(&[
        "run",
        demo_yaml.to_str().unwrap(),
        "--base-url",
        &base_url,
        "--users",
        "2",
        "--duration",
        "3s",
        "--output",
        "json",
        "--backend",
        "container",
        "--container-socket",
        &socket,
        "--container-image",
        &engine.image,
        "--container-memory",
        "1g",
        "--container-cpus",
        "1.5",
        "--container-network",
        TEST_NETWORK,
    ]);
    let out = liveload_output(state.path(), &[], args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["backend"], "container");
    assert_eq!(report["users_succeeded"], 2);
    let facts = &report["nodes"][0]["facts"];
    assert_eq!(facts["cgroup_memory_limit_bytes"], 1u64 << 30);
    assert_eq!(facts["cgroup_cpu_limit"], 1.5);
    let run_id = report["run_id"].as_str().unwrap();
    assert!(container::containers_labelled(LABEL_RUN, run_id).is_empty());
}

/// `liveload cleanup --backend container` finds a crashed run's containers by label.
#[tokio::test(flavor = "multi_thread")]
async fn cleanup_removes_a_crashed_runs_containers() {
    let engine = engine().await;
    let backend: ContainerBackend = engine.builder().limits(LIMITS).build().await.unwrap();
    let crashed = names::new_run_id("crashed");
    backend.create(&spec(&crashed)).await.unwrap();
    let other = spec(&names::new_run_id("other"));
    let kept = backend.create(&other).await.unwrap();
    assert_eq!(container::containers_labelled(LABEL_RUN, &crashed).len(), 1);
    let state = tempfile::tempdir().unwrap();
    let socket = engine.service.socket.display().to_string();
    let args = strings(&[
        "cleanup",
        "--run",
        &crashed,
        "--output",
        "json",
        "--backend",
        "container",
        "--container-socket",
        &socket,
    ]);
    let out = liveload_output(state.path(), &[], args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(container::containers_labelled(LABEL_RUN, &crashed).is_empty());
    assert_eq!(
        container::containers_labelled(LABEL_RUN, &other.run_id).len(),
        1
    );
    backend.destroy(&kept).await.unwrap();
    assert!(engine.left().is_empty(), "{:?}", engine.left());
}
