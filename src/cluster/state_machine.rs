//! The Raft state machine: the identity graph ([`Replica`]) and its snapshots, which are
//! idrecon's own snapshot files (docs/format.md; docs/CLUSTER.md).
//!
//! A snapshot at Raft index `i` is the file `DIR/snapshots/{i + 1:020}.snap` (the graph after
//! entry `i`, in the single-node format) with a sidecar `{i + 1:020}.raft` holding openraft's
//! [`SnapshotMeta`] as JSON (last entry, membership, id). The sidecar is written before the
//! snapshot is renamed into place, so a snapshot without one is an interrupted write and is
//! ignored. Building streams the graph in short chunks under the shared lock, as a single node
//! does, so members keep applying entries meanwhile; a lagging follower receives the file in
//! pieces (openraft's chunked transfer) into a temp file, which is verified, renamed into place
//! and loaded in one step.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};

use super::replica::Replica;
use super::types::{Answer, Entry, LogId, Node, NodeId, StorageError, TypeConfig};
use crate::graph::{GraphOptions, IdentityGraph};
use crate::snapshot::{SnapshotDir, SnapshotEntry, WritePace};
use crate::wal::Lsn;

/// Snapshot entries captured per hold of the shared lock (as on a single node).
const CAPTURE_CHUNK: usize = 64;
/// Snapshots kept per member: one, so a snapshot taken after an erasure leaves no older file
/// holding the erased values (docs/behaviour.md §6.7). A follower streaming the previous one
/// keeps reading it through its open file; if the newest snapshot is damaged, the member gets
/// a new one from the leader.
const SNAPSHOTS_KEPT: usize = 1;

/// The state machine openraft drives; cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    replica: Arc<Replica>,
    snapshots: SnapshotDir,
    /// Serializes building, receiving and installing snapshots: a capture must not outlive the
    /// graph it reads.
    busy: Arc<tokio::sync::Mutex<Option<PathBuf>>>,
}

fn storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: impl std::fmt::Display,
) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, openraft::AnyError::error(error.to_string())),
    }
}

/// The sidecar of the snapshot at `snapshot`: the same name with `.raft` for `.snap`.
pub(super) fn sidecar_of(snapshot: &Path) -> PathBuf {
    snapshot.with_extension("raft")
}

/// The snapshot LSN of a snapshot whose last entry is `last`.
fn lsn_of(last: Option<LogId>) -> Lsn {
    last.map_or(0, |id| id.index + 1)
}

