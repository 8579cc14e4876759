//! The agent's port, up to login: accepting connections, TLS, the WebSocket upgrade and the
//! `Hello`, under limits that bound what a stranger who cannot log in may cost.
//!
//! - **One deadline** ([`PREAUTH_DEADLINE`]) covers TLS, the upgrade and the `Hello` together,
//!   so a client that trickles its bytes (slowloris) is cut off like a silent one.
//! - **At most [`MAX_PENDING`] connections wait for login.** At the cap, the oldest pending
//!   connection is closed to make room if it has waited [`EVICT_AFTER`] or more (a real
//!   controller logs in within milliseconds, so the oldest is an idler); otherwise the new
//!   connection is closed at once. Idle connections therefore cannot lock the controller out,
//!   and a burst of new ones cannot push out a login in progress.
//! - **Accept errors back off** (10 ms doubling to 1 s): out of descriptors, `accept` fails at
//!   once for as long as the backlog holds connections, and retrying at once would spin.
//! - **Frames are small until login** ([`PREAUTH_FRAME_BYTES`]); the authenticated controller
//!   gets `MAX_FRAME_BYTES`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use liveload_proto::{
    AgentMessage, ControllerMessage, HELLO_TIMEOUT_MS, MAX_FRAME_BYTES, PROTOCOL_VERSION,
    Rejection, decode_controller, encode,
};
use subtle::ConstantTimeEq as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::AgentState;

/// The time from accept to a checked `Hello`: TLS, upgrade and `Hello` together.
pub const PREAUTH_DEADLINE: Duration = Duration::from_millis(HELLO_TIMEOUT_MS);
/// The most connections waiting for login at once.
pub const MAX_PENDING: usize = 64;
/// At the cap, a pending connection this old is closed to make room for a new one.
pub const EVICT_AFTER: Duration = Duration::from_secs(1);
/// The largest frame or message before login: a `Hello` is a few hundred bytes.
pub const PREAUTH_FRAME_BYTES: usize = 64 * 1024;
/// The first and the longest pause after a failed `accept`.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Accept connections forever, each in its own task.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AgentState>,
) {
    let pending = Pending::default();
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => {
                backoff = ACCEPT_BACKOFF.0;
                conn
            }
            Err(e) => {
                tracing::warn!(error = %e, pause = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let Some(slot) = pending.admit() else {
            tracing::debug!(%peer, "too many connections waiting for login: closed");
            continue; // Dropping the stream closes it.
        };
        stream.set_nodelay(true).ok();
        let (tls, state) = (tls.clone(), state.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, tls, state, slot).await {
                tracing::warn!(%peer, error = %format!("{e:#}"), "connection ended");
            }
        });
    }
}

/// One connection: log in within the deadline (unless evicted), then serve the controller.
async fn connection(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AgentState>,
    mut slot: Slot,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + PREAUTH_DEADLINE;
    let Some(acceptor) = tls else {
        return admit(stream, state, slot, deadline).await;
    };
    let stream = tokio::select! {
        accepted = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => match accepted {
            Ok(stream) => stream?,
            Err(_) => return Ok(()), // Past the deadline: closed.
        },
        _ = slot.evicted() => return Ok(()),
    };
    admit(stream, state, slot, deadline).await
}

/// Upgrade and check the `Hello` within what is left of the deadline; then leave the pending
/// set and serve the controller.
async fn admit<S>(
    stream: S,
    state: Arc<AgentState>,
    mut slot: Slot,
    deadline: Instant,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let authenticated = tokio::select! {
        result = tokio::time::timeout_at(deadline, authenticate(stream, &state)) => match result {
            Ok(result) => result?,
            Err(_) => {
                tracing::debug!("a connection missed the login deadline: closed");
                return Ok(());
            }
        },
        _ = slot.evicted() => return Ok(()),
    };
    drop(slot);
    let Some((ws, busy)) = authenticated else {
        return Ok(());
    };
    crate::session::serve(ws, busy, state).await
}

