//! Snapshots: the whole graph at one LSN, so recovery replays only the log after it
//! (SPEC.md §8; DESIGN.md "Snapshots").
//!
//! # File format (version 2)
//! File `snapshots/{lsn:020}.snap`, all integers little-endian:
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
//! Version 1 (written before history existed) is the same with bare `NewContact` payloads;
//! it is still read.
//!
//! Every byte is covered by a checksum, and a failure names the file and the byte offset of
//! the header, chunk or trailer at fault. A snapshot is written to `….snap.tmp`, fsynced,
//! renamed into place and the directory fsynced, so a crash leaves either the old set of
//! snapshots or the new one, never a half-written file under a final name.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::contact::ContactId;
use crate::event::NewContactRef;
pub use crate::event::{SnapshotEntry, SnapshotItem};
use crate::storage::{RealFs, Storage};
use crate::wal::Lsn;

mod writer;
pub use writer::{PreparedSnapshot, SnapshotWriter, WritePace};

const MAGIC: &[u8; 8] = b"IDRSNAP\n";
const VERSION: u32 = 2;
/// The first format version, whose chunks hold bare [`NewContact`] values.
const VERSION_CONTACTS_ONLY: u32 = 1;

const HEADER_LEN: usize = 40;
/// Target payload size of one chunk, in bytes.
const CHUNK_TARGET: usize = 64 * 1024;
/// The largest chunk payload a reader accepts, in bytes (a single contact is far smaller).
const CHUNK_LIMIT: usize = 16 * 1024 * 1024;
const SUFFIX: &str = ".snap";
/// The largest LSN or contact id a snapshot may carry (`i64::MAX`, PostgreSQL's bigint).
pub const MAX_COUNTER: u64 = i64::MAX as u64;
const TMP_SUFFIX: &str = ".snap.tmp";
/// Bytes of a snapshot file written between two write-backs (see [`SnapshotWriter`]).
const WRITE_PIECE: usize = 256 << 10;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file's bytes do not verify; `offset` is the byte offset of the header, chunk or
    /// trailer at fault.
    #[error("snapshot corrupt in {} at byte offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The snapshot file.
        file: PathBuf,
        /// Byte offset of the damaged structure.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error on `path`.
    #[error("snapshot I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The visitor rejected a contact (it does not fit the graph being rebuilt).
    #[error("snapshot {} does not rebuild a consistent graph at contact {id}: {message}", file.display())]
    Rebuild {
        /// The snapshot file.
        file: PathBuf,
        /// The contact that failed.
        id: ContactId,
        /// Why.
        message: String,
    },
}

