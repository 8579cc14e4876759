//! `liveload try SCENARIO`: run one user for one iteration on this machine and show every step
//! as it runs — how long it took, whether it passed (and why not), the variables it set, the
//! URL after it, the console messages and exceptions it caused — optionally with a screenshot
//! per step. The way to write a scenario: write a step, try it, add the next.
//!
//! It is a real run in miniature: a local agent, a real Chromium, the same step code and the
//! same protocol as `liveload run`, with the assignment's diagnostics asking for a trace and
//! one iteration. Secrets (secret CSV columns and variables, what is typed into password
//! inputs) are redacted by the agent before anything reaches this output.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use liveload_core::agent_client::AgentConnection;
use liveload_core::error::exit_code;
use liveload_core::proto::{
    AgentMessage, Assignment, ControllerMessage, Diagnostics, StepTrace, TraceOptions, TracePhase,
};
use liveload_core::run;
use liveload_core::scenario::Scenario;
use liveload_core::{Backend, Error, NodeSpec, names};
use liveload_local::LocalBackend;
use tokio::time::Instant;

use crate::cli::OutputFormat;

/// Options of `liveload try`.
#[derive(Debug, Clone, Args)]
pub struct TryArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Target base URL (overrides the scenario's `base_url`).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Save a PNG screenshot after every step into this directory.
    #[arg(long, value_name = "DIR")]
    pub screenshots: Option<PathBuf>,
    /// Run as this user id (its CSV row is `id % rows`).
    #[arg(long, default_value_t = 0)]
    pub user: u64,
    /// Chromium executable.
    #[arg(long, env = "LIVELOAD_CHROMIUM")]
    pub chromium: Option<PathBuf>,
    /// Where the local agent's records go (`LIVELOAD_STATE_DIR`).
    #[arg(long, env = "LIVELOAD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Run `liveload try`; returns the exit code: 0 when the iteration passed, 7 when it failed,
/// the usual codes for an invalid scenario or an agent that could not start.
pub async fn run(args: TryArgs) -> i32 {
    let mut scenario = match Scenario::from_file(&args.scenario) {
        Ok(scenario) => scenario,
        Err(e) => return crate::output::error(&e, OutputFormat::Text),
    };
    if let Some(base_url) = &args.base_url {
        scenario.set_base_url(base_url);
    }
    if let Some(dir) = &args.screenshots
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        let e = Error::io(format!("creating {}", dir.display()), e);
        return crate::output::error(&e, OutputFormat::Text);
    }
    if let Some(first) = scenario.mix.first().cloned() {
        println!(
            "'{}' is a mix: trying its first scenario, '{}' ({})",
            scenario.name,
            first.name,
            first.file.display()
        );
        scenario.engine = first.engine;
        scenario.steps = first.steps;
        scenario.user_loop = first.user_loop;
        scenario.mix.clear();
    }
    println!(
        "trying '{}' as user {} against {}",
        scenario.name,
        args.user,
        scenario.target_of(args.user)
    );
    let outcome = tokio::select! {
        outcome = try_once(&scenario, &args) => outcome,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    };
    match outcome {
        Ok(Verdict::Passed(seconds)) => {
            println!("iteration passed in {seconds:.2} s");
            exit_code::OK
        }
        Ok(Verdict::Failed(error)) => {
            println!("iteration failed: {error}");
            exit_code::RUN_FAILED
        }
        Err(e) => crate::output::error(&e, OutputFormat::Text),
    }
}

/// How the one iteration went.
enum Verdict {
    /// Every step passed; seconds the iteration took.
    Passed(f64),
    /// A step failed (or the iteration timed out): the error, as counted.
    Failed(String),
}

