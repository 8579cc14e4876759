//! Executing one iteration's steps in a user's page.
//!
//! Element actions wait for their element (up to the scenario's `step_timeout`), like
//! Playwright's auto-waiting: a load test should measure the app, not race it. Conditions are
//! checked by small JavaScript expressions polled every 50 ms; values are JSON-encoded into them,
//! never spliced in raw.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use chromiumoxide::{Element, Page};
use liveload_proto::{AssertCheck, ExtractFrom, Step, StepKind, WaitCondition};
use rand::Rng;
use tokio::time::Instant;

use crate::recorder::Recorder;

/// What one user carries from step to step.
pub struct UserState<'a> {
    /// The user's page (`None` without a browser).
    pub page: Option<&'a Page>,
    /// Template variables: `user_id`, `iteration`, CSV columns, extracted values.
    pub vars: HashMap<String, String>,
    /// Base URL for relative navigations.
    pub base_url: &'a str,
    /// How long element actions wait for their element.
    pub step_timeout: Duration,
    /// Where step timings go.
    pub recorder: &'a Recorder,
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
            let started = Instant::now();
            let result = run_step(user, step).await;
            let metric = match step.kind {
                StepKind::Group { .. } => format!("group:{}", step.name),
                StepKind::Repeat { .. } => String::new(),
                _ => format!("step:{}", step.name),
            };
            if !metric.is_empty() {
                user.recorder.latency(&metric, started.elapsed());
                if result.is_err() {
                    user.recorder.count(&format!("{metric}:failed"), 1);
                }
            }
            match result.with_context(|| format!("step '{}'", step.name))? {
                Flow::Continue => {}
                Flow::Halt => return Ok(Flow::Halt),
            }
        }
        Ok(Flow::Continue)
    })
}

/// Fill `{{name}}` placeholders from the user's variables (names were checked before the run).
pub fn fill_template(text: &str, vars: &HashMap<String, String>) -> String {
    if !text.contains("{{") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                out.push_str(vars.get(name).map(String::as_str).unwrap_or(""));
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Join a step URL to the base URL (a URL with a scheme, like `https:`, `about:` or `data:`,
/// stands as it is).
pub fn resolve_url(base: &str, url: &str) -> String {
    let has_scheme = url.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
    });
    if has_scheme {
        url.to_string()
    } else if url.starts_with('/') {
        format!("{}{url}", base.trim_end_matches('/'))
    } else {
        format!("{}/{url}", base.trim_end_matches('/'))
    }
}

/// Does `text` match `pattern`, where `*` matches any run of characters?
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut position = first.len();
    for part in &parts[1..parts.len() - 1] {
        match text[position..].find(part) {
            Some(found) => position += found + part.len(),
            None => return false,
        }
    }
    text[position..].ends_with(last)
}

fn js(value: &str) -> String {
    serde_json::to_string(value).expect("a string serialises")
}

/// JavaScript: is the first element matching `selector` visible?
fn visible_js(selector: &str) -> String {
    format!(
        "(() => {{ const e = document.querySelector({}); if (!e) return false; \
         const s = getComputedStyle(e); \
         return s.visibility !== 'hidden' && s.display !== 'none' && e.getClientRects().length > 0; }})()",
        js(selector)
    )
}

const LOADING: &str = "[class*=\"phx-\"][class*=\"-loading\"]";

async fn eval_bool(page: &Page, expression: &str) -> Result<bool> {
    page.evaluate(expression)
        .await?
        .into_value::<bool>()
        .context("reading a check's result")
}

