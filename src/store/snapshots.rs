//! Snapshots and compaction of a running store (docs/behaviour.md §8; the file format is in
//! docs/format.md).
//!
//! A snapshot captures the state at one LSN in an instant under the write lock, then streams it
//! to a temp file in chunks of [`CAPTURE_CHUNK`] entries, each under the shared lock: writers
//! run between chunks while the graph keeps copy-on-write pre-images of what they change. The
//! file is fsynced, then published (renamed, directory fsynced) once the log is durable up to
//! its LSN, so a snapshot never holds state a crash could take back.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::RwLock;

use crate::graph::{CaptureBuffer, CaptureCursor};
use crate::metrics as metric;
use crate::snapshot::{PreparedSnapshot, SnapshotEntry, WritePace};
use crate::wal::Lsn;

use super::{SNAPSHOTS_KEPT, State, Store, StoreError};

/// Snapshot entries captured per hold of the shared lock. A write that arrives during a hold
/// waits for the maintenance thread to finish it, so holds are short: 64 entries take tens of
/// microseconds at a million contacts.
const CAPTURE_CHUNK: usize = 64;

/// What a compaction did ([`Store::compact_blocking`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// LSN of the snapshot written.
    pub lsn: Lsn,
    /// Its size in bytes.
    pub snapshot_bytes: u64,
    /// Other files removed from the snapshot directory.
    pub snapshots_removed: usize,
    /// Log segments removed.
    pub segments_removed: usize,
}

/// A snapshot [`Store::write_snapshot`] published.
struct WrittenSnapshot {
    lsn: Lsn,
    path: PathBuf,
    /// The file's size, in bytes.
    bytes: u64,
    /// Time spent waiting for `--snapshot-write-rate`.
    paced: std::time::Duration,
}

/// The entries of a captured snapshot, fetched [`CAPTURE_CHUNK`] at a time, each chunk under
/// the shared lock ([`crate::graph::IdentityGraph::capture_chunk`]).
struct CapturedEntries<'a> {
    state: &'a RwLock<State>,
    cursor: CaptureCursor,
    buffer: Vec<SnapshotEntry>,
    done: bool,
}

impl Drop for CapturedEntries<'_> {
    /// Entries fetched but not written (a write failed) hold copies of values: zeroed too.
    fn drop(&mut self) {
        for entry in self.buffer.drain(..) {
            entry.wipe();
        }
    }
}

impl Iterator for CapturedEntries<'_> {
    type Item = SnapshotEntry;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.buffer.pop() {
                return Some(entry);
            }
            if self.done {
                return None;
            }
            self.done = self.state.read().graph.capture_chunk(
                &mut self.cursor,
                CAPTURE_CHUNK,
                &mut self.buffer,
            );
            // Handed out by `pop`, from the back.
            self.buffer.reverse();
            // Give the core back if a request is waiting for it: the maintenance thread runs at
            // `SCHED_IDLE`, so a request that wakes up preempts it at once, but one that is
            // already runnable could otherwise wait for the scheduler's next tick.
            std::thread::yield_now();
        }
    }
}

impl Store {
    /// Takes a snapshot now, as fast as the device allows (shutdown, tests), blocking the
    /// calling thread for the file write, not the graph: see [`Store::snapshot_paced`].
    ///
    /// # Errors
    /// As [`Store::snapshot_paced`].
    pub fn snapshot_blocking(&self) -> Result<Option<Lsn>, StoreError> {
        self.snapshot_paced(WritePace::Unlimited)
    }

    /// Takes a snapshot now, its bytes written no faster than `pace`: captures the state
    /// (copy-on-write) and streams it to a temp file, waits until the log is durable up to the
    /// snapshot's LSN, publishes the file, keeps the [`SNAPSHOTS_KEPT`] newest and removes log
    /// segments wholly below the oldest kept. Returns the snapshot's LSN, or `None` when there
    /// was nothing new since the last snapshot. Counts [`crate::metrics::SNAPSHOTS`] and records
    /// [`crate::metrics::SNAPSHOT_DURATION`] (seconds, capture to pruning, pauses included).
    ///
    /// # Errors
    /// [`StoreError::Snapshot`] / [`StoreError::Wal`] on I/O failure (the previous snapshots
    /// and the log stay valid; the temp file is removed); [`StoreError::Unavailable`] when the
    /// log has failed.
    pub fn snapshot_paced(&self, pace: WritePace) -> Result<Option<Lsn>, StoreError> {
        let started = Instant::now();
        let result = self.snapshot_and_prune(pace);
        match &result {
            Ok(Some(_)) => {
                ::metrics::counter!(metric::SNAPSHOTS, "result" => "ok").increment(1);
                ::metrics::histogram!(metric::SNAPSHOT_DURATION)
                    .record(started.elapsed().as_secs_f64());
            }
            Ok(None) => {}
            Err(_) => ::metrics::counter!(metric::SNAPSHOTS, "result" => "error").increment(1),
        }
        result
    }

