//! Write-ahead log: segment files, record framing, the group-commit writer and the recovery
//! scan (byte-level format: docs/format.md; durability rules: docs/behaviour.md §8).
//!
//! The log knows bytes, not contacts: [`Wal::append`] takes an opaque payload (the store puts a
//! bincode-encoded event in it) and returns its [`Lsn`]; [`Wal::durable`] resolves once that
//! record is on disk under the configured [`FsyncMode`]; [`Wal::open`] replays every record
//! after a snapshot's LSN through a visitor. [`scan`] is the read-only check behind
//! `idrecon check`.
//!
//! # On-disk format (version 1)
//!
//! A log is a directory of *segment* files. All integers are little-endian; every checksum is
//! CRC-32 (IEEE, as computed by `crc32fast`).
//!
//! * **File names**: `{first_lsn:020}.wal`, e.g. `00000000000000000001.wal`: exactly 20 decimal
//!   digits giving the first LSN the segment may contain, then `.wal`. Every other file in the
//!   directory is ignored. Segments are ordered by that number.
//! * **Segment header**, 24 bytes at offset 0:
//!
//!   | offset | size | field                                      |
//!   |--------|------|--------------------------------------------|
//!   | 0      | 8    | magic `b"IDRWAL\r\n"`                      |
//!   | 8      | 4    | format version, `u32` = 1                  |
//!   | 12     | 8    | `first_lsn`, `u64`, equal to the file name |
//!   | 20     | 4    | CRC-32 of bytes 0..20                      |
//!
//! * **Records** follow the header back to back, each 16 bytes of framing plus the payload:
//!
//!   | offset | size  | field                                            |
//!   |--------|-------|--------------------------------------------------|
//!   | 0      | 4     | `len`, `u32`: payload length in bytes, at most [`MAX_PAYLOAD`] |
//!   | 4      | 4     | `crc`, `u32`: CRC-32 of (`lsn` as 8 LE bytes ++ payload)       |
//!   | 8      | 8     | `lsn`, `u64`                                     |
//!   | 16     | `len` | payload                                          |
//!
//! * **LSNs** are consecutive and start at 1: a segment's first record has LSN `first_lsn`, and
//!   every later record, in the same or the next segment, has the previous LSN + 1. The only
//!   gaps allowed are below a snapshot: when a snapshot at `after_lsn` is newer than the end of
//!   the log, the next segment is named `after_lsn + 1`, and a later recovery from that
//!   snapshot accepts the jump because every missing LSN is `<= after_lsn`.
//!
//! # Preallocation (the PostgreSQL rule: WAL segments are zero-filled ahead of use)
//!
//! The active segment may end with **zero bytes after its last record**: the writer keeps
//! between 64 KiB and 1 MiB of zeros written ahead of the records, and writes each batch over
//! them. A batch that only overwrites allocated blocks leaves the file's length, and so its
//! inode, unchanged, so its `fdatasync` writes the data and a cache flush only; appending past
//! the end also wrote the inode, one more disk round trip and one more wait of the writer
//! thread per batch (on ext4 about a third of the fsync time). Real zeros are written, not
//! `fallocate`d: an unwritten extent turns written on first write, which is again a metadata
//! change.
//!
//! Zeros are never a record (a record's LSN is at least 1), so the end of the log is where the
//! zeros start. A closed segment has no zeros: the writer cuts them off (`set_len`, then fsync)
//! before it starts the next segment and when the log is closed, and [`Wal::open`] cuts them
//! off the newest segment (after a crash) without a warning, since nothing was lost. [`scan`]
//! reports nothing for them.
//!
//! # Commit delay (PostgreSQL's `commit_delay` / `commit_siblings`)
//!
//! Each batch costs the writer a fixed amount of CPU beyond its bytes: the `write` and
//! `fdatasync` system calls (in a virtual machine each disk request is also a VM exit), the disk
//! round trips it sleeps through (each a wake-up and a context switch, taken from the request
//! threads on a shared core), and waking the waiters. When the service is busy and writes keep
//! arriving, that cost decides throughput: batches are small (what arrived during one fsync),
//! and the writer takes CPU from the requests that would fill them. So in [`FsyncMode::Batch`],
//! after a batch of at least [`COMMIT_DELAY_MIN_BATCH`] records (evidence of concurrent
//! writers) the writer sleeps before taking the next one, in quarters of
//! [`WalOptions::commit_delay`], for as long as each quarter brings more records, until the
//! oldest queued record has waited the whole delay, unless enough records are queued already.
//! The delay counts from the oldest record's arrival, not from the end of the last fsync:
//! records queued while the writer was in `fdatasync` have waited through it already, and
//! counting from the fsync's end made them wait fsync + delay + fsync (at half load that took
//! the p99 from 2.94 to 2.15 ms with as many fsyncs).
//!
//! A lone writer is never delayed, and the wait ends as soon as the queue holds as many records
//! as the last batch (a fixed set of writers, each waiting for its own record, is all back:
//! `benches/wal.rs`); a write's latency grows by at most the delay.
//! `--commit-delay-us 0` turns it off.
//!
//! # Torn tail versus corruption (docs/behaviour.md §8; the etcd / RocksDB / raft-engine rule)
//!
//! A record is *invalid* when its 16-byte framing is cut short, `len > MAX_PAYLOAD`, the payload
//! runs past the end of the file, the CRC does not match, or the LSN is not the expected one.
//! At the first invalid record of a segment:
//!
//! * if the segment is the **newest** and every byte from there to the end is zero, it is the
//!   end of the log followed by preallocated space (above): nothing is reported;
//! * if the segment is the **newest** and no valid record starts at any later byte offset of the
//!   file, it is a **torn tail** (an interrupted write, or garbage the file system left
//!   after one): [`Wal::open`] truncates the file to that offset, fsyncs it and logs a warning
//!   naming the file and offset; [`scan`] only reports it in [`RecoveryReport::torn_tail`];
//! * otherwise it is **corruption**: [`WalError::Corrupt`] names the file and the byte offset of
//!   the first invalid record, and nothing is modified.
//!
//! A "valid record at a later offset" is searched at every byte offset after the bad one; a
//! candidate's CRC is only computed when its LSN lies in `(last_good, last_good + rest / 16 + 1]`
//! (`rest` = bytes from the bad offset to the end: each lost record takes at least 16 bytes) and
//! its payload fits in the file, so the search stays linear in practice.
//!
//! Segments other than the newest are complete by construction (the writer fsyncs a segment
//! before it creates the next one, in every fsync mode), so they must be valid up to their last
//! byte. A bad segment header is corruption at offset 0, except in the newest segment when the
//! file is shorter than 24 bytes or consists only of zero bytes (the writer crashed while
//! creating it, before any record could be written): then it is a torn tail at offset 0 and
//! `open` rewrites a fresh header.
//!
//! # Group commit
//!
//! One writer thread owns the active segment. [`Wal::append`] frames the record into a shared
//! in-memory buffer under a mutex and wakes the writer; the writer swaps the whole buffer out,
//! writes it with one positioned write over the preallocated zeros, fsyncs once
//! (`File::sync_data`) and publishes the new durable LSN through a `tokio::sync::watch` channel
//! that [`Wal::durable`] waits on. Every write or fsync error is final (PostgreSQL's
//! "fsyncgate" rule: after a failed fsync the kernel may have dropped the dirty pages, so a
//! retry could falsely succeed): the log is marked failed, every waiter past the durable LSN gets
//! [`WalError::Failed`], and nothing more is acknowledged.
//!
//! The writer records the metrics [`crate::metrics::WAL_BYTES_WRITTEN`],
//! [`crate::metrics::WAL_FSYNC_DURATION`] (each `sync_data` of the active segment) and
//! [`crate::metrics::WAL_BATCH_RECORDS`] (records per write).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics as metric;
use crate::storage::{RealFs, Storage, StorageFile};

/// Log sequence number: the position of a record in the log. The first record ever written has
/// LSN 1; 0 means "nothing" (an empty log, or a snapshot taken before any record).
pub type Lsn = u64;

