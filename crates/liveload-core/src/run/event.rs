//! What a run tells its observer while it goes on: the CLI draws its progress bar and live
//! view from these events; the library's users (and tests) watch them too.

use std::time::Duration;

use super::{NodeReport, Plan};

/// What the run is told while it goes on (the CLI draws progress from these).
#[derive(Debug, Clone)]
pub enum Event {
    /// The plan before any node is booted.
    Planned(Plan),
    /// Nodes are being booted.
    Booting {
        /// How many in this wave.
        nodes: u32,
    },
    /// One node answered the handshake with its facts.
    NodeReady(NodeReport),
    /// Users were assigned; nothing started yet.
    Assigned {
        /// Users per node, in node order.
        users: Vec<u64>,
    },
    /// Every agent received the start signal.
    Started,
    /// A snapshot was merged.
    Progress {
        /// Seconds since start.
        elapsed: Duration,
        /// Users running now, cluster-wide.
        active_users: u64,
        /// Iterations completed so far.
        iterations_ok: u64,
        /// Iterations failed so far.
        iterations_failed: u64,
        /// Iterations in the last complete second, cluster-wide.
        iterations_per_s: u64,
        /// p95 step latency in the last complete second, ms.
        step_p95_ms: f64,
        /// Nodes still running users.
        nodes: usize,
    },
    /// A node was lost during the run (its agent died, its link broke, or it fell silent past
    /// the grace period); its users are counted failed.
    NodeLost {
        /// Its id.
        node: String,
        /// What happened, in words.
        reason: String,
    },
    /// Teardown began.
    TearingDown {
        /// The run's id (what `liveload cleanup --run` takes).
        run_id: String,
        /// The ids of the nodes to destroy.
        nodes: Vec<String>,
    },
    /// One node was destroyed.
    NodeDestroyed {
        /// Its id.
        node: String,
    },
}

/// Something that listens to a run's [`Event`]s.
pub trait Observer: Send + Sync {
    /// Called for every event, in order.
    fn event(&self, event: &Event);
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: &Event) {}
}
