//! The report's tests: dates, charts, and above all that run text can never become markup in
//! the HTML page or break a table in the Markdown.

use super::chart::{Chart, Line, chart};
use super::html::render;
use super::markdown::{Md, md};
use super::*;

use crate::metrics::{LatencySummary, SecondPoint};
use crate::proto::{BrowserInfo, NodeFacts};
use crate::run::{NodeReport, Plan};
use crate::sizing::{NodeCapacity, SizingConfig};
use crate::threshold::Verdict;

/// A small but complete report: two nodes, three metrics, two thresholds (one aborted the
/// run), two errors, six seconds of series. `text` goes into every field that comes from a
/// scenario or a target page, so a hostile value reaches every place the renderers write it.
fn sample(text: &str) -> RunReport {
    let aborting = format!("p95(step:click {text}) < 50ms");
    RunReport {
        schema_version: 1,
        liveload_version: "0.1.0".into(),
        backend: "local".into(),
        started_at_unix_ms: 1_795_000_000_000,
        run_id: "run-1".into(),
        scenario: format!("shop {text}"),
        plan: plan(),
        nodes: vec![
            node(
                0,
                format!("node-0 {text}"),
                Some(format!("Chromium 140.0 {text}")),
            ),
            node(1, "node-1".into(), None),
        ],
        users: 6,
        users_succeeded: 5,
        users_failed: 1,
        iterations_ok: 80,
        iterations_failed: 4,
        boot_s: 2.5,
        run_s: 6.0,
        latencies: [
            ("iteration".to_string(), latency(800.0)),
            ("step:navigate /".to_string(), latency(120.0)),
            (format!("step:click {text}"), latency(45.5)),
        ]
        .into(),
        counters: [
            (format!("step:click {text}:failed"), 3),
            (format!("error:timeout waiting for {text}"), 3),
            ("error:net::ERR_CONNECTION_REFUSED".to_string(), 1),
        ]
        .into(),
        thresholds: vec![
            verdict_of("p95(step:navigate /) < 800ms", 204.0, true),
            verdict_of(&aborting, 77.35, false),
        ],
        aborted: Some(aborting),
        series: (1..=6).map(second).collect(),
        workload: format!("closed model: 6 users {text}"),
        lost_nodes: Vec::new(),
        node_series: Vec::new(),
        cost_usd: None,
        cost_cap_reached: false,
        failures: failures(text),
    }
}

/// The first occurrence of the `{text}` error, on the node named with `text`, and one
/// captured failure of it.
fn failures(text: &str) -> crate::failures::Failures {
    use crate::failures::{CaptureFiles, FirstError};
    let at = FirstError {
        node: format!("node-0 {text}"),
        user_id: 4,
        iteration: 2,
        at_ms: 2_500,
    };
    let error = format!("timeout waiting for {text}");
    crate::failures::Failures {
        first: [(error.clone(), at.clone())].into(),
        captures: vec![CaptureFiles {
            error,
            at,
            screenshot: Some("failures/001-timeout.png".into()),
            dom: "failures/001-timeout.dom.txt".into(),
        }],
        files: Vec::new(),
    }
}

/// Both nodes' size, as planned and as measured.
const CAPACITY: NodeCapacity = NodeCapacity {
    usable_memory_bytes: 3 << 30,
    by_memory: 12,
    by_cpu: 8,
    users: 8,
};

fn plan() -> Plan {
    Plan {
        users: 6,
        nodes: 2,
        users_per_node: 8,
        source: "catalogue".into(),
        node_memory_bytes: 8 << 30,
        node_cores: 4.0,
        size_note: None,
        capacity: CAPACITY,
        max_nodes: 10,
        sizing: SizingConfig::default(),
        node_hourly_price: None,
        boot_floor_s: None,
        boot_advice: None,
    }
}

fn node(index: u32, id: String, chromium: Option<String>) -> NodeReport {
    NodeReport {
        id,
        index,
        agent_version: "0.1.0".into(),
        facts: NodeFacts {
            hostname: format!("host-{index}"),
            arch: "x86_64".into(),
            total_memory_bytes: 8 << 30,
            available_memory_bytes: 6 << 30,
            logical_cores: 4,
            cgroup_memory_limit_bytes: None,
            cgroup_cpu_limit: None,
            host_share: None,
            effective_memory_bytes: 5 << 30,
            effective_cores: 4.0,
            chromium: chromium.map(|version| BrowserInfo {
                path: "/usr/bin/chromium".into(),
                version,
            }),
            max_users: None,
        },
        capacity: CAPACITY,
        users: 3,
        first_user_id: u64::from(index) * 3,
        ready_after_s: 1.25,
        create_s: 0.1,
        iterations_ok: 40,
        iterations_failed: 2,
        snapshots: 6,
    }
}