/// Largest payload one record may carry, in bytes (1 MiB). A record header claiming more is
/// invalid; [`Wal::append`] refuses larger payloads with [`WalError::PayloadTooLarge`].
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Segment file magic, the first 8 bytes of every segment.
const MAGIC: &[u8; 8] = b"IDRWAL\r\n";
/// On-disk format version written in every segment header.
const FORMAT_VERSION: u32 = 1;
/// Segment header size in bytes.
const HEADER_LEN: usize = 24;
/// Record framing size in bytes (`len`, `crc`, `lsn`).
const RECORD_HEADER_LEN: usize = 16;
/// Default segment size at which the writer rotates (64 MiB).
const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Zeros the writer keeps written ahead of the active segment's last record, at most
/// (module docs, "Preallocation"): 1 MiB, about 5 000 typical records.
const PREALLOCATE_BYTES: u64 = 1 << 20;
/// The writer preallocates again when fewer zero bytes than this remain after a batch.
const PREALLOCATE_LOW_WATER: u64 = 64 << 10;
/// Default [`WalOptions::commit_delay`]: 800 µs. On one saturated core it cut the CPU per
/// `checkout-mix` request by a quarter against 300 µs, and at half load it keeps the writer's
/// fsyncs, each a few wake-ups that preempt the request thread on a shared core, from raising
/// the p99 (2.25 ms with it, 3.43 ms without; 400 and 1 600 µs did no better).
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_micros(800);
/// [`WalOptions::commit_delay`] applies only after a batch of at least this many records
/// (PostgreSQL's `commit_siblings`): a lone writer, or a light load whose batches hold one to
/// three records, is never delayed.
pub const COMMIT_DELAY_MIN_BATCH: usize = 4;
/// The commit delay is skipped when this many records are queued already: the batch is as
/// large as waiting would make it.
const COMMIT_DELAY_ENOUGH: usize = 64;

/// When an appended record counts as durable (docs/behaviour.md §7 `--fsync`, §8).
///
/// Its text form (`always`, `batch`, `never`: [`FsyncMode::as_str`], [`fmt::Display`],
/// [`std::str::FromStr`], serde) is what `--fsync` and the config file accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Every record gets its own write and fsync; no fsync is shared between records.
    Always,
    /// Group commit (the default): the writer writes everything queued since its last write and
    /// fsyncs once for all of it.
    #[default]
    Batch,
    /// No fsync: a record is durable once written to the OS (it survives a process crash, not a
    /// power loss). Segments are still fsynced on rotation and on [`Wal::close`].
    Never,
}

impl FsyncMode {
    /// Every mode, in the order their names are listed: `always`, `batch`, `never`.
    pub const ALL: [FsyncMode; 3] = [FsyncMode::Always, FsyncMode::Batch, FsyncMode::Never];

    /// The mode's name: `always`, `batch` or `never`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FsyncMode::Always => "always",
            FsyncMode::Batch => "batch",
            FsyncMode::Never => "never",
        }
    }
}

impl fmt::Display for FsyncMode {
    /// Writes [`FsyncMode::as_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that names no [`FsyncMode`] (the names are exact and lowercase).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid fsync mode `{given}`: expected always, batch or never")]
pub struct ParseFsyncModeError {
    /// The text that was given.
    pub given: String,
}

impl std::str::FromStr for FsyncMode {
    type Err = ParseFsyncModeError;

    /// Parses `always`, `batch` or `never`.
    ///
    /// # Errors
    /// [`ParseFsyncModeError`] for any other text, case included (`Batch` is refused).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FsyncMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| ParseFsyncModeError {
                given: s.to_owned(),
            })
    }
}

/// Tuning for [`Wal::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// When a record counts as durable. Default [`FsyncMode::Batch`].
    pub fsync: FsyncMode,
    /// Segment size in bytes at which the writer rotates: before writing a batch, if the active
    /// segment is at least this large (and holds at least one record), it is fsynced and a new
    /// segment is started. A segment may exceed this by one batch. Default 64 MiB.
    pub segment_bytes: u64,
    /// Group-commit delay ([`FsyncMode::Batch`] only; module docs, "Commit delay"): when the
    /// last batch held at least [`COMMIT_DELAY_MIN_BATCH`] records, the writer waits up to this
    /// long before taking the next batch, so more records share its fsync. Zero disables it.
    /// Default [`DEFAULT_COMMIT_DELAY`].
    pub commit_delay: Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            fsync: FsyncMode::default(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            commit_delay: DEFAULT_COMMIT_DELAY,
        }
    }
}

/// Everything that can go wrong in the log.
#[derive(thiserror::Error, Debug)]
pub enum WalError {
    /// A segment holds an invalid record or header that is not a torn tail (docs/behaviour.md
    /// §8): the
    /// log cannot be trusted past `offset`, so recovery refuses to start. `offset` is the byte
    /// offset in `file` of the first invalid record (0 for a bad segment header).
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
    /// could report data durable that is not ("fsyncgate").
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
    #[error("replaying log record {lsn} failed: {message}")]
    Replay {
        /// The record's LSN.
        lsn: Lsn,
        /// The visitor's error, as text.
        message: String,
    },
}

/// What recovery ([`Wal::open`]) or verification ([`scan`]) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Number of segment files scanned.
    pub segments: usize,
    /// Number of records with LSN `> after_lsn` (given to the visitor, for `open`).
    pub records_replayed: u64,
    /// LSN of the last valid record in the log (after cutting a torn tail); if the newest
    /// segment holds no record, its first LSN - 1; 0 when there is no segment.
    pub last_lsn: Lsn,
    /// The torn tail of the newest segment, if any (cut by `open`, only reported by `scan`).
    pub torn_tail: Option<TornTail>,
}

/// A torn tail (docs/behaviour.md §8): bytes at the end of the newest segment from its first
/// invalid record on, with no valid record after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The newest segment file.
    pub file: PathBuf,
    /// Byte offset where the first invalid record starts; the file is cut to this length
    /// (for a torn segment header: 0, and a fresh header is written).
    pub offset: u64,
    /// Number of bytes removed (file length - `offset`).
    pub bytes_cut: u64,
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

/// What [`Wal`] and its writer thread share.
struct Shared {
    /// Where the files are (the real file system, or a test's `FaultFs`).
    storage: Arc<dyn Storage>,
    /// The log directory (for directory fsyncs and new segment paths).
    dir: PathBuf,
    /// Options given to `open`.
    opts: WalOptions,
    /// Records waiting for the writer. A parking_lot mutex, not a tokio one: it is held for a
    /// memcpy and never across an await or I/O.
    queue: Mutex<Queue>,
    /// Wakes the writer when the queue gains records, a roll is requested or the log is
    /// closing.
    work: Condvar,
    /// Wakes [`Wal::roll_segment`] callers when a roll is done or the log failed.
    rolled: Condvar,
    /// Durable LSN and failure flag, published by the writer; `durable()` waits on it.
    durable: watch::Sender<DurableState>,
    /// `durable`'s LSN, mirrored for the check most callers of [`Wal::durable`] need (is it
    /// durable already?): one atomic load instead of a watch subscription and its lock, on the
    /// path of every request that only reads. Written only inside `durable`'s
    /// `send_modify`, after the LSN it mirrors, so it never runs ahead of it.
    durable_lsn: AtomicU64,
    /// All segments, oldest first; the last one is the writer's active segment.
    segments: Mutex<VecDeque<SegmentFile>>,
    /// Writer counters.
    stats: AtomicStats,
}

/// Framed records waiting for the writer.
struct Queue {
    /// Framed records, back to back, exactly as they go to disk.
    buf: Vec<u8>,
    /// End offset in `buf` of every record (record `i` has LSN `first_lsn + i`).
    ends: Vec<usize>,
    /// LSN of the first record in `buf` (meaningless while `buf` is empty).
    first_lsn: Lsn,
    /// When the first record in `buf` was queued (`None` while `buf` is empty): the commit
    /// delay counts from it.
    oldest: Option<Instant>,
    /// LSN the next `append` gets.
    next_lsn: Lsn,
    /// `close` was called: the writer drains `buf` and exits.
    closing: bool,
    /// The writer failed; `append` refuses.
    failed: bool,
    /// [`Wal::roll_segment`] asked the writer to start a new segment.
    roll_requested: bool,
    /// Rolls completed so far.
    rolls_done: u64,
}