    fn snapshot_and_prune(&self, pace: WritePace) -> Result<Option<Lsn>, StoreError> {
        let started = Instant::now();
        let mut last_snapshot = self.snapshot_lock.lock();
        if self.wal.is_failed() {
            return Err(StoreError::Unavailable);
        }
        // LSNs only grow, so a state that differs from the newest snapshot here still does when
        // the capture starts.
        if *last_snapshot == Some(self.state.read().lsn) {
            return Ok(None);
        }
        let written = self.write_snapshot(pace, |_| Ok(()))?;
        *last_snapshot = Some(written.lsn);
        let oldest_kept = self.snapshots.prune(SNAPSHOTS_KEPT)?;
        let removed = match oldest_kept {
            Some(oldest) if self.snapshots.list()?.len() >= SNAPSHOTS_KEPT => {
                self.wal.remove_segments_through(oldest)?
            }
            _ => 0,
        };
        tracing::info!(
            path = %written.path.display(),
            lsn = written.lsn,
            bytes = written.bytes,
            segments_removed = removed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            paced_ms = written.paced.as_millis() as u64,
            "snapshot written"
        );
        Ok(Some(written.lsn))
    }

    /// Compaction (docs/behaviour.md §6.7, §6.8): rolls the log to a new segment, writes a
    /// snapshot of the state at the roll, then removes every other snapshot (damaged ones set
    /// aside included) and every log segment the snapshot covers. Afterwards no file under the
    /// data directory holds a value erased before the compaction started. Until the next
    /// regular snapshot only one snapshot exists (the fallback to an older one is given up,
    /// because the older one holds the erased values).
    ///
    /// Holds the exclusive lock only for the roll (writing out the queued records and creating
    /// a segment file); the snapshot is captured and streamed like any other, unpaced.
    /// Blocking (file writes and fsyncs).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed; [`StoreError::Snapshot`] /
    /// [`StoreError::Wal`] on I/O failure (the data directory stays valid: nothing is removed
    /// before the new snapshot is durable).
    pub fn compact_blocking(&self) -> Result<Compaction, StoreError> {
        let started = Instant::now();
        let mut last_snapshot = self.snapshot_lock.lock();
        if self.wal.is_failed() {
            return Err(StoreError::Unavailable);
        }
        // Erasures settled by the roll have their events in the segments this compaction
        // removes (or nothing to erase); read under the write lock, as they are counted.
        let mut settled_at_roll = 0;
        let at_roll = |state: &mut State| {
            if state.lsn == Lsn::MAX {
                return Err(StoreError::Unavailable);
            }
            settled_at_roll = self.erasures_settled.load(Ordering::Acquire);
            // Every record up to `state.lsn` goes to segments below the new one.
            self.wal
                .roll_segment()
                .map(|_| ())
                .map_err(|_| StoreError::Unavailable)
        };
        let written = self.write_snapshot(WritePace::Unlimited, at_roll)?;
        let lsn = written.lsn;
        *last_snapshot = Some(lsn);
        let snapshots_removed = self.snapshots.remove_all_but(lsn)?;
        let segments_removed = self.wal.remove_segments_through(lsn)?;
        self.remove_erasure_marker(settled_at_roll);
        let compaction = Compaction {
            lsn,
            snapshot_bytes: written.bytes,
            snapshots_removed,
            segments_removed,
        };
        ::metrics::counter!(metric::SNAPSHOTS, "result" => "ok").increment(1);
        tracing::info!(
            lsn,
            snapshot_bytes = compaction.snapshot_bytes,
            snapshots_removed,
            segments_removed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compaction done"
        );
        Ok(compaction)
    }

