//! Step-by-step traces for `liveload try`: after every step, what it did — how long it took,
//! whether it failed and why, the variables it set, the page's URL, the console messages and
//! exceptions it caused, and optionally a screenshot — sent to the controller as it happens.
//!
//! Tracing is for one user (the console lines are gathered per agent) and costs nothing when
//! off: no tracer, no console buffer.

use std::time::Duration;

use liveload_proto::{AgentMessage, Step, StepKind, StepTrace, TracePhase};
use tokio::sync::mpsc;

use crate::steps::UserState;

/// Where a traced user's steps go.
pub struct Tracer {
    /// The controller's connection.
    out: mpsc::UnboundedSender<AgentMessage>,
    /// Take a screenshot after every step.
    screenshots: bool,
}

impl Tracer {
    /// A tracer sending to `out`.
    pub fn new(out: mpsc::UnboundedSender<AgentMessage>, screenshots: bool) -> Tracer {
        Tracer { out, screenshots }
    }

    /// A group or repeat begins its steps.
    pub fn begin(&self, user: &UserState<'_>, step: &Step) {
        let trace = self.trace(user, step, TracePhase::Begin);
        let _ = self.out.send(AgentMessage::Trace(Box::new(trace)));
    }

    /// A step ended after `elapsed`, failing with `error` or not.
    pub async fn end(
        &self,
        user: &UserState<'_>,
        step: &Step,
        elapsed: Duration,
        error: Option<&anyhow::Error>,
    ) {
        let mut trace = self.trace(user, step, TracePhase::End);
        trace.duration_ms = elapsed.as_secs_f64() * 1000.0;
        trace.error = error.map(|e| user.secrets.redact(&format!("{e:#}")));
        trace.vars = set_by(step)
            .map(|var| {
                let value = user.vars.get(var).cloned().unwrap_or_default();
                (var.to_string(), user.secrets.redact(&value))
            })
            .into_iter()
            .collect();
        trace.console = user
            .recorder
            .take_console()
            .iter()
            .map(|line| user.secrets.redact(line))
            .collect();
        if let Some(url) = user.protocol.as_ref().and_then(|p| p.liveview_url()) {
            trace.url = Some(user.secrets.redact(url));
        }
        if let Some(page) = user.page {
            // Bounded: a step that started a navigation (a click on a link, a script setting
            // `location`) leaves a page that may not answer until the new document commits,
            // and a trace must never hold the user (or `liveload try`) forever.
            let bound = crate::capture::CAPTURE_TIMEOUT;
            trace.url = tokio::time::timeout(bound, page.url())
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .map(|url| user.secrets.redact(&url));
            // A container's last step already showed the page.
            let container = matches!(step.kind, StepKind::Group { .. } | StepKind::Repeat { .. });
            if self.screenshots && !container {
                let shot = crate::capture::screenshot(page, &user.secrets);
                trace.screenshot = tokio::time::timeout(bound, shot)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
            }
        }
        let _ = self.out.send(AgentMessage::Trace(Box::new(trace)));
    }

    /// The parts of a trace every phase has.
    fn trace(&self, user: &UserState<'_>, step: &Step, phase: TracePhase) -> StepTrace {
        let number = |name: &str| {
            user.vars
                .get(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        StepTrace {
            user_id: number("user_id"),
            iteration: number("iteration"),
            depth: user.depth,
            name: step.name.clone(),
            phase,
            duration_ms: 0.0,
            error: None,
            vars: Vec::new(),
            url: None,
            console: Vec::new(),
            screenshot: Vec::new(),
        }
    }
}

/// The variable a step sets, if it sets one.
fn set_by(step: &Step) -> Option<&str> {
    match &step.kind {
        StepKind::Extract { var, .. } => Some(var),
        StepKind::Eval { var: Some(var), .. } => Some(var),
        _ => None,
    }
}
