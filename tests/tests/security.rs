//! What a run keeps to itself, through the real binary: no secret of the controller's
//! environment and no run token in any child's environment (agent and every Chromium process),
//! and no state written into a directory another user could have planted.

use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use liveload_e2e::*;

/// Secrets the controller has in its environment, as a developer's shell or a CI job would.
const CONTROLLER_SECRETS: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "AKIATESTSECRET000001"),
    ("AWS_SECRET_ACCESS_KEY", "aws-secret-value-for-the-test"),
    ("FLY_API_TOKEN", "fly-secret-value-for-the-test"),
    ("SSH_AUTH_SOCK", "/tmp/ssh-agent-for-the-test.sock"),
];

#[test]
fn no_child_inherits_the_controllers_secrets_or_the_run_token() {
    let _heavy = heavy();
    let state = tempfile::tempdir().unwrap();
    let wrapper_dir = tempfile::tempdir().unwrap();
    let (wrapper, captured) = token_capturing_agent(wrapper_dir.path());
    let mut child = liveload(state.path())
        .envs(CONTROLLER_SECRETS.iter().copied())
        .env("LIVELOAD_AGENT_BIN", &wrapper)
        .args([
            "demo",
            "--users",
            "2",
            "--duration",
            "6s",
            "--start-interval",
            "0s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_, agents) = wait_for_agents(state.path(), &mut child, 1);
    // Wait until the agent's Chromium runs (it starts when users are prepared), and check the
    // processes of that very moment: on a loaded machine a second look may come after the
    // run's last seconds, when Chromium is gone.
    let mut processes = Vec::new();
    assert!(
        eventually(Duration::from_secs(60), || {
            processes = processes_in_groups(&agents);
            processes.iter().any(|(_, c)| c.contains("chrom"))
        }),
        "Chromium started"
    );
    let token = std::fs::read_to_string(&captured).unwrap();
    for (pid, cmdline) in &processes {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue; // exited meanwhile
        };
        let environ = String::from_utf8_lossy(&environ);
        for (name, value) in CONTROLLER_SECRETS {
            assert!(
                !environ.contains(name) && !environ.contains(value),
                "{name} reached pid {pid} ({cmdline})"
            );
        }
        assert!(
            !environ.contains(&token),
            "the run token reached pid {pid} ({cmdline})"
        );
    }
    assert!(
        processes.iter().any(|(_, c)| c.contains("chrom")),
        "Chromium processes were checked: {processes:?}"
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_state_directory_another_user_could_have_planted_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let scenario = repo().join("examples/demo.yaml");
    // World-writable, as a directory pre-created in /tmp by someone else would be.
    let loose = root.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // A symlink planted where the state directory should be.
    let target = root.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    let planted = root.path().join("planted");
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    for (dir, why) in [(&loose, "others can write"), (&planted, "symbolic link")] {
        let out = liveload(root.path())
            .env("LIVELOAD_STATE_DIR", dir)
            .args(["run", "--base-url", "http://127.0.0.1:9"])
            .arg(&scenario)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert!(
            std::fs::read_dir(dir).unwrap().next().is_none(),
            "nothing was written into {}",
            dir.display()
        );
    }
}

/// During a run, another local user finds no DevTools endpoint: Chromium (on a pipe) listens
/// on no TCP port, the agent only on its link port, and `GET /json/version` there, asked as
/// `nobody`, answers nothing a DevTools client could use. The same probe against a Chromium
/// with a DevTools port (as the agent ran it before) does find one, so the probe can fail.
#[test]
fn another_user_finds_no_devtools_endpoint_during_a_run() {
    let _heavy = heavy();
    let control = tempfile::tempdir().unwrap();
    // In its own process group: Chromium may be a wrapper script that forks the browser, and
    // the port belongs to whichever process of the group opened it.
    let mut exposed = std::process::Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--remote-debugging-port=0"])
        .arg(format!("--user-data-dir={}", control.path().display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let exposed_group = exposed.id() as i32;
    let mut port = Vec::new();
    let found = eventually(Duration::from_secs(20), || {
        port = processes_in_groups(&[exposed_group])
            .into_iter()
            .flat_map(|(pid, _)| listening_ports(pid))
            .collect();
        !port.is_empty()
    });
    let answer = found.then(|| get_as_nobody(port[0], "/json/version"));
    signal_group(exposed_group, libc::SIGKILL);
    let _ = exposed.wait();
    let answer = answer.expect("the exposed Chromium opened a DevTools port");
    assert!(answer.starts_with("65534\n"), "{answer}");
    assert!(
        answer.contains("webSocketDebuggerUrl"),
        "the probe works: {answer}"
    );

    let state = tempfile::tempdir().unwrap();
    let mut child = liveload(state.path())
        .args(["demo", "--users", "1", "--duration", "6s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_, agents) = wait_for_agents(state.path(), &mut child, 1);
    let running = || processes_in_groups(&agents);
    assert!(
        eventually(Duration::from_secs(60), || running().len() > 2),
        "Chromium started"
    );
    std::thread::sleep(Duration::from_secs(1)); // Users are running.
    let mut agent_ports = Vec::new();
    for (pid, cmdline) in running() {
        let ports = listening_ports(pid);
        if agents.contains(&pid) {
            agent_ports.extend(ports);
        } else {
            assert!(
                ports.is_empty(),
                "{cmdline} (pid {pid}) listens on {ports:?}"
            );
        }
    }
    assert_eq!(
        agent_ports.len(),
        1,
        "the agent listens on its link port only"
    );
    for path in ["/json/version", "/json", "/json/list", "/devtools/browser"] {
        let answer = get_as_nobody(agent_ports[0], path);
        assert!(answer.starts_with("65534\n"), "{answer}");
        assert!(
            !answer.contains("webSocketDebuggerUrl") && !answer.contains("devtools"),
            "{path} on the agent's port answered {answer}"
        );
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
