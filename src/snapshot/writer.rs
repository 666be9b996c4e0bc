//! Streaming snapshot writes: entries are framed and written as they are produced, a piece at
//! a time, optionally paced to a byte rate, so that writing a snapshot in the background
//! neither doubles the memory held nor stalls the requests waiting for log fsyncs.
//!
//! [`super::encode`] builds a whole file in memory (import uses it), which costs a second copy
//! of the state: about 90 MB per million contacts. The store's snapshots (background, shutdown,
//! compaction) use [`SnapshotWriter`] instead: memory stays at one piece ([`WRITE_PIECE`]) plus
//! one chunk, and each piece is written back to the device ([`StorageFile::write_back`]) before
//! the next is written, with a pause when a [`WritePace`] is set. Pacing is how databases keep
//! background writes from taking the device away from the log: PostgreSQL spreads a checkpoint
//! over `checkpoint_completion_target`, RocksDB's `rate_limiter` caps flush and compaction
//! bytes per second. Here pacing removes the slow log fsyncs a snapshot's writes otherwise
//! cause, but not the requests' p99 latency, while it makes every snapshot take longer; so it
//! is off by default ([`crate::store::DEFAULT_SNAPSHOT_WRITE_MIB_S`]).
//!
//! The file is the one [`super::encode`] would produce, byte for byte (a unit test checks it):
//! the body is written from offset [`HEADER_LEN`] on and the header, which holds the entry
//! count, last. It goes to a unique temp file, is fsynced by [`SnapshotWriter::finish`], and
//! appears under its final name only on [`PreparedSnapshot::publish`] (rename, directory
//! fsync), so the caller can wait in between for the log to be durable up to the snapshot's
//! LSN. Dropping either value before publishing removes the temp file (best effort).

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::format::{CHUNK_TARGET, ChunkFramer, HEADER_LEN, TMP_SUFFIX, file_name, header};
use super::{SnapshotEntry, SnapshotError, io_err};
use crate::contact::ContactId;
use crate::storage::{Storage, StorageFile};
use crate::wal::Lsn;

/// Bytes of a snapshot file written between two write-backs (see [`SnapshotWriter`]).
const WRITE_PIECE: usize = 256 << 10;

/// How fast a snapshot's bytes may be written to the device (given to
/// [`super::SnapshotDir::writer`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WritePace {
    /// As fast as the device takes them (shutdown, compaction, import: nothing else waits).
    #[default]
    Unlimited,
    /// At most this many bytes per second, averaged over pieces of 256 KiB: over any window,
    /// at most one piece more than the rate allows (`serve --snapshot-write-rate`, for
    /// background snapshots).
    BytesPerSecond(NonZeroU64),
}

impl WritePace {
    /// A pace of `mib` MiB (2^20 bytes) per second; 0 is [`WritePace::Unlimited`].
    pub fn mib_per_second(mib: u64) -> WritePace {
        match NonZeroU64::new(mib.saturating_mul(1 << 20)) {
            Some(rate) => WritePace::BytesPerSecond(rate),
            None => WritePace::Unlimited,
        }
    }
}

/// A token bucket one piece deep: the next piece may start `bytes / rate` after this one
/// started. The writer asks before each piece, so the time it spends between pieces (encoding
/// the next one) counts toward the wait; time lost (the thread preempted, a slow write) is
/// never made up by a burst. Over any window, at most one piece more than `rate` allows is
/// written. Once its `hurry` flag is set, it no longer waits.
#[derive(Debug)]
struct Pacer<'a> {
    rate: Option<NonZeroU64>,
    /// When the next piece may start.
    due: Option<Instant>,
    /// Once set, the pace no longer applies.
    hurry: Option<&'a AtomicBool>,
    /// Total time spent waiting for the pace.
    paced: Duration,
}

