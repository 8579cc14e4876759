//! Executing one iteration's steps in a user's page.
//!
//! Element steps wait until their element can take the action, like a careful person and like
//! Playwright's actionability checks (`actions`); waits honour the step's `timeout:`, else the
//! scenario's `step_timeout`, and check their condition in the page (`waits`). What the page
//! receives is written out in `cdp`: real mouse and keyboard events, scripts in the current
//! document, exceptions read as their message. Values reach scripts JSON-encoded, never
//! spliced in raw (`text::js`).
//!
//! A failed step's error names the step and the page it was on
//! (`step 'click #inc' at http://host/clicks: '#inc' is covered by <div class=overlay>`).

pub mod actions;
pub mod cdp;
pub mod text;
pub mod waits;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use chromiumoxide::Page;
use liveload_proto::{AssertCheck, ExtractFrom, Step, StepKind};
use rand::Rng;
use tokio::time::Instant;

use crate::recorder::Recorder;
use crate::secrets::Secrets;
use crate::trace::Tracer;
use actions::no_browser;
use text::{allowed_url, js, page_of};

pub use text::{fill_template, one_line, resolve_url, start_sequence};

/// What one user carries from step to step.
pub struct UserState<'a> {
    /// The user's page (`None` without a browser).
    pub page: Option<&'a Page>,
    /// Template variables: `user_id`, `iteration`, CSV columns, extracted values.
    pub vars: HashMap<String, String>,
    /// Base URL for relative navigations.
    pub base_url: &'a str,
    /// Schemes the scenario allows beyond the web's (`allow_schemes:`).
    pub allow_schemes: &'a [String],
    /// How long element steps and waits without their own `timeout:` wait.
    pub step_timeout: Duration,
    /// Where step timings go.
    pub recorder: &'a Recorder,
    /// Values to redact from everything reported (secret CSV columns and variables, what was
    /// typed into password inputs).
    pub secrets: Secrets,
    /// Sends each step to `liveload try`, when tracing.
    pub tracer: Option<&'a Tracer>,
    /// How deep the running step sits inside groups and repeats.
    pub depth: u32,
    /// The way to the controller for `coordinate` steps (`None`: they fail, e.g. in tests).
    pub coordination: Option<&'a crate::coordination::Coordination>,
    /// The running iteration is recorded (`liveload run --trace`): each step becomes a record.
    pub recorded: bool,
    /// The user's id (also `{{user_id}}`, which a CSV column or an `extract` may shadow; this
    /// one cannot be).
    pub user_id: u64,
    /// The running iteration's number (also `{{iteration}}`, likewise).
    pub iteration: u64,
    /// A protocol user's HTTP client and WebSocket (`engine: http`), made at its first
    /// protocol step and kept across its iterations (its cookies and connections).
    pub protocol: Option<crate::protocol::ProtocolUser>,
    /// What the user runs as: `engine: liveview` does the element steps through its native
    /// LiveView client instead of a page.
    pub engine: liveload_proto::Engine,
    /// The innermost step running now (not a group or repeat), so an iteration cut by its
    /// timeout can say where it was ([`iteration_timed_out`]).
    pub running_step: Option<String>,
    /// The page's way around chromiumoxide's navigation queue (`None`: through chromiumoxide).
    pub side: Option<&'a crate::relay::SideChannel>,
}

/// The error of an iteration its timeout cut short: with the step it was in, so a step that
/// hung (a navigation that never loads) is named, not only the iteration.
pub fn iteration_timed_out(timeout: Duration, running_step: Option<&str>) -> anyhow::Error {
    match running_step {
        Some(step) => anyhow!("iteration timed out after {timeout:?} during step '{step}'"),
        None => anyhow!("iteration timed out after {timeout:?}"),
    }
}

/// Whether the iteration goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Next step.
    Continue,
    /// `halt`: end the iteration successfully.
    Halt,
}

