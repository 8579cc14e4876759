//! `liveload run a.yaml b.yaml …`: several scenarios one after another, each on a cluster of
//! its own, then one combined report that compares them.
//!
//! Every file is read and checked before the first machine is created: a typo in the third
//! scenario is found before two runs were paid for. Each scenario then boots its own cluster
//! and tears it down before the next starts. That is the default, and for now the only way,
//! for three reasons: each scenario is sized from its own users and per-user costs (one
//! cluster sized for the largest would idle, and bill, through the small ones); a fresh
//! browser per scenario keeps one scenario's caches, cookies and memory out of the next one's
//! figures; and between two scenarios nothing is left running, so an interrupted sequence
//! leaks nothing. Booting costs the seconds the report shows as `boot_s` per scenario.
//!
//! The sequence goes on after a scenario that failed (its exit code is kept), and stops after
//! an interruption or a teardown that could not confirm every node gone (no new machines while
//! some may be left). The exit code is the teardown's if any, else the interruption's, else
//! the first scenario's that was not 0.

use std::path::{Path, PathBuf};

use liveload_core::error::exit_code;
use liveload_core::run::RunReport;
use serde::Serialize;

use crate::cli::{OutputFormat, RunArgs, RunFlags};
use crate::{Ctx, output, run_cmd};
use liveload_core::scenario::Scenario;

/// One scenario's line in the combined report.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The scenario's name.
    pub scenario: String,
    /// Its run id.
    pub run_id: String,
    /// Users requested, and those that failed.
    pub users: u64,
    /// Users that failed an iteration or could not start.
    pub users_failed: u64,
    /// Iterations that passed and failed.
    pub iterations_ok: u64,
    /// Iterations that failed.
    pub iterations_failed: u64,
    /// Iteration latency percentiles, ms (`None` without iterations).
    pub iteration_p50_ms: Option<f64>,
    /// 95th percentile, ms.
    pub iteration_p95_ms: Option<f64>,
    /// 99th percentile, ms.
    pub iteration_p99_ms: Option<f64>,
    /// Every threshold passed.
    pub thresholds_passed: bool,
    /// Where its report files are.
    pub report_dir: Option<PathBuf>,
}

impl RunSummary {
    /// The summary of `report`, whose files are in `report_dir`.
    pub fn of(report: &RunReport, report_dir: Option<PathBuf>) -> Self {
        let iteration = report.latencies.get("iteration");
        RunSummary {
            scenario: report.scenario.clone(),
            run_id: report.run_id.clone(),
            users: report.users,
            users_failed: report.users_failed,
            iterations_ok: report.iterations_ok,
            iterations_failed: report.iterations_failed,
            iteration_p50_ms: iteration.map(|l| l.p50_ms),
            iteration_p95_ms: iteration.map(|l| l.p95_ms),
            iteration_p99_ms: iteration.map(|l| l.p99_ms),
            thresholds_passed: report.thresholds_passed(),
            report_dir,
        }
    }
}

/// One scenario of the sequence: its file, its exit code, and its summary when it ran to a
/// report (`None`: it failed before one, or was not run).
#[derive(Debug, Serialize)]
pub struct Entry {
    /// The scenario file.
    pub file: PathBuf,
    /// Its exit code (`None`: not run).
    pub exit_code: Option<i32>,
    /// Its summary.
    pub run: Option<RunSummary>,
}

impl Entry {
    /// A scenario the sequence stopped before.
    pub fn not_run(file: &Path) -> Self {
        Entry {
            file: file.to_path_buf(),
            exit_code: None,
            run: None,
        }
    }
}

/// The combined report (`combined.json`; `--output json` prints it as its last line).
#[derive(Debug, Serialize)]
struct Combined {
    scenarios: Vec<Entry>,
    exit_code: i32,
}

