//! The Markdown summary ([`markdown`]) and the two-run comparison ([`compare_markdown`]). Both
//! land in pull-request comments, where a `|` in a step name would shift every cell after it,
//! a newline would end the table, and a `<` could open raw HTML. Every piece of run text goes
//! through [`md`], the one place that knows what Markdown needs escaped, and every table
//! through [`table`], which writes one cell per column.

use std::fmt::Write as _;

use super::{MIB, error_rate, top_errors, utc, verdict};
use crate::metrics::LatencySummary;
use crate::run::RunReport;

/// Where a piece of run text sits in the Markdown, which decides what must be escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Md {
    /// Plain text: a table cell, a heading, a line. Read as written: no markup survives.
    Text,
    /// A code span: the result is the whole span, backticks included, and the text shows
    /// literally (so `<` needs no entity, but backticks and table pipes still do).
    Code,
    /// liveload's own sentences (the workload), which quote names in backticks on purpose:
    /// only what could break out of the line or open HTML is escaped.
    Prose,
}

/// Escape `text` for `place`. Whatever the place, the result is one line (a newline would end
/// a table row or a heading) and holds no `<` that starts HTML or `|` that ends a cell.
///
/// - Newlines become spaces.
/// - `|` becomes `\|`: GitHub splits table rows on unescaped pipes before anything else, even
///   inside code spans, and drops the backslash afterwards.
/// - In text, `<` becomes `&lt;` (no raw HTML, no autolink) and a backtick `` \` `` (no code
///   span opening in the middle of a name). `&` is left alone: an entity in Markdown only ever
///   yields a character, never markup.
/// - In a code span, the fence is one backtick longer than the longest run of backticks in
///   the text, so none of them can close it.
pub(super) fn md(text: &str, place: Md) -> String {
    let line = text.replace("\r\n", " ").replace(['\n', '\r'], " ");
    if place == Md::Code {
        let longest = line.split(|c| c != '`').map(str::len).max().unwrap_or(0);
        let fence = "`".repeat(longest + 1);
        // A span whose text starts or ends with a backtick needs a space inside the fence,
        // which Markdown strips again.
        let pad = if line.starts_with('`') || line.ends_with('`') {
            " "
        } else {
            ""
        };
        return format!("{fence}{pad}{}{pad}{fence}", line.replace('|', "\\|"));
    }
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '`' if place == Md::Text => out.push_str("\\`"),
            c => out.push(c),
        }
    }
    out
}

/// A column's alignment.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}
use Align::{Left as L, Right as R};

/// Write a table: a header from `columns`, then `rows`, each cell already escaped with [`md`]
/// (or a number). An empty cell is written as `| |`.
fn table(out: &mut String, columns: &[(&str, Align)], rows: impl IntoIterator<Item = Vec<String>>) {
    let row = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        out.push('|');
        for cell in cells {
            out.push_str(if cell.is_empty() { "" } else { " " });
            out.push_str(cell);
            out.push_str(" |");
        }
        out.push('\n');
    };
    row(out, &mut columns.iter().map(|c| c.0));
    row(
        out,
        &mut columns.iter().map(|c| match c.1 {
            Align::Left => "---",
            Align::Right => "---:",
        }),
    );
    for cells in rows {
        debug_assert_eq!(cells.len(), columns.len(), "one cell per column");
        row(out, &mut cells.iter().map(String::as_str));
    }
}

/// The Markdown summary.
pub fn markdown(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "# liveload: {}\n\nRun {} · {} · {} backend · {} node(s) · {:.1} s · **{}**\n\n",
        md(&r.scenario, Md::Text),
        md(&r.run_id, Md::Code),
        utc(r.started_at_unix_ms),
        md(&r.backend, Md::Text),
        r.nodes.len(),
        r.run_s,
        verdict(r)
    );
    if !r.workload.is_empty() {
        let _ = write!(out, "{}\n\n", md(&r.workload, Md::Prose));
    }
    let summary = [
        r.users,
        r.users_succeeded,
        r.users_failed,
        r.iterations_ok.saturating_add(r.iterations_failed),
        r.iterations_failed,
    ];
    let mut cells: Vec<String> = summary.iter().map(u64::to_string).collect();
    cells.push(format!("{:.2} %", error_rate(r) * 100.0));
    let columns = [
        "users",
        "succeeded",
        "failed",
        "iterations",
        "failed iterations",
        "error rate",
    ];
    table(&mut out, &columns.map(|c| (c, R)), [cells]);
    out.push('\n');
    if !r.thresholds.is_empty() {
        out.push_str("## Thresholds\n\n");
        let rows = r.thresholds.iter().map(|t| {
            vec![
                md(&t.expr, Md::Code),
                t.observed.map_or("no data".into(), |v| format!("{v:.3}")),
                (if t.passed { "pass" } else { "**fail**" }).into(),
            ]
        });
        table(
            &mut out,
            &[("threshold", L), ("observed", R), ("result", L)],
            rows,
        );
        out.push('\n');
    }
    steps_errors_nodes(&mut out, r);
    out
}

