//! The agent launch contract: what a backend tells an agent when it starts one, and how.
//!
//! Every backend starts agents differently — a child process, a Fly machine's config, an EC2
//! instance's user data, a shell over SSH — but they all say the same things: these
//! [`AgentSettings`] as environment variables, and the run's secrets as files the agent reads
//! once and deletes. This module is the one place that says which variables and which files;
//! the agent's own option parsing uses the same names (a test in the agent fails if the two
//! drift apart).
//!
//! Why secrets travel as files: an environment is inherited by every child (Chromium and its
//! renderers) and readable in `/proc/PID/environ` for the process's whole life; a command line
//! is readable by every user. A file with mode 0600 that the agent removes once it has read it
//! is gone before the browser starts.

use std::fmt;

/// The environment variables the agent reads. Each is also a command-line option of
/// `liveload-agent` (`LIVELOAD_AGENT_RUN_ID` is `--run-id`, and so on). They share the
/// `LIVELOAD_AGENT_` prefix so they never collide with the controller's own `LIVELOAD_*`
/// options (the controller's `LIVELOAD_TTL` is a duration such as `20m`; the agent's
/// `LIVELOAD_AGENT_TTL` is seconds).
pub mod var {
    /// `host:port` to listen on; port 0 picks a free port.
    pub const LISTEN: &str = "LIVELOAD_AGENT_LISTEN";
    /// The run this agent serves (backends recognise their agents by it).
    pub const RUN_ID: &str = "LIVELOAD_AGENT_RUN_ID";
    /// Hard lifetime in seconds.
    pub const TTL: &str = "LIVELOAD_AGENT_TTL";
    /// Dead-man switch in seconds.
    pub const GRACE: &str = "LIVELOAD_AGENT_GRACE";
    /// This agent's share of the host is 1/N.
    pub const HOST_SHARE: &str = "LIVELOAD_AGENT_HOST_SHARE";
    /// An operator's cap on users for this host.
    pub const MAX_USERS: &str = "LIVELOAD_AGENT_MAX_USERS";
    /// The Chromium executable.
    pub const CHROMIUM: &str = "LIVELOAD_AGENT_CHROMIUM";
    /// Launch Chromium without its sandbox.
    pub const NO_SANDBOX: &str = "LIVELOAD_AGENT_NO_SANDBOX";
    /// Run without a browser.
    pub const NO_BROWSER: &str = "LIVELOAD_AGENT_NO_BROWSER";
    /// Path of the file holding the run token (read once, then deleted).
    pub const TOKEN_FILE: &str = "LIVELOAD_AGENT_TOKEN_FILE";
    /// Path of the TLS certificate (PEM) to serve the link with.
    pub const TLS_CERT: &str = "LIVELOAD_AGENT_TLS_CERT";
    /// Path of the TLS private key (PEM; read once, then deleted).
    pub const TLS_KEY: &str = "LIVELOAD_AGENT_TLS_KEY";
    /// Where to write `{"address": ..., "pid": ...}` once listening.
    pub const READY_FILE: &str = "LIVELOAD_AGENT_READY_FILE";
    /// The agent's log filter (`info`, `debug`, ...).
    pub const LOG: &str = "LIVELOAD_AGENT_LOG";

    /// Every variable above: the whole contract.
    pub const ALL: &[&str] = &[
        LISTEN, RUN_ID, TTL, GRACE, HOST_SHARE, MAX_USERS, CHROMIUM, NO_SANDBOX, NO_BROWSER,
        TOKEN_FILE, TLS_CERT, TLS_KEY, READY_FILE, LOG,
    ];
}

/// An operator's tuning of the agent's Chromium command line: not part of the launch contract
/// (no backend sets them); the local backend passes them through from the controller's
/// environment, for measuring and for memory-bound nodes (README, "Density").
pub mod tuning {
    /// Switches to add, whitespace-separated (k6's `K6_BROWSER_ARGS`).
    pub const ARGS: &str = "LIVELOAD_BROWSER_ARGS";
    /// Default switches to leave out, comma-separated (k6's `K6_BROWSER_IGNORE_DEFAULT_ARGS`).
    pub const IGNORE_DEFAULT_ARGS: &str = "LIVELOAD_BROWSER_IGNORE_DEFAULT_ARGS";
    /// `full`: keep every per-page DevTools domain chromiumoxide enables.
    pub const DEVTOOLS: &str = "LIVELOAD_BROWSER_DEVTOOLS";
    /// All three.
    pub const ALL: &[&str] = &[ARGS, IGNORE_DEFAULT_ARGS, DEVTOOLS];
}

/// File names of the secrets inside a backend's launch directory.
pub mod file {
    /// The run token.
    pub const TOKEN: &str = "token";
    /// The TLS certificate (not secret, but travels with its key).
    pub const TLS_CERT: &str = "tls.crt";
    /// The TLS private key.
    pub const TLS_KEY: &str = "tls.key";
}

/// The non-secret settings of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentSettings {
    /// `host:port` to listen on (`127.0.0.1:0` for a local or tunnelled agent, `[::]:7070` on
    /// a cloud machine).
    pub listen: String,
    /// The run's id.
    pub run_id: String,
    /// Hard lifetime in seconds (at least 1).
    pub ttl_s: u64,
    /// Dead-man switch in seconds (at least 1).
    pub grace_s: u64,
    /// This agent's share of the host is 1/N.
    pub host_share: Option<u32>,
    /// An operator's cap on users.
    pub max_users: Option<u32>,
    /// The Chromium executable, when not the default.
    pub chromium: Option<String>,
    /// Launch Chromium without its sandbox.
    pub no_sandbox: bool,
    /// Run without a browser.
    pub no_browser: bool,
}

