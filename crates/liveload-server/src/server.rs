//! The server itself (the `full` feature): its configuration and start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use liveload_core::{Backend, Error};

use crate::runs::Runs;
use crate::store::Store;

/// The backends a server offers: configured on the server (their credentials stay there);
/// requests only name one.
#[async_trait]
pub trait Backends: Send + Sync {
    /// The names requests may use; the first is the default.
    fn names(&self) -> Vec<String>;
    /// Build the backend `name` (one of [`Backends::names`]).
    async fn build(&self, name: &str) -> Result<Arc<dyn Backend>, Error>;
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen. Anything but a loopback address requires [`ServerConfig::tls`].
    pub listen: SocketAddr,
    /// The certificate and key (PEM files) to serve HTTPS with.
    pub tls: Option<TlsFiles>,
    /// Where scenario locks and local runs' records live (the CLI's state directory).
    pub state_dir: PathBuf,
    /// The caps every run is held to.
    pub limits: crate::runs::Limits,
    /// This server's name in the run history: servers sharing one PostgreSQL history must
    /// have different names, since each recovers the unfinished runs of its own name.
    pub name: String,
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// A running server.
pub struct Server {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its runs.
    pub runs: Arc<Runs>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Refuse an unsafe configuration, recover the runs a previous server left unfinished,
    /// then listen.
    pub async fn start(
        config: ServerConfig,
        store: Arc<dyn Store>,
        backends: Arc<dyn Backends>,
    ) -> Result<Server, Error> {
        let acceptor = crate::tls::acceptor_for(&config)?;
        let runs = Arc::new(Runs::new(
            store.clone(),
            backends,
            (config.name.clone(), config.state_dir.clone()),
            config.limits.clone(),
        ));
        runs.recover_interrupted().await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::io(format!("listening on {}", config.listen), e))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::io("reading the listening address", e))?;
        let app = crate::api::app(crate::api::AppState {
            runs: runs.clone(),
            store,
            guard: Arc::new(crate::auth::HostGuard::for_listen(
                address,
                acceptor.is_some(),
            )),
        });
        let task = tokio::spawn(crate::tls::serve(listener, acceptor, app));
        Ok(Server {
            address,
            runs,
            task,
        })
    }

    /// Serve until the task ends (it does not, unless the listener fails).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Stop every run (tearing down its nodes) and stop serving.
    pub async fn shutdown(self) {
        self.runs.stop_all().await;
        self.task.abort();
    }
}
