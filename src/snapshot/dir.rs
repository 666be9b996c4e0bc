//! [`SnapshotDir`]: one directory of snapshot files on one [`Storage`]. File names,
//! listing, atomic publication, retention and compaction, and reading a listed file, all go
//! through it, so the store, the command line and tests name the storage once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{file_name, is_temp_name, lsn_of_file_name};
use super::{
    SnapshotError, SnapshotInfo, SnapshotItem, SnapshotWriter, WritePace, io_err, reader, writer,
};
use crate::contact::ContactId;
use crate::storage::{RealFs, Storage};
use crate::wal::Lsn;

/// A snapshot directory (a data directory's `snapshots/`) and the [`Storage`] its files are
/// read and written through.
///
/// Creating one does no I/O; the directory need not exist until a snapshot is written
/// ([`SnapshotDir::write_file`] and [`SnapshotDir::writer`] create it durably). Snapshot files
/// are named `{lsn:020}.snap`; files being written are `{lsn:020}.snap.tmp.*` and are never
/// listed.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    fs: Arc<dyn Storage>,
    path: PathBuf,
}

impl SnapshotDir {
    /// The snapshot directory at `path`, accessed through `storage` (the store passes its own
    /// storage, tests the test-only `FaultFs`).
    pub fn new(storage: Arc<dyn Storage>, path: impl Into<PathBuf>) -> SnapshotDir {
        SnapshotDir {
            fs: storage,
            path: path.into(),
        }
    }

    /// The snapshot directory at `path` on the real file system ([`RealFs`]): the command line
    /// and tools.
    pub fn on_disk(path: impl Into<PathBuf>) -> SnapshotDir {
        SnapshotDir::new(Arc::new(RealFs), path)
    }

    /// The directory's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the snapshot at `lsn` in this directory (whether or not it exists).
    pub fn path_for(&self, lsn: Lsn) -> PathBuf {
        self.path.join(file_name(lsn))
    }

    /// Creates the directory (and missing parents) and fsyncs it and its parents, so its entry
    /// survives a crash: see [`crate::storage::create_dir_durably`].
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the directory that could not be created or fsynced.
    pub fn create(&self) -> Result<(), SnapshotError> {
        Ok(crate::storage::create_dir_durably(&*self.fs, &self.path)?)
    }

    /// Fsyncs the directory, so that file creations, renames and removals in it are durable.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the directory.
    pub fn sync(&self) -> Result<(), SnapshotError> {
        self.fs.sync_dir(&self.path).map_err(io_err(&self.path))
    }

    /// The snapshots in the directory, oldest first, as `(lsn, path)`. A missing directory has
    /// none. Files that are not named like a snapshot (temp files left by a crash during a
    /// write, damaged snapshots set aside as `.corrupt`) are left out.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] when the directory exists but cannot be listed.
    pub fn list(&self) -> Result<Vec<(Lsn, PathBuf)>, SnapshotError> {
        let names = match self.fs.list_files(&self.path) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        let mut found: Vec<(Lsn, PathBuf)> = names
            .into_iter()
            .filter_map(|name| Some((lsn_of_file_name(&name)?, self.path.join(&name))))
            .collect();
        found.sort();
        Ok(found)
    }

    /// Retention: removes all but the `keep` newest snapshots and any leftover temp files (the
    /// latter best effort), then fsyncs the directory if a snapshot was removed. Returns the
    /// LSN of the oldest snapshot kept, `None` when none is left.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the directory or file when listing, removing a snapshot or
    /// the fsync fails.
    pub fn prune(&self, keep: usize) -> Result<Option<Lsn>, SnapshotError> {
        let all = self.list()?;
        let cut = all.len().saturating_sub(keep);
        for (_, path) in &all[..cut] {
            self.fs.remove_file(path).map_err(io_err(path))?;
        }
        if let Ok(names) = self.fs.list_files(&self.path) {
            for name in names {
                if is_temp_name(&name) {
                    let _ = self.fs.remove_file(&self.path.join(name));
                }
            }
        }
        if cut > 0 {
            self.sync()?;
        }
        Ok(all.get(cut).map(|(lsn, _)| *lsn))
    }

