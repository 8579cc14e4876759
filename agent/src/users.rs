//! Simulated users: each one a task that owns a browser context and loops over the steps.
//!
//! A user iterates until the run's deadline or a stop. Each step is timed (`step:<name>`), each
//! iteration is timed (`iteration`) and bounded by the iteration timeout. A user succeeds when
//! every iteration it ran passed.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use anyhow::anyhow;
use liveload_proto::Assignment;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::browser::{NodeBrowser, UserContext};
use crate::recorder::Recorder;
use crate::steps::{UserState, run_steps};

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
        .map(|_| async {
            let started = Instant::now();
            match browser.new_user(recorder.clone()).await {
                Ok(context) => {
                    recorder.latency("user_setup", started.elapsed());
                    Some(context)
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "a user's context could not be created");
                    recorder.count("user_setup_failed", 1);
                    None
                }
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await
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
        (Setup::CreateNow, Some(browser)) => {
            let started = Instant::now();
            match browser.new_user(env.recorder.clone()).await {
                Ok(context) => {
                    recorder.latency("user_setup", started.elapsed());
                    Some(context)
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "a user's context could not be created");
                    recorder.count("user_setup_failed", 1);
                    recorder.count("users_failed", 1);
                    return;
                }
            }
        }
        (Setup::Failed, _) => {
            recorder.count("users_failed", 1);
            return;
        }
        (Setup::CreateNow | Setup::None, _) => None,
    };
    recorder.user_running(true);

    let timeout = Duration::from_millis(env.assignment.iteration_timeout_ms);
    let mut stop = env.stop.clone();
    let mut own_stop = own_stop;
    let mut failed_iterations = 0u64;
    let mut iterations = 0u64;
    let mut user = UserState {
        page: context.as_ref().map(|c| &c.page),
        vars: initial_vars(&env.assignment, user_id),
        base_url: &env.assignment.base_url,
        step_timeout: Duration::from_millis(env.assignment.step_timeout_ms),
        recorder,
    };
    while Instant::now() < env.deadline
        && *stop.borrow() == StopSignal::Run
        && *own_stop.borrow() == StopSignal::Run
    {
        let started = Instant::now();
        user.vars.insert("iteration".into(), iterations.to_string());
        let iteration = run_steps(&mut user, &env.assignment.steps);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, iteration) => match outcome {
                Ok(result) => result.map(|_| ()),
                Err(_) => Err(anyhow!("iteration timed out after {timeout:?}")),
            },
            _ = wait_for_force(&mut stop) => break,
            _ = wait_for_force(&mut own_stop) => break,
        };
        iterations += 1;
        recorder.latency("iteration", started.elapsed());
        match outcome {
            Ok(()) => recorder.count("iterations_ok", 1),
            Err(e) => {
                failed_iterations += 1;
                recorder.count("iterations_failed", 1);
                let message = format!("{e:#}");
                tracing::debug!(user_id, error = %message, "iteration failed");
                recorder.error(&message);
            }
        }
    }
    if let (Some(browser), Some(context)) = (&env.browser, context) {
        browser.end_user(context).await;
    }
    recorder.user_running(false);
    if failed_iterations == 0 && iterations > 0 {
        recorder.count("users_succeeded", 1);
    } else {
        recorder.count("users_failed", 1);
    }
}

/// A user's variables before its first step: its id and its row of the CSV data.
fn initial_vars(assignment: &Assignment, user_id: u64) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    vars.insert("user_id".to_string(), user_id.to_string());
    if let Some(table) = &assignment.data
        && !table.rows.is_empty()
    {
        let row = &table.rows[(user_id % table.rows.len() as u64) as usize];
        for (column, value) in table.columns.iter().zip(row) {
            vars.insert(column.clone(), value.clone());
        }
    }
    vars
}

async fn wait_for_force(stop: &mut watch::Receiver<StopSignal>) {
    while *stop.borrow_and_update() != StopSignal::Force {
        if stop.changed().await.is_err() {
            // The sender is gone: nobody can ever force a stop.
            std::future::pending::<()>().await;
        }
    }
}
