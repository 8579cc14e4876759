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
mod options;
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
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use boot::{wait_ready, wait_ready_or_destroy};
pub use control::{
    ControlEnd, ControlHandle, ControlRequest, LiveNodeStatus, LiveStatus, control_channel,
};
pub use event::{Event, Observer, Quiet};
pub use observe::LostNode;
pub use options::{CostConfirmation, MAX_TRACE_BYTES_PER_S, NodeLoss, RunOptions, TraceOutput};
pub use plan::{Estimate, Plan, estimate, human_duration, max_nodes, plan};
pub use prepare::check_unique_rows;
pub use result::{NodeReport, RESULT_SCHEMA_VERSION, RunReport};
pub use sequence::{SequenceOutcome, run_sequence};
pub use teardown::teardown;
pub use terms::{NodeTerms, describe_load, node_terms};

use crate::backend::{Backend, Billing, LinkPath, NodeHandle};
use crate::scenario::MAX_DURATION;
use crate::{Error, Result, names};
use boot::{Booter, Inbox, LiveNode};

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
    let run_id = options
        .run_id
        .clone()
        .unwrap_or_else(|| names::new_run_id(&options.cluster_name));
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
/// estimate under `--max-cost`. [`run_controlled`] checks them itself; a caller that must
/// answer before starting (the server's API) can ask first.
pub async fn check_before_creating(backend: &dyn Backend, options: &RunOptions) -> Result<()> {
    before_creating(backend, options).await
}

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
