//! A started run's task: drive the core's run, take a point of it every second (into the
//! history and out to every subscriber), and record how it ended, with the exit code the CLI
//! would have had.

use std::sync::{Arc, Mutex};

use liveload_core::lock::ScenarioLock;
use liveload_core::run::{self, ControlHandle, LiveStatus, RunOptions};
use liveload_core::scenario::Scenario;
use liveload_core::{Backend, Error, names};
use tokio::sync::{broadcast, oneshot, watch};

use super::{ActiveRun, ActiveRuns, LivePoint, Runs, TICK};
use crate::store::{RunEnd, RunRecord, RunStatus, Store};

/// What a validated, recorded run needs to be launched.
pub(super) struct Launch {
    pub backend: Arc<dyn Backend>,
    pub scenario: Scenario,
    pub options: RunOptions,
    /// Held until the run has ended and its end is recorded.
    pub lock: ScenarioLock,
}

impl Runs {
    /// Register the run as active and drive it on a task of its own.
    pub(super) fn launch(&self, record: &RunRecord, launch: Launch) {
        let run_id = record.id.clone();
        let (control, control_end) = run::control_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (points, _) = broadcast::channel(64);
        let (ended_tx, ended) = watch::channel(false);
        let active = Arc::new(ActiveRun {
            control: control.clone(),
            points: points.clone(),
            ended,
            stop: Mutex::new(Some(stop_tx)),
        });
        self.active
            .lock()
            .expect("not poisoned")
            .insert(run_id.clone(), active);
        let job = Job {
            store: self.store.clone(),
            active: self.active.clone(),
            run_id: run_id.clone(),
            control,
            points,
            ended: ended_tx,
        };
        let Launch {
            backend,
            scenario,
            options,
            lock,
        } = launch;
        let job = Arc::new(job);
        tokio::spawn(async move {
            let _lock = lock;
            let teardown = (backend.clone(), options.teardown_timeout);
            // The run on a task of its own: should it panic (a bug), this task still tears
            // down what carries the run's id and records the run's end.
            let sampler = job.clone();
            let run = tokio::spawn(async move {
                let run = run::run_controlled(
                    backend,
                    &scenario,
                    &options,
                    Arc::new(run::Quiet),
                    stopped(stop_rx),
                    Some(control_end),
                );
                sampler.sample_until(run).await
            });
            let outcome = match run.await {
                Ok(outcome) => outcome,
                Err(failed) => Err(job.tear_down_after(failed, teardown).await),
            };
            job.finish(outcome).await;
        });
    }
}

