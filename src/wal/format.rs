//! The log's on-disk format (version 1) in short; the byte-level reference, with the LSN rules
//! and the event payloads, is docs/format.md, "Log segments". All integers are little-endian;
//! every checksum is CRC-32 (IEEE, as `crc32fast` computes it).
//!
//! - A log is a directory of *segment* files named `{first_lsn:020}.wal` (20 decimal digits,
//!   the first LSN the segment may hold); every other file in the directory is ignored.
//! - A segment starts with a 24-byte header: magic `IDRWAL\r\n`, format version `u32` = 1,
//!   `first_lsn` `u64` (equal to the name), and the CRC-32 of those 20 bytes.
//! - Records follow back to back, each 16 bytes of framing (`len` `u32`, at most
//!   [`MAX_PAYLOAD`]; `crc` `u32` of the LSN's 8 bytes followed by the payload; `lsn` `u64`) and
//!   then `len` payload bytes.
//! - LSNs start at 1 and run on by one from record to record, across segments too; the only
//!   jump allowed is over LSNs a snapshot covers (`recovery.rs` checks this).
//! - The newest segment may end in zero bytes the writer wrote ahead of its records
//!   (`writer.rs`, "Preallocation and rotation"). Zeros are never a record, since every LSN
//!   is at least 1.
//!
//! This file encodes and checks those bytes, and names, lists and creates segment files; what
//! an invalid record means is decided in `recovery.rs`.

use std::path::{Path, PathBuf};

use super::{Lsn, WalError, io_err, sync_dir};
use crate::storage::{Storage, StorageFile};

/// Largest payload one record may carry, in bytes (1 MiB). A record header claiming more is
/// invalid; [`super::Wal::append`] refuses larger payloads with
/// [`WalError::PayloadTooLarge`].
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Segment file magic, the first 8 bytes of every segment.
const MAGIC: &[u8; 8] = b"IDRWAL\r\n";
/// On-disk format version written in every segment header.
const FORMAT_VERSION: u32 = 1;
/// Segment header size in bytes.
pub(super) const HEADER_LEN: usize = 24;
/// Record framing size in bytes (`len`, `crc`, `lsn`).
pub(super) const RECORD_HEADER_LEN: usize = 16;

/// A segment file: its first LSN (from the name) and path.
#[derive(Clone, Debug)]
pub(super) struct SegmentFile {
    /// The first LSN the segment may hold, from its name.
    pub(super) first_lsn: Lsn,
    /// Where it is: the log directory joined with its name.
    pub(super) path: PathBuf,
}

/// The path of segment `first_lsn` in `dir`: `dir/{first_lsn:020}.wal`.
pub(super) fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

/// The first LSN encoded in a segment file name, or `None` if the name is not
/// `{20 digits}.wal`.
fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment files in `dir`, ordered by first LSN; other files are skipped.
pub(super) fn list_segments(fs: &dyn Storage, dir: &Path) -> Result<Vec<SegmentFile>, WalError> {
    let mut segments = Vec::new();
    for name in fs.list_files(dir).map_err(io_err(dir))? {
        let Some(first_lsn) = parse_segment_name(&name) else {
            continue;
        };
        segments.push(SegmentFile {
            first_lsn,
            path: dir.join(name),
        });
    }
    segments.sort_by_key(|s| s.first_lsn);
    Ok(segments)
}

/// The segment the writer appends to: an open segment file and where its records end.
pub(super) struct ActiveSegment {
    /// The open file.
    pub(super) file: Box<dyn StorageFile>,
    /// Its path.
    pub(super) path: PathBuf,
    /// The first LSN it may hold (its name).
    pub(super) first_lsn: Lsn,
    /// End of the last record written, in bytes: where the next batch goes.
    pub(super) size: u64,
    /// File length in bytes: `size` plus the preallocated zeros after it.
    pub(super) allocated: u64,
}

