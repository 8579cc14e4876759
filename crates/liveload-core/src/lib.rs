//! liveload's core: the [`Backend`] trait every provider implements, the sizing formula, the
//! cluster lifecycle ([`run::run`]), the metrics model and the typed errors.
//!
//! Providers never leak into this crate, and it does no I/O a backend owns: it talks only to
//! agents (over [`agent_client`]) and to the local file system for the scenario lock.

pub mod agent_bin;
pub mod agent_client;
pub mod backend;
pub mod conformance;
pub mod doctor;
pub mod error;
pub mod failures;
pub mod limits;
pub mod lock;
pub mod metrics;
pub mod names;
pub mod profile;
pub mod ready;
#[cfg(feature = "cli")]
pub mod registry;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sizing;
pub mod state;
pub mod threshold;
pub mod tls;

pub use backend::{
    AgentEndpoint, Backend, Billing, CreateRate, LinkPath, MachineBucket, NodeHandle, NodeSize,
    NodeSpec, ProxyTls, RunFilter, Secret,
};
pub use error::{BackendError, BackendErrorKind, Error, Result};
pub use liveload_proto as proto;
pub use liveload_proto::launch;
