//! [`FaultFs`]: an in-memory [`Storage`] that models what survives a crash and fails chosen
//! operations. Test-only (`cfg(test)` or the `fault-injection` feature).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Storage, StorageFile};

/// A kind of mutating operation, for counting and for choosing which one fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// [`StorageFile::write_all`] or [`StorageFile::write_all_at`].
    Write,
    /// [`StorageFile::sync_data`] or [`StorageFile::sync_all`] (a file fsync).
    Sync,
    /// [`Storage::sync_dir`] (a directory fsync).
    DirSync,
    /// [`Storage::open_append`] with `create_new`, or [`Storage::create_dir_all`].
    Create,
    /// [`Storage::rename`].
    Rename,
    /// [`Storage::remove_file`].
    Remove,
    /// [`StorageFile::set_len`].
    SetLen,
}

/// What an injected fault does to the operation it hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing happens; the operation fails with `EIO` (for a sync: nothing is made durable,
    /// and that file's dirty data is lost for good, see [`FaultFs`]).
    Eio,
    /// Nothing happens; the operation fails with `ENOSPC`.
    Enospc,
    /// For a write: the first half of the bytes (rounded down) reach the live image, then the
    /// write fails with `EIO`. For any other operation, as [`Effect::Eio`].
    ShortWrite,
}

/// One file's contents.
#[derive(Default)]
struct Inode {
    /// What reads see (the page cache).
    live: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// A sync of this file failed: later syncs "succeed" but make nothing durable (the kernel
    /// dropped the dirty pages: PostgreSQL's "fsyncgate"), so a retry would lie.
    lost: bool,
}

#[derive(Default)]
struct Inner {
    /// Bumped by every crash; handles and views of an older epoch fail every operation.
    epoch: u64,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Directory entries as the running process sees them.
    live: BTreeMap<PathBuf, u64>,
    /// Directory entries that survive a crash.
    durable: BTreeMap<PathBuf, u64>,
    live_dirs: BTreeSet<PathBuf>,
    durable_dirs: BTreeSet<PathBuf>,
    /// Operations done so far per kind (since creation, across crashes).
    counts: HashMap<OpKind, u64>,
    /// Mutating operations done so far (all kinds).
    total: u64,
    /// Pending faults: (kind, the count of that kind it fires at, effect).
    faults: Vec<(OpKind, u64, Effect)>,
    /// Stop the world once `total` reaches this.
    stop_at: Option<u64>,
    /// The world stopped (crash-at-op-N): every operation fails and changes nothing.
    stopped: bool,
    /// Faults fired so far (including the stop).
    injected: u64,
    /// Directories whose lock ([`Storage::lock_dir`]) a guard of this epoch holds. A crash
    /// releases them all, as the death of a process releases its `flock`s.
    locked: BTreeSet<PathBuf>,
    /// What [`Storage::available_space`] reports ([`FaultFs::set_available_space`]); `None`
    /// is unlimited (`u64::MAX`). A property of the disk, so a crash keeps it.
    available: Option<u64>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected EIO: {what}"))
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

impl Inner {
    /// Checks the epoch and the stop, counts a mutating op of `kind`, and returns the fault
    /// that hits it, if any.
    fn begin(&mut self, epoch: u64, kind: Option<OpKind>) -> io::Result<Option<Effect>> {
        if epoch != self.epoch {
            return Err(eio("the process that opened this crashed"));
        }
        if self.stopped {
            return Err(eio("crashed (stopped at op N)"));
        }
        let Some(kind) = kind else {
            return Ok(None);
        };
        self.total += 1;
        if self.stop_at.is_some_and(|n| self.total >= n) {
            self.stopped = true;
            self.injected += 1;
            return Err(eio("crashed (stopped at op N)"));
        }
        let count = self.counts.entry(kind).or_insert(0);
        *count += 1;
        let count = *count;
        if let Some(i) = self
            .faults
            .iter()
            .position(|&(k, n, _)| k == kind && n == count)
        {
            let (_, _, effect) = self.faults.swap_remove(i);
            self.injected += 1;
            return Ok(Some(effect));
        }
        Ok(None)
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        dir.parent().is_none() || self.live_dirs.contains(dir)
    }
}

/// In-memory file system for fault-injection tests (test-only: `cfg(test)` or the
/// `fault-injection` feature).
///
/// # Durability model (the redb approach)
/// Every file has a **live** image (what reads see, the page cache) and a **durable** image
/// (what survives a crash); the namespace (which names exist, which directories exist) likewise
/// has a live and a durable version:
///
/// - writes and `set_len` change the live image only; a file fsync (`sync_data` / `sync_all`)
///   copies that file's live image to its durable image;
/// - creating, renaming and removing a file, and creating a directory, change the live
///   namespace only; fsyncing directory `D` makes the current entries of `D` (files and
///   subdirectories) durable, including removals;
/// - [`FaultFs::crash`] throws away everything not made durable and returns the view of the
///   restarted "process"; every older view and every file handle opened through one fails all
///   further operations with `EIO` (a dead process does nothing more).
///
/// # Faults
/// [`FaultFs::fail`] makes the N-th operation of a kind (counted from that call) fail with an
/// [`Effect`]; [`FaultFs::stop_after`] makes the N-th mutating operation and everything after
/// it fail without effect (a crash at op N: then call [`FaultFs::crash`]). A failed file fsync
/// also marks that file's dirty data lost: later fsyncs of it report success but make nothing
/// more durable, as Linux did before "fsyncgate" was understood, so code that retries an
/// fsync is caught.
///
/// Paths are plain keys: use absolute paths such as `/data`; `/` always exists.
#[derive(Clone)]
pub struct FaultFs {
    inner: Arc<Mutex<Inner>>,
    epoch: u64,
}

impl std::fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultFs")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Default for FaultFs {
    fn default() -> Self {
        FaultFs::new()
    }
}

