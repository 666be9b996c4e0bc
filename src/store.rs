//! The Store: the identity graph in memory, the write-ahead log and snapshots on disk, and the
//! concurrency rules between them (DESIGN.md "Store"; SPEC.md §8).
//!
//! - **Writers are serialized** by the graph's write lock. A write plans, applies and appends
//!   its events to the log while holding it, so log order is apply order.
//! - **Pure reads run in parallel.** `/identify` first plans under the read lock; a request
//!   that writes nothing is answered from there and never takes the write lock. Only when the
//!   plan has events does it retake the lock for writing and plan again (the state may have
//!   moved on), which is also why 16 identical new requests create one row.
//! - **No answer before durability.** Every answer waits until the log is durable up to the
//!   last LSN applied when it read the state (its own write or anything it saw), so no answer
//!   reveals state a crash could take back. Locks are never held across that wait.
//! - **Snapshots** capture the state at one LSN in an instant under the write lock, then encode
//!   it in chunks of a few thousand entries, each under the read lock: writers run between
//!   chunks while the graph keeps copy-on-write pre-images of what they change. The file is
//!   then written, fsynced and renamed off the lock. (Compaction still encodes under one read
//!   lock hold: it is rare and must not race another capture.)
//!
//! # Data directory
//! ```text
//! DIR/LOCK                     exclusive lock of the serving process
//! DIR/wal/{first_lsn}.wal      log segments
//! DIR/snapshots/{lsn}.snap     the two newest snapshots
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::contact::{ContactId, ContactRow, Timestamp};
use crate::cpu_load;
use crate::event::{Event, EventRef};
use crate::graph::{
    ApplyError, CaptureBuffer, Decision, GraphOptions, IdentifyRequest, Identity, IdentityGraph,
    IdentityKey, IdentityView, Lookup,
};
use crate::history::HistoryEntry;
use crate::metrics as metric;
use crate::snapshot::{self, SnapshotError, WritePace};
use crate::storage::{RealFs, Storage};
use crate::wal::{FsyncMode, Lsn, RecoveryReport, Wal, WalError, WalOptions};

/// How many snapshots are kept. The log is kept from the oldest of them on, so a damaged
/// newest snapshot can fall back to the older one plus the log.
pub const SNAPSHOTS_KEPT: usize = 2;

/// Default `--snapshot-write-rate`, in MiB/s: 0, unpaced. On the benchmark machine a pace of
/// 32 MiB/s took the log's slow fsyncs during back-to-back snapshots from about 10 to 2 per
/// run but did not lower the p99 of the requests (2.27 ms paced, 2.10 ms unpaced, 1.90 ms
/// without snapshots: BENCHMARKS.md, twentieth pass), and it keeps each capture open longer.
pub const DEFAULT_SNAPSHOT_WRITE_MIB_S: u64 = 0;

/// Recovery logs a `recovery progress` line (info) every this many events replayed.
pub const REPLAY_PROGRESS_EVERY: u64 = 1_000_000;

/// Settings of a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// When an acknowledged write is on disk (SPEC.md §7 `--fsync`).
    pub fsync: FsyncMode,
    /// Take a snapshot after this many events since the last one (0 = only on shutdown).
    pub snapshot_every: u64,
    /// How fast a background snapshot may write (`--snapshot-write-rate`); the snapshot at
    /// shutdown is never paced.
    pub snapshot_pace: WritePace,
    /// Log segment size at which a new segment is started, in bytes.
    pub segment_bytes: u64,
    /// Group-commit delay of the log ([`WalOptions::commit_delay`]).
    pub commit_delay: std::time::Duration,
    /// Group-commit delay of the log while the process is CPU-bound
    /// ([`WalOptions::busy_commit_delay`]).
    pub busy_commit_delay: std::time::Duration,
    /// Over-merge guards (blocked values, identity size cap); issue 5.
    pub graph: GraphOptions,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            fsync: FsyncMode::Batch,
            snapshot_every: 1_000_000,
            snapshot_pace: WritePace::mib_per_second(DEFAULT_SNAPSHOT_WRITE_MIB_S),
            segment_bytes: WalOptions::default().segment_bytes,
            commit_delay: WalOptions::default().commit_delay,
            busy_commit_delay: WalOptions::default().busy_commit_delay,
            graph: GraphOptions::default(),
        }
    }
}

/// Why the store cannot serve a request or open its data directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The log can no longer acknowledge writes (a write or fsync failed); SPEC.md §6 `503`.
    #[error("the write-ahead log has failed; no further writes can be acknowledged")]
    Unavailable,
    /// The log failed to open or recover.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A snapshot failed to read or write.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A log record or snapshot does not fit the state it is applied to.
    #[error("recovery failed at LSN {lsn}: {source}")]
    Replay {
        /// The record's LSN.
        lsn: Lsn,
        /// Why it did not apply.
        source: ApplyError,
    },
    /// The graph cannot take another contact.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Snapshots exist but none verifies (each error named, newest first).
    #[error("no snapshot can be loaded: {0}")]
    NoUsableSnapshot(String),
    /// Another process holds the data directory.
    #[error("data directory {} is in use by another process", .0.display())]
    Locked(PathBuf),
    /// An I/O error outside the log and snapshots (creating the directory, the lock file).
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What an `/identify` request did, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing matched: a new primary was recorded (SPEC.md §3 step 2).
    NewPrimary,
    /// New information for a known identity: a new secondary (step 4).
    NewSecondary,
    /// Two identities were merged (step 3).
    Merge,
    /// Nothing was written.
    PureRead,
    /// The identity size cap refused a merge or new secondary; the refusal was logged and the
    /// request answered from the identity of its email (issue 5).
    Refused,
}

