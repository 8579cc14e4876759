//! The container backend on the command line: `--backend container` and its options.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use liveload_core::registry::{BackendCli, Common};
use liveload_core::{Backend, Result};

use crate::{ContainerBackend, DEFAULT_IMAGE, NodeLimits};

/// Options of the container backend: every id starts with `container_`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Container backend (--backend container)")]
pub struct ContainerArgs {
    /// Container: the engine's unix socket (default: DOCKER_HOST, else /var/run/docker.sock,
    /// else podman's socket).
    #[arg(long)]
    pub container_socket: Option<String>,
    /// Container: the agent image, built from images/agent/Dockerfile.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub container_image: String,
    /// Container: memory of each node (`512m`, `2g`, `1.5g`, or bytes).
    #[arg(long, default_value = "2g", value_parser = parse_bytes)]
    pub container_memory: u64,
    /// Container: CPU cores of each node (a quota: `1.5` is one and a half cores).
    #[arg(long, default_value_t = 2.0)]
    pub container_cpus: f64,
    /// Container: the most processes and threads in each node.
    #[arg(long, default_value_t = 4096)]
    pub container_pids: i64,
    /// Container: the network nodes join (default: the engine's default bridge; `host` is
    /// refused).
    #[arg(long)]
    pub container_network: Option<String>,
    /// Container: a seccomp profile for the nodes, for Docker, whose default refuses the user
    /// namespaces of Chromium's sandbox: images/agent/chromium-seccomp.json.
    #[arg(long)]
    pub container_seccomp: Option<PathBuf>,
    /// Container: the most nodes one run may hold (default: as many as this host's memory and
    /// cores hold).
    #[arg(long)]
    pub container_max_nodes: Option<u64>,
}

/// `512m`, `2g`, `1.5g`, `2048k`, `1073741824`: a size in bytes (binary units).
pub fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches("ib").trim_end_matches('b');
    let (number, unit) = match lower.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => lower.split_at(at),
        None => (lower, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use k, m, g or t)"
            ));
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 512m or 2g"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("`{text}` must be more than zero"));
    }
    Ok((value * (1u64 << shift) as f64) as u64)
}

/// The container backend's registry entry.
pub struct Container;

#[async_trait]
impl BackendCli for Container {
    const NAME: &'static str = "container";
    const ABOUT: &'static str = "agents in containers of the agent image, each under its own memory and CPU limits, on Docker or podman on this host";
    type Args = ContainerArgs;

    async fn build(args: ContainerArgs, _common: &Common) -> Result<Arc<dyn Backend>> {
        let mut builder = ContainerBackend::builder()
            .image(args.container_image)
            .limits(NodeLimits {
                memory_bytes: args.container_memory,
                cpus: args.container_cpus,
                pids: args.container_pids,
            })
            .network(args.container_network)
            .seccomp_profile(args.container_seccomp)
            .max_nodes(args.container_max_nodes);
        if let Some(socket) = args.container_socket {
            builder = builder.socket(socket);
        }
        Ok(Arc::new(builder.build().await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_dockers() {
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1073741824"), Ok(1 << 30));
        assert!(parse_bytes("2x").is_err());
        assert!(parse_bytes("-1g").is_err());
        assert!(parse_bytes("lots").is_err());
    }
}