/// Creates segment `first_lsn` in `dir`: header written, file fsynced, directory fsynced.
pub(super) fn create_segment(
    fs: &dyn Storage,
    dir: &Path,
    first_lsn: Lsn,
) -> Result<ActiveSegment, WalError> {
    let path = segment_path(dir, first_lsn);
    let mut file = fs.open_write(&path, true).map_err(io_err(&path))?;
    file.write_all_at(0, &encode_header(first_lsn))
        .and_then(|()| file.sync_all())
        .map_err(io_err(&path))?;
    sync_dir(fs, dir)?;
    Ok(ActiveSegment {
        file,
        path,
        first_lsn,
        size: HEADER_LEN as u64,
        allocated: HEADER_LEN as u64,
    })
}

/// The 24-byte header of segment `first_lsn`.
pub(super) fn encode_header(first_lsn: Lsn) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header (at least `HEADER_LEN` bytes of `data`) against the file name's
/// first LSN; `Err(reason)` if it is invalid.
pub(super) fn check_header(data: &[u8], name_lsn: Lsn) -> Result<(), String> {
    let (Some(magic), Some(version), Some(first_lsn), Some(crc)) = (
        data.get(0..8),
        le_u32(data, 8),
        le_u64(data, 12),
        le_u32(data, 20),
    ) else {
        return Err("segment header truncated".to_owned());
    };
    if magic != MAGIC {
        return Err("bad magic: not an idrecon log segment".to_owned());
    }
    if crc32fast::hash(data.get(0..20).unwrap_or_default()) != crc {
        return Err("segment header crc mismatch".to_owned());
    }
    if version != FORMAT_VERSION {
        return Err(format!("unsupported log format version {version}"));
    }
    if first_lsn != name_lsn {
        return Err(format!(
            "segment header says first LSN {first_lsn}, file name says {name_lsn}"
        ));
    }
    Ok(())
}

/// A record's CRC-32: over its LSN's 8 bytes, then its payload.
pub(super) fn record_crc(lsn: Lsn, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends the record `lsn` carrying `payload` to `buf`, framed exactly as it goes to disk. The
/// caller has checked that `payload` is at most [`MAX_PAYLOAD`] bytes, so its length fits in
/// the `u32` of the framing.
pub(super) fn frame_record(buf: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let len = payload.len() as u32;
    let crc = record_crc(lsn, payload);
    buf.reserve(RECORD_HEADER_LEN + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The little-endian `u32` at `at` in `data`, if the 4 bytes are there.
fn le_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    bytes.try_into().ok().map(u32::from_le_bytes)
}

/// The little-endian `u64` at `at` in `data`, if the 8 bytes are there.
pub(super) fn le_u64(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    bytes.try_into().ok().map(u64::from_le_bytes)
}

/// A record read from a segment: its LSN, payload, and total size (framing + payload).
#[derive(Debug)]
pub(super) struct Record<'a> {
    /// The LSN its framing carries.
    pub(super) lsn: Lsn,
    /// The payload bytes.
    pub(super) payload: &'a [u8],
    /// Framing and payload, in bytes: where the next record starts.
    pub(super) size: usize,
}

/// Reads the record framed at `off`, without checking CRC or LSN; `Err(reason)` if the framing
/// is cut short, claims more than `MAX_PAYLOAD` or runs past the end of `data`.
pub(super) fn read_record(data: &[u8], off: usize) -> Result<(Record<'_>, u32), String> {
    let rest = data.len().saturating_sub(off);
    let (Some(len), Some(crc), Some(lsn)) = (
        le_u32(data, off),
        le_u32(data, off + 4),
        le_u64(data, off + 8),
    ) else {
        return Err(format!(
            "record header truncated ({rest} of {RECORD_HEADER_LEN} bytes)"
        ));
    };
    let len = len as usize;
    if len > MAX_PAYLOAD {
        return Err(format!(
            "record length {len} exceeds the maximum of {MAX_PAYLOAD} bytes"
        ));
    }
    let start = off + RECORD_HEADER_LEN;
    let Some(payload) = data.get(start..start + len) else {
        return Err(format!(
            "record of {len} payload bytes runs past the end of the file ({} bytes left)",
            rest.saturating_sub(RECORD_HEADER_LEN)
        ));
    };
    Ok((
        Record {
            lsn,
            payload,
            size: RECORD_HEADER_LEN + len,
        },
        crc,
    ))
}

/// Validates the record at `off`, which must carry LSN `expected`.
pub(super) fn check_record(data: &[u8], off: usize, expected: Lsn) -> Result<Record<'_>, String> {
    let (record, crc) = read_record(data, off)?;
    if record_crc(record.lsn, record.payload) != crc {
        return Err("crc mismatch".to_owned());
    }
    if record.lsn != expected {
        return Err(format!(
            "record has LSN {}, expected {expected}",
            record.lsn
        ));
    }
    Ok(record)
}