/// Start a local agent, run the iteration, and destroy the agent whatever happened.
async fn try_once(scenario: &Scenario, args: &TryArgs) -> Result<Verdict, Error> {
    let mut builder = LocalBackend::builder().chromium(args.chromium.clone());
    if let Some(dir) = &args.state_dir {
        builder = builder.state_dir(dir);
    }
    let backend = builder.build()?;
    let run_id = names::new_run_id("try");
    let token = names::new_token();
    let spec = NodeSpec {
        run_id: run_id.clone(),
        index: 0,
        token: token.clone(),
        ttl: scenario.iteration_timeout + Duration::from_secs(300),
        grace: Duration::from_secs(30),
        tls: None,
        no_browser: scenario.engine.is_protocol(),
    };
    let handle = backend.create(&spec).await?;
    let result = async {
        let endpoint =
            run::wait_ready_or_destroy(&backend, &handle, Duration::from_secs(60)).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut connection, _) =
            AgentConnection::connect(&handle.id, &endpoint, &token, deadline).await?;
        let assignment = assignment(scenario, &run_id, args);
        connection
            .send(&ControllerMessage::Prepare(Box::new(assignment)))
            .await?;
        let verdict = follow(&mut connection, scenario, args.screenshots.as_deref()).await;
        let _ = connection.send(&ControllerMessage::Shutdown).await;
        verdict
    }
    .await;
    backend.destroy(&handle).await?;
    result
}

/// How many timeouts the one user may take: its iteration, and `on_start` and `on_stop`
/// around it, each within its own.
fn phases(scenario: &Scenario) -> u32 {
    let around = [&scenario.user_loop.on_start, &scenario.user_loop.on_stop];
    1 + around.iter().filter(|steps| !steps.is_empty()).count() as u32
}

/// One user, one iteration, traced.
fn assignment(scenario: &Scenario, run_id: &str, args: &TryArgs) -> Assignment {
    let phases = phases(scenario);
    Assignment {
        memory_budget_bytes: None,
        user_loop: scenario.user_loop.clone(),
        trace_file: None,
        run_id: run_id.to_string(),
        scenario: scenario.name.clone(),
        base_url: scenario.base_url().to_string(),
        // As node 0 of a run would have them: the user goes where it would go in a run.
        base_urls: liveload_core::scenario::targets_for_node(
            &scenario.base_urls,
            scenario.target_distribution,
            0,
        ),
        host_rules: scenario.host_rules.clone(),
        engine: scenario.engine,
        groups: Vec::new(),
        first_user_id: args.user,
        users: 1,
        // Room for the one iteration (and `on_start`); `max_iterations` ends the user after it.
        duration_ms: (scenario.iteration_timeout.saturating_mul(phases))
            .saturating_add(Duration::from_secs(1))
            .as_millis() as u64,
        iteration_timeout_ms: scenario.iteration_timeout.as_millis() as u64,
        start_interval_ms: 0,
        start_batch: 1,
        steps: scenario.steps.clone(),
        step_timeout_ms: scenario.step_timeout.as_millis() as u64,
        // The agent's rule: its user `first_user_id + k` takes row `k % rows`.
        data: scenario.data.as_ref().map(|table| {
            liveload_core::scenario::rows_for_node(table, scenario.data_mode, args.user, 1)
        }),
        workload: Default::default(),
        throttle: None,
        no_browser: scenario.engine.is_protocol(),
        diagnostics: Diagnostics {
            captures_per_error: 0,
            trace: Some(TraceOptions {
                screenshots: args.screenshots.is_some(),
            }),
            max_iterations: Some(1),
        },
        allow_schemes: scenario.allow_schemes.clone(),
    }
}

