//! Chromium's DevTools pipe, offered to chromiumoxide as a one-client WebSocket.
//!
//! Chromium started with `--remote-debugging-pipe` reads commands from its descriptor 3 and
//! writes answers and events to its descriptor 4, each message one JSON document ended by a
//! NUL byte, and opens no TCP port at all. chromiumoxide 0.9 speaks only WebSocket, so this
//! module serves one on 127.0.0.1 and copies messages between the two:
//!
//! - the only path answered is `/devtools/browser/<256 random bits>`; a connection asking for
//!   anything else (`/json/version` included) is closed without a byte in reply;
//! - the first connection with the right path is the one client: the listener is closed the
//!   moment it is upgraded, so for the rest of the run no DevTools port exists on the node;
//! - everything the agent does with the browser goes through that one connection.
//!
//! Why not a crate: no released CDP client for Rust speaks the pipe (chromiumoxide's pipe
//! support is an open pull request), and the relay is small.

use std::time::Duration;

use anyhow::{Context as _, Result};
use futures_util::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use subtle::ConstantTimeEq as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::unix::pipe;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// How long a connection to the relay has to send its request line before it is dropped, so a
/// local process that connects and says nothing cannot hold a slot.
const REQUEST_LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request line the relay reads (its own path is ~70 characters).
const MAX_REQUEST_LINE: usize = 512;

/// The relay: the WebSocket URL to give chromiumoxide, and the task that copies messages.
pub struct Relay {
    /// `ws://127.0.0.1:PORT/devtools/browser/<secret>`.
    pub url: String,
    /// Commands sent to Chromium around chromiumoxide (see [`SideChannel`]).
    pub side: SideChannel,
    task: JoinHandle<()>,
}

/// The first id of the relay's own commands: far above any id chromiumoxide counts to (it
/// starts at 0 and adds one per command), so their answers are told apart by id alone; and
/// below 2^31, as Chromium reads a command's id as a 32-bit integer (a larger one is refused
/// without an id to answer to).
const SIDE_IDS_FROM: u64 = 1 << 30;

/// A command to Chromium that does not pass through chromiumoxide.
///
/// Why: chromiumoxide 0.9 takes every `Page.navigate` a page sends as one of its own
/// navigations, queues it behind the page's previous one and sends it only once that one has
/// completed by its own bookkeeping or its 30 s deadline passed. liveload's navigation ends on
/// its own evidence (the `load` event, the new document's `readyState`); when chromiumoxide's
/// bookkeeping missed a completion (seen under load), the page's next navigation waited out
/// that deadline with the old document still in place. Sent here, a navigation goes at once;
/// its events still reach chromiumoxide as those of any navigation the page starts itself.
#[derive(Clone)]
pub struct SideChannel {
    calls: mpsc::Sender<SideCall>,
}

struct SideCall {
    session_id: String,
    method: &'static str,
    params: serde_json::Value,
    answer: tokio::sync::oneshot::Sender<serde_json::Value>,
}

impl SideChannel {
    /// Send `method` with `params` to the target of `session_id`; its `result`, or its error's
    /// message as the error.
    pub async fn call(
        &self,
        session_id: &str,
        method: &'static str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let call = SideCall {
            session_id: session_id.to_string(),
            method,
            params,
            answer,
        };
        self.calls
            .send(call)
            .await
            .map_err(|_| anyhow::anyhow!("the DevTools relay is closed"))?;
        let mut answer = answered.await.map_err(|_| {
            anyhow::anyhow!("the DevTools relay closed before {method} was answered")
        })?;
        if let Some(error) = answer.get("error") {
            let message = error["message"]
                .as_str()
                .unwrap_or("an error without a message");
            anyhow::bail!("{method}: {message}");
        }
        Ok(answer
            .get_mut("result")
            .map(serde_json::Value::take)
            .unwrap_or_default())
    }
}

/// The id of an answer to one of the relay's own commands. Chromium writes an answer's `id`
/// first, so only that prefix is read: the events and chromiumoxide's answers, nearly every
/// message, pass without being parsed.
fn side_answer_id(message: &[u8]) -> Option<u64> {
    let digits = message.strip_prefix(b"{\"id\":")?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    let id: u64 = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
    (id >= SIDE_IDS_FROM).then_some(id)
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Closing the relay closes the pipe to Chromium, which then exits by itself.
        self.task.abort();
    }
}

/// Serve the WebSocket side of Chromium's pipe: `to_chromium` is the write end of the pipe
/// Chromium reads as descriptor 3, `from_chromium` the read end of its descriptor 4.
pub async fn start(to_chromium: pipe::Sender, from_chromium: pipe::Receiver) -> Result<Relay> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("listening for the DevTools relay")?;
    let port = listener.local_addr()?.port();
    let secret: [u8; 32] = rand::rng().random();
    let path = format!("/devtools/browser/{}", hex(&secret));
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (calls, side_calls) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        let Some(client) = one_client(listener, &path).await else {
            return;
        };
        // CDP is many small messages each way: Nagle's algorithm would hold one back for the
        // peer's delayed ACK (tens of milliseconds on loopback) whenever another is in flight.
        let _ = client.set_nodelay(true);
        let ws = match tokio_tungstenite::accept_async(client).await {
            Ok(ws) => ws,
            Err(e) => {
                tracing::warn!(error = %e, "the DevTools relay's client failed its upgrade");
                return;
            }
        };
        relay(ws, (to_chromium, side_calls), from_chromium).await;
    });
    Ok(Relay {
        url,
        side: SideChannel { calls },
        task,
    })
}

