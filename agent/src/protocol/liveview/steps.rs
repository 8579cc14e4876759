//! The browser's element steps, done the way LiveView's JS client would do them for a person
//! (see the module above): each waits, within its timeout, for its element to be present,
//! not `hidden` and not `disabled`, then acts through the socket.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use liveload_proto::{AssertCheck, ExtractFrom, StepKind, WaitCondition};
use serde_json::{Map, Value, json};

use super::LiveView;
use super::dom::{self, Element, Field};
use crate::protocol::{ProtocolUser, protocol_of};
use crate::recorder::Recorder;
use crate::steps::text::allowed_url;
use crate::steps::{UserState, fill_template, resolve_url, set_var};

/// Whether the liveview engine runs this step kind itself (the others are the engines'
/// shared steps, or refused at validation): [`StepKind::is_liveview_page_step`].
pub fn takes(kind: &StepKind) -> bool {
    kind.is_liveview_page_step()
}

/// Run one of the steps [`takes`] accepts.
pub async fn run_step(user: &mut UserState<'_>, kind: &StepKind) -> Result<()> {
    let t = |text: &str| fill_template(text, &user.vars);
    let (recorder, timeout) = (user.recorder, user.step_timeout);
    let step_timeout = |ms: &Option<u64>| ms.map_or(timeout, Duration::from_millis);
    let action = match kind {
        StepKind::Navigate { url } => {
            let url = allowed_url(&resolve_url(user.base_url, &t(url)), user.allow_schemes)?;
            return load(protocol_of(user)?, recorder, Some(url), timeout).await;
        }
        StepKind::Reload => return load(protocol_of(user)?, recorder, None, timeout).await,
        StepKind::Click { selector } => Action::Click(t(selector)),
        StepKind::Fill { selector, value } => Action::Enter(t(selector), t(value)),
        StepKind::Clear { selector } => Action::Enter(t(selector), String::new()),
        StepKind::Select { selector, value } => Action::Enter(t(selector), t(value)),
        StepKind::WaitFor {
            condition,
            timeout_ms,
        } => Action::Wait(fill_condition(condition, &t), step_timeout(timeout_ms)),
        StepKind::LiveviewSubmit {
            form,
            wait_for,
            timeout_ms,
        } => Action::Submit(
            t(form),
            wait_for.as_deref().map(t),
            step_timeout(timeout_ms),
        ),
        StepKind::Assert { check } => Action::Assert(fill_check(check, &t)),
        StepKind::Extract { selector, from, .. } => Action::Extract(t(selector), from.clone()),
        other => bail!("the liveview engine does not run {other:?}"),
    };
    let protocol = protocol_of(user)?;
    let mut view = protocol
        .liveview
        .take()
        .ok_or_else(|| anyhow!("no LiveView is open: `navigate` to one first"))?;
    let result = act(&mut view, (protocol, recorder), action, timeout).await;
    protocol.liveview = Some(view);
    match (result?, kind) {
        (Some(value), StepKind::Extract { var, secret, .. }) => set_var(user, var, value, *secret),
        (Some(typed), StepKind::Fill { .. }) => user.secrets.add(&typed),
        _ => {}
    }
    Ok(())
}

/// `navigate` (to `url`) or `reload` (`None`): load the page and join its view, replacing
/// the one open.
async fn load(
    protocol: &mut ProtocolUser,
    recorder: &Recorder,
    url: Option<String>,
    timeout: Duration,
) -> Result<()> {
    let old = protocol.liveview.take();
    let url = match (url, &old) {
        (Some(url), _) => url,
        (None, Some(view)) => view.url.clone(),
        (None, None) => bail!("nothing to reload: no LiveView is open"),
    };
    drop(old); // Closes its socket, as leaving a page does.
    protocol.liveview = Some(LiveView::load(protocol, recorder, &url, timeout).await?);
    Ok(())
}

/// A step's work, its templates filled.
enum Action {
    Click(String),
    /// `fill`, `clear`, `select`: a value for a field.
    Enter(String, String),
    Wait(WaitCondition, Duration),
    Submit(String, Option<String>, Duration),
    Assert(AssertCheck),
    Extract(String, ExtractFrom),
}

