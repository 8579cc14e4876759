//! What a run is asked to do: [`RunOptions`] (validated before anything is created), the
//! consent a billed run needs ([`CostConfirmation`]), what a lost node does ([`NodeLoss`]),
//! and where a raw trace goes ([`TraceOutput`]).

use std::time::Duration;

use serde::Serialize;

use crate::scenario::{MAX_DURATION, MAX_DURATION_TEXT};
use crate::sizing::SizingConfig;
use crate::{Error, Result, names};

/// Consent to create machines that cost money. A run on a [`Billing::Billed`] backend refuses
/// to start without one; the CLI makes it from `--yes` or a "y" at its prompt, a library or API
/// caller makes it explicitly. Core itself never asks anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostConfirmation {
    /// How consent was given (`--yes`, `prompt`, `api`), for the logs.
    pub given_by: String,
}

impl CostConfirmation {
    /// Consent, saying how it was given.
    pub fn new(given_by: impl Into<String>) -> Self {
        CostConfirmation {
            given_by: given_by.into(),
        }
    }
}

/// What the run does when it loses a node (its agent died, its link broke, it fell silent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeLoss {
    /// The other nodes go on; the lost node's users count failed and the report names it (the
    /// run then exits with the run-failed code).
    #[default]
    Continue,
    /// Stop every node and end the run.
    Abort,
}

/// Everything a run needs besides the scenario and the backend.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The cluster's name (run ids, machine names, the lock); see [`names`].
    pub cluster_name: String,
    /// Users to simulate.
    pub users: u64,
    /// How long users iterate.
    pub duration: Duration,
    /// The most nodes the run may use.
    pub max_allowed_nodes: u64,
    /// How long one node may take from create to a completed handshake.
    pub creation_timeout: Duration,
    /// The sizing formula's knobs.
    pub sizing: SizingConfig,
    /// The agents' hard lifetime.
    pub ttl: Duration,
    /// The agents' dead-man grace period.
    pub grace: Duration,
    /// Serve the agent link over TLS even on loopback and tunnels. Links that cross a network
    /// ([`LinkPath::Network`]) use TLS whatever this says.
    pub tls: bool,
    /// Time between user starts on each node (0: all at once).
    pub start_interval: Duration,
    /// Run the agents without a browser (benchmarks of the cluster machinery).
    pub no_browser: bool,
    /// Consent to the cost of a billed backend's machines (see [`CostConfirmation`]).
    pub cost_confirmation: Option<CostConfirmation>,
    /// What to do when a node is lost during the run.
    pub on_node_loss: NodeLoss,
    /// How long teardown may take before it gives up and names what is left.
    pub teardown_timeout: Duration,
    /// The most the run may cost, in USD: refused before any create when the estimate is above
    /// it, stopped (and torn down) when the cost so far reaches it.
    pub max_cost_usd: Option<f64>,
    /// Where this machine keeps liveload's state: when set, the run holds a liveness lock
    /// there ([`crate::state::RunAlive`]) so `liveload cleanup --all` leaves it alone.
    pub state_dir: Option<std::path::PathBuf>,
    /// Write raw trace records to a file (`--trace`).
    pub trace: Option<TraceOutput>,
    /// The run's id, when the caller must know it before the run starts (the server records
    /// it first, so a run it was holding when it died can be torn down at its next start);
    /// `<cluster name>-<8 hex digits>` from [`names::new_run_id`]. Default: a new one.
    pub run_id: Option<String>,
}

/// The largest `--trace-budget`: a second's records must fit in a snapshot with room to spare.
pub const MAX_TRACE_BYTES_PER_S: u64 = 1024 * 1024;

/// Where and how much to trace (`--trace FILE`, `--trace-sample`, `--trace-budget`).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceOutput {
    /// The JSON Lines file, created (or emptied) when users start.
    pub path: std::path::PathBuf,
    /// The share of iterations traced, 0 to 1.
    pub sample: f64,
    /// The most record bytes one node sends per second.
    pub bytes_per_s: u64,
}

impl RunOptions {
    /// Defaults for `users` over `duration`: 100 nodes at most, 120 s creation timeout, 30 s
    /// grace, a TTL of the duration plus 15 minutes, TLS only where the link needs it, no cost
    /// confirmation.
    pub fn new(cluster_name: impl Into<String>, users: u64, duration: Duration) -> Self {
        RunOptions {
            cluster_name: cluster_name.into(),
            users,
            duration,
            max_allowed_nodes: 100,
            creation_timeout: Duration::from_secs(120),
            sizing: SizingConfig::default(),
            // Saturating: an absurd duration is `validate`'s to refuse, with a message, not
            // a constructor's to panic on.
            ttl: duration.saturating_add(TTL_MARGIN),
            grace: Duration::from_secs(30),
            tls: false,
            start_interval: Duration::ZERO,
            no_browser: false,
            cost_confirmation: None,
            on_node_loss: NodeLoss::Continue,
            teardown_timeout: Duration::from_secs(300),
            state_dir: None,
            max_cost_usd: None,
            trace: None,
            run_id: None,
        }
    }

