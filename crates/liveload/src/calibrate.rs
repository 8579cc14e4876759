//! `liveload calibrate SCENARIO`: measure what the scenario's own users cost on one node, and
//! write the sizing profile `plan` and `run` read with `--profile FILE`.
//!
//! A staircase: the scenario runs on one node with 1, 2, 4, 8 … users (`--steps`), each step
//! a whole run of `--step-duration`. From each step's steady half (the second half, when every
//! user is running) it takes the node's memory (median) and CPU (mean) from the node's own
//! series, and the scenario's step p95 (think steps excluded). The knee is the first step whose
//! p95 is 1.5× the single user's or whose CPU is 85 % of the node's cores; memory per user is
//! the slope of memory over users up to the knee, the browser's memory its intercept, users
//! per core the last step before the knee over the node's cores.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use liveload_core::error::exit_code;
use liveload_core::lock::{ScenarioLock, default_state_dir};
use liveload_core::profile::{
    CalibratedProfile, CalibrationStep, KneeRule, MeasuredOn, PROFILE_VERSION, fit,
};
use liveload_core::run::{self, CostConfirmation, Quiet, RunOptions, RunReport};
use liveload_core::scenario::Load;
use liveload_core::sizing::{BrowserProfile, SizingConfig};
use liveload_core::{Backend, Billing, Error};

use crate::Ctx;
use crate::cli::{BackendArgs, OutputFormat, duration};