/// Do `action`; `Some` value for an extract (or a password typed, to redact).
async fn act(
    view: &mut LiveView,
    (protocol, recorder): (&mut ProtocolUser, &Recorder),
    action: Action,
    timeout: Duration,
) -> Result<Option<String>> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    // A navigation the last reply or a server push asked for comes first: every step acts
    // on the page the user is on.
    view.follow((protocol, recorder), deadline).await?;
    match action {
        Action::Click(selector) => {
            let element = ready(view, (protocol, recorder), &selector, timeout).await?;
            click(view, (protocol, recorder), (&selector, &element), left()).await?;
            Ok(None)
        }
        Action::Enter(selector, value) => {
            let element = ready(view, (protocol, recorder), &selector, timeout).await?;
            enter(view, recorder, (&selector, &element), &value, left()).await?;
            let password = element.attr("type") == Some("password");
            Ok(password.then_some(value))
        }
        Action::Wait(condition, timeout) => {
            let what = describe(&condition);
            let check = |html: &str, url: &str| holds(&condition, html, url);
            view.wait_until((protocol, recorder), &what, timeout, check)
                .await?;
            Ok(None)
        }
        Action::Submit(form, then, timeout) => {
            // The step's own timeout covers the submit and the wait after it.
            let deadline = Instant::now() + timeout;
            ready(view, (protocol, recorder), &form, timeout).await?;
            let html = view.html()?;
            let (form_element, fields) = dom::form(&html, &form, None)?
                .ok_or_else(|| anyhow!("no form matches '{form}'"))?;
            submit(view, recorder, (&form_element, &fields), timeout).await?;
            if let Some(then) = then {
                let condition = WaitCondition::Visible { selector: then };
                let check = |html: &str, url: &str| holds(&condition, html, url);
                let what = describe(&condition);
                let left = deadline.saturating_duration_since(Instant::now());
                view.wait_until((protocol, recorder), &what, left, check)
                    .await?;
            }
            Ok(None)
        }
        Action::Assert(check) => {
            assert(&view.html()?, &check)?;
            Ok(None)
        }
        Action::Extract(selector, from) => {
            let element = ready(view, (protocol, recorder), &selector, timeout).await?;
            Ok(Some(match from {
                ExtractFrom::Text => element.text.clone(),
                ExtractFrom::Attribute { name } => element.attr(&name).unwrap_or("").into(),
                ExtractFrom::Value => entered_value(view, &element),
            }))
        }
    }
}

/// Wait until `selector`'s first element is present, not hidden and not disabled.
async fn ready(
    view: &mut LiveView,
    protocol: (&mut ProtocolUser, &Recorder),
    selector: &str,
    timeout: Duration,
) -> Result<Element> {
    let mut found = None;
    let what = format!("'{selector}' present and enabled");
    view.wait_until(protocol, &what, timeout, |html, _| {
        found = dom::visible(html, selector)?.filter(|e| e.attr("disabled").is_none());
        Ok(found.is_some())
    })
    .await?;
    Ok(found.expect("the wait ended with it found"))
}

/// A click: the element's `phx-click`, live link, form submission or link.
async fn click(
    view: &mut LiveView,
    (protocol, recorder): (&mut ProtocolUser, &Recorder),
    (selector, element): (&str, &Element),
    timeout: Duration,
) -> Result<()> {
    if let Some(binding) = element.attr("phx-click") {
        if element.attr("phx-target").is_some() {
            bail!(
                "'{selector}' targets a component (phx-target): not supported by the liveview engine"
            );
        }
        let (event, value) = click_event(binding, element)?;
        let payload = json!({"type": "click", "event": event, "value": value});
        view.push(recorder, ("event", "liveview.event"), payload, timeout)
            .await?;
        return Ok(());
    }
    let href = element.attr("href").unwrap_or_default();
    match element.attr("data-phx-link") {
        Some("patch") => return view.live_patch(recorder, href, timeout).await,
        Some("redirect") => return view.live_redirect(recorder, href, timeout).await,
        _ => {}
    }
    // A button submits unless typed otherwise; an input only as `type=submit`.
    let submits = match element.tag.as_str() {
        "button" => element.attr("type").unwrap_or("submit") == "submit",
        "input" => element.attr("type") == Some("submit"),
        _ => false,
    };
    if submits {
        let html = view.html()?;
        if let Some((form, fields)) = dom::form(&html, "form", Some(selector))?
            && form.attr("phx-submit").is_some()
        {
            return submit(view, recorder, (&form, &fields), timeout).await;
        }
    }
    if element.tag == "a" && !href.is_empty() {
        let url = super::absolute(&view.url, href);
        *view = LiveView::load(protocol, recorder, &url, timeout).await?;
        return Ok(());
    }
    bail!(
        "'{selector}' has nothing LiveView acts on (no phx-click, live link, submit button of \
         a phx-submit form, or link): the liveview engine does not run the page's JavaScript"
    )
}

