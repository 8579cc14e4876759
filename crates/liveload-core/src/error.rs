//! Every way a liveload run can fail, as one typed enum.
//!
//! Each variant has a stable machine name ([`Error::code`], the seed's names where it had them),
//! a process exit code ([`Error::exit_code`]) and a hint that says how to fix it
//! ([`Error::hint`]). The CLI renders these for people, or as JSON with `--output json`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes of the `liveload` binary. Documented in the README; never reuse a number.
pub mod exit_code {
    /// The run completed and every user succeeded.
    pub const OK: i32 = 0;
    /// An unexpected internal error (a bug: please report it).
    pub const INTERNAL: i32 = 1;
    /// Bad command-line usage (also what `clap` returns).
    pub const USAGE: i32 = 2;
    /// The scenario file is invalid.
    pub const SCENARIO: i32 = 3;
    /// The same scenario is already running on this machine.
    pub const ALREADY_RUNNING: i32 = 4;
    /// The cluster cannot be sized for the requested users.
    pub const SIZING: i32 = 5;
    /// Nodes could not be created, reached or authenticated.
    pub const PROVISIONING: i32 = 6;
    /// The run started but did not complete successfully (users failed, an agent was lost).
    pub const RUN_FAILED: i32 = 7;
    /// The run completed but a threshold failed (or aborted it).
    pub const THRESHOLD_FAILED: i32 = 8;
    /// The run was interrupted (Ctrl-C); every node was still destroyed.
    pub const INTERRUPTED: i32 = 130;
}

/// What a backend (a cloud provider, or the local host) reported as wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendErrorKind {
    /// Credentials missing, wrong or without the needed permission.
    Auth,
    /// An account quota or capacity limit was reached.
    Quota,
    /// The provider throttled us and retries ran out.
    RateLimited,
    /// The agent image (container image, AMI, binary) is unknown or unusable.
    BadImage,
    /// The region is unknown or unavailable.
    BadRegion,
    /// The machine size / instance type is unknown.
    BadInstanceType,
    /// The node died or its agent exited before answering.
    NodeFailed,
    /// The host could not be reached (DNS, refused, timed out).
    Unreachable,
    /// The host's SSH key is not known (and not accepted) or differs from the one recorded.
    HostKey,
    /// The host lacks something the agent needs (Chromium, a binary for its architecture).
    HostUnfit,
    /// Anything else the provider said.
    Other,
}

