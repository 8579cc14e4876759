//! Lowering: from the raw, as-written steps to the protocol's [`Step`]s that agents run.
//!
//! Lowering is where meaning is checked: durations parse, `{{variables}}` exist at the point
//! they are used, and argument combinations make sense (`assert` has exactly one form). Each
//! step also gets its default metric name here (`click #send`), so a report names steps the
//! way the file wrote them.
//!
//! Errors found here have no parser position (the raw types no longer know where they came
//! from), so they are [`Located`]: a message plus a *needle*, a piece of the offending text.
//! [`Source::locate`] turns one into `file:line:column` by finding the first line that holds
//! the needle. That is exact for the common case (the bad value appears once) and close
//! otherwise, and it costs nothing while parsing: no spans are carried through serde.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use liveload_proto::{AssertCheck, DataTable, Step, StepKind, WaitCondition};

use super::raw::{
    AssertArg, CoordinateArg, EvalArg, FieldValue, GroupArg, IdleArg, PressArg, RawKind, RawStep,
    RepeatArg, SubmitArg, TimeoutArg, WaitArg, WaitState,
};
use super::{BUILTIN_VARIABLES, parse_duration, template_variables};
use crate::Error;

/// What a bare `- think` waits when the file sets no `think_time:`.
pub(super) const DEFAULT_THINK_TIME: &str = "1s";

/// An error found after parsing: the message and the text to locate it by.
#[derive(Debug)]
pub(super) struct Located {
    /// What is wrong and what was expected.
    pub(super) message: String,
    /// Text whose first occurrence in the file marks where the error is.
    pub(super) needle: String,
}

impl Located {
    /// An error about `needle`, explained by `message`.
    pub(super) fn new(message: impl Into<String>, needle: impl Into<String>) -> Self {
        Located {
            message: message.into(),
            needle: needle.into(),
        }
    }
}

/// The scenario file being read: turns both kinds of errors into [`Error::Scenario`] with a
/// line and a column.
pub(super) struct Source<'a> {
    /// The file, as named in errors.
    path: &'a Path,
    /// Its text, searched for [`Located`] needles.
    text: &'a str,
}

impl<'a> Source<'a> {
    /// The file at `path`, whose contents are `text`.
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        Source { path, text }
    }

    /// An error at `line`:`column` of this file.
    fn error(&self, line: usize, column: usize, message: String) -> Error {
        Error::Scenario {
            file: PathBuf::from(self.path),
            line,
            column,
            message,
        }
    }

    /// A structural error from the YAML parser, at the parser's own position.
    pub(super) fn parse_error(&self, e: serde_yaml_ng::Error) -> Error {
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
        self.error(line, column, message)
    }

    /// An error found after parsing, at the first line holding its needle (1:1 if none does).
    pub(super) fn locate(&self, located: Located) -> Error {
        let (line, column) = locate(self.text, &located.needle).unwrap_or((1, 1));
        self.error(line, column, located.message)
    }
}

/// Line and column (1-based, the column in characters) of the first occurrence of `needle` in
/// `text`.
fn locate(text: &str, needle: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(i, line)| {
        line.find(needle)
            .map(|col| (i + 1, line[..col].chars().count() + 1))
    })
}

/// Parse a duration written in the file, located at its own text.
pub(super) fn duration(text: &str) -> Result<Duration, Located> {
    parse_duration(text).map_err(|m| Located::new(m, text))
}

/// The three step lists of a user's life, lowered in the order a user runs them
/// (`on_start`, `steps`, `on_stop`), so that a variable `on_start` extracts (a session id, a
/// login's token) is known to the iteration's steps and to `on_stop`.
pub(super) fn lower_user_steps(
    on_start: Vec<RawStep>,
    steps: Vec<RawStep>,
    on_stop: Vec<RawStep>,
    data: Option<&DataTable>,
    think_time: &str,
) -> Result<[Vec<Step>; 3], Located> {
    let mut lowering = lowering(data, think_time);
    Ok([
        lowering.steps(on_start)?,
        lowering.steps(steps)?,
        lowering.steps(on_stop)?,
    ])
}

fn lowering<'a>(data: Option<&DataTable>, think_time: &'a str) -> Lowering<'a> {
    let mut known: BTreeSet<String> = BUILTIN_VARIABLES.iter().map(|s| s.to_string()).collect();
    if let Some(table) = data {
        known.extend(table.columns.iter().cloned());
    }
    Lowering { known, think_time }
}

/// How long a coordination group waits for its last members, when the step does not say.
const DEFAULT_COORDINATE_TIMEOUT_MS: u64 = 5_000;

