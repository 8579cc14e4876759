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

    /// `user_id` arrives at `point` and waits for its group (of `group`, released partial
    /// `timeout` after its first arrival).
    pub async fn meet(
        &self,
        point: &str,
        user_id: u64,
        group: u32,
        timeout: Duration,
    ) -> Result<Group> {
        let (tx, rx) = oneshot::channel();
        let key = (point.to_string(), user_id);
        self.waiting
            .lock()
            .expect("not poisoned")
            .insert(key.clone(), tx);
        let sent = self.out.send(AgentMessage::Arrived {
            point: point.to_string(),
            user_id,
            group,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        });
        let answer = match sent {
            Ok(()) => Some(tokio::time::timeout(timeout.saturating_add(ANSWER_MARGIN), rx).await),
            Err(_) => None,
        };
        // Whatever happened, this user no longer waits (a late release finds nobody).
        self.waiting.lock().expect("not poisoned").remove(&key);
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
