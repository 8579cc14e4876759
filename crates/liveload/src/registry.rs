//! The backends this build of `liveload` knows: one line each. Cargo features choose which are
//! compiled (all by default); the local backend always is (the demo, `bench` and `try` run on
//! it). Adding a backend: its folder, its dependency and feature lines in this crate's
//! `Cargo.toml`, and one line here (see docs/adding-a-backend.md).

use liveload_core::registry::{Registered, entry};

/// Every backend compiled into this binary, the default (`local`) first.
pub fn backends() -> Vec<Box<dyn Registered>> {
    // Not `mut` in a build with no optional backend, hence the allowance.
    #[allow(unused_mut)]
    let mut backends = vec![entry::<liveload_local::cli::Local>()];
    #[cfg(feature = "fly")]
    backends.push(entry::<liveload_fly::cli::Fly>());
    #[cfg(feature = "ssh")]
    backends.push(entry::<liveload_ssh::cli::Ssh>());
    #[cfg(feature = "ec2")]
    backends.push(entry::<liveload_ec2::cli::Ec2>());
    #[cfg(feature = "container")]
    backends.push(entry::<liveload_container::cli::Container>());
    #[cfg(feature = "example")]
    backends.push(entry::<liveload_example_backend::cli::Example>());
    backends
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// Every backend's option ids start with its name (so its `LIVELOAD_<BACKEND>_*` variables
    /// and `[backend]` config section follow), and all of them fit on one command line without
    /// clashing (clap's debug assertions check ids and flags when the command is built).
    #[test]
    fn backend_options_are_named_after_their_backend_and_never_clash() {
        let backends = backends();
        let mut command = crate::cli::Cli::command();
        for backend in &backends {
            for id in backend.option_ids() {
                assert!(
                    id.starts_with(&format!("{}_", backend.name())),
                    "{}: option `{id}` must start with `{}_`",
                    backend.name(),
                    backend.name()
                );
            }
            command = command.mut_subcommand("run", |c| backend.augment(c));
            if let Some(own) = backend.command() {
                command = command.subcommand(own);
            }
        }
        command.debug_assert();
    }
}