/// 42 samples around a median of `p50` ms.
fn latency(p50: f64) -> LatencySummary {
    LatencySummary {
        count: 42,
        min_ms: p50 / 2.0,
        mean_ms: p50 * 1.1,
        p50_ms: p50,
        p90_ms: p50 * 1.5,
        p95_ms: p50 * 1.7,
        p99_ms: p50 * 2.0,
        max_ms: p50 * 3.0,
    }
}

fn verdict_of(expr: &str, observed: f64, passed: bool) -> Verdict {
    Verdict {
        expr: expr.into(),
        observed: Some(observed),
        passed,
        aborted_run: !passed,
    }
}

/// Second `s` of the run: users ramping up to 4, a failure every other second.
fn second(s: u64) -> SecondPoint {
    SecondPoint {
        second: s,
        active_users: s.min(4),
        iterations_ok: 10 + s,
        iterations_failed: s % 2,
        steps: 30 + 2 * s,
        step_p50_ms: 40.0 + s as f64,
        step_p95_ms: 90.0 + 3.0 * s as f64,
        step_p99_ms: 150.0 + 5.0 * s as f64,
    }
}

#[test]
fn dates_are_utc() {
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(1_795_000_000_000), "2026-11-18 11:06:40 UTC");
    assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
}

#[test]
fn html_escapes_and_charts_have_points() {
    let chart = chart(
        "<a&\"b\">",
        "ms",
        &[Line {
            label: "x'",
            color: "#000",
            points: vec![(1.0, 2.0), (2.0, 4.0)],
        }],
    );
    let svg = render("chart.html", ChartContext { chart });
    assert!(
        svg.contains("<polyline") && svg.contains("points=\""),
        "{svg}"
    );
    assert!(
        svg.contains("<figcaption>&lt;a&amp;&quot;b&quot;&gt; <small>")
            && svg.contains("aria-label=\"&lt;a&amp;&quot;b&quot;&gt;\"")
            && svg.contains("<title>x&#x27;</title>"),
        "title, label and legend are escaped: {svg}"
    );
}

/// What `templates/report.html` gives the chart partial inside its loop.
#[derive(serde::Serialize)]
struct ChartContext<'a> {
    chart: Chart<'a>,
}

/// Payloads that would run script or break out of an attribute if written unescaped.
const HOSTILE: [&str; 4] = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "it's",
    "fish & chips",
];

/// Places a report shows run text: title, heading, workload, aborting threshold, thresholds
/// table, steps table, errors table (the message and the node it was first seen on), nodes
/// table (id and Chromium version).
const HTML_PLACES: usize = 10;

#[test]
fn run_text_is_escaped_everywhere_in_the_html() {
    let escaped = [
        "&lt;script&gt;alert(1)&lt;&#x2f;script&gt;",
        "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;",
        "it&#x27;s",
        "fish &amp; chips",
    ];
    for (payload, escaped) in HOSTILE.into_iter().zip(escaped) {
        let page = html(&sample(payload));
        assert!(
            !page.contains("<script") && !page.contains("<img src=x"),
            "{payload}: {page}"
        );
        assert!(!page.contains(payload), "{payload} appears unescaped");
        assert_eq!(
            page.matches(escaped).count(),
            HTML_PLACES,
            "{payload} is shown, escaped, in every place: {page}"
        );
    }
    // All at once, as one string, in every field.
    let page = html(&sample(&HOSTILE.concat()));
    assert!(!page.contains("<script") && !page.contains("<img src=x"));
}

#[test]
fn ordinary_html_keeps_what_the_end_to_end_test_reads() {
    let page = html(&sample("cart"));
    for id in [
        "verdict",
        "summary",
        "thresholds",
        "charts",
        "steps",
        "errors",
        "nodes",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "no #{id}");
    }
    assert_eq!(page.matches("<figure class=\"chart\"").count(), 4);
    assert_eq!(page.matches("<polyline").count(), 7, "one per series");
    for points in page.split("points=\"").skip(1) {
        let points = &points[..points.find('"').unwrap()];
        assert_eq!(points.split(' ').count(), 6, "a point per second: {points}");
    }
    // Three metrics, two nodes: a header row each, plus one row per entry.
    let rows = |table: &str| {
        let start = page.find(&format!("id=\"{table}\"")).unwrap();
        page[start..]
            .split("</table>")
            .next()
            .unwrap()
            .matches("<tr>")
            .count()
    };
    assert_eq!((rows("steps"), rows("nodes"), rows("errors")), (4, 3, 3));
    assert!(page.contains("class=\"verdict ABORTED\" id=\"verdict\">ABORTED</span>"));
    // The error's first occurrence, and its captured failure linked by relative paths.
    assert!(
        page.contains("user 4 on node-0 cart, iteration 2, +2.5 s (2026-11-18 11:06:42 UTC)"),
        "{page}"
    );
    assert!(
        page.contains("<a href=\"failures&#x2f;001-timeout.png\">screenshot</a>")
            && page.contains("<a href=\"failures&#x2f;001-timeout.dom.txt\">DOM</a>"),
        "{page}"
    );
    assert!(!page.contains("<script") && !page.contains("http://"));
}

