//! Scenario files: what simulated users do, in YAML.
//!
//! ```yaml
//! name: checkout
//! base_url: http://127.0.0.1:8080
//! users: 20
//! duration: 30s
//! iteration_timeout: 20s
//! data: { file: users.csv }          # columns become {{variables}}; user u gets row u % rows
//! steps:
//!   - navigate: /login
//!   - fill: { selector: "#email", value: "{{email}}" }
//!   - click: "#submit"
//!   - wait_for: { text: "Welcome" }
//!   - name: open cart                # any step can be named (its metric: step:<name>)
//!     click: "a.cart"
//!   - think: 1s..3s
//! ```
//!
//! Every error names the file, line and column, and says what was expected. Structural errors
//! (an unknown step, a wrong type, a missing field) carry the parser's own position; errors
//! found after parsing (a bad duration, an unknown `{{variable}}`) are located at the first line
//! holding the offending text.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use liveload_proto::{AssertCheck, DataTable, ExtractFrom, Step, StepKind, WaitCondition};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::{Error, Result};

/// A parsed, validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The scenario's name: names the run, the lock, the report.
    pub name: String,
    /// Base URL that relative step URLs join.
    pub base_url: String,
    /// Users to simulate (overridden by `--users`).
    pub users: u64,
    /// How long users iterate.
    pub duration: Duration,
    /// The longest one iteration may take.
    pub iteration_timeout: Duration,
    /// The longest an element action waits for its element.
    pub step_timeout: Duration,
    /// The steps of one iteration.
    pub steps: Vec<Step>,
    /// Per-user data from a CSV file.
    pub data: Option<DataTable>,
    /// Pass/fail criteria.
    pub thresholds: Vec<crate::threshold::Threshold>,
    /// How users arrive.
    pub load: Load,
    /// Cluster-wide limits on iterations.
    pub throttle: Throttle,
}

/// How users arrive (the workload model).
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// `users` users loop over the steps until the duration ends; their starts are spread
    /// evenly over `ramp_up` (all at once without it).
    Closed {
        /// Time over which users start.
        ramp_up: Option<Duration>,
        /// Start users in this many equal batches over `ramp_up` (a staircase) instead of one by
        /// one; `None` ramps smoothly.
        ramp_steps: Option<u32>,
    },
    /// Arrivals per second, cluster-wide, each running the steps once as a new visitor.
    Open {
        /// Arrivals per second at the start.
        rate: f64,
        /// Arrivals per second at the end of the duration (a linear ramp); `None` keeps `rate`.
        ramp_to: Option<f64>,
        /// Most arrivals in progress at once, cluster-wide (also what the cluster is sized
        /// for); arrivals beyond are dropped and counted as `arrivals_dropped`.
        max_users: u64,
    },
}

/// Cluster-wide limits on iterations; each node enforces its share (by its share of users),
/// so the cluster never goes above the limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Throttle {
    /// At most `limit` iteration starts per `per`.
    pub rate: Option<(u64, Duration)>,
    /// At least this long between two iteration starts.
    pub interarrival: Option<Duration>,
    /// At most this many iterations at once.
    pub parallelism: Option<u64>,
}

impl Scenario {
    /// A scenario with defaults around `steps` (for code that builds scenarios directly).
    pub fn new(name: &str, base_url: &str, steps: Vec<Step>) -> Scenario {
        Scenario {
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            users: 1,
            duration: Duration::from_secs(30),
            iteration_timeout: Duration::from_secs(30),
            step_timeout: Duration::from_secs(10),
            steps,
            data: None,
            thresholds: Vec::new(),
            load: Load::Closed {
                ramp_up: None,
                ramp_steps: None,
            },
            throttle: Throttle::default(),
        }
    }
}

/// Variables every user has.
pub const BUILTIN_VARIABLES: [&str; 2] = ["user_id", "iteration"];

/// The step kinds, as written in scenario files.
pub const STEP_KINDS: &[&str] = &[
    "navigate",
    "reload",
    "click",
    "fill",
    "clear",
    "press",
    "check",
    "uncheck",
    "select",
    "hover",
    "focus",
    "blur",
    "wait_for",
    "liveview_connected",
    "liveview_idle",
    "liveview_submit",
    "assert",
    "extract",
    "think",
    "eval",
    "group",
    "repeat",
    "halt",
    "fail",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    base_url: String,
    #[serde(default)]
    users: Option<u64>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    iteration_timeout: Option<String>,
    #[serde(default)]
    step_timeout: Option<String>,
    #[serde(default)]
    think_time: Option<String>,
    #[serde(default)]
    data: Option<RawData>,
    #[serde(default)]
    thresholds: Vec<StringOrMap<RawThreshold>>,
    #[serde(default)]
    load: Option<RawLoad>,
    #[serde(default)]
    throttle: Option<RawThrottle>,
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    model: RawModel,
    #[serde(default)]
    ramp_up: Option<String>,
    #[serde(default)]
    ramp_steps: Option<u32>,
    #[serde(default)]
    rate: Option<f64>,
    #[serde(default)]
    ramp_to: Option<f64>,
    #[serde(default)]
    max_users: Option<u64>,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum RawModel {
    Closed,
    Open,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    #[serde(default)]
    rate: Option<String>,
    #[serde(default)]
    interarrival: Option<String>,
    #[serde(default)]
    parallelism: Option<u64>,
}

/// `- "p95(step:x) < 1s"` or `- { expr: "...", abort_on_fail: true }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    expr: String,
    #[serde(default)]
    abort_on_fail: bool,
}

