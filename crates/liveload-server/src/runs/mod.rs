//! The runs a server holds: start one from a request, watch it each second (into the history
//! and out to every SSE subscriber), stop it, and at start-up tear down what a previous server
//! left running.
//!
//! A run here is `liveload_core::run::run_controlled` on a task of its own, exactly as the CLI
//! runs it: the core's policies (cost confirmation, `max_cost`, TLS, teardown whatever
//! happens) hold. What the server adds: the scenario lock (one run per scenario name, shared
//! with the CLI on the same machine), the server's own caps on nodes and cost, the run id
//! recorded *before* any machine exists (so a crash leaves a record to clean up from), and
//! the one-second sampler.

mod job;
mod request;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liveload_core::lock::ScenarioLock;
use liveload_core::run::{self, ControlHandle, CostConfirmation, LiveStatus, RunOptions};
use liveload_core::scenario::Scenario;
use liveload_core::{Error, RunFilter, names};
use tokio::sync::{broadcast, oneshot, watch};

use crate::Backends;
use crate::store::{RunEnd, RunRecord, RunStatus, Store};

use job::Launch;
pub use request::{Limits, LivePoint, RunRequest};

/// A run the server is running now.
pub struct ActiveRun {
    /// Its live status and the channel for users changes.
    pub control: ControlHandle,
    /// Each second's point, as JSON, to every subscriber.
    pub points: broadcast::Sender<Arc<str>>,
    /// Turns `true` once the run has ended and its end is in the history.
    pub ended: watch::Receiver<bool>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

/// The server's runs: the history, and the ones running now.
pub struct Runs {
    store: Arc<dyn Store>,
    backends: Arc<dyn Backends>,
    state_dir: PathBuf,
    limits: Limits,
    /// This server's name in the history (its runs are the ones it recovers).
    name: String,
    /// Set when the server shuts down: no new run starts.
    closing: std::sync::atomic::AtomicBool,
    active: ActiveRuns,
}

/// The runs going on now, by id (shared with each run's task, which removes itself).
type ActiveRuns = Arc<Mutex<HashMap<String, Arc<ActiveRun>>>>;

/// Time points are taken at.
const TICK: Duration = Duration::from_secs(1);

impl Runs {
    /// Runs kept in `store` under this server's `name`, on `backends`, locking scenarios in
    /// `state_dir`.
    pub fn new(
        store: Arc<dyn Store>,
        backends: Arc<dyn Backends>,
        (name, state_dir): (String, PathBuf),
        limits: Limits,
    ) -> Runs {
        Runs {
            store,
            backends,
            state_dir,
            limits,
            name,
            closing: std::sync::atomic::AtomicBool::new(false),
            active: Arc::default(),
        }
    }

    /// The backends requests may name.
    pub fn backend_names(&self) -> Vec<String> {
        self.backends.names()
    }

    /// A running run, by id.
    pub fn active(&self, id: &str) -> Option<Arc<ActiveRun>> {
        self.active.lock().expect("not poisoned").get(id).cloned()
    }

    /// Every running run's live status.
    pub fn live(&self) -> Vec<LiveStatus> {
        let active = self.active.lock().expect("not poisoned");
        active
            .values()
            .map(|run| run.control.status.borrow().clone())
            .collect()
    }

    /// Validate `request`, record the run and start it; its record. `caller` (the token's
    /// name) is who confirmed a billed run's cost.
    pub async fn start(&self, request: RunRequest, caller: &str) -> Result<RunRecord, Error> {
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::RunFailed {
                message: "the server is shutting down: it starts no new run".into(),
            });
        }
        let (yaml, source) = self.scenario_text(&request).await?;
        let mut scenario = Scenario::from_untrusted_yaml(&source, &yaml)?;
        if let Some(base_url) = &request.base_url {
            scenario.set_base_url(base_url);
        }
        let backend_name = self.backend_name(request.backend.as_deref())?;
        let mut options = self.options_for(&scenario, &request)?;
        let lock = ScenarioLock::acquire(&self.state_dir, &scenario.name)?;
        let backend = self.backends.build(&backend_name).await?;
        if backend.billing() == liveload_core::Billing::Billed && options.max_cost_usd.is_none() {
            return Err(Error::InvalidOption {
                option: "max_cost".into(),
                message: format!(
                    "backend '{backend_name}' bills for its machines and this server has no \
                     --max-cost: it refuses billed runs without a cap (give max_cost, or start \
                     the server with --max-cost)"
                ),
            });
        }
        if request.confirm {
            options.cost_confirmation =
                Some(CostConfirmation::new(format!("API token '{caller}'")));
        }
        // The core's policies (consent to cost, the cost cap) answer the request itself, before
        // it is recorded as a run.
        run::check_before_creating(backend.as_ref(), &options).await?;
        let run_id = names::new_run_id(&options.cluster_name);
        options.run_id = Some(run_id.clone());
        options.state_dir = Some(self.state_dir.clone());
        let record = RunRecord {
            id: run_id.clone(),
            scenario: scenario.name.clone(),
            backend: backend_name,
            status: RunStatus::Running,
            users: options.users,
            created_unix_s: names::unix_now_s(),
            ended_unix_s: None,
            message: None,
            server: self.name.clone(),
            exit_code: None,
        };
        // Recorded before any machine exists: should this server die now, its next start
        // finds the record and tears down whatever carries the run id.
        self.store.insert_run(&record, &yaml).await?;
        self.launch(
            &record,
            Launch {
                backend,
                scenario,
                options,
                lock,
            },
        );
        Ok(record)
    }
}