/// The event and value a `phx-click` pushes: its name with the element's `phx-value-*`, or a
/// `JS.push` command's event and value.
fn click_event(binding: &str, element: &Element) -> Result<(String, Value)> {
    let mut value: Map<String, Value> = element
        .attrs
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("phx-value-")?.to_string(), json!(v))))
        .collect();
    if !binding.trim_start().starts_with('[') {
        return Ok((binding.to_string(), Value::Object(value)));
    }
    let commands: Vec<(String, Value)> = serde_json::from_str(binding)
        .map_err(|_| anyhow!("phx-click '{binding}' is not a JS command list"))?;
    for (op, args) in commands {
        if op != "push" {
            bail!("phx-click runs JS command '{op}': only `push` runs without a browser");
        }
        if let Some(Value::Object(extra)) = args.get("value") {
            value.extend(extra.clone());
        }
        if let Some(event) = args["event"].as_str() {
            return Ok((event.to_string(), Value::Object(value)));
        }
    }
    bail!("phx-click '{binding}' pushes no event")
}

/// `fill`, `clear`, `select`: keep the value for the field; push the form's `phx-change`.
async fn enter(
    view: &mut LiveView,
    recorder: &Recorder,
    (selector, element): (&str, &Element),
    value: &str,
    timeout: Duration,
) -> Result<()> {
    if !matches!(element.tag.as_str(), "input" | "textarea" | "select") {
        bail!("'{selector}' is a <{}>, not a form field", element.tag);
    }
    if element.attr("readonly").is_some() {
        bail!("'{selector}' is read-only");
    }
    let name = element
        .attr("name")
        .ok_or_else(|| anyhow!("'{selector}' has no name: LiveView would not send it"))?;
    // A browser fires `input` (and LiveView pushes the change) only when the value changes.
    let before = entered_value(view, element);
    view.entered.insert(name.to_string(), value.to_string());
    if before == value {
        return Ok(());
    }
    let html = view.html()?;
    let form = dom::form(&html, "form", Some(selector))?;
    let change = element
        .attr("phx-change")
        .or_else(|| form.as_ref().and_then(|(f, _)| f.attr("phx-change")));
    if let (Some(event), Some((_, fields))) = (change, &form) {
        let value = serialize(fields, &view.entered, Some(name));
        let payload = json!({"type": "form", "event": event, "value": value, "meta": {}});
        view.push(recorder, ("event", "liveview.event"), payload, timeout)
            .await?;
    }
    Ok(())
}

/// Push a form's `phx-submit` with its fields; what the user entered in them is then the
/// server's to render.
async fn submit(
    view: &mut LiveView,
    recorder: &Recorder,
    (form, fields): (&Element, &[Field]),
    timeout: Duration,
) -> Result<()> {
    let event = form
        .attr("phx-submit")
        .ok_or_else(|| anyhow!("the form has no phx-submit: it is not a LiveView form"))?;
    let value = serialize(fields, &view.entered, None);
    let payload = json!({"type": "form", "event": event, "value": value, "meta": {}});
    view.push(recorder, ("event", "liveview.event"), payload, timeout)
        .await?;
    for field in fields {
        view.entered.remove(&field.name);
    }
    Ok(())
}

/// A form's fields URL-encoded as the browser submits them (unticked boxes and buttons left
/// out), the user's entries over the page's values, and `_target` for a change.
fn serialize(
    fields: &[Field],
    entered: &std::collections::HashMap<String, String>,
    target: Option<&str>,
) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for field in fields {
        let skip = matches!(
            field.kind.as_str(),
            "submit" | "button" | "image" | "reset" | "file"
        ) || (matches!(field.kind.as_str(), "checkbox" | "radio") && !field.checked);
        if !skip {
            let value = entered.get(&field.name).unwrap_or(&field.value);
            form.append_pair(&field.name, value);
        }
    }
    if let Some(target) = target {
        form.append_pair("_target", target);
    }
    form.finish()
}

/// A field's value: what the user entered, else what the page holds.
fn entered_value(view: &LiveView, element: &Element) -> String {
    element
        .attr("name")
        .and_then(|name| view.entered.get(name).cloned())
        .or_else(|| element.attr("value").map(str::to_string))
        .unwrap_or_else(|| element.text.clone())
}

