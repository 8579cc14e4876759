//! `liveload doctor --backend local`: the agent, Chromium, and the state directory.
//!
//! The agent itself answers the Chromium questions (`liveload-agent --check`): it is the one
//! that looks for Chromium and starts it, so asking it checks the rules a run will follow, not
//! a copy of them.

use std::path::Path;
use std::time::Duration;

use liveload_core::doctor::Check;
use liveload_core::proto::{AgentCheck, PROTOCOL_VERSION};

use crate::LocalBackend;

/// How long `liveload-agent --check` may take (it starts Chromium once).
const CHECK_DEADLINE: Duration = Duration::from_secs(40);

impl LocalBackend {
    /// The local checks, in the order a user fixes them.
    pub(crate) async fn checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        match agent_check(&self.agent_bin, self.chromium.as_deref()).await {
            Err(why) => checks.push(Check::fail(
                "local.agent",
                format!("{} could not run: {why}", self.agent_bin.display()),
                "build it with `cargo build --release -p liveload-agent` and keep it next to liveload, or set LIVELOAD_AGENT_BIN",
            )),
            Ok(report) => {
                checks.push(agent_version(&self.agent_bin, &report));
                checks.extend(chromium(&report));
            }
        }
        checks.push(state_dir(&self.state_dir));
        checks
    }
}

/// Run `agent --check` and read its one JSON line.
async fn agent_check(agent: &Path, chromium: Option<&Path>) -> Result<AgentCheck, String> {
    let mut command = tokio::process::Command::new(agent);
    command.arg("--check").kill_on_drop(true);
    if let Some(chromium) = chromium {
        command.arg("--chromium").arg(chromium);
    }
    let output = tokio::time::timeout(CHECK_DEADLINE, command.output())
        .await
        .map_err(|_| format!("no answer within {}s", CHECK_DEADLINE.as_secs()))?
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|_| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        format!(
            "{}; it printed no check report (an agent older than this controller?){}",
            output.status,
            stderr
                .lines()
                .last()
                .map(|l| format!(": {l}"))
                .unwrap_or_default()
        )
    })
}

fn agent_version(path: &Path, report: &AgentCheck) -> Check {
    let ours = env!("CARGO_PKG_VERSION");
    if report.protocol != PROTOCOL_VERSION {
        return Check::fail(
            "local.agent",
            format!(
                "{} is version {} (protocol {}); this controller speaks protocol {PROTOCOL_VERSION}",
                path.display(),
                report.agent_version,
                report.protocol
            ),
            "build liveload and liveload-agent from the same checkout (cargo build --release -p liveload -p liveload-agent)",
        );
    }
    Check::pass(
        "local.agent",
        format!(
            "{} version {} (controller {ours}), protocol {}, {}",
            path.display(),
            report.agent_version,
            report.protocol,
            report.arch
        ),
    )
}

fn chromium(report: &AgentCheck) -> Vec<Check> {
    let Some(browser) = &report.chromium else {
        return vec![Check::fail(
            "local.chromium",
            "no Chromium found (looked for chromium-headless-shell, chromium, chromium-browser and google-chrome on PATH)",
            "install it (sudo apt-get install chromium-headless-shell), or pass --chromium PATH (LIVELOAD_CHROMIUM)",
        )];
    };
    let found = Check::pass(
        "local.chromium",
        format!("{} at {}", browser.version, browser.path),
    );
    let started = if report.chromium_started {
        Check::pass(
            "local.chromium_starts",
            if report.sandboxed {
                "started headless with its sandbox".to_string()
            } else {
                "started headless without its sandbox (liveload runs it so as root, where Chromium's sandbox cannot work)".to_string()
            },
        )
    } else {
        Check::fail(
            "local.chromium_starts",
            format!(
                "{} did not start headless: {}",
                browser.path, report.start_detail
            ),
            format!(
                "run `{} --headless --dump-dom about:blank` to see why: missing libraries (install Debian's chromium-headless-shell), or a sandbox the kernel refuses (enable unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1)",
                browser.path
            ),
        )
    };
    vec![found, started]
}

fn state_dir(dir: &Path) -> Check {
    if std::fs::symlink_metadata(dir).is_err() {
        return Check::pass(
            "local.state_dir",
            format!("{} will be created, mode 0700", dir.display()),
        );
    }
    match liveload_core::state::check_private_dir(dir) {
        Ok(()) => Check::pass(
            "local.state_dir",
            format!("{}: yours, private", dir.display()),
        ),
        Err(e) => Check::fail(
            "local.state_dir",
            e.to_string(),
            format!(
                "chmod 700 {0} (if it is yours), or remove it, or pass --state-dir DIR",
                dir.display()
            ),
        ),
    }
}
