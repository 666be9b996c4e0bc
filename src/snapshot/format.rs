//! The snapshot file format: file names, header, chunk framing, trailer, and the encoding and
//! decoding of entries. The byte-level description (every field, both versions, what each
//! checksum covers, how a reader reacts to damage) is `docs/format.md`; in short, with all
//! integers little-endian, a version 2 file `{lsn:020}.snap` is:
//!
//! ```text
//! header   magic "IDRSNAP\n" (8) | version u32 | lsn u64 | next_id u64 | entries u64
//!          | crc32 of the previous 36 bytes u32                                   = 40 bytes
//! chunk*   len u32 (1..=CHUNK_LIMIT) | crc32 of the payload u32 | payload (len bytes):
//!          whole bincode-encoded SnapshotEntry values: every contact in id order, then the
//!          history records in applied order, then the clock
//! trailer  len u32 = 0 | crc32 of (entries u64 ++ chunks u64) u32
//! ```
//!
//! Version 1 (written before history existed) frames bare `NewContact` values the same way;
//! it is still read. Nothing here does I/O: the reader and the writer move these bytes.

use super::{SnapshotEntry, SnapshotError, SnapshotItem};
use crate::contact::ContactId;
use crate::event::NewContactRef;
use crate::wal::Lsn;
use std::path::PathBuf;

/// The first 8 bytes of every snapshot file.
pub(super) const MAGIC: &[u8; 8] = b"IDRSNAP\n";
/// The format version written.
pub(super) const VERSION: u32 = 2;
/// The first format version, whose chunks hold bare [`crate::event::NewContact`] values.
pub(super) const VERSION_CONTACTS_ONLY: u32 = 1;
/// Size of the file header, in bytes.
pub(super) const HEADER_LEN: usize = 40;
/// Target payload size of one chunk, in bytes.
pub(super) const CHUNK_TARGET: usize = 64 * 1024;
/// The largest chunk payload a reader accepts, in bytes (a single contact is far smaller).
pub(super) const CHUNK_LIMIT: usize = 16 * 1024 * 1024;
/// The largest LSN or contact id a snapshot may carry: `i64::MAX`, so ids fit PostgreSQL's
/// `bigint` on export. A header above it is reported as corrupt, since the counters that
/// continue from it would overflow; import refuses ids above it too.
pub const MAX_COUNTER: u64 = i64::MAX as u64;
/// Suffix of a published snapshot file, `{lsn:020}.snap`.
pub(super) const SUFFIX: &str = ".snap";
/// Suffix (plus a unique tail) of a snapshot file being written.
pub(super) const TMP_SUFFIX: &str = ".snap.tmp";

/// The file name of the snapshot at `lsn`: `{lsn:020}.snap`.
pub(super) fn file_name(lsn: Lsn) -> String {
    format!("{lsn:020}{SUFFIX}")
}

/// The LSN of a snapshot file named `name`, `None` for any other name (temp files, damaged
/// snapshots set aside as `.corrupt`).
pub(super) fn lsn_of_file_name(name: &str) -> Option<Lsn> {
    let stem = name.strip_suffix(SUFFIX)?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse::<Lsn>().ok()
}

/// Whether `name` is a snapshot's temp file (written, not yet published).
pub(super) fn is_temp_name(name: &str) -> bool {
    name.contains(TMP_SUFFIX)
}

/// Encodes a complete snapshot file in memory: the snapshot at `lsn` (every log record up
/// to it is contained) whose next contact id is `next_id`. Returns the whole file, ready for
/// [`super::SnapshotDir::write_file`]. Import uses it; the store's snapshots stream the same
/// bytes to disk with [`super::SnapshotWriter`] instead, without a second copy of the state
/// in memory.
///
/// `entries` must rebuild the graph when applied in order, as
/// [`crate::graph::IdentityGraph::snapshot_entries`] yields them: the contacts in id order,
/// the history records, the clock. Nothing here checks that.
///
/// # Errors
/// [`SnapshotError::Io`] (with an empty path) only if bincode fails to encode an entry, which
/// these types cannot cause.
pub fn encode(
    lsn: Lsn,
    next_id: ContactId,
    entries: impl Iterator<Item = SnapshotEntry>,
) -> Result<Vec<u8>, SnapshotError> {
    let mut out = vec![0u8; HEADER_LEN];
    let mut framer = ChunkFramer::new();
    for entry in entries {
        framer.push(&entry, &mut out)?;
    }
    let count = framer.finish(&mut out);
    out[..HEADER_LEN].copy_from_slice(&header(lsn, next_id, count));
    Ok(out)
}

