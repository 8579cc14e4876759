//! Messages between the liveload controller and its agents.
//!
//! This crate is the contract of the wire: it defines what each side may say, and how a frame of
//! bytes turns into a message. It does no I/O. The transport (a WebSocket, optionally inside TLS)
//! lives in `liveload-core` (controller side) and `liveload-agent` (agent side).
//!
//! # The conversation
//!
//! ```text
//! controller                                  agent
//!     |-- Hello {version, token} ----------------->|   HELLO_TIMEOUT from accept, TLS included
//!     |<------------- Welcome {facts} | Rejected --|   token checked in constant time
//!     |-- Prepare {assignment} ------------------->|   browser launched, users not started
//!     |<------------------- Prepared {browser} ----|
//!     |-- Start ---------------------------------->|   every agent starts on the same signal
//!     |<----------------- Snapshot (every second) -|
//!     |<----------------- Trace (each step, `try`) -|   only when the assignment asks
//!     |-- Heartbeat (every few seconds) ---------->|   silence past `grace` = dead-man switch
//!     |<--------------------- Finished {final} ----|
//!     |-- Shutdown ------------------------------->|   agent closes Chromium and exits
//! ```
//!
//! Every frame is one JSON document in a WebSocket text message. Frames from the other side are
//! untrusted bytes: [`decode_controller`] and [`decode_agent`] refuse anything larger than
//! [`MAX_FRAME_BYTES`] and never panic (property-tested in `tests/`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod diagnostics;
mod hosts;
pub mod json_path;
pub mod launch;
mod mix;
mod protocol_step;
mod records;
mod step;
pub mod template;

pub use diagnostics::{
    Diagnostics, ErrorOccurrence, FailureCapture, StepTrace, TraceOptions, TracePhase,
};
pub use hosts::{HostMapping, HostRules, check_address, check_host_pattern, url_host};
pub use mix::UserGroup;
pub use protocol_step::{AnswerCheck, AnswerSource, AnswerValue, Engine, HttpBody, HttpRequest};
pub use records::{RecordKind, TraceFile, TraceRecord};
pub use step::{AssertCheck, ExtractFrom, Step, StepKind, WaitCondition};
pub use template::Generator;

/// Version of this protocol. A controller and an agent talk only when both say the same number.
///
/// Bump it on any change that an older peer would misread. Version 2: `wait_for: {js}`, step
/// timeouts that fall back to the assignment's `step_timeout_ms`, secret variables and CSV
/// columns, [`Diagnostics`], first error occurrences and captures in snapshots, traces.
/// Version 3: [`UserLoop`] (`on_start`/`on_stop` steps, iterations per user, pacing), which an
/// older agent would ignore and loop forever without; `coordinate` steps with `Arrived` and
/// `Release`. Version 4: several base URLs per node and [`HostRules`], which an older agent
/// would ignore (sending every user to one target, and loading the hosts a scenario blocks);
/// protocol users (`engine: http` and its steps). Version 5: `engine: liveview`, which an
/// older agent would refuse as an unknown engine after the handshake rather than at it;
/// mixed runs' [`UserGroup`]s, which an older agent would ignore (running every user as the
/// first scenario).
pub const PROTOCOL_VERSION: u32 = 5;

/// The largest frame either side accepts, in bytes. A snapshot of hundreds of histograms fits
/// comfortably; anything larger is a bug or an attack.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// How long an agent gives a new connection, from `accept`, to finish TLS, the WebSocket
/// upgrade and its `Hello` before closing it.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;

