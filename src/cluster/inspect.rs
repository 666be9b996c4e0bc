//! Reading a member's data directory without changing it (`idrecon export` and `idrecon check`
//! on a cluster member's directory, docs/behaviour.md §9): its newest snapshot, then every entry
//! of its Raft log after it, applied with the same rules as the running member.
//!
//! What a member holds may end with entries that were never committed (a crash between
//! appending and committing; a later leader replaces them). Exports of members that have
//! applied the same log are byte-identical; docs/CLUSTER.md says to take backups from a member
//! of a settled cluster.

use std::path::Path;

use openraft::EntryPayload;

use super::raft_state::RaftState;
use super::replica::apply_command;
use super::state_machine::StateMachine;
use super::types::Entry;
use crate::graph::{GraphOptions, IdentityGraph};
use crate::snapshot::SnapshotDir;

/// Whether `dir` is a cluster member's data directory (it has a Raft log).
pub fn is_member_dir(dir: &Path) -> bool {
    dir.join("raft").is_dir()
}

/// What [`inspect`] found.
pub struct MemberInspection {
    /// The graph after the snapshot and every entry of the log.
    pub graph: IdentityGraph,
    /// The index of the snapshot's last entry, if there is a snapshot.
    pub snapshot_index: Option<u64>,
    /// Entries of the log applied after the snapshot.
    pub entries_applied: u64,
    /// The index of the last entry in the log.
    pub last_index: Option<u64>,
}

/// Loads member directory `dir` read-only: no lock, no file changed.
///
/// # Errors
/// A text naming the file at fault: a snapshot, the Raft state or a log record that does not
/// read.
pub fn inspect(dir: &Path) -> Result<MemberInspection, String> {
    let machine = StateMachine::open(
        SnapshotDir::on_disk(dir.join("snapshots")),
        &GraphOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let replica = machine.replica();
    let snapshot_index = replica.read(|s| s.applied.map(|id| id.index));
    let state = RaftState::load(&dir.join("raft").join("state")).map_err(|e| e.to_string())?;
    let after = snapshot_index
        .max(state.last_purged.map(|id| id.index))
        .map_or(0, |index| index + 1);
    let mut graph = replica.write(|s| std::mem::take(&mut s.graph));
    let mut entries_applied = 0;
    let mut last_index = snapshot_index;
    crate::wal::replay_read_only(&dir.join("raft").join("log"), after, |lsn, payload| {
        let entry: Entry = bincode::deserialize(payload)
            .map_err(|e| format!("record {lsn} is not a Raft entry: {e}"))?;
        last_index = Some(entry.log_id.index);
        if let EntryPayload::Normal(command) = &entry.payload {
            apply_command(&mut graph, command);
        }
        entries_applied += 1;
        Ok::<(), String>(())
    })
    .map_err(|e| e.to_string())?;
    Ok(MemberInspection {
        graph,
        snapshot_index,
        entries_applied,
        last_index,
    })
}