impl Shorthand for RawThreshold {
    fn from_string(expr: String) -> Self {
        RawThreshold {
            expr,
            abort_on_fail: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    file: String,
}

/// One step as written: an optional `name:` and exactly one kind key.
struct RawStep {
    name: Option<String>,
    kind: RawKind,
}

enum RawKind {
    Navigate(String),
    Reload,
    Click(String),
    Fill(FieldValue),
    Clear(String),
    Press(PressArg),
    Check(String),
    Uncheck(String),
    Select(FieldValue),
    Hover(String),
    Focus(String),
    Blur(String),
    WaitFor(WaitArg),
    LiveviewConnected,
    LiveviewIdle(Option<String>),
    LiveviewSubmit(SubmitArg),
    Assert(AssertArg),
    Extract(ExtractArg),
    Think(Option<String>),
    Eval(EvalArg),
    Group(GroupArg),
    Repeat(RepeatArg),
    Halt,
    Fail(Option<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldValue {
    selector: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PressArg {
    key: String,
    #[serde(default)]
    selector: Option<String>,
}

/// `wait_for: "#sel"` (visible) or `wait_for: {selector|text|url|network_idle, state, timeout}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WaitArg {
    #[serde(default)]
    selector: Option<String>,
    #[serde(default)]
    state: Option<WaitState>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    network_idle: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum WaitState {
    Visible,
    Hidden,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitArg {
    form: String,
    #[serde(default)]
    wait_for: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertArg {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    selector: Option<String>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    visible: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtractArg {
    var: String,
    selector: String,
    #[serde(default)]
    attribute: Option<String>,
    #[serde(default)]
    value: bool,
}

/// `eval: "js"` or `eval: {js, var}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvalArg {
    js: String,
    #[serde(default)]
    var: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupArg {
    name: String,
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepeatArg {
    times: u32,
    steps: Vec<RawStep>,
}

/// A value written either as a plain string (the common case) or as a map (the full form).
trait Shorthand: for<'de> Deserialize<'de> {
    fn from_string(text: String) -> Self;
}

impl Shorthand for WaitArg {
    fn from_string(selector: String) -> Self {
        WaitArg {
            selector: Some(selector),
            ..Default::default()
        }
    }
}

impl Shorthand for EvalArg {
    fn from_string(js: String) -> Self {
        EvalArg { js, var: None }
    }
}

/// Deserialises a [`Shorthand`] from a string or a map; errors inside the map keep their
/// position because the map is read straight from the YAML stream.
struct StringOrMap<T>(T);

impl<'de, T: Shorthand> Deserialize<'de> for StringOrMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Shorthand> Visitor<'de> for V<T> {
            type Value = StringOrMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a map")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(StringOrMap(T::from_string(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(StringOrMap)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for RawStep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StepVisitor)
    }
}

struct StepVisitor;

impl<'de> Visitor<'de> for StepVisitor {
    type Value = RawStep;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a step, like `- navigate: /` or `- reload`")
    }

    /// Steps without an argument: `- reload`, `- halt`.
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RawStep, E> {
        let kind = match v {
            "reload" => RawKind::Reload,
            "liveview_connected" => RawKind::LiveviewConnected,
            "liveview_idle" => RawKind::LiveviewIdle(None),
            "think" => RawKind::Think(None),
            "halt" => RawKind::Halt,
            "fail" => RawKind::Fail(None),
            known if STEP_KINDS.contains(&known) => {
                return Err(E::custom(format!(
                    "step '{known}' needs an argument, e.g. `- {known}: ...`"
                )));
            }
            other => return Err(E::unknown_variant(other, STEP_KINDS)),
        };
        Ok(RawStep { name: None, kind })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawStep, A::Error> {
        let mut name = None;
        let mut kind = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "name" {
                name = Some(map.next_value::<String>()?);
                continue;
            }
            if kind.is_some() {
                return Err(de::Error::custom(format!(
                    "one step per list item: '{key}' follows another step kind; start it with '- '"
                )));
            }
            kind = Some(match key.as_str() {
                "navigate" => RawKind::Navigate(map.next_value()?),
                "reload" => {
                    map.next_value::<de::IgnoredAny>()?;
                    RawKind::Reload
                }
                "click" => RawKind::Click(map.next_value()?),
                "fill" => RawKind::Fill(map.next_value()?),
                "clear" => RawKind::Clear(map.next_value()?),
                "press" => RawKind::Press(map.next_value()?),
                "check" => RawKind::Check(map.next_value()?),
                "uncheck" => RawKind::Uncheck(map.next_value()?),
                "select" => RawKind::Select(map.next_value()?),
                "hover" => RawKind::Hover(map.next_value()?),
                "focus" => RawKind::Focus(map.next_value()?),
                "blur" => RawKind::Blur(map.next_value()?),
                "wait_for" => RawKind::WaitFor(map.next_value::<StringOrMap<WaitArg>>()?.0),
                "liveview_connected" => {
                    map.next_value::<de::IgnoredAny>()?;
                    RawKind::LiveviewConnected
                }
                "liveview_idle" => RawKind::LiveviewIdle(map.next_value()?),
                "liveview_submit" => RawKind::LiveviewSubmit(map.next_value()?),
                "assert" => RawKind::Assert(map.next_value()?),
                "extract" => RawKind::Extract(map.next_value()?),
                "think" => RawKind::Think(map.next_value()?),
                "eval" => RawKind::Eval(map.next_value::<StringOrMap<EvalArg>>()?.0),
                "group" => RawKind::Group(map.next_value()?),
                "repeat" => RawKind::Repeat(map.next_value()?),
                "halt" => {
                    map.next_value::<de::IgnoredAny>()?;
                    RawKind::Halt
                }
                "fail" => RawKind::Fail(map.next_value()?),
                other => return Err(de::Error::unknown_variant(other, STEP_KINDS)),
            });
        }
        match kind {
            Some(kind) => Ok(RawStep { name, kind }),
            None => Err(de::Error::custom(format!(
                "a step needs one of: {}",
                STEP_KINDS.join(", ")
            ))),
        }
    }
}

/// The JSON Schema (draft 2020-12) of scenario files, for editors (YAML language servers read
/// it). Built from the same step table the parser uses; `docs/scenario.schema.json` is this,
/// checked by a test.
pub fn json_schema() -> serde_json::Value {
    use serde_json::json;
    let string = json!({"type": "string"});
    let duration = json!({"type": "string", "pattern": "^[0-9.]+ ?(ms|s|m|h)$", "description": "500ms, 20s, 2m, 1h"});
    let selector = json!({"type": "string", "description": "CSS selector ({{variables}} allowed)"});
    let object = |properties: serde_json::Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
    let steps_ref = json!({"type": "array", "items": {"$ref": "#/$defs/step"}});
    let argument = |kind: &str| -> Option<serde_json::Value> {
        Some(match kind {
            "navigate" => {
                json!({"type": "string", "description": "URL, absolute or relative to base_url"})
            }
            "click" | "clear" | "check" | "uncheck" | "hover" | "focus" | "blur" => {
                selector.clone()
            }
            "fill" | "select" => object(
                json!({"selector": selector, "value": string}),
                &["selector", "value"],
            ),
            "press" => object(json!({"key": string, "selector": selector}), &["key"]),
            "wait_for" => json!({"oneOf": [selector, object(json!({
                "selector": selector, "state": {"enum": ["visible", "hidden"]}, "text": string,
                "url": {"type": "string", "description": "pattern, * matches anything"},
                "network_idle": duration, "timeout": duration}), &[])]}),
            "liveview_idle" => selector.clone(),
            "liveview_submit" => object(
                json!({"form": selector, "wait_for": selector, "timeout": duration}),
                &["form"],
            ),
            "assert" => object(
                json!({"text": string, "selector": selector,
                "count": {"type": "integer", "minimum": 0}, "visible": selector}),
                &[],
            ),
            "extract" => object(
                json!({"var": string, "selector": selector, "attribute": string,
                "value": {"type": "boolean"}}),
                &["var", "selector"],
            ),
            "think" => {
                json!({"type": "string", "description": "a duration (2s) or a range (1s..3s)"})
            }
            "eval" => {
                json!({"oneOf": [string, object(json!({"js": string, "var": string}), &["js"])]})
            }
            "group" => object(
                json!({"name": string, "steps": steps_ref}),
                &["name", "steps"],
            ),
            "repeat" => object(
                json!({"times": {"type": "integer", "minimum": 0}, "steps": steps_ref}),
                &["times", "steps"],
            ),
            "fail" => string.clone(),
            _ => return None,
        })
    };
    let mut variants: Vec<serde_json::Value> = Vec::new();
    let bare: Vec<&str> = STEP_KINDS
        .iter()
        .copied()
        .filter(|k| {
            matches!(
                *k,
                "reload" | "liveview_connected" | "liveview_idle" | "think" | "halt" | "fail"
            )
        })
        .collect();
    variants.push(json!({"enum": bare, "description": "a step without an argument"}));
    for kind in STEP_KINDS {
        let value = argument(kind).unwrap_or(json!({"type": "null"}));
        variants.push(json!({
            "type": "object",
            "properties": {kind.to_string(): value, "name": {"type": "string", "description": "the step's metric name"}},
            "required": [kind],
            "additionalProperties": false
        }));
    }
    let threshold = json!({"oneOf": [
        {"type": "string", "description": "p95(step:NAME) < 800ms, avg(...), max(...), count(...), error_rate < 1%"},
        object(json!({"expr": string, "abort_on_fail": {"type": "boolean"}}), &["expr"])
    ]});
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "liveload scenario",
        "type": "object",
        "required": ["name", "base_url", "steps"],
        "additionalProperties": false,
        "properties": {
            "name": string,
            "base_url": {"type": "string", "pattern": "^https?://"},
            "users": {"type": "integer", "minimum": 1},
            "duration": duration,
            "iteration_timeout": duration,
            "step_timeout": duration,
            "think_time": {"type": "string", "description": "default for a bare `think`"},
            "data": object(json!({"file": {"type": "string", "description": "CSV with a header row"}}), &["file"]),
            "load": object(json!({
                "model": {"enum": ["closed", "open"]}, "ramp_up": duration,
                "ramp_steps": {"type": "integer", "minimum": 1},
                "rate": {"type": "number", "exclusiveMinimum": 0}, "ramp_to": {"type": "number", "exclusiveMinimum": 0},
                "max_users": {"type": "integer", "minimum": 1}}), &["model"]),
            "throttle": object(json!({
                "rate": {"type": "string", "description": "10/s, 600/1m"}, "interarrival": duration,
                "parallelism": {"type": "integer", "minimum": 1}}), &[]),
            "thresholds": {"type": "array", "items": threshold},
            "steps": steps_ref,
        },
        "$defs": {"step": {"oneOf": variants}}
    })
}

/// Parse `500ms`, `20s`, `2m`, `1h` (a number, then a unit).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("invalid duration '{text}': expected a number and a unit, like 500ms, 20s, 2m, 1h")
    })?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "invalid duration '{text}': unknown unit '{other}', use ms, s, m or h"
            ));
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// The `{{names}}` a template refers to.
pub fn template_variables(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        names.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    names
}