/// The interrupt a run is raced against: a stop sent through the API. A dropped sender (the
/// server going away without asking) is not a stop.
async fn stopped(stop: oneshot::Receiver<()>) {
    if stop.await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A started run's side of the server: sample it, then record how it ended.
struct Job {
    store: Arc<dyn Store>,
    active: ActiveRuns,
    run_id: String,
    control: ControlHandle,
    points: broadcast::Sender<Arc<str>>,
    ended: watch::Sender<bool>,
}

impl Job {
    /// Drive `run` to its end, taking a point of its live status every second.
    async fn sample_until(
        &self,
        run: impl std::future::Future<Output = Result<run::RunReport, Error>>,
    ) -> Result<run::RunReport, Error> {
        tokio::pin!(run);
        // Points are written by a task of their own: a slow database must never hold the run
        // (its future is only polled here), least of all its teardown.
        let (to_store, mut points_to_store) =
            tokio::sync::mpsc::unbounded_channel::<(u64, Arc<str>)>();
        let (store, run_id) = (self.store.clone(), self.run_id.clone());
        tokio::spawn(async move {
            while let Some((second, json)) = points_to_store.recv().await {
                if let Err(e) = store.add_point(&run_id, second, &json).await {
                    tracing::warn!(error = %e, "recording a point");
                }
            }
        });
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(started + TICK, TICK);
        let mut iterations_before = 0;
        loop {
            tokio::select! {
                outcome = &mut run => return outcome,
                _ = tick.tick() => {
                    let status = self.control.status.borrow().clone();
                    let second = started.elapsed().as_secs();
                    let point = point_of(&status, second, &mut iterations_before);
                    let json: Arc<str> = serde_json::to_string(&point).expect("serialises").into();
                    let _ = to_store.send((second, json.clone()));
                    let _ = self.points.send(json);
                }
            }
        }
    }

    /// The run's task failed (a panic): destroy whatever its backend holds under its id; the
    /// error to record.
    async fn tear_down_after(
        &self,
        failed: tokio::task::JoinError,
        (backend, timeout): (Arc<dyn Backend>, std::time::Duration),
    ) -> Error {
        tracing::error!(run = %self.run_id, error = %failed, "a run's task failed");
        let nothing_created = Arc::new(Mutex::new(Vec::new()));
        let torn_down = run::teardown(
            backend.as_ref(),
            &self.run_id,
            &nothing_created,
            &run::Quiet,
            timeout,
        )
        .await;
        match torn_down {
            Ok(()) => Error::RunFailed {
                message: format!(
                    "the run failed inside the server ({failed}); its nodes were torn down"
                ),
            },
            Err(e) => e,
        }
    }

    /// Record the outcome in the history, then let go of the run.
    async fn finish(&self, outcome: Result<run::RunReport, Error>) {
        let end = run_end(outcome);
        if let Err(e) = self
            .store
            .end_run(&self.run_id, &end, names::unix_now_s())
            .await
        {
            tracing::error!(error = %e, run = %self.run_id, "recording a run's end");
        }
        self.active
            .lock()
            .expect("not poisoned")
            .remove(&self.run_id);
        let _ = self.ended.send(true);
    }
}

/// One second's point from the live status.
fn point_of(status: &LiveStatus, second: u64, iterations_before: &mut u64) -> LivePoint {
    let counter = |name: &str| status.counters.get(name).copied().unwrap_or(0);
    let iterations = counter("iterations_ok") + counter("iterations_failed");
    let per_s = iterations.saturating_sub(*iterations_before);
    *iterations_before = iterations;
    LivePoint {
        second,
        phase: status.phase.clone(),
        active_users: status.active_users,
        target_users: status.target_users,
        iterations_per_s: per_s,
        iterations_failed: counter("iterations_failed"),
        p95_ms: status
            .latencies
            .iter()
            .map(|(name, s)| (name.clone(), s.p95_ms))
            .collect(),
        nodes: serde_json::to_value(&status.nodes).unwrap_or_default(),
        step: status.last_second,
    }
}

/// How a run's outcome is recorded: its status, and the exit code `liveload run` would have
/// had, so a verdict here is the CLI's verdict.
fn run_end(outcome: Result<run::RunReport, Error>) -> RunEnd {
    use liveload_core::error::exit_code;
    let documents = |report: &run::RunReport| {
        (
            serde_json::to_string_pretty(report).ok(),
            Some(liveload_core::report::html(report)),
        )
    };
    match outcome {
        Ok(report) => {
            let (result_json, report_html) = documents(&report);
            let code = report.exit_code();
            let (status, message) = match code {
                exit_code::OK => (RunStatus::Passed, None),
                exit_code::THRESHOLD_FAILED => (RunStatus::Failed, None),
                exit_code::COST_CAP_REACHED => (
                    RunStatus::Error,
                    Some("the cost so far reached the run's max_cost: it was stopped".into()),
                ),
                _ => (
                    RunStatus::Error,
                    Some(format!(
                        "{} of {} users failed (the report's errors say why)",
                        report.users_failed, report.users
                    )),
                ),
            };
            RunEnd {
                status: Some(status),
                message: report.aborted.clone().or(message),
                result_json,
                report_html,
                exit_code: Some(code),
            }
        }
        Err(Error::Interrupted) => RunEnd {
            status: Some(RunStatus::Stopped),
            message: Some("stopped through the API; every node was torn down".into()),
            exit_code: Some(exit_code::INTERRUPTED),
            ..RunEnd::default()
        },
        Err(error) => {
            let (result_json, report_html) = match &error {
                Error::TeardownIncomplete {
                    report: Some(report),
                    ..
                } => documents(report),
                _ => (None, None),
            };
            RunEnd {
                status: Some(RunStatus::Error),
                message: Some(error.to_string()),
                result_json,
                report_html,
                exit_code: Some(error.exit_code()),
            }
        }
    }
}
