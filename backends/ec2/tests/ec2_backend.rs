//! The EC2 backend through the real `aws-sdk-ec2` against moto's EC2 emulator (one server per
//! test, instance-type and AMI validation on): the shared conformance suite end to end with
//! real agents and Chromium (the endpoint hook starts a local agent per instance from its user
//! data), then what only EC2 has.

use liveload_test_support::moto as common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use liveload_core::conformance::Harness;
use liveload_core::launch::var;
use liveload_core::{Backend, BackendErrorKind, Error, NodeSpec, RunFilter, names, run};
use liveload_ec2::user_data::UserData;
use liveload_ec2::{Ec2Backend, Image, client_token};

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

/// Instances of `run` the emulator still holds, terminated ones excluded.
async fn live_instances(backend: &Ec2Backend, run: &str) -> usize {
    backend
        .list(&RunFilter::Run(run.to_string()))
        .await
        .unwrap()
        .len()
}

/// What keeps a check's emulator world up: the server, the stand-in agents' directory, and a
/// backend to look with afterwards.
struct World {
    moto: common::Moto,
    _agents: tempfile::TempDir,
    backend: Arc<dyn Backend>,
}

/// The suite's harness on a fresh moto server, local agents standing in for instances.
async fn setup() -> (Harness, World) {
    let moto = common::Moto::start();
    let ami = common::known_ami(moto.options()).await;
    let (agents, dir) = common::local_agents();
    let target = demo_target::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let backend: Arc<dyn Backend> = Arc::new(common::backend(moto.options(), &ami, agents).await);
    let slow = common::backend(moto.options(), &ami, Arc::new(common::NeverReady)).await;
    let harness = Harness {
        backend: backend.clone(),
        slow_backend: Arc::new(slow),
        target_url: Some(format!("http://{target}")),
        ready_timeout: Duration::from_secs(30),
    };
    let world = World {
        moto,
        _agents: dir,
        backend,
    };
    (harness, world)
}

/// No instance of any run is left running in the emulator; then the emulator is reset.
fn nothing_left(world: World) {
    let all = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(world.backend.list(&RunFilter::All))
    })
    .unwrap();
    assert!(all.is_empty(), "instances left: {all:?}");
    world.moto.reset();
}

liveload_core::conformance_tests!(setup: setup(), after: nothing_left);