impl FaultFs {
    /// An empty file system (only `/`).
    pub fn new() -> FaultFs {
        FaultFs {
            inner: Arc::new(Mutex::new(Inner::default())),
            epoch: 0,
        }
    }

    /// Makes the `nth` (1-based) operation of `kind` from now on fail with `effect`. Several
    /// faults may be pending; each fires once.
    pub fn fail(&self, kind: OpKind, nth: u64, effect: Effect) {
        let mut inner = self.inner.lock();
        let base = inner.counts.get(&kind).copied().unwrap_or(0);
        inner.faults.push((kind, base + nth.max(1), effect));
    }

    /// Makes the `nth` (1-based) mutating operation from now on, and every operation after it,
    /// fail with `EIO` and change nothing: the process "died" there. Follow with
    /// [`FaultFs::crash`].
    pub fn stop_after(&self, nth: u64) {
        let mut inner = self.inner.lock();
        inner.stop_at = Some(inner.total + nth.max(1));
    }

    /// Number of faults that fired so far (each [`FaultFs::fail`] at most once, plus the stop
    /// of [`FaultFs::stop_after`]).
    pub fn injected(&self) -> u64 {
        self.inner.lock().injected
    }

    /// Makes [`Storage::available_space`] report `bytes` from now on (`None`: unlimited, the
    /// default), across crashes. Writes are not limited by it: it simulates what `statvfs`
    /// says, for the free-space check of `/healthz` (docs/behaviour.md §6.9).
    pub fn set_available_space(&self, bytes: Option<u64>) {
        self.inner.lock().available = bytes;
    }

    /// Number of operations of `kind` done so far (including failed ones).
    pub fn ops(&self, kind: OpKind) -> u64 {
        self.inner.lock().counts.get(&kind).copied().unwrap_or(0)
    }

