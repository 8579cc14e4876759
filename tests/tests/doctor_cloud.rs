//! `liveload doctor` on Fly (the Fly test server, and Debian's docker-registry holding the
//! agent image) and EC2 (moto): a good setup passes every check, and each check fails on a
//! setup made wrong on purpose, with its fix.

use aws_sdk_ec2::types::{AttributeBooleanValue, IpPermission, IpRange, Tag};
use liveload_core::doctor::{Check, Needs, PROTOCOL_LABEL};
use liveload_core::{Backend, Secret};
use liveload_ec2::{ClientOptions, Ec2Backend, Image};
use liveload_fly::FlyBackend;
use liveload_fly::client::Limits;
use liveload_test_support::fly_server::{self, FlyServer, TOKEN};
use liveload_test_support::moto::{Moto, known_ami};
use liveload_test_support::registry::Registry;

fn protocol() -> String {
    liveload_core::proto::PROTOCOL_VERSION.to_string()
}

fn find<'a>(checks: &'a [Check], id: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no {id}: {checks:?}"))
}

fn failed<'a>(checks: &'a [Check], id: &str) -> &'a Check {
    let check = find(checks, id);
    assert!(!check.passed, "{id} passed: {check:?}");
    assert!(
        check.fix.as_deref().is_some_and(|f| !f.is_empty()),
        "{check:?}"
    );
    check
}

fn fly(server: &FlyServer, app: &str, token: Option<&str>) -> liveload_fly::FlyBackendBuilder {
    let mut builder = FlyBackend::builder()
        .base_url(&server.url)
        .app(app)
        .reach(server.public_reach())
        .limits(Limits {
            create_per_s: 50.0,
            create_burst: 10,
            action_per_s: 50.0,
            action_burst: 10,
        });
    if let Some(token) = token {
        builder = builder.token(Secret::new(token));
    }
    builder
}

