//! The free-space reading behind `/healthz`'s `disk_full` (docs/behaviour.md §6.9), shared by the
//! single-node store and a cluster member: a full disk is reported before the log's next write
//! fails on it, because a failed log write is final until a restart (§8), while a disk that is
//! merely short of space recovers when space is freed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Storage;

/// How long one reading of the free space is reused, so that `/healthz` costs at most one
/// `statvfs` a second however often it is probed.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// The cached free-space reading of one data directory's file system.
pub struct DiskSpace {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    /// Fewer bytes available than this count as full.
    below_bytes: u64,
    /// When the last reading was taken, and whether it was below `below_bytes`.
    last: Mutex<Option<(Instant, bool)>>,
}

impl DiskSpace {
    /// A reader of the file system holding `dir`, through `storage`, that calls it full below
    /// `below_bytes` available bytes. Nothing is read until [`DiskSpace::low`].
    pub fn new(storage: Arc<dyn Storage>, dir: PathBuf, below_bytes: u64) -> DiskSpace {
        DiskSpace {
            storage,
            dir,
            below_bytes,
            last: Mutex::new(None),
        }
    }

    /// The threshold this reader was built with, in bytes.
    pub fn below_bytes(&self) -> u64 {
        self.below_bytes
    }

    /// Whether fewer than the threshold's bytes are available, from a reading at most a second
    /// old. A reading that fails counts as enough space (a failing disk shows up as a failed
    /// log write instead), with a warning; the change to and from full is logged once.
    pub fn low(&self) -> bool {
        let mut last = self.last.lock();
        if let Some((at, low)) = *last
            && at.elapsed() < RECHECK_AFTER
        {
            return low;
        }
        let low = match self.storage.available_space(&self.dir) {
            Ok(bytes) => {
                let low = bytes < self.below_bytes;
                let was_low = last.is_some_and(|(_, low)| low);
                if low && !was_low {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        available_bytes = bytes,
                        below_bytes = self.below_bytes,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FaultFs;
    use std::path::Path;

    #[test]
    fn low_follows_the_available_space_and_caches_a_reading() {
        const BELOW: u64 = 1 << 20;
        let fs = FaultFs::new();
        fs.create_dir_all(Path::new("/data")).unwrap();
        let space = DiskSpace::new(Arc::new(fs.clone()), PathBuf::from("/data"), BELOW);
        assert!(!space.low());
        // A fresh reading is reused for a second.
        fs.set_available_space(Some(0));
        assert!(!space.low());
        *space.last.lock() = None;
        assert!(space.low());
        fs.set_available_space(Some(BELOW - 1));
        *space.last.lock() = None;
        assert!(space.low());
        fs.set_available_space(Some(BELOW));
        *space.last.lock() = None;
        assert!(!space.low());
        // A reading that fails (here: no such directory) is not "full".
        let missing = DiskSpace::new(Arc::new(fs), PathBuf::from("/missing"), BELOW);
        assert!(!missing.low());
    }
}
