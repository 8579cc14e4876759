//! What the agent's test binaries share: the agent binary started as a backend starts it (the
//! token in a file it deletes), its endpoint, and its CPU time.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use liveload_core::AgentEndpoint;
use liveload_core::proto::Assignment;
use liveload_core::tls::{AgentTls, Pin};

/// The run token every test agent is started with.
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A running agent, killed when dropped.
pub struct Agent {
    /// The agent process (or the `prlimit` that became it).
    pub child: Child,
    /// `host:port` it listens on.
    pub address: String,
    /// Its certificate's pin, when it serves TLS.
    pub pin: Option<Pin>,
    _dir: tempfile::TempDir,
    /// Its stderr (the log, at debug level).
    pub log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the agent with `extra` arguments.
pub fn start_agent(extra: &[&str]) -> Agent {
    start(&[], extra, None)
}

/// Start the agent through `prefix` (a command that then runs it, like `prlimit ...`), with
/// `extra` arguments, serving TLS with `tls` when given.
pub fn start(prefix: &[&str], extra: &[&str], tls: Option<(AgentTls, Pin)>) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let log = dir.path().join("log");
    // The token arrives the way every backend sends it: a file the agent reads and deletes.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let agent = env!("CARGO_BIN_EXE_liveload-agent");
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(agent);
            c
        }
        None => Command::new(agent),
    };
    command
        .args(["--listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .args(extra)
        .env("LIVELOAD_AGENT_TOKEN_FILE", &token_file)
        .env("LIVELOAD_AGENT_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let pin = tls.map(|(material, pin)| {
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &material.cert_pem).unwrap();
        std::fs::write(&key, &material.key_pem).unwrap();
        command
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key);
        pin
    });
    let child = command.spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let address = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            break v["address"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < end, "agent did not become ready");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        !token_file.exists(),
        "the agent deletes its token file once read"
    );
    Agent {
        child,
        address,
        pin,
        _dir: dir,
        log,
    }
}

/// How a controller reaches `agent`.
pub fn endpoint(agent: &Agent) -> AgentEndpoint {
    AgentEndpoint {
        address: agent.address.clone(),
        tls: agent.pin.clone(),
        headers: vec![],
        proxy: None,
    }
}

/// Ten seconds from now.
pub fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(10)
}

/// Wait for the agent process to exit; returns how long it took.
pub fn wait_exit(agent: &mut Agent, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if agent.child.try_wait().unwrap().is_some() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The CPU time (user + system) process `pid` has used so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the ")" that closes the command name: state is the first; utime and stime
    // are fields 14 and 15 of the whole line, so 12th and 13th after the name.
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    let ticks = rustix::param::clock_ticks_per_second();
    Duration::from_secs_f64((fields[0] + fields[1]) as f64 / ticks as f64)
}

/// An assignment of `users` users running `steps` (a scenario's `steps:` YAML, two spaces per
/// item) against `base_url` for `duration`; without a browser when the steps are only thinks.
pub fn assignment(base_url: &str, steps: &str, users: u64, duration: Duration) -> Assignment {
    let yaml = format!("name: t\nbase_url: {base_url}\nsteps:\n{steps}");
    let scenario =
        liveload_core::scenario::Scenario::from_yaml(std::path::Path::new("t.yaml"), &yaml)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let no_browser = steps.lines().all(|l| l.trim().starts_with("- think"));
    Assignment {
        duration_ms: duration.as_millis() as u64,
        iteration_timeout_ms: 10_000,
        step_timeout_ms: 5_000,
        no_browser,
        ..Assignment::new(
            "t",
            &scenario.name,
            scenario.base_url(),
            users,
            scenario.steps.clone(),
        )
    }
}
