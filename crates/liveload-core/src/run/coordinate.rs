//! The controller's side of `coordinate` steps: users arriving at a point, from any node, are
//! grouped in order of arrival; a group is released when it is full, or when its timeout has
//! passed since its first member arrived (a partial group then goes on, and its size says so).
//!
//! Only the controller sees every node, so only it can group users cluster-wide. The cost is a
//! round trip over each agent's link per user and point, which is why `coordinate` is for
//! moments that matter (users joining one room), not for every step.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// One released group, and where its members wait.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// The coordination point.
    pub point: String,
    /// The group's number at this point, from 0.
    pub group_id: u64,
    /// How many users the point asked for.
    pub wanted: u32,
    /// `(node index, user id)` of each member, in order of arrival.
    pub members: Vec<(usize, u64)>,
}

/// A group still forming at one point.
struct Forming {
    members: Vec<(usize, u64)>,
    release_at: Instant,
}

/// Every coordination point of a run.
///
/// The points, their group sizes and timeouts come from the scenario, never from the agents:
/// an agent's `Arrived` names a point and a user, and one for a point the scenario lacks is
/// ignored, so a misbehaving agent can neither grow the controller's memory with invented
/// points nor make a real point's group wait for members that will never come.
pub struct Coordinator {
    points: HashMap<String, (u32, Duration)>,
    forming: HashMap<String, Forming>,
    next_group: HashMap<String, u64>,
}

impl Coordinator {
    /// The coordinator of `scenario`'s `coordinate` steps (in `on_start`, `steps`, `on_stop`,
    /// groups and repeats). Two steps naming the same point share it; the first one's group
    /// size and timeout stand.
    pub fn for_scenario(scenario: &crate::scenario::Scenario) -> Coordinator {
        let mut points = HashMap::new();
        let lists = [
            &scenario.user_loop.on_start[..],
            &scenario.steps,
            &scenario.user_loop.on_stop,
        ];
        for (point, group, timeout_ms) in crate::scenario::coordinate_points(lists) {
            points
                .entry(point)
                .or_insert((group, Duration::from_millis(timeout_ms)));
        }
        Coordinator {
            points,
            forming: HashMap::new(),
            next_group: HashMap::new(),
        }
    }

    /// `user` of node `node` arrived at `point` at `now`. Returns the groups this released:
    /// a group whose timeout had passed (its timer not yet handled) and then, when this arrival
    /// filled it, the new one. A user already in the forming group is not counted twice.
    pub fn arrive(
        &mut self,
        point: &str,
        (node, user): (usize, u64),
        now: Instant,
    ) -> Vec<Release> {
        let Some(&(wanted, timeout)) = self.points.get(point) else {
            tracing::warn!(
                point,
                node,
                user,
                "arrival at a point the scenario does not have; ignored"
            );
            return Vec::new();
        };
        let mut released = Vec::new();
        if self.forming.get(point).is_some_and(|f| f.release_at <= now) {
            let late = self.forming.remove(point).expect("just seen");
            released.push(self.release(point, late.members, wanted));
        }
        let forming = self
            .forming
            .entry(point.to_string())
            .or_insert_with(|| Forming {
                members: Vec::new(),
                release_at: now
                    .checked_add(timeout)
                    .unwrap_or(now + Duration::from_secs(86_400)),
            });
        if !forming.members.contains(&(node, user)) {
            forming.members.push((node, user));
        }
        if forming.members.len() >= wanted as usize {
            let full = self.forming.remove(point).expect("just filled");
            released.push(self.release(point, full.members, wanted));
        }
        released
    }

    /// The groups whose timeout has passed at `now`, released partial.
    pub fn expired(&mut self, now: Instant) -> Vec<Release> {
        let due: Vec<String> = self
            .forming
            .iter()
            .filter(|(_, f)| f.release_at <= now)
            .map(|(point, _)| point.clone())
            .collect();
        due.into_iter()
            .map(|point| {
                let forming = self.forming.remove(&point).expect("listed");
                let wanted = self.points.get(&point).map_or(1, |p| p.0);
                self.release(&point, forming.members, wanted)
            })
            .collect()
    }

    /// When the next group's timeout falls, if any group is forming.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.forming.values().map(|f| f.release_at).min()
    }

    fn release(&mut self, point: &str, members: Vec<(usize, u64)>, wanted: u32) -> Release {
        let next = self.next_group.entry(point.to_string()).or_default();
        let group_id = *next;
        *next += 1;
        Release {
            point: point.to_string(),
            group_id,
            wanted,
            members,
        }
    }
}

impl Release {
    /// The nodes with a member of this group, each once.
    pub fn nodes(&self) -> Vec<usize> {
        let mut nodes: Vec<usize> = self.members.iter().map(|(node, _)| *node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use liveload_proto::{Step, StepKind};

    fn coordinate(point: &str, group: u32, timeout_ms: u64) -> Step {
        Step {
            name: format!("coordinate {point}"),
            kind: StepKind::Coordinate {
                point: point.into(),
                group,
                timeout_ms,
            },
        }
    }

    fn coordinator() -> Coordinator {
        let mut scenario =
            crate::scenario::Scenario::new("c", "http://x", vec![coordinate("room", 3, 5_000)]);
        scenario.user_loop.on_start = vec![Step {
            name: "g".into(),
            kind: StepKind::Group {
                steps: vec![coordinate("other", 2, 5_000)],
            },
        }];
        Coordinator::for_scenario(&scenario)
    }

    #[test]
    fn full_groups_release_at_once_in_arrival_order_and_partial_ones_at_their_timeout() {
        let mut c = coordinator();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(5);
        assert!(c.arrive("room", (0, 1), t0).is_empty());
        assert!(c.arrive("room", (1, 7), t0).is_empty());
        assert!(
            c.arrive("room", (1, 7), t0).is_empty(),
            "a second arrival counts once"
        );
        assert!(
            c.arrive("other", (1, 8), t0).is_empty(),
            "found inside on_start's group"
        );
        let full = c.arrive("room", (2, 4), t0).remove(0);
        assert_eq!(full.members, vec![(0, 1), (1, 7), (2, 4)]);
        assert_eq!((full.group_id, full.wanted), (0, 3));
        assert_eq!(full.nodes(), vec![0, 1, 2]);
        // The next group at the same point is number 1, timed from its own first arrival.
        let later = t0 + Duration::from_secs(3);
        assert!(c.arrive("room", (0, 2), later).is_empty());
        assert_eq!(c.next_deadline(), Some(t0 + timeout), "`other` falls first");
        let due = c.expired(t0 + timeout);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].point.as_str(), due[0].members.len()), ("other", 1));
        // An arrival after a group's timeout, before its timer: the late group goes first.
        let released = c.arrive("room", (0, 3), later + timeout);
        assert_eq!(released.len(), 1);
        assert_eq!(
            (released[0].group_id, released[0].members.clone()),
            (1, vec![(0, 2)])
        );
        let due = c.expired(later + timeout + timeout);
        assert_eq!(due[0].group_id, 2, "numbers go on per point");
    }

    /// Points come from the scenario: an agent naming another one is ignored, so it cannot
    /// grow the controller's memory or hold a real group.
    #[test]
    fn arrivals_at_points_the_scenario_lacks_are_ignored() {
        let mut c = coordinator();
        let now = Instant::now();
        for i in 0..10_000u64 {
            assert!(c.arrive(&format!("invented-{i}"), (0, i), now).is_empty());
        }
        assert!(c.forming.is_empty() && c.next_group.is_empty());
        assert!(c.next_deadline().is_none());
    }
}
