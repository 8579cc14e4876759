//! The steps a simulated user performs in one iteration.
//!
//! A step is a name (its metric is `step:<name>`) and a kind. The set of kinds grows with the
//! scenario language; an agent that meets a kind it does not know refuses the assignment at
//! `Prepare`, before any user starts, because serde rejects the unknown tag.

use serde::{Deserialize, Serialize};

/// One step of an iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The step's name in metrics and reports (`step:<name>`).
    pub name: String,
    /// What the step does.
    #[serde(flatten)]
    pub kind: StepKind,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// Load a URL (absolute, or relative to the scenario's base URL) and wait for its `load`.
    Navigate {
        /// The URL; `{{user_id}}` is replaced by the user's id.
        url: String,
    },
    /// Wait until an element matching a CSS selector exists in the page.
    WaitFor {
        /// The CSS selector.
        selector: String,
        /// Give up after this many milliseconds.
        timeout_ms: u64,
    },
    /// Pause, like a person reading: a fixed time, or uniformly drawn from `min_ms..=max_ms`.
    Think {
        /// Shortest pause, in milliseconds.
        min_ms: u64,
        /// Longest pause, in milliseconds (equal to `min_ms` for a fixed pause).
        max_ms: u64,
    },
}
