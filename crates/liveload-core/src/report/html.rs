//! The HTML report: [`html`] turns a [`RunReport`] into a view of display-ready values, and
//! `templates/report.html` lays them out with auto-escaping on.
//!
//! The split is deliberate: Rust decides *what* to say (which rows, how many decimals), the
//! template decides *where*, and the engine escapes *everything* on the way out. Values here
//! are plain strings and numbers; none is ever marked safe, so none can carry markup.

use std::sync::LazyLock;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use super::chart::{Chart, node_charts, run_charts};
use super::{MIB, error_rate, top_errors, utc, verdict};
use crate::run::RunReport;

/// The templates, embedded so the binary needs no file at run time: (name, source).
const TEMPLATES: [(&str, &str); 4] = [
    ("report.html", include_str!("templates/report.html")),
    ("live.html", include_str!("templates/live.html")),
    ("chart.html", include_str!("templates/chart.html")),
    ("report.css", include_str!("templates/report.css")),
];

/// The template environment, built once: parsing the templates is the costly part.
static ENV: LazyLock<Environment<'static>> = LazyLock::new(environment);

/// The environment: every embedded template, HTML escaping for `.html`, strict about undefined
/// values, block tags that leave no blank lines.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // HTML escaping for every `.html` template (and so for every value they print), none for
    // the stylesheet: it prints no value, and escaping would turn its quotes into entities that
    // CSS does not decode.
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    // A misspelt variable fails the render (and so the tests) instead of printing nothing.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Block tags on their own line leave no blank line behind, so the templates can be laid
    // out for reading without changing the page.
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name} does not parse: {e:#}"));
    }
    env
}

/// Render the embedded template `name` with `context`. A failure is a bug in a template (the
/// tests render them all), not something a run can cause, so it panics with the engine's
/// explanation rather than making every caller handle an impossible error.
pub(super) fn render(name: &str, context: impl Serialize) -> String {
    ENV.get_template(name)
        .and_then(|t| t.render(Value::from(Serde(context))))
        .unwrap_or_else(|e| panic!("report template {name} failed: {e:#}"))
}

/// The report's "over time" charts alone, as a page of their own, for seconds of a run still
/// going on (the server's dashboard shows it while the run lasts).
pub fn live_charts(seconds: &[crate::metrics::SecondPoint]) -> String {
    #[derive(Serialize)]
    struct Live<'a> {
        charts: Vec<Chart<'a>>,
    }
    render(
        "live.html",
        Live {
            charts: run_charts(seconds),
        },
    )
}

/// The self-contained HTML report.
pub fn html(r: &RunReport) -> String {
    let verdict = verdict(r);
    let page = Page {
        scenario: &r.scenario,
        run_id: &r.run_id,
        date: utc(r.started_at_unix_ms),
        backend: &r.backend,
        node_count: r.nodes.len(),
        run_s: format!("{:.1}", r.run_s),
        workload: &r.workload,
        verdict,
        // The CSS knows three looks: passed, aborted, and every other failure.
        verdict_class: match verdict {
            "PASSED" | "ABORTED" => verdict,
            _ => "FAILED",
        },
        aborted: r.aborted.as_deref(),
        cards: cards(r),
        thresholds: thresholds(r),
        charts: run_charts(&r.series),
        node_charts: node_charts(&r.node_series),
        hot: r
            .node_series
            .iter()
            .flat_map(|s| {
                let hot = s.hot.as_deref().map(|why| HotRow {
                    id: &s.node,
                    what: "ran hot",
                    why,
                });
                let memory = s.memory_warning.as_deref().map(|why| HotRow {
                    id: &s.node,
                    what: "used more memory than planned",
                    why,
                });
                hot.into_iter().chain(memory)
            })
            .collect(),
        steps: steps(r),
        errors: errors(r),
        nodes: nodes(r),
        lost: r
            .lost_nodes
            .iter()
            .map(|l| LostRow {
                id: &l.id,
                at_s: format!("{:.1}", l.at_s),
                users_failed: l.users_failed,
                reason: &l.reason,
            })
            .collect(),
        plan: plan(r),
        version: &r.liveload_version,
        schema_version: r.schema_version,
    };
    render("report.html", page)
}

