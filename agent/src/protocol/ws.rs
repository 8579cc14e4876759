//! A protocol user's WebSocket: `ws_connect`, `ws_send`, `ws_expect`, `ws_close`.
//!
//! The handshake carries the user's cookies (what its HTTP requests were given), as a
//! browser's would. `ws_expect` reads messages until one passes its check, skipping the
//! others (a server's pushes between a request and its reply); the time from the user's last
//! `ws_send` to that message is `ws.reply`. `wss://` is refused with a message for now (the
//! WebSocket client is built without TLS).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use liveload_proto::AnswerCheck;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use super::{check_answer, fill_check, protocol_of};
use crate::steps::UserState;

/// An open socket and when the user last sent on it.
pub struct Socket {
    stream: Stream,
    last_sent: Option<Instant>,
}

/// A socket to a protocol user's server.
pub type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `ws_connect`: open the user's socket (closing one already open).
pub async fn ws_connect(user: &mut UserState<'_>, url: &str, timeout: Duration) -> Result<()> {
    let url =
        crate::steps::resolve_url(user.base_url, &crate::steps::fill_template(url, &user.vars));
    let recorder = user.recorder;
    let protocol = protocol_of(user)?;
    if let Some(old) = protocol.ws.take() {
        close(old).await;
    }
    let stream = open(protocol, &url, timeout)
        .await
        .map_err(|e| e.context("ws_connect"))?;
    recorder.count("ws.connections", 1);
    protocol.ws = Some(Socket {
        stream,
        last_sent: None,
    });
    Ok(())
}

/// Open a WebSocket to `url` (`ws://` or `http://`), the user's cookies in its handshake.
pub async fn open(protocol: &super::ProtocolUser, url: &str, timeout: Duration) -> Result<Stream> {
    // Errors name the URL without its query, which may carry tokens (LiveView's CSRF token)
    // and would make every user's message distinct.
    let shown = url.split(['?', '#']).next().unwrap_or_default().to_string();
    let (http_url, ws_url) = match url.split_once("://") {
        Some(("http" | "ws", rest)) => (format!("http://{rest}"), format!("ws://{rest}")),
        Some(("https" | "wss", _)) => bail!("{shown}: wss:// is not supported yet"),
        _ => bail!("{shown}: not an http(s) or ws URL"),
    };
    let mut request = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| anyhow!("{shown}: {e}"))?;
    if let Ok(parsed) = url::Url::parse(&http_url)
        && let Some(cookies) = reqwest::cookie::CookieStore::cookies(&*protocol.jar, &parsed)
    {
        request.headers_mut().insert("cookie", cookies);
    }
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true);
    let (stream, _) = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| anyhow!("{shown}: no handshake within {timeout:?}"))?
        .map_err(|e| anyhow!("{shown}: {e}"))?;
    Ok(stream)
}

/// A protocol user's socket buffers. tungstenite allocates a 128 KiB read buffer per socket
/// up front and gathers writes into another: at thousands of users per node that was nearly
/// all of a user's memory (`liveload bench protocol`: 131 KiB per idle user). A 4 KiB read
/// chunk still takes messages of any size (they are assembled apart), and messages are written
/// as they are sent.
/// Messages and frames are capped at what a user keeps of an HTTP answer
/// ([`MAX_KEPT_BODY`](super::MAX_KEPT_BODY)): tungstenite's 64 MiB default would let one
/// server message take a node's memory sized at 256 KiB a user.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(super::MAX_KEPT_BODY))
        .max_frame_size(Some(super::MAX_KEPT_BODY))
}

/// How long closing a socket may take (a server that stops reading must not hold the user).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Close `socket`, giving up after [`CLOSE_TIMEOUT`] (dropping it closes the connection).
async fn close(mut socket: Socket) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.stream.close(None)).await;
}

/// The user's open socket.
fn socket<'p>(protocol: &'p mut super::ProtocolUser, step: &str) -> Result<&'p mut Socket> {
    protocol
        .ws
        .as_mut()
        .ok_or_else(|| anyhow!("{step}: no WebSocket is open (ws_connect first)"))
}

/// `ws_send`: one text message, sent within `timeout` (a server that stops reading fills the
/// socket's buffers).
pub async fn ws_send(user: &mut UserState<'_>, text: &str, timeout: Duration) -> Result<()> {
    let text = crate::steps::fill_template(text, &user.vars);
    let recorder = user.recorder;
    let socket = socket(protocol_of(user)?, "ws_send")?;
    let bytes = text.len() as u64;
    // `ws.reply` counts from the moment the message goes out: the server may have it (and
    // start answering) before this task sees its send completed.
    let sending = Instant::now();
    tokio::time::timeout(timeout, socket.stream.send(Message::text(text)))
        .await
        .map_err(|_| anyhow!("ws_send: not sent within {timeout:?}"))?
        .map_err(|e| anyhow!("ws_send: {e}"))?;
    socket.last_sent = Some(sending);
    recorder.count("ws.frames_sent", 1);
    recorder.count("ws.bytes_sent", bytes);
    Ok(())
}

/// `ws_expect`: read until a message passes `expect`, or fail at `timeout`.
pub async fn ws_expect(
    user: &mut UserState<'_>,
    expect: &AnswerCheck,
    timeout: Duration,
) -> Result<()> {
    let expect = fill_check(expect, &user.vars);
    let recorder = user.recorder;
    let protocol = protocol_of(user)?;
    let socket = socket(protocol, "ws_expect")?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_seen: Option<String> = None;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.stream.next()).await;
        let message = match next {
            Err(_) => {
                let seen = last_seen.map_or("no message".to_string(), |m| {
                    format!("the last was: {}", m.chars().take(200).collect::<String>())
                });
                bail!("ws_expect: no matching message within {timeout:?} ({seen})");
            }
            Ok(None) => bail!("ws_expect: the server closed the socket"),
            Ok(Some(Err(e))) => bail!("ws_expect: {e}"),
            Ok(Some(Ok(message))) => message,
        };
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Message::Close(_) => bail!("ws_expect: the server closed the socket"),
            _ => continue,
        };
        recorder.count("ws.frames_received", 1);
        recorder.count("ws.bytes_received", text.len() as u64);
        if check_answer(&expect, None, &text).is_ok() {
            if let Some(sent) = socket.last_sent.take() {
                recorder.latency("ws.reply", sent.elapsed());
            }
            protocol.last_ws = Some(text);
            return Ok(());
        }
        last_seen = Some(text);
    }
}

/// `ws_close`: close the user's socket (nothing to do when none is open).
pub async fn ws_close(user: &mut UserState<'_>) -> Result<()> {
    if let Some(socket) = protocol_of(user)?.ws.take() {
        close(socket).await;
    }
    Ok(())
}
