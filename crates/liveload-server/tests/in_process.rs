//! The server in this process: beyond loopback (refused without a certificate, served over TLS
//! with one: a real rustls handshake against the certificate given, then the API's answer),
//! and a run whose task panics (a bug) is still torn down and recorded as ended.

use std::sync::Arc;

use async_trait::async_trait;
use liveload_core::{AgentEndpoint, Backend, Error, NodeHandle, NodeSize, NodeSpec, RunFilter};
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

/// A backend with a bug: creating a node panics. It holds no node, ever.
#[derive(Debug)]
struct PanickingBackend;

#[async_trait]
impl Backend for PanickingBackend {
    fn name(&self) -> &'static str {
        "panicking"
    }
    fn billing(&self) -> liveload_core::Billing {
        liveload_core::Billing::Free
    }
    async fn create(&self, _spec: &NodeSpec) -> liveload_core::Result<NodeHandle> {
        panic!("a bug in a backend")
    }
    async fn wait_ready(
        &self,
        _node: &NodeHandle,
        _deadline: tokio::time::Instant,
    ) -> liveload_core::Result<AgentEndpoint> {
        unreachable!("no node is ever created")
    }
    async fn destroy(&self, _node: &NodeHandle) -> liveload_core::Result<()> {
        Ok(())
    }
    async fn list(&self, _runs: &RunFilter) -> liveload_core::Result<Vec<NodeHandle>> {
        Ok(Vec::new())
    }
    async fn expected_size(&self) -> liveload_core::Result<Option<NodeSize>> {
        Ok(None)
    }
}

struct OnlyPanicking;

#[async_trait]
impl Backends for OnlyPanicking {
    fn names(&self) -> Vec<String> {
        vec!["panicking".into()]
    }
    async fn build(&self, _name: &str) -> Result<Arc<dyn Backend>, Error> {
        Ok(Arc::new(PanickingBackend))
    }
}

#[tokio::test]
async fn a_run_whose_task_panics_is_recorded_as_ended() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("h.db")).unwrap());
    let server = Server::start(
        config(dir.path(), "127.0.0.1:0", None),
        store.clone(),
        Arc::new(OnlyPanicking),
    )
    .await
    .unwrap();
    let request = liveload_server::runs::RunRequest {
        scenario_yaml: Some(
            "name: bug\nbase_url: http://127.0.0.1:1\nusers: 1\nduration: 1s\nsteps:\n  - reload\n"
                .into(),
        ),
        ..Default::default()
    };
    let record = server.runs.start(request, "test").await.unwrap();
    let mut ended = None;
    for _ in 0..200 {
        let run = liveload_server::Store::run(store.as_ref(), &record.id)
            .await
            .unwrap()
            .unwrap();
        if run.status.ended() {
            ended = Some(run);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let run = ended.expect("the run ended instead of staying `running`");
    assert_eq!(run.status, liveload_server::store::RunStatus::Error);
    assert!(run.message.unwrap_or_default().contains("torn down"));
    // The run leaves the active ones right after its end is recorded.
    let mut active = true;
    for _ in 0..100 {
        active = server.runs.active(&record.id).is_some();
        if !active {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!active, "no longer active");
    server.shutdown().await;
}
