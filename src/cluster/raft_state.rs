//! The small durable state of a Raft member besides its log: the vote it cast and the last log
//! entry purged behind a snapshot (docs/format.md, "Cluster state file").
//!
//! The file `DIR/raft/state` holds both as JSON followed by a newline and the CRC-32 of the
//! JSON in 8 hexadecimal digits. It is replaced atomically (written to a temp file, fsynced,
//! renamed over the old one, directory fsynced) before the call that changed it returns, as
//! Raft requires of a vote: a member that forgot its vote after a crash could vote twice in
//! one term.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::types::{LogId, NodeId};

/// What `DIR/raft/state` records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftState {
    /// The last vote saved (term, candidate, whether committed), `None` before the first.
    pub vote: Option<openraft::Vote<NodeId>>,
    /// The last log entry purged, `None` when nothing was.
    pub last_purged: Option<LogId>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RaftStateError {
    /// The file exists but its checksum or JSON does not verify.
    #[error("cluster state file {} is damaged: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error on the file or its directory.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl RaftState {
    /// Reads the state file at `path`; a missing file is the empty state (a new member).
    ///
    /// # Errors
    /// [`RaftStateError::Corrupt`] when the file does not verify; [`RaftStateError::Io`] when
    /// it cannot be read.
    pub fn load(path: &Path) -> Result<RaftState, RaftStateError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RaftState::default()),
            Err(source) => {
                return Err(RaftStateError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let corrupt = |reason: &str| RaftStateError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| corrupt("not UTF-8"))?;
        let (json, crc) = text
            .trim_end()
            .rsplit_once('\n')
            .ok_or_else(|| corrupt("no checksum line"))?;
        let crc = u32::from_str_radix(crc, 16).map_err(|_| corrupt("bad checksum line"))?;
        if crc32fast::hash(json.as_bytes()) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        serde_json::from_str(json).map_err(|_| corrupt("not the expected JSON"))
    }

    /// Replaces the state file at `path` with `self`, durably (module docs).
    ///
    /// # Errors
    /// [`RaftStateError::Io`] when a write, fsync or rename fails; the old file is then intact.
    pub fn save(&self, path: &Path) -> Result<(), RaftStateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RaftStateError::Io { path, source }
        };
        let json = serde_json::to_string(self).map_err(|e| RaftStateError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = path.with_extension("tmp");
        {
            let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            writeln!(file, "{json}").map_err(io(&tmp))?;
            writeln!(file, "{:08x}", crc32fast::hash(json.as_bytes())).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(io(path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft/state");
        assert_eq!(RaftState::load(&path).unwrap(), RaftState::default());
        let state = RaftState {
            vote: Some(openraft::Vote::new(3, 2)),
            last_purged: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(2, 1),
                41,
            )),
        };
        state.save(&path).unwrap();
        assert_eq!(RaftState::load(&path).unwrap(), state);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            RaftState::load(&path),
            Err(RaftStateError::Corrupt { .. })
        ));
    }
}
