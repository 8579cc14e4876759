//! The demo target: a small web app shaped like a Phoenix LiveView page, for liveload's demo
//! and tests.
//!
//! - `GET /` — a page that opens a WebSocket, marks `<body>` with `phx-connected` once it is
//!   open, and rewrites `#ticks` every second from server pushes; plus a form.
//! - `GET /live` — the WebSocket: one `{"tick": n}` text frame a second.
//! - `POST /submit` — the form's target; answers with a page showing the submitted name.
//! - `GET /health` — `ok`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Form;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use serde::Deserialize;

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>liveload demo target</title>
<style>
  body { font-family: sans-serif; margin: 2rem; }
  .phx-connected #status { color: green; }
</style>
</head>
<body>
<h1>Live counter</h1>
<p id="status">connecting…</p>
<p>Server ticks: <span id="ticks">0</span></p>
<form id="signup" method="post" action="/submit">
  <label>Name <input id="name" name="name" type="text"></label>
  <label><input id="agree" name="agree" type="checkbox" value="yes"> I agree</label>
  <select id="plan" name="plan"><option value="free">Free</option><option value="pro">Pro</option></select>
  <button id="send" type="submit">Send</button>
</form>
<script>
  const ticks = document.getElementById("ticks");
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live");
  ws.onopen = () => {
    document.body.classList.add("phx-connected");
    document.getElementById("status").textContent = "connected";
  };
  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    ticks.textContent = String(data.tick);
    ticks.setAttribute("data-count", String(data.tick));
  };
  ws.onclose = () => document.body.classList.remove("phx-connected");
</script>
</body>
</html>
"#;

/// The app's routes.
pub fn app() -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/live", get(live))
        .route("/submit", post(submit))
        .route("/health", get(|| async { "ok" }))
}

async fn live(upgrade: WebSocketUpgrade) -> impl IntoResponse {
    upgrade.on_upgrade(push_ticks)
}

/// Push a tick every second until the browser goes away.
async fn push_ticks(mut socket: WebSocket) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let mut tick: u64 = 0;
    loop {
        tokio::select! {
            _ = interval.tick() => {
                tick += 1;
                if socket.send(Message::text(format!("{{\"tick\":{tick}}}"))).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[derive(Deserialize)]
struct Signup {
    name: String,
}

async fn submit(Form(signup): Form<Signup>) -> Html<String> {
    let name: String = signup
        .name
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
        .collect();
    Html(format!(
        "<!doctype html><html><body><h1 id=\"thanks\">Thanks, {name}!</h1><a href=\"/\">back</a></body></html>"
    ))
}

/// Serve the app on `addr` (port 0 picks a free port). Returns the bound address; the server
/// runs on the current tokio runtime until it is dropped with it.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app()).await;
    });
    Ok(bound)
}
