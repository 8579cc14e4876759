//! A whole run: plan → provision → measure → size → dispatch → observe → report → tear down.
//!
//! [`run`] is the one function the CLI calls. Its shape guarantees the promise users care most
//! about: every node the run creates is destroyed, whatever happens. The run itself is one
//! future raced against the interrupt signal; whichever ends first, [`teardown`] then destroys
//! every node this process created *and* every node the backend still lists for the run id.
//!
//! Each phase has its own module, in the order a run meets them:
//! [`plan`] (node size and cost), [`boot`](wait_ready) (create, wait, authenticate),
//! `size` (every node's facts decide its share; boot the shortfall), `prepare` (assignments,
//! then a simultaneous start), `observe` (exact merge, thresholds, control), `result` (the
//! report) and [`teardown`]. [`run_sequence`] runs several scenarios on one cluster with the
//! same phases (`sequence`).
//!
//! Two policies are enforced here, before anything is created, for every caller (CLI, library,
//! server): a backend whose link crosses the network ([`LinkPath::Network`]) always gets TLS,
//! and a backend that bills ([`Billing::Billed`]) needs a [`CostConfirmation`].

mod boot;
mod control;
mod coordinate;
mod event;
mod observe;
mod plan;
mod prepare;
mod result;
mod sequence;
pub mod series;
mod size;
mod teardown;
mod terms;
mod trace_file;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use liveload_proto::{AgentMessage, ControllerMessage};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use boot::{wait_ready, wait_ready_or_destroy};
pub use control::{
    ControlEnd, ControlHandle, ControlRequest, LiveNodeStatus, LiveStatus, control_channel,
};
pub use event::{Event, Observer, Quiet};
pub use observe::LostNode;
pub use plan::{Estimate, Plan, estimate, human_duration, max_nodes, plan};
pub use prepare::check_unique_rows;
pub use result::{NodeReport, RESULT_SCHEMA_VERSION, RunReport};
pub use sequence::{SequenceOutcome, run_sequence};
pub use teardown::teardown;
pub use terms::{NodeTerms, describe_load, node_terms};

