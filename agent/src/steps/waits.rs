//! `wait_for`, the LiveView helpers, and the conditions they wait for.
//!
//! Every wait takes its step's `timeout:`, else the scenario's `step_timeout` (the caller
//! passes the one that applies). Conditions are checked *in the page* (see `wait.js`): one
//! evaluation waits for the condition on every animation frame, instead of a DevTools round
//! trip every 50 ms. A navigation ends that evaluation; the wait then starts again in the new
//! document, with what is left of its time.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, bail};
use chromiumoxide::Page;
use liveload_proto::WaitCondition;
use tokio::time::Instant;

use super::actions::{MAX_IN_PAGE_WAIT, seconds};
use super::cdp::{self, ScriptError};
use super::text::{fill_template, js};

/// The in-page waiter.
const WAIT_JS: &str = include_str!("wait.js");

/// A condition as a JavaScript function of the waiter's helpers, and how to name it in an
/// error.
pub struct Check {
    /// `(h) => ...`, truthy when the condition holds.
    pub function: String,
    /// What is awaited, for the error: `'#x' visible`, `text 'Saved'`.
    pub what: String,
}

impl Check {
    /// `selector`'s first element is visible.
    pub fn visible(selector: &str) -> Check {
        Check {
            function: format!("(h) => h.visible(document.querySelector({}))", js(selector)),
            what: format!("'{selector}' visible"),
        }
    }
}

/// The page's (templated) condition for `condition`; `None` for the ones not checked in the
/// page (network idle).
fn check_for(condition: &WaitCondition, vars: &HashMap<String, String>) -> Option<Check> {
    let t = |text: &str| fill_template(text, vars);
    Some(match condition {
        WaitCondition::Visible { selector } => Check::visible(&t(selector)),
        WaitCondition::Hidden { selector } => {
            let selector = t(selector);
            Check {
                function: format!(
                    "(h) => !h.visible(document.querySelector({}))",
                    js(&selector)
                ),
                what: format!("'{selector}' hidden"),
            }
        }
        WaitCondition::Text { text } => {
            let text = t(text);
            Check {
                function: format!(
                    "() => !!document.body && document.body.innerText.includes({})",
                    js(&text)
                ),
                what: format!("text '{text}'"),
            }
        }
        WaitCondition::Js { expression } => {
            let expression = t(expression);
            Check {
                // The expression is the scenario's own code, so it goes in as code; a newline
                // before the closing parenthesis keeps a trailing `//` comment harmless.
                function: format!("() => (\n{expression}\n)"),
                what: format!("the JavaScript condition `{}`", expression.trim()),
            }
        }
        WaitCondition::Url { pattern } => {
            let pattern = t(pattern);
            Check {
                function: format!("(h) => h.glob({}, location.href)", js(&pattern)),
                what: format!("a URL matching '{pattern}'"),
            }
        }
        WaitCondition::LiveviewConnected => Check {
            function: "() => document.querySelector('.phx-connected') !== null".into(),
            what: "the LiveView connection (.phx-connected)".into(),
        },
        WaitCondition::LiveviewIdle { selector } => {
            let selector = t(selector);
            Check {
                function: format!(
                    "() => {{ const r = document.querySelector({}); if (!r) return false; \
                     const l = '[class*=\"phx-\"][class*=\"-loading\"]'; \
                     return !r.matches(l) && !r.querySelector(l); }}",
                    js(&selector)
                ),
                what: format!("no phx loading class in '{selector}'"),
            }
        }
        WaitCondition::NetworkIdle { .. } => return None,
    })
}

/// Wait up to `timeout` for `condition` (its strings templated from `vars`).
pub async fn wait_for(
    page: &Page,
    condition: &WaitCondition,
    timeout: Duration,
    vars: &HashMap<String, String>,
) -> Result<()> {
    match (check_for(condition, vars), condition) {
        (Some(check), _) => until(page, &check, timeout).await,
        (None, WaitCondition::NetworkIdle { idle_ms }) => {
            network_idle(page, Duration::from_millis(*idle_ms), timeout).await
        }
        (None, _) => unreachable!("every other condition is checked in the page"),
    }
}

/// Wait in the page until `check` holds, for at most `timeout`.
pub async fn until(page: &Page, check: &Check, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_error: Option<String> = None;
    loop {
        let chunk = deadline
            .saturating_duration_since(Instant::now())
            .min(MAX_IN_PAGE_WAIT);
        let expression = format!("({WAIT_JS})({}, {})", check.function, chunk.as_millis());
        match cdp::evaluate(page, expression).await {
            Ok(result) if result["ok"] == true => return Ok(()),
            Ok(result) => {
                if let Some(error) = result["error"].as_str() {
                    last_error = Some(error.to_string());
                }
            }
            // A navigation: wait a moment for the new document, then check there.
            Err(ScriptError::ContextGone) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // The condition does not even compile (a syntax error in `js:`): no point waiting.
            Err(ScriptError::Exception(text)) => bail!("{}: {text}", check.what),
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            let mut message = format!("{} not reached within {}", check.what, seconds(timeout));
            if let Some(error) = last_error {
                message.push_str(&format!(" (last error: {error})"));
            }
            if check.what.starts_with("a URL")
                && let Ok(Some(url)) = page.url().await
            {
                message.push_str(&format!(" (the URL is '{url}')"));
            }
            bail!(message);
        }
    }
}

/// Wait until the document has loaded and no resource has finished loading for `idle`.
///
/// This one is measured over time from the browser's resource timing, one read every 50 ms:
/// it needs quiet to last, which a single in-page check cannot see.
async fn network_idle(page: &Page, idle: Duration, timeout: Duration) -> Result<()> {
    const STATE: &str = "[performance.getEntriesByType('resource').length, \
        document.readyState === 'complete']";
    let deadline = Instant::now() + timeout;
    let mut last_count = u64::MAX;
    let mut quiet_since = Instant::now();
    loop {
        let state = match cdp::evaluate(page, STATE.to_string()).await {
            Ok(value) => serde_json::from_value::<(u64, bool)>(value).ok(),
            Err(ScriptError::ContextGone) => None,
            Err(e) => return Err(e.into()),
        };
        match state {
            Some((count, true)) if count == last_count => {
                if quiet_since.elapsed() >= idle {
                    return Ok(());
                }
            }
            Some((count, _)) => {
                last_count = count;
                quiet_since = Instant::now();
            }
            None => quiet_since = Instant::now(),
        }
        if Instant::now() >= deadline {
            bail!(
                "the network did not go quiet for {} within {}",
                seconds(idle),
                seconds(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
