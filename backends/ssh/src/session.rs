//! One SSH connection to one host: connect (directly or through a jump host), check the host
//! key against `known_hosts`, log in, run commands, and forward local ports to the host's
//! loopback through `direct-tcpip` channels.
//!
//! Every error names the host, so a run over fifty machines says which one is wrong.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liveload_core::{BackendError, BackendErrorKind, Error, Result};
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::hosts::{Auth, Host};

/// How host keys are checked.
#[derive(Debug, Clone)]
pub struct HostKeyPolicy {
    /// The `known_hosts` file to check against (and to add accepted keys to).
    pub known_hosts: PathBuf,
    /// Accept (and record) the key of a host not in `known_hosts` yet. A key that differs from
    /// the recorded one is refused whatever this says.
    pub accept_new: bool,
}

/// What went wrong with a host key, kept by the handler for the error message.
#[derive(Debug, Clone)]
enum KeyProblem {
    Unknown { fingerprint: String },
    Changed { line: usize },
    Unusable(String),
}

/// russh's callbacks: only the host key check matters here.
struct Verifier {
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    problem: Arc<Mutex<Option<KeyProblem>>>,
}

impl Verifier {
    fn refuse(&self, problem: KeyProblem) -> std::result::Result<bool, russh::Error> {
        *self.problem.lock().expect("not poisoned") = Some(problem);
        Ok(false)
    }
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return self.refuse(KeyProblem::Unusable(
                "the host presented a certificate; liveload checks plain host keys".into(),
            ));
        };
        let path = &self.policy.known_hosts;
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
            Ok(true) => Ok(true),
            Ok(false) if self.policy.accept_new => {
                match russh::keys::known_hosts::learn_known_hosts_path(
                    &self.host, self.port, key, path,
                ) {
                    Ok(()) => {
                        tracing::info!(host = %self.host, port = self.port, known_hosts = %path.display(), "recorded a new host key");
                        Ok(true)
                    }
                    Err(e) => self.refuse(KeyProblem::Unusable(format!(
                        "cannot record its key in {}: {e}",
                        path.display()
                    ))),
                }
            }
            Ok(false) => self.refuse(KeyProblem::Unknown {
                fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            }),
            Err(russh::keys::Error::KeyChanged { line }) => {
                self.refuse(KeyProblem::Changed { line })
            }
            Err(e) => self.refuse(KeyProblem::Unusable(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }
}

/// A logged-in SSH connection (and the jump connection it rides on, kept alive with it).
pub struct Connection {
    host: Host,
    handle: Handle<Verifier>,
    _jump: Option<Arc<Connection>>,
}

