//! The Store: the identity graph in memory, the write-ahead log and snapshots on disk, and the
//! concurrency rules between them (docs/behaviour.md §3, §8; docs/design.md).
//!
//! - **Writers are serialized** by the graph's write lock. A write plans, applies and appends
//!   its events to the log while holding it, so log order is apply order.
//! - **Pure reads run in parallel** under the shared lock ([`identify`](Store::identify)).
//! - **No answer before durability.** Every answer waits until the log is durable up to the
//!   last LSN applied when it read the state (its own write or anything it saw), so no answer
//!   reveals state a crash could take back. Locks are never held across that wait, and answers
//!   are copied out under the lock and rendered after it is released.
//! - **Maintenance** (snapshots, compaction) runs on one background thread fed by a channel
//!   (`maintenance.rs`); a snapshot holds the locks only in short chunks (`snapshots.rs`).
//! - **Import** writes a new data directory from an import plan's rows ([`import()`],
//!   `import.rs`).
//!
//! # Data directory
//! ```text
//! DIR/LOCK                     lock file (the directory itself is locked too)
//! DIR/IMPORTING                only while an import writes its snapshot (`import.rs`)
//! DIR/wal/{first_lsn}.wal      log segments
//! DIR/snapshots/{lsn}.snap     the two newest snapshots
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::event::Event;
use crate::graph::{ApplyError, GraphOptions, IdentityGraph, IdentityKey};
use crate::snapshot::{SnapshotDir, SnapshotError, WritePace};
use crate::storage::{RealFs, Storage};
use crate::wal::{FsyncMode, Lsn, Wal, WalError, WalOptions};

mod deletion;
mod identify;
mod import;
mod maintenance;
mod reads;
mod recovery;
mod snapshots;
mod space;
mod split;

pub use deletion::{Deletion, Erasure};
pub use identify::{LARGE_READ_MEMBERS, ReadTurn, over_contact_limit};
pub use import::{
    IMPORT_MARKER, ImportReport, ImportTarget, check_import_target, import, is_interrupted_import,
};
pub use recovery::{Inspection, Recovery, ReplayError, inspect};
pub use snapshots::Compaction;
pub use space::DISK_FULL_BELOW_BYTES;

use maintenance::Maintenance;
use recovery::{Loaded, apply_record_erasure, load_snapshot, set_aside};

/// How many snapshots are kept. The log is kept from the oldest of them on, so a damaged
/// newest snapshot can fall back to the older one plus the log.
pub const SNAPSHOTS_KEPT: usize = 2;

/// Default `--snapshot-write-rate`, in MiB/s: 0, unpaced. Pacing spreads a snapshot's writes
/// (fewer slow log fsyncs while it runs) but did not lower the requests' p99 when measured, and
/// it keeps each capture, with its copy-on-write pre-images, open longer.
pub const DEFAULT_SNAPSHOT_WRITE_MIB_S: u64 = 0;

/// The service's default identity size cap (`serve --max-identity-size`, docs/behaviour.md
/// §3.6): 1 000 contacts, deleted ones included. Without a cap, one client sending new emails
/// with a fixed phone number grows a single identity without bound, and every answer about it
/// (copied and rendered per request) grows with it; 1 000 sits far above a genuine household
/// or company account. The graph's own default ([`GraphOptions::default`]) has no cap: these
/// are the pure rules of §3, and the cap is the service's configuration.
pub const DEFAULT_MAX_IDENTITY_SIZE: u32 = 1_000;

/// The file `DIR/ERASING`: written durably before an erasure's event is logged and removed
/// once a compaction that covers every such erasure has removed the older files. Recovery
/// that finds it (or replays an erasure) compacts before serving, so an erasure answered `200`
/// leaves no file holding the erased values even when the process dies before its compaction
/// (docs/behaviour.md §6.7, §8). Empty.
pub const ERASURE_MARKER: &str = "ERASING";

/// Recovery logs a `recovery progress` line (info) every this many events replayed.
pub const REPLAY_PROGRESS_EVERY: u64 = 1_000_000;

