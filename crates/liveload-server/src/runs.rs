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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liveload_core::lock::ScenarioLock;
use liveload_core::run::{self, ControlHandle, CostConfirmation, LiveStatus, RunOptions};
use liveload_core::scenario::{Scenario, parse_duration};
use liveload_core::{Error, RunFilter, names};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot, watch};

use crate::Backends;
use crate::store::{RunEnd, RunRecord, RunStatus, Store};

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
    active: Arc<Mutex<HashMap<String, Arc<ActiveRun>>>>,
}

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
        tokio::spawn(async move {
            // The lock is held until the run has ended and its end is recorded.
            let _lock = lock;
            let outcome = {
                let run = run::run_controlled(
                    backend,
                    &scenario,
                    &options,
                    Arc::new(run::Quiet),
                    stopped(stop_rx),
                    Some(control_end),
                );
                job.sample_until(run).await
            };
            job.finish(outcome).await;
        });
        Ok(record)
    }
}

/// The interrupt a run is raced against: a stop sent through the API. A dropped sender (the
/// server going away without asking) is not a stop.
async fn stopped(stop: oneshot::Receiver<()>) {
    if stop.await.is_err() {
        std::future::pending::<()>().await;
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

    /// The run's options: the CLI's defaults, the request's values, the server's caps.
    fn options_for(&self, scenario: &Scenario, request: &RunRequest) -> Result<RunOptions, Error> {
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

    /// The store runs are kept in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

/// A started run's side of the server: sample it, then record how it ended.
struct Job {
    store: Arc<dyn Store>,
    active: Arc<Mutex<HashMap<String, Arc<ActiveRun>>>>,
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

    /// Record the outcome in the history, then let go of the run.
    async fn finish(self, outcome: Result<run::RunReport, Error>) {
        tracing::debug!(run = %self.run_id, ok = outcome.is_ok(), "run ended");
        let end = run_end(outcome);
        tracing::debug!(run = %self.run_id, "documents made");
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
