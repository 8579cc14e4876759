//! The scenario file as written: serde types that mirror the YAML one to one.
//!
//! These types only check *shape* (which keys exist, which values are strings or numbers); the
//! meaning (durations, template variables, which combinations make sense) is checked when they
//! are lowered (see [`super::lower`]). Keeping the two apart is what makes errors precise:
//! serde reports shape errors with the parser's own line and column, because every value here,
//! down to a step's argument, is read straight from the YAML stream.
//!
//! Every struct denies unknown fields, so a typo (`duratoin:`) is an error rather than a
//! silently ignored setting. The struct names appear in serde's messages ("expected struct
//! PressArg"), so renaming one changes what users read.
//!
//! `docs/scenario.schema.json` describes these same types for editors; a test
//! (`schema_drift`) proves the two accept exactly the same keys.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::STEP_KINDS;

mod protocol;
mod workload;
pub(super) use protocol::{ExpectArg, RequestArg, Statuses, WsConnectArg, WsExpectArg};
pub(super) use workload::{RawLoad, RawModel, RawSizing, RawThrottle};

/// The whole file: settings, then the steps of one iteration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    /// `name:` — names the run, the lock and the report.
    pub(super) name: String,
    /// `base_url:` — what relative step URLs join.
    #[serde(default)]
    pub(super) base_url: Option<String>,
    /// `base_urls:` — several targets instead of one `base_url`.
    #[serde(default)]
    pub(super) base_urls: Vec<String>,
    /// `base_url_distribution:` — how users are spread over `base_urls`.
    #[serde(default)]
    pub(super) base_url_distribution: Option<super::network::TargetDistribution>,
    /// `block_hosts:` — host patterns the browsers must not reach.
    #[serde(default)]
    pub(super) block_hosts: Vec<String>,
    /// `allow_hosts:` — the only host patterns the browsers may reach (with the targets').
    #[serde(default)]
    pub(super) allow_hosts: Vec<String>,
    /// `map_hosts:` — host names sent to another address.
    #[serde(default)]
    pub(super) map_hosts: std::collections::BTreeMap<String, String>,
    /// `users:` — users to simulate (closed model); 1 when absent.
    #[serde(default)]
    pub(super) users: Option<u64>,
    /// `duration:` — how long users iterate.
    #[serde(default)]
    pub(super) duration: Option<String>,
    /// `iteration_timeout:` — the longest one iteration may take.
    #[serde(default)]
    pub(super) iteration_timeout: Option<String>,
    /// `step_timeout:` — how long element steps and waits without their own `timeout:` wait.
    #[serde(default)]
    pub(super) step_timeout: Option<String>,
    /// `on_failure:` — what to keep of a failed iteration (`screenshot`).
    #[serde(default)]
    pub(super) on_failure: Option<StringOrMap<RawOnFailure>>,
    /// `think_time:` — what a bare `- think` waits (a duration or a range).
    #[serde(default)]
    pub(super) think_time: Option<String>,
    /// `data:` — a CSV file of per-user values.
    #[serde(default)]
    pub(super) data: Option<RawData>,
    /// `thresholds:` — pass/fail criteria, each a string or a map.
    #[serde(default)]
    pub(super) thresholds: Vec<StringOrMap<RawThreshold>>,
    /// `load:` — the workload model; closed, all users at once, when absent.
    #[serde(default)]
    pub(super) load: Option<RawLoad>,
    /// `throttle:` — cluster-wide limits on iterations.
    #[serde(default)]
    pub(super) throttle: Option<RawThrottle>,
    /// `mix:` — a run file: the scenarios run together and their users.
    #[serde(default)]
    pub(super) mix: Vec<super::mix::RawMixPart>,
    /// `engine:` — what users are: `browser` (the default), `http` (protocol users) or
    /// `liveview` (native LiveView clients).
    #[serde(default)]
    pub(super) engine: Option<liveload_proto::Engine>,
    /// `allow_schemes:` — URL schemes users may open beyond the web's (`[file]`).
    #[serde(default)]
    pub(super) allow_schemes: Vec<String>,
    /// `sizing:` — this scenario's per-user costs (a calibrated profile file, or figures).
    #[serde(default)]
    pub(super) sizing: Option<RawSizing>,
    /// `iterations:` — iterations per user (closed model); until the duration ends when absent.
    #[serde(default)]
    pub(super) iterations: Option<u64>,
    /// `pacing:` — an iteration starts at most this often per user.
    #[serde(default)]
    pub(super) pacing: Option<String>,
    /// `on_start:` — steps each user runs once, before its first iteration.
    #[serde(default)]
    pub(super) on_start: Vec<RawStep>,
    /// `steps:` — what one iteration does (none in a run file with `mix:`).
    #[serde(default)]
    pub(super) steps: Vec<RawStep>,
    /// `on_stop:` — steps each user runs once, after its last iteration.
    #[serde(default)]
    pub(super) on_stop: Vec<RawStep>,
}

