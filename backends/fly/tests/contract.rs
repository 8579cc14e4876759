//! Every request the Fly backend makes, validated against Fly's published OpenAPI spec by a
//! Prism mock (`tests/fixtures/fly-machines-openapi.json`). A request the spec rejects is
//! answered 422 with the violated rule, which fails the call and the test.
//!
//! Prism runs without `--errors`: with it, Prism also rejects its own example *responses* (the
//! spec's examples do not satisfy the spec), which says nothing about our requests.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use liveload_core::{Backend, NodeSpec, RunFilter, Secret, names, tls};
use liveload_fly::{FlyBackend, Limits, api};

struct Prism {
    child: Child,
    url: String,
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prism_bin() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("LIVELOAD_PRISM") {
        return path.into();
    }
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/npm/node_modules/.bin/prism");
    assert!(
        local.exists(),
        "Prism is missing: run scripts/test.sh, which installs @stoplight/prism-cli 5.16.0 into .tools/npm"
    );
    local
}

async fn start_prism() -> Prism {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fly-machines-openapi.json");
    let child = Command::new(prism_bin())
        .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string()])
        .arg(spec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prism starts");
    let prism = Prism {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < end, "prism did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    prism
}

fn backend(url: &str) -> FlyBackend {
    FlyBackend::builder()
        .base_url(url)
        .app("liveload-contract")
        .token(Secret::new("contract-token"))
        .image("registry.fly.io/liveload-agent:contract")
        .regions(vec!["iad".into(), "fra".into()])
        .limits(Limits {
            create_per_s: 50.0,
            create_burst: 10,
            action_per_s: 50.0,
            action_burst: 10,
        })
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_the_backend_makes_satisfies_the_published_spec() {
    let prism = start_prism().await;
    let fly = backend(&prism.url);
    let (agent_tls, _) = tls::generate_run_certificate().unwrap();
    let spec = NodeSpec {
        run_id: names::new_run_id("contract"),
        index: 1,
        token: names::new_token(),
        ttl: Duration::from_secs(600),
        grace: Duration::from_secs(30),
        tls: Some(agent_tls),
        no_browser: false,
    };
    // create (the full request: env with TLS material, guest, metadata, restart, region)
    let node = fly.create(&spec).await.expect("create satisfies the spec");
    // list: all, and by run (the metadata filter is documented by Fly, absent from the spec)
    fly.list(&RunFilter::All)
        .await
        .expect("list satisfies the spec");
    fly.list(&RunFilter::Run(spec.run_id.clone()))
        .await
        .expect("list by run satisfies the spec");
    // wait for started, read one machine, destroy
    assert!(
        fly.client()
            .wait(&node.id, "started", Duration::from_secs(30))
            .await
            .expect("wait satisfies the spec")
    );
    fly.client()
        .get(&node.id)
        .await
        .expect("get satisfies the spec");
    fly.destroy(&node).await.expect("delete satisfies the spec");
    // `liveload doctor`'s reads: the app, its IP assignments, the platform's regions (their
    // answers are the spec's examples, read with the spec's shapes).
    assert!(
        fly.client()
            .app()
            .await
            .expect("get app satisfies the spec")
            .is_some()
    );
    fly.client()
        .ip_assignments()
        .await
        .expect("ip assignments satisfy the spec");
    fly.client()
        .regions()
        .await
        .expect("regions satisfy the spec");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mock_rejects_a_request_outside_the_spec() {
    // Proof that the contract test can fail: a restart policy the spec does not allow.
    let prism = start_prism().await;
    let fly = backend(&prism.url);
    let spec = NodeSpec {
        run_id: names::new_run_id("contract"),
        index: 0,
        token: names::new_token(),
        ttl: Duration::from_secs(60),
        grace: Duration::from_secs(30),
        tls: None,
        no_browser: true,
    };
    let mut request = fly.create_request(&spec);
    request.config.restart = Some(api::Restart {
        policy: "sometimes".into(),
    });
    let err = fly.client().create(&request).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("422") && text.contains("policy"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_pool_requests_satisfy_the_published_spec() {
    let prism = start_prism().await;
    let fly = FlyBackend::builder()
        .base_url(&prism.url)
        .app("liveload-contract")
        .token(Secret::new("contract-token"))
        .image("registry.fly.io/liveload-agent:contract")
        .pool("p1")
        .build()
        .unwrap();
    // Pool creation (skip_launch), listing by pool, destroying the pool.
    fly.create_pool("p1", 2)
        .await
        .expect("pool creates satisfy the spec");
    fly.pool_machines("p1")
        .await
        .expect("pool listing satisfies the spec");
    // Giving a machine back after a run: stop, then update with skip_launch.
    let node = liveload_core::NodeHandle {
        id: "m1".into(),
        run_id: "r".into(),
        index: 0,
        detail: String::new(),
        expires_at_unix_s: None,
    };
    fly.destroy(&node)
        .await
        .expect("stop and update satisfy the spec");
    fly.destroy_pool("p1")
        .await
        .expect("pool destroy satisfies the spec");
}