    /// Removes [`super::ERASURE_MARKER`] once a compaction whose roll came after every erasure
    /// that relied on it has removed the older files (`settled_at_roll`: erasures settled by
    /// the roll). An erasure requested since keeps it for the compaction it queued. A failure
    /// to remove it is logged: the next start compacts again, which is harmless.
    fn remove_erasure_marker(&self, settled_at_roll: u64) {
        let mut marker = self.erasure_marker.lock();
        if !marker.present || marker.requested != settled_at_roll {
            return;
        }
        let path = self.dir.join(super::ERASURE_MARKER);
        match self
            .storage
            .remove_file(&path)
            .and_then(|()| self.storage.sync_dir(&self.dir))
        {
            Ok(()) => marker.present = false,
            Err(error) => tracing::warn!(%error, path = %path.display(),
                "could not remove the erasure marker; the next start compacts again"),
        }
    }

    /// Makes sure [`super::ERASURE_MARKER`] exists durably and counts one more erasure that
    /// relies on it, before the erasure takes the write lock (docs/behaviour.md §6.7).
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file cannot be created or made durable; the erasure must
    /// then not be logged.
    pub(super) fn mark_erasure(&self) -> Result<(), StoreError> {
        let mut marker = self.erasure_marker.lock();
        if !marker.present {
            let path = self.dir.join(super::ERASURE_MARKER);
            let io = |source| StoreError::Io {
                path: path.clone(),
                source,
            };
            self.storage
                .open_write(&path, true)
                .or_else(|e| match e.kind() {
                    // Left by a removal that failed: the file is there, still durable.
                    std::io::ErrorKind::AlreadyExists => self.storage.open_write(&path, false),
                    _ => Err(e),
                })
                .and_then(|mut file| file.sync_all())
                .map_err(io)?;
            self.storage
                .sync_dir(&self.dir)
                .map_err(|source| StoreError::Io {
                    path: self.dir.clone(),
                    source,
                })?;
            marker.present = true;
        }
        marker.requested += 1;
        Ok(())
    }

    /// Writes a snapshot of the state at one LSN and publishes it, for
    /// [`Store::snapshot_paced`] and [`Store::compact_blocking`], whose caller holds
    /// `snapshot_lock`.
    ///
    /// Under the write lock, for an instant, `at_capture` runs (compaction rolls the log there)
    /// and the capture starts; the state is then streamed by [`Store::write_captured`]. The
    /// file is published once the log is durable up to its LSN.
    fn write_snapshot(
        &self,
        pace: WritePace,
        at_capture: impl FnOnce(&mut State) -> Result<(), StoreError>,
    ) -> Result<WrittenSnapshot, StoreError> {
        // The cursor's memory (4 bytes a slot) is made first, outside both locks.
        let slots = self.state.read().graph.slots();
        let buffer = CaptureBuffer::for_slots(slots + slots / 64 + 1024);
        let (lsn, cursor) = {
            let mut state = self.state.write();
            at_capture(&mut state)?;
            self.since_snapshot.store(0, Ordering::Relaxed);
            (state.lsn, state.graph.begin_capture_with(buffer))
        };
        let written = self.write_captured(lsn, cursor, pace);
        self.state.write().graph.end_capture();
        let prepared = written?;
        // A snapshot must never hold state the log could still lose: if it did, recovery
        // would continue numbering after records that never reached the disk.
        self.wal
            .wait_durable_blocking(lsn)
            .map_err(|_| StoreError::Unavailable)?;
        let (bytes, paced) = (prepared.bytes(), prepared.paced());
        let path = prepared.publish()?;
        Ok(WrittenSnapshot {
            lsn,
            path,
            bytes,
            paced,
        })
    }

    /// Streams the captured state into a new snapshot file at `pace` (until [`Store::close`]),
    /// [`CAPTURE_CHUNK`] entries per hold of the shared lock; returns it fsynced but not yet
    /// published.
    fn write_captured(
        &self,
        lsn: Lsn,
        cursor: CaptureCursor,
        pace: WritePace,
    ) -> Result<PreparedSnapshot<'_>, StoreError> {
        let mut writer = self
            .snapshots
            .writer(lsn, cursor.next_id, pace)?
            .stop_pacing_when(&self.closing);
        let entries = CapturedEntries {
            state: &self.state,
            cursor,
            buffer: Vec::with_capacity(CAPTURE_CHUNK + 1),
            done: false,
        };
        for entry in entries {
            writer.push(&entry)?;
            // Its values are copies made for this snapshot: zeroed before they are freed, so a
            // later erasure leaves none behind (docs/behaviour.md §6.7).
            entry.wipe();
        }
        Ok(writer.finish()?)
    }
}
