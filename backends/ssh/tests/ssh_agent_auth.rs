//! Logging in with the keys of a running ssh-agent (`agent = true` in the hosts file). Its own
//! test binary: it points `SSH_AUTH_SOCK` at a private agent before any thread starts.

use liveload_test_support::sshd as common;

use std::process::Command;
use std::time::Duration;

use liveload_core::{Backend, NodeSpec, names};
use liveload_ssh::Auth;

#[test]
fn the_ssh_agents_keys_log_in() {
    let sshd = common::Sshd::start();
    let socket = sshd.dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&socket)
        .spawn()
        .expect("ssh-agent runs (Debian's openssh-client)");
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        assert!(std::time::Instant::now() < end, "ssh-agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg(&sshd.user_key)
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    // SAFETY: no other thread exists yet in this test binary (one test, runtime not started).
    unsafe { std::env::set_var("SSH_AUTH_SOCK", &socket) };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        let mut hosts = sshd.hosts(1);
        hosts[0].auth = Auth::Agent;
        let backend = sshd.builder(hosts).build().unwrap();
        let node = backend
            .create(&NodeSpec {
                run_id: names::new_run_id("agent"),
                index: 0,
                token: names::new_token(),
                ttl: Duration::from_secs(60),
                grace: Duration::from_secs(30),
                tls: None,
                no_browser: true,
            })
            .await?;
        backend.destroy(&node).await
    });
    let _ = agent.kill();
    let _ = agent.wait();
    result.unwrap();
}