/// Run `steps` in order; each is timed as `step:<name>` (groups as `group:<name>`).
pub fn run_steps<'s, 'u: 's, 'a: 's>(
    user: &'s mut UserState<'u>,
    steps: &'a [Step],
) -> Pin<Box<dyn Future<Output = Result<Flow>> + Send + 's>> {
    Box::pin(async move {
        for step in steps {
            let container = matches!(step.kind, StepKind::Group { .. } | StepKind::Repeat { .. });
            if container && let Some(tracer) = user.tracer {
                tracer.begin(user, step);
            }
            // The document about to be left reports its Web Vitals, outside the step's time.
            if let (StepKind::Navigate { .. } | StepKind::Reload, Some(page)) =
                (&step.kind, user.page)
            {
                crate::observe::report_vitals(page).await;
            }
            let started = Instant::now();
            if !container {
                user.running_step = Some(step.name.clone());
            }
            let result = run_step(user, step).await;
            if !container {
                user.running_step = None;
            }
            let elapsed = started.elapsed();
            let metric = match step.kind {
                StepKind::Group { .. } => format!("group:{}", step.name),
                StepKind::Repeat { .. } => String::new(),
                _ => format!("step:{}", step.name),
            };
            if !metric.is_empty() {
                user.recorder.latency(&metric, elapsed);
                if result.is_err() {
                    user.recorder.count(&format!("{metric}:failed"), 1);
                }
                if user.recorded {
                    let step = (liveload_proto::RecordKind::Step, metric.as_str());
                    record(user, step, elapsed, result.as_ref().err());
                }
            }
            let result = match result {
                Err(e) if !container => {
                    let view = user.protocol.as_ref().and_then(|p| p.liveview_url());
                    Err(e.context(where_((user.page, view), step).await))
                }
                Err(e) if matches!(step.kind, StepKind::Group { .. }) => {
                    Err(e.context(format!("group '{}'", step.name)))
                }
                other => other,
            };
            if let Some(tracer) = user.tracer {
                tracer.end(user, step, elapsed, result.as_ref().err()).await;
            }
            match result? {
                Flow::Continue => {}
                Flow::Halt => return Ok(Flow::Halt),
            }
        }
        Ok(Flow::Continue)
    })
}

/// `coordinate`: wait for the group, then set its variables. The group's first member counts
/// it (`coordinate:<point>.groups`, `.grouped_users`, and `.partial_groups` when the timeout
/// released it short); the wait itself is the step's own latency.
async fn coordinate(user: &mut UserState<'_>, point: &str, timeout: Duration) -> Result<()> {
    let coordination = user
        .coordination
        .ok_or_else(|| anyhow::anyhow!("coordinate '{point}': no controller to coordinate with"))?;
    let met = coordination.meet(point, user.user_id, timeout).await?;
    if met.index == 0 {
        let metric = |what: &str| format!("coordinate:{point}.{what}");
        user.recorder.count(&metric("groups"), 1);
        user.recorder
            .count(&metric("grouped_users"), met.members.len() as u64);
        if met.members.len() < met.wanted as usize {
            user.recorder.count(&metric("partial_groups"), 1);
        }
    }
    let peers: Vec<String> = met.members.iter().map(u64::to_string).collect();
    for (name, value) in [
        ("group_id", met.id.to_string()),
        ("group_index", met.index.to_string()),
        ("group_peers", peers.join(",")),
        ("group_size", met.members.len().to_string()),
    ] {
        user.vars.insert(name.into(), value);
    }
    Ok(())
}

/// A trace record of a recorded iteration, or of one of its steps (named by its metric
/// without `step:`; a group keeps its `group:` prefix), its error redacted.
pub fn record(
    user: &UserState<'_>,
    (kind, name): (liveload_proto::RecordKind, &str),
    elapsed: Duration,
    error: Option<&anyhow::Error>,
) {
    user.recorder.records.push(liveload_proto::TraceRecord {
        t_ms: 0, // stamped by `push`
        user: user.user_id,
        iteration: user.iteration,
        kind,
        name: name.strip_prefix("step:").unwrap_or(name).to_string(),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        ok: error.is_none(),
        status: None,
        url: None,
        error: error.map(|e| one_line(&user.secrets.redact(&format!("{e:#}")), 300)),
    });
}

/// `step 'NAME' at PAGE`: which step failed, and on which page (its URL without the query,
/// which may hold tokens and would make every message distinct).
async fn where_((page, view): (Option<&Page>, Option<&str>), step: &Step) -> String {
    let url = match page {
        Some(page) => page.url().await.ok().flatten(),
        None => view.map(str::to_string),
    };
    match url {
        Some(url) if !url.is_empty() => format!("step '{}' at {}", step.name, page_of(&url)),
        _ => format!("step '{}'", step.name),
    }
}

/// The timeout a step gives, else the scenario's `step_timeout`.
fn timeout_of(timeout_ms: &Option<u64>, user: &UserState<'_>) -> Duration {
    timeout_ms.map_or(user.step_timeout, Duration::from_millis)
}

