//! The maintenance task: one background thread that writes snapshots and runs compactions,
//! fed by a channel (docs/behaviour.md §8).
//!
//! Requests never write files themselves. A write that takes the store past `--snapshot-every`
//! events queues a snapshot; an erasure queues a compaction. The thread takes every job queued
//! at that moment, runs a compaction if one was asked for and then a snapshot if one is still
//! needed (a compaction writes a snapshot too), and answers the callers waiting for it
//! ([`Store::wait_for_maintenance`]). A compaction queued while another runs runs again after
//! it, so every erasure is covered by a compaction that started after it.
//!
//! The thread runs at the lowest scheduling priority (`SCHED_IDLE`): on a busy core, request
//! workers preempt it and maintenance uses the time they leave.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::Store;

/// One request to the maintenance task.
enum Job {
    /// Take a snapshot, paced by `--snapshot-write-rate`.
    Snapshot,
    /// Compact: a snapshot of everything, then remove every older file (after an erasure).
    Compact,
    /// Answer once every job queued before this one has finished.
    Barrier(Sender<()>),
}

/// The maintenance task's handle, owned by the [`Store`].
pub(super) struct Maintenance {
    /// Closed (set to `None`) by [`Maintenance::stop`]; the thread ends when it sees that.
    jobs: Mutex<Option<Sender<Job>>>,
    /// Joined by [`Maintenance::stop`].
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Maintenance {
    /// Starts the thread. It holds the store weakly: a store dropped without
    /// [`Store::close`] ends the thread at its next job or when the channel closes.
    pub(super) fn start(store: Weak<Store>) -> Maintenance {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("idrecon-maintenance".into())
            .spawn(move || run(store, receiver));
        let thread = match thread {
            Ok(handle) => Some(handle),
            Err(error) => {
                // Without the thread, snapshots happen at shutdown only and compactions on
                // `POST /admin/compact`; nothing is lost, so serving goes on.
                tracing::error!(%error, "cannot start the maintenance thread");
                None
            }
        };
        Maintenance {
            jobs: Mutex::new(thread.is_some().then_some(sender)),
            thread: Mutex::new(thread),
        }
    }

    fn send(&self, job: Job) -> bool {
        self.jobs
            .lock()
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok())
    }

    /// Queues a snapshot.
    pub(super) fn snapshot(&self) {
        self.send(Job::Snapshot);
    }

    /// Queues a compaction.
    pub(super) fn compact(&self) {
        self.send(Job::Compact);
    }

    /// Blocks until every job queued before the call has finished (at once when the task has
    /// stopped).
    pub(super) fn wait(&self) {
        let (done, finished) = mpsc::channel();
        if self.send(Job::Barrier(done)) {
            let _ = finished.recv();
        }
    }

    /// Closes the channel and waits for the thread to finish the jobs already queued.
    pub(super) fn stop(&self) {
        self.jobs.lock().take();
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            if thread.thread().id() == std::thread::current().id() {
                // The last reference to the store was dropped by a job on this very thread:
                // it ends by itself once this returns.
                return;
            }
            let _ = thread.join();
        }
    }
}

/// The thread's loop: waits for a job, takes every other job already queued, runs them.
fn run(store: Weak<Store>, jobs: Receiver<Job>) {
    lower_priority();
    while let Ok(first) = jobs.recv() {
        let (mut snapshot, mut compact, mut barriers) = (false, false, Vec::new());
        for job in std::iter::once(first).chain(jobs.try_iter()) {
            match job {
                Job::Snapshot => snapshot = true,
                Job::Compact => compact = true,
                Job::Barrier(done) => barriers.push(done),
            }
        }
        if let Some(store) = store.upgrade() {
            if compact && let Err(error) = store.compact_blocking() {
                tracing::error!(%error, "compaction after erasure failed; it runs again after the next erasure or POST /admin/compact");
            }
            if snapshot {
                // Cleared before the snapshot starts, so writes made during it can queue the
                // next one.
                store.snapshot_queued.store(false, Ordering::Release);
                if let Err(error) = store.snapshot_paced(store.options.snapshot_pace) {
                    tracing::error!(%error, "snapshot failed; it is retried after more events");
                }
            }
            drop::<Arc<Store>>(store);
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}

/// Puts the calling thread in the `SCHED_IDLE` class with the lowest priority, so on a busy
/// core the request workers preempt it. Lowering one's own priority needs no privilege; a
/// failure is logged, and the thread then competes as any other.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(error) =
        set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
    {
        tracing::debug!(?error, "could not lower the maintenance thread's priority");
    }
}
