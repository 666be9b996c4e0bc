//! The group-commit writer thread and its commit policy (docs/format.md, "Commit policy").
//!
//! # Group commit
//!
//! One writer thread owns the active segment. [`Wal::append`] frames the record into a shared
//! in-memory buffer under a mutex and wakes the writer; the writer swaps the whole buffer out,
//! writes it with one positioned write over the preallocated zeros, fsyncs once
//! (`File::sync_data`) and publishes the new durable LSN through a `tokio::sync::watch` channel
//! that [`Wal::durable`] waits on. [`FsyncMode::Always`] writes and fsyncs each record alone;
//! [`FsyncMode::Never`] fsyncs only on rotation and close.
//!
//! # Commit delay (PostgreSQL's `commit_delay` / `commit_siblings`)
//!
//! Each batch costs the writer a fixed amount of CPU beyond its bytes: the `write` and
//! `fdatasync` system calls (in a virtual machine each disk request is also a VM exit), the disk
//! round trips it sleeps through (each a wake-up and a context switch, taken from the request
//! threads on a shared core), and waking the waiters. When writes keep arriving, that cost
//! decides throughput: batches are small (what arrived during one fsync), and the writer takes
//! CPU from the requests that would fill them. So in [`FsyncMode::Batch`], after a batch of at
//! least [`COMMIT_DELAY_MIN_BATCH`] records (evidence of concurrent writers) the writer sleeps
//! before taking the next one, in quarters of the delay, for as long as each quarter brings more
//! records, until the oldest queued record has waited the whole delay, unless enough records
//! are queued already. The delay counts from the oldest record's arrival, not from the end of
//! the last fsync: records queued during `fdatasync` have waited through it already.
//!
//! How long it may wait depends on how many requests are waiting for the log when it decides,
//! as PostgreSQL's `commit_siblings` counts the other open transactions: with fewer than
//! [`COMMIT_SIBLINGS`] waiting, [`WalOptions::commit_delay`] (800 µs by default) keeps the
//! latency of a moderate load low; with at least that many the service is saturated — every
//! request it can take is queued behind the log — and [`SATURATED_COMMIT_DELAY`] lets batches
//! grow to [`COMMIT_DELAY_ENOUGH`] records, so each fsync's fixed cost is shared by many
//! writes and the CPU it saves goes to the requests. The decision needs the queue and the
//! number of waiters only, no measure of the CPU load.
//!
//! A lone writer is never delayed, and the wait ends as soon as the queue holds as many records
//! as the last batch (a fixed set of writers, each waiting for its own record, is all back:
//! `benches/wal.rs`); a write's latency grows by at most the delay that applies.
//! `--commit-delay-us 0` turns both off.
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
/// Default [`WalOptions::commit_delay`]: 800 µs (module docs, "Commit delay"). On one saturated
/// core it cut the CPU per `checkout-mix` request by a quarter against 300 µs, and at half load
/// it keeps the writer's fsyncs, each a few wake-ups that preempt the request thread on a
/// shared core, from raising the p99 (2.25 ms with it, 3.43 ms without; 400 and 1 600 µs did no
/// better).
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_micros(800);
/// [`WalOptions::commit_delay`] applies only after a batch of at least this many records
/// (PostgreSQL's `commit_siblings`): a lone writer, or a light load whose batches hold one to
/// three records, is never delayed.
pub const COMMIT_DELAY_MIN_BATCH: usize = 4;
/// The commit delay is skipped when this many records are queued already: the batch is as
/// large as waiting would make it.
pub const COMMIT_DELAY_ENOUGH: usize = 64;
/// With at least this many requests waiting for the log (PostgreSQL's `commit_siblings`), the
/// service is saturated and [`SATURATED_COMMIT_DELAY`] applies (module docs, "Commit delay").
/// A moderate load keeps fewer waiting: each waits about one fsync.
pub const COMMIT_SIBLINGS: usize = 64;
/// The commit delay of a saturated service (module docs, "Commit delay"): long enough for a
/// batch of [`COMMIT_DELAY_ENOUGH`] records at a few thousand writes per second, after a batch
/// of at least two records. On one saturated core, waiting this long instead of 800 µs raised
/// the `checkout-mix` throughput by a fifth to a half, because every fsync saved is CPU handed
/// back to the requests.
pub const SATURATED_COMMIT_DELAY: Duration = Duration::from_millis(5);
/// [`SATURATED_COMMIT_DELAY`] applies after a batch of at least this many records.
const SATURATED_MIN_BATCH: usize = 2;

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

/// The commit delay the writer applies before its next batch under `opts` (module docs,
/// "Commit delay"): [`WalOptions::commit_delay`] in [`FsyncMode::Batch`]; `None` in the other
/// modes or when the delay is zero.
fn commit_delay_for(opts: &WalOptions) -> Option<Duration> {
    (opts.fsync == FsyncMode::Batch && !opts.commit_delay.is_zero()).then_some(opts.commit_delay)
}

