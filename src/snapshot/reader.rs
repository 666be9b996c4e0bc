//! Reading snapshot files: a streaming read that hands each entry to a visitor, verifying
//! every checksum before the bytes it covers are decoded, and a peek at the header alone.
//!
//! A file is read one chunk at a time, straight into one chunk buffer (two reads per chunk of
//! about 64 KiB), so reading a snapshot never needs a second copy of the state. That buffer
//! grows without leaving copies behind and is zeroed when dropped: it holds values that may
//! be erased later (docs/behaviour.md §6.7). No `BufReader`, whose buffer would be freed
//! as it was.

use std::io::Read;
use std::path::Path;

use super::format::{
    CHUNK_LIMIT, HEADER_LEN, MAGIC, MAX_COUNTER, VERSION, VERSION_CONTACTS_ONLY, decode_entry,
    decode_row, trailer_crc, u32_at, u64_at,
};
use super::{SnapshotError, SnapshotInfo, SnapshotItem, io_err};
use crate::storage::Storage;

/// The header of the file at `path` if its magic and header checksum are valid, reading
/// nothing else: see [`super::SnapshotDir::peek`].
pub(super) fn peek(fs: &dyn Storage, path: &Path) -> Option<SnapshotInfo> {
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

/// Reads and verifies the file at `path`, passing each entry to `visit` in order: see
/// [`super::SnapshotDir::read`] (the errors are documented there).
pub(super) fn read<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    fs: &dyn Storage,
    path: &Path,
    mut visit: impl FnMut(SnapshotItem<'_>) -> Result<(), E>,
) -> Result<SnapshotInfo, SnapshotError> {
    let mut reader = fs.open_read(path).map_err(io_err(path))?;
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
    let mut payload = zeroize::Zeroizing::new(Vec::new());
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
        payload.clear();
        crate::storage::reserve_scrubbed(&mut payload, len);
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
                SnapshotItem::Clock(_) | SnapshotItem::Blocked(_) => 0,
            };
            visit(entry).map_err(|e| SnapshotError::Rebuild {
                file: path.to_path_buf(),
                id,
                source: e.into(),
            })?;
        }
        chunks += 1;
        offset += 8 + len as u64;
    }
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

#[cfg(test)]
mod tests {
    use super::super::format::encode;
    use super::super::tests::contacts;
    use super::super::{SnapshotDir, SnapshotEntry};
    use super::*;
    use crate::event::NewContact;
    use std::fs;

    #[test]
    fn round_trip_many_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::on_disk(dir.path());
        let all = contacts(5000);
        let bytes = encode(77, 5001, all.clone().into_iter()).unwrap();
        assert_eq!(u32_at(&bytes, 8), VERSION);
        let path = snapshots.write_file(77, &bytes).unwrap();
        let mut back = Vec::new();
        let info = snapshots
            .read(&path, |c| {
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
        assert_eq!(snapshots.list().unwrap(), vec![(77, path)]);
    }

    #[test]
    fn version_1_files_of_bare_contacts_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::on_disk(dir.path());
        let contacts: Vec<NewContact> = contacts(300)
            .into_iter()
            .filter_map(|e| match e {
                SnapshotEntry::Contact(c) => Some(c),
                SnapshotEntry::History(_) | SnapshotEntry::Clock(_) | SnapshotEntry::Blocked(_) => {
                    None
                }
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
        let path = snapshots.write_file(5, &bytes).unwrap();
        let mut back = Vec::new();
        snapshots
            .read(&path, |e| {
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
        let snapshots = SnapshotDir::on_disk(dir.path());
        let bytes = encode(3, 40, contacts(40).into_iter()).unwrap();
        let path = dir.path().join("x.snap");
        for i in 0..bytes.len() {
            for bit in [0, 3, 7] {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                fs::write(&path, &damaged).unwrap();
                match snapshots.verify(&path) {
                    Err(SnapshotError::Corrupt { offset, .. }) => assert!(offset <= i as u64),
                    other => panic!("flip at byte {i} bit {bit} not detected: {other:?}"),
                }
            }
        }
        for len in 0..bytes.len() {
            fs::write(&path, &bytes[..len]).unwrap();
            assert!(
                matches!(snapshots.verify(&path), Err(SnapshotError::Corrupt { .. })),
                "truncation at {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        fs::write(&path, &longer).unwrap();
        assert!(matches!(
            snapshots.verify(&path),
            Err(SnapshotError::Corrupt { .. })
        ));
    }
}
