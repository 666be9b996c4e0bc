//! Write-ahead log behaviour through the public API only (`idrecon::wal`), on real files in
//! temporary directories: recovery round trips, snapshot-covered records and segment removal,
//! torn tails (cut) versus corruption (refused, with file and byte offset; docs/behaviour.md §8),
//! and group commit under concurrency.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use idrecon::wal::{self, FsyncMode, Lsn, RecoveryReport, TornTail, Wal, WalError, WalOptions};

/// Framing bytes per record (len, crc, lsn).
const FRAME: u64 = 16;
/// Segment header bytes.
const HEADER: u64 = 24;

type Records = Vec<(Lsn, Vec<u8>)>;

fn opts(fsync: FsyncMode, segment_bytes: u64) -> WalOptions {
    WalOptions {
        fsync,
        segment_bytes,
        ..WalOptions::default()
    }
}

/// Opens the log, collecting every visited record.
fn open(
    dir: &Path,
    opts: WalOptions,
    after: Lsn,
) -> Result<(Wal, RecoveryReport, Records), WalError> {
    let mut seen = Vec::new();
    let (wal, report) = Wal::open(dir, opts, after, |lsn, payload| {
        seen.push((lsn, payload.to_vec()));
        Ok::<(), String>(())
    })?;
    Ok((wal, report, seen))
}

/// Opens, collects, closes; returns what recovery saw.
fn reopen(dir: &Path, after: Lsn) -> (RecoveryReport, Records) {
    let (wal, report, seen) = open(dir, WalOptions::default(), after).unwrap();
    wal.close().unwrap();
    (report, seen)
}

/// Payload of record `i`: 20 bytes, so every record is 36 bytes on disk.
fn payload(i: u64) -> Vec<u8> {
    format!("payload-{i:012}").into_bytes()
}

/// Appends `payload(i)` for `i` in `range`, each made durable before the next (one record per
/// batch, so rotation points are deterministic); checks the LSNs handed out.
async fn append_each(wal: &Wal, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        assert_eq!(wal.append(&payload(i)).unwrap(), i);
        wal.durable(i).await.unwrap();
    }
}

fn expected(range: std::ops::RangeInclusive<u64>) -> Records {
    range.map(|i| (i, payload(i))).collect()
}

/// Segment files in `dir`, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

/// Byte offset of the record with LSN `lsn` in a segment starting at `first` holding
/// 20-byte payloads.
fn offset_of(first: Lsn, lsn: Lsn) -> u64 {
    HEADER + (lsn - first) * (FRAME + 20)
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

fn expect_corrupt<T>(result: Result<T, WalError>) -> (PathBuf, u64, String) {
    match result {
        Err(WalError::Corrupt {
            file,
            offset,
            reason,
        }) => (file, offset, reason),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got Ok"),
    }
}

/// Asserts that both `open` and `scan` refuse the log with Corrupt at (`file`, `offset`) and
/// that neither changed any byte of any segment.
fn assert_refused(dir: &Path, after: Lsn, file: &Path, offset: u64) {
    let before: Vec<Vec<u8>> = segments(dir).iter().map(|p| fs::read(p).unwrap()).collect();
    let (f, o, reason) = expect_corrupt(open(dir, WalOptions::default(), after));
    assert_eq!((f.as_path(), o), (file, offset), "open: {reason}");
    let (f, o, _) = expect_corrupt(wal::scan(dir, after));
    assert_eq!((f.as_path(), o), (file, offset), "scan");
    let after_bytes: Vec<Vec<u8>> = segments(dir).iter().map(|p| fs::read(p).unwrap()).collect();
    assert!(before == after_bytes, "a refused log was modified");
}

#[tokio::test]
async fn records_survive_close_and_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, report, seen) = open(dir.path(), WalOptions::default(), 0).unwrap();
    assert_eq!((report.segments, report.last_lsn, seen.len()), (0, 0, 0));
    assert_eq!(segments(dir.path()), [segment_path(dir.path(), 1)]);

    // Varied sizes, including an empty payload and a large one.
    let mut written = Vec::new();
    for i in 1..=100u64 {
        let p = match i {
            7 => Vec::new(),
            50 => vec![0x5A; 100_000],
            _ => vec![i as u8; (i as usize * 13) % 300],
        };
        assert_eq!(wal.append(&p).unwrap(), i);
        written.push((i, p));
    }
    assert_eq!(wal.last_lsn(), 100);
    wal.durable(100).await.unwrap();
    assert_eq!(wal.durable_lsn(), 100);
    wal.close().unwrap();

    let (wal, report, seen) = open(dir.path(), WalOptions::default(), 0).unwrap();
    assert_eq!(seen, written);
    assert_eq!(
        report,
        RecoveryReport {
            segments: 1,
            records_replayed: 100,
            last_lsn: 100,
            torn_tail: None
        }
    );
    assert_eq!((wal.last_lsn(), wal.durable_lsn()), (100, 100));
    assert_eq!(wal.append(b"next").unwrap(), 101);
    wal.durable(101).await.unwrap();
    drop(wal); // drop closes too

    let (report, seen) = reopen(dir.path(), 0);
    assert_eq!(seen.len(), 101);
    assert_eq!(seen[100], (101, b"next".to_vec()));
    assert_eq!(report.last_lsn, 101);
    assert_eq!(wal::scan(dir.path(), 0).unwrap(), report);
}