#[tokio::test(flavor = "multi_thread")]
async fn instances_carry_the_run_tags_shutdown_behaviour_and_user_data() {
    let moto = common::Moto::start();
    let ami = common::known_ami(moto.options()).await;
    let (agents, _dir) = common::local_agents();
    let backend = common::backend(moto.options(), &ami, agents).await;
    let run = names::new_run_id("tags");
    let node_spec = spec(&run, 3);
    let node = backend.create(&node_spec).await.unwrap();
    let described = backend
        .ec2()
        .describe_instances()
        .instance_ids(&node.id)
        .send()
        .await
        .unwrap();
    let instance = &described.reservations()[0].instances()[0];
    let tags: std::collections::BTreeMap<&str, &str> = instance
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert_eq!(tags["liveload:run-id"], run);
    assert_eq!(tags["liveload:node"], "3");
    assert!(tags["liveload:expires-at"].parse::<u64>().unwrap() > 0);
    assert_eq!(tags["Name"], format!("ll-{run}-3"));
    assert_eq!(instance.instance_type().unwrap().as_str(), "c7i.large");
    assert_eq!(instance.image_id(), Some(ami.as_str()));
    // IMDSv2 only, one hop: a page cannot read the user data (and the node's token).
    let metadata = instance.metadata_options().expect("metadata options");
    assert_eq!(
        metadata.http_tokens(),
        Some(&aws_sdk_ec2::types::HttpTokensState::Required)
    );
    assert_eq!(metadata.http_put_response_hop_limit(), Some(1));
    let behaviour = backend
        .ec2()
        .describe_instance_attribute()
        .instance_id(&node.id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .unwrap();
    assert_eq!(
        behaviour
            .instance_initiated_shutdown_behavior()
            .and_then(|v| v.value()),
        Some("terminate"),
        "an agent that powers off terminates its instance"
    );
    let data = backend
        .ec2()
        .describe_instance_attribute()
        .instance_id(&node.id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let script = String::from_utf8(
        aws_smithy_types::base64::decode(data.user_data().unwrap().value().unwrap()).unwrap(),
    )
    .unwrap();
    let launch = UserData::parse(&script).unwrap().launch;
    // The token travels as a file of the launch, never as a variable.
    let token = launch.files.iter().find(|f| f.name == "token").unwrap();
    assert_eq!(token.contents, node_spec.token.expose());
    assert!(
        launch
            .env
            .iter()
            .all(|(_, v)| !v.contains(node_spec.token.expose()))
    );
    assert_eq!(launch.get(var::RUN_ID), Some(run.as_str()));
    assert_eq!(launch.get(var::TTL), Some("120"));
    backend.destroy(&node).await.unwrap();
    assert_eq!(live_instances(&backend, &run).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_run_instances_answer_is_adopted_not_repeated() {
    let moto = common::Moto::start();
    let ami = common::known_ami(moto.options()).await;
    let proxy = common::LosingProxy::start(moto.port);
    let (agents, _dir) = common::local_agents();
    let backend = common::backend(moto.options_at(&proxy.url), &ami, agents).await;
    let run = names::new_run_id("lost");
    proxy.lose_next_run.store(true, Ordering::SeqCst);
    let node = backend.create(&spec(&run, 0)).await.unwrap();
    assert!(
        !proxy.lose_next_run.load(Ordering::SeqCst),
        "the answer was lost"
    );
    assert_eq!(
        live_instances(&backend, &run).await,
        1,
        "one instance, not two"
    );
    assert_eq!(
        proxy.run_calls.load(Ordering::SeqCst),
        1,
        "found by its tags instead of a second RunInstances"
    );
    backend.destroy(&node).await.unwrap();
    assert_eq!(live_instances(&backend, &run).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_attempt_of_a_node_sends_the_same_client_token() {
    // EC2 itself starts one instance per ClientToken however often a call is retried; the
    // token is a pure function of run and node, so every retry of a node carries the same one,
    // and different nodes never share one.
    assert_eq!(client_token("run-a", 0), client_token("run-a", 0));
    assert_ne!(client_token("run-a", 0), client_token("run-a", 1));
    assert_ne!(client_token("run-a", 0), client_token("run-b", 0));
    let long = "x".repeat(100);
    assert!(client_token(&long, 7).len() <= 64, "EC2's limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_ami_is_a_clear_error_and_starts_nothing() {
    let moto = common::Moto::start();
    let (agents, _dir) = common::local_agents();
    let backend = common::backend(moto.options(), "ami-0123456789abcdef0", agents).await;
    let run = names::new_run_id("badami");
    let err = backend.create(&spec(&run, 0)).await.unwrap_err();
    match &err {
        Error::Backend(e) => {
            assert_eq!(e.kind, BackendErrorKind::BadImage);
            assert!(e.message.contains("InvalidAMIID"), "{}", e.message);
            assert!(e.hint.as_deref().unwrap().contains("images/ec2"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(live_instances(&backend, &run).await, 0);
    // Not an AMI id at all: refused before any call.
    let err = Ec2Backend::builder()
        .client(moto.options())
        .image(Image::Ami("debian-12".into()))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_instance_type_is_a_clear_error_for_plan_and_create() {
    let moto = common::Moto::start();
    let ami = common::known_ami(moto.options()).await;
    let backend = Ec2Backend::builder()
        .client(moto.options())
        .image(Image::Ami(ami))
        .instance_type("c99.mega")
        .build()
        .await
        .unwrap();
    let run = names::new_run_id("badtype");
    let err = backend.create(&spec(&run, 0)).await.unwrap_err();
    match &err {
        Error::Backend(e) => {
            assert_eq!(e.kind, BackendErrorKind::BadInstanceType, "{}", e.message);
            assert!(e.message.contains("c99.mega"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    let err = backend.expected_size().await.unwrap_err();
    assert_eq!(
        err.as_backend().map(|e| e.kind),
        Some(BackendErrorKind::BadInstanceType),
        "{err:?}"
    );
    assert_eq!(live_instances(&backend, &run).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalogue_gives_size_and_price_for_planning() {
    let moto = common::Moto::start();
    let backend = Ec2Backend::builder()
        .client(moto.options())
        .instance_type("c7i.large")
        .build()
        .await
        .unwrap();
    let size = backend.expected_size().await.unwrap().unwrap();
    assert_eq!(size.cores, 2.0);
    assert_eq!(size.memory_bytes, 4096 * 1024 * 1024);
    assert_eq!(backend.hourly_price(), Some(0.0893));
    let overridden = Ec2Backend::builder()
        .client(moto.options())
        .spot(true)
        .hourly_price(Some(0.03))
        .build()
        .await
        .unwrap();
    assert_eq!(overridden.hourly_price(), Some(0.03));
    let spot = Ec2Backend::builder()
        .client(moto.options())
        .spot(true)
        .build()
        .await
        .unwrap();
    assert_eq!(spot.hourly_price(), None, "spot prices move: no guess");
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_all_terminates_many_in_one_go_and_ignores_the_gone() {
    let moto = common::Moto::start();
    let ami = common::known_ami(moto.options()).await;
    let (agents, _dir) = common::local_agents();
    let backend = common::backend(moto.options(), &ami, agents).await;
    let run = names::new_run_id("batch");
    let mut nodes = Vec::new();
    for index in 0..5 {
        nodes.push(backend.create(&spec(&run, index)).await.unwrap());
    }
    backend.destroy(&nodes[0]).await.unwrap();
    backend.destroy_all(&nodes).await.unwrap();
    assert_eq!(live_instances(&backend, &run).await, 0);
    // A second time: everything is already gone, which is success.
    backend.destroy_all(&nodes).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_on_ec2_plans_from_the_catalogue_runs_and_terminates_everything() {
    let moto = common::Moto::start();
    let ami = common::known_ami(moto.options()).await;
    let (agents, _dir) = common::local_agents();
    let backend: Arc<dyn Backend> = Arc::new(common::backend(moto.options(), &ami, agents).await);
    let mut options = run::RunOptions::new("ec2-run", 4, Duration::from_secs(2));
    options.cost_confirmation = Some(run::CostConfirmation::new("test"));
    options.no_browser = true;
    let steps = vec![liveload_core::proto::Step {
        name: "idle".into(),
        kind: liveload_core::proto::StepKind::Think {
            min_ms: 20,
            max_ms: 40,
        },
    }];
    let mut scenario = liveload_core::scenario::Scenario::new("ec2-run", "http://127.0.0.1", steps);
    scenario.users = 4;
    scenario.duration = Duration::from_secs(2);
    let report = run::run(
        backend.clone(),
        &scenario,
        &options,
        Arc::new(run::Quiet),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(report.plan.source, "catalogue");
    assert_eq!(report.plan.node_cores, 2.0);
    assert!(report.users_succeeded >= 4, "{report:?}");
    assert!(backend.list(&RunFilter::All).await.unwrap().is_empty());
}
