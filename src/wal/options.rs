//! The log's settings: when a record counts as durable ([`FsyncMode`]) and the segment size and
//! group-commit delay ([`WalOptions`]).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DEFAULT_COMMIT_DELAY;

/// Default [`WalOptions::segment_bytes`]: 64 MiB.
const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// When an appended record counts as durable (docs/behaviour.md §7 `--fsync`, §8).
///
/// Its text form (`always`, `batch`, `never`: [`FsyncMode::as_str`], [`fmt::Display`],
/// [`std::str::FromStr`], serde) is what `--fsync` and the config file accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Every record gets its own write and fsync; no fsync is shared between records.
    Always,
    /// Group commit (the default): the writer writes everything queued since its last write and
    /// fsyncs once for all of it.
    #[default]
    Batch,
    /// No fsync: a record is durable once written to the OS (it survives a process crash, not a
    /// power loss). Segments are still fsynced on rotation and on [`Wal::close`](super::Wal::close).
    Never,
}

impl FsyncMode {
    /// Every mode, in the order their names are listed: `always`, `batch`, `never`.
    pub const ALL: [FsyncMode; 3] = [FsyncMode::Always, FsyncMode::Batch, FsyncMode::Never];

    /// The mode's name: `always`, `batch` or `never`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FsyncMode::Always => "always",
            FsyncMode::Batch => "batch",
            FsyncMode::Never => "never",
        }
    }
}

impl fmt::Display for FsyncMode {
    /// Writes [`FsyncMode::as_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that names no [`FsyncMode`] (the names are exact and lowercase).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid fsync mode `{given}`: expected always, batch or never")]
pub struct ParseFsyncModeError {
    /// The text that was given.
    pub given: String,
}

impl std::str::FromStr for FsyncMode {
    type Err = ParseFsyncModeError;

    /// Parses `always`, `batch` or `never`.
    ///
    /// # Errors
    /// [`ParseFsyncModeError`] for any other text, case included (`Batch` is refused).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FsyncMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| ParseFsyncModeError {
                given: s.to_owned(),
            })
    }
}

/// Tuning for [`Wal::open`](super::Wal::open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// When a record counts as durable. Default [`FsyncMode::Batch`].
    pub fsync: FsyncMode,
    /// Segment size in bytes at which the writer rotates: before writing a batch, if the active
    /// segment is at least this large (and holds at least one record), it is fsynced and a new
    /// segment is started. A segment may exceed this by one batch. Default 64 MiB.
    pub segment_bytes: u64,
    /// Group-commit delay ([`FsyncMode::Batch`] only; `wal/commit_delay.rs`): when the
    /// last batch held at least [`COMMIT_DELAY_MIN_BATCH`](super::COMMIT_DELAY_MIN_BATCH) records, the writer waits up to this
    /// long before taking the next batch, so more records share its fsync. Zero disables it.
    /// Default [`DEFAULT_COMMIT_DELAY`].
    pub commit_delay: Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            fsync: FsyncMode::default(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            commit_delay: DEFAULT_COMMIT_DELAY,
        }
    }
}