/// What the controller says to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControllerMessage {
    /// The first frame of every connection: who is speaking and with what right.
    Hello {
        /// The controller's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// The per-run secret the agent was started with.
        token: String,
        /// The controller's crate version, for messages only.
        controller_version: String,
    },
    /// The users this agent will run. The agent launches its browser and answers `Prepared`,
    /// but starts no user before `Start`.
    Prepare(Box<Assignment>),
    /// Start every prepared user now.
    Start,
    /// Nothing to say, but still alive: resets the agent's dead-man switch.
    Heartbeat,
    /// Stop users: gracefully (finish the current iteration) or at once (`force`).
    Stop {
        /// Stop now instead of letting the current iterations finish.
        force: bool,
    },
    /// Start `count` more users with ids `first_user_id ..`, while the run goes on.
    AddUsers {
        /// The first new user id.
        first_user_id: u64,
        /// How many.
        count: u64,
    },
    /// Stop `count` running users (the most recently started first): gracefully, finishing
    /// their current iteration, or at once (`force`).
    RemoveUsers {
        /// How many.
        count: u64,
        /// Stop now instead of after the current iteration.
        force: bool,
    },
    /// Stop everything, close the browser and exit the agent process.
    Shutdown,
    /// A group formed at a coordination point: its members (user ids, cluster-wide, in the
    /// order they arrived) go on now. Sent to every node that has a member waiting.
    Release {
        /// The coordination point.
        point: String,
        /// The group's number at this point, cluster-wide, from 0.
        group_id: u64,
        /// How many users the point asked for (more than `members.len()` when the group was
        /// released by its timeout).
        wanted: u32,
        /// The members' user ids, in order of arrival.
        members: Vec<u64>,
    },
}

/// What an agent says to the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// The answer to an accepted `Hello`: the node's real facts.
    Welcome {
        /// The agent's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// The agent's crate version.
        agent_version: String,
        /// What this node really is.
        facts: NodeFacts,
    },
    /// The answer to a refused `Hello`; the agent closes the connection after it.
    Rejected {
        /// Why.
        reason: Rejection,
    },
    /// The answer to `Prepare`: the browser is up and the users are ready to start.
    Prepared {
        /// How many users this agent will run.
        users: u64,
        /// The browser that will run them (`None` when the agent runs without one).
        browser: Option<BrowserInfo>,
    },
    /// Metrics recorded since the previous snapshot (a delta, never a running total).
    Snapshot(MetricsSnapshot),
    /// Every user has ended; the last metrics delta.
    Finished(MetricsSnapshot),
    /// One step of a traced user (only when the assignment's [`Diagnostics::trace`] asks).
    Trace(Box<StepTrace>),
    /// A user reached a coordination point and waits for its group (see
    /// [`StepKind::Coordinate`]); the controller answers with `Release`. The group's size and
    /// timeout are the scenario's, which the controller holds: an agent names only the point.
    Arrived {
        /// The coordination point.
        point: String,
        /// The user.
        user_id: u64,
    },
    /// The agent could not do what was asked; it stays connected so the controller can shut it
    /// down.
    Failed {
        /// What went wrong, in words.
        message: String,
    },
}

/// Why an agent refused a controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rejection {
    /// The token did not match the one the agent was started with.
    Unauthorized,
    /// Controller and agent speak different protocol versions.
    ProtocolMismatch {
        /// The agent's version.
        agent: u32,
        /// The controller's version.
        controller: u32,
    },
    /// Another controller is already connected to this agent.
    Busy,
    /// The first frame was not a `Hello`.
    ExpectedHello,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Unauthorized => write!(
                f,
                "the agent refused the run token (it was started for another run, or the token was mistyped)"
            ),
            Rejection::ProtocolMismatch { agent, controller } => write!(
                f,
                "protocol mismatch: the agent speaks version {agent}, this controller speaks version {controller}; \
                 use an agent image built from the same liveload release"
            ),
            Rejection::Busy => write!(f, "another controller is already connected to this agent"),
            Rejection::ExpectedHello => write!(f, "the first frame was not a hello"),
        }
    }
}

