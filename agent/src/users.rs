//! Simulated users: each one a task that owns a browser context and loops over the steps.
//!
//! A user runs its `on_start` steps once, iterates until the run's deadline, its
//! `iterations:` or a stop (no more often than its `pacing:`), then runs its `on_stop` steps
//! once. Each step is timed (`step:<name>`), each iteration is timed (`iteration`) and bounded
//! by the iteration timeout, as are `on_start` and `on_stop`. A user succeeds when its
//! `on_start`, every iteration it ran and its `on_stop` passed.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use anyhow::anyhow;
use liveload_proto::{Assignment, DataTable, ErrorOccurrence, FailureCapture, RecordKind};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::browser::{NodeBrowser, UserContext};
use crate::recorder::Recorder;
use crate::secrets::{self, Secrets};
use crate::steps::{UserState, iteration_timed_out, run_steps};
use crate::trace::Tracer;

mod gate;
pub use gate::Gate;

/// How users are told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// Keep going.
    Run,
    /// Finish the current iteration, then end.
    Graceful,
    /// End now.
    Force,
}

/// What every user of this agent shares.
pub struct UserEnv {
    /// The assignment from the controller.
    pub assignment: Assignment,
    /// The browser (absent in `no_browser` runs).
    pub browser: Option<Arc<NodeBrowser>>,
    /// Where metrics go.
    pub recorder: Arc<Recorder>,
    /// When users stop starting iterations.
    pub deadline: Instant,
    /// Stop requests.
    pub stop: watch::Receiver<StopSignal>,
    /// The node's throttles, if any.
    pub gate: Option<Gate>,
    /// When the start signal came (error occurrences are timed from it).
    pub started: Instant,
    /// Where traced steps go (`liveload try`).
    pub tracer: Option<Tracer>,
    /// The way to the controller for `coordinate` steps.
    pub coordination: Option<Arc<crate::coordination::Coordination>>,
}

impl UserEnv {
    /// A new user's state before its first iteration: its variables and secrets from its
    /// CSV row, the scenario's step timeout, the tracer if tracing.
    fn user_state<'a>(
        &'a self,
        context: Option<&'a crate::browser::UserContext>,
        user_id: u64,
    ) -> UserState<'a> {
        UserState {
            page: context.map(|c| &c.page),
            side: context.map(|c| &c.side),
            vars: initial_vars(&self.assignment, user_id),
            base_url: self.assignment.base_url_of(user_id),
            allow_schemes: &self.assignment.allow_schemes,
            step_timeout: Duration::from_millis(self.assignment.step_timeout_ms),
            recorder: &self.recorder,
            secrets: initial_secrets(&self.assignment, user_id),
            tracer: self.tracer.as_ref(),
            depth: 0,
            coordination: self.coordination.as_deref(),
            recorded: false,
            user_id,
            iteration: 0,
            protocol: None,
            engine: self.assignment.engine_of(user_id),
            running_step: None,
        }
    }

    /// With several targets, time an iteration of `user_id` on its target too
    /// (`target:<base URL>`, and `target:<base URL>:failed` when it failed): the report's
    /// breakdown by target; in a mixed run, by scenario too (`iteration:<scenario>`).
    fn record_target(&self, user_id: u64, elapsed: Duration, failed: bool) {
        let metrics = [
            self.assignment.target_metric(user_id),
            self.assignment.group_metric(user_id),
        ];
        for metric in metrics.into_iter().flatten() {
            self.recorder.latency(&metric, elapsed);
            if failed {
                self.recorder.count(&format!("{metric}:failed"), 1);
            }
        }
    }

    /// Count a failed iteration's error (secrets redacted) with where it happened, and
    /// capture the page when the scenario asks and this message still wants captures.
    async fn record_failure(
        &self,
        user: &UserState<'_>,
        user_id: u64,
        iteration: u64,
        error: &anyhow::Error,
    ) {
        let message = user.secrets.redact(&format!("{error:#}"));
        tracing::debug!(user_id, error = %message, "iteration failed");
        let occurrence = ErrorOccurrence {
            user_id,
            iteration,
            at_ms: self.started.elapsed().as_millis() as u64,
        };
        let key = self.recorder.error(&message, Some(occurrence.clone()));
        let per_error = self.assignment.diagnostics.captures_per_error;
        if let Some(page) = user.page
            && per_error > 0
            && self.recorder.wants_capture(&key, per_error)
        {
            let (png, dom) = crate::capture::both(page, &user.secrets).await;
            self.recorder.capture(FailureCapture {
                error: key,
                occurrence,
                png,
                dom,
            });
        }
    }
}

