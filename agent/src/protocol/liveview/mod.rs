//! The native LiveView client (`engine: liveview`): a user is a Phoenix LiveView client
//! without a browser. It loads the page over HTTP (its cookies, the CSRF token in
//! `<meta name="csrf-token">`, the main view's `id`, `data-phx-session` and
//! `data-phx-static`), opens the socket (`/live/websocket?_csrf_token=…&vsn=2.0.0`, Phoenix's
//! default path), joins the view's topic (`lv:ID`), and then does what LiveView's bindings do
//! when a person acts on the page:
//!
//! - `click` on an element with `phx-click` pushes the event with its `phx-value-*` values;
//!   on a live link (`data-phx-link="patch"`/`"redirect"`) it patches or navigates live; on a
//!   form's submit button it submits the form (`phx-submit`); on a plain link it loads the
//!   page;
//! - `fill`, `clear` and `select` keep what the user entered for that field and, in a form
//!   with `phx-change`, push the change (with `_target`);
//! - `liveview_submit` pushes the form's `phx-submit` with its fields as the browser
//!   serializes them;
//! - `wait_for`, `assert` and `extract` read the HTML merged from the server's diffs
//!   ([`rendered`]) with CSS selectors ([`dom`]);
//! - `navigate` and `reload` load the page and join again; the server's own navigations
//!   (`push_patch`, `push_navigate`, `redirect`) are followed.
//!
//! It cannot run the page's JavaScript (hooks, `JS` commands other than `push`), and says so
//! when a step needs it. Metrics: `liveview.join` (join pushed to its reply), `liveview.event`
//! (an event pushed to its reply, which carries the diff), `liveview.patch`, counts
//! `liveview.joins`, `liveview.events`, `liveview.replies`, `liveview.diffs` and
//! `liveview.diff_bytes` (the diffs' messages), beside the page loads' `http.*`.

pub mod dom;
#[cfg(test)]
mod props;
pub mod rendered;
pub mod selector;
pub mod socket;
mod steps;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::protocol::ProtocolUser;
use crate::recorder::Recorder;
use socket::{LiveSocket, Navigation};

pub use steps::{run_step, takes};

/// The socket path Phoenix apps mount LiveView on (`socket "/live", Phoenix.LiveView.Socket`).
const SOCKET_PATH: &str = "/live/websocket";

/// A user's joined LiveView.
pub struct LiveView {
    socket: LiveSocket,
    /// The page's URL (patches change it).
    pub url: String,
    id: String,
    session: String,
    static_token: String,
    csrf: String,
    join_ref: String,
    joins: u64,
    /// What the user entered, by field name: a form's fields take these over what the
    /// page rendered.
    entered: HashMap<String, String>,
}

/// What the page's HTML says about its LiveView.
struct PageFacts {
    csrf: String,
    id: String,
    session: String,
    static_token: String,
}

/// The CSRF token and the main view of a page.
fn page_facts(html: &str, url: &str) -> Result<PageFacts> {
    let csrf = dom::query(html, "meta[name=csrf-token]")?
        .into_iter()
        .find_map(|m| m.attr("content").map(str::to_string))
        .ok_or_else(|| anyhow!("{url}: no <meta name=\"csrf-token\"> on the page"))?;
    let main = dom::query(html, "[data-phx-main]")?
        .into_iter()
        .chain(dom::query(html, "[data-phx-session]")?)
        .next()
        .ok_or_else(|| anyhow!("{url}: not a LiveView page (no element with data-phx-session)"))?;
    let attr = |name: &str| main.attr(name).unwrap_or_default().to_string();
    let id = attr("id");
    if id.is_empty() {
        bail!("{url}: the LiveView element has no id");
    }
    Ok(PageFacts {
        csrf,
        id,
        session: attr("data-phx-session"),
        static_token: attr("data-phx-static"),
    })
}

