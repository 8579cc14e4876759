//! `liveload-agent`: the process that runs on every node.
//!
//! It measures the node, listens for its controller, launches one Chromium, runs the users it is
//! assigned and streams their metrics. It never outlives its purpose: it exits when the
//! controller says so, when the controller has been silent for `--grace` (dead-man switch), at
//! its `--ttl` whatever happens, and on SIGTERM/SIGINT — and on every one of these paths it
//! closes Chromium and kills whatever is left in its process group.

mod browser;
mod capture;
mod cgroup;
mod check;
mod chromium;
mod coordination;
mod facts;
mod listener;
mod observe;
mod protocol;
mod recorder;
mod records;
mod relay;
mod resources;
mod secrets;
mod session;
mod steps;
mod switches;
#[cfg(test)]
mod testkit;
mod trace;
mod users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use liveload_proto::launch::var;
use liveload_proto::{BrowserInfo, NodeFacts};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::browser::NodeBrowser;
use crate::users::StopSignal;

/// The liveload agent. Started by a liveload backend, not by hand.
///
/// Every option can also come from the environment: the names are the launch contract
/// (`liveload_proto::launch::var`), which every backend uses to start agents.
///
/// Secrets never come from the command line (where `ps` shows them) nor from the environment
/// (which Chromium would inherit): the run token and the TLS key are files, named by
/// --token-file and --tls-key, that the agent reads once and deletes.
#[derive(Debug, Parser)]
#[command(name = "liveload-agent", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = var::LISTEN, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The run this agent serves (used by backends to recognise their agents).
    #[arg(long, env = var::RUN_ID, default_value = "")]
    run_id: String,
    /// Write `{"address": ..., "pid": ...}` here once listening (atomically).
    #[arg(long, env = var::READY_FILE)]
    ready_file: Option<PathBuf>,
    /// Hard lifetime in seconds: the agent exits at this age whatever happens.
    #[arg(long, env = var::TTL, default_value_t = 3600)]
    ttl: u64,
    /// Dead-man switch in seconds: exit when the controller has been silent this long.
    #[arg(long, env = var::GRACE, default_value_t = 30)]
    grace: u64,
    /// The file holding the run token (read once, then deleted).
    #[arg(long, env = var::TOKEN_FILE)]
    token_file: Option<PathBuf>,
    /// TLS certificate (PEM file) to serve the link with.
    #[arg(long, env = var::TLS_CERT, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM file; read once, then deleted).
    #[arg(long, env = var::TLS_KEY, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// This agent's share of the host is 1/N (several agents on one host).
    #[arg(long, env = var::HOST_SHARE)]
    host_share: Option<u32>,
    /// Never take more users than this (an operator's cap for this host; sizing respects it).
    #[arg(long, env = var::MAX_USERS)]
    max_users: Option<u32>,
    /// Chromium executable (default: chromium-headless-shell, then chromium, on PATH).
    #[arg(long, env = var::CHROMIUM)]
    chromium: Option<PathBuf>,
    /// Launch Chromium without its sandbox (needed as root and in most containers).
    #[arg(long, env = var::NO_SANDBOX)]
    no_sandbox: bool,
    /// Run without a browser: skip looking for Chromium; only browserless assignments are
    /// accepted (benchmarks of the cluster machinery).
    #[arg(long, env = var::NO_BROWSER)]
    no_browser: bool,
    /// Test hook: wait this many milliseconds before listening (simulates a slow boot).
    #[arg(long, hide = true, default_value_t = 0)]
    debug_delay_listen_ms: u64,
    /// Check whether this host can run an agent (Chromium found, and starting), print one
    /// JSON line and exit; for `liveload doctor`.
    #[arg(long)]
    check: bool,
}

/// The secrets the agent starts with, read from their files (which are then deleted).
struct Secrets {
    token: String,
    /// Certificate and key, PEM.
    tls: Option<(Vec<u8>, Vec<u8>)>,
}