#[tokio::test]
async fn never_mode_records_are_recovered_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(dir.path(), opts(FsyncMode::Never, 200), 0).unwrap();
    for i in 1..=50 {
        wal.append(&payload(i)).unwrap();
    }
    wal.durable(50).await.unwrap();
    wal.close().unwrap();
    assert_eq!(reopen(dir.path(), 0).1, expected(1..=50));
}

#[tokio::test]
async fn snapshot_covered_records_are_skipped_and_removable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 24-byte header + 2 records of 36 bytes reaches 96 >= 90: two records per segment.
    let small = opts(FsyncMode::Batch, 90);
    let (wal, _, _) = open(d, small, 0).unwrap();
    append_each(&wal, 1..=20).await;
    let firsts: Vec<PathBuf> = (0..10).map(|k| segment_path(d, 1 + 2 * k)).collect();
    assert_eq!(segments(d), firsts);

    wal.close().unwrap();

    // Records <= after_lsn are verified but not visited.
    let (wal, report, seen) = open(d, small, 7).unwrap();
    assert_eq!(seen, expected(8..=20));
    assert_eq!(
        (report.segments, report.records_replayed, report.last_lsn),
        (10, 13, 20)
    );
    assert_eq!(wal::scan(d, 7).unwrap(), report);

    // Segments 1, 3, 5 hold LSNs <= 6; segment 7 holds 8 as well, so it stays.
    assert_eq!(wal.remove_segments_through(6).unwrap(), 3);
    assert_eq!(segments(d), &firsts[3..]);
    assert_eq!(wal.remove_segments_through(6).unwrap(), 0);
    wal.close().unwrap();

    let (report, seen) = reopen(d, 6);
    assert_eq!(seen, expected(7..=20));
    assert_eq!((report.segments, report.last_lsn), (7, 20));
    // A snapshot older than the log's start leaves a gap: refused by open and scan.
    for result in [open(d, small, 5).map(|_| ()), wal::scan(d, 5).map(|_| ())] {
        match result {
            Err(WalError::Gap {
                file,
                expected,
                found,
            }) => assert_eq!((file, expected, found), (segment_path(d, 7), 6, 7)),
            other => panic!("expected Gap, got {other:?}"),
        }
    }

    // Everything covered: only the active segment survives.
    let (wal, _, _) = open(d, small, 6).unwrap();
    assert_eq!(wal.remove_segments_through(u64::MAX).unwrap(), 6);
    assert_eq!(segments(d), [segment_path(d, 19)]);
    wal.close().unwrap();
    let (report, seen) = reopen(d, 18);
    assert_eq!(seen, expected(19..=20));
    assert_eq!(report.last_lsn, 20);
}