/// Settings of a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// When an acknowledged write is on disk (docs/behaviour.md §7, §8 `--fsync`).
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
    /// Over-merge guards (blocked values, identity size cap) (docs/behaviour.md §3.6). The
    /// default blocks nothing and caps identities at [`DEFAULT_MAX_IDENTITY_SIZE`], as `serve`
    /// does by default.
    pub graph: GraphOptions,
    /// Most contacts (rows, deleted ones included, erased ones not: [`IdentityGraph::len`]) the
    /// store holds (`serve --max-contacts`, docs/behaviour.md §3.6): an `/identify` that would
    /// take it past this many is refused with [`StoreError::CapacityExceeded`] and logs
    /// nothing. `None` (the default): no limit.
    pub max_contacts: Option<u64>,
    /// `/healthz` answers `503 disk_full` while the data directory's file system has fewer
    /// bytes available than this (`serve --disk-full-below-bytes`, docs/behaviour.md §6.9). Default
    /// [`DISK_FULL_BELOW_BYTES`].
    pub disk_full_below_bytes: u64,
    /// How many pure reads of identities over [`LARGE_READ_MEMBERS`] contacts are copied out
    /// and rendered at once (docs/behaviour.md §3.6); 0 counts as 1. Default: one fewer than
    /// the cores, at least one.
    pub large_read_turns: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            fsync: FsyncMode::Batch,
            snapshot_every: 1_000_000,
            snapshot_pace: WritePace::mib_per_second(DEFAULT_SNAPSHOT_WRITE_MIB_S),
            segment_bytes: WalOptions::default().segment_bytes,
            commit_delay: WalOptions::default().commit_delay,
            graph: GraphOptions {
                max_identity_size: Some(DEFAULT_MAX_IDENTITY_SIZE),
                ..GraphOptions::default()
            },
            max_contacts: None,
            disk_full_below_bytes: DISK_FULL_BELOW_BYTES,
            large_read_turns: identify::large_read_turns(),
        }
    }
}

/// Why the store cannot serve a request or open its data directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The log can no longer acknowledge writes (a write or fsync failed): `503`
    /// (docs/behaviour.md §6.9).
    #[error("the write-ahead log has failed; no further writes can be acknowledged")]
    Unavailable,
    /// The log failed to open or recover.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A snapshot failed to read or write.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The graph cannot take another contact.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The request would add a contact to a store that holds its configured maximum
    /// ([`StoreOptions::max_contacts`]); nothing was applied or logged: `507`
    /// (docs/behaviour.md §3.6).
    #[error("the store holds its maximum of {limit} contacts (--max-contacts)")]
    CapacityExceeded {
        /// The configured maximum, in contacts.
        limit: u64,
    },
    /// Snapshots exist but none verifies (each error named, newest first).
    #[error("no snapshot can be loaded: {0}")]
    NoUsableSnapshot(String),
    /// Another process holds the data directory.
    #[error("data directory {} is in use by another process", .0.display())]
    Locked(PathBuf),
    /// The data directory holds an import that did not finish (its marker
    /// [`IMPORT_MARKER`] is there): serving or reading it would show a directory without the
    /// imported rows (docs/behaviour.md §7).
    #[error(
        "data directory {} holds an interrupted import (the file {IMPORT_MARKER} is there): \
         run `idrecon import` into it again, or remove it",
        .0.display()
    )]
    InterruptedImport(PathBuf),
    /// `idrecon import` was given a data directory that is not empty (docs/behaviour.md §7).
    #[error("import needs a new, empty data directory; {} is not empty", .0.display())]
    NotEmpty(PathBuf),
    /// A row of an import plan does not apply to the rows before it (a plan that does not come
    /// from [`crate::rows::plan_import`]); nothing was written.
    #[error("row id {id} does not fit the plan")]
    ImportRow {
        /// The row's id.
        id: crate::contact::ContactId,
        /// Why it does not apply.
        source: ApplyError,
    },
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// Nothing matched: a new primary was recorded (docs/behaviour.md §3.2).
    NewPrimary,
    /// New information for a known identity: a new secondary (§3.4).
    NewSecondary,
    /// Two identities were merged (§3.3).
    Merge,
    /// Nothing was written.
    PureRead,
    /// The identity size cap refused a merge or new secondary; the refusal was logged and the
    /// request answered from the identity of its email (docs/behaviour.md §3.6).
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

