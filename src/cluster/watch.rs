//! Follows openraft's metrics: exports them (docs/behaviour.md §6.10, §9) and logs every change
//! of leader or membership.

use std::sync::Arc;

use crate::metrics as metric;

use super::node::ClusterNode;

/// Spawns the task that follows `node`'s openraft metrics until it shuts down.
pub(super) fn spawn(node: Arc<ClusterNode>) {
    let mut changes = node.raft().metrics();
    tokio::spawn(async move {
        let mut leader = None;
        let mut membership = None;
        loop {
            let metrics = changes.borrow_and_update().clone();
            if metrics.current_leader != leader {
                tracing::info!(
                    node = node.id(),
                    leader = ?metrics.current_leader,
                    term = metrics.current_term,
                    "cluster leader changed"
                );
                leader = metrics.current_leader;
            }
            let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
            let learners: Vec<u64> = metrics
                .membership_config
                .membership()
                .learner_ids()
                .collect();
            if membership.as_ref() != Some(&(voters.clone(), learners.clone())) {
                tracing::info!(
                    node = node.id(),
                    ?voters,
                    ?learners,
                    "cluster membership changed"
                );
                membership = Some((voters, learners));
            }
            export(&node, &metrics);
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Sets the cluster gauges from one metrics snapshot.
fn export(node: &ClusterNode, metrics: &openraft::RaftMetrics<u64, openraft::BasicNode>) {
    ::metrics::gauge!(metric::RAFT_TERM).set(metrics.current_term as f64);
    ::metrics::gauge!(metric::RAFT_LEADER).set(metrics.current_leader.map_or(0.0, |id| id as f64));
    for role in ["leader", "follower", "candidate", "learner", "shutdown"] {
        let value = if node.role().as_str() == role {
            1.0
        } else {
            0.0
        };
        ::metrics::gauge!(metric::RAFT_ROLE, "role" => role).set(value);
    }
    ::metrics::gauge!(metric::RAFT_LAST_LOG_INDEX)
        .set(metrics.last_log_index.map_or(0.0, |i| i as f64));
    ::metrics::gauge!(metric::RAFT_APPLIED_INDEX)
        .set(metrics.last_applied.map_or(0.0, |id| id.index as f64));
    ::metrics::gauge!(metric::RAFT_COMMITTED_INDEX).set(committed_index(metrics) as f64);
    if let Some(replication) = &metrics.replication {
        let last = metrics.last_log_index.unwrap_or(0);
        for (follower, matched) in replication {
            let lag = last.saturating_sub(matched.map_or(0, |id| id.index));
            ::metrics::gauge!(metric::RAFT_REPLICATION_LAG, "follower" => follower.to_string())
                .set(lag as f64);
        }
    }
}

/// The highest index known committed: on the leader, the index a majority of voters has
/// (the leader's own last index counts for itself); elsewhere the last applied index, the
/// highest a follower knows committed.
fn committed_index(metrics: &openraft::RaftMetrics<u64, openraft::BasicNode>) -> u64 {
    let applied = metrics.last_applied.map_or(0, |id| id.index);
    let Some(replication) = &metrics.replication else {
        return applied;
    };
    let mut matched: Vec<u64> = metrics
        .membership_config
        .membership()
        .voter_ids()
        .map(|voter| {
            if voter == metrics.id {
                metrics.last_log_index.unwrap_or(0)
            } else {
                replication
                    .get(&voter)
                    .and_then(|m| m.map(|id| id.index))
                    .unwrap_or(0)
            }
        })
        .collect();
    if matched.is_empty() {
        return applied;
    }
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched[matched.len() / 2].max(applied)
}