/// Whether a wait's condition holds on the view.
fn holds(condition: &WaitCondition, html: &str, url: &str) -> Result<bool> {
    Ok(match condition {
        WaitCondition::Visible { selector } => dom::visible(html, selector)?.is_some(),
        WaitCondition::Hidden { selector } => dom::visible(html, selector)?.is_none(),
        WaitCondition::Text { text } => dom::text(html)?.contains(text.as_str()),
        WaitCondition::Url { pattern } => glob(pattern, url),
        // Joined (the view's HTML was readable) and no push in flight (each step awaits its
        // reply): connected and idle.
        WaitCondition::LiveviewConnected | WaitCondition::LiveviewIdle { .. } => true,
        WaitCondition::Js { .. } | WaitCondition::NetworkIdle { .. } => {
            bail!("this wait needs a browser (engine: browser)")
        }
    })
}

fn describe(condition: &WaitCondition) -> String {
    match condition {
        WaitCondition::Visible { selector } => format!("'{selector}' visible"),
        WaitCondition::Hidden { selector } => format!("'{selector}' hidden"),
        WaitCondition::Text { text } => format!("text '{text}'"),
        WaitCondition::Url { pattern } => format!("URL '{pattern}'"),
        _ => "the LiveView connected".to_string(),
    }
}

/// `*` matches any run of characters; the rest literally; the whole URL.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == text;
    }
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// `assert`, now.
fn assert(html: &str, check: &AssertCheck) -> Result<()> {
    match check {
        AssertCheck::Text { text } => {
            if !dom::text(html)?.contains(text.as_str()) {
                bail!("the page does not contain '{text}'");
            }
        }
        AssertCheck::Count { selector, count } => {
            let found = dom::query(html, selector)?.len() as u64;
            if found != *count {
                bail!("expected {count} elements matching '{selector}', found {found}");
            }
        }
        AssertCheck::Visible { selector } => {
            if dom::visible(html, selector)?.is_none() {
                bail!("'{selector}' is not visible");
            }
        }
    }
    Ok(())
}

fn fill_condition(condition: &WaitCondition, t: &impl Fn(&str) -> String) -> WaitCondition {
    match condition {
        WaitCondition::Visible { selector } => WaitCondition::Visible {
            selector: t(selector),
        },
        WaitCondition::Hidden { selector } => WaitCondition::Hidden {
            selector: t(selector),
        },
        WaitCondition::Text { text } => WaitCondition::Text { text: t(text) },
        WaitCondition::Url { pattern } => WaitCondition::Url {
            pattern: t(pattern),
        },
        other => other.clone(),
    }
}

fn fill_check(check: &AssertCheck, t: &impl Fn(&str) -> String) -> AssertCheck {
    match check {
        AssertCheck::Text { text } => AssertCheck::Text { text: t(text) },
        AssertCheck::Count { selector, count } => AssertCheck::Count {
            selector: t(selector),
            count: *count,
        },
        AssertCheck::Visible { selector } => AssertCheck::Visible {
            selector: t(selector),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_match_globs() {
        assert!(glob("*page=2", "http://h/lv?page=2"));
        assert!(glob("http://h/*", "http://h/lv"));
        assert!(glob("*/lv*", "http://h/lv/other"));
        assert!(!glob("*page=3", "http://h/lv?page=2"));
        assert!(!glob("a*a", "a"));
        assert!(glob("exact", "exact"));
    }

    #[test]
    fn forms_serialize_like_a_browser() {
        let field = |name: &str, value: &str, kind: &str, checked: bool| Field {
            name: name.into(),
            value: value.into(),
            kind: kind.into(),
            checked,
        };
        let fields = [
            field("note[text]", "", "text", false),
            field("note[kind]", "memo", "hidden", false),
            field("ok", "on", "checkbox", false),
            field("go", "", "submit", false),
        ];
        let entered = [("note[text]".to_string(), "hi there".to_string())].into();
        assert_eq!(
            serialize(&fields, &entered, Some("note[text]")),
            "note%5Btext%5D=hi+there&note%5Bkind%5D=memo&_target=note%5Btext%5D"
        );
    }

    #[test]
    fn clicks_push_their_values_or_a_js_push() {
        let element = Element {
            tag: "button".into(),
            attrs: [("phx-value-by".to_string(), "5".to_string())].into(),
            text: String::new(),
        };
        let (event, value) = click_event("inc", &element).unwrap();
        assert_eq!((event.as_str(), value), ("inc", json!({"by": "5"})));
        let js = r#"[["push",{"event":"save","value":{"x":1}}]]"#;
        let (event, value) = click_event(js, &element).unwrap();
        assert_eq!(
            (event.as_str(), value),
            ("save", json!({"by": "5", "x": 1}))
        );
        let err = click_event(r#"[["toggle",{}]]"#, &element).unwrap_err();
        assert!(err.to_string().contains("only `push`"), "{err}");
    }
}
