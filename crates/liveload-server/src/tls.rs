//! HTTPS for a server that listens beyond loopback. A bearer token sent in clear across a
//! network is a token given away, so binding anything but 127.0.0.1/::1 without a certificate
//! is refused (fail-closed), and with one every connection is TLS (rustls, the stack the rest
//! of liveload uses).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use liveload_core::Error;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
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
        Some(acceptor) => axum::serve(TlsListener { listener, acceptor }, app).await,
    };
}

/// A listener whose connections are TLS streams; a failed handshake is dropped, not fatal.
struct TlsListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.listener.accept().await else {
                // Out of descriptors and the like: wait a little rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            // A slow handshake must not hold the accept loop: bound it.
            let handshake = self.acceptor.accept(stream);
            if let Ok(Ok(tls)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await
            {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}