/// An error found after parsing: the message and the text to locate it by.
struct Located {
    message: String,
    needle: String,
}

impl Located {
    fn new(message: impl Into<String>, needle: impl Into<String>) -> Self {
        Located {
            message: message.into(),
            needle: needle.into(),
        }
    }
}

/// Turns raw steps into protocol steps, checking durations and template variables in order.
struct Lowering<'a> {
    known: BTreeSet<String>,
    think_time: &'a str,
}

impl Lowering<'_> {
    fn template(&self, text: &str) -> std::result::Result<String, Located> {
        for name in template_variables(text) {
            if !self.known.contains(name) {
                let known: Vec<&str> = self.known.iter().map(String::as_str).collect();
                return Err(Located::new(
                    format!(
                        "unknown template variable '{{{{{name}}}}}': known here are {}",
                        known.join(", ")
                    ),
                    format!("{{{{{name}"),
                ));
            }
        }
        Ok(text.to_string())
    }

    fn duration_ms(&self, text: &str) -> std::result::Result<u64, Located> {
        parse_duration(text)
            .map(|d| d.as_millis() as u64)
            .map_err(|m| Located::new(m, text))
    }

    fn steps(&mut self, raw: Vec<RawStep>) -> std::result::Result<Vec<Step>, Located> {
        raw.into_iter().map(|s| self.step(s)).collect()
    }

    fn step(&mut self, raw: RawStep) -> std::result::Result<Step, Located> {
        let timeout = |l: &Self, t: &Option<String>| match t {
            Some(text) => l.duration_ms(text),
            None => Ok(10_000),
        };
        let (default_name, kind) = match raw.kind {
            RawKind::Navigate(url) => (
                format!("navigate {url}"),
                StepKind::Navigate {
                    url: self.template(&url)?,
                },
            ),
            RawKind::Reload => ("reload".into(), StepKind::Reload),
            RawKind::Click(s) => (
                format!("click {s}"),
                StepKind::Click {
                    selector: self.template(&s)?,
                },
            ),
            RawKind::Fill(f) => (
                format!("fill {}", f.selector),
                StepKind::Fill {
                    selector: self.template(&f.selector)?,
                    value: self.template(&f.value)?,
                },
            ),
            RawKind::Clear(s) => (
                format!("clear {s}"),
                StepKind::Clear {
                    selector: self.template(&s)?,
                },
            ),
            RawKind::Press(p) => (
                format!("press {}", p.key),
                StepKind::Press {
                    selector: p.selector.map(|s| self.template(&s)).transpose()?,
                    key: p.key,
                },
            ),
            RawKind::Check(s) => (
                format!("check {s}"),
                StepKind::Check {
                    selector: self.template(&s)?,
                },
            ),
            RawKind::Uncheck(s) => (
                format!("uncheck {s}"),
                StepKind::Uncheck {
                    selector: self.template(&s)?,
                },
            ),
            RawKind::Select(f) => (
                format!("select {}", f.selector),
                StepKind::Select {
                    selector: self.template(&f.selector)?,
                    value: self.template(&f.value)?,
                },
            ),
            RawKind::Hover(s) => (
                format!("hover {s}"),
                StepKind::Hover {
                    selector: self.template(&s)?,
                },
            ),
            RawKind::Focus(s) => (
                format!("focus {s}"),
                StepKind::Focus {
                    selector: self.template(&s)?,
                },
            ),
            RawKind::Blur(s) => (
                format!("blur {s}"),
                StepKind::Blur {
                    selector: self.template(&s)?,
                },
            ),
            RawKind::WaitFor(w) => {
                let given = [
                    w.selector.is_some(),
                    w.text.is_some(),
                    w.url.is_some(),
                    w.network_idle.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if given != 1 {
                    return Err(Located::new(
                        "wait_for needs exactly one of: selector, text, url, network_idle",
                        "wait_for",
                    ));
                }
                let timeout_ms = timeout(self, &w.timeout)?;
                let (name, condition) = if let Some(selector) = w.selector {
                    let hidden = w.state == Some(WaitState::Hidden);
                    let name =
                        format!("wait_for {selector}{}", if hidden { " hidden" } else { "" });
                    let selector = self.template(&selector)?;
                    let condition = if hidden {
                        WaitCondition::Hidden { selector }
                    } else {
                        WaitCondition::Visible { selector }
                    };
                    (name, condition)
                } else if let Some(text) = w.text {
                    (
                        format!("wait_for text {text}"),
                        WaitCondition::Text {
                            text: self.template(&text)?,
                        },
                    )
                } else if let Some(pattern) = w.url {
                    (
                        format!("wait_for url {pattern}"),
                        WaitCondition::Url {
                            pattern: self.template(&pattern)?,
                        },
                    )
                } else {
                    let idle = w.network_idle.unwrap_or_default();
                    (
                        "wait_for network_idle".into(),
                        WaitCondition::NetworkIdle {
                            idle_ms: self.duration_ms(&idle)?,
                        },
                    )
                };
                (
                    name,
                    StepKind::WaitFor {
                        condition,
                        timeout_ms,
                    },
                )
            }
            RawKind::LiveviewConnected => (
                "liveview_connected".into(),
                StepKind::WaitFor {
                    condition: WaitCondition::LiveviewConnected,
                    timeout_ms: 10_000,
                },
            ),
            RawKind::LiveviewIdle(selector) => {
                let selector = selector.unwrap_or_else(|| "body".into());
                (
                    format!("liveview_idle {selector}"),
                    StepKind::WaitFor {
                        condition: WaitCondition::LiveviewIdle {
                            selector: self.template(&selector)?,
                        },
                        timeout_ms: 10_000,
                    },
                )
            }
            RawKind::LiveviewSubmit(s) => (
                format!("liveview_submit {}", s.form),
                StepKind::LiveviewSubmit {
                    form: self.template(&s.form)?,
                    wait_for: s.wait_for.map(|w| self.template(&w)).transpose()?,
                    timeout_ms: timeout(self, &s.timeout)?,
                },
            ),
            RawKind::Assert(a) => {
                let check = match (a.text, a.selector, a.count, a.visible) {
                    (Some(text), None, None, None) => AssertCheck::Text {
                        text: self.template(&text)?,
                    },
                    (None, Some(selector), Some(count), None) => AssertCheck::Count {
                        selector: self.template(&selector)?,
                        count,
                    },
                    (None, None, None, Some(selector)) => AssertCheck::Visible {
                        selector: self.template(&selector)?,
                    },
                    _ => {
                        return Err(Located::new(
                            "assert needs one of: {text}, {selector, count}, {visible}",
                            "assert",
                        ));
                    }
                };
                let name = match &check {
                    AssertCheck::Text { text } => format!("assert text {text}"),
                    AssertCheck::Count { selector, count } => {
                        format!("assert count {selector} = {count}")
                    }
                    AssertCheck::Visible { selector } => format!("assert visible {selector}"),
                };
                (name, StepKind::Assert { check })
            }
            RawKind::Extract(e) => {
                let from = match (e.attribute, e.value) {
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
                let selector = self.template(&e.selector)?;
                self.known.insert(e.var.clone());
                (
                    format!("extract {}", e.var),
                    StepKind::Extract {
                        var: e.var,
                        selector,
                        from,
                    },
                )
            }
            RawKind::Think(text) => {
                let text = text.unwrap_or_else(|| self.think_time.to_string());
                let (min, max) = match text.split_once("..") {
                    Some((a, b)) => (self.duration_ms(a)?, self.duration_ms(b)?),
                    None => (self.duration_ms(&text)?, self.duration_ms(&text)?),
                };
                if max < min {
                    return Err(Located::new(
                        format!("think range '{text}' ends before it starts"),
                        text,
                    ));
                }
                (
                    format!("think {text}"),
                    StepKind::Think {
                        min_ms: min,
                        max_ms: max,
                    },
                )
            }
            RawKind::Eval(e) => {
                let js = self.template(&e.js)?;
                if let Some(var) = &e.var {
                    self.known.insert(var.clone());
                }
                (
                    format!("eval {}", e.var.as_deref().unwrap_or("js")),
                    StepKind::Eval { js, var: e.var },
                )
            }
            RawKind::Group(g) => (
                g.name.clone(),
                StepKind::Group {
                    steps: self.steps(g.steps)?,
                },
            ),
            RawKind::Repeat(r) => (
                format!("repeat {}", r.times),
                StepKind::Repeat {
                    times: r.times,
                    steps: self.steps(r.steps)?,
                },
            ),
            RawKind::Halt => ("halt".into(), StepKind::Halt),
            RawKind::Fail(message) => {
                let message = message.unwrap_or_else(|| "the scenario failed the iteration".into());
                (
                    "fail".into(),
                    StepKind::Fail {
                        message: self.template(&message)?,
                    },
                )
            }
        };
        Ok(Step {
            name: raw.name.unwrap_or(default_name),
            kind,
        })
    }
}

/// Line and column (1-based) of the first occurrence of `needle` in `text`.
fn locate(text: &str, needle: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(i, line)| {
        line.find(needle)
            .map(|col| (i + 1, line[..col].chars().count() + 1))
    })
}