    /// Removes the temp files of snapshots that were being written when a process stopped
    /// (`*.snap.tmp.*`: a crash or `kill -9` during a snapshot or an import leaves one; each
    /// is as large as the snapshot it was becoming), then fsyncs the directory if anything was
    /// removed. Returns how many were removed; a missing directory has none. Only the process
    /// holding the data directory's lock may call it: another one's snapshot in progress would
    /// lose its file.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the directory or file when listing, a removal or the fsync
    /// fails. A file already gone is not an error.
    pub fn remove_temp_files(&self) -> Result<usize, SnapshotError> {
        let names = match self.fs.list_files(&self.path) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        let mut removed = 0;
        for name in names.into_iter().filter(|n| is_temp_name(n)) {
            let path = self.path.join(&name);
            match self.fs.remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        if removed > 0 {
            self.sync()?;
        }
        Ok(removed)
    }

    /// Compaction (docs/behaviour.md §6.8): removes every file in the directory except the
    /// snapshot at `keep` — older snapshots, damaged ones set aside as `.corrupt`, leftover
    /// temp files — so no file still holds values an erasure removed (§6.7), then fsyncs the
    /// directory if anything was removed. Returns how many files were removed.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the directory or file when listing (the directory must
    /// exist), removing or the fsync fails. A file already gone is not an error.
    pub fn remove_all_but(&self, keep: Lsn) -> Result<usize, SnapshotError> {
        let kept = file_name(keep);
        let names = self.fs.list_files(&self.path).map_err(io_err(&self.path))?;
        let mut removed = 0;
        for name in names.into_iter().filter(|n| *n != kept) {
            let path = self.path.join(&name);
            match self.fs.remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        if removed > 0 {
            self.sync()?;
        }
        Ok(removed)
    }

    /// Renames the snapshot at `path`, which failed to load, to `path` + `.corrupt`: kept for
    /// inspection, but no longer listed, so retention never counts it as a good snapshot.
    /// Does not fsync the directory: call [`SnapshotDir::sync`] after the last rename.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the file when the rename fails.
    pub fn set_aside(&self, path: &Path) -> Result<PathBuf, SnapshotError> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(".corrupt");
        let aside = PathBuf::from(aside);
        self.fs.rename(path, &aside).map_err(io_err(path))?;
        Ok(aside)
    }

    /// Writes `bytes` (a whole file from [`super::encode`]) as the snapshot at `lsn`,
    /// atomically: creates the directory durably if needed, writes a temp file, fsyncs it,
    /// renames it to [`SnapshotDir::path_for`] `lsn` (replacing a snapshot at the same LSN) and
    /// fsyncs the directory. Returns the final path.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the directory or file on any I/O failure; the temp file is
    /// then removed (best effort) and no final file appears. If only the directory fsync
    /// failed, the file may or may not survive a crash under its final name.
    pub fn write_file(&self, lsn: Lsn, bytes: &[u8]) -> Result<PathBuf, SnapshotError> {
        writer::write_encoded(&*self.fs, &self.path, lsn, bytes)
    }

    /// A new temp file path in the directory for a snapshot received from elsewhere (a cluster
    /// member streams one to a lagging follower): named like the writer's temp files, so start-up
    /// and [`SnapshotDir::prune`] remove it if it is never adopted.
    pub fn receive_path(&self) -> PathBuf {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.path.join(format!(
            "received{}.{}-{n}",
            super::format::TMP_SUFFIX,
            std::process::id()
        ))
    }

    /// Makes the complete snapshot file at `temp` (from [`SnapshotDir::receive_path`], fsynced
    /// by the caller) the snapshot at `lsn`: verifies every checksum and that its header says
    /// `lsn`, renames it to [`SnapshotDir::path_for`] `lsn` and fsyncs the directory.
    ///
    /// # Errors
    /// [`SnapshotError::Corrupt`] when the file does not verify or holds another LSN (it is
    /// left where it is); [`SnapshotError::Io`] when the rename or the fsync fails.
    pub fn adopt(&self, temp: &Path, lsn: Lsn) -> Result<PathBuf, SnapshotError> {
        let info = self.verify(temp)?;
        if info.lsn != lsn {
            return Err(SnapshotError::Corrupt {
                file: temp.to_path_buf(),
                offset: 0,
                reason: format!("holds LSN {}, expected {lsn}", info.lsn),
            });
        }
        let path = self.path_for(lsn);
        self.fs.rename(temp, &path).map_err(io_err(&path))?;
        self.sync()?;
        Ok(path)
    }

    /// Starts streaming the snapshot at `lsn`, whose next contact id is `next_id`, written at
    /// `pace`: see [`SnapshotWriter`]. Creates the directory durably if needed and a new temp
    /// file named after the LSN, the process and a counter (two writers never share one).
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the directory or temp file that could not be created.
    pub fn writer(
        &self,
        lsn: Lsn,
        next_id: ContactId,
        pace: WritePace,
    ) -> Result<SnapshotWriter<'_>, SnapshotError> {
        SnapshotWriter::create(&*self.fs, &self.path, lsn, next_id, pace)
    }

