//! The DevTools commands steps send, written out rather than taken from chromiumoxide's
//! helpers, so that what reaches the browser is exactly what a careful user (and Playwright)
//! would produce:
//!
//! - scripts run in the page's *current* document (no cached context id that a navigation
//!   made stale), and a JavaScript exception comes back as its message and first stack line,
//!   not as a dump of DevTools' `ExceptionDetails`;
//! - a click is a mouse move, then a press with `buttons: 1` and a release with `buttons: 0`,
//!   with `pointerType: mouse` and `clickCount: 1`, the fields Playwright sends (chromiumoxide
//!   leaves `buttons` out; Chromium then derives it from `button`, so the page sees the same
//!   `pointerdown` — the test of `#ready` checks it). What differs is what comes before (the
//!   actionability checks) and that press and release are sent together (see [`click_at`]).

use anyhow::anyhow;
use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams,
    DispatchMouseEventPointerType, DispatchMouseEventType, InsertTextParams, MouseButton,
};
use chromiumoxide::cdp::js_protocol::runtime::{EvaluateParams, ExceptionDetails};

/// Why a script gave no value.
#[derive(Debug)]
pub enum ScriptError {
    /// The script threw (or its promise rejected): the exception's message and first stack line.
    Exception(String),
    /// The document the script ran in went away (a navigation): try again in the new one.
    ContextGone,
    /// DevTools failed (the page closed, the browser died, the command timed out).
    Cdp(anyhow::Error),
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScriptError::Exception(text) => write!(f, "JavaScript error: {text}"),
            ScriptError::ContextGone => write!(f, "the page navigated while the script ran"),
            ScriptError::Cdp(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ScriptError {}

/// Evaluate `expression` in the page's current document, await it if it is a promise, and
/// return its value as JSON (`null` for `undefined` and values JSON cannot carry).
pub async fn evaluate(page: &Page, expression: String) -> Result<serde_json::Value, ScriptError> {
    let params = EvaluateParams::builder()
        .expression(expression)
        .await_promise(true)
        .return_by_value(true)
        .build()
        .map_err(|e| ScriptError::Cdp(anyhow!(e)))?;
    let returns = match page.execute(params).await {
        Ok(response) => response.result,
        Err(e) => {
            let text = e.to_string();
            return Err(if context_gone(&text) {
                ScriptError::ContextGone
            } else {
                ScriptError::Cdp(anyhow!(text))
            });
        }
    };
    if let Some(details) = returns.exception_details {
        return Err(ScriptError::Exception(exception_text(&details)));
    }
    Ok(returns.result.value.unwrap_or(serde_json::Value::Null))
}

/// Does a DevTools error say the script's document is gone (navigated away, reloading)?
fn context_gone(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("execution context was destroyed")
        || text.contains("cannot find context")
        || text.contains("cannot find default execution context")
        || text.contains("inspected target navigated")
}

/// An exception as a person reads it: `Error: count is 4 (at <anonymous>:1:7)`.
///
/// DevTools puts a thrown `Error`'s `stack` in the exception's description: its first line is
/// the message, the next `at ...` line says where. A thrown non-error (`throw "no"`) has a
/// value instead.
pub fn exception_text(details: &ExceptionDetails) -> String {
    let exception = details.exception.as_ref();
    if let Some(description) = exception.and_then(|e| e.description.as_deref()) {
        let mut lines = description.lines();
        let message = lines.next().unwrap_or("").trim();
        return match lines.map(str::trim).find(|l| l.starts_with("at ")) {
            Some(at) => format!("{message} ({at})"),
            None => message.to_string(),
        };
    }
    if let Some(value) = exception.and_then(|e| e.value.as_ref()) {
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string);
        return format!("{} {value}", details.text.trim());
    }
    format!(
        "{} (line {}, column {})",
        details.text.trim(),
        details.line_number + 1,
        details.column_number + 1
    )
}

/// One mouse event at `(x, y)` (CSS pixels of the viewport).
fn mouse(
    kind: DispatchMouseEventType,
    (x, y): (f64, f64),
    button: MouseButton,
    buttons: i64,
) -> anyhow::Result<DispatchMouseEventParams> {
    let mut params = DispatchMouseEventParams::builder()
        .r#type(kind.clone())
        .x(x)
        .y(y)
        .button(button)
        .buttons(buttons)
        .pointer_type(DispatchMouseEventPointerType::Mouse);
    if kind != DispatchMouseEventType::MouseMoved {
        params = params.click_count(1);
    }
    params.build().map_err(anyhow::Error::msg)
}

/// Move the mouse to `point` (the page sees `pointermove`, `mouseover` and the like).
pub async fn move_to(page: &Page, point: (f64, f64)) -> anyhow::Result<()> {
    let moved = mouse(
        DispatchMouseEventType::MouseMoved,
        point,
        MouseButton::None,
        0,
    )?;
    page.execute(moved).await?;
    Ok(())
}

/// A left click at `point`: move there, then press and release.
///
/// The press and the release go out together, the release not waiting for the press's
/// acknowledgement, so the browser queues both input events at once and no page task (a
/// socket message re-rendering the button's label) gets to run between them. This matters:
/// when the node under the pointer is replaced between press and release, Chromium sends no
/// `click` at all. Measured on the demo target's `/clicks` page under CPU load, awaiting each
/// event lost 7 clicks of 859 that way; sent together, none of 1,100.
pub async fn click_at(page: &Page, point: (f64, f64)) -> anyhow::Result<()> {
    move_to(page, point).await?;
    let press = mouse(
        DispatchMouseEventType::MousePressed,
        point,
        MouseButton::Left,
        1,
    )?;
    let release = mouse(
        DispatchMouseEventType::MouseReleased,
        point,
        MouseButton::Left,
        0,
    )?;
    // `join` polls the press first, so it is sent first; then the release.
    let (pressed, released) =
        futures_util::future::join(page.execute(press), page.execute(release)).await;
    pressed?;
    released?;
    Ok(())
}

/// Type `text` into the focused element as one input, the way an input method commits text:
/// the page sees `beforeinput` and `input` (`insertText`), not a value set behind its back.
pub async fn insert_text(page: &Page, text: &str) -> anyhow::Result<()> {
    page.execute(InsertTextParams::new(text)).await?;
    Ok(())
}

/// Press and release a key (`Enter`, `Tab`, `a`, `Delete`) in the focused element.
pub async fn press_key(page: &Page, key: &str) -> anyhow::Result<()> {
    let definition = chromiumoxide::keys::get_key_definition(key)
        .ok_or_else(|| anyhow!("unknown key '{key}' (use names like Enter, Tab, a)"))?;
    let mut params = DispatchKeyEventParams::builder()
        .key(definition.key)
        .code(definition.code)
        .windows_virtual_key_code(definition.key_code)
        .native_virtual_key_code(definition.key_code);
    // Keys that type something are `keyDown` with their text; the others `rawKeyDown`, as
    // DevTools expects (the same split Puppeteer makes).
    let text = definition
        .text
        .or((definition.key.len() == 1).then_some(definition.key));
    let down = match text {
        Some(text) => {
            params = params.text(text);
            DispatchKeyEventType::KeyDown
        }
        None => DispatchKeyEventType::RawKeyDown,
    };
    let up = params.clone().r#type(DispatchKeyEventType::KeyUp);
    page.execute(params.r#type(down).build().map_err(anyhow::Error::msg)?)
        .await?;
    page.execute(up.build().map_err(anyhow::Error::msg)?)
        .await?;
    Ok(())
}

/// How long a navigation may take at least (Playwright's default navigation timeout): a step
/// timeout shorter than a page load is meant for elements, not for loading documents.
const NAVIGATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Load `url` (or, `None`, reload the page) and wait for the new document's `load` event, as
/// Playwright's `goto` does.
///
/// Not chromiumoxide's `goto`, nor its `Page.navigate`: chromiumoxide answers a navigation
/// only once its own bookkeeping saw it complete, and queues the page's next one behind it
/// (see [`crate::relay::SideChannel`]); under load that bookkeeping missed completions, so an
/// answer never came and the next navigation waited 30 s. The command goes through the relay's
/// side channel, and the `load` event ends the wait. The answer still counts when it comes: an
/// error (`net::ERR_CONNECTION_REFUSED`) fails the step, and a same-document navigation (no
/// new loader) ends it.
pub async fn navigate(
    page: &Page,
    side: Option<&crate::relay::SideChannel>,
    url: Option<&str>,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    use chromiumoxide::cdp::browser_protocol::page::{EventLoadEventFired, ReloadParams};
    use futures_util::StreamExt as _;
    let timeout = timeout.max(NAVIGATION_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut loaded = page.event_listener::<EventLoadEventFired>().await?;
    // The document being left carries a mark; the new one, once complete, does not (a
    // fallback to the load event, polled: see `document_loaded`).
    let mark = format!("ll{}", rand::random::<u64>());
    let marking = evaluate(page, format!("window.__liveloadLeaving = {mark:?}"));
    let marked = matches!(
        tokio::time::timeout(std::time::Duration::from_secs(2), marking).await,
        Ok(Ok(_))
    );
    // `Some(error)`: the navigation failed; `None` with `done`: nothing to load.
    let started = async {
        match url {
            Some(url) => match send_navigate(page, side, url).await {
                Ok(result) => {
                    let error = result.error_text.clone().filter(|e| !e.is_empty());
                    (
                        error.map(|e| format!("{url}: {e}")),
                        result.loader_id.is_none(),
                    )
                }
                // No answer (see above): the load event decides.
                Err(_) => (None, false),
            },
            None => match page.execute(ReloadParams::default()).await {
                Ok(_) | Err(_) => (None, false),
            },
        }
    };
    tokio::pin!(started);
    let mut answered = false;
    loop {
        tokio::select! {
            (error, same_document) = &mut started, if !answered => {
                if let Some(error) = error {
                    return Err(anyhow!(error));
                }
                if same_document {
                    return Ok(());
                }
                answered = true;
            }
            event = loaded.next() => match event {
                // The load of the new document, not of the one being left (a click may have
                // started loading it): the mark says which.
                Some(_) if !marked || document_loaded(page, &mark).await => return Ok(()),
                Some(_) => {}
                None => return Err(anyhow!("the page closed while loading")),
            },
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)), if marked => {
                if document_loaded(page, &mark).await {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Err(not_loaded(page, timeout).await),
        }
    }
}

/// Send `Page.navigate` for `page`: around chromiumoxide's navigation queue when the page
/// has a side channel (see [`crate::relay::SideChannel`] for why), else through it.
async fn send_navigate(
    page: &Page,
    side: Option<&crate::relay::SideChannel>,
    url: &str,
) -> anyhow::Result<chromiumoxide::cdp::browser_protocol::page::NavigateReturns> {
    use chromiumoxide::cdp::browser_protocol::page::NavigateParams;
    let Some(side) = side else {
        return Ok(page.execute(NavigateParams::new(url)).await?.result);
    };
    let session: &str = page.session_id().as_ref();
    let answer = side
        .call(session, "Page.navigate", serde_json::json!({ "url": url }))
        .await?;
    Ok(serde_json::from_value(answer)?)
}

/// Whether the document that replaced the one marked `mark` is complete: what the load event
/// says, read from the page, for when the event does not reach the agent.
async fn document_loaded(page: &Page, mark: &str) -> bool {
    let check =
        format!("document.readyState === 'complete' && window.__liveloadLeaving !== {mark:?}");
    let answer = tokio::time::timeout(std::time::Duration::from_secs(1), evaluate(page, check));
    matches!(answer.await, Ok(Ok(serde_json::Value::Bool(true))))
}

/// A navigation's timeout, saying how far the document got (still loading, or loaded
/// without the event).
async fn not_loaded(page: &Page, timeout: std::time::Duration) -> anyhow::Error {
    let state = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        evaluate(page, "document.readyState".into()),
    )
    .await;
    let state = match state {
        Ok(Ok(serde_json::Value::String(state))) => state,
        _ => "unknown".into(),
    };
    anyhow!(
        "the page did not finish loading (its load event) within {timeout:?} (document.readyState: {state})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(json: serde_json::Value) -> ExceptionDetails {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn exceptions_read_as_message_and_place() {
        let thrown = details(serde_json::json!({
            "exceptionId": 1, "text": "Uncaught", "lineNumber": 0, "columnNumber": 6,
            "exception": {"type": "object", "subtype": "error", "className": "Error",
                "description": "Error: count is 4\n    at <anonymous>:1:7\n    at x (y.js:2:3)"}
        }));
        assert_eq!(
            exception_text(&thrown),
            "Error: count is 4 (at <anonymous>:1:7)"
        );
        let plain = details(serde_json::json!({
            "exceptionId": 2, "text": "Uncaught", "lineNumber": 0, "columnNumber": 0,
            "exception": {"type": "string", "value": "no"}
        }));
        assert_eq!(exception_text(&plain), "Uncaught no");
        let bare = details(serde_json::json!({
            "exceptionId": 3, "text": "SyntaxError", "lineNumber": 2, "columnNumber": 4
        }));
        assert_eq!(exception_text(&bare), "SyntaxError (line 3, column 5)");
    }

    #[test]
    fn navigation_errors_are_recognised() {
        assert!(context_gone("Execution context was destroyed."));
        assert!(context_gone("Cannot find context with specified id"));
        assert!(!context_gone("Request timed out"));
    }
}