/// The socket's URL for a page: same origin, Phoenix's default path.
fn socket_url(page: &str, csrf: &str) -> Result<String> {
    let mut url = url::Url::parse(page).map_err(|e| anyhow!("{page}: {e}"))?;
    url.set_path(SOCKET_PATH);
    url.set_fragment(None);
    url.query_pairs_mut()
        .clear()
        .append_pair("_csrf_token", csrf)
        .append_pair("vsn", "2.0.0");
    Ok(url.into())
}

impl LiveView {
    /// Load `url`, open its socket and join its view.
    pub async fn load(
        protocol: &mut ProtocolUser,
        recorder: &Recorder,
        url: &str,
        timeout: Duration,
    ) -> Result<LiveView> {
        let deadline = Instant::now() + timeout;
        let request = protocol.client.get(url).timeout(timeout);
        let (status, _, html) = super::read_answer(request, recorder, Instant::now())
            .await
            .with_context(|| format!("GET {url}"))?;
        if status >= 400 {
            bail!("GET {url}: status {status}");
        }
        let facts = page_facts(&html, url)?;
        let socket_url = socket_url(url, &facts.csrf)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let stream = super::ws::open(protocol, &socket_url, left).await?;
        recorder.count("ws.connections", 1);
        let mut view = LiveView {
            socket: LiveSocket::start(stream),
            url: url.to_string(),
            id: facts.id,
            session: facts.session,
            static_token: facts.static_token,
            csrf: facts.csrf,
            join_ref: String::new(),
            joins: 0,
            entered: HashMap::new(),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        view.join(recorder, false, left).await?;
        Ok(view)
    }

    fn topic(&self) -> String {
        format!("lv:{}", self.id)
    }

    /// `phx_join` the view at `self.url` (`redirect`: a live navigation to it).
    async fn join(&mut self, recorder: &Recorder, redirect: bool, timeout: Duration) -> Result<()> {
        let r#ref = self.socket.next_ref();
        let topic = self.topic();
        {
            let mut state = self.socket.shared.lock();
            state.topic = topic.clone();
            state.join_ref = r#ref.clone();
            state.joining = Some(r#ref.clone());
            state.rendered = None;
            state.closed = None;
        }
        self.join_ref = r#ref.clone();
        let (url_key, other) = if redirect {
            ("redirect", "url")
        } else {
            ("url", "redirect")
        };
        let mut payload = json!({
            "params": {"_csrf_token": self.csrf, "_mounts": self.joins, "_mount_attempts": 0},
            "session": self.session,
            "static": self.static_token,
            "sticky": false,
        });
        payload[url_key] = Value::String(self.url.clone());
        payload.as_object_mut().expect("an object").remove(other);
        let sent = Instant::now();
        let reply = self
            .socket
            .call((&r#ref, &r#ref), (&topic, "phx_join"), payload, timeout)
            .await?;
        recorder.latency("liveview.join", sent.elapsed());
        recorder.count("liveview.joins", 1);
        self.joins += 1;
        self.entered.clear();
        self.flush(recorder);
        match reply {
            Ok(_) => Ok(()),
            Err(reason) => bail!("the server refused to join {} ({reason})", self.url),
        }
    }

    /// Push `event` and wait for its reply (timed as `metric`); follow a navigation the
    /// reply asks for.
    async fn push(
        &mut self,
        recorder: &Recorder,
        (event, metric): (&str, &str),
        payload: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let r#ref = self.socket.next_ref();
        let topic = self.topic();
        let join_ref = self.join_ref.clone();
        let sent = Instant::now();
        let reply = self
            .socket
            .call((&join_ref, &r#ref), (&topic, event), payload, timeout)
            .await?;
        recorder.latency(metric, sent.elapsed());
        recorder.count("liveview.events", 1);
        recorder.count("liveview.replies", 1);
        self.flush(recorder);
        let response =
            reply.map_err(|reason| anyhow!("the server refused '{event}' ({reason})"))?;
        for (key, navigation) in [
            ("live_patch", Navigation::Patch as fn(String) -> Navigation),
            ("live_redirect", Navigation::LiveRedirect),
            ("redirect", Navigation::Redirect),
        ] {
            if let Some(to) = response[key]["to"].as_str() {
                self.socket.shared.lock().navigation = Some(navigation(to.to_string()));
            }
        }
        Ok(response)
    }

    /// Count the diffs the socket's task received since the last flush.
    fn flush(&self, recorder: &Recorder) {
        let (diffs, bytes) = {
            let mut state = self.socket.shared.lock();
            (
                std::mem::take(&mut state.diffs),
                std::mem::take(&mut state.diff_bytes),
            )
        };
        if diffs > 0 {
            recorder.count("liveview.diffs", diffs);
            recorder.count("liveview.diff_bytes", bytes);
        }
    }

    /// The view's HTML now; an error when the view has ended or met a part of the diff
    /// format this client does not follow.
    fn html(&self) -> Result<Arc<str>> {
        let mut state = self.socket.shared.lock();
        if let Some(reason) = &state.closed {
            bail!("{reason}");
        }
        if let Some(what) = state.rendered.as_ref().and_then(|r| r.unsupported) {
            bail!("the page uses {what}, which the liveview engine cannot render");
        }
        Ok(state.html())
    }

    /// Wait until `check` holds on the view's HTML and URL, following the server's
    /// navigations meanwhile; `Err` after `timeout`, saying what was awaited.
    async fn wait_until(
        &mut self,
        (protocol, recorder): (&mut ProtocolUser, &Recorder),
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&str, &str) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let shared = self.socket.shared.clone();
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            self.follow((protocol, recorder), deadline).await?;
            if !Arc::ptr_eq(&shared, &self.socket.shared) {
                // A redirect loaded a new page: listen to its socket.
                continue;
            }
            let html = self.html()?;
            if check(&html, &self.url)? {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, changed).await.is_err() {
                bail!("{what} not reached within {timeout:?}");
            }
        }
    }

    /// Follow a navigation the server asked for, if any.
    pub(super) async fn follow(
        &mut self,
        (protocol, recorder): (&mut ProtocolUser, &Recorder),
        deadline: Instant,
    ) -> Result<()> {
        let navigation = self.socket.shared.lock().navigation.take();
        let left = deadline.saturating_duration_since(Instant::now());
        match navigation {
            None => Ok(()),
            Some(Navigation::Patch(to)) => {
                self.url = absolute(&self.url, &to);
                Ok(())
            }
            Some(Navigation::LiveRedirect(to)) => self.live_redirect(recorder, &to, left).await,
            Some(Navigation::Redirect(to)) => {
                let url = absolute(&self.url, &to);
                *self = LiveView::load(protocol, recorder, &url, left).await?;
                Ok(())
            }
        }
    }

    /// `live_patch`: the same view at a new URL.
    async fn live_patch(
        &mut self,
        recorder: &Recorder,
        href: &str,
        timeout: Duration,
    ) -> Result<()> {
        let url = absolute(&self.url, href);
        self.push(
            recorder,
            ("live_patch", "liveview.patch"),
            json!({"url": url}),
            timeout,
        )
        .await?;
        self.url = url;
        Ok(())
    }

    /// A live navigation: leave the view, join the one at `href` on the same socket.
    async fn live_redirect(
        &mut self,
        recorder: &Recorder,
        href: &str,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let r#ref = self.socket.next_ref();
        let (topic, join_ref) = (self.topic(), self.join_ref.clone());
        // The old view's leave is acknowledged or not: the new join does not wait on it.
        let leave = Duration::from_millis(500).min(timeout);
        let _ = self
            .socket
            .call((&join_ref, &r#ref), (&topic, "phx_leave"), json!({}), leave)
            .await;
        self.url = absolute(&self.url, href);
        let left = deadline.saturating_duration_since(Instant::now());
        self.join(recorder, true, left).await
    }
}

/// `href` against the page's URL.
fn absolute(base: &str, href: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(href))
        .map_or_else(|_| href.to_string(), String::from)
}
