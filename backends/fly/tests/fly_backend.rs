//! The Fly backend against the stateful Fly test server (real agents behind it): the shared
//! conformance suite, then what only Fly's API has — rate limits, 429 with Retry-After, a lost
//! create response, auth.

use liveload_test_support::fly_server as common;

use liveload_core::launch::var;
use std::sync::Arc;
use std::time::Duration;

use liveload_core::conformance::Harness;
use liveload_core::{Backend, Error, NodeSpec, RunFilter, Secret, names};
use liveload_fly::{FlyBackend, Limits, Reach};

fn backend(server: &common::FlyServer, app: &str, limits: Limits) -> FlyBackend {
    backend_reaching(server, app, limits, Reach::Private)
}

fn backend_reaching(
    server: &common::FlyServer,
    app: &str,
    limits: Limits,
    reach: Reach,
) -> FlyBackend {
    let port = server.state.lock().unwrap().agent_port;
    FlyBackend::builder()
        .base_url(&server.url)
        .app(app)
        .token(Secret::new(common::TOKEN))
        .image("registry.fly.io/liveload-agent:test")
        .agent_port(port)
        .limits(limits)
        .reach(reach)
        .build()
        .unwrap()
}

/// Fast limits for the conformance runs (the limiter itself is tested below).
fn fast() -> Limits {
    Limits {
        create_per_s: 100.0,
        create_burst: 10,
        action_per_s: 100.0,
        action_burst: 10,
    }
}

/// The suite's harness, agents reached privately (`public == false`) or through the edge.
async fn harness(server: &common::FlyServer, public: bool) -> Harness {
    let target = demo_target::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let reach = || {
        if public {
            server.public_reach()
        } else {
            Reach::Private
        }
    };
    Harness {
        backend: Arc::new(backend_reaching(server, "liveload-test", fast(), reach())),
        slow_backend: Arc::new(backend_reaching(server, "slow-app", fast(), reach())),
        target_url: Some(format!("http://{target}")),
        ready_timeout: Duration::from_secs(30),
    }
}

/// The suite's harness on a fresh test server (the guard).
async fn setup(public: bool) -> (Harness, common::FlyServer) {
    let server = common::start().await;
    (harness(&server, public).await, server)
}

/// The server holds no machine once a check is done.
fn nothing_left(server: common::FlyServer) {
    assert!(
        server.state.lock().unwrap().machines.is_empty(),
        "the server holds no machine"
    );
}

/// Agents on their private IPs, TLS pinned end to end.
mod private_mode {
    use super::*;
    liveload_core::conformance_tests!(setup: setup(false), after: nothing_left);
}

/// Agents through the edge (`fly-force-instance-id`), its certificate verified by CA.
mod public_mode {
    use super::*;
    liveload_core::conformance_tests!(setup: setup(true), after: nothing_left);
}

