//! Torn tails (cut) versus corruption (refused, naming file and byte offset) in the log, on
//! real files (docs/behaviour.md §8, docs/format.md "Torn tail versus corruption").

use std::fs;
use std::path::PathBuf;

use idrecon::wal::{self, FsyncMode, TornTail, WalError, WalOptions};

use crate::wal::{
    FRAME, append_each, assert_refused, expected, flip_byte, offset_of, open, opts, payload,
    reopen, segment_path, segments,
};

#[tokio::test]
async fn torn_last_record_is_cut_at_every_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, WalOptions::default(), 0).unwrap();
    append_each(&wal, 1..=5).await;
    wal.close().unwrap();
    let file = segment_path(d, 1);
    let pristine = fs::read(&file).unwrap();
    let start = offset_of(1, 5);
    assert_eq!(pristine.len() as u64, start + FRAME + 20);

    for cut in start..pristine.len() as u64 {
        fs::write(&file, &pristine[..cut as usize]).unwrap();
        let torn = (cut > start).then(|| TornTail {
            file: file.clone(),
            offset: start,
            bytes_cut: cut - start,
        });
        // check (read-only) reports what open will cut, and cuts nothing.
        let checked = wal::scan(d, 0).unwrap();
        assert_eq!(checked.torn_tail, torn, "scan, cut at {cut}");
        assert_eq!(fs::metadata(&file).unwrap().len(), cut);

        let (wal, report, seen) = open(d, WalOptions::default(), 0).unwrap();
        assert_eq!(seen, expected(1..=4), "cut at {cut}");
        assert_eq!(report.torn_tail, torn, "cut at {cut}");
        assert_eq!((report.last_lsn, report.records_replayed), (4, 4));
        assert_eq!(checked.last_lsn, 4);
        assert_eq!(
            fs::metadata(&file).unwrap().len(),
            start,
            "file not truncated"
        );

        assert_eq!(wal.append(b"after the cut").unwrap(), 5);
        wal.durable(5).await.unwrap();
        wal.close().unwrap();
        let (report, seen) = reopen(d, 0);
        assert_eq!(report.torn_tail, None);
        assert_eq!(&seen[..4], &expected(1..=4)[..]);
        assert_eq!(seen[4], (5, b"after the cut".to_vec()));
    }
}

/// A fresh log of 5 records, closed, with `tail` appended to its only segment: the directory,
/// the segment and the offset where `tail` starts.
async fn five_records_then(tail: &[u8]) -> (tempfile::TempDir, PathBuf, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(dir.path(), WalOptions::default(), 0).unwrap();
    append_each(&wal, 1..=5).await;
    wal.close().unwrap();
    let file = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&file).unwrap();
    let end = bytes.len() as u64;
    bytes.extend_from_slice(tail);
    fs::write(&file, &bytes).unwrap();
    (dir, file, end)
}

/// Checks that `open` cuts exactly `tail`, appended to a log of 5 records, as a torn tail and
/// recovers all 5.
async fn assert_tail_is_cut(tail: &[u8]) {
    let (dir, file, end) = five_records_then(tail).await;
    let d = dir.path();
    let torn = Some(TornTail {
        file: file.clone(),
        offset: end,
        bytes_cut: tail.len() as u64,
    });
    assert_eq!(wal::scan(d, 0).unwrap().torn_tail, torn);
    let (wal, report, seen) = open(d, WalOptions::default(), 0).unwrap();
    assert_eq!(seen, expected(1..=5));
    assert_eq!(report.torn_tail, torn);
    assert_eq!(fs::metadata(&file).unwrap().len(), end);
    append_each(&wal, 6..=6).await;
    wal.close().unwrap();
    assert_eq!(reopen(d, 0).1, expected(1..=6));
}

/// Checks that `zeros` zero bytes after a log of 5 records (what a crash leaves of the writer's
/// preallocation) are not a torn tail: nothing reported, all 5 recovered, the zeros cut
/// silently, appends continue after record 5.
async fn assert_zeros_are_preallocated_space(zeros: usize) {
    let (dir, file, end) = five_records_then(&vec![0; zeros]).await;
    let d = dir.path();
    let scanned = wal::scan(d, 0).unwrap();
    assert_eq!((scanned.torn_tail, scanned.last_lsn), (None, 5));
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        end + zeros as u64,
        "scan cut"
    );
    let (wal, report, seen) = open(d, WalOptions::default(), 0).unwrap();
    assert_eq!(seen, expected(1..=5));
    assert_eq!(report.torn_tail, None);
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        end,
        "zeros not released"
    );
    append_each(&wal, 6..=6).await;
    wal.close().unwrap();
    assert_eq!(fs::metadata(&file).unwrap().len(), end + FRAME + 20);
    assert_eq!(reopen(d, 0).1, expected(1..=6));
}