/// The variables a `coordinate` step sets: the group's number at its point, the user's place
/// in it, its members' user ids (comma-separated, in order of arrival), its size.
pub const GROUP_VARIABLES: [&str; 4] = ["group_id", "group_index", "group_peers", "group_size"];

/// A lowered step before its name is settled: the default name, and what it does.
pub(super) type Lowered = (String, StepKind);

/// Turns raw steps into protocol steps, checking durations and template variables in order.
///
/// Steps are lowered in file order, depth first, so `known` grows exactly as it will when an
/// agent runs them: a variable is usable only after the step that sets it.
pub(super) struct Lowering<'a> {
    /// Variables defined at this point of the scenario.
    pub(super) known: BTreeSet<String>,
    /// What a bare `- think` waits.
    think_time: &'a str,
}

impl Lowering<'_> {
    /// Check that every `{{variable}}` in `text` is known here; the text itself is kept as is
    /// (agents substitute at run time).
    pub(super) fn template(&self, text: &str) -> Result<String, Located> {
        for name in template_variables(text) {
            if self.known.contains(name) {
                continue;
            }
            match liveload_proto::Generator::parse(name) {
                Some(Ok(_)) => continue,
                Some(Err(message)) => {
                    return Err(Located::new(message, format!("{{{{{name}")));
                }
                None => {}
            }
            let known: Vec<&str> = self.known.iter().map(String::as_str).collect();
            return Err(Located::new(
                format!(
                    "unknown template variable '{{{{{name}}}}}': known here are {}, and the \
                     generators {}",
                    known.join(", "),
                    liveload_proto::template::GENERATORS
                ),
                format!("{{{{{name}"),
            ));
        }
        Ok(text.to_string())
    }

    /// A duration in whole milliseconds, as the protocol carries them.
    fn duration_ms(&self, text: &str) -> Result<u64, Located> {
        duration(text).map(|d| d.as_millis() as u64)
    }

    /// A step's `timeout:`; `None` lets the agent wait the scenario's `step_timeout`, so the
    /// one setting governs every wait that does not name its own.
    pub(super) fn timeout_ms(&self, timeout: &Option<String>) -> Result<Option<u64>, Located> {
        timeout
            .as_deref()
            .map(|text| self.duration_ms(text))
            .transpose()
    }

    /// Lower a list of steps, in order.
    fn steps(&mut self, raw: Vec<RawStep>) -> Result<Vec<Step>, Located> {
        raw.into_iter().map(|s| self.step(s)).collect()
    }

    /// Lower one step: dispatch on its kind, then name it (its own `name:` wins over the
    /// default). Each family of kinds has its own helper below.
    fn step(&mut self, raw: RawStep) -> Result<Step, Located> {
        let (default_name, kind) = match raw.kind {
            RawKind::Navigate(url) => (
                format!("navigate {url}"),
                StepKind::Navigate {
                    url: self.template(&url)?,
                },
            ),
            RawKind::Reload => ("reload".into(), StepKind::Reload),
            RawKind::Click(s) => {
                self.on_element("click", s, |selector| StepKind::Click { selector })?
            }
            RawKind::Fill(f) => self.set_field("fill", f, |selector, value| StepKind::Fill {
                selector,
                value,
            })?,
            RawKind::Clear(s) => {
                self.on_element("clear", s, |selector| StepKind::Clear { selector })?
            }
            RawKind::Press(p) => self.press(p)?,
            RawKind::Check(s) => {
                self.on_element("check", s, |selector| StepKind::Check { selector })?
            }
            RawKind::Uncheck(s) => {
                self.on_element("uncheck", s, |selector| StepKind::Uncheck { selector })?
            }
            RawKind::Select(f) => self.set_field("select", f, |selector, value| {
                StepKind::Select { selector, value }
            })?,
            RawKind::Hover(s) => {
                self.on_element("hover", s, |selector| StepKind::Hover { selector })?
            }
            RawKind::Focus(s) => {
                self.on_element("focus", s, |selector| StepKind::Focus { selector })?
            }
            RawKind::Blur(s) => {
                self.on_element("blur", s, |selector| StepKind::Blur { selector })?
            }
            RawKind::WaitFor(w) => self.wait_for(w)?,
            RawKind::LiveviewConnected(arg) => self.liveview_connected(arg)?,
            RawKind::LiveviewIdle(selector) => self.liveview_idle(selector)?,
            RawKind::LiveviewSubmit(s) => self.liveview_submit(s)?,
            RawKind::Assert(a) => self.assert(a)?,
            RawKind::Extract(e) => self.extract(e)?,
            RawKind::Coordinate(c) => self.coordinate(c)?,
            RawKind::Think(text) => self.think(text)?,
            RawKind::Eval(e) => self.eval(e)?,
            RawKind::Group(g) => self.group(g)?,
            RawKind::Repeat(r) => self.repeat(r)?,
            RawKind::Halt => ("halt".into(), StepKind::Halt),
            RawKind::Fail(message) => self.fail(message)?,
            RawKind::Request(r) => self.request(*r)?,
            RawKind::WsConnect(a) => self.ws_connect(a)?,
            RawKind::WsSend(text) => self.ws_send(text)?,
            RawKind::WsExpect(a) => self.ws_expect(a)?,
            RawKind::WsClose => ("ws_close".into(), StepKind::WsClose),
        };
        Ok(Step {
            name: raw.name.unwrap_or(default_name),
            kind,
        })
    }

    // Element actions. The default name quotes the selector as written, before any check.

    /// A step that acts on one element (`click`, `hover`, ...): `verb selector`.
    fn on_element(
        &self,
        verb: &str,
        selector: String,
        kind: impl FnOnce(String) -> StepKind,
    ) -> Result<Lowered, Located> {
        Ok((
            format!("{verb} {selector}"),
            kind(self.template(&selector)?),
        ))
    }

    /// A step that puts a value into a field (`fill`, `select`).
    fn set_field(
        &self,
        verb: &str,
        field: FieldValue,
        kind: impl FnOnce(String, String) -> StepKind,
    ) -> Result<Lowered, Located> {
        let name = format!("{verb} {}", field.selector);
        let selector = self.template(&field.selector)?;
        let value = self.template(&field.value)?;
        Ok((name, kind(selector, value)))
    }

    /// `press`: named by its key, since the selector is optional.
    fn press(&self, press: PressArg) -> Result<Lowered, Located> {
        Ok((
            format!("press {}", press.key),
            StepKind::Press {
                selector: press.selector.map(|s| self.template(&s)).transpose()?,
                key: press.key,
            },
        ))
    }

    // Waits.

    /// `wait_for`: exactly one condition, and an optional timeout.
    fn wait_for(&self, wait: WaitArg) -> Result<Lowered, Located> {
        let given = [
            wait.selector.is_some(),
            wait.text.is_some(),
            wait.url.is_some(),
            wait.network_idle.is_some(),
            wait.js.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            return Err(Located::new(
                "wait_for needs exactly one of: selector, text, url, network_idle, js",
                "wait_for",
            ));
        }
        let timeout_ms = self.timeout_ms(&wait.timeout)?;
        let (name, condition) = self.wait_condition(wait)?;
        Ok((
            name,
            StepKind::WaitFor {
                condition,
                timeout_ms,
            },
        ))
    }

    /// The one condition of a `wait_for` (already checked to be exactly one), and its name.
    fn wait_condition(&self, wait: WaitArg) -> Result<(String, WaitCondition), Located> {
        if let Some(selector) = wait.selector {
            let hidden = wait.state == Some(WaitState::Hidden);
            let name = format!("wait_for {selector}{}", if hidden { " hidden" } else { "" });
            let selector = self.template(&selector)?;
            let condition = if hidden {
                WaitCondition::Hidden { selector }
            } else {
                WaitCondition::Visible { selector }
            };
            Ok((name, condition))
        } else if let Some(text) = wait.text {
            Ok((
                format!("wait_for text {text}"),
                WaitCondition::Text {
                    text: self.template(&text)?,
                },
            ))
        } else if let Some(pattern) = wait.url {
            Ok((
                format!("wait_for url {pattern}"),
                WaitCondition::Url {
                    pattern: self.template(&pattern)?,
                },
            ))
        } else if let Some(expression) = wait.js {
            Ok((
                format!("wait_for js {}", expression.trim()),
                WaitCondition::Js {
                    expression: self.template(&expression)?,
                },
            ))
        } else {
            let idle = wait.network_idle.unwrap_or_default();
            Ok((
                "wait_for network_idle".into(),
                WaitCondition::NetworkIdle {
                    idle_ms: self.duration_ms(&idle)?,
                },
            ))
        }
    }

    /// `liveview_connected`: wait until the page's LiveView socket has joined.
    fn liveview_connected(&self, arg: Option<TimeoutArg>) -> Result<Lowered, Located> {
        let arg = arg.unwrap_or_default();
        Ok((
            "liveview_connected".into(),
            StepKind::WaitFor {
                condition: WaitCondition::LiveviewConnected,
                timeout_ms: self.timeout_ms(&arg.timeout)?,
            },
        ))
    }

    /// `liveview_idle`: no LiveView update pending inside `selector` (the whole page without).
    fn liveview_idle(&self, arg: Option<IdleArg>) -> Result<Lowered, Located> {
        let arg = arg.unwrap_or_default();
        let selector = arg.selector.unwrap_or_else(|| "body".into());
        Ok((
            format!("liveview_idle {selector}"),
            StepKind::WaitFor {
                condition: WaitCondition::LiveviewIdle {
                    selector: self.template(&selector)?,
                },
                timeout_ms: self.timeout_ms(&arg.timeout)?,
            },
        ))
    }

    /// `liveview_submit`: submit a form over the LiveView socket and wait for the reply.
    fn liveview_submit(&self, submit: SubmitArg) -> Result<Lowered, Located> {
        Ok((
            format!("liveview_submit {}", submit.form),
            StepKind::LiveviewSubmit {
                form: self.template(&submit.form)?,
                wait_for: submit.wait_for.map(|w| self.template(&w)).transpose()?,
                timeout_ms: self.timeout_ms(&submit.timeout)?,
            },
        ))
    }

    // Assertions and variables.

    /// `assert`: exactly one of its three forms.
    fn assert(&self, assert: AssertArg) -> Result<Lowered, Located> {
        let check = match (assert.text, assert.selector, assert.count, assert.visible) {
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
        Ok((name, StepKind::Assert { check }))
    }

    /// `eval`: run JavaScript, optionally keeping its result in a variable.
    fn eval(&mut self, eval: EvalArg) -> Result<Lowered, Located> {
        let js = self.template(&eval.js)?;
        if let Some(var) = &eval.var {
            self.known.insert(var.clone());
        }
        Ok((
            format!("eval {}", eval.var.as_deref().unwrap_or("js")),
            StepKind::Eval {
                js,
                var: eval.var,
                secret: eval.secret,
            },
        ))
    }

    // Pacing and control flow.

    /// `think`: a pause of a fixed duration or a random one in a range (`1s..3s`).
    fn think(&self, text: Option<String>) -> Result<Lowered, Located> {
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
        Ok((
            format!("think {text}"),
            StepKind::Think {
                min_ms: min,
                max_ms: max,
            },
        ))
    }

    /// `group`: its steps, measured together under the group's name.
    fn group(&mut self, group: GroupArg) -> Result<Lowered, Located> {
        Ok((
            group.name,
            StepKind::Group {
                steps: self.steps(group.steps)?,
            },
        ))
    }

    /// `repeat`: its steps, `times` times over.
    fn repeat(&mut self, repeat: RepeatArg) -> Result<Lowered, Located> {
        Ok((
            format!("repeat {}", repeat.times),
            StepKind::Repeat {
                times: repeat.times,
                steps: self.steps(repeat.steps)?,
            },
        ))
    }

    /// `coordinate`: a point's name, a group of at least 1, a timeout (5 s by default). The
    /// group's variables are known from here on.
    fn coordinate(&mut self, c: CoordinateArg) -> Result<Lowered, Located> {
        if c.name.trim().is_empty() {
            return Err(Located::new(
                "coordinate: name must not be empty",
                "coordinate",
            ));
        }
        if c.group == 0 {
            return Err(Located::new(
                "coordinate: group must be at least 1",
                "group",
            ));
        }
        let timeout_ms = match &c.timeout {
            Some(text) => self.duration_ms(text)?,
            None => DEFAULT_COORDINATE_TIMEOUT_MS,
        };
        if timeout_ms == 0 {
            return Err(Located::new(
                "coordinate: timeout must be more than 0",
                "timeout",
            ));
        }
        self.known
            .extend(GROUP_VARIABLES.iter().map(|v| v.to_string()));
        Ok((
            format!("coordinate {}", c.name),
            StepKind::Coordinate {
                point: c.name,
                group: c.group,
                timeout_ms,
            },
        ))
    }

    /// `fail`: end the iteration as failed, with a message.
    fn fail(&self, message: Option<String>) -> Result<Lowered, Located> {
        let message = message.unwrap_or_else(|| "the scenario failed the iteration".into());
        Ok((
            "fail".into(),
            StepKind::Fail {
                message: self.template(&message)?,
            },
        ))
    }
}

/// `allow_schemes:`: scheme names as URLs spell them (`file`, `chrome-extension`), lowercased.
pub(super) fn lower_schemes(schemes: Vec<String>) -> std::result::Result<Vec<String>, Located> {
    schemes
        .into_iter()
        .map(|scheme| {
            let lower = scheme.trim_end_matches(':').to_ascii_lowercase();
            let valid = lower.starts_with(|c: char| c.is_ascii_alphabetic())
                && lower
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if valid {
                Ok(lower)
            } else {
                Err(Located::new(
                    format!("allow_schemes: '{scheme}' is not a URL scheme (like file)"),
                    "allow_schemes",
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
