//! The LiveView socket: Phoenix channels' message format (serializer 2.0.0, each message a
//! JSON array `[join_ref, ref, topic, event, payload]`) and the LiveView channel's events:
//!
//! - `phoenix` `heartbeat` → `phx_reply` `{status: ok}`;
//! - `lv:ID` `phx_join` (`url`, or `redirect` for a live navigation; `session` must be the
//!   page's token for that id and this socket's session) → `{rendered, liveview_version}`, or
//!   `{status: error, response: {reason: unauthorized}}`;
//! - `event` (`type: click`, `event: inc`, `value: {by}`; `type: form`, `event: validate` or
//!   `save`, `value`: the URL-encoded form) → `{diff}` with what changed (a save after
//!   [`SAVE_TIME`]); `event: leave` → `{live_redirect: {to: "/lv/other"}}`;
//! - `live_patch` (`url`) → `{diff}` of the page number;
//! - `phx_leave` → ok;
//! - a view whose URL asked for `tick=1` is pushed `diff` messages (no ref) every second, as a
//!   server's `handle_info` would.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use serde_json::{Value, json};

use super::render::{Kind, View, escape, page_of};
use super::{LIVEVIEW_VERSION, Stats, session_token};

/// How long the server takes to save a note.
pub(crate) const SAVE_TIME: Duration = Duration::from_millis(100);

/// A joined view: its join reference (echoed on its pushes) and state.
struct Joined {
    join_ref: Value,
    view: View,
    ticking: bool,
}

/// One socket's views and session.
struct Channel {
    sid: u64,
    stats: Arc<Stats>,
    views: HashMap<String, Joined>,
    other_visits: u64,
}

/// Serve one socket until it closes.
pub(super) async fn serve(mut ws: WebSocket, sid: u64, stats: Arc<Stats>) {
    let mut channel = Channel {
        sid,
        stats,
        views: HashMap::new(),
        other_visits: 0,
    };
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let outgoing = tokio::select! {
            message = ws.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                // Saving takes the server a while (a database write): both clients' latencies
                // must show it.
                if text.contains(r#""event":"save""#) {
                    tokio::time::sleep(SAVE_TIME).await;
                }
                channel.handle(&text).into_iter().collect()
            }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            // Only a socket with a ticking view wakes every second (thousands sit idle).
            _ = ticks.tick(), if channel.views.values().any(|joined| joined.ticking) => channel.tick(),
        };
        for message in outgoing {
            if ws.send(Message::text(message.to_string())).await.is_err() {
                return;
            }
        }
    }
}