#[tokio::test]
async fn snapshot_ahead_of_the_log_starts_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, WalOptions::default(), 0).unwrap();
    append_each(&wal, 1..=5).await;
    wal.close().unwrap();

    // A snapshot at 10 (e.g. written while the log ran with --fsync never).
    let (wal, report, seen) = open(d, WalOptions::default(), 10).unwrap();
    assert!(seen.is_empty());
    assert_eq!(report.last_lsn, 5);
    assert_eq!(wal.last_lsn(), 10);
    assert_eq!(segments(d), [segment_path(d, 1), segment_path(d, 11)]);
    append_each(&wal, 11..=12).await;
    wal.close().unwrap();

    let (report, seen) = reopen(d, 10);
    assert_eq!(seen, expected(11..=12));
    assert_eq!(report.last_lsn, 12);
    // Without the snapshot, LSNs 6..=10 are missing.
    assert!(matches!(
        open(d, WalOptions::default(), 0),
        Err(WalError::Gap {
            expected: 6,
            found: 11,
            ..
        })
    ));
    let (wal, _, _) = open(d, WalOptions::default(), 10).unwrap();
    assert_eq!(wal.remove_segments_through(10).unwrap(), 1);
    wal.close().unwrap();
    assert_eq!(segments(d), [segment_path(d, 11)]);
}

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

#[tokio::test]
async fn newest_segment_with_a_torn_header_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, opts(FsyncMode::Batch, 90), 0).unwrap();
    append_each(&wal, 1..=4).await;
    wal.close().unwrap();
    // The writer died while creating segment 5.
    let newest = segment_path(d, 5);
    fs::write(&newest, b"IDRWA").unwrap();

    let (wal, report, seen) = open(d, opts(FsyncMode::Batch, 90), 0).unwrap();
    assert_eq!(seen, expected(1..=4));
    assert_eq!(
        report.torn_tail,
        Some(TornTail {
            file: newest.clone(),
            offset: 0,
            bytes_cut: 5
        })
    );
    assert_eq!(fs::metadata(&newest).unwrap().len(), HEADER);
    append_each(&wal, 5..=6).await;
    wal.close().unwrap();
    assert_eq!(reopen(d, 0).1, expected(1..=6));
}

/// Five acknowledged records in segments 1 (LSNs 1-2), 3 (3-4) and 5 (5), closed.
async fn three_segments() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(dir.path(), opts(FsyncMode::Batch, 90), 0).unwrap();
    append_each(&wal, 1..=5).await;
    wal.close().unwrap();
    let d = dir.path();
    assert_eq!(
        segments(d),
        [1, 3, 5].map(|lsn| segment_path(d, lsn)).to_vec()
    );
    dir
}

/// Both `open` and `scan` refuse the log, naming `file` in the error, and change no byte of
/// any segment.
fn assert_refused_naming(dir: &Path, file: &Path) {
    let before: Vec<Vec<u8>> = segments(dir).iter().map(|p| fs::read(p).unwrap()).collect();
    let name = file.display().to_string();
    match open(dir, WalOptions::default(), 0) {
        Err(e) => assert!(e.to_string().contains(&name), "open: {e}"),
        Ok((_, report, _)) => panic!("open accepted the log: {report:?}"),
    }
    match wal::scan(dir, 0) {
        Err(e) => assert!(e.to_string().contains(&name), "scan: {e}"),
        Ok(report) => panic!("scan accepted the log: {report:?}"),
    }
    let after: Vec<Vec<u8>> = segments(dir).iter().map(|p| fs::read(p).unwrap()).collect();
    assert!(before == after, "a refused log was modified");
}

/// docs/behaviour.md §8: a newest segment cut below its 24-byte header after records in it
/// were acknowledged is not a torn tail: the log head file proves it was durably started.
#[tokio::test]
async fn newest_segment_cut_below_its_header_after_acknowledged_writes_is_refused() {
    for keep in [0, 10] {
        let dir = three_segments().await;
        let newest = segment_path(dir.path(), 5);
        fs::OpenOptions::new()
            .write(true)
            .open(&newest)
            .unwrap()
            .set_len(keep)
            .unwrap();
        assert_refused(dir.path(), 0, &newest, 0);
    }
}

/// The first segment of a fresh log is durably started as well: cutting it to nothing after
/// acknowledged writes is refused.
#[tokio::test]
async fn first_segment_of_a_fresh_log_cut_to_nothing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, WalOptions::default(), 0).unwrap();
    append_each(&wal, 1..=3).await;
    wal.close().unwrap();
    let first = segment_path(d, 1);
    fs::write(&first, b"").unwrap();
    assert_refused(d, 0, &first, 0);
}

/// A deleted newest segment (or the only one) is refused, naming it, rather than silently
/// starting without its acknowledged records.
#[tokio::test]
async fn deleted_newest_segment_is_refused() {
    let dir = three_segments().await;
    let newest = segment_path(dir.path(), 5);
    fs::remove_file(&newest).unwrap();
    assert_refused_naming(dir.path(), &newest);
    // Every segment gone, the head file still there.
    for lsn in [1, 3] {
        fs::remove_file(segment_path(dir.path(), lsn)).unwrap();
    }
    assert_refused_naming(dir.path(), &newest);
}