/// What a node really is, measured by the agent on the node itself.
///
/// Sizing uses `effective_*`: the host's figures, lowered by cgroup limits (a container's limit
/// wins over the host's) and divided by `host_share` when several agents share one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// The node's host name.
    pub hostname: String,
    /// CPU architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// Physical memory of the host, in bytes.
    pub total_memory_bytes: u64,
    /// Memory the host reports as available now, in bytes.
    pub available_memory_bytes: u64,
    /// Logical cores of the host.
    pub logical_cores: u32,
    /// cgroup v2 `memory.max` of the agent's cgroup (smallest along the path), when limited.
    pub cgroup_memory_limit_bytes: Option<u64>,
    /// cgroup v2 `cpu.max` as cores (`quota / period`), when limited.
    pub cgroup_cpu_limit: Option<f64>,
    /// When several agents share one host (local backend), this agent's share is 1 / `host_share`.
    pub host_share: Option<u32>,
    /// Memory this agent may use: min(available, cgroup limit - usage) / share.
    pub effective_memory_bytes: u64,
    /// Cores this agent may use: min(logical, cgroup limit) / share.
    pub effective_cores: f64,
    /// The Chromium the agent will launch, when found.
    pub chromium: Option<BrowserInfo>,
    /// An operator's cap on this node's users (the SSH backend's per-host `max_users`):
    /// sizing never gives the node more, whatever its memory and cores allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_users: Option<u32>,
}

/// A browser executable and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserInfo {
    /// Path of the executable.
    pub path: String,
    /// What it says of its version (`Chromium 156.0.8078.79`).
    pub version: String,
}

/// What `liveload-agent --check` prints (one JSON line): whether this host can run an agent,
/// for `liveload doctor`. The agent answers it because it is the one that looks for Chromium
/// and starts it: the controller asks it instead of guessing the agent's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCheck {
    /// The agent's version (its crate's).
    pub agent_version: String,
    /// The protocol it speaks ([`PROTOCOL_VERSION`] of its build).
    pub protocol: u32,
    /// The host's architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// The Chromium it would use, if it found one.
    pub chromium: Option<BrowserInfo>,
    /// Whether that Chromium started headless and loaded a page, the way the agent starts it.
    pub chromium_started: bool,
    /// Whether it ran sandboxed (it runs without its sandbox as root, or when told to).
    pub sandboxed: bool,
    /// What happened when it was started: empty when it worked; else Chromium's own words.
    pub start_detail: String,
}

/// The users one agent runs, and what they do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The run these users belong to.
    pub run_id: String,
    /// The scenario's name.
    pub scenario: String,
    /// Base URL that relative step URLs are joined to.
    pub base_url: String,
    /// The first user id of this agent's range; users are `first_user_id .. first_user_id + users`.
    pub first_user_id: u64,
    /// How many users this agent runs.
    pub users: u64,
    /// How long users keep starting iterations, in milliseconds.
    pub duration_ms: u64,
    /// The longest one iteration may take before it is failed, in milliseconds.
    pub iteration_timeout_ms: u64,
    /// Time between user starts on this agent, in milliseconds (0: all at once).
    pub start_interval_ms: u64,
    /// Users start in batches of this many, one batch per `start_interval_ms` (1: one by one).
    #[serde(default = "one")]
    pub start_batch: u64,
    /// The steps of one iteration.
    pub steps: Vec<Step>,
    /// The longest an element action (click, fill, ...) waits for its element, in milliseconds.
    #[serde(default = "default_step_timeout_ms")]
    pub step_timeout_ms: u64,
    /// Per-user data from the scenario's CSV file: user `u` gets row `u % rows.len()`.
    #[serde(default)]
    pub data: Option<DataTable>,
    /// How users arrive on this node.
    #[serde(default)]
    pub workload: Workload,
    /// This node's share of the cluster-wide throttles.
    #[serde(default)]
    pub throttle: Option<NodeThrottle>,
    /// Run without a browser: users execute only `think` steps (benchmarks, protocol tests).
    #[serde(default)]
    pub no_browser: bool,
    /// Failure captures, tracing and an iteration limit, for debugging a scenario.
    #[serde(default)]
    pub diagnostics: Diagnostics,
    /// URL schemes users may open beyond `http`, `https`, `data` and `about:blank` (the
    /// scenario's `allow_schemes:`, e.g. `["file"]`). The agent enforces the list, so a token
    /// holder talking to it directly gets no more than the scenario would.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_schemes: Vec<String>,
    /// The memory watchdog's budget, bytes: the most this node's agent and browser may use
    /// (the share of the node's memory sizing planned for). Past 95 % of it the agent starts
    /// no new iteration, and counts `node_memory_exhausted`, until it is back under 85 %: the
    /// node never reaches the point where the kernel's OOM killer picks a browser. `None`:
    /// no watchdog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget_bytes: Option<u64>,
    /// What each user does around its iterations (closed model).
    #[serde(default, skip_serializing_if = "UserLoop::is_plain")]
    pub user_loop: UserLoop,
    /// Raw trace records to send with the snapshots (`liveload run --trace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_file: Option<TraceFile>,
    /// The targets of this node's users when the scenario has several (`base_urls:`): user
    /// `u` goes to `base_urls[u % len]`. Empty: every user goes to `base_url`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_urls: Vec<String>,
    /// Hosts the browser must not reach, the only ones it may, and host names it sends to
    /// another address (the scenario's `block_hosts:`, `allow_hosts:`, `map_hosts:`).
    #[serde(default, skip_serializing_if = "HostRules::is_empty")]
    pub host_rules: HostRules,
    /// What the users are: browsers, or protocol users (`engine: http`, no browser launched).
    #[serde(default, skip_serializing_if = "is_browser")]
    pub engine: Engine,
    /// A mixed run's scenarios on this node (`mix:`): which users run which steps as which
    /// engine. Empty: every user runs `steps` as `engine`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<UserGroup>,
}

