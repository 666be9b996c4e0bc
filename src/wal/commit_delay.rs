//! The group-commit delay (PostgreSQL's `commit_delay` / `commit_siblings`; docs/format.md,
//! "Commit policy"): when the writer thread waits for more records before its next batch.
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

use std::time::{Duration, Instant};

use super::{FsyncMode, WalOptions};

/// Default [`WalOptions::commit_delay`]: 800 µs (module docs). On one saturated
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
/// service is saturated and [`SATURATED_COMMIT_DELAY`] applies (module docs).
/// A moderate load keeps fewer waiting: each waits about one fsync.
pub const COMMIT_SIBLINGS: usize = 64;
/// The commit delay of a saturated service (module docs): long enough for a
/// batch of [`COMMIT_DELAY_ENOUGH`] records at a few thousand writes per second, after a batch
/// of at least two records. On one saturated core, waiting this long instead of 800 µs raised
/// the `checkout-mix` throughput by a fifth to a half, because every fsync saved is CPU handed
/// back to the requests.
pub const SATURATED_COMMIT_DELAY: Duration = Duration::from_millis(5);
/// [`SATURATED_COMMIT_DELAY`] applies after a batch of at least this many records.
pub(super) const SATURATED_MIN_BATCH: usize = 2;

/// The commit delay the writer applies before its next batch under `opts` (module docs,
/// "Commit delay"): [`WalOptions::commit_delay`] in [`FsyncMode::Batch`]; `None` in the other
/// modes or when the delay is zero.
pub(super) fn commit_delay_for(opts: &WalOptions) -> Option<Duration> {
    (opts.fsync == FsyncMode::Batch && !opts.commit_delay.is_zero()).then_some(opts.commit_delay)
}

/// Whether the writer waits before taking the next batch, given the size of the last batch and
/// the records queued now (module docs): only after a batch of at least
/// `min_batch` records, and not when `COMMIT_DELAY_ENOUGH` are queued already,
/// nor when exactly the last batch's count is queued (see [`commit_delay_continues`]).
pub(super) fn commit_delay_applies(min_batch: usize, last_batch: usize, queued: usize) -> bool {
    last_batch >= min_batch && batch_still_filling(last_batch, queued)
}

/// The delay and the minimum last batch that apply when `waiting` requests wait for the log
/// and the configured delay is `delay` (module docs).
pub(super) fn commit_delay_now(delay: Duration, waiting: usize) -> (Duration, usize) {
    if waiting >= COMMIT_SIBLINGS && SATURATED_COMMIT_DELAY > delay {
        (SATURATED_COMMIT_DELAY, SATURATED_MIN_BATCH)
    } else {
        (delay, COMMIT_DELAY_MIN_BATCH)
    }
}

/// Whether waiting could still grow the next batch: fewer than `COMMIT_DELAY_ENOUGH` records
/// are queued, and not exactly as many as the last batch held (a fixed set of writers, each
/// waiting for its own record, is all back).
pub(super) fn batch_still_filling(last_batch: usize, queued: usize) -> bool {
    queued != last_batch && queued < COMMIT_DELAY_ENOUGH
}

/// Whether the commit delay goes on after a slice that took the queue from `before` to `now`
/// records: only while records keep arriving (a slice that brings nothing means the load has
/// paused) and [`batch_still_filling`]; waiting longer would only add latency.
pub(super) fn commit_delay_continues(last_batch: usize, before: usize, now: usize) -> bool {
    now > before && batch_still_filling(last_batch, now)
}

/// How much longer a commit delay of `delay` that began at `started` may last at `now`, when
/// the oldest queued record was queued at `oldest` (or the queue was empty, `None`): it counts
/// from that record's arrival, so it adds at most `delay` to any record's latency, and the
/// writer sleeps at most `delay` (module docs).
pub(super) fn commit_delay_left(
    delay: Duration,
    started: Instant,
    oldest: Option<Instant>,
    now: Instant,
) -> Duration {
    let from = oldest.map_or(started, |oldest| oldest.min(started));
    delay.saturating_sub(now.saturating_duration_since(from))
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
