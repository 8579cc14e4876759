//! Rendering a [`RunReport`] for people: a self-contained HTML page and a Markdown summary, and
//! a side-by-side comparison of two runs.
//!
//! The HTML page works offline and forever: inline CSS, charts drawn as inline SVG by this
//! module, no script, no font or library from a CDN. Everything here is pure string building;
//! the CLI writes the files.

use std::fmt::Write as _;

use crate::metrics::SecondPoint;
use crate::run::RunReport;

const MIB: f64 = 1024.0 * 1024.0;

/// Escape text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The most frequent error messages (`error:<message>` counters), most frequent first.
pub fn top_errors(r: &RunReport, n: usize) -> Vec<(&str, u64)> {
    let mut errors: Vec<(&str, u64)> = r
        .counters
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("error:").map(|m| (m, *v)))
        .collect();
    errors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    errors.truncate(n);
    errors
}

/// A run's verdict in one word.
pub fn verdict(r: &RunReport) -> &'static str {
    if r.aborted.is_some() {
        "ABORTED"
    } else if !r.thresholds_passed() {
        "THRESHOLDS FAILED"
    } else if r.succeeded() {
        "PASSED"
    } else {
        "USERS FAILED"
    }
}

/// Failed iterations / all iterations.
pub fn error_rate(r: &RunReport) -> f64 {
    let total = r.iterations_ok + r.iterations_failed;
    if total == 0 {
        0.0
    } else {
        r.iterations_failed as f64 / total as f64
    }
}

/// Format a Unix millisecond timestamp as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One line of a chart.
struct Line<'a> {
    label: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// An SVG line chart of `lines` over the run's seconds.
fn chart(title: &str, unit: &str, lines: &[Line]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 56.0;
    const BOTTOM: f64 = 28.0;
    const TOP: f64 = 12.0;
    let all = lines.iter().flat_map(|l| l.points.iter());
    let max_x = all.clone().map(|p| p.0).fold(1.0_f64, f64::max);
    let max_y = all.map(|p| p.1).fold(0.0_f64, f64::max);
    let max_y = if max_y <= 0.0 { 1.0 } else { max_y * 1.1 };
    let x = |v: f64| LEFT + v / max_x * (W - LEFT - 10.0);
    let y = |v: f64| TOP + (1.0 - v / max_y) * (H - TOP - BOTTOM);
    let mut svg = format!(
        "<figure class=\"chart\"><figcaption>{} <small>({})</small></figcaption>\
         <svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(unit),
        esc(title)
    );
    // Axes and three horizontal guides with their values.
    for i in 0..=3 {
        let v = max_y * i as f64 / 3.0;
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - 10.0,
            LEFT - 6.0,
            y(v) + 4.0,
            compact(v),
            y = y(v)
        );
    }
    let _ = write!(
        svg,
        "<text class=\"tick\" x=\"{LEFT}\" y=\"{}\">0 s</text>\
         <text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{} s</text>",
        H - 8.0,
        W - 10.0,
        H - 8.0,
        max_x,
    );
    for line in lines {
        let points: Vec<String> = line
            .points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
            .collect();
        let _ = write!(
            svg,
            "<polyline class=\"series\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
            line.color,
            points.join(" "),
            esc(line.label)
        );
    }
    svg.push_str("</svg><div class=\"legend\">");
    for line in lines {
        let _ = write!(
            svg,
            "<span><i style=\"background:{}\"></i>{}</span>",
            line.color,
            esc(line.label)
        );
    }
    svg.push_str("</div></figure>");
    svg
}

