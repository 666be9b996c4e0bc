//! The write-ahead log: every change is appended here, and is durable, before any answer
//! reveals it (docs/behaviour.md §8).
//!
//! The log knows bytes, LSNs and fsyncs, not contacts: [`Wal::append`] takes an opaque payload
//! (the store puts a bincode-encoded event in it) and returns its [`Lsn`]; [`Wal::durable`]
//! resolves once that record is on disk under the configured [`FsyncMode`]; [`Wal::open`]
//! recovers the log and replays every record after a snapshot's LSN through a visitor;
//! [`scan`] and [`replay_read_only`] check and read it without changing a file (`idrecon
//! check`, `idrecon export`).
//!
//! A log is a directory of segment files, each named after the first LSN it holds; one writer
//! thread appends to the newest, and [`Wal::remove_segments_through`] deletes the oldest once a
//! snapshot covers them. The byte-level format and the commit policy are documented in
//! docs/format.md ("Log segments", "Commit policy"). The code is split by concern:
//!
//! - `format.rs`: file names, the segment header, record framing and its CRC;
//! - `writer.rs`: the group-commit writer thread: batching, the commit delay, preallocation,
//!   rotation, and why a failed write or fsync is final;
//! - `recovery.rs`: the scan at start-up, and how a torn tail is told from corruption.
//! - `head.rs`: the head file `wal/HEAD`, naming the newest durably started segment, which
//!   tells a crash while creating a segment from a segment that lost its header or vanished.

mod commit_delay;
mod format;
mod head;
mod options;
mod recovery;
mod reposition;
mod writer;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::Mutex;

pub use commit_delay::{
    COMMIT_DELAY_ENOUGH, COMMIT_DELAY_MIN_BATCH, COMMIT_SIBLINGS, DEFAULT_COMMIT_DELAY,
    SATURATED_COMMIT_DELAY,
};
pub use format::MAX_PAYLOAD;
pub use options::{FsyncMode, ParseFsyncModeError, WalOptions};
pub use recovery::{RecoveryReport, TornTail, replay_read_only, scan};
pub use writer::PREALLOCATE_BYTES;

use crate::storage::{RealFs, Storage};
use format::frame_record;
use recovery::{Recovered, open_segments};
use writer::Shared;

/// Log sequence number: the position of a record in the log. The first record ever written has
/// LSN 1; 0 means "nothing" (an empty log, or a snapshot taken before any record).
pub type Lsn = u64;

