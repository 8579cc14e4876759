//! `liveload` with `--backend ec2` against moto's EC2 emulator: plan (size and cost from
//! DescribeInstanceTypes), a whole run (agents stood in for by local agents through the test
//! hook), and cleanup after a crash.

use liveload_test_support::moto;

use std::time::Duration;

use liveload_core::{Backend, NodeSpec, RunFilter, names};
use liveload_e2e::*;

fn ec2_args(server: &moto::Moto) -> Vec<String> {
    [
        "--backend",
        "ec2",
        "--ec2-region",
        "us-east-1",
        "--ec2-endpoint-url",
        &server.url,
        "--ec2-instance-type",
        "c7i.large",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Dummy credentials for the emulator (the secret must never be printed), no instance metadata.
fn aws_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing-secret-never-printed"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    env.extend_from_slice(extra);
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_prints_nodes_size_and_cost_from_the_catalogue() {
    let server = moto::Moto::start();
    let state = tempfile::tempdir().unwrap();
    let args = ec2_args(&server);
    let demo_yaml = repo().join("examples/demo.yaml");
    let out = liveload_output(
        state.path(),
        &aws_env(&[]),
        [
            strings(&["plan", demo_yaml.to_str().unwrap(), "--users", "500"]),
            args.clone(),
        ]
        .concat(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // c7i.large: 2 vCPUs, 4 GiB; 15 contexts per core → 30 users per node → 17 nodes.
    assert!(
        stdout.contains("Node size (catalogue): 4.0 GiB memory, 2.00 cores"),
        "{stdout}"
    );
    assert!(stdout.contains("Plan: 17 node(s)"), "{stdout}");
    assert!(stdout.contains("Cost: about $1.52 per hour"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_run_on_ec2_boots_sizes_runs_reports_and_terminates() {
    let server = moto::Moto::start();
    let ami = moto::known_ami(server.options()).await;
    let state = tempfile::tempdir().unwrap();
    let target = demo_target();
    let mut args = ec2_args(&server);
    args.extend(["--ec2-ami".into(), ami, "--ec2-test-local-agents".into()]);
    let demo_yaml = repo().join("examples/demo.yaml");
    let out = liveload_output(
        state.path(),
        &aws_env(&[("LIVELOAD_LOG", "trace")]),
        [
            strings(&[
                "run",
                demo_yaml.to_str().unwrap(),
                "--base-url",
                target.as_str(),
                "--users",
                "2",
                "--duration",
                "3s",
                "--output",
                "json",
                "--yes",
            ]),
            args.clone(),
        ]
        .concat(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["backend"], "ec2");
    assert_eq!(report["users_succeeded"], 2);
    assert_eq!(report["plan"]["source"], "catalogue");
    // Nothing left running in the emulator.
    let backend = liveload_ec2::Ec2Backend::builder()
        .client(server.options())
        .build()
        .await
        .unwrap();
    assert!(backend.list(&RunFilter::All).await.unwrap().is_empty());
    // The secret key never shows, even at trace level; nor does the user data's token.
    assert!(stderr.contains("node ready"), "trace logging is on");
    assert!(!stderr.contains("testing-secret-never-printed"));
    assert!(!stdout.contains("testing-secret-never-printed"));
    assert!(!stderr.contains("LIVELOAD_TOKEN="), "user data was logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_terminates_every_instance_of_a_crashed_run() {
    let server = moto::Moto::start();
    let ami = moto::known_ami(server.options()).await;
    let backend = liveload_ec2::Ec2Backend::builder()
        .client(server.options())
        .image(liveload_ec2::Image::Ami(ami))
        .build()
        .await
        .unwrap();
    let spec = |run: &str, index: u32| NodeSpec {
        run_id: run.to_string(),
        index,
        token: names::new_token(),
        ttl: Duration::from_secs(300),
        grace: Duration::from_secs(300),
        tls: None,
        no_browser: true,
    };
    let crashed = names::new_run_id("crashed");
    for index in 0..3 {
        backend.create(&spec(&crashed, index)).await.unwrap();
    }
    let other = names::new_run_id("other");
    backend.create(&spec(&other, 0)).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let args = ec2_args(&server);
    let out = liveload_output(
        state.path(),
        &aws_env(&[]),
        [
            strings(&["cleanup", "--run", crashed.as_str(), "--output", "json"]),
            args.clone(),
        ]
        .concat(),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        backend
            .list(&RunFilter::Run(crashed))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        backend.list(&RunFilter::Run(other)).await.unwrap().len(),
        1,
        "other runs untouched"
    );
}
