//! The arguments of protocol users' steps (`engine: http`): an HTTP request and what its
//! answer must be, a value read from the answer, and what a WebSocket message must hold.
//! Strings marked *templated* are filled per user, as a browser step's are; JSON paths are
//! [`json_path`](crate::json_path)'s.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the scenario runs its users as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// A real Chromium context per user (the default).
    #[default]
    Browser,
    /// A protocol user per user: its own HTTP client (connections, cookies) and WebSocket.
    Http,
    /// A native Phoenix LiveView client per user: the page over HTTP, then the LiveView
    /// socket; element steps act as LiveView's bindings do, on the HTML merged from diffs.
    Liveview,
}

impl Engine {
    /// Its users run without a browser.
    pub fn is_protocol(self) -> bool {
        self != Engine::Browser
    }
}

/// One HTTP request of a `request` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, ... (upper case).
    pub method: String,
    /// Absolute, or relative to the user's base URL (templated).
    pub url: String,
    /// Headers, in order (values templated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The body.
    #[serde(default, skip_serializing_if = "HttpBody::is_none")]
    pub body: HttpBody,
    /// What the answer must be.
    #[serde(default)]
    pub expect: AnswerCheck,
    /// Give up after this many milliseconds; `None` waits the assignment's `step_timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A request's body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum HttpBody {
    /// No body.
    #[default]
    None,
    /// Text, sent as is (templated).
    Text(String),
    /// JSON (every string in it templated), sent with `Content-Type: application/json`.
    Json(Value),
    /// Form fields (values templated), sent URL-encoded.
    Form(Vec<(String, String)>),
}

impl HttpBody {
    /// No body at all.
    pub fn is_none(&self) -> bool {
        matches!(self, HttpBody::None)
    }
}

/// What an HTTP answer (or, with `status` empty, a WebSocket message) must be.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerCheck {
    /// One of these statuses; empty: any below 400.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<u16>,
    /// The body contains this text (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// The body is JSON holding these values at these paths (string values templated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<(String, Value)>,
}

/// Where `extract` reads a protocol user's value: the last HTTP answer (or the last
/// WebSocket message `ws_expect` matched).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum AnswerValue {
    /// The value at a JSON path of the body (a string as itself, anything else as JSON).
    Json {
        /// The path.
        path: String,
    },
    /// A header of the last HTTP answer.
    Header {
        /// Its name (any case).
        name: String,
    },
    /// The first capture group of a regular expression on the body (the whole match
    /// without a group).
    Regex {
        /// The expression.
        pattern: String,
    },
}

/// Which answer `extract` reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerSource {
    /// The last HTTP answer.
    #[default]
    Http,
    /// The last WebSocket message `ws_expect` matched.
    Ws,
}
