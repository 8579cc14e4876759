//! `liveload doctor`: check a setup before a run spends money on it.
//!
//! The backend's own checks ([`liveload_core::Backend::doctor`]) come after two of the CLI's:
//! that the backend can be built from its options at all (a malformed option is the first
//! thing to fix), and, given a scenario, that the plan fits (from the backend's catalogue
//! only: `doctor` never boots a probe node).

use liveload_core::doctor::{Check, Needs};
use liveload_core::error::exit_code;
use liveload_core::run;

use crate::Ctx;
use crate::cli::{DoctorArgs, OutputFormat};

/// Run every check, print them, and exit 0 only when all passed.
pub async fn run(args: DoctorArgs, ctx: &Ctx<'_>) -> i32 {
    let name = args.backend.backend.clone();
    let mut checks = Vec::new();
    let backend = match ctx.backend(&args.backend).await {
        Ok(backend) => {
            checks.push(Check::pass(
                format!("{name}.options"),
                "the backend's options are complete and valid",
            ));
            Some(backend)
        }
        Err(e) => {
            checks.push(Check::from_error(
                format!("{name}.options"),
                &e,
                "fix the option named above",
            ));
            None
        }
    };
    let mut needs = Needs {
        controller_cidr: args.controller_cidr.clone(),
        ..Needs::default()
    };
    if let (Some(backend), Some(path)) = (&backend, &args.scenario) {
        checks.push(plan_check(backend.as_ref(), path, &args, &mut needs).await);
    }
    if let Some(backend) = &backend {
        checks.extend(backend.doctor(&needs).await);
    }
    print(&name, &checks, args.run.output);
    if checks.iter().all(|c| c.passed) {
        exit_code::OK
    } else {
        exit_code::DOCTOR_FAILED
    }
}

/// The plan from the backend's catalogue, as a check; fills `needs` with its figures.
async fn plan_check(
    backend: &dyn liveload_core::Backend,
    path: &std::path::Path,
    args: &DoctorArgs,
    needs: &mut Needs,
) -> Check {
    let options = crate::run_cmd::load_scenario(path, &args.run)
        .and_then(|scenario| args.run.options(&scenario));
    let options = match options {
        Ok(options) => options,
        Err(e) => {
            return Check::from_error("plan", &e, "fix the scenario or the flags named above");
        }
    };
    needs.users = Some(options.users);
    match run::estimate(backend, &options).await {
        Ok(Some(estimate)) => {
            let plan = estimate.plan;
            needs.nodes = Some(plan.nodes);
            needs.users_per_node = Some(plan.users_per_node);
            let cost = estimate
                .cost_usd
                .map(|usd| format!(", about ${usd:.2}"))
                .unwrap_or_default();
            Check::pass(
                "plan",
                format!(
                    "{} users: {} node(s) x up to {} users ({:.1} GiB, {:.2} cores each{cost})",
                    plan.users,
                    plan.nodes,
                    plan.users_per_node,
                    plan.node_memory_bytes as f64 / (1u64 << 30) as f64,
                    plan.node_cores
                ),
            )
        }
        Ok(None) => Check::pass(
            "plan",
            format!(
                "{} users; the backend sizes nodes from the first node's facts at run time (`liveload plan` boots one to tell)",
                options.users
            ),
        ),
        Err(e) => Check::from_error("plan", &e, "change --users or the node size"),
    }
}

fn print(backend: &str, checks: &[Check], format: OutputFormat) {
    let passed = checks.iter().all(|c| c.passed);
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({ "backend": backend, "passed": passed, "checks": checks })
        ),
        OutputFormat::Text => {
            for check in checks {
                let mark = if check.passed { "✓" } else { "✗" };
                println!("{mark} {:<24} {}", check.id, check.detail);
                if let Some(fix) = &check.fix {
                    println!("  {:<24} fix: {fix}", "");
                }
            }
            let failed = checks.iter().filter(|c| !c.passed).count();
            if checks.is_empty() {
                println!("the {backend} backend has no checks of its own");
            } else if failed == 0 {
                println!("\nall {} checks passed", checks.len());
            } else {
                println!("\n{failed} of {} checks failed", checks.len());
            }
        }
    }
}
