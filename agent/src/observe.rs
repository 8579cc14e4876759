//! What each user's page does besides the steps: HTTP responses, WebSocket traffic, LiveView
//! messages, console errors and uncaught exceptions, read from Chromium's DevTools events.
//!
//! One small task per page turns events into counters and histograms in the shared recorder:
//! - `http.ttfb` (ms from sending the request to the response headers) and
//!   `http.status.2xx` ... `http.status.5xx`, `http.requests`;
//! - `ws.connections`, `ws.frames_sent`/`ws.frames_received`, `ws.bytes_sent`/`ws.bytes_received`;
//! - `liveview.joins`, `liveview.events` (events and patches a LiveView client pushes),
//!   `liveview.replies` (the server's replies to them), `liveview.diffs` and
//!   `liveview.diff_bytes`, and the latencies `liveview.join`, `liveview.event` and
//!   `liveview.patch` (a push to its reply), read from the socket's frames
//!   ([`LiveviewPushes`]), as the native LiveView client counts them;
//! - `liveview.connects`, `liveview.disconnects`, `liveview.reconnects` and the latency
//!   `liveview.page_loading` (LiveView's `phx:page-loading-start` to `-stop`), from a small
//!   observer script injected into every document that reports through `console.debug`;
//! - `http.duration` (ms from the request to the last byte);
//! - `page.lcp`, `page.cls`, `page.inp`: each document's Web Vitals, measured in the page by
//!   the same observer script (the `web-vitals` library's rules) and reported when the document
//!   is left or the user ends (`page.cls` in thousandths of the layout-shift score);
//! - `browser.console_errors`, `browser.exceptions`;
//! - `hosts.blocked`: requests the scenario's host rules blocked (`block_hosts:`,
//!   `allow_hosts:`), which Chromium fails as "blocked by the inspector".
//!
//! While a user is traced (`liveload try`), the console messages and exceptions are also kept
//! as text for the trace ([`Recorder::console_line`]).

use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::network::{
    BlockedReason, EventLoadingFailed, EventLoadingFinished, EventResponseReceived,
    EventWebSocketCreated, EventWebSocketFrameReceived, EventWebSocketFrameSent,
};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use crate::recorder::Recorder;

/// The prefix of the observer script's reports on the console.
const MARK: &str = "__liveload ";

/// Runs in every document before its own scripts: watches LiveView's connection class and its
/// page-loading events, and reports changes as `console.debug("__liveload ...")`.
const LIVEVIEW_OBSERVER: &str = r#"(() => {
  const report = (m) => console.debug("__liveload " + m);
  let connected = false, dropped = false, loadingSince = 0;
  const check = () => {
    const now = !!document.querySelector(".phx-connected");
    if (now === connected) return;
    connected = now;
    if (now) { report(dropped ? "lv-reconnect" : "lv-connect"); }
    else { dropped = true; report("lv-disconnect"); }
  };
  new MutationObserver(check).observe(document, { attributes: true, subtree: true, attributeFilter: ["class"] });
  window.addEventListener("phx:page-loading-start", () => { loadingSince = performance.now(); });
  window.addEventListener("phx:page-loading-stop", () => {
    if (loadingSince) { report("lv-loading " + (performance.now() - loadingSince)); loadingSince = 0; }
  });
})();"#;

