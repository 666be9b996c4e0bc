//! The snapshot directory: file names, listing, atomic publication of an encoded file,
//! retention, and durable creation of the directory itself.

use std::path::{Path, PathBuf};

use super::format::{SUFFIX, TMP_SUFFIX};
use super::{RealFs, SnapshotError, Storage, io_err, writer};
use crate::wal::Lsn;

/// The path of the snapshot at `lsn` inside `dir`.
pub fn path_for(dir: &Path, lsn: Lsn) -> PathBuf {
    dir.join(format!("{lsn:020}{SUFFIX}"))
}

/// Writes `bytes` (from [`encode`]) as the snapshot at `lsn` in `dir` atomically: temp file,
/// fsync, rename, directory fsync. Creates `dir` if needed. Returns the final path.
///
/// # Errors
/// [`SnapshotError::Io`] naming the file on any I/O failure; the temp file is then removed
/// (best effort) and no final file appears.
pub fn write_file(dir: &Path, lsn: Lsn, bytes: &[u8]) -> Result<PathBuf, SnapshotError> {
    write_file_in(&RealFs, dir, lsn, bytes)
}

/// [`write_file`] on the given [`Storage`].
///
/// # Errors
/// As [`write_file`].
pub fn write_file_in(
    fs: &dyn Storage,
    dir: &Path,
    lsn: Lsn,
    bytes: &[u8],
) -> Result<PathBuf, SnapshotError> {
    writer::write_encoded(fs, dir, lsn, bytes)
}

/// Fsyncs a directory so that file creations, renames and removals in it are durable.
///
/// # Errors
/// [`SnapshotError::Io`] naming the directory.
pub fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    sync_dir_in(&RealFs, dir)
}

/// [`sync_dir`] on the given [`Storage`].
///
/// # Errors
/// As [`sync_dir`].
pub fn sync_dir_in(fs: &dyn Storage, dir: &Path) -> Result<(), SnapshotError> {
    fs.sync_dir(dir).map_err(io_err(dir))
}

/// Snapshots in `dir`, oldest first, as `(lsn, path)`. A missing directory has none.
/// Leftover `.snap.tmp` files (from a crash during a write) are ignored.
///
/// # Errors
/// [`SnapshotError::Io`] when the directory cannot be listed.
pub fn list(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, SnapshotError> {
    list_in(&RealFs, dir)
}

/// [`list`] on the given [`Storage`].
///
/// # Errors
/// As [`list`].
pub fn list_in(fs: &dyn Storage, dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, SnapshotError> {
    let names = match fs.list_files(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut found = Vec::new();
    for name in names {
        if let Some(stem) = name.strip_suffix(SUFFIX)
            && stem.len() == 20
            && let Ok(lsn) = stem.parse::<Lsn>()
        {
            found.push((lsn, dir.join(&name)));
        }
    }
    found.sort();
    Ok(found)
}

/// Removes all but the `keep` newest snapshots and any leftover temp files. Returns the LSN of
/// the oldest snapshot kept, if any.
///
/// # Errors
/// [`SnapshotError::Io`] when listing or removing fails.
pub fn prune(dir: &Path, keep: usize) -> Result<Option<Lsn>, SnapshotError> {
    prune_in(&RealFs, dir, keep)
}

/// [`prune`] on the given [`Storage`].
///
/// # Errors
/// As [`prune`].
pub fn prune_in(fs: &dyn Storage, dir: &Path, keep: usize) -> Result<Option<Lsn>, SnapshotError> {
    let all = list_in(fs, dir)?;
    let cut = all.len().saturating_sub(keep);
    for (_, path) in &all[..cut] {
        fs.remove_file(path).map_err(io_err(path))?;
    }
    if let Ok(names) = fs.list_files(dir) {
        for name in names {
            if name.contains(TMP_SUFFIX) {
                let _ = fs.remove_file(&dir.join(name));
            }
        }
    }
    if cut > 0 {
        sync_dir_in(fs, dir)?;
    }
    Ok(all.get(cut).map(|(lsn, _)| *lsn))
}

/// Compaction after an erasure (issue 5): removes every file in `dir` except the snapshot at
/// `keep` — older snapshots, damaged ones set aside as `.corrupt`, leftover temp files — then
/// fsyncs the directory. Returns how many files were removed.
///
/// # Errors
/// [`SnapshotError::Io`] when listing or removing fails.
pub fn remove_all_but_in(fs: &dyn Storage, dir: &Path, keep: Lsn) -> Result<usize, SnapshotError> {
    let kept = format!("{keep:020}{SUFFIX}");
    let names = fs.list_files(dir).map_err(io_err(dir))?;
    let mut removed = 0;
    for name in names.into_iter().filter(|n| *n != kept) {
        let path = dir.join(&name);
        match fs.remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    if removed > 0 {
        fs.sync_dir(dir).map_err(io_err(dir))?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::*;
    use std::fs;

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for lsn in [5, 9, 12] {
            write_file(
                dir.path(),
                lsn,
                &encode(lsn, 1, std::iter::empty()).unwrap(),
            )
            .unwrap();
        }
        fs::write(
            dir.path().join(format!("{:020}{TMP_SUFFIX}", 20)),
            b"partial",
        )
        .unwrap();
        assert_eq!(prune(dir.path(), 2).unwrap(), Some(9));
        let left: Vec<Lsn> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(left, vec![9, 12]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