/// `liveload run`, with one scenario or several.
pub async fn run(args: &RunArgs, ctx: &Ctx<'_>) -> i32 {
    let format = args.run.output;
    let mut scenarios = Vec::with_capacity(args.scenarios.len());
    for path in &args.scenarios {
        match run_cmd::load_scenario(path, &args.run) {
            Ok(s) => scenarios.push(s),
            Err(e) => return output::error(&e, format),
        }
    }
    if scenarios.len() == 1 {
        let scenario = scenarios.remove(0);
        return run_cmd::run_scenario(scenario, ctx, &args.backend, &args.run).await;
    }
    let runs_root = args
        .run
        .report_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("liveload-reports"));
    let flags: Vec<RunFlags> = (1..=scenarios.len())
        .map(|n| numbered_trace(&args.run, n))
        .collect();
    let entries = if args.reuse_cluster {
        crate::reuse::run(args, scenarios, &flags, &runs_root, ctx).await
    } else {
        one_cluster_each(args, scenarios, &flags, &runs_root, ctx).await
    };
    let combined = Combined {
        exit_code: combined_exit_code(entries.iter().filter_map(|e| e.exit_code)),
        scenarios: entries,
    };
    if !args.run.no_report {
        let dir = match &args.run.report_dir {
            Some(dir) => dir.clone(),
            None => runs_root.join(format!("combined-{}", unix_seconds())),
        };
        // Runs' folders are the combined one's siblings, or inside `--report-dir` with it.
        let links = if args.run.report_dir.is_some() {
            ""
        } else {
            "../"
        };
        match write_combined(&combined, &dir, links) {
            Ok(()) if format == OutputFormat::Text => {
                eprintln!("combined report: {}/combined.md", dir.display());
            }
            Ok(()) => {}
            Err(e) => eprintln!("error[{}]: {e}", e.code()),
        }
    }
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string(&combined).expect("a summary serialises")
        ),
        OutputFormat::Text => print!("\n{}", markdown(&combined)),
    }
    combined.exit_code
}

/// Each scenario on a cluster of its own, in turn; stopped by an interruption or a teardown
/// in doubt.
async fn one_cluster_each(
    args: &RunArgs,
    scenarios: Vec<Scenario>,
    flags: &[RunFlags],
    runs_root: &Path,
    ctx: &Ctx<'_>,
) -> Vec<Entry> {
    let total = scenarios.len();
    let mut entries: Vec<Entry> = Vec::with_capacity(total);
    let mut stopped = false;
    for (i, (scenario, file)) in scenarios.into_iter().zip(&args.scenarios).enumerate() {
        if stopped {
            entries.push(Entry::not_run(file));
            continue;
        }
        if flags[i].output == OutputFormat::Text {
            eprintln!(
                "\n=== scenario {}/{total}: '{}' ({}) ===",
                i + 1,
                scenario.name,
                file.display()
            );
        }
        let (code, run) =
            run_cmd::run_one(scenario, ctx, &args.backend, &flags[i], Some(runs_root)).await;
        stopped = matches!(
            code,
            exit_code::INTERRUPTED | exit_code::TEARDOWN_INCOMPLETE
        );
        entries.push(Entry {
            file: file.clone(),
            exit_code: Some(code),
            run,
        });
    }
    entries
}

/// The flags of the `n`th scenario: its trace, if any, in a file of its own
/// (`trace.jsonl` → `trace.2.jsonl`).
fn numbered_trace(flags: &RunFlags, n: usize) -> RunFlags {
    let mut flags = flags.clone();
    if let Some(path) = &flags.trace {
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let name = match path.extension() {
            Some(ext) => format!("{stem}.{n}.{}", ext.to_string_lossy()),
            None => format!("{stem}.{n}"),
        };
        flags.trace = Some(path.with_file_name(name));
    }
    flags
}