/// Wait for `Prepared`, start, print every trace until `Finished`.
async fn follow(
    connection: &mut AgentConnection,
    scenario: &Scenario,
    screenshots: Option<&Path>,
) -> Result<Verdict, Error> {
    let deadline = Instant::now()
        + scenario.iteration_timeout.saturating_mul(phases(scenario))
        + Duration::from_secs(90);
    let mut started = None;
    let mut step = 0;
    let mut errors = Vec::new();
    let mut shown_error = String::new();
    loop {
        let message = tokio::time::timeout_at(deadline, connection.recv())
            .await
            .map_err(|_| Error::RunFailed {
                message: "the agent did not finish the iteration in time".into(),
            })??;
        match message {
            AgentMessage::Prepared { .. } => {
                connection.send(&ControllerMessage::Start).await?;
                started = Some(Instant::now());
            }
            AgentMessage::Trace(trace) => {
                if trace.phase == TracePhase::End {
                    step += 1;
                }
                // A group or repeat fails with its failing step's error, printed just before.
                let repeated = match &trace.error {
                    Some(error) if !shown_error.is_empty() && error.ends_with(&shown_error) => true,
                    Some(error) => {
                        shown_error = error.clone();
                        false
                    }
                    None => false,
                };
                print_trace(&trace, step, screenshots, !repeated)?;
            }
            // One user: its group at a `coordinate` step is itself, at once.
            AgentMessage::Arrived { point, user_id } => {
                let release = ControllerMessage::Release {
                    point,
                    group_id: 0,
                    wanted: 1,
                    members: vec![user_id],
                };
                connection.send(&release).await?;
            }
            AgentMessage::Snapshot(snapshot) => errors.extend(errors_of(&snapshot)),
            AgentMessage::Finished(snapshot) => {
                errors.extend(errors_of(&snapshot));
                let seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
                let failed = snapshot
                    .counters
                    .get("iterations_failed")
                    .copied()
                    .unwrap_or(0)
                    > 0
                    || !errors.is_empty();
                return Ok(match (failed, errors.pop()) {
                    (false, _) => Verdict::Passed(seconds),
                    (true, error) => Verdict::Failed(error.unwrap_or_else(|| "unknown".into())),
                });
            }
            AgentMessage::Failed { message } => return Err(Error::RunFailed { message }),
            _ => {}
        }
    }
}

/// The error messages a snapshot counted (`error:<message>`).
fn errors_of(snapshot: &liveload_core::proto::MetricsSnapshot) -> Vec<String> {
    snapshot
        .counters
        .keys()
        .filter_map(|k| k.strip_prefix("error:").map(str::to_string))
        .collect()
}

/// Print one trace (and save its screenshot): a status line, then its details indented.
fn print_trace(
    trace: &StepTrace,
    step: usize,
    screenshots: Option<&Path>,
    show_error: bool,
) -> Result<(), Error> {
    let indent = "  ".repeat(trace.depth as usize);
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("writing to stdout", e);
    if trace.phase == TracePhase::Begin {
        writeln!(out, "          {indent}{} ...", trace.name).map_err(io)?;
        return Ok(());
    }
    let status = if trace.error.is_some() { "FAIL" } else { "ok" };
    let url = trace.url.as_deref().unwrap_or("");
    writeln!(
        out,
        "{status:<4} {:>6} ms {indent}{}  -> {url}",
        trace.duration_ms.round(),
        trace.name
    )
    .map_err(io)?;
    let detail = format!("{:13}{indent}", "");
    if let Some(error) = trace.error.as_ref().filter(|_| show_error) {
        writeln!(out, "{detail}error: {error}").map_err(io)?;
    }
    for (name, value) in &trace.vars {
        writeln!(out, "{detail}set {name} = {value:?}").map_err(io)?;
    }
    for line in &trace.console {
        writeln!(out, "{detail}console {line}").map_err(io)?;
    }
    if let Some(dir) = screenshots
        && !trace.screenshot.is_empty()
    {
        let path = dir.join(format!("{step:02}-{}.png", slug(&trace.name)));
        std::fs::write(&path, &trace.screenshot)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        writeln!(out, "{detail}screenshot {}", path.display()).map_err(io)?;
    }
    out.flush().map_err(io)
}

/// A step name as a file name: lowercase letters, digits and dashes, at most 40 characters.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(40);
    let out = out.trim_matches('-').to_string();
    if out.is_empty() { "step".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_become_file_names() {
        assert_eq!(slug("click #inc"), "click-inc");
        assert_eq!(
            slug("wait_for js window.socket && x"),
            "wait-for-js-window-socket-x"
        );
        assert_eq!(slug("«»"), "step");
    }

    #[test]
    fn one_traced_iteration_of_one_user() {
        let scenario = Scenario::new("s", "http://127.0.0.1:1", vec![]);
        let args = TryArgs {
            scenario: "s.yaml".into(),
            base_url: None,
            screenshots: Some("shots".into()),
            user: 4,
            chromium: None,
            state_dir: None,
        };
        let a = assignment(&scenario, "r", &args);
        assert_eq!((a.users, a.first_user_id), (1, 4));
        assert_eq!(a.diagnostics.max_iterations, Some(1));
        assert_eq!(
            a.diagnostics.trace,
            Some(TraceOptions { screenshots: true })
        );
    }
}
