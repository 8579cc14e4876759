//! Live progress on the terminal (stderr), drawn from the run's events.

use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use liveload_core::run::{Event, Observer};

/// Progress bars for booting, running and tearing down. Hidden when stderr is not a terminal
/// or when output is JSON.
pub struct Progress {
    bars: MultiProgress,
    boot: Mutex<Option<ProgressBar>>,
    run: Mutex<Option<ProgressBar>>,
    teardown: Mutex<Option<ProgressBar>>,
    held: Mutex<Held>,
}

/// What teardown still has to destroy, for a second Ctrl-C to print.
#[derive(Debug, Default, Clone)]
pub struct Held {
    /// The run being torn down.
    pub run_id: Option<String>,
    /// Nodes not destroyed yet.
    pub nodes: Vec<String>,
}

impl Progress {
    /// New progress display; `visible` false draws nothing.
    pub fn new(visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Progress {
            bars: MultiProgress::with_draw_target(target),
            boot: Mutex::new(None),
            run: Mutex::new(None),
            teardown: Mutex::new(None),
            held: Mutex::default(),
        }
    }

    /// What teardown still has to destroy (empty before teardown begins).
    pub fn held(&self) -> Held {
        self.held.lock().expect("not poisoned").clone()
    }

    fn bar(&self, len: u64, template: &str) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    }

    /// Clear the bars.
    pub fn finish(&self) {
        for slot in [&self.boot, &self.run, &self.teardown] {
            if let Some(bar) = slot.lock().expect("not poisoned").take() {
                bar.finish();
            }
        }
    }
}

impl Observer for Progress {
    fn event(&self, event: &Event) {
        match event {
            Event::Planned(plan) => {
                let _ = self.bars.println(format!(
                    "plan: {} node(s), up to {} users each ({})",
                    plan.nodes, plan.users_per_node, plan.source
                ));
            }
            Event::Booting { nodes } => {
                let mut boot = self.boot.lock().expect("not poisoned");
                match boot.as_ref() {
                    Some(bar) => bar.inc_length(*nodes as u64),
                    None => {
                        *boot = Some(self.bar(
                            *nodes as u64,
                            "booting  [{bar:30}] {pos}/{len} nodes ready {elapsed}",
                        ))
                    }
                }
            }
            Event::NodeReady(_) => {
                if let Some(bar) = self.boot.lock().expect("not poisoned").as_ref() {
                    bar.inc(1);
                }
            }
            Event::Assigned { users } => {
                if let Some(bar) = self.boot.lock().expect("not poisoned").take() {
                    bar.finish();
                }
                let total: u64 = users.iter().sum();
                *self.run.lock().expect("not poisoned") = Some(self.bar(
                    total,
                    "running  [{bar:30}] {pos}/{len} users active {elapsed} {msg}",
                ));
            }
            Event::Started => {}
            Event::Progress {
                active_users,
                iterations_ok,
                iterations_failed,
                iterations_per_s,
                step_p95_ms,
                nodes,
                ..
            } => {
                if let Some(bar) = self.run.lock().expect("not poisoned").as_ref() {
                    bar.set_position(*active_users);
                    bar.set_message(format!(
                        "| {iterations_per_s} it/s | step p95 {step_p95_ms:.0} ms | \
                         {iterations_ok} ok, {iterations_failed} failed | {nodes} node(s)"
                    ));
                }
            }
            Event::NodeLost { node, reason } => {
                let _ = self.bars.println(format!(
                    "node {node} lost: {reason}; its users count failed"
                ));
            }
            Event::TearingDown { run_id, nodes } => {
                if let Some(bar) = self.run.lock().expect("not poisoned").take() {
                    bar.finish();
                }
                *self.teardown.lock().expect("not poisoned") = Some(self.bar(
                    nodes.len() as u64,
                    "teardown [{bar:30}] {pos}/{len} nodes destroyed",
                ));
                let mut held = self.held.lock().expect("not poisoned");
                held.run_id = Some(run_id.clone());
                held.nodes = nodes.clone();
            }
            Event::NodeDestroyed { node } => {
                if let Some(bar) = self.teardown.lock().expect("not poisoned").as_ref() {
                    bar.inc(1);
                }
                self.held
                    .lock()
                    .expect("not poisoned")
                    .nodes
                    .retain(|n| n != node);
            }
        }
    }
}
