//! A typed client for the Machines REST API: every call rate-limited at Fly's documented limits
//! and retried on throttling and capacity errors (honouring `Retry-After`).
//!
//! Fly's limits (docs): about 1 request/s per action per app or machine with bursts of 3, and
//! 5/s (burst 10) for reading one machine. Create is app-scoped, so one app creates about one
//! machine a second; deletes and waits are per machine and go out in parallel. The client keeps
//! one token of each burst in reserve ([`Limits::default`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liveload_core::limits::{RateLimiter, retry};
use liveload_core::{BackendError, BackendErrorKind, Error, Secret};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::api::{CreateMachineRequest, ErrorBody, Machine, UpdateMachineRequest};

/// Attempts per call before giving up.
const ATTEMPTS: usize = 6;

/// Rate limits, requests per second and burst.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Creates per second for the app (Fly: ~1).
    pub create_per_s: f64,
    /// Burst of creates (Fly allows 3; the default is 2, see [`Limits::default`]).
    pub create_burst: u32,
    /// Other actions per second per machine (Fly: 1).
    pub action_per_s: f64,
    /// Burst of other actions (Fly allows 3; the default is 2).
    pub action_burst: u32,
}

/// Fly's documented rates with one token of each burst kept in reserve. A client spacing its
/// calls exactly one interval apart still has them *arrive* a millisecond or two closer now
/// and then (scheduling, a new connection), and at exactly the documented rate Fly's bucket
/// is then a hair short: a 429 and a `Retry-After` second lost. Measured against the test
/// server's buckets: 1 create of 65 throttled at a burst of 3, none at 2.
impl Default for Limits {
    fn default() -> Self {
        Limits {
            create_per_s: 1.0,
            create_burst: 2,
            action_per_s: 1.0,
            action_burst: 2,
        }
    }
}

/// The Machines API of one app.
pub struct FlyClient {
    http: reqwest::Client,
    base_url: String,
    app: String,
    /// `None`: no token was found. A plan needs none (Fly's presets are published); every
    /// API call fails first thing with [`missing_token`].
    token: Option<Secret>,
    limits: Limits,
    create_limiter: RateLimiter,
    list_limiter: RateLimiter,
    machine_limiters: Mutex<HashMap<(String, &'static str), Arc<RateLimiter>>>,
}

impl std::fmt::Debug for FlyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlyClient")
            .field("base_url", &self.base_url)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

fn fly_error(kind: BackendErrorKind, message: String, hint: Option<&str>) -> Error {
    Error::from(BackendError::new("fly", kind, message).maybe_hint(hint.map(str::to_string)))
}

/// The error of every API call made without a token: where liveload looked, and how to get one.
pub fn missing_token() -> Error {
    fly_error(
        BackendErrorKind::Auth,
        "no Fly API token: --fly-token-file was not given and FLY_API_TOKEN is not set".into(),
        Some(
            "create a token with `fly tokens create deploy -a APP` and export FLY_API_TOKEN=..., or save it in a file (mode 0600) and pass --fly-token-file FILE",
        ),
    )
}

/// What a call answered: a body, or one of the statuses the caller expects.
enum Reply<T> {
    /// A successful answer's body.
    Body(T),
    /// A status the caller listed as an answer.
    Status(StatusCode),
}

/// A failed call as liveload's error: the kind and retry decision from the HTTP status, the
/// provider's message kept whole.
fn status_error(
    method: &Method,
    path: &str,
    status: StatusCode,
    text: &str,
    retry_after: Option<Duration>,
) -> Error {
    let message = serde_json::from_str::<ErrorBody>(text)
        .map(|b| b.error)
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| text.chars().take(300).collect());
    let message = format!("{method} {path}: {status}: {message}");
    let (kind, hint) = match status.as_u16() {
        401 | 403 => (
            BackendErrorKind::Auth,
            Some(
                "check FLY_API_TOKEN (or --fly-token-file): a token for this app's organisation, e.g. `fly tokens create deploy`",
            ),
        ),
        429 => (
            BackendErrorKind::RateLimited,
            Some("Fly throttled the API; liveload retried with backoff"),
        ),
        // 412: lease/precondition; 5xx: Fly's own trouble. Both usually pass.
        412 | 500..=599 => (BackendErrorKind::Transient, None),
        // Fly gives no error code for "no capacity in this region", only its message.
        422 if message.contains("capacity") => (
            BackendErrorKind::Quota,
            Some("the region has no capacity now; try other regions with --fly-regions"),
        ),
        404 => (
            BackendErrorKind::Other,
            Some("check --fly-app: the app must exist (`fly apps create`)"),
        ),
        _ if message.contains("image") => (BackendErrorKind::BadImage, None),
        _ => (BackendErrorKind::Other, None),
    };
    // Capacity comes back: retry it like throttling.
    let retryable = kind.is_retryable_by_default() || kind == BackendErrorKind::Quota;
    BackendError::new("fly", kind, message)
        .maybe_hint(hint)
        .retryable(retryable)
        .retry_after(retry_after)
        .into()
}