/// Published by the writer through the watch channel.
#[derive(Clone, Copy, Debug)]
struct DurableState {
    /// Every record with LSN `<= lsn` is durable.
    lsn: Lsn,
    /// The writer failed; `lsn` will never advance again.
    failed: bool,
}

#[derive(Default)]
struct AtomicStats {
    batches: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    fsyncs: AtomicU64,
}

/// A segment file: its first LSN (from the name) and path.
#[derive(Clone, Debug)]
struct SegmentFile {
    first_lsn: Lsn,
    path: PathBuf,
}

impl Wal {
    /// Opens the log in `dir` (creating the directory if missing), recovers it and starts the
    /// writer thread.
    ///
    /// Recovery scans every segment in LSN order and calls `visit(lsn, payload)` for every
    /// record with `lsn > after_lsn`, in LSN order; records `<= after_lsn` are verified but not
    /// visited (a snapshot at `after_lsn` covers them). A torn tail of the newest segment is cut
    /// (truncated, fsynced, and logged with `tracing::warn!` naming file and offset) and
    /// reported in [`RecoveryReport::torn_tail`] (docs/behaviour.md §8, module docs).
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
    pub fn open<E: fmt::Display>(
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
    pub fn open_with<E: fmt::Display>(
        storage: Arc<dyn Storage>,
        dir: &Path,
        opts: WalOptions,
        after_lsn: Lsn,
        visit: impl FnMut(Lsn, &[u8]) -> Result<(), E>,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        let fs = &*storage;
        fs.create_dir_all(dir).map_err(io_err(dir))?;
        // The directory's own entry must survive a crash too: without this fsync of the parent,
        // a new `DIR/wal` (and every acknowledged record in it) could vanish on power loss.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(fs, parent)?;
        }
        let segments = list_segments(fs, dir)?;
        let report = recover(fs, &segments, after_lsn, Repair::Cut, visit)?;

        let next_lsn = report.last_lsn.max(after_lsn).saturating_add(1);
        let mut segments: VecDeque<SegmentFile> = segments.into();
        let active = match segments.back() {
            Some(newest) if report.last_lsn >= after_lsn => {
                // Recovery has cut any torn tail and released any preallocated zeros: the file
                // ends with its last record (or its header).
                let mut file = fs
                    .open_write(&newest.path, false)
                    .map_err(io_err(&newest.path))?;
                let size = file.len().map_err(io_err(&newest.path))?;
                // Recovered records may be in the page cache only (a crash between write and
                // fsync, or --fsync never): they are about to be reported durable, so make
                // them so first.
                file.sync_all().map_err(io_err(&newest.path))?;
                sync_dir(fs, dir)?;
                ActiveSegment {
                    file,
                    path: newest.path.clone(),
                    first_lsn: newest.first_lsn,
                    size,
                    allocated: size,
                }
            }
            _ => {
                let active = create_segment(fs, dir, next_lsn)?;
                segments.push_back(SegmentFile {
                    first_lsn: next_lsn,
                    path: active.path.clone(),
                });
                active
            }
        };

        let wal = Wal::start(Arc::clone(&storage), dir, opts, next_lsn, segments, active)?;
        Ok((wal, report))
    }

    /// Starts the writer thread on `active` (the last of `segments`); the next append gets
    /// `next_lsn`, and everything below it counts as durable.
    fn start(
        storage: Arc<dyn Storage>,
        dir: &Path,
        opts: WalOptions,
        next_lsn: Lsn,
        segments: VecDeque<SegmentFile>,
        active: ActiveSegment,
    ) -> Result<Wal, WalError> {
        let recovered = next_lsn.saturating_sub(1);
        let (durable, _) = watch::channel(DurableState {
            lsn: recovered,
            failed: false,
        });
        let shared = Arc::new(Shared {
            storage,
            dir: dir.to_path_buf(),
            opts,
            queue: Mutex::new(Queue {
                buf: Vec::new(),
                ends: Vec::new(),
                first_lsn: next_lsn,
                oldest: None,
                next_lsn,
                closing: false,
                failed: false,
                roll_requested: false,
                rolls_done: 0,
            }),
            work: Condvar::new(),
            rolled: Condvar::new(),
            durable,
            durable_lsn: AtomicU64::new(recovered),
            segments: Mutex::new(segments),
            stats: AtomicStats::default(),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            active,
            zeros: vec![0; PREALLOCATE_BYTES as usize],
            meters: WriterMetrics::default(),
            dirty: false,
        };
        let handle = std::thread::Builder::new()
            .name("idrecon-wal".to_owned())
            .spawn(move || writer.run())
            .map_err(io_err(dir))?;
        Ok(Wal {
            shared,
            writer: Mutex::new(Some(handle)),
        })
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
        // Checked above: the length fits in u32.
        let len = payload.len() as u32;
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
        let crc = record_crc(lsn, payload);
        q.buf.reserve(RECORD_HEADER_LEN + payload.len());
        q.buf.extend_from_slice(&len.to_le_bytes());
        q.buf.extend_from_slice(&crc.to_le_bytes());
        q.buf.extend_from_slice(&lsn.to_le_bytes());
        q.buf.extend_from_slice(payload);
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
    /// docs/behaviour.md §6.7, §6.8).
    /// Records queued before the call are written (and fsynced, except with
    /// [`FsyncMode::Never`]) first. Returns the LSN the new segment starts at. An active segment
    /// that holds no record is kept as it is.
    ///
    /// Blocking: waits for the writer thread.
    ///
    /// # Errors
    /// [`WalError::Failed`] if the writer failed before or during the roll, [`WalError::Closed`]
    /// after `close`.
    pub fn roll_segment(&self) -> Result<Lsn, WalError> {
        let mut q = self.shared.queue.lock();
        if q.failed {
            return Err(WalError::Failed);
        }
        if q.closing {
            return Err(WalError::Closed);
        }
        let next_lsn = q.next_lsn;
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
        Ok(next_lsn)
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

/// Verifies the log in `dir` without modifying anything (`idrecon check`, docs/behaviour.md §7).
///
/// Applies exactly the rules of [`Wal::open`] with snapshot LSN `after_lsn`:
/// `Ok(report)` when `open` would start, with a torn tail that `open` would cut reported in
/// [`RecoveryReport::torn_tail`] and `records_replayed` counting the records `open` would
/// replay. A missing directory is an empty, valid log.
///
/// # Errors
/// [`WalError::Corrupt`] (file and byte offset) or [`WalError::Gap`] for anything `open` would
/// refuse; [`WalError::Io`] if a file cannot be read.
pub fn scan(dir: &Path, after_lsn: Lsn) -> Result<RecoveryReport, WalError> {
    replay_read_only(
        dir,
        after_lsn,
        |_, _| Ok::<(), std::convert::Infallible>(()),
    )
}

/// Like [`scan`], but also passes every record with LSN `> after_lsn` to `visit` in order, as
/// [`Wal::open`] would, without modifying any file and without starting a writer (`idrecon
/// export` and `check`). A torn tail is reported, not cut.
///
/// # Errors
/// As [`scan`], plus [`WalError::Replay`] when `visit` fails.
pub fn replay_read_only<E: fmt::Display>(
    dir: &Path,
    after_lsn: Lsn,
    visit: impl FnMut(Lsn, &[u8]) -> Result<(), E>,
) -> Result<RecoveryReport, WalError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(RecoveryReport {
                segments: 0,
                records_replayed: 0,
                last_lsn: 0,
                torn_tail: None,
            });
        }
        Err(e) => return Err(io_err(dir)(e)),
        Ok(_) => {}
    }
    let segments = list_segments(&RealFs, dir)?;
    recover(&RealFs, &segments, after_lsn, Repair::ReadOnly, visit)
}

// ---------------------------------------------------------------------------------------------
// Writer thread
// ---------------------------------------------------------------------------------------------

/// The segment the writer appends to.
struct ActiveSegment {
    file: Box<dyn StorageFile>,
    path: PathBuf,
    first_lsn: Lsn,
    /// End of the last record written, in bytes: where the next batch goes.
    size: u64,
    /// File length in bytes: `size` plus the preallocated zeros after it.
    allocated: u64,
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    active: ActiveSegment,
    /// [`PREALLOCATE_BYTES`] zero bytes, the source of every preallocation write.
    zeros: Vec<u8>,
    /// The writer's metric handles, fetched once (a `metrics` macro looks its key up in the
    /// registry on every call).
    meters: WriterMetrics,
    /// Bytes written to `active` since its last fsync.
    dirty: bool,
}

/// Handles of [`crate::metrics::WAL_BATCH_RECORDS`], [`crate::metrics::WAL_FSYNC_DURATION`]
/// and [`crate::metrics::WAL_BYTES_WRITTEN`], from the recorder installed when the log opens.
/// The log never installs one: the binary does, before it opens the store; without a recorder
/// (a test, a benchmark) the handles record nothing.
struct WriterMetrics {
    batch_records: ::metrics::Histogram,
    fsync_seconds: ::metrics::Histogram,
    bytes_written: ::metrics::Counter,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            batch_records: ::metrics::histogram!(metric::WAL_BATCH_RECORDS),
            fsync_seconds: ::metrics::histogram!(metric::WAL_FSYNC_DURATION),
            bytes_written: ::metrics::counter!(metric::WAL_BYTES_WRITTEN),
        }
    }
}

