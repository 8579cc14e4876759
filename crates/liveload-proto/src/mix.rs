//! Mixed runs (`mix:`): several scenarios' users on one cluster, each node holding a share of
//! each. The node's assignment then carries [`UserGroup`]s: which of its user ids run which
//! scenario's steps, as which engine. Without groups every user runs the assignment's own
//! steps.

use serde::{Deserialize, Serialize};

use crate::{Assignment, Engine, Step, UserLoop};

/// One scenario's users on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserGroup {
    /// The scenario's name (its steps' metrics start with it: `step:<name>/<step>`).
    pub name: String,
    /// What its users are.
    pub engine: Engine,
    /// Its first user id; its users are `first_user_id .. first_user_id + users`.
    pub first_user_id: u64,
    /// How many.
    pub users: u64,
    /// The steps of one iteration.
    pub steps: Vec<Step>,
    /// What each user does around its iterations.
    #[serde(default, skip_serializing_if = "UserLoop::is_plain")]
    pub user_loop: UserLoop,
}

impl Assignment {
    /// The group user `user_id` belongs to: the one whose range holds it. A user beyond the
    /// node's ids (added while the run goes on) is placed as the node's own user at the same
    /// offset modulo its count, so added users keep the node's proportions (and never land in
    /// a group the node has no user of, such as browsers on a node without a browser).
    pub fn group_of(&self, user_id: u64) -> Option<&UserGroup> {
        let holds = |g: &&UserGroup, id: u64| {
            (g.first_user_id..g.first_user_id.saturating_add(g.users)).contains(&id)
        };
        if let Some(group) = self.groups.iter().find(|g| holds(g, user_id)) {
            return Some(group);
        }
        let mine = self.groups.iter().map(|g| g.users).sum::<u64>();
        if mine == 0 {
            return self.groups.first();
        }
        let first = self
            .groups
            .iter()
            .map(|g| g.first_user_id)
            .min()
            .unwrap_or(0);
        let inside = first + user_id.wrapping_sub(first) % mine;
        self.groups.iter().find(|g| holds(g, inside))
    }

    /// The steps user `user_id` iterates over.
    pub fn steps_of(&self, user_id: u64) -> &[Step] {
        self.group_of(user_id).map_or(&self.steps, |g| &g.steps)
    }

    /// What user `user_id` does around its iterations.
    pub fn user_loop_of(&self, user_id: u64) -> &UserLoop {
        self.group_of(user_id)
            .map_or(&self.user_loop, |g| &g.user_loop)
    }

    /// What user `user_id` is.
    pub fn engine_of(&self, user_id: u64) -> Engine {
        self.group_of(user_id).map_or(self.engine, |g| g.engine)
    }

    /// The node needs a browser: some of its users are browser users (and the run allows
    /// one).
    pub fn needs_browser(&self) -> bool {
        let browsers = if self.groups.is_empty() {
            self.engine == Engine::Browser
        } else {
            self.groups
                .iter()
                .any(|g| g.engine == Engine::Browser && g.users > 0)
        };
        browsers && !self.no_browser
    }

    /// The metric timing a mixed run's iterations per scenario (`iteration:<name>`); `None`
    /// outside a mix.
    pub fn group_metric(&self, user_id: u64) -> Option<String> {
        self.group_of(user_id)
            .map(|g| format!("iteration:{}", g.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_find_their_group_and_added_ones_take_turns() {
        let group = |name: &str, engine, first, users| UserGroup {
            name: name.into(),
            engine,
            first_user_id: first,
            users,
            steps: vec![Step {
                name: name.into(),
                kind: crate::StepKind::Halt,
            }],
            user_loop: UserLoop::default(),
        };
        let mut assignment = Assignment::new("r", "mix", "http://x", 5, vec![]);
        assignment.first_user_id = 10;
        assert_eq!(assignment.group_of(10), None);
        assert!(assignment.needs_browser());
        assignment.groups = vec![
            group("browse", Engine::Browser, 10, 1),
            group("api", Engine::Http, 11, 4),
        ];
        assert_eq!(assignment.engine_of(10), Engine::Browser);
        assert_eq!(assignment.engine_of(14), Engine::Http);
        assert_eq!(assignment.steps_of(12)[0].name, "api");
        assert_eq!(
            assignment.group_metric(10).as_deref(),
            Some("iteration:browse")
        );
        // Added users take the node's proportions: 15 is placed as 10, 16 as 11.
        assert_eq!(assignment.group_of(15).unwrap().name, "browse");
        assert_eq!(assignment.group_of(16).unwrap().name, "api");
        assert_eq!(assignment.group_of(20).unwrap().name, "browse");
        assert!(assignment.needs_browser());
        assignment.groups.remove(0);
        assert!(!assignment.needs_browser());
        assignment.no_browser = true;
        assignment.groups.clear();
        assert!(!assignment.needs_browser());
    }
}
