//! The test services liveload's tests share, each behind a feature: [`fly_server`] (a stateful
//! Fly Machines API with real agents behind it and an edge like Fly's proxy), [`sshd`] (a
//! private OpenSSH server), [`registry`] (an image registry), [`moto`] (moto's EC2 emulator and a proxy that loses answers),
//! [`container`] (podman's API service and the agent image built with podman) and [`postgres`]
//! (a private PostgreSQL server, for the server's run history); and, in front of any of them,
//! [`fault_proxy`] (provider token buckets and storms).
//!
//! One crate instead of the same source files included by path into several test binaries:
//! each service is compiled once and used by its backend's tests and the end-to-end tests.

#[cfg(feature = "container")]
pub mod container;
pub mod fault_proxy;
#[cfg(feature = "fly")]
pub mod fly_server;
#[cfg(feature = "ec2")]
pub mod moto;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "fly")]
pub mod registry;
#[cfg(feature = "ssh")]
pub mod sshd;

/// A port of 127.0.0.1 free now, for a service the tests start (a race with another process
/// taking it in between is possible, and fails that start loudly).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