/// The exit code of the whole sequence from its scenarios' (see the module's comment).
fn combined_exit_code(codes: impl Iterator<Item = i32> + Clone) -> i32 {
    let any = |wanted: i32| codes.clone().any(|c| c == wanted);
    if any(exit_code::TEARDOWN_INCOMPLETE) {
        exit_code::TEARDOWN_INCOMPLETE
    } else if any(exit_code::INTERRUPTED) {
        exit_code::INTERRUPTED
    } else {
        codes
            .clone()
            .find(|&c| c != exit_code::OK)
            .unwrap_or(exit_code::OK)
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `combined.json`, `combined.md` and `combined.html` in `dir` (whose links to the runs'
/// reports start with `links`).
fn write_combined(
    combined: &Combined,
    dir: &Path,
    links: &str,
) -> Result<(), liveload_core::Error> {
    let io = |what: &str, e| liveload_core::Error::io(format!("{what} {}", dir.display()), e);
    std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
    let json = serde_json::to_string_pretty(combined).expect("a summary serialises");
    std::fs::write(dir.join("combined.json"), json).map_err(|e| io("writing to", e))?;
    std::fs::write(dir.join("combined.md"), markdown(combined)).map_err(|e| io("writing to", e))?;
    std::fs::write(dir.join("combined.html"), html(combined, links))
        .map_err(|e| io("writing to", e))?;
    Ok(())
}

/// The comparison table's columns.
const COLUMNS: [&str; 9] = [
    "scenario",
    "result",
    "users (failed)",
    "iterations ok / failed",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "p95 vs first",
    "report",
];

/// The table's rows, as text cells (the comparison is against the first scenario's p95).
fn rows(combined: &Combined) -> Vec<[String; 9]> {
    let first_p95 = combined
        .scenarios
        .first()
        .and_then(|e| e.run.as_ref())
        .and_then(|r| r.iteration_p95_ms);
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    combined
        .scenarios
        .iter()
        .map(|entry| {
            let result = match entry.exit_code {
                None => "not run".to_string(),
                Some(0) => "passed".to_string(),
                Some(code) => format!("failed (exit {code})"),
            };
            let name = entry.file.display().to_string();
            let Some(run) = &entry.run else {
                let dash = || "-".to_string();
                return [
                    name,
                    result,
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                ];
            };
            let versus = match (first_p95, run.iteration_p95_ms) {
                (Some(first), Some(p95)) if first > 0.0 => {
                    format!("{:+.0}%", (p95 / first - 1.0) * 100.0)
                }
                _ => "-".to_string(),
            };
            [
                format!("{} ({name})", run.scenario),
                result,
                format!("{} ({})", run.users, run.users_failed),
                format!("{} / {}", run.iterations_ok, run.iterations_failed),
                ms(run.iteration_p50_ms),
                ms(run.iteration_p95_ms),
                ms(run.iteration_p99_ms),
                versus,
                run.report_dir
                    .as_ref()
                    .map_or("-".to_string(), |d| d.display().to_string()),
            ]
        })
        .collect()
}

/// The comparison as a Markdown table (also what the terminal shows).
fn markdown(combined: &Combined) -> String {
    let mut out = format!(
        "## {} scenarios (exit {})\n\n| {} |\n|{}\n",
        combined.scenarios.len(),
        combined.exit_code,
        COLUMNS.join(" | "),
        " --- |".repeat(COLUMNS.len())
    );
    for row in rows(combined) {
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// The comparison as a self-contained HTML page, each run's report linked (`links` + run id).
fn html(combined: &Combined, links: &str) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let head: String = COLUMNS
        .iter()
        .map(|c| format!("<th>{}</th>", escape(c)))
        .collect();
    let mut body = String::new();
    for (row, entry) in rows(combined).iter().zip(&combined.scenarios) {
        body.push_str("<tr>");
        let report = entry.run.as_ref().filter(|r| r.report_dir.is_some());
        for (i, cell) in row.iter().enumerate() {
            if let Some(run) = report.filter(|_| i == COLUMNS.len() - 1) {
                let href = escape(&format!("{links}{}/report.html", run.run_id));
                body.push_str(&format!("<td><a href=\"{href}\">{}</a></td>", escape(cell)));
            } else {
                body.push_str(&format!("<td>{}</td>", escape(cell)));
            }
        }
        body.push_str("</tr>\n");
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>liveload: {n} scenarios</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>\
         <h1>{n} scenarios (exit {code})</h1><table><tr>{head}</tr>\n{body}</table></body></html>\n",
        n = combined.scenarios.len(),
        code = combined.exit_code,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_exit_code_reflects_every_scenario() {
        let code = |codes: &[i32]| combined_exit_code(codes.iter().copied());
        assert_eq!(code(&[0, 0]), 0);
        assert_eq!(code(&[0, 8, 7]), 8, "the first failure");
        assert_eq!(code(&[8, 130]), 130);
        assert_eq!(code(&[130, 9]), 9, "machines may be left: that first");
    }
}
