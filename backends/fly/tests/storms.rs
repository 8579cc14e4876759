//! Provider storms on Fly: 5xx, 429 with `Retry-After`, and lost answers (the API acted, the
//! answer never came) while a run boots. The run completes, no machine is made twice, and the
//! provider holds nothing afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use liveload_core::proto::{Step, StepKind};
use liveload_core::run::{self, CostConfirmation, Quiet, RunOptions};
use liveload_core::scenario::Scenario;
use liveload_core::{Backend, RunFilter, Secret};
use liveload_fly::{FlyBackend, Limits, Reach};
use liveload_test_support::fault_proxy::{FaultProxy, Flavor};
use liveload_test_support::fly_server;

#[tokio::test(flavor = "multi_thread")]
async fn a_run_rides_out_a_storm_of_errors_throttling_and_lost_answers() {
    let server = fly_server::start().await;
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = FaultProxy::start(port, Flavor::Fly);
    let agent_port = server.state.lock().unwrap().agent_port;
    let fly = Arc::new(
        FlyBackend::builder()
            .base_url(&proxy.url)
            .app("liveload-test")
            .token(Secret::new(fly_server::TOKEN))
            .image("registry.fly.io/liveload-agent:test")
            .agent_port(agent_port)
            .limits(Limits {
                create_per_s: 100.0,
                create_burst: 10,
                action_per_s: 100.0,
                action_burst: 10,
            })
            .reach(Reach::Private)
            .build()
            .unwrap(),
    );
    {
        // Back to back: a second of 503s, then throttling (Retry-After: 1), then a second in
        // which every answer is lost after the API acted.
        let mut faults = proxy.faults.lock().unwrap();
        let now = Instant::now();
        faults.errors_until = Some(now + Duration::from_secs(1));
        faults.throttle_until = Some(now + Duration::from_secs(2));
        faults.lose_until = Some(now + Duration::from_secs(3));
        faults.retry_after_s = 1;
    }
    let nodes = 4u64;
    let mut scenario = Scenario::new(
        "storm",
        "http://127.0.0.1",
        vec![Step {
            name: "idle".into(),
            kind: StepKind::Think {
                min_ms: 10,
                max_ms: 20,
            },
        }],
    );
    scenario.duration = Duration::from_millis(500);
    let mut options = RunOptions::new("storm", nodes, Duration::from_millis(500));
    options.no_browser = true;
    options.creation_timeout = Duration::from_secs(60);
    options.cost_confirmation = Some(CostConfirmation::new("test"));
    options.sizing.profile.browser_contexts_per_core = 0.5; // one user per 2-core node
    let report = run::run(
        fly.clone(),
        &scenario,
        &options,
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
    .expect("the run completes through the storm");
    assert_eq!(report.nodes.len(), nodes as usize);
    let (errored, throttled, lost) = {
        let faults = proxy.faults.lock().unwrap();
        (faults.errored, faults.throttled, faults.lost)
    };
    assert!(
        errored > 0 && throttled > 0 && lost > 0,
        "the storm happened: {errored} errors, {throttled} throttled, {lost} lost"
    );
    // Machine names are unique per node (a retried create adopts the first): the server made
    // exactly one machine per node, and holds none now.
    let left: Vec<String> = server
        .state
        .lock()
        .unwrap()
        .machines
        .keys()
        .cloned()
        .collect();
    assert!(left.is_empty(), "left: {left:?}");
    assert!(fly.list(&RunFilter::All).await.unwrap().is_empty());
}
