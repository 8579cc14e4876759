//! `liveload-agent --check`: can this host run an agent? One JSON line on stdout
//! ([`AgentCheck`]), for `liveload doctor`.
//!
//! Finding Chromium is not enough: a binary that exists may still fail to start (a missing
//! library, a sandbox the kernel refuses, a wrapper script for a desktop). So the check starts
//! it the way a run would — headless, sandboxed unless root or told otherwise — and loads
//! `about:blank`, within a deadline.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use liveload_proto::{AgentCheck, BrowserInfo, PROTOCOL_VERSION};

use crate::facts;

/// How long Chromium may take to start and print a blank page (a cold start on a slow disk
/// takes a few seconds).
const START_DEADLINE: Duration = Duration::from_secs(20);

/// Check this host: find Chromium, ask its version, start it.
pub fn run(chromium: Option<&Path>, no_sandbox: bool) -> AgentCheck {
    let no_sandbox = no_sandbox || rustix::process::geteuid().is_root();
    let found = facts::find_chromium(chromium).and_then(|path| {
        facts::chromium_version(&path).map(|version| BrowserInfo {
            path: path.display().to_string(),
            version,
        })
    });
    let (chromium_started, start_detail) = match &found {
        Some(browser) => start(Path::new(&browser.path), no_sandbox),
        None => (false, "no Chromium found".to_string()),
    };
    AgentCheck {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol: PROTOCOL_VERSION,
        arch: std::env::consts::ARCH.to_string(),
        chromium: found,
        chromium_started,
        sandboxed: !no_sandbox,
        start_detail,
    }
}

/// Start Chromium headless on `about:blank` and wait for it to print the page and exit.
fn start(path: &Path, no_sandbox: bool) -> (bool, String) {
    let Ok(profile) = tempfile::tempdir() else {
        return (
            false,
            "could not create a temporary profile directory".into(),
        );
    };
    let mut command = Command::new(path);
    command
        .args([
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if no_sandbox {
        command.args(["--no-sandbox", "--disable-setuid-sandbox"]);
    }
    command.arg("about:blank");
    let Ok(mut child) = command.spawn() else {
        return (false, format!("{} could not be executed", path.display()));
    };
    // Read both pipes while Chromium runs: a chatty Chromium would block on a full pipe and
    // look like one that never starts.
    let reader = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let deadline = Instant::now() + START_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(s) if s.success() && stdout.contains("<html") => (true, String::new()),
        Some(s) => (false, format!("exited with {s}: {}", last_lines(&stderr))),
        None => (
            false,
            format!("did not finish within {}s", START_DEADLINE.as_secs()),
        ),
    }
}

/// The last few lines of Chromium's stderr: where it says why it could not start.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    let tail = lines[start..].join(" | ");
    tail.chars().take(400).collect()
}