/// Poll a JavaScript condition every 50 ms until it holds or `timeout` passes.
///
/// An evaluation that fails counts as "not yet": right after a click that navigates, the old
/// document's context is destroyed and the new one is not ready for a moment.
async fn poll(page: &Page, expression: &str, timeout: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = eval_bool(page, expression).await;
        if matches!(outcome, Ok(true)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return match outcome {
                Err(e) => Err(e.context(format!("{what} not reached within {timeout:?}"))),
                _ => Err(anyhow!("{what} not reached within {timeout:?}")),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first element matching `selector`, waiting up to `timeout` for it to exist.
async fn element(page: &Page, selector: &str, timeout: Duration) -> Result<Element> {
    let deadline = Instant::now() + timeout;
    loop {
        match page.find_element(selector).await {
            Ok(element) => return Ok(element),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(_) => bail!("no element matches '{selector}' (waited {timeout:?})"),
        }
    }
}

/// Set an input's value and fire the events a typing user would.
async fn set_value(element: &Element, value: &str) -> Result<()> {
    let function = format!(
        "function() {{ this.focus(); this.value = {}; \
         this.dispatchEvent(new Event('input', {{ bubbles: true }})); \
         this.dispatchEvent(new Event('change', {{ bubbles: true }})); }}",
        js(value)
    );
    element.call_js_fn(function, false).await?;
    Ok(())
}

async fn checked(element: &Element) -> Result<bool> {
    Ok(element
        .property("checked")
        .await?
        .and_then(|v| v.as_bool())
        .unwrap_or(false))
}

/// The document's navigation timing: `page.ttfb` (request to first response byte),
/// `page.dom_content_loaded` and `page.load` (from navigation start).
async fn record_navigation_timing(page: &Page, recorder: &Recorder) {
    const TIMING: &str = "(() => { const n = performance.getEntriesByType('navigation')[0]; \
        return n ? [n.responseStart - n.requestStart, n.domContentLoadedEventEnd - n.startTime, \
        n.loadEventEnd - n.startTime] : null; })()";
    let Ok(result) = page.evaluate(TIMING).await else {
        return;
    };
    let Ok(Some([ttfb, dom, load])) = result.into_value::<Option<[f64; 3]>>() else {
        return;
    };
    for (name, ms) in [
        ("page.ttfb", ttfb),
        ("page.dom_content_loaded", dom),
        ("page.load", load),
    ] {
        if ms.is_finite() && ms > 0.0 {
            recorder.latency(name, Duration::from_secs_f64(ms / 1000.0));
        }
    }
}

async fn run_step(user: &mut UserState<'_>, step: &Step) -> Result<Flow> {
    let vars = &user.vars;
    let t = |text: &str| fill_template(text, vars);
    let timeout = user.step_timeout;
    let page = || {
        user.page
            .ok_or_else(|| anyhow!("this agent runs without a browser"))
    };
    match &step.kind {
        StepKind::Navigate { url } => {
            page()?.goto(resolve_url(user.base_url, &t(url))).await?;
            record_navigation_timing(page()?, user.recorder).await;
        }
        StepKind::Reload => {
            page()?.reload().await?;
            record_navigation_timing(page()?, user.recorder).await;
        }
        StepKind::Click { selector } => {
            element(page()?, &t(selector), timeout)
                .await?
                .click()
                .await?;
        }
        StepKind::Fill { selector, value } => {
            let e = element(page()?, &t(selector), timeout).await?;
            set_value(&e, &t(value)).await?;
        }
        StepKind::Clear { selector } => {
            let e = element(page()?, &t(selector), timeout).await?;
            set_value(&e, "").await?;
        }
        StepKind::Press { selector, key } => {
            let selector = selector.as_deref().map(t);
            let e = match selector {
                Some(selector) => {
                    let e = element(page()?, &selector, timeout).await?;
                    e.focus().await?;
                    e
                }
                None => match page()?.find_element(":focus").await {
                    Ok(e) => e,
                    Err(_) => page()?.find_element("body").await?,
                },
            };
            e.press_key(key).await?;
        }
        StepKind::Check { selector } | StepKind::Uncheck { selector } => {
            let want = matches!(step.kind, StepKind::Check { .. });
            let e = element(page()?, &t(selector), timeout).await?;
            if checked(&e).await? != want {
                e.click().await?;
            }
            if checked(&e).await? != want {
                bail!(
                    "'{selector}' did not become {}",
                    if want { "checked" } else { "unchecked" }
                );
            }
        }
        StepKind::Select { selector, value } => {
            let e = element(page()?, &t(selector), timeout).await?;
            let value = t(value);
            let function = format!(
                "function() {{ const v = {}; \
                 if (![...this.options].some(o => o.value === v)) return false; \
                 this.value = v; \
                 this.dispatchEvent(new Event('input', {{ bubbles: true }})); \
                 this.dispatchEvent(new Event('change', {{ bubbles: true }})); return true; }}",
                js(&value)
            );
            let done = e.call_js_fn(function, false).await?;
            if done.result.value != Some(serde_json::Value::Bool(true)) {
                bail!("'{selector}' has no option with value '{value}'");
            }
        }
        StepKind::Hover { selector } => {
            element(page()?, &t(selector), timeout)
                .await?
                .hover()
                .await?;
        }
        StepKind::Focus { selector } => {
            element(page()?, &t(selector), timeout)
                .await?
                .focus()
                .await?;
        }
        StepKind::Blur { selector } => {
            let e = element(page()?, &t(selector), timeout).await?;
            e.call_js_fn("function() { this.blur(); }", false).await?;
        }
        StepKind::WaitFor {
            condition,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(*timeout_ms);
            wait_for(page()?, condition, timeout, vars).await?;
        }
        StepKind::LiveviewSubmit {
            form,
            wait_for: then,
            timeout_ms,
        } => {
            let page = page()?;
            let timeout = Duration::from_millis(*timeout_ms);
            let form = t(form);
            element(page, &form, timeout).await?;
            let submit = format!(
                "(() => {{ const f = document.querySelector({}); \
                 if (f.requestSubmit) f.requestSubmit(); else f.submit(); return true; }})()",
                js(&form)
            );
            eval_bool(page, &submit).await?;
            let idle = format!(
                "(() => {{ const f = document.querySelector({}); \
                 return !f || !f.classList.contains('phx-submit-loading'); }})()",
                js(&form)
            );
            poll(
                page,
                &idle,
                timeout,
                "the form's phx-submit-loading to clear",
            )
            .await?;
            if let Some(then) = then {
                let then = t(then);
                poll(
                    page,
                    &visible_js(&then),
                    timeout,
                    &format!("'{then}' visible"),
                )
                .await?;
            }
        }
        StepKind::Assert { check } => {
            let page = page()?;
            match check {
                AssertCheck::Text { text } => {
                    let text = t(text);
                    let expr = format!(
                        "!!document.body && document.body.innerText.includes({})",
                        js(&text)
                    );
                    if !eval_bool(page, &expr).await? {
                        bail!("the page does not contain the text '{text}'");
                    }
                }
                AssertCheck::Count { selector, count } => {
                    let selector = t(selector);
                    let expr = format!("document.querySelectorAll({}).length", js(&selector));
                    let found: u64 = page.evaluate(expr).await?.into_value()?;
                    if found != *count {
                        bail!("expected {count} elements matching '{selector}', found {found}");
                    }
                }
                AssertCheck::Visible { selector } => {
                    let selector = t(selector);
                    if !eval_bool(page, &visible_js(&selector)).await? {
                        bail!("'{selector}' is not visible");
                    }
                }
            }
        }
        StepKind::Extract {
            var,
            selector,
            from,
        } => {
            let e = element(page()?, &t(selector), timeout).await?;
            let value = match from {
                ExtractFrom::Text => e.inner_text().await?,
                ExtractFrom::Attribute { name } => e.attribute(name).await?,
                ExtractFrom::Value => e.string_property("value").await?,
            }
            .unwrap_or_default();
            user.vars.insert(var.clone(), value);
        }
        StepKind::Think { min_ms, max_ms } => {
            let ms = if max_ms > min_ms {
                rand::rng().random_range(*min_ms..=*max_ms)
            } else {
                *min_ms
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        StepKind::Eval { js: code, var } => {
            let value: serde_json::Value = page()?
                .evaluate(t(code))
                .await?
                .into_value()
                .unwrap_or(serde_json::Value::Null);
            if let Some(var) = var {
                let text = match value {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                user.vars.insert(var.clone(), text);
            }
        }
        StepKind::Group { steps } => return run_steps(user, steps).await,
        StepKind::Repeat { times, steps } => {
            for _ in 0..*times {
                if run_steps(user, steps).await? == Flow::Halt {
                    return Ok(Flow::Halt);
                }
            }
        }
        StepKind::Halt => return Ok(Flow::Halt),
        StepKind::Fail { message } => bail!("{}", t(message)),
    }
    Ok(Flow::Continue)
}

async fn wait_for(
    page: &Page,
    condition: &WaitCondition,
    timeout: Duration,
    vars: &HashMap<String, String>,
) -> Result<()> {
    let t = |text: &str| fill_template(text, vars);
    match condition {
        WaitCondition::Visible { selector } => {
            let selector = t(selector);
            poll(
                page,
                &visible_js(&selector),
                timeout,
                &format!("'{selector}' visible"),
            )
            .await
        }
        WaitCondition::Hidden { selector } => {
            let selector = t(selector);
            let expr = format!("!{}", visible_js(&selector));
            poll(page, &expr, timeout, &format!("'{selector}' hidden")).await
        }
        WaitCondition::Text { text } => {
            let text = t(text);
            let expr = format!(
                "!!document.body && document.body.innerText.includes({})",
                js(&text)
            );
            poll(page, &expr, timeout, &format!("text '{text}'")).await
        }
        WaitCondition::Url { pattern } => {
            let pattern = t(pattern);
            let deadline = Instant::now() + timeout;
            loop {
                let url = page.url().await?.unwrap_or_default();
                if glob_match(&pattern, &url) {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    bail!("the URL '{url}' did not match '{pattern}' within {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        WaitCondition::NetworkIdle { idle_ms } => {
            // Quiet when the document has loaded and no resource finished for `idle_ms`.
            let idle = Duration::from_millis(*idle_ms);
            let deadline = Instant::now() + timeout;
            let mut last_count = u64::MAX;
            let mut quiet_since = Instant::now();
            loop {
                let (count, complete): (u64, bool) = page
                    .evaluate(
                        "[performance.getEntriesByType('resource').length, document.readyState === 'complete']",
                    )
                    .await?
                    .into_value()?;
                if count != last_count || !complete {
                    last_count = count;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= idle {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    bail!("the network did not go quiet for {idle:?} within {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        WaitCondition::LiveviewConnected => {
            poll(
                page,
                "document.querySelector('.phx-connected') !== null",
                timeout,
                "the LiveView connection (.phx-connected)",
            )
            .await
        }
        WaitCondition::LiveviewIdle { selector } => {
            let selector = t(selector);
            let expr = format!(
                "(() => {{ const r = document.querySelector({}); if (!r) return false; \
                 return !r.matches({l}) && !r.querySelector({l}); }})()",
                js(&selector),
                l = js(LOADING)
            );
            poll(
                page,
                &expr,
                timeout,
                &format!("no phx loading class in '{selector}'"),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_the_base() {
        assert_eq!(resolve_url("http://h:1/", "/a"), "http://h:1/a");
        assert_eq!(resolve_url("http://h:1", "a/3"), "http://h:1/a/3");
        assert_eq!(resolve_url("http://h:1", "https://x/y"), "https://x/y");
        assert_eq!(resolve_url("http://h:1", "about:blank"), "about:blank");
        assert_eq!(resolve_url("http://h:1", "/a?t=1:2"), "http://h:1/a?t=1:2");
    }

    #[test]
    fn templates_fill_known_variables() {
        let vars: HashMap<String, String> = [("user_id", "7"), ("email", "a@x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            fill_template("/u/{{user_id}}?e={{ email }}", &vars),
            "/u/7?e=a@x"
        );
        assert_eq!(fill_template("no braces", &vars), "no braces");
        assert_eq!(fill_template("open {{ end", &vars), "open {{ end");
    }

    #[test]
    fn glob() {
        assert!(glob_match("*/thanks*", "http://h/thanks?x=1"));
        assert!(glob_match("http://h/", "http://h/"));
        assert!(!glob_match("*/thanks", "http://h/thanks/no"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*a*b*", "xxbxxaxx"));
    }
}
