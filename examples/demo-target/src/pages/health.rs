//! `/health`: `ok`, for whoever waits for the target to be up (scripts, containers) without
//! loading a page.

use axum::Router;
use axum::routing::get;

/// `/health`.
pub(crate) fn routes() -> Router {
    Router::new().route("/health", get(|| async { "ok" }))
}
