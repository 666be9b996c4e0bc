//! The log's head file (docs/format.md, "The head file"): a segment that was durably started and
//! then lost its header, or vanished, is refused naming the file; a crash while a segment was
//! being created still recovers (docs/behaviour.md §8).

use std::fs;
use std::path::Path;

use idrecon::wal::{self, FsyncMode, TornTail, WalOptions};

use crate::wal::{
    HEADER, append_each, assert_refused, expected, open, opts, reopen, segment_path, segments,
};

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