/// `[join_ref, ref, topic, "phx_reply", {status, response}]`.
fn reply(join_ref: &Value, r#ref: &Value, topic: &str, status: &str, response: Value) -> Value {
    json!([join_ref, r#ref, topic, "phx_reply", {"status": status, "response": response}])
}

impl Channel {
    /// The answer to one client message, if any (a message that is not a channel message is
    /// ignored, as Phoenix's serializer would fail it).
    fn handle(&mut self, text: &str) -> Option<Value> {
        let message: Value = serde_json::from_str(text).ok()?;
        let [join_ref, r#ref, topic, event, payload] = message.as_array()?.as_slice() else {
            return None;
        };
        let (topic, event) = (topic.as_str()?, event.as_str()?);
        if topic == "phoenix" && event == "heartbeat" {
            Stats::bump(&self.stats.heartbeats);
            return Some(reply(&Value::Null, r#ref, topic, "ok", json!({})));
        }
        if event == "phx_join" {
            return Some(self.join(join_ref, r#ref, topic, payload));
        }
        let Some(joined) = self.views.get_mut(topic) else {
            return Some(reply(
                join_ref,
                r#ref,
                topic,
                "error",
                json!({"reason": "unmatched topic"}),
            ));
        };
        let answer = match event {
            "event" => event_diff(&mut joined.view, payload, &self.stats),
            "live_patch" => {
                let url = payload["url"].as_str().unwrap_or_default();
                joined.view.page = page_of(url.split_once('?').map_or("", |(_, q)| q));
                Stats::bump(&self.stats.patches);
                Ok(json!({"diff": {"1": joined.view.page.to_string()}}))
            }
            "phx_leave" => {
                self.views.remove(topic);
                Stats::bump(&self.stats.leaves);
                Ok(json!({}))
            }
            _ => Err("unknown event"),
        };
        Some(match answer {
            Ok(response) => reply(join_ref, r#ref, topic, "ok", response),
            Err(reason) => reply(join_ref, r#ref, topic, "error", json!({"reason": reason})),
        })
    }

    /// `phx_join`: mount the view the URL names, if the session token is this page's.
    fn join(&mut self, join_ref: &Value, r#ref: &Value, topic: &str, payload: &Value) -> Value {
        let id = topic.strip_prefix("lv:").unwrap_or_default();
        let session_ok = payload["session"].as_str() == Some(&session_token(id, self.sid));
        let url = payload["url"].as_str().or(payload["redirect"].as_str());
        let (Some(url), true) = (url, session_ok) else {
            return reply(
                join_ref,
                r#ref,
                topic,
                "error",
                json!({"reason": "unauthorized"}),
            );
        };
        let path = url.split_once("://").map_or(url, |(_, rest)| {
            rest.find('/').map_or("/", |slash| &rest[slash..])
        });
        if View::mount(path, 0).kind == Kind::Other {
            self.other_visits += 1;
        }
        let view = View::mount(path, self.other_visits);
        Stats::bump(&self.stats.joins);
        let response = json!({"rendered": view.rendered(), "liveview_version": LIVEVIEW_VERSION});
        let ticking = path.contains("tick=1");
        self.views.insert(
            topic.to_string(),
            Joined {
                join_ref: join_ref.clone(),
                view,
                ticking,
            },
        );
        reply(join_ref, r#ref, topic, "ok", response)
    }

    /// A `diff` push to every ticking view.
    fn tick(&mut self) -> Vec<Value> {
        self.views
            .iter_mut()
            .filter(|(_, joined)| joined.ticking)
            .map(|(topic, joined)| {
                joined.view.tick += 1;
                let diff = json!({"6": joined.view.tick_text()});
                json!([joined.join_ref, null, topic, "diff", diff])
            })
            .collect()
    }
}

/// An `event` push: what changed, or why it was refused.
fn event_diff(view: &mut View, payload: &Value, stats: &Stats) -> Result<Value, &'static str> {
    let (kind, name) = (payload["type"].as_str(), payload["event"].as_str());
    match (kind, name) {
        (Some("click"), Some("inc")) => {
            let by = match &payload["value"]["by"] {
                Value::String(text) => text.parse().unwrap_or(1),
                Value::Number(n) => n.as_u64().unwrap_or(1),
                _ => 1,
            };
            view.count += by;
            Stats::bump(&stats.clicks);
            Ok(json!({"diff": {"0": view.count.to_string()}}))
        }
        (Some("click"), Some("leave")) => {
            // The server navigates the client, as `push_navigate` in an event handler does.
            Ok(json!({"live_redirect": {"kind": "push", "to": "/lv/other"}}))
        }
        (Some("form"), Some("validate")) => {
            view.typed = form_field(payload["value"].as_str().unwrap_or_default(), "note[text]");
            Stats::bump(&stats.changes);
            Ok(json!({"diff": {"3": view.typed.chars().count().to_string()}}))
        }
        (Some("form"), Some("save")) => {
            let value = payload["value"].as_str().unwrap_or_default();
            if form_field(value, "note[kind]") != "memo" {
                return Err("the form's hidden field is missing");
            }
            let text = form_field(value, "note[text]");
            view.saved.push(text.clone());
            view.typed.clear();
            Stats::bump(&stats.saves);
            let diff = json!({"2": "", "3": "0", "4": escape(&text), "5": view.notes()});
            Ok(json!({"diff": diff}))
        }
        _ => Err("unknown event"),
    }
}

/// One field of a URL-encoded form (empty when absent).
fn form_field(encoded: &str, name: &str) -> String {
    encoded
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| decode(key) == name)
        .map(|(_, value)| decode(value))
        .unwrap_or_default()
}

/// Percent-decoding with `+` as a space.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        let form = "note%5Btext%5D=hi+there%21&note%5Bkind%5D=memo&bad=%zz%";
        assert_eq!(form_field(form, "note[text]"), "hi there!");
        assert_eq!(form_field(form, "note[kind]"), "memo");
        assert_eq!(form_field(form, "bad"), "%zz%");
        assert_eq!(form_field(form, "absent"), "");
    }
}
