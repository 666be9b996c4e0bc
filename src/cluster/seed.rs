//! Moving a single-node service into a cluster (docs/CLUSTER.md, "From one node to a
//! cluster"): every member's new data directory gets the same snapshot of the single node's
//! graph, as the state before the cluster's first entry.
//!
//! The snapshot is the file `DIR/snapshots/00000000000000000000.snap` (the graph in the
//! single-node format) with a sidecar naming no last entry and no membership. A member started
//! on it loads the graph as its state machine and, its log being empty, forms the cluster as on
//! an empty directory (`node.rs`); every entry then applies on top of the same graph on every
//! member. The first snapshot the member builds replaces the seed.

use std::path::{Path, PathBuf};

use openraft::{SnapshotMeta, StoredMembership};

use super::state_machine::{sidecar_of, write_sidecar};
use crate::graph::IdentityGraph;
use crate::snapshot::{SnapshotDir, SnapshotError, WritePace};

/// Why a member directory could not be seeded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The member directory exists and is not empty: seeding never overwrites a member.
    #[error("{0} exists and is not empty: seed a new directory for each member")]
    NotEmpty(PathBuf),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The snapshot could not be written.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Writes `graph` as the seed snapshot of a new member directory `dir` (created if missing) and
/// returns the snapshot's path. Run it once per member, with the same graph, before the
/// members' first start.
///
/// # Errors
/// [`SeedError::NotEmpty`] when `dir` exists with anything in it; [`SeedError::Io`] or
/// [`SeedError::Snapshot`] when a file cannot be written (the directory may then hold a partial
/// seed: remove it and seed again).
pub fn seed(graph: &IdentityGraph, dir: &Path) -> Result<PathBuf, SeedError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SeedError::Io { path, source }
    };
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(SeedError::NotEmpty(dir.to_path_buf()));
    }
    let snapshots_dir = dir.join("snapshots");
    std::fs::create_dir_all(&snapshots_dir).map_err(io(&snapshots_dir))?;
    let snapshots = SnapshotDir::on_disk(snapshots_dir);
    let mut writer = snapshots.writer(0, graph.next_id(), WritePace::Unlimited)?;
    for entry in graph.snapshot_entries() {
        writer.push(&entry)?;
    }
    let prepared = writer.finish()?;
    let meta: SnapshotMeta<super::types::NodeId, super::types::Node> = SnapshotMeta {
        last_log_id: None,
        last_membership: StoredMembership::default(),
        snapshot_id: "seed".to_owned(),
    };
    let sidecar = sidecar_of(&snapshots.path_for(0));
    write_sidecar(&sidecar, &meta).map_err(io(&sidecar))?;
    Ok(prepared.publish()?)
}
