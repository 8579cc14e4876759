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
    /// The run stopped because its cost reached `--max-cost`; every node was destroyed.
    pub const COST_CAP_REACHED: i32 = 10;
    /// Teardown could not destroy every node in time: some may still run (and bill) until
    /// their dead-man switch or TTL ends them; the error prints the `liveload cleanup` command.
    pub const TEARDOWN_INCOMPLETE: i32 = 9;
    /// `liveload doctor` found at least one check failing.
    pub const DOCTOR_FAILED: i32 = 11;
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
    /// The provider failed in a way that usually passes (5xx, a lost answer): retried.
    Transient,
    /// The node is not ready yet (still booting, agent not answering): the backend's last
    /// observation while waiting, which core reports if the creation deadline passes.
    NotReady,
    /// Anything else the provider said.
    Other,
}

impl BackendErrorKind {
    /// Whether an error of this kind is worth another try by default (throttling and transient
    /// failures; a [`BackendError`] can override it either way).
    pub fn is_retryable_by_default(self) -> bool {
        matches!(
            self,
            BackendErrorKind::RateLimited | BackendErrorKind::Transient
        )
    }
}

/// What a backend reports as wrong: a typed kind, the provider's message, how to fix it, the
/// underlying error and whether trying again may help.
///
/// Retry decisions read [`BackendError::retryable`] and [`BackendError::retry_after`], never
/// the message text: providers word their messages as they like, the kind is ours.
#[derive(Debug, thiserror::Error)]
#[error("{backend} backend: {message}")]
pub struct BackendError {
    /// The backend's name (`local`, `fly`, `ec2`, `ssh`).
    pub backend: &'static str,
    /// What kind of failure.
    pub kind: BackendErrorKind,
    /// The provider's own message (never containing secrets).
    pub message: String,
    /// How to fix it, when known.
    pub hint: Option<String>,
    /// Worth another try (throttled, transient, capacity that may free up)?
    pub retryable: bool,
    /// The provider's `Retry-After`, when it gave one.
    pub retry_after: Option<Duration>,
    /// The underlying error (an SDK error, an I/O error), for `{:#}`-style chains and logs.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BackendError {
    /// A new error of `kind`; retryable when the kind usually is.
    pub fn new(backend: &'static str, kind: BackendErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            backend,
            kind,
            message: message.into(),
            hint: None,
            retryable: kind.is_retryable_by_default(),
            retry_after: None,
            source: None,
        }
    }

    /// With a hint that says how to fix it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// With an optional hint.
    pub fn maybe_hint(mut self, hint: Option<impl Into<String>>) -> Self {
        self.hint = hint.map(Into::into);
        self
    }

    /// Say whether another try may help, whatever the kind says.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The provider asked us to wait this long before trying again.
    pub fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// With the underlying error.
    pub fn source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Self {
        Error::Backend(Box::new(e))
    }
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
    #[error("node {node} did not become ready within {timeout:?}{}; it was destroyed", last.as_ref().map(|l| format!(" ({l})")).unwrap_or_default())]
    ClusterNodeCreationTimeout {
        /// The node's id.
        node: String,
        /// The creation timeout in force.
        timeout: Duration,
        /// What the backend last saw while waiting (`machine state: created`, `502 from the
        /// edge`), when it said.
        last: Option<String>,
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

    /// A node's assignment (the scenario, its steps and its data) does not fit in one
    /// protocol frame ([`liveload_proto::MAX_FRAME_BYTES`]); found before it was sent.
    #[error(
        "the assignment sent to each node is {encoded_bytes} bytes encoded, above the protocol's {limit}-byte frame limit{}",
        data_file.as_ref().map(|f| format!("; the data file {} accounts for {data_bytes} bytes of it", f.display())).unwrap_or_default()
    )]
    AssignmentTooLarge {
        /// The scenario's data file, when it has one (usually the culprit).
        data_file: Option<PathBuf>,
        /// The data table's share of the frame, encoded, in bytes (0 without data).
        data_bytes: usize,
        /// The whole `Prepare` frame, in bytes.
        encoded_bytes: usize,
        /// The frame limit, in bytes.
        limit: usize,
    },

    /// `data: { mode: unique }` gives every user its own row, and the file has fewer rows than
    /// the run has users; found before any machine is created.
    #[error("{} has {rows} rows, fewer than the run's {users} users: mode unique gives every user its own row", data_file.display())]
    DataRowsTooFew {
        /// The data file.
        data_file: PathBuf,
        /// Its rows.
        rows: u64,
        /// The run's users.
        users: u64,
    },

    /// The provider refused or failed an operation.
    #[error(transparent)]
    Backend(Box<BackendError>),

    /// The backend bills for its machines and nobody confirmed the cost.
    #[error(
        "the {backend} backend creates machines that cost money, and the run was not confirmed{}",
        estimate.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
    )]
    ConfirmationRequired {
        /// The backend's name.
        backend: &'static str,
        /// The plan and cost the confirmation would cover, in words.
        estimate: Option<String>,
    },

    /// The run's estimated cost is above `--max-cost`; nothing was created.
    #[error(
        "the run would cost about ${estimate_usd:.2} ({detail}), more than --max-cost ${max_usd:.2}; nothing was created"
    )]
    CostCapExceeded {
        /// The estimate, USD.
        estimate_usd: f64,
        /// The cap, USD.
        max_usd: f64,
        /// How the estimate was made, in words.
        detail: String,
    },

    /// `--max-cost` was given for a billed backend whose price is unknown.
    #[error(
        "--max-cost needs the price of the {backend} backend's machines, and it is unknown{}",
        why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default()
    )]
    CostUnknown {
        /// The backend's name.
        backend: &'static str,
        /// Why (an unknown region, spot without a price).
        why: Option<String>,
    },

    /// An agent link would have crossed the network without encryption; refused.
    #[error(
        "refusing a plaintext link to the agent of node {node} at {address}: links that leave this host must use TLS"
    )]
    InsecureLink {
        /// The node's id.
        node: String,
        /// The address the backend gave.
        address: String,
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

    /// A liveload server (`liveload serve`) refused a request or reported a run's failure: its
    /// own error code, message and exit code, passed on so `--server` exits as a local
    /// command would.
    #[error("the server answered {status} {code}: {message}")]
    ServerRefused {
        /// The HTTP status.
        status: u16,
        /// The server's error code (`scenario_invalid`, `unauthorized`, …).
        code: String,
        /// Its message.
        message: String,
        /// The exit code the same error has locally.
        exit_code: i32,
    },

    /// The run started but did not complete successfully.
    #[error("run failed: {message}")]
    RunFailed {
        /// What failed.
        message: String,
    },

    /// Teardown ended with nodes still held by the provider.
    #[error(
        "teardown of run {run_id} could not confirm {} node(s) destroyed within {timeout:?} (gone with its host, or still running): {}",
        nodes.len(),
        nodes.join(", ")
    )]
    TeardownIncomplete {
        /// The backend's name.
        backend: &'static str,
        /// The run's id.
        run_id: String,
        /// The ids of the nodes still held.
        nodes: Vec<String>,
        /// The teardown deadline in force.
        timeout: Duration,
        /// The run's report, when the run itself ended: its results stand (a node whose host
        /// vanished is in its lost nodes); only teardown is in doubt.
        report: Option<Box<crate::run::RunReport>>,
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
            Error::AssignmentTooLarge { .. } => "assignment_too_large",
            Error::DataRowsTooFew { .. } => "data_rows_too_few",
            Error::Backend(_) => "backend_error",
            Error::ConfirmationRequired { .. } => "confirmation_required",
            Error::CostCapExceeded { .. } => "cost_cap_exceeded",
            Error::CostUnknown { .. } => "cost_unknown",
            Error::InsecureLink { .. } => "insecure_link",
            Error::AgentRejected { .. } => "agent_rejected",
            Error::AgentConnection { .. } => "agent_connection_failed",
            Error::RunFailed { .. } => "run_failed",
            Error::ServerRefused { .. } => "server_refused",
            Error::TeardownIncomplete { .. } => "teardown_incomplete",
            Error::Interrupted => "interrupted",
            Error::Io { .. } => "io_error",
        }
    }

    /// The process exit code the CLI uses for this error (see [`exit_code`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::ClusterNameInvalid { .. }
            | Error::MaxAllowedNodesInvalid { .. }
            | Error::InvalidOption { .. }
            | Error::ConfirmationRequired { .. }
            | Error::CostCapExceeded { .. }
            | Error::CostUnknown { .. } => exit_code::USAGE,
            Error::Scenario { .. }
            | Error::AssignmentTooLarge { .. }
            | Error::DataRowsTooFew { .. } => exit_code::SCENARIO,
            Error::ScenarioIsAlreadyRunning { .. } => exit_code::ALREADY_RUNNING,
            Error::NecessaryNodesExceedsMaxAllowedNodes { .. } | Error::NodeTooSmall { .. } => {
                exit_code::SIZING
            }
            Error::ClusterNodeCreationTimeout { .. }
            | Error::Backend(_)
            | Error::InsecureLink { .. }
            | Error::AgentRejected { .. }
            | Error::AgentConnection { .. } => exit_code::PROVISIONING,
            Error::RunFailed { .. } => exit_code::RUN_FAILED,
            Error::ServerRefused { exit_code, .. } => *exit_code,
            Error::TeardownIncomplete { .. } => exit_code::TEARDOWN_INCOMPLETE,
            Error::Interrupted => exit_code::INTERRUPTED,
            Error::Io { .. } => exit_code::INTERNAL,
        }
    }

    /// How to fix it, in one or two sentences.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::ScenarioIsAlreadyRunning { .. } => {
                "wait for the other run to finish or stop it (Ctrl-C); two runs of one scenario from one machine would load the same target twice and fight over its lock"
                    .into()
            }
            Error::NecessaryNodesExceedsMaxAllowedNodes { necessary, .. } => format!(
                "raise --max-allowed-nodes to at least {necessary} (on the local backend: --local-nodes, which splits this host), lower --users, or use bigger nodes"
            ),
            Error::NodeTooSmall { .. } => {
                "use a bigger node size, or lower --browser-memory-mib / --context-memory-mib if you measured your page to need less"
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
            Error::Backend(e) => return e.hint.clone(),
            Error::ConfirmationRequired { .. } => {
                "nothing was created: confirm with --yes (or answer y at the prompt), or from the library set RunOptions::cost_confirmation".into()
            }
            Error::CostCapExceeded { .. } => {
                "raise --max-cost, or lower --users / --duration, or use cheaper nodes".into()
            }
            Error::CostUnknown { backend, .. } => format!(
                "give the price per node-hour (EC2: --ec2-hourly-price), or run without --max-cost ({backend})"
            ),
            Error::InsecureLink { .. } => {
                "this is a bug in the backend: it must declare a network link (the default) so core encrypts it"
                    .into()
            }
            Error::AgentRejected { .. } => {
                "run `liveload cleanup` for stale agents, and use an agent built from the same liveload release"
                    .into()
            }
            Error::AgentConnection { .. } => {
                "check that the agent port is reachable from this machine (firewall, security group)"
                    .into()
            }
            Error::TeardownIncomplete {
                backend, run_id, ..
            } => format!(
                "run `liveload cleanup --backend {backend} --run {run_id}` (add the backend's options, e.g. --fly-app); the agents also exit on their own when the controller stays silent past the grace period, and at their TTL"
            ),
            Error::Interrupted => return None,
            Error::Scenario { .. } => "fix the file and check it again".into(),
            Error::DataRowsTooFew { rows, .. } => format!(
                "add rows, run at most {rows} users (--users {rows}), or use mode cycle (rows repeat) or random"
            ),
            Error::AssignmentTooLarge { .. } => {
                "use a smaller data file (fewer or shorter rows, fewer characters JSON must escape) or fewer steps; every node receives the scenario and its share of the data (all of it when its users outnumber the rows)"
                    .into()
            }
            _ => return None,
        })
    }

    /// The backend error inside, if this is one.
    pub fn as_backend(&self) -> Option<&BackendError> {
        match self {
            Error::Backend(e) => Some(e),
            _ => None,
        }
    }

    /// Is another try worth it? Only backend errors that say so are.
    pub fn is_retryable(&self) -> bool {
        self.as_backend().is_some_and(|e| e.retryable)
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
            Error::AssignmentTooLarge {
                data_file,
                data_bytes,
                encoded_bytes,
                limit,
            } => serde_json::json!({"data_file": data_file, "data_bytes": data_bytes,
                "encoded_bytes": encoded_bytes, "limit": limit}),
            Error::DataRowsTooFew {
                data_file,
                rows,
                users,
            } => serde_json::json!({"data_file": data_file, "rows": rows, "users": users}),
            Error::Backend(e) => {
                serde_json::json!({"backend": e.backend, "kind": e.kind, "retryable": e.retryable})
            }
            Error::TeardownIncomplete {
                backend,
                run_id,
                nodes,
                report,
                ..
            } => serde_json::json!({"backend": backend, "run_id": run_id, "nodes": nodes,
                "report": report}),
            _ => serde_json::Value::Null,
        };
        if let (Some(map), serde_json::Value::Object(extra)) = (value.as_object_mut(), details) {
            map.extend(extra);
        }
        value
    }
}
