//! The runtime control endpoint of a running test, on 127.0.0.1 only:
//!
//! - `GET /status`: the live status as JSON;
//! - `GET /metrics`: Prometheus text format;
//! - `POST /users` with `{"add": 50}` or `{"remove": 20, "force": false}`.
//!
//! Its types, its Prometheus samples and its client are `liveload_server::control`'s: the
//! server's `/api/v1/runs/{id}/…` routes use the same, and `liveload users` has one client
//! for both.
//!
//! Its address is written to `<state-dir>/control/<cluster>.json` and a bearer token to
//! `<cluster>.token` next to it (both mode 0600 in the private state directory) so
//! `liveload users add 50` finds and authenticates to it; both go when the run ends.
//!
//! Why a token on a loopback port: any process of any user on this machine can reach
//! 127.0.0.1, and so can a web page in the user's browser through DNS rebinding (a name that
//! resolves to 127.0.0.1). Every request must carry `Authorization: Bearer <token>`, and its
//! `Host` must be this endpoint's own loopback address, which a rebound name never is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use liveload_core::Error;
use liveload_core::run::ControlHandle;
use liveload_server::control;

/// A running control server; its record and token files go when it is dropped.
pub struct ControlServer {
    /// Where it listens.
    pub address: SocketAddr,
    record: PathBuf,
    token_file: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.record);
        let _ = std::fs::remove_file(&self.token_file);
    }
}

/// What every request must show.
struct Guard {
    token: String,
    /// `Host` values that name this endpoint.
    hosts: [String; 3],
}

/// Refuse requests without the bearer token (401) or addressed to another host name (421,
/// "misdirected": a DNS-rebound page).
async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !guard.hosts.iter().any(|allowed| allowed == host) {
        return (StatusCode::MISDIRECTED_REQUEST, "unexpected Host\n").into_response();
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !constant_time_eq(presented.as_bytes(), guard.token.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required: liveload users reads it from the state directory\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// Compare without revealing, through timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    liveload_core::state::private_dir(state_dir)?;
    liveload_core::state::private_dir(&dir)?;
    let token = liveload_core::names::new_token();
    let token_file = dir.join(format!("{cluster}.token"));
    liveload_core::state::write_private_file(&token_file, token.expose().as_bytes())?;
    let record = dir.join(format!("{cluster}.json"));
    let body = serde_json::json!({ "address": address.to_string(), "pid": std::process::id() });
    liveload_core::state::write_private_file(&record, body.to_string().as_bytes())?;
    let port = address.port();
    let guard_state = Arc::new(Guard {
        token: token.expose().to_string(),
        hosts: [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ],
    });
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/users", post(users))
        .route_layer(middleware::from_fn_with_state(guard_state, guard))
        .with_state(handle);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(ControlServer {
        address,
        record,
        token_file,
        task,
    })
}

async fn status(State(handle): State<ControlHandle>) -> Response {
    Json(handle.status.borrow().clone()).into_response()
}

/// Prometheus text exposition of the live status (the server's `/metrics` writes the same
/// samples, labelled by run).
async fn metrics(State(handle): State<ControlHandle>) -> Response {
    let status = handle.status.borrow().clone();
    let mut out = String::from(control::PROMETHEUS_HEADER);
    control::prometheus(&status, false, &mut out);
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

/// `POST /users`: the same change, answer and errors as the server's `/runs/{id}/users`.
async fn users(State(handle): State<ControlHandle>, body: axum::body::Bytes) -> Response {
    let change: control::UsersChange = match serde_json::from_slice(&body) {
        Ok(change) => change,
        Err(e) => {
            let body = control::ErrorBody::new(
                "invalid_users_change",
                format!("send {{\"add\": N}} or {{\"remove\": N}}: {e}"),
            );
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    match control::change_users(&handle, &change).await {
        Ok(target_users) => Json(control::UsersAnswer { target_users }).into_response(),
        Err(refusal) => (refusal.status, Json(refusal.body)).into_response(),
    }
}

/// A running test's control endpoint: where it listens and the token it wants.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Its loopback address.
    pub address: SocketAddr,
    /// Its bearer token.
    pub token: liveload_core::Secret,
}

impl Endpoint {
    /// The one runtime-control client, pointed at this endpoint.
    pub fn client(self) -> control::ControlClient {
        control::ControlClient {
            base: format!("http://{}", self.address),
            token: self.token,
        }
    }
}

/// Find the control endpoint of a running test: the one for `cluster`, or the only one.
pub fn find(state_dir: &Path, cluster: Option<&str>) -> Result<Endpoint, Error> {
    let dir = state_dir.join("control");
    let mut found: Vec<(String, Endpoint)> = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_none_or(|e| e != "json") {
            continue;
        }
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
        let token = std::fs::read_to_string(dir.join(format!("{name}.token")));
        if let (true, Some(address), Ok(token)) = (alive, record["address"].as_str(), token)
            && let Ok(address) = address.parse()
        {
            let token = liveload_core::Secret::new(token.trim());
            found.push((name, Endpoint { address, token }));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0).1),
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
