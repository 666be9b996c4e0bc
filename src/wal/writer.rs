//! The group-commit writer thread and its commit policy (docs/format.md, "Commit policy").
//!
//! # Group commit
//!
//! One writer thread owns the active segment. [`Wal::append`] frames the record into a shared
//! in-memory buffer under a mutex and wakes the writer; the writer swaps the whole buffer out,
//! writes it with one positioned write over the preallocated zeros, fsyncs once
//! (`File::sync_data`) and publishes the new durable LSN through a `tokio::sync::watch` channel
//! that [`Wal::durable`] waits on. [`FsyncMode::Always`] writes and fsyncs each record alone;
//! [`FsyncMode::Never`] fsyncs only on rotation and close. In [`FsyncMode::Batch`] the writer may
//! wait for more records before a batch ([`super::commit_delay`]).
//!
//! # Preallocation and rotation
//!
//! The writer keeps 64 KiB to 1 MiB of zeros written ahead of the records (PostgreSQL zero-fills
//! WAL segments too) and writes each batch over them: the file's length, and so its inode, stays
//! unchanged, so `fdatasync` writes the data and a cache flush only, where appending also wrote
//! the inode (on ext4 about a third of the fsync time). Real zeros, not `fallocate`: an
//! unwritten extent turns written on first write, again a metadata change. A segment that has
//! reached [`WalOptions::segment_bytes`] (or [`Wal::roll_segment`]) loses its zeros and is
//! fsynced in every fsync mode before the next one is created, so only the newest segment can
//! end in a torn tail or zeros; [`Wal::close`] cuts the zeros too.
//!
//! # A failed write or fsync is final
//!
//! After a failed fsync the kernel may have dropped the dirty pages and marked them clean, so a
//! retry could report data durable that is not on disk (PostgreSQL's "fsyncgate"). So every
//! write or fsync error marks the log failed for good: appends are refused, queued records are
//! dropped, the durable LSN never moves again, and every waiter past it gets
//! [`WalError::Failed`]. Only a restart, which recovers from what is on disk, clears it.
//!
//! The writer emits [`crate::metrics::WAL_BYTES_WRITTEN`], [`crate::metrics::WAL_FSYNC_DURATION`]
//! (each `sync_data` of the active segment) and [`crate::metrics::WAL_BATCH_RECORDS`] (records
//! per write) through the `metrics` macros; installing a recorder is the binary's business.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::commit_delay::{
    commit_delay_applies, commit_delay_continues, commit_delay_for, commit_delay_left,
    commit_delay_now,
};
use super::format::{ActiveSegment, HEADER_LEN, SegmentFile, create_segment};
use super::head::write_head;
use super::{FsyncMode, Lsn, Wal, WalError, WalOptions, io_err};
use crate::metrics as metric;
use crate::storage::Storage;

/// Zeros the writer keeps written ahead of the active segment's last record, at most, in bytes
/// (module docs, "Preallocation and rotation"): 1 MiB, about 5 000 typical records.
pub const PREALLOCATE_BYTES: u64 = 1 << 20;
/// The writer preallocates again when fewer zero bytes than this (64 KiB) remain after a batch.
const PREALLOCATE_LOW_WATER: u64 = 64 << 10;
/// What [`Wal`] and its writer thread share.
pub(super) struct Shared {
    /// Where the files are (the real file system, or a test's `FaultFs`).
    pub(super) storage: Arc<dyn Storage>,
    /// The log directory (for directory fsyncs and new segment paths).
    pub(super) dir: PathBuf,
    /// Options given to `open`.
    pub(super) opts: WalOptions,
    /// Records waiting for the writer. A parking_lot mutex, not a tokio one: it is held for a
    /// memcpy and never across an await or I/O.
    pub(super) queue: Mutex<Queue>,
    /// Wakes the writer when the queue gains records, a roll is requested or the log is
    /// closing.
    pub(super) work: Condvar,
    /// Wakes [`Wal::roll_segment`] callers when a roll is done or the log failed.
    pub(super) rolled: Condvar,
    /// Durable LSN and failure flag, published by the writer; `durable()` waits on it.
    pub(super) durable: watch::Sender<DurableState>,
    /// `durable`'s LSN, mirrored for the check most callers of [`Wal::durable`] need (is it
    /// durable already?): one atomic load instead of a watch subscription and its lock, on the
    /// path of every request that only reads. Written only inside `durable`'s
    /// `send_modify`, after the LSN it mirrors, so it never runs ahead of it.
    pub(super) durable_lsn: AtomicU64,
    /// All segments, oldest first; the last one is the writer's active segment.
    pub(super) segments: Mutex<VecDeque<SegmentFile>>,
    /// Writer counters.
    pub(super) stats: AtomicStats,
}

