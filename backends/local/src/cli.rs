//! The local backend on the command line: `--backend local` (the default) and its options.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use liveload_core::registry::{BackendCli, Common};
use liveload_core::{Backend, Result};

use crate::LocalBackend;

/// Options of the local backend.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Local backend (--backend local)")]
pub struct LocalArgs {
    /// Split this host into N nodes (each reports 1/N of the host).
    #[arg(long = "local-nodes", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub local_nodes: u32,
    /// Chromium executable for the agents (default: chromium-headless-shell, then chromium).
    /// Its variable is `LIVELOAD_CHROMIUM`, the one name every liveload tool reads for it.
    #[arg(long = "chromium", env = "LIVELOAD_CHROMIUM")]
    pub local_chromium: Option<PathBuf>,
    /// Test hook: local agents are not tied to this process (simulates agents orphaned by a
    /// crash, for `cleanup` tests); the dead-man switch still ends them.
    #[arg(long = "local-keep-orphans", hide = true)]
    pub local_keep_orphans: bool,
    /// Test hook: local agents wait this many milliseconds before listening (a slow boot).
    #[arg(long = "local-debug-delay-listen-ms", hide = true, default_value_t = 0)]
    pub local_debug_delay_listen_ms: u64,
}

/// The local backend's registry entry.
pub struct Local;

#[async_trait]
impl BackendCli for Local {
    const NAME: &'static str = "local";
    const ABOUT: &'static str = "agents as child processes on this machine";
    type Args = LocalArgs;

    async fn build(args: LocalArgs, common: &Common) -> Result<Arc<dyn Backend>> {
        let mut builder = LocalBackend::builder()
            .nodes_per_host(args.local_nodes)
            .chromium(args.local_chromium)
            .die_with_controller(!args.local_keep_orphans)
            .debug_delay_listen(std::time::Duration::from_millis(
                args.local_debug_delay_listen_ms,
            ));
        if let Some(dir) = &common.state_dir {
            builder = builder.state_dir(dir);
        }
        Ok(Arc::new(builder.build()?))
    }
}
