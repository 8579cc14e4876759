//! How fast the controller issues N creates under the configured rate limit, against the
//! stateful Fly test server, compared with the limit's theoretical minimum.
//!
//! `cargo bench -p liveload-fly --bench creates` (defaults: 100 creates at Fly's documented
//! 1/s with the client's bursts of 2: the minimum is 98 s). `LIVELOAD_BENCH_CREATES`, `LIVELOAD_BENCH_RATE`
//! and `LIVELOAD_BENCH_BURST` change them. Prints figures; never fails on time.

use liveload_test_support::fly_server as common;

use std::time::Duration;

use liveload_core::{Backend, NodeSpec, RunFilter, Secret, names};
use liveload_fly::{FlyBackend, Limits};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let creates: u32 = env_or("LIVELOAD_BENCH_CREATES", 100);
    let rate: f64 = env_or("LIVELOAD_BENCH_RATE", 1.0);
    let burst: u32 = env_or("LIVELOAD_BENCH_BURST", 2);
    let server = common::start().await;
    let port = server.state.lock().unwrap().agent_port;
    let fly = FlyBackend::builder()
        .base_url(&server.url)
        .app("liveload-bench")
        .token(Secret::new(common::TOKEN))
        .image("registry.fly.io/liveload-agent:bench")
        .agent_port(port)
        .limits(Limits {
            create_per_s: rate,
            create_burst: burst,
            action_per_s: 1000.0,
            action_burst: 1000,
        })
        .build()
        .unwrap();
    let run = names::new_run_id("bench");
    let specs: Vec<NodeSpec> = (0..creates)
        .map(|index| NodeSpec {
            run_id: run.clone(),
            index,
            token: names::new_token(),
            ttl: Duration::from_secs(600),
            grace: Duration::from_secs(600),
            tls: None,
            no_browser: true,
        })
        .collect();
    let started = tokio::time::Instant::now();
    let nodes = futures_util::future::join_all(specs.iter().map(|s| fly.create(s))).await;
    let elapsed = started.elapsed().as_secs_f64();
    let minimum = (f64::from(creates) - f64::from(burst)).max(0.0) / rate;
    println!("bench fly creates: {creates} creates at {rate}/s, burst {burst}");
    println!(
        "issued in {elapsed:.2} s; theoretical minimum {minimum:.2} s; overhead {:.2} s ({:.1} %)",
        elapsed - minimum,
        if minimum > 0.0 {
            (elapsed - minimum) / minimum * 100.0
        } else {
            0.0
        }
    );
    let failed = nodes.iter().filter(|n| n.is_err()).count();
    println!("failed creates: {failed}");
    for node in nodes.into_iter().flatten() {
        let _ = fly.destroy(&node).await;
    }
    assert!(fly.list(&RunFilter::Run(run)).await.unwrap().is_empty());
}
