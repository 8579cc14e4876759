//! Pictures of a page for people debugging a scenario: a screenshot and the DOM, taken when an
//! iteration fails (`on_failure: screenshot`) and after every step of `liveload try
//! --screenshots`.
//!
//! What is and is not hidden:
//! - the DOM dump has every secret value replaced by `[secret]`, and no password input keeps a
//!   value;
//! - in screenshots, password inputs show the browser's dots (as they always do), and so does
//!   any other input or textarea whose value contains a secret: it is drawn with
//!   `-webkit-text-security: disc` while the picture is taken, then restored;
//! - a secret the page shows as ordinary text (a greeting with your e-mail) is *not* masked in
//!   screenshots: pixels cannot be searched for it. Keep such values out of secret columns or
//!   do not turn screenshots on.

use std::time::Duration;

use anyhow::Result;
use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::page::ScreenshotParams;

use crate::secrets::Secrets;
use crate::steps::cdp;

/// The largest DOM kept, in bytes (a capture travels in a metrics snapshot).
pub const MAX_DOM_BYTES: usize = 512 * 1024;

/// The longest a capture may take: a hung page must not hold its user.
pub(crate) const CAPTURE_TIMEOUT: Duration = Duration::from_secs(5);

/// Draws fields holding a secret as dots; returns how many it masked. The previous inline
/// value of the property is kept on the element to be put back.
const MASK: &str = r#"(secrets) => {
  const masked = [];
  for (const e of document.querySelectorAll("input, textarea")) {
    if (e.type === "password" || !secrets.some((s) => e.value.includes(s))) continue;
    masked.push([e, e.style.getPropertyValue("-webkit-text-security"), e.style.getPropertyPriority("-webkit-text-security")]);
    e.style.setProperty("-webkit-text-security", "disc", "important");
  }
  window[Symbol.for("liveload.masked")] = masked;
  return masked.length;
}"#;

/// Puts the masked fields back as they were.
const UNMASK: &str = r#"(() => {
  const key = Symbol.for("liveload.masked");
  for (const [e, value, priority] of window[key] || []) {
    if (value) e.style.setProperty("-webkit-text-security", value, priority);
    else e.style.removeProperty("-webkit-text-security");
  }
  delete window[key];
})()"#;

/// The document as HTML, with the live values of form fields written into their `value`
/// attributes (what was typed is what helps), except password inputs, which keep none.
const DOM: &str = r#"(() => {
  const root = document.documentElement;
  if (!root) return "";
  const copy = root.cloneNode(true);
  const live = root.querySelectorAll("input, textarea");
  const copies = copy.querySelectorAll("input, textarea");
  live.forEach((e, i) => {
    const c = copies[i];
    if (!c) return;
    if (e.type === "password") c.removeAttribute("value");
    else if (e instanceof HTMLTextAreaElement) c.textContent = e.value;
    else c.setAttribute("value", e.value);
  });
  return "<!doctype html>\n" + copy.outerHTML;
})()"#;

/// A PNG of the viewport, fields holding a secret drawn as dots.
pub async fn screenshot(page: &Page, secrets: &Secrets) -> Result<Vec<u8>> {
    let masked = if secrets.is_empty() {
        false
    } else {
        let values = serde_json::to_string(secrets.values())?;
        let expression = format!("({MASK})({values})");
        cdp::evaluate(page, expression).await? != 0
    };
    let params = ScreenshotParams::builder()
        .format(CaptureScreenshotFormat::Png)
        .build();
    let png = page.screenshot(params).await;
    if masked {
        let _ = cdp::evaluate(page, UNMASK.to_string()).await;
    }
    Ok(png?)
}

/// The page's DOM, secrets redacted, cut at [`MAX_DOM_BYTES`].
pub async fn dom(page: &Page, secrets: &Secrets) -> Result<String> {
    let html = cdp::evaluate(page, DOM.to_string()).await?;
    let html = secrets.redact(html.as_str().unwrap_or_default());
    Ok(cut(html, MAX_DOM_BYTES))
}

/// `text` cut to at most `max` bytes on a character boundary, saying so at the end.
fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("\n<!-- cut by liveload: the DOM was larger -->");
    text
}

