//! The web dashboard: one page shell and one script, embedded in the binary (no CDN, no
//! third-party JavaScript, nothing built with Node). The script reads the API with the
//! session cookie the login form sets, and follows a running run through its SSE stream.
//!
//! Pages (all the same shell; the script draws the one its path names):
//! `/` the history with verdicts, `/runs/{id}` a run live (users, iterations/s, step p95,
//! errors, per-node health; the report once it ends), `/compare?a=ID&b=ID` two runs side by
//! side, `/start` a form to start a stored scenario, `/login`.
//!
//! The shell holds no data, so it is served without a token; everything it shows comes from
//! the authenticated API. Its Content-Security-Policy allows only this server's own script
//! and styles, so even a scenario name crafted as markup could not run code (the script also
//! only ever sets `textContent`).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const SHELL: &str = include_str!("shell.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// The policy every dashboard response carries.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-src 'self'; form-action 'self'; \
    frame-ancestors 'self'; base-uri 'none'";

async fn shell() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SHELL,
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

/// The dashboard's routes.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(shell))
        .route("/login", get(shell))
        .route("/start", get(shell))
        .route("/compare", get(shell))
        .route("/runs/{id}", get(shell))
        .route("/assets/app.js", get(script))
        .route("/assets/app.css", get(style))
}
