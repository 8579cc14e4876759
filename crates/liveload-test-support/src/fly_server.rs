//! A stateful Fly Machines test server: the endpoints and shapes liveload uses, with real
//! machines behind them — each created machine gets its own loopback address (127.0.X.Y) and a
//! real `liveload-agent` started from the machine's `config.env`, listening there.
//!
//! It holds what a spec-validating mock cannot: machines that exist, start and go away. It also
//! counts requests and can answer 429 with `Retry-After`, lose a create's response (the machine
//! is made, the answer is a 502), and boot slowly (app names starting with `slow`).
//!
//! Next to the API it runs an **edge** like Fly's proxy for public mode: it terminates TLS with
//! a certificate for [`EDGE_NAME`] from its own CA, reads the request head, and hands the
//! connection to the machine named by `fly-force-instance-id` — only if that machine's config
//! exposes the agent port as a `tls`+`http` service, as Fly's proxy requires.

use crate::free_port;
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

mod platform;
pub use platform::REGIONS;

/// The token the server accepts.
pub const TOKEN: &str = "fly-test-token-0123456789abcdef";

/// One machine.
pub struct FakeMachine {
    /// Its id (`e...`).
    pub id: String,
    /// Its name (liveload names machines `ll-<run>-<index>`).
    pub name: String,
    /// The app it belongs to.
    pub app: String,
    /// `created`, `started` or `stopped`.
    pub state: String,
    /// Its loopback address, standing in for Fly's private IPv6.
    pub private_ip: String,
    /// The config it was created (or last updated) with, as sent.
    pub config: Value,
    /// The real agent running for it, if started.
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
    /// Every machine that exists, by id.
    pub machines: BTreeMap<String, FakeMachine>,
    /// The counter machine ids and addresses come from.
    pub next: u32,
    /// The agent executable machines run.
    pub agent_bin: std::path::PathBuf,
    /// The port agents listen on inside their machines.
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
    /// Connections the edge handed to a machine.
    pub edge_connections: u32,
}

/// The name on the edge's certificate (Fly's would be `APP.fly.dev`).
pub const EDGE_NAME: &str = "liveload-test.fly.dev";

/// A running test server.
pub struct FlyServer {
    /// The API's base URL (what `--fly-api-url` takes).
    pub url: String,
    /// What the server remembers; tests read and tune it.
    pub state: Arc<Mutex<ServerState>>,
    /// The edge's `host:port`.
    pub edge: String,
    /// The CA that signed the edge's certificate, PEM.
    pub edge_ca_pem: String,
}

impl FlyServer {
    /// Public mode through this server's edge.
    pub fn public_reach(&self) -> liveload_fly::Reach {
        liveload_fly::Reach::Public(liveload_fly::PublicEdge {
            address: Some(self.edge.clone()),
            server_name: Some(EDGE_NAME.into()),
            extra_roots_pem: vec![self.edge_ca_pem.clone()],
        })
    }
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
    let group = rustix::process::Pid::from_raw(child.id() as i32).expect("a child pid");
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = child.wait();
}

/// Start the server on a free port.
pub async fn start() -> FlyServer {
    let state = Arc::new(Mutex::new(ServerState {
        agent_bin: liveload_core::agent_bin::find().expect("liveload-agent is built"),
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
        .route("/apps/{app}", get(platform::app))
        .route("/apps/{app}/ip_assignments", get(platform::ip_assignments))
        .route("/platform/regions", get(platform::regions))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let (edge, edge_ca_pem) = start_edge(state.clone()).await;
    FlyServer {
        url: format!("http://{address}"),
        state,
        edge,
        edge_ca_pem,
    }
}

/// Start the edge on a free port; returns its address and its CA certificate.
async fn start_edge(state: Arc<Mutex<ServerState>>) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![EDGE_NAME.to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, state) = (acceptor.clone(), state.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = route(tls, state).await;
                }
            });
        }
    });
    (address, ca.pem())
}

/// Read one request head and splice the connection to the machine it names.
async fn route<S>(mut client: S, state: Arc<Mutex<ServerState>>) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let instance = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("fly-force-instance-id")
            .then(|| value.trim().to_string())
    });
    let target = {
        let mut s = state.lock().unwrap();
        let target = instance
            .as_ref()
            .and_then(|id| s.machines.get(id))
            .filter(|m| m.state == "started" && exposes(&m.config, s.agent_port))
            .map(|m| format!("{}:{}", m.private_ip, s.agent_port));
        s.edge_connections += u32::from(target.is_some());
        target
    };
    let answer = |status: &str| format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
    let Some(target) = target else {
        client.write_all(answer("404 Not Found").as_bytes()).await?;
        return Ok(());
    };
    let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
        client
            .write_all(answer("502 Bad Gateway").as_bytes())
            .await?;
        return Ok(());
    };
    upstream.write_all(&head).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Does a machine config expose `port` through the edge the way Fly's proxy needs it?
fn exposes(config: &Value, port: u16) -> bool {
    config["services"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|service| {
            service["internal_port"].as_u64() == Some(u64::from(port))
                && service["ports"].as_array().into_iter().flatten().any(|p| {
                    let handlers: Vec<&str> = p["handlers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    handlers.contains(&"tls") && handlers.contains(&"http")
                })
        })
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
    // 127.0.0.0/8 is all loopback: 250 machines per third octet, never two on one address.
    let ip = format!("127.0.{}.{}", n / 250 % 256, n % 250 + 2);
    let config = body["config"].clone();
    let slow = app.starts_with("slow");
    let stopped = body["skip_launch"].as_bool() == Some(true);
    let agent = if slow || stopped {
        None
    } else {
        Some(spawn_agent(&s, &id, &config, &ip))
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

/// Start a real agent for a machine, configured from its `config.env` and `config.files` (the
/// files go to a directory of this machine's own instead of the image's launch directory).
fn spawn_agent(s: &ServerState, id: &str, config: &Value, ip: &str) -> Child {
    use base64::Engine as _;
    let dir = std::env::temp_dir()
        .join(format!("liveload-fly-machines-{}", std::process::id()))
        .join(id);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a machine directory");
    for file in config["files"].as_array().into_iter().flatten() {
        let path = file["guest_path"].as_str().unwrap_or_default();
        let name = path.rsplit('/').next().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(file["raw_value"].as_str().unwrap_or_default())
            .expect("files are base64");
        std::fs::write(dir.join(name), bytes).expect("a machine file");
    }
    let mut command = Command::new(&s.agent_bin);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in config["env"].as_object().into_iter().flatten() {
        let value = value.as_str().unwrap_or_default();
        let value = match value.strip_prefix(liveload_fly::LAUNCH_DIR) {
            Some(rest) => format!("{}{rest}", dir.display()),
            None => value.to_string(),
        };
        command.env(key, value);
    }
    // Inside a real machine the agent listens on all addresses; here, on its own loopback one.
    command.env(
        liveload_core::launch::var::LISTEN,
        format!("{ip}:{}", s.agent_port),
    );
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
    let agent = launch.then(|| spawn_agent(&s, &id, &config, &ip));
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
