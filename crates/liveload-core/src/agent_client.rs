//! The controller's side of the controller/agent link: dial, authenticate, exchange messages.
//!
//! One WebSocket per agent, optionally inside TLS pinned to the run's certificate. The first
//! exchange is the handshake (`Hello` → `Welcome`/`Rejected`); after it, [`AgentConnection`]
//! sends [`ControllerMessage`]s and yields [`AgentMessage`]s.

use futures_util::{SinkExt, StreamExt};
use liveload_proto::{
    AgentMessage, ControllerMessage, MAX_FRAME_BYTES, NodeFacts, PROTOCOL_VERSION, decode_agent,
    encode,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::backend::{AgentEndpoint, Secret};
use crate::{Error, Result, tls};

/// Any byte stream the WebSocket can ride on: plain TCP or TLS over TCP.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// What the agent told us in its `Welcome`.
#[derive(Debug, Clone)]
pub struct Welcome {
    /// The agent's crate version.
    pub agent_version: String,
    /// The node's real facts.
    pub facts: NodeFacts,
}

/// An authenticated link to one agent.
pub struct AgentConnection {
    node: String,
    ws: WebSocketStream<Box<dyn Transport>>,
}

impl std::fmt::Debug for AgentConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConnection")
            .field("node", &self.node)
            .finish()
    }
}

impl AgentConnection {
    /// Dial the agent, authenticate with the run token and read its facts, all before
    /// `deadline`.
    pub async fn connect(
        node: &str,
        endpoint: &AgentEndpoint,
        token: &Secret,
        deadline: Instant,
    ) -> Result<(Self, Welcome)> {
        Self::connect_speaking(node, endpoint, token, deadline, PROTOCOL_VERSION).await
    }

    /// [`connect`](Self::connect), claiming another protocol version (to test refusals).
    #[doc(hidden)]
    pub async fn connect_speaking(
        node: &str,
        endpoint: &AgentEndpoint,
        token: &Secret,
        deadline: Instant,
        protocol_version: u32,
    ) -> Result<(Self, Welcome)> {
        let fail = |message: String| Error::AgentConnection {
            node: node.to_string(),
            message,
        };
        refuse_plaintext_off_host(node, endpoint)?;
        let handshake = async {
            let tcp = TcpStream::connect(&endpoint.address)
                .await
                .map_err(|e| fail(format!("cannot connect to {}: {e}", endpoint.address)))?;
            tcp.set_nodelay(true).ok();
            let (transport, url) = secure(endpoint, tcp).await.map_err(fail)?;
            let request = upgrade_request(endpoint, &url).map_err(fail)?;
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_FRAME_BYTES))
                .max_frame_size(Some(MAX_FRAME_BYTES));
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(request, transport, Some(config))
                    .await
                    .map_err(|e| fail(format!("WebSocket handshake failed: {e}")))?;
            let mut connection = AgentConnection {
                node: node.to_string(),
                ws,
            };
            connection
                .send(&ControllerMessage::Hello {
                    protocol_version,
                    token: token.expose().to_string(),
                    controller_version: env!("CARGO_PKG_VERSION").to_string(),
                })
                .await?;
            match connection.recv().await? {
                AgentMessage::Welcome {
                    protocol_version: agent_version_number,
                    agent_version,
                    facts,
                } => {
                    if agent_version_number != protocol_version {
                        return Err(Error::AgentRejected {
                            node: node.to_string(),
                            reason: liveload_proto::Rejection::ProtocolMismatch {
                                agent: agent_version_number,
                                controller: protocol_version,
                            }
                            .to_string(),
                        });
                    }
                    Ok((
                        connection,
                        Welcome {
                            agent_version,
                            facts,
                        },
                    ))
                }
                AgentMessage::Rejected { reason } => Err(Error::AgentRejected {
                    node: node.to_string(),
                    reason: reason.to_string(),
                }),
                other => Err(fail(format!(
                    "expected a welcome, got {}",
                    message_name(&other)
                ))),
            }
        };
        match tokio::time::timeout_at(deadline, handshake).await {
            Ok(result) => result,
            Err(_) => Err(fail(
                "the agent did not complete the handshake in time".into(),
            )),
        }
    }

    /// The node this connection talks to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Send one message.
    pub async fn send(&mut self, message: &ControllerMessage) -> Result<()> {
        self.ws
            .send(Message::text(encode(message)))
            .await
            .map_err(|e| Error::AgentConnection {
                node: self.node.clone(),
                message: format!("send failed: {e}"),
            })
    }

    /// Receive the next message; a closed connection is an error.
    pub async fn recv(&mut self) -> Result<AgentMessage> {
        receive(&self.node, &mut self.ws).await
    }

    /// Close the connection politely (best effort).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Split into a sending and a receiving half, so one task can send heartbeats while another
    /// reads snapshots.
    pub fn into_split(self) -> (AgentSender, AgentReceiver) {
        let (sink, stream) = self.ws.split();
        (
            AgentSender {
                node: self.node.clone(),
                sink,
            },
            AgentReceiver {
                connection_node: self.node,
                stream,
            },
        )
    }
}

