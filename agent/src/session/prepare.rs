//! `Prepare`: the node's browser (launched once, kept for the next run of the session unless
//! the host rules changed) and every closed-model user's context, made before the start
//! signal.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use liveload_proto::{AgentMessage, Assignment, Workload};

use super::PreparedRun;
use crate::AgentState;
use crate::browser::{HostPolicy, NodeBrowser};
use crate::recorder::Recorder;
use crate::users::prepare_contexts;

/// Launch the browser (once per agent) and create every user's context, so users can start
/// the moment `Start` arrives.
pub(super) async fn prepare(
    state: &Arc<AgentState>,
    assignment: Assignment,
) -> Result<(AgentMessage, PreparedRun), String> {
    let recorder = Arc::new(Recorder::default());
    // A cgroup's figure is this node's only when the agent has the group to itself (several
    // local agents share their controller's).
    let cgroup_alone =
        state.facts.cgroup_memory_limit_bytes.is_some() && state.facts.host_share.unwrap_or(1) <= 1;
    recorder.watch_resources(
        assignment.memory_budget_bytes,
        cgroup_alone,
        !assignment.no_browser,
    );
    // Protocol users need no browser, whatever the controller said.
    if !assignment.needs_browser() {
        let reply = AgentMessage::Prepared {
            users: assignment.users,
            browser: None,
        };
        return Ok((
            reply,
            PreparedRun {
                contexts: Vec::new(),
                assignment,
                recorder,
            },
        ));
    }
    let Some(info) = state.facts.chromium.clone() else {
        return Err(
            "no Chromium found on this node: install Debian's chromium-headless-shell \
                    or pass --chromium PATH to the agent"
                .into(),
        );
    };
    let hosts = HostPolicy::for_assignment(&assignment)?;
    let browser = node_browser(state, &info, hosts).await?;
    if let Err(e) = browser.watch_crashes(recorder.clone()).await {
        tracing::warn!(error = %format!("{e:#}"), "page crashes will not be counted");
    }
    // One setup per core: more only queues them inside Chromium and slows each one.
    let concurrency = (state.facts.effective_cores.ceil() as usize).max(1);
    // The open model's arrivals each take a fresh context when they arrive: none are made
    // ahead (they would sit unused, holding memory sizing never counted).
    let closed_users = match assignment.workload {
        Workload::Open { .. } => 0,
        // A mixed run's protocol users need none.
        _ => (0..assignment.users)
            .filter(|i| {
                !assignment
                    .engine_of(assignment.first_user_id + i)
                    .is_protocol()
            })
            .count() as u64,
    };
    let contexts = prepare_contexts(&browser, closed_users, concurrency, &recorder).await;
    let reply = AgentMessage::Prepared {
        users: assignment.users,
        browser: Some(info),
    };
    Ok((
        reply,
        PreparedRun {
            assignment,
            recorder,
            contexts,
        },
    ))
}

/// The node's browser, launched on the first `Prepare` and kept for the next ones (a warm
/// agent's), unless the next run's host rules differ: the resolver's are on its command line,
/// so it is then closed and launched again with them.
async fn node_browser(
    state: &Arc<AgentState>,
    info: &liveload_proto::BrowserInfo,
    hosts: HostPolicy,
) -> Result<Arc<NodeBrowser>, String> {
    let mut slot = state.browser.lock().await;
    if let Some(browser) = slot.as_ref()
        && browser.host_policy() == &hosts
    {
        return Ok(browser.clone());
    }
    if let Some(mut old) = slot.take() {
        // Tasks of the last run may still hold it for a moment (a context being disposed):
        // wait for them, so the old Chromium is closed, not left beside the new one.
        for _ in 0..50 {
            match Arc::try_unwrap(old) {
                Ok(browser) => {
                    browser.close().await;
                    break;
                }
                Err(shared) => old = shared,
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let tuning = crate::switches::Tuning::from_env();
    let path = std::path::Path::new(&info.path);
    let mut browser = NodeBrowser::launch_tuned(path, state.no_sandbox, &tuning, hosts)
        .await
        .map_err(|e| format!("{e:#}"))?;
    if let Some(pid) = browser.pid() {
        state.browser_pid.store(pid, Ordering::SeqCst);
    }
    let browser = Arc::new(browser);
    *slot = Some(browser.clone());
    Ok(browser)
}