/// Everything that can go wrong in the log.
#[derive(thiserror::Error, Debug)]
pub enum WalError {
    /// A segment holds an invalid record or header that is not a torn tail (docs/behaviour.md
    /// §8): the log cannot be trusted past `offset`, so recovery refuses to start. `offset` is
    /// the byte offset in `file` of the first invalid record (0 for a bad segment header).
    #[error("log corrupt in {} at byte offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte offset in `file` where the first invalid record (or header) starts.
        offset: u64,
        /// What is wrong, e.g. `crc mismatch`.
        reason: String,
    },
    /// The segments do not form one consecutive LSN sequence covering `after_lsn + 1` onwards:
    /// `file` starts at LSN `found` but the log needs `expected` next (a missing segment, a
    /// segment overlapping the previous one, or a log that starts after the snapshot ends).
    #[error(
        "log gap: segment {} starts at LSN {found}, but the log needs LSN {expected} next",
        file.display()
    )]
    Gap {
        /// The segment whose first LSN does not continue the log.
        file: PathBuf,
        /// The LSN the log needed next.
        expected: Lsn,
        /// The segment's first LSN.
        found: Lsn,
    },
    /// The log head file (`wal/HEAD`, docs/format.md "The head file") records that segment `file`
    /// was durably started, but neither it nor any later segment exists: records acknowledged
    /// in it would be lost, so recovery refuses to start.
    #[error(
        "log segment {} is missing: {} records that it was started, so acknowledged records \
         may have been in it",
        file.display(),
        head.display()
    )]
    Missing {
        /// The missing segment (the path it had).
        file: PathBuf,
        /// The head file that names it.
        head: PathBuf,
    },
    /// An operating-system error on `path` (the log directory or a segment file).
    #[error("log I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The writer hit a write or fsync error earlier, so nothing more can be acknowledged. Never
    /// retried: after a failed fsync the kernel may have dropped the dirty pages, so a retry
    /// could report data durable that is not (`writer.rs`, "A failed write or fsync is
    /// final").
    #[error("log writer failed earlier; no more records can be made durable")]
    Failed,
    /// [`Wal::append`] after [`Wal::close`].
    #[error("log is closed")]
    Closed,
    /// [`Wal::append`] with a payload longer than [`MAX_PAYLOAD`] bytes.
    #[error("record payload of {len} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge {
        /// The payload length in bytes.
        len: usize,
        /// [`MAX_PAYLOAD`].
        max: usize,
    },
    /// [`Wal::durable`] for an LSN that has not been appended yet (it would wait forever).
    #[error("LSN {lsn} has not been appended (last appended LSN is {last})")]
    NotAppended {
        /// The LSN asked for.
        lsn: Lsn,
        /// The last LSN appended so far.
        last: Lsn,
    },
    /// The visitor given to [`Wal::open`] refused the record with this LSN.
    #[error("replaying log record {lsn} failed: {source}")]
    Replay {
        /// The record's LSN.
        lsn: Lsn,
        /// The visitor's own error, kept whole (callers may downcast it).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Writer counters since [`Wal::open`], for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Number of batches written (one `write_all` each; in [`FsyncMode::Always`] one per record).
    pub batches: u64,
    /// Number of records in those batches, so the mean batch size is `records / batches`.
    pub records: u64,
    /// Bytes written to segment files (records and headers of new segments).
    pub bytes: u64,
    /// Number of fsyncs of segment files issued by the writer.
    pub fsyncs: u64,
}

/// The write-ahead log: appends, group commit, durability waits, segment removal.
///
/// `Send + Sync`; the store shares it as `Arc<Wal>`. Dropping it closes it (best effort; call
/// [`Wal::close`] to see the error).
pub struct Wal {
    /// State shared with the writer thread.
    shared: Arc<Shared>,
    /// The writer thread; `None` once closed. A mutex so that a second `close` waits for the
    /// first to finish instead of returning before the flush.
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Wal {
    /// Opens the log in `dir` (creating the directory if missing), recovers it and starts the
    /// writer thread.
    ///
    /// Recovery scans every segment in LSN order and calls `visit(lsn, payload)` for every
    /// record with `lsn > after_lsn`, in LSN order; records `<= after_lsn` are verified but not
    /// visited (a snapshot at `after_lsn` covers them). A torn tail of the newest segment is cut
    /// (truncated, fsynced, and logged with `tracing::warn!` naming file and offset) and
    /// reported in [`RecoveryReport::torn_tail`] (docs/behaviour.md §8; `recovery.rs`).
    ///
    /// The next append gets LSN `max(report.last_lsn, after_lsn) + 1`. When there is no
    /// segment, or the log ends below `after_lsn`, a new segment named after that LSN is
    /// created (file and directory fsynced); otherwise the newest segment is appended to.
    ///
    /// # Errors
    /// * [`WalError::Corrupt`] for an invalid record or header that is not a torn tail;
    /// * [`WalError::Gap`] when the segments do not continue each other, or the oldest starts
    ///   after `after_lsn + 1` (records between the snapshot and the log are missing);
    /// * [`WalError::Replay`] when `visit` returns an error (with the record's LSN);
    /// * [`WalError::Io`] for a file-system error.
    ///
    /// On `Corrupt`, `Gap` or `Replay` no file has been modified, but `visit` may already have
    /// seen the records of the segments before the bad one: the caller must discard what it
    /// rebuilt.
    ///
    /// Blocking (reads every segment, fsyncs): call it before serving, or via
    /// `tokio::task::spawn_blocking`.
    pub fn open<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
        dir: &Path,
        opts: WalOptions,
        after_lsn: Lsn,
        visit: impl FnMut(Lsn, &[u8]) -> Result<(), E>,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        Wal::open_with(Arc::new(RealFs), dir, opts, after_lsn, visit)
    }