/// A crash while the writer creates a segment, before the head file names it, leaves the new
/// file empty, with part of its header, or with its header: no record can be in it, so the log
/// recovers as it always did. Once recovery has rewritten the header, the head file names the
/// segment, and losing the header again is refused.
#[tokio::test]
async fn a_crash_while_creating_a_segment_recovers() {
    let valid_header = {
        let scratch = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(scratch.path(), WalOptions::default(), 5).unwrap();
        wal.close().unwrap();
        fs::read(segment_path(scratch.path(), 6)).unwrap()
    };
    assert_eq!(valid_header.len() as u64, HEADER);
    for left in [&b""[..], b"IDRWA", &[0u8; 24], &valid_header] {
        let dir = three_segments().await;
        let d = dir.path();
        let created = segment_path(d, 6);
        fs::write(&created, left).unwrap();
        let (wal, report, seen) = open(d, opts(FsyncMode::Batch, 90), 0).unwrap();
        assert_eq!(seen, expected(1..=5), "{left:?}");
        assert_eq!(report.last_lsn, 5);
        let torn =
            (left.len() as u64 != HEADER || left.iter().all(|&b| b == 0)).then(|| TornTail {
                file: created.clone(),
                offset: 0,
                bytes_cut: left.len() as u64,
            });
        assert_eq!(report.torn_tail, torn, "{left:?}");
        append_each(&wal, 6..=6).await;
        wal.close().unwrap();
        assert_eq!(reopen(d, 0).1, expected(1..=6));
        fs::write(&created, b"").unwrap();
        assert_refused(d, 0, &created, 0);
    }
}

/// A log written before the head file existed keeps recovering as it always did (a newest
/// segment without its header is a crash's trace), and gets a head file when it is opened.
#[tokio::test]
async fn a_log_without_a_head_file_opens_as_before() {
    let dir = three_segments().await;
    let d = dir.path();
    fs::remove_file(d.join("HEAD")).unwrap();
    let newest = segment_path(d, 5);
    fs::write(&newest, b"IDRWAL\r\n01").unwrap();
    let report = wal::scan(d, 0).unwrap();
    assert_eq!(
        report.torn_tail.map(|t| (t.file, t.offset)),
        Some((newest.clone(), 0))
    );
    assert_eq!(reopen(d, 0).1, expected(1..=4));
    assert!(d.join("HEAD").exists(), "open wrote the head file");
    fs::write(&newest, b"").unwrap();
    assert_refused(d, 0, &newest, 0);
}

/// The head file itself is written only by an atomic rename of a fsynced file: any damage to
/// it is corruption, naming it.
#[tokio::test]
async fn a_damaged_head_file_is_refused() {
    let dir = three_segments().await;
    let head = dir.path().join("HEAD");
    let pristine = fs::read(&head).unwrap();
    for damaged in [
        &pristine[..0],
        &pristine[..23],
        b"IDRHEAD\n garbage garbage",
    ] {
        fs::write(&head, damaged).unwrap();
        assert_refused_naming(dir.path(), &head);
    }
    fs::write(&head, &pristine).unwrap();
    assert_eq!(reopen(dir.path(), 0).1, expected(1..=5));
}

