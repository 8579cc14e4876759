//! Protocol users (`engine: http`): a user is its own HTTP client and at most one WebSocket,
//! not a browser — kilobytes instead of megabytes, so a node holds thousands.
//!
//! Each user has a `reqwest` client of its own: its own connection pool (keep-alive, like a
//! browser's per-profile pool) and cookie jar (what a server sets stays with the user who got
//! it, across iterations; a WebSocket handshake sends them too). Its metrics are the browser
//! engine's names: `http.requests`, `http.status.2xx` ..., `http.ttfb` (request sent to the
//! answer's headers), `http.duration` (to its last byte), and `ws.*` (`ws.reply`: from a
//! `ws_send` to the message a following `ws_expect` matched).
//!
//! An answer's body is kept for `expect` and `extract` up to [`MAX_KEPT_BODY`]; the rest is
//! read (so the connection can be reused and `http.duration` is true) and counted, not kept.

pub mod liveview;
pub(crate) mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use liveload_proto::{AnswerCheck, AnswerSource, AnswerValue, HttpBody, HttpRequest, json_path};
use serde_json::Value;

use crate::recorder::Recorder;
use crate::steps::UserState;

pub use ws::{ws_close, ws_connect, ws_expect, ws_send};

/// The most of an answer's body a user keeps for its checks and extracts.
pub const MAX_KEPT_BODY: usize = 1024 * 1024;

/// One protocol user's connections and last answers.
pub struct ProtocolUser {
    client: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
    /// The last HTTP answer: status, headers, body (at most [`MAX_KEPT_BODY`]).
    last_http: Option<(u16, reqwest::header::HeaderMap, String)>,
    /// The last message `ws_expect` matched.
    last_ws: Option<String>,
    ws: Option<ws::Socket>,
    /// The LiveView the user has joined (`engine: liveview`).
    liveview: Option<liveview::LiveView>,
    /// `extract: { regex }` expressions, compiled once per user rather than per iteration.
    regexes: std::collections::HashMap<String, regex::Regex>,
}

impl ProtocolUser {
    /// A user with a fresh client: no connection, no cookie. A LiveView user's client keeps
    /// no idle connection: after the page its traffic is on the socket, and a kept page
    /// connection would double the descriptors a node of thousands of users holds (and the
    /// server's).
    pub fn new(engine: liveload_proto::Engine) -> Result<Self> {
        // One TLS stack for the whole program: rustls with ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let mut builder = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .user_agent(concat!("liveload/", env!("CARGO_PKG_VERSION")));
        if engine == liveload_proto::Engine::Liveview {
            builder = builder.pool_max_idle_per_host(0);
        }
        if let Some(tls) = shared_tls() {
            builder = builder.tls_backend_preconfigured(tls);
        }
        let client = builder.build().context("building the user's HTTP client")?;
        Ok(ProtocolUser {
            client,
            jar,
            last_http: None,
            last_ws: None,
            ws: None,
            liveview: None,
            regexes: Default::default(),
        })
    }
}

impl ProtocolUser {
    /// The URL of the LiveView the user has open (`engine: liveview`).
    pub fn liveview_url(&self) -> Option<&str> {
        self.liveview.as_ref().map(|view| view.url.as_str())
    }
}

/// One TLS configuration for every user of the agent (each gets a cheap clone: its parts are
/// shared). Without it each user's client built its own, loading the system's trust store:
/// most of an idle protocol user's memory (`liveload bench protocol`).
fn shared_tls() -> Option<rustls::ClientConfig> {
    use rustls_platform_verifier::ConfigVerifierExt as _;
    static TLS: std::sync::OnceLock<Option<rustls::ClientConfig>> = std::sync::OnceLock::new();
    TLS.get_or_init(|| match rustls::ClientConfig::with_platform_verifier() {
        Ok(config) => Some(config),
        Err(e) => {
            tracing::warn!(error = %e, "each protocol user builds its own TLS configuration");
            None
        }
    })
    .clone()
}

/// The user's protocol state, made at its first protocol step.
pub(crate) fn protocol_of<'u>(user: &'u mut UserState<'_>) -> Result<&'u mut ProtocolUser> {
    if user.protocol.is_none() {
        user.protocol = Some(ProtocolUser::new(user.engine)?);
    }
    Ok(user.protocol.as_mut().expect("just made"))
}