/// The commit delay the writer applies before its next batch under `opts` (module docs,
/// "Commit delay"): [`WalOptions::commit_delay`] in [`FsyncMode::Batch`]; `None` in the other
/// modes or when the delay is zero.
fn commit_delay_for(opts: &WalOptions) -> Option<Duration> {
    (opts.fsync == FsyncMode::Batch && !opts.commit_delay.is_zero()).then_some(opts.commit_delay)
}

/// Whether the writer waits before taking the next batch, given the size of the last batch and
/// the records queued now (module docs, "Commit delay"): only after a batch of at least
/// [`COMMIT_DELAY_MIN_BATCH`] records, and not when `COMMIT_DELAY_ENOUGH` are queued already,
/// nor when exactly the last batch's count is queued (see [`commit_delay_continues`]).
fn commit_delay_applies(last_batch: usize, queued: usize) -> bool {
    last_batch >= COMMIT_DELAY_MIN_BATCH && batch_still_filling(last_batch, queued)
}

/// Whether waiting could still grow the next batch: fewer than `COMMIT_DELAY_ENOUGH` records
/// are queued, and not exactly as many as the last batch held (a fixed set of writers, each
/// waiting for its own record, is all back).
fn batch_still_filling(last_batch: usize, queued: usize) -> bool {
    queued != last_batch && queued < COMMIT_DELAY_ENOUGH
}

/// Whether the commit delay goes on after a slice that took the queue from `before` to `now`
/// records: only while records keep arriving, fewer than `COMMIT_DELAY_ENOUGH` are queued,
/// and the queue does not hold exactly as many records as the last batch. A slice that brings
/// nothing ends it (the load has paused), and so does a queue the size of the last batch: a
/// fixed set of writers, each waiting for its own record, is all back, and waiting longer would
/// only add latency (`benches/wal.rs`: 32 writer threads).
fn commit_delay_continues(last_batch: usize, before: usize, now: usize) -> bool {
    now > before && batch_still_filling(last_batch, now)
}

/// How much longer a commit delay of `delay` that began at `started` may last at `now`, when
/// the oldest queued record was queued at `oldest`: the delay counts from that record's arrival
/// (records queued during the last fsync have waited through it already), or from `started`
/// if the queue was empty then. So the delay adds at most `delay` to any record's latency, and
/// the writer sleeps at most `delay` (module docs, "Commit delay").
fn commit_delay_left(
    delay: Duration,
    started: Instant,
    oldest: Option<Instant>,
    now: Instant,
) -> Duration {
    let from = oldest.map_or(started, |oldest| oldest.min(started));
    delay.saturating_sub(now.saturating_duration_since(from))
}

/// Marks the log failed if the writer thread unwinds, so no `durable()` waits forever.
struct UnwindGuard(Arc<Shared>);

impl Drop for UnwindGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            mark_failed(&self.0);
        }
    }
}

impl Writer {
    fn run(mut self) {
        let _guard = UnwindGuard(Arc::clone(&self.shared));
        let mut batch = Vec::new();
        let mut ends = Vec::new();
        let opts = self.shared.opts;
        let mut last_batch = 0;
        let commit_delay = commit_delay_for(&opts);
        loop {
            if let Some(delay) = commit_delay {
                self.commit_wait(delay, last_batch);
            }
            let (first_lsn, roll, next_lsn) = {
                let mut q = self.shared.queue.lock();
                while q.buf.is_empty() && !q.closing && !q.failed && !q.roll_requested {
                    self.shared.work.wait(&mut q);
                }
                last_batch = q.ends.len();
                if q.failed || (q.buf.is_empty() && !q.roll_requested) {
                    break;
                }
                std::mem::swap(&mut q.buf, &mut batch);
                std::mem::swap(&mut q.ends, &mut ends);
                let roll = std::mem::take(&mut q.roll_requested);
                q.oldest = None;
                (q.first_lsn, roll, q.next_lsn)
            };
            let mut result = if ends.is_empty() {
                Ok(())
            } else {
                match self.shared.opts.fsync {
                    FsyncMode::Always => self.write_each(first_lsn, &batch, &ends),
                    FsyncMode::Batch | FsyncMode::Never => {
                        self.write_batch(first_lsn, &batch, &ends)
                    }
                }
            };
            batch.clear();
            ends.clear();
            if roll && result.is_ok() {
                result = self.rotate(next_lsn, true);
            }
            if let Err(e) = result {
                self.fail(e);
                return;
            }
            if roll {
                self.shared.queue.lock().rolls_done += 1;
                self.shared.rolled.notify_all();
            }
        }
        // Closing: make everything written durable in every mode, and leave the segment ending
        // with its last record.
        if !self.shared.queue.lock().failed
            && let Err(e) = self
                .release_preallocation()
                .and_then(|()| if self.dirty { self.sync() } else { Ok(()) })
        {
            self.fail(e);
        }
    }

    /// Cuts the preallocated zeros off the active segment (`set_len` to the end of its last
    /// record), so that a closed segment ends with its last record; the caller fsyncs.
    fn release_preallocation(&mut self) -> Result<(), WalError> {
        let active = &mut self.active;
        if active.allocated > active.size {
            active
                .file
                .set_len(active.size)
                .map_err(io_err(&active.path))?;
            active.allocated = active.size;
            self.dirty = true;
        }
        Ok(())
    }

