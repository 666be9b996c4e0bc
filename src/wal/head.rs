//! The head file `wal/HEAD`: the durable proof of which segment was last *started* (docs/format.md,
//! "The head file").
//!
//! A crash while the writer creates a segment can leave that file empty or with a partial
//! header; recovery then rewrites the header, which is safe only because no record can have
//! been acknowledged in a segment whose header never became durable. Without more, recovery
//! cannot tell that crash from a segment that held acknowledged records and later lost its
//! header or vanished. The head file tells them apart: it names the newest segment whose
//! header is durable, and it is replaced (temporary file, fsync, rename, directory fsync) after
//! the new header is fsynced and before any record is written to it. So:
//!
//! - the newest segment is the one `HEAD` names: it was durably started, its header must be
//!   intact (no torn-header repair), and it must exist;
//! - the newest segment is newer than `HEAD`: the writer crashed while creating it, before any
//!   record; the torn-header repair applies as it always did;
//! - no `HEAD`: a log written before the head file existed (or a copy without it); recovery is
//!   as it always was, and [`Wal::open`](super::Wal::open) writes `HEAD` before any record.
//!
//! Format (24 bytes, little-endian): magic `IDRHEAD\n`, version `u32` = 1, the segment's first
//! LSN `u64`, CRC-32 of those 20 bytes.

use std::io;
use std::path::{Path, PathBuf};

use super::format::{SegmentFile, segment_path};
use super::{Lsn, WalError, io_err, sync_dir};
use crate::storage::Storage;

/// File name of the head file in the log directory.
pub(super) const HEAD_NAME: &str = "HEAD";
/// The temporary file a new head is written to before it is renamed over [`HEAD_NAME`].
const HEAD_TMP_NAME: &str = "HEAD.tmp";
/// Head file magic, its first 8 bytes.
const HEAD_MAGIC: &[u8; 8] = b"IDRHEAD\n";
/// Head file format version.
const HEAD_VERSION: u32 = 1;
/// Head file size in bytes.
const HEAD_LEN: usize = 24;

/// What the head file says: the newest segment that was durably started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Head {
    /// That segment's first LSN (its name).
    pub(super) first_lsn: Lsn,
    /// The head file, for error messages.
    pub(super) path: PathBuf,
}

/// The 24 bytes of a head file naming segment `first_lsn`.
fn encode_head(first_lsn: Lsn) -> [u8; HEAD_LEN] {
    let mut h = [0u8; HEAD_LEN];
    h[0..8].copy_from_slice(HEAD_MAGIC);
    h[8..12].copy_from_slice(&HEAD_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a head file; `Err(reason)` when it is not exactly a valid one.
fn decode_head(data: &[u8]) -> Result<Lsn, String> {
    let Ok(h) = <&[u8; HEAD_LEN]>::try_from(data) else {
        return Err(format!(
            "head file is {} bytes long, expected {HEAD_LEN}",
            data.len()
        ));
    };
    if &h[0..8] != HEAD_MAGIC {
        return Err("bad magic: not an idrecon log head file".to_owned());
    }
    let word = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    if crc32fast::hash(&h[0..20]) != word(20) {
        return Err("head file crc mismatch".to_owned());
    }
    let version = word(8);
    if version != HEAD_VERSION {
        return Err(format!("unsupported log head file version {version}"));
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&h[12..20]);
    Ok(u64::from_le_bytes(lsn))
}

/// Reads `dir/HEAD`: `Ok(None)` when there is none (a log from before the head file).
///
/// # Errors
/// [`WalError::Corrupt`] naming the head file (offset 0) when it is not a valid head: it is
/// only ever replaced by an atomic rename of a fsynced file, so damage is never a crash's trace;
/// [`WalError::Io`] when it cannot be read.
pub(super) fn read_head(fs: &dyn Storage, dir: &Path) -> Result<Option<Head>, WalError> {
    let path = dir.join(HEAD_NAME);
    let data = match fs.read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    match decode_head(&data) {
        Ok(first_lsn) => Ok(Some(Head { first_lsn, path })),
        Err(reason) => Err(WalError::Corrupt {
            file: path,
            offset: 0,
            reason,
        }),
    }
}

/// Makes `dir/HEAD` name segment `first_lsn`, durably: the head is written to `HEAD.tmp`
/// (created, or emptied when a crash left one), fsynced, renamed over `HEAD`, and the directory
/// is fsynced. The caller has made that segment's header and directory entry durable first.
///
/// # Errors
/// [`WalError::Io`] naming the file or directory that failed; `HEAD` then still names the
/// previous segment or the new one, never anything else.
pub(super) fn write_head(fs: &dyn Storage, dir: &Path, first_lsn: Lsn) -> Result<(), WalError> {
    let tmp = dir.join(HEAD_TMP_NAME);
    let at = io_err(&tmp);
    let mut file = match fs.open_write(&tmp, true) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let mut file = fs.open_write(&tmp, false).map_err(io_err(&tmp))?;
            file.set_len(0).map_err(io_err(&tmp))?;
            file
        }
        Err(e) => return Err(at(e)),
    };
    file.write_all_at(0, &encode_head(first_lsn))
        .and_then(|()| file.sync_all())
        .map_err(io_err(&tmp))?;
    drop(file);
    let path = dir.join(HEAD_NAME);
    fs.rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(fs, dir)
}