impl Outcome {
    /// Every outcome, in declaration order.
    pub const ALL: [Outcome; 5] = [
        Outcome::NewPrimary,
        Outcome::NewSecondary,
        Outcome::Merge,
        Outcome::PureRead,
        Outcome::Refused,
    ];
}

struct State {
    graph: IdentityGraph,
    /// LSN of the last event applied to `graph`; `Lsn::MAX` once the log refused an event
    /// that memory already holds (nothing may be answered after that).
    lsn: Lsn,
    /// LSN of the last event that changed each identity, for identities changed recently (a
    /// pure read waits only for its own identity's changes, not for every write in flight:
    /// SPEC.md §3 "a pure read must not take the write path's cost"). Keys of identities
    /// merged away are never looked up again; entries already durable are pruned.
    changed: hashbrown::HashMap<IdentityKey, Lsn>,
}

/// The most contacts a snapshot header may make the graph reserve room for before loading.
const SNAPSHOT_RESERVE_MAX: u64 = 1 << 27;

/// Puts the calling thread (the background snapshot thread) in the `SCHED_IDLE` class with
/// the lowest priority, so on a busy core the request workers preempt it and a snapshot only
/// uses time they leave (issue 3: "snapshots must not stall the hot path"). Then marks it
/// background work, whose CPU time does not count as load ([`cpu_load`]: it must not make the
/// log writer think the process is CPU-bound). Lowering one's own priority needs no privilege;
/// a failure is logged, and the thread, competing as any other, is not marked.
fn background_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    match set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        Ok(()) => cpu_load::start_background_thread(),
        Err(error) => tracing::debug!(?error, "could not lower the snapshot thread's priority"),
    }
}

/// Snapshot entries captured per hold of the shared lock. A write that arrives during a hold
/// waits for the snapshot thread to finish it, so holds are short: 64 entries take about
/// 50 µs at a million contacts (a 512-entry hold measured 360-440 µs on an idle core, and the
/// 4 096 used before streamed snapshots about 3 ms: BENCHMARKS.md, twentieth pass).
const CAPTURE_CHUNK: usize = 64;

/// The entries of a captured snapshot, fetched [`CAPTURE_CHUNK`] at a time, each chunk under
/// the shared lock ([`IdentityGraph::capture_chunk`]).
struct CapturedEntries<'a> {
    state: &'a RwLock<State>,
    cursor: crate::graph::CaptureCursor,
    buffer: Vec<crate::snapshot::SnapshotEntry>,
    done: bool,
}

impl Iterator for CapturedEntries<'_> {
    type Item = crate::snapshot::SnapshotEntry;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.buffer.pop() {
                return Some(entry);
            }
            if self.done {
                return None;
            }
            // On the background snapshot thread, its CPU time so far is reported as such.
            cpu_load::report_background();
            self.done = self.state.read().graph.capture_chunk(
                &mut self.cursor,
                CAPTURE_CHUNK,
                &mut self.buffer,
            );
            // Handed out by `pop`, from the back.
            self.buffer.reverse();
            // Give the core back if a request is waiting for it. The snapshot thread runs at
            // `SCHED_IDLE`, so a request that wakes up preempts it at once, but one that is
            // already runnable (preempted itself) could otherwise wait for the scheduler's
            // next tick (4 ms here) or the end of a system call (the kernel is built without
            // preemption).
            std::thread::yield_now();
        }
    }
}

/// Prune [`State::changed`] of durable entries when it holds more than this many.
const CHANGED_PRUNE_AT: usize = 1 << 16;

/// What recovery found, for the start-up log line.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// The snapshot loaded, if any.
    pub snapshot: Option<PathBuf>,
    /// Contacts loaded from it.
    pub snapshot_contacts: u64,
    /// What the log scan found (records replayed, torn tail cut).
    pub wal: RecoveryReport,
    /// Snapshots that failed to load before one succeeded (newest first).
    pub skipped_snapshots: Vec<String>,
}