impl<'a> Pacer<'a> {
    fn new(pace: WritePace) -> Pacer<'a> {
        let rate = match pace {
            WritePace::Unlimited => None,
            WritePace::BytesPerSecond(rate) => Some(rate),
        };
        Pacer {
            rate,
            due: None,
            hurry: None,
            paced: Duration::ZERO,
        }
    }

    /// How long to wait, from `now`, before the next piece may start (zero when unpaced).
    fn wait(&self, now: Instant) -> Duration {
        if self.hurry.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
            return Duration::ZERO;
        }
        self.due
            .map_or(Duration::ZERO, |due| due.saturating_duration_since(now))
    }

    /// Sleeps until the next piece may start.
    fn pause(&mut self) {
        let wait = self.wait(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
            self.paced += wait;
        }
    }

    /// Records that a piece of `bytes` started at `started`.
    fn wrote(&mut self, started: Instant, bytes: u64) {
        if let Some(rate) = self.rate {
            self.due = Some(started + Duration::from_secs_f64(bytes as f64 / rate.get() as f64));
        }
    }
}

/// A snapshot file being streamed to a temp file, from [`super::SnapshotDir::writer`]: entries
/// go in with [`SnapshotWriter::push`], in the order [`super::encode`] takes them;
/// [`SnapshotWriter::finish`] completes and fsyncs the file; [`PreparedSnapshot::publish`]
/// gives it its final name. Holds at most about one 256 KiB piece plus one 64 KiB chunk of
/// framed bytes. Dropping it removes the temp file (best effort).
pub struct SnapshotWriter<'a> {
    file: PieceFile<'a>,
    next_id: ContactId,
    framer: ChunkFramer,
    /// Framed bytes not yet written; they belong right after the file's written bytes. Zeroed
    /// when dropped: they hold values (docs/behaviour.md §6.7).
    pending: zeroize::Zeroizing<Vec<u8>>,
}

impl<'a> SnapshotWriter<'a> {
    /// Starts the snapshot at `lsn` in `dir`: see [`super::SnapshotDir::writer`].
    pub(super) fn create(
        fs: &'a dyn Storage,
        dir: &Path,
        lsn: Lsn,
        next_id: ContactId,
        pace: WritePace,
    ) -> Result<SnapshotWriter<'a>, SnapshotError> {
        Ok(SnapshotWriter {
            file: PieceFile::create(fs, dir, lsn, HEADER_LEN as u64, pace)?,
            next_id,
            framer: ChunkFramer::new(),
            pending: zeroize::Zeroizing::new(Vec::with_capacity(WRITE_PIECE + CHUNK_TARGET + 1024)),
        })
    }

    /// Stops pacing once `flag` is set, from the next piece on (the store sets it at shutdown,
    /// so a clean stop waits for the device, not for the pace). Returns the writer.
    pub fn stop_pacing_when(mut self, flag: &'a AtomicBool) -> SnapshotWriter<'a> {
        self.file.pacer.hurry = Some(flag);
        self
    }

    /// Adds one entry; writes out every whole piece of framed bytes that is ready (waiting
    /// for the pace after each).
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the temp file on a write failure (the temp file is removed
    /// when the writer is dropped).
    pub fn push(&mut self, entry: &SnapshotEntry) -> Result<(), SnapshotError> {
        self.framer.push(entry, &mut self.pending)?;
        if self.pending.len() >= WRITE_PIECE {
            let mut written = 0;
            for piece in self.pending.chunks_exact(WRITE_PIECE) {
                self.file.write_piece(piece)?;
                written += piece.len();
            }
            self.pending.drain(..written);
        }
        Ok(())
    }

    /// Writes the last chunk, the trailer and the header, and fsyncs the temp file. The
    /// snapshot is not visible under its final name until [`PreparedSnapshot::publish`], so
    /// the caller can first wait for the log to be durable up to the snapshot's LSN.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the temp file (which is then removed).
    pub fn finish(mut self) -> Result<PreparedSnapshot<'a>, SnapshotError> {
        let entries = self.framer.finish(&mut self.pending);
        self.file.write_piece(&self.pending)?;
        let header = header(self.file.lsn, self.next_id, entries);
        self.file.finish(Some(&header))
    }
}

/// Writes the already encoded bytes of [`super::SnapshotDir::write_file`] through the same
/// temp file, pieces and publication as a streamed snapshot.
pub(super) fn write_encoded(
    fs: &dyn Storage,
    dir: &Path,
    lsn: Lsn,
    bytes: &[u8],
) -> Result<PathBuf, SnapshotError> {
    let mut file = PieceFile::create(fs, dir, lsn, 0, WritePace::Unlimited)?;
    for piece in bytes.chunks(WRITE_PIECE) {
        file.write_piece(piece)?;
    }
    file.finish(None)?.publish()
}

