//! A stateful Fly Machines test server: the endpoints and shapes liveload uses, with real
//! machines behind them — each created machine gets its own loopback address (127.0.0.N) and a
//! real `liveload-agent` started from the machine's `config.env`, listening there.
//!
//! It holds what a spec-validating mock cannot: machines that exist, start and go away. It also
//! counts requests and can answer 429 with `Retry-After`, lose a create's response (the machine
//! is made, the answer is a 502), and boot slowly (app names starting with `slow`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The token the server accepts.
pub const TOKEN: &str = "fly-test-token-0123456789abcdef";

/// One machine.
pub struct FakeMachine {
    pub id: String,
    pub name: String,
    pub app: String,
    pub state: String,
    pub private_ip: String,
    pub config: Value,
    pub agent: Option<Child>,
}

impl FakeMachine {
    fn json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "state": self.state, "region": "lo",
               "private_ip": self.private_ip, "config": self.config})
    }
}

/// What the server remembers and what tests tune.
#[derive(Default)]
pub struct ServerState {
    pub machines: BTreeMap<String, FakeMachine>,
    pub next: u32,
    pub agent_bin: std::path::PathBuf,
    pub agent_port: u16,
    /// When each create request arrived.
    pub creates: Vec<Instant>,
    /// Answer this many coming creates with 429.
    pub throttle_next: u32,
    /// `Retry-After` seconds with those 429s.
    pub retry_after_s: u64,
    /// Make the next machine but answer 502 (a lost response).
    pub lose_next_create: bool,
    /// Requests with a wrong or missing token.
    pub unauthorized: u32,
}

/// A running test server.
pub struct FlyServer {
    pub url: String,
    pub state: Arc<Mutex<ServerState>>,
}

impl Drop for FlyServer {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap();
        for machine in state.machines.values_mut() {
            stop_agent(machine);
        }
    }
}

fn stop_agent(machine: &mut FakeMachine) {
    if let Some(child) = machine.agent.take() {
        stop_child(child);
    }
}

/// End an agent's process group (Chromium too): SIGTERM, then SIGKILL after 5 s.
fn stop_child(mut child: Child) {
    // The agent leads its process group (it calls setsid): end the group, Chromium too.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGTERM);
    }
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start the server on a free port.
pub async fn start() -> FlyServer {
    let state = Arc::new(Mutex::new(ServerState {
        agent_bin: liveload_local::find_agent_bin().expect("liveload-agent is built"),
        agent_port: free_port(),
        retry_after_s: 1,
        ..Default::default()
    }));
    let app = Router::new()
        .route("/apps/{app}/machines", get(list).post(create))
        .route(
            "/apps/{app}/machines/{id}",
            get(one).delete(destroy).post(update),
        )
        .route("/apps/{app}/machines/{id}/stop", axum::routing::post(stop))
        .route("/apps/{app}/machines/{id}/wait", get(wait))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FlyServer {
        url: format!("http://{address}"),
        state,
    }
}

type Shared = State<Arc<Mutex<ServerState>>>;