/// Accept connections until one asks for `path`, then stop listening (dropping the listener
/// closes the port). Each connection is judged in its own task, so a silent one cannot delay
/// the right client.
async fn one_client(listener: TcpListener, path: &str) -> Option<TcpStream> {
    let expected = format!("GET {path} HTTP/1.1").into_bytes();
    let (found, mut found_rx) = mpsc::channel::<TcpStream>(1);
    let mut judges = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, most likely: wait instead of spinning on the error.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let (expected, found) = (expected.clone(), found.clone());
                judges.spawn(async move {
                    let line = tokio::time::timeout(REQUEST_LINE_TIMEOUT, request_line(&stream));
                    if let Ok(Some(line)) = line.await
                        && bool::from(line.as_slice().ct_eq(&expected))
                    {
                        let _ = found.send(stream).await;
                    }
                    // Anything else is dropped here: closed without an answer.
                });
            }
            Some(stream) = found_rx.recv() => return Some(stream),
            Some(_) = judges.join_next(), if !judges.is_empty() => {}
        }
    }
}

/// The request's first line, read without consuming it (`peek`), so the WebSocket handshake
/// still sees the whole request. `None` when the peer hangs up or the line is too long.
async fn request_line(stream: &TcpStream) -> Option<Vec<u8>> {
    let mut buf = [0u8; MAX_REQUEST_LINE];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[..n].windows(2).position(|w| w == b"\r\n") {
            return Some(buf[..end].to_vec());
        }
        if n == buf.len() {
            return None;
        }
        if n == seen {
            // `peek` returns at once while old bytes wait unread: pause for new ones instead
            // of spinning (the right client sends its whole request in one write).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen = n;
    }
}