impl FlyClient {
    /// A client for `app` at `base_url` (e.g. `https://api.machines.dev/v1`).
    pub fn new(
        base_url: &str,
        app: &str,
        token: Option<Secret>,
        limits: Limits,
    ) -> Result<Self, Error> {
        // One TLS stack for the whole program: rustls with ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(75))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("liveload/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| fly_error(BackendErrorKind::Other, format!("HTTP client: {e}"), None))?;
        Ok(FlyClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            app: app.to_string(),
            token,
            create_limiter: RateLimiter::new(limits.create_per_s, limits.create_burst),
            list_limiter: RateLimiter::new(limits.action_per_s, limits.action_burst),
            machine_limiters: Mutex::default(),
            limits,
        })
    }

    /// The client-side rate limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn machine_limiter(&self, machine: &str, action: &'static str) -> Arc<RateLimiter> {
        self.machine_limiters
            .lock()
            .expect("not poisoned")
            .entry((machine.to_string(), action))
            .or_insert_with(|| {
                Arc::new(RateLimiter::new(
                    self.limits.action_per_s,
                    self.limits.action_burst,
                ))
            })
            .clone()
    }

    /// Whether a token was found (`liveload doctor`'s first question).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// One request, rate-limited and retried. A status listed in `answers` is an answer, not
    /// an error (404 for "already gone", 409 for "that name exists", 408 for "not yet").
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&serde_json::Value>,
        limiter: &RateLimiter,
        answers: &[StatusCode],
    ) -> Result<Reply<T>, Error> {
        let url = format!("/apps/{}{}", self.app, path);
        self.call_at(method, &url, query, body, limiter, answers)
            .await
    }

    /// [`call`](Self::call) at `path` under the API's base URL (not only the app's).
    async fn call_at<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&serde_json::Value>,
        limiter: &RateLimiter,
        answers: &[StatusCode],
    ) -> Result<Reply<T>, Error> {
        let token = self.token.as_ref().ok_or_else(missing_token)?;
        let url = format!("{}{}", self.base_url, path);
        retry(ATTEMPTS, || async {
            limiter.acquire().await;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.expose())
                .query(query);
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            let response = request.send().await.map_err(|e| {
                // Without the answer we cannot know whether the server acted: retry; creates
                // are made safe by their unique name.
                BackendError::new(
                    "fly",
                    BackendErrorKind::Transient,
                    format!("{method} {path}: {e}"),
                )
                .source(e)
            })?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 3600.0)
                .map(Duration::from_secs_f64);
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                return serde_json::from_str(if text.is_empty() { "null" } else { &text })
                    .map(Reply::Body)
                    .map_err(|e| {
                        fly_error(
                            BackendErrorKind::Other,
                            format!("{method} {path}: unexpected answer: {e}"),
                            None,
                        )
                    });
            }
            if answers.contains(&status) {
                return Ok(Reply::Status(status));
            }
            Err(status_error(&method, path, status, &text, retry_after))
        })
        .await
    }

    /// Create a machine; a name conflict (a retried create whose first answer was lost)
    /// adopts the machine that already has the name.
    pub async fn create(&self, request: &CreateMachineRequest) -> Result<Machine, Error> {
        let body = serde_json::to_value(request).expect("a request serialises");
        match self
            .call::<Machine>(
                Method::POST,
                "/machines",
                &[],
                Some(&body),
                &self.create_limiter,
                &[StatusCode::CONFLICT],
            )
            .await
        {
            Ok(Reply::Body(machine)) => Ok(machine),
            Ok(Reply::Status(status)) => {
                let existing = self
                    .list(&[])
                    .await?
                    .into_iter()
                    .find(|m| m.name == request.name && !m.is_gone());
                existing.ok_or_else(|| {
                    fly_error(
                        BackendErrorKind::Other,
                        format!(
                            "POST /machines: {status}, yet no machine named {} found",
                            request.name
                        ),
                        None,
                    )
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The app, or `None` when the API says it does not exist (404).
    pub async fn app(&self) -> Result<Option<serde_json::Value>, Error> {
        match self
            .call(
                Method::GET,
                "",
                &[],
                None,
                &self.list_limiter,
                &[StatusCode::NOT_FOUND],
            )
            .await?
        {
            Reply::Body(app) => Ok(Some(app)),
            Reply::Status(_) => Ok(None),
        }
    }

    /// The app's IP addresses (`GET /apps/APP/ip_assignments`): public mode needs at least one.
    pub async fn ip_assignments(&self) -> Result<Vec<String>, Error> {
        #[derive(serde::Deserialize)]
        struct Ips {
            #[serde(default)]
            ips: Vec<Ip>,
        }
        #[derive(serde::Deserialize)]
        struct Ip {
            #[serde(default)]
            ip: String,
        }
        match self
            .call::<Ips>(
                Method::GET,
                "/ip_assignments",
                &[],
                None,
                &self.list_limiter,
                &[],
            )
            .await?
        {
            Reply::Body(ips) => Ok(ips.ips.into_iter().map(|i| i.ip).collect()),
            Reply::Status(_) => Ok(Vec::new()),
        }
    }

    /// The platform's region codes (`GET /platform/regions`), deprecated ones left out.
    pub async fn regions(&self) -> Result<Vec<String>, Error> {
        #[derive(serde::Deserialize)]
        struct Regions {
            #[serde(default)]
            regions: Vec<Region>,
        }
        #[derive(serde::Deserialize)]
        struct Region {
            #[serde(default)]
            code: String,
            #[serde(default)]
            deprecated: bool,
        }
        match self
            .call_at::<Regions>(
                Method::GET,
                "/platform/regions",
                &[],
                None,
                &self.list_limiter,
                &[],
            )
            .await?
        {
            Reply::Body(r) => Ok(r
                .regions
                .into_iter()
                .filter(|r| !r.deprecated)
                .map(|r| r.code)
                .collect()),
            Reply::Status(_) => Ok(Vec::new()),
        }
    }

    /// The token, for the image registry (registry.fly.io takes the API token).
    pub(crate) fn token(&self) -> Option<&Secret> {
        self.token.as_ref()
    }

    /// The API's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The app's name.
    pub fn app_name(&self) -> &str {
        &self.app
    }

    /// Every machine of the app, filtered by `metadata.KEY=VALUE` pairs (Fly's documented list
    /// filter; also applied here, for servers that ignore it).
    pub async fn list(&self, metadata: &[(String, String)]) -> Result<Vec<Machine>, Error> {
        let query: Vec<(String, String)> = metadata
            .iter()
            .map(|(k, v)| (format!("metadata.{k}"), v.clone()))
            .collect();
        let machines: Vec<Machine> = match self
            .call(
                Method::GET,
                "/machines",
                &query,
                None,
                &self.list_limiter,
                &[],
            )
            .await?
        {
            Reply::Body(machines) => machines,
            Reply::Status(_) => Vec::new(),
        };
        Ok(machines
            .into_iter()
            .filter(|m| !m.is_gone())
            .filter(|m| metadata.iter().all(|(k, v)| m.meta(k) == Some(v.as_str())))
            .collect())
    }

    /// One machine, or `None` when it is gone.
    pub async fn get(&self, id: &str) -> Result<Option<Machine>, Error> {
        let limiter = self.machine_limiter(id, "get");
        let reply = self
            .call(
                Method::GET,
                &format!("/machines/{id}"),
                &[],
                None,
                &limiter,
                &[StatusCode::NOT_FOUND],
            )
            .await?;
        Ok(match reply {
            Reply::Body(machine) => Some(machine),
            Reply::Status(_) => None,
        })
    }

    /// Wait (server-side, at most `timeout`) until the machine reaches `state`; `Ok(false)`
    /// when it did not in that time.
    pub async fn wait(&self, id: &str, state: &str, timeout: Duration) -> Result<bool, Error> {
        let limiter = self.machine_limiter(id, "wait");
        let seconds = timeout.as_secs().clamp(1, 60);
        let query = [
            ("state".to_string(), state.to_string()),
            ("timeout".to_string(), seconds.to_string()),
        ];
        // Fly answers 408 when the wait timed out: "not yet".
        let reply: Reply<serde_json::Value> = self
            .call(
                Method::GET,
                &format!("/machines/{id}/wait"),
                &query,
                None,
                &limiter,
                &[StatusCode::REQUEST_TIMEOUT],
            )
            .await?;
        Ok(matches!(reply, Reply::Body(_)))
    }

    /// Replace a machine's configuration (and start it, unless `skip_launch`); `None` when the
    /// machine is gone.
    pub async fn update(
        &self,
        id: &str,
        request: &UpdateMachineRequest,
    ) -> Result<Option<Machine>, Error> {
        let limiter = self.machine_limiter(id, "update");
        let body = serde_json::to_value(request).expect("a request serialises");
        let reply = self
            .call(
                Method::POST,
                &format!("/machines/{id}"),
                &[],
                Some(&body),
                &limiter,
                &[StatusCode::NOT_FOUND],
            )
            .await?;
        Ok(match reply {
            Reply::Body(machine) => Some(machine),
            Reply::Status(_) => None,
        })
    }

    /// Stop a machine; `Ok` when it is already gone.
    pub async fn stop(&self, id: &str) -> Result<(), Error> {
        let limiter = self.machine_limiter(id, "stop");
        let _: Reply<serde_json::Value> = self
            .call(
                Method::POST,
                &format!("/machines/{id}/stop"),
                &[],
                None,
                &limiter,
                &[StatusCode::NOT_FOUND],
            )
            .await?;
        Ok(())
    }

    /// Destroy a machine (forcefully, stopping it first); `Ok` when it is already gone.
    pub async fn destroy(&self, id: &str) -> Result<(), Error> {
        let limiter = self.machine_limiter(id, "delete");
        let _: Reply<serde_json::Value> = self
            .call(
                Method::DELETE,
                &format!("/machines/{id}"),
                &[("force".into(), "true".into())],
                None,
                &limiter,
                &[StatusCode::NOT_FOUND],
            )
            .await?;
        self.machine_limiters
            .lock()
            .expect("not poisoned")
            .retain(|(machine, _), _| machine != id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of Fly failure says what happened (Fly's own message kept) and how to fix it.
    #[test]
    fn every_kind_has_its_message_and_hint() {
        let cases: [(u16, &str, BackendErrorKind, Option<&str>); 6] = [
            (
                401,
                r#"{"error":"unauthorized"}"#,
                BackendErrorKind::Auth,
                Some("FLY_API_TOKEN"),
            ),
            (
                404,
                r#"{"error":"app not found"}"#,
                BackendErrorKind::Other,
                Some("fly apps create"),
            ),
            (
                429,
                "slow down",
                BackendErrorKind::RateLimited,
                Some("throttled"),
            ),
            (
                422,
                r#"{"error":"insufficient capacity"}"#,
                BackendErrorKind::Quota,
                Some("--fly-regions"),
            ),
            (503, "bad gateway", BackendErrorKind::Transient, None),
            (
                400,
                r#"{"error":"image not found"}"#,
                BackendErrorKind::BadImage,
                None,
            ),
        ];
        for (status, body, kind, hint) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            let error = status_error(&Method::POST, "/apps/a/machines", status, body, None);
            let Error::Backend(e) = &error else {
                panic!("{error:?}")
            };
            assert_eq!(e.kind, kind, "{status}");
            assert!(e.message.contains(status.as_str()), "{}", e.message);
            let said =
                serde_json::from_str::<ErrorBody>(body).map_or(body.to_string(), |b| b.error);
            assert!(e.message.contains(&said), "Fly's words kept: {}", e.message);
            match hint {
                Some(words) => assert!(
                    e.hint.as_deref().unwrap().contains(words),
                    "{status}: {e:?}"
                ),
                None => assert!(e.hint.is_none()),
            }
        }
        let missing = missing_token();
        assert!(missing.to_string().contains("FLY_API_TOKEN"));
        assert!(missing.hint().unwrap().contains("fly tokens create deploy"));
    }
}