    /// The commit delay (module docs, "Commit delay"): after a batch of at least
    /// [`COMMIT_DELAY_MIN_BATCH`] records, waits in quarters of `delay` while each brings more
    /// records, until the oldest queued record has waited the whole delay
    /// ([`commit_delay_left`]).
    fn commit_wait(&self, delay: Duration, last_batch: usize) {
        let queued = || {
            let q = self.shared.queue.lock();
            (q.ends.len(), q.oldest)
        };
        let started = Instant::now();
        let (mut before, mut oldest) = queued();
        if !commit_delay_applies(last_batch, before) {
            return;
        }
        let slice = (delay / 4).max(Duration::from_micros(25));
        loop {
            let left = commit_delay_left(delay, started, oldest, Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(slice.min(left));
            let now;
            (now, oldest) = queued();
            if !commit_delay_continues(last_batch, before, now) {
                return;
            }
            before = now;
        }
    }

    /// Batch / Never: one write (and in Batch one fsync) for every queued record.
    fn write_batch(
        &mut self,
        first_lsn: Lsn,
        batch: &[u8],
        ends: &[usize],
    ) -> Result<(), WalError> {
        let records = ends.len() as u64;
        self.rotate_if_full(first_lsn)?;
        self.meters.batch_records.record(records as f64);
        self.write(batch, records)?;
        if self.shared.opts.fsync != FsyncMode::Never {
            self.sync()?;
        }
        self.publish(first_lsn + records - 1);
        Ok(())
    }

    /// Always: every record gets its own write and fsync, published one by one.
    fn write_each(&mut self, first_lsn: Lsn, batch: &[u8], ends: &[usize]) -> Result<(), WalError> {
        let mut start = 0;
        for (i, &end) in ends.iter().enumerate() {
            let lsn = first_lsn + i as u64;
            self.rotate_if_full(lsn)?;
            self.meters.batch_records.record(1.0);
            self.write(batch.get(start..end).unwrap_or_default(), 1)?;
            self.sync()?;
            self.publish(lsn);
            start = end;
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8], records: u64) -> Result<(), WalError> {
        self.dirty = true;
        let active = &mut self.active;
        active
            .file
            .write_all_at(active.size, bytes)
            .map_err(io_err(&active.path))?;
        active.size += bytes.len() as u64;
        active.allocated = active.allocated.max(active.size);
        if active.allocated - active.size < PREALLOCATE_LOW_WATER {
            // Zeros ahead of the records: the next batches overwrite allocated blocks, so their
            // fdatasync writes data only, not the inode (module docs, "Preallocation"). This
            // batch's fsync makes the new length durable once.
            let zeros = PREALLOCATE_BYTES - (active.allocated - active.size);
            active
                .file
                .write_all_at(active.allocated, &self.zeros[..zeros as usize])
                .map_err(io_err(&active.path))?;
            active.allocated += zeros;
        }
        let stats = &self.shared.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.records.fetch_add(records, Ordering::Relaxed);
        stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.meters.bytes_written.increment(bytes.len() as u64);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WalError> {
        let started = Instant::now();
        self.active
            .file
            .sync_data()
            .map_err(io_err(&self.active.path))?;
        self.meters
            .fsync_seconds
            .record(started.elapsed().as_secs_f64());
        self.dirty = false;
        self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes `lsn` as durable, unless the log has failed (its durable LSN is frozen).
    fn publish(&self, lsn: Lsn) {
        self.shared.durable.send_modify(|d| {
            if !d.failed {
                d.lsn = d.lsn.max(lsn);
                self.shared.durable_lsn.store(d.lsn, Ordering::Release);
            }
        });
    }

    /// Before writing the record `next_lsn`: if the active segment has reached
    /// `segment_bytes` and holds a record, fsync it and start segment `next_lsn`.
    fn rotate_if_full(&mut self, next_lsn: Lsn) -> Result<(), WalError> {
        self.rotate(next_lsn, false)
    }

    /// Starts segment `next_lsn` when the active segment holds a record and either has reached
    /// `segment_bytes` or `force` is set ([`Wal::roll_segment`]).
    fn rotate(&mut self, next_lsn: Lsn, force: bool) -> Result<(), WalError> {
        let full = force || self.active.size >= self.shared.opts.segment_bytes;
        if !full || self.active.first_lsn >= next_lsn {
            return Ok(());
        }
        // Fsync in every mode, so only the newest segment can ever have a torn tail (or
        // preallocated zeros).
        self.release_preallocation()?;
        self.sync()?;
        let next = create_segment(&*self.shared.storage, &self.shared.dir, next_lsn)?;
        self.shared
            .stats
            .bytes
            .fetch_add(HEADER_LEN as u64, Ordering::Relaxed);
        self.meters.bytes_written.increment(HEADER_LEN as u64);
        self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            closed = %self.active.path.display(),
            size = self.active.size,
            new = %next.path.display(),
            "rotated log segment"
        );
        self.shared.segments.lock().push_back(SegmentFile {
            first_lsn: next_lsn,
            path: next.path.clone(),
        });
        self.active = next;
        self.dirty = false;
        Ok(())
    }

    fn fail(&self, error: WalError) {
        tracing::error!(%error, "log writer failed; no more writes will be acknowledged");
        mark_failed(&self.shared);
    }
}

/// Marks the log failed: appends refuse, queued records are dropped, and every `durable()`
/// waiter past the durable LSN gets `Failed`. The durable LSN never moves again.
///
/// The failure is published ([`Wal::is_failed`], so `/healthz`) under the queue lock, together
/// with the flag `append` checks: a caller that gets [`WalError::Failed`] from `append` and
/// answers 503 finds the service unhealthy already (otherwise a 503 could go out while
/// `/healthz` still says healthy), and an `append` after `is_failed` returned true is refused.
/// Lock order: queue, then the watch channel; nothing takes them the other way round.
fn mark_failed(shared: &Shared) {
    {
        let mut q = shared.queue.lock();
        shared.durable.send_modify(|d| d.failed = true);
        q.failed = true;
        q.buf.clear();
        q.ends.clear();
    }
    shared.work.notify_all();
    shared.rolled.notify_all();
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(fs: &dyn Storage, dir: &Path) -> Result<(), WalError> {
    fs.sync_dir(dir).map_err(io_err(dir))
}

fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

/// The first LSN encoded in a segment file name, or `None` if the name is not
/// `{20 digits}.wal`.
fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment files in `dir`, ordered by first LSN.
fn list_segments(fs: &dyn Storage, dir: &Path) -> Result<Vec<SegmentFile>, WalError> {
    let mut segments = Vec::new();
    for name in fs.list_files(dir).map_err(io_err(dir))? {
        let Some(first_lsn) = parse_segment_name(&name) else {
            continue;
        };
        segments.push(SegmentFile {
            first_lsn,
            path: dir.join(name),
        });
    }
    segments.sort_by_key(|s| s.first_lsn);
    Ok(segments)
}

/// Creates segment `first_lsn` in `dir`: header written, file fsynced, directory fsynced.
fn create_segment(fs: &dyn Storage, dir: &Path, first_lsn: Lsn) -> Result<ActiveSegment, WalError> {
    let path = segment_path(dir, first_lsn);
    let mut file = fs.open_write(&path, true).map_err(io_err(&path))?;
    file.write_all_at(0, &encode_header(first_lsn))
        .and_then(|()| file.sync_all())
        .map_err(io_err(&path))?;
    sync_dir(fs, dir)?;
    Ok(ActiveSegment {
        file,
        path,
        first_lsn,
        size: HEADER_LEN as u64,
        allocated: HEADER_LEN as u64,
    })
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

fn encode_header(first_lsn: Lsn) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header (at least `HEADER_LEN` bytes of `data`) against the file name's
/// first LSN; `Err(reason)` if it is invalid.
fn check_header(data: &[u8], name_lsn: Lsn) -> Result<(), String> {
    let (Some(magic), Some(version), Some(first_lsn), Some(crc)) = (
        data.get(0..8),
        le_u32(data, 8),
        le_u64(data, 12),
        le_u32(data, 20),
    ) else {
        return Err("segment header truncated".to_owned());
    };
    if magic != MAGIC {
        return Err("bad magic: not an idrecon log segment".to_owned());
    }
    if crc32fast::hash(data.get(0..20).unwrap_or_default()) != crc {
        return Err("segment header crc mismatch".to_owned());
    }
    if version != FORMAT_VERSION {
        return Err(format!("unsupported log format version {version}"));
    }
    if first_lsn != name_lsn {
        return Err(format!(
            "segment header says first LSN {first_lsn}, file name says {name_lsn}"
        ));
    }
    Ok(())
}

fn record_crc(lsn: Lsn, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn le_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    bytes.try_into().ok().map(u32::from_le_bytes)
}

fn le_u64(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    bytes.try_into().ok().map(u64::from_le_bytes)
}

/// A record read from a segment: its LSN, payload, and total size (framing + payload).
#[derive(Debug)]
struct Record<'a> {
    lsn: Lsn,
    payload: &'a [u8],
    size: usize,
}

/// Reads the record framed at `off`, without checking CRC or LSN; `Err(reason)` if the framing
/// is cut short, claims more than `MAX_PAYLOAD` or runs past the end of `data`.
fn read_record(data: &[u8], off: usize) -> Result<(Record<'_>, u32), String> {
    let rest = data.len().saturating_sub(off);
    let (Some(len), Some(crc), Some(lsn)) = (
        le_u32(data, off),
        le_u32(data, off + 4),
        le_u64(data, off + 8),
    ) else {
        return Err(format!(
            "record header truncated ({rest} of {RECORD_HEADER_LEN} bytes)"
        ));
    };
    let len = len as usize;
    if len > MAX_PAYLOAD {
        return Err(format!(
            "record length {len} exceeds the maximum of {MAX_PAYLOAD} bytes"
        ));
    }
    let start = off + RECORD_HEADER_LEN;
    let Some(payload) = data.get(start..start + len) else {
        return Err(format!(
            "record of {len} payload bytes runs past the end of the file ({} bytes left)",
            rest.saturating_sub(RECORD_HEADER_LEN)
        ));
    };
    Ok((
        Record {
            lsn,
            payload,
            size: RECORD_HEADER_LEN + len,
        },
        crc,
    ))
}

/// Validates the record at `off`, which must carry LSN `expected`.
fn check_record(data: &[u8], off: usize, expected: Lsn) -> Result<Record<'_>, String> {
    let (record, crc) = read_record(data, off)?;
    if record_crc(record.lsn, record.payload) != crc {
        return Err("crc mismatch".to_owned());
    }
    if record.lsn != expected {
        return Err(format!(
            "record has LSN {}, expected {expected}",
            record.lsn
        ));
    }
    Ok(record)
}

/// Searches every byte offset after `bad` for a valid record with an LSN after `last_good`
/// (module docs, "Torn tail versus corruption"); returns its offset.
fn valid_record_after(data: &[u8], bad: usize, last_good: Lsn) -> Option<usize> {
    let rest = data.len().saturating_sub(bad) as u64;
    let max_lsn = last_good.saturating_add(rest / RECORD_HEADER_LEN as u64 + 1);
    let last_start = data.len().checked_sub(RECORD_HEADER_LEN)?;
    (bad + 1..=last_start).find(|&off| {
        let Some(lsn) = le_u64(data, off + 8) else {
            return false;
        };
        if lsn <= last_good || lsn > max_lsn {
            return false;
        }
        match read_record(data, off) {
            Ok((record, crc)) => record_crc(record.lsn, record.payload) == crc,
            Err(_) => false,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Recovery scan
// ---------------------------------------------------------------------------------------------

/// Whether recovery may modify files.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repair {
    /// `open`: cut a torn tail.
    Cut,
    /// `scan`: report only.
    ReadOnly,
}

/// How a segment ends.
enum SegmentEnd {
    /// Valid up to its last byte.
    Clean,
    /// Newest segment with a torn tail from this offset on.
    TornTail(usize),
    /// Newest segment whose last record is followed by zero bytes only, from this offset on:
    /// space the writer preallocated (module docs, "Preallocation"), not a torn tail.
    Preallocated(usize),
    /// Newest segment whose header is cut short or all zeros: rewrite the header.
    TornHeader,
}

/// Result of validating one segment.
struct SegmentScan {
    /// End offset of the last valid record (`HEADER_LEN` if none; 0 for a torn header).
    valid_end: usize,
    /// LSN the next record after this segment must have.
    next_lsn: Lsn,
    end: SegmentEnd,
}

/// Validates one segment whose name says `first_lsn` (module docs, "Torn tail versus
/// corruption").
fn scan_segment(
    path: &Path,
    first_lsn: Lsn,
    data: &[u8],
    newest: bool,
) -> Result<SegmentScan, WalError> {
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if let Err(reason) = check_header(data, first_lsn) {
        if newest && (data.len() < HEADER_LEN || data.iter().all(|&b| b == 0)) {
            return Ok(SegmentScan {
                valid_end: 0,
                next_lsn: first_lsn,
                end: SegmentEnd::TornHeader,
            });
        }
        return Err(corrupt(0, reason));
    }
    let mut off = HEADER_LEN;
    let mut expected = first_lsn;
    while off < data.len() {
        match check_record(data, off, expected) {
            Ok(record) => {
                off += record.size;
                expected = expected.saturating_add(1);
            }
            Err(reason) => {
                if !newest {
                    return Err(corrupt(
                        off,
                        format!("{reason} (in a segment that is not the newest)"),
                    ));
                }
                if data[off..].iter().all(|&b| b == 0) {
                    return Ok(SegmentScan {
                        valid_end: off,
                        next_lsn: expected,
                        end: SegmentEnd::Preallocated(off),
                    });
                }
                if let Some(later) = valid_record_after(data, off, expected.saturating_sub(1)) {
                    return Err(corrupt(
                        off,
                        format!("{reason} (a valid record follows at byte offset {later})"),
                    ));
                }
                return Ok(SegmentScan {
                    valid_end: off,
                    next_lsn: expected,
                    end: SegmentEnd::TornTail(off),
                });
            }
        }
    }
    Ok(SegmentScan {
        valid_end: off,
        next_lsn: expected,
        end: SegmentEnd::Clean,
    })
}

/// Validates `segments` (ordered by first LSN) as one log for a snapshot at `after_lsn`,
/// visiting records `> after_lsn` segment by segment (each segment is validated before any of
/// its records is visited), and cuts a torn tail when `repair` is `Cut`.
fn recover<E: fmt::Display>(
    fs: &dyn Storage,
    segments: &[SegmentFile],
    after_lsn: Lsn,
    repair: Repair,
    mut visit: impl FnMut(Lsn, &[u8]) -> Result<(), E>,
) -> Result<RecoveryReport, WalError> {
    let mut report = RecoveryReport {
        segments: segments.len(),
        records_replayed: 0,
        last_lsn: 0,
        torn_tail: None,
    };
    let first_needed = after_lsn.saturating_add(1);
    let mut next_lsn: Option<Lsn> = None;
    // One buffer for every segment: reading a large log into fresh memory per segment cost a
    // page fault per 4 KiB, which slowed replay.
    let mut data: Vec<u8> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let path = &segment.path;
        let newest = i + 1 == segments.len();
        if segment.first_lsn == 0 {
            return Err(WalError::Corrupt {
                file: path.clone(),
                offset: 0,
                reason: "segment name gives first LSN 0, but LSNs start at 1".to_owned(),
            });
        }
        let expected = next_lsn.unwrap_or(first_needed);
        let continues = match next_lsn {
            None => segment.first_lsn <= first_needed,
            // A jump is allowed only inside the snapshot-covered range (module docs, "LSNs").
            Some(n) => {
                segment.first_lsn == n
                    || (segment.first_lsn > n && segment.first_lsn <= first_needed)
            }
        };
        if !continues {
            return Err(WalError::Gap {
                file: path.clone(),
                expected,
                found: segment.first_lsn,
            });
        }

        data.clear();
        fs.open_read(path)
            .and_then(|mut file| file.read_to_end(&mut data))
            .map_err(io_err(path))?;
        let scanned = scan_segment(path, segment.first_lsn, &data, newest)?;

        let mut off = HEADER_LEN;
        while off < scanned.valid_end {
            let Ok((record, _)) = read_record(&data, off) else {
                break;
            };
            if record.lsn > after_lsn {
                visit(record.lsn, record.payload).map_err(|e| WalError::Replay {
                    lsn: record.lsn,
                    message: e.to_string(),
                })?;
                report.records_replayed += 1;
            }
            off += record.size;
        }
        next_lsn = Some(scanned.next_lsn);

        // Where the newest segment is cut (only when `repair` is `Cut`), and whether what goes
        // is a torn tail (reported, with a warning) or preallocated zeros (silently).
        let (cut_at, torn, header) = match scanned.end {
            SegmentEnd::Clean => continue,
            SegmentEnd::Preallocated(offset) => (offset, false, None),
            SegmentEnd::TornTail(offset) => (offset, true, None),
            SegmentEnd::TornHeader => (0, true, Some(segment.first_lsn)),
        };
        if repair == Repair::Cut {
            cut_newest(fs, path, cut_at as u64, header)?;
        }
        if torn {
            let tail = TornTail {
                file: path.clone(),
                offset: cut_at as u64,
                bytes_cut: (data.len() - cut_at) as u64,
            };
            if repair == Repair::Cut {
                tracing::warn!(
                    file = %path.display(),
                    offset = tail.offset,
                    bytes_cut = tail.bytes_cut,
                    "cut torn tail of the newest log segment (docs/behaviour.md §8)"
                );
            }
            report.torn_tail = Some(tail);
        }
    }
    report.last_lsn = next_lsn.map_or(0, |n| n - 1);
    Ok(report)
}

/// Truncates the newest segment at `path` to `offset` (the end of its last valid record: a torn
/// tail or preallocated zeros go) and fsyncs it; with `header`, the segment's header was torn:
/// the file is cut to nothing and a fresh header for that first LSN is written. The writer
/// preallocates again as it appends.
fn cut_newest(
    fs: &dyn Storage,
    path: &Path,
    offset: u64,
    header: Option<Lsn>,
) -> Result<(), WalError> {
    let mut file = fs.open_write(path, false).map_err(io_err(path))?;
    file.set_len(offset).map_err(io_err(path))?;
    if let Some(first_lsn) = header {
        file.write_all_at(0, &encode_header(first_lsn))
            .map_err(io_err(path))?;
    }
    file.sync_all().map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames one record exactly as `append` does.
    fn frame(lsn: Lsn, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&record_crc(lsn, payload).to_le_bytes());
        out.extend_from_slice(&lsn.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A segment image starting at `first_lsn` with the given payloads; returns the bytes and
    /// each record's start offset.
    fn segment(first_lsn: Lsn, payloads: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let mut data = encode_header(first_lsn).to_vec();
        let mut offsets = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            offsets.push(data.len());
            data.extend(frame(first_lsn + i as u64, p));
        }
        (data, offsets)
    }

    fn corrupt_offset(result: Result<SegmentScan, WalError>) -> u64 {
        match result {
            Err(WalError::Corrupt { offset, .. }) => offset,
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("expected Corrupt, got Ok"),
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(42);
        assert_eq!(&h[0..8], b"IDRWAL\r\n");
        assert_eq!(check_header(&h, 42), Ok(()));
        assert!(
            check_header(&h, 43)
                .unwrap_err()
                .contains("file name says 43")
        );
        for i in 0..HEADER_LEN {
            let mut bad = h;
            bad[i] ^= 0x01;
            assert!(check_header(&bad, 42).is_err(), "flip at byte {i} accepted");
        }
        assert!(check_header(&h[..23], 42).is_err());
        // A version-2 header with a correct CRC is refused by version, not CRC.
        let mut v2 = h;
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&v2[0..20]);
        v2[20..24].copy_from_slice(&crc.to_le_bytes());
        assert!(check_header(&v2, 42).unwrap_err().contains("version 2"));
    }

    #[test]
    fn segment_names_are_twenty_digits_dot_wal() {
        assert_eq!(parse_segment_name("00000000000000000001.wal"), Some(1));
        assert_eq!(
            segment_path(Path::new("/d"), 1234),
            Path::new("/d/00000000000000001234.wal")
        );
        assert_eq!(
            parse_segment_name("18446744073709551615.wal"),
            Some(u64::MAX)
        );
        for other in [
            "1.wal",
            "0000000000000000001.wal",
            "00000000000000000001.wal.tmp",
            "00000000000000000001.WAL",
            "+0000000000000000001.wal",
            "99999999999999999999.wal",
            "snapshot-00000000000000000001",
        ] {
            assert_eq!(parse_segment_name(other), None, "{other}");
        }
    }

    #[test]
    fn record_checks_name_each_kind_of_damage() {
        let rec = frame(7, b"hello");
        let mut data = vec![0u8; 3];
        data.extend(&rec);
        assert_eq!(check_record(&data, 3, 7).map(|r| r.size).ok(), Some(21));
        assert!(
            check_record(&data, 3, 8)
                .unwrap_err()
                .contains("expected 8")
        );
        assert!(
            check_record(&data[..3 + 15], 3, 7)
                .unwrap_err()
                .contains("truncated")
        );
        assert!(
            check_record(&data[..3 + 20], 3, 7)
                .unwrap_err()
                .contains("runs past")
        );
        let mut flipped = data.clone();
        flipped[3 + 17] ^= 0x80;
        assert_eq!(
            check_record(&flipped, 3, 7).err().as_deref(),
            Some("crc mismatch")
        );
        let mut huge = data.clone();
        huge[3..7].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert!(check_record(&huge, 3, 7).unwrap_err().contains("exceeds"));
        // A maximal payload is valid.
        let big = vec![0xAB; MAX_PAYLOAD];
        assert!(check_record(&frame(1, &big), 0, 1).is_ok());
    }

    #[test]
    fn valid_record_after_finds_misaligned_records_and_ignores_noise() {
        let (mut data, offsets) = segment(1, &[b"aaaa", b"bbbb", b"cccc"]);
        // Record 2 damaged: record 3 (LSN 3) is found after it.
        data[offsets[1] + 17] ^= 1;
        assert_eq!(valid_record_after(&data, offsets[1], 1), Some(offsets[2]));
        // LSNs at or below last_good do not count (a stale copy is not "later").
        assert_eq!(valid_record_after(&data, offsets[1], 3), None);
        // A record placed at an odd offset inside garbage is still found.
        let mut noisy = encode_header(1).to_vec();
        noisy.extend([0xFF, 0x13, 0x00]);
        noisy.extend(frame(1, b"x"));
        assert_eq!(
            valid_record_after(&noisy, HEADER_LEN, 0),
            Some(HEADER_LEN + 3)
        );
        // Zeros and short tails hold nothing.
        let mut zeros = encode_header(1).to_vec();
        zeros.extend([0u8; 100]);
        assert_eq!(valid_record_after(&zeros, HEADER_LEN, 0), None);
        assert_eq!(valid_record_after(&zeros[..30], HEADER_LEN, 0), None);
    }

    #[test]
    fn scan_segment_tells_torn_tail_from_corruption() {
        let p = Path::new("/x/00000000000000000005.wal");
        let (data, offsets) = segment(5, &[b"one", b"two", b"three"]);
        let ok = scan_segment(p, 5, &data, true).unwrap();
        assert_eq!((ok.valid_end, ok.next_lsn), (data.len(), 8));
        assert!(matches!(ok.end, SegmentEnd::Clean));

        // Incomplete last record: torn in the newest segment, corrupt in an older one.
        let cut = &data[..data.len() - 1];
        let torn = scan_segment(p, 5, cut, true).unwrap();
        assert!(matches!(torn.end, SegmentEnd::TornTail(o) if o == offsets[2]));
        assert_eq!(torn.next_lsn, 7);
        assert_eq!(
            corrupt_offset(scan_segment(p, 5, cut, false)),
            offsets[2] as u64
        );

        // Damage followed by a valid record: corrupt even in the newest segment.
        let mut mid = data.clone();
        mid[offsets[1] + 5] ^= 0x10;
        assert_eq!(
            corrupt_offset(scan_segment(p, 5, &mid, true)),
            offsets[1] as u64
        );

        // A valid record with the wrong LSN is corruption when followed by valid records.
        let mut skipped = encode_header(5).to_vec();
        skipped.extend(frame(5, b"a"));
        let bad_at = skipped.len();
        skipped.extend(frame(9, b"b"));
        skipped.extend(frame(6, b"c"));
        assert_eq!(
            corrupt_offset(scan_segment(p, 5, &skipped, true)),
            bad_at as u64
        );

        // Header: short or all zeros in the newest segment is torn; otherwise corrupt at 0.
        assert!(matches!(
            scan_segment(p, 5, &data[..10], true).unwrap().end,
            SegmentEnd::TornHeader
        ));
        assert!(matches!(
            scan_segment(p, 5, &[0u8; 64], true).unwrap().end,
            SegmentEnd::TornHeader
        ));
        assert_eq!(corrupt_offset(scan_segment(p, 5, &data[..10], false)), 0);
        assert_eq!(corrupt_offset(scan_segment(p, 4, &data, true)), 0);
        let mut bad_magic = data.clone();
        bad_magic[0] = b'X';
        assert_eq!(corrupt_offset(scan_segment(p, 5, &bad_magic, true)), 0);
    }

    #[test]
    fn scanning_arbitrary_bytes_never_panics() {
        // Deterministic xorshift noise after a valid header, at many lengths.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut noise = Vec::new();
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push(x as u8);
        }
        let p = Path::new("/x/00000000000000000001.wal");
        for len in (0..noise.len()).step_by(37) {
            let mut data = encode_header(1).to_vec();
            data.extend(&noise[..len]);
            for newest in [true, false] {
                let _ = scan_segment(p, 1, &data, newest);
                let _ = scan_segment(p, u64::MAX, &data, newest);
            }
            let _ = scan_segment(p, 1, &noise[..len], true);
        }
    }

    #[test]
    fn fsync_mode_names_and_defaults() {
        assert_eq!(FsyncMode::default(), FsyncMode::Batch);
        let names: Vec<&str> = FsyncMode::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(names, ["always", "batch", "never"]);
        for mode in FsyncMode::ALL {
            assert_eq!(mode.to_string().parse::<FsyncMode>(), Ok(mode));
        }
        let error = "Batch".parse::<FsyncMode>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid fsync mode `Batch`: expected always, batch or never"
        );
        assert_eq!(
            serde_json::to_string(&FsyncMode::Never).unwrap(),
            "\"never\""
        );
        assert_eq!(
            serde_json::from_str::<FsyncMode>("\"always\"").unwrap(),
            FsyncMode::Always
        );
        let opts = WalOptions::default();
        assert_eq!(
            (opts.fsync, opts.segment_bytes),
            (FsyncMode::Batch, 64 << 20)
        );
    }

    #[test]
    fn errors_name_file_and_offset() {
        let e = WalError::Corrupt {
            file: PathBuf::from("/x/00000000000000000001.wal"),
            offset: 1234,
            reason: "crc mismatch".to_owned(),
        };
        assert_eq!(
            e.to_string(),
            "log corrupt in /x/00000000000000000001.wal at byte offset 1234: crc mismatch"
        );
        let e = WalError::Io {
            path: PathBuf::from("/x/y.wal"),
            source: io::Error::other("boom"),
        };
        assert!(e.to_string().contains("/x/y.wal"));
    }

    #[test]
    fn commit_delay_waits_only_for_concurrent_writers() {
        let min = COMMIT_DELAY_MIN_BATCH;
        // A lone writer: every batch holds one record, so it never waits.
        assert!(!commit_delay_applies(0, 0));
        assert!(!commit_delay_applies(1, 1));
        assert!(!commit_delay_applies(1, 5));
        // A light load (batches of a few records) is not delayed either.
        assert_eq!(min, 4);
        assert!(!commit_delay_applies(min - 1, 2));
        // After a shared fsync it waits, unless the next batch is large already.
        assert!(commit_delay_applies(min, 0));
        assert!(commit_delay_applies(40, COMMIT_DELAY_ENOUGH - 1));
        assert!(!commit_delay_applies(40, COMMIT_DELAY_ENOUGH));
        // A fixed set of writers all back already: no wait.
        assert!(!commit_delay_applies(32, 32));
        // It goes on while records keep arriving, and stops at the first quiet slice, when
        // the last batch's writers are all back, or when the batch is large enough.
        assert!(commit_delay_continues(20, 3, 9));
        assert!(commit_delay_continues(20, 9, 25));
        assert!(!commit_delay_continues(20, 9, 9));
        assert!(!commit_delay_continues(32, 12, 32));
        assert!(!commit_delay_continues(40, 10, COMMIT_DELAY_ENOUGH));
    }

    #[test]
    fn only_group_commit_waits() {
        let opts = WalOptions::default();
        assert_eq!(commit_delay_for(&opts), Some(DEFAULT_COMMIT_DELAY));
        for fsync in [FsyncMode::Always, FsyncMode::Never] {
            let opts = WalOptions { fsync, ..opts };
            assert_eq!(commit_delay_for(&opts), None);
        }
        let off = WalOptions {
            commit_delay: Duration::ZERO,
            ..opts
        };
        assert_eq!(commit_delay_for(&off), None);
    }

    #[test]
    fn commit_delay_counts_from_the_oldest_queued_record() {
        let delay = Duration::from_micros(800);
        let t0 = Instant::now();
        let at = |us| t0 + Duration::from_micros(us);
        // Records queued during the last fsync (300 us before the wait began) have waited
        // through it: 500 us are left when the wait begins, none 500 us later.
        assert_eq!(
            commit_delay_left(delay, at(300), Some(t0), at(300)),
            Duration::from_micros(500)
        );
        assert_eq!(
            commit_delay_left(delay, at(300), Some(t0), at(800)),
            Duration::ZERO
        );
        assert_eq!(
            commit_delay_left(delay, at(300), Some(t0), at(5_000)),
            Duration::ZERO
        );
        // An empty queue when the wait began: the delay counts from then, and a record queued
        // later does not extend it.
        assert_eq!(
            commit_delay_left(delay, at(300), None, at(500)),
            Duration::from_micros(600)
        );
        assert_eq!(
            commit_delay_left(delay, at(300), Some(at(400)), at(500)),
            Duration::from_micros(600)
        );
        assert_eq!(
            commit_delay_left(delay, at(300), Some(at(400)), at(1_100)),
            Duration::ZERO
        );
    }

    #[test]
    fn wal_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Wal>();
    }

    #[tokio::test]
    async fn always_mode_fsyncs_every_record_alone() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            fsync: FsyncMode::Always,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(dir.path(), opts, 0, |_, _| Ok::<(), String>(())).unwrap();
        for i in 0..20u8 {
            wal.append(&[i]).unwrap();
        }
        wal.durable(20).await.unwrap();
        let stats = wal.stats();
        assert_eq!((stats.batches, stats.records), (20, 20));
        assert!(stats.fsyncs >= 20);
        wal.close().unwrap();
    }

