//! The agent's side of `coordinate` steps: a user reaching a point tells the controller
//! (`Arrived`) and waits for its group's `Release`, which may come from users of other nodes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, anyhow};
use liveload_proto::AgentMessage;
use tokio::sync::{mpsc, oneshot};

/// A released group, as one of its members sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group's number at its point, cluster-wide.
    pub id: u64,
    /// The user's place in it (0: first to arrive).
    pub index: usize,
    /// The members' user ids, in order of arrival.
    pub members: Vec<u64>,
    /// How many the point asked for.
    pub wanted: u32,
}

/// The users of this agent waiting at coordination points, and the way to the controller.
pub struct Coordination {
    out: mpsc::UnboundedSender<AgentMessage>,
    waiting: Mutex<HashMap<(String, u64), oneshot::Sender<Group>>>,
}

/// Removes a user from the waiting ones when its wait ends, however it ends.
struct Waiting<'a> {
    coordination: &'a Coordination,
    key: (String, u64),
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.coordination.waiting.lock() {
            waiting.remove(&self.key);
        }
    }
}

/// How much longer than the group's own timeout a user waits for the controller's answer
/// (the controller releases a partial group at the timeout; past this, it is gone).
const ANSWER_MARGIN: Duration = Duration::from_secs(10);

impl Coordination {
    /// Coordination through the controller link `out`.
    pub fn new(out: mpsc::UnboundedSender<AgentMessage>) -> Self {
        Coordination {
            out,
            waiting: Mutex::default(),
        }
    }

    /// `user_id` arrives at `point` and waits for its group (released partial, at the latest,
    /// `timeout` after the group's first arrival).
    pub async fn meet(&self, point: &str, user_id: u64, timeout: Duration) -> Result<Group> {
        let (tx, rx) = oneshot::channel();
        let key = (point.to_string(), user_id);
        self.waiting
            .lock()
            .expect("not poisoned")
            .insert(key.clone(), tx);
        // Whatever happens — an answer, a timeout, or this future dropped by the iteration's
        // timeout or a forced stop — the user no longer waits: a late release finds nobody.
        let _waiting = Waiting {
            coordination: self,
            key,
        };
        let sent = self.out.send(AgentMessage::Arrived {
            point: point.to_string(),
            user_id,
        });
        let answer = match sent {
            Ok(()) => Some(tokio::time::timeout(timeout.saturating_add(ANSWER_MARGIN), rx).await),
            Err(_) => None,
        };
        match answer {
            Some(Ok(Ok(group))) => Ok(group),
            None | Some(Ok(Err(_))) => {
                Err(anyhow!("coordinate '{point}': the controller link is gone"))
            }
            Some(Err(_)) => Err(anyhow!(
                "coordinate '{point}': no answer from the controller within {:?}",
                timeout.saturating_add(ANSWER_MARGIN)
            )),
        }
    }

    /// The controller released a group at `point`: wake its members waiting here.
    pub fn release(&self, point: &str, group_id: u64, wanted: u32, members: &[u64]) {
        let mut waiting = self.waiting.lock().expect("not poisoned");
        for (index, user) in members.iter().enumerate() {
            if let Some(tx) = waiting.remove(&(point.to_string(), *user)) {
                let _ = tx.send(Group {
                    id: group_id,
                    index,
                    members: members.to_vec(),
                    wanted,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A release wakes the members waiting here with their place in the group; a wait that is
    /// abandoned (its iteration timed out) leaves nothing behind for a later release to find.
    #[tokio::test]
    async fn releases_wake_members_and_abandoned_waits_leave_nothing() {
        let (out, mut sent) = mpsc::unbounded_channel();
        let coordination = std::sync::Arc::new(Coordination::new(out));
        let waiter = {
            let c = coordination.clone();
            tokio::spawn(async move { c.meet("room", 7, Duration::from_secs(5)).await })
        };
        let arrived = sent.recv().await.unwrap();
        assert_eq!(
            arrived,
            AgentMessage::Arrived {
                point: "room".into(),
                user_id: 7
            }
        );
        coordination.release("room", 3, 4, &[2, 7]);
        let group = waiter.await.unwrap().unwrap();
        assert_eq!(
            (group.id, group.index, group.members.clone()),
            (3, 1, vec![2, 7])
        );

        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            coordination.meet("room", 8, Duration::from_secs(5)),
        )
        .await;
        assert!(abandoned.is_err(), "still waiting when dropped");
        assert!(coordination.waiting.lock().unwrap().is_empty());
    }
}
