//! moto's EC2 emulator for the EC2 backend's tests: one server per test on a free port of
//! 127.0.0.1, with its instance-type and AMI validation on, reset and stopped at the end.
//! `scripts/test.sh` installs moto (pinned) into `.tools/moto-venv` when it is missing.
//!
//! Also a small proxy that can lose RunInstances' answer (the call reaches moto, the answer
//! never reaches liveload), for the lost-response test.

use crate::free_port;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use liveload_ec2::hook::{AgentHook, LocalAgents};
use liveload_ec2::{ClientOptions, Ec2Backend, Image};

/// A running moto server.
pub struct Moto {
    /// Its endpoint URL (what `--ec2-endpoint-url` takes).
    pub url: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = http_post(self.port, "/moto-api/reset");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("LIVELOAD_MOTO_SERVER") {
        return path.into();
    }
    // The workspace root (where Cargo.lock is), whichever crate includes this file.
    let mut root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !root.join("Cargo.lock").exists() && root.pop() {}
    let bin = root.join(".tools/moto-venv/bin/moto_server");
    assert!(
        bin.exists(),
        "moto is missing: run scripts/test.sh, which installs moto[server] into .tools/moto-venv"
    );
    bin
}

/// POST with an empty body; the status line's code.
pub fn http_post(port: u16, path: &str) -> std::io::Result<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

impl Moto {
    /// Start a server.
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new(moto_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
            .env("MOTO_ENABLE_AMI_VALIDATION", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        // moto imports a large Python package before it listens: seconds on an idle machine,
        // much longer while other tests keep both cores busy.
        let end = std::time::Instant::now() + Duration::from_secs(180);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < end, "moto did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto {
            url: format!("http://127.0.0.1:{port}"),
            port,
            child,
        }
    }

    /// Forget every resource (`POST /moto-api/reset`).
    pub fn reset(&self) {
        assert_eq!(http_post(self.port, "/moto-api/reset").unwrap(), 200);
    }

    /// Client options for this server (us-east-1, dummy credentials).
    pub fn options(&self) -> ClientOptions {
        self.options_at(&self.url)
    }

    /// Client options for another URL in front of this server (a proxy).
    pub fn options_at(&self, url: &str) -> ClientOptions {
        ClientOptions {
            region: Some("us-east-1".into()),
            endpoint_url: Some(url.to_string()),
            static_credentials: Some(("testing".into(), "testing".into())),
        }
    }
}

/// The agent binary the hook starts.
pub fn agent_bin() -> PathBuf {
    liveload_core::agent_bin::find().expect("liveload-agent is built (cargo build --bins)")
}

/// An AMI the emulator knows (one of its built-in Amazon images).
pub async fn known_ami(options: ClientOptions) -> String {
    let backend = Ec2Backend::builder().client(options).build().await.unwrap();
    let images = backend.ec2().describe_images().send().await.unwrap();
    images
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .find(|id| id.starts_with("ami-"))
        .expect("moto ships Amazon AMIs")
        .to_string()
}

/// A backend on `options` with local agents standing in for instances.
pub async fn backend(options: ClientOptions, ami: &str, hook: Arc<dyn AgentHook>) -> Ec2Backend {
    Ec2Backend::builder()
        .client(options)
        .image(Image::Ami(ami.to_string()))
        .instance_type("c7i.large")
        .hook(hook)
        .build()
        .await
        .unwrap()
}

/// Local agents under a fresh temporary directory (kept alive by the returned guard).
pub fn local_agents() -> (Arc<LocalAgents>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(LocalAgents::new(agent_bin(), dir.path())), dir)
}

/// An instance whose agent never answers: the hook waits out the deadline.
#[derive(Debug)]
pub struct NeverReady;

#[async_trait::async_trait]
impl AgentHook for NeverReady {
    async fn agent_address(
        &self,
        id: &str,
        _launch_index: u32,
        _user_data: &str,
        deadline: tokio::time::Instant,
    ) -> liveload_core::Result<String> {
        tokio::time::sleep_until(deadline).await;
        Err(liveload_core::BackendError::new(
            "ec2",
            liveload_core::BackendErrorKind::NotReady,
            format!("instance {id}: never ready (test hook)"),
        )
        .into())
    }
    async fn terminated(&self, _id: &str) {}
}

/// A proxy to moto that forwards every call and can drop RunInstances' answer once.
pub struct LosingProxy {
    /// Its endpoint URL.
    pub url: String,
    /// Drop the next RunInstances answer.
    pub lose_next_run: Arc<AtomicBool>,
    /// RunInstances calls seen.
    pub run_calls: Arc<AtomicU32>,
}

impl LosingProxy {
    /// Start the proxy in front of moto's port `upstream`.
    pub fn start(upstream: u16) -> LosingProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let lose = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU32::new(0));
        let (lose2, calls2) = (lose.clone(), calls.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (lose, calls) = (lose2.clone(), calls2.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &lose, &calls);
                });
            }
        });
        LosingProxy {
            url,
            lose_next_run: lose,
            run_calls: calls,
        }
    }
}

fn serve(
    mut client: std::net::TcpStream,
    upstream: u16,
    lose: &AtomicBool,
    calls: &AtomicU32,
) -> std::io::Result<()> {
    let mut server = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
    while let Some(request) = crate::fault_proxy::read_message(&mut client)? {
        let is_run = String::from_utf8_lossy(&request).contains("Action=RunInstances");
        server.write_all(&request)?;
        let Some(response) = crate::fault_proxy::read_message(&mut server)? else {
            return Ok(());
        };
        if is_run {
            calls.fetch_add(1, Ordering::SeqCst);
            if lose.swap(false, Ordering::SeqCst) {
                // The instance exists; its answer is lost with the connection.
                return Ok(());
            }
        }
        client.write_all(&response)?;
    }
    Ok(())
}
