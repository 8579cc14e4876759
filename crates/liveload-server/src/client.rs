//! The HTTP plumbing every client of the API shares (the CLI's `--server` commands and
//! [`crate::control::ControlClient`]): one `reqwest` client, and one reading of answers that
//! turns an [`crate::control::ErrorBody`] into an error with the server's own message.

use liveload_core::Error;

/// The HTTP client: bounded connect time, and no proxy — a bearer token goes to the server
/// named, never through an `HTTPS_PROXY` the environment happens to set. (A follow request or
/// an event stream may legitimately last long, so there is no whole-request timeout.)
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Refuse to send a token in clear beyond this machine: `http://` only to a loopback host.
pub fn check_server_url(url: &str) -> Result<(), Error> {
    let invalid = |message: String| Error::InvalidOption {
        option: "--server".into(),
        message,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(format!("'{url}': {e}")))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(invalid(format!(
            "'{url}' is plain HTTP to another machine: the token would cross the network in \
             clear; use https:// (the server's --tls-cert)"
        ))),
        other => Err(invalid(format!("'{url}': {other}:// is not http(s)"))),
    }
}

/// Decode a JSON answer, or the server's error as [`Error::ServerRefused`] with its code,
/// message and exit code.
pub async fn decode<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, Error> {
    let text = read(response).await?;
    serde_json::from_str(&text).map_err(|e| Error::RunFailed {
        message: format!("the server answered something else ({e}): {text:.200}"),
    })
}

/// A successful answer's body as it is (a report's HTML), or the server's error as
/// [`Error::ServerRefused`] with its code, message and exit code.
pub async fn read(response: reqwest::Response) -> Result<String, Error> {
    let status = response.status();
    let text = response.text().await.map_err(|e| Error::RunFailed {
        message: format!("reading the server's answer: {e}"),
    })?;
    if status.is_success() {
        return Ok(text);
    }
    let body = serde_json::from_str::<crate::control::ErrorBody>(&text).unwrap_or_else(|_| {
        crate::control::ErrorBody::new("unexpected_answer", format!("{text:.200}"))
    });
    let location = match (body.line, body.column) {
        (Some(line), Some(column)) => format!(" (line {line}, column {column})"),
        _ => String::new(),
    };
    Err(Error::ServerRefused {
        status: status.as_u16(),
        code: body.error,
        message: format!("{}{location}", body.message),
        exit_code: body
            .exit_code
            .unwrap_or(liveload_core::error::exit_code::RUN_FAILED),
    })
}