/// Segment images built by hand, byte by byte as docs/format.md describes them, for the unit
/// tests of this file and of `recovery.rs`.
#[cfg(test)]
pub(super) mod test_frames {
    use super::{Lsn, encode_header, record_crc};

    /// Frames one record as the format says (independently of `format::frame_record`).
    pub(in crate::wal) fn frame(lsn: Lsn, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&record_crc(lsn, payload).to_le_bytes());
        out.extend_from_slice(&lsn.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A segment image starting at `first_lsn` with the given payloads; returns the bytes and
    /// each record's start offset.
    pub(in crate::wal) fn segment(first_lsn: Lsn, payloads: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let mut data = encode_header(first_lsn).to_vec();
        let mut offsets = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            offsets.push(data.len());
            data.extend(frame(first_lsn + i as u64, p));
        }
        (data, offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::test_frames::frame;
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(42);
        assert_eq!(&h[0..8], b"IDRWAL\r\n");
        assert_eq!(check_header(&h, 42), Ok(()));
        assert!(
            check_header(&h, 43)
                .unwrap_err()
                .contains("file name says 43")
        );
        for i in 0..HEADER_LEN {
            let mut bad = h;
            bad[i] ^= 0x01;
            assert!(check_header(&bad, 42).is_err(), "flip at byte {i} accepted");
        }
        assert!(check_header(&h[..23], 42).is_err());
        // A version-2 header with a correct CRC is refused by version, not CRC.
        let mut v2 = h;
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&v2[0..20]);
        v2[20..24].copy_from_slice(&crc.to_le_bytes());
        assert!(check_header(&v2, 42).unwrap_err().contains("version 2"));
    }

    #[test]
    fn segment_names_are_twenty_digits_dot_wal() {
        assert_eq!(parse_segment_name("00000000000000000001.wal"), Some(1));
        assert_eq!(
            segment_path(Path::new("/d"), 1234),
            Path::new("/d/00000000000000001234.wal")
        );
        assert_eq!(
            parse_segment_name("18446744073709551615.wal"),
            Some(u64::MAX)
        );
        for other in [
            "1.wal",
            "0000000000000000001.wal",
            "00000000000000000001.wal.tmp",
            "00000000000000000001.WAL",
            "+0000000000000000001.wal",
            "99999999999999999999.wal",
            "snapshot-00000000000000000001",
        ] {
            assert_eq!(parse_segment_name(other), None, "{other}");
        }
    }

    #[test]
    fn record_checks_name_each_kind_of_damage() {
        let rec = frame(7, b"hello");
        let mut data = vec![0u8; 3];
        data.extend(&rec);
        assert_eq!(check_record(&data, 3, 7).map(|r| r.size).ok(), Some(21));
        assert!(
            check_record(&data, 3, 8)
                .unwrap_err()
                .contains("expected 8")
        );
        assert!(
            check_record(&data[..3 + 15], 3, 7)
                .unwrap_err()
                .contains("truncated")
        );
        assert!(
            check_record(&data[..3 + 20], 3, 7)
                .unwrap_err()
                .contains("runs past")
        );
        let mut flipped = data.clone();
        flipped[3 + 17] ^= 0x80;
        assert_eq!(
            check_record(&flipped, 3, 7).err().as_deref(),
            Some("crc mismatch")
        );
        let mut huge = data.clone();
        huge[3..7].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert!(check_record(&huge, 3, 7).unwrap_err().contains("exceeds"));
        // A maximal payload is valid.
        let big = vec![0xAB; MAX_PAYLOAD];
        assert!(check_record(&frame(1, &big), 0, 1).is_ok());
    }

    #[test]
    fn frame_record_frames_as_the_format_says() {
        let mut buf = vec![0xEE];
        frame_record(&mut buf, 7, b"hello");
        assert_eq!(&buf[1..], &frame(7, b"hello")[..]);
    }
}
