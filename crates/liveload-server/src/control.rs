//! Changing and watching a running test: one set of types and one client for every place that
//! does it — the CLI's per-run control endpoint (`liveload run` serves it on 127.0.0.1), the
//! server's `/api/v1/runs/{id}/…` routes, and `liveload users` talking to either.
//!
//! Both endpoints take the same [`UsersChange`] and answer the same [`UsersAnswer`] or
//! [`ErrorBody`]; [`ControlClient`] only differs in its base URL.

use std::fmt::Write as _;

use axum::http::StatusCode;
use liveload_core::run::{ControlHandle, ControlRequest, LiveStatus};
use serde::{Deserialize, Serialize};

/// What `POST …/users` takes: `{"add": 50}` or `{"remove": 20, "force": false}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "full", derive(utoipa::ToSchema))]
pub struct UsersChange {
    /// Users to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<u64>,
    /// Users to remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<u64>,
    /// Remove at once rather than after the current iteration.
    #[serde(default)]
    pub force: bool,
}

/// What a users change answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "full", derive(utoipa::ToSchema))]
pub struct UsersAnswer {
    /// The users the run targets now.
    pub target_users: u64,
}

/// Every error answer of the API and the control endpoint: the document the CLI prints with
/// `--output json` (`liveload_core::Error::to_json`), so the same `error` codes and messages;
/// some errors add fields (a scenario error: `file`, `line`, `column`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "full", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable code (`scenario_invalid`, `unauthorized`, …).
    pub error: String,
    /// What went wrong, in a sentence.
    pub message: String,
    /// How to fix it, when there is a known fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The CLI's exit code for the same error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// A scenario error's line (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// A scenario error's column (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
}

impl ErrorBody {
    /// A body with a code and message only.
    pub fn new(code: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: code.into(),
            message: message.into(),
            hint: None,
            exit_code: None,
            line: None,
            column: None,
        }
    }
}

/// A refused change: the HTTP status and the code and message to answer.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// 400 (bad request), 409 (the run refuses or has ended).
    pub status: StatusCode,
    /// The error body.
    pub body: ErrorBody,
}

impl Refusal {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            body: ErrorBody::new(code, message),
        }
    }
}

/// Ask the run behind `handle` to add or remove users; its new target, or why not.
pub async fn change_users(handle: &ControlHandle, change: &UsersChange) -> Result<u64, Refusal> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = match (change.add, change.remove) {
        (Some(count), None) => ControlRequest::AddUsers { count, reply },
        (None, Some(count)) => ControlRequest::RemoveUsers {
            count,
            force: change.force,
            reply,
        },
        _ => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_users_change",
                "send {\"add\": N} or {\"remove\": N}",
            ));
        }
    };
    let ended = || Refusal::new(StatusCode::CONFLICT, "run_ended", "the run has ended");
    handle.requests.send(request).map_err(|_| ended())?;
    match answer.await {
        Ok(Ok(users)) => Ok(users),
        Ok(Err(message)) => Err(Refusal::new(
            StatusCode::CONFLICT,
            "users_change_refused",
            message,
        )),
        Err(_) => Err(ended()),
    }
}

/// Append the Prometheus text exposition of `status` to `out`, each sample labelled with
/// `run="<id>"` when `run_label` is set (a server holds several runs).
pub fn prometheus(status: &LiveStatus, run_label: bool, out: &mut String) {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let run = if run_label {
        format!("run=\"{}\"", escape(&status.run_id))
    } else {
        String::new()
    };
    let labels = |extra: &str| {
        let parts: Vec<&str> = [run.as_str(), extra]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", parts.join(","))
        }
    };
    let _ = writeln!(
        out,
        "liveload_active_users{} {}",
        labels(""),
        status.active_users
    );
    let _ = writeln!(
        out,
        "liveload_target_users{} {}",
        labels(""),
        status.target_users
    );
    if let Some(cost) = status.cost_usd {
        let _ = writeln!(out, "liveload_cost_usd{} {cost}", labels(""));
    }
    for (name, value) in &status.counters {
        let name = format!("name=\"{}\"", escape(name));
        let _ = writeln!(out, "liveload_events_total{} {value}", labels(&name));
    }
    for (name, s) in &status.latencies {
        let metric = format!("metric=\"{}\"", escape(name));
        for (q, v) in [
            ("0.5", s.p50_ms),
            ("0.9", s.p90_ms),
            ("0.95", s.p95_ms),
            ("0.99", s.p99_ms),
        ] {
            let label = format!("{metric},quantile=\"{q}\"");
            let _ = writeln!(out, "liveload_latency_ms{} {v}", labels(&label));
        }
        let _ = writeln!(
            out,
            "liveload_latency_ms_count{} {}",
            labels(&metric),
            s.count
        );
    }
}

/// The `# HELP`/`# TYPE` lines of [`prometheus`]'s metrics, written once per exposition.
pub const PROMETHEUS_HEADER: &str = "\
# HELP liveload_active_users Users running now.
# TYPE liveload_active_users gauge
# HELP liveload_target_users Users the run should have now.
# TYPE liveload_target_users gauge
# HELP liveload_cost_usd What the run's nodes have cost so far.
# TYPE liveload_cost_usd gauge
# HELP liveload_events_total Counters of the run (iterations, users, HTTP, WebSocket, errors).
# TYPE liveload_events_total counter
# HELP liveload_latency_ms Latency percentiles so far, merged over every node.
# TYPE liveload_latency_ms summary
";

/// The one client of a run's control routes: the CLI's endpoint (`http://127.0.0.1:PORT`) or
/// a server's (`https://host/api/v1/runs/ID`), with the bearer token each wants.
#[derive(Debug, Clone)]
pub struct ControlClient {
    /// The routes' base URL (no trailing slash).
    pub base: String,
    /// The bearer token.
    pub token: liveload_core::Secret,
}

impl ControlClient {
    /// Change the run's users; its new target.
    pub async fn change_users(&self, change: &UsersChange) -> Result<u64, liveload_core::Error> {
        let answer: UsersAnswer = self
            .call(reqwest::Method::POST, "users", Some(change))
            .await?;
        Ok(answer.target_users)
    }

    /// The run's live status (the CLI endpoint's `/status`).
    pub async fn status(&self) -> Result<serde_json::Value, liveload_core::Error> {
        self.call::<(), _>(reqwest::Method::GET, "status", None)
            .await
    }

    async fn call<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, liveload_core::Error> {
        let fail = |message: String| liveload_core::Error::RunFailed { message };
        let url = format!("{}/{path}", self.base);
        let mut request = crate::client::http()
            .request(method, &url)
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).expect("serialises"));
        }
        let response = request
            .send()
            .await
            .map_err(|e| fail(format!("cannot reach {}: {e}", self.base)))?;
        crate::client::decode(response).await
    }
}
