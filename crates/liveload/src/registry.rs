//! The backends this build of `liveload` knows: one line each. Cargo features choose which are
//! compiled (all by default); the local backend always is (the demo, `bench` and `try` run on
//! it). Adding a backend: its folder, its dependency and feature lines in this crate's
//! `Cargo.toml`, and one line here (see docs/adding-a-backend.md).

use liveload_core::registry::{Registered, entry};

/// Every backend compiled into this binary, the default (`local`) first.
pub fn backends() -> Vec<Box<dyn Registered>> {
    let mut backends = vec![entry::<liveload_local::cli::Local>()];
    #[cfg(feature = "fly")]
    backends.push(entry::<liveload_fly::cli::Fly>());
    #[cfg(feature = "ssh")]
    backends.push(entry::<liveload_ssh::cli::Ssh>());
    #[cfg(feature = "ec2")]
    backends.push(entry::<liveload_ec2::cli::Ec2>());
    #[cfg(feature = "example")]
    backends.push(entry::<liveload_example_backend::cli::Example>());
    backends
}