/// Options of `calibrate`.
#[derive(Debug, Clone, Args)]
pub struct CalibrateArgs {
    /// The scenario file (YAML).
    pub scenario: PathBuf,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Users at each step of the staircase, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub steps: Vec<u64>,
    /// How long each step runs (its second half is measured).
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub step_duration: Duration,
    /// Where to write the profile.
    #[arg(long, default_value = "liveload-profile.json")]
    pub out: PathBuf,
    /// The knee: a step p95 this many times the single user's.
    #[arg(long, default_value_t = 1.5)]
    pub knee_latency: f64,
    /// The knee: CPU at this share of the node's cores.
    #[arg(long, default_value_t = 0.85)]
    pub knee_cpu: f64,
    /// Override the scenario's base URL.
    #[arg(long)]
    pub base_url: Option<String>,
    /// Create a billed node without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the result as JSON (the profile).
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// Run the staircase, print the table, write the profile.
pub async fn run(args: CalibrateArgs, ctx: &Ctx<'_>) -> i32 {
    match calibrate(&args, ctx).await {
        Ok(profile) => {
            match args.output {
                OutputFormat::Json => {
                    println!("{}", serde_json::to_string(&profile).expect("serialises"))
                }
                OutputFormat::Text => print!("{}", table(&profile, &args)),
            }
            exit_code::OK
        }
        Err(e) => crate::output::error(&e, args.output),
    }
}

async fn calibrate(args: &CalibrateArgs, ctx: &Ctx<'_>) -> Result<CalibratedProfile, Error> {
    let mut steps = args.steps.clone();
    steps.sort_unstable();
    steps.dedup();
    if steps.len() < 2 || steps[0] == 0 {
        return Err(Error::InvalidOption {
            option: "--steps".into(),
            message: "give at least two user counts above 0, e.g. 1,2,4,8".into(),
        });
    }
    if !(args.knee_latency > 1.0 && args.knee_latency.is_finite()) {
        return Err(Error::InvalidOption {
            option: "--knee-latency".into(),
            message: "must be more than 1 (the single user's p95 times this)".into(),
        });
    }
    if !(args.knee_cpu > 0.0 && args.knee_cpu <= 1.0) {
        return Err(Error::InvalidOption {
            option: "--knee-cpu".into(),
            message: "must be a share of the node's cores, above 0 and at most 1".into(),
        });
    }
    let text = std::fs::read(&args.scenario)
        .map_err(|e| Error::io(format!("reading {}", args.scenario.display()), e))?;
    let mut scenario = liveload_core::scenario::Scenario::from_file(&args.scenario)?;
    if let Some(url) = &args.base_url {
        scenario.set_base_url(url);
    }
    if !scenario.mix.is_empty() {
        return Err(Error::InvalidOption {
            option: "calibrate".into(),
            message: "the file is a mix (mix:): calibrate each of its scenarios, and give each \
                      its profile with `sizing:`; the mix sizes from them"
                .into(),
        });
    }
    // Each step holds exactly its users, all started at once: the scenario's own ramp would
    // leave the steady half without them, and an open model does not hold a user count.
    if matches!(scenario.load, Load::Open { .. }) {
        return Err(Error::InvalidOption {
            option: "calibrate".into(),
            message: "the scenario uses the open model (load: model: open); calibrate measures a fixed number of users: give it a closed-model copy".into(),
        });
    }
    scenario.load = Load::Closed {
        ramp_up: None,
        ramp_steps: None,
    };
    // As `run` does: one run of a scenario at a time, runs marked alive for `cleanup`, and a
    // signal tears the step's node down. The profile file must be writable before any step.
    let state_dir = args
        .backend
        .state_dir
        .clone()
        .unwrap_or_else(default_state_dir);
    let _lock = ScenarioLock::acquire(&state_dir, &scenario.name)?;
    std::fs::write(&args.out, b"")
        .map_err(|e| Error::io(format!("writing {}", args.out.display()), e))?;
    let backend = ctx.backend(&args.backend).await?;
    let progress = Arc::new(crate::progress::Progress::new(false));
    let signals = crate::signals::Signals::listen(
        progress,
        format!("liveload cleanup --backend {}", args.backend.backend),
    );
    let thinking = think_metrics(&scenario.steps);
    let mut measured = Vec::new();
    let mut last: Option<RunReport> = None;
    for &users in &steps {
        eprintln!(
            "calibrate: {users} user(s) for {:?} ...",
            args.step_duration
        );
        let report = run_step(
            backend.clone(),
            &scenario,
            users,
            args,
            &state_dir,
            &signals,
        )
        .await?;
        measured.push(measure(&report, users, args.step_duration, &thinking)?);
        let exhausted = report
            .counters
            .get("node_memory_exhausted")
            .copied()
            .unwrap_or(0)
            > 0;
        last = Some(report);
        if exhausted {
            // The node reached its memory: higher steps would only measure the watchdog.
            eprintln!(
                "calibrate: the node's memory budget was reached at {users} users; stopping the staircase"
            );
            break;
        }
    }
    if measured.len() < 2 {
        return Err(Error::RunFailed {
            message: "the node's memory was exhausted at the first step: calibrate on a bigger node or with fewer users".into(),
        });
    }
    let report = last.expect("at least two steps ran");
    let facts = &report
        .nodes
        .first()
        .ok_or_else(|| Error::RunFailed {
            message: "the last step reported no node".into(),
        })?
        .facts;
    let rule = KneeRule {
        latency_factor: args.knee_latency,
        cpu_fraction: args.knee_cpu,
    };
    let knee = liveload_core::profile::knee(&measured, facts.effective_cores, rule);
    let (browser, per_user, per_core) = fit(&measured, facts.effective_cores, rule)
        .ok_or_else(|| Error::RunFailed {
            message: "the staircase's memory did not grow with users (or too few steps before the knee): give more steps or a longer --step-duration".into(),
        })?;
    let profile = CalibratedProfile {
        version: PROFILE_VERSION,
        browser_memory_mib: browser,
        context_memory_mib: per_user,
        contexts_per_core: per_core,
        measured_on: MeasuredOn {
            scenario: scenario.name.clone(),
            scenario_sha256: liveload_core::profile::sha256_hex(&text),
            chromium: facts
                .chromium
                .as_ref()
                .map_or_else(String::new, |c| c.version.clone()),
            node_memory_bytes: facts.effective_memory_bytes,
            node_cores: facts.effective_cores,
            liveload_version: env!("CARGO_PKG_VERSION").into(),
            unix_s: liveload_core::names::unix_now_s(),
        },
        knee_users: knee.map(|k| measured[k].users),
        note: match knee {
            Some(_) => "users per core: the last step before the knee".into(),
            None => "no knee within the staircase: users per core is a floor; add a higher step to find the ceiling".into(),
        },
        steps: measured,
    };
    let json = serde_json::to_string_pretty(&profile).expect("serialises");
    std::fs::write(&args.out, json)
        .map_err(|e| Error::io(format!("writing {}", args.out.display()), e))?;
    Ok(profile)
}

/// One step: the scenario with `users` users on one node, sized so that one node holds them.
async fn run_step(
    backend: Arc<dyn Backend>,
    scenario: &liveload_core::scenario::Scenario,
    users: u64,
    args: &CalibrateArgs,
    state_dir: &std::path::Path,
    signals: &crate::signals::Signals,
) -> Result<RunReport, Error> {
    let mut options = RunOptions::new(format!("calibrate-{users}"), users, args.step_duration);
    options.max_allowed_nodes = 1;
    options.start_interval = Duration::ZERO;
    options.state_dir = Some(state_dir.to_path_buf());
    // One node must hold every user of the step, whatever the built-in profile says: the
    // step measures what they cost. The memory watchdog still guards the node's memory.
    options.sizing = SizingConfig {
        memory_safety_factor: 1.0,
        reserved_headroom_bytes: 0,
        profile: BrowserProfile {
            browser_memory_usage_bytes: 1 << 20,
            context_memory_usage_bytes: 1 << 20,
            browser_contexts_per_core: 100_000.0,
        },
    };
    if backend.billing() == Billing::Billed {
        if !args.yes {
            return Err(Error::ConfirmationRequired {
                backend: backend.name(),
                estimate: Some("one node per step of the staircase".into()),
            });
        }
        options.cost_confirmation = Some(CostConfirmation::new("calibrate --yes"));
    }
    let report = run::run(
        backend,
        scenario,
        &options,
        Arc::new(Quiet),
        signals.first(),
    )
    .await?;
    // A step whose users could not work measures nothing about them.
    if report.iterations_ok == 0 || report.aborted.is_some() || !report.lost_nodes.is_empty() {
        return Err(Error::RunFailed {
            message: format!(
                "the {users}-user step did not run cleanly ({} iterations ok, {} failed{}{}): check the scenario with `liveload try` first",
                report.iterations_ok,
                report.iterations_failed,
                report
                    .aborted
                    .as_deref()
                    .map(|a| format!(", aborted: {a}"))
                    .unwrap_or_default(),
                if report.lost_nodes.is_empty() {
                    ""
                } else {
                    ", its node was lost"
                }
            ),
        });
    }
    Ok(report)
}

/// A step's figures from its report: the steady second half of the node's series.
/// The metric names of the scenario's think steps (whatever they are called), nested ones
/// included: their time is the user's, not the application's.
fn think_metrics(steps: &[liveload_core::proto::Step]) -> std::collections::BTreeSet<String> {
    use liveload_core::proto::StepKind;
    let mut names = std::collections::BTreeSet::new();
    for step in steps {
        match &step.kind {
            StepKind::Think { .. } => {
                names.insert(format!("step:{}", step.name));
            }
            StepKind::Group { steps } | StepKind::Repeat { steps, .. } => {
                names.extend(think_metrics(steps));
            }
            _ => {}
        }
    }
    names
}

fn measure(
    report: &RunReport,
    users: u64,
    step: Duration,
    thinking: &std::collections::BTreeSet<String>,
) -> Result<CalibrationStep, Error> {
    let half = step.as_secs_f64() / 2.0;
    let steady: Vec<_> = report
        .node_series
        .first()
        .map(|s| {
            s.points
                .iter()
                .filter(|p| p.t_s >= half && p.t_s <= step.as_secs_f64() && p.users == users)
                .copied()
                .collect()
        })
        .unwrap_or_default();
    let mut memory: Vec<u64> = steady.iter().map(|p| p.memory_bytes).collect();
    memory.sort_unstable();
    let median = memory.get(memory.len() / 2).copied().unwrap_or(0);
    if steady.len() < 2 || median == 0 {
        return Err(Error::RunFailed {
            message: format!(
                "the {users}-user step has no steady half to measure ({} point(s) with all its users running, memory {median} bytes): give a longer --step-duration",
                steady.len()
            ),
        });
    }
    let cpu = if steady.is_empty() {
        0.0
    } else {
        steady.iter().map(|p| p.cpu_cores).sum::<f64>() / steady.len() as f64
    };
    let step_p95 = report
        .latencies
        .iter()
        .filter(|(name, _)| name.starts_with("step:") && !thinking.contains(name.as_str()))
        .map(|(_, l)| l.p95_ms)
        .fold(0.0, f64::max);
    Ok(CalibrationStep {
        users,
        memory_mib: (median as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0,
        cpu_cores: (cpu * 1000.0).round() / 1000.0,
        step_p95_ms: step_p95,
    })
}

/// `values` as a row of block characters, lowest to highest of the row (a terminal chart).
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (low, high) = finite.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    values
        .iter()
        .map(|v| {
            if !v.is_finite() || high <= low {
                return BARS[0];
            }
            let at = ((v - low) / (high - low) * 7.0).round() as usize;
            BARS[at.min(7)]
        })
        .collect()
}

fn table(profile: &CalibratedProfile, args: &CalibrateArgs) -> String {
    let mut out = format!(
        "Calibration of '{}' on one node ({:.1} GiB, {:.2} cores, {})\n\n  USERS   MEMORY MiB   CPU CORES   STEP p95 ms\n",
        profile.measured_on.scenario,
        profile.measured_on.node_memory_bytes as f64 / (1u64 << 30) as f64,
        profile.measured_on.node_cores,
        profile.measured_on.chromium
    );
    for s in &profile.steps {
        let knee = if Some(s.users) == profile.knee_users {
            "  <- knee"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {:>5}   {:>10.1}   {:>9.3}   {:>11.1}{knee}\n",
            s.users, s.memory_mib, s.cpu_cores, s.step_p95_ms
        ));
    }
    let memory: Vec<f64> = profile.steps.iter().map(|s| s.memory_mib).collect();
    let p95: Vec<f64> = profile.steps.iter().map(|s| s.step_p95_ms).collect();
    let cpu: Vec<f64> = profile.steps.iter().map(|s| s.cpu_cores).collect();
    out.push_str(&format!(
        "\n  memory {}   cpu {}   p95 {}   (against users, low to high)\n",
        sparkline(&memory),
        sparkline(&cpu),
        sparkline(&p95)
    ));
    out.push_str(&format!(
        "\nProfile: browser {} MiB, {} MiB per user, {} users per core ({})\nWritten to {}: use it with `liveload plan|run --profile {}`\n",
        profile.browser_memory_mib,
        profile.context_memory_mib,
        profile.contexts_per_core,
        profile.note,
        args.out.display(),
        args.out.display()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::{sparkline, think_metrics};
    use liveload_core::proto::{Step, StepKind};

    /// Think steps are known by their kind, not their name: a renamed one is still the user's
    /// time, a real step called `think…` still the application's.
    #[test]
    fn think_steps_are_found_by_kind_at_any_depth() {
        let step = |name: &str, kind: StepKind| Step {
            name: name.into(),
            kind,
        };
        let think = || StepKind::Think {
            min_ms: 1,
            max_ms: 2,
        };
        let steps = vec![
            step("pause", think()),
            step("thinking-page", StepKind::Navigate { url: "/".into() }),
            step(
                "checkout",
                StepKind::Group {
                    steps: vec![step("breathe", think())],
                },
            ),
        ];
        let names: Vec<String> = think_metrics(&steps).into_iter().collect();
        assert_eq!(names, ["step:breathe", "step:pause"]);
    }

    #[test]
    fn sparklines_span_their_row() {
        assert_eq!(sparkline(&[1.0, 2.0, 4.0, 8.0]), "▁▂▄█");
        assert_eq!(sparkline(&[3.0, 3.0]), "▁▁", "a flat row");
        assert_eq!(sparkline(&[]), "");
        assert_eq!(sparkline(&[f64::NAN, 1.0, 2.0]), "▁▁█");
    }
}