/// The secrets of one agent. `Debug` prints names only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AgentSecrets {
    /// The token the controller presents in `Hello`.
    pub token: String,
    /// The TLS certificate and key (PEM) when the agent serves TLS itself.
    pub tls: Option<(String, String)>,
}

impl fmt::Debug for AgentSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSecrets")
            .field("token", &"***")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A file a backend writes before starting the agent: create it new, owned by the agent's
/// user, mode 0600, without following symlinks.
#[derive(Clone, PartialEq, Eq)]
pub struct LaunchFile {
    /// The file's name inside the launch directory (see [`file`]).
    pub name: String,
    /// What it holds.
    pub contents: String,
}

impl fmt::Debug for LaunchFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LaunchFile({}, {} bytes)",
            self.name,
            self.contents.len()
        )
    }
}

/// How to start one agent: the environment to give it and the files to write first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Environment variables (names from [`var`]); none holds a secret.
    pub env: Vec<(&'static str, String)>,
    /// Files to write into the launch directory before starting the agent.
    pub files: Vec<LaunchFile>,
}

impl AgentSettings {
    /// The launch of an agent whose files live in `dir` (a path on the agent's machine, no
    /// trailing slash): the settings as variables, plus one variable per file naming its path.
    pub fn launch(&self, secrets: &AgentSecrets, dir: &str) -> Launch {
        let mut env = vec![
            (var::LISTEN, self.listen.clone()),
            (var::RUN_ID, self.run_id.clone()),
            (var::TTL, self.ttl_s.max(1).to_string()),
            (var::GRACE, self.grace_s.max(1).to_string()),
        ];
        let optional = [
            (var::HOST_SHARE, self.host_share.map(|n| n.to_string())),
            (var::MAX_USERS, self.max_users.map(|n| n.to_string())),
            (var::CHROMIUM, self.chromium.clone()),
            (var::NO_SANDBOX, self.no_sandbox.then(|| "true".to_string())),
            (var::NO_BROWSER, self.no_browser.then(|| "true".to_string())),
        ];
        env.extend(
            optional
                .into_iter()
                .filter_map(|(name, value)| value.map(|v| (name, v))),
        );
        let mut files = vec![LaunchFile {
            name: file::TOKEN.to_string(),
            contents: secrets.token.clone(),
        }];
        env.push((var::TOKEN_FILE, format!("{dir}/{}", file::TOKEN)));
        if let Some((cert, key)) = &secrets.tls {
            files.push(LaunchFile {
                name: file::TLS_CERT.to_string(),
                contents: cert.clone(),
            });
            files.push(LaunchFile {
                name: file::TLS_KEY.to_string(),
                contents: key.clone(),
            });
            env.push((var::TLS_CERT, format!("{dir}/{}", file::TLS_CERT)));
            env.push((var::TLS_KEY, format!("{dir}/{}", file::TLS_KEY)));
        }
        Launch { env, files }
    }
}

impl Launch {
    /// The value of variable `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Set (or replace) variable `name`.
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        let value = value.into();
        match self.env.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.env.push((name, value)),
        }
    }

    /// The same launch with its files in `dir` instead (a backend that writes them somewhere
    /// else than where the agent's machine would, e.g. a test stand-in for an instance).
    pub fn relocated(&self, from: &str, to: &str) -> Launch {
        let mut moved = self.clone();
        for (name, value) in &mut moved.env {
            if [var::TOKEN_FILE, var::TLS_CERT, var::TLS_KEY].contains(name)
                && let Some(rest) = value.strip_prefix(from)
            {
                *value = format!("{to}{rest}");
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AgentSettings {
        AgentSettings {
            listen: "127.0.0.1:0".into(),
            run_id: "r1".into(),
            ttl_s: 0,
            grace_s: 30,
            max_users: Some(7),
            ..Default::default()
        }
    }

    #[test]
    fn secrets_travel_as_files_and_never_in_the_environment() {
        let secrets = AgentSecrets {
            token: "s3cret-token-123456".into(),
            tls: Some(("CERT".into(), "KEY-SECRET".into())),
        };
        let launch = settings().launch(&secrets, "/run/ll");
        for (_, value) in &launch.env {
            assert!(!value.contains("s3cret") && !value.contains("KEY-SECRET"));
        }
        assert_eq!(launch.get(var::TOKEN_FILE), Some("/run/ll/token"));
        assert_eq!(launch.get(var::TLS_KEY), Some("/run/ll/tls.key"));
        assert_eq!(
            launch.get(var::TTL),
            Some("1"),
            "a zero TTL is raised to 1 s"
        );
        assert_eq!(launch.get(var::MAX_USERS), Some("7"));
        assert_eq!(launch.get(var::NO_BROWSER), None);
        let names: Vec<_> = launch.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, [file::TOKEN, file::TLS_CERT, file::TLS_KEY]);
        assert!(!format!("{launch:?}{secrets:?}").contains("s3cret"));
        assert!(var::ALL.iter().all(|v| v.starts_with("LIVELOAD_AGENT_")));
    }

    #[test]
    fn relocating_moves_only_file_paths() {
        let launch = settings().launch(&AgentSecrets::default(), "/etc/liveload");
        let moved = launch.relocated("/etc/liveload", "/tmp/x");
        assert_eq!(moved.get(var::TOKEN_FILE), Some("/tmp/x/token"));
        assert_eq!(moved.get(var::RUN_ID), Some("r1"));
    }
}