/// `- "p95(step:x) < 1s"` or `- { expr: "...", abort_on_fail: true }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThreshold {
    /// The expression, parsed by [`crate::threshold::Threshold::parse`].
    pub(super) expr: String,
    /// Stop the run as soon as this threshold fails.
    #[serde(default)]
    pub(super) abort_on_fail: bool,
}

impl Shorthand for RawThreshold {
    fn from_string<E: de::Error>(expr: String) -> Result<Self, E> {
        Ok(RawThreshold {
            expr,
            abort_on_fail: false,
        })
    }
}

/// `data: { file, secret, mode }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawData {
    /// The CSV file, relative to the scenario file.
    pub(super) file: String,
    /// Columns whose values are secret (passwords, tokens): redacted from every report.
    #[serde(default)]
    pub(super) secret: Vec<String>,
    /// How users take rows: `cycle` (the default), `unique` or `random`.
    #[serde(default)]
    pub(super) mode: super::data::DataMode,
}

/// `on_failure: screenshot` or `on_failure: { action: screenshot, per_error: 5 }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOnFailure {
    /// What to keep.
    pub(super) action: RawFailureAction,
    /// How many failed iterations of each distinct error to keep, per agent.
    #[serde(default)]
    pub(super) per_error: Option<u32>,
}

/// `on_failure.action:`.
#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawFailureAction {
    /// Keep nothing (the default).
    None,
    /// A screenshot and the DOM of the page.
    Screenshot,
}

impl Shorthand for RawOnFailure {
    fn from_string<E: de::Error>(action: String) -> Result<Self, E> {
        let action = match action.as_str() {
            "none" => RawFailureAction::None,
            "screenshot" => RawFailureAction::Screenshot,
            other => return Err(E::unknown_variant(other, &["screenshot", "none"])),
        };
        Ok(RawOnFailure {
            action,
            per_error: None,
        })
    }
}

/// One step as written: an optional `name:` and exactly one kind key.
///
/// Deserialised by hand ([`StepVisitor`]) rather than as a serde enum, because a step is a map
/// holding a kind key *and* an optional `name:` beside it, and because a bare string (`- reload`)
/// is also a step; serde's externally tagged enums allow neither.
pub(super) struct RawStep {
    /// The step's metric name, when the file gives one.
    pub(super) name: Option<String>,
    /// What the step does.
    pub(super) kind: RawKind,
}

