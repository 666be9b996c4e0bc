//! Write-ahead log behaviour through the public API only (`idrecon::wal`), on real files in
//! temporary directories: recovery round trips, snapshot-covered records and segment removal,
//! torn tails (cut) versus corruption (refused, with file and byte offset; docs/behaviour.md §8),
//! and group commit under concurrency.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use idrecon::wal::{self, FsyncMode, Lsn, RecoveryReport, Wal, WalError, WalOptions};

/// Framing bytes per record (len, crc, lsn).
pub(crate) const FRAME: u64 = 16;
/// Segment header bytes.
pub(crate) const HEADER: u64 = 24;

type Records = Vec<(Lsn, Vec<u8>)>;

pub(crate) fn opts(fsync: FsyncMode, segment_bytes: u64) -> WalOptions {
    WalOptions {
        fsync,
        segment_bytes,
        ..WalOptions::default()
    }
}

/// Opens the log, collecting every visited record.
pub(crate) fn open(
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
pub(crate) fn reopen(dir: &Path, after: Lsn) -> (RecoveryReport, Records) {
    let (wal, report, seen) = open(dir, WalOptions::default(), after).unwrap();
    wal.close().unwrap();
    (report, seen)
}

/// Payload of record `i`: 20 bytes, so every record is 36 bytes on disk.
pub(crate) fn payload(i: u64) -> Vec<u8> {
    format!("payload-{i:012}").into_bytes()
}

/// Appends `payload(i)` for `i` in `range`, each made durable before the next (one record per
/// batch, so rotation points are deterministic); checks the LSNs handed out.
pub(crate) async fn append_each(wal: &Wal, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        assert_eq!(wal.append(&payload(i)).unwrap(), i);
        wal.durable(i).await.unwrap();
    }
}

pub(crate) fn expected(range: std::ops::RangeInclusive<u64>) -> Records {
    range.map(|i| (i, payload(i))).collect()
}

/// Segment files in `dir`, oldest first.
pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

pub(crate) fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

/// Byte offset of the record with LSN `lsn` in a segment starting at `first` holding
/// 20-byte payloads.
pub(crate) fn offset_of(first: Lsn, lsn: Lsn) -> u64 {
    HEADER + (lsn - first) * (FRAME + 20)
}

pub(crate) fn flip_byte(path: &Path, offset: u64) {
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
pub(crate) fn assert_refused(dir: &Path, after: Lsn, file: &Path, offset: u64) {
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