/// Read a secret file and delete it, so no later process (Chromium included) can read it.
/// A file the agent cannot delete (a read-only mount) is read all the same, with a warning.
fn take_secret_file(path: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if let Err(e) = std::fs::remove_file(path) {
        eprintln!(
            "liveload-agent: could not delete {} after reading it: {e}",
            path.display()
        );
    }
    Ok(bytes)
}

fn read_secrets(args: &Args) -> Result<Secrets> {
    let token = match &args.token_file {
        Some(path) => String::from_utf8(take_secret_file(path)?)
            .context("the token file is not UTF-8")?
            .trim()
            .to_string(),
        None => String::new(),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((
            std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
            take_secret_file(key)?,
        )),
        _ => None,
    };
    Ok(Secrets { token, tls })
}

/// What every part of the agent shares.
pub struct AgentState {
    token: String,
    facts: NodeFacts,
    no_sandbox: bool,
    busy: AtomicBool,
    last_heard: Mutex<Instant>,
    stop: watch::Sender<StopSignal>,
    shutdown: watch::Sender<Option<String>>,
    browser: tokio::sync::Mutex<Option<Arc<NodeBrowser>>>,
    browser_pid: AtomicU32,
    /// A run is prepared or under way (set by `Prepare`, cleared once its `Finished` is
    /// sent): one run at a time.
    run_active: AtomicBool,
    /// The session that owned a run ended: the agent takes no further run.
    retired: AtomicBool,
}

/// Raise the soft limit of open files to the hard one: a protocol user holds a socket or two,
/// and the usual soft limit (1,024) would cap a node at a few hundred of them.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %e, "the open-file limit stays as it was");
        }
    }
}

/// Why the agent exits when its controller goes silent (the dead-man switch).
pub const SILENT_CONTROLLER: &str = "the controller has been silent past the grace period";

impl AgentState {
    /// Has the agent given up on a silent controller? Then it reports nothing more: a
    /// `Finished` from a node that stopped its own users would read, to a controller that wakes
    /// up later, like a node that completed them.
    pub fn gave_up_on_controller(&self) -> bool {
        self.shutdown.borrow().as_deref() == Some(SILENT_CONTROLLER)
    }

    /// Ask the agent to exit, saying why.
    pub fn shut_down(&self, reason: &str) {
        self.shutdown.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason.to_string());
                true
            } else {
                false
            }
        });
    }
}