/// A screenshot and the DOM, each bounded in time; what could not be taken is left empty
/// (a page that crashed still leaves its error counted).
pub async fn both(page: &Page, secrets: &Secrets) -> (Vec<u8>, String) {
    let png = tokio::time::timeout(CAPTURE_TIMEOUT, screenshot(page, secrets)).await;
    let dom = tokio::time::timeout(CAPTURE_TIMEOUT, dom(page, secrets)).await;
    (
        png.ok().and_then(Result::ok).unwrap_or_default(),
        dom.ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| "(the page's DOM could not be read)".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Browser;
    use base64::Engine as _;

    /// The `/actionability` page, held still (its moving button stopped) so that two pictures
    /// of it differ only where the test changes something.
    async fn still_page() -> Browser {
        let b = Browser::launch().await;
        b.run(
            Duration::from_secs(5),
            "  - navigate: /actionability\n  - wait_for: '#late'\n",
        )
        .await
        .unwrap();
        b.eval("document.getElementById('moving').style.animation = 'none'")
            .await;
        b
    }

    /// The PNG's size as Chromium decodes it (`None` if it does not decode).
    async fn decoded_size(b: &Browser, png: &[u8]) -> serde_json::Value {
        let data = base64::engine::general_purpose::STANDARD.encode(png);
        b.eval(&format!(
            "new Promise((done) => {{ const i = new Image(); \
             i.onload = () => done([i.naturalWidth, i.naturalHeight]); \
             i.onerror = () => done(null); i.src = 'data:image/png;base64,{data}'; }})"
        ))
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_dom_dump_keeps_no_secret() {
        let b = still_page().await;
        let mut user = b.user(Duration::from_secs(5), Secrets::default());
        let steps = crate::testkit::steps(
            "  - eval: { js: \"'tok-SECRET-' + 42\", var: token, secret: true }
  - fill: { selector: '#password', value: pw-hunter2 }
  - fill: { selector: '#token', value: 'id {{token}}' }
  - fill: { selector: '#text', value: visible }
",
        );
        crate::steps::run_steps(&mut user, &steps).await.unwrap();
        assert_eq!(
            user.secrets.redact("pw-hunter2 / tok-SECRET-42"),
            "[secret] / [secret]",
            "a secret variable, and what was typed into a password input, are secrets"
        );
        let html = dom(b.page(), &user.secrets).await.unwrap();
        assert!(html.starts_with("<!doctype html>\n<html"), "{html}");
        assert!(
            html.contains(r#"id="token" type="text" value="id [secret]""#),
            "{html}"
        );
        assert!(
            html.contains(r#"id="text" type="text" value="visible""#),
            "typed values are kept"
        );
        assert!(
            !html.contains("hunter2") && !html.contains("SECRET"),
            "{html}"
        );
        b.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn screenshots_draw_secret_fields_as_dots_and_decode() {
        let b = still_page().await;
        let mut secrets = Secrets::default();
        secrets.add("WWWWWWWW");
        b.run(
            Duration::from_secs(5),
            "  - fill: { selector: '#token', value: WWWWWWWW }\n  - blur: '#token'\n",
        )
        .await
        .unwrap();
        let masked = screenshot(b.page(), &secrets).await.unwrap();
        let security = "getComputedStyle(document.getElementById('token')).webkitTextSecurity";
        assert_eq!(
            b.eval(security).await,
            "none",
            "the mask is taken off after"
        );
        let shown = screenshot(b.page(), &Secrets::default()).await.unwrap();
        assert_ne!(masked, shown, "without the secret, the text is drawn");
        // Another value of the same length, drawn as dots by hand, looks exactly the same.
        b.eval("const t = document.getElementById('token'); t.value = 'MMMMMMMM'; t.style.webkitTextSecurity = 'disc'")
            .await;
        let dots = screenshot(b.page(), &Secrets::default()).await.unwrap();
        assert!(masked == dots, "the secret field shows only dots");
        assert_eq!(
            decoded_size(&b, &masked).await,
            serde_json::json!([800, 600])
        );
        b.close().await;
    }

    #[test]
    fn long_doms_are_cut_on_a_character_boundary() {
        let text = "é".repeat(10);
        let out = cut(text, 5);
        assert!(out.starts_with("éé") && !out.starts_with("ééé"), "{out}");
        assert!(out.ends_with("larger -->"));
        assert_eq!(cut("short".into(), 10), "short");
    }
}