/// Copy messages both ways until either side ends; send the side channel's commands and hand
/// their answers back.
async fn relay<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    (mut to_chromium, mut side_calls): (pipe::Sender, mpsc::Receiver<SideCall>),
    mut from_chromium: pipe::Receiver,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let waiting = std::sync::Mutex::new(std::collections::HashMap::new());
    let commands = async {
        let mut next_side_id = SIDE_IDS_FROM;
        loop {
            let mut bytes = tokio::select! {
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => continue, // Pings are answered by tungstenite itself.
                },
                Some(call) = side_calls.recv() => {
                    let id = next_side_id;
                    next_side_id = if id >= i32::MAX as u64 { SIDE_IDS_FROM } else { id + 1 };
                    let command = serde_json::json!({
                        "id": id, "sessionId": call.session_id, "method": call.method, "params": call.params,
                    });
                    waiting.lock().expect("not poisoned").insert(id, call.answer);
                    command.to_string().into_bytes()
                }
            };
            bytes.push(0);
            if to_chromium.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    let answers = async {
        let mut messages = NulSplitter::default();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match from_chromium.read(&mut chunk).await {
                Ok(0) | Err(_) => break, // Chromium exited.
                Ok(n) => n,
            };
            // Everything one read brought goes out in one write: `feed` queues, `flush` sends.
            for message in messages.push(&chunk[..n]) {
                if let Some(id) = side_answer_id(&message) {
                    let caller = waiting.lock().expect("not poisoned").remove(&id);
                    if let (Some(caller), Ok(answer)) = (caller, serde_json::from_slice(&message)) {
                        let _ = caller.send(answer);
                    }
                    continue;
                }
                let text = String::from_utf8(message)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                if sink.feed(Message::text(text)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    };
    // Either side ending ends the relay; dropping the pipe ends tell Chromium to exit.
    tokio::select! {
        _ = commands => {}
        _ = answers => {}
    }
}

/// Cuts a byte stream into NUL-terminated messages.
#[derive(Default)]
struct NulSplitter {
    pending: Vec<u8>,
}

impl NulSplitter {
    /// Add bytes; return every message they complete, in order, without their NUL.
    fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut done = Vec::new();
        let mut rest = bytes;
        // Only the new bytes are searched: a large answer (a screenshot) arriving in many
        // chunks is scanned once, not once per chunk.
        while let Some(end) = rest.iter().position(|&b| b == 0) {
            self.pending.extend_from_slice(&rest[..end]);
            done.push(std::mem::take(&mut self.pending));
            rest = &rest[end + 1..];
        }
        self.pending.extend_from_slice(rest);
        done
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a local process gets for `request` on the relay's port: every byte until the
    /// relay closes the connection.
    async fn answer_to(port: u16, request: &str) -> Vec<u8> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
        read.await.expect("the relay closes the connection").ok();
        answer
    }

    /// The relay answers only its secret path, once: other paths (`/json/version`, a near
    /// miss) get no byte at all, the right one gets a WebSocket whose messages cross the pipe
    /// NUL-terminated both ways, and then the port is closed.
    #[tokio::test]
    async fn only_the_secret_path_is_answered_and_only_once() {
        // A stand-in for Chromium: the other ends of the two pipes.
        let (to_chromium, mut chromium_reads) = pipe::pipe().unwrap();
        let (mut chromium_writes, from_chromium) = pipe::pipe().unwrap();
        let relay = start(to_chromium, from_chromium).await.unwrap();
        let url = relay.url.clone();
        let rest = url.strip_prefix("ws://127.0.0.1:").unwrap();
        let (port, path) = rest.split_at(rest.find('/').unwrap());
        let port: u16 = port.parse().unwrap();
        assert!(path.len() > "/devtools/browser/".len() + 60, "{path}");
        let near_miss = &path[..path.len() - 1];
        for wrong in ["/json/version", "/json", near_miss, "/"] {
            let request = format!("GET {wrong} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            assert_eq!(answer_to(port, &request).await, b"", "{wrong} was answered");
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        ws.send(Message::text(r#"{"id":1,"method":"Browser.getVersion"}"#))
            .await
            .unwrap();
        let mut command = vec![0u8; 64];
        let n = chromium_reads.read(&mut command).await.unwrap();
        assert_eq!(
            &command[..n],
            b"{\"id\":1,\"method\":\"Browser.getVersion\"}\0"
        );
        chromium_writes
            .write_all(b"{\"id\":1,\"result\":{}}\0{\"method\":\"Target.x\"}\0")
            .await
            .unwrap();
        for expected in [r#"{"id":1,"result":{}}"#, r#"{"method":"Target.x"}"#] {
            let message = ws.next().await.unwrap().unwrap();
            assert_eq!(message, Message::text(expected));
        }
        let refused = TcpStream::connect(("127.0.0.1", port)).await;
        assert!(
            refused.is_err(),
            "the relay stops listening once its client is in"
        );
        // Chromium gone (its pipe closed): the relay closes the WebSocket.
        drop(chromium_writes);
        let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        assert!(
            matches!(end, Ok(None | Some(Ok(Message::Close(_))))),
            "{end:?}"
        );
    }

    /// The side channel's command reaches Chromium with its own id and the page's session;
    /// its answer goes back to the caller, not to chromiumoxide, which still gets the events.
    #[tokio::test]
    async fn side_channel_commands_are_answered_to_their_caller_alone() {
        let (to_chromium, mut chromium_reads) = pipe::pipe().unwrap();
        let (mut chromium_writes, from_chromium) = pipe::pipe().unwrap();
        let relay = start(to_chromium, from_chromium).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::connect_async(&relay.url).await.unwrap();
        let side = relay.side.clone();
        let call = tokio::spawn(async move {
            let params = serde_json::json!({ "url": "http://x/" });
            side.call("S1", "Page.navigate", params).await
        });
        let mut command = vec![0u8; 256];
        let n = chromium_reads.read(&mut command).await.unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&command[..n - 1]).unwrap();
        assert_eq!(command[n - 1], 0);
        assert_eq!(sent["sessionId"], "S1");
        assert_eq!(sent["method"], "Page.navigate");
        assert_eq!(sent["params"]["url"], "http://x/");
        let id = sent["id"].as_u64().unwrap();
        assert!(id >= SIDE_IDS_FROM, "{id}");
        let answer = format!(
            "{{\"id\":{id},\"result\":{{\"frameId\":\"F\"}},\"sessionId\":\"S1\"}}\0{{\"method\":\"Page.frameStartedLoading\"}}\0"
        );
        chromium_writes.write_all(answer.as_bytes()).await.unwrap();
        let result = call.await.unwrap().unwrap();
        assert_eq!(result, serde_json::json!({ "frameId": "F" }));
        let message = ws.next().await.unwrap().unwrap();
        assert_eq!(
            message,
            Message::text(r#"{"method":"Page.frameStartedLoading"}"#)
        );
        // A small id is chromiumoxide's own: never taken for the side channel's.
        assert_eq!(side_answer_id(b"{\"id\":7,\"result\":{}}"), None);
        assert_eq!(side_answer_id(b"{\"method\":\"x\"}"), None);
    }

    #[test]
    fn messages_are_cut_at_nul_bytes_across_chunks() {
        let mut s = NulSplitter::default();
        assert!(s.push(b"{\"id\"").is_empty());
        let out = s.push(b":1}\0{\"id\":2}\0{\"i");
        assert_eq!(out, vec![b"{\"id\":1}".to_vec(), b"{\"id\":2}".to_vec()]);
        assert_eq!(s.push(b"d\":3}\0"), vec![b"{\"id\":3}".to_vec()]);
        assert!(s.push(b"").is_empty());
    }
}