    /// [`Wal::open`] on the given [`Storage`]: every file operation of recovery and of the
    /// writer goes through `storage` (tests pass the test-only `storage::FaultFs`).
    ///
    /// # Errors
    /// As [`Wal::open`].
    pub fn open_with<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
        storage: Arc<dyn Storage>,
        dir: &Path,
        opts: WalOptions,
        after_lsn: Lsn,
        visit: impl FnMut(Lsn, &[u8]) -> Result<(), E>,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        let Recovered {
            report,
            next_lsn,
            segments,
            active,
        } = open_segments(&*storage, dir, after_lsn, visit)?;
        let wal = Wal::start(Arc::clone(&storage), dir, opts, next_lsn, segments, active)?;
        Ok((wal, report))
    }

    /// Queues one record carrying `payload` and returns its LSN (the previous one + 1).
    ///
    /// Cheap: frames the record into an in-memory buffer under a mutex and wakes the writer; it
    /// does not wait for the disk (use [`Wal::durable`]). LSNs are handed out in call order, so
    /// a caller that needs LSN order to match its own order serializes its calls.
    ///
    /// # Errors
    /// [`WalError::PayloadTooLarge`] if `payload` is longer than [`MAX_PAYLOAD`] bytes,
    /// [`WalError::Failed`] once the writer has failed, [`WalError::Closed`] after `close`.
    pub fn append(&self, payload: &[u8]) -> Result<Lsn, WalError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(WalError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let mut q = self.shared.queue.lock();
        if q.failed {
            return Err(WalError::Failed);
        }
        if q.closing {
            return Err(WalError::Closed);
        }
        let lsn = q.next_lsn;
        if q.buf.is_empty() {
            q.first_lsn = lsn;
            q.oldest = Some(Instant::now());
        }
        frame_record(&mut q.buf, lsn, payload);
        let end = q.buf.len();
        q.ends.push(end);
        // LSNs are bounded far below u64::MAX by every reader; running out is a failure, not
        // an overflow.
        q.next_lsn = lsn.checked_add(1).ok_or(WalError::Failed)?;
        drop(q);
        self.shared.work.notify_one();
        Ok(lsn)
    }

    /// Resolves once every record with LSN `<= lsn` is durable under the fsync mode
    /// ([`FsyncMode::Always`] / [`FsyncMode::Batch`]: written and fsynced;
    /// [`FsyncMode::Never`]: written to the OS). An answer waits for this (docs/behaviour.md
    /// §8).
    ///
    /// Cancel-safe: dropping the future only stops waiting.
    ///
    /// # Errors
    /// [`WalError::Failed`] if the writer failed before making `lsn` durable;
    /// [`WalError::NotAppended`] if `lsn` is larger than [`Wal::last_lsn`].
    pub async fn durable(&self, lsn: Lsn) -> Result<(), WalError> {
        if self.shared.durable_lsn.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let mut rx = self.shared.durable.subscribe();
        let last = self.last_lsn();
        if lsn > last {
            return Err(WalError::NotAppended { lsn, last });
        }
        let state = match rx.wait_for(|d| d.lsn >= lsn || d.failed).await {
            Ok(state) => *state,
            Err(_) => return Err(WalError::Failed),
        };
        if state.lsn >= lsn {
            Ok(())
        } else {
            Err(WalError::Failed)
        }
    }

    /// Blocks the calling thread until [`Wal::durable`] would resolve, for threads outside the
    /// async runtime (the snapshot writer, shutdown). Polls every millisecond: it runs once per
    /// snapshot, and the LSN waited for is almost always durable already.
    ///
    /// # Errors
    /// As [`Wal::durable`].
    pub fn wait_durable_blocking(&self, lsn: Lsn) -> Result<(), WalError> {
        let last = self.last_lsn();
        if lsn > last {
            return Err(WalError::NotAppended { lsn, last });
        }
        loop {
            let state = *self.shared.durable.borrow();
            if state.lsn >= lsn {
                return Ok(());
            }
            if state.failed {
                return Err(WalError::Failed);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The durable LSN: every record with LSN `<=` it is durable under the fsync mode.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// The LSN of the last appended record (durable or not); after `open`, the last recovered
    /// LSN or `after_lsn`, whichever is larger.
    pub fn last_lsn(&self) -> Lsn {
        self.shared.queue.lock().next_lsn - 1
    }

    /// Whether the writer has failed (a write or fsync error): nothing more can be acknowledged
    /// and the service should report itself unhealthy (docs/behaviour.md §6.9 `/healthz`).
    pub fn is_failed(&self) -> bool {
        self.shared.durable.borrow().failed
    }

    /// Deletes every closed segment all of whose LSNs are `<= lsn` (a segment covers LSNs from
    /// its first LSN up to the next segment's first LSN - 1), never the active segment, then
    /// fsyncs the directory. Called after a snapshot at `lsn` is durable (docs/behaviour.md §8,
    /// snapshots and compaction). Returns how many segment files were removed.
    ///
    /// # Errors
    /// [`WalError::Io`] if a file cannot be removed or the directory cannot be fsynced; segments
    /// removed before the error stay removed.
    pub fn remove_segments_through(&self, lsn: Lsn) -> Result<usize, WalError> {
        let mut segments = self.shared.segments.lock();
        let mut removed = 0;
        let mut result = Ok(());
        while segments.len() > 1 {
            let (Some(oldest), Some(next)) = (segments.front(), segments.get(1)) else {
                break;
            };
            if next.first_lsn.saturating_sub(1) > lsn {
                break;
            }
            match self.shared.storage.remove_file(&oldest.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    result = Err(WalError::Io {
                        path: oldest.path.clone(),
                        source: e,
                    });
                    break;
                }
            }
            tracing::info!(file = %oldest.path.display(), "removed log segment covered by snapshot");
            segments.pop_front();
            removed += 1;
        }
        drop(segments);
        if removed > 0 {
            sync_dir(&*self.shared.storage, &self.shared.dir)?;
        }
        result.map(|()| removed)
    }

    /// Makes the writer finish the active segment and start a new one for the next record, so
    /// that every record appended before this call lies in segments
    /// [`Wal::remove_segments_through`] can remove (compaction after an erasure,
    /// docs/behaviour.md §6.7, §6.8). Records queued before the call are written (and fsynced,
    /// except with [`FsyncMode::Never`]) first. Returns the LSN the new segment starts at. An
    /// active segment that holds no record is kept as it is.
    ///
    /// Blocking: waits for the writer thread.
    ///
    /// # Errors
    /// [`WalError::Failed`] if the writer failed before or during the roll, [`WalError::Closed`]
    /// after `close`.
    pub fn roll_segment(&self) -> Result<Lsn, WalError> {
        let q = self.shared.queue.lock();
        if q.failed {
            return Err(WalError::Failed);
        }
        if q.closing {
            return Err(WalError::Closed);
        }
        let next_lsn = q.next_lsn;
        self.roll_and_wait(q)?;
        Ok(next_lsn)
    }

    /// Asks the writer for the segment roll `q` describes (`roll_requested`, and a
    /// `reposition` when one is set) and waits until it is done.
    fn roll_and_wait(
        &self,
        mut q: parking_lot::MutexGuard<'_, writer::Queue>,
    ) -> Result<(), WalError> {
        let target = q.rolls_done + 1;
        q.roll_requested = true;
        self.shared.work.notify_all();
        while q.rolls_done < target {
            if q.failed {
                return Err(WalError::Failed);
            }
            // Bounded waits: a writer that died without marking the log failed must not hang
            // the caller forever.
            let timed_out = self
                .shared
                .rolled
                .wait_for(&mut q, std::time::Duration::from_millis(100))
                .timed_out();
            if timed_out && self.writer.lock().as_ref().is_none_or(|h| h.is_finished()) {
                return Err(WalError::Failed);
            }
        }
        Ok(())
    }

    /// Makes `lsn` the LSN of the next record (a Raft log's truncation of a conflicting suffix,
    /// or its jump past a prefix purged behind a snapshot; docs/format.md, "Cluster"): records
    /// queued before the call are written first; then every record with LSN `>= lsn` is
    /// dropped (later segments removed, the segment holding `lsn` cut at that record and
    /// fsynced) and a new segment named `lsn` is started. A jump ahead leaves a gap in the LSNs,
    /// which recovery accepts only below the LSN it starts after, so the caller must have made
    /// durable that everything below `lsn` is covered (a Raft log saves its purge point first).
    ///
    /// Blocking: waits for the writer thread. The caller must not append meanwhile.
    ///
    /// # Errors
    /// [`WalError::Failed`] if the writer failed before or during it (the log is then failed
    /// for good), [`WalError::Closed`] after `close`.
    pub fn reposition(&self, lsn: Lsn) -> Result<(), WalError> {
        let mut q = self.shared.queue.lock();
        if q.failed {
            return Err(WalError::Failed);
        }
        if q.closing {
            return Err(WalError::Closed);
        }
        if q.next_lsn == lsn && q.buf.is_empty() {
            return Ok(());
        }
        q.reposition = Some(lsn.max(1));
        self.roll_and_wait(q)
    }

    /// Writes and fsyncs everything queued (in every fsync mode) and stops the writer thread;
    /// later appends get [`WalError::Closed`]. Idempotent; also done (best effort) on drop.
    ///
    /// Blocking (waits for the writer's last write and fsync).
    ///
    /// # Errors
    /// [`WalError::Failed`] if the writer failed, now or earlier.
    pub fn close(&self) -> Result<(), WalError> {
        let mut writer = self.writer.lock();
        if let Some(handle) = writer.take() {
            self.shared.queue.lock().closing = true;
            self.shared.work.notify_all();
            if handle.join().is_err() {
                // The writer's unwind guard already marked the log failed.
                tracing::error!("log writer thread panicked");
            }
        }
        if self.is_failed() {
            Err(WalError::Failed)
        } else {
            Ok(())
        }
    }

    /// Writer counters since `open` (batches, records, bytes, fsyncs).
    pub fn stats(&self) -> WalStats {
        let s = &self.shared.stats;
        WalStats {
            batches: s.batches.load(Ordering::Relaxed),
            records: s.records.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "closing the log on drop failed");
        }
    }
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("opts", &self.shared.opts)
            .field("durable", &*self.shared.durable.borrow())
            .finish_non_exhaustive()
    }
}