/// The temp file of a snapshot being written, piece by piece at increasing offsets; removed
/// on drop (by its [`TempFile`]) unless [`PieceFile::finish`] handed it on.
struct PieceFile<'a> {
    /// Declared before `tmp`, so the handle is closed before the file is removed.
    file: Box<dyn StorageFile>,
    tmp: TempFile<'a>,
    dir: PathBuf,
    lsn: Lsn,
    /// Where the next piece goes.
    offset: u64,
    pacer: Pacer<'a>,
}

impl<'a> PieceFile<'a> {
    /// Creates `dir` durably if needed and a new temp file for the snapshot at `lsn`, whose
    /// first piece goes at byte `offset` (after room for the header when streaming).
    fn create(
        fs: &'a dyn Storage,
        dir: &Path,
        lsn: Lsn,
        offset: u64,
        pace: WritePace,
    ) -> Result<PieceFile<'a>, SnapshotError> {
        crate::storage::create_dir_durably(fs, dir)?;
        // A unique temp name, created exclusively: two writers never share (or truncate) a
        // file.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(
            "{lsn:020}{TMP_SUFFIX}.{}.{unique}",
            std::process::id()
        ));
        let file = fs.open_write(&path, true).map_err(io_err(&path))?;
        Ok(PieceFile {
            file,
            tmp: TempFile { fs, path },
            dir: dir.to_path_buf(),
            lsn,
            offset,
            pacer: Pacer::new(pace),
        })
    }

    /// Waits for the pace, then writes `piece` at the current offset and waits until the
    /// device has it (`sync_file_range`, not `fdatasync`: the file grows, and each `fdatasync`
    /// would also write its inode). A log fsync issued meanwhile waits for at most
    /// this piece, not for the whole file.
    fn write_piece(&mut self, piece: &[u8]) -> Result<(), SnapshotError> {
        if piece.is_empty() {
            return Ok(());
        }
        self.pacer.pause();
        let started = Instant::now();
        let path = &self.tmp.path;
        self.file
            .write_all_at(self.offset, piece)
            .map_err(io_err(path))?;
        self.file
            .write_back(self.offset, piece.len() as u64)
            .map_err(io_err(path))?;
        self.offset += piece.len() as u64;
        self.pacer.wrote(started, piece.len() as u64);
        Ok(())
    }

    /// Writes `header` at offset 0 (if given) and fsyncs the file.
    fn finish(mut self, header: Option<&[u8]>) -> Result<PreparedSnapshot<'a>, SnapshotError> {
        if let Some(header) = header {
            self.file
                .write_all_at(0, header)
                .map_err(io_err(&self.tmp.path))?;
        }
        self.file.sync_all().map_err(io_err(&self.tmp.path))?;
        Ok(PreparedSnapshot {
            tmp: self.tmp,
            dir: self.dir,
            lsn: self.lsn,
            bytes: self.offset,
            paced: self.pacer.paced,
        })
    }
}

/// A file that is removed (best effort) when this is dropped, unless [`TempFile::rename`]
/// moved it to its final name first.
struct TempFile<'a> {
    fs: &'a dyn Storage,
    /// Empty once renamed.
    path: PathBuf,
}

impl TempFile<'_> {
    /// Renames the file to `to`; afterwards nothing is removed on drop.
    ///
    /// # Errors
    /// The rename's OS error (the file is then still removed on drop).
    fn rename(&mut self, to: &Path) -> std::io::Result<()> {
        self.fs.rename(&self.path, to)?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = self.fs.remove_file(&self.path);
        }
    }
}

/// A complete, fsynced snapshot under its temp name, waiting to be published (from
/// [`SnapshotWriter::finish`]). Dropping it unpublished removes the temp file (best effort).
pub struct PreparedSnapshot<'a> {
    tmp: TempFile<'a>,
    dir: PathBuf,
    lsn: Lsn,
    bytes: u64,
    paced: Duration,
}

