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