fn main() {
    let args = Args::parse();
    if args.check {
        let report = check::run(args.chromium.as_deref(), args.no_sandbox);
        println!("{}", serde_json::to_string(&report).expect("serialises"));
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(var::LOG)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = match read_secrets(&args).and_then(|secrets| runtime.block_on(agent(args, secrets)))
    {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            1
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    kill_rest_of_process_group();
    std::process::exit(code);
}

async fn agent(args: Args, secrets: Secrets) -> Result<()> {
    let Secrets { token, tls } = secrets;
    if token.len() < 16 {
        bail!(
            "--token-file ({}) must name a file holding the run token (16 characters or more)",
            var::TOKEN_FILE
        );
    }
    let started = Instant::now();
    // Lead our own process group, so Chromium and its helpers share it and die with us. It
    // fails harmlessly when we already lead a group.
    let _ = rustix::process::setsid();
    let tls = tls.map(|(cert, key)| tls_config(&cert, &key)).transpose()?;
    let chromium = if args.no_browser {
        None
    } else {
        facts::find_chromium(args.chromium.as_deref())
    };
    let chromium = chromium.and_then(|path| {
        facts::chromium_version(&path).map(|version| BrowserInfo {
            path: path.display().to_string(),
            version,
        })
    });
    let mut facts = facts::measure(args.host_share, chromium);
    facts.max_users = args.max_users;
    let no_sandbox = args.no_sandbox || rustix::process::geteuid().is_root();
    let (stop, _) = watch::channel(StopSignal::Run);
    let (shutdown, mut shutdown_rx) = watch::channel(None);
    let state = Arc::new(AgentState {
        token,
        facts,
        no_sandbox,
        busy: AtomicBool::new(false),
        last_heard: Mutex::new(Instant::now()),
        stop,
        shutdown,
        browser: tokio::sync::Mutex::new(None),
        run_active: AtomicBool::new(false),
        retired: AtomicBool::new(false),
        browser_pid: AtomicU32::new(0),
    });

    if args.debug_delay_listen_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.debug_delay_listen_ms)).await;
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    if let Some(path) = &args.ready_file {
        write_ready_file(path, address)?;
    }
    // The one line on stdout: the local backend reads it through a pipe to learn the port.
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "LIVELOAD_AGENT_LISTENING {address}");
        let _ = stdout.flush();
        // Nothing else goes to stdout: point it at /dev/null so neither we nor Chromium ever
        // write into a pipe nobody reads.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = rustix::stdio::dup2_stdout(&null);
        }
    }
    tracing::info!(%address, run_id = %args.run_id, tls = tls.is_some(), "agent listening");

    // Dead-man switch and TTL.
    let watchdog = {
        let state = state.clone();
        let grace = Duration::from_secs(args.grace);
        let ttl_deadline = (started.checked_add(Duration::from_secs(args.ttl)))
            .with_context(|| format!("--ttl {} s is past what this clock can count", args.ttl))?;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let silent = state.last_heard.lock().expect("not poisoned").elapsed();
                if Instant::now() >= ttl_deadline {
                    state.shut_down("TTL reached");
                } else if silent > grace {
                    state.shut_down(SILENT_CONTROLLER);
                }
            }
        })
    };

    let accept = listener::serve(listener, tls, state.clone());

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = accept => {}
        _ = shutdown_rx.wait_for(|r| r.is_some()) => {}
        _ = sigterm.recv() => state.shut_down("SIGTERM"),
        _ = tokio::signal::ctrl_c() => state.shut_down("SIGINT"),
    }
    watchdog.abort();
    let reason = state.shutdown.borrow().clone().unwrap_or_default();
    tracing::info!(%reason, "agent shutting down");
    stop_everything(&state).await;
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Stop users at once, then close Chromium (killing it if it will not close).
async fn stop_everything(state: &AgentState) {
    session::force_stop(&state.stop);
    // Users end their contexts on a forced stop; give them a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    let browser = state.browser.lock().await.take();
    let Some(mut browser) = browser else { return };
    loop {
        match Arc::try_unwrap(browser) {
            Ok(owned) => {
                owned.close().await;
                return;
            }
            Err(shared) if Instant::now() < deadline => {
                browser = shared;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => break,
        }
    }
    // Users still hold the browser: kill it by pid; the group sweep at exit gets the helpers.
    let pid = state.browser_pid.load(Ordering::SeqCst);
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// SIGKILL every other process in our process group (Chromium helpers that escaped `close`).
fn kill_rest_of_process_group() {
    let (me, group) = (
        rustix::process::getpid().as_raw_nonzero().get(),
        rustix::process::getpgrp().as_raw_nonzero().get(),
    );
    if me != group {
        return; // Not our group to clean.
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the ")" that closes the command name: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let pgrp = rest
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse::<i32>().ok());
        if pgrp == Some(group)
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

fn write_ready_file(path: &std::path::Path, address: SocketAddr) -> Result<()> {
    let body = serde_json::json!({ "address": address.to_string(), "pid": std::process::id() });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the TLS certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("parsing the TLS key")?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("building the TLS configuration")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// The agent reads exactly the variables of the launch contract: a variable a backend sets
    /// that the agent ignores (or the reverse) fails here.
    #[test]
    fn options_and_the_launch_contract_name_the_same_variables() {
        let mut read: Vec<String> = Args::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        read.push(var::LOG.to_string()); // read by the log filter, not clap
        read.sort();
        let mut contract: Vec<String> = var::ALL.iter().map(|v| v.to_string()).collect();
        contract.sort();
        assert_eq!(read, contract);
    }
}
