//! What each user's page does besides the steps: HTTP responses, WebSocket traffic, LiveView
//! messages, console errors and uncaught exceptions, read from Chromium's DevTools events.
//!
//! One small task per page turns events into counters and histograms in the shared recorder:
//! - `http.ttfb` (ms from sending the request to the response headers) and
//!   `http.status.2xx` ... `http.status.5xx`, `http.requests`;
//! - `ws.connections`, `ws.frames_sent`/`ws.frames_received`, `ws.bytes_sent`/`ws.bytes_received`;
//! - `liveview.joins`, `liveview.events` (messages a LiveView client pushes) and
//!   `liveview.replies` (the server's `phx_reply`);
//! - `browser.console_errors`, `browser.exceptions`.

use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::network::{
    EventResponseReceived, EventWebSocketCreated, EventWebSocketFrameReceived,
    EventWebSocketFrameSent,
};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use crate::recorder::Recorder;

/// Start watching `page`; the task ends when the page's event streams end or it is aborted.
pub async fn watch(page: &Page, recorder: Arc<Recorder>) -> anyhow::Result<JoinHandle<()>> {
    let mut responses = page.event_listener::<EventResponseReceived>().await?;
    let mut sockets = page.event_listener::<EventWebSocketCreated>().await?;
    let mut sent = page.event_listener::<EventWebSocketFrameSent>().await?;
    let mut received = page.event_listener::<EventWebSocketFrameReceived>().await?;
    let mut console = page.event_listener::<EventConsoleApiCalled>().await?;
    let mut exceptions = page.event_listener::<EventExceptionThrown>().await?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(event) = responses.next() => {
                    let response = &event.response;
                    recorder.count("http.requests", 1);
                    let class = match response.status {
                        100..=199 => "http.status.1xx",
                        200..=299 => "http.status.2xx",
                        300..=399 => "http.status.3xx",
                        400..=499 => "http.status.4xx",
                        _ => "http.status.5xx",
                    };
                    recorder.count(class, 1);
                    if let Some(timing) = &response.timing {
                        let ttfb_ms = timing.receive_headers_end - timing.send_start;
                        if ttfb_ms.is_finite() && ttfb_ms >= 0.0 && timing.send_start >= 0.0 {
                            recorder.latency("http.ttfb", Duration::from_secs_f64(ttfb_ms / 1000.0));
                        }
                    }
                }
                Some(_) = sockets.next() => recorder.count("ws.connections", 1),
                Some(event) = sent.next() => {
                    let payload = &event.response.payload_data;
                    recorder.count("ws.frames_sent", 1);
                    recorder.count("ws.bytes_sent", payload.len() as u64);
                    if payload.contains("\"phx_join\"") {
                        recorder.count("liveview.joins", 1);
                    } else if payload.contains(",\"event\",") {
                        recorder.count("liveview.events", 1);
                    }
                }
                Some(event) = received.next() => {
                    let payload = &event.response.payload_data;
                    recorder.count("ws.frames_received", 1);
                    recorder.count("ws.bytes_received", payload.len() as u64);
                    if payload.contains("\"phx_reply\"") {
                        recorder.count("liveview.replies", 1);
                    }
                }
                Some(event) = console.next() => {
                    if matches!(event.r#type, ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert) {
                        recorder.count("browser.console_errors", 1);
                    }
                }
                Some(_) = exceptions.next() => recorder.count("browser.exceptions", 1),
                else => break,
            }
        }
    }))
}
