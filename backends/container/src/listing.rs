//! Listing the engine's liveload containers, read leniently.
//!
//! bollard reads a container's `State` into a closed enum of Docker's states, and podman's
//! compatible API answers states Docker does not have (`stopped`, `configured`): one such
//! container anywhere on the engine made the whole listing fail, and with it teardown's and
//! `cleanup`'s view of every node. liveload needs only names, labels and the status text, so
//! this module asks `GET /containers/json` itself over the engine's unix socket and reads just
//! those fields. Hand-written (a request line and a chunked-body decoder) because bollard has
//! no raw request and a second HTTP client for one call would cost more than these lines.

use std::collections::HashMap;
use std::path::Path;

use liveload_core::{BackendError, BackendErrorKind, Error};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A container as liveload lists it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Summary {
    /// Its names (`/name` on Docker, `name` on podman).
    #[serde(rename = "Names", default)]
    pub names: Vec<String>,
    /// Its labels.
    #[serde(rename = "Labels", default)]
    pub labels: Option<HashMap<String, String>>,
    /// The engine's words for its state (`Up 3 seconds`, `Exited (0) ...`).
    #[serde(rename = "Status", default)]
    pub status: String,
}

/// Every container (running or not) carrying `label` (`KEY` or `KEY=VALUE`).
pub async fn containers_labelled(socket: &Path, label: &str) -> Result<Vec<Summary>, Error> {
    let failed = |message: String| {
        Error::from(
            BackendError::new("container", BackendErrorKind::Unreachable, message).hint(
                "is the engine running? (Docker, or `podman system service`); check --container-socket / DOCKER_HOST",
            ),
        )
    };
    let filters = serde_json::json!({ "label": [label] }).to_string();
    let request = format!(
        "GET /v{}.{}/containers/json?all=true&filters={} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        crate::engine::API_VERSION.major_version,
        crate::engine::API_VERSION.minor_version,
        percent_encode(&filters)
    );
    let answer = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut stream = tokio::net::UnixStream::connect(socket).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    })
    .await
    .map_err(|_| failed("listing containers: the engine did not answer within 60 s".into()))?
    .map_err(|e| failed(format!("listing containers: {e}")))?;
    let (status, body) = parse_response(&answer)
        .ok_or_else(|| failed("listing containers: an answer that is not HTTP".into()))?;
    if status != 200 {
        return Err(failed(format!(
            "listing containers: the engine answered {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>()
        )));
    }
    serde_json::from_slice(&body).map_err(|e| failed(format!("listing containers: {e}")))
}

/// Everything but unreserved characters, percent-encoded (RFC 3986).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An HTTP/1.1 response's status and body (de-chunked when chunked); `None` if malformed.
fn parse_response(bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..split]).ok()?;
    let body = &bytes[split + 4..];
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    });
    Some((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        },
    ))
}

/// A chunked body's data.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(data);
        }
        data.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_states_docker_lacks_are_read() {
        let body = r#"[{"Id":"a","Names":["ll-run-0"],"State":"stopped","Status":"Exited (0) 2 seconds ago","Labels":{"io.liveload.run-id":"run"}},{"Names":["/x"],"State":"configured","Labels":null}]"#;
        let listed: Vec<Summary> = serde_json::from_str(body).unwrap();
        assert_eq!(listed[0].names, ["ll-run-0"]);
        assert_eq!(
            listed[0].labels.as_ref().unwrap()["io.liveload.run-id"],
            "run"
        );
        assert!(listed[1].labels.is_none());
    }

    #[test]
    fn chunked_and_plain_answers_parse() {
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[{}]\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((200, b"[{}]".to_vec())));
        let split =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\n[{\r\n2\r\n}]\r\n0\r\n\r\n";
        assert_eq!(parse_response(split), Some((200, b"[{}]".to_vec())));
        let plain = b"HTTP/1.1 500 Internal\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain), Some((500, b"{}".to_vec())));
        assert_eq!(parse_response(b"garbage"), None);
        let truncated = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nabc";
        assert_eq!(parse_response(truncated), None);
    }

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(
            percent_encode(r#"{"label":["a=b"]}"#),
            "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"
        );
    }

    proptest::proptest! {
        /// The engine's answer is read from a socket: any bytes are an answer or `None`.
        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_response(&bytes);
            let mut framed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = parse_response(&framed);
        }
    }
}
