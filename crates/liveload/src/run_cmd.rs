//! The commands that run load: `run`, `plan`, `demo`, and `cleanup` after them.

use std::path::Path;
use std::sync::Arc;

use liveload_core::lock::{ScenarioLock, default_state_dir};
use liveload_core::run::{self, Plan};
use liveload_core::scenario::Scenario;
use liveload_core::{Backend, Error, RunFilter};

use crate::cli::{self, BackendArgs, OutputFormat, RunFlags};
use crate::sequence::RunSummary;
use crate::{Ctx, control, output, progress};

/// The demo scenario, bundled so `liveload demo` works from any directory.
const DEMO_SCENARIO: &str = include_str!("../../../examples/demo.yaml");

/// Read a scenario, applying `--base-url`.
pub fn load_scenario(path: &Path, flags: &RunFlags) -> Result<Scenario, Error> {
    let mut scenario = Scenario::from_file(path)?;
    if let Some(base_url) = &flags.base_url {
        scenario.set_base_url(base_url);
    }
    Ok(scenario)
}

/// `liveload run` (and the demo): lock the scenario, build the backend, confirm a billed run's
/// cost, serve the control endpoint, run, write the report files, and map the outcome to an
/// exit code.
pub async fn run_scenario(
    scenario: Scenario,
    ctx: &Ctx<'_>,
    backend_args: &BackendArgs,
    flags: &RunFlags,
) -> i32 {
    run_one(scenario, ctx, backend_args, flags, None).await.0
}

/// One scenario's run, as [`run_scenario`], also returning its summary when it has a report.
/// Its report files go to `report_root/<run id>/` when given (one of several scenarios), else
/// where the flags say.
pub async fn run_one(
    scenario: Scenario,
    ctx: &Ctx<'_>,
    backend_args: &BackendArgs,
    flags: &RunFlags,
    report_root: Option<&Path>,
) -> (i32, Option<RunSummary>) {
    let format = flags.output;
    let mut options = match flags.options(&scenario) {
        Ok(o) => o,
        Err(e) => return (output::error(&e, format), None),
    };
    let state_dir = backend_args
        .state_dir
        .clone()
        .unwrap_or_else(default_state_dir);
    // One run of a scenario at a time on this machine; the lock dies with this process.
    options.state_dir = Some(state_dir.clone());
    let _lock = match ScenarioLock::acquire(&state_dir, &scenario.name) {
        Ok(lock) => lock,
        Err(e) => return (output::error(&e, format), None),
    };
    let backend = match ctx.backend(backend_args).await {
        Ok(b) => b,
        Err(e) => return (output::error(&e, format), None),
    };
    // Cloud machines cost money: show the plan and its cost, and ask (or take --yes). Local
    // processes and your own SSH hosts cost nothing extra.
    if backend.billing() == liveload_core::Billing::Billed {
        match confirm(backend.as_ref(), &options, flags.yes, format).await {
            Ok(confirmation) => options.cost_confirmation = Some(confirmation),
            Err(e) => return (output::error(&e, format), None),
        }
    }
    let observer = Arc::new(progress::Progress::new(format == OutputFormat::Text));
    let signals = crate::signals::Signals::listen(
        observer.clone(),
        format!("liveload cleanup --backend {}", backend_args.backend),
    );
    let (control_handle, control_end) = run::control_channel();
    let _control = match control::serve(control_handle, &state_dir, &options.cluster_name).await {
        Ok(server) => {
            if format == OutputFormat::Text {
                eprintln!(
                    "control: http://{} (GET /status, GET /metrics, POST /users; or `liveload users add N`)",
                    server.address
                );
            }
            server
        }
        Err(e) => return (output::error(&e, format), None),
    };
    let result = run::run_controlled(
        backend,
        &scenario,
        &options,
        observer.clone(),
        signals.first(),
        Some(control_end),
    )
    .await;
    observer.finish();
    match result {
        // The run ended; teardown could not confirm every node gone. The results stand:
        // write them, then say what may be left (exit 9).
        Err(Error::TeardownIncomplete {
            report: Some(report),
            backend,
            run_id,
            nodes,
            timeout,
        }) => {
            // A report that cannot be written must not hide what may still run (and bill).
            let dir = match write_report(&report, flags, format, report_root) {
                Ok(dir) => dir,
                Err(e) => {
                    eprintln!("error[{}]: {e}", e.code());
                    None
                }
            };
            let summary = RunSummary::of(&report, dir);
            // Text: the report's tables, then the error. JSON: one document, the error with
            // the report inside.
            let report = if format == OutputFormat::Text {
                output::report(&report, format);
                None
            } else {
                Some(report)
            };
            let error = Error::TeardownIncomplete {
                report,
                backend,
                run_id,
                nodes,
                timeout,
            };
            (output::error(&error, format), Some(summary))
        }
        Ok(report) => {
            let (code, summary) = finish_report(&report, flags, format, report_root);
            (code, Some(summary))
        }
        Err(e) => (output::error(&e, format), None),
    }
}

/// A run that produced its report: write its files, show it; its exit code and summary.
pub fn finish_report(
    report: &run::RunReport,
    flags: &RunFlags,
    format: OutputFormat,
    report_root: Option<&Path>,
) -> (i32, RunSummary) {
    match write_report(report, flags, format, report_root) {
        Ok(dir) => {
            output::report(report, format);
            (report.exit_code(), RunSummary::of(report, dir))
        }
        Err(e) => (output::error(&e, format), RunSummary::of(report, None)),
    }
}

