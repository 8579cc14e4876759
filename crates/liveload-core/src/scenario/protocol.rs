//! Protocol users (`engine: http`, `engine: liveview`): their steps lowered, and each step
//! kept to its engine.
//!
//! A protocol user is its own HTTP client (connection pool and cookie jar, like a browser
//! context) and at most one WebSocket. It runs `request`, `extract` (from the last answer:
//! `json`, `header`, `regex`), `ws_connect`, `ws_send`, `ws_expect`, `ws_close`, and the
//! engine-neutral steps (`think`, `group`, `repeat`, `coordinate`, `halt`, `fail`). A browser
//! step in an `http` scenario, or a protocol step in a browser scenario, is an error at
//! validation with its line, never a user failing at run time.

use std::collections::BTreeMap;

use liveload_proto::{
    AnswerCheck, AnswerSource, AnswerValue, Engine, ExtractFrom, HttpBody, HttpRequest, Step,
    StepKind,
};
use serde_json::Value;

use super::lower::{Located, Lowered, Lowering};
use super::raw::{ExpectArg, ExtractArg, RequestArg, Statuses, WsConnectArg, WsExpectArg};

impl Lowering<'_> {
    /// `extract`: an element of the page (`selector`, with `attribute` or `value`), or a
    /// value of the last answer (`json`, `header` or `regex`, with `from`).
    pub(super) fn extract(&mut self, extract: ExtractArg) -> Result<Lowered, Located> {
        let answer = match (&extract.json, &extract.header, &extract.regex) {
            (Some(path), None, None) => Some(AnswerValue::Json { path: path.clone() }),
            (None, Some(name), None) => Some(AnswerValue::Header { name: name.clone() }),
            (None, None, Some(pattern)) => Some(AnswerValue::Regex {
                pattern: pattern.clone(),
            }),
            (None, None, None) => None,
            _ => {
                return Err(Located::new(
                    "extract reads one of json, header or regex",
                    "extract",
                ));
            }
        };
        let var = extract.var;
        match (extract.selector, answer) {
            (None, Some(value)) if extract.attribute.is_none() && !extract.value => {
                self.extract_answer(var, (value, extract.from, extract.secret))
            }
            (Some(selector), None) if extract.from.is_none() => {
                let from = match (extract.attribute, extract.value) {
                    (Some(name), false) => ExtractFrom::Attribute { name },
                    (None, true) => ExtractFrom::Value,
                    (None, false) => ExtractFrom::Text,
                    (Some(_), true) => {
                        return Err(Located::new(
                            "extract reads an attribute or the value, not both",
                            "extract",
                        ));
                    }
                };
                let selector = self.template(&selector)?;
                self.known.insert(var.clone());
                let kind = StepKind::Extract {
                    var: var.clone(),
                    selector,
                    from,
                    secret: extract.secret,
                };
                Ok((format!("extract {var}"), kind))
            }
            _ => Err(Located::new(
                "extract reads an element (selector, with attribute or value) or an answer \
                 (json, header or regex, with from), not both",
                "extract",
            )),
        }
    }

    /// `request`: method, URL, headers, body and expectations, every text templated.
    pub(super) fn request(&mut self, r: RequestArg) -> Result<Lowered, Located> {
        let method = r
            .method
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        if method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(Located::new(
                format!("request method '{method}' must be a word like GET or POST"),
                method,
            ));
        }
        let url = self.template(&r.url)?;
        let mut headers = Vec::with_capacity(r.headers.len());
        for (name, value) in r.headers {
            check_header(&name, &value)?;
            headers.push((name, self.template(&value)?));
        }
        let body = match (r.body, r.json, r.form) {
            (None, None, None) => HttpBody::None,
            (Some(text), None, None) => HttpBody::Text(self.template(&text)?),
            (None, Some(json), None) => HttpBody::Json(self.json_value(json)?),
            (None, None, Some(form)) => HttpBody::Form(self.pairs(form)?),
            _ => {
                return Err(Located::new(
                    "a request has one body: body, json or form",
                    "request",
                ));
            }
        };
        let expect = self.answer_check(r.expect.unwrap_or_default())?;
        let timeout_ms = self.timeout_ms(&r.timeout)?;
        let name = format!("{method} {}", r.url);
        let request = HttpRequest {
            method,
            url,
            headers,
            body,
            expect,
            timeout_ms,
        };
        Ok((name, StepKind::Request(Box::new(request))))
    }

    /// `expect:` of a request or a `ws_expect`.
    fn answer_check(&mut self, e: ExpectArg) -> Result<AnswerCheck, Located> {
        let status = match e.status {
            None => Vec::new(),
            Some(Statuses::One(s)) => vec![s],
            Some(Statuses::Many(list)) => list,
        };
        if let Some(bad) = status.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(Located::new(
                format!("expect.status {bad} is not an HTTP status (100 to 599)"),
                bad.to_string(),
            ));
        }
        let contains = e.contains.map(|t| self.template(&t)).transpose()?;
        let mut json = Vec::with_capacity(e.json.len());
        for (path, value) in e.json {
            liveload_proto::json_path::parse(&path).map_err(|m| Located::new(m, &path))?;
            json.push((path, self.json_value(value)?));
        }
        Ok(AnswerCheck {
            status,
            contains,
            json,
        })
    }

    /// `ws_connect`.
    pub(super) fn ws_connect(&mut self, a: WsConnectArg) -> Result<Lowered, Located> {
        let kind = StepKind::WsConnect {
            url: self.template(&a.url)?,
            timeout_ms: self.timeout_ms(&a.timeout)?,
        };
        Ok((format!("ws_connect {}", a.url), kind))
    }

    /// `ws_send`.
    pub(super) fn ws_send(&mut self, text: String) -> Result<Lowered, Located> {
        let kind = StepKind::WsSend {
            text: self.template(&text)?,
        };
        let shown: String = text.chars().take(40).collect();
        Ok((format!("ws_send {shown}"), kind))
    }

    /// `ws_expect`: what the awaited message holds.
    pub(super) fn ws_expect(&mut self, a: WsExpectArg) -> Result<Lowered, Located> {
        if a.contains.is_none() && a.json.is_empty() {
            return Err(Located::new(
                "ws_expect needs `contains:` or `json:` (any message would do otherwise)",
                "ws_expect",
            ));
        }
        let name = match &a.contains {
            Some(text) => format!("ws_expect {}", text.chars().take(40).collect::<String>()),
            None => "ws_expect".to_string(),
        };
        let timeout_ms = self.timeout_ms(&a.timeout)?;
        let expect = self.answer_check(ExpectArg {
            status: None,
            contains: a.contains,
            json: a.json,
        })?;
        Ok((name, StepKind::WsExpect { expect, timeout_ms }))
    }

    /// `extract` with `json`, `header` or `regex`: a value of the last answer.
    pub(super) fn extract_answer(
        &mut self,
        var: String,
        (value, from, secret): (AnswerValue, Option<AnswerSource>, bool),
    ) -> Result<Lowered, Located> {
        match &value {
            AnswerValue::Json { path } => {
                liveload_proto::json_path::parse(path).map_err(|m| Located::new(m, path))?;
            }
            AnswerValue::Header { name } => check_header(name, "")?,
            AnswerValue::Regex { pattern } => {
                regex::Regex::new(pattern).map_err(|e| {
                    Located::new(
                        format!("extract.regex is not a valid expression: {e}"),
                        pattern,
                    )
                })?;
            }
        }
        let from = from.unwrap_or_default();
        if from == AnswerSource::Ws && matches!(value, AnswerValue::Header { .. }) {
            return Err(Located::new(
                "a WebSocket message has no headers: extract.header reads the last HTTP answer",
                "header",
            ));
        }
        self.known.insert(var.clone());
        let kind = StepKind::ExtractAnswer {
            var: var.clone(),
            from,
            value,
            secret,
        };
        Ok((format!("extract {var}"), kind))
    }

    /// A JSON value from the file, each string in it templated.
    fn json_value(&mut self, value: Value) -> Result<Value, Located> {
        Ok(match value {
            Value::String(text) => Value::String(self.template(&text)?),
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|v| self.json_value(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| Ok((k, self.json_value(v)?)))
                    .collect::<Result<_, Located>>()?,
            ),
            other => other,
        })
    }

    /// Name-value pairs, the values templated.
    fn pairs(&mut self, map: BTreeMap<String, String>) -> Result<Vec<(String, String)>, Located> {
        map.into_iter()
            .map(|(k, v)| Ok((k, self.template(&v)?)))
            .collect()
    }
}