/// The graph and how far the log has it.
struct State {
    graph: IdentityGraph,
    /// LSN of the last event applied to `graph`; `Lsn::MAX` once the log refused an event
    /// that memory already holds (nothing may be answered after that).
    lsn: Lsn,
    /// LSN of the last event that changed each identity, for identities changed recently (a
    /// pure read waits only for its own identity's changes, not for every write in flight).
    /// Keys of identities merged away are never looked up again; entries already durable are
    /// pruned.
    changed: hashbrown::HashMap<IdentityKey, Lsn>,
    /// LSN of the last event that changed many identities at once (a split or a block,
    /// docs/behaviour.md §10): every pure read waits for it, which costs one group commit
    /// after such a rare event instead of a `changed` entry per identity it touched.
    changed_everywhere: Lsn,
}

/// The durable identity store. Shared as `Arc<Store>` by the HTTP handlers.
pub struct Store {
    state: RwLock<State>,
    wal: Wal,
    dir: PathBuf,
    options: StoreOptions,
    /// Events applied since the last snapshot started.
    since_snapshot: AtomicU64,
    /// Set while a snapshot is queued on the maintenance task, so at most one is.
    snapshot_queued: AtomicBool,
    /// Serializes snapshots and compactions (maintenance task, explicit, shutdown) and
    /// remembers the LSN of the newest good snapshot (`None` before the first).
    snapshot_lock: Mutex<Option<Lsn>>,
    /// Set by [`Store::close`]: a snapshot in progress stops pacing its writes, so a clean
    /// stop waits for the device, not for `--snapshot-write-rate`.
    closing: AtomicBool,
    /// The background thread that writes snapshots and runs compactions.
    maintenance: Maintenance,
    /// `DIR/snapshots`, on the storage the log also uses (the real file system, or a test's
    /// `FaultFs`).
    snapshots: SnapshotDir,
    /// The free-space reading of the data directory's file system, for `/healthz`.
    disk_space: crate::storage::DiskSpace,
    /// Turns of pure reads of large identities ([`StoreOptions::large_read_turns`] permits).
    large_reads: Arc<tokio::sync::Semaphore>,
    /// Held for the store's lifetime: the exclusive lock of the data directory itself (and of
    /// `DIR/LOCK`, [`Storage::lock_dir`]).
    _lock: Box<dyn Send + Sync>,
    /// The storage of the data directory (for [`ERASURE_MARKER`]).
    storage: Arc<dyn Storage>,
    /// Whether [`ERASURE_MARKER`] exists, and how many erasures relied on it.
    erasure_marker: Mutex<ErasureMarker>,
    /// Erasure requests settled under the write lock (their event logged, or nothing to
    /// erase); a compaction compares it, read at its roll, with
    /// [`ErasureMarker::requested`] to know whether it covers every erasure.
    erasures_settled: AtomicU64,
}

/// The state of [`ERASURE_MARKER`], under [`Store::erasure_marker`].
struct ErasureMarker {
    /// The file exists (durably).
    present: bool,
    /// Erasure requests that made sure the file exists before taking the write lock.
    requested: u64,
}

