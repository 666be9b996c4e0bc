//! The free-space check behind `/healthz` (docs/behaviour.md §6.9): a full disk is reported
//! before the log's next write fails on it, because a failed log write is final until a restart
//! (§8), while a disk that is merely short of space recovers when space is freed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Store;
use crate::storage::Storage;
use crate::wal::PREALLOCATE_BYTES;

/// `/healthz` answers `503 disk_full` while the data directory's file system has fewer bytes
/// available than this: one preallocation step of the log (1 MiB). The log writer extends its
/// active segment by up to that much zeros at a time (docs/format.md, "Preallocation"), so with
/// less free space its next extension may fail with `ENOSPC`, and that failure is final.
pub const DISK_FULL_BELOW_BYTES: u64 = PREALLOCATE_BYTES;

/// How long one reading of the free space is reused, so that `/healthz` costs at most one
/// `statvfs` a second however often it is probed.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// The cached free-space reading of one data directory.
pub(super) struct DiskSpace {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    /// When the last reading was taken, and whether it was below [`DISK_FULL_BELOW_BYTES`].
    last: Mutex<Option<(Instant, bool)>>,
}

impl DiskSpace {
    /// A checker of the file system holding `dir`, through `storage`.
    pub(super) fn new(storage: Arc<dyn Storage>, dir: PathBuf) -> DiskSpace {
        DiskSpace {
            storage,
            dir,
            last: Mutex::new(None),
        }
    }

    /// Whether fewer than [`DISK_FULL_BELOW_BYTES`] are available, from a reading at most
    /// [`RECHECK_AFTER`] old. A reading that fails counts as enough space (a failing disk shows
    /// up as a failed log write instead), with a warning.
    pub(super) fn low(&self) -> bool {
        let mut last = self.last.lock();
        if let Some((at, low)) = *last
            && at.elapsed() < RECHECK_AFTER
        {
            return low;
        }
        let low = match self.storage.available_space(&self.dir) {
            Ok(bytes) => {
                let low = bytes < DISK_FULL_BELOW_BYTES;
                let was_low = last.is_some_and(|(_, low)| low);
                if low && !was_low {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        available_bytes = bytes,
                        "data directory's file system is full; /healthz answers 503 disk_full"
                    );
                } else if was_low && !low {
                    tracing::info!(
                        dir = %self.dir.display(),
                        available_bytes = bytes,
                        "data directory's file system has space again"
                    );
                }
                low
            }
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot read free space");
                false
            }
        };
        *last = Some((Instant::now(), low));
        low
    }
}

impl Store {
    /// True while the file system of the data directory has fewer than
    /// [`DISK_FULL_BELOW_BYTES`] available (docs/behaviour.md §6.9, `disk_full`), from a
    /// reading at most a second old; false again once space is freed. Writes are not refused
    /// because of it: a write that does not fit fails the log as before (§8).
    pub fn disk_full(&self) -> bool {
        self.disk_space.low()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FaultFs;
    use std::path::Path;

    #[test]
    fn low_follows_the_available_space_and_caches_a_reading() {
        let fs = FaultFs::new();
        fs.create_dir_all(Path::new("/data")).unwrap();
        let space = DiskSpace::new(Arc::new(fs.clone()), PathBuf::from("/data"));
        assert!(!space.low());
        // A fresh reading is reused for a second.
        fs.set_available_space(Some(0));
        assert!(!space.low());
        *space.last.lock() = None;
        assert!(space.low());
        fs.set_available_space(Some(DISK_FULL_BELOW_BYTES - 1));
        *space.last.lock() = None;
        assert!(space.low());
        fs.set_available_space(Some(DISK_FULL_BELOW_BYTES));
        *space.last.lock() = None;
        assert!(!space.low());
        // A reading that fails (here: no such directory) is not "full".
        let missing = DiskSpace::new(Arc::new(fs), PathBuf::from("/missing"));
        assert!(!missing.low());
    }
}
