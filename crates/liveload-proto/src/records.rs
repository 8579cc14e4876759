//! Raw trace records (`liveload run --trace FILE`): one per step, iteration and HTTP response
//! of the sampled iterations, streamed from the agents with their snapshots, for answering
//! "which requests were slow, from which node, at what time" after the run.

use serde::{Deserialize, Serialize};

/// What the controller asks agents to record (absent: nothing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TraceFile {
    /// The share of iterations recorded, from 0 to 1: a sampled iteration is recorded whole.
    pub sample: f64,
    /// The most record bytes one node sends per second (JSON); past it, records are dropped
    /// and counted as `trace.records_dropped`, so tracing cannot swamp the link.
    pub bytes_per_s: u64,
}

/// What a record is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// One step (its metric name, `step:<name>`, without the prefix).
    Step,
    /// One whole iteration.
    Iteration,
    /// One HTTP response the page received (the document, `fetch`, images, ...).
    Http,
}

/// One record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// When it ended, in ms since the start signal (the agent's clock).
    pub t_ms: u64,
    /// The user.
    pub user: u64,
    /// The user's iteration, from 0.
    pub iteration: u64,
    /// What it is of.
    pub kind: RecordKind,
    /// The step's name; the iteration's is `iteration`; a response's is its resource type
    /// (`Document`, `Fetch`, `Script`, ...).
    pub name: String,
    /// How long it took, in ms (a response: from sending the request to its headers).
    pub duration_ms: f64,
    /// Whether it passed (a response: status below 400).
    pub ok: bool,
    /// A response's HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// A response's URL, without its query string and fragment (where tokens travel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why it failed, secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
