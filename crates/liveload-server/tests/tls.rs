//! The server beyond loopback: refused without a certificate, served over TLS with one (a
//! real rustls handshake against the certificate given, then the API's answer).

use std::sync::Arc;

use async_trait::async_trait;
use liveload_core::{Backend, Error};
use liveload_server::runs::Limits;
use liveload_server::store::sqlite::SqliteStore;
use liveload_server::{Backends, Server, ServerConfig, TlsFiles};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

struct NoBackends;

#[async_trait]
impl Backends for NoBackends {
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    async fn build(&self, name: &str) -> Result<Arc<dyn Backend>, Error> {
        Err(Error::InvalidOption {
            option: "backend".into(),
            message: format!("no backend '{name}'"),
        })
    }
}

fn config(dir: &std::path::Path, listen: &str, tls: Option<TlsFiles>) -> ServerConfig {
    ServerConfig {
        listen: listen.parse().unwrap(),
        tls,
        state_dir: dir.to_path_buf(),
        limits: Limits::default(),
        name: "test".into(),
    }
}

#[tokio::test]
async fn a_public_address_needs_a_certificate_and_gets_tls_with_one() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("h.db")).unwrap());
    let refused = Server::start(
        config(dir.path(), "0.0.0.0:0", None),
        store.clone(),
        Arc::new(NoBackends),
    )
    .await;
    let Err(error) = refused else {
        panic!("served a public address in clear")
    };
    assert!(error.to_string().contains("--tls-cert"), "{error}");

    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, private) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&private, key.signing_key.serialize_pem()).unwrap();
    let files = TlsFiles { cert, key: private };
    let server = Server::start(
        config(dir.path(), "127.0.0.1:0", Some(files)),
        store,
        Arc::new(NoBackends),
    )
    .await
    .unwrap();

    // A client that connects and says nothing holds up nobody.
    let _idle = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(key.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(
        b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
    assert!(answer.contains("liveload server API"));
    server.shutdown().await;
}
