//! The report's SVG line charts. The geometry is computed here from numbers; the markup and
//! every piece of text (title, unit, tick labels, legend) are written by
//! `templates/chart.html`, so they go through the template engine's escaping like the rest of
//! the page. Nothing in this module builds markup.

use crate::run::series::{NodeSeries, SeriesPoint};
use serde::Serialize;

use crate::metrics::SecondPoint;

/// The drawing area, in SVG user units; the page scales it to its width.
const W: f64 = 720.0;
const H: f64 = 220.0;
/// Room for the value labels on the left of the y axis.
const LEFT: f64 = 56.0;
/// Room for the time labels under the x axis.
const BOTTOM: f64 = 28.0;
/// Room above the top guide so its label is not cut.
const TOP: f64 = 12.0;
/// Room on the right so the last point's stroke is not cut.
const RIGHT: f64 = 10.0;
/// Horizontal guides drawn above the x axis.
const GUIDES: u32 = 3;

/// One line of a chart: what it is called in the legend and tooltip, its colour, and its
/// (second, value) points.
pub(super) struct Line<'a> {
    /// The legend's and tooltip's text.
    pub label: &'a str,
    /// A CSS colour. `'static` on purpose: it lands in a `style` attribute, where HTML escaping
    /// does not stop CSS injection, so it must be one of this module's constants, never run text.
    pub color: &'static str,
    /// (seconds since the start, value) pairs.
    pub points: Vec<(f64, f64)>,
}

/// A chart ready for `templates/chart.html`: every coordinate placed and formatted as the old
/// hand-written SVG had it, every text a plain string for the template to escape.
#[derive(Serialize)]
pub(super) struct Chart<'a> {
    title: &'a str,
    unit: &'a str,
    width: String,
    height: String,
    /// x of the y axis, where guides start.
    left: String,
    /// x where guides end and the right-aligned time label sits.
    right: String,
    /// x of the right-aligned value labels.
    tick_x: String,
    /// y of the time labels.
    axis_y: String,
    /// The last second, for the time axis's right label.
    max_x: String,
    ticks: Vec<Tick>,
    lines: Vec<Series<'a>>,
}

/// A horizontal guide and its value label.
#[derive(Serialize)]
struct Tick {
    y: String,
    label_y: String,
    label: String,
}

/// A line as drawn: its `points` attribute and its legend.
#[derive(Serialize)]
struct Series<'a> {
    label: &'a str,
    color: &'static str,
    points: String,
}

/// Place `lines` on a chart over the run's seconds, the y axis from 0 to 10 % above the
/// highest value.
pub(super) fn chart<'a>(title: &'a str, unit: &'a str, lines: &[Line<'a>]) -> Chart<'a> {
    let all = lines.iter().flat_map(|l| l.points.iter());
    // At least one second wide and one unit high, so an empty run still draws axes, not NaN.
    let max_x = all.clone().map(|p| p.0).fold(1.0_f64, f64::max);
    let max_y = all.map(|p| p.1).fold(0.0_f64, f64::max);
    let max_y = if max_y <= 0.0 { 1.0 } else { max_y * 1.1 };
    let x = |v: f64| LEFT + v / max_x * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - v / max_y) * (H - TOP - BOTTOM);
    let ticks = (0..=GUIDES)
        .map(|i| {
            let v = max_y * f64::from(i) / f64::from(GUIDES);
            Tick {
                y: format!("{:.1}", y(v)),
                // +4 centres an 11px label on its guide.
                label_y: format!("{:.1}", y(v) + 4.0),
                label: compact(v),
            }
        })
        .collect();
    let lines = lines
        .iter()
        .map(|line| Series {
            label: line.label,
            color: line.color,
            points: line
                .points
                .iter()
                .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect();
    Chart {
        title,
        unit,
        width: W.to_string(),
        height: H.to_string(),
        left: LEFT.to_string(),
        right: (W - RIGHT).to_string(),
        tick_x: (LEFT - 6.0).to_string(),
        axis_y: (H - 8.0).to_string(),
        max_x: max_x.to_string(),
        ticks,
        lines,
    }
}

/// A value label short enough for the left margin: `12k`, `340`, `56.7`, `0.89`.
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

/// A line of `f` over the run's per-second points.
pub(super) fn series<'a>(
    points: &[SecondPoint],
    label: &'a str,
    color: &'static str,
    f: impl Fn(&SecondPoint) -> f64,
) -> Line<'a> {
    Line {
        label,
        color,
        points: points.iter().map(|p| (p.second as f64, f(p))).collect(),
    }
}

/// The report's four charts: active users, throughput, step latency and errors.
pub(super) fn run_charts(s: &[SecondPoint]) -> Vec<Chart<'static>> {
    vec![
        chart(
            "Active users",
            "users",
            &[series(s, "active users", "#0969da", |p| {
                p.active_users as f64
            })],
        ),
        chart(
            "Throughput",
            "per second",
            &[
                series(s, "iterations/s", "#1a7f37", |p| {
                    p.iterations_ok.saturating_add(p.iterations_failed) as f64
                }),
                series(s, "steps/s", "#8250df", |p| p.steps as f64),
            ],
        ),
        chart(
            "Step latency, think excluded",
            "ms",
            &[
                series(s, "p50", "#0969da", |p| p.step_p50_ms),
                series(s, "p95", "#bf8700", |p| p.step_p95_ms),
                series(s, "p99", "#cf222e", |p| p.step_p99_ms),
            ],
        ),
        chart(
            "Errors",
            "failed iterations/s",
            &[series(s, "failed iterations", "#cf222e", |p| {
                p.iterations_failed as f64
            })],
        ),
    ]
}

/// Colours for nodes' lines, in turn.
const NODE_COLORS: [&str; 8] = [
    "#0969da", "#1a7f37", "#bf8700", "#cf222e", "#8250df", "#1b7c83", "#bc4c00", "#57606a",
];

/// The most nodes drawn in the node charts: the hottest (by peak CPU share), so a chart of a
/// 500-node run stays readable and still shows the nodes that matter.
pub(super) const NODE_LINES: usize = 8;

/// Two charts of each node's resources: memory (MiB) and CPU (% of the node's cores), for at
/// most [`NODE_LINES`] nodes, the hottest first.
pub(super) fn node_charts(series: &[NodeSeries]) -> Vec<Chart<'_>> {
    if series.iter().all(|s| s.points.is_empty()) {
        return Vec::new();
    }
    let peak_share = |s: &NodeSeries| {
        s.points
            .iter()
            .map(|p| p.cpu_cores / s.cores.max(0.001))
            .fold(0.0, f64::max)
    };
    let mut chosen: Vec<&NodeSeries> = series.iter().collect();
    chosen.sort_by(|a, b| peak_share(b).total_cmp(&peak_share(a)));
    chosen.truncate(NODE_LINES);
    let lines = |f: &dyn Fn(&NodeSeries, &SeriesPoint) -> f64| -> Vec<Line<'_>> {
        chosen
            .iter()
            .zip(NODE_COLORS.iter().cycle())
            .map(|(s, color)| Line {
                label: s.node.as_str(),
                color,
                points: s.points.iter().map(|p| (p.t_s, f(s, p))).collect(),
            })
            .collect()
    };
    vec![
        chart(
            "Node memory (agent and browser)",
            "MiB",
            &lines(&|_, p| p.memory_bytes as f64 / (1024.0 * 1024.0)),
        ),
        chart(
            "Node CPU",
            "% of the node's cores",
            &lines(&|s, p| 100.0 * p.cpu_cores / s.cores.max(0.001)),
        ),
    ]
}