#[test]
fn visitor_errors_name_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, WalOptions::default(), 0).unwrap();
    for i in 1..=3 {
        wal.append(&payload(i)).unwrap();
    }
    wal.close().unwrap();
    let result = Wal::open(d, WalOptions::default(), 0, |lsn, _| {
        if lsn == 2 { Err("bad event") } else { Ok(()) }
    });
    match result {
        Err(WalError::Replay { lsn, source }) => {
            assert_eq!((lsn, source.to_string().as_str()), (2, "bad event"))
        }
        other => panic!("expected Replay, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn scan_of_a_missing_directory_is_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let report = wal::scan(&dir.path().join("nope"), 0).unwrap();
    assert_eq!(
        (report.segments, report.last_lsn, report.torn_tail),
        (0, 0, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_fsyncs() {
    const TASKS: u64 = 32;
    const EACH: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, opts(FsyncMode::Batch, 64 * 1024), 0).unwrap();
    let wal = Arc::new(wal);

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let wal = Arc::clone(&wal);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..EACH {
                let p = format!("task {t} record {i}").into_bytes();
                let lsn = wal.append(&p).unwrap();
                wal.durable(lsn).await.unwrap();
                assert!(wal.durable_lsn() >= lsn);
                mine.push((lsn, p));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        // Each task's LSNs increase in its own call order.
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0));
        all.extend(mine);
    }
    all.sort();
    let lsns: Vec<Lsn> = all.iter().map(|(lsn, _)| *lsn).collect();
    assert_eq!(lsns, (1..=TASKS * EACH).collect::<Vec<_>>());

    let stats = wal.stats();
    assert_eq!(stats.records, TASKS * EACH);
    assert!(stats.batches < stats.records, "no group commit: {stats:?}");
    assert!(segments(d).len() > 1, "expected rotation at 64 KiB");
    wal.close().unwrap();

    let (report, seen) = reopen(d, 0);
    assert_eq!(seen, all);
    assert_eq!(report.last_lsn, TASKS * EACH);
}

/// Corruption is never skipped silently (docs/behaviour.md §8), exhaustively for single-byte
/// damage: flip each byte of a three-segment log in turn. Recovery either refuses (Corrupt or
/// Gap) or recovers an exact prefix of the records, shorter only when it reports a torn tail of
/// the newest segment; and `scan` always agrees with `open`.
#[tokio::test]
async fn every_single_byte_flip_is_refused_or_cut_never_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let small = opts(FsyncMode::Batch, 90);
    let (wal, _, _) = open(d, small, 0).unwrap();
    append_each(&wal, 1..=6).await;
    wal.close().unwrap();
    let files = segments(d);
    assert_eq!(files.len(), 3);
    let pristine: Vec<Vec<u8>> = files.iter().map(|p| fs::read(p).unwrap()).collect();
    let restore = || {
        for (p, b) in files.iter().zip(&pristine) {
            fs::write(p, b).unwrap();
        }
    };

    let (mut refused, mut cut) = (0, 0);
    for (f, bytes) in pristine.iter().enumerate() {
        for at in 0..bytes.len() {
            restore();
            flip_byte(&files[f], at as u64);
            let checked = wal::scan(d, 0);
            match open(d, small, 0) {
                Err(WalError::Corrupt { .. } | WalError::Gap { .. }) => {
                    assert!(
                        checked.is_err(),
                        "scan accepted what open refused ({f}, {at})"
                    );
                    refused += 1;
                }
                Err(e) => panic!("unexpected error {e} ({f}, {at})"),
                Ok((wal, report, seen)) => {
                    wal.close().unwrap();
                    let n = seen.len();
                    assert_eq!(seen, expected(1..=n as u64), "not a prefix ({f}, {at})");
                    assert_eq!(checked.unwrap(), report, "scan disagrees ({f}, {at})");
                    if n < 6 {
                        let torn = report.torn_tail.expect("records lost without a torn tail");
                        assert_eq!(torn.file, files[2]);
                        cut += 1;
                    }
                }
            }
        }
    }
    // Only damage to the newest segment's last record can be cut (and no flip goes unnoticed).
    assert_eq!(cut, FRAME + 20);
    let total: usize = pristine.iter().map(Vec::len).sum();
    assert_eq!(refused + cut, total as u64);
}

/// The writer keeps zeros ahead of its records (`src/wal/writer.rs`, "Preallocation and rotation");
/// a copy of the directory taken while it runs (what a crash leaves) recovers every durable record
/// with no torn tail, and a clean close leaves the segment ending with its last record.
#[tokio::test]
async fn the_writer_preallocates_and_a_crash_copy_recovers_without_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, WalOptions::default(), 0).unwrap();
    append_each(&wal, 1..=5).await;
    let file = segment_path(d, 1);
    let end = offset_of(1, 5) + FRAME + 20;
    let live = fs::read(&file).unwrap();
    assert!(
        live.len() as u64 >= end + 64 * 1024,
        "no preallocation: {}",
        live.len()
    );
    assert!(live[end as usize..].iter().all(|&b| b == 0));

    let copy = tempfile::tempdir().unwrap();
    fs::copy(&file, segment_path(copy.path(), 1)).unwrap();
    let (recovered, report, seen) = open(copy.path(), WalOptions::default(), 0).unwrap();
    assert_eq!(seen, expected(1..=5));
    assert_eq!((report.torn_tail, report.last_lsn), (None, 5));
    assert_eq!(
        fs::metadata(segment_path(copy.path(), 1)).unwrap().len(),
        end
    );
    recovered.close().unwrap();

    wal.close().unwrap();
    assert_eq!(fs::metadata(&file).unwrap().len(), end);
}

