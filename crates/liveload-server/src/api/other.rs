//! The server-wide routes: nodes, Prometheus metrics, backends, stored scenarios, and the
//! dashboard's session cookie.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{AppState, error_response, refuse, store_failed};
use crate::auth::{self, COOKIE};
use crate::control::{self, ErrorBody};

/// The nodes one backend holds.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodesOfBackend {
    /// The backend.
    pub backend: String,
    /// Its nodes (every run's), when it could list them.
    #[schema(value_type = Vec<Object>)]
    pub nodes: Vec<serde_json::Value>,
    /// Why it could not, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every node the server's backends hold, by backend (each node names its run).
#[utoipa::path(get, path = "/nodes", tag = "server",
    responses((status = 200, body = Vec<NodesOfBackend>), (status = 401, body = ErrorBody)))]
pub(super) async fn list_nodes(State(state): State<AppState>) -> Response {
    let listed = state.runs.nodes().await;
    let view: Vec<NodesOfBackend> = listed
        .into_iter()
        .map(|(backend, nodes)| match nodes {
            Ok(nodes) => NodesOfBackend {
                backend,
                nodes: nodes
                    .iter()
                    .filter_map(|n| serde_json::to_value(n).ok())
                    .collect(),
                error: None,
            },
            Err(e) => NodesOfBackend {
                backend,
                nodes: Vec::new(),
                error: Some(e.to_string()),
            },
        })
        .collect();
    axum::Json(view).into_response()
}

/// Prometheus text: runs by status, and each running run's users, counters and latencies.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, content_type = "text/plain", body = String), (status = 401, body = ErrorBody)))]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let runs = match state.store.runs().await {
        Ok(runs) => runs,
        Err(e) => return store_failed(&e),
    };
    let mut out = String::from(
        "# HELP liveload_runs Runs in the history, by status.\n# TYPE liveload_runs gauge\n",
    );
    let mut by_status = std::collections::BTreeMap::<&str, u64>::new();
    for run in &runs {
        *by_status.entry(run.status.as_str()).or_default() += 1;
    }
    for (status, count) in by_status {
        let _ = writeln!(out, "liveload_runs{{status=\"{status}\"}} {count}");
    }
    out.push_str(control::PROMETHEUS_HEADER);
    for live in state.runs.live() {
        control::prometheus(&live, true, &mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The backends this server offers (configured on the server; the first is the default).
#[utoipa::path(get, path = "/backends", tag = "server",
    responses((status = 200, body = Vec<String>), (status = 401, body = ErrorBody)))]
pub(super) async fn list_backends(State(state): State<AppState>) -> Response {
    axum::Json(state.runs.backend_names()).into_response()
}

/// Stored scenario names.
#[utoipa::path(get, path = "/scenarios", tag = "scenarios",
    responses((status = 200, body = Vec<String>), (status = 401, body = ErrorBody)))]
pub(super) async fn list_scenarios(State(state): State<AppState>) -> Response {
    match state.store.scenario_names().await {
        Ok(names) => axum::Json(names).into_response(),
        Err(e) => store_failed(&e),
    }
}

/// A stored scenario's YAML.
#[utoipa::path(get, path = "/scenarios/{name}", tag = "scenarios", params(("name" = String, Path, description = "The name it is stored under")),
    responses((status = 200, content_type = "application/yaml", body = String), (status = 404, body = ErrorBody)))]
pub(super) async fn get_scenario(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Response {
    match state.store.scenario(&name).await {
        Ok(Some(yaml)) => ([(header::CONTENT_TYPE, "application/yaml")], yaml).into_response(),
        Ok(None) => refuse(
            StatusCode::NOT_FOUND,
            "scenario_not_found",
            format!("no stored scenario is named '{name}'"),
        ),
        Err(e) => store_failed(&e),
    }
}

/// Store a scenario (its YAML is the body), checked first as `liveload validate` would.
#[utoipa::path(put, path = "/scenarios/{name}", tag = "scenarios", params(("name" = String, Path, description = "The name to store it under")),
    request_body(content = String, content_type = "application/yaml"),
    responses((status = 204, description = "Stored"), (status = 422, body = ErrorBody)))]
pub(super) async fn put_scenario(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if !valid_scenario_name(&name) {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "a stored scenario's name is 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-', not \
             starting with '.'",
        );
    }
    let Ok(yaml) = String::from_utf8(body.to_vec()) else {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "the scenario must be UTF-8 text",
        );
    };
    let path = std::path::PathBuf::from(format!("{name}.yaml"));
    if let Err(e) = liveload_core::scenario::Scenario::from_untrusted_yaml(&path, &yaml) {
        return error_response(&e);
    }
    match state.store.put_scenario(&name, &yaml).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_failed(&e),
    }
}

/// A name a scenario may be stored under: a plain word, never a path.
fn valid_scenario_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// What `POST /session` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Login {
    /// A token from `liveload serve token create`.
    pub token: String,
}

/// The dashboard's login: check a token and hold it in an `HttpOnly`, `SameSite=Strict`
/// cookie.
#[utoipa::path(post, path = "/session", tag = "dashboard", request_body = Login, security(()),
    responses((status = 204, description = "Logged in: the cookie is set"), (status = 401, body = ErrorBody)))]
pub(super) async fn login(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    // A cross-site form can post text/plain, but not with a custom header: without this
    // check another site could log a visitor in with the attacker's token.
    if !headers.contains_key(auth::DASHBOARD_HEADER) {
        return refuse(
            StatusCode::FORBIDDEN,
            "missing_dashboard_header",
            "logging in takes the header X-Liveload-Dashboard: 1 (the dashboard sends it)",
        );
    }
    let Ok(login) = serde_json::from_slice::<Login>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send {\"token\": \"…\"}",
        );
    };
    match state
        .store
        .token_name(&auth::token_hash(&login.token))
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this token is not known to the server",
            );
        }
        Err(e) => return store_failed(&e),
    }
    let secure = if state.guard.is_public() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{secure}",
        login.token
    );
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

/// Log out: drop the dashboard's cookie.
#[utoipa::path(delete, path = "/session", tag = "dashboard", security(()),
    responses((status = 204, description = "Logged out")))]
pub(super) async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}
