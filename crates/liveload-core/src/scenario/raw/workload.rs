//! The workload's keys as written: `sizing:`, `load:` and `throttle:`.

use serde::Deserialize;

/// `sizing: { profile, browser_memory_mib, context_memory_mib, contexts_per_core }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::scenario) struct RawSizing {
    /// A profile written by `liveload calibrate`, relative to the scenario file.
    #[serde(default)]
    pub(in crate::scenario) profile: Option<String>,
    /// Memory of one browser with no user, MiB.
    #[serde(default)]
    pub(in crate::scenario) browser_memory_mib: Option<u64>,
    /// Memory each user adds, MiB.
    #[serde(default)]
    pub(in crate::scenario) context_memory_mib: Option<u64>,
    /// Users one core drives.
    #[serde(default)]
    pub(in crate::scenario) contexts_per_core: Option<f64>,
}

/// `load: { model, ramp_up, ramp_steps, rate, ramp_to, max_users }`.
///
/// One flat map for both models (rather than an enum tagged by `model`) so that a key of the
/// other model gets a message that says which model it belongs to, instead of serde's generic
/// "unknown field".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::scenario) struct RawLoad {
    /// `closed` or `open`.
    pub(in crate::scenario) model: RawModel,
    /// Closed: time over which users start.
    #[serde(default)]
    pub(in crate::scenario) ramp_up: Option<String>,
    /// Closed: start users in this many batches over `ramp_up`.
    #[serde(default)]
    pub(in crate::scenario) ramp_steps: Option<u32>,
    /// Open: arrivals per second at the start.
    #[serde(default)]
    pub(in crate::scenario) rate: Option<f64>,
    /// Open: arrivals per second at the end.
    #[serde(default)]
    pub(in crate::scenario) ramp_to: Option<f64>,
    /// Open: most arrivals in progress at once.
    #[serde(default)]
    pub(in crate::scenario) max_users: Option<u64>,
}

/// `load.model:` — which workload model.
#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub(in crate::scenario) enum RawModel {
    /// A fixed number of users, each looping over the steps.
    Closed,
    /// A rate of new visitors, each running the steps once.
    Open,
}

/// `throttle: { rate, interarrival, parallelism }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::scenario) struct RawThrottle {
    /// `10/s`, `600/1m`: iteration starts per period.
    #[serde(default)]
    pub(in crate::scenario) rate: Option<String>,
    /// Least time between two iteration starts.
    #[serde(default)]
    pub(in crate::scenario) interarrival: Option<String>,
    /// Most iterations at once.
    #[serde(default)]
    pub(in crate::scenario) parallelism: Option<u64>,
}
