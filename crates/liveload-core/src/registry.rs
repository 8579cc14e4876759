//! How a backend plugs into the `liveload` command line: its options and its constructor,
//! owned by the backend's own crate, registered with one line.
//!
//! A backend crate implements [`BackendCli`] in its `cli` module (behind its `cli` feature):
//! a clap `Args` struct with the backend's options under their own help heading, and a
//! `build` that turns those options into the backend. The CLI keeps a list of
//! [`entry`]`::<T>()` values, one line per backend (behind a Cargo feature that chooses which
//! backends are compiled); everything else — `--backend NAME`, grouped help, `LIVELOAD_*`
//! environment variables, `liveload.toml` sections, `liveload config` — comes from that list.
//!
//! Naming rule, checked by the CLI's tests for every registered backend: every option id of
//! backend `NAME` starts with `NAME_` (the field `fly_app` is `--fly-app`, the
//! `LIVELOAD_FLY_APP` variable and the `app` key of the `[fly]` section of `liveload.toml`).
//! A backend may give an option a shorter flag (`--hosts` for `ssh_hosts`); the id decides
//! the rest.
//!
//! Policy does not belong here: a backend's link path and billing are declared by the
//! [`Backend`] trait itself and enforced by [`crate::run`], so a backend registered here (or
//! used from the library without any registry) gets the same guarantees.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{Backend, Result};

/// Options every backend may use, whatever it is.
#[derive(Debug, Clone, Default)]
pub struct Common {
    /// Where local state (locks, local runs' records, the control endpoint's record) lives;
    /// `None` for the default ([`crate::lock::default_state_dir`]).
    pub state_dir: Option<PathBuf>,
}

/// A backend's place on the command line. Implemented by each backend crate's `cli` module.
#[async_trait]
pub trait BackendCli: Send + Sync + 'static {
    /// The name after `--backend` (`local`, `fly`, `ec2`, `ssh`).
    const NAME: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// The backend's options: a clap `Args` struct with `next_help_heading` set to the
    /// backend's name, every field named `<NAME>_<option>`.
    type Args: clap::Args + clap::FromArgMatches + Send + Sync;

    /// Build the backend from its options. Errors name the option to fix.
    async fn build(args: Self::Args, common: &Common) -> Result<Arc<dyn Backend>>;

    /// Commands of the backend's own, as `liveload NAME ...` (the Fly warm pool); most
    /// backends have none.
    fn command() -> Option<clap::Command> {
        None
    }

    /// Run one of [`command`](Self::command)'s subcommands; returns what to print.
    async fn run_command(matches: &clap::ArgMatches, common: &Common) -> Result<String> {
        let _ = (matches, common);
        unreachable!("{} has no commands of its own", Self::NAME)
    }
}

/// A registered backend, type-erased so the CLI can keep a list of them.
#[async_trait]
pub trait Registered: Send + Sync {
    /// The backend's name.
    fn name(&self) -> &'static str;
    /// One line for `--help`.
    fn about(&self) -> &'static str;
    /// Add the backend's options to `command`.
    fn augment(&self, command: clap::Command) -> clap::Command;
    /// The ids of the backend's options.
    fn option_ids(&self) -> Vec<String>;
    /// Build the backend from parsed arguments that include its options.
    async fn build(&self, matches: &clap::ArgMatches, common: &Common) -> Result<Arc<dyn Backend>>;
    /// The backend's own commands, if any.
    fn command(&self) -> Option<clap::Command>;
    /// Run one of them.
    async fn run_command(&self, matches: &clap::ArgMatches, common: &Common) -> Result<String>;
}

/// The registry entry of backend `T`: what the CLI's list holds.
pub fn entry<T: BackendCli>() -> Box<dyn Registered> {
    Box::new(Entry::<T>(PhantomData))
}

struct Entry<T>(PhantomData<fn() -> T>);

#[async_trait]
impl<T: BackendCli> Registered for Entry<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn about(&self) -> &'static str {
        T::ABOUT
    }

    fn augment(&self, command: clap::Command) -> clap::Command {
        // Augmenting applies the Args struct's doc comment as the command's about: keep the
        // command's own.
        let about = command.get_about().cloned();
        let long_about = command.get_long_about().cloned();
        let command = <T::Args as clap::Args>::augment_args(command);
        let command = match about {
            Some(about) => command.about(about),
            None => command.about(None::<&str>),
        };
        match long_about {
            Some(long_about) => command.long_about(long_about),
            None => command.long_about(None::<&str>),
        }
    }

    fn option_ids(&self) -> Vec<String> {
        <T::Args as clap::Args>::augment_args(clap::Command::new("ids"))
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect()
    }

    async fn build(&self, matches: &clap::ArgMatches, common: &Common) -> Result<Arc<dyn Backend>> {
        let args = <T::Args as clap::FromArgMatches>::from_arg_matches(matches).map_err(|e| {
            crate::Error::InvalidOption {
                option: format!("--backend {}", T::NAME),
                message: e.to_string(),
            }
        })?;
        T::build(args, common).await
    }

    fn command(&self) -> Option<clap::Command> {
        T::command()
    }

    async fn run_command(&self, matches: &clap::ArgMatches, common: &Common) -> Result<String> {
        T::run_command(matches, common).await
    }
}
