//! The storage interface: every file operation of the log ([`crate::wal`]) and of snapshots
//! ([`crate::snapshot`]) goes through a [`Storage`], so tests can run the whole store on an
//! in-memory file system that fails on demand and loses what was never fsynced.
//!
//! - [`RealFs`] is plain `std::fs`; the writer thread's hot path (one
//!   `write_all_at` and one `sync_data` per batch) costs one virtual call each on top of the
//!   system call.
//! - `FaultFs` (test-only: built with `cfg(test)` or the `fault-injection` feature) keeps
//!   every file in memory with a *live* and a *durable* image and can fail the N-th operation
//!   of a kind; see its docs for the durability model.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// An open file handle for writing, obtained from [`Storage::open_append`] (every
/// [`StorageFile::write_all`] goes to the end of the file, `O_APPEND`) or
/// [`Storage::open_write`] (writes go where [`StorageFile::write_all_at`] says).
pub trait StorageFile: Send {
    /// Appends all of `buf` (handles from [`Storage::open_append`]). On error, any prefix of
    /// `buf` may have been written.
    ///
    /// # Errors
    /// The OS error (`EIO`, `ENOSPC`, …).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Writes all of `buf` at byte `offset` (`pwrite`), extending the file when it ends
    /// before `offset + buf.len()` (a gap reads as zeros). Only for handles from
    /// [`Storage::open_write`]: on an `O_APPEND` handle Linux ignores the offset. On error, any
    /// prefix of `buf` may have been written.
    ///
    /// # Errors
    /// The OS error (`EIO`, `ENOSPC`, …).
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    ///
    /// # Errors
    /// The OS error; after one, the caller must not trust the page cache (never retry).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Writes the file's dirty pages in `offset..offset + len` to the device and waits for
    /// them, without the file's metadata (`sync_file_range` with `WAIT_BEFORE | WRITE |
    /// WAIT_AFTER` on Linux; a no-op elsewhere). Not a durability guarantee (block allocations
    /// and the size are not written, and the device cache is not flushed): it bounds how much
    /// dirty data a later fsync must write, so a large file can be trickled out without each
    /// step also writing the inode, as `fdatasync` of a growing file does. Snapshots use it so
    /// that a log fsync issued meanwhile waits for one piece at most, not for the whole file
    /// (RocksDB's `bytes_per_sync` does the same).
    ///
    /// # Errors
    /// The OS error; like an fsync error, the page cache is then not to be trusted.
    fn write_back(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    ///
    /// # Errors
    /// As [`StorageFile::sync_data`].
    fn sync_all(&mut self) -> io::Result<()>;
    /// Truncates (or extends with zeros) the file to `len` bytes.
    ///
    /// # Errors
    /// The OS error.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// The current file length in bytes.
    ///
    /// # Errors
    /// The OS error.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty (`len() == 0`).
    ///
    /// # Errors
    /// As [`StorageFile::len`].
    fn is_empty(&self) -> io::Result<bool> {
        self.len().map(|n| n == 0)
    }
}

/// The file-system operations the log and snapshots use. `Send + Sync`; shared as
/// `Arc<dyn Storage>`. All paths are as given by the caller (no current-directory magic).
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `dir` and its missing parents (`mkdir -p`); not durable until the parent's
    /// directory is fsynced.
    ///
    /// # Errors
    /// The OS error.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Fsyncs directory `dir`, making creations, renames and removals of its entries durable.
    ///
    /// # Errors
    /// The OS error (`NotFound` if `dir` does not exist).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files directly in `dir` (and of entries whose type cannot be
    /// read), in no particular order; directories and other non-files are left out.
    ///
    /// # Errors
    /// `NotFound` if `dir` does not exist; other OS errors.
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Reads the whole file at `path`.
    ///
    /// # Errors
    /// `NotFound` or another OS error.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens `path` for sequential reading (for files too large to read whole).
    ///
    /// # Errors
    /// `NotFound` or another OS error.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>>;
    /// Opens `path` for appending; with `create_new`, creates it and fails with
    /// `AlreadyExists` if it exists, otherwise it must exist.
    ///
    /// # Errors
    /// `NotFound`, `AlreadyExists` or another OS error.
    fn open_append(&self, path: &Path, create_new: bool) -> io::Result<Box<dyn StorageFile>>;
    /// Opens `path` for positioned writes ([`StorageFile::write_all_at`], no `O_APPEND`); with
    /// `create_new`, creates it and fails with `AlreadyExists` if it exists, otherwise it must
    /// exist. The log's segments use it, to overwrite the zeros they preallocate.
    ///
    /// # Errors
    /// `NotFound`, `AlreadyExists` or another OS error.
    fn open_write(&self, path: &Path, create_new: bool) -> io::Result<Box<dyn StorageFile>>;
    /// Renames `from` to `to`, replacing `to` (not durable until the directory is fsynced).
    ///
    /// # Errors
    /// The OS error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file at `path` (not durable until the directory is fsynced).
    ///
    /// # Errors
    /// `NotFound` or another OS error.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of the data directory `dir` (docs/behaviour.md §8, "One process
    /// per data directory"), held until the returned guard is dropped; `Ok(None)` if another
    /// holder has it.
    ///
    /// The lock is on the directory itself, which cannot be unlinked while it holds files, so
    /// deleting a lock file cannot let a second writer in. [`RealFs`] also locks
    /// `dir/LOCK`, the lock file that binaries before the directory lock used, so that such
    /// a binary and this one still exclude each other.
    ///
    /// # Errors
    /// The OS error opening `dir` or the lock file.
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn Send + Sync>>>;
    /// Bytes an unprivileged process can still write on the file system that holds `dir`
    /// (`statvfs`: available blocks times the fragment size; blocks reserved for root do not
    /// count). One system call, no file is opened. `/healthz` uses it to report a full disk
    /// before a log write fails (docs/behaviour.md §6.9).
    ///
    /// # Errors
    /// The OS error (`NotFound` if `dir` does not exist).
    fn available_space(&self, dir: &Path) -> io::Result<u64>;
}