impl Store {
    /// Opens the data directory `dir` (creating it if missing): takes its lock, loads the
    /// newest valid snapshot, replays the log after it (cutting a torn tail with a warning),
    /// starts the log writer and the maintenance task (docs/behaviour.md §8).
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another process serves `dir`; [`StoreError::Wal`] or
    /// [`StoreError::Snapshot`] naming file and offset for corruption (a record that verifies
    /// but does not replay is [`WalError::Replay`] with a [`ReplayError`] source);
    /// [`StoreError::Io`] when the directory cannot be created or locked;
    /// [`StoreError::InterruptedImport`] when an import into `dir` did not finish.
    ///
    /// Stale snapshot temp files (left by a crash during a snapshot) are removed once the lock
    /// is held, and logged.
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
        crate::storage::create_dir_durably(fs, dir).map_err(|e| StoreError::Io {
            path: e.path,
            source: e.source,
        })?;
        let lock = fs.lock_dir(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let Some(lock) = lock else {
            return Err(StoreError::Locked(dir.to_path_buf()));
        };
        let started = Instant::now();
        let top = fs.list_files(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if top.iter().any(|name| name == IMPORT_MARKER) {
            return Err(StoreError::InterruptedImport(dir.to_path_buf()));
        }
        let erasure_marker = top.iter().any(|name| name == ERASURE_MARKER);
        let snapshots = SnapshotDir::new(Arc::clone(&storage), dir.join("snapshots"));
        // Under the lock no snapshot of another process is in progress: a temp file is what a
        // crash during a snapshot left, and each is as large as a snapshot.
        match snapshots.remove_temp_files() {
            Ok(0) => {}
            Ok(files) => tracing::info!(
                files,
                dir = %snapshots.path().display(),
                "removed temp files of snapshots interrupted by a crash"
            ),
            Err(error) => tracing::warn!(%error, "could not remove stale snapshot temp files"),
        }
        let Loaded {
            mut graph,
            lsn: snapshot_lsn,
            path: snapshot_path,
            contacts: snapshot_contacts,
            skipped,
            skipped_paths,
        } = load_snapshot(&snapshots, &options.graph)?;
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
        };
        let replay_started = Instant::now();
        let mut replayed: u64 = 0;
        let mut erasures_replayed: u64 = 0;
        let (wal, report) = Wal::open_with(
            Arc::clone(&storage),
            &dir.join("wal"),
            wal_options,
            snapshot_lsn,
            |lsn, payload| {
                if apply_record_erasure(&mut graph, payload)? {
                    erasures_replayed += 1;
                }
                replayed += 1;
                if replayed.is_multiple_of(REPLAY_PROGRESS_EVERY) {
                    tracing::info!(
                        events_replayed = replayed,
                        lsn,
                        elapsed_ms = replay_started.elapsed().as_millis() as u64,
                        "recovery progress"
                    );
                }
                Ok::<(), ReplayError>(())
            },
        )?;
        let indexed = Instant::now();
        graph.finish_bulk_load();
        tracing::info!(
            elapsed_ms = indexed.elapsed().as_millis() as u64,
            "email and phone indexes built"
        );
        debug_assert_eq!(graph.check_invariants(), Ok(()));
        // Recovery succeeded from an older snapshot: set the damaged newer ones aside.
        set_aside(&snapshots, &skipped_paths)?;
        let lsn = report.last_lsn.max(snapshot_lsn);
        let disk_full_below_bytes = options.disk_full_below_bytes;
        let large_read_turns = options.large_read_turns;
        let store = Arc::new_cyclic(|weak| Store {
            state: RwLock::new(State {
                graph,
                lsn,
                changed: hashbrown::HashMap::new(),
                changed_everywhere: 0,
            }),
            wal,
            dir: dir.to_path_buf(),
            since_snapshot: AtomicU64::new(report.records_replayed),
            snapshot_queued: AtomicBool::new(false),
            snapshot_lock: Mutex::new(snapshot_path.as_ref().map(|_| snapshot_lsn)),
            closing: AtomicBool::new(false),
            maintenance: Maintenance::start(weak.clone()),
            options,
            snapshots,
            disk_space: crate::storage::DiskSpace::new(
                Arc::clone(&storage),
                dir.to_path_buf(),
                disk_full_below_bytes,
            ),
            large_reads: Arc::new(tokio::sync::Semaphore::new(large_read_turns.max(1))),
            _lock: lock,
            storage,
            erasure_marker: Mutex::new(ErasureMarker {
                present: erasure_marker,
                requested: 0,
            }),
            erasures_settled: AtomicU64::new(0),
        });
        // An erasure whose compaction did not finish: its values may still be in older log
        // segments or snapshots. Finish it before serving anything.
        if erasure_marker || erasures_replayed > 0 {
            tracing::info!(
                marker = erasure_marker,
                erasures_replayed,
                "compacting before serving: an erasure's compaction did not finish"
            );
            store.compact_blocking()?;
        }
        let recovery = Recovery {
            snapshot: snapshot_path,
            snapshot_contacts,
            wal: report,
            skipped_snapshots: skipped,
        };
        Ok((store, recovery))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// False once the log has failed: nothing more can be acknowledged (docs/behaviour.md
    /// §6.9).
    pub fn healthy(&self) -> bool {
        !self.wal.is_failed()
    }

    /// Waits until the log is durable up to `lsn`.
    async fn durable(&self, lsn: Lsn) -> Result<(), StoreError> {
        self.wal
            .durable(lsn)
            .await
            .map_err(|_| StoreError::Unavailable)
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
        self.append_encoded(state, &bytes)
    }

    /// Logs `event`, which the graph has applied already (a split or a block, which the graph
    /// decides and applies in one step); errors as [`Store::apply_and_log`], except that an
    /// encoding failure also poisons the state, since memory is already ahead of the log.
    fn append_applied(&self, state: &mut State, event: &Event) -> Result<Lsn, StoreError> {
        match event.encode() {
            Ok(bytes) => self.append_encoded(state, &bytes),
            Err(_) => {
                state.lsn = Lsn::MAX;
                Err(StoreError::Unavailable)
            }
        }
    }

    /// Appends an applied event's bytes to the log (see [`Store::apply_and_log`]).
    fn append_encoded(&self, state: &mut State, bytes: &[u8]) -> Result<Lsn, StoreError> {
        match self.wal.append(bytes) {
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

    /// The exclusive lock on the state, for an admin write (deletion, erasure, split, block).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed (the state's LSN is poisoned, see
    /// [`Store::apply_and_log`]): nothing may be written or answered any more.
    fn write_state(&self) -> Result<parking_lot::RwLockWriteGuard<'_, State>, StoreError> {
        let state = self.state.write();
        if state.lsn == Lsn::MAX {
            return Err(StoreError::Unavailable);
        }
        Ok(state)
    }

    /// Counts `applied` events towards the next snapshot and queues one on the maintenance
    /// task once `--snapshot-every` is reached (unless one is queued already).
    fn note_applied(&self, applied: u64) {
        let every = self.options.snapshot_every;
        let since = self.since_snapshot.fetch_add(applied, Ordering::Relaxed) + applied;
        if every != 0 && since >= every && !self.snapshot_queued.swap(true, Ordering::AcqRel) {
            self.maintenance.snapshot();
        }
    }

    /// The contacts held and the configured maximum ([`StoreOptions::max_contacts`], `None`
    /// without one), for `/healthz` and `/metrics` (docs/behaviour.md §6.9). O(1) under the
    /// shared lock; the count may include changes not yet durable.
    pub fn capacity(&self) -> (usize, Option<u64>) {
        (self.state.read().graph.len(), self.options.max_contacts)
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

    /// Blocks until every snapshot and compaction queued on the maintenance task before the
    /// call has finished (tests, tools). Returns at once after [`Store::close`].
    pub fn wait_for_maintenance(&self) {
        self.maintenance.wait();
    }

    /// Clean shutdown: finishes the queued maintenance (a pending compaction runs), writes a
    /// final snapshot (so the next start replays nothing), then flushes and closes the log.
    /// Safe to call more than once.
    ///
    /// # Errors
    /// As [`Store::snapshot_blocking`] and [`Wal::close`].
    pub fn close(&self) -> Result<(), StoreError> {
        self.closing.store(true, Ordering::Relaxed);
        self.maintenance.stop();
        let snapshot = if self.wal.is_failed() {
            Ok(None)
        } else {
            self.snapshot_blocking()
        };
        self.wal.close()?;
        snapshot.map(|_| ())
    }
}