    /// Simulates a power loss: every byte and namespace change not yet fsynced is dropped,
    /// pending faults and the stop are cleared, and the returned view is the new process's.
    /// This view, the older ones and every file handle opened before fail from now on.
    pub fn crash(&self) -> FaultFs {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        inner.epoch += 1;
        inner.faults.clear();
        inner.locked.clear();
        inner.stop_at = None;
        inner.stopped = false;
        // A directory survives if it and all its ancestors were made durable.
        let dirs: BTreeSet<PathBuf> = inner
            .durable_dirs
            .iter()
            .filter(|d| {
                d.ancestors()
                    .skip(1)
                    .all(|a| a.parent().is_none() || inner.durable_dirs.contains(a))
            })
            .cloned()
            .collect();
        let names: BTreeMap<PathBuf, u64> = inner
            .durable
            .iter()
            .filter(|(p, _)| {
                p.parent()
                    .is_some_and(|d| d.parent().is_none() || dirs.contains(d))
            })
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        let used: BTreeSet<u64> = names.values().copied().collect();
        inner.inodes.retain(|id, _| used.contains(id));
        for inode in inner.inodes.values_mut() {
            inode.live = inode.durable.clone();
            inode.lost = false;
        }
        inner.live = names.clone();
        inner.durable = names;
        inner.live_dirs = dirs.clone();
        inner.durable_dirs = dirs;
        FaultFs {
            inner: Arc::clone(&self.inner),
            epoch: inner.epoch,
        }
    }

    /// Paths of the live files directly in `dir`, sorted (for test assertions; works on any
    /// view, even after a crash or stop).
    pub fn files(&self, dir: &Path) -> Vec<PathBuf> {
        let inner = self.inner.lock();
        inner
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect()
    }

    /// The live contents of the file at `path`, if it exists (for test assertions; works on
    /// any view, even after a crash or stop).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let inner = self.inner.lock();
        let id = inner.live.get(path)?;
        inner.inodes.get(id).map(|i| i.live.clone())
    }
}

/// A file handle of a [`FaultFs`].
struct FaultFile {
    fs: FaultFs,
    inode: u64,
}

impl FaultFile {
    fn with<T>(
        &self,
        kind: Option<OpKind>,
        f: impl FnOnce(&mut Inode, Option<Effect>) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut inner = self.fs.inner.lock();
        let effect = inner.begin(self.fs.epoch, kind)?;
        let inode = inner
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| eio("inode gone"))?;
        f(inode, effect)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.with(Some(OpKind::Sync), |inode, effect| {
            if effect.is_some() {
                inode.lost = true;
                return Err(eio("fsync"));
            }
            if !inode.lost {
                inode.durable = inode.live.clone();
            }
            Ok(())
        })
    }
}

/// Writes `buf` into the live image at `start` (extending it with zeros as needed), or, for a
/// fault, nothing (`EIO`, `ENOSPC`) or its first half (a short write, then `EIO`).
fn write_into(
    inode: &mut Inode,
    start: usize,
    buf: &[u8],
    effect: Option<Effect>,
) -> io::Result<()> {
    let written = match effect {
        None => buf,
        Some(Effect::Eio) => return Err(eio("write")),
        Some(Effect::Enospc) => return Err(enospc()),
        Some(Effect::ShortWrite) => &buf[..buf.len() / 2],
    };
    let end = start + written.len();
    if inode.live.len() < end {
        inode.live.resize(end, 0);
    }
    inode.live[start..end].copy_from_slice(written);
    if written.len() < buf.len() {
        return Err(eio("short write"));
    }
    Ok(())
}

impl StorageFile for FaultFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.with(Some(OpKind::Write), |inode, effect| {
            let end = inode.live.len();
            write_into(inode, end, buf, effect)
        })
    }
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eio("offset"))?;
        self.with(Some(OpKind::Write), |inode, effect| {
            write_into(inode, start, buf, effect)
        })
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.sync()
    }
    fn write_back(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        // Starts writeback only: nothing becomes durable, so the model has nothing to do.
        Ok(())
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.sync()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(Some(OpKind::SetLen), |inode, effect| match effect {
            None => {
                inode.live.resize(len as usize, 0);
                Ok(())
            }
            Some(Effect::Enospc) => Err(enospc()),
            Some(_) => Err(eio("set_len")),
        })
    }
    fn len(&self) -> io::Result<u64> {
        self.with(None, |inode, _| Ok(inode.live.len() as u64))
    }
}

fn fail_with(effect: Effect, what: &str) -> io::Error {
    match effect {
        Effect::Enospc => enospc(),
        _ => eio(what),
    }
}

