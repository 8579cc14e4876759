//! `/api/login` and `/api/me`: a small JSON API with a session cookie and a bearer token, for
//! protocol users (`engine: http`). Logging in (`POST /api/login` with `{"email": E}`) sets
//! the cookie `session=E` and answers `{"ok": true, "token": "t-E"}`; `GET /api/me` answers
//! `{"email": E}` with the header `X-User: E` only to a request carrying both that cookie and
//! `Authorization: Bearer t-E` (401 otherwise): a client that loses its cookies, mixes them up
//! between users or drops a header fails.

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use serde_json::json;

#[derive(serde::Deserialize)]
struct Login {
    email: String,
}

/// Only letters, digits and `@.-_`: the value goes into a header and a cookie.
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "@.-_".contains(*c))
        .take(128)
        .collect()
}

async fn login(Json(login): Json<Login>) -> impl IntoResponse {
    let email = clean(&login.email);
    let cookie = format!("session={email}; Path=/; HttpOnly");
    let body = json!({"ok": true, "token": format!("t-{email}")});
    ([(header::SET_COOKIE, cookie)], Json(body))
}

async fn me(headers: HeaderMap) -> impl IntoResponse {
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("session="))
        .map(clean);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer t-"))
        .map(clean);
    match (session, bearer) {
        (Some(session), Some(bearer)) if session == bearer => (
            StatusCode::OK,
            [("x-user", session.clone())],
            Json(json!({"email": session})),
        )
            .into_response(),
        _ => (StatusCode::UNAUTHORIZED, "log in first").into_response(),
    }
}

/// `/api/login` and `/api/me`.
pub(crate) fn routes() -> Router {
    Router::new()
        .route("/api/login", post(login))
        .route("/api/me", get(me))
}
