//! The store side of `idrecon import` (docs/behaviour.md §7): the planned rows of a file become a
//! new data directory holding one snapshot at LSN 0. Reading, validating and planning the file
//! are [`crate::rows`]'s; the command line reads, plans and reports, and this module owns what is
//! written to the data directory.
//!
//! An import that is interrupted (Ctrl-C, `kill -9`, a power loss) before its snapshot is
//! published must not look like an empty data directory: `serve` would then start with no
//! contacts, and `check` would call it healthy. So the first thing an import writes, durably,
//! is the marker file [`IMPORT_MARKER`]; it is removed only once the snapshot has its final name
//! and the rename is durable. A directory with the marker is an interrupted import: `serve`
//! refuses it ([`StoreError::InterruptedImport`]), `check` reports it, and `import` may reuse it
//! (clearing what the interrupted run left in `snapshots/`).

use std::path::{Path, PathBuf};

use crate::event::NewContact;
use crate::graph::IdentityGraph;
use crate::snapshot::{self, SnapshotDir};
use crate::storage::{RealFs, Storage};

use super::StoreError;

/// The marker file of an import in progress, `DIR/IMPORTING` (empty): written before anything
/// else of an import, removed once its snapshot is published (module docs).
pub const IMPORT_MARKER: &str = "IMPORTING";

/// The lock file of a data directory, `DIR/LOCK`, held by `serve` and by `import`.
pub(super) const LOCK_FILE: &str = "LOCK";

/// What [`import`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// The snapshot file written (`DIR/snapshots/{0:020}.snap`).
    pub snapshot: PathBuf,
    /// Contacts (rows) in it.
    pub contacts: usize,
    /// Identities in it.
    pub identities: usize,
    /// Contacts (deleted ones included) of the largest identity.
    pub largest_identity: usize,
    /// Identities larger than [`super::DEFAULT_MAX_IDENTITY_SIZE`]: imported as they are (the
    /// file is the truth), but `serve`'s default cap refuses to grow them through `/identify`
    /// (docs/behaviour.md §3.6).
    pub identities_over_default_cap: usize,
}

/// What a data directory is to an import ([`check_import_target`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportTarget {
    /// Missing, empty, or holding only the lock file of a process that wrote nothing.
    Empty,
    /// Left by an interrupted import ([`IMPORT_MARKER`] present): reused, its leftovers
    /// cleared.
    Interrupted,
}

/// Whether `dir` holds an interrupted import (its [`IMPORT_MARKER`]).
pub fn is_interrupted_import(dir: &Path) -> bool {
    dir.join(IMPORT_MARKER).exists()
}

/// Checks that `dir` may receive an import (docs/behaviour.md §7: a new, empty data directory,
/// or one an interrupted import left; a missing one is created by [`import`]). Call it before
/// reading the file, so a wrong directory is refused at once.
///
/// # Errors
/// [`StoreError::NotEmpty`] when `dir` holds anything else; [`StoreError::Io`] when it exists
/// but cannot be read.
pub fn check_import_target(dir: &Path) -> Result<ImportTarget, StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .map_err(io)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ImportTarget::Empty),
        Err(source) => return Err(io(source)),
    };
    let only = |allowed: &[&str]| names.iter().all(|n| allowed.contains(&n.as_str()));
    if names.iter().any(|n| n == IMPORT_MARKER) && only(&[IMPORT_MARKER, LOCK_FILE, "snapshots"]) {
        Ok(ImportTarget::Interrupted)
    } else if only(&[LOCK_FILE]) {
        Ok(ImportTarget::Empty)
    } else {
        Err(StoreError::NotEmpty(dir.to_path_buf()))
    }
}

/// Imports `contacts` (an import plan's rows: id order, each linked to the smallest id of its
/// identity, see [`crate::rows::plan_import`]) into the data directory `dir` (docs/behaviour.md
/// §7, §8), which must be empty or an interrupted import ([`check_import_target`]):
///
/// 1. applies the rows to an empty graph (pure rules, no over-merge guard: the file is the
///    truth), calling `applied(n)` as rows are applied, and encodes the snapshot, all in
///    memory;
/// 2. creates `dir` and takes its lock (`DIR/LOCK`, as `serve` does);
/// 3. writes the marker [`IMPORT_MARKER`] durably (an interrupted import's marker is kept) and
///    removes the temp files an interrupted import left in `snapshots/`;
/// 4. writes the snapshot at LSN 0 (temp file, fsync, rename over any earlier one, directory
///    fsync);
/// 5. removes the marker and fsyncs the directory.
///
/// # Errors
/// As [`check_import_target`]; [`StoreError::Locked`] when another process holds `dir`;
/// [`StoreError::ImportRow`] when a row does not apply (a plan that is not from
/// `plan_import`); [`StoreError::Snapshot`] or [`StoreError::Io`] on an I/O failure. After a
/// failure the marker stays: the directory is an interrupted import.
pub fn import(
    dir: &Path,
    contacts: &[NewContact],
    mut applied: impl FnMut(u64),
) -> Result<ImportReport, StoreError> {
    check_import_target(dir)?;
    // Everything that can fail without I/O first: a plan that does not apply writes nothing.
    let mut graph = IdentityGraph::new();
    graph.reserve(contacts.len());
    for contact in contacts {
        graph
            .apply_insert(contact.as_row())
            .map_err(|source| StoreError::ImportRow {
                id: contact.id,
                source,
            })?;
        applied(1);
    }
    debug_assert_eq!(graph.check_invariants(), Ok(()));
    let bytes = snapshot::encode(0, graph.next_id(), graph.snapshot_entries())?;

    let fs = RealFs;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    crate::storage::create_dir_durably(&fs, dir).map_err(|e| StoreError::Io {
        path: e.path,
        source: e.source,
    })?;
    let Some(_lock) = fs.lock_dir(dir).map_err(io(dir))? else {
        return Err(StoreError::Locked(dir.to_path_buf()));
    };
    // Checked again under the lock: another import may have run meanwhile.
    let target = check_import_target(dir)?;
    let marker = dir.join(IMPORT_MARKER);
    if target == ImportTarget::Empty {
        fs.open_write(&marker, true)
            .and_then(|mut file| file.sync_all())
            .map_err(io(&marker))?;
        fs.sync_dir(dir).map_err(io(dir))?;
    }
    let snapshots = SnapshotDir::on_disk(dir.join("snapshots"));
    // An interrupted run may have left temp files (a complete snapshot at LSN 0 is replaced
    // by the rename below).
    let stale = snapshots.remove_temp_files()?;
    if stale > 0 {
        tracing::info!(
            files = stale,
            "removed the temp files of an interrupted import"
        );
    }
    let path = snapshots.write_file(0, &bytes)?;
    fs.remove_file(&marker).map_err(io(&marker))?;
    fs.sync_dir(dir).map_err(io(dir))?;
    let cap = super::DEFAULT_MAX_IDENTITY_SIZE as usize;
    Ok(ImportReport {
        snapshot: path,
        contacts: graph.len(),
        identities: graph.identity_count(),
        largest_identity: graph.largest_identity(),
        identities_over_default_cap: graph.identity_sizes().filter(|&n| n > cap).count(),
    })
}