/// A message's type name, for error messages.
pub fn message_name(message: &AgentMessage) -> &'static str {
    match message {
        AgentMessage::Welcome { .. } => "welcome",
        AgentMessage::Rejected { .. } => "rejected",
        AgentMessage::Prepared { .. } => "prepared",
        AgentMessage::Snapshot(_) => "snapshot",
        AgentMessage::Finished(_) => "finished",
        AgentMessage::Failed { .. } => "failed",
        AgentMessage::Trace(_) => "trace",
        AgentMessage::Arrived { .. } => "arrived",
    }
}

/// The sending half of an [`AgentConnection`].
pub struct AgentSender {
    node: String,
    sink: futures_util::stream::SplitSink<WebSocketStream<Box<dyn Transport>>, Message>,
}

impl AgentSender {
    /// Send one message.
    pub async fn send(&mut self, message: &ControllerMessage) -> Result<()> {
        self.sink
            .send(Message::text(encode(message)))
            .await
            .map_err(|e| Error::AgentConnection {
                node: self.node.clone(),
                message: format!("send failed: {e}"),
            })
    }

    /// Close the connection politely (best effort).
    pub async fn close(mut self) {
        let _ = self.sink.close().await;
    }
}

/// The receiving half of an [`AgentConnection`].
pub struct AgentReceiver {
    connection_node: String,
    stream: futures_util::stream::SplitStream<WebSocketStream<Box<dyn Transport>>>,
}

impl AgentReceiver {
    /// Receive the next message; a closed connection is an error.
    pub async fn recv(&mut self) -> Result<AgentMessage> {
        receive(&self.connection_node, &mut self.stream).await
    }
}

async fn receive<S>(node: &str, stream: &mut S) -> Result<AgentMessage>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let lost = |message: String| Error::AgentConnection {
        node: node.to_string(),
        message,
    };
    loop {
        let bytes = match stream.next().await {
            None | Some(Ok(Message::Close(_))) => {
                return Err(lost("the agent closed the connection".into()));
            }
            Some(Err(e)) => return Err(lost(format!("connection failed: {e}"))),
            Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
            Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
            // Pings are answered by tungstenite itself.
            Some(Ok(_)) => continue,
        };
        return decode_agent(&bytes)
            .map_err(|e| lost(format!("the agent sent a malformed frame: {e}")));
    }
}

/// The last line of defence for the link's secrecy: without TLS (pinned or to a proxy) the only
/// acceptable destination is this host's loopback. Whatever a backend declares or forgets, the
/// run token never crosses a network in plaintext.
pub fn refuse_plaintext_off_host(node: &str, endpoint: &AgentEndpoint) -> Result<()> {
    if endpoint.tls.is_some() || endpoint.proxy.is_some() || is_loopback(&endpoint.address) {
        return Ok(());
    }
    Err(Error::InsecureLink {
        node: node.to_string(),
        address: endpoint.address.clone(),
    })
}