impl Scenario {
    /// Read and validate a scenario file (and its CSV data file, if any).
    pub fn from_file(path: &Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Scenario {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read the file: {e}"),
        })?;
        Self::from_yaml(path, &text)
    }

    /// Parse and validate scenario text; `path` names the file in errors and anchors the data
    /// file's relative path.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Scenario> {
        let error = |line: usize, column: usize, message: String| Error::Scenario {
            file: PathBuf::from(path),
            line,
            column,
            message,
        };
        let located = |l: Located| {
            let (line, column) = locate(text, &l.needle).unwrap_or((1, 1));
            error(line, column, l.message)
        };
        let raw: RawScenario = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            // serde_yaml_ng appends "at line X column Y"; the location is printed up front.
            let message = e.to_string();
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_string();
            error(line, column, message)
        })?;
        if raw.steps.is_empty() {
            return Err(located(Located::new(
                "steps: a scenario needs at least one step",
                "steps",
            )));
        }
        if !(raw.base_url.starts_with("http://") || raw.base_url.starts_with("https://")) {
            return Err(located(Located::new(
                format!(
                    "base_url '{}' must start with http:// or https://",
                    raw.base_url
                ),
                "base_url",
            )));
        }
        let duration_of = |value: &Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => parse_duration(text).map_err(|m| located(Located::new(m, text))),
        };
        let duration = duration_of(&raw.duration, Duration::from_secs(30))?;
        let iteration_timeout = duration_of(&raw.iteration_timeout, Duration::from_secs(30))?;
        let step_timeout = duration_of(&raw.step_timeout, Duration::from_secs(10))?;
        if duration.is_zero() {
            return Err(located(Located::new(
                "duration must be more than 0",
                "duration",
            )));
        }
        let data = match &raw.data {
            None => None,
            Some(d) => {
                let file = path.parent().unwrap_or(Path::new(".")).join(&d.file);
                Some(read_csv(&file).map_err(|m| located(Located::new(m, d.file.as_str())))?)
            }
        };
        let mut known: BTreeSet<String> = BUILTIN_VARIABLES.iter().map(|s| s.to_string()).collect();
        if let Some(table) = &data {
            known.extend(table.columns.iter().cloned());
        }
        let think_time = raw.think_time.clone().unwrap_or_else(|| "1s".into());
        let mut lowering = Lowering {
            known,
            think_time: &think_time,
        };
        let steps = lowering.steps(raw.steps).map_err(located)?;
        let thresholds = raw
            .thresholds
            .into_iter()
            .map(|StringOrMap(t)| {
                crate::threshold::Threshold::parse(&t.expr, t.abort_on_fail)
                    .map_err(|m| located(Located::new(m, t.expr.trim())))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut users = raw.users.unwrap_or(1);
        let load = match raw.load {
            None => Load::Closed {
                ramp_up: None,
                ramp_steps: None,
            },
            Some(l) if l.model == RawModel::Closed => {
                if l.rate.is_some() || l.ramp_to.is_some() || l.max_users.is_some() {
                    return Err(located(Located::new(
                        "load: rate, ramp_to and max_users belong to the open model (model: open)",
                        "load",
                    )));
                }
                if l.ramp_steps == Some(0) || (l.ramp_steps.is_some() && l.ramp_up.is_none()) {
                    return Err(located(Located::new(
                        "load: ramp_steps needs ramp_up and at least 1 step",
                        "ramp_steps",
                    )));
                }
                Load::Closed {
                    ramp_up: l
                        .ramp_up
                        .as_ref()
                        .map(|r| duration_of(&Some(r.clone()), Duration::ZERO))
                        .transpose()?,
                    ramp_steps: l.ramp_steps,
                }
            }
            Some(l) => {
                let (Some(rate), Some(max_users)) = (l.rate, l.max_users) else {
                    return Err(located(Located::new(
                        "load: the open model needs rate (arrivals per second) and max_users",
                        "load",
                    )));
                };
                let positive = |v: f64| v.is_finite() && v > 0.0;
                if !positive(rate) || l.ramp_to.is_some_and(|r| !positive(r)) || max_users == 0 {
                    return Err(located(Located::new(
                        "load: rate and ramp_to must be more than 0 per second, max_users at least 1",
                        "rate",
                    )));
                }
                if l.ramp_up.is_some() || l.ramp_steps.is_some() {
                    return Err(located(Located::new(
                        "load: ramp_up and ramp_steps belong to the closed model; ramp an open model with ramp_to",
                        "ramp_up",
                    )));
                }
                // The cluster is sized for the most arrivals in progress at once.
                users = max_users;
                Load::Open {
                    rate,
                    ramp_to: l.ramp_to,
                    max_users,
                }
            }
        };
        let throttle = match raw.throttle {
            None => Throttle::default(),
            Some(t) => {
                let rate = match &t.rate {
                    None => None,
                    Some(text) => {
                        let (limit, per) = text.split_once('/').ok_or_else(|| {
                            located(Located::new(
                                format!("throttle rate '{text}' should read like 10/s or 600/1m"),
                                text.as_str(),
                            ))
                        })?;
                        let limit: u64 = limit.trim().parse().ok().filter(|l| *l > 0).ok_or_else(
                            || {
                                located(Located::new(
                                    format!(
                                        "throttle rate '{text}': '{limit}' is not a positive count"
                                    ),
                                    text.as_str(),
                                ))
                            },
                        )?;
                        let per = per.trim();
                        let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
                            per.to_string()
                        } else {
                            format!("1{per}")
                        };
                        let per = parse_duration(&per)
                            .map_err(|m| located(Located::new(m, text.as_str())))?;
                        Some((limit, per))
                    }
                };
                let interarrival = t
                    .interarrival
                    .as_ref()
                    .map(|i| duration_of(&Some(i.clone()), Duration::ZERO))
                    .transpose()?;
                if t.parallelism == Some(0) {
                    return Err(located(Located::new(
                        "throttle: parallelism must be at least 1",
                        "parallelism",
                    )));
                }
                Throttle {
                    rate,
                    interarrival,
                    parallelism: t.parallelism,
                }
            }
        };
        Ok(Scenario {
            name: raw.name,
            base_url: raw.base_url.trim_end_matches('/').to_string(),
            users,
            duration,
            iteration_timeout,
            step_timeout,
            steps,
            data,
            thresholds,
            load,
            throttle,
        })
    }
}