fn is_browser(engine: &Engine) -> bool {
    *engine == Engine::Browser
}

impl Assignment {
    /// `users` users (ids from 0) of run `run_id` doing `steps` against `base_url`, every
    /// other setting at its default: 30 s of iterations of at most 30 s, all users at once,
    /// the closed model, a browser. Callers set what they need with `..Assignment::new(..)`.
    pub fn new(run_id: &str, scenario: &str, base_url: &str, users: u64, steps: Vec<Step>) -> Self {
        Assignment {
            run_id: run_id.to_string(),
            scenario: scenario.to_string(),
            base_url: base_url.to_string(),
            first_user_id: 0,
            users,
            duration_ms: 30_000,
            iteration_timeout_ms: 30_000,
            start_interval_ms: 0,
            start_batch: 1,
            steps,
            step_timeout_ms: default_step_timeout_ms(),
            data: None,
            workload: Workload::default(),
            throttle: None,
            no_browser: false,
            diagnostics: Diagnostics::default(),
            allow_schemes: Vec::new(),
            memory_budget_bytes: None,
            user_loop: UserLoop::default(),
            trace_file: None,
            base_urls: Vec::new(),
            host_rules: HostRules::default(),
            engine: Engine::default(),
            groups: Vec::new(),
        }
    }

    /// The base URL user `user_id` goes to.
    pub fn base_url_of(&self, user_id: u64) -> &str {
        match self.base_urls.len() as u64 {
            0 => &self.base_url,
            n => &self.base_urls[(user_id % n) as usize],
        }
    }

    /// The metric that times user `user_id`'s iterations per target, `target:<base URL>`
    /// (credentials left out), when the scenario has several targets; `None` with one.
    pub fn target_metric(&self, user_id: u64) -> Option<String> {
        if self.base_urls.is_empty() {
            return None;
        }
        let shown = hosts::without_credentials(self.base_url_of(user_id));
        Some(format!("target:{shown}"))
    }
}

/// What each user of the closed model does around its iterations (the scenario's
/// `on_start:`, `on_stop:`, `iterations:` and `pacing:`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserLoop {
    /// Steps run once, before the user's first iteration, in the same browser context (log in
    /// once: the context keeps its cookies across iterations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_start: Vec<Step>,
    /// Steps run once, after the user's last iteration (also when the duration ended it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_stop: Vec<Step>,
    /// Iterations per user; the user stops after this many (or when the duration ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    /// An iteration starts at most this often per user, in milliseconds (the wait is not
    /// latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing_ms: Option<u64>,
}

