//! HTTPS for a server that listens beyond loopback. A bearer token sent in clear across a
//! network is a token given away, so binding anything but 127.0.0.1/::1 without a certificate
//! is refused (fail-closed), and with one every connection is TLS (rustls, the stack the rest
//! of liveload uses).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use liveload_core::Error;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::ServerConfig;

/// The TLS acceptor the configuration asks for; an error for a non-loopback address without
/// a certificate.
pub(crate) fn acceptor_for(config: &ServerConfig) -> Result<Option<TlsAcceptor>, Error> {
    let Some(files) = &config.tls else {
        if config.listen.ip().is_loopback() {
            return Ok(None);
        }
        return Err(Error::InvalidOption {
            option: "--listen".into(),
            message: format!(
                "{} is not a loopback address: serving the API beyond this machine needs \
                 --tls-cert and --tls-key, or its bearer tokens would cross the network in clear",
                config.listen
            ),
        });
    };
    let invalid = |what: &str, e: &dyn std::fmt::Display| Error::InvalidOption {
        option: format!("--tls-{what}"),
        message: format!("cannot read the {what}: {e}"),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| invalid("cert", &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("cert", &e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| invalid("key", &e))?;
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("cert", &e))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// Serve `app` on `listener`, through TLS when an acceptor is given.
pub(crate) async fn serve(listener: TcpListener, acceptor: Option<TlsAcceptor>, app: Router) {
    let _ = match acceptor {
        None => axum::serve(listener, app).await,
        Some(acceptor) => {
            let local = listener.local_addr();
            let handshaken = handshakes(listener, acceptor);
            axum::serve(TlsListener { handshaken, local }, app).await
        }
    };
}

/// Accept connections and run each TLS handshake on a task of its own (bounded in time), so a
/// client that connects and says nothing holds up nobody; finished handshakes come out of the
/// channel.
fn handshakes(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
    let (done, handshaken) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let Ok((stream, address)) = listener.accept().await else {
                // Out of descriptors and the like: wait a little rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (acceptor, done) = (acceptor.clone(), done.clone());
            tokio::spawn(async move {
                let handshake = acceptor.accept(stream);
                if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), handshake).await
                {
                    let _ = done.send((tls, address)).await;
                }
            });
        }
    });
    handshaken
}

/// The handshaken connections, as axum's listener.
struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: std::io::Result<SocketAddr>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accept task never ends while the server runs.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(address) => Ok(*address),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}