/// Checks the segments of `dir` against its head file (module docs): the segment
/// `head` names must not be missing, i.e. some segment at or after it must be present. Returns
/// the first LSN of the segment that was durably started, if it is the newest.
///
/// # Errors
/// [`WalError::Missing`] naming the segment the head file names, when every segment present
/// is older.
pub(super) fn started_segment(
    dir: &Path,
    segments: &[SegmentFile],
    head: Option<&Head>,
) -> Result<Option<Lsn>, WalError> {
    let Some(head) = head else {
        return Ok(None);
    };
    match segments.last() {
        Some(newest) if newest.first_lsn > head.first_lsn => Ok(None),
        Some(newest) if newest.first_lsn == head.first_lsn => Ok(Some(head.first_lsn)),
        _ => Err(WalError::Missing {
            file: segment_path(dir, head.first_lsn),
            head: head.path.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FaultFs;

    #[test]
    fn head_round_trips_and_rejects_damage() {
        let h = encode_head(42);
        assert_eq!(&h[0..8], b"IDRHEAD\n");
        assert_eq!(decode_head(&h), Ok(42));
        for i in 0..HEAD_LEN {
            for bit in 0..8 {
                let mut bad = h;
                bad[i] ^= 1 << bit;
                assert!(decode_head(&bad).is_err(), "flip at byte {i} bit {bit}");
            }
        }
        assert!(decode_head(&h[..23]).unwrap_err().contains("23 bytes"));
        assert!(decode_head(&[]).is_err());
        let mut longer = h.to_vec();
        longer.push(0);
        assert!(decode_head(&longer).is_err());
        let mut v2 = h;
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&v2[0..20]);
        v2[20..24].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_head(&v2).unwrap_err().contains("version 2"));
    }

    #[test]
    fn write_head_replaces_the_head_durably_and_survives_a_leftover_temporary() {
        let fs = FaultFs::new();
        let dir = Path::new("/wal");
        fs.create_dir_all(dir).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        assert_eq!(read_head(&fs, dir).unwrap(), None);
        write_head(&fs, dir, 1).unwrap();
        // A crash left a temporary file behind: the next write reuses it.
        let mut tmp = fs.open_write(&dir.join(HEAD_TMP_NAME), true).unwrap();
        tmp.write_all_at(0, b"garbage that is longer than a head file")
            .unwrap();
        drop(tmp);
        write_head(&fs, dir, 7).unwrap();
        let fs = fs.crash();
        let head = read_head(&fs, dir).unwrap().expect("durable");
        assert_eq!((head.first_lsn, head.path), (7, dir.join("HEAD")));
        assert!(fs.files(dir).iter().all(|p| !p.ends_with(HEAD_TMP_NAME)));
        // A damaged head is corruption naming the file.
        let mut file = fs.open_write(&dir.join(HEAD_NAME), false).unwrap();
        file.write_all_at(3, b"x").unwrap();
        drop(file);
        match read_head(&fs, dir) {
            Err(WalError::Corrupt {
                file, offset: 0, ..
            }) => {
                assert_eq!(file, dir.join(HEAD_NAME))
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