/// What a snapshot's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Every log record with this LSN or lower is contained in the snapshot.
    pub lsn: Lsn,
    /// The next contact id to assign (ids are never reused).
    pub next_id: ContactId,
    /// Number of entries stored (contacts plus history records).
    pub entries: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Encodes a complete snapshot file in memory (import and tests; the store's snapshots stream
/// the same bytes to disk with [`SnapshotWriter`]).
///
/// `entries` must rebuild the graph when applied in order: the contacts of
/// [`crate::graph::IdentityGraph::snapshot_contacts`], then the records of
/// [`crate::graph::IdentityGraph::snapshot_history`]. Returns the file bytes.
///
/// # Errors
/// [`SnapshotError::Io`] only if bincode fails to encode a contact, which these types cannot
/// cause.
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
struct ChunkFramer {
    chunk: Vec<u8>,
    entries: u64,
    chunks: u64,
}

impl ChunkFramer {
    fn new() -> ChunkFramer {
        ChunkFramer {
            chunk: Vec::with_capacity(CHUNK_TARGET + 1024),
            entries: 0,
            chunks: 0,
        }
    }

    /// Adds `entry`; appends a framed chunk to `out` once the chunk is full.
    fn push(&mut self, entry: &SnapshotEntry, out: &mut Vec<u8>) -> Result<(), SnapshotError> {
        bincode::serialize_into(&mut self.chunk, entry).map_err(|e| SnapshotError::Io {
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
    fn finish(&mut self, out: &mut Vec<u8>) -> u64 {
        self.flush(out);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&trailer_crc(self.entries, self.chunks).to_le_bytes());
        self.entries
    }
}

/// The file header (see the format above).
fn header(lsn: Lsn, next_id: ContactId, entries: u64) -> [u8; HEADER_LEN] {
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

fn trailer_crc(contacts: u64, chunks: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&contacts.to_le_bytes());
    h.update(&chunks.to_le_bytes());
    h.finalize()
}

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

/// Creates `dir` (and missing parents) and fsyncs it and its parent, so the directory
/// entries themselves survive a crash (a new data directory's `snapshots/` and `wal/`).
///
/// # Errors
/// [`SnapshotError::Io`] naming the directory that could not be created or fsynced.
pub fn create_dir_durably(dir: &Path) -> Result<(), SnapshotError> {
    create_dir_durably_in(&RealFs, dir)
}

/// [`create_dir_durably`] on the given [`Storage`].
///
/// # Errors
/// As [`create_dir_durably`].
pub fn create_dir_durably_in(fs: &dyn Storage, dir: &Path) -> Result<(), SnapshotError> {
    fs.create_dir_all(dir).map_err(io_err(dir))?;
    sync_dir_in(fs, dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir_in(fs, parent)?;
        if let Some(grandparent) = parent.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The data directory itself may be new too (import); best effort above that.
            let _ = sync_dir_in(fs, grandparent);
        }
    }
    Ok(())
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

/// The header of the snapshot at `path` if it has a valid one (magic and header checksum),
/// without reading further: used to size the graph before loading (a hint; [`read`] still
/// verifies everything).
pub fn peek_in(fs: &dyn Storage, path: &Path) -> Option<SnapshotInfo> {
    let mut header = [0u8; HEADER_LEN];
    fs.open_read(path).ok()?.read_exact(&mut header).ok()?;
    if &header[..8] != MAGIC || u32_at(&header, 36) != crc32fast::hash(&header[..36]) {
        return None;
    }
    Some(SnapshotInfo {
        lsn: u64_at(&header, 12),
        next_id: u64_at(&header, 20),
        entries: u64_at(&header, 28),
    })
}

/// Reads and verifies the snapshot at `path`, passing each entry to `visit` in order.
/// Every chunk is checksum-verified before any contact in it is decoded or visited.
///
/// # Errors
/// [`SnapshotError::Corrupt`] naming the file and byte offset for any damage (bad magic,
/// version, checksum, truncation, undecodable contact, count mismatch, trailing bytes);
/// [`SnapshotError::Rebuild`] when `visit` fails; [`SnapshotError::Io`] on read errors.
pub fn read<E: std::fmt::Display>(
    path: &Path,
    visit: impl FnMut(SnapshotItem<'_>) -> Result<(), E>,
) -> Result<SnapshotInfo, SnapshotError> {
    read_in(&RealFs, path, visit)
}

/// [`read`] on the given [`Storage`].
///
/// # Errors
/// As [`read`].
pub fn read_in<E: std::fmt::Display>(
    fs: &dyn Storage,
    path: &Path,
    mut visit: impl FnMut(SnapshotItem<'_>) -> Result<(), E>,
) -> Result<SnapshotInfo, SnapshotError> {
    let file = fs.open_read(path).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let corrupt = |offset: u64, reason: &str| SnapshotError::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason: reason.to_owned(),
    };
    let mut header = [0u8; HEADER_LEN];
    read_exact_or(
        &mut reader,
        &mut header,
        || corrupt(0, "file shorter than its header"),
        path,
    )?;
    if &header[..8] != MAGIC {
        return Err(corrupt(0, "not a snapshot file (bad magic)"));
    }
    if u32_at(&header, 36) != crc32fast::hash(&header[..36]) {
        return Err(corrupt(0, "header checksum mismatch"));
    }
    let version = u32_at(&header, 8);
    if version != VERSION && version != VERSION_CONTACTS_ONLY {
        return Err(corrupt(
            0,
            &format!("unsupported snapshot format version {version}"),
        ));
    }
    let info = SnapshotInfo {
        lsn: u64_at(&header, 12),
        next_id: u64_at(&header, 20),
        entries: u64_at(&header, 28),
    };
    // LSNs and ids stay below 2^63 (PostgreSQL bigint); anything above cannot have been
    // written by this service and would overflow the counters that continue from it.
    if info.lsn > MAX_COUNTER || info.next_id > MAX_COUNTER {
        return Err(corrupt(0, "header LSN or next id out of range"));
    }
    let (mut offset, mut count, mut chunks) = (HEADER_LEN as u64, 0u64, 0u64);
    let mut payload = Vec::new();
    loop {
        let mut frame = [0u8; 8];
        read_exact_or(
            &mut reader,
            &mut frame,
            || corrupt(offset, "truncated: chunk header missing"),
            path,
        )?;
        let (len, crc) = (u32_at(&frame, 0) as usize, u32_at(&frame, 4));
        if len == 0 {
            if crc != trailer_crc(count, chunks) || count != info.entries {
                return Err(corrupt(offset, "trailer does not match the entries read"));
            }
            let mut extra = [0u8; 1];
            match reader.read(&mut extra) {
                Ok(0) => return Ok(info),
                Ok(_) => return Err(corrupt(offset + 8, "bytes after the trailer")),
                Err(e) => return Err(io_err(path)(e)),
            }
        }
        if len > CHUNK_LIMIT {
            return Err(corrupt(offset, "chunk length out of range"));
        }
        payload.resize(len, 0);
        read_exact_or(
            &mut reader,
            &mut payload,
            || corrupt(offset, "truncated chunk"),
            path,
        )?;
        if crc32fast::hash(&payload) != crc {
            return Err(corrupt(offset, "chunk checksum mismatch"));
        }
        let mut rest: &[u8] = &payload;
        while !rest.is_empty() {
            let entry = if version == VERSION_CONTACTS_ONLY {
                decode_row(&mut rest).map(SnapshotItem::Contact)
            } else {
                decode_entry(&mut rest)
            }
            .map_err(|_| corrupt(offset, "undecodable entry"))?;
            count += 1;
            if count > info.entries {
                return Err(corrupt(offset, "more entries than the header says"));
            }
            let id = match &entry {
                SnapshotItem::Contact(contact) => contact.id,
                SnapshotItem::History(record) => record.contacts().next().unwrap_or(0),
                SnapshotItem::Clock(_) => 0,
            };
            visit(entry).map_err(|e| SnapshotError::Rebuild {
                file: path.to_path_buf(),
                id,
                message: e.to_string(),
            })?;
        }
        chunks += 1;
        offset += 8 + len as u64;
    }
}

/// Verifies a snapshot without rebuilding anything.
///
/// # Errors
/// As [`read`].
pub fn verify(path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    read(path, |_| Ok::<(), std::convert::Infallible>(()))
}

/// Decodes the [`SnapshotItem`] at the front of `rest` and moves `rest` past it: rows (the
/// bulk of a snapshot) by hand, borrowing their values, the other variants through serde.
fn decode_entry<'a>(rest: &mut &'a [u8]) -> Result<SnapshotItem<'a>, bincode::Error> {
    // bincode writes [`SnapshotEntry`]'s variant index as a u32: 0 `Contact`, 1 `History`,
    // 2 `Clock` (the format only ever appends variants).
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
        other => Err(Box::new(bincode::ErrorKind::InvalidTagEncoding(
            other as usize,
        ))),
    }
}

/// Decodes the row at the front of `rest` and moves `rest` past it.
fn decode_row<'a>(rest: &mut &'a [u8]) -> Result<NewContactRef<'a>, bincode::Error> {
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