/// The durable identity store. Shared as `Arc<Store>` by the HTTP handlers.
pub struct Store {
    state: RwLock<State>,
    wal: Wal,
    dir: PathBuf,
    options: StoreOptions,
    /// Events applied since the last snapshot started.
    since_snapshot: AtomicU64,
    /// Set while a background snapshot is scheduled or running, so at most one is.
    snapshotting: AtomicBool,
    /// Serializes snapshots (background, explicit, shutdown) and remembers the LSN of the
    /// newest good snapshot (`None` before the first).
    snapshot_lock: Mutex<Option<Lsn>>,
    /// The background snapshot thread, joined by [`Store::close`] and
    /// [`Store::wait_for_snapshot`].
    snapshot_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set by [`Store::close`]: a background snapshot in progress stops pacing its writes, so
    /// a clean stop waits for the device, not for `--snapshot-write-rate`.
    closing: AtomicBool,
    /// Set while a background compaction is scheduled or running.
    compacting: AtomicBool,
    /// An erasure happened since the running compaction started.
    compaction_wanted: AtomicBool,
    /// The background compaction thread.
    compact_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Where the log and snapshots live (the real file system, or a test's `FaultFs`).
    storage: Arc<dyn Storage>,
    /// Held for the store's lifetime: an exclusive lock on `DIR/LOCK`.
    _lock: Box<dyn Send + Sync>,
}

/// What `DELETE /contacts/{id}` found (issue 5 "Deletion").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// The row was deleted; this is it now.
    Deleted(ContactRow),
    /// No contact has that id (or it was erased): `404`.
    NotFound,
    /// The row was already deleted: `409`.
    AlreadyDeleted(ContactRow),
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

/// What an erasure removed (issue 5 "Erasure").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasure {
    /// The primary of the erased identity.
    pub primary_contact_id: ContactId,
    /// Every contact removed, in id order.
    pub contact_ids: Vec<ContactId>,
}

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

/// The state a snapshot rebuilt, and what was loaded or skipped on the way.
struct Loaded {
    graph: IdentityGraph,
    lsn: Lsn,
    path: Option<PathBuf>,
    contacts: u64,
    skipped: Vec<String>,
    /// Files of the snapshots that failed before one loaded.
    skipped_paths: Vec<PathBuf>,
}

/// Loads the newest snapshot that verifies, falling back to older ones; with no snapshot at
/// all, the empty graph at LSN 0.
fn load_snapshot(
    fs: &dyn Storage,
    snapshots_dir: &Path,
    options: &GraphOptions,
) -> Result<Loaded, StoreError> {
    let (mut skipped, mut skipped_paths) = (Vec::new(), Vec::new());
    let available = snapshot::list_in(fs, snapshots_dir)?;
    for (_, path) in available.iter().rev() {
        let mut graph = IdentityGraph::with_options(options.clone());
        // Indexes are built once recovery (snapshot and log) is done: see `finish_bulk_load`.
        graph.begin_bulk_load();
        if let Some(info) = snapshot::peek_in(fs, path) {
            // Sized once instead of rehashing as it grows (bounded: the header is a hint).
            graph.reserve(info.entries.min(SNAPSHOT_RESERVE_MAX) as usize);
        }
        match snapshot::read_in(fs, path, |entry| graph.load_snapshot_item(entry)) {
            Ok(info) => {
                graph.reserve_ids_below(info.next_id);
                let contacts = graph.len() as u64;
                return Ok(Loaded {
                    graph,
                    lsn: info.lsn,
                    path: Some(path.clone()),
                    contacts,
                    skipped,
                    skipped_paths,
                });
            }
            Err(error) => {
                tracing::error!(%error, "snapshot unusable, trying an older one");
                skipped.push(error.to_string());
                skipped_paths.push(path.clone());
            }
        }
    }
    if !available.is_empty() {
        // Never fall back to the empty state: an import is a snapshot at LSN 0 that no log
        // repeats, so starting empty would silently drop rows. Refuse, naming the newest error.
        return Err(StoreError::NoUsableSnapshot(skipped.join("; ")));
    }
    let mut graph = IdentityGraph::with_options(options.clone());
    graph.begin_bulk_load();
    Ok(Loaded {
        graph,
        lsn: 0,
        path: None,
        contacts: 0,
        skipped,
        skipped_paths,
    })
}

/// What a data directory holds, read without changing any file.
pub struct Inspection {
    /// The rebuilt state: newest usable snapshot plus every valid log record after it.
    pub graph: IdentityGraph,
    /// The snapshot that was loaded, and its LSN (0 without one).
    pub snapshot: Option<PathBuf>,
    /// LSN of that snapshot.
    pub snapshot_lsn: Lsn,
    /// Snapshots that failed to load before one succeeded, newest first.
    pub skipped_snapshots: Vec<String>,
    /// The log scan: records after the snapshot, last LSN, a torn tail `serve` would cut.
    pub wal: RecoveryReport,
}

/// Loads the state of a data directory exactly as [`Store::open`] would, without changing any
/// file (for `export` and `check`): a torn tail is reported, not cut, and no lock is taken.
///
/// # Errors
/// As [`Store::open`], for everything `serve` would refuse.
pub fn inspect(dir: &Path) -> Result<Inspection, StoreError> {
    let Loaded {
        mut graph,
        lsn: snapshot_lsn,
        path,
        skipped,
        ..
    } = load_snapshot(&RealFs, &dir.join("snapshots"), &GraphOptions::default())?;
    let wal = crate::wal::replay_read_only(&dir.join("wal"), snapshot_lsn, |lsn, payload| {
        apply_record(&mut graph, lsn, payload)
    })?;
    graph.finish_bulk_load();
    Ok(Inspection {
        graph,
        snapshot: path,
        snapshot_lsn,
        skipped_snapshots: skipped,
        wal,
    })
}