/// `statvfs(2)` of `dir`: `f_bavail * f_frsize` bytes, saturating.
#[cfg(unix)]
fn statvfs_available(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stats` points to
    // writable memory of the right type, which the kernel fills when the call succeeds.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call succeeded, so it initialized `stats`.
    let stats = unsafe { stats.assume_init() };
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let (blocks, size) = (u64::from(stats.f_bavail), u64::from(stats.f_frsize));
    Ok(blocks.saturating_mul(size))
}

/// Without `statvfs`, free space is unknown and never reported as low.
#[cfg(not(unix))]
fn statvfs_available(_dir: &Path) -> io::Result<u64> {
    Ok(u64::MAX)
}

/// `sync_file_range(2)` of `offset..offset + len` with `WAIT_BEFORE | WRITE | WAIT_AFTER`: see
/// [`StorageFile::write_back`].
#[cfg(target_os = "linux")]
fn write_back_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let to_off = |n: u64| {
        libc::off64_t::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: `file` owns an open descriptor for the duration of the call, and the call
    // takes only integers (no memory is passed).
    let rc =
        unsafe { libc::sync_file_range(file.as_raw_fd(), to_off(offset)?, to_off(len)?, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere a no-op: the final fsync writes everything.
#[cfg(not(target_os = "linux"))]
fn write_back_range(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Ok(())
}

/// Takes an exclusive `flock` on `file` without waiting: `Ok(false)` when another descriptor
/// holds it. Any other failure (a file system without locks) is an error, not "in use".
fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The real file system (`std::fs`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl StorageFile for File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn write_back(&mut self, offset: u64, len: u64) -> io::Result<()> {
        write_back_range(self, offset, len)
    }
    fn sync_all(&mut self) -> io::Result<()> {
        File::sync_all(self)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn len(&self) -> io::Result<u64> {
        self.metadata().map(|m| m.len())
    }
}

/// Opens `path` write-only, `O_APPEND` when `append`; `create_new` as in
/// [`Storage::open_append`].
fn open_for_writing(
    path: &Path,
    create_new: bool,
    append: bool,
) -> io::Result<Box<dyn StorageFile>> {
    let file = OpenOptions::new()
        .write(true)
        .append(append)
        .create_new(create_new)
        .open(path)?;
    Ok(Box::new(file))
}

impl Storage for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir).and_then(|d| d.sync_all())
    }
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // Follows symlinks. An entry whose metadata cannot be read is listed, so the
            // caller's read of it reports the error with its path.
            if fs::metadata(entry.path()).is_ok_and(|m| !m.is_file()) {
                continue;
            }
            names.push(name);
        }
        Ok(names)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(path)?))
    }
    fn open_append(&self, path: &Path, create_new: bool) -> io::Result<Box<dyn StorageFile>> {
        open_for_writing(path, create_new, true)
    }
    fn open_write(&self, path: &Path, create_new: bool) -> io::Result<Box<dyn StorageFile>> {
        open_for_writing(path, create_new, false)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn Send + Sync>>> {
        // `flock` on a read-only descriptor of the directory: Linux (and the BSDs) lock
        // directories like files, and the lock goes with the descriptor, so it lasts exactly
        // as long as the guard and ends with the process, whatever happens to the names.
        let directory = File::open(dir)?;
        if !directory.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        if !try_lock(&directory)? {
            return Ok(None);
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        if !try_lock(&file)? {
            return Ok(None);
        }
        Ok(Some(Box::new((directory, file))))
    }
    fn available_space(&self, dir: &Path) -> io::Result<u64> {
        statvfs_available(dir)
    }
}

/// An I/O error and the path of the file or directory it happened on.
#[derive(Debug, thiserror::Error)]
#[error("I/O error on {}: {source}", path.display())]
pub struct PathIoError {
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    pub source: io::Error,
}

/// Makes room in `buf` for at least `additional` more bytes without leaving a copy of its
/// contents in freed memory: when it must grow, the bytes move to a new allocation (at least
/// twice the old capacity) and the old one is zeroed, spare capacity included, before it is
/// freed. For buffers that hold values read from the log or a snapshot (docs/behaviour.md
/// §6.7); `Vec::reserve` would leave the old allocation to the allocator as it was.
pub fn reserve_scrubbed(buf: &mut Vec<u8>, additional: usize) {
    let needed = buf.len().saturating_add(additional);
    if needed <= buf.capacity() {
        return;
    }
    let mut bigger = Vec::with_capacity(needed.max(buf.capacity().saturating_mul(2)));
    bigger.extend_from_slice(buf);
    zeroize::Zeroize::zeroize(buf);
    *buf = bigger;
}

/// Appends everything `reader` yields to `buf` (like [`Read::read_to_end`]) and returns the
/// number of bytes read, growing `buf` with [`reserve_scrubbed`] so that no freed allocation
/// keeps a copy of what was read. Reads at most 1 MiB at a time into zero-filled spare
/// capacity.
///
/// # Errors
/// The reader's error (other than `Interrupted`, which is retried); `buf` then holds what was
/// read before it.
pub fn read_to_end_scrubbed(reader: &mut dyn Read, buf: &mut Vec<u8>) -> io::Result<usize> {
    const WINDOW: usize = 1 << 20;
    let start = buf.len();
    loop {
        if buf.len() == buf.capacity() {
            reserve_scrubbed(buf, 64 << 10);
        }
        let len = buf.len();
        let window = (buf.capacity() - len).min(WINDOW);
        buf.resize(len + window, 0);
        match reader.read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                return Ok(len - start);
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(len),
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        }
    }
}

/// Creates `dir` (and missing parents) and fsyncs it and its parent, so the directory entries
/// themselves survive a crash: a new data directory, and its `snapshots/`. The grandparent
/// is fsynced too, best effort: the data directory itself may be new (import creates
/// `DATA/snapshots` in a `DATA` that did not exist).
///
/// # Errors
/// [`PathIoError`] naming `dir` when it cannot be created or fsynced, or its parent when that
/// cannot be fsynced.
pub fn create_dir_durably(fs: &dyn Storage, dir: &Path) -> Result<(), PathIoError> {
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PathIoError { path, source }
    };
    fs.create_dir_all(dir).map_err(at(dir))?;
    fs.sync_dir(dir).map_err(at(dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs.sync_dir(parent).map_err(at(parent))?;
        if let Some(grandparent) = parent.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = fs.sync_dir(grandparent);
        }
    }
    Ok(())
}

#[cfg(any(test, feature = "fault-injection"))]
mod fault;
mod space;
#[cfg(any(test, feature = "fault-injection"))]
pub use fault::{Effect, FaultFs, OpKind};
pub use space::DiskSpace;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_lock_survives_the_removal_of_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let held = RealFs.lock_dir(dir.path()).unwrap().expect("free");
        assert!(dir.path().join("LOCK").exists());
        assert!(RealFs.lock_dir(dir.path()).unwrap().is_none(), "held");
        fs::remove_file(dir.path().join("LOCK")).unwrap();
        assert!(
            RealFs.lock_dir(dir.path()).unwrap().is_none(),
            "held after LOCK was removed"
        );
        drop(held);
        let held = RealFs
            .lock_dir(dir.path())
            .unwrap()
            .expect("released on drop");
        // A process that locks only `LOCK` (a binary from before the directory lock) is
        // excluded too.
        let old = File::options()
            .write(true)
            .open(dir.path().join("LOCK"))
            .unwrap();
        assert!(!try_lock(&old).unwrap());
        drop(held);
        assert!(try_lock(&old).unwrap());
        assert!(
            RealFs.lock_dir(dir.path()).unwrap().is_none(),
            "held by LOCK alone"
        );
        assert!(
            RealFs.lock_dir(&dir.path().join("LOCK")).is_err(),
            "not a directory"
        );
    }

    #[test]
    fn available_space_is_reported_for_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        // Whatever the machine has free, the call succeeds on a directory and fails on none.
        RealFs.available_space(dir.path()).unwrap();
        assert_eq!(
            RealFs
                .available_space(&dir.path().join("missing"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn scrubbed_reads_return_every_byte_across_growths() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut buf = b"prefix".to_vec();
        let read = read_to_end_scrubbed(&mut io::Cursor::new(&data), &mut buf).unwrap();
        assert_eq!(read, data.len());
        assert_eq!(&buf[..6], b"prefix");
        assert_eq!(&buf[6..], &data[..]);
        let capacity = buf.capacity();
        buf.clear();
        reserve_scrubbed(&mut buf, capacity);
        assert_eq!(buf.capacity(), capacity, "enough room: no new allocation");
        reserve_scrubbed(&mut buf, capacity + 1);
        assert!(buf.capacity() >= 2 * capacity);
    }

    #[test]
    fn write_back_keeps_the_data_and_rejects_offsets_past_i64() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = RealFs.open_append(&path, true).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        file.write_back(0, 256 << 10).unwrap();
        file.write_back(256 << 10, 1 << 30).unwrap();
        #[cfg(target_os = "linux")]
        assert_eq!(
            file.write_back(u64::MAX, 1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        file.sync_all().unwrap();
        assert_eq!(fs::read(&path).unwrap(), data);
    }
}
