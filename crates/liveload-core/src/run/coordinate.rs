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
    wanted: u32,
    release_at: Instant,
}

/// Every coordination point of a run.
#[derive(Default)]
pub struct Coordinator {
    forming: HashMap<String, Forming>,
    next_group: HashMap<String, u64>,
}

/// The most points a run may hold groups at once: a bound on the controller's memory against
/// a scenario (or a misbehaving agent) naming points without end.
const MAX_POINTS: usize = 10_000;

impl Coordinator {
    /// `user` of node `node` arrived at `point` (a group of `wanted`, released `timeout` after
    /// its first arrival at the latest). Returns the group if this arrival completed it.
    /// The first arrival of a group sets its size and timeout.
    pub fn arrive(
        &mut self,
        point: &str,
        (node, user): (usize, u64),
        wanted: u32,
        timeout: Duration,
        now: Instant,
    ) -> Option<Release> {
        if !self.forming.contains_key(point) && self.forming.len() >= MAX_POINTS {
            // Release the newcomer alone rather than grow without bound.
            return Some(self.release(point, vec![(node, user)], wanted));
        }
        let forming = self
            .forming
            .entry(point.to_string())
            .or_insert_with(|| Forming {
                members: Vec::new(),
                wanted: wanted.max(1),
                release_at: now.checked_add(timeout).unwrap_or(now),
            });
        forming.members.push((node, user));
        if forming.members.len() < forming.wanted as usize {
            return None;
        }
        let full = self.forming.remove(point).expect("just filled");
        Some(self.release(point, full.members, full.wanted))
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
                self.release(&point, forming.members, forming.wanted)
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

    #[test]
    fn full_groups_release_at_once_in_arrival_order_and_partial_ones_at_their_timeout() {
        let mut c = Coordinator::default();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(5);
        assert_eq!(c.arrive("room", (0, 1), 3, timeout, t0), None);
        assert_eq!(c.arrive("room", (1, 7), 3, timeout, t0), None);
        assert_eq!(c.arrive("other", (1, 8), 2, timeout, t0), None);
        let full = c.arrive("room", (2, 4), 3, timeout, t0).unwrap();
        assert_eq!(full.members, vec![(0, 1), (1, 7), (2, 4)]);
        assert_eq!((full.group_id, full.wanted), (0, 3));
        assert_eq!(full.nodes(), vec![0, 1, 2]);
        // The next group at the same point is number 1, timed from its own first arrival.
        let later = t0 + Duration::from_secs(3);
        assert_eq!(c.arrive("room", (0, 2), 3, timeout, later), None);
        assert_eq!(c.next_deadline(), Some(t0 + timeout), "`other` falls first");
        let due = c.expired(t0 + timeout);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].point.as_str(), due[0].members.len()), ("other", 1));
        let due = c.expired(later + timeout);
        assert_eq!((due[0].group_id, due[0].members.clone()), (1, vec![(0, 2)]));
        assert!(c.next_deadline().is_none());
        assert_eq!(c.arrive("room", (0, 3), 3, timeout, later), None);
        let due = c.expired(later + timeout + timeout);
        assert_eq!(due[0].group_id, 2, "numbers go on per point");
    }
}
