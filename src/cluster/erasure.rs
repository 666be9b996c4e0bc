//! Erased values leave every member's files (docs/behaviour.md §6.7, §9): after an erasure is
//! applied, the member snapshots past it and purges its log up to that snapshot, so neither the
//! log entries that carried the values nor older snapshots keep them. Every member does this
//! for itself when it applies the erasure; a member that was down catches up through the log or
//! a snapshot and does the same.

use std::sync::Arc;
use std::time::Duration;

use super::node::ClusterNode;

/// How long to wait for the snapshot covering an erasure before asking again.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

/// Spawns the task that compacts `node`'s files after each erasure, until the node shuts
/// down.
pub(super) fn spawn(node: Arc<ClusterNode>) {
    tokio::spawn(async move {
        let mut handled = 0;
        loop {
            let erased_at = node.replica().erased_at();
            if erased_at <= handled {
                tokio::select! {
                    () = node.replica().erasure_applied() => continue,
                    () = node.stopped() => return,
                }
            }
            match compact_through(&node, erased_at).await {
                Ok(snapshot_index) => {
                    tracing::info!(
                        node = node.id(),
                        erased_at,
                        snapshot_index,
                        "erased values compacted out of the Raft log"
                    );
                    handled = erased_at;
                }
                Err(why) => {
                    if node.is_stopping() {
                        return;
                    }
                    tracing::warn!(node = node.id(), erased_at, error = %why, "erasure compaction failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

/// Seals the log's active segment, snapshots past it (every entry in it applied), and purges
/// the log through that snapshot, so no segment holding the erased values survives; returns
/// the snapshot's index.
async fn compact_through(node: &Arc<ClusterNode>, erased_at: u64) -> Result<u64, String> {
    let raft = node.raft();
    let sealing = Arc::clone(node);
    let sealed = tokio::task::spawn_blocking(move || sealing.log().roll())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .unwrap_or(0)
        .max(erased_at);
    let applied = |m: &openraft::RaftMetrics<u64, openraft::BasicNode>| {
        m.last_applied.is_some_and(|id| id.index >= sealed)
    };
    raft.wait(Some(SNAPSHOT_WAIT))
        .metrics(applied, "the sealed segment applied")
        .await
        .map_err(|e| e.to_string())?;
    let covered = |m: &openraft::RaftMetrics<u64, openraft::BasicNode>| {
        m.snapshot.is_some_and(|s| s.index >= sealed)
    };
    if !covered(&raft.metrics().borrow()) {
        raft.trigger().snapshot().await.map_err(|e| e.to_string())?;
        raft.wait(Some(SNAPSHOT_WAIT))
            .metrics(covered, "a snapshot covering the erasure")
            .await
            .map_err(|e| e.to_string())?;
    }
    let snapshot = raft.metrics().borrow().snapshot.map_or(sealed, |s| s.index);
    raft.trigger()
        .purge_log(snapshot)
        .await
        .map_err(|e| e.to_string())?;
    Ok(snapshot)
}
