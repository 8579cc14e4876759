//! A LiveView user's socket: one task per user owns the WebSocket, so the server's messages
//! are read (and its diffs merged) and heartbeats sent even while the user thinks between
//! steps, as a browser tab's JS client keeps its socket alive. The user talks to the task
//! through a channel (messages to send) and shared state (the merged tree, replies awaited,
//! what happened to the socket).
//!
//! Messages are Phoenix's serializer 2.0.0: `[join_ref, ref, topic, event, payload]`. The
//! task merges a reply's `diff` before handing the reply to the waiting user, and `diff`
//! messages as they arrive, so diffs apply in the order the server sent them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::rendered::Rendered;
use crate::protocol::ws::Stream;

/// Phoenix's heartbeat interval (its JS client's default; servers drop a socket after 60 s
/// without one).
const HEARTBEAT: Duration = Duration::from_secs(30);

/// A reply's payload when its status was `ok`, else the reason the server gave.
pub type Reply = Result<Value, String>;

/// A navigation the server asked for outside a reply (`push_patch`, `push_navigate`,
/// `redirect`).
#[derive(Debug, Clone, PartialEq)]
pub enum Navigation {
    /// `live_patch`: same LiveView, new URL.
    Patch(String),
    /// `live_redirect`: another LiveView, same socket.
    LiveRedirect(String),
    /// `redirect`: a full page load.
    Redirect(String),
}

/// What the user and the socket's task share.
#[derive(Default)]
pub struct ViewState {
    /// The joined view's tree (`None` before the join's reply).
    pub rendered: Option<Rendered>,
    /// Its HTML, made on demand and dropped at every merge.
    html: Option<Arc<str>>,
    /// The topic (`lv:ID`) and the current join's reference: messages of an older join are
    /// not this view's.
    pub topic: String,
    /// The current join's reference.
    pub join_ref: String,
    /// The reference of the join awaiting its reply: its `rendered` replaces the tree.
    pub joining: Option<String>,
    waiting: HashMap<String, oneshot::Sender<Reply>>,
    /// Why the socket or the view ended (`None` while it lives).
    pub closed: Option<String>,
    /// A navigation the server asked for, not yet followed.
    pub navigation: Option<Navigation>,
    /// Diffs received (replies' and pushed) and their messages' bytes, not yet counted.
    pub diffs: u64,
    /// Their bytes.
    pub diff_bytes: u64,
}

impl ViewState {
    /// The view's HTML (empty before the join).
    pub fn html(&mut self) -> Arc<str> {
        if self.html.is_none() {
            let html = self
                .rendered
                .as_ref()
                .map(Rendered::to_html)
                .unwrap_or_default();
            self.html = Some(html.into());
        }
        self.html.clone().expect("just made")
    }
}

/// Shared state and the signal of its changes.
#[derive(Default)]
pub struct Shared {
    /// The state.
    pub state: Mutex<ViewState>,
    /// Notified at every message that changed it.
    pub changed: Notify,
}

impl Shared {
    /// The state, even if a panic poisoned its lock (it holds no invariant a panic breaks).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, ViewState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The user's end of the socket.
pub struct LiveSocket {
    outgoing: mpsc::UnboundedSender<Message>,
    /// What the task keeps up to date.
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    next_ref: u64,
}

impl Drop for LiveSocket {
    fn drop(&mut self) {
        // Dropping the task's stream closes the connection.
        self.task.abort();
    }
}

impl LiveSocket {
    /// Start the task on an open socket.
    pub fn start(stream: Stream) -> LiveSocket {
        let (outgoing, queued) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(pump(stream, queued, shared.clone()));
        LiveSocket {
            outgoing,
            shared,
            task,
            next_ref: 0,
        }
    }

