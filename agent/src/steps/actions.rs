//! Element steps that act like a careful person: wait until the element can take the action
//! (see `actionable.js` for the checks), then act with real input events.
//!
//! | step | waits until the element is |
//! | --- | --- |
//! | `click`, `check`, `uncheck` | visible, stable, enabled, in view, and the one at its centre |
//! | `hover` | visible, stable, in view, and the one at its centre |
//! | `fill`, `clear` | visible, enabled and editable (not read-only) |
//! | `select`, `press` (with a selector) | visible and enabled |
//! | `focus`, `blur`, `extract` | in the document |
//!
//! A click is checked twice: before it (above) and at the moment the press lands (the
//! hit-target interceptor in `actionable.js`). A press that would land on something else is
//! stopped before the page sees it and the click is retried, until the step's time is up;
//! then the step fails saying which check failed last ("'#inc' is covered by
//! <div class=q-ripple>"). A click whose press and release reached the element but after
//! which the browser dispatched no `click` (the page replaced the node under the pointer
//! between them, which makes Chromium drop the click) fails the step, saying so, rather than
//! being passed off as done.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use chromiumoxide::Page;
use serde::Serialize;
use tokio::time::Instant;

use super::cdp::{self, ScriptError};
use super::text::js;

/// The in-page waiter (see the file for the checks).
const ACTIONABLE_JS: &str = include_str!("actionable.js");

/// The longest one evaluation waits in the page: DevTools gives up on a command after 30 s,
/// so longer waits are made of several evaluations.
pub const MAX_IN_PAGE_WAIT: Duration = Duration::from_secs(10);

/// Which checks an action needs (the names match `actionable.js`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Want {
    visible: bool,
    stable: bool,
    enabled: bool,
    editable: bool,
    scroll: bool,
    hit: bool,
    intercept: bool,
}

impl Want {
    /// Only that it exists (focus, blur, extract).
    pub const ATTACHED: Want = Want {
        visible: false,
        stable: false,
        enabled: false,
        editable: false,
        scroll: false,
        hit: false,
        intercept: false,
    };
    /// Visible and enabled (select, press).
    pub const ENABLED: Want = Want {
        visible: true,
        enabled: true,
        ..Want::ATTACHED
    };
    /// Visible, enabled and editable (fill, clear).
    pub const EDITABLE: Want = Want {
        editable: true,
        ..Want::ENABLED
    };
    /// Everything a pointer needs (hover).
    pub const POINTER: Want = Want {
        visible: true,
        stable: true,
        scroll: true,
        hit: true,
        ..Want::ATTACHED
    };
    /// Everything a click needs, checked again when the press lands.
    pub const CLICK: Want = Want {
        enabled: true,
        intercept: true,
        ..Want::POINTER
    };
}

/// An element that passed its checks: its centre, and what the action returned.
pub struct Ready {
    /// The centre, in CSS pixels of the viewport.
    pub point: (f64, f64),
    /// What the in-page action returned (`null` without one).
    pub value: serde_json::Value,
}

/// Wait until `selector`'s first element passes `want`'s checks, then run `action` (a
/// JavaScript function of the element, or `None`) on it in the same evaluation.
///
/// Fails at `deadline` with the check that failed last. A navigation while waiting is waited
/// out: the checks start again in the new document.
pub async fn actionable(
    page: &Page,
    selector: &str,
    want: Want,
    action: Option<&str>,
    deadline: Instant,
    waited: Duration,
) -> Result<Ready> {
    let want_json = serde_json::to_string(&want).expect("flags serialise");
    loop {
        let chunk = deadline
            .saturating_duration_since(Instant::now())
            .min(MAX_IN_PAGE_WAIT);
        let expression = format!(
            "({ACTIONABLE_JS})({}, {want_json}, {}, {})",
            js(selector),
            chunk.as_millis(),
            action.unwrap_or("null")
        );
        let reason = match cdp::evaluate(page, expression).await {
            Ok(result) if result["ok"] == true => {
                let point = (
                    result["x"].as_f64().unwrap_or(0.0),
                    result["y"].as_f64().unwrap_or(0.0),
                );
                let value = result["value"].clone();
                return Ok(Ready { point, value });
            }
            Ok(result) if result["final"] == true => {
                bail!("'{selector}' {}", result["reason"].as_str().unwrap_or(""))
            }
            Ok(result) => result["reason"].as_str().unwrap_or("").to_string(),
            Err(ScriptError::ContextGone) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                "was not found: the page was navigating".to_string()
            }
            Err(e) => return Err(e.into()),
        };
        if Instant::now() >= deadline {
            bail!("'{selector}' {reason} (waited {})", seconds(waited));
        }
    }
}