impl Storage for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut inner = self.inner.lock();
        let missing = !inner.dir_exists(dir);
        let effect = inner.begin(self.epoch, missing.then_some(OpKind::Create))?;
        if let Some(effect) = effect {
            return Err(fail_with(effect, "mkdir"));
        }
        for a in dir.ancestors() {
            if a.parent().is_some() && !a.as_os_str().is_empty() {
                inner.live_dirs.insert(a.to_path_buf());
            }
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if !inner.dir_exists(dir) {
            inner.begin(self.epoch, None)?;
            return Err(not_found(dir));
        }
        if inner.begin(self.epoch, Some(OpKind::DirSync))?.is_some() {
            return Err(eio("directory fsync"));
        }
        let in_dir = |p: &Path| p.parent() == Some(dir);
        inner.durable.retain(|p, _| !in_dir(p));
        for (p, &i) in &inner.live {
            if in_dir(p) {
                inner.durable.insert(p.clone(), i);
            }
        }
        for d in &inner.live_dirs {
            if in_dir(d) {
                inner.durable_dirs.insert(d.clone());
            }
        }
        Ok(())
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut inner = self.inner.lock();
        inner.begin(self.epoch, None)?;
        if !inner.dir_exists(dir) {
            return Err(not_found(dir));
        }
        Ok(inner
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut inner = self.inner.lock();
        inner.begin(self.epoch, None)?;
        let id = inner.live.get(path).ok_or_else(|| not_found(path))?;
        Ok(inner
            .inodes
            .get(id)
            .map(|i| i.live.clone())
            .unwrap_or_default())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.read(path)?)))
    }

    fn open_append(&self, path: &Path, create_new: bool) -> io::Result<Box<dyn StorageFile>> {
        let mut inner = self.inner.lock();
        let inode = if create_new {
            let effect = inner.begin(self.epoch, Some(OpKind::Create))?;
            if let Some(effect) = effect {
                return Err(fail_with(effect, "create"));
            }
            if !path.parent().is_some_and(|d| inner.dir_exists(d)) {
                return Err(not_found(path));
            }
            if inner.live.contains_key(path) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            let id = inner.next_inode;
            inner.next_inode += 1;
            inner.inodes.insert(id, Inode::default());
            inner.live.insert(path.to_path_buf(), id);
            id
        } else {
            inner.begin(self.epoch, None)?;
            *inner.live.get(path).ok_or_else(|| not_found(path))?
        };
        Ok(Box::new(FaultFile {
            fs: self.clone(),
            inode,
        }))
    }

    fn open_write(&self, path: &Path, create_new: bool) -> io::Result<Box<dyn StorageFile>> {
        // One handle type serves both: `write_all` appends, `write_all_at` writes in place.
        self.open_append(path, create_new)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut inner = self.inner.lock();
        if let Some(effect) = inner.begin(self.epoch, Some(OpKind::Rename))? {
            return Err(fail_with(effect, "rename"));
        }
        if !to.parent().is_some_and(|d| inner.dir_exists(d)) {
            return Err(not_found(to));
        }
        let id = inner.live.remove(from).ok_or_else(|| not_found(from))?;
        inner.live.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.inner.lock();
        if let Some(effect) = inner.begin(self.epoch, Some(OpKind::Remove))? {
            return Err(fail_with(effect, "remove"));
        }
        inner.live.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn Send + Sync>>> {
        let mut inner = self.inner.lock();
        inner.begin(self.epoch, None)?;
        if !inner.dir_exists(dir) {
            return Err(not_found(dir));
        }
        if !inner.locked.insert(dir.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(DirLock {
            fs: self.clone(),
            dir: dir.to_path_buf(),
        })))
    }

    fn available_space(&self, dir: &Path) -> io::Result<u64> {
        let mut inner = self.inner.lock();
        inner.begin(self.epoch, None)?;
        if !inner.dir_exists(dir) {
            return Err(not_found(dir));
        }
        Ok(inner.available.unwrap_or(u64::MAX))
    }
}

/// The guard of [`FaultFs`]'s [`Storage::lock_dir`]: releases the lock when dropped, unless a
/// crash released it already (a later process may hold it by then).
struct DirLock {
    fs: FaultFs,
    dir: PathBuf,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let mut inner = self.fs.inner.lock();
        if inner.epoch == self.fs.epoch {
            inner.locked.remove(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests;