/// A page's event watcher, running until [`finish`](PageWatcher::finish)ed.
pub struct PageWatcher {
    task: JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl PageWatcher {
    /// Have the page's document report its Web Vitals, count every event `page` sent so far,
    /// then stop. A user's last requests settle just
    /// before its context is closed, and their DevTools events are still on the pipe: stopping
    /// the watcher at once lost them (an open-model arrival lost the end of every visit). One
    /// command's round trip puts every event Chromium sent before its answer into the
    /// watcher's channels (one connection, in order); the watcher handles what is ready before
    /// it looks at the stop signal.
    pub async fn finish(self, page: &Page) {
        // The round trip also has the document report its Web Vitals.
        report_vitals(page).await;
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(FINISH_TIMEOUT, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// The longest [`PageWatcher::finish`] waits for the page's answer, then for the watcher.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs in every top-level web document (not in frames: a frame's paints are not the page's)
/// beside [`LIVEVIEW_OBSERVER`]: measures the document's Web
/// Vitals as Google's `web-vitals` library does and reports them as
/// `__liveload vitals DOC LCP CLS INP` (a random id of the document; milliseconds, score,
/// milliseconds; -1 for none yet):
/// - LCP: the start time of the last `largest-contentful-paint` entry;
/// - CLS: the largest session window of layout shifts without recent input (shifts less than
///   1 s apart, a window at most 5 s long);
/// - INP: of the interactions' longest event durations, the 98th percentile's (the largest
///   under 50 interactions); the first input counts even under the 16 ms threshold.
///
/// It reports 100 ms after a change (changes in between share the report), when the agent asks
/// (`__liveloadVitals()`, before a `navigate`, a `reload` and the end of the user) and on
/// `pagehide`. The agent keeps each document's last report and records it once, when the next
/// document reports or the page's watcher ends ([`Vitals`]). A document left by a click on a
/// link keeps its values as of its last report; Chromium drops console messages of a document
/// being unloaded, so `pagehide` cannot be relied on alone.
const VITALS_OBSERVER: &str = r#"(() => {
  if (window !== window.top || !/^https?:$/.test(location.protocol)) return;
  const doc = Math.random().toString(36).slice(2);
  let lcp = -1, cls = 0, session = 0, sessionStart = 0, lastShift = 0, pending = 0;
  const interactions = new Map();
  const inp = () => {
    const longest = [...interactions.values()].sort((a, b) => b - a);
    return longest.length ? longest[Math.min(longest.length - 1, Math.floor(longest.length / 50))] : -1;
  };
  const report = () => {
    clearTimeout(pending);
    pending = 0;
    console.debug("__liveload vitals " + doc + " " + lcp + " " + cls + " " + inp());
  };
  const changed = () => { if (!pending) pending = setTimeout(report, 100); };
  const observe = (type, handle, options) => {
    try {
      new PerformanceObserver((list) => { list.getEntries().forEach(handle); changed(); })
        .observe(Object.assign({ type, buffered: true }, options));
    } catch (e) {}
  };
  observe("largest-contentful-paint", (e) => { lcp = e.startTime; });
  observe("layout-shift", (e) => {
    if (e.hadRecentInput) return;
    if (session && (e.startTime - lastShift > 1000 || e.startTime - sessionStart > 5000)) session = 0;
    if (!session) sessionStart = e.startTime;
    session += e.value;
    lastShift = e.startTime;
    cls = Math.max(cls, session);
  });
  const interaction = (e) => {
    if (!e.interactionId) return;
    interactions.set(e.interactionId, Math.max(interactions.get(e.interactionId) || 0, e.duration));
  };
  observe("event", interaction, { durationThreshold: 16 });
  observe("first-input", interaction);
  addEventListener("pagehide", report, { capture: true });
  Object.defineProperty(window, "__liveloadVitals", { value: report });
})();"#;

/// Have the page's document report its Web Vitals now (before it is left).
pub async fn report_vitals(page: &Page) {
    let report = "window.__liveloadVitals && window.__liveloadVitals()";
    let _ = tokio::time::timeout(FINISH_TIMEOUT, page.evaluate(report)).await;
}

/// The Web Vitals of a page's current document, as last reported; recorded when the page
/// moves on to another document or stops being watched: one set per document.
#[derive(Default)]
struct Vitals {
    /// The document's id and its `[LCP, CLS, INP]`.
    current: Option<(String, [f64; 3])>,
}

impl Vitals {
    /// Take a report (`DOC LCP CLS INP`); the previous document's values are recorded when
    /// this one is another's. The page controls the text: anything unparsable is dropped.
    fn report(&mut self, recorder: &Recorder, text: &str) {
        let mut parts = text.split(' ');
        let Some(doc) = parts.next() else { return };
        let values: Vec<f64> = parts.map_while(|v| v.parse::<f64>().ok()).collect();
        let Ok(values) = <[f64; 3]>::try_from(values) else {
            return;
        };
        if doc.len() > 32 {
            return;
        }
        if self.current.as_ref().is_some_and(|(d, _)| d != doc) {
            self.record(recorder);
        }
        self.current = Some((doc.to_string(), values));
    }

    /// Record the current document's values: a latency for each it had.
    fn record(&mut self, recorder: &Recorder) {
        let Some((_, [lcp, cls, inp])) = self.current.take() else {
            return;
        };
        for (name, seconds) in [
            ("page.lcp", lcp / 1000.0),
            // The score, in thousandths: a latency of `cls` seconds reads as `cls * 1000` ms.
            ("page.cls", cls),
            ("page.inp", inp / 1000.0),
        ] {
            if let Some(value) = (seconds >= 0.0).then(|| page_seconds(seconds)).flatten() {
                recorder.latency(name, value);
            }
        }
    }
}

/// Start watching `page`, until the watcher is finished or the page's event streams end.
/// HTTP responses of recorded iterations (`recording`) also become trace records.
pub async fn watch(
    page: &Page,
    recorder: Arc<Recorder>,
    recording: Arc<crate::records::PageRecording>,
) -> anyhow::Result<PageWatcher> {
    page.evaluate_on_new_document(LIVEVIEW_OBSERVER).await?;
    page.evaluate_on_new_document(VITALS_OBSERVER).await?;
    let mut finished = page.event_listener::<EventLoadingFinished>().await?;
    let mut failed = page.event_listener::<EventLoadingFailed>().await?;
    let mut responses = page.event_listener::<EventResponseReceived>().await?;
    let mut sockets = page.event_listener::<EventWebSocketCreated>().await?;
    let mut sent = page.event_listener::<EventWebSocketFrameSent>().await?;
    let mut received = page.event_listener::<EventWebSocketFrameReceived>().await?;
    let mut console = page.event_listener::<EventConsoleApiCalled>().await?;
    let mut exceptions = page.event_listener::<EventExceptionThrown>().await?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // Request start times (seconds, the browser's monotonic clock), until the last byte.
        let mut in_flight: std::collections::HashMap<String, f64> = Default::default();
        let mut vitals = Vitals::default();
        let mut pushes = LiveviewPushes::default();
        loop {
            tokio::select! {
                // Events first: the stop signal is taken only once none is ready.
                biased;
                Some(event) = finished.next() => {
                    if let Some(sent) = in_flight.remove(event.request_id.inner())
                        && let Some(elapsed) = page_seconds(event.timestamp.inner() - sent)
                    {
                        recorder.latency("http.duration", elapsed);
                    }
                }
                Some(event) = failed.next() => {
                    in_flight.remove(event.request_id.inner());
                    if event.blocked_reason == Some(BlockedReason::Inspector) {
                        recorder.count("hosts.blocked", 1);
                    }
                }
                Some(event) = responses.next() => {
                    let response = &event.response;
                    if let Some(timing) = &response.timing
                        && in_flight.len() < 10_000
                    {
                        in_flight.insert(event.request_id.inner().clone(), timing.request_time);
                    }
                    recorder.count("http.requests", 1);
                    let class = match response.status {
                        100..=199 => "http.status.1xx",
                        200..=299 => "http.status.2xx",
                        300..=399 => "http.status.3xx",
                        400..=499 => "http.status.4xx",
                        _ => "http.status.5xx",
                    };
                    recorder.count(class, 1);
                    let mut ttfb = None;
                    if let Some(timing) = &response.timing {
                        let ttfb_ms = timing.receive_headers_end - timing.send_start;
                        if let Some(elapsed) = page_seconds(ttfb_ms / 1000.0)
                            && timing.send_start >= 0.0
                        {
                            recorder.latency("http.ttfb", elapsed);
                            ttfb = Some(elapsed);
                        }
                    }
                    if let Some((user, iteration)) = recording.current() {
                        let url = recording.url(&event.response.url);
                        record_response(&recorder, &event, (user, iteration), (ttfb, url));
                    }
                }
                Some(_) = sockets.next() => recorder.count("ws.connections", 1),
                Some(event) = sent.next() => {
                    let payload = &event.response.payload_data;
                    recorder.count("ws.frames_sent", 1);
                    recorder.count("ws.bytes_sent", payload.len() as u64);
                    let socket = event.request_id.inner();
                    pushes.sent(&recorder, socket, payload, *event.timestamp.inner());
                }
                Some(event) = received.next() => {
                    let payload = &event.response.payload_data;
                    recorder.count("ws.frames_received", 1);
                    recorder.count("ws.bytes_received", payload.len() as u64);
                    let socket = event.request_id.inner();
                    pushes.received(&recorder, socket, payload, *event.timestamp.inner());
                }
                Some(event) = console.next() => {
                    if recorder.traces_console()
                        && let Some(line) = console_text(&event)
                    {
                        recorder.console_line(line);
                    }
                    match event.r#type {
                        ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert => {
                            recorder.count("browser.console_errors", 1);
                        }
                        ConsoleApiCalledType::Debug => {
                            let text = event
                                .args
                                .first()
                                .and_then(|a| a.value.as_ref())
                                .and_then(|v| v.as_str())
                                .and_then(|s| s.strip_prefix(MARK));
                            match text {
                                Some("lv-connect") => recorder.count("liveview.connects", 1),
                                Some("lv-disconnect") => recorder.count("liveview.disconnects", 1),
                                Some("lv-reconnect") => recorder.count("liveview.reconnects", 1),
                                Some(other) if other.starts_with("vitals ") => {
                                    vitals.report(&recorder, &other["vitals ".len()..]);
                                }
                                Some(other) => {
                                    if let Some(elapsed) = other
                                        .strip_prefix("lv-loading ")
                                        .and_then(|ms| ms.parse::<f64>().ok())
                                        .and_then(|ms| page_seconds(ms / 1000.0))
                                    {
                                        recorder.latency("liveview.page_loading", elapsed);
                                    }
                                }
                                None => {}
                            }
                        }
                        _ => {}
                    }
                }
                Some(event) = exceptions.next() => {
                    recorder.count("browser.exceptions", 1);
                    if recorder.traces_console() {
                        let text = crate::steps::cdp::exception_text(&event.exception_details);
                        recorder.console_line(format!("exception: {text}"));
                    }
                }
                _ = &mut stopped => break,
                else => break,
            }
        }
        vitals.record(&recorder);
    });
    Ok(PageWatcher { task, stop })
}