/// A step's kind and its argument, as written. One variant per entry of [`STEP_KINDS`].
pub(super) enum RawKind {
    /// `navigate: URL`.
    Navigate(String),
    /// `reload`.
    Reload,
    /// `click: SELECTOR`.
    Click(String),
    /// `fill: { selector, value }`.
    Fill(FieldValue),
    /// `clear: SELECTOR`.
    Clear(String),
    /// `press: { key, selector? }`.
    Press(PressArg),
    /// `check: SELECTOR`.
    Check(String),
    /// `uncheck: SELECTOR`.
    Uncheck(String),
    /// `select: { selector, value }`.
    Select(FieldValue),
    /// `hover: SELECTOR`.
    Hover(String),
    /// `focus: SELECTOR`.
    Focus(String),
    /// `blur: SELECTOR`.
    Blur(String),
    /// `wait_for: SELECTOR` or `wait_for: { ... }`.
    WaitFor(WaitArg),
    /// `liveview_connected` or `liveview_connected: { timeout }`.
    LiveviewConnected(Option<TimeoutArg>),
    /// `liveview_idle`, `liveview_idle: SELECTOR` or `liveview_idle: { selector?, timeout? }`.
    LiveviewIdle(Option<IdleArg>),
    /// `liveview_submit: { form, wait_for?, timeout? }`.
    LiveviewSubmit(SubmitArg),
    /// `assert: { text } | { selector, count } | { visible }`.
    Assert(AssertArg),
    /// `extract: { var, selector, attribute? | value? }`.
    Extract(ExtractArg),
    /// `coordinate: { name, group, timeout? }`.
    Coordinate(CoordinateArg),
    /// `think`, `think: 2s` or `think: 1s..3s`.
    Think(Option<String>),
    /// `eval: JS` or `eval: { js, var? }`.
    Eval(EvalArg),
    /// `group: { name, steps }`.
    Group(GroupArg),
    /// `repeat: { times, steps }`.
    Repeat(RepeatArg),
    /// `halt`.
    Halt,
    /// `fail` or `fail: MESSAGE`.
    Fail(Option<String>),
    /// `request: URL` or `request: { method, url, ... }`.
    Request(Box<RequestArg>),
    /// `ws_connect: URL` or `ws_connect: { url, timeout }`.
    WsConnect(WsConnectArg),
    /// `ws_send: TEXT`.
    WsSend(String),
    /// `ws_expect: TEXT` or `ws_expect: { contains, json, timeout }`.
    WsExpect(WsExpectArg),
    /// `ws_close`.
    WsClose,
}

/// The argument of `fill` and `select`: which field, and what to put in it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FieldValue {
    /// The field's CSS selector.
    pub(super) selector: String,
    /// The text to type, or the option to choose.
    pub(super) value: String,
}

/// The argument of `press`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PressArg {
    /// The key, as the browser names it (`Enter`, `Tab`, `a`).
    pub(super) key: String,
    /// The element to focus first; the focused element when absent.
    #[serde(default)]
    pub(super) selector: Option<String>,
}

/// `wait_for: "#sel"` (visible) or `wait_for: {selector|text|url|network_idle, state, timeout}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct WaitArg {
    /// Wait for this element (visible, or hidden with `state`).
    #[serde(default)]
    pub(super) selector: Option<String>,
    /// Whether the selector should become visible or hidden.
    #[serde(default)]
    pub(super) state: Option<WaitState>,
    /// Wait for this text on the page.
    #[serde(default)]
    pub(super) text: Option<String>,
    /// Wait for the URL to match this pattern.
    #[serde(default)]
    pub(super) url: Option<String>,
    /// Wait for the network to be quiet this long.
    #[serde(default)]
    pub(super) network_idle: Option<String>,
    /// Wait for this JavaScript expression to be truthy in the page.
    #[serde(default)]
    pub(super) js: Option<String>,
    /// Give up after this long.
    #[serde(default)]
    pub(super) timeout: Option<String>,
}

/// `wait_for.state:`.
#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
pub(super) enum WaitState {
    /// The element is shown (the default).
    Visible,
    /// The element is gone or hidden.
    Hidden,
}

/// The argument of `liveview_connected`: how long to wait.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TimeoutArg {
    /// Give up after this long (the scenario's `step_timeout` when absent).
    #[serde(default)]
    pub(super) timeout: Option<String>,
}

