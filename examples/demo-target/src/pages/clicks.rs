//! `/clicks`: a counter button built the way server-driven UI component libraries build them
//! (Quasar/Vue under NiceGUI, htmx, LiveView), for proving that no click is lost.
//!
//! What makes it hard for a careless click, every piece taken from real libraries:
//! - **A ripple**: each press adds a `.q-ripple` element inside the button that grows and fades
//!   (Quasar's markup and timings); the ripple ignores the pointer, like Quasar's.
//! - **A socket that connects after the page loads** (`window.socket.connected`), and clicks
//!   made before it are dropped, as frameworks whose event channel is the socket drop them.
//! - **Server-rendered labels**: the server answers every click with the new count and label,
//!   and the page *replaces* the button's content element with the new one (an htmx
//!   `outerHTML` swap); another label (`#clock`) is re-rendered from the server every second.
//! - **An in-flight overlay**: while a click is being handled, a `.q-inner-loading` veil covers
//!   the card (Quasar's `QInnerLoading`); a click landing on it does nothing, as in the real
//!   component.
//!
//! The server counts every click it receives: `GET /clicks/total` is the sum over all page
//! sessions since the target started, which a test compares with the clicks liveload reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{Html, IntoResponse};
use axum::routing::get;

/// `GET /clicks`.
pub(crate) const CLICKS: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Clicks</title>
<style>
  body { font-family: sans-serif; margin: 2rem; }
  .q-card { position: relative; display: inline-block; padding: 1.5rem 2rem; border: 1px solid #ddd; border-radius: 4px; }
  .q-btn { position: relative; overflow: hidden; padding: .5rem 1.2rem; font-size: 1rem; border: 0; border-radius: 3px;
           background: #1976d2; color: #fff; cursor: pointer; outline: 0; }
  .q-focus-helper { position: absolute; inset: 0; border-radius: inherit; opacity: 0; pointer-events: none;
                    transition: background-color .3s, opacity .4s cubic-bezier(.25,.8,.5,1); }
  .q-btn:hover .q-focus-helper { background: currentColor; opacity: .15; }
  .q-btn__content { position: relative; z-index: 0; display: inline-flex; align-items: center; }
  .q-ripple { position: absolute; inset: 0; overflow: hidden; border-radius: inherit; pointer-events: none; color: inherit; z-index: 0; }
  .q-ripple__inner { position: absolute; top: 0; left: 0; border-radius: 50%; background: currentColor; opacity: 0;
                     pointer-events: none; will-change: transform, opacity; }
  .q-ripple__inner--enter { transition: transform .225s cubic-bezier(.4,0,.2,1), opacity .1s cubic-bezier(.4,0,.2,1); }
  .q-ripple__inner--leave { transition: opacity .25s cubic-bezier(.4,0,.2,1); }
  .q-inner-loading { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
                     background: rgba(255,255,255,.6); }
  .q-inner-loading[hidden] { display: none; }
</style>
</head>
<body>
<div class="q-card">
  <p id="status">connecting…</p>
  <p><span id="clock">server time 0</span></p>
  <button id="inc" class="q-btn" type="button"><span class="q-focus-helper"></span><span class="q-btn__content"><span class="block">Clicked 0</span></span></button>
  <p id="count">count 0</p>
  <div class="q-inner-loading" hidden>saving…</div>
</div>
<script>
  const button = document.getElementById("inc");
  const veil = document.querySelector(".q-inner-loading");
  let pending = 0;

  // Quasar's ripple: a circle that starts at the pointer, grows to cover the button, fades out.
  button.addEventListener("pointerdown", (e) => {
    const box = button.getBoundingClientRect();
    const diameter = 2 * Math.hypot(box.width, box.height);
    const ripple = document.createElement("span");
    ripple.className = "q-ripple";
    const inner = document.createElement("span");
    inner.className = "q-ripple__inner";
    inner.style.width = inner.style.height = diameter + "px";
    const x = e.clientX - box.left - diameter / 2, y = e.clientY - box.top - diameter / 2;
    inner.style.transform = `translate3d(${x}px,${y}px,0) scale3d(.2,.2,1)`;
    ripple.appendChild(inner);
    button.appendChild(ripple);
    requestAnimationFrame(() => {
      inner.classList.add("q-ripple__inner--enter");
      inner.style.transform = `translate3d(${(box.width - diameter) / 2}px,${(box.height - diameter) / 2}px,0) scale3d(1,1,1)`;
      inner.style.opacity = ".2";
      setTimeout(() => {
        inner.classList.remove("q-ripple__inner--enter");
        inner.classList.add("q-ripple__inner--leave");
        inner.style.opacity = "0";
        setTimeout(() => ripple.remove(), 275);
      }, 250);
    });
  });

  // The server's rendering of an element replaces the old node (an outerHTML swap).
  const render = (label) => {
    const content = document.createElement("span");
    content.className = "q-btn__content";
    content.innerHTML = '<span class="block"></span>';
    content.firstChild.textContent = label;
    button.querySelector(".q-btn__content").replaceWith(content);
  };
  const renderClock = (seconds) => {
    const clock = document.createElement("span");
    clock.id = "clock";
    clock.textContent = "server time " + seconds;
    document.getElementById("clock").replaceWith(clock);
  };

  // The event channel connects only after the page has loaded; until then clicks go nowhere.
  window.socket = { connected: false };
  window.addEventListener("load", () => setTimeout(() => {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/clicks/live");
    ws.onopen = () => { window.socket = { connected: true, ws }; document.getElementById("status").textContent = "connected"; };
    ws.onclose = () => { window.socket = { connected: false }; };
    ws.onmessage = (event) => {
      const data = JSON.parse(event.data);
      if (data.count !== undefined) {
        render(data.label);
        document.getElementById("count").textContent = "count " + data.count;
        pending = Math.max(0, pending - 1);
        if (pending === 0) veil.hidden = true;
      }
      if (data.clock !== undefined) renderClock(data.clock);
    };
  }, 150 + Math.random() * 150));

  button.addEventListener("click", () => {
    if (!window.socket.connected) return;
    pending += 1;
    veil.hidden = false;
    window.socket.ws.send("click");
  });
</script>
</body>
</html>
"#;

/// Clicks received since the target started, over every page session.
#[derive(Default)]
struct Clicks {
    total: AtomicU64,
}

/// `/clicks`, its socket `/clicks/live`, and the server's count `/clicks/total`.
pub(crate) fn routes() -> Router {
    let clicks = Arc::new(Clicks::default());
    Router::new()
        .route("/clicks", get(|| async { Html(CLICKS) }))
        .route("/clicks/live", get(live))
        .route(
            "/clicks/total",
            get(|State(clicks): State<Arc<Clicks>>| async move {
                clicks.total.load(Ordering::SeqCst).to_string()
            }),
        )
        .with_state(clicks)
}

/// `GET /clicks/live`: one page session's socket.
async fn live(State(clicks): State<Arc<Clicks>>, upgrade: WebSocketUpgrade) -> impl IntoResponse {
    upgrade.on_upgrade(move |socket| session(socket, clicks))
}

/// Count this session's clicks, answer each with the new count and label after a short,
/// server-like pause, and send the clock every second.
async fn session(mut socket: WebSocket, clicks: Arc<Clicks>) {
    let mut count: u64 = 0;
    let mut clock = tokio::time::interval(Duration::from_secs(1));
    let mut seconds: u64 = 0;
    clock.tick().await; // The first tick is immediate; the page already shows 0.
    loop {
        let reply = tokio::select! {
            _ = clock.tick() => {
                seconds += 1;
                serde_json::json!({ "clock": seconds })
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) if text.as_str() == "click" => {
                    count += 1;
                    clicks.total.fetch_add(1, Ordering::SeqCst);
                    // Handling takes a moment, as a real server's would (the veil stays up).
                    let pause = 20 + (count * 17 + 13) % 40;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    serde_json::json!({ "count": count, "label": format!("Clicked {count}") })
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        };
        if socket.send(Message::text(reply.to_string())).await.is_err() {
            return;
        }
    }
}