/// Is `address` (`host:port`) on this host's loopback? Only IP literals and `localhost` count:
/// a name could resolve anywhere.
pub fn is_loopback(address: &str) -> bool {
    if let Ok(socket) = address.parse::<std::net::SocketAddr>() {
        return socket.ip().is_loopback();
    }
    address
        .rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

/// Wrap a dialled TCP stream as the endpoint asks (plain, pinned TLS, or TLS to a proxy that
/// public CAs vouch for) and name the WebSocket URL to request on it.
async fn secure(
    endpoint: &AgentEndpoint,
    tcp: TcpStream,
) -> std::result::Result<(Box<dyn Transport>, String), String> {
    if let Some(proxy) = &endpoint.proxy {
        let config = tls::proxy_client_config(proxy).map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(proxy.server_name.clone())
            .map_err(|e| format!("bad proxy name {}: {e}", proxy.server_name))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {} failed: {e}", proxy.server_name))?;
        return Ok((
            Box::new(stream),
            format!("wss://{}/agent", proxy.server_name),
        ));
    }
    match &endpoint.tls {
        None => Ok((Box::new(tcp), format!("ws://{}/agent", endpoint.address))),
        Some(pin) => {
            let connector = tokio_rustls::TlsConnector::from(tls::client_config(pin));
            let stream = connector
                .connect(tls::agent_server_name(), tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            Ok((
                Box::new(stream),
                format!("wss://{}/agent", endpoint.address),
            ))
        }
    }
}

/// The WebSocket upgrade request for `url`, with the endpoint's extra headers.
fn upgrade_request(
    endpoint: &AgentEndpoint,
    url: &str,
) -> std::result::Result<tokio_tungstenite::tungstenite::handshake::client::Request, String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("bad agent address {url}: {e}"))?;
    for (name, value) in &endpoint.headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = name
            .parse()
            .map_err(|_| format!("bad header name {name}"))?;
        let value = value
            .parse()
            .map_err(|_| format!("bad value for header {name}"))?;
        request.headers_mut().insert(name, value);
    }
    Ok(request)
}

/// Is an agent answering at `endpoint`? Dials, secures the link and completes a WebSocket
/// upgrade, then hangs up without authenticating. Backends whose agents sit behind a proxy use
/// this for readiness: the proxy accepts connections long before the agent listens.
pub async fn probe(endpoint: &AgentEndpoint) -> std::result::Result<(), String> {
    refuse_plaintext_off_host("(probe)", endpoint).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(&endpoint.address)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", endpoint.address))?;
    let (transport, url) = secure(endpoint, tcp).await?;
    let request = upgrade_request(endpoint, &url)?;
    let (mut ws, _) = tokio_tungstenite::client_async(request, transport)
        .await
        .map_err(|e| format!("WebSocket handshake failed: {e}"))?;
    let _ = ws.close(None).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_may_go_without_tls() {
        for address in [
            "127.0.0.1:7070",
            "127.8.9.1:1",
            "[::1]:7070",
            "localhost:80",
        ] {
            assert!(is_loopback(address), "{address}");
        }
        for address in [
            "10.0.0.5:7070",
            "[fdaa::3]:7070",
            "my-app.fly.dev:443",
            "localhost.evil:1",
        ] {
            assert!(!is_loopback(address), "{address}");
        }
        let plain = AgentEndpoint {
            address: "10.0.0.5:7070".into(),
            tls: None,
            headers: Vec::new(),
            proxy: None,
        };
        let err = refuse_plaintext_off_host("n1", &plain).unwrap_err();
        assert_eq!(err.code(), "insecure_link");
        let (_, pin) = crate::tls::generate_run_certificate().unwrap();
        let pinned = AgentEndpoint {
            tls: Some(pin),
            ..plain
        };
        refuse_plaintext_off_host("n1", &pinned).unwrap();
    }
}
