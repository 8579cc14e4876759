//! The HTTP plumbing every client of the API shares (the CLI's `--server` commands and
//! [`crate::control::ControlClient`]): one `reqwest` client, and one reading of answers that
//! turns an [`crate::control::ErrorBody`] into an error with the server's own message.

use liveload_core::Error;

/// The HTTP client (rustls, the platform's roots, no proxy surprises).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Decode a JSON answer, or the server's error as an [`Error::RunFailed`] carrying its code
/// and message.
pub async fn decode<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, Error> {
    let fail = |message: String| Error::RunFailed { message };
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| fail(format!("reading the server's answer: {e}")))?;
    if status.is_success() {
        return serde_json::from_str(&text).map_err(|e| {
            fail(format!(
                "the server answered something else ({e}): {text:.200}"
            ))
        });
    }
    match serde_json::from_str::<crate::control::ErrorBody>(&text) {
        Ok(body) => Err(fail(format!(
            "the server refused ({} {}): {}{}",
            status.as_u16(),
            body.error,
            body.message,
            match (body.line, body.column) {
                (Some(line), Some(column)) => format!(" (line {line}, column {column})"),
                _ => String::new(),
            }
        ))),
        Err(_) => Err(fail(format!("the server answered {status}: {text:.200}"))),
    }
}