fn read_exact_or(
    reader: &mut impl Read,
    buf: &mut [u8],
    short: impl FnOnce() -> SnapshotError,
    path: &Path,
) -> Result<(), SnapshotError> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(short()),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{Email, Phone, Timestamp};
    use crate::event::{HistoryRecord, NewContact};
    use std::fs;

    pub(super) fn contacts(n: u64) -> Vec<SnapshotEntry> {
        let mut entries: Vec<SnapshotEntry> = (1..=n)
            .map(|id| NewContact {
                id,
                email: Email::parse(&format!("c{id}@example.com")).unwrap(),
                phone: (id % 3 == 0).then(|| Phone::from_u64(id * 7)),
                created_at: Timestamp(id as i64),
                updated_at: Timestamp(id as i64),
                deleted_at: None,
                link: (id % 2 == 0).then_some(id - 1),
            })
            .map(SnapshotEntry::Contact)
            .collect();
        entries.push(SnapshotEntry::History(HistoryRecord::Deleted {
            id: 1,
            at: Timestamp(9),
            promoted: Some(2),
            before_id: n + 1,
        }));
        entries
    }

    #[test]
    fn round_trip_many_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let all = contacts(5000);
        let bytes = encode(77, 5001, all.clone().into_iter()).unwrap();
        assert_eq!(u32_at(&bytes, 8), VERSION);
        let path = write_file(dir.path(), 77, &bytes).unwrap();
        let mut back = Vec::new();
        let info = read(&path, |c| {
            back.push(c.to_entry());
            Ok::<(), String>(())
        })
        .unwrap();
        assert_eq!(
            info,
            SnapshotInfo {
                lsn: 77,
                next_id: 5001,
                entries: 5001
            }
        );
        assert_eq!(back, all);
        assert_eq!(list(dir.path()).unwrap(), vec![(77, path)]);
    }

    #[test]
    fn version_1_files_of_bare_contacts_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let contacts: Vec<NewContact> = contacts(300)
            .into_iter()
            .filter_map(|e| match e {
                SnapshotEntry::Contact(c) => Some(c),
                SnapshotEntry::History(_) | SnapshotEntry::Clock(_) => None,
            })
            .collect();
        // A version-1 file: bare NewContact payloads, the same framing.
        let mut payload = Vec::new();
        for c in &contacts {
            bincode::serialize_into(&mut payload, c).unwrap();
        }
        let mut bytes = vec![0u8; HEADER_LEN];
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&trailer_crc(300, 1).to_le_bytes());
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..12].copy_from_slice(&VERSION_CONTACTS_ONLY.to_le_bytes());
        bytes[12..20].copy_from_slice(&5u64.to_le_bytes());
        bytes[20..28].copy_from_slice(&301u64.to_le_bytes());
        bytes[28..36].copy_from_slice(&300u64.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..36]);
        bytes[36..40].copy_from_slice(&crc.to_le_bytes());
        let path = write_file(dir.path(), 5, &bytes).unwrap();
        let mut back = Vec::new();
        read(&path, |e| {
            back.push(e.to_entry());
            Ok::<(), String>(())
        })
        .unwrap();
        let expected: Vec<SnapshotEntry> =
            contacts.into_iter().map(SnapshotEntry::Contact).collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn every_single_bit_flip_and_truncation_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode(3, 40, contacts(40).into_iter()).unwrap();
        let path = dir.path().join("x.snap");
        for i in 0..bytes.len() {
            for bit in [0, 3, 7] {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                fs::write(&path, &damaged).unwrap();
                match verify(&path) {
                    Err(SnapshotError::Corrupt { offset, .. }) => assert!(offset <= i as u64),
                    other => panic!("flip at byte {i} bit {bit} not detected: {other:?}"),
                }
            }
        }
        for len in 0..bytes.len() {
            fs::write(&path, &bytes[..len]).unwrap();
            assert!(
                matches!(verify(&path), Err(SnapshotError::Corrupt { .. })),
                "truncation at {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        fs::write(&path, &longer).unwrap();
        assert!(matches!(verify(&path), Err(SnapshotError::Corrupt { .. })));
    }

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
