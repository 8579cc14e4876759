//! The Fly test server's app and platform endpoints, for `liveload doctor`: the app
//! (`GET /apps/APP`), its IP assignments and the platform's regions, shaped as Fly's
//! published spec says (the contract test checks liveload's requests against it with Prism).
//!
//! Apps are made up by name, so tests can ask for a setup that is wrong on purpose: an app
//! whose name starts with `missing` does not exist, one starting with `noips` has no IPs.

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Shared, authorized, error};

/// The regions the server lists; `xyz` is deprecated.
pub const REGIONS: &[&str] = &["ams", "fra", "iad", "lhr", "nrt", "ord", "sjc", "syd"];

pub(super) async fn app(state: Shared, Path(app): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&state.0, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if app.starts_with("missing") {
        return error(StatusCode::NOT_FOUND, "app not found");
    }
    axum::Json(json!({
        "id": app, "name": app, "status": "deployed", "machine_count": 0,
        "organization": {"name": "Test", "slug": "test"}
    }))
    .into_response()
}

pub(super) async fn ip_assignments(
    state: Shared,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state.0, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let ips = if app.starts_with("noips") {
        json!([])
    } else {
        json!([
            {"ip": "66.241.124.10", "region": "global", "service_name": "", "shared": true},
            {"ip": "2a09:8280:1::1", "region": "global", "service_name": "", "shared": false}
        ])
    };
    axum::Json(json!({ "ips": ips })).into_response()
}

pub(super) async fn regions(state: Shared, headers: HeaderMap) -> Response {
    if !authorized(&state.0, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut rows: Vec<_> = REGIONS
        .iter()
        .map(|code| json!({"code": code, "name": code, "deprecated": false}))
        .collect();
    rows.push(json!({"code": "xyz", "name": "retired", "deprecated": true}));
    axum::Json(json!({ "nearest": "fra", "regions": rows })).into_response()
}
