//! The SSH backend on the command line: `--backend ssh --hosts hosts.toml` and its options.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use liveload_core::registry::{BackendCli, Common};
use liveload_core::{Backend, Error, Result};

use crate::SshBackend;

/// Options of the SSH backend.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "SSH backend (--backend ssh)")]
pub struct SshArgs {
    /// SSH: the hosts file (TOML: address, port, user, identity or agent, max_users, jump).
    #[arg(long = "hosts")]
    pub ssh_hosts: Option<PathBuf>,
    /// SSH: the known_hosts file host keys are checked against (default ~/.ssh/known_hosts).
    #[arg(long)]
    pub ssh_known_hosts: Option<PathBuf>,
    /// SSH: accept and record the keys of hosts not in known_hosts yet (a changed key is always
    /// refused).
    #[arg(long)]
    pub ssh_accept_new: bool,
    /// SSH: the agent for hosts of another architecture, as ARCH=PATH (repeatable; this
    /// machine's own agent is used for its architecture).
    #[arg(long, value_name = "ARCH=PATH")]
    pub ssh_agent_bin: Vec<String>,
    /// SSH: where liveload keeps its files on each host.
    #[arg(long, default_value = "~/.liveload")]
    pub ssh_remote_dir: String,
}

/// The SSH backend's registry entry.
pub struct Ssh;

#[async_trait]
impl BackendCli for Ssh {
    const NAME: &'static str = "ssh";
    const ABOUT: &'static str = "your own hosts over SSH (--hosts hosts.toml): the agent is uploaded, started on the host's loopback and reached through the SSH connection";
    type Args = SshArgs;

    async fn build(args: SshArgs, _: &Common) -> Result<Arc<dyn Backend>> {
        let path = args.ssh_hosts.as_ref().ok_or_else(|| Error::InvalidOption {
            option: "--hosts".into(),
            message: "--backend ssh needs a hosts file: --hosts hosts.toml (see backends/ssh/README.md)".into(),
        })?;
        let mut builder = SshBackend::builder()
            .hosts(crate::hosts::load(path)?)
            .accept_new_host_keys(args.ssh_accept_new)
            .remote_dir(&args.ssh_remote_dir);
        if let Some(known_hosts) = &args.ssh_known_hosts {
            builder = builder.known_hosts(known_hosts);
        }
        if let Some(own) = liveload_core::agent_bin::find() {
            builder = builder.agent_binary(std::env::consts::ARCH, own);
        }
        for pair in &args.ssh_agent_bin {
            let (arch, path) = pair.split_once('=').ok_or_else(|| Error::InvalidOption {
                option: "--ssh-agent-bin".into(),
                message: format!("'{pair}' is not ARCH=PATH (e.g. aarch64=./liveload-agent-arm64)"),
            })?;
            builder = builder.agent_binary(arch, path);
        }
        Ok(Arc::new(builder.build()?))
    }
}
