//! Each node's time series: users, iterations, memory and CPU, a point per snapshot, kept in
//! `result.json` and drawn in the report, so a run can show that one node was saturated and
//! its latencies are the load generator's rather than the application's.
//!
//! Bounded, so the result stays small at hundreds of nodes and hours of run: each node keeps
//! at most [`points_per_node`] points. When its series is full, neighbouring points are merged
//! in pairs — iterations summed, users the later value, memory and CPU the peak (saturation
//! must not be averaged away) — so the series still covers the whole run, at a coarser step.

use serde::{Deserialize, Serialize};

use liveload_proto::{MetricsSnapshot, NodeFacts};

use crate::sizing::SizingConfig;

/// The points all nodes' series may hold together.
pub const POINTS_BUDGET: usize = 20_000;

/// The most points one node's series holds in a cluster of `nodes`: the budget shared, between
/// 30 (half a minute at full resolution) and 600 (ten minutes).
pub fn points_per_node(nodes: usize) -> usize {
    (POINTS_BUDGET / nodes.max(1)).clamp(30, 600)
}

/// One point of a node's series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Seconds after the start signal, at the end of the point's interval.
    pub t_s: f64,
    /// Users running at the end of the interval.
    pub users: u64,
    /// Iterations ended (succeeded or failed) during the interval.
    pub iterations: u64,
    /// Memory in use at its peak, bytes (the agent's process group, or its cgroup).
    pub memory_bytes: u64,
    /// Cores busy at their peak.
    pub cpu_cores: f64,
}

/// One node's series, and whether it ran hot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSeries {
    /// The node's id.
    pub node: String,
    /// The memory sizing lets users use on this node (the plan's usable memory), bytes.
    pub usable_memory_bytes: u64,
    /// The node's cores, as sized.
    pub cores: f64,
    /// Seconds each point covers (1 until the series was merged to fit).
    pub step_s: u32,
    /// The points, oldest first.
    pub points: Vec<SeriesPoint>,
    /// Why the node's latencies are suspect: CPU above 90 % of its cores, or memory above
    /// 90 % of its usable memory, at any point; `None` when it never ran hot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot: Option<String>,
    /// When the node's memory per user exceeded the sizing profile's by more than 20 % (the
    /// plan under-estimated this scenario's pages: nodes may run out of memory): by how much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_warning: Option<String>,
    /// The profile's memory of the browser itself and per user, bytes, the warning's yardstick.
    #[serde(default)]
    pub profile_browser_bytes: u64,
    /// See [`NodeSeries::profile_browser_bytes`].
    #[serde(default)]
    pub profile_user_bytes: u64,
    /// Browser contexts the node holds whatever users are running (the closed model makes
    /// every user's at the start; 0 in the open model): memory per user divides by these.
    #[serde(default)]
    pub contexts: u64,
    /// Snapshots not yet a whole point (once points cover more than a second), and how many.
    #[serde(skip)]
    pending: Option<(SeriesPoint, u32)>,
}

/// How far past the profile's memory per user a node may go before the report warns.
pub const PROFILE_TOLERANCE: f64 = 1.2;

/// Points covering less than this (the last, cut short at the end of the run, when Chromium
/// closing busies every core) are not judged for heat.
const SHORTEST_JUDGED_S: f64 = 0.5;

/// Where a node counts as hot: 90 % of its cores or of its usable memory.
pub const HOT_FRACTION: f64 = 0.9;

impl NodeSeries {
    /// An empty series for a node of these facts, holding `contexts` browser contexts from
    /// the start.
    pub fn new(node: &str, facts: &NodeFacts, sizing: &SizingConfig, contexts: u64) -> NodeSeries {
        NodeSeries {
            node: node.to_string(),
            usable_memory_bytes: sizing
                .capacity(facts.effective_memory_bytes, facts.effective_cores)
                .usable_memory_bytes,
            cores: facts.effective_cores,
            step_s: 1,
            points: Vec::new(),
            hot: None,
            memory_warning: None,
            profile_browser_bytes: sizing.profile.browser_memory_usage_bytes,
            profile_user_bytes: sizing.profile.context_memory_usage_bytes,
            contexts,
            pending: None,
        }
    }