/// Everything `templates/report.html` prints.
#[derive(Serialize)]
struct Page<'a> {
    scenario: &'a str,
    run_id: &'a str,
    date: String,
    backend: &'a str,
    node_count: usize,
    run_s: String,
    workload: &'a str,
    verdict: &'static str,
    verdict_class: &'static str,
    aborted: Option<&'a str>,
    cards: Cards,
    thresholds: Vec<ThresholdRow<'a>>,
    charts: Vec<Chart<'static>>,
    /// Each node's memory and CPU (the hottest nodes).
    node_charts: Vec<Chart<'a>>,
    /// Nodes that ran hot: their latencies are suspect.
    hot: Vec<HotRow<'a>>,
    steps: Vec<StepRow<'a>>,
    errors: Vec<ErrorRow<'a>>,
    nodes: Vec<NodeRow<'a>>,
    lost: Vec<LostRow<'a>>,
    plan: PlanText<'a>,
    version: &'a str,
    schema_version: u32,
}

/// A node that ran hot, and why.
#[derive(Serialize)]
struct HotRow<'a> {
    id: &'a str,
    what: &'static str,
    why: &'a str,
}

/// A node lost during the run.
#[derive(Serialize)]
struct LostRow<'a> {
    id: &'a str,
    at_s: String,
    users_failed: u64,
    reason: &'a str,
}

/// The summary cards under the title.
#[derive(Serialize)]
struct Cards {
    users: u64,
    users_succeeded: u64,
    users_failed: u64,
    iterations: u64,
    iterations_failed: u64,
    error_rate: String,
    iteration_p95: String,
    iteration_p50: String,
    boot_s: String,
}

fn cards(r: &RunReport) -> Cards {
    let iteration = r.latencies.get("iteration");
    let ms = |f: fn(&crate::metrics::LatencySummary) -> f64| {
        iteration.map_or("-".into(), |s| format!("{:.0} ms", f(s)))
    };
    Cards {
        users: r.users,
        users_succeeded: r.users_succeeded,
        users_failed: r.users_failed,
        iterations: r.iterations_ok.saturating_add(r.iterations_failed),
        iterations_failed: r.iterations_failed,
        error_rate: format!("{:.2}", error_rate(r) * 100.0),
        iteration_p95: ms(|s| s.p95_ms),
        iteration_p50: ms(|s| s.p50_ms),
        boot_s: format!("{:.2}", r.boot_s),
    }
}

/// A threshold's row: its expression, what was observed, and the verdict's CSS class and words.
#[derive(Serialize)]
struct ThresholdRow<'a> {
    expr: &'a str,
    observed: String,
    class: &'static str,
    result: &'static str,
}

fn thresholds(r: &RunReport) -> Vec<ThresholdRow<'_>> {
    r.thresholds
        .iter()
        .map(|t| ThresholdRow {
            expr: &t.expr,
            observed: t.observed.map_or("no data".into(), |v| format!("{v:.3}")),
            class: if t.passed { "pass" } else { "fail" },
            result: match (t.passed, t.aborted_run) {
                (true, _) => "pass",
                (false, true) => "fail (aborted the run)",
                (false, false) => "fail",
            },
        })
        .collect()
}

/// A metric's row in the Steps table, milliseconds to one decimal.
#[derive(Serialize)]
struct StepRow<'a> {
    name: &'a str,
    count: u64,
    failed: u64,
    p50: String,
    p90: String,
    p95: String,
    p99: String,
    max: String,
}