/// The summary's last three tables: latencies by metric, top errors, nodes.
fn steps_errors_nodes(out: &mut String, r: &RunReport) {
    out.push_str("## Steps (ms)\n\n");
    let ms = |v: f64| format!("{v:.1}");
    let rows = r.latencies.iter().map(|(name, l)| {
        let mut row = vec![md(name, Md::Text), l.count.to_string()];
        row.extend([l.p50_ms, l.p90_ms, l.p95_ms, l.p99_ms, l.max_ms].map(ms));
        row
    });
    let columns = ["metric", "count", "p50", "p90", "p95", "p99", "max"];
    table(
        out,
        &columns.map(|c| (c, if c == "metric" { L } else { R })),
        rows,
    );
    let errors = top_errors(r, 10);
    if !errors.is_empty() {
        out.push_str("\n## Errors\n\n");
        let rows = errors.into_iter().map(|(message, count)| {
            let first = r.failures.first.get(message).map_or(String::new(), |f| {
                let text = format!(
                    "user {} on {}, iteration {}, +{:.1} s",
                    f.user_id,
                    f.node,
                    f.iteration,
                    f.at_ms as f64 / 1000.0
                );
                md(&text, Md::Text)
            });
            vec![md(message, Md::Text), count.to_string(), first]
        });
        table(
            out,
            &[("message", L), ("count", R), ("first seen", L)],
            rows,
        );
    }
    if !r.lost_nodes.is_empty() {
        out.push_str("\n## Lost nodes\n\n");
        let rows = r.lost_nodes.iter().map(|l| {
            vec![
                md(&l.id, Md::Text),
                format!("{:.1} s", l.at_s),
                l.users_failed.to_string(),
                md(&l.reason, Md::Text),
            ]
        });
        table(
            out,
            &[("node", L), ("after", R), ("users failed", R), ("why", L)],
            rows,
        );
    }
    out.push_str("\n## Nodes\n\n");
    let rows = r.nodes.iter().map(|n| {
        vec![
            md(&n.id, Md::Text),
            format!("{:.2}", n.facts.effective_cores),
            format!("{:.0}", n.facts.effective_memory_bytes as f64 / MIB),
            n.capacity.users.to_string(),
            n.users.to_string(),
            n.iterations_ok.to_string(),
            n.iterations_failed.to_string(),
        ]
    });
    let columns = [
        "node",
        "cores",
        "usable MiB",
        "capacity",
        "users",
        "iterations ok",
        "failed",
    ];
    table(
        out,
        &columns.map(|c| (c, if c == "node" { L } else { R })),
        rows,
    );
}

/// Two runs side by side: every metric's p50/p95/p99 and the error rates, with B's change
/// relative to A.
pub fn compare_markdown(a: &RunReport, b: &RunReport) -> String {
    let iterations = |r: &RunReport| r.iterations_ok.saturating_add(r.iterations_failed);
    let mut out = format!(
        "# liveload: {} vs {}\n\nA = {} ({}), B = {} ({})\n\n",
        md(&a.scenario, Md::Text),
        md(&b.scenario, Md::Text),
        md(&a.run_id, Md::Code),
        utc(a.started_at_unix_ms),
        md(&b.run_id, Md::Code),
        utc(b.started_at_unix_ms),
    );
    let rate = |r: &RunReport| format!("{:.2} %", error_rate(r) * 100.0);
    let totals = [
        vec!["error rate".into(), rate(a), rate(b), String::new()],
        vec![
            "iterations".into(),
            iterations(a).to_string(),
            iterations(b).to_string(),
            change(iterations(a) as f64, iterations(b) as f64),
        ],
    ];
    table(
        &mut out,
        &[("", L), ("A", R), ("B", R), ("change", R)],
        totals,
    );
    out.push('\n');
    let names: std::collections::BTreeSet<&String> =
        a.latencies.keys().chain(b.latencies.keys()).collect();
    let rows = names.into_iter().map(|name| {
        let (la, lb) = (a.latencies.get(name), b.latencies.get(name));
        let ms = |l: Option<&LatencySummary>, f: fn(&LatencySummary) -> f64| {
            l.map_or("-".to_string(), |l| format!("{:.1}", f(l)))
        };
        let p95_change = match (la, lb) {
            (Some(x), Some(y)) => change(x.p95_ms, y.p95_ms),
            _ => "-".into(),
        };
        vec![
            md(name, Md::Text),
            ms(la, |l| l.p50_ms),
            ms(lb, |l| l.p50_ms),
            ms(la, |l| l.p95_ms),
            ms(lb, |l| l.p95_ms),
            p95_change,
            ms(la, |l| l.p99_ms),
            ms(lb, |l| l.p99_ms),
        ]
    });
    let columns = [
        "metric",
        "A p50",
        "B p50",
        "A p95",
        "B p95",
        "p95 change",
        "A p99",
        "B p99",
    ];
    table(
        &mut out,
        &columns.map(|c| (c, if c == "metric" { L } else { R })),
        rows,
    );
    out
}

/// B's change relative to A, in percent; `-` when A is zero.
fn change(a: f64, b: f64) -> String {
    if a == 0.0 {
        "-".to_string()
    } else {
        format!("{:+.1} %", (b - a) / a * 100.0)
    }
}