/// The text form `--fsync` and the config file use, and the defaults.
#[test]
fn fsync_mode_names_and_defaults() {
    assert_eq!(FsyncMode::default(), FsyncMode::Batch);
    let names: Vec<&str> = FsyncMode::ALL.iter().map(|m| m.as_str()).collect();
    assert_eq!(names, ["always", "batch", "never"]);
    for mode in FsyncMode::ALL {
        assert_eq!(mode.to_string().parse::<FsyncMode>(), Ok(mode));
    }
    let error = "Batch".parse::<FsyncMode>().unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid fsync mode `Batch`: expected always, batch or never"
    );
    assert_eq!(
        serde_json::to_string(&FsyncMode::Never).unwrap(),
        "\"never\""
    );
    assert_eq!(
        serde_json::from_str::<FsyncMode>("\"always\"").unwrap(),
        FsyncMode::Always
    );
    let opts = WalOptions::default();
    assert_eq!(
        (opts.fsync, opts.segment_bytes),
        (FsyncMode::Batch, 64 << 20)
    );
}

/// Corruption and I/O errors name the file (and the byte offset).
#[test]
fn errors_name_file_and_offset() {
    let e = WalError::Corrupt {
        file: PathBuf::from("/x/00000000000000000001.wal"),
        offset: 1234,
        reason: "crc mismatch".to_owned(),
    };
    assert_eq!(
        e.to_string(),
        "log corrupt in /x/00000000000000000001.wal at byte offset 1234: crc mismatch"
    );
    let e = WalError::Io {
        path: PathBuf::from("/x/y.wal"),
        source: std::io::Error::other("boom"),
    };
    assert!(e.to_string().contains("/x/y.wal"));
}

/// `--fsync always`: one write and one fsync per record, even when records queue up.
#[tokio::test]
async fn always_mode_fsyncs_every_record_alone() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        fsync: FsyncMode::Always,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), opts, 0, |_, _| Ok::<(), String>(())).unwrap();
    for i in 0..20u8 {
        wal.append(&[i]).unwrap();
    }
    wal.durable(20).await.unwrap();
    let stats = wal.stats();
    assert_eq!((stats.batches, stats.records), (20, 20));
    assert!(stats.fsyncs >= 20);
    wal.close().unwrap();
}

/// Oversized payloads, waits for unappended LSNs and appends after close are refused.
#[tokio::test]
async fn append_and_durable_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), WalOptions::default(), 0, |_, _| {
        Ok::<(), String>(())
    })
    .unwrap();
    assert!(matches!(
        wal.append(&vec![0; wal::MAX_PAYLOAD + 1]),
        Err(WalError::PayloadTooLarge { .. })
    ));
    assert!(matches!(
        wal.durable(1).await,
        Err(WalError::NotAppended { lsn: 1, last: 0 })
    ));
    assert_eq!(wal.append(&vec![7; wal::MAX_PAYLOAD]).unwrap(), 1);
    wal.durable(0).await.unwrap();
    wal.close().unwrap();
    wal.close().unwrap();
    assert_eq!(wal.durable_lsn(), 1);
    assert!(matches!(wal.append(b"late"), Err(WalError::Closed)));
    wal.durable(1).await.unwrap();
}

#[tokio::test]
async fn rotation_never_reuses_a_name_for_an_empty_segment() {
    // segment_bytes below the header size: every batch would rotate, but a segment is only
    // closed once it holds a record.
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        fsync: FsyncMode::Batch,
        segment_bytes: 1,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), opts, 0, |_, _| Ok::<(), String>(())).unwrap();
    for i in 1..=3u64 {
        assert_eq!(wal.append(b"r").unwrap(), i);
        wal.durable(i).await.unwrap();
    }
    wal.close().unwrap();
    let names: Vec<PathBuf> = segments(dir.path());
    let expected: Vec<PathBuf> = (1..=3).map(|lsn| segment_path(dir.path(), lsn)).collect();
    assert_eq!(names, expected);
}
