//! Who may use the API: holders of a bearer token created with `liveload serve token create`.
//!
//! Tokens are 256 random bits, shown once at creation and stored only as their SHA-256. A
//! slow password hash (argon2) protects low-entropy secrets from guessing; a random 256-bit
//! token cannot be guessed, so one SHA-256 is enough, and a stolen database yields no token.
//!
//! The dashboard is a web page: after the login form checks a token, the browser holds it in
//! an `HttpOnly`, `SameSite=Strict` cookie (never readable by the page's scripts). Requests
//! authenticated by that cookie that change something must also carry the header
//! `X-Liveload-Dashboard: 1`: another site's page cannot add a custom header to a
//! cross-site request without a CORS preflight this server never grants, so a forged form
//! post fails. A server on loopback also checks `Host` (as the CLI's control endpoint does):
//! a page that rebinds its own name to 127.0.0.1 sends its own name, and is refused.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use liveload_core::Secret;
use sha2::{Digest as _, Sha256};

use crate::store::{Store, StoreResult};

/// The dashboard's cookie.
pub const COOKIE: &str = "liveload_token";
/// The header a cookie-authenticated change must carry.
pub const DASHBOARD_HEADER: &str = "x-liveload-dashboard";

/// The stored form of a token: its SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Create a token named `name` (replacing one of that name); the token itself, shown once.
pub async fn create_token(store: &dyn Store, name: &str) -> StoreResult<Secret> {
    let token = liveload_core::names::new_token();
    store.put_token(name, &token_hash(token.expose())).await?;
    Ok(token)
}

/// Who made a request: the name of the token it carried.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// The `Host` values a loopback server answers to (none checked beyond loopback, where TLS
/// and the certificate's name do that job).
#[derive(Debug)]
pub struct HostGuard {
    hosts: Option<Vec<String>>,
}

impl HostGuard {
    /// The guard for a server listening at `address`.
    pub fn for_listen(address: SocketAddr, tls: bool) -> HostGuard {
        if tls || !address.ip().is_loopback() {
            return HostGuard { hosts: None };
        }
        let port = address.port();
        HostGuard {
            hosts: Some(vec![
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
            ]),
        }
    }

    /// Is the server reachable beyond this machine (served over TLS)?
    pub fn is_public(&self) -> bool {
        self.hosts.is_none()
    }

    /// Does `host` name this server?
    pub fn allows(&self, host: &str) -> bool {
        self.hosts
            .as_ref()
            .is_none_or(|hosts| hosts.iter().any(|h| h == host))
    }
}

/// The token a request presents: the bearer header, else the dashboard's cookie (and whether
/// it came from the cookie).
pub fn presented_token(headers: &HeaderMap) -> Option<(String, bool)> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(token) = bearer {
        return Some((token.to_string(), false));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| (value.to_string(), true))
}

/// The JSON error body every refusal uses.
pub(crate) fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    // Exit code 2 (usage) for `--server` commands: a missing or wrong token is set-up.
    let body = serde_json::json!({ "error": code, "message": message, "exit_code": 2 });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
    }
    response
}

/// The state the middleware needs.
#[derive(Clone)]
pub struct AuthState {
    /// Where token hashes are.
    pub store: Arc<dyn Store>,
    /// The `Host` check.
    pub guard: Arc<HostGuard>,
}

/// Refuse a request addressed to another host name (421): a page that rebound its own name to
/// this loopback server. Applied to every route, the dashboard's and the public ones too.
pub async fn require_own_host(
    State(guard): State<Arc<HostGuard>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !guard.allows(host) {
        return refusal(
            StatusCode::MISDIRECTED_REQUEST,
            "unexpected_host",
            "this server answers to its own address only",
        );
    }
    next.run(request).await
}

/// Refuse a request without a valid token (401), or a cookie-authenticated change without
/// the dashboard's header (403); else pass it on with its [`Caller`].
pub async fn require_token(
    State(auth): State<AuthState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some((token, from_cookie)) = presented_token(request.headers()) else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required (create one with `liveload serve token create NAME`)",
        );
    };
    // The hash is looked up, not compared byte by byte here: equal hashes of unequal tokens
    // do not happen, and the lookup's timing says nothing about the token itself.
    let name = match auth.store.token_name(&token_hash(&token)).await {
        Ok(Some(name)) => name,
        Ok(None) => {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this token is not known to the server",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "checking a token");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the run history cannot be read now",
            );
        }
    };
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    if from_cookie && !safe && !request.headers().contains_key(DASHBOARD_HEADER) {
        return refusal(
            StatusCode::FORBIDDEN,
            "missing_dashboard_header",
            "a change made with the dashboard's cookie must carry X-Liveload-Dashboard: 1",
        );
    }
    request.extensions_mut().insert(Caller(name));
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_bearer_header_wins_over_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=b; liveload_token=fromcookie".parse().unwrap(),
        );
        assert_eq!(
            presented_token(&headers),
            Some(("fromcookie".to_string(), true))
        );
        headers.insert(header::AUTHORIZATION, "Bearer frombearer".parse().unwrap());
        assert_eq!(
            presented_token(&headers),
            Some(("frombearer".to_string(), false))
        );
    }

    #[test]
    fn a_loopback_server_answers_to_its_own_names_only() {
        let guard = HostGuard::for_listen("127.0.0.1:7654".parse().unwrap(), false);
        assert!(guard.allows("127.0.0.1:7654"));
        assert!(guard.allows("localhost:7654"));
        assert!(!guard.allows("evil.example:7654"));
        assert!(!guard.allows("127.0.0.1:7655"));
        let public = HostGuard::for_listen("0.0.0.0:443".parse().unwrap(), true);
        assert!(public.allows("loadtests.example.com"));
    }
}