/// Maps an I/O error on `path` to [`WalError::Io`].
fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fsyncs the directory `dir`, so entries created or removed in it survive a crash.
fn sync_dir(fs: &dyn Storage, dir: &Path) -> Result<(), WalError> {
    fs.sync_dir(dir).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::format::{ActiveSegment, HEADER_LEN, SegmentFile};
    use super::*;

    #[test]
    fn wal_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Wal>();
    }

    /// The failure path, end to end: the active segment is `/dev/full`, so the first write
    /// fails with ENOSPC. Nothing is acknowledged, and nothing ever is again.
    #[tokio::test]
    async fn write_error_fails_the_log_for_good() {
        let Ok(full) = RealFs.open_append(Path::new("/dev/full"), false) else {
            return; // not Linux
        };
        let dir = tempfile::tempdir().unwrap();
        let active = ActiveSegment {
            file: full,
            path: PathBuf::from("/dev/full"),
            first_lsn: 11,
            size: HEADER_LEN as u64,
            allocated: HEADER_LEN as u64,
        };
        let segments = VecDeque::from([SegmentFile {
            first_lsn: 11,
            path: active.path.clone(),
        }]);
        let wal = Wal::start(
            Arc::new(RealFs),
            dir.path(),
            WalOptions::default(),
            11,
            segments,
            active,
        )
        .unwrap();
        assert_eq!(wal.durable_lsn(), 10);
        let lsn = wal.append(b"never durable").unwrap();
        assert_eq!(lsn, 11);
        assert!(matches!(wal.durable(lsn).await, Err(WalError::Failed)));
        assert!(wal.is_failed());
        assert_eq!(wal.durable_lsn(), 10);
        assert!(matches!(wal.append(b"more"), Err(WalError::Failed)));
        // Already-durable LSNs stay fine; the writer is gone, close reports the failure.
        wal.durable(10).await.unwrap();
        assert!(matches!(wal.close(), Err(WalError::Failed)));
        assert!(matches!(wal.close(), Err(WalError::Failed)));
    }
}