/// Read a CSV file with a header row.
fn read_csv(path: &Path) -> std::result::Result<DataTable, String> {
    const LIMIT: u64 = 4 * 1024 * 1024;
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read data file {}: {e}", path.display()))?
        .len();
    if size > LIMIT {
        return Err(format!(
            "data file {} is {size} bytes; the limit is {LIMIT} (it travels to every agent)",
            path.display()
        ));
    }
    let mut reader = csv::Reader::from_path(path)
        .map_err(|e| format!("cannot read data file {}: {e}", path.display()))?;
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| format!("data file {}: {e}", path.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("data file {}: {e}", path.display()))?;
        rows.push(record.iter().map(str::to_string).collect());
    }
    if rows.is_empty() {
        return Err(format!("data file {} has no rows", path.display()));
    }
    Ok(DataTable { columns, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario> {
        Scenario::from_yaml(Path::new("s.yaml"), text)
    }

    fn location(err: Error) -> (usize, usize, String) {
        match err {
            Error::Scenario {
                line,
                column,
                message,
                ..
            } => (line, column, message),
            other => panic!("{other:?}"),
        }
    }

    const HEAD: &str = "name: d\nbase_url: http://x\nsteps:\n";

    #[test]
    fn parses_minimal_scenario() {
        let s = parse(
            "name: demo\nbase_url: http://127.0.0.1:1/\nusers: 3\nduration: 2s\nsteps:\n  - navigate: /\n  - wait_for: '#x'\n  - think: 1s..2s\n",
        )
        .unwrap();
        assert_eq!(s.users, 3);
        assert_eq!(s.base_url, "http://127.0.0.1:1");
        assert_eq!(s.duration, Duration::from_secs(2));
        assert_eq!(
            s.steps[2].kind,
            StepKind::Think {
                min_ms: 1000,
                max_ms: 2000
            }
        );
    }

    #[test]
    fn every_step_kind_parses() {
        let text = format!(
            "{HEAD}{}",
            r##"  - navigate: /
  - reload
  - click: "#send"
  - fill: { selector: "#name", value: "user {{user_id}}" }
  - clear: "#name"
  - press: { selector: "#name", key: Enter }
  - check: "#agree"
  - uncheck: "#agree"
  - select: { selector: "#plan", value: pro }
  - hover: "#send"
  - focus: "#name"
  - blur: "#name"
  - wait_for: "#ticks"
  - wait_for: { selector: "#gone", state: hidden, timeout: 2s }
  - wait_for: { text: Live }
  - wait_for: { url: "*/" }
  - wait_for: { network_idle: 300ms }
  - liveview_connected
  - liveview_idle: "#live-form"
  - liveview_submit: { form: "#live-form", wait_for: "#live-result" }
  - assert: { text: Live }
  - assert: { selector: "li.item", count: 3 }
  - assert: { visible: "#ticks" }
  - extract: { var: plan, selector: "#plan", value: true }
  - extract: { var: link, selector: "a", attribute: href }
  - extract: { var: title, selector: h1 }
  - think: 10ms
  - eval: "document.title"
  - eval: { js: "1 + 1", var: two }
  - name: named
    navigate: "/?p={{plan}}&t={{two}}"
  - group: { name: checkout, steps: [ { click: "#send" } ] }
  - repeat: { times: 2, steps: [ reload ] }
  - halt
  - fail: "no {{title}}"
"##
        );
        let s = parse(&text).unwrap();
        assert_eq!(s.steps.len(), 34);
        assert_eq!(s.steps[29].name, "named");
        assert!(matches!(s.steps[30].kind, StepKind::Group { ref steps } if steps.len() == 1));
        assert_eq!(s.steps[30].name, "checkout");
    }

    #[test]
    fn unknown_step_names_line_and_column() {
        let (line, column, message) =
            location(parse(&format!("{HEAD}  - navigate: /\n  - teleport: /\n")).unwrap_err());
        assert_eq!(line, 5);
        assert!(column >= 3, "{column}");
        assert!(message.contains("teleport"), "{message}");
        assert!(
            message.contains("navigate"),
            "lists the known kinds: {message}"
        );
    }

    #[test]
    fn wrong_type_is_located() {
        let (line, _, message) = location(
            parse(&format!(
                "{HEAD}  - navigate: /\n  - repeat: {{ times: many, steps: [reload] }}\n"
            ))
            .unwrap_err(),
        );
        assert_eq!(line, 5);
        assert!(message.contains("invalid"), "{message}");
    }

    #[test]
    fn missing_selector_is_located() {
        let (line, _, message) = location(
            parse(&format!(
                "{HEAD}  - navigate: /\n  - fill: {{ value: x }}\n"
            ))
            .unwrap_err(),
        );
        assert_eq!(line, 5);
        assert!(message.contains("missing field `selector`"), "{message}");
        let (line, _, message) =
            location(parse(&format!("{HEAD}  - navigate: /\n  - click\n")).unwrap_err());
        assert_eq!(line, 5);
        assert!(message.contains("needs an argument"), "{message}");
    }

    #[test]
    fn bad_duration_is_located() {
        let err =
            parse("name: d\nbase_url: http://x\nduration: 10 parsecs\nsteps:\n  - navigate: /\n")
                .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("s.yaml:3:11:"), "{text}");
        assert!(text.contains("unknown unit"), "{text}");
        let (line, _, _) = location(
            parse(&format!("{HEAD}  - navigate: /\n  - think: 3 fortnights\n")).unwrap_err(),
        );
        assert_eq!(line, 5);
    }

    #[test]
    fn unknown_template_variable_is_located() {
        let (line, column, message) = location(
            parse(&format!(
                "{HEAD}  - navigate: /\n  - fill: {{ selector: '#n', value: '{{{{nmae}}}}' }}\n"
            ))
            .unwrap_err(),
        );
        assert_eq!(line, 5);
        assert!(column > 10);
        assert!(
            message.contains("nmae") && message.contains("user_id"),
            "{message}"
        );
    }

    #[test]
    fn variables_are_known_only_after_they_are_set() {
        let err = parse(&format!(
            "{HEAD}  - navigate: '/{{{{later}}}}'\n  - eval: {{ js: '1', var: later }}\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("later"));
    }

    #[test]
    fn thresholds_parse_and_bad_ones_are_located() {
        let s = parse(&format!(
            "name: d\nbase_url: http://x\nthresholds:\n  - 'p95(step:x) < 1s'\n  - {{ expr: 'error_rate < 1%', abort_on_fail: true }}\n{}",
            "steps:\n  - reload\n"
        ))
        .unwrap();
        assert_eq!(s.thresholds.len(), 2);
        assert!(s.thresholds[1].abort_on_fail);
        let (line, _, message) = location(
            parse("name: d\nbase_url: http://x\nthresholds:\n  - 'p95(step:x) < soon'\nsteps:\n  - reload\n")
                .unwrap_err(),
        );
        assert_eq!(line, 4);
        assert!(message.contains("soon"), "{message}");
    }

    #[test]
    fn workload_models_and_throttles() {
        let s = parse(
            "name: d\nbase_url: http://x\nload: { model: open, rate: 5, ramp_to: 20, max_users: 40 }\nthrottle: { rate: 600/1m, interarrival: 50ms, parallelism: 8 }\nsteps:\n  - reload\n",
        )
        .unwrap();
        assert_eq!(s.users, 40, "sized for the most arrivals at once");
        assert_eq!(
            s.load,
            Load::Open {
                rate: 5.0,
                ramp_to: Some(20.0),
                max_users: 40
            }
        );
        assert_eq!(s.throttle.rate, Some((600, Duration::from_secs(60))));
        assert_eq!(s.throttle.interarrival, Some(Duration::from_millis(50)));
        let s = parse("name: d\nbase_url: http://x\nload: { model: closed, ramp_up: 10s }\nthrottle: { rate: 10/s }\nsteps:\n  - reload\n").unwrap();
        assert_eq!(
            s.load,
            Load::Closed {
                ramp_up: Some(Duration::from_secs(10)),
                ramp_steps: None
            }
        );
        assert_eq!(s.throttle.rate, Some((10, Duration::from_secs(1))));
        for (bad, line) in [
            ("load: { model: open, rate: 5 }\n", 3),
            ("load: { model: closed, rate: 5 }\n", 3),
            ("load: { model: sideways }\n", 3),
            ("throttle: { rate: lots }\n", 3),
            ("throttle: { rate: 0/s }\n", 3),
        ] {
            let (l, _, m) = location(
                parse(&format!(
                    "name: d\nbase_url: http://x\n{bad}steps:\n  - reload\n"
                ))
                .unwrap_err(),
            );
            assert_eq!(l, line, "{bad}: {m}");
        }
    }

    #[test]
    fn the_schema_covers_every_step_and_is_the_committed_one() {
        let schema = json_schema();
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        for kind in STEP_KINDS {
            assert!(
                text.contains(&format!("\"{kind}\"")),
                "{kind} missing from the schema"
            );
        }
        let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/scenario.schema.json");
        let on_disk = std::fs::read_to_string(&committed).unwrap_or_default();
        assert_eq!(
            on_disk, text,
            "docs/scenario.schema.json is stale: run `liveload schema > docs/scenario.schema.json`"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn csv_columns_become_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("users.csv"),
            "email,plan\na@x,pro\nb@x,free\n",
        )
        .unwrap();
        let path = dir.path().join("s.yaml");
        let s = Scenario::from_yaml(
            &path,
            "name: d\nbase_url: http://x\ndata: { file: users.csv }\nsteps:\n  - navigate: '/?e={{email}}&p={{plan}}'\n",
        )
        .unwrap();
        let data = s.data.unwrap();
        assert_eq!(data.columns, ["email", "plan"]);
        assert_eq!(data.rows.len(), 2);
        let err = Scenario::from_yaml(
            &path,
            "name: d\nbase_url: http://x\ndata: { file: nope.csv }\nsteps:\n  - navigate: /\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3:", path.display())),
            "{err}"
        );
    }
}