impl UserEnv {
    /// Run a user's `on_start` or `on_stop` steps once (`phase`: its name and the iteration
    /// number its failure is filed under), bounded by the iteration timeout. Counts
    /// `<phase>_ok` or `<phase>_failed`; a failure is counted like an iteration's, its message
    /// prefixed with the phase. Returns whether it went well (no steps: it did).
    async fn run_once(
        &self,
        user: &mut UserState<'_>,
        user_id: u64,
        (phase, iteration): (&str, u64),
        steps: &[liveload_proto::Step],
        stops: &mut Stops,
    ) -> bool {
        if steps.is_empty() {
            return true;
        }
        let timeout = Duration::from_millis(self.assignment.iteration_timeout_ms);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, run_steps(user, steps)) => match outcome {
                Ok(result) => result.map(|_| ()),
                Err(_) => Err(anyhow!("timed out after {timeout:?}")),
            },
            _ = stops.force() => return false,
        };
        match outcome {
            Ok(()) => {
                self.recorder.count(&format!("{phase}_ok"), 1);
                true
            }
            Err(e) => {
                self.recorder.count(&format!("{phase}_failed"), 1);
                let e = e.context(phase.to_string());
                self.record_failure(user, user_id, iteration, &e).await;
                false
            }
        }
    }
}

/// Create the contexts of `users` users before the start signal, `concurrency` at a time, and
/// record each setup's time (`user_setup`) or failure (`user_setup_failed`).
///
/// Doing this at `Prepare` keeps setup off the measured run: at `Start` every user begins its
/// first iteration at once instead of competing for the CPU with the page loads of users who
/// started earlier.
pub async fn prepare_contexts(
    browser: &NodeBrowser,
    users: u64,
    concurrency: usize,
    recorder: &Arc<Recorder>,
) -> Vec<Option<UserContext>> {
    use futures_util::StreamExt as _;
    futures_util::stream::iter(0..users)
        .map(|_| create_context(browser, recorder))
        .buffered(concurrency.max(1))
        .collect()
        .await
}

/// Create one user's context, timing it as `user_setup`; a failure is counted as
/// `user_setup_failed` (and its message as an error) and gives `None`.
async fn create_context(browser: &NodeBrowser, recorder: &Arc<Recorder>) -> Option<UserContext> {
    let started = Instant::now();
    match browser.new_user(recorder.clone()).await {
        Ok(context) => {
            recorder.latency("user_setup", started.elapsed());
            Some(context)
        }
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(error = %message, "a user's context could not be created");
            recorder.count("user_setup_failed", 1);
            recorder.error(&message, None);
            None
        }
    }
}

/// A user's browser context, as it reaches [`run_user`].
pub enum Setup {
    /// Created before the start signal.
    Ready(UserContext),
    /// Its creation failed (already counted as `user_setup_failed`).
    Failed,
    /// To create now (users added while the run goes on).
    CreateNow,
    /// No browser on this agent.
    None,
}