/// Write the run's report files (unless `--no-report`) and say where; their folder.
fn write_report(
    report: &run::RunReport,
    flags: &RunFlags,
    format: OutputFormat,
    report_root: Option<&Path>,
) -> Result<Option<std::path::PathBuf>, Error> {
    if flags.no_report {
        return Ok(None);
    }
    let dir = match (report_root, &flags.report_dir) {
        (Some(root), _) => root.join(&report.run_id),
        (None, Some(dir)) => dir.clone(),
        (None, None) => Path::new("liveload-reports").join(&report.run_id),
    };
    output::write_report_files(report, &dir)?;
    if format == OutputFormat::Text {
        eprintln!(
            "report: {}/report.html (and result.json, report.md)",
            dir.display()
        );
    }
    Ok(Some(dir))
}

/// Show the plan with its estimated cost; go on only with `--yes` or a "y" typed at a terminal.
/// Core computes the estimate and refuses a billed run without the confirmation this returns;
/// when nobody confirms, the error is core's own `confirmation_required`.
pub async fn confirm(
    backend: &dyn Backend,
    options: &run::RunOptions,
    yes: bool,
    format: OutputFormat,
) -> Result<run::CostConfirmation, Error> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    let estimate = run::estimate(backend, options).await?;
    if let Some(estimate) = &estimate
        && format == OutputFormat::Text
    {
        eprintln!("{estimate}");
    }
    if yes {
        return Ok(run::CostConfirmation::new("--yes"));
    }
    let refused = || Error::ConfirmationRequired {
        backend: backend.name(),
        estimate: estimate.as_ref().map(ToString::to_string),
    };
    if !std::io::stdin().is_terminal() {
        // Nobody can answer a prompt (CI, a pipe): only --yes confirms.
        return Err(refused());
    }
    eprint!("create these machines? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(run::CostConfirmation::new("prompt"))
    } else {
        Err(refused())
    }
}

/// `liveload plan`: the plan from the backend's catalogue, or from a probe node.
pub async fn plan(
    path: &Path,
    ctx: &Ctx<'_>,
    backend_args: &BackendArgs,
    flags: &RunFlags,
) -> Result<Plan, Error> {
    let scenario = load_scenario(path, flags)?;
    let options = flags.options(&scenario)?;
    run::check_unique_rows(&scenario, options.users)?;
    let backend = ctx.backend(backend_args).await?;
    run::plan(backend.as_ref(), &options).await
}

/// `liveload cleanup`: destroy what the backend lists, then check that nothing is left.
pub async fn cleanup(ctx: &Ctx<'_>, args: &cli::CleanupArgs) -> Result<Cleaned, Error> {
    let backend = ctx.backend(&args.backend).await?;
    let state_dir = args
        .backend
        .state_dir
        .clone()
        .unwrap_or_else(default_state_dir);
    let selection = args.selection();
    let filter = match &selection {
        cli::CleanupSelection::Run(run) => RunFilter::Run(run.clone()),
        _ => RunFilter::All,
    };
    let now = liveload_core::names::unix_now_s();
    let (mut chosen, mut spared) = (Vec::new(), Vec::new());
    for node in backend.list(&filter).await? {
        if selection == cli::CleanupSelection::Expired
            && node.expires_at_unix_s.is_none_or(|at| at > now)
        {
            continue;
        }
        // A run still going on from this machine is not a leftover (an expired machine is
        // destroyed whatever its run says: its lifetime is over).
        let alive = liveload_core::state::RunAlive::is_held(&state_dir, &node.run_id);
        if alive && !args.force && selection != cli::CleanupSelection::Expired {
            spared.push(node);
        } else {
            chosen.push(node);
        }
    }
    backend.destroy_all(&chosen).await?;
    // Whatever of the chosen remains after destroying is a leak worth an error.
    let left: Vec<_> = backend
        .list(&filter)
        .await?
        .into_iter()
        .filter(|n| chosen.iter().any(|c| c.id == n.id))
        .collect();
    if !left.is_empty() {
        return Err(Error::from(
            liveload_core::BackendError::new(
                backend.name(),
                liveload_core::BackendErrorKind::Other,
                format!("{} nodes are still listed after cleanup", left.len()),
            )
            .hint("run liveload cleanup again, or check the provider's console"),
        ));
    }
    Ok(Cleaned {
        destroyed: chosen,
        spared,
    })
}

/// What `cleanup` did.
pub struct Cleaned {
    /// Nodes destroyed.
    pub destroyed: Vec<liveload_core::NodeHandle>,
    /// Nodes of runs still going on from this machine, left alone (`--force` takes them too).
    pub spared: Vec<liveload_core::NodeHandle>,
}

/// `liveload demo`: start the demo target on this machine and load it.
pub async fn demo(args: cli::DemoArgs, ctx: &Ctx<'_>) -> i32 {
    let format = args.run.output;
    let address = match demo_target::spawn(([127, 0, 0, 1], 0).into()).await {
        Ok(a) => a,
        Err(e) => {
            return output::error(&Error::io("starting the demo target", e), format);
        }
    };
    if format == OutputFormat::Text {
        eprintln!("demo target listening on http://{address}");
    }
    let parsed = match &args.scenario {
        Some(path) => Scenario::from_file(path),
        None => Scenario::from_yaml(Path::new("examples/demo.yaml"), DEMO_SCENARIO),
    };
    let mut scenario = match parsed {
        Ok(s) => s,
        Err(e) => return output::error(&e, format),
    };
    scenario.set_base_url(&format!("http://{address}"));
    if let Some(base_url) = &args.run.base_url {
        scenario.set_base_url(base_url);
    }
    run_scenario(scenario, ctx, &args.backend, &args.run).await
}
