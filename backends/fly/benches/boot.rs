//! Boot-to-ready for 1 and N nodes, creating machines or starting a warm pool, against the
//! stateful Fly test server at Fly's documented limits (creates ~1/s per app with bursts of 3;
//! actions 1/s per machine). Ready = the agent answers on its port.
//!
//! `cargo bench -p liveload-fly --bench boot` (`LIVELOAD_BENCH_NODES`, default 10).
//! Prints figures; never fails on time.

use liveload_test_support::fly_server as common;

use std::time::Duration;

use liveload_core::{Backend, NodeSpec, Secret, names, run};
use liveload_fly::{FlyBackend, Limits};

fn backend(server: &common::FlyServer, pool: Option<&str>) -> FlyBackend {
    let port = server.state.lock().unwrap().agent_port;
    let mut builder = FlyBackend::builder()
        .base_url(&server.url)
        .app("liveload-bench")
        .token(Secret::new(common::TOKEN))
        .image("registry.fly.io/liveload-agent:bench")
        .agent_port(port)
        .limits(Limits::default())
        .reach(server.public_reach());
    if let Some(pool) = pool {
        builder = builder.pool(pool);
    }
    builder.build().unwrap()
}

async fn boot(fly: &FlyBackend, nodes: u32) -> f64 {
    let run_id = names::new_run_id("boot");
    let specs: Vec<NodeSpec> = (0..nodes)
        .map(|index| NodeSpec {
            run_id: run_id.clone(),
            index,
            token: names::new_token(),
            ttl: Duration::from_secs(600),
            grace: Duration::from_secs(600),
            tls: None,
            no_browser: true,
        })
        .collect();
    let started = tokio::time::Instant::now();
    let handles = futures_util::future::join_all(specs.iter().map(|s| async move {
        let node = fly.create(s).await.unwrap();
        run::wait_ready_or_destroy(fly, &node, Duration::from_secs(300))
            .await
            .unwrap();
        node
    }))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    for node in handles {
        fly.destroy(&node).await.unwrap();
    }
    elapsed
}

#[tokio::main]
async fn main() {
    let n: u32 = std::env::var("LIVELOAD_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    println!(
        "bench fly boot-to-ready at Fly's documented limits (test server, agents without a browser)"
    );
    for nodes in [1, n] {
        let server = common::start().await;
        let create = boot(&backend(&server, None), nodes).await;
        let server = common::start().await;
        let pooled = backend(&server, Some("bench"));
        pooled.create_pool("bench", nodes).await.unwrap();
        let pool = boot(&pooled, nodes).await;
        pooled.destroy_pool("bench").await.unwrap();
        println!("{nodes:>4} node(s): create {create:>6.2} s   warm pool {pool:>6.2} s");
    }
}