    #[tokio::test]
    async fn append_and_durable_refuse_what_they_cannot_do() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default(), 0, |_, _| {
            Ok::<(), String>(())
        })
        .unwrap();
        assert!(matches!(
            wal.append(&vec![0; MAX_PAYLOAD + 1]),
            Err(WalError::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            wal.durable(1).await,
            Err(WalError::NotAppended { lsn: 1, last: 0 })
        ));
        assert_eq!(wal.append(&vec![7; MAX_PAYLOAD]).unwrap(), 1);
        wal.durable(0).await.unwrap();
        wal.close().unwrap();
        wal.close().unwrap();
        assert_eq!(wal.durable_lsn(), 1);
        assert!(matches!(wal.append(b"late"), Err(WalError::Closed)));
        wal.durable(1).await.unwrap();
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

    #[tokio::test]
    async fn rotation_never_reuses_a_name_for_an_empty_segment() {
        // segment_bytes below the header size: every batch would rotate, but a segment is only
        // closed once it holds a record.
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            fsync: FsyncMode::Batch,
            segment_bytes: 1,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(dir.path(), opts, 0, |_, _| Ok::<(), String>(())).unwrap();
        for i in 1..=3u64 {
            assert_eq!(wal.append(b"r").unwrap(), i);
            wal.durable(i).await.unwrap();
        }
        wal.close().unwrap();
        let names: Vec<Lsn> = list_segments(&RealFs, dir.path())
            .unwrap()
            .iter()
            .map(|s| s.first_lsn)
            .collect();
        assert_eq!(names, [1, 2, 3]);
    }
}