use crate::backend::{Backend, Billing, LinkPath, NodeHandle};
use crate::scenario::{MAX_DURATION, MAX_DURATION_TEXT};
use crate::sizing::SizingConfig;
use crate::{Error, Result, names};
use boot::{Booter, Inbox, LiveNode};

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
        }
    }

    /// Check every option before anything is created.
    pub fn validate(&self) -> Result<()> {
        names::validate_cluster_name(&self.cluster_name)?;
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

/// The instant `after` past `from`, for a deadline built from a user's duration.
///
/// Durations from files and flags are bounded by [`MAX_DURATION`] and `RunOptions::validate`,
/// but a library caller can put any `Duration` in a `Scenario` or `RunOptions`, and
/// `Instant + Duration` panics on overflow. A deadline this far away is "never" for a load
/// test, so capping it at the bound changes nothing a user can observe.
pub(crate) fn deadline_after(from: Instant, after: Duration) -> Instant {
    // `from + 10 years` fits every clock liveload runs on; should one not, the deadline is
    // now and the phase times out with its own message rather than panicking.
    from.checked_add(after.min(MAX_DURATION)).unwrap_or(from)
}

/// Does this run's agent link need TLS? Always across a network; elsewhere when asked.
pub fn link_needs_tls(backend: &dyn Backend, options: &RunOptions) -> bool {
    options.tls || backend.link_path() == LinkPath::Network
}

/// Refuse to create billed machines without consent. `estimate` (when known) goes into the
/// error so a caller can show what it would confirm.
fn require_confirmation(
    backend: &dyn Backend,
    options: &RunOptions,
    estimate: Option<&Estimate>,
) -> Result<()> {
    match (backend.billing(), &options.cost_confirmation) {
        (Billing::Free, _) => Ok(()),
        (Billing::Billed, Some(confirmation)) => {
            tracing::info!(backend = backend.name(), given_by = %confirmation.given_by, "cost confirmed");
            Ok(())
        }
        (Billing::Billed, None) => Err(Error::ConfirmationRequired {
            backend: backend.name(),
            estimate: estimate.map(ToString::to_string),
        }),
    }
}

/// Refuse, before anything is created, a billed run whose estimate is above `--max-cost`, or
/// whose cost cannot be estimated.
async fn check_cost_cap(backend: &dyn Backend, options: &RunOptions) -> Result<()> {
    let Some(cap) = options.max_cost_usd else {
        return Ok(());
    };
    if backend.billing() == Billing::Free {
        return Ok(());
    }
    let unknown = |why: &str| Error::CostUnknown {
        backend: backend.name(),
        why: Some(why.to_string()),
    };
    let estimate = estimate(backend, options)
        .await?
        .ok_or_else(|| unknown("its node size is known only once a node is measured"))?;
    let cost = estimate
        .cost_usd
        .ok_or_else(|| unknown("no price for this size or region"))?;
    if cost > cap {
        return Err(Error::CostCapExceeded {
            estimate_usd: cost,
            max_usd: cap,
            detail: format!(
                "{} node(s) x ${:.4}/h x {}",
                estimate.plan.nodes,
                estimate.plan.node_hourly_price.unwrap_or_default(),
                human_duration(estimate.hours * 3600.0)
            ),
        });
    }
    Ok(())
}

/// Nodes this process created and has not destroyed yet.
type Created = Arc<Mutex<Vec<NodeHandle>>>;

/// Run `scenario` on `backend`. Every node is destroyed before this returns, on success, error or
/// when `interrupt` completes (Ctrl-C).
pub async fn run(
    backend: Arc<dyn Backend>,
    scenario: &crate::scenario::Scenario,
    options: &RunOptions,
    observer: Arc<dyn Observer>,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<RunReport> {
    run_controlled(backend, scenario, options, observer, interrupt, None).await
}

/// [`run`], taking add/remove-users requests from `control` and publishing its live status
/// there (the CLI serves both over HTTP).
pub async fn run_controlled(
    backend: Arc<dyn Backend>,
    scenario: &crate::scenario::Scenario,
    options: &RunOptions,
    observer: Arc<dyn Observer>,
    interrupt: impl std::future::Future<Output = ()>,
    mut control: Option<ControlEnd>,
) -> Result<RunReport> {
    options.validate()?;
    let run_id = names::new_run_id(&options.cluster_name);
    // Before any machine exists: a scenario too large for the wire would fail every node.
    prepare::check_scenario_fits(scenario, options, &run_id)?;
    // A trace file that cannot be written is found now, not after machines were paid for.
    if let Some(trace) = &options.trace {
        trace_file::TraceWriter::create(&trace.path)?;
    }
    before_creating(backend.as_ref(), options).await?;
    let created: Created = Arc::default();
    let work = run_cluster(
        backend.clone(),
        scenario,
        options,
        &run_id,
        created.clone(),
        observer.clone(),
        control.as_mut(),
    );
    let cluster = (backend.as_ref(), options, run_id.as_str(), &created);
    let (outcome, teardown_result) =
        on_cluster(cluster, observer.as_ref(), work, interrupt).await?;
    match (outcome, teardown_result) {
        // The run ended and only teardown is in doubt: keep the results with the error.
        (
            Ok(report),
            Err(Error::TeardownIncomplete {
                backend,
                run_id,
                nodes,
                timeout,
                ..
            }),
        ) => Err(Error::TeardownIncomplete {
            backend,
            run_id,
            nodes,
            timeout,
            report: Some(Box::new(report)),
        }),
        (outcome, teardown_result) => {
            let report = outcome?;
            teardown_result?;
            Ok(report)
        }
    }
}

/// The policies checked before any machine is created: consent to a billed run, and its
/// estimate under `--max-cost`.
async fn before_creating(backend: &dyn Backend, options: &RunOptions) -> Result<()> {
    if backend.billing() == Billing::Billed && options.cost_confirmation.is_none() {
        let estimate = estimate(backend, options).await.ok().flatten();
        require_confirmation(backend, options, estimate.as_ref())?;
    }
    check_cost_cap(backend, options).await
}

/// Do `work` on a cluster (the backend, options, run id and nodes created so far), raced
/// against `interrupt`, the run marked alive meanwhile (for `cleanup`); then tear down every
/// node, whatever happened. The work's outcome and the teardown's.
async fn on_cluster<T>(
    (backend, options, run_id, created): (&dyn Backend, &RunOptions, &str, &Created),
    observer: &dyn Observer,
    work: impl std::future::Future<Output = Result<T>>,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<(Result<T>, Result<()>)> {
    let _alive = match &options.state_dir {
        Some(dir) => Some(crate::state::RunAlive::hold(dir, run_id)?),
        None => None,
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        _ = interrupt => Err(Error::Interrupted),
    };
    let teardown_result =
        teardown(backend, run_id, created, observer, options.teardown_timeout).await;
    Ok((outcome, teardown_result))
}

/// The run between plan and teardown, phase by phase.
async fn run_cluster(
    backend: Arc<dyn Backend>,
    scenario: &crate::scenario::Scenario,
    options: &RunOptions,
    run_id: &str,
    created: Created,
    observer: Arc<dyn Observer>,
    control: Option<&mut ControlEnd>,
) -> Result<RunReport> {
    let (inbox_tx, mut inbox) = mpsc::unbounded_channel();
    let booter = Booter::new(
        backend.clone(),
        options,
        run_id,
        created,
        observer,
        inbox_tx,
    )?;
    let (plan, live, boot_s) = boot_cluster(&booter).await?;
    let live = size::assign(&booter, live).await;
    let booted = result::Booted {
        backend: backend.name(),
        run_id,
        plan,
        boot_s,
    };
    let (live, report) = run_on_nodes(
        &booter,
        live,
        &mut inbox,
        (scenario, options),
        booted,
        control,
    )
    .await?;
    shut_down(&live);
    Ok(report)
}

/// Phases 2 to 4: plan, boot, and boot more where the nodes measured short. The plan, the
/// nodes, and the seconds they took.
async fn boot_cluster(booter: &Booter<'_>) -> Result<(Plan, Vec<LiveNode>, f64)> {
    let boot_started = Instant::now();
    let mut live: Vec<LiveNode> = Vec::new();
    let plan = size::plan_and_boot(booter, &mut live).await?;
    size::boot_shortfall(booter, &mut live).await?;
    Ok((plan, live, boot_started.elapsed().as_secs_f64()))
}

/// Phases 5 to 7 on nodes whose users are assigned: prepare and start them, observe the run,
/// and build its report. The nodes still live, and the report.
async fn run_on_nodes(
    booter: &Booter<'_>,
    live: Vec<LiveNode>,
    inbox: &mut Inbox,
    (scenario, options): (&crate::scenario::Scenario, &RunOptions),
    booted: result::Booted<'_>,
    control: Option<&mut ControlEnd>,
) -> Result<(Vec<LiveNode>, RunReport)> {
    let run_id = booted.run_id;
    let positions = prepare::positions(&live);
    prepare::prepare_and_start(&live, &positions, inbox, scenario, options, run_id).await?;
    booter.observer.event(&Event::Started);
    let observation = observe::Observation {
        live,
        positions: &positions,
        scenario,
        options,
        run_id,
        observer: booter.observer.as_ref(),
        hourly_price: booter.backend.hourly_price(),
    };
    let (live, observed) = observation.run(inbox, control).await?;
    let nodes = live.iter().map(|n| n.report.clone()).collect();
    Ok((live, result::build(booted, scenario, nodes, observed)))
}

/// Tell every node's agent to exit (teardown destroys the machines anyway).
fn shut_down(live: &[LiveNode]) {
    for node in live {
        let _ = node.commands.send(ControllerMessage::Shutdown);
    }
}

/// Send a command to a node's link task.
fn send(node: &LiveNode, message: ControllerMessage) -> Result<()> {
    node.commands
        .send(message)
        .map_err(|_| Error::AgentConnection {
            node: node.report.id.clone(),
            message: "the link to the agent is closed".into(),
        })
}

/// The next message from any node, or a run failure when every link closed or `deadline`
/// passed.
async fn next_message(
    inbox: &mut Inbox,
    deadline: Instant,
    phase: &str,
) -> Result<(usize, Result<AgentMessage>)> {
    match tokio::time::timeout_at(deadline, inbox.recv()).await {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(Error::RunFailed {
            message: format!("every agent link closed during {phase}"),
        }),
        Err(_) => Err(Error::RunFailed {
            message: format!("agents did not answer in time during {phase}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