/// A trace record of a response of a recorded iteration: its time to the headers, status and
/// URL (as [`PageRecording::url`](crate::records::PageRecording::url) gives it).
fn record_response(
    recorder: &Recorder,
    event: &EventResponseReceived,
    (user, iteration): (u64, u64),
    (ttfb, url): (Option<Duration>, String),
) {
    let response = &event.response;
    let status = u16::try_from(response.status).ok();
    recorder.records.push(liveload_proto::TraceRecord {
        t_ms: 0, // stamped by `push`
        user,
        iteration,
        kind: liveload_proto::RecordKind::Http,
        name: event.r#type.as_ref().to_string(),
        duration_ms: ttfb.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        ok: response.status < 400,
        status,
        url: Some(url),
        error: None,
    });
}

/// A console call as one line, `log: text 42` (`None` for the observer's own reports).
fn console_text(event: &EventConsoleApiCalled) -> Option<String> {
    let parts: Vec<String> = event
        .args
        .iter()
        .map(|arg| match (&arg.value, &arg.description) {
            (Some(serde_json::Value::String(text)), _) => text.clone(),
            (Some(value), _) => value.to_string(),
            (None, Some(description)) => description.clone(),
            (None, None) => format!("{:?}", arg.r#type).to_lowercase(),
        })
        .collect();
    let text = parts.join(" ");
    if text.starts_with(MARK) {
        return None;
    }
    let kind = format!("{:?}", event.r#type).to_lowercase();
    Some(format!("{kind}: {text}"))
}

/// A latency from a number of seconds the browser or the page reported, or `None` when it is
/// not one: negative, NaN, or past what a `Duration` holds. The page under test controls
/// some of these numbers (its console messages), and `Duration::from_secs_f64` panics on
/// them.
fn page_seconds(seconds: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One set of vitals per document, its last report's; a page's garbage is dropped.
    #[test]
    fn vitals_are_recorded_once_per_document() {
        let recorder = Recorder::default();
        let mut vitals = Vitals::default();
        for report in [
            "a 10 0 -1",
            "a 25 0.05 -1",
            "b 1e300 nope",
            "b 30 0 120",
            "c -1 0 -1",
        ] {
            vitals.report(&recorder, report);
        }
        vitals.record(&recorder);
        let taken = recorder.take(Duration::from_secs(1));
        let counts = |name: &str| -> u64 {
            let encoded = &taken.histograms[name].0;
            let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
                .deserialize(&mut &encoded[..])
                .unwrap();
            h.len()
        };
        assert_eq!(counts("page.lcp"), 2, "a and b; c painted nothing");
        assert_eq!(counts("page.cls"), 3);
        assert_eq!(counts("page.inp"), 1);
    }

    /// Regression (issue 12): a page logging `lv-loading 1e300` made the observer call
    /// `Duration::from_secs_f64(1e297)`, which panics; finite and non-negative was not enough.
    #[test]
    fn numbers_a_page_reports_never_panic() {
        assert_eq!(page_seconds(0.25), Some(Duration::from_millis(250)));
        for bad in [1e300 / 1000.0, f64::INFINITY, f64::NAN, -1.0, 2e19] {
            assert_eq!(page_seconds(bad), None, "{bad}");
        }
    }
}

/// A page's LiveView pushes awaiting their replies, read from its socket's frames (Phoenix's
/// serializer 2.0.0: `[join_ref, ref, topic, event, payload]`), so the browser engine times
/// `liveview.join` and `liveview.event` (`live_patch`: `liveview.patch`) as the native client
/// does: from the frame that pushed to the reply with its ref. Also counted: `liveview.joins`,
/// `liveview.events`, `liveview.replies`, and `liveview.diffs`/`liveview.diff_bytes` (the
/// messages carrying a diff).
#[derive(Default)]
struct LiveviewPushes {
    /// (socket, ref) -> (metric, sent at, the browser's monotonic seconds).
    waiting: std::collections::HashMap<(String, String), (&'static str, f64)>,
}

/// A frame as a channel message: its ref, event and payload (`None`: not one).
fn channel_message(payload: &str) -> Option<(String, String, serde_json::Value)> {
    if !payload.starts_with('[') {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    let [_, r#ref, _, event, body] =
        <[serde_json::Value; 5]>::try_from(value.as_array()?.clone()).ok()?;
    let r#ref = match r#ref {
        serde_json::Value::String(text) => text,
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    Some((r#ref, event.as_str()?.to_string(), body))
}

impl LiveviewPushes {
    fn sent(&mut self, recorder: &Recorder, socket: &str, payload: &str, at: f64) {
        let Some((r#ref, event, _)) = channel_message(payload) else {
            return;
        };
        let metric = match event.as_str() {
            "phx_join" => {
                recorder.count("liveview.joins", 1);
                "liveview.join"
            }
            "event" => {
                recorder.count("liveview.events", 1);
                "liveview.event"
            }
            "live_patch" => {
                recorder.count("liveview.events", 1);
                "liveview.patch"
            }
            _ => return,
        };
        // A page that never hears back (a socket closed, a join retried while reconnecting)
        // must not grow this without bound: pushes older than a minute are given up.
        if self.waiting.len() >= 1_000 {
            self.waiting.retain(|_, (_, sent)| at - *sent < 60.0);
        }
        if self.waiting.len() < 1_000 {
            self.waiting
                .insert((socket.to_string(), r#ref), (metric, at));
        }
    }

    fn received(&mut self, recorder: &Recorder, socket: &str, payload: &str, at: f64) {
        let Some((r#ref, event, body)) = channel_message(payload) else {
            return;
        };
        let diff = event == "diff" || body["response"].get("diff").is_some();
        if diff {
            recorder.count("liveview.diffs", 1);
            recorder.count("liveview.diff_bytes", payload.len() as u64);
        }
        if event != "phx_reply" {
            return;
        }
        let Some((metric, sent)) = self.waiting.remove(&(socket.to_string(), r#ref)) else {
            return; // A heartbeat's reply, or a push made before the watcher started.
        };
        if metric != "liveview.join" {
            recorder.count("liveview.replies", 1);
        }
        if let Some(elapsed) = page_seconds(at - sent) {
            recorder.latency(metric, elapsed);
        }
    }
}
