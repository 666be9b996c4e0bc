//! Rebuilding the state of a data directory: the newest snapshot that verifies, then every log
//! record after it (docs/behaviour.md §8). [`Store::open`](super::Store::open) uses it to
//! serve, [`inspect`] to read a directory without changing it (`idrecon export`, `check`).

use std::path::{Path, PathBuf};

use crate::event::{Event, EventRef};
use crate::graph::{ApplyError, GraphOptions, IdentityGraph};
use crate::snapshot::SnapshotDir;
use crate::wal::{Lsn, RecoveryReport};

use super::StoreError;

/// The most contacts a snapshot header may make the graph reserve room for before loading.
const SNAPSHOT_RESERVE_MAX: u64 = 1 << 27;

/// What recovery found, for the start-up log line.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// The snapshot loaded, if any.
    pub snapshot: Option<PathBuf>,
    /// Contacts loaded from it.
    pub snapshot_contacts: u64,
    /// What the log scan found (records replayed, torn tail cut).
    pub wal: RecoveryReport,
    /// Snapshots that failed to load before one succeeded (newest first).
    pub skipped_snapshots: Vec<String>,
}

/// Why a log record could not be replayed: the log's bytes verified, but the record is not an
/// event, or the event does not fit the state rebuilt so far. Only a damaged or foreign log can
/// cause it; recovery refuses to start (docs/behaviour.md §8).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The payload is not a complete, valid event.
    #[error("undecodable event: {0}")]
    Decode(#[source] bincode::Error),
    /// The event does not apply to the state rebuilt so far.
    #[error("event does not apply: {0}")]
    Apply(#[source] ApplyError),
}

/// Decodes one log payload and applies it to `graph` (recovery and inspection).
///
/// # Errors
/// [`ReplayError`] when the payload is not an event or does not apply.
pub(super) fn apply_record(graph: &mut IdentityGraph, payload: &[u8]) -> Result<(), ReplayError> {
    apply_record_erasure(graph, payload).map(|_| ())
}

/// [`apply_record`], also saying whether the record was an erasure ([`Event::IdentityErased`]):
/// recovery that replays one compacts before serving (docs/behaviour.md §6.7).
pub(super) fn apply_record_erasure(
    graph: &mut IdentityGraph,
    payload: &[u8],
) -> Result<bool, ReplayError> {
    match Event::decode_borrowed(payload).map_err(ReplayError::Decode)? {
        EventRef::ContactInserted(row) => graph.apply_insert(row).map(|()| false),
        EventRef::Other(event) => {
            let applied = graph
                .apply(&event)
                .map(|()| matches!(event, Event::IdentityErased { .. }));
            // The graph keeps its own copy of a refusal's values; this decoded one is zeroed
            // before it is freed, so an erasure leaves no copy behind (docs/behaviour.md §6.7).
            if let Event::MergeRefused(refusal) = event {
                refusal.wipe();
            }
            applied
        }
    }
    .map_err(ReplayError::Apply)
}

/// The state a snapshot rebuilt, and what was loaded or skipped on the way.
pub(super) struct Loaded {
    pub(super) graph: IdentityGraph,
    pub(super) lsn: Lsn,
    pub(super) path: Option<PathBuf>,
    pub(super) contacts: u64,
    pub(super) skipped: Vec<String>,
    /// Files of the snapshots that failed before one loaded.
    pub(super) skipped_paths: Vec<PathBuf>,
}

/// Loads the newest snapshot that verifies, falling back to older ones; with no snapshot at
/// all, the empty graph at LSN 0. The graph is left in bulk-load mode: the caller replays the
/// log, then calls [`IdentityGraph::finish_bulk_load`].
///
/// # Errors
/// [`StoreError::NoUsableSnapshot`] when snapshots exist but none loads (starting empty would
/// silently drop rows an import put there); [`StoreError::Snapshot`] when the directory cannot
/// be listed.
pub(super) fn load_snapshot(
    snapshots: &SnapshotDir,
    options: &GraphOptions,
) -> Result<Loaded, StoreError> {
    let (mut skipped, mut skipped_paths) = (Vec::new(), Vec::new());
    let available = snapshots.list()?;
    for (_, path) in available.iter().rev() {
        let mut graph = IdentityGraph::with_options(options.clone());
        // Indexes are built once recovery (snapshot and log) is done: see `finish_bulk_load`.
        graph.begin_bulk_load();
        if let Some(info) = snapshots.peek(path) {
            // Sized once instead of rehashing as it grows (bounded: the header is a hint).
            graph.reserve(info.entries.min(SNAPSHOT_RESERVE_MAX) as usize);
        }
        match snapshots.read(path, |entry| graph.load_snapshot_item(entry)) {
            Ok(info) => {
                graph.reserve_ids_below(info.next_id);
                let contacts = graph.len() as u64;
                return Ok(Loaded {
                    graph,
                    lsn: info.lsn,
                    path: Some(path.clone()),
                    contacts,
                    skipped,
                    skipped_paths,
                });
            }
            Err(error) => {
                tracing::error!(%error, "snapshot unusable, trying an older one");
                skipped.push(error.to_string());
                skipped_paths.push(path.clone());
            }
        }
    }
    if !available.is_empty() {
        return Err(StoreError::NoUsableSnapshot(skipped.join("; ")));
    }
    let mut graph = IdentityGraph::with_options(options.clone());
    graph.begin_bulk_load();
    Ok(Loaded {
        graph,
        lsn: 0,
        path: None,
        contacts: 0,
        skipped,
        skipped_paths,
    })
}

/// Renames snapshots that failed to load to `*.corrupt` (kept for inspection), so retention
/// never counts them as good, then makes the renames durable.
///
/// # Errors
/// [`StoreError::Snapshot`] when the directory cannot be fsynced; a failed rename is logged
/// and skipped (the file then stays where it was, and is skipped again at the next start).
pub(super) fn set_aside(snapshots: &SnapshotDir, damaged: &[PathBuf]) -> Result<(), StoreError> {
    if damaged.is_empty() {
        return Ok(());
    }
    for path in damaged {
        match snapshots.set_aside(path) {
            Ok(aside) => {
                tracing::warn!(from = %path.display(), to = %aside.display(), "damaged snapshot set aside")
            }
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "could not set a damaged snapshot aside")
            }
        }
    }
    snapshots.sync()?;
    Ok(())
}