/// The argument of `liveview_idle`: a region, and how long to wait.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct IdleArg {
    /// The region (the whole page when absent).
    #[serde(default)]
    pub(super) selector: Option<String>,
    /// Give up after this long (the scenario's `step_timeout` when absent).
    #[serde(default)]
    pub(super) timeout: Option<String>,
}

impl Shorthand for IdleArg {
    fn from_string<E: de::Error>(selector: String) -> Result<Self, E> {
        Ok(IdleArg {
            selector: Some(selector),
            timeout: None,
        })
    }
}

/// The argument of `liveview_submit`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitArg {
    /// The form to submit.
    pub(super) form: String,
    /// An element the server's reply makes appear.
    #[serde(default)]
    pub(super) wait_for: Option<String>,
    /// Give up after this long.
    #[serde(default)]
    pub(super) timeout: Option<String>,
}

/// The argument of `assert`; lowering checks that exactly one form is given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AssertArg {
    /// The page contains this text.
    #[serde(default)]
    pub(super) text: Option<String>,
    /// With `count`: this selector matches `count` elements.
    #[serde(default)]
    pub(super) selector: Option<String>,
    /// With `selector`: how many elements it matches.
    #[serde(default)]
    pub(super) count: Option<u64>,
    /// This element is visible.
    #[serde(default)]
    pub(super) visible: Option<String>,
}

/// The argument of `extract`: read an element (browser) or part of the last answer
/// (`engine: http`) into a variable.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExtractArg {
    /// The variable to set; later steps may use `{{var}}`.
    pub(super) var: String,
    /// The element to read.
    #[serde(default)]
    pub(super) selector: Option<String>,
    /// A JSON path of the last answer's body.
    #[serde(default)]
    pub(super) json: Option<String>,
    /// A header of the last HTTP answer.
    #[serde(default)]
    pub(super) header: Option<String>,
    /// A regular expression on the last answer's body (its first group).
    #[serde(default)]
    pub(super) regex: Option<String>,
    /// Which answer: `http` (the default) or `ws` (the last message `ws_expect` matched).
    #[serde(default)]
    pub(super) from: Option<liveload_proto::AnswerSource>,
    /// Read this attribute instead of the text.
    #[serde(default)]
    pub(super) attribute: Option<String>,
    /// Read the form value instead of the text.
    #[serde(default)]
    pub(super) value: bool,
    /// The value is secret: redacted from every report.
    #[serde(default)]
    pub(super) secret: bool,
}

/// `eval: "js"` or `eval: {js, var}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EvalArg {
    /// The JavaScript to run in the page.
    pub(super) js: String,
    /// The variable that receives its result.
    #[serde(default)]
    pub(super) var: Option<String>,
    /// The result is secret: redacted from every report.
    #[serde(default)]
    pub(super) secret: bool,
}

/// The argument of `group`: steps measured together under one name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupArg {
    /// The group's metric name.
    pub(super) name: String,
    /// The grouped steps.
    pub(super) steps: Vec<RawStep>,
}

/// The argument of `coordinate`: where users meet, how many make a group, how long a group
/// waits for its last members.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CoordinateArg {
    /// The coordination point (users meet at the same name).
    pub(super) name: String,
    /// Users per group.
    pub(super) group: u32,
    /// How long a group waits after its first arrival (default 5s).
    #[serde(default)]
    pub(super) timeout: Option<String>,
}

/// The argument of `repeat`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RepeatArg {
    /// How many times to run the steps.
    pub(super) times: u32,
    /// The repeated steps.
    pub(super) steps: Vec<RawStep>,
}

/// A value written either as a plain string (the common case) or as a map (the full form).
pub(super) trait Shorthand: for<'de> Deserialize<'de> {
    /// The value a plain string stands for (an error when the string cannot stand for one).
    fn from_string<E: de::Error>(text: String) -> Result<Self, E>;
}

impl Shorthand for WaitArg {
    fn from_string<E: de::Error>(selector: String) -> Result<Self, E> {
        Ok(WaitArg {
            selector: Some(selector),
            ..Default::default()
        })
    }
}