fn apply_record(graph: &mut IdentityGraph, lsn: Lsn, payload: &[u8]) -> Result<(), String> {
    let event = Event::decode_borrowed(payload)
        .map_err(|e| format!("undecodable event at LSN {lsn}: {e}"))?;
    match event {
        EventRef::ContactInserted(row) => graph.apply_insert(row),
        EventRef::Other(event) => graph.apply(&event),
    }
    .map_err(|e| format!("event at LSN {lsn} does not apply: {e}"))
}

impl Store {
    /// Opens the data directory `dir` (creating it if missing): takes its lock, loads the
    /// newest valid snapshot, replays the log after it (cutting a torn tail with a warning),
    /// and starts the log writer. SPEC.md §8.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another process serves `dir`; [`StoreError::Wal`] or
    /// [`StoreError::Snapshot`] naming file and offset for corruption; [`StoreError::Io`] when
    /// the directory cannot be created.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<(Arc<Store>, Recovery), StoreError> {
        Store::open_with(dir, options, Arc::new(RealFs))
    }

    /// [`Store::open`] on the given [`Storage`]: the lock, the log and the snapshots all go
    /// through `storage` (tests pass the test-only `storage::FaultFs`; `open` passes
    /// [`RealFs`]).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(
        dir: &Path,
        options: StoreOptions,
        storage: Arc<dyn Storage>,
    ) -> Result<(Arc<Store>, Recovery), StoreError> {
        let fs = &*storage;
        snapshot::create_dir_durably_in(fs, dir)?;
        let lock_path = dir.join("LOCK");
        let lock = fs.lock(&lock_path).map_err(|source| StoreError::Io {
            path: lock_path.clone(),
            source,
        })?;
        let Some(lock) = lock else {
            return Err(StoreError::Locked(dir.to_path_buf()));
        };
        let started = Instant::now();
        let Loaded {
            mut graph,
            lsn: snapshot_lsn,
            path: snapshot_path,
            contacts: snapshot_contacts,
            skipped,
            skipped_paths,
        } = load_snapshot(fs, &dir.join("snapshots"), &options.graph)?;
        if let Some(path) = &snapshot_path {
            tracing::info!(
                path = %path.display(),
                lsn = snapshot_lsn,
                contacts = snapshot_contacts,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "snapshot loaded; replaying the log"
            );
        }
        let wal_options = WalOptions {
            fsync: options.fsync,
            segment_bytes: options.segment_bytes,
            commit_delay: options.commit_delay,
            busy_commit_delay: options.busy_commit_delay,
        };
        let replay_started = Instant::now();
        let mut replayed: u64 = 0;
        let (wal, report) = Wal::open_with(
            Arc::clone(&storage),
            &dir.join("wal"),
            wal_options,
            snapshot_lsn,
            |lsn, payload| {
                apply_record(&mut graph, lsn, payload)?;
                replayed += 1;
                if replayed.is_multiple_of(REPLAY_PROGRESS_EVERY) {
                    tracing::info!(
                        events_replayed = replayed,
                        lsn,
                        elapsed_ms = replay_started.elapsed().as_millis() as u64,
                        "recovery progress"
                    );
                }
                Ok::<(), String>(())
            },
        )?;
        let indexed = Instant::now();
        graph.finish_bulk_load();
        tracing::info!(
            elapsed_ms = indexed.elapsed().as_millis() as u64,
            "email and phone indexes built"
        );
        debug_assert_eq!(graph.check_invariants(), Ok(()));
        // Recovery succeeded from an older snapshot: set the damaged newer ones aside (kept
        // for inspection) so retention never counts them as good.
        for path in &skipped_paths {
            let mut aside = path.clone().into_os_string();
            aside.push(".corrupt");
            match fs.rename(path, Path::new(&aside)) {
                Ok(()) => {
                    tracing::warn!(from = %path.display(), to = ?aside, "damaged snapshot set aside")
                }
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "could not set a damaged snapshot aside")
                }
            }
        }
        if !skipped_paths.is_empty() {
            snapshot::sync_dir_in(fs, &dir.join("snapshots"))?;
        }
        let lsn = report.last_lsn.max(snapshot_lsn);
        let store = Store {
            state: RwLock::new(State {
                graph,
                lsn,
                changed: hashbrown::HashMap::new(),
            }),
            wal,
            dir: dir.to_path_buf(),
            since_snapshot: AtomicU64::new(report.records_replayed),
            snapshotting: AtomicBool::new(false),
            snapshot_lock: Mutex::new(snapshot_path.as_ref().map(|_| snapshot_lsn)),
            snapshot_thread: Mutex::new(None),
            closing: AtomicBool::new(false),
            compacting: AtomicBool::new(false),
            compaction_wanted: AtomicBool::new(false),
            compact_thread: Mutex::new(None),
            options,
            storage,
            _lock: lock,
        };
        let recovery = Recovery {
            snapshot: snapshot_path,
            snapshot_contacts,
            wal: report,
            skipped_snapshots: skipped,
        };
        Ok((Arc::new(store), recovery))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// False once the log has failed: nothing more can be acknowledged (SPEC.md §6 `/healthz`).
    pub fn healthy(&self) -> bool {
        !self.wal.is_failed()
    }

    async fn durable(&self, lsn: Lsn) -> Result<(), StoreError> {
        self.wal
            .durable(lsn)
            .await
            .map_err(|_| StoreError::Unavailable)
    }

    /// Answers `/identify` (SPEC.md §3): pure reads under the shared lock, writes under the
    /// exclusive lock, and in both cases only once the state answered from is durable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed (before or while waiting);
    /// [`StoreError::Apply`] when the graph is full.
    pub async fn identify(
        self: &Arc<Self>,
        request: &IdentifyRequest,
    ) -> Result<(Identity, Outcome), StoreError> {
        self.identify_with(request, |identity| identity.to_identity())
            .await
    }

    /// [`Store::identify`], with the answer rendered by `render` from the identity read in
    /// place, under the lock it was decided or written under (so `render` must be quick: the
    /// HTTP layer serializes the JSON answer there, without copying the values out first).
    ///
    /// # Errors
    /// As [`Store::identify`].
    pub async fn identify_with<T: Send>(
        self: &Arc<Self>,
        request: &IdentifyRequest,
        render: impl Fn(&IdentityView<'_>) -> T + Send,
    ) -> Result<(T, Outcome), StoreError> {
        /// What the shared lock's decision leaves once the lock is released.
        enum Decided<T> {
            Read { answer: T, changed_at: Lsn },
            Write { events: Vec<Event>, planned_at: Lsn },
        }
        let decided = {
            let state = self.state.read();
            if state.lsn == Lsn::MAX {
                return Err(StoreError::Unavailable);
            }
            // The clock is read only if the request writes (a pure read stamps nothing).
            match state.graph.decide(request, Timestamp::now) {
                Decision::Read(key, identity) => Decided::Read {
                    answer: render(&identity),
                    // Everything a pure read reveals was last changed at `changed_at` (older
                    // changes to the identity are durable or have smaller LSNs).
                    changed_at: Self::changed_at(&self.wal, &state, key),
                },
                Decision::Write(events) => Decided::Write {
                    events,
                    planned_at: state.lsn,
                },
            }
        };
        let (planned, planned_at) = match decided {
            Decided::Read { answer, changed_at } => {
                self.durable(changed_at).await?;
                return Ok((answer, Outcome::PureRead));
            }
            Decided::Write { events, planned_at } => (events, planned_at),
        };
        if self.wal.is_failed() {
            return Err(StoreError::Unavailable);
        }
        let (identity, outcome, lsn, applied) = {
            let mut state = self.state.write();
            // The plan made under the shared lock holds if no event was applied since (every
            // change of the graph is an event with the next LSN, and `plan` depends only on the
            // graph, the request and the time it read); otherwise plan again under the write
            // lock, at the time of this second plan (the graph's clock never goes back:
            // `IdentityGraph::clock`).
            let events = if state.lsn == planned_at {
                planned
            } else {
                state.graph.plan(request, Timestamp::now())
            };
            let mut outcome = Outcome::PureRead;
            for event in &events {
                self.apply_and_log(&mut state, event)?;
                outcome = match event {
                    Event::ContactInserted(c) if c.link.is_none() => Outcome::NewPrimary,
                    Event::ContactInserted(_) => Outcome::NewSecondary,
                    Event::IdentitiesMerged { .. } | Event::IdentitiesLinked { .. } => {
                        Outcome::Merge
                    }
                    Event::MergeRefused(refusal) => {
                        tracing::warn!(
                            primary = refusal.primary,
                            other = ?refusal.other,
                            limit = refusal.limit,
                            "identity size cap refused a merge or new secondary"
                        );
                        Outcome::Refused
                    }
                    // `plan` never produces these.
                    Event::ContactDeleted { .. } | Event::IdentityErased { .. } => outcome,
                };
            }
            let (key, identity) = state
                .graph
                .answer_after(request, &events)
                .map(|(key, identity)| (key, render(&identity)))
                .ok_or(ApplyError::Full)?;
            if !events.is_empty() {
                Self::mark_changed(&self.wal, &mut state, key);
            }
            (identity, outcome, state.lsn, events.len() as u64)
        };
        if applied > 0 {
            self.maybe_snapshot(applied);
        }
        self.durable(lsn).await?;
        Ok((identity, outcome))
    }

    /// Applies `event` to the graph and appends it to the log, under the write lock held by the
    /// caller. The event is encoded first, so an encoding failure changes nothing.
    ///
    /// # Errors
    /// [`StoreError::Apply`] when the event does not apply (nothing changed);
    /// [`StoreError::Unavailable`] when the log refuses the record: memory is then ahead of the
    /// log for good, so the state's LSN is poisoned (`Lsn::MAX`): every answer waits for
    /// durability up to it and that wait always fails, so this state is never revealed (nor
    /// snapshotted) until a restart recovers from disk.
    fn apply_and_log(&self, state: &mut State, event: &Event) -> Result<Lsn, StoreError> {
        let bytes = event.encode().map_err(|_| StoreError::Unavailable)?;
        state.graph.apply(event)?;
        match self.wal.append(&bytes) {
            Ok(lsn) => {
                state.lsn = lsn;
                Ok(lsn)
            }
            Err(_) => {
                state.lsn = Lsn::MAX;
                Err(StoreError::Unavailable)
            }
        }
    }

    /// The LSN a read of the identity `key` must wait for: its last change ([`Self::mark_changed`]),
    /// or 0 when it has none pending. When every applied event is durable (the usual case on a
    /// read-mostly load) nothing is looked up: one atomic load instead of a probe (issue 3).
    fn changed_at(wal: &Wal, state: &State, key: IdentityKey) -> Lsn {
        if wal.durable_lsn() >= state.lsn {
            return 0;
        }
        state.changed.get(&key).copied().unwrap_or(0)
    }

    /// Remembers that the identity `key` was last changed at the state's LSN (pure reads of it
    /// wait for that LSN), pruning entries already durable now and then.
    fn mark_changed(wal: &Wal, state: &mut State, key: IdentityKey) {
        if state.changed.len() >= CHANGED_PRUNE_AT {
            let durable = wal.durable_lsn();
            state.changed.retain(|_, lsn| *lsn > durable);
        }
        let lsn = state.lsn;
        state.changed.insert(key, lsn);
    }

    /// `GET /identities?email=&phoneNumber=` (issue 5): the identity the values lead to, read
    /// under the shared lock without planning or writing anything, once what it reveals is
    /// durable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn lookup(&self, request: &IdentifyRequest) -> Result<Lookup, StoreError> {
        let (lookup, lsn) = {
            let state = self.state.read();
            if state.lsn == Lsn::MAX {
                return Err(StoreError::Unavailable);
            }
            let lookup = state.graph.lookup(request);
            let lsn = match &lookup {
                Lookup::Found(key, _) => Self::changed_at(&self.wal, &state, *key),
                // A conflict or a miss reveals the state of two identities or of none: wait
                // for everything applied.
                Lookup::Conflict { .. } | Lookup::NotFound => state.lsn,
            };
            (lookup, lsn)
        };
        self.durable(lsn).await?;
        Ok(lookup)
    }

    /// `GET /identities/{contactId}` (issue 5): the consolidated identity containing contact
    /// `id` and all its rows (deleted ones included, id order), once durable; `None` for an
    /// unknown or erased id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn identity(
        &self,
        id: ContactId,
    ) -> Result<Option<(Identity, Vec<ContactRow>)>, StoreError> {
        let (found, lsn) = {
            let state = self.state.read();
            let found = state
                .graph
                .identity_of(id)
                .zip(state.graph.identity_rows(id));
            (found, state.lsn)
        };
        self.durable(lsn).await?;
        Ok(found)
    }

    /// `GET /identities/{contactId}/history` (issue 5), once durable; `None` for an unknown or
    /// erased id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn history(&self, id: ContactId) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let (history, lsn) = {
            let state = self.state.read();
            (state.graph.history(id), state.lsn)
        };
        self.durable(lsn).await?;
        Ok(history)
    }

    /// `DELETE /contacts/{id}` (issue 5 "Deletion"): logs and applies
    /// [`Event::ContactDeleted`] and answers the deleted row once durable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn delete_contact(self: &Arc<Self>, id: ContactId) -> Result<Deletion, StoreError> {
        let now = Timestamp::now();
        let (deletion, lsn) = {
            let mut state = self.state.write();
            if state.lsn == Lsn::MAX {
                return Err(StoreError::Unavailable);
            }
            match state.graph.contact(id) {
                None => (Deletion::NotFound, state.lsn),
                Some(row) if row.deleted_at.is_some() => (Deletion::AlreadyDeleted(row), state.lsn),
                Some(_) => {
                    let at = state.graph.clock(now);
                    self.apply_and_log(&mut state, &Event::ContactDeleted { id, at })?;
                    if let Some(key) = state.graph.identity_key_of(id) {
                        Self::mark_changed(&self.wal, &mut state, key);
                    }
                    let row = state
                        .graph
                        .contact(id)
                        .ok_or(ApplyError::UnknownContact(id))?;
                    (Deletion::Deleted(row), state.lsn)
                }
            }
        };
        if matches!(deletion, Deletion::Deleted(_)) {
            self.maybe_snapshot(1);
        }
        self.durable(lsn).await?;
        Ok(deletion)
    }

    /// `DELETE /identities/{contactId}?erase=true` (issue 5 "Erasure"): logs and applies
    /// [`Event::IdentityErased`] (which carries no personal data), answers once durable, and
    /// schedules a compaction ([`Store::compact_blocking`]) on a background thread so the
    /// erased values leave every file within one snapshot's time. `None` for an unknown or
    /// already erased id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn erase_identity(
        self: &Arc<Self>,
        id: ContactId,
    ) -> Result<Option<Erasure>, StoreError> {
        let now = Timestamp::now();
        let (erasure, lsn) = {
            let mut state = self.state.write();
            if state.lsn == Lsn::MAX {
                return Err(StoreError::Unavailable);
            }
            match state.graph.identity_rows(id) {
                None => (None, state.lsn),
                Some(rows) => {
                    let primary = state.graph.find(id).unwrap_or(id);
                    let at = state.graph.clock(now);
                    self.apply_and_log(&mut state, &Event::IdentityErased { id, at })?;
                    let erasure = Erasure {
                        primary_contact_id: primary,
                        contact_ids: rows.iter().map(|r| r.id).collect(),
                    };
                    (Some(erasure), state.lsn)
                }
            }
        };
        if erasure.is_some() {
            self.since_snapshot.fetch_add(1, Ordering::Relaxed);
            self.request_compaction();
        }
        self.durable(lsn).await?;
        Ok(erasure)
    }

    /// Starts a background compaction unless one is already pending; a compaction requested
    /// while one runs makes it run once more, so every erasure is covered by a compaction that
    /// started after it.
    fn request_compaction(self: &Arc<Self>) {
        self.compaction_wanted.store(true, Ordering::Release);
        if self.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("idrecon-compact".into())
            .spawn(move || {
                loop {
                    store.compaction_wanted.store(false, Ordering::Release);
                    if let Err(error) = store.compact_blocking() {
                        tracing::error!(%error, "compaction after erasure failed; retrying after the next erasure or POST /admin/compact");
                        break;
                    }
                    if !store.compaction_wanted.load(Ordering::Acquire) {
                        break;
                    }
                }
                store.compacting.store(false, Ordering::Release);
            });
        match spawned {
            Ok(handle) => {
                let previous = self.compact_thread.lock().replace(handle);
                if let Some(previous) = previous {
                    let _ = previous.join();
                }
            }
            Err(_) => self.compacting.store(false, Ordering::Release),
        }
    }

    /// Compaction (issue 5 "Erasure", `POST /admin/compact`): rolls the log to a new segment,
    /// writes a snapshot of the state at the roll, then removes every other snapshot (damaged
    /// ones set aside included) and every log segment the snapshot covers. Afterwards no file
    /// under the data directory holds a value erased before the compaction started. Until the
    /// next regular snapshot only one snapshot exists (the fallback to an older one is given
    /// up, because the older one holds the erased values).
    ///
    /// Holds the exclusive lock only for the roll (writing out the queued records and creating
    /// a segment file); the snapshot is captured and streamed like any other, unpaced.
    ///
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
        let at_roll = |state: &mut State| {
            if state.lsn == Lsn::MAX {
                return Err(StoreError::Unavailable);
            }
            // Every record up to `state.lsn` goes to segments below the new one.
            self.wal
                .roll_segment()
                .map(|_| ())
                .map_err(|_| StoreError::Unavailable)
        };
        let written = self.write_snapshot(WritePace::Unlimited, at_roll)?;
        let lsn = written.lsn;
        *last_snapshot = Some(lsn);
        let fs = &*self.storage;
        let snapshots_dir = self.dir.join("snapshots");
        let snapshots_removed = snapshot::remove_all_but_in(fs, &snapshots_dir, lsn)?;
        let segments_removed = self.wal.remove_segments_through(lsn)?;
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

    /// Waits for a background compaction in progress, if any (tests; shutdown).
    pub fn wait_for_compaction(&self) {
        let handle = self.compact_thread.lock().take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// The row `id` (SPEC.md §6), once durable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn contact(&self, id: ContactId) -> Result<Option<ContactRow>, StoreError> {
        let (row, lsn) = {
            let state = self.state.read();
            (state.graph.contact(id), state.lsn)
        };
        self.durable(lsn).await?;
        Ok(row)
    }

    /// Up to `limit` rows after id `after`, in id order (SPEC.md §6), once durable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn contacts_after(
        &self,
        after: ContactId,
        limit: usize,
    ) -> Result<Vec<ContactRow>, StoreError> {
        let (rows, lsn) = {
            let state = self.state.read();
            (state.graph.contacts_after(after, limit), state.lsn)
        };
        self.durable(lsn).await?;
        Ok(rows)
    }

    /// Runs `f` on the graph under the shared lock (for tests, export and statistics). The
    /// state seen may not be durable yet.
    pub fn with_graph<T>(&self, f: impl FnOnce(&IdentityGraph) -> T) -> T {
        f(&self.state.read().graph)
    }

    /// LSN of the last event applied.
    pub fn lsn(&self) -> Lsn {
        self.state.read().lsn
    }

    fn maybe_snapshot(self: &Arc<Self>, applied: u64) {
        let every = self.options.snapshot_every;
        let since = self.since_snapshot.fetch_add(applied, Ordering::Relaxed) + applied;
        if every == 0 || since < every || self.snapshotting.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("idrecon-snapshot".into())
            .spawn(move || {
                background_priority();
                if let Err(error) = store.snapshot_paced(store.options.snapshot_pace) {
                    tracing::error!(%error, "snapshot failed; will retry after more events");
                }
                cpu_load::report_background();
                store.snapshotting.store(false, Ordering::Release);
            });
        match spawned {
            // The previous thread (if any) has finished: `snapshotting` was clear.
            Ok(handle) => {
                let previous = self.snapshot_thread.lock().replace(handle);
                if let Some(previous) = previous {
                    let _ = previous.join();
                }
            }
            Err(_) => self.snapshotting.store(false, Ordering::Release),
        }
    }

    /// Waits for a background snapshot in progress, if any (it holds a reference to the store,
    /// so the data directory stays locked until it ends).
    pub fn wait_for_snapshot(&self) {
        let handle = self.snapshot_thread.lock().take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Takes a snapshot now, as fast as the device allows (shutdown, tests), blocking the
    /// calling thread for the file write, not the graph: see [`Store::snapshot_paced`].
    ///
    /// # Errors
    /// As [`Store::snapshot_paced`].
    pub fn snapshot_blocking(&self) -> Result<Option<Lsn>, StoreError> {
        self.snapshot_paced(WritePace::Unlimited)
    }

    /// Takes a snapshot now, its bytes written no faster than `pace`: captures the state
    /// (copy-on-write) and streams it to a temp file in chunks taken under the shared lock,
    /// waits until the log is durable up to the snapshot's LSN, publishes the file (rename,
    /// directory fsync), keeps the [`SNAPSHOTS_KEPT`] newest and removes log segments wholly
    /// below the oldest kept. Returns the snapshot's LSN, or `None` when there was nothing new
    /// since the last snapshot. Counts [`crate::metrics::SNAPSHOTS`] and records
    /// [`crate::metrics::SNAPSHOT_DURATION`] (seconds, capture to pruning, pauses included).
    ///
    /// # Errors
    /// [`StoreError::Snapshot`] / [`StoreError::Wal`] on I/O failure (the previous snapshots
    /// and the log stay valid; the temp file is removed); [`StoreError::Unavailable`] when the
    /// log has failed.
    pub fn snapshot_paced(&self, pace: WritePace) -> Result<Option<Lsn>, StoreError> {
        let started = Instant::now();
        let result = self.snapshot_inner(pace);
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

    fn snapshot_inner(&self, pace: WritePace) -> Result<Option<Lsn>, StoreError> {
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
        let fs = &*self.storage;
        let snapshots_dir = self.dir.join("snapshots");
        let oldest_kept = snapshot::prune_in(fs, &snapshots_dir, SNAPSHOTS_KEPT)?;
        let removed = match oldest_kept {
            Some(oldest) if snapshot::list_in(fs, &snapshots_dir)?.len() >= SNAPSHOTS_KEPT => {
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

    /// Writes a snapshot of the state at one LSN and publishes it, for [`Store::snapshot_paced`]
    /// and [`Store::compact_blocking`], whose caller holds `snapshot_lock`.
    ///
    /// Under the write lock, for an instant, `at_capture` runs (compaction rolls the log there)
    /// and the capture starts. The state is then streamed to a temp file
    /// in chunks of [`CAPTURE_CHUNK`] entries, each taken under the shared lock only: writers run
    /// between chunks, and the graph keeps pre-images of what they change (copy-on-write) until
    /// the file is written. The file is published once the log is durable up to its LSN.
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
        let snapshots_dir = self.dir.join("snapshots");
        let written = self.write_captured(&snapshots_dir, lsn, cursor, pace);
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
        dir: &Path,
        lsn: Lsn,
        cursor: crate::graph::CaptureCursor,
        pace: WritePace,
    ) -> Result<snapshot::PreparedSnapshot<'_>, StoreError> {
        let mut writer =
            snapshot::SnapshotWriter::create(&*self.storage, dir, lsn, cursor.next_id, pace)?
                .stop_pacing_when(&self.closing);
        let entries = CapturedEntries {
            state: &self.state,
            cursor,
            buffer: Vec::with_capacity(CAPTURE_CHUNK + 1),
            done: false,
        };
        for entry in entries {
            writer.push(&entry)?;
        }
        Ok(writer.finish()?)
    }

    /// Clean shutdown: a final snapshot (so the next start replays nothing), then flush and
    /// close the log. Safe to call more than once.
    ///
    /// # Errors
    /// As [`Store::snapshot_blocking`] and [`Wal::close`].
    pub fn close(&self) -> Result<(), StoreError> {
        self.closing.store(true, Ordering::Relaxed);
        self.wait_for_compaction();
        self.wait_for_snapshot();
        let snapshot = if self.wal.is_failed() {
            Ok(None)
        } else {
            self.snapshot_blocking()
        };
        self.wal.close()?;
        snapshot.map(|_| ())
    }
}