/// A duration as people write it in scenarios: `10s`, `1.5s`, `500ms`.
pub fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{s:.0}s")
        } else {
            format!("{s:.1}s")
        }
    }
}

/// What the hit-target interceptor saw of one click.
#[derive(Debug, Default, serde::Deserialize)]
struct Landing {
    /// Why the press was stopped, when it would have landed elsewhere.
    verdict: Option<String>,
    /// A press reached the element.
    pressed: bool,
    /// The browser dispatched `click` after it.
    clicked: bool,
}

/// Click `selector`'s element like a person: wait until it is actionable, press and release
/// at its centre, and make sure the press landed on it (else try again until `timeout`).
pub async fn click(page: &Page, selector: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = actionable(page, selector, Want::CLICK, None, deadline, timeout).await?;
        cdp::click_at(page, ready.point).await?;
        let landing = match cdp::evaluate(page, STOP_INTERCEPTOR.to_string()).await {
            Ok(value) => serde_json::from_value::<Option<Landing>>(value)
                .ok()
                .flatten()
                .unwrap_or_default(),
            // The click navigated: the old document (and the interceptor) is gone.
            Err(ScriptError::ContextGone) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match landing.verdict {
            None if landing.pressed && !landing.clicked => bail!(
                "'{selector}' got no click: the page replaced the element under the pointer \
                 between press and release, and the browser then sends no click (a person's \
                 click would be lost the same way)"
            ),
            None => return Ok(()),
            Some(verdict) if Instant::now() >= deadline => {
                bail!("'{selector}' {verdict} (waited {})", seconds(timeout))
            }
            // The selector is not logged: filled from variables, it could hold a secret.
            Some(verdict) => tracing::debug!(%verdict, "a press was stopped; clicking again"),
        }
    }
}

/// Ends the interceptor the click installed and says what it saw (`null` when there was none).
const STOP_INTERCEPTOR: &str =
    "(() => { const s = window[Symbol.for('liveload.hitTarget')]; return s ? s.stop() : null; })()";

/// Move the mouse over `selector`'s element once it is actionable.
pub async fn hover(page: &Page, selector: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let ready = actionable(page, selector, Want::POINTER, None, deadline, timeout).await?;
    cdp::move_to(page, ready.point).await
}

/// Focuses the element and selects what it holds, so typed text replaces it; says how the
/// value must be entered and whether the field is a password.
const PREPARE_FILL: &str = r#"(e) => {
  e.focus();
  const type = e instanceof HTMLInputElement ? e.type : "";
  if (["color", "date", "time", "datetime-local", "month", "range", "week"].includes(type)) {
    return { how: "set", password: false };
  }
  if (e instanceof HTMLInputElement || e instanceof HTMLTextAreaElement) {
    e.select();
  } else if (e.isContentEditable) {
    const range = document.createRange();
    range.selectNodeContents(e);
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  return { how: "type", password: type === "password" };
}"#;

/// Enter `value` into `selector`'s field as a user would: focus it, select its content, and
/// type over it with one `Input.insertText` (an empty value deletes the selection with the
/// Delete key). Inputs that take no typing (date, color, range...) get their value set, with
/// `input` and `change` events, as Playwright does. Returns whether the field is a password
/// input (its value is then a secret).
pub async fn fill(page: &Page, selector: &str, value: &str, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    let ready = actionable(
        page,
        selector,
        Want::EDITABLE,
        Some(PREPARE_FILL),
        deadline,
        timeout,
    )
    .await?;
    let password = ready.value["password"] == true;
    if ready.value["how"] == "set" {
        let set = format!(
            "(() => {{ const e = document.querySelector({}); e.value = {}; \
             e.dispatchEvent(new Event('input', {{ bubbles: true }})); \
             e.dispatchEvent(new Event('change', {{ bubbles: true }})); }})()",
            js(selector),
            js(value)
        );
        cdp::evaluate(page, set).await?;
    } else if value.is_empty() {
        cdp::press_key(page, "Delete").await?;
    } else {
        cdp::insert_text(page, value).await?;
    }
    Ok(password)
}