impl UserLoop {
    /// Plain iterations until the duration ends: nothing to send.
    pub fn is_plain(&self) -> bool {
        self == &UserLoop::default()
    }
}

/// How users arrive on one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum Workload {
    /// `users` users, each looping over the steps until the duration ends.
    #[default]
    Closed,
    /// Arrivals at a rate, each running the steps once in a fresh context; at most `users`
    /// at once (arrivals beyond are dropped and counted). Latency counts from the arrival's
    /// scheduled time, so a slow system cannot hide its queueing (no coordinated omission).
    Open {
        /// This node's arrivals per second at the start.
        rate_per_s: f64,
        /// This node's arrivals per second at the end (linear ramp; equal for a constant rate).
        ramp_to_per_s: f64,
    },
}

/// One node's share of the cluster-wide throttles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeThrottle {
    /// Least time between two iteration starts on this node, in microseconds.
    pub min_interval_us: Option<u64>,
    /// Most iterations running at once on this node.
    pub max_concurrent: Option<u64>,
}

fn one() -> u64 {
    1
}

fn default_step_timeout_ms() -> u64 {
    10_000
}

/// A CSV table: column names and rows of values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataTable {
    /// Column names (template variables).
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<String>>,
    /// Columns whose values are secret: agents redact them from everything they report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_columns: Vec<String>,
}

/// One histogram, in HdrHistogram's V2 serialization (base64 in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HistogramBlob(#[serde(with = "base64_bytes")] pub Vec<u8>);

/// Metrics recorded by one agent over one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Sequence number, from 0, per connection.
    pub seq: u64,
    /// Milliseconds since `Start` at the end of this interval.
    pub elapsed_ms: u64,
    /// Users running at the end of this interval.
    pub active_users: u64,
    /// Counter increments during the interval, by metric name.
    pub counters: BTreeMap<String, u64>,
    /// Latency histograms (microseconds) recorded during the interval, by metric name.
    pub histograms: BTreeMap<String, HistogramBlob>,
    /// Where each error message counted in `counters` (`error:<message>`, keyed here by the
    /// message) was first seen by this agent; sent once per message, in the interval it first
    /// happened.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, ErrorOccurrence>,
    /// Screenshots and DOMs of failed iterations ([`Diagnostics::captures_per_error`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captures: Vec<FailureCapture>,
    /// What the node's browser costs at the end of this interval (absent from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<NodeResources>,
    /// Trace records of this interval, in the order they were made ([`TraceFile`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<TraceRecord>,
}

/// Memory and CPU of one node's agent and browser, sampled at the end of an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeResources {
    /// Memory in use, bytes: the agent's process group's proportional set size, or the
    /// cgroup's own figure where a cgroup limits the node.
    pub memory_bytes: u64,
    /// Cores busy on average over the interval (user + system time of the group).
    pub cpu_cores: f64,
    /// Processes in the group (the agent, Chromium, its renderers and helpers).
    pub processes: u32,
}

/// Why a frame could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes is larger than the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// The frame is not a message of this protocol.
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
}

fn decode<T: serde::de::DeserializeOwned>(frame: &[u8]) -> Result<T, DecodeError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge(frame.len()));
    }
    Ok(serde_json::from_slice(frame)?)
}

/// Decode a frame the controller sent (on the agent side).
pub fn decode_controller(frame: &[u8]) -> Result<ControllerMessage, DecodeError> {
    decode(frame)
}

/// Decode a frame an agent sent (on the controller side).
pub fn decode_agent(frame: &[u8]) -> Result<AgentMessage, DecodeError> {
    decode(frame)
}

/// Encode a message as one frame.
pub fn encode<T: Serialize>(message: &T) -> String {
    // Serialising these types cannot fail: every map key is a string and no type has a
    // fallible `Serialize`.
    serde_json::to_string(message).expect("protocol messages always serialise")
}

/// Bytes as base64 text in JSON.
pub(crate) mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}
