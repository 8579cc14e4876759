//! `/`: the live counter page, its WebSocket `/live` and its two forms (`/submit`, and the live
//! form that submits over the socket). This is the page the end-to-end tests load: its element
//! ids, classes and timings are what their scenarios click, type into and wait for.

use std::time::Duration;

use axum::Router;
use axum::extract::Form;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use serde::Deserialize;

/// `GET /`: opens the WebSocket, marks `<body>` with `phx-connected` once it is open, rewrites
/// `#ticks` on every push; `#live-form` carries `phx-submit-loading` until the socket answers,
/// like a LiveView `phx-submit` form.
pub(crate) const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>liveload demo target</title>
<style>
  body { font-family: sans-serif; margin: 2rem; }
  .phx-connected #status { color: green; }
  .phx-submit-loading { opacity: 0.5; }
</style>
</head>
<body>
<h1>Live counter</h1>
<p id="status">connecting…</p>
<p id="flash">Welcome! (this note hides itself)</p>
<p>Server ticks: <span id="ticks">0</span></p>
<ul id="items"><li class="item">one</li><li class="item">two</li><li class="item">three</li></ul>
<p><span id="hover-target">hover me</span> <span id="hover-state"></span></p>
<p><a id="about-link" href="/about">About</a></p>
<form id="signup" method="post" action="/submit">
  <label>Name <input id="name" name="name" type="text"></label>
  <span id="focus-state"></span> <span id="last-key"></span>
  <label><input id="agree" name="agree" type="checkbox" value="yes"> I agree</label>
  <select id="plan" name="plan"><option value="free">Free</option><option value="pro">Pro</option></select>
  <button id="send" type="submit">Send</button>
</form>
<form id="live-form">
  <input id="live-name" name="live-name" type="text" value="live user">
  <button id="live-save" type="submit">Save live</button>
</form>
<p id="live-result"></p>
<script>
  const $ = (id) => document.getElementById(id);
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live");
  ws.onopen = () => {
    document.body.classList.add("phx-connected");
    $("status").textContent = "connected";
  };
  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.tick !== undefined) {
      $("ticks").textContent = String(data.tick);
      $("ticks").setAttribute("data-count", String(data.tick));
    }
    if (data.saved !== undefined) {
      window.dispatchEvent(new CustomEvent("phx:page-loading-stop"));
      $("live-form").classList.remove("phx-submit-loading");
      $("live-result").textContent = "Saved " + data.saved;
    }
  };
  ws.onclose = () => document.body.classList.remove("phx-connected");
  setTimeout(() => { $("flash").style.display = "none"; }, 300);
  $("hover-target").addEventListener("mouseover", () => { $("hover-state").textContent = "hovered"; });
  $("name").addEventListener("focus", () => { $("focus-state").textContent = "focused"; });
  $("name").addEventListener("blur", () => { $("focus-state").textContent = "blurred"; });
  $("name").addEventListener("keydown", (e) => {
    $("last-key").textContent = "key " + e.key;
    if (e.key === "Enter") e.preventDefault();
  });
  // Like a LiveView phx-submit form: loading class until the server answers on the socket.
  $("live-form").addEventListener("submit", (e) => {
    e.preventDefault();
    $("live-result").textContent = "";
    $("live-form").classList.add("phx-submit-loading");
    window.dispatchEvent(new CustomEvent("phx:page-loading-start"));
    ws.send(JSON.stringify({ submit: $("live-name").value }));
  });
</script>
</body>
</html>
"#;

/// `/`, `/live` and `/submit`.
pub(crate) fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/live", get(live))
        .route("/submit", post(submit))
}

/// `GET /live`: the page's WebSocket.
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
                Some(Ok(Message::Text(text))) => {
                    // A live form submission: answer after a short, server-like pause.
                    if let Ok(Submit { submit }) = serde_json::from_str::<Submit>(&text) {
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        let name: String = submit.chars().filter(|c| c.is_alphanumeric() || *c == ' ').collect();
                        let reply = serde_json::json!({ "saved": name }).to_string();
                        if socket.send(Message::text(reply)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// A live form submission on the socket: `{"submit": name}`.
#[derive(Deserialize)]
struct Submit {
    submit: String,
}

/// The `#signup` form's fields that the answer uses.
#[derive(Deserialize)]
struct Signup {
    name: String,
}

/// `POST /submit`: a page thanking the submitted name, kept to letters, digits, spaces and
/// `-` so the answer never echoes markup.
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