/// A liveload error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A run of the same scenario is already in progress on this machine.
    #[error("scenario '{scenario}' is already running on this machine (lock {})", lock.display())]
    ScenarioIsAlreadyRunning {
        /// The scenario's name.
        scenario: String,
        /// The lock file held by the other run.
        lock: PathBuf,
    },

    /// More nodes are needed than the run may use.
    #[error(
        "{users} users need {necessary} nodes of {users_per_node} users each, but at most {max_allowed} are allowed"
    )]
    NecessaryNodesExceedsMaxAllowedNodes {
        /// Nodes the users need.
        necessary: u64,
        /// The limit in force.
        max_allowed: u64,
        /// Users requested.
        users: u64,
        /// Users one node can host (the smallest seen).
        users_per_node: u64,
    },

    /// A node cannot host even one browser with one user.
    #[error(
        "node {node} is too small: {memory_mib} MiB usable memory and {cores} cores cannot host one browser with one user (needs {needed_mib} MiB and a core share)"
    )]
    NodeTooSmall {
        /// The node's id.
        node: String,
        /// Memory available to users after the safety factor and headroom, in MiB.
        memory_mib: u64,
        /// Cores of the node.
        cores: f64,
        /// Memory one browser plus one context needs, in MiB.
        needed_mib: u64,
    },

    /// A node did not become ready in time; it has been destroyed.
    #[error("node {node} did not become ready within {timeout:?}; it was destroyed")]
    ClusterNodeCreationTimeout {
        /// The node's id.
        node: String,
        /// The creation timeout in force.
        timeout: Duration,
    },

    /// The cluster name cannot be used for machine names and tags.
    #[error(
        "cluster name '{name}' is invalid: use 1 to 40 characters of a-z, 0-9 and '-', starting with a letter"
    )]
    ClusterNameInvalid {
        /// The rejected name.
        name: String,
    },

    /// `max_allowed_nodes` must be a positive integer.
    #[error("max allowed nodes must be a positive integer, got {value}")]
    MaxAllowedNodesInvalid {
        /// The rejected value.
        value: i64,
    },

    /// Another option was out of range.
    #[error("invalid option {option}: {message}")]
    InvalidOption {
        /// The option's name.
        option: String,
        /// What is wrong with it.
        message: String,
    },

    /// The scenario file is invalid.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Scenario {
        /// The scenario file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what was expected.
        message: String,
    },

    /// The provider refused or failed an operation.
    #[error("{backend} backend: {message}")]
    Backend {
        /// The backend's name (`local`, `fly`, `ec2`, `ssh`).
        backend: &'static str,
        /// What kind of failure.
        kind: BackendErrorKind,
        /// The provider's own message (never containing secrets).
        message: String,
        /// How to fix it, when known.
        hint: Option<String>,
    },

    /// The agent refused the controller (token, protocol version).
    #[error("agent on node {node} refused the connection: {reason}")]
    AgentRejected {
        /// The node's id.
        node: String,
        /// Why, in words.
        reason: String,
    },

    /// Talking to an agent failed (connection, TLS, handshake, a malformed frame).
    #[error("agent on node {node}: {message}")]
    AgentConnection {
        /// The node's id.
        node: String,
        /// What failed.
        message: String,
    },

    /// The run started but did not complete successfully.
    #[error("run failed: {message}")]
    RunFailed {
        /// What failed.
        message: String,
    },

    /// Ctrl-C or a termination signal; every node was destroyed.
    #[error("interrupted; every node of the run was destroyed")]
    Interrupted,

    /// A local file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The stable machine-readable name of this error (for `--output json` and scripts).
    pub fn code(&self) -> &'static str {
        match self {
            Error::ScenarioIsAlreadyRunning { .. } => "scenario_is_already_running",
            Error::NecessaryNodesExceedsMaxAllowedNodes { .. } => {
                "necessary_nodes_exceeds_max_allowed_nodes"
            }
            Error::NodeTooSmall { .. } => "node_too_small",
            Error::ClusterNodeCreationTimeout { .. } => "cluster_node_creation_timeout",
            Error::ClusterNameInvalid { .. } => "cluster_name_invalid",
            Error::MaxAllowedNodesInvalid { .. } => "max_allowed_nodes_invalid",
            Error::InvalidOption { .. } => "invalid_option",
            Error::Scenario { .. } => "scenario_invalid",
            Error::Backend { .. } => "backend_error",
            Error::AgentRejected { .. } => "agent_rejected",
            Error::AgentConnection { .. } => "agent_connection_failed",
            Error::RunFailed { .. } => "run_failed",
            Error::Interrupted => "interrupted",
            Error::Io { .. } => "io_error",
        }
    }

    /// The process exit code the CLI uses for this error (see [`exit_code`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::ClusterNameInvalid { .. }
            | Error::MaxAllowedNodesInvalid { .. }
            | Error::InvalidOption { .. } => exit_code::USAGE,
            Error::Scenario { .. } => exit_code::SCENARIO,
            Error::ScenarioIsAlreadyRunning { .. } => exit_code::ALREADY_RUNNING,
            Error::NecessaryNodesExceedsMaxAllowedNodes { .. } | Error::NodeTooSmall { .. } => {
                exit_code::SIZING
            }
            Error::ClusterNodeCreationTimeout { .. }
            | Error::Backend { .. }
            | Error::AgentRejected { .. }
            | Error::AgentConnection { .. } => exit_code::PROVISIONING,
            Error::RunFailed { .. } => exit_code::RUN_FAILED,
            Error::Interrupted => exit_code::INTERRUPTED,
            Error::Io { .. } => exit_code::INTERNAL,
        }
    }

    /// How to fix it, in one or two sentences.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::ScenarioIsAlreadyRunning { .. } => {
                "wait for the other run to finish, stop it, or give this run another name with --name"
                    .into()
            }
            Error::NecessaryNodesExceedsMaxAllowedNodes { necessary, .. } => format!(
                "raise --max-allowed-nodes to at least {necessary}, lower --users, or use bigger nodes"
            ),
            Error::NodeTooSmall { .. } => {
                "use a bigger node size, or lower --browser-memory / --context-memory if you measured your page to need less"
                    .into()
            }
            Error::ClusterNodeCreationTimeout { .. } => {
                "raise --creation-timeout, or check the backend's logs (liveload nodes) for why the agent did not start"
                    .into()
            }
            Error::ClusterNameInvalid { .. } => {
                "pass --name with lower-case letters, digits and dashes, e.g. --name checkout-test"
                    .into()
            }
            Error::MaxAllowedNodesInvalid { .. } => "pass --max-allowed-nodes 1 or more".into(),
            Error::Backend { hint, .. } => return hint.clone(),
            Error::AgentRejected { .. } => {
                "run `liveload cleanup` for stale agents, and use an agent built from the same liveload release"
                    .into()
            }
            Error::AgentConnection { .. } => {
                "check that the agent port is reachable from this machine (firewall, security group)"
                    .into()
            }
            Error::Interrupted => return None,
            Error::Scenario { .. } => "fix the file and check it again".into(),
            _ => return None,
        })
    }

    /// Shorthand for an [`Error::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The error as a JSON value: `{"error": code, "message": ..., "hint": ..., ...details}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::json!({
            "error": self.code(),
            "message": self.to_string(),
            "hint": self.hint(),
            "exit_code": self.exit_code(),
        });
        let details = match self {
            Error::NecessaryNodesExceedsMaxAllowedNodes {
                necessary,
                max_allowed,
                users,
                users_per_node,
            } => serde_json::json!({"necessary": necessary, "max_allowed": max_allowed,
                "users": users, "users_per_node": users_per_node}),
            Error::NodeTooSmall { node, .. } | Error::ClusterNodeCreationTimeout { node, .. } => {
                serde_json::json!({"node": node})
            }
            Error::Scenario {
                file, line, column, ..
            } => serde_json::json!({"file": file, "line": line, "column": column}),
            Error::Backend { backend, kind, .. } => {
                serde_json::json!({"backend": backend, "kind": kind})
            }
            _ => serde_json::Value::Null,
        };
        if let (Some(map), serde_json::Value::Object(extra)) = (value.as_object_mut(), details) {
            map.extend(extra);
        }
        value
    }
}