    /// The header of the snapshot file at `path` (from [`SnapshotDir::list`] or
    /// [`SnapshotDir::path_for`]) if its magic and header checksum are valid, reading nothing
    /// else: a hint to size the graph before loading. `None` when the file cannot be opened or
    /// its header does not verify; [`SnapshotDir::read`] still verifies everything.
    pub fn peek(&self, path: &Path) -> Option<SnapshotInfo> {
        reader::peek(&*self.fs, path)
    }

    /// Reads and verifies the snapshot file at `path` (from [`SnapshotDir::list`] or
    /// [`SnapshotDir::path_for`]), passing each entry to `visit` in file order: the contacts in
    /// id order, the history records, the clock. Every chunk is checksum-verified before any
    /// entry in it is decoded or visited. Returns the header.
    ///
    /// # Errors
    /// [`SnapshotError::Corrupt`] naming the file and the byte offset of the damaged header,
    /// chunk or trailer (bad magic, unknown version, checksum mismatch, truncation,
    /// undecodable entry, LSN or next id above [`super::MAX_COUNTER`], entry count mismatch,
    /// bytes after the trailer); [`SnapshotError::Rebuild`] when `visit` fails (entries
    /// before it were visited); [`SnapshotError::Io`] when the file cannot be opened or read.
    pub fn read<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
        &self,
        path: &Path,
        visit: impl FnMut(SnapshotItem<'_>) -> Result<(), E>,
    ) -> Result<SnapshotInfo, SnapshotError> {
        reader::read(&*self.fs, path, visit)
    }

    /// Verifies the snapshot file at `path` end to end without rebuilding anything (`idrecon
    /// check`). Returns the header.
    ///
    /// # Errors
    /// [`SnapshotError::Corrupt`] and [`SnapshotError::Io`] as [`SnapshotDir::read`].
    pub fn verify(&self, path: &Path) -> Result<SnapshotInfo, SnapshotError> {
        self.read(path, |_| Ok::<(), std::convert::Infallible>(()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::super::format::TMP_SUFFIX;
    use super::*;
    use std::fs;

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::on_disk(dir.path());
        for lsn in [5, 9, 12] {
            snapshots
                .write_file(lsn, &encode(lsn, 1, std::iter::empty()).unwrap())
                .unwrap();
        }
        fs::write(
            dir.path().join(format!("{:020}{TMP_SUFFIX}", 20)),
            b"partial",
        )
        .unwrap();
        assert_eq!(snapshots.prune(2).unwrap(), Some(9));
        let left: Vec<Lsn> = snapshots
            .list()
            .unwrap()
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(left, vec![9, 12]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn remove_all_but_keeps_one_snapshot_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::on_disk(dir.path());
        for lsn in [3, 8] {
            snapshots
                .write_file(lsn, &encode(lsn, 1, std::iter::empty()).unwrap())
                .unwrap();
        }
        fs::write(dir.path().join(format!("{:020}.snap.corrupt", 6)), b"x").unwrap();
        assert_eq!(snapshots.remove_all_but(8).unwrap(), 2);
        assert_eq!(snapshots.list().unwrap(), vec![(8, snapshots.path_for(8))]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn remove_temp_files_leaves_snapshots_and_set_aside_files() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::on_disk(dir.path().join("snapshots"));
        assert_eq!(
            snapshots.remove_temp_files().unwrap(),
            0,
            "missing directory"
        );
        snapshots
            .write_file(3, &encode(3, 1, std::iter::empty()).unwrap())
            .unwrap();
        for name in [
            format!("{:020}{TMP_SUFFIX}.41.0", 9),
            format!("{:020}{TMP_SUFFIX}.42.7", 12),
            format!("{:020}.snap.corrupt", 2),
        ] {
            fs::write(snapshots.path().join(name), b"partial").unwrap();
        }
        assert_eq!(snapshots.remove_temp_files().unwrap(), 2);
        assert_eq!(snapshots.list().unwrap(), vec![(3, snapshots.path_for(3))]);
        assert_eq!(fs::read_dir(snapshots.path()).unwrap().count(), 2);
    }
}