    /// A fresh message reference.
    pub fn next_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    /// Send `[join_ref, ref, topic, event, payload]` and wait for its reply.
    pub async fn call(
        &mut self,
        (join_ref, r#ref): (&str, &str),
        (topic, event): (&str, &str),
        payload: Value,
        timeout: Duration,
    ) -> anyhow::Result<Reply> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if let Some(reason) = &state.closed {
                anyhow::bail!("{reason}");
            }
            state.waiting.insert(r#ref.to_string(), tx);
        }
        let message = json!([join_ref, r#ref, topic, event, payload]).to_string();
        self.outgoing
            .send(Message::text(message))
            .map_err(|_| anyhow::anyhow!("the LiveView socket is closed"))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => {
                let reason = self.shared.lock().closed.clone();
                Err(anyhow::anyhow!(
                    "{}",
                    reason.unwrap_or_else(|| "the LiveView socket closed".into())
                ))
            }
            Err(_) => {
                self.shared.lock().waiting.remove(r#ref);
                Err(anyhow::anyhow!("no reply to '{event}' within {timeout:?}"))
            }
        }
    }
}

/// The task: read and apply the server's messages, send the user's, beat the heart.
async fn pump(
    mut stream: Stream,
    mut queued: mpsc::UnboundedReceiver<Message>,
    shared: Arc<Shared>,
) {
    let start = tokio::time::Instant::now() + HEARTBEAT;
    let mut heartbeat = tokio::time::interval_at(start, HEARTBEAT);
    let mut beats = 0u64;
    let ended = loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => receive(&shared, &text),
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => break "the server closed the LiveView socket".to_string(),
                Some(Err(e)) => break format!("the LiveView socket failed: {e}"),
            },
            out = queued.recv() => match out {
                Some(message) => {
                    if let Err(e) = stream.send(message).await {
                        break format!("the LiveView socket failed: {e}");
                    }
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), stream.close(None)).await;
                    return;
                }
            },
            _ = heartbeat.tick() => {
                beats += 1;
                let beat = json!([null, format!("hb{beats}"), "phoenix", "heartbeat", {}]);
                if let Err(e) = stream.send(Message::text(beat.to_string())).await {
                    break format!("the LiveView socket failed: {e}");
                }
            }
        }
    };
    let mut state = shared.lock();
    state.closed.get_or_insert(ended);
    state.waiting.clear(); // Their senders dropped: every waiting call learns the socket closed.
    drop(state);
    shared.changed.notify_waiters();
}

/// Apply one server message.
fn receive(shared: &Shared, text: &str) {
    let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(text) else {
        return; // Not a channel message: nothing a LiveView client would act on.
    };
    let [join_ref, r#ref, topic, event, payload] =
        <[Value; 5]>::try_from(parts).unwrap_or_default();
    let as_text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let (join_ref, r#ref) = (as_text(&join_ref), as_text(&r#ref));
    let mut state = shared.lock();
    let current = topic.as_str() == Some(state.topic.as_str()) && join_ref == state.join_ref;
    match event.as_str().unwrap_or_default() {
        "phx_reply" => reply(&mut state, (&r#ref, current), payload, text.len()),
        "diff" if current => {
            if let Some(rendered) = state.rendered.as_mut() {
                rendered.merge(payload);
            }
            state.html = None;
            state.diffs += 1;
            state.diff_bytes += text.len() as u64;
        }
        "phx_error" if current => {
            state.closed = Some("the LiveView crashed on the server (phx_error)".into());
            state.waiting.clear();
        }
        "phx_close" if current => {
            state.closed = Some("the server closed the LiveView (phx_close)".into());
            state.waiting.clear();
        }
        "live_patch" if current => state.navigation = Some(Navigation::Patch(to(&payload))),
        "live_redirect" if current => {
            state.navigation = Some(Navigation::LiveRedirect(to(&payload)))
        }
        "redirect" if current => state.navigation = Some(Navigation::Redirect(to(&payload))),
        _ => return,
    }
    drop(state);
    shared.changed.notify_waiters();
}

/// [`receive`], for the property tests.
#[cfg(test)]
pub fn receive_for_test(shared: &Shared, text: &str) {
    receive(shared, text);
}

/// A navigation's target (`to`).
fn to(payload: &Value) -> String {
    payload["to"].as_str().unwrap_or_default().to_string()
}

/// A `phx_reply`: the join's tree, or the reply's diff, applied before its waiter hears. A
/// reply to a push given up on (its step timed out) still brings its diff: later diffs build
/// on it.
fn reply(state: &mut ViewState, (r#ref, current): (&str, bool), payload: Value, bytes: usize) {
    let Some(waiter) = state.waiting.remove(r#ref) else {
        let late_diff = payload["response"].get("diff").cloned();
        if let (true, "ok", Some(diff)) =
            (current, payload["status"].as_str().unwrap_or(""), late_diff)
            && state.joining.is_none()
            && let Some(rendered) = state.rendered.as_mut()
        {
            rendered.merge(diff);
            state.html = None;
            state.diffs += 1;
            state.diff_bytes += bytes as u64;
        }
        return; // A heartbeat's, or one given up on.
    };
    if payload["status"].as_str() != Some("ok") {
        let reason = match &payload["response"]["reason"] {
            Value::String(reason) => reason.clone(),
            Value::Null => payload["status"].to_string(),
            other => other.to_string(),
        };
        let _ = waiter.send(Err(reason));
        return;
    }
    let mut response = payload["response"].clone();
    if state.joining.as_deref() == Some(r#ref) {
        state.joining = None;
        state.rendered = Some(Rendered::new(response["rendered"].take()));
        state.html = None;
    } else if let Some(diff) = response.get_mut("diff").map(Value::take) {
        if let Some(rendered) = state.rendered.as_mut() {
            rendered.merge(diff);
        }
        state.html = None;
        state.diffs += 1;
        state.diff_bytes += bytes as u64;
    }
    let _ = waiter.send(Ok(response));
}