/// Until the memory watchdog lets iterations start again.
async fn memory_recovered(recorder: &crate::recorder::Recorder) {
    while recorder.memory_exhausted() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One user's whole life: iterate, tear down, report success or failure. `own_stop` stops this
/// user alone (`liveload users remove`); `env.stop` stops every user.
pub async fn run_user(
    env: Arc<UserEnv>,
    user_id: u64,
    setup: Setup,
    own_stop: watch::Receiver<StopSignal>,
) {
    let recorder = &env.recorder;
    recorder.count("users_started", 1);
    let context = match (setup, &env.browser) {
        (Setup::Ready(context), _) => Some(context),
        (Setup::CreateNow, Some(browser)) => match create_context(browser, recorder).await {
            Some(context) => Some(context),
            None => {
                recorder.count("users_failed", 1);
                return;
            }
        },
        (Setup::Failed, _) => {
            recorder.count("users_failed", 1);
            return;
        }
        (Setup::CreateNow | Setup::None, _) => None,
    };
    recorder.user_running(true);
    let mut stops = Stops {
        all: env.stop.clone(),
        own: own_stop,
    };
    let mut user = env.user_state(context.as_ref(), user_id);
    user.vars.insert("iteration".into(), "0".into());
    let user_loop = env.assignment.user_loop_of(user_id);
    // A user starting after the duration (a late `users add`) or already stopped does nothing,
    // `on_start` and `on_stop` included.
    let live = Instant::now() < env.deadline && stops.running();
    let started_well = !live
        || env
            .run_once(
                &mut user,
                user_id,
                ("on_start", 0),
                &user_loop.on_start,
                &mut stops,
            )
            .await;
    let (iterations, failed_iterations) = match live && started_well {
        true => {
            let recording = context.as_ref().map(|c| &*c.recording);
            iterate(&env, (&mut user, recording), user_id, &mut stops).await
        }
        false => (0, 0),
    };
    // `on_stop` runs after the duration, a graceful stop or the last iteration; a forced
    // stop ends the user at once.
    let stopped_well = !live
        || stops.forced()
        || env
            .run_once(
                &mut user,
                user_id,
                ("on_stop", iterations),
                &user_loop.on_stop,
                &mut stops,
            )
            .await;
    if let (Some(browser), Some(context)) = (&env.browser, context) {
        browser.end_user(context).await;
    }
    recorder.user_running(false);
    if started_well && stopped_well && failed_iterations == 0 && iterations > 0 {
        recorder.count("users_succeeded", 1);
    } else {
        recorder.count("users_failed", 1);
    }
}

/// The stop signals a user listens to: every user's, and its own (`liveload users remove`).
struct Stops {
    all: watch::Receiver<StopSignal>,
    own: watch::Receiver<StopSignal>,
}

impl Stops {
    /// Neither says to stop.
    fn running(&self) -> bool {
        *self.all.borrow() == StopSignal::Run && *self.own.borrow() == StopSignal::Run
    }

    /// One says to stop now.
    fn forced(&self) -> bool {
        *self.all.borrow() == StopSignal::Force || *self.own.borrow() == StopSignal::Force
    }

    /// Until one says to stop, gracefully or not.
    async fn any(&mut self) {
        tokio::select! {
            _ = wait_for_any_stop(&mut self.all) => {}
            _ = wait_for_any_stop(&mut self.own) => {}
        }
    }

    /// Until one says to stop now.
    async fn force(&mut self) {
        tokio::select! {
            _ = wait_for_force(&mut self.all) => {}
            _ = wait_for_force(&mut self.own) => {}
        }
    }
}

/// A user's iterations: until the duration ends, its `iterations:` are done, or it is
/// stopped. Returns (iterations run, iterations failed).
///
/// Latency (`iteration`) runs from the iteration's start: the waits before it — the memory
/// watchdog, the pacing, the throttle — are the simulated user's, not the application's.
async fn iterate(
    env: &UserEnv,
    (user, recording): (&mut UserState<'_>, Option<&crate::records::PageRecording>),
    user_id: u64,
    stops: &mut Stops,
) -> (u64, u64) {
    let recorder = &env.recorder;
    let timeout = Duration::from_millis(env.assignment.iteration_timeout_ms);
    let limits = [
        env.assignment.diagnostics.max_iterations,
        env.assignment.user_loop_of(user_id).iterations,
    ];
    let max_iterations = limits.into_iter().flatten().min().unwrap_or(u64::MAX);
    let pacing = env
        .assignment
        .user_loop_of(user_id)
        .pacing_ms
        .map(Duration::from_millis);
    let mut next_start: Option<Instant> = None;
    let (mut iterations, mut failed_iterations) = (0u64, 0u64);
    while Instant::now() < env.deadline && iterations < max_iterations && stops.running() {
        // The memory watchdog: past the node's budget, no new iteration starts until memory
        // is back down (the browser must not reach the kernel's OOM killer).
        if recorder.memory_exhausted() {
            recorder.count("iterations_held_for_memory", 1);
            // Any stop ends a held user at once (it is between iterations): `users remove`
            // is how an operator relieves a node's memory.
            tokio::select! {
                _ = memory_recovered(recorder) => {}
                _ = tokio::time::sleep_until(env.deadline) => break,
                _ = stops.any() => break,
            }
            continue;
        }
        // Pacing: an iteration starts no sooner than `pacing` after the previous one started.
        if let Some(at) = next_start.filter(|at| Instant::now() < *at) {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = tokio::time::sleep_until(env.deadline) => break,
                _ = stops.any() => break,
            }
        }
        // Throttles: wait for this node's share of the cluster-wide limits.
        let _permit = match &env.gate {
            Some(gate) => tokio::select! {
                permit = gate.enter() => permit,
                _ = tokio::time::sleep_until(env.deadline) => break,
                _ = stops.force() => break,
            },
            None => None,
        };
        if Instant::now() >= env.deadline {
            break;
        }
        let started = Instant::now();
        next_start = pacing.and_then(|p| started.checked_add(p));
        user.vars.insert("iteration".into(), iterations.to_string());
        user.iteration = iterations;
        user.recorded = recorder.records.sample();
        if let Some(page) = recording {
            page.set(user.recorded, user_id, iterations, &user.secrets);
        }
        let iteration = run_steps(user, env.assignment.steps_of(user_id));
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, iteration) => match outcome {
                Ok(result) => result.map(|_| ()),
                Err(_) => Err(iteration_timed_out(timeout, user.running_step.take().as_deref())),
            },
            _ = stops.force() => break,
        };
        recorder.latency("iteration", started.elapsed());
        env.record_target(user_id, started.elapsed(), outcome.is_err());
        if user.recorded {
            let iteration = (RecordKind::Iteration, "iteration");
            crate::steps::record(user, iteration, started.elapsed(), outcome.as_ref().err());
        }
        user.recorded = false;
        if let Some(page) = recording {
            page.set(false, user_id, iterations, &user.secrets);
        }
        match outcome {
            Ok(()) => recorder.count("iterations_ok", 1),
            Err(e) => {
                failed_iterations += 1;
                recorder.count("iterations_failed", 1);
                env.record_failure(user, user_id, iterations, &e).await;
            }
        }
        iterations += 1;
    }
    (iterations, failed_iterations)
}