fn compact(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn series<'a>(
    points: &[SecondPoint],
    label: &'a str,
    color: &'a str,
    f: impl Fn(&SecondPoint) -> f64,
) -> Line<'a> {
    Line {
        label,
        color,
        points: points.iter().map(|p| (p.second as f64, f(p))).collect(),
    }
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;color:#1d2433;padding:0 1rem}\
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #dde2ea;padding-bottom:.3rem}\
.meta{color:#5b6579}.verdict{display:inline-block;padding:.2rem .7rem;border-radius:4px;font-weight:600;color:#fff}\
.PASSED{background:#1a7f37}.FAILED,.ABORTED{background:#cf222e}.cards{display:flex;flex-wrap:wrap;gap:1rem;margin:1rem 0}\
.card{border:1px solid #dde2ea;border-radius:6px;padding:.6rem 1rem;min-width:140px}.card b{display:block;font-size:1.4rem}\
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border-bottom:1px solid #eef1f5;padding:.35rem .5rem;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#f6f8fa}.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}\
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:1rem}.chart{margin:0;border:1px solid #dde2ea;border-radius:6px;padding:.5rem}\
.chart figcaption{font-weight:600;margin-bottom:.3rem}.chart svg{width:100%;height:auto}.grid{stroke:#eef1f5}.tick{font-size:11px;fill:#5b6579}\
.legend span{margin-right:1rem;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}\
footer{margin-top:2rem;color:#5b6579;font-size:12px}";

/// The self-contained HTML report.
pub fn html(r: &RunReport) -> String {
    let verdict = verdict(r);
    let class = match verdict {
        "PASSED" => "PASSED",
        "ABORTED" => "ABORTED",
        _ => "FAILED",
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>liveload: {scenario}</title><style>{STYLE}</style></head><body>\
         <h1>{scenario}</h1><p class=\"meta\">run <code>{run}</code> · {date} · {backend} backend · \
         {nodes} node(s) · {dur:.1} s</p><p class=\"meta\" id=\"workload\">{workload}</p><p><span class=\"verdict {class}\" id=\"verdict\">{verdict}</span>{aborted}</p>",
        scenario = esc(&r.scenario),
        run = esc(&r.run_id),
        date = utc(r.started_at_unix_ms),
        backend = esc(&r.backend),
        nodes = r.nodes.len(),
        dur = r.run_s,
        workload = esc(&r.workload),
        aborted = r.aborted.as_ref().map_or(String::new(), |t| format!(
            " aborted by threshold <code>{}</code>",
            esc(t)
        )),
    );
    let iteration = r.latencies.get("iteration");
    let _ = write!(
        out,
        "<div class=\"cards\" id=\"summary\">\
         <div class=\"card\">users<b>{}</b>{} succeeded, {} failed</div>\
         <div class=\"card\">iterations<b>{}</b>{} failed</div>\
         <div class=\"card\">error rate<b>{:.2} %</b>failed / all iterations</div>\
         <div class=\"card\">iteration p95<b>{}</b>p50 {}</div>\
         <div class=\"card\">boot<b>{:.2} s</b>until every node's facts were in</div></div>",
        r.users,
        r.users_succeeded,
        r.users_failed,
        r.iterations_ok + r.iterations_failed,
        r.iterations_failed,
        error_rate(r) * 100.0,
        iteration.map_or("-".into(), |s| format!("{:.0} ms", s.p95_ms)),
        iteration.map_or("-".into(), |s| format!("{:.0} ms", s.p50_ms)),
        r.boot_s
    );

    if !r.thresholds.is_empty() {
        out.push_str("<h2>Thresholds</h2><table id=\"thresholds\"><tr><th>threshold</th><th>observed</th><th>result</th></tr>");
        for t in &r.thresholds {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"{}\">{}</td></tr>",
                esc(&t.expr),
                t.observed.map_or("no data".into(), |v| format!("{v:.3}")),
                if t.passed { "pass" } else { "fail" },
                if t.passed {
                    "pass"
                } else if t.aborted_run {
                    "fail (aborted the run)"
                } else {
                    "fail"
                }
            );
        }
        out.push_str("</table>");
    }

    let s = &r.series;
    out.push_str("<h2>Over time</h2><div class=\"charts\" id=\"charts\">");
    out.push_str(&chart(
        "Active users",
        "users",
        &[series(s, "active users", "#0969da", |p| {
            p.active_users as f64
        })],
    ));
    out.push_str(&chart(
        "Throughput",
        "per second",
        &[
            series(s, "iterations/s", "#1a7f37", |p| {
                (p.iterations_ok + p.iterations_failed) as f64
            }),
            series(s, "steps/s", "#8250df", |p| p.steps as f64),
        ],
    ));
    out.push_str(&chart(
        "Step latency, think excluded",
        "ms",
        &[
            series(s, "p50", "#0969da", |p| p.step_p50_ms),
            series(s, "p95", "#bf8700", |p| p.step_p95_ms),
            series(s, "p99", "#cf222e", |p| p.step_p99_ms),
        ],
    ));
    out.push_str(&chart(
        "Errors",
        "failed iterations/s",
        &[series(s, "failed iterations", "#cf222e", |p| {
            p.iterations_failed as f64
        })],
    ));
    out.push_str("</div>");

    out.push_str("<h2>Steps</h2><table id=\"steps\"><tr><th>metric</th><th>count</th><th>failed</th><th>p50 ms</th><th>p90 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th></tr>");
    for (name, l) in &r.latencies {
        let failed = r
            .counters
            .get(&format!("{name}:failed"))
            .copied()
            .unwrap_or(0);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            esc(name),
            l.count,
            failed,
            l.p50_ms,
            l.p90_ms,
            l.p95_ms,
            l.p99_ms,
            l.max_ms
        );
    }
    out.push_str("</table>");

    let errors = top_errors(r, 10);
    if !errors.is_empty() {
        out.push_str("<h2>Errors</h2><table id=\"errors\"><tr><th>message</th><th>count</th></tr>");
        for (message, count) in errors {
            let _ = write!(out, "<tr><td>{}</td><td>{count}</td></tr>", esc(message));
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Nodes</h2><table id=\"nodes\"><tr><th>node</th><th>usable memory</th><th>cores</th><th>capacity</th><th>users</th><th>iterations ok</th><th>failed</th><th>snapshots</th><th>ready</th><th>Chromium</th></tr>");
    for n in &r.nodes {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:.0} MiB</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2} s</td><td>{}</td></tr>",
            esc(&n.id),
            n.facts.effective_memory_bytes as f64 / MIB,
            n.facts.effective_cores,
            n.capacity.users,
            n.users,
            n.iterations_ok,
            n.iterations_failed,
            n.snapshots,
            n.ready_after_s,
            esc(n
                .facts
                .chromium
                .as_ref()
                .map_or("none", |c| c.version.as_str()))
        );
    }
    out.push_str("</table>");
    let p = &r.plan;
    let _ = write!(
        out,
        "<h2>Plan</h2><p>{} node(s) planned from the {} size ({:.1} GiB, {:.2} cores): up to {} users per node \
         (by memory {}, by CPU {}), limit {} nodes.</p>\
         <footer>liveload {} · result schema {} · percentiles merged from full HdrHistograms \
         (3 significant digits), never averaged.</footer></body></html>",
        p.nodes,
        esc(&p.source),
        p.node_memory_bytes as f64 / (1024.0 * MIB),
        p.node_cores,
        p.users_per_node,
        p.capacity.by_memory,
        p.capacity.by_cpu,
        p.max_nodes,
        esc(&r.liveload_version),
        r.schema_version
    );
    out
}

/// The Markdown summary.
pub fn markdown(r: &RunReport) -> String {
    let mut out = format!(
        "# liveload: {}\n\nRun `{}` · {} · {} backend · {} node(s) · {:.1} s · **{}**\n\n",
        r.scenario,
        r.run_id,
        utc(r.started_at_unix_ms),
        r.backend,
        r.nodes.len(),
        r.run_s,
        verdict(r)
    );
    if !r.workload.is_empty() {
        out.push_str(&format!("{}\n\n", r.workload));
    }
    let _ = writeln!(
        out,
        "| users | succeeded | failed | iterations | failed iterations | error rate |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n| {} | {} | {} | {} | {} | {:.2} % |\n",
        r.users,
        r.users_succeeded,
        r.users_failed,
        r.iterations_ok + r.iterations_failed,
        r.iterations_failed,
        error_rate(r) * 100.0
    );
    if !r.thresholds.is_empty() {
        out.push_str("## Thresholds\n\n| threshold | observed | result |\n| --- | ---: | --- |\n");
        for t in &r.thresholds {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                t.expr,
                t.observed.map_or("no data".into(), |v| format!("{v:.3}")),
                if t.passed { "pass" } else { "**fail**" }
            );
        }
        out.push('\n');
    }
    out.push_str("## Steps (ms)\n\n| metric | count | p50 | p90 | p95 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (name, l) in &r.latencies {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            name.replace('|', "\\|"),
            l.count,
            l.p50_ms,
            l.p90_ms,
            l.p95_ms,
            l.p99_ms,
            l.max_ms
        );
    }
    let errors = top_errors(r, 10);
    if !errors.is_empty() {
        out.push_str("\n## Errors\n\n| message | count |\n| --- | ---: |\n");
        for (message, count) in errors {
            let _ = writeln!(out, "| {} | {count} |", message.replace('|', "\\|"));
        }
    }
    out.push_str("\n## Nodes\n\n| node | cores | usable MiB | capacity | users | iterations ok | failed |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for n in &r.nodes {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.0} | {} | {} | {} | {} |",
            n.id,
            n.facts.effective_cores,
            n.facts.effective_memory_bytes as f64 / MIB,
            n.capacity.users,
            n.users,
            n.iterations_ok,
            n.iterations_failed
        );
    }
    out
}