/// Frames entries into the file format's chunks: bincode-encoded entries are gathered until a
/// chunk holds [`CHUNK_TARGET`] bytes, then the chunk's length, checksum and payload are
/// appended to the caller's output.
pub(super) struct ChunkFramer {
    /// Encoded entries, values included: zeroed when dropped (docs/behaviour.md §6.7).
    chunk: zeroize::Zeroizing<Vec<u8>>,
    entries: u64,
    chunks: u64,
}

impl ChunkFramer {
    pub(super) fn new() -> ChunkFramer {
        ChunkFramer {
            chunk: zeroize::Zeroizing::new(Vec::with_capacity(CHUNK_TARGET + 1024)),
            entries: 0,
            chunks: 0,
        }
    }

    /// Adds `entry`; appends a framed chunk to `out` once the chunk is full.
    pub(super) fn push(
        &mut self,
        entry: &SnapshotEntry,
        out: &mut Vec<u8>,
    ) -> Result<(), SnapshotError> {
        bincode::serialize_into(&mut *self.chunk, entry).map_err(|e| SnapshotError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.entries += 1;
        if self.chunk.len() >= CHUNK_TARGET {
            self.flush(out);
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        if !self.chunk.is_empty() {
            out.extend_from_slice(&(self.chunk.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(&self.chunk).to_le_bytes());
            out.extend_from_slice(&self.chunk);
            self.chunk.clear();
            self.chunks += 1;
        }
    }

    /// Appends the last chunk and the trailer to `out`; returns the number of entries (the
    /// header's `entries`).
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) -> u64 {
        self.flush(out);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&trailer_crc(self.entries, self.chunks).to_le_bytes());
        self.entries
    }
}

/// The file header (see the format above).
pub(super) fn header(lsn: Lsn, next_id: ContactId, entries: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&lsn.to_le_bytes());
    header[20..28].copy_from_slice(&next_id.to_le_bytes());
    header[28..36].copy_from_slice(&entries.to_le_bytes());
    let crc = crc32fast::hash(&header[..36]);
    header[36..40].copy_from_slice(&crc.to_le_bytes());
    header
}

pub(super) fn trailer_crc(contacts: u64, chunks: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&contacts.to_le_bytes());
    h.update(&chunks.to_le_bytes());
    h.finalize()
}

/// Decodes the [`SnapshotItem`] at the front of `rest` and moves `rest` past it: rows (the
/// bulk of a snapshot) by hand, borrowing their values, the other variants through serde.
pub(super) fn decode_entry<'a>(rest: &mut &'a [u8]) -> Result<SnapshotItem<'a>, bincode::Error> {
    // bincode writes [`SnapshotEntry`]'s variant index as a u32: 0 `Contact`, 1 `History`,
    // 2 `Clock`, 3 `Blocked` (the format only ever appends variants).
    let Some((tag, payload)) = rest.split_first_chunk::<4>() else {
        return Err(Box::new(bincode::ErrorKind::Custom(
            "entry tag truncated".into(),
        )));
    };
    *rest = payload;
    match u32::from_le_bytes(*tag) {
        0 => decode_row(rest).map(SnapshotItem::Contact),
        1 => decode_owned(rest).map(SnapshotItem::History),
        2 => decode_owned(rest).map(SnapshotItem::Clock),
        3 => decode_owned(rest).map(SnapshotItem::Blocked),
        other => Err(Box::new(bincode::ErrorKind::InvalidTagEncoding(
            other as usize,
        ))),
    }
}

/// Decodes the row at the front of `rest` and moves `rest` past it.
pub(super) fn decode_row<'a>(rest: &mut &'a [u8]) -> Result<NewContactRef<'a>, bincode::Error> {
    let (row, used) = NewContactRef::decode_prefix(rest)?;
    *rest = rest.get(used..).unwrap_or_default();
    Ok(row)
}

/// Decodes the owned value at the front of `rest` and moves `rest` past it.
fn decode_owned<T: serde::de::DeserializeOwned>(rest: &mut &[u8]) -> Result<T, bincode::Error> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(rest.len() as u64)
        .deserialize_from(rest)
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

pub(super) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}