/// What a data directory holds, read without changing any file.
pub struct Inspection {
    /// The rebuilt state: newest usable snapshot plus every valid log record after it.
    pub graph: IdentityGraph,
    /// The snapshot that was loaded, and its LSN (0 without one).
    pub snapshot: Option<PathBuf>,
    /// LSN of that snapshot.
    pub snapshot_lsn: Lsn,
    /// Snapshots that failed to load before one succeeded, newest first.
    pub skipped_snapshots: Vec<String>,
    /// The log scan: records after the snapshot, last LSN, a torn tail `serve` would cut.
    pub wal: RecoveryReport,
}

/// Loads the state of a data directory exactly as [`Store::open`](super::Store::open) would,
/// without changing any file (for `export` and `check`): a torn tail is reported, not cut, and
/// no lock is taken.
///
/// # Errors
/// As [`Store::open`](super::Store::open), for everything `serve` would refuse (an interrupted
/// import is [`StoreError::InterruptedImport`]); a record that does not replay is
/// [`StoreError::Wal`] holding a [`ReplayError`] as its source.
pub fn inspect(dir: &Path) -> Result<Inspection, StoreError> {
    if super::is_interrupted_import(dir) {
        return Err(StoreError::InterruptedImport(dir.to_path_buf()));
    }
    let Loaded {
        mut graph,
        lsn: snapshot_lsn,
        path,
        skipped,
        ..
    } = load_snapshot(
        &SnapshotDir::on_disk(dir.join("snapshots")),
        &GraphOptions::default(),
    )?;
    let wal = crate::wal::replay_read_only(&dir.join("wal"), snapshot_lsn, |_, payload| {
        apply_record(&mut graph, payload)
    })?;
    graph.finish_bulk_load();
    Ok(Inspection {
        graph,
        snapshot: path,
        snapshot_lsn,
        skipped_snapshots: skipped,
        wal,
    })
}
