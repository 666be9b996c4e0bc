//! The free-space check behind `/healthz` (docs/behaviour.md §6.9), through the storage's
//! [`DiskSpace`](crate::storage::DiskSpace) reader.

use super::Store;
use crate::wal::PREALLOCATE_BYTES;

/// The default of `serve --disk-full-below-bytes` ([`super::StoreOptions::disk_full_below_bytes`]):
/// `/healthz` answers `503 disk_full` while the data directory's file system has fewer bytes
/// available than this, one preallocation step of the log (1 MiB). The log writer extends its
/// active segment by up to that much zeros at a time (docs/format.md, "Preallocation"), so with
/// less free space its next extension may fail with `ENOSPC`, and that failure is final. It is
/// also the smallest threshold accepted.
pub const DISK_FULL_BELOW_BYTES: u64 = PREALLOCATE_BYTES;

impl Store {
    /// True while the file system of the data directory has fewer bytes available than
    /// [`StoreOptions::disk_full_below_bytes`](super::StoreOptions::disk_full_below_bytes)
    /// (docs/behaviour.md §6.9, `disk_full`), from a reading at most a second old; false again
    /// once space is freed. Writes are not refused because of it: a write that does not fit
    /// fails the log as before (§8).
    pub fn disk_full(&self) -> bool {
        self.disk_space.low()
    }
}
