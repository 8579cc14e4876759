//! The steps a simulated user performs in one iteration.
//!
//! A step is a name (its metric is `step:<name>`) and a kind. Strings marked *templated* may hold
//! `{{user_id}}`, `{{iteration}}`, CSV columns and variables set by earlier `extract`/`eval`
//! steps; the controller checks every name before the run, the agent fills them per user.
//! An agent that meets a kind it does not know refuses the assignment at `Prepare` (serde
//! rejects the unknown tag), before any user starts.

use serde::{Deserialize, Serialize};

/// One step of an iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The step's name in metrics and reports (`step:<name>`).
    pub name: String,
    /// What the step does.
    #[serde(flatten)]
    pub kind: StepKind,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// Load a URL (absolute, or relative to the base URL; templated) and wait for its `load`.
    Navigate {
        /// The URL.
        url: String,
    },
    /// Reload the page and wait for its `load`.
    Reload,
    /// Click the centre of the first element matching a selector, once it is actionable
    /// (attached, visible, stable, enabled, and not covered at that point).
    Click {
        /// CSS selector (templated).
        selector: String,
    },
    /// Enter text into an input as a user would: focus it, select what it holds, insert the
    /// text (`beforeinput` and `input` events).
    Fill {
        /// CSS selector (templated).
        selector: String,
        /// The value (templated).
        value: String,
    },
    /// Empty an input as a user would: select its content and press Delete.
    Clear {
        /// CSS selector (templated).
        selector: String,
    },
    /// Press a key (`Enter`, `Tab`, `a`), in an element or wherever the focus is.
    Press {
        /// Element to focus first (templated), or none.
        selector: Option<String>,
        /// The key.
        key: String,
    },
    /// Tick a checkbox (no-op when ticked).
    Check {
        /// CSS selector (templated).
        selector: String,
    },
    /// Untick a checkbox (no-op when unticked).
    Uncheck {
        /// CSS selector (templated).
        selector: String,
    },
    /// Choose an option of a `<select>` by value.
    Select {
        /// CSS selector (templated).
        selector: String,
        /// The option's value (templated).
        value: String,
    },
    /// Move the mouse over an element.
    Hover {
        /// CSS selector (templated).
        selector: String,
    },
    /// Focus an element.
    Focus {
        /// CSS selector (templated).
        selector: String,
    },
    /// Take the focus away from an element.
    Blur {
        /// CSS selector (templated).
        selector: String,
    },
    /// Wait until a condition holds.
    WaitFor {
        /// The condition.
        condition: WaitCondition,
        /// Give up after this many milliseconds; `None` waits the assignment's
        /// `step_timeout_ms`.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Submit a LiveView form and wait until LiveView has answered (its `phx-submit-loading`
    /// class is gone), then optionally for an element.
    LiveviewSubmit {
        /// The form's CSS selector (templated).
        form: String,
        /// An element to wait for afterwards (templated).
        wait_for: Option<String>,
        /// Give up after this many milliseconds; `None` waits the assignment's
        /// `step_timeout_ms`.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Fail the iteration unless a check holds now.
    Assert {
        /// The check.
        check: AssertCheck,
    },
    /// Read something from the page into a variable for later steps.
    Extract {
        /// The variable's name.
        var: String,
        /// The element (templated).
        selector: String,
        /// What to read.
        from: ExtractFrom,
        /// The value is secret: redact it from everything the agent reports.
        #[serde(default)]
        secret: bool,
    },
    /// Wait until `group` users (cluster-wide: the controller groups them) have reached the
    /// coordination point `point`, or until `timeout_ms` has passed since the group's first
    /// arrival; then go on together. The user learns its group (`{{group_id}}`,
    /// `{{group_index}}`, `{{group_peers}}`, `{{group_size}}`).
    Coordinate {
        /// The coordination point's name: users meet at the same name.
        point: String,
        /// Users per group.
        group: u32,
        /// How long a group waits for its last members after its first arrived, in ms.
        timeout_ms: u64,
    },
    /// Pause, like a person reading: fixed, or uniformly drawn from `min_ms..=max_ms`.
    Think {
        /// Shortest pause, in milliseconds.
        min_ms: u64,
        /// Longest pause, in milliseconds (equal to `min_ms` for a fixed pause).
        max_ms: u64,
    },
    /// Run JavaScript in the page (templated); the result, as a string, optionally into a
    /// variable.
    Eval {
        /// The expression (a promise is awaited).
        js: String,
        /// Variable for the result.
        var: Option<String>,
        /// The result is secret: redact it from everything the agent reports.
        #[serde(default)]
        secret: bool,
    },
    /// Named steps timed together (`group:<name>`).
    Group {
        /// The steps.
        steps: Vec<Step>,
    },
    /// Steps done `times` times in a row.
    Repeat {
        /// How many times.
        times: u32,
        /// The steps.
        steps: Vec<Step>,
    },
    /// Send an HTTP request and check its answer (`engine: http`).
    Request(Box<crate::HttpRequest>),
    /// Read part of the last answer into a variable (`engine: http`).
    ExtractAnswer {
        /// The variable's name.
        var: String,
        /// Which answer.
        #[serde(default)]
        from: crate::AnswerSource,
        /// What to read of it.
        value: crate::AnswerValue,
        /// The value is secret: redact it from everything the agent reports.
        #[serde(default)]
        secret: bool,
    },
    /// Open the user's WebSocket (`engine: http`): the URL is templated; a relative one joins
    /// the base URL, `http` becoming `ws`. The user's cookies go with the handshake.
    WsConnect {
        /// The URL.
        url: String,
        /// Give up after this many milliseconds; `None` waits the assignment's
        /// `step_timeout_ms`.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Send a text message on the user's WebSocket (templated).
    WsSend {
        /// The message.
        text: String,
    },
    /// Wait for a message on the user's WebSocket that passes `expect` (messages before it
    /// are skipped); the time from the last `ws_send` to it is `ws.reply`.
    WsExpect {
        /// What the message must hold (`contains`, `json`).
        expect: crate::AnswerCheck,
        /// Give up after this many milliseconds; `None` waits the assignment's
        /// `step_timeout_ms`.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Close the user's WebSocket.
    WsClose,
    /// End this iteration now, successfully.
    Halt,
    /// End this iteration now, as a failure.
    Fail {
        /// Why (templated).
        message: String,
    },
}

/// What `wait_for` waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "until", rename_all = "snake_case")]
pub enum WaitCondition {
    /// An element matching the selector is visible.
    Visible {
        /// CSS selector (templated).
        selector: String,
    },
    /// No element matching the selector is visible (or none exists).
    Hidden {
        /// CSS selector (templated).
        selector: String,
    },
    /// The page's text contains this text (templated).
    Text {
        /// The text.
        text: String,
    },
    /// The page's URL matches a pattern: `*` matches any run of characters (templated).
    Url {
        /// The pattern.
        pattern: String,
    },
    /// A JavaScript expression is truthy in the page (templated); checked in the page on every
    /// animation frame and DOM change, not by polling over the wire.
    Js {
        /// The expression.
        expression: String,
    },
    /// No new network resource has finished loading for `idle_ms`.
    NetworkIdle {
        /// Quiet time, in milliseconds.
        idle_ms: u64,
    },
    /// The LiveView socket is connected (`.phx-connected` exists).
    LiveviewConnected,
    /// No `phx-*-loading` class remains inside the selector.
    LiveviewIdle {
        /// CSS selector of the region (templated).
        selector: String,
    },
}

/// What `assert` checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum AssertCheck {
    /// The page's text contains this text (templated).
    Text {
        /// The text.
        text: String,
    },
    /// Exactly `count` elements match the selector.
    Count {
        /// CSS selector (templated).
        selector: String,
        /// How many.
        count: u64,
    },
    /// An element matching the selector is visible.
    Visible {
        /// CSS selector (templated).
        selector: String,
    },
}

impl StepKind {
    /// A page step the native LiveView client (`engine: liveview`) does itself, as LiveView's
    /// bindings would: one list for the scenario's validation and the agent's dispatch.
    /// Waits on JavaScript or the network need a browser.
    pub fn is_liveview_page_step(&self) -> bool {
        match self {
            StepKind::WaitFor { condition, .. } => !matches!(
                condition,
                WaitCondition::Js { .. } | WaitCondition::NetworkIdle { .. }
            ),
            _ => matches!(
                self,
                StepKind::Navigate { .. }
                    | StepKind::Reload
                    | StepKind::Click { .. }
                    | StepKind::Fill { .. }
                    | StepKind::Clear { .. }
                    | StepKind::Select { .. }
                    | StepKind::LiveviewSubmit { .. }
                    | StepKind::Assert { .. }
                    | StepKind::Extract { .. }
            ),
        }
    }
}

/// What `extract` reads from an element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ExtractFrom {
    /// Its visible text.
    Text,
    /// An attribute.
    Attribute {
        /// The attribute's name.
        name: String,
    },
    /// An input's current value.
    Value,
}