/// Two runs side by side: every metric's p50/p95/p99 and the error rates, with B's change
/// relative to A.
pub fn compare_markdown(a: &RunReport, b: &RunReport) -> String {
    let delta = |x: f64, y: f64| {
        if x == 0.0 {
            "-".to_string()
        } else {
            format!("{:+.1} %", (y - x) / x * 100.0)
        }
    };
    let mut out = format!(
        "# liveload: {} vs {}\n\nA = `{}` ({}), B = `{}` ({})\n\n| | A | B | change |\n| --- | ---: | ---: | ---: |\n| error rate | {:.2} % | {:.2} % | |\n| iterations | {} | {} | {} |\n\n",
        a.scenario,
        b.scenario,
        a.run_id,
        utc(a.started_at_unix_ms),
        b.run_id,
        utc(b.started_at_unix_ms),
        error_rate(a) * 100.0,
        error_rate(b) * 100.0,
        a.iterations_ok + a.iterations_failed,
        b.iterations_ok + b.iterations_failed,
        delta(
            (a.iterations_ok + a.iterations_failed) as f64,
            (b.iterations_ok + b.iterations_failed) as f64
        )
    );
    out.push_str("| metric | A p50 | B p50 | A p95 | B p95 | p95 change | A p99 | B p99 |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let names: std::collections::BTreeSet<&String> =
        a.latencies.keys().chain(b.latencies.keys()).collect();
    for name in names {
        let (la, lb) = (a.latencies.get(name), b.latencies.get(name));
        let f = |l: Option<&crate::metrics::LatencySummary>,
                 g: fn(&crate::metrics::LatencySummary) -> f64| {
            l.map_or("-".to_string(), |l| format!("{:.1}", g(l)))
        };
        let change = match (la, lb) {
            (Some(x), Some(y)) => delta(x.p95_ms, y.p95_ms),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            name.replace('|', "\\|"),
            f(la, |l| l.p50_ms),
            f(lb, |l| l.p50_ms),
            f(la, |l| l.p95_ms),
            f(lb, |l| l.p95_ms),
            change,
            f(la, |l| l.p99_ms),
            f(lb, |l| l.p99_ms),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn html_escapes_and_charts_have_points() {
        assert_eq!(esc("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
        let svg = chart(
            "t",
            "ms",
            &[Line {
                label: "x",
                color: "#000",
                points: vec![(1.0, 2.0), (2.0, 4.0)],
            }],
        );
        assert!(svg.contains("<polyline") && svg.contains("points=\""));
    }
}