fn steps(r: &RunReport) -> Vec<StepRow<'_>> {
    let ms = |v: f64| format!("{v:.1}");
    r.latencies
        .iter()
        .map(|(name, l)| StepRow {
            name,
            count: l.count,
            // A step's failures are counted apart from its latencies, as `<metric>:failed`.
            failed: r
                .counters
                .get(&format!("{name}:failed"))
                .copied()
                .unwrap_or(0),
            p50: ms(l.p50_ms),
            p90: ms(l.p90_ms),
            p95: ms(l.p95_ms),
            p99: ms(l.p99_ms),
            max: ms(l.max_ms),
        })
        .collect()
}

/// A message of the Errors table: how often it happened, where first, and the captured
/// failures' files.
#[derive(Serialize)]
struct ErrorRow<'a> {
    message: &'a str,
    count: u64,
    first: Option<FirstSeen<'a>>,
    captures: Vec<CaptureLink<'a>>,
}

/// Where an error was first seen.
#[derive(Serialize)]
struct FirstSeen<'a> {
    user: u64,
    node: &'a str,
    iteration: u64,
    /// Seconds into the run: `+12.3 s`.
    after: String,
    /// The wall-clock time.
    time: String,
}

/// One captured failure: its files, relative to the report.
#[derive(Serialize)]
struct CaptureLink<'a> {
    screenshot: Option<&'a str>,
    dom: &'a str,
    user: u64,
    iteration: u64,
}

fn errors(r: &RunReport) -> Vec<ErrorRow<'_>> {
    top_errors(r, 10)
        .into_iter()
        .map(|(message, count)| ErrorRow {
            message,
            count,
            first: r.failures.first.get(message).map(|f| FirstSeen {
                user: f.user_id,
                node: &f.node,
                iteration: f.iteration,
                after: format!("+{:.1} s", f.at_ms as f64 / 1000.0),
                time: utc(r.started_at_unix_ms + f.at_ms),
            }),
            captures: r
                .failures
                .captures_of(message)
                .map(|c| CaptureLink {
                    screenshot: c.screenshot.as_deref(),
                    dom: &c.dom,
                    user: c.at.user_id,
                    iteration: c.at.iteration,
                })
                .collect(),
        })
        .collect()
}

/// A node's row in the Nodes table.
#[derive(Serialize)]
struct NodeRow<'a> {
    id: &'a str,
    memory_mib: String,
    cores: String,
    capacity: u64,
    users: u64,
    iterations_ok: u64,
    iterations_failed: u64,
    snapshots: u64,
    ready_s: String,
    chromium: &'a str,
}

fn nodes(r: &RunReport) -> Vec<NodeRow<'_>> {
    r.nodes
        .iter()
        .map(|n| NodeRow {
            id: &n.id,
            memory_mib: format!("{:.0}", n.facts.effective_memory_bytes as f64 / MIB),
            cores: format!("{:.2}", n.facts.effective_cores),
            capacity: n.capacity.users,
            users: n.users,
            iterations_ok: n.iterations_ok,
            iterations_failed: n.iterations_failed,
            snapshots: n.snapshots,
            ready_s: format!("{:.2}", n.ready_after_s),
            chromium: n
                .facts
                .chromium
                .as_ref()
                .map_or("none", |c| c.version.as_str()),
        })
        .collect()
}

/// The Plan paragraph's figures.
#[derive(Serialize)]
struct PlanText<'a> {
    nodes: u64,
    source: &'a str,
    memory_gib: String,
    cores: String,
    users_per_node: u64,
    by_memory: u64,
    by_cpu: u64,
    max_nodes: u64,
}

fn plan(r: &RunReport) -> PlanText<'_> {
    let p = &r.plan;
    PlanText {
        nodes: p.nodes,
        source: &p.source,
        memory_gib: format!("{:.1}", p.node_memory_bytes as f64 / (1024.0 * MIB)),
        cores: format!("{:.2}", p.node_cores),
        users_per_node: p.users_per_node,
        by_memory: p.capacity.by_memory,
        by_cpu: p.capacity.by_cpu,
        max_nodes: p.max_nodes,
    }
}