/// Is a checkbox (or an ARIA `role=checkbox`/`switch`) ticked?
const IS_CHECKED: &str = "(e) => (e instanceof HTMLInputElement ? e.checked : \
    e.getAttribute('aria-checked') === 'true')";

/// Tick (`want`) or untick a checkbox by clicking it when it is not already so, then make sure
/// it changed.
pub async fn set_checked(page: &Page, selector: &str, want: bool, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let deadline = started + timeout;
    let is_checked = || async {
        let checked = actionable(
            page,
            selector,
            Want::ATTACHED,
            Some(IS_CHECKED),
            deadline,
            timeout,
        );
        Ok::<_, anyhow::Error>(checked.await?.value)
    };
    if is_checked().await? == want {
        return Ok(());
    }
    click(
        page,
        selector,
        deadline.saturating_duration_since(Instant::now()),
    )
    .await?;
    let after = is_checked().await?;
    if after != want {
        bail!(
            "'{selector}' did not become {} after a click",
            if want { "checked" } else { "unchecked" }
        );
    }
    Ok(())
}

/// Choose the `<select>` option whose value is `value` (with `input` and `change` events).
pub async fn select(page: &Page, selector: &str, value: &str, timeout: Duration) -> Result<()> {
    let choose = format!(
        "(e) => {{ const v = {}; \
         if (![...e.options].some(o => o.value === v)) return false; \
         e.value = v; \
         e.dispatchEvent(new Event('input', {{ bubbles: true }})); \
         e.dispatchEvent(new Event('change', {{ bubbles: true }})); return true; }}",
        js(value)
    );
    let deadline = Instant::now() + timeout;
    let done = actionable(
        page,
        selector,
        Want::ENABLED,
        Some(&choose),
        deadline,
        timeout,
    )
    .await?;
    if done.value != true {
        bail!("'{selector}' has no option with value '{value}'");
    }
    Ok(())
}

/// Press `key`, in `selector`'s element (focused first) or wherever the focus is.
pub async fn press(
    page: &Page,
    selector: Option<&str>,
    key: &str,
    timeout: Duration,
) -> Result<()> {
    if let Some(selector) = selector {
        let deadline = Instant::now() + timeout;
        actionable(
            page,
            selector,
            Want::ENABLED,
            Some("(e) => e.focus()"),
            deadline,
            timeout,
        )
        .await?;
    }
    cdp::press_key(page, key).await
}

/// Run `action` (a JavaScript function of the element) on `selector`'s element once it
/// exists; its result.
pub async fn on_element(
    page: &Page,
    selector: &str,
    action: &str,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    Ok(actionable(
        page,
        selector,
        Want::ATTACHED,
        Some(action),
        deadline,
        timeout,
    )
    .await?
    .value)
}

/// An error for a step that needs the page to be somewhere it is not.
pub fn no_browser() -> anyhow::Error {
    anyhow!("this agent runs without a browser")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_scenarios() {
        assert_eq!(seconds(Duration::from_secs(10)), "10s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
        assert_eq!(seconds(Duration::from_millis(300)), "300ms");
    }

    #[test]
    fn the_checks_serialise_under_the_names_the_script_reads() {
        let json = serde_json::to_value(Want::CLICK).unwrap();
        for key in [
            "visible",
            "stable",
            "enabled",
            "editable",
            "scroll",
            "hit",
            "intercept",
        ] {
            assert!(ACTIONABLE_JS.contains(&format!("want.{key}")), "{key}");
            assert!(json.get(key).is_some(), "{key}");
        }
        assert_eq!(json["intercept"], true);
        assert_eq!(serde_json::to_value(Want::EDITABLE).unwrap()["hit"], false);
    }
}
