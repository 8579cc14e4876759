//! What helps a person find out *why* a step failed: where each error first happened, the
//! screenshot and DOM of the first failures, and the step-by-step trace of `liveload try`.
//!
//! All of it is opt-in or bounded, so a load test pays nothing for it on the wire until
//! something fails: an error's first occurrence travels once per error message per agent, and
//! captures only when the scenario asks for them (`on_failure: screenshot`), a few per message.
//! Every text in here has had the scenario's secrets redacted by the agent before it was sent.

use serde::{Deserialize, Serialize};

/// What an agent records beyond metrics, for the people debugging a scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Save a screenshot and the DOM of the first this-many failed iterations of each distinct
    /// error (per agent); 0 saves none.
    #[serde(default)]
    pub captures_per_error: u32,
    /// Send a [`StepTrace`] for every step (`liveload try`); meant for one user.
    #[serde(default)]
    pub trace: Option<TraceOptions>,
    /// Stop each user after this many iterations (`liveload try` runs one).
    #[serde(default)]
    pub max_iterations: Option<u64>,
}

/// How much a trace carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceOptions {
    /// A PNG screenshot of the page after every step.
    #[serde(default)]
    pub screenshots: bool,
}

/// Where an error message was first seen, on one agent. The controller keeps the earliest
/// over every agent and adds the node it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorOccurrence {
    /// The user whose iteration failed.
    pub user_id: u64,
    /// That user's iteration number (from 0).
    pub iteration: u64,
    /// Milliseconds after `Start` when it failed.
    pub at_ms: u64,
}

/// The page as it was when an iteration failed: what the user saw and the DOM behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCapture {
    /// The error's message, exactly as counted (`error:<message>`).
    pub error: String,
    /// Where it happened.
    pub occurrence: ErrorOccurrence,
    /// A PNG screenshot of the viewport (empty when the page could not be captured).
    #[serde(with = "crate::base64_bytes")]
    pub png: Vec<u8>,
    /// The serialised DOM (`document.documentElement.outerHTML`), secrets redacted.
    pub dom: String,
}

/// One step of a traced user, sent when the step ends (containers also when they begin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTrace {
    /// The user.
    pub user_id: u64,
    /// The user's iteration (from 0).
    pub iteration: u64,
    /// How deep the step sits inside groups and repeats (0 at the top).
    pub depth: u32,
    /// The step's name (`click #send`).
    pub name: String,
    /// `begin` when a group or repeat starts, `end` when any step ends.
    pub phase: TracePhase,
    /// How long the step took, in milliseconds (0 at `begin`).
    pub duration_ms: f64,
    /// Why the step failed; `None` when it succeeded.
    pub error: Option<String>,
    /// Variables the step set, with their values (secret ones shown as `[secret]`).
    pub vars: Vec<(String, String)>,
    /// The page's URL after the step.
    pub url: Option<String>,
    /// Console messages and uncaught exceptions the page produced during the step.
    pub console: Vec<String>,
    /// A PNG screenshot after the step, when asked for.
    #[serde(default, with = "crate::base64_bytes")]
    pub screenshot: Vec<u8>,
}

/// Where in its life a traced step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TracePhase {
    /// A group or repeat starts its steps.
    Begin,
    /// A step ended.
    End,
}