/// A header's name is an HTTP token and its value, as written, holds no line break. (A value
/// a template fills at run time is checked by the agent's HTTP client, which refuses one.)
fn check_header(name: &str, value: &str) -> Result<(), Located> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(Located::new(format!("'{name}' is not a header name"), name));
    }
    if value.contains(['\r', '\n']) {
        return Err(Located::new(
            format!("header {name}: a value cannot hold a line break"),
            name,
        ));
    }
    Ok(())
}

/// Whether a step kind runs in `engine` (steps inside groups and repeats are checked by the
/// walker below).
fn runs_in(engine: Engine, kind: &StepKind) -> bool {
    let protocol = matches!(
        kind,
        StepKind::Request(_)
            | StepKind::ExtractAnswer { .. }
            | StepKind::WsConnect { .. }
            | StepKind::WsSend { .. }
            | StepKind::WsExpect { .. }
            | StepKind::WsClose
    );
    let neutral = matches!(
        kind,
        StepKind::Think { .. }
            | StepKind::Group { .. }
            | StepKind::Repeat { .. }
            | StepKind::Coordinate { .. }
            | StepKind::Halt
            | StepKind::Fail { .. }
    );
    match engine {
        Engine::Browser => !protocol,
        Engine::Http => neutral || protocol,
        Engine::Liveview => neutral || protocol || kind.is_liveview_page_step(),
    }
}

