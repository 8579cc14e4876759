//! Several scenarios on one cluster (`liveload run --reuse-cluster a.yaml b.yaml`): booted
//! once, each scenario prepared, started, observed and reported on it in turn, torn down once.
//!
//! The cluster is planned with `cluster`'s options: the most users of any scenario, their
//! durations and lifetimes added up. It serves only scenarios that size alike (the same
//! per-user figures): a node's capacity is measured once. Each scenario's users are spread
//! over the nodes by capacity, as a single run's are; nodes a smaller scenario leaves without
//! users wait for the next one instead of being destroyed. The links stay open from one
//! scenario to the next: an agent takes a new run only from the session that ran its previous
//! one, and only once that run has finished (the agent's `claim_run`).
//!
//! Each scenario gets its own run id, `<cluster run id>-<n>`, for its report and trace; the
//! machines carry the cluster's. The first report's `boot_s` is the cluster's boot; the others'
//! is 0. A scenario that fails ends the sequence (the cluster's state is then unknown): the
//! scenarios after it are not run; a node lost during a scenario is left out of the next ones.
//! Interrupted, the sequence keeps the reports it has. Each report's `cost_usd` counts its
//! nodes from their creation, so the last report's is (about) the sequence's, and `--max-cost`
//! holds over the whole sequence as it runs.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::boot::{Booter, LiveNode};
use super::{
    Created, Observer, RunOptions, RunReport, before_creating, boot_cluster, on_cluster, prepare,
    result, run_on_nodes, shut_down, size, trace_file,
};
use crate::backend::Backend;
use crate::scenario::Scenario;
use crate::{Error, Result, names};

/// What a sequence on one cluster did: each scenario's outcome, in order, up to the first that
/// failed (those after it were not run), and the teardown's.
pub struct SequenceOutcome {
    /// The scenarios' reports or errors.
    pub runs: Vec<Result<RunReport>>,
    /// Whether every node is confirmed gone.
    pub teardown: Result<()>,
}

/// Run `items` (each scenario with its options) one after another on one cluster booted with
/// `cluster`'s options. Every node is destroyed before this returns, whatever happens.
pub async fn run_sequence(
    backend: Arc<dyn Backend>,
    items: &[(&Scenario, RunOptions)],
    cluster: &RunOptions,
    observer: Arc<dyn Observer>,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<SequenceOutcome> {
    cluster.validate()?;
    if let Some((scenario, _)) = items.iter().find(|(_, o)| o.sizing != cluster.sizing) {
        return Err(Error::InvalidOption {
            option: "--reuse-cluster".into(),
            message: format!(
                "scenario '{}' sizes its users differently from the first (its sizing: block \
                 or profile): one cluster cannot fit both; run them without --reuse-cluster",
                scenario.name
            ),
        });
    }
    let run_id = names::new_run_id(&cluster.cluster_name);
    let ids: Vec<String> = (1..=items.len()).map(|n| format!("{run_id}-{n}")).collect();
    for ((scenario, options), id) in items.iter().zip(&ids) {
        options.validate()?;
        prepare::check_scenario_fits(scenario, options, id)?;
        if let Some(trace) = &options.trace {
            trace_file::TraceWriter::create(&trace.path)?;
        }
    }
    before_creating(backend.as_ref(), cluster).await?;
    let created: Created = Arc::default();
    let runs: Arc<Mutex<Vec<Result<RunReport>>>> = Arc::default();
    let on = OneCluster {
        backend: backend.clone(),
        cluster,
        run_id: &run_id,
        observer: observer.clone(),
    };
    let work = on.run(items, &ids, created.clone(), runs.clone());
    let cluster_of = (backend.as_ref(), cluster, run_id.as_str(), &created);
    let (outcome, teardown) = on_cluster(cluster_of, observer.as_ref(), work, interrupt).await?;
    let mut runs = std::mem::take(&mut *runs.lock().expect("not poisoned"));
    if let Err(e) = outcome {
        runs.push(Err(e));
    }
    Ok(SequenceOutcome { runs, teardown })
}

/// The cluster the scenarios share.
struct OneCluster<'a> {
    backend: Arc<dyn Backend>,
    cluster: &'a RunOptions,
    run_id: &'a str,
    observer: Arc<dyn Observer>,
}

impl OneCluster<'_> {
    /// Boot, then each scenario in turn, each report pushed to `runs` as it is made (an
    /// interruption keeps them); the first error ends the sequence.
    async fn run(
        &self,
        items: &[(&Scenario, RunOptions)],
        ids: &[String],
        created: Created,
        runs: Arc<Mutex<Vec<Result<RunReport>>>>,
    ) -> Result<()> {
        let (inbox_tx, mut inbox) = mpsc::unbounded_channel();
        let booter = Booter::new(
            self.backend.clone(),
            self.cluster,
            self.run_id,
            created,
            self.observer.clone(),
            inbox_tx,
        )?;
        let (plan, mut live, mut boot_s) = boot_cluster(&booter).await?;
        for ((scenario, options), id) in items.iter().zip(ids) {
            let capacity: u64 = live.iter().map(|n| n.report.capacity.users).sum();
            if capacity < options.users {
                shut_down(&live);
                return Err(Error::RunFailed {
                    message: format!(
                        "scenario '{}': its {} users no longer fit the cluster (room for \
                         {capacity}: nodes were lost)",
                        scenario.name, options.users
                    ),
                });
            }
            size::share_users(&booter, options.users, &mut live);
            let (active, idle): (Vec<LiveNode>, Vec<LiveNode>) =
                live.into_iter().partition(|n| n.report.users > 0);
            let booted = result::Booted {
                backend: self.backend.name(),
                run_id: id,
                plan: plan.clone(),
                boot_s,
            };
            let ran = run_on_nodes(
                &booter,
                active,
                &mut inbox,
                (scenario, options),
                booted,
                None,
            );
            let (active, report) = match ran.await {
                Ok(done) => done,
                Err(e) => {
                    shut_down(&idle);
                    return Err(e);
                }
            };
            // A node lost in this scenario takes no part in the next (teardown destroys it).
            let lost: Vec<&str> = report.lost_nodes.iter().map(|n| n.id.as_str()).collect();
            let active: Vec<LiveNode> = active
                .into_iter()
                .filter(|n| !lost.contains(&n.report.id.as_str()))
                .collect();
            runs.lock().expect("not poisoned").push(Ok(report));
            live = active.into_iter().chain(idle).collect();
            live.sort_by_key(|n| n.report.index);
            boot_s = 0.0;
        }
        shut_down(&live);
        Ok(())
    }
}
