//! Membership of a running cluster (docs/behaviour.md §9, docs/CLUSTER.md): a member's view of
//! the cluster, adding a learner, promoting it to a voter, removing a member. Changes go through
//! openraft's joint consensus and are executed by the leader.

use std::collections::BTreeSet;

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};

use super::node::ClusterNode;
use super::types::{Node, NodeId};
use super::{ClusterError, Leader};

/// One member as [`Status`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's id.
    pub id: NodeId,
    /// Its `HOST:PORT`.
    pub address: String,
    /// Whether it votes (a learner only receives the log).
    pub voter: bool,
    /// The highest log index the leader knows it holds (only on the leader's view).
    #[serde(rename = "matchedIndex", skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<u64>,
}

/// A member's view of the cluster, as `GET /cluster/status` answers it (JSON keys in
/// camelCase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// This member's id.
    pub id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// The leader this member knows, if any.
    pub leader: Option<NodeId>,
    /// The leader's address, if known.
    pub leader_address: Option<String>,
    /// The current term.
    pub term: u64,
    /// The index of the last entry in this member's log.
    pub last_log_index: Option<u64>,
    /// The index of the last entry applied to this member's graph.
    pub applied_index: Option<u64>,
    /// The index of the entry the newest snapshot covers.
    pub snapshot_index: Option<u64>,
    /// Every member, voters first, in id order.
    pub members: Vec<MemberStatus>,
}

/// Maps a membership call's error: not the leader, a refused change, or unavailable.
fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> ClusterError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            ClusterError::NotLeader(Leader::of(forward))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ClusterError::Membership(e.to_string())
        }
        RaftError::Fatal(e) => ClusterError::Unavailable(e.to_string()),
    }
}

impl ClusterNode {
    /// This member's view of the cluster.
    pub fn status(&self) -> Status {
        let metrics = self.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
                matched_index: metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).copied().flatten())
                    .map(|log_id| log_id.index)
                    .or_else(|| {
                        (metrics.replication.is_some() && *id == metrics.id)
                            .then_some(metrics.last_log_index)
                            .flatten()
                    }),
            })
            .collect();
        let leader = self.leader();
        Status {
            id: self.id(),
            role: self.role().as_str().to_owned(),
            leader: leader.as_ref().map(|l| l.id),
            leader_address: leader.map(|l| l.address),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            applied_index: metrics.last_applied.map(|id| id.index),
            snapshot_index: metrics.snapshot.map(|id| id.index),
            members,
        }
    }

    /// Adds member `id` at `address` as a learner and returns once it has caught up with the
    /// log (openraft's blocking `add_learner`); adding a member again with the same address
    /// changes nothing.
    ///
    /// # Errors
    /// [`ClusterError::NotLeader`] off the leader, [`ClusterError::Membership`] when the change
    /// is refused, [`ClusterError::Unavailable`] without a quorum.
    pub async fn add_learner(&self, id: NodeId, address: String) -> Result<(), ClusterError> {
        self.raft()
            .add_learner(id, Node::new(address), true)
            .await
            .map(drop)
            .map_err(membership_error)
    }

    /// Makes learner `id` a voter.
    ///
    /// # Errors
    /// As [`ClusterNode::add_learner`]; [`ClusterError::Membership`] when `id` is not a
    /// learner of the cluster.
    pub async fn promote(&self, id: NodeId) -> Result<(), ClusterError> {
        self.raft()
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map(drop)
            .map_err(membership_error)
    }

    /// Removes member `id`, voter or learner: a voter leaves the voters first (the cluster
    /// keeps a majority of the remaining voters), then the member is forgotten.
    ///
    /// # Errors
    /// As [`ClusterNode::add_learner`]; [`ClusterError::Membership`] when `id` is not a member
    /// or is the last voter.
    pub async fn remove(&self, id: NodeId) -> Result<(), ClusterError> {
        let membership = self.raft().metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        if membership.get_node(&id).is_none() {
            return Err(ClusterError::Membership(format!(
                "member {id} is not in the cluster"
            )));
        }
        if membership.voter_ids().any(|voter| voter == id) {
            self.raft()
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
            return Ok(());
        }
        self.raft()
            .change_membership(
                ChangeMembers::<NodeId, Node>::RemoveNodes(BTreeSet::from([id])),
                false,
            )
            .await
            .map(drop)
            .map_err(membership_error)
    }
}
