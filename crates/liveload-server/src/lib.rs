//! liveload's server mode: a long-running controller that holds a team's runs.
//!
//! `liveload serve` starts [`Server`]: an HTTP API under `/api/v1` ([`api`]) authenticated by
//! bearer tokens ([`auth`], stored hashed), a run history in a database ([`store`]: SQLite by
//! default, PostgreSQL by URL), and a web dashboard ([`dashboard`]) that watches runs live
//! through Server-Sent Events. Runs go through the same `liveload_core::run` as the CLI's, so
//! every policy the core enforces (TLS on network links, cost confirmation, `max_cost`,
//! teardown whatever happens) holds here too; [`runs`] adds what a shared server needs: one
//! run per scenario name, several scenarios at once, and recovery of the runs a crashed server
//! held.
//!
//! The runtime-control types and the one client for them ([`control`]) are shared with the
//! CLI's per-run control endpoint and `liveload users`.
//!
//! Without its `full` feature (on by default) the crate is only [`control`] and [`client`]: what
//! the CLI needs to change a local run's users, with none of the server's dependencies
//! (SQLite's C build, the PostgreSQL driver, the OpenAPI macros), so a build for the demo
//! (`liveload --no-default-features`) stays small.

pub mod client;
pub mod control;

#[cfg(feature = "full")]
pub mod api;
#[cfg(feature = "full")]
pub mod auth;
#[cfg(feature = "full")]
pub mod dashboard;
#[cfg(feature = "full")]
pub mod runs;
#[cfg(feature = "full")]
mod server;
#[cfg(feature = "full")]
pub mod store;
#[cfg(feature = "full")]
mod tls;

#[cfg(feature = "full")]
pub use runs::Runs;
#[cfg(feature = "full")]
pub use server::{Backends, Server, ServerConfig, TlsFiles};
#[cfg(feature = "full")]
pub use store::Store;