impl Runs {
    /// The scenario's text and the path its errors name: the request's YAML, or a stored one.
    async fn scenario_text(&self, request: &RunRequest) -> Result<(String, PathBuf), Error> {
        let invalid = |message: String| Error::InvalidOption {
            option: "scenario".into(),
            message,
        };
        match (&request.scenario_yaml, &request.scenario) {
            (Some(yaml), None) => Ok((yaml.clone(), PathBuf::from("scenario.yaml"))),
            (None, Some(name)) => {
                let stored = self.store.scenario(name).await?;
                let yaml = stored
                    .ok_or_else(|| invalid(format!("no stored scenario is named '{name}'")))?;
                Ok((yaml, PathBuf::from(format!("{name}.yaml"))))
            }
            _ => Err(invalid(
                "give either scenario_yaml (the scenario's YAML) or scenario (a stored \
                 scenario's name)"
                    .into(),
            )),
        }
    }

    /// The backend a request names, when the server offers it; else the server's default.
    fn backend_name(&self, asked: Option<&str>) -> Result<String, Error> {
        let offered = self.backends.names();
        match asked {
            None => offered
                .first()
                .cloned()
                .ok_or_else(|| Error::InvalidOption {
                    option: "backend".into(),
                    message: "this server offers no backend".into(),
                }),
            Some(name) if offered.iter().any(|o| o == name) => Ok(name.to_string()),
            Some(name) => Err(Error::InvalidOption {
                option: "backend".into(),
                message: format!(
                    "this server does not offer backend '{name}'; it offers {}",
                    offered.join(", ")
                ),
            }),
        }
    }

    /// Ask a running run to stop (it tears down, then ends as `stopped`); whether it was
    /// running.
    pub fn stop(&self, id: &str) -> bool {
        let Some(run) = self.active(id) else {
            return false;
        };
        if let Some(stop) = run.stop.lock().expect("not poisoned").take() {
            let _ = stop.send(());
        }
        true
    }

    /// Refuse new runs, stop every run at once, and wait until each has torn down and ended.
    pub async fn stop_all(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let runs: Vec<(String, Arc<ActiveRun>)> = self
            .active
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(id, run)| (id.clone(), run.clone()))
            .collect();
        for (id, _) in &runs {
            self.stop(id);
        }
        let endings = runs.into_iter().map(|(_, run)| async move {
            let mut ended = run.ended.clone();
            let _ = ended.wait_for(|ended| *ended).await;
        });
        futures_util::future::join_all(endings).await;
    }

    /// At start-up: every run of this server the history still calls running was held by a
    /// process that died. Tear each down (its backend lists what still carries its id), and
    /// only then end it `interrupted`: a run whose teardown fails stays `running`, so the
    /// next start tries again, and the error names it and the `liveload cleanup` command. One
    /// run's failure does not stop the others' recovery, nor the server.
    pub async fn recover_interrupted(&self) -> Result<(), Error> {
        let unfinished = self.store.unfinished(&self.name).await?;
        for run in unfinished {
            tracing::warn!(run = %run.id, "tearing down a run this server left when it stopped");
            match self.tear_down_leftover(&run).await {
                Ok(()) => {
                    let end = RunEnd {
                        status: Some(RunStatus::Interrupted),
                        exit_code: Some(liveload_core::error::exit_code::INTERRUPTED),
                        message: Some(
                            "the server stopped while this run was in progress; its nodes were \
                             torn down when the server started again"
                                .into(),
                        ),
                        ..RunEnd::default()
                    };
                    self.store
                        .end_run(&run.id, &end, names::unix_now_s())
                        .await?;
                }
                Err(e) => tracing::error!(
                    run = %run.id,
                    error = %e,
                    "could not tear down a run left by this server; it is retried at the next \
                     start, or run `liveload cleanup --backend {} --run {}`",
                    run.backend,
                    run.id
                ),
            }
        }
        Ok(())
    }

    /// Destroy whatever the backend still holds under `run`'s id, within the teardown bound.
    async fn tear_down_leftover(&self, run: &RunRecord) -> Result<(), Error> {
        let backend = self.backends.build(&run.backend).await?;
        let nothing_created = Arc::new(Mutex::new(Vec::new()));
        run::teardown(
            backend.as_ref(),
            &run.id,
            &nothing_created,
            &run::Quiet,
            RunOptions::new("recovery", 0, Duration::ZERO).teardown_timeout,
        )
        .await
    }

    /// Every node each offered backend holds (any run's), or why a backend could not say.
    pub async fn nodes(&self) -> Vec<(String, Result<Vec<liveload_core::NodeHandle>, Error>)> {
        let mut all = Vec::new();
        for name in self.backends.names() {
            let listed = match self.backends.build(&name).await {
                Ok(backend) => backend.list(&RunFilter::All).await,
                Err(e) => Err(e),
            };
            all.push((name, listed));
        }
        all
    }
}