/// Writes `meta` as the sidecar at `path`, durably (temp, fsync, rename; the caller fsyncs the
/// directory with the snapshot's rename).
pub(super) fn write_sidecar(path: &Path, meta: &SnapshotMeta<NodeId, Node>) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("raft.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&mut file, meta).map_err(std::io::Error::other)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn read_sidecar(path: &Path) -> Option<SnapshotMeta<NodeId, Node>> {
    let bytes = std::fs::read(sidecar_of(path)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A snapshot file with its openraft meta.
type Described = (PathBuf, SnapshotMeta<NodeId, Node>);

/// The newest snapshot with a readable sidecar: its path and meta.
fn newest(snapshots: &SnapshotDir) -> Result<Option<Described>, crate::snapshot::SnapshotError> {
    Ok(snapshots
        .list()?
        .into_iter()
        .rev()
        .find_map(|(_, path)| read_sidecar(&path).map(|meta| (path, meta))))
}

/// Loads the graph of the snapshot at `path` (every checksum verified).
fn load(
    snapshots: &SnapshotDir,
    path: &Path,
    options: &GraphOptions,
) -> Result<IdentityGraph, crate::snapshot::SnapshotError> {
    let mut graph = IdentityGraph::with_options(options.clone());
    graph.begin_bulk_load();
    let info = snapshots.read(path, |item| graph.load_snapshot_item(item))?;
    graph.reserve_ids_below(info.next_id);
    graph.finish_bulk_load();
    Ok(graph)
}

impl StateMachine {
    /// Opens the state machine of the member whose snapshots are in `snapshots`: the newest
    /// snapshot with its sidecar, or the empty graph.
    ///
    /// # Errors
    /// A snapshot error naming the file when the newest snapshot with a sidecar does not load.
    pub fn open(
        snapshots: SnapshotDir,
        options: &GraphOptions,
    ) -> Result<StateMachine, crate::snapshot::SnapshotError> {
        let (graph, applied, membership) = match newest(&snapshots)? {
            Some((path, meta)) => (
                load(&snapshots, &path, options)?,
                meta.last_log_id,
                meta.last_membership,
            ),
            None => {
                let graph = IdentityGraph::with_options(options.clone());
                (graph, None, StoredMembership::default())
            }
        };
        Ok(StateMachine {
            replica: Replica::new(graph, applied, membership),
            snapshots,
            busy: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// The replica the HTTP layer reads.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Captures the graph at the last applied entry and writes it as a snapshot with its
    /// sidecar; returns the meta and the published file. Blocking (file writes, fsyncs).
    fn write_snapshot(
        &self,
    ) -> Result<(SnapshotMeta<NodeId, Node>, PathBuf), crate::snapshot::SnapshotError> {
        let (meta, mut cursor) = self.replica.write(|state| {
            let last = state.applied;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: state.membership.clone(),
                snapshot_id: format!("{}-{}", lsn_of(last), crate::contact::Timestamp::now().0),
            };
            (meta, state.graph.begin_capture())
        });
        let lsn = lsn_of(meta.last_log_id);
        let written = (|| {
            let mut writer = self
                .snapshots
                .writer(lsn, cursor.next_id, WritePace::Unlimited)?;
            let mut buffer: Vec<SnapshotEntry> = Vec::with_capacity(CAPTURE_CHUNK + 1);
            loop {
                let done = self.replica.read(|state| {
                    state
                        .graph
                        .capture_chunk(&mut cursor, CAPTURE_CHUNK, &mut buffer)
                });
                for entry in buffer.drain(..) {
                    writer.push(&entry)?;
                }
                if done {
                    break;
                }
                std::thread::yield_now();
            }
            writer.finish()
        })();
        self.replica.write(|state| state.graph.end_capture());
        let prepared = written?;
        let path = self.snapshots.path_for(lsn);
        write_sidecar(&sidecar_of(&path), &meta).map_err(|source| {
            crate::snapshot::SnapshotError::Io {
                path: sidecar_of(&path),
                source,
            }
        })?;
        let path = prepared.publish()?;
        self.prune()?;
        Ok((meta, path))
    }

    /// Keeps the [`SNAPSHOTS_KEPT`] newest snapshots and removes the sidecars of the others.
    fn prune(&self) -> Result<(), crate::snapshot::SnapshotError> {
        self.snapshots.prune(SNAPSHOTS_KEPT)?;
        let kept: Vec<PathBuf> = self
            .snapshots
            .list()?
            .into_iter()
            .map(|(_, p)| sidecar_of(&p))
            .collect();
        if let Ok(names) = std::fs::read_dir(self.snapshots.path()) {
            for entry in names.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "raft") && !kept.contains(&path) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    /// Opens the snapshot file at `path` for openraft to stream.
    async fn open_file(path: &Path) -> Result<Box<tokio::fs::File>, StorageError> {
        tokio::fs::File::open(path)
            .await
            .map(Box::new)
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))
    }
}

/// Whether `file` is the file at `path` (same device and inode).
async fn same_file(file: &tokio::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata().await, tokio::fs::metadata(path).await) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Copies all of `from` (from its start) into a new file at `path`, fsynced.
async fn copy_into(from: &mut tokio::fs::File, path: &Path) -> std::io::Result<()> {
    use tokio::io::AsyncSeekExt;
    from.seek(std::io::SeekFrom::Start(0)).await?;
    let mut to = tokio::fs::File::create(path).await?;
    tokio::io::copy(from, &mut to).await?;
    tokio::io::AsyncWriteExt::flush(&mut to).await?;
    to.sync_all().await
}

/// Builds a snapshot off the state machine's task.
pub struct SnapshotBuilder {
    machine: StateMachine,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let _busy = self.machine.busy.lock().await;
        let machine = self.machine.clone();
        let (meta, path) = tokio::task::spawn_blocking(move || machine.write_snapshot())
            .await
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        ::metrics::counter!(crate::metrics::RAFT_SNAPSHOT_BUILDS).increment(1);
        tracing::info!(path = %path.display(), last = ?meta.last_log_id, "cluster snapshot built");
        Ok(Snapshot {
            snapshot: StateMachine::open_file(&path).await?,
            meta,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, Node>), StorageError> {
        Ok(self
            .replica
            .read(|state| (state.applied, state.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Answer>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        Ok(self.replica.apply(entries))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            machine: self.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let mut busy = self.busy.lock().await;
        let path = self.snapshots.receive_path();
        let error = |e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
        tokio::fs::create_dir_all(self.snapshots.path())
            .await
            .map_err(error)?;
        let file = tokio::fs::File::create(&path).await.map_err(error)?;
        *busy = Some(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let mut busy = self.busy.lock().await;
        let error = |e: &dyn std::fmt::Display| {
            storage_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                e,
            )
        };
        let received = busy
            .take()
            .ok_or_else(|| error(&"no snapshot is being received"))?;
        let mut snapshot = snapshot;
        // tokio's file finishes its writes in the background: wait for them, then for the disk.
        tokio::io::AsyncWriteExt::flush(&mut *snapshot)
            .await
            .map_err(|e| error(&e))?;
        snapshot.sync_all().await.map_err(|e| error(&e))?;
        if !same_file(&snapshot, &received).await {
            // Handed another file than the one opened to receive it: copy it there.
            copy_into(&mut snapshot, &received)
                .await
                .map_err(|e| error(&e))?;
        }
        drop(snapshot);
        let machine = self.clone();
        let meta_owned = meta.clone();
        let options = self.replica.read(|state| state.graph.options().clone());
        let graph = tokio::task::spawn_blocking(move || {
            let lsn = lsn_of(meta_owned.last_log_id);
            let graph = load(&machine.snapshots, &received, &options)?;
            let path = machine.snapshots.path_for(lsn);
            write_sidecar(&sidecar_of(&path), &meta_owned).map_err(|source| {
                crate::snapshot::SnapshotError::Io {
                    path: sidecar_of(&path),
                    source,
                }
            })?;
            machine.snapshots.adopt(&received, lsn)?;
            machine.prune()?;
            Ok::<_, crate::snapshot::SnapshotError>(graph)
        })
        .await
        .map_err(|e| error(&e))?
        .map_err(|e| error(&e))?;
        self.replica.write(|state| {
            state.graph = graph;
            state.applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
        });
        ::metrics::counter!(crate::metrics::RAFT_SNAPSHOT_INSTALLS).increment(1);
        tracing::info!(last = ?meta.last_log_id, "cluster snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let found = newest(&self.snapshots)
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        match found {
            None => Ok(None),
            Some((path, meta)) => Ok(Some(Snapshot {
                snapshot: StateMachine::open_file(&path).await?,
                meta,
            })),
        }
    }
}