    /// Add a snapshot's point, merging pairs when the series holds `limit` points.
    pub fn push(&mut self, snapshot: &MetricsSnapshot, limit: usize) {
        let counter = |name: &str| snapshot.counters.get(name).copied().unwrap_or(0);
        let resources = snapshot.resources.unwrap_or_default();
        let point = SeriesPoint {
            t_s: snapshot.elapsed_ms as f64 / 1000.0,
            users: snapshot.active_users,
            iterations: counter("iterations_ok").saturating_add(counter("iterations_failed")),
            memory_bytes: resources.memory_bytes,
            cpu_cores: resources.cpu_cores,
        };
        let last_t = self
            .pending
            .as_ref()
            .map(|(p, _)| p.t_s)
            .or(self.points.last().map(|p| p.t_s))
            .unwrap_or(0.0);
        if point.t_s - last_t >= SHORTEST_JUDGED_S {
            self.judge(&point);
        }
        // Once points cover `step_s` seconds, snapshots gather into one before it is added, so
        // every point covers the same time.
        let (point, gathered) = match self.pending.take() {
            Some((pending, n)) => (merge(&pending, &point), n + 1),
            None => (point, 1),
        };
        if gathered < self.step_s {
            self.pending = Some((point, gathered));
            return;
        }
        self.points.push(point);
        if self.points.len() >= limit.max(2) {
            self.halve();
        }
    }

    /// The series with a partly gathered last point added (the end of the run).
    pub fn finish(&mut self) {
        if let Some((point, _)) = self.pending.take() {
            self.points.push(point);
        }
    }

    /// Merge neighbouring points in pairs (an odd last point stays as it is).
    fn halve(&mut self) {
        // An odd last point becomes the pending one: it covers half a new step.
        let odd = (self.points.len() % 2 == 1)
            .then(|| self.points.pop())
            .flatten();
        self.points = self
            .points
            .chunks(2)
            .map(|pair| merge(&pair[0], &pair[1]))
            .collect();
        self.step_s = self.step_s.saturating_mul(2);
        self.pending = odd.map(|p| (p, self.step_s / 2));
    }

    /// Flag the node the first time a point runs hot, or uses more memory per user than the
    /// profile allows for.
    fn judge(&mut self, point: &SeriesPoint) {
        let users = point.users.max(self.contexts);
        if self.memory_warning.is_none() && users > 0 && self.profile_user_bytes > 0 {
            let per_user = point
                .memory_bytes
                .saturating_sub(self.profile_browser_bytes) as f64
                / users as f64;
            let ratio = per_user / self.profile_user_bytes as f64;
            if ratio > PROFILE_TOLERANCE {
                self.memory_warning = Some(format!(
                    "{} per user with {} users at {:.0} s, {:.1}x the profile's {}: the plan under-estimates this scenario (calibrate it, or raise --context-memory-mib)",
                    shown_size(per_user),
                    users,
                    point.t_s,
                    ratio,
                    shown_size(self.profile_user_bytes as f64)
                ));
            }
        }
        if self.hot.is_some() {
            return;
        }
        if self.cores > 0.0 && point.cpu_cores > HOT_FRACTION * self.cores {
            self.hot = Some(format!(
                "CPU at {:.0} % of its {} cores at {:.0} s",
                100.0 * point.cpu_cores / self.cores,
                self.cores,
                point.t_s
            ));
        } else if self.usable_memory_bytes > 0
            && point.memory_bytes as f64 > HOT_FRACTION * self.usable_memory_bytes as f64
        {
            self.hot = Some(format!(
                "memory at {:.0} % of its usable {} MiB at {:.0} s",
                100.0 * point.memory_bytes as f64 / self.usable_memory_bytes as f64,
                self.usable_memory_bytes / (1024 * 1024),
                point.t_s
            ));
        }
    }
}

/// Two neighbouring points as one: the later time and users, iterations summed, the peaks.
fn merge(a: &SeriesPoint, b: &SeriesPoint) -> SeriesPoint {
    SeriesPoint {
        t_s: b.t_s,
        users: b.users,
        iterations: a.iterations.saturating_add(b.iterations),
        memory_bytes: a.memory_bytes.max(b.memory_bytes),
        cpu_cores: a.cpu_cores.max(b.cpu_cores),
    }
}