    /// Check every option before anything is created.
    pub fn validate(&self) -> Result<()> {
        names::validate_cluster_name(&self.cluster_name)?;
        if let Some(run_id) = &self.run_id {
            names::validate_run_id(run_id, &self.cluster_name)?;
        }
        if self.max_allowed_nodes == 0 {
            return Err(Error::MaxAllowedNodesInvalid { value: 0 });
        }
        let invalid = |option: &str, message: &str| {
            Err(Error::InvalidOption {
                option: option.into(),
                message: message.into(),
            })
        };
        if self.users == 0 {
            return invalid("--users", "must be at least 1");
        }
        if self.duration.is_zero() {
            return invalid("--duration", "must be more than 0");
        }
        if self.grace < Duration::from_secs(1) {
            return invalid("--grace", "must be at least 1s");
        }
        if self.teardown_timeout < Duration::from_secs(1) {
            return invalid("--teardown-timeout", "must be at least 1s");
        }
        if self
            .max_cost_usd
            .is_some_and(|cap| !cap.is_finite() || cap <= 0.0)
        {
            return invalid("--max-cost", "must be a positive amount of USD");
        }
        if let Some(trace) = &self.trace {
            if !(0.0..=1.0).contains(&trace.sample) {
                return invalid("--trace-sample", "must be from 0 to 1");
            }
            if !(1024..=MAX_TRACE_BYTES_PER_S).contains(&trace.bytes_per_s) {
                return invalid(
                    "--trace-budget",
                    "must be from 1024 to 1048576 bytes a second (records travel in the \
                     nodes' snapshots, which must stay under the protocol's frame limit)",
                );
            }
        }
        for (option, value) in [
            ("--duration", self.duration),
            ("--creation-timeout", self.creation_timeout),
            ("--ttl", self.ttl),
            ("--grace", self.grace),
            ("--start-interval", self.start_interval),
            ("--teardown-timeout", self.teardown_timeout),
        ] {
            if value > MAX_DURATION {
                let message = format!("{value:?} is longer than the limit of {MAX_DURATION_TEXT}");
                return invalid(option, &message);
            }
        }
        // Every deadline and TTL a run computes is a sum of some of these; each is bounded
        // above, so even their total fits a `Duration`. Checked anyway, so a change to the
        // bound can never turn into a panic later in the run.
        let all = [
            self.duration,
            self.creation_timeout,
            self.ttl,
            self.grace,
            self.start_interval,
        ];
        if all
            .iter()
            .try_fold(Duration::ZERO, |sum, d| sum.checked_add(*d))
            .is_none()
        {
            return invalid(
                "--ttl",
                "duration, creation timeout, TTL and grace overflow when added",
            );
        }
        self.sizing.validate()
    }

    /// The agents' TTL when none is given: `duration + creation_timeout + 15m` (time to boot,
    /// run, and tear down with room to spare); `None` when that is longer than
    /// [`MAX_DURATION`] (or overflows), so a caller can say which options to shorten.
    pub fn default_ttl(duration: Duration, creation_timeout: Duration) -> Option<Duration> {
        duration
            .checked_add(creation_timeout)?
            .checked_add(TTL_MARGIN)
            .filter(|ttl| *ttl <= MAX_DURATION)
    }
}

/// What the TTL adds to a run's own length: teardown, retries, a slow report.
const TTL_MARGIN: Duration = Duration::from_secs(15 * 60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::deadline_after;
    use tokio::time::Instant;

    #[test]
    fn options_are_checked_before_anything_is_created() {
        let ok = RunOptions::new("demo", 1, Duration::from_secs(1));
        ok.validate().unwrap();
        let mut zero_nodes = ok.clone();
        zero_nodes.max_allowed_nodes = 0;
        assert_eq!(
            zero_nodes.validate().unwrap_err().code(),
            "max_allowed_nodes_invalid"
        );
        let mut bad_name = ok.clone();
        bad_name.cluster_name = "-x".into();
        assert_eq!(
            bad_name.validate().unwrap_err().code(),
            "cluster_name_invalid"
        );
        let mut no_users = ok.clone();
        no_users.users = 0;
        assert_eq!(no_users.validate().unwrap_err().code(), "invalid_option");
        let mut bad_factor = ok;
        bad_factor.sizing.memory_safety_factor = 1.5;
        assert_eq!(bad_factor.validate().unwrap_err().code(), "invalid_option");
    }

    /// Regression (issue 12): `RunOptions::new` added 15 minutes to the duration unchecked,
    /// and nothing refused durations whose sums overflow later (TTL, deadlines).
    #[test]
    fn durations_past_the_bound_are_refused_by_name() {
        let huge = RunOptions::new("demo", 1, Duration::MAX);
        assert_eq!(huge.ttl, Duration::MAX, "saturated, not panicked");
        let err = huge.validate().unwrap_err().to_string();
        assert!(
            err.contains("--duration") && err.contains("10 years"),
            "{err}"
        );
        let ok = RunOptions::new("demo", 1, Duration::from_secs(1));
        for option in ["--creation-timeout", "--ttl", "--grace", "--start-interval"] {
            let mut bad = ok.clone();
            let field = match option {
                "--creation-timeout" => &mut bad.creation_timeout,
                "--ttl" => &mut bad.ttl,
                "--grace" => &mut bad.grace,
                _ => &mut bad.start_interval,
            };
            *field = MAX_DURATION + Duration::from_nanos(1);
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(option), "{option}: {err}");
        }
        let mut at_bound = ok;
        at_bound.duration = MAX_DURATION;
        at_bound.creation_timeout = MAX_DURATION;
        at_bound.validate().unwrap();
        assert_eq!(
            RunOptions::default_ttl(Duration::MAX, Duration::from_secs(1)),
            None
        );
        assert_eq!(RunOptions::default_ttl(MAX_DURATION, Duration::ZERO), None);
        assert_eq!(
            RunOptions::default_ttl(Duration::from_secs(60), Duration::from_secs(120)),
            Some(Duration::from_secs(60 + 120 + 15 * 60))
        );
    }

    #[test]
    fn a_deadline_past_the_clock_is_capped_not_a_panic() {
        let now = Instant::now();
        assert_eq!(deadline_after(now, Duration::MAX), now + MAX_DURATION);
        assert_eq!(
            deadline_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }
}
