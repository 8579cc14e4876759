//! `/lv`: a LiveView application's wire protocol, spoken faithfully enough that Phoenix's own
//! JavaScript client (`phoenix` and `phoenix_live_view` from npm) runs against it, so the
//! browser engine and liveload's native LiveView client (`engine: liveview`) can be tested
//! against one server.
//!
//! Written from Phoenix's documentation (the channel message format, `Phoenix.LiveView`'s
//! lifecycle) and from the JS client's source (`phoenix_live_view` 1.2: `view.ts` for the
//! join payload and the `event`/`live_patch` pushes, `rendered.js` for the diff format); no
//! Phoenix code is copied. What it serves:
//!
//! - `GET /lv` (`?page=N`) and `GET /lv/other`: the page, with `<meta name="csrf-token">` and
//!   a main element carrying `id`, `data-phx-main`, `data-phx-session` and `data-phx-static`,
//!   rendered once statically like Phoenix's dead render, plus the two scripts and the lines
//!   that boot a `LiveSocket` at `/live`. The page sets a session cookie; the socket and the
//!   join check that the CSRF token and the session token belong to it (as Phoenix's
//!   `check_origin`/session signing would refuse a client that drops either).
//! - `GET /live/websocket?_csrf_token=..&vsn=2.0.0`: the socket (see [`channel`]).
//! - `GET /lv/assets/{phoenix,phoenix_live_view}.js`: the npm packages' browser builds, read
//!   from the directory in `LIVELOAD_PHOENIX_JS` (default `.tools/phoenix-js/node_modules` at
//!   the repository's root, where the test command installs them); 404 with a hint when
//!   absent. Never copied into the repository.
//! - `GET /lv/stats`: what the server did, as JSON (`joins`, `clicks`, `saves`, `changes`,
//!   `patches`, `leaves`, `heartbeats`): the server-side effects a browser user and a protocol
//!   user must both cause.

mod channel;
mod render;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

/// The `phoenix_live_view` version the server claims in its join replies (the JS client
/// warns on a mismatch) and the test command installs.
pub(crate) const LIVEVIEW_VERSION: &str = "1.2.12";

/// What the server did, counted across every socket of this app.
#[derive(Default)]
pub(crate) struct Stats {
    sessions: AtomicU64,
    joins: AtomicU64,
    clicks: AtomicU64,
    saves: AtomicU64,
    changes: AtomicU64,
    patches: AtomicU64,
    leaves: AtomicU64,
    heartbeats: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The session cookie's name.
const COOKIE: &str = "_demo_lv";

/// The CSRF token of session `sid` (the page's meta tag; the socket must send it).
fn csrf_token(sid: u64) -> String {
    format!("csrf{sid:x}z{:x}", sid.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The signed-session stand-in of view `id` in session `sid` (`data-phx-session`).
fn session_token(id: &str, sid: u64) -> String {
    format!("SFMyNTY.{id}.{sid}")
}

/// The session id in the request's cookie.
fn session_of(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

const PAGE_HEAD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>LiveView demo</title>
<meta name="csrf-token" content="{csrf}">
<script defer src="/lv/assets/phoenix.js"></script>
<script defer src="/lv/assets/phoenix_live_view.js"></script>
<script>
  window.addEventListener("DOMContentLoaded", () => {
    if (!window.Phoenix || !window.LiveView) { return; }
    const token = document.querySelector("meta[name='csrf-token']").getAttribute("content");
    window.liveSocket = new LiveView.LiveSocket("/live", Phoenix.Socket, {params: {_csrf_token: token}});
    window.liveSocket.connect();
  });
</script>
</head><body>
"#;

/// The full page of the view at `path` for session `sid`: the dead render inside the main
/// element.
fn page(path: &str, sid: u64, id: &str) -> String {
    let view = render::View::mount(path, 0);
    let html = render::to_html(&view.rendered());
    let head = PAGE_HEAD.replace("{csrf}", &csrf_token(sid));
    format!(
        "{head}<div id=\"{id}\" data-phx-main data-phx-session=\"{session}\" \
         data-phx-static=\"SFMyNTY.static\">{html}</div>\n</body></html>\n",
        session = session_token(id, sid),
    )
}

/// `GET /lv` and `GET /lv/other`: a new session (cookie) and view id for every load, as a
/// Phoenix app gives each dead render.
async fn load(
    State(stats): State<Arc<Stats>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let sid = session_of(&headers).unwrap_or_else(|| Stats::bump(&stats.sessions));
    let id = format!("phx-F{:x}", Stats::bump(&stats.sessions));
    let path = uri.path_and_query().map_or("/lv", |p| p.as_str());
    let cookie = format!("{COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax");
    ([(header::SET_COOKIE, cookie)], Html(page(path, sid, &id))).into_response()
}

#[derive(serde::Deserialize)]
struct SocketQuery {
    #[serde(rename = "_csrf_token")]
    csrf: Option<String>,
    vsn: Option<String>,
}

/// `GET /live/websocket`: refused (403) without the session cookie and its CSRF token, or
/// with a serializer other than 2.0.0.
async fn socket(
    State(stats): State<Arc<Stats>>,
    Query(query): Query<SocketQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(sid) = session_of(&headers) else {
        return (StatusCode::FORBIDDEN, "no session cookie").into_response();
    };
    if query.csrf.as_deref() != Some(csrf_token(sid).as_str()) {
        return (StatusCode::FORBIDDEN, "invalid CSRF token").into_response();
    }
    if query.vsn.as_deref() != Some("2.0.0") {
        return (StatusCode::BAD_REQUEST, "vsn=2.0.0 expected").into_response();
    }
    upgrade.on_upgrade(move |ws| channel::serve(ws, sid, stats))
}

/// `GET /lv/stats`.
async fn stats(State(stats): State<Arc<Stats>>) -> Json<serde_json::Value> {
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Json(json!({
        "joins": n(&stats.joins),
        "clicks": n(&stats.clicks),
        "saves": n(&stats.saves),
        "changes": n(&stats.changes),
        "patches": n(&stats.patches),
        "leaves": n(&stats.leaves),
        "heartbeats": n(&stats.heartbeats),
    }))
}

/// Where the npm packages are: `LIVELOAD_PHOENIX_JS`, else the test command's install.
fn assets_dir() -> PathBuf {
    std::env::var_os("LIVELOAD_PHOENIX_JS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/phoenix-js/node_modules"),
        PathBuf::from,
    )
}

/// `GET /lv/assets/{name}`: one of the two browser builds.
async fn asset(Path(name): Path<String>) -> Response {
    let file = match name.as_str() {
        "phoenix.js" => "phoenix/priv/static/phoenix.min.js",
        "phoenix_live_view.js" => "phoenix_live_view/priv/static/phoenix_live_view.min.js",
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let path = assets_dir().join(file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/javascript")], bytes).into_response(),
        Err(_) => (
            StatusCode::NOT_FOUND,
            format!(
                "{} not found: install the npm packages phoenix and phoenix_live_view@{LIVELOAD} \
                 (scripts/ensure-deps.sh: ensure_phoenix_js) or set LIVELOAD_PHOENIX_JS",
                path.display(),
                LIVELOAD = LIVEVIEW_VERSION,
            ),
        )
            .into_response(),
    }
}

/// The LiveView routes, with their own counters.
pub(crate) fn routes() -> Router {
    Router::new()
        .route("/lv", get(load))
        .route("/lv/other", get(load))
        .route("/lv/stats", get(stats))
        .route("/lv/assets/{name}", get(asset))
        .route("/live/websocket", get(socket))
        .with_state(Arc::new(Stats::default()))
}