#[tokio::test]
async fn trailing_zeros_are_preallocated_space_and_garbage_a_torn_tail() {
    assert_zeros_are_preallocated_space(4096).await;
    assert_zeros_are_preallocated_space(3).await;
    assert_zeros_are_preallocated_space(1 << 20).await;
    // Zeros after a partial record are still a torn tail: the record's first bytes are not zero.
    let mut partial = 20u32.to_le_bytes().to_vec();
    partial.extend([0u8; 4096]);
    assert_tail_is_cut(&partial).await;
    assert_tail_is_cut(b"some garbage that is not a record at all, 0123456789").await;
    // A frame header claiming a payload larger than the maximum.
    let mut huge = u32::MAX.to_le_bytes().to_vec();
    huge.extend([0u8; 12]);
    assert_tail_is_cut(&huge).await;
    // A well-formed frame of an LSN that does not follow (a stale record, say).
    let mut stale = 20u32.to_le_bytes().to_vec();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&3u64.to_le_bytes());
    crc.update(&payload(3));
    stale.extend(crc.finalize().to_le_bytes());
    stale.extend(3u64.to_le_bytes());
    stale.extend(payload(3));
    assert_tail_is_cut(&stale).await;
}

#[tokio::test]
async fn damaged_last_record_of_the_newest_segment_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, WalOptions::default(), 0).unwrap();
    append_each(&wal, 1..=5).await;
    wal.close().unwrap();
    let file = segment_path(d, 1);
    flip_byte(&file, offset_of(1, 5) + FRAME + 3);
    let (report, seen) = reopen(d, 0);
    assert_eq!(seen, expected(1..=4));
    assert_eq!(
        report.torn_tail,
        Some(TornTail {
            file,
            offset: offset_of(1, 5),
            bytes_cut: FRAME + 20
        })
    );
}

#[tokio::test]
async fn damage_before_a_valid_record_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, WalOptions::default(), 0).unwrap();
    append_each(&wal, 1..=5).await;
    wal.close().unwrap();
    let file = segment_path(d, 1);

    // A payload byte of record 2.
    flip_byte(&file, offset_of(1, 2) + FRAME + 7);
    assert_refused(d, 0, &file, offset_of(1, 2));
    // Snapshot-covered records are verified too.
    assert_refused(d, 4, &file, offset_of(1, 2));
    flip_byte(&file, offset_of(1, 2) + FRAME + 7);

    // The LSN field of record 3 (the CRC covers it).
    flip_byte(&file, offset_of(1, 3) + 8);
    assert_refused(d, 0, &file, offset_of(1, 3));
    flip_byte(&file, offset_of(1, 3) + 8);

    // The length field of record 1: runs past the next records.
    flip_byte(&file, offset_of(1, 1));
    let err = open(d, WalOptions::default(), 0).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "log corrupt in {} at byte offset 24: ",
            file.display()
        )),
        "{err}"
    );
    assert_refused(d, 0, &file, offset_of(1, 1));
    flip_byte(&file, offset_of(1, 1));

    // Repaired: the log opens again.
    assert_eq!(reopen(d, 0).1, expected(1..=5));
}

#[tokio::test]
async fn older_segments_must_be_valid_to_their_last_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, opts(FsyncMode::Batch, 90), 0).unwrap();
    append_each(&wal, 1..=6).await;
    wal.close().unwrap();
    let (old, newest) = (segment_path(d, 1), segment_path(d, 5));
    assert_eq!(
        segments(d),
        [old.clone(), segment_path(d, 3), newest.clone()]
    );

    // The last record of the oldest segment: corruption, not a torn tail.
    flip_byte(&old, offset_of(1, 2) + FRAME + 19);
    assert_refused(d, 0, &old, offset_of(1, 2));
    flip_byte(&old, offset_of(1, 2) + FRAME + 19);

    // An incomplete last record of the middle segment.
    let middle = segment_path(d, 3);
    let pristine = fs::read(&middle).unwrap();
    fs::write(&middle, &pristine[..pristine.len() - 1]).unwrap();
    assert_refused(d, 0, &middle, offset_of(3, 4));
    // Zeros after the last record of an older segment.
    let mut padded = pristine.clone();
    padded.extend([0u8; 64]);
    fs::write(&middle, &padded).unwrap();
    assert_refused(d, 0, &middle, pristine.len() as u64);
    fs::write(&middle, &pristine).unwrap();

    // Bad headers: corrupt at offset 0, old or newest.
    flip_byte(&old, 0);
    assert_refused(d, 0, &old, 0);
    flip_byte(&old, 0);
    flip_byte(&newest, 13);
    assert_refused(d, 0, &newest, 0);
    flip_byte(&newest, 13);

    // A header whose first LSN disagrees with the file name.
    let renamed = segment_path(d, 2);
    fs::rename(&old, &renamed).unwrap();
    assert_refused(d, 1, &renamed, 0);
    fs::rename(&renamed, &old).unwrap();

    // A missing middle segment is a gap.
    fs::rename(&middle, d.join("aside")).unwrap();
    assert!(matches!(
        open(d, WalOptions::default(), 0),
        Err(WalError::Gap {
            expected: 3,
            found: 5,
            ..
        })
    ));
    fs::rename(d.join("aside"), &middle).unwrap();

    assert_eq!(reopen(d, 0).1, expected(1..=6));
}
