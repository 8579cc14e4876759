//! `/probe`: a page that makes a known amount of traffic, and a server that counts what it
//! served, so tests can check liveload's metrics against the other side of the wire.
//!
//! One visit of `/probe`: the document (200), `fetch`es of `/probe/ok` twice (200),
//! `/probe/missing` (404) and `/probe/fail` (500), then a WebSocket to `/probe/ws` on which the
//! server sends a greeting, the page sends 3 frames and the server answers each; once the 4
//! frames are in, the page closes the socket, logs one `console.error`, throws one uncaught
//! exception, and marks `<body class="done">`. `GET /probe/stats` answers the server's counts
//! as JSON (its own request to it is not counted).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

/// `GET /probe`.
pub(crate) const PROBE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Probe</title>
<link rel="icon" href="data:,"></head>
<body><p id="state">loading</p>
<script>
(async () => {
  for (const path of ["/probe/ok", "/probe/ok", "/probe/missing", "/probe/fail"]) {
    await fetch(path).then(r => r.text());
  }
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/probe/ws";
  const socket = new WebSocket(url);
  let received = 0;
  socket.onopen = () => { for (let i = 0; i < 3; i++) socket.send("frame " + i); };
  socket.onmessage = () => {
    received += 1;
    if (received < 4) return;
    socket.close();
    console.error("probe: one console error");
    document.getElementById("state").textContent = "done";
    document.body.className = "done";
    setTimeout(() => { throw new Error("probe: one uncaught exception"); }, 0);
  };
})();
</script></body></html>
"#;

/// What the server served since it started.
#[derive(Default)]
struct Served {
    documents: AtomicU64,
    ok: AtomicU64,
    missing: AtomicU64,
    fail: AtomicU64,
    sockets: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
}

/// `/probe` and its helpers.
pub(crate) fn routes() -> Router {
    let served = Arc::new(Served::default());
    let count = |field: fn(&Served) -> &AtomicU64| {
        move |State(served): State<Arc<Served>>| async move {
            field(&served).fetch_add(1, Ordering::SeqCst);
        }
    };
    Router::new()
        .route(
            "/probe",
            get(|State(served): State<Arc<Served>>| async move {
                served.documents.fetch_add(1, Ordering::SeqCst);
                Html(PROBE)
            }),
        )
        .route("/probe/ok", get(count(|s| &s.ok)))
        .route(
            "/probe/missing",
            get(|State(served): State<Arc<Served>>| async move {
                served.missing.fetch_add(1, Ordering::SeqCst);
                StatusCode::NOT_FOUND
            }),
        )
        .route(
            "/probe/fail",
            get(|State(served): State<Arc<Served>>| async move {
                served.fail.fetch_add(1, Ordering::SeqCst);
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .route("/probe/ws", get(socket))
        .route("/probe/stats", get(stats))
        .with_state(served)
}

/// `GET /probe/stats`: the counts, as JSON.
async fn stats(State(served): State<Arc<Served>>) -> impl IntoResponse {
    let n = |a: &AtomicU64| a.load(Ordering::SeqCst);
    axum::Json(serde_json::json!({
        "documents": n(&served.documents),
        "ok": n(&served.ok),
        "missing": n(&served.missing),
        "fail": n(&served.fail),
        "sockets": n(&served.sockets),
        "frames_in": n(&served.frames_in),
        "frames_out": n(&served.frames_out),
    }))
}

/// `GET /probe/ws`.
async fn socket(State(served): State<Arc<Served>>, upgrade: WebSocketUpgrade) -> impl IntoResponse {
    upgrade.on_upgrade(move |socket| session(socket, served))
}

/// Greet, then answer every text frame, until the page closes the socket.
async fn session(mut socket: WebSocket, served: Arc<Served>) {
    served.sockets.fetch_add(1, Ordering::SeqCst);
    let send = |text: &str| {
        served.frames_out.fetch_add(1, Ordering::SeqCst);
        Message::text(text.to_string())
    };
    let hello = send("hello");
    if socket.send(hello).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            Message::Text(_) => {
                served.frames_in.fetch_add(1, Ordering::SeqCst);
                let ack = send("ack");
                if socket.send(ack).await.is_err() {
                    return;
                }
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}