/// The WebSocket upgrade and the `Hello`, read with the small pre-login frame limit. On
/// success, the stream comes back re-wrapped with the full frame limit.
async fn authenticate<S>(
    stream: S,
    state: &Arc<AgentState>,
) -> anyhow::Result<Option<(WebSocketStream<S>, BusyGuard)>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let small = WebSocketConfig::default()
        .max_message_size(Some(PREAUTH_FRAME_BYTES))
        .max_frame_size(Some(PREAUTH_FRAME_BYTES));
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(small)).await?;
    let hello = match ws.next().await {
        None | Some(Ok(Message::Close(_))) => {
            // A readiness probe (or a port scan) hung up without a word: nothing to refuse.
            tracing::debug!("a connection closed before its Hello");
            return Ok(None);
        }
        Some(Ok(Message::Text(text))) => decode_controller(text.as_bytes()).ok(),
        Some(Ok(Message::Binary(bytes))) => decode_controller(&bytes).ok(),
        Some(Ok(_)) => None, // A ping or pong first: not a Hello.
        Some(Err(e)) => {
            // A frame over the pre-login limit, or a broken stream: closed, nothing said.
            tracing::debug!(error = %e, "a connection failed before its Hello");
            return Ok(None);
        }
    };
    let verdict = match hello {
        Some(ControllerMessage::Hello {
            protocol_version,
            token,
            ..
        }) => check_hello(state, protocol_version, &token),
        _ => Err(Rejection::ExpectedHello),
    };
    let busy = match verdict {
        Ok(busy) => busy,
        Err(reason) => {
            tracing::warn!(%reason, "refused a controller");
            let refusal = encode(&AgentMessage::Rejected { reason });
            let _ = ws.send(Message::text(refusal)).await;
            let _ = ws.close(None).await;
            return Ok(None);
        }
    };
    // tokio-tungstenite cannot change a stream's limits, so take the raw stream back and wrap
    // it anew. Nothing is lost in between: the controller sends nothing after its `Hello`
    // until it reads our `Welcome`, so no byte waits in the old wrapper's buffer.
    let big = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let ws = WebSocketStream::from_raw_socket(ws.into_inner(), Role::Server, Some(big)).await;
    Ok(Some((ws, busy)))
}

fn check_hello(
    state: &Arc<AgentState>,
    protocol_version: u32,
    token: &str,
) -> Result<BusyGuard, Rejection> {
    if protocol_version != PROTOCOL_VERSION {
        return Err(Rejection::ProtocolMismatch {
            agent: PROTOCOL_VERSION,
            controller: protocol_version,
        });
    }
    // Constant-time: the comparison's duration must not reveal how much of a guess was right.
    let expected = state.token.as_bytes();
    if !bool::from(expected.ct_eq(token.as_bytes())) {
        return Err(Rejection::Unauthorized);
    }
    if state.busy.swap(true, Ordering::SeqCst) {
        return Err(Rejection::Busy);
    }
    Ok(BusyGuard(state.clone()))
}

/// The agent belongs to one controller while this lives.
pub struct BusyGuard(Arc<AgentState>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::SeqCst);
    }
}

/// The connections waiting for login, oldest first.
#[derive(Clone, Default)]
struct Pending(Arc<Mutex<PendingSet>>);

#[derive(Default)]
struct PendingSet {
    next_id: u64,
    /// Id, arrival, and the sender whose drop tells that connection it was evicted.
    entries: VecDeque<(u64, Instant, oneshot::Sender<()>)>,
}

impl Pending {
    /// A slot for a new connection, making room at the cap by evicting an idler; `None` when
    /// every pending connection is too young to evict.
    fn admit(&self) -> Option<Slot> {
        let mut set = self.0.lock().expect("not poisoned");
        if set.entries.len() >= MAX_PENDING {
            let oldest = set.entries.front().map(|(_, at, _)| at.elapsed());
            if oldest.is_none_or(|age| age < EVICT_AFTER) {
                return None;
            }
            set.entries.pop_front(); // Dropping its sender wakes and ends it.
        }
        let id = set.next_id;
        set.next_id += 1;
        let (evict, evicted) = oneshot::channel();
        set.entries.push_back((id, Instant::now(), evict));
        Some(Slot {
            id,
            pending: self.clone(),
            evicted,
        })
    }
}

/// A connection's place among the pending ones; dropping it (at login, or at the end) frees it.
struct Slot {
    id: u64,
    pending: Pending,
    evicted: oneshot::Receiver<()>,
}

impl Slot {
    /// Resolves when this connection is evicted to make room.
    async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut set = self.pending.0.lock().expect("not poisoned");
        set.entries.retain(|(id, _, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Was `slot` told it was evicted?
    async fn told(slot: &mut Slot) -> bool {
        let wait = tokio::time::timeout(Duration::from_millis(10), slot.evicted());
        wait.await.is_ok()
    }

    #[tokio::test]
    async fn at_the_cap_idlers_make_room_but_young_logins_do_not() {
        let pending = Pending::default();
        let mut first: Vec<Slot> = (0..MAX_PENDING).map(|_| pending.admit().unwrap()).collect();
        // Every pending connection is younger than EVICT_AFTER: the newcomer is refused.
        assert!(pending.admit().is_none());
        tokio::time::sleep(EVICT_AFTER).await;
        // Now the oldest is an idler: it is evicted (told so) and the newcomer admitted.
        let newcomer = pending.admit().expect("room made");
        assert!(
            told(&mut first[0]).await,
            "the oldest is told it was evicted"
        );
        assert!(!told(&mut first[1]).await, "the others keep their place");
        assert_eq!(pending.0.lock().unwrap().entries.len(), MAX_PENDING);
        // A slot dropped (login done, or closed) frees its place at once.
        drop(first.pop());
        assert_eq!(pending.0.lock().unwrap().entries.len(), MAX_PENDING - 1);
        drop(newcomer);
    }
}