/// The cells of a Markdown table row, split as GitHub (cmark-gfm) and markdown-it split them:
/// on every `|` not right after a backslash.
fn cells(row: &str) -> usize {
    let row = row.trim();
    let bytes = row.as_bytes();
    let pipes = (0..bytes.len())
        .filter(|&i| bytes[i] == b'|' && (i == 0 || bytes[i - 1] != b'\\'))
        .count();
    pipes - 1
}

/// Every table of `markdown`: its rows, header first. Fails if a row has another count of
/// cells than its header.
fn assert_tables_keep_their_columns(markdown: &str) -> usize {
    let mut tables = 0;
    let lines: Vec<&str> = markdown.lines().collect();
    for block in lines.split(|l| !l.starts_with('|')) {
        let Some(header) = block.first() else {
            continue;
        };
        tables += 1;
        for row in block {
            assert_eq!(cells(row), cells(header), "{row}\nin\n{markdown}");
        }
    }
    tables
}

#[test]
fn markdown_rows_keep_their_columns_whatever_the_names() {
    let nasty = "a | b\nc `d` <script>alert(1)</script> \\| e";
    let report = sample(nasty);
    let summary = markdown(&report);
    assert_eq!(assert_tables_keep_their_columns(&summary), 5);
    let compare = compare_markdown(&report, &sample("cart"));
    assert_eq!(assert_tables_keep_their_columns(&compare), 2);
    for text in [&summary, &compare] {
        // Only a code span may hold `<script>`: there Markdown shows it as text.
        let mut outside_code = text.lines().filter(|l| !l.starts_with("| ``p95"));
        assert!(!outside_code.any(|l| l.contains("<script")), "{text}");
        // The newline did not end a row: the name's second half is on its row.
        assert!(!text.lines().any(|l| l.starts_with("c `d`")), "{text}");
    }
    // The threshold's code span survived its backticks and pipes.
    assert!(
        summary.contains(
            "| ``p95(step:click a \\| b c `d` <script>alert(1)</script> \\\\| e) < 50ms`` |"
        ),
        "{summary}"
    );
}

#[test]
fn md_escapes_by_place() {
    assert_eq!(md("a|b\nc", Md::Text), "a\\|b c");
    assert_eq!(md("<b> `x` & y", Md::Text), "&lt;b> \\`x\\` & y");
    assert_eq!(md("p95(x) < 5", Md::Code), "`p95(x) < 5`");
    assert_eq!(md("a`b|c", Md::Code), "``a`b\\|c``");
    assert_eq!(md("`x``", Md::Code), "``` `x`` ```");
    assert_eq!(md("(`iteration`) <i>", Md::Prose), "(`iteration`) &lt;i>");
    // Ordinary names pass through untouched.
    assert_eq!(md("step:navigate /", Md::Text), "step:navigate /");
}

#[test]
fn ordinary_markdown_reads_as_before() {
    let summary = markdown(&sample("cart"));
    assert!(summary.starts_with("# liveload: shop cart\n\nRun `run-1` · 2026-11-18 11:06:40 UTC"));
    assert!(summary.contains("| `p95(step:navigate /) < 800ms` | 204.000 | pass |"));
    assert!(summary.contains("| step:navigate / | 42 | 120.0 | 180.0 | 204.0 | 240.0 | 360.0 |"));
    let compare = compare_markdown(&sample("cart"), &sample("cart"));
    assert!(
        compare.contains("| error rate | 4.76 % | 4.76 % | |"),
        "{compare}"
    );
    assert!(compare.contains("| step:navigate / | 120.0 | 120.0 | 204.0 | 204.0 | +0.0 % |"));
}

/// Regression (issue 12): `iterations_ok + iterations_failed` overflowed in the error rate, the
/// HTML and Markdown reports, the comparison and the chart, for counts an agent or a hand-edited
/// result.json can hold.
#[test]
fn counts_near_u64_max_render() {
    let mut r = sample("x");
    r.iterations_ok = u64::MAX;
    r.iterations_failed = 1;
    for point in &mut r.series {
        point.iterations_ok = u64::MAX;
        point.iterations_failed = u64::MAX;
    }
    assert!(error_rate(&r) > 0.0 && error_rate(&r) < 1e-12);
    assert!(html(&r).contains("18446744073709551615"));
    assert!(markdown(&r).contains("18446744073709551615"));
    assert!(!compare_markdown(&r, &r).is_empty());
}