/// A size in MiB, or in KiB below one MiB (protocol users cost kilobytes).
fn shown_size(bytes: f64) -> String {
    if bytes < (1 << 20) as f64 {
        format!("{:.0} KiB", bytes / 1024.0)
    } else {
        format!("{:.0} MiB", bytes / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use liveload_proto::NodeResources;

    fn facts(cores: f64, memory_gib: u64) -> NodeFacts {
        NodeFacts {
            hostname: "h".into(),
            arch: "x86_64".into(),
            total_memory_bytes: memory_gib << 30,
            available_memory_bytes: memory_gib << 30,
            logical_cores: cores as u32,
            cgroup_memory_limit_bytes: None,
            cgroup_cpu_limit: None,
            host_share: None,
            effective_memory_bytes: memory_gib << 30,
            effective_cores: cores,
            chromium: None,
            max_users: None,
        }
    }

    fn snapshot(second: u64, iterations: u64, memory_mib: u64, cpu: f64) -> MetricsSnapshot {
        MetricsSnapshot {
            records: Vec::new(),
            elapsed_ms: second * 1000,
            active_users: 5,
            counters: [("iterations_ok".to_string(), iterations)].into(),
            resources: Some(NodeResources {
                memory_bytes: memory_mib << 20,
                cpu_cores: cpu,
                processes: 3,
            }),
            ..MetricsSnapshot::default()
        }
    }

    #[test]
    fn the_budget_is_shared_within_bounds() {
        assert_eq!(points_per_node(1), 600);
        assert_eq!(points_per_node(100), 200);
        assert_eq!(points_per_node(1000), 30);
    }

    /// A full series halves: iterations add up, the peaks survive, time still ends at the last
    /// point.
    #[test]
    fn a_full_series_merges_pairs_and_keeps_totals_and_peaks() {
        let mut series = NodeSeries::new("n", &facts(2.0, 8), &SizingConfig::default(), 0);
        for second in 1..=8 {
            let cpu = if second == 3 { 1.5 } else { 0.5 };
            series.push(&snapshot(second, 10, 100 * second, cpu), 8);
        }
        assert_eq!(series.points.len(), 4, "8 points halved at the limit");
        assert_eq!(series.step_s, 2);
        assert_eq!(series.points.iter().map(|p| p.iterations).sum::<u64>(), 80);
        assert_eq!(
            series.points[1].cpu_cores, 1.5,
            "the peak of seconds 3 and 4"
        );
        assert_eq!(series.points[3].memory_bytes, 800 << 20);
        assert_eq!(series.points[3].t_s, 8.0);
        assert!(series.hot.is_none(), "1.5 of 2 cores is 75 %");
    }

    /// After halvings, every point still covers the same time: snapshots gather into whole
    /// steps, and a run's partial last step is kept at the end.
    #[test]
    fn points_cover_equal_steps_after_many_halvings() {
        let mut series = NodeSeries::new("n", &facts(2.0, 8), &SizingConfig::default(), 0);
        for second in 1..=21 {
            series.push(&snapshot(second, 10, 100, 0.5), 4);
        }
        series.finish();
        let step = f64::from(series.step_s);
        assert_eq!(series.step_s, 8);
        let whole = &series.points[..series.points.len() - 1];
        for (i, p) in whole.iter().enumerate() {
            assert_eq!(p.t_s, step * (i + 1) as f64, "{:?}", series.points);
            assert_eq!(
                p.iterations,
                10 * series.step_s as u64,
                "{:?}",
                series.points
            );
        }
        assert_eq!(series.points.last().unwrap().t_s, 21.0);
        let total: u64 = series.points.iter().map(|p| p.iterations).sum();
        assert_eq!(total, 210, "nothing lost in the merges");
    }

    #[test]
    fn memory_per_user_past_the_profile_is_warned_once() {
        let sizing = SizingConfig::default();
        let (browser, user) = (
            sizing.profile.browser_memory_usage_bytes >> 20,
            sizing.profile.context_memory_usage_bytes >> 20,
        );
        let mut series = NodeSeries::new("n", &facts(8.0, 64), &sizing, 0);
        // 5 users at exactly the profile, then at twice it.
        series.push(&snapshot(1, 1, browser + 5 * user, 0.1), 600);
        assert!(series.memory_warning.is_none());
        series.push(&snapshot(2, 1, browser + 10 * user, 0.1), 600);
        let warning = series.memory_warning.clone().unwrap();
        assert!(warning.contains("2.0x the profile"), "{warning}");
    }

    /// The last point of a run covers a few milliseconds of Chromium closing: not a sign of
    /// a saturated node.
    #[test]
    fn a_short_last_point_is_not_judged() {
        let mut series = NodeSeries::new("n", &facts(2.0, 8), &SizingConfig::default(), 0);
        series.push(&snapshot(1, 1, 100, 0.2), 600);
        let mut closing = snapshot(1, 0, 100, 1.99);
        closing.elapsed_ms = 1056;
        series.push(&closing, 600);
        assert!(series.hot.is_none());
        assert_eq!(series.points.len(), 2, "kept, only not judged");
    }

    #[test]
    fn a_node_past_ninety_percent_is_hot() {
        let mut series = NodeSeries::new("n", &facts(2.0, 8), &SizingConfig::default(), 0);
        series.push(&snapshot(1, 1, 100, 1.7), 600);
        series.push(&snapshot(2, 1, 100, 1.95), 600);
        let hot = series.hot.clone().unwrap();
        assert!(
            hot.starts_with("CPU at 98 %") && hot.contains("at 2 s"),
            "{hot}"
        );
        let mut series = NodeSeries::new("m", &facts(2.0, 1), &SizingConfig::default(), 0);
        let usable = series.usable_memory_bytes >> 20;
        series.push(&snapshot(1, 1, usable * 95 / 100, 0.1), 600);
        assert!(series.hot.unwrap().starts_with("memory at 95 %"));
    }
}
