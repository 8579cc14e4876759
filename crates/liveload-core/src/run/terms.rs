//! Each node's share of the workload: arrival rates, throttles and ramps split by the node's
//! share of users, so cluster-wide limits hold without nodes asking each other.

use std::time::Duration;

use liveload_proto::{NodeThrottle, Workload};

use super::RunOptions;
use crate::scenario::{Load, Scenario};
use crate::sizing::assign_users;

/// The workload model in words, for reports.
pub fn describe_load(load: &Load) -> String {
    match load {
        Load::Closed { ramp_up: None, .. } => {
            "closed model: every user loops over the steps".into()
        }
        Load::Closed {
            ramp_up: Some(r),
            ramp_steps,
        } => format!(
            "closed model: users loop over the steps, starting over {r:?}{}",
            ramp_steps.map_or(String::new(), |s| format!(" in {s} steps"))
        ),
        Load::Open {
            rate,
            ramp_to,
            max_users,
        } => format!(
            "open model: {rate}{} arrivals/s, at most {max_users} at once; latency (`iteration`) is \
             measured from each arrival's scheduled time, so it is free of coordinated omission",
            ramp_to.map_or(String::new(), |r| format!(" rising to {r}"))
        ),
    }
}

/// Each node's share of the workload and of the cluster-wide throttles, by its share of users,
/// and the time between its user starts.
///
/// Splitting by share keeps every cluster-wide limit: the nodes' rates add up to the cluster's
/// rate and their parallelism to the cluster's parallelism, so the cluster never exceeds a
/// limit even though no node asks another for permission. (A node whose users are slow leaves
/// its share unused; the cluster then runs below the limit, never above.)
pub fn node_terms(
    scenario: &Scenario,
    options: &RunOptions,
    users_per_node: &[u64],
) -> Vec<NodeTerms> {
    let total: u64 = users_per_node.iter().sum::<u64>().max(1);
    let parallelism = scenario
        .throttle
        .parallelism
        .map(|limit| assign_users(limit, users_per_node));
    // The cluster-wide least time between iteration starts, from the rate and interarrival.
    let cluster_interval = [
        scenario
            .throttle
            .rate
            .map(|(limit, per)| per.as_secs_f64() / limit as f64),
        scenario.throttle.interarrival.map(|d| d.as_secs_f64()),
    ]
    .into_iter()
    .flatten()
    .reduce(f64::max);
    users_per_node
        .iter()
        .enumerate()
        .map(|(i, &users)| {
            let share = users as f64 / total as f64;
            let workload = match &scenario.load {
                Load::Closed { .. } => Workload::Closed,
                Load::Open { rate, ramp_to, .. } => Workload::Open {
                    rate_per_s: rate * share,
                    ramp_to_per_s: ramp_to.unwrap_or(*rate) * share,
                },
            };
            let throttle =
                (cluster_interval.is_some() || parallelism.is_some()).then(|| NodeThrottle {
                    min_interval_us: cluster_interval
                        .map(|seconds| (seconds / share.max(f64::MIN_POSITIVE) * 1e6) as u64),
                    max_concurrent: parallelism.as_ref().map(|p| p[i]),
                });
            let (start_interval, start_batch) = match &scenario.load {
                // A staircase: `steps` equal batches, one every ramp_up / steps.
                Load::Closed {
                    ramp_up: Some(ramp_up),
                    ramp_steps: Some(steps),
                } if users > 0 => (
                    *ramp_up / (*steps).max(1),
                    users.div_ceil(u64::from((*steps).max(1))),
                ),
                Load::Closed {
                    ramp_up: Some(ramp_up),
                    ..
                } if users > 0 => (*ramp_up / users.min(u32::MAX as u64) as u32, 1),
                _ => (options.start_interval, 1),
            };
            NodeTerms {
                workload,
                throttle,
                start_interval,
                start_batch,
            }
        })
        .collect()
}

/// One node's share of a run's workload and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTerms {
    /// How users arrive on the node.
    pub workload: Workload,
    /// Its share of the throttles.
    pub throttle: Option<NodeThrottle>,
    /// Time between two batches of user starts.
    pub start_interval: Duration,
    /// Users per batch.
    pub start_batch: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_and_arrivals_split_by_share_and_add_up() {
        let mut scenario = Scenario::new("s", "http://x", Vec::new());
        scenario.throttle.rate = Some((30, Duration::from_secs(1)));
        scenario.throttle.parallelism = Some(10);
        scenario.load = Load::Open {
            rate: 12.0,
            ramp_to: Some(24.0),
            max_users: 30,
        };
        let options = RunOptions::new("s", 30, Duration::from_secs(10));
        let terms = node_terms(&scenario, &options, &[10, 15, 5]);
        let rate: f64 = terms
            .iter()
            .map(|t| 1e6 / t.throttle.as_ref().unwrap().min_interval_us.unwrap() as f64)
            .sum();
        assert!(
            (rate - 30.0).abs() < 0.01,
            "node rates add up to the limit: {rate}"
        );
        let parallel: u64 = terms
            .iter()
            .map(|t| t.throttle.as_ref().unwrap().max_concurrent.unwrap())
            .sum();
        assert_eq!(parallel, 10);
        let arrivals: f64 = terms
            .iter()
            .map(|t| match &t.workload {
                Workload::Open { rate_per_s, .. } => *rate_per_s,
                Workload::Closed => 0.0,
            })
            .sum();
        assert!((arrivals - 12.0).abs() < 1e-9);
        scenario.load = Load::Closed {
            ramp_up: Some(Duration::from_secs(10)),
            ramp_steps: None,
        };
        let terms = node_terms(&scenario, &options, &[10, 20]);
        assert_eq!(terms[0].start_interval, Duration::from_secs(1));
        assert_eq!(terms[1].start_interval, Duration::from_millis(500));
        // A staircase of 4 steps over 10 s: batches every 2.5 s.
        scenario.load = Load::Closed {
            ramp_up: Some(Duration::from_secs(10)),
            ramp_steps: Some(4),
        };
        let terms = node_terms(&scenario, &options, &[10, 20]);
        assert_eq!(terms[0].start_interval, Duration::from_millis(2500));
        assert_eq!((terms[0].start_batch, terms[1].start_batch), (3, 5));
    }
}