impl Shorthand for EvalArg {
    fn from_string<E: de::Error>(js: String) -> Result<Self, E> {
        Ok(EvalArg {
            js,
            var: None,
            secret: false,
        })
    }
}

/// Deserialises a [`Shorthand`] from a string or a map; errors inside the map keep their
/// position because the map is read straight from the YAML stream.
///
/// (`#[serde(untagged)]` would also accept both forms, but it buffers the value first and so
/// loses the position and the precise message of an error inside the map.)
pub(super) struct StringOrMap<T>(pub(super) T);

impl<'de, T: Shorthand> Deserialize<'de> for StringOrMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StringOrMapVisitor(std::marker::PhantomData))
    }
}

/// The visitor behind [`StringOrMap`]: a string is the shorthand, a map the full form.
struct StringOrMapVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Shorthand> Visitor<'de> for StringOrMapVisitor<T> {
    type Value = StringOrMap<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a map")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        T::from_string(v.to_string()).map(StringOrMap)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(StringOrMap)
    }
}

impl<'de> Deserialize<'de> for RawStep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StepVisitor)
    }
}

/// Reads one step: a bare kind (`- reload`) or a map with one kind key and an optional `name`.
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
            "liveview_connected" => RawKind::LiveviewConnected(None),
            "liveview_idle" => RawKind::LiveviewIdle(None),
            "think" => RawKind::Think(None),
            "halt" => RawKind::Halt,
            "fail" => RawKind::Fail(None),
            "ws_close" => RawKind::WsClose,
            known if STEP_KINDS.contains(&known) => {
                return Err(E::custom(format!(
                    "step '{known}' needs an argument, e.g. `- {known}: ...`"
                )));
            }
            other => return Err(E::unknown_variant(other, STEP_KINDS)),
        };
        Ok(RawStep { name: None, kind })
    }

    /// `- kind: argument`, with `name:` before or after the kind key.
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
            kind = Some(read_kind(&key, &mut map)?);
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

/// The argument of the step kind `key`, read from the map's next value. Kinds without an
/// argument accept (and ignore) any value, so `reload:` and `reload: null` both work.
fn read_kind<'de, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<RawKind, A::Error> {
    Ok(match key {
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
        "liveview_connected" => RawKind::LiveviewConnected(map.next_value()?),
        "liveview_idle" => RawKind::LiveviewIdle(
            map.next_value::<Option<StringOrMap<IdleArg>>>()?
                .map(|arg| arg.0),
        ),
        "liveview_submit" => RawKind::LiveviewSubmit(map.next_value()?),
        "assert" => RawKind::Assert(map.next_value()?),
        "extract" => RawKind::Extract(map.next_value()?),
        "coordinate" => RawKind::Coordinate(map.next_value()?),
        "think" => RawKind::Think(map.next_value()?),
        "eval" => RawKind::Eval(map.next_value::<StringOrMap<EvalArg>>()?.0),
        "group" => RawKind::Group(map.next_value()?),
        "repeat" => RawKind::Repeat(map.next_value()?),
        "halt" => {
            map.next_value::<de::IgnoredAny>()?;
            RawKind::Halt
        }
        "fail" => RawKind::Fail(map.next_value()?),
        "request" => RawKind::Request(Box::new(map.next_value::<StringOrMap<RequestArg>>()?.0)),
        "ws_connect" => RawKind::WsConnect(map.next_value::<StringOrMap<WsConnectArg>>()?.0),
        "ws_send" => RawKind::WsSend(map.next_value()?),
        "ws_expect" => RawKind::WsExpect(map.next_value::<StringOrMap<WsExpectArg>>()?.0),
        "ws_close" => {
            map.next_value::<de::IgnoredAny>()?;
            RawKind::WsClose
        }
        other => return Err(de::Error::unknown_variant(other, STEP_KINDS)),
    })
}
