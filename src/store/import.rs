//! The store side of `idrecon import` (docs/behaviour.md §7): the planned rows of a file become a
//! new data directory holding one snapshot at LSN 0. Reading, validating and planning the file
//! are [`crate::rows`]'s; the command line reads, plans and reports, and this module owns what is
//! written to the data directory.

use std::path::{Path, PathBuf};

use crate::event::NewContact;
use crate::graph::IdentityGraph;
use crate::snapshot::{self, SnapshotDir};

use super::StoreError;

/// What [`import`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// The snapshot file written (`DIR/snapshots/{0:020}.snap`).
    pub snapshot: PathBuf,
    /// Contacts (rows) in it.
    pub contacts: usize,
    /// Identities in it.
    pub identities: usize,
}

/// Checks that `dir` may receive an import (docs/behaviour.md §7: a new, empty data directory;
/// a missing one is created by [`import`]). Call it before reading the file, so a wrong
/// directory is refused at once.
///
/// # Errors
/// [`StoreError::NotEmpty`] when `dir` holds anything; [`StoreError::Io`] when it exists but
/// cannot be read.
pub fn check_import_target(dir: &Path) -> Result<(), StoreError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(StoreError::NotEmpty(dir.to_path_buf())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Imports `contacts` (an import plan's rows: id order, each linked to the smallest id of its
/// identity, see [`crate::rows::plan_import`]) into the new data directory `dir`: applies them
/// to an empty graph (pure rules, no over-merge guard: the file is the truth), calling
/// `applied(n)` as rows are applied, then writes the graph as one snapshot at LSN 0
/// (docs/behaviour.md §7, §8).
///
/// # Errors
/// As [`check_import_target`]; [`StoreError::ImportRow`] when a row does not apply (a plan
/// that is not from `plan_import`), before anything is written; [`StoreError::Snapshot`] when
/// the snapshot cannot be written (no snapshot appears under its final name then).
pub fn import(
    dir: &Path,
    contacts: &[NewContact],
    mut applied: impl FnMut(u64),
) -> Result<ImportReport, StoreError> {
    check_import_target(dir)?;
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
    let path = SnapshotDir::on_disk(dir.join("snapshots")).write_file(0, &bytes)?;
    Ok(ImportReport {
        snapshot: path,
        contacts: graph.len(),
        identities: graph.identity_count(),
    })
}