/// Every step of `lists`, nested ones included, runs in `engine`; else the first that does
/// not, located by its name.
pub(super) fn check_engine(engine: Engine, lists: [&[Step]; 3]) -> Result<(), Located> {
    fn walk(engine: Engine, steps: &[Step]) -> Result<(), Located> {
        for step in steps {
            if !runs_in(engine, &step.kind) {
                let (what, fix) = match engine {
                    Engine::Http => (
                        "a browser step",
                        "an `engine: http` user has no page: use request, extract (json, \
                         header, regex) and ws_* steps",
                    ),
                    Engine::Liveview => (
                        "a step that needs a browser",
                        "an `engine: liveview` user runs navigate, reload, click, fill, clear, \
                         select, wait_for (not js or network_idle), liveview_submit, \
                         liveview_connected, liveview_idle, assert, extract and the http \
                         engine's steps; use `engine: browser` for the rest",
                    ),
                    Engine::Browser => (
                        "a protocol step",
                        "request, ws_* and extract from an answer need `engine: http` or \
                         `engine: liveview`",
                    ),
                };
                // The kind's keyword finds the step in the file (default names start with it).
                let first = step.name.split(' ').next().unwrap_or_default();
                let needle = match &step.kind {
                    StepKind::Request(_) => "request",
                    _ if super::STEP_KINDS.contains(&first) => first,
                    _ => step.name.as_str(),
                };
                return Err(Located::new(
                    format!("step '{}' is {what}: {fix}", step.name),
                    needle.to_string(),
                ));
            }
            if let StepKind::Group { steps } | StepKind::Repeat { steps, .. } = &step.kind {
                walk(engine, steps)?;
            }
        }
        Ok(())
    }
    lists.into_iter().try_for_each(|steps| walk(engine, steps))
}
