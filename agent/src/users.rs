//! Simulated users: each one a task that owns a browser context and loops over the steps.
//!
//! A user iterates until the run's deadline or a stop. Each step is timed (`step:<name>`), each
//! iteration is timed (`iteration`) and bounded by the iteration timeout. A user succeeds when
//! every iteration it ran passed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use chromiumoxide::Page;
use liveload_proto::{Assignment, Step, StepKind};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::browser::{NodeBrowser, UserContext};
use crate::recorder::Recorder;

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
    recorder: &Recorder,
) -> Vec<Option<UserContext>> {
    use futures_util::StreamExt as _;
    futures_util::stream::iter(0..users)
        .map(|_| async {
            let started = Instant::now();
            match browser.new_user().await {
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

/// One user's whole life: iterate, tear down, report success or failure. `context` is the
/// user's prepared browser context (`None` without a browser, or when its setup failed).
pub async fn run_user(env: Arc<UserEnv>, user_id: u64, context: Option<UserContext>) {
    let recorder = &env.recorder;
    recorder.count("users_started", 1);
    if env.browser.is_some() && context.is_none() {
        // Its setup failed at prepare (already counted as user_setup_failed).
        recorder.count("users_failed", 1);
        return;
    }
    recorder.user_running(true);

    let timeout = Duration::from_millis(env.assignment.iteration_timeout_ms);
    let mut stop = env.stop.clone();
    let mut failed_iterations = 0u64;
    let mut iterations = 0u64;
    while Instant::now() < env.deadline && *stop.borrow() == StopSignal::Run {
        let started = Instant::now();
        let iteration = run_iteration(&env, context.as_ref().map(|c| &c.page), user_id);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, iteration) => match outcome {
                Ok(result) => result,
                Err(_) => Err(anyhow!("iteration timed out after {timeout:?}")),
            },
            _ = wait_for_force(&mut stop) => break,
        };
        iterations += 1;
        recorder.latency("iteration", started.elapsed());
        match outcome {
            Ok(()) => recorder.count("iterations_ok", 1),
            Err(e) => {
                failed_iterations += 1;
                recorder.count("iterations_failed", 1);
                tracing::debug!(user_id, error = %format!("{e:#}"), "iteration failed");
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

async fn wait_for_force(stop: &mut watch::Receiver<StopSignal>) {
    while *stop.borrow_and_update() != StopSignal::Force {
        if stop.changed().await.is_err() {
            // The sender is gone: nobody can ever force a stop.
            std::future::pending::<()>().await;
        }
    }
}

async fn run_iteration(env: &UserEnv, page: Option<&Page>, user_id: u64) -> Result<()> {
    for step in &env.assignment.steps {
        let started = Instant::now();
        let result = run_step(env, page, user_id, step).await;
        let metric = format!("step:{}", step.name);
        env.recorder.latency(&metric, started.elapsed());
        if result.is_err() {
            env.recorder.count(&format!("{metric}:failed"), 1);
        }
        result.with_context(|| format!("step '{}'", step.name))?;
    }
    Ok(())
}

async fn run_step(env: &UserEnv, page: Option<&Page>, user_id: u64, step: &Step) -> Result<()> {
    let page = || page.ok_or_else(|| anyhow!("this agent runs without a browser"));
    match &step.kind {
        StepKind::Navigate { url } => {
            let url = resolve_url(&env.assignment.base_url, url, user_id);
            page()?.goto(url).await?;
            Ok(())
        }
        StepKind::WaitFor {
            selector,
            timeout_ms,
        } => wait_for_selector(page()?, selector, Duration::from_millis(*timeout_ms)).await,
        StepKind::Think { min_ms, max_ms } => {
            let ms = if max_ms > min_ms {
                rand::rng().random_range(*min_ms..=*max_ms)
            } else {
                *min_ms
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        }
    }
}

/// Join a step URL to the base URL and fill in `{{user_id}}`.
pub fn resolve_url(base: &str, url: &str, user_id: u64) -> String {
    let url = url.replace("{{user_id}}", &user_id.to_string());
    if url.starts_with("http://") || url.starts_with("https://") {
        url
    } else if url.starts_with('/') {
        format!("{}{url}", base.trim_end_matches('/'))
    } else {
        format!("{}/{url}", base.trim_end_matches('/'))
    }
}

async fn wait_for_selector(page: &Page, selector: &str, timeout: Duration) -> Result<()> {
    let selector_js = serde_json::to_string(selector).expect("a string serialises");
    let check = format!("document.querySelector({selector_js}) !== null");
    let deadline = Instant::now() + timeout;
    loop {
        let found: bool = page
            .evaluate(check.as_str())
            .await?
            .into_value()
            .context("reading the selector check")?;
        if found {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("no element matched '{selector}' within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_the_base_and_fill_the_user_id() {
        assert_eq!(resolve_url("http://h:1/", "/a", 3), "http://h:1/a");
        assert_eq!(
            resolve_url("http://h:1", "a/{{user_id}}", 3),
            "http://h:1/a/3"
        );
        assert_eq!(resolve_url("http://h:1", "https://x/y", 3), "https://x/y");
    }
}