impl PreparedSnapshot<'_> {
    /// The file's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Time the writer spent waiting for its [`WritePace`] (zero when unpaced).
    pub fn paced(&self) -> Duration {
        self.paced
    }

    /// Renames the file to its final name ([`super::SnapshotDir::path_for`] the LSN, replacing
    /// a snapshot at the same LSN) and fsyncs the directory. Returns the final path.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the file or directory. If the rename failed, the temp file
    /// is removed (best effort) and no final file appears; if only the directory fsync failed,
    /// the file may or may not survive a crash under its final name.
    pub fn publish(mut self) -> Result<PathBuf, SnapshotError> {
        let final_path = self.dir.join(file_name(self.lsn));
        self.tmp.rename(&final_path).map_err(io_err(&final_path))?;
        self.tmp.fs.sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok(final_path)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::contacts;
    use super::super::{SnapshotDir, encode};
    use super::*;

    #[test]
    fn pacer_spaces_piece_starts_by_their_cost_and_never_bursts_to_catch_up() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // 1 MiB/s: a 256 KiB piece costs 250 ms from the start of its write.
        let mut pacer = Pacer::new(WritePace::mib_per_second(1));
        assert_eq!(pacer.wait(t0), Duration::ZERO);
        pacer.wrote(t0, 256 << 10);
        // Written and the next piece encoded by 10 ms: wait the remaining 240 ms.
        assert_eq!(pacer.wait(t0 + ms(10)), ms(240));
        // The next piece started at 300 ms; whatever took the time since (a slow write,
        // encoding) counts toward its 250 ms.
        pacer.wrote(t0 + ms(300), 256 << 10);
        assert_eq!(pacer.wait(t0 + ms(500)), ms(50));
        assert_eq!(pacer.wait(t0 + ms(600)), Duration::ZERO);
        // A piece started late (the thread was away) still spaces the next by its whole
        // cost: no credit for idle time, so no burst.
        pacer.wrote(t0 + ms(5000), 256 << 10);
        assert_eq!(pacer.wait(t0 + ms(5001)), ms(249));
        // 64 KiB at 1 MiB/s costs 62.5 ms.
        pacer.wrote(t0, 64 << 10);
        assert_eq!(pacer.wait(t0), Duration::from_micros(62_500));
        let mut unpaced = Pacer::new(WritePace::mib_per_second(0));
        unpaced.wrote(t0, 1 << 30);
        assert_eq!(unpaced.wait(t0), Duration::ZERO);
    }

    #[test]
    fn streamed_file_is_byte_identical_to_the_encoded_one_and_appears_only_on_publish() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::on_disk(dir.path());
        // Enough entries for several pieces and chunks, with a partial last piece.
        let all = contacts(30_000);
        let encoded = encode(41, 30_001, all.clone().into_iter()).unwrap();
        assert!(encoded.len() > 3 * WRITE_PIECE);
        let mut writer = snapshots.writer(41, 30_001, WritePace::Unlimited).unwrap();
        for entry in &all {
            writer.push(entry).unwrap();
        }
        let prepared = writer.finish().unwrap();
        assert_eq!(prepared.bytes(), encoded.len() as u64);
        assert!(snapshots.list().unwrap().is_empty());
        let path = prepared.publish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), encoded);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn pacing_stops_once_the_flag_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::on_disk(dir.path());
        let all = contacts(20_000);
        // 1 MiB/s would take over a second for these pieces; the flag is set from the start.
        let flag = AtomicBool::new(true);
        let mut writer = snapshots
            .writer(7, 20_001, WritePace::mib_per_second(1))
            .unwrap()
            .stop_pacing_when(&flag);
        for entry in &all {
            writer.push(entry).unwrap();
        }
        let prepared = writer.finish().unwrap();
        assert!(prepared.bytes() > 2 * WRITE_PIECE as u64);
        assert_eq!(prepared.paced(), Duration::ZERO);
        // Without the flag the same file waits for its pace.
        let flag = AtomicBool::new(false);
        let mut writer = snapshots
            .writer(8, 20_001, WritePace::mib_per_second(64))
            .unwrap()
            .stop_pacing_when(&flag);
        for entry in &all {
            writer.push(entry).unwrap();
        }
        assert!(writer.finish().unwrap().paced() > Duration::ZERO);
    }

    #[test]
    fn an_abandoned_writer_or_unpublished_snapshot_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::on_disk(dir.path());
        let all = contacts(20_000);
        let mut writer = snapshots.writer(5, 20_001, WritePace::Unlimited).unwrap();
        for entry in &all {
            writer.push(entry).unwrap();
        }
        drop(writer);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let writer = snapshots.writer(6, 1, WritePace::Unlimited).unwrap();
        drop(writer.finish().unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