/// Framed records waiting for the writer.
pub(super) struct Queue {
    /// Framed records, back to back, exactly as they go to disk.
    pub(super) buf: Vec<u8>,
    /// End offset in `buf` of every record (record `i` has LSN `first_lsn + i`).
    pub(super) ends: Vec<usize>,
    /// LSN of the first record in `buf` (meaningless while `buf` is empty).
    pub(super) first_lsn: Lsn,
    /// When the first record in `buf` was queued (`None` while `buf` is empty): the commit
    /// delay counts from it.
    pub(super) oldest: Option<Instant>,
    /// LSN the next `append` gets.
    pub(super) next_lsn: Lsn,
    /// `close` was called: the writer drains `buf` and exits.
    pub(super) closing: bool,
    /// The writer failed; `append` refuses.
    pub(super) failed: bool,
    /// [`Wal::roll_segment`] asked the writer to start a new segment.
    pub(super) roll_requested: bool,
    /// Rolls completed so far.
    pub(super) rolls_done: u64,
    /// With `roll_requested`: start the new segment at this LSN instead of the next one,
    /// dropping every record from it on ([`Wal::reposition`]).
    pub(super) reposition: Option<Lsn>,
}

/// Published by the writer through the watch channel.
#[derive(Clone, Copy, Debug)]
pub(super) struct DurableState {
    /// Every record with LSN `<= lsn` is durable.
    pub(super) lsn: Lsn,
    /// The writer failed; `lsn` will never advance again.
    pub(super) failed: bool,
}

/// The counters behind [`super::WalStats`].
#[derive(Default)]
pub(super) struct AtomicStats {
    pub(super) batches: AtomicU64,
    pub(super) records: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) fsyncs: AtomicU64,
}

impl Wal {
    /// Starts the writer thread on `active` (the last of `segments`); the next append gets
    /// `next_lsn`, and everything below it counts as durable.
    pub(super) fn start(
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
                reposition: None,
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
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) active: ActiveSegment,
    /// [`PREALLOCATE_BYTES`] zero bytes, the source of every preallocation write.
    zeros: Vec<u8>,
    /// The writer's metric handles, fetched once (a `metrics` macro looks its key up in the
    /// registry on every call).
    meters: WriterMetrics,
    /// Bytes written to `active` since its last fsync.
    pub(super) dirty: bool,
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
            let (first_lsn, roll, next_lsn, reposition) = {
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
                (q.first_lsn, roll, q.next_lsn, q.reposition.take())
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
                result = match reposition {
                    Some(lsn) => self.reposition(lsn),
                    None => self.rotate(next_lsn, true),
                };
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
    pub(super) fn release_preallocation(&mut self) -> Result<(), WalError> {
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

    /// The commit delay ([`super::commit_delay`]): after a batch of at least
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
        let (delay, min_batch) = commit_delay_now(delay, self.shared.durable.receiver_count());
        if !commit_delay_applies(min_batch, last_batch, before) {
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
        self.rotate(first_lsn, false)?;
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
            self.rotate(lsn, false)?;
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
            // fdatasync writes data only, not the inode (module docs). This
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

    pub(super) fn sync(&mut self) -> Result<(), WalError> {
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

    /// Before writing the record `next_lsn` (or for [`Wal::roll_segment`], `force`): when the
    /// active segment holds a record and has reached `segment_bytes` or `force` is set, cuts
    /// its zeros, fsyncs it and starts segment `next_lsn`.
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
        // Only now, with its header durable, may the head file name it, and only then may a
        // record go into it (`head.rs`); the old segment stays the last one listed until then,
        // so segment removal never takes the segment the head file names.
        write_head(&*self.shared.storage, &self.shared.dir, next_lsn)?;
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
pub(super) fn mark_failed(shared: &Shared) {
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