/// One arrival of the open model: a new visitor who runs the steps once, in a fresh context.
///
/// `iteration` is measured from the arrival's *scheduled* time, so time spent waiting for a
/// context, the throttle or a busy machine counts against the system (no coordinated
/// omission); `iteration_service` is measured from when the steps actually began.
pub async fn run_arrival(env: Arc<UserEnv>, user_id: u64, scheduled: Instant) {
    let recorder = &env.recorder;
    // The memory watchdog: a node past its budget takes no new visitor (counted as dropped,
    // as an arrival beyond the node's capacity is).
    if recorder.memory_exhausted() {
        recorder.count("arrivals_dropped", 1);
        recorder.count("iterations_held_for_memory", 1);
        return;
    }
    recorder.count("users_started", 1);
    recorder.user_running(true);
    let context = match &env.browser {
        Some(browser) => match create_context(browser, recorder).await {
            Some(context) => Some(context),
            None => {
                recorder.count("users_failed", 1);
                recorder.user_running(false);
                return;
            }
        },
        None => None,
    };
    let mut stop = env.stop.clone();
    let _permit = match &env.gate {
        Some(gate) => tokio::select! {
            permit = gate.enter() => permit,
            _ = wait_for_force(&mut stop) => None,
        },
        None => None,
    };
    let mut user = env.user_state(context.as_ref(), user_id);
    user.vars.insert("iteration".into(), "0".into());
    user.recorded = recorder.records.sample();
    if let Some(context) = &context {
        context
            .recording
            .set(user.recorded, user_id, 0, &user.secrets);
    }
    let timeout = Duration::from_millis(env.assignment.iteration_timeout_ms);
    let began = Instant::now();
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(timeout, run_steps(&mut user, env.assignment.steps_of(user_id))) => match outcome {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(iteration_timed_out(timeout, user.running_step.take().as_deref())),
        },
        _ = wait_for_force(&mut stop) => Err(anyhow!("stopped")),
    };
    recorder.latency("iteration", scheduled.elapsed());
    recorder.latency("iteration_service", began.elapsed());
    env.record_target(user_id, scheduled.elapsed(), outcome.is_err());
    if user.recorded {
        let iteration = (RecordKind::Iteration, "iteration");
        crate::steps::record(
            &user,
            iteration,
            scheduled.elapsed(),
            outcome.as_ref().err(),
        );
    }
    match outcome {
        Ok(()) => {
            recorder.count("iterations_ok", 1);
            recorder.count("users_succeeded", 1);
        }
        Err(e) => {
            recorder.count("iterations_failed", 1);
            recorder.count("users_failed", 1);
            env.record_failure(&user, user_id, 0, &e).await;
        }
    }
    drop(user);
    if let (Some(browser), Some(context)) = (&env.browser, context) {
        browser.end_user(context).await;
    }
    recorder.user_running(false);
}