/// What a command printed and how it ended.
#[derive(Debug, Default)]
pub struct Output {
    /// Exit status (`None`: killed by a signal or the channel closed first).
    pub status: Option<u32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

fn ssh_error(host: &Host, kind: BackendErrorKind, message: String, hint: Option<String>) -> Error {
    Error::from(
        BackendError::new(
            "ssh",
            kind,
            format!("host {} ({}): {message}", host.name, host.target()),
        )
        .maybe_hint(hint),
    )
}

/// The longest any remote command may take (the agent upload included: tens of megabytes
/// over a LAN take about a second).
pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Connect to `host` and log in.
pub async fn connect(
    host: &Host,
    policy: &HostKeyPolicy,
    timeout: Duration,
) -> Result<Arc<Connection>> {
    let jump = match &host.jump {
        Some(jump) => Some(Box::pin(connect(jump, policy, timeout)).await?),
        None => None,
    };
    let config = Arc::new(client::Config {
        // Keepalives notice a dead path (and so a dead tunnel) within ~30 s even when idle.
        keepalive_interval: Some(Duration::from_secs(10)),
        keepalive_max: 3,
        // Commands are small request/response exchanges: Nagle's algorithm would hold each
        // one back for a delayed ACK (~40 ms a round trip).
        nodelay: true,
        ..Default::default()
    });
    let problem = Arc::new(Mutex::new(None));
    let verifier = Verifier {
        host: host.address.clone(),
        port: host.port,
        policy: policy.clone(),
        problem: problem.clone(),
    };
    let connecting = async {
        match &jump {
            None => client::connect(config, (host.address.as_str(), host.port), verifier).await,
            Some(jump) => {
                let channel = jump
                    .handle
                    .channel_open_direct_tcpip(
                        host.address.clone(),
                        host.port.into(),
                        "127.0.0.1",
                        0,
                    )
                    .await?;
                client::connect_stream(config, channel.into_stream(), verifier).await
            }
        }
    };
    let handle = match tokio::time::timeout(timeout, connecting).await {
        Err(_) => {
            return Err(ssh_error(
                host,
                BackendErrorKind::Unreachable,
                format!("no SSH answer within {} s", timeout.as_secs()),
                Some("check the address, port and firewall (`ssh -p PORT USER@HOST`)".into()),
            ));
        }
        Ok(Ok(handle)) => handle,
        Ok(Err(e)) => {
            let problem = problem.lock().expect("not poisoned").clone();
            return Err(match problem {
                Some(KeyProblem::Unknown { fingerprint }) => ssh_error(
                    host,
                    BackendErrorKind::HostKey,
                    format!(
                        "its host key ({fingerprint}) is not in {}",
                        policy.known_hosts.display()
                    ),
                    Some(format!(
                        "check the fingerprint, then add it (`ssh -p {} {}` once) or pass --ssh-accept-new",
                        host.port, host.address
                    )),
                ),
                Some(KeyProblem::Changed { line }) => ssh_error(
                    host,
                    BackendErrorKind::HostKey,
                    format!(
                        "its host key differs from the one recorded at {}:{line} — possibly a man-in-the-middle",
                        policy.known_hosts.display()
                    ),
                    Some(format!(
                        "if the host was reinstalled, remove the old key (`ssh-keygen -R '[{}]:{}' -f {}`); --ssh-accept-new never overrides a changed key",
                        host.address,
                        host.port,
                        policy.known_hosts.display()
                    )),
                ),
                Some(KeyProblem::Unusable(message)) => {
                    ssh_error(host, BackendErrorKind::HostKey, message, None)
                }
                None => ssh_error(
                    host,
                    BackendErrorKind::Unreachable,
                    format!("cannot connect: {e}"),
                    Some("check the address, port and firewall (`ssh -p PORT USER@HOST`)".into()),
                ),
            });
        }
    };
    let mut connection = Connection {
        host: host.clone(),
        handle,
        _jump: jump,
    };
    // A host that completes the key exchange and then stalls must not hold us either: the
    // login has its own deadline.
    match tokio::time::timeout(timeout, connection.log_in()).await {
        Ok(logged_in) => logged_in?,
        Err(_) => {
            return Err(ssh_error(
                host,
                BackendErrorKind::Unreachable,
                format!("the login did not finish within {} s", timeout.as_secs()),
                Some("the host answers but stalls: check its load and sshd (`ssh -v`)".into()),
            ));
        }
    }
    Ok(Arc::new(connection))
}

impl Connection {
    async fn log_in(&mut self) -> Result<()> {
        let host = self.host.clone();
        let auth_error = |message: String, hint: &str| {
            ssh_error(&host, BackendErrorKind::Auth, message, Some(hint.into()))
        };
        let failed = |e: russh::Error| {
            ssh_error(
                &host,
                BackendErrorKind::Unreachable,
                format!("the connection failed while logging in: {e}"),
                None,
            )
        };
        let accepted = match &self.host.auth {
            Auth::IdentityFile(path) => {
                let key = russh::keys::load_secret_key(path, None).map_err(|e| {
                    auth_error(
                        format!("cannot load the key {}: {e}", path.display()),
                        "point `identity` at an unencrypted OpenSSH private key (ssh-keygen -t ed25519), or use agent = true",
                    )
                })?;
                let hash = self
                    .handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(failed)?
                    .flatten();
                self.handle
                    .authenticate_publickey(
                        self.host.user.clone(),
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
                    .map_err(failed)?
                    .success()
            }
            Auth::Agent => {
                let mut agent = russh::keys::agent::client::AgentClient::connect_env()
                    .await
                    .map_err(|e| {
                        auth_error(
                            format!("cannot reach the ssh-agent: {e}"),
                            "start ssh-agent and `ssh-add` your key, or set identity = \"~/.ssh/id_ed25519\"",
                        )
                    })?;
                let identities = agent.request_identities().await.map_err(|e| {
                    auth_error(format!("the ssh-agent failed: {e}"), "check `ssh-add -l`")
                })?;
                let mut ok = false;
                for identity in identities {
                    let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = identity else {
                        continue;
                    };
                    let hash = self
                        .handle
                        .best_supported_rsa_hash()
                        .await
                        .map_err(failed)?
                        .flatten();
                    if let Ok(result) = self
                        .handle
                        .authenticate_publickey_with(self.host.user.clone(), key, hash, &mut agent)
                        .await
                        && result.success()
                    {
                        ok = true;
                        break;
                    }
                }
                ok
            }
        };
        if accepted {
            Ok(())
        } else {
            Err(auth_error(
                format!("user {} was refused (public key)", self.host.user),
                "add the public key to the user's ~/.ssh/authorized_keys on the host, or fix `user`/`identity` in the hosts file",
            ))
        }
    }

    /// The host this connection is to.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Is the connection gone?
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Run `command` with `stdin` on the host's shell, within [`COMMAND_TIMEOUT`]: every
    /// command liveload runs is short, and a stalled host must not hang a run or its
    /// teardown.
    pub async fn exec(&self, command: &str, stdin: &[u8]) -> Result<Output> {
        match tokio::time::timeout(COMMAND_TIMEOUT, self.exec_unbounded(command, stdin)).await {
            Ok(result) => result,
            Err(_) => Err(ssh_error(
                &self.host,
                BackendErrorKind::Unreachable,
                format!(
                    "a command did not finish within {} s",
                    COMMAND_TIMEOUT.as_secs()
                ),
                Some("the host stalls: check its load and disk (`ssh -v`)".into()),
            )),
        }
    }

    async fn exec_unbounded(&self, command: &str, stdin: &[u8]) -> Result<Output> {
        let failed = |e: russh::Error| {
            ssh_error(
                &self.host,
                BackendErrorKind::Unreachable,
                format!("running a command failed: {e}"),
                None,
            )
        };
        let mut channel = self.handle.channel_open_session().await.map_err(failed)?;
        channel.exec(true, command).await.map_err(failed)?;
        if !stdin.is_empty() {
            channel.data(stdin).await.map_err(failed)?;
        }
        channel.eof().await.map_err(failed)?;
        let mut output = Output::default();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => output.status = Some(exit_status),
                _ => {}
            }
        }
        output.stdout = String::from_utf8_lossy(&stdout).into_owned();
        output.stderr = String::from_utf8_lossy(&stderr).into_owned();
        Ok(output)
    }

    /// Listen on `127.0.0.1:0` here; every connection to it is carried to `127.0.0.1:port` on
    /// the host through a `direct-tcpip` channel of this connection (no port opened on the
    /// host, encrypted by SSH). Dropping or aborting the task closes the listener.
    pub async fn forward(self: &Arc<Self>, port: u16) -> std::io::Result<(String, JoinHandle<()>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let connection = self.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, peer)) = listener.accept().await {
                let connection = connection.clone();
                tokio::spawn(async move {
                    let channel = match connection
                        .handle
                        .channel_open_direct_tcpip(
                            "127.0.0.1",
                            port.into(),
                            peer.ip().to_string(),
                            peer.port().into(),
                        )
                        .await
                    {
                        Ok(channel) => channel,
                        Err(e) => {
                            tracing::warn!(host = %connection.host.name, error = %e, "cannot open the tunnel to the agent");
                            return;
                        }
                    };
                    let mut stream = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
                });
            }
        });
        Ok((local.to_string(), task))
    }

    /// Close the connection politely.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "liveload is done", "en")
            .await;
    }
}