/// Run one step. The dispatch over every step kind: each arm is short, the work is in
/// `actions` and `waits`.
async fn run_step(user: &mut UserState<'_>, step: &Step) -> Result<Flow> {
    if user.engine == liveload_proto::Engine::Liveview
        && crate::protocol::liveview::takes(&step.kind)
    {
        crate::protocol::liveview::run_step(user, &step.kind).await?;
        return Ok(Flow::Continue);
    }
    let vars = &user.vars;
    let t = |text: &str| fill_template(text, vars);
    let timeout = user.step_timeout;
    let page = user.page;
    let page = || page.ok_or_else(no_browser);
    match &step.kind {
        StepKind::Navigate { url } => {
            let url = allowed_url(&resolve_url(user.base_url, &t(url)), user.allow_schemes)?;
            cdp::navigate(page()?, user.side, Some(&url), timeout).await?;
            record_navigation_timing(page()?, user.recorder).await;
        }
        StepKind::Reload => {
            cdp::navigate(page()?, user.side, None, timeout).await?;
            record_navigation_timing(page()?, user.recorder).await;
        }
        StepKind::Click { selector } => actions::click(page()?, &t(selector), timeout).await?,
        StepKind::Fill { selector, value } => {
            let value = t(value);
            if actions::fill(page()?, &t(selector), &value, timeout).await? {
                user.secrets.add(&value); // Typed into a password input.
            }
        }
        StepKind::Clear { selector } => {
            actions::fill(page()?, &t(selector), "", timeout).await?;
        }
        StepKind::Press { selector, key } => {
            let selector = selector.as_deref().map(t);
            actions::press(page()?, selector.as_deref(), key, timeout).await?;
        }
        StepKind::Check { selector } => {
            actions::set_checked(page()?, &t(selector), true, timeout).await?
        }
        StepKind::Uncheck { selector } => {
            actions::set_checked(page()?, &t(selector), false, timeout).await?
        }
        StepKind::Select { selector, value } => {
            actions::select(page()?, &t(selector), &t(value), timeout).await?
        }
        StepKind::Hover { selector } => actions::hover(page()?, &t(selector), timeout).await?,
        StepKind::Focus { selector } => {
            actions::on_element(page()?, &t(selector), "(e) => e.focus()", timeout).await?;
        }
        StepKind::Blur { selector } => {
            actions::on_element(page()?, &t(selector), "(e) => e.blur()", timeout).await?;
        }
        StepKind::WaitFor {
            condition,
            timeout_ms,
        } => {
            let timeout = timeout_of(timeout_ms, user);
            waits::wait_for(page()?, condition, timeout, vars).await?;
        }
        StepKind::LiveviewSubmit {
            form,
            wait_for: then,
            timeout_ms,
        } => {
            let timeout = timeout_of(timeout_ms, user);
            let then = then.as_deref().map(t);
            liveview_submit(page()?, &t(form), then.as_deref(), timeout).await?;
        }
        StepKind::Assert { check } => assert(page()?, check, vars).await?,
        StepKind::Extract {
            var,
            selector,
            from,
            secret,
        } => {
            let read = match from {
                ExtractFrom::Text => "(e) => e.innerText".to_string(),
                ExtractFrom::Attribute { name } => format!("(e) => e.getAttribute({})", js(name)),
                ExtractFrom::Value => "(e) => e.value".to_string(),
            };
            let value = actions::on_element(page()?, &t(selector), &read, timeout).await?;
            let value = value.as_str().unwrap_or_default().to_string();
            set_var(user, var, value, *secret);
        }
        StepKind::Coordinate {
            point, timeout_ms, ..
        } => coordinate(user, point, Duration::from_millis(*timeout_ms)).await?,
        StepKind::Think { min_ms, max_ms } => {
            let ms = if max_ms > min_ms {
                rand::rng().random_range(*min_ms..=*max_ms)
            } else {
                *min_ms
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        StepKind::Eval {
            js: code,
            var,
            secret,
        } => {
            let value = cdp::evaluate(page()?, t(code)).await?;
            if let Some(var) = var {
                let text = match value {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                set_var(user, var, text, *secret);
            }
        }
        StepKind::Group { steps } => return nested(user, steps).await,
        StepKind::Repeat { times, steps } => {
            for _ in 0..*times {
                if nested(user, steps).await? == Flow::Halt {
                    return Ok(Flow::Halt);
                }
            }
        }
        StepKind::Halt => return Ok(Flow::Halt),
        StepKind::Fail { message } => bail!("{}", t(message)),
        StepKind::Request(request) => {
            let timeout = timeout_of(&request.timeout_ms, user);
            crate::protocol::request(user, request, timeout).await?;
        }
        StepKind::ExtractAnswer {
            var,
            from,
            value,
            secret,
        } => crate::protocol::extract(user, var, (*from, value), *secret)?,
        StepKind::WsConnect { url, timeout_ms } => {
            let timeout = timeout_of(timeout_ms, user);
            crate::protocol::ws_connect(user, url, timeout).await?;
        }
        StepKind::WsSend { text } => crate::protocol::ws_send(user, text, timeout).await?,
        StepKind::WsExpect { expect, timeout_ms } => {
            let timeout = timeout_of(timeout_ms, user);
            crate::protocol::ws_expect(user, expect, timeout).await?;
        }
        StepKind::WsClose => crate::protocol::ws_close(user).await?,
    }
    Ok(Flow::Continue)
}

/// Run a group's or a repeat's steps one level deeper.
async fn nested(user: &mut UserState<'_>, steps: &[Step]) -> Result<Flow> {
    user.depth += 1;
    let flow = run_steps(user, steps).await;
    user.depth -= 1;
    flow
}

/// Set a variable; a secret one's value joins the user's secrets.
pub fn set_var(user: &mut UserState<'_>, var: &str, value: String, secret: bool) {
    if secret {
        user.secrets.add(&value);
    }
    user.vars.insert(var.to_string(), value);
}

/// Submit a LiveView form, wait until LiveView has answered (`phx-submit-loading` is gone),
/// then for `then` to be visible.
async fn liveview_submit(
    page: &Page,
    form: &str,
    then: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let submit = "(f) => { if (f.requestSubmit) f.requestSubmit(); else f.submit(); }";
    actions::on_element(page, form, submit, timeout).await?;
    let idle = waits::Check {
        function: format!(
            "() => {{ const f = document.querySelector({}); \
             return !f || !f.classList.contains('phx-submit-loading'); }}",
            js(form)
        ),
        what: "the form's phx-submit-loading to clear".into(),
    };
    let left = |started: Instant| timeout.saturating_sub(started.elapsed());
    waits::until(page, &idle, left(started)).await?;
    if let Some(then) = then {
        waits::until(page, &waits::Check::visible(then), left(started)).await?;
    }
    Ok(())
}

/// `assert`: check once, now.
async fn assert(page: &Page, check: &AssertCheck, vars: &HashMap<String, String>) -> Result<()> {
    let t = |text: &str| fill_template(text, vars);
    let (expression, failure) = match check {
        AssertCheck::Text { text } => {
            let text = t(text);
            (
                format!(
                    "!!document.body && document.body.innerText.includes({})",
                    js(&text)
                ),
                format!("the page does not contain the text '{text}'"),
            )
        }
        AssertCheck::Count { selector, count } => {
            let selector = t(selector);
            let expression = format!("document.querySelectorAll({}).length", js(&selector));
            let found = cdp::evaluate(page, expression).await?;
            if found != *count {
                bail!("expected {count} elements matching '{selector}', found {found}");
            }
            return Ok(());
        }
        AssertCheck::Visible { selector } => {
            let selector = t(selector);
            let check = waits::Check::visible(&selector);
            (
                format!("({})({{ visible: {VISIBLE_JS} }})", check.function),
                format!("'{selector}' is not visible"),
            )
        }
    };
    if cdp::evaluate(page, expression).await? != true {
        return Err(anyhow!(failure));
    }
    Ok(())
}

/// The waiter's `visible` helper, for a one-time check.
const VISIBLE_JS: &str = "(e) => { if (!e || e.getClientRects().length === 0) return false; \
    const b = e.getBoundingClientRect(); \
    return b.width > 0 && b.height > 0 && getComputedStyle(e).visibility === 'visible'; }";

/// The document's navigation timing: `page.ttfb` (request to first response byte),
/// `page.dom_content_loaded` and `page.load` (from navigation start).
async fn record_navigation_timing(page: &Page, recorder: &Recorder) {
    const TIMING: &str = "(() => { const n = performance.getEntriesByType('navigation')[0]; \
        return n ? [n.responseStart - n.requestStart, n.domContentLoadedEventEnd - n.startTime, \
        n.loadEventEnd - n.startTime] : null; })()";
    let Ok(result) = cdp::evaluate(page, TIMING.to_string()).await else {
        return;
    };
    let Ok(Some([ttfb, dom, load])) = serde_json::from_value::<Option<[f64; 3]>>(result) else {
        return;
    };
    for (name, ms) in [
        ("page.ttfb", ttfb),
        ("page.dom_content_loaded", dom),
        ("page.load", load),
    ] {
        // The page reports these numbers; `try_` because a page can report 1e300.
        if ms > 0.0
            && let Ok(latency) = Duration::try_from_secs_f64(ms / 1000.0)
        {
            recorder.latency(name, latency);
        }
    }
}

#[cfg(test)]
mod tests;
