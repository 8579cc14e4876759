//! What a request asks for, what a run's seconds look like, and the caps a server holds every
//! request to.

use std::time::Duration;

use liveload_core::Error;
use liveload_core::names;
use liveload_core::run::RunOptions;
use liveload_core::scenario::{Scenario, parse_duration};
use serde::{Deserialize, Serialize};

use super::Runs;

/// What `POST /api/v1/runs` takes: a scenario (its YAML, or the name of a stored one) and the
/// options a run's flags would give. Never a secret: backends are configured on the server.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The scenario's YAML.
    #[serde(default)]
    pub scenario_yaml: Option<String>,
    /// Or the name of a stored scenario (`PUT /api/v1/scenarios/{name}`).
    #[serde(default)]
    pub scenario: Option<String>,
    /// The backend (one the server offers; default: its first).
    #[serde(default)]
    pub backend: Option<String>,
    /// Users (default: the scenario's).
    #[serde(default)]
    pub users: Option<u64>,
    /// How long users iterate, e.g. `30s`, `5m` (default: the scenario's).
    #[serde(default)]
    pub duration: Option<String>,
    /// Override the scenario's base URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The most nodes (default and ceiling: the server's `--max-allowed-nodes`).
    #[serde(default)]
    pub max_allowed_nodes: Option<u64>,
    /// The most the run may cost, USD (never above the server's `--max-cost`).
    #[serde(default)]
    pub max_cost: Option<f64>,
    /// Consent to a billed backend's cost (required for one).
    #[serde(default)]
    pub confirm: bool,
}

/// One second of a run, as the history keeps it and `GET /runs/{id}/events` streams it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LivePoint {
    /// Seconds since the run was submitted.
    pub second: u64,
    /// `starting` (nodes booting) or `running`.
    pub phase: String,
    /// Users running now.
    pub active_users: u64,
    /// Users the run targets now.
    pub target_users: u64,
    /// Iterations ended during this second.
    pub iterations_per_s: u64,
    /// Iterations failed so far.
    pub iterations_failed: u64,
    /// p95 of every latency metric so far, ms.
    pub p95_ms: std::collections::BTreeMap<String, f64>,
    /// Each node: id, users, capacity, and its latest memory/CPU point.
    #[schema(value_type = Vec<Object>)]
    pub nodes: serde_json::Value,
    /// The latest second the cluster closed: its users, iterations and step percentiles
    /// (think excluded), what the report's charts draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub step: Option<liveload_core::metrics::SecondPoint>,
}

/// The limits a server puts on every request.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The most nodes any run may use.
    pub max_allowed_nodes: u64,
    /// The most any billed run may cost, USD.
    pub max_cost_usd: Option<f64>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_allowed_nodes: 100,
            max_cost_usd: None,
        }
    }
}

impl Runs {
    /// The run's options: the CLI's defaults, the request's values, the server's caps.
    pub(super) fn options_for(
        &self,
        scenario: &Scenario,
        request: &RunRequest,
    ) -> Result<RunOptions, Error> {
        let users = request.users.unwrap_or(scenario.users);
        let duration = match &request.duration {
            Some(text) => parse_duration(text).map_err(|message| Error::InvalidOption {
                option: "duration".into(),
                message,
            })?,
            None => scenario.duration,
        };
        let cluster = names::cluster_name_from(&scenario.name);
        let mut options = RunOptions::new(cluster, users, duration);
        options.sizing.profile = scenario.sizing_profile()?;
        let nodes = request
            .max_allowed_nodes
            .unwrap_or(self.limits.max_allowed_nodes);
        if nodes > self.limits.max_allowed_nodes {
            return Err(Error::InvalidOption {
                option: "max_allowed_nodes".into(),
                message: format!(
                    "this server allows at most {} nodes per run",
                    self.limits.max_allowed_nodes
                ),
            });
        }
        options.max_allowed_nodes = nodes;
        options.max_cost_usd = match (request.max_cost, self.limits.max_cost_usd) {
            (Some(asked), Some(cap)) => Some(asked.min(cap)),
            (asked, cap) => asked.or(cap),
        };
        options.ttl =
            RunOptions::default_ttl(duration, options.creation_timeout).ok_or_else(|| {
                Error::InvalidOption {
                    option: "duration".into(),
                    message: "the run's lifetime (duration + creation timeout + 15m) is too long"
                        .into(),
                }
            })?;
        options.no_browser = scenario.engine.is_protocol();
        options.start_interval = Duration::from_millis(50);
        options.validate()?;
        Ok(options)
    }
}