/// `request`: send it, read the answer, count it, check it against `expect`.
pub async fn request(user: &mut UserState<'_>, r: &HttpRequest, timeout: Duration) -> Result<()> {
    let t = |text: &str| crate::steps::fill_template(text, &user.vars);
    let url = crate::steps::resolve_url(user.base_url, &t(&r.url));
    let method = reqwest::Method::from_bytes(r.method.as_bytes())
        .map_err(|_| anyhow!("'{}' is not an HTTP method", r.method))?;
    let expect = fill_check(&r.expect, &user.vars);
    let headers: Vec<(String, String)> = r.headers.iter().map(|(k, v)| (k.clone(), t(v))).collect();
    let body = match &r.body {
        HttpBody::None => None,
        HttpBody::Text(text) => Some((t(text).into_bytes(), None)),
        HttpBody::Json(json) => {
            let json = fill_json(json, &user.vars);
            Some((json.to_string().into_bytes(), Some("application/json")))
        }
        HttpBody::Form(fields) => {
            let pairs: Vec<(String, String)> =
                fields.iter().map(|(k, v)| (k.clone(), t(v))).collect();
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            Some((
                encoded.into_bytes(),
                Some("application/x-www-form-urlencoded"),
            ))
        }
    };
    let recorder = user.recorder;
    let protocol = protocol_of(user)?;
    let mut builder = protocol.client.request(method, &url).timeout(timeout);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    if let Some((bytes, content_type)) = body {
        if let Some(content_type) = content_type {
            builder = builder.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        builder = builder.body(bytes);
    }
    let sent = Instant::now();
    let answer = read_answer(builder, recorder, sent).await;
    let (status, headers, body) = answer.with_context(|| format!("{} {url}", r.method))?;
    protocol.last_http = Some((status, headers, body));
    let (status, _, body) = protocol.last_http.as_ref().expect("just set");
    check_answer(&expect, Some(*status), body).with_context(|| format!("{} {url}", r.method))
}

/// Send, read the headers (`http.ttfb`), the body (`http.duration`, at most
/// [`MAX_KEPT_BODY`] kept), and count the answer by status class.
pub(crate) async fn read_answer(
    builder: reqwest::RequestBuilder,
    recorder: &Recorder,
    sent: Instant,
) -> Result<(u16, reqwest::header::HeaderMap, String)> {
    let mut response = builder.send().await.map_err(describe)?;
    recorder.latency("http.ttfb", sent.elapsed());
    let status = response.status().as_u16();
    recorder.count("http.requests", 1);
    recorder.count(status_class(status), 1);
    let headers = response.headers().clone();
    let mut kept: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        let room = MAX_KEPT_BODY.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    recorder.latency("http.duration", sent.elapsed());
    Ok((status, headers, String::from_utf8_lossy(&kept).into_owned()))
}

/// A transport error in a person's words: what failed, without reqwest's internals.
fn describe(e: reqwest::Error) -> anyhow::Error {
    if e.is_timeout() {
        anyhow!("no answer within the step's timeout")
    } else if e.is_connect() {
        anyhow!("could not connect: {}", root_cause(&e))
    } else {
        anyhow!("{}", root_cause(&e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `http.status.2xx` ... for a status.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "http.status.1xx",
        200..=299 => "http.status.2xx",
        300..=399 => "http.status.3xx",
        400..=499 => "http.status.4xx",
        _ => "http.status.5xx",
    }
}

/// Check an answer (HTTP: with its status) or a message (`status` `None`) against `expect`;
/// the first failure, saying what was expected and what came.
pub fn check_answer(expect: &AnswerCheck, status: Option<u16>, body: &str) -> Result<()> {
    let shown = || -> String {
        let mut text: String = body.chars().take(200).collect();
        if body.chars().count() > 200 {
            text.push('…');
        }
        text
    };
    if let Some(status) = status {
        let ok = if expect.status.is_empty() {
            status < 400
        } else {
            expect.status.contains(&status)
        };
        if !ok {
            let wanted = if expect.status.is_empty() {
                "a status below 400".to_string()
            } else {
                format!("status {:?}", expect.status)
            };
            bail!("expected {wanted}, got {status}: {}", shown());
        }
    }
    if let Some(text) = &expect.contains
        && !body.contains(text.as_str())
    {
        bail!("expected the body to contain '{text}': {}", shown());
    }
    if !expect.json.is_empty() {
        let doc: Value =
            serde_json::from_str(body).map_err(|_| anyhow!("expected a JSON body: {}", shown()))?;
        for (path, wanted) in &expect.json {
            let segments = json_path::parse(path).map_err(|e| anyhow!(e))?;
            let found = json_path::select(&doc, &segments);
            if found != Some(wanted) {
                let found = found.map_or("nothing".to_string(), Value::to_string);
                bail!("expected {path} = {wanted}, found {found}");
            }
        }
    }
    Ok(())
}

/// `extract` from an answer: a JSON path, a header, or a regex's first group.
pub fn extract(
    user: &mut UserState<'_>,
    var: &str,
    (from, value): (AnswerSource, &AnswerValue),
    secret: bool,
) -> Result<()> {
    let protocol = protocol_of(user)?;
    let (headers, body) = match (from, &protocol.last_http, &protocol.last_ws) {
        (AnswerSource::Http, Some((_, headers, body)), _) => (Some(headers), body.as_str()),
        (AnswerSource::Ws, _, Some(message)) => (None, message.as_str()),
        (AnswerSource::Http, None, _) => bail!("extract {var}: no HTTP answer yet"),
        (AnswerSource::Ws, _, None) => bail!("extract {var}: no WebSocket message matched yet"),
    };
    let found = match value {
        AnswerValue::Json { path } => {
            let doc: Value = serde_json::from_str(body)
                .map_err(|_| anyhow!("extract {var}: the answer is not JSON"))?;
            let segments = json_path::parse(path).map_err(|e| anyhow!(e))?;
            json_path::select(&doc, &segments)
                .map(json_path::as_text)
                .ok_or_else(|| anyhow!("extract {var}: nothing at {path}"))?
        }
        AnswerValue::Header { name } => headers
            .and_then(|h| h.get(name.as_str()))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("extract {var}: no header '{name}' in the answer"))?,
        AnswerValue::Regex { pattern } => {
            let regex = match protocol.regexes.entry(pattern.clone()) {
                std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
                std::collections::hash_map::Entry::Vacant(new) => new
                    .insert(regex::Regex::new(pattern).map_err(|e| anyhow!("extract {var}: {e}"))?),
            };
            let captures = regex
                .captures(body)
                .ok_or_else(|| anyhow!("extract {var}: /{pattern}/ matches nothing"))?;
            let matched = captures.get(1).or_else(|| captures.get(0));
            matched.map_or_else(String::new, |m| m.as_str().to_string())
        }
    };
    crate::steps::set_var(user, var, found, secret);
    Ok(())
}

/// `expect` with its templates filled for this user.
fn fill_check(
    check: &AnswerCheck,
    vars: &std::collections::HashMap<String, String>,
) -> AnswerCheck {
    AnswerCheck {
        status: check.status.clone(),
        contains: check
            .contains
            .as_ref()
            .map(|t| crate::steps::fill_template(t, vars)),
        json: check
            .json
            .iter()
            .map(|(path, value)| (path.clone(), fill_json(value, vars)))
            .collect(),
    }
}

/// A JSON value with every string in it templated.
fn fill_json(value: &Value, vars: &std::collections::HashMap<String, String>) -> Value {
    match value {
        Value::String(text) => Value::String(crate::steps::fill_template(text, vars)),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill_json(v, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill_json(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_checked_with_what_was_expected_and_what_came() {
        let check =
            |status: Vec<u16>, contains: Option<&str>, json: Vec<(&str, Value)>| AnswerCheck {
                status,
                contains: contains.map(str::to_string),
                json: json.into_iter().map(|(p, v)| (p.to_string(), v)).collect(),
            };
        let body = r#"{"user": {"id": 7}, "ok": true}"#;
        assert!(check_answer(&check(vec![], None, vec![]), Some(302), body).is_ok());
        let err = check_answer(&check(vec![], None, vec![]), Some(500), body).unwrap_err();
        assert!(err.to_string().contains("below 400, got 500"), "{err}");
        assert!(check_answer(&check(vec![404], None, vec![]), Some(404), body).is_ok());
        let err = check_answer(&check(vec![], Some("nope"), vec![]), Some(200), body);
        assert!(err.unwrap_err().to_string().contains("contain 'nope'"));
        let json_ok = check(vec![], None, vec![("$.user.id", json!(7))]);
        assert!(check_answer(&json_ok, None, body).is_ok());
        let json_bad = check(vec![], None, vec![("$.user.id", json!(8))]);
        let err = check_answer(&json_bad, None, body).unwrap_err().to_string();
        assert!(err.contains("$.user.id = 8, found 7"), "{err}");
        let err = check_answer(&json_ok, None, "<html>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a JSON body"), "{err}");
    }
}
