//! The Raft log on idrecon's own write-ahead log (docs/format.md, "Cluster"; docs/CLUSTER.md).
//!
//! Every entry is one record of a [`Wal`] in `DIR/raft/log/`, with LSN = log index + 1 (the
//! log's LSNs start at 1, openraft's indexes at 0), encoded with bincode: the same segments,
//! checksums, torn-tail rules and group commit as a single node's log. What Raft needs beyond
//! appending:
//!
//! - **a durable vote** and the last purged entry, in `DIR/raft/state` ([`RaftState`]);
//! - **truncation of a conflicting suffix**: [`Wal::reposition`] drops every record from an LSN
//!   on, once everything appended before is durable (Raft requires log IO in order);
//! - **purge of a prefix** behind a snapshot: the purge point is saved first, then whole
//!   segments below it are removed; at the next start records up to it are skipped.
//!
//! The entries not yet purged are also kept in memory, so replication reads them without disk
//! I/O; a snapshot is taken every few thousand entries and the log purged behind it, which
//! bounds that memory.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use parking_lot::Mutex;

use super::raft_state::RaftState;
use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::wal::{Lsn, Wal, WalOptions};

/// The Raft log of a member; cheap to clone (one `Arc`), every clone the same log.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    wal: Wal,
    state_path: PathBuf,
    /// The vote and the last purged entry, as in `state_path`.
    state: Mutex<RaftState>,
    /// Every entry after the last purged one, by index.
    entries: Mutex<BTreeMap<u64, Entry>>,
}

/// Why the Raft log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The state file is damaged or unreadable.
    #[error(transparent)]
    State(#[from] super::raft_state::RaftStateError),
    /// The log is damaged or unreadable, or a record is not an entry at its position.
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
}

/// A record that is not the entry its LSN says (only a damaged or foreign log holds one).
#[derive(Debug, thiserror::Error)]
#[error("record {lsn} is not a Raft entry at index {}: {reason}", lsn - 1)]
struct NotAnEntry {
    lsn: Lsn,
    reason: String,
}

fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, openraft::AnyError::new(&error)),
    }
}

impl LogStore {
    /// Opens the Raft log under `dir` (`dir/state`, `dir/log/`), reading every entry after the
    /// last purged one into memory; creates an empty log when there is none.
    ///
    /// # Errors
    /// [`LogStoreError`] naming the file at fault, as a single node's recovery does.
    pub fn open(dir: &Path, options: WalOptions) -> Result<LogStore, LogStoreError> {
        let state_path = dir.join("state");
        let state = RaftState::load(&state_path)?;
        let after = state.last_purged.map_or(0, |purged| purged.index + 1);
        let mut entries = BTreeMap::new();
        let (wal, _report) = Wal::open(&dir.join("log"), options, after, |lsn, payload| {
            let entry: Entry = bincode::deserialize(payload).map_err(|e| NotAnEntry {
                lsn,
                reason: e.to_string(),
            })?;
            if entry.log_id.index + 1 != lsn {
                return Err(NotAnEntry {
                    lsn,
                    reason: format!("it holds index {}", entry.log_id.index),
                });
            }
            entries.insert(entry.log_id.index, entry);
            Ok(())
        })?;
        Ok(LogStore {
            inner: Arc::new(Inner {
                wal,
                state_path,
                state: Mutex::new(state),
                entries: Mutex::new(entries),
            }),
        })
    }

    /// Flushes and closes the log (shutdown).
    ///
    /// # Errors
    /// As [`Wal::close`].
    pub fn close(&self) -> Result<(), crate::wal::WalError> {
        self.inner.wal.close()
    }

    /// Seals the active segment of the log so a later purge can remove it whole; returns the
    /// Raft index of the last entry in it (`None` when the log holds no entry). Blocking.
    ///
    /// # Errors
    /// When the log has failed or is closed.
    pub fn roll(&self) -> Result<Option<u64>, crate::wal::WalError> {
        let next = self.inner.wal.roll_segment()?;
        // The first LSN of the new segment is one past the last entry's LSN, which is its
        // index + 1.
        Ok(next.checked_sub(2))
    }

    /// The index of the last entry appended, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.inner.entries.lock().keys().next_back().copied()
    }

    /// Saves the state file off the async runtime's threads.
    async fn save_state(
        &self,
        state: RaftState,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError> {
        let path = self.inner.state_path.clone();
        tokio::task::spawn_blocking(move || state.save(&path))
            .await
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let entries = self.inner.entries.lock();
        Ok(entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.inner.state.lock().last_purged;
        let last = self
            .inner
            .entries
            .lock()
            .values()
            .next_back()
            .map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &openraft::Vote<NodeId>) -> Result<(), StorageError> {
        let state = {
            let mut state = self.inner.state.lock();
            state.vote = Some(*vote);
            state.clone()
        };
        self.save_state(state, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<openraft::Vote<NodeId>>, StorageError> {
        Ok(self.inner.state.lock().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let wal = &self.inner.wal;
        let mut last = None;
        for entry in entries {
            let lsn = entry.log_id.index + 1;
            if lsn != wal.last_lsn() + 1 {
                // After a snapshot install the log continues past the purged prefix; Raft
                // truncates before it overwrites, so this only ever skips ahead.
                wal.reposition(lsn)
                    .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            }
            let bytes = bincode::serialize(&entry)
                .map_err(|e| io_error(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            let appended = wal
                .append(&bytes)
                .map_err(|e| io_error(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            debug_assert_eq!(appended, lsn);
            self.inner.entries.lock().insert(entry.log_id.index, entry);
            last = Some(appended);
        }
        match last {
            None => callback.log_io_completed(Ok(())),
            Some(lsn) => {
                let store = self.clone();
                tokio::spawn(async move {
                    let flushed = store
                        .inner
                        .wal
                        .durable(lsn)
                        .await
                        .map_err(std::io::Error::other);
                    callback.log_io_completed(flushed);
                });
            }
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let wal = &self.inner.wal;
        // Raft log IO happens in order: everything appended before is made durable first.
        wal.durable(wal.last_lsn())
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let store = self.clone();
        let lsn = log_id.index + 1;
        tokio::task::spawn_blocking(move || store.inner.wal.reposition(lsn))
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.inner
            .entries
            .lock()
            .retain(|&index, _| index < log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let state = {
            let mut state = self.inner.state.lock();
            if state
                .last_purged
                .is_some_and(|purged| purged.index >= log_id.index)
            {
                return Ok(());
            }
            state.last_purged = Some(log_id);
            state.clone()
        };
        // The purge point is durable before any file goes: a crash in between leaves records
        // that the next start skips.
        self.save_state(state, ErrorSubject::Logs).await?;
        self.inner
            .entries
            .lock()
            .retain(|&index, _| index > log_id.index);
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let wal = &store.inner.wal;
            // A purge that covers every entry (a snapshot was installed over the whole log)
            // seals the active segment first, so it goes too and keeps no purged value on disk
            // (docs/behaviour.md §6.7).
            if wal.last_lsn() <= log_id.index + 1 {
                wal.roll_segment()?;
            }
            wal.remove_segments_through(log_id.index + 1)
        })
        .await
        .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?
        .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        Ok(())
    }
}