#[tokio::test(flavor = "multi_thread")]
async fn public_mode_exposes_the_agent_port_through_the_edge_and_keeps_tls_keys_home() {
    let server = common::start().await;
    let fly = backend_reaching(&server, "liveload-test", fast(), server.public_reach());
    let (agent_tls, _) = liveload_core::tls::generate_run_certificate().unwrap();
    let mut spec = spec("public-00000000", 0);
    spec.tls = Some(agent_tls);
    let request = fly.create_request(&spec);
    let port = server.state.lock().unwrap().agent_port;
    assert_eq!(request.config.services.len(), 1);
    let service = &request.config.services[0];
    assert_eq!(service.internal_port, port);
    assert_eq!(service.ports[0].port, 443);
    assert_eq!(service.ports[0].handlers, ["tls", "http"]);
    assert_eq!(service.autostop.as_deref(), Some("off"));
    // Fly's edge talks plain HTTP to the machine: the agent gets no TLS key to expect TLS with.
    assert!(!request.config.env.contains_key(var::TLS_KEY));
    // Secrets travel as files, never in the machine's environment.
    let token_file = format!("{}/token", liveload_fly::LAUNCH_DIR);
    assert_eq!(request.config.env[var::TOKEN_FILE], token_file);
    assert!(
        request
            .config
            .files
            .iter()
            .any(|f| f.guest_path == token_file)
    );
    assert!(
        !request
            .config
            .env
            .values()
            .any(|v| v.contains(spec.token.expose()))
    );
    // The endpoint names the machine for the edge and verifies the edge's certificate.
    let node = fly.create(&spec).await.unwrap();
    let endpoint = liveload_core::run::wait_ready_or_destroy(&fly, &node, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(endpoint.address, server.edge);
    assert_eq!(
        endpoint.headers,
        [("fly-force-instance-id".to_string(), node.id.clone())]
    );
    assert_eq!(
        endpoint.proxy.as_ref().unwrap().server_name,
        common::EDGE_NAME
    );
    fly.destroy(&node).await.unwrap();
    // Private mode is the opposite: no service, TLS end to end.
    let private = backend(&server, "liveload-test", fast()).create_request(&spec);
    assert!(private.config.services.is_empty());
    assert!(private.config.env.contains_key(var::TLS_KEY));
    assert!(
        private
            .config
            .files
            .iter()
            .any(|f| f.guest_path.ends_with("/tls.key"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn public_mode_defaults_to_the_apps_fly_dev_name() {
    let fly = FlyBackend::builder()
        .app("my-app")
        .token(Secret::new("t"))
        .image("i")
        .build()
        .unwrap();
    assert_eq!(
        fly.public_edge(),
        Some(("my-app.fly.dev:443", "my-app.fly.dev"))
    );
    let request = fly.create_request(&spec("defaults-00000000", 0));
    assert_eq!(request.config.services[0].ports[0].port, 443);
    let private = FlyBackend::builder()
        .app("my-app")
        .token(Secret::new("t"))
        .reach(Reach::Private)
        .build()
        .unwrap();
    assert_eq!(private.public_edge(), None);
}

fn spec(run_id: &str, index: u32) -> NodeSpec {
    NodeSpec {
        run_id: run_id.to_string(),
        index,
        token: names::new_token(),
        ttl: Duration::from_secs(120),
        grace: Duration::from_secs(30),
        tls: None,
        no_browser: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn creates_never_exceed_the_rate_limit() {
    let server = common::start().await;
    let limits = Limits {
        create_per_s: 5.0,
        create_burst: 2,
        ..fast()
    };
    let fly = backend(&server, "liveload-test", limits);
    let run = names::new_run_id("rate");
    let specs: Vec<NodeSpec> = (0..10).map(|i| spec(&run, i)).collect();
    let started = tokio::time::Instant::now();
    let nodes = futures_util::future::join_all(specs.iter().map(|s| fly.create(s))).await;
    let elapsed = started.elapsed();
    let creates = server.state.lock().unwrap().creates.clone();
    assert_eq!(creates.len(), 10);
    // In every window, at most burst + rate x window requests arrived. The server stamps
    // arrivals, which wander a few milliseconds from the client's sends (the first requests
    // open connections, later ones reuse them), so the window is widened by 50 ms; without
    // the limiter, 10 creates arrive within a few milliseconds and this still fails.
    for i in 0..creates.len() {
        for j in i..creates.len() {
            let window = (creates[j] - creates[i]).as_secs_f64();
            let allowed = 2.0 + 5.0 * (window + 0.05);
            assert!(
                ((j - i + 1) as f64) <= allowed,
                "{} creates in {window:.3} s",
                j - i + 1
            );
        }
    }
    // ... and no slower than the limit needs: 10 creates at 5/s with a burst of 2 take 1.6 s.
    assert!(elapsed < Duration::from_millis(2600), "{elapsed:?}");
    for node in nodes {
        fly.destroy(&node.unwrap()).await.unwrap();
    }
    assert!(fly.list(&RunFilter::Run(run)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_with_retry_after_is_honoured() {
    let server = common::start().await;
    {
        let mut s = server.state.lock().unwrap();
        s.throttle_next = 2;
        s.retry_after_s = 1;
    }
    let fly = backend(&server, "liveload-test", fast());
    let run = names::new_run_id("throttled");
    let started = tokio::time::Instant::now();
    let node = fly
        .create(&spec(&run, 0))
        .await
        .expect("created after the throttling");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited Retry-After twice: {:?}",
        started.elapsed()
    );
    assert_eq!(server.state.lock().unwrap().creates.len(), 3);
    fly.destroy(&node).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_create_response_does_not_make_a_second_machine() {
    let server = common::start().await;
    server.state.lock().unwrap().lose_next_create = true;
    let fly = backend(&server, "liveload-test", fast());
    let run = names::new_run_id("lost");
    let node = fly
        .create(&spec(&run, 0))
        .await
        .expect("the retry adopts the machine");
    let listed = fly.list(&RunFilter::Run(run.clone())).await.unwrap();
    assert_eq!(listed.len(), 1, "one machine: {listed:?}");
    assert_eq!(listed[0].id, node.id);
    assert_eq!(
        server.state.lock().unwrap().creates.len(),
        2,
        "created, lost, retried, adopted"
    );
    fly.destroy(&node).await.unwrap();
    assert!(fly.list(&RunFilter::Run(run)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_is_an_auth_error_that_names_the_fix_but_not_the_token() {
    let server = common::start().await;
    let port = server.state.lock().unwrap().agent_port;
    let fly = FlyBackend::builder()
        .base_url(&server.url)
        .app("liveload-test")
        .token(Secret::new("wrong-token-abcdef"))
        .image("img")
        .agent_port(port)
        .limits(fast())
        .build()
        .unwrap();
    let err = fly.create(&spec("auth-00000000", 0)).await.unwrap_err();
    match &err {
        Error::Backend(e) => {
            assert_eq!(e.kind, liveload_core::BackendErrorKind::Auth);
            assert!(
                e.hint
                    .as_deref()
                    .unwrap_or_default()
                    .contains("FLY_API_TOKEN")
            );
        }
        other => panic!("{other:?}"),
    }
    let shown = format!("{err} {err:?} {}", err.to_json());
    assert!(
        !shown.contains("wrong-token-abcdef"),
        "the token leaked: {shown}"
    );
    assert_eq!(server.state.lock().unwrap().unauthorized, 1, "not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_options_are_clear_errors() {
    // No token is no error until the API is needed: a plan needs none (Fly's presets).
    let fly = FlyBackend::builder().app("a").image("i").build().unwrap();
    assert!(fly.expected_size().await.unwrap().is_some());
    let err = fly.list(&RunFilter::All).await.unwrap_err();
    assert!(
        err.to_string().contains("no Fly API token")
            && err.hint().unwrap().contains("FLY_API_TOKEN"),
        "{err}"
    );
    let err = FlyBackend::builder()
        .token(Secret::new("t"))
        .image("i")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("--fly-app"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_pool_starts_machines_for_a_run_and_gets_them_back_stopped() {
    let server = common::start().await;
    let pooled = |pool: &str| {
        let port = server.state.lock().unwrap().agent_port;
        FlyBackend::builder()
            .base_url(&server.url)
            .app("liveload-test")
            .token(Secret::new(common::TOKEN))
            .image("registry.fly.io/liveload-agent:test")
            .agent_port(port)
            .limits(fast())
            .reach(server.public_reach())
            .pool(pool)
            .build()
            .unwrap()
    };
    let fly = pooled("p1");
    let made = fly.create_pool("p1", 3).await.unwrap();
    assert_eq!(made.len(), 3);
    assert!(
        server
            .state
            .lock()
            .unwrap()
            .machines
            .values()
            .all(|m| m.state == "stopped" && m.agent.is_none())
    );

    // A run takes two: started with the run's token, reachable, with real facts.
    let run = names::new_run_id("pooled");
    let specs = [spec(&run, 0), spec(&run, 1)];
    let mut nodes = Vec::new();
    for s in &specs {
        let node = fly.create(s).await.unwrap();
        let endpoint =
            liveload_core::run::wait_ready_or_destroy(&fly, &node, Duration::from_secs(30))
                .await
                .unwrap();
        let (_, welcome) = liveload_core::agent_client::AgentConnection::connect(
            &node.id,
            &endpoint,
            &s.token,
            tokio::time::Instant::now() + Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(welcome.facts.total_memory_bytes > 0);
        nodes.push(node);
    }
    assert_eq!(
        fly.list(&RunFilter::Run(run.clone())).await.unwrap().len(),
        2
    );
    assert_eq!(
        server.state.lock().unwrap().creates.len(),
        3,
        "no machine created for the run"
    );

    // At the end they go back: stopped, no run tag, no token; none is destroyed.
    for node in &nodes {
        fly.destroy(node).await.unwrap();
    }
    assert!(fly.list(&RunFilter::Run(run)).await.unwrap().is_empty());
    {
        let s = server.state.lock().unwrap();
        assert_eq!(s.machines.len(), 3);
        for m in s.machines.values() {
            assert_eq!(m.state, "stopped");
            assert!(m.config["metadata"].get("liveload_run_id").is_none());
            assert!(m.config["env"].get(var::TOKEN_FILE).is_none());
            assert!(m.config["files"].as_array().is_none_or(|f| f.is_empty()));
        }
    }

    // More nodes than the pool holds: a clear error naming the fix.
    let run = names::new_run_id("greedy");
    let mut taken = Vec::new();
    for i in 0..3 {
        taken.push(fly.create(&spec(&run, i)).await.unwrap());
    }
    let err = fly.create(&spec(&run, 3)).await.unwrap_err();
    assert!(
        err.hint().unwrap().contains("liveload fly pool create"),
        "{err}"
    );
    for node in &taken {
        fly.destroy(node).await.unwrap();
    }
    assert_eq!(fly.destroy_pool("p1").await.unwrap(), 3);
    assert!(server.state.lock().unwrap().machines.is_empty());
}

/// More nodes than the creation timeout allows at Fly's real create rate (1/s, the client's
/// bursts of 2):
/// the timeout measures each machine from the provider's acceptance, not liveload's queue, so
/// the run boots them all. (Before, node 7 waited ~4 s behind the limiter and timed out at 3 s.)
/// Booting takes longer than the agents' grace too: the first agents, up long before the last,
/// get heartbeats from the moment they answer. (Before, their links stayed silent until every
/// node was up, and they ended themselves at the grace: a 256-node Fly run failed on node 1.)
#[tokio::test(flavor = "multi_thread")]
async fn a_run_longer_to_create_than_the_creation_timeout_still_boots() {
    let server = common::start().await;
    let fly = Arc::new(backend(&server, "liveload-test", Limits::default()));
    let nodes = 8u32;
    let steps = vec![liveload_core::proto::Step {
        name: "idle".into(),
        kind: liveload_core::proto::StepKind::Think {
            min_ms: 10,
            max_ms: 20,
        },
    }];
    let mut scenario = liveload_core::scenario::Scenario::new("queue", "http://127.0.0.1", steps);
    scenario.duration = Duration::from_millis(500);
    let mut options =
        liveload_core::run::RunOptions::new("queue", u64::from(nodes), Duration::from_millis(500));
    options.no_browser = true;
    options.creation_timeout = Duration::from_secs(3);
    options.grace = Duration::from_secs(2);
    options.cost_confirmation = Some(liveload_core::run::CostConfirmation::new("test"));
    // One user per node: a performance-2x guest has 2 cores.
    options.sizing.profile.browser_contexts_per_core = 0.5;
    let report = liveload_core::run::run(
        fly.clone(),
        &scenario,
        &options,
        Arc::new(liveload_core::run::Quiet),
        std::future::pending(),
    )
    .await
    .expect("every node boots although creating them takes longer than the creation timeout");
    assert_eq!(report.nodes.len(), nodes as usize);
    let slowest = report.nodes.iter().map(|n| n.create_s).fold(0.0, f64::max);
    assert!(
        slowest > options.creation_timeout.as_secs_f64(),
        "a create waited longer than the creation timeout ({slowest:.1} s): the test proves nothing otherwise"
    );
    assert_eq!(
        report.plan.boot_floor_s,
        Some(6.0),
        "8 creates at 1/s after a burst of 2"
    );
    assert!(fly.list(&RunFilter::All).await.unwrap().is_empty());
}