#[tokio::test(flavor = "multi_thread")]
async fn fly_doctor_checks_token_app_image_ips_regions_and_pool() {
    let server = fly_server::start().await;
    let registry = Registry::start();
    let good = registry.push("agent", "good", &[(PROTOCOL_LABEL, &protocol())]);
    let needs = Needs::default();
    let backend = fly(&server, "doctor-ok", Some(TOKEN))
        .image(&good)
        .regions(vec!["fra".into(), "iad".into()])
        .build()
        .unwrap();
    let checks = backend.doctor(&needs).await;
    let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "fly.api",
            "fly.token",
            "fly.app",
            "fly.image",
            "fly.ips",
            "fly.regions"
        ]
    );
    assert!(checks.iter().all(|c| c.passed), "{checks:?}");

    // The token: missing, then wrong. Nothing else is asked without one.
    let checks = fly(&server, "doctor-ok", None)
        .image(&good)
        .build()
        .unwrap()
        .doctor(&needs)
        .await;
    assert_eq!(checks.len(), 1);
    assert!(
        failed(&checks, "fly.token")
            .detail
            .contains("FLY_API_TOKEN"),
        "{checks:?}"
    );
    let checks = fly(&server, "doctor-ok", Some("wrong"))
        .build()
        .unwrap()
        .doctor(&needs)
        .await;
    assert_eq!(checks.len(), 2);
    assert!(find(&checks, "fly.api").passed);
    assert!(
        failed(&checks, "fly.token").detail.contains("401"),
        "{checks:?}"
    );

    // An API that answers nonsense (a wrong --fly-api-url).
    let teapot = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let teapot_url = format!("http://{}", teapot.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in teapot.incoming().flatten() {
            use std::io::{Read as _, Write as _};
            let _ = stream.read(&mut [0; 4096]);
            let _ = stream.write_all(
                b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let checks = FlyBackend::builder()
        .base_url(&teapot_url)
        .app("doctor-ok")
        .token(Secret::new(TOKEN))
        .build()
        .unwrap()
        .doctor(&needs)
        .await;
    assert_eq!(checks.len(), 1);
    assert!(
        failed(&checks, "fly.api").detail.contains("418"),
        "{checks:?}"
    );

    // No such app.
    let checks = fly(&server, "missing-app", Some(TOKEN))
        .build()
        .unwrap()
        .doctor(&needs)
        .await;
    assert!(find(&checks, "fly.token").passed);
    assert!(
        failed(&checks, "fly.app")
            .fix
            .as_deref()
            .unwrap()
            .contains("fly apps create")
    );

    // The image: none given, a tag not pushed, no protocol label, another protocol, and a
    // registry that refuses to show it.
    let image_check = |image: Option<String>| {
        let mut builder = fly(&server, "doctor-ok", Some(TOKEN));
        if let Some(image) = image {
            builder = builder.image(image);
        }
        let backend = builder.build().unwrap();
        async move { find(&backend.doctor(&Needs::default()).await, "fly.image").clone() }
    };
    let check = image_check(None).await;
    assert!(!check.passed && check.fix.unwrap().contains("--fly-image"));
    let check = image_check(Some(format!("{}/agent:never-pushed", registry.address))).await;
    assert!(
        !check.passed && check.detail.contains("no such tag"),
        "{check:?}"
    );
    assert!(
        check
            .fix
            .unwrap()
            .contains("fly deploy --build-only --push")
    );
    let unlabelled = registry.push("agent", "unlabelled", &[("org.example", "x")]);
    let check = image_check(Some(unlabelled)).await;
    assert!(
        !check.passed && check.detail.contains(PROTOCOL_LABEL),
        "{check:?}"
    );
    let old = registry.push("agent", "old", &[(PROTOCOL_LABEL, "1")]);
    let check = image_check(Some(old)).await;
    assert!(
        !check.passed && check.detail.contains("protocol 1"),
        "{check:?}"
    );
    let private = Registry::start_with_auth();
    let hidden = private.push("agent", "good", &[(PROTOCOL_LABEL, &protocol())]);
    let check = image_check(Some(hidden)).await;
    assert!(!check.passed && check.detail.contains("401"), "{check:?}");

    // An app without IPs (public mode), unknown and deprecated regions.
    let checks = fly(&server, "noips-app", Some(TOKEN))
        .image(&good)
        .regions(vec!["fra".into(), "xyz".into(), "atlantis".into()])
        .build()
        .unwrap()
        .doctor(&needs)
        .await;
    assert!(
        failed(&checks, "fly.ips")
            .fix
            .as_deref()
            .unwrap()
            .contains("fly ips allocate-v4")
    );
    let regions = failed(&checks, "fly.regions");
    assert!(
        regions.detail.contains("xyz, atlantis") && !regions.detail.contains("fra"),
        "{regions:?}"
    );

    // A warm pool smaller than the plan, then big enough.
    let pooled = fly(&server, "doctor-ok", Some(TOKEN))
        .image(&good)
        .pool("doctor")
        .build()
        .unwrap();
    let two = Needs {
        nodes: Some(2),
        ..Needs::default()
    };
    let checks = pooled.doctor(&two).await;
    assert!(
        failed(&checks, "fly.pool")
            .fix
            .as_deref()
            .unwrap()
            .contains("fly pool create")
    );
    pooled.create_pool("doctor", 2).await.unwrap();
    let checks = pooled.doctor(&two).await;
    assert!(find(&checks, "fly.pool").passed, "{checks:?}");
    pooled.destroy_pool("doctor").await.unwrap();
}

/// A security group admitting TCP 7070 from `cidr`.
async fn security_group(ec2: &aws_sdk_ec2::Client, name: &str, port: i32, cidr: &str) -> String {
    let group = ec2
        .create_security_group()
        .group_name(name)
        .description("liveload doctor test")
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    ec2.authorize_security_group_ingress()
        .group_id(&group)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(port)
                .to_port(port)
                .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    group
}

async fn ec2_backend(
    options: ClientOptions,
    configure: impl FnOnce(liveload_ec2::Ec2BackendBuilder) -> liveload_ec2::Ec2BackendBuilder,
) -> Ec2Backend {
    configure(
        Ec2Backend::builder()
            .client(options)
            .instance_type("c7i.large"),
    )
    .build()
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ec2_doctor_checks_identity_region_ami_type_groups_and_subnets() {
    let moto = Moto::start();
    let ami = known_ami(moto.options()).await;
    let base = ec2_backend(moto.options(), |b| b).await;
    let ec2 = base.ec2().clone();
    ec2.create_tags()
        .resources(&ami)
        .tags(
            Tag::builder()
                .key(liveload_ec2::doctor::TAG_PROTOCOL)
                .value(protocol())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let open = security_group(&ec2, "open", 7070, "203.0.113.0/24").await;
    let needs = Needs {
        controller_cidr: Some("203.0.113.9/32".into()),
        ..Needs::default()
    };
    let good = ec2_backend(moto.options(), |b| {
        b.image(Image::Ami(ami.clone()))
            .security_groups(vec![open.clone()])
    })
    .await;
    let checks = good.doctor(&needs).await;
    let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "ec2.credentials",
            "ec2.identity",
            "ec2.region",
            "ec2.ami",
            "ec2.instance_type",
            "ec2.security_groups",
            "ec2.subnets"
        ]
    );
    assert!(checks.iter().all(|c| c.passed), "{checks:?}");

    // The controller's address outside the group's range; no group at all.
    let elsewhere = Needs {
        controller_cidr: Some("198.51.100.7/32".into()),
        ..Needs::default()
    };
    let check = failed(&good.doctor(&elsewhere).await, "ec2.security_groups").clone();
    assert!(
        check
            .fix
            .unwrap()
            .contains("authorize-security-group-ingress --group-id")
    );
    let bare = ec2_backend(moto.options(), |b| b.image(Image::Ami(ami.clone()))).await;
    failed(&bare.doctor(&needs).await, "ec2.security_groups");

    // An AMI that does not exist, one without the protocol tag, and an arm64 type for an
    // x86_64 AMI; a type the region does not offer.
    let check_ami = |image: String, instance_type: &'static str| {
        let options = moto.options();
        async move {
            let backend = ec2_backend(options, |b| {
                b.image(Image::Ami(image)).instance_type(instance_type)
            })
            .await;
            backend.doctor(&Needs::default()).await
        }
    };
    let checks = check_ami("ami-0000000000deadbee".into(), "c7i.large").await;
    failed(&checks, "ec2.ami");
    let untagged = ec2
        .describe_images()
        .send()
        .await
        .unwrap()
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .find(|id| id.starts_with("ami-") && *id != ami)
        .unwrap()
        .to_string();
    let checks = check_ami(untagged, "c7i.large").await;
    assert!(
        failed(&checks, "ec2.ami")
            .detail
            .contains("liveload:protocol"),
        "{checks:?}"
    );
    let checks = check_ami(ami.clone(), "c7g.large").await;
    assert!(
        failed(&checks, "ec2.ami").detail.contains("arm64"),
        "{checks:?}"
    );
    let checks = check_ami(ami.clone(), "x9.huge").await;
    assert!(
        failed(&checks, "ec2.instance_type")
            .detail
            .contains("not offered"),
        "{checks:?}"
    );

    // A subnet that assigns no public IPs, dialled at public addresses.
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.9.1.0/24")
        .availability_zone("us-east-1a")
        .send()
        .await
        .unwrap();
    let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_string();
    ec2.modify_subnet_attribute()
        .subnet_id(&subnet)
        .map_public_ip_on_launch(AttributeBooleanValue::builder().value(false).build())
        .send()
        .await
        .unwrap();
    let private = ec2_backend(moto.options(), |b| {
        b.image(Image::Ami(ami.clone()))
            .subnets(vec![subnet.clone()])
    })
    .await;
    let check = failed(&private.doctor(&needs).await, "ec2.subnets").clone();
    assert!(
        check.detail.contains(&subnet) && check.fix.unwrap().contains("--map-public-ip-on-launch")
    );

    // A region the account does not have, and an endpoint that answers nothing.
    let mut options = moto.options();
    options.region = Some("xx-nowhere-1".into());
    let checks = ec2_backend(options, |b| b.image(Image::Ami(ami.clone())))
        .await
        .doctor(&needs)
        .await;
    failed(&checks, "ec2.region");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = moto.options_at(&format!("http://{dead}"));
    let checks = ec2_backend(options, |b| b.image(Image::Ami(ami.clone())))
        .await
        .doctor(&needs)
        .await;
    assert!(find(&checks, "ec2.credentials").passed);
    failed(&checks, "ec2.identity");
}

/// Without credentials only the first check runs, and it says which sources were tried.
#[tokio::test(flavor = "multi_thread")]
async fn ec2_doctor_without_credentials_names_the_sources() {
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(liveload_e2e::bin("liveload"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", state.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("LIVELOAD_STATE_DIR", state.path())
        .args([
            "doctor",
            "--backend",
            "ec2",
            "--ec2-region",
            "us-east-1",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(liveload_core::error::exit_code::DOCTOR_FAILED)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = value["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{value}");
    assert_eq!(checks[0]["id"], "ec2.options");
    assert_eq!(checks[1]["id"], "ec2.credentials");
    let detail = checks[1]["detail"].as_str().unwrap();
    assert!(
        detail.contains("no AWS credentials found") && detail.contains("AWS_PROFILE"),
        "{detail}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "no SDK log"
    );
}