fn authorized(state: &Arc<Mutex<ServerState>>, headers: &HeaderMap) -> bool {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !ok {
        state.lock().unwrap().unauthorized += 1;
    }
    ok
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

async fn create(
    State(state): Shared,
    Path(app): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut s = state.lock().unwrap();
    s.creates.push(Instant::now());
    if s.throttle_next > 0 {
        s.throttle_next -= 1;
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        response
            .headers_mut()
            .insert("retry-after", s.retry_after_s.to_string().parse().unwrap());
        return response;
    }
    let name = body["name"].as_str().unwrap_or_default().to_string();
    if s.machines.values().any(|m| m.name == name && m.app == app) {
        return error(
            StatusCode::CONFLICT,
            &format!("a machine named {name} already exists"),
        );
    }
    s.next += 1;
    let n = s.next;
    let id = format!("e{:013x}", 0x1000_0000_u64 + u64::from(n));
    let ip = format!("127.0.0.{}", n % 250 + 2);
    let config = body["config"].clone();
    let slow = app.starts_with("slow");
    let stopped = body["skip_launch"].as_bool() == Some(true);
    let agent = if slow || stopped {
        None
    } else {
        Some(spawn_agent(&s, &config, &ip))
    };
    s.machines.insert(
        id.clone(),
        FakeMachine {
            id: id.clone(),
            name,
            app,
            state: if stopped {
                "stopped".into()
            } else if slow {
                "created".into()
            } else {
                "started".into()
            },
            private_ip: ip,
            config,
            agent,
        },
    );
    let machine = s.machines[&id].json();
    if std::mem::take(&mut s.lose_next_create) {
        return error(StatusCode::BAD_GATEWAY, "connection reset");
    }
    axum::Json(machine).into_response()
}

/// Start a real agent for a machine, configured from its `config.env`.
fn spawn_agent(s: &ServerState, config: &Value, ip: &str) -> Child {
    let mut command = Command::new(&s.agent_bin);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in config["env"].as_object().into_iter().flatten() {
        command.env(key, value.as_str().unwrap_or_default());
    }
    // Inside a real machine the agent listens on all addresses; here, on its own loopback one.
    command.env("LIVELOAD_LISTEN", format!("{ip}:{}", s.agent_port));
    command.spawn().expect("the agent starts")
}

/// `POST /apps/{app}/machines/{id}`: a new config; (re)started unless `skip_launch`.
async fn update(
    State(state): Shared,
    Path((_app, id)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let old = {
        let mut s = state.lock().unwrap();
        let Some(machine) = s.machines.get_mut(&id) else {
            return error(StatusCode::NOT_FOUND, "machine not found");
        };
        machine.config = body["config"].clone();
        machine.agent.take()
    };
    if let Some(child) = old {
        tokio::task::spawn_blocking(move || stop_child(child))
            .await
            .unwrap();
    }
    let mut s = state.lock().unwrap();
    let launch = body["skip_launch"].as_bool() != Some(true);
    let (config, ip) = {
        let m = &s.machines[&id];
        (m.config.clone(), m.private_ip.clone())
    };
    let agent = launch.then(|| spawn_agent(&s, &config, &ip));
    let machine = s.machines.get_mut(&id).unwrap();
    machine.agent = agent;
    machine.state = if launch {
        "started".into()
    } else {
        "stopped".into()
    };
    axum::Json(machine.json()).into_response()
}

/// `POST /apps/{app}/machines/{id}/stop`.
async fn stop(
    State(state): Shared,
    Path((_app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let agent = {
        let mut s = state.lock().unwrap();
        let Some(machine) = s.machines.get_mut(&id) else {
            return error(StatusCode::NOT_FOUND, "machine not found");
        };
        machine.state = "stopped".into();
        machine.agent.take()
    };
    if let Some(child) = agent {
        tokio::task::spawn_blocking(move || stop_child(child))
            .await
            .unwrap();
    }
    axum::Json(json!({"ok": true})).into_response()
}

async fn list(
    State(state): Shared,
    Path(app): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let s = state.lock().unwrap();
    let machines: Vec<Value> = s
        .machines
        .values()
        .filter(|m| m.app == app)
        .filter(|m| {
            query
                .iter()
                .all(|(k, v)| match k.strip_prefix("metadata.") {
                    Some(key) => m.config["metadata"][key].as_str() == Some(v.as_str()),
                    None => true,
                })
        })
        .map(FakeMachine::json)
        .collect();
    axum::Json(machines).into_response()
}

async fn one(
    State(state): Shared,
    Path((_app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    match state.lock().unwrap().machines.get(&id) {
        Some(m) => axum::Json(m.json()).into_response(),
        None => error(StatusCode::NOT_FOUND, "machine not found"),
    }
}

async fn wait(
    State(state): Shared,
    Path((_app, id)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let want = query
        .get("state")
        .cloned()
        .unwrap_or_else(|| "started".into());
    let timeout: u64 = query
        .get("timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(60);
    let end = Instant::now() + Duration::from_secs(timeout.min(60));
    loop {
        match state
            .lock()
            .unwrap()
            .machines
            .get(&id)
            .map(|m| m.state.clone())
        {
            None => return error(StatusCode::NOT_FOUND, "machine not found"),
            Some(current) if current == want => {
                return axum::Json(json!({"ok": true})).into_response();
            }
            Some(_) => {}
        }
        if Instant::now() >= end {
            return error(StatusCode::REQUEST_TIMEOUT, "timed out waiting for machine");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn destroy(
    State(state): Shared,
    Path((_app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let machine = state.lock().unwrap().machines.remove(&id);
    match machine {
        Some(mut machine) => {
            tokio::task::spawn_blocking(move || stop_agent(&mut machine))
                .await
                .unwrap();
            axum::Json(json!({"ok": true})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "machine not found"),
    }
}
