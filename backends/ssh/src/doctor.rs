//! `liveload doctor --backend ssh`: for every host, that it answers, that its key is known,
//! that liveload can log in, that Chromium is there and an agent binary fits its
//! architecture; then that the hosts' `max_users` hold the plan.
//!
//! The hosts are checked at once (bounded like a run's setup): a fleet of twenty hosts takes
//! one connect timeout at worst, not twenty.

use liveload_core::doctor::{Check, Needs};
use liveload_core::{BackendErrorKind, Error};

use crate::{SshBackend, remote};

impl SshBackend {
    /// The SSH checks: each host's, then the capacity.
    pub(crate) async fn checks(&self, needs: &Needs) -> Vec<Check> {
        let per_host =
            futures_util::future::join_all((0..self.hosts.len()).map(|i| self.host_checks(i)))
                .await;
        let mut checks: Vec<Check> = per_host.into_iter().flatten().collect();
        if let Some(users) = needs.users {
            checks.push(self.capacity_check(users));
        }
        checks
    }

    async fn host_checks(&self, i: usize) -> Vec<Check> {
        let host = &self.hosts[i];
        let name = format!("{} ({})", host.name, host.target());
        let connection = match self.connection(i).await {
            Ok(connection) => connection,
            Err(e) => return connect_failure(&name, &e),
        };
        let mut checks = vec![
            Check::pass("ssh.reach", format!("{name} answers")),
            Check::pass("ssh.host_key", format!("{name}: key known")),
            Check::pass("ssh.auth", format!("{name}: logged in")),
        ];
        let seen = match connection.exec(&remote::inspect(&self.root), b"").await {
            Ok(seen) => seen,
            Err(e) => {
                checks.push(Check::from_error(
                    "ssh.chromium",
                    &e,
                    "check that the host runs a POSIX shell for the login user",
                ));
                return checks;
            }
        };
        let mut lines = seen.stdout.lines();
        let arch = lines.next().unwrap_or_default().trim().to_string();
        match lines.next().map(str::trim).filter(|p| !p.is_empty()) {
            Some(path) => checks.push(Check::pass("ssh.chromium", format!("{name}: {path}"))),
            None => checks.push(Check::fail(
                "ssh.chromium",
                format!("{name}: no Chromium on the login PATH (looked for chromium-headless-shell, chromium, chromium-browser, google-chrome)"),
                "install it there: `sudo apt-get install chromium-headless-shell` on Debian",
            )),
        }
        if self.agents.contains_key(&arch) {
            checks.push(Check::pass(
                "ssh.agent",
                format!("{name}: {arch}, agent {}", self.agents[&arch].display()),
            ));
        } else {
            checks.push(Check::fail(
                "ssh.agent",
                format!(
                    "{name}: architecture {arch:?} and no agent binary for it (have: {})",
                    self.agents.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                format!("build liveload-agent for {arch} and pass --ssh-agent-bin {arch}=PATH"),
            ));
        }
        checks
    }

    /// Whether the hosts' `max_users` caps leave room for the plan's users (hosts without a
    /// cap are sized by their facts at run time: no limit here).
    fn capacity_check(&self, users: u64) -> Check {
        let caps: Option<u64> = self.hosts.iter().map(|h| h.max_users.map(u64::from)).sum();
        match caps {
            Some(total) if total < users => Check::fail(
                "ssh.capacity",
                format!(
                    "{users} users, and the {} host(s)' max_users add up to {total}",
                    self.hosts.len()
                ),
                "add hosts to the hosts file, raise their max_users, or lower --users",
            ),
            Some(total) => Check::pass(
                "ssh.capacity",
                format!("{users} users within the hosts' max_users ({total})"),
            ),
            None => Check::pass(
                "ssh.capacity",
                format!(
                    "{users} users over {} host(s), sized from their facts at run time",
                    self.hosts.len()
                ),
            ),
        }
    }
}

/// A failed connection as the checks it failed: the first that failed, and what it hides.
fn connect_failure(name: &str, error: &Error) -> Vec<Check> {
    let kind = match error {
        Error::Backend(e) => e.kind,
        _ => BackendErrorKind::Other,
    };
    let (id, fix) = match kind {
        BackendErrorKind::HostKey => (
            "ssh.host_key",
            "record the host's key: `ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts` (after checking its fingerprint), or pass --ssh-accept-new",
        ),
        BackendErrorKind::Auth => (
            "ssh.auth",
            "check the hosts file's user and key (`ssh -i KEY USER@HOST` must work without a password prompt)",
        ),
        _ => (
            "ssh.reach",
            "check the host's address and port in the hosts file, and that sshd runs there",
        ),
    };
    let mut checks = Vec::new();
    if id != "ssh.reach" {
        checks.push(Check::pass("ssh.reach", format!("{name} answers")));
    }
    if id == "ssh.auth" {
        checks.push(Check::pass("ssh.host_key", format!("{name}: key known")));
    }
    let mut failed = Check::from_error(id, error, fix);
    if !failed.detail.contains(name) {
        failed.detail = format!("{name}: {}", failed.detail);
    }
    checks.push(failed);
    checks
}