/// Whether the writer waits before taking the next batch, given the size of the last batch and
/// the records queued now (module docs, "Commit delay"): only after a batch of at least
/// `min_batch` records, and not when `COMMIT_DELAY_ENOUGH` are queued already,
/// nor when exactly the last batch's count is queued (see [`commit_delay_continues`]).
fn commit_delay_applies(min_batch: usize, last_batch: usize, queued: usize) -> bool {
    last_batch >= min_batch && batch_still_filling(last_batch, queued)
}

/// The delay and the minimum last batch that apply when `waiting` requests wait for the log
/// and the configured delay is `delay` (module docs, "Commit delay").
fn commit_delay_now(delay: Duration, waiting: usize) -> (Duration, usize) {
    if waiting >= COMMIT_SIBLINGS && SATURATED_COMMIT_DELAY > delay {
        (SATURATED_COMMIT_DELAY, SATURATED_MIN_BATCH)
    } else {
        (delay, COMMIT_DELAY_MIN_BATCH)
    }
}

/// Whether waiting could still grow the next batch: fewer than `COMMIT_DELAY_ENOUGH` records
/// are queued, and not exactly as many as the last batch held (a fixed set of writers, each
/// waiting for its own record, is all back).
fn batch_still_filling(last_batch: usize, queued: usize) -> bool {
    queued != last_batch && queued < COMMIT_DELAY_ENOUGH
}

/// Whether the commit delay goes on after a slice that took the queue from `before` to `now`
/// records: only while records keep arriving (a slice that brings nothing means the load has
/// paused) and [`batch_still_filling`]; waiting longer would only add latency.
fn commit_delay_continues(last_batch: usize, before: usize, now: usize) -> bool {
    now > before && batch_still_filling(last_batch, now)
}

/// How much longer a commit delay of `delay` that began at `started` may last at `now`, when
/// the oldest queued record was queued at `oldest` (or the queue was empty, `None`): it counts
/// from that record's arrival, so it adds at most `delay` to any record's latency, and the
/// writer sleeps at most `delay` (module docs, "Commit delay").
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_delay_waits_only_for_concurrent_writers() {
        let min = COMMIT_DELAY_MIN_BATCH;
        // A lone writer: every batch holds one record, so it never waits.
        assert!(!commit_delay_applies(min, 0, 0));
        assert!(!commit_delay_applies(min, 1, 1));
        assert!(!commit_delay_applies(min, 1, 5));
        // A light load (batches of a few records) is not delayed either.
        assert_eq!(min, 4);
        assert!(!commit_delay_applies(min, min - 1, 2));
        // After a shared fsync it waits, unless the next batch is large already.
        assert!(commit_delay_applies(min, min, 0));
        assert!(commit_delay_applies(min, 40, COMMIT_DELAY_ENOUGH - 1));
        assert!(!commit_delay_applies(min, 40, COMMIT_DELAY_ENOUGH));
        // A fixed set of writers all back already: no wait.
        assert!(!commit_delay_applies(min, 32, 32));
        // It goes on while records keep arriving, and stops at the first quiet slice, when
        // the last batch's writers are all back, or when the batch is large enough.
        assert!(commit_delay_continues(20, 3, 9));
        assert!(commit_delay_continues(20, 9, 25));
        assert!(!commit_delay_continues(20, 9, 9));
        assert!(!commit_delay_continues(32, 12, 32));
        assert!(!commit_delay_continues(40, 10, COMMIT_DELAY_ENOUGH));
    }

    #[test]
    fn a_saturated_service_waits_longer() {
        let delay = DEFAULT_COMMIT_DELAY;
        // A moderate load: the configured delay, after batches of four.
        assert_eq!(
            commit_delay_now(delay, COMMIT_SIBLINGS - 1),
            (delay, COMMIT_DELAY_MIN_BATCH)
        );
        // Enough requests waiting for the log: the saturated delay, after batches of two.
        assert_eq!(
            commit_delay_now(delay, COMMIT_SIBLINGS),
            (SATURATED_COMMIT_DELAY, SATURATED_MIN_BATCH)
        );
        // A configured delay longer than the saturated one is kept.
        let long = SATURATED_COMMIT_DELAY * 2;
        assert_eq!(
            commit_delay_now(long, 1_000),
            (long, COMMIT_DELAY_MIN_BATCH)
        );
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
        const DELAY: Duration = Duration::from_micros(800);
        // (oldest record queued at, now, µs left), the wait beginning at 300 µs. Records queued
        // during the last fsync (at 0) have waited through it: 500 µs are left when the wait
        // begins, none 500 µs later. An empty queue when the wait began (`None`): the delay
        // counts from then, and a record queued later (at 400) does not extend it.
        let t0 = Instant::now();
        let at = |us| t0 + Duration::from_micros(us);
        for (oldest, now, left) in [
            (Some(0), 300, 500),
            (Some(0), 800, 0),
            (Some(0), 5_000, 0),
            (None, 500, 600),
            (Some(400), 500, 600),
            (Some(400), 1_100, 0),
        ] {
            let got = commit_delay_left(DELAY, at(300), oldest.map(at), at(now));
            assert_eq!(got, Duration::from_micros(left), "{oldest:?} {now}");
        }
    }
}
