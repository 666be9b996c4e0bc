//! Snapshots: the whole graph at one LSN, so recovery replays only the log after it
//! (docs/behaviour.md §8).
//!
//! A snapshot file `{lsn:020}.snap` holds every contact in id order, then the history records
//! in applied order, then the graph's clock, framed in checksummed chunks (`format.rs`; the
//! byte layout is in `docs/format.md`). Every byte is covered by a checksum, and a failure
//! names the file and the byte offset of the header, chunk or trailer at fault (`reader.rs`).
//!
//! A snapshot is written to a temp file `{lsn:020}.snap.tmp.*`, fsynced, renamed into place
//! and the directory fsynced (`writer.rs`), so a crash leaves either the old set of snapshots
//! or the new one, never a half-written file under a final name.
//!
//! The entry point is [`SnapshotDir`], one directory on one [`crate::storage::Storage`]:
//! listing, retention and compaction, publishing a file from [`encode`], streaming one with a
//! [`SnapshotWriter`], and reading or verifying a listed file (`dir.rs`).

use std::path::{Path, PathBuf};

use crate::contact::ContactId;
pub use crate::event::{SnapshotEntry, SnapshotItem};
use crate::wal::Lsn;

mod dir;
mod format;
mod reader;
mod writer;
pub use dir::SnapshotDir;
pub use format::{MAX_COUNTER, encode};
pub use writer::{PreparedSnapshot, SnapshotWriter, WritePace};

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file's bytes do not verify (reading only); `offset` is the byte offset of the
    /// header (0), chunk or trailer at fault.
    #[error("snapshot corrupt in {} at byte offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The snapshot file.
        file: PathBuf,
        /// Byte offset of the damaged structure.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error on `path`: opening, reading, writing, fsyncing, renaming or removing a
    /// file, or listing, creating or fsyncing the directory.
    #[error("snapshot I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The visitor rejected an entry (it does not fit the graph being rebuilt); the file's
    /// bytes verified up to that entry.
    #[error("snapshot {} does not rebuild a consistent graph at contact {id}: {source}", file.display())]
    Rebuild {
        /// The snapshot file.
        file: PathBuf,
        /// The contact that failed: a row's id, a history record's first contact, 0 for the
        /// clock.
        id: ContactId,
        /// The visitor's own error, kept whole (callers may downcast it).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What a snapshot's header says: [`SnapshotDir::read`], [`SnapshotDir::verify`] and
/// [`SnapshotDir::peek`] return it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Every log record with this LSN or lower is contained in the snapshot.
    pub lsn: Lsn,
    /// The next contact id to assign (ids are never reused).
    pub next_id: ContactId,
    /// Number of entries stored: contacts, history records and the clock.
    pub entries: u64,
}

impl From<crate::storage::PathIoError> for SnapshotError {
    fn from(e: crate::storage::PathIoError) -> SnapshotError {
        SnapshotError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// Maps an I/O error on `path` to [`SnapshotError::Io`] (for `map_err`).
fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{Email, Phone, Timestamp};
    use crate::event::{HistoryRecord, NewContact};

    /// `n` contacts (ids 1..=n, every second linked to its predecessor, every third with a
    /// phone) and one deletion record.
    pub(super) fn contacts(n: u64) -> Vec<SnapshotEntry> {
        let mut entries: Vec<SnapshotEntry> = (1..=n)
            .map(|id| NewContact {
                id,
                email: Email::parse(&format!("c{id}@example.com")).unwrap(),
                phone: (id % 3 == 0).then(|| Phone::from_u64(id * 7)),
                created_at: Timestamp(id as i64),
                updated_at: Timestamp(id as i64),
                deleted_at: None,
                link: (id % 2 == 0).then_some(id - 1),
            })
            .map(SnapshotEntry::Contact)
            .collect();
        entries.push(SnapshotEntry::History(HistoryRecord::Deleted {
            id: 1,
            at: Timestamp(9),
            promoted: Some(2),
            before_id: n + 1,
        }));
        entries
    }
}
