//! The runtime control endpoint of a running test, on 127.0.0.1 only:
//!
//! - `GET /status`: the live status as JSON;
//! - `GET /metrics`: Prometheus text format;
//! - `POST /users` with `{"add": 50}` or `{"remove": 20, "force": false}`.
//!
//! Its address is written to `<state-dir>/control/<cluster>.json` so `liveload users add 50`
//! finds it; the file is removed when the run ends.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use liveload_core::Error;
use liveload_core::run::{ControlHandle, ControlRequest};
use serde::{Deserialize, Serialize};

/// What `POST /users` takes.
#[derive(Debug, Serialize, Deserialize)]
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

/// A running control server; its record file goes when it is dropped.
pub struct ControlServer {
    /// Where it listens.
    pub address: SocketAddr,
    record: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.record);
    }
}

/// Serve `handle` on 127.0.0.1 (a free port) and record the address for `liveload users`.
pub async fn serve(
    handle: ControlHandle,
    state_dir: &Path,
    cluster: &str,
) -> Result<ControlServer, Error> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| Error::io("starting the control endpoint", e))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::io("starting the control endpoint", e))?;
    let dir = state_dir.join("control");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let record = dir.join(format!("{cluster}.json"));
    let body = serde_json::json!({ "address": address.to_string(), "pid": std::process::id() });
    std::fs::write(&record, body.to_string())
        .map_err(|e| Error::io(format!("writing {}", record.display()), e))?;
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/users", post(users))
        .with_state(handle);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(ControlServer {
        address,
        record,
        task,
    })
}

async fn status(State(handle): State<ControlHandle>) -> Response {
    Json(handle.status.borrow().clone()).into_response()
}

/// Prometheus text exposition of the live status.
async fn metrics(State(handle): State<ControlHandle>) -> Response {
    let status = handle.status.borrow().clone();
    let mut out = String::new();
    let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let _ = writeln!(
        out,
        "# HELP liveload_active_users Users running now.\n# TYPE liveload_active_users gauge\nliveload_active_users {}",
        status.active_users
    );
    let _ = writeln!(
        out,
        "# HELP liveload_target_users Users the run should have now.\n# TYPE liveload_target_users gauge\nliveload_target_users {}",
        status.target_users
    );
    out.push_str("# HELP liveload_events_total Counters of the run (iterations, users, HTTP, WebSocket, errors).\n# TYPE liveload_events_total counter\n");
    for (name, value) in &status.counters {
        let _ = writeln!(
            out,
            "liveload_events_total{{name=\"{}\"}} {value}",
            label(name)
        );
    }
    out.push_str("# HELP liveload_latency_ms Latency percentiles so far, merged over every node.\n# TYPE liveload_latency_ms summary\n");
    for (name, s) in &status.latencies {
        let metric = label(name);
        for (q, v) in [
            ("0.5", s.p50_ms),
            ("0.9", s.p90_ms),
            ("0.95", s.p95_ms),
            ("0.99", s.p99_ms),
        ] {
            let _ = writeln!(
                out,
                "liveload_latency_ms{{metric=\"{metric}\",quantile=\"{q}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "liveload_latency_ms_count{{metric=\"{metric}\"}} {}",
            s.count
        );
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

async fn users(State(handle): State<ControlHandle>, Json(change): Json<UsersChange>) -> Response {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = match (change.add, change.remove) {
        (Some(count), None) => ControlRequest::AddUsers { count, reply },
        (None, Some(count)) => ControlRequest::RemoveUsers {
            count,
            force: change.force,
            reply,
        },
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": "send {\"add\": N} or {\"remove\": N}"})),
            )
                .into_response();
        }
    };
    if handle.requests.send(request).is_err() {
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"error": "the run has ended"})),
        )
            .into_response();
    }
    match answer.await {
        Ok(Ok(users)) => Json(serde_json::json!({ "target_users": users })).into_response(),
        Ok(Err(message)) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": message })),
        )
            .into_response(),
        Err(_) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"error": "the run has ended"})),
        )
            .into_response(),
    }
}

/// Find the control endpoint of a running test: the one for `cluster`, or the only one.
pub fn find(state_dir: &Path, cluster: Option<&str>) -> Result<SocketAddr, Error> {
    let dir = state_dir.join("control");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry
            .path()
            .file_stem()
            .map(|s| s.to_string_lossy().to_string());
        let Some(name) = name else { continue };
        if cluster.is_some_and(|c| c != name) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let alive = record["pid"]
            .as_i64()
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if let (true, Some(address)) = (alive, record["address"].as_str())
            && let Ok(address) = address.parse()
        {
            found.push((name, address));
        }
    }
    match found.len() {
        1 => Ok(found[0].1),
        0 => Err(Error::InvalidOption {
            option: "--name".into(),
            message: "no running liveload test found on this machine".into(),
        }),
        _ => Err(Error::InvalidOption {
            option: "--name".into(),
            message: format!(
                "several tests run ({}); pick one with --name",
                found
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Send a users change to a running test; returns its new target user count.
pub async fn change_users(address: SocketAddr, change: &UsersChange) -> Result<u64, Error> {
    let fail = |message: String| Error::RunFailed { message };
    let response = reqwest::Client::new()
        .post(format!("http://{address}/users"))
        .header("content-type", "application/json")
        .body(serde_json::to_string(change).expect("serialises"))
        .send()
        .await
        .map_err(|e| fail(format!("cannot reach the running test at {address}: {e}")))?;
    let ok = response.status().is_success();
    let body: serde_json::Value = serde_json::from_str(
        &response
            .text()
            .await
            .map_err(|e| fail(format!("reading the answer: {e}")))?,
    )
    .map_err(|e| fail(format!("the running test answered something else: {e}")))?;
    if ok {
        body["target_users"]
            .as_u64()
            .ok_or_else(|| fail(format!("unexpected answer: {body}")))
    } else {
        Err(fail(
            body["error"].as_str().unwrap_or("refused").to_string(),
        ))
    }
}
