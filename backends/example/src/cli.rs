//! The example backend on the command line: `--backend example`.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use liveload_core::registry::{BackendCli, Common};
use liveload_core::{Backend, Error, Result};

use crate::ExampleBackend;

/// Options of the example backend: every id starts with `example_`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Example backend (--backend example)")]
pub struct ExampleArgs {
    /// Example: where node records live (default: <state dir>/example).
    #[arg(long)]
    pub example_root: Option<PathBuf>,
}

/// The example backend's registry entry.
pub struct Example;

#[async_trait]
impl BackendCli for Example {
    const NAME: &'static str = "example";
    const ABOUT: &'static str = "a minimal backend for docs/adding-a-backend.md (tests only)";
    type Args = ExampleArgs;

    async fn build(args: ExampleArgs, common: &Common) -> Result<Arc<dyn Backend>> {
        let state = common
            .state_dir
            .clone()
            .unwrap_or_else(liveload_core::lock::default_state_dir);
        let agent = liveload_core::agent_bin::find().ok_or_else(|| Error::InvalidOption {
            option: "--backend example".into(),
            message: "liveload-agent not found".into(),
        })?;
        Ok(Arc::new(ExampleBackend {
            root: args.example_root.unwrap_or_else(|| state.join("example")),
            agent,
            delay_listen: std::time::Duration::ZERO,
        }))
    }
}
