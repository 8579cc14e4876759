//! `liveload run --reuse-cluster a.yaml b.yaml`: the scenarios one after another on one
//! cluster, booted once (core's `run_sequence` says how), instead of a cluster each.
//!
//! What a single run does around core's run is done once for the whole sequence: each
//! scenario's lock is taken, the backend built, a billed cluster's cost confirmed (for the
//! cluster: the most users of any scenario, for all their durations), and Ctrl-C watched.
//! There is no control endpoint: `liveload users add` cannot reach a sequence.

use std::path::Path;
use std::sync::Arc;

use liveload_core::lock::{ScenarioLock, default_state_dir};
use liveload_core::run::{self, RunOptions};
use liveload_core::scenario::Scenario;

use crate::cli::{OutputFormat, RunArgs, RunFlags};
use crate::sequence::Entry;
use crate::{Ctx, output, progress, run_cmd};

/// Run `scenarios` (read from `args.scenarios`, each with its `flags`) on one cluster; one
/// entry per scenario. An error before the cluster exists is every scenario's.
pub async fn run(
    args: &RunArgs,
    scenarios: Vec<Scenario>,
    flags: &[RunFlags],
    runs_root: &Path,
    ctx: &Ctx<'_>,
) -> Vec<Entry> {
    let format = args.run.output;
    let failed_early = |code: i32| -> Vec<Entry> {
        let mut entries: Vec<Entry> = args.scenarios.iter().map(|f| Entry::not_run(f)).collect();
        entries[0].exit_code = Some(code);
        entries
    };
    let mut items = Vec::with_capacity(scenarios.len());
    for (scenario, flags) in scenarios.iter().zip(flags) {
        match flags.options(scenario) {
            Ok(options) => items.push((scenario, options)),
            Err(e) => return failed_early(output::error(&e, format)),
        }
    }
    let state_dir = (args.backend.state_dir.clone()).unwrap_or_else(default_state_dir);
    let mut names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut locks = Vec::with_capacity(names.len());
    for name in names {
        match ScenarioLock::acquire(&state_dir, name) {
            Ok(lock) => locks.push(lock),
            Err(e) => return failed_early(output::error(&e, format)),
        }
    }
    let mut cluster = cluster_options(&items);
    cluster.state_dir = Some(state_dir);
    let backend = match ctx.backend(&args.backend).await {
        Ok(b) => b,
        Err(e) => return failed_early(output::error(&e, format)),
    };
    if backend.billing() == liveload_core::Billing::Billed {
        match run_cmd::confirm(backend.as_ref(), &cluster, args.run.yes, format).await {
            Ok(confirmation) => cluster.cost_confirmation = Some(confirmation),
            Err(e) => return failed_early(output::error(&e, format)),
        }
    }
    let observer = Arc::new(progress::Progress::new(format == OutputFormat::Text));
    let signals = crate::signals::Signals::listen(
        observer.clone(),
        format!("liveload cleanup --backend {}", args.backend.backend),
    );
    let outcome = run::run_sequence(backend, &items, &cluster, observer.clone(), signals.first());
    let outcome = outcome.await;
    observer.finish();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return failed_early(output::error(&e, format)),
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(items.len());
    for ((result, file), flags) in outcome.runs.into_iter().zip(&args.scenarios).zip(flags) {
        let (code, run) = match result {
            Ok(report) => {
                let (code, summary) =
                    run_cmd::finish_report(&report, flags, format, Some(runs_root));
                (code, Some(summary))
            }
            Err(e) => (output::error(&e, format), None),
        };
        entries.push(Entry {
            file: file.clone(),
            exit_code: Some(code),
            run,
        });
    }
    while entries.len() < args.scenarios.len() {
        entries.push(Entry::not_run(&args.scenarios[entries.len()]));
    }
    if let Err(e) = outcome.teardown {
        // Machines may be left: the sequence's exit code must say so (9).
        let code = output::error(&e, format);
        if let Some(entry) = entries.iter_mut().rev().find(|e| e.exit_code.is_some()) {
            entry.exit_code = Some(code);
        }
    }
    drop(locks);
    entries
}

/// The cluster's options: the first scenario's, for the most users of any scenario and long
/// enough for all of them (their durations and agent lifetimes added up), without a trace of
/// its own (each scenario has its own).
fn cluster_options(items: &[(&Scenario, RunOptions)]) -> RunOptions {
    let mut cluster = items[0].1.clone();
    cluster.users = items.iter().map(|(_, o)| o.users).max().unwrap_or(1);
    cluster.duration = items.iter().map(|(_, o)| o.duration).sum();
    cluster.ttl = items.iter().map(|(_, o)| o.ttl).sum();
    cluster.trace = None;
    cluster
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_cluster_is_sized_for_the_largest_and_lives_for_all() {
        let scenario = Scenario::new("a", "http://x", Vec::new());
        let options = |users: u64, secs: u64| {
            let mut o = RunOptions::new("a", users, Duration::from_secs(secs));
            o.ttl = Duration::from_secs(secs * 2);
            o
        };
        let items = [(&scenario, options(5, 10)), (&scenario, options(20, 30))];
        let cluster = cluster_options(&items);
        assert_eq!(cluster.users, 20);
        assert_eq!(cluster.duration, Duration::from_secs(40));
        assert_eq!(cluster.ttl, Duration::from_secs(80));
    }
}