/// When arrival number `k` (from 1) is due, in seconds after the start, for a rate going
/// linearly from `from` to `to` per second over `duration` seconds; `None` once it falls
/// after the end.
pub fn arrival_time(k: u64, from: f64, to: f64, duration: f64) -> Option<f64> {
    // Arrivals by time t: N(t) = from*t + (to - from) * t^2 / (2 * duration). Solve N(t) = k.
    let k = k as f64;
    let a = (to - from) / (2.0 * duration);
    let t = if a.abs() < 1e-12 {
        k / from
    } else {
        let discriminant = from * from + 4.0 * a * k;
        if discriminant < 0.0 {
            return None;
        }
        (-from + discriminant.sqrt()) / (2.0 * a)
    };
    (t.is_finite() && t >= 0.0 && t < duration).then_some(t)
}

/// A user's row of the node's data: the controller sends each node only the rows its users
/// need, in their order, so user `first_user_id + k` takes row `k % rows` (ids past the
/// node's range, from `users add`, cycle over the same rows).
fn row_of(assignment: &Assignment, user_id: u64) -> Option<(&DataTable, &[String])> {
    let table = assignment.data.as_ref()?;
    let rows = u64::try_from(table.rows.len()).ok().filter(|n| *n > 0)?;
    let k = user_id.wrapping_sub(assignment.first_user_id) % rows;
    Some((table, &table.rows[usize::try_from(k).ok()?]))
}

/// A user's variables before its first step: `user_id` and its CSV row's columns.
fn initial_vars(assignment: &Assignment, user_id: u64) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    vars.insert("user_id".to_string(), user_id.to_string());
    if let Some((table, row)) = row_of(assignment, user_id) {
        for (column, value) in table.columns.iter().zip(row) {
            vars.insert(column.clone(), value.clone());
        }
    }
    vars
}

/// A user's secrets before its first step: the values of its CSV row's secret columns.
fn initial_secrets(assignment: &Assignment, user_id: u64) -> Secrets {
    match row_of(assignment, user_id) {
        Some((table, row)) if !table.secret_columns.is_empty() => {
            let secret = table.secret_columns.iter().map(String::as_str).collect();
            secrets::of_row(&table.columns, &secret, row)
        }
        _ => Secrets::default(),
    }
}

/// Until `stop` says to stop at all, gracefully or not.
async fn wait_for_any_stop(stop: &mut watch::Receiver<StopSignal>) {
    while *stop.borrow_and_update() == StopSignal::Run {
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Until `stop` says to stop now (a graceful stop lets the iteration finish).
async fn wait_for_force(stop: &mut watch::Receiver<StopSignal>) {
    while *stop.borrow_and_update() != StopSignal::Force {
        if stop.changed().await.is_err() {
            // The sender is gone: nobody can ever force a stop.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests;
