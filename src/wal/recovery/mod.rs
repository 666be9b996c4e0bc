//! Recovery: the scan of every segment at start-up, which tells a torn tail from corruption
//! (docs/behaviour.md §8; the byte-level statement is docs/format.md, "Torn tail versus
//! corruption"). It is the rule etcd, RocksDB and raft-engine apply to their logs.
//!
//! A record is *invalid* when its 16-byte framing is cut short, `len` exceeds
//! [`MAX_PAYLOAD`](super::MAX_PAYLOAD), the payload
//! runs past the end of the file, the CRC does not match, or the LSN is not the expected one.
//! At the first invalid record of a segment:
//!
//! * if the segment is the **newest** and every byte from there to the end is zero, it is the
//!   end of the log followed by space the writer preallocated: nothing is reported, and
//!   [`Wal::open`](super::Wal::open) cuts the zeros off;
//! * if the segment is the **newest** and no valid record starts at any later byte offset of the
//!   file, it is a **torn tail** (an interrupted write, or garbage the file system left after
//!   one): `open` truncates the file to that offset, fsyncs it and logs a warning naming the
//!   file and offset; [`scan`] only reports it in [`RecoveryReport::torn_tail`];
//! * otherwise it is **corruption**: [`WalError::Corrupt`] names the file and the byte offset of
//!   the first invalid record, and nothing is modified. Skipping it would silently drop
//!   acknowledged writes, or replay later ones without earlier ones.
//!
//! A "valid record at a later offset" is searched at every byte offset after the bad one; a
//! candidate's CRC is only computed when its LSN lies in `(last_good, last_good + rest / 16 + 1]`
//! (`rest` = bytes from the bad offset to the end: each lost record takes at least 16 bytes) and
//! its payload fits in the file, so the search stays linear in practice.
//!
//! Segments other than the newest are complete by construction (the writer fsyncs a segment
//! before it creates the next one, in every fsync mode), so they must be valid up to their last
//! byte. A bad segment header is corruption at offset 0, except in the newest segment when the
//! file is shorter than 24 bytes or consists only of zero bytes (the writer crashed while
//! creating it, before any record could be written): then it is a torn tail at offset 0 and
//! `open` rewrites a fresh header. That exception needs proof that the segment was never
//! durably started, which the head file gives (`head.rs`): when `wal/HEAD` names the newest
//! segment, its header must be intact, and when it names a segment newer than every segment
//! present, that segment vanished ([`WalError::Missing`]). Without a head file (a log written
//! before it existed) the exception applies as it always did.
//!
//! The segments must also continue each other: each starts at the LSN after the previous one's
//! last record, except that a jump is allowed where every missing LSN is covered by the
//! snapshot recovery starts from (`after_lsn`); anything else is [`WalError::Gap`].

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use super::format::{
    ActiveSegment, HEADER_LEN, RECORD_HEADER_LEN, SegmentFile, check_header, check_record,
    create_segment, encode_header, le_u64, list_segments, read_record, record_crc,
};
use super::head::{Head, read_head, started_segment, write_head};
use super::{Lsn, WalError, io_err, sync_dir};
use crate::storage::{RealFs, Storage};

/// What recovery ([`Wal::open`](super::Wal::open)) or verification ([`scan`]) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Number of segment files scanned.
    pub segments: usize,
    /// Number of records with LSN `> after_lsn` (given to the visitor, for `open`).
    pub records_replayed: u64,
    /// LSN of the last valid record in the log (after cutting a torn tail); if the newest
    /// segment holds no record, its first LSN - 1; 0 when there is no segment.
    pub last_lsn: Lsn,
    /// The torn tail of the newest segment, if any (cut by `open`, only reported by `scan`).
    pub torn_tail: Option<TornTail>,
}

/// A torn tail (docs/behaviour.md §8): bytes at the end of the newest segment from its first
/// invalid record on, with no valid record after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The newest segment file.
    pub file: PathBuf,
    /// Byte offset where the first invalid record starts; the file is cut to this length
    /// (for a torn segment header: 0, and a fresh header is written).
    pub offset: u64,
    /// Number of bytes removed (file length - `offset`).
    pub bytes_cut: u64,
}

/// Verifies the log in `dir` without modifying anything (`idrecon check`, docs/behaviour.md §7).
///
/// Applies exactly the rules of [`Wal::open`](super::Wal::open) with snapshot LSN `after_lsn`:
/// `Ok(report)` when `open` would start, with a torn tail that `open` would cut reported in
/// [`RecoveryReport::torn_tail`] and `records_replayed` counting the records `open` would
/// replay. A missing directory is an empty, valid log.
///
/// # Errors
/// [`WalError::Corrupt`] (file and byte offset) or [`WalError::Gap`] for anything `open` would
/// refuse; [`WalError::Io`] if a file cannot be read.
pub fn scan(dir: &Path, after_lsn: Lsn) -> Result<RecoveryReport, WalError> {
    replay_read_only(
        dir,
        after_lsn,
        |_, _| Ok::<(), std::convert::Infallible>(()),
    )
}

/// Like [`scan`], but also passes every record with LSN `> after_lsn` to `visit` in order, as
/// [`Wal::open`](super::Wal::open) would, without modifying any file and without starting a
/// writer (`idrecon export` and `check`). A torn tail is reported, not cut.
///
/// # Errors
/// As [`scan`], plus [`WalError::Replay`] when `visit` fails.
pub fn replay_read_only<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    dir: &Path,
    after_lsn: Lsn,
    visit: impl FnMut(Lsn, &[u8]) -> Result<(), E>,
) -> Result<RecoveryReport, WalError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(RecoveryReport {
                segments: 0,
                records_replayed: 0,
                last_lsn: 0,
                torn_tail: None,
            });
        }
        Err(e) => return Err(io_err(dir)(e)),
        Ok(_) => {}
    }
    let segments = list_segments(&RealFs, dir)?;
    let head = read_head(&RealFs, dir)?;
    recover(
        &RealFs,
        dir,
        &segments,
        head.as_ref(),
        after_lsn,
        Repair::ReadOnly,
        visit,
    )
}

/// Searches every byte offset after `bad` for a valid record with an LSN after `last_good`
/// (module docs); returns its offset.
fn valid_record_after(data: &[u8], bad: usize, last_good: Lsn) -> Option<usize> {
    let rest = data.len().saturating_sub(bad) as u64;
    let max_lsn = last_good.saturating_add(rest / RECORD_HEADER_LEN as u64 + 1);
    let last_start = data.len().checked_sub(RECORD_HEADER_LEN)?;
    (bad + 1..=last_start).find(|&off| {
        let Some(lsn) = le_u64(data, off + 8) else {
            return false;
        };
        if lsn <= last_good || lsn > max_lsn {
            return false;
        }
        match read_record(data, off) {
            Ok((record, crc)) => record_crc(record.lsn, record.payload) == crc,
            Err(_) => false,
        }
    })
}

/// Whether recovery may modify files.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repair {
    /// `open`: cut a torn tail.
    Cut,
    /// `scan`: report only.
    ReadOnly,
}

/// How a segment ends.
enum SegmentEnd {
    /// Valid up to its last byte.
    Clean,
    /// Newest segment with a torn tail from this offset on.
    TornTail(usize),
    /// Newest segment whose last record is followed by zero bytes only, from this offset on:
    /// space the writer preallocated (`writer.rs`, "Preallocation and rotation"), not a torn tail.
    Preallocated(usize),
    /// Newest segment whose header is cut short or all zeros: rewrite the header.
    TornHeader,
}

/// Result of validating one segment.
struct SegmentScan {
    /// End offset of the last valid record (`HEADER_LEN` if none; 0 for a torn header).
    valid_end: usize,
    /// LSN the next record after this segment must have.
    next_lsn: Lsn,
    end: SegmentEnd,
}

/// Where a segment stands in the log, which decides what damage at its end may be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Not the newest: complete by construction, valid to its last byte.
    Older,
    /// The newest, and `wal/HEAD` names it: it was durably started, so records in it may have
    /// been acknowledged, and its header must be intact (a torn tail of records is allowed).
    NewestStarted,
    /// The newest, not (yet) named by `wal/HEAD`, or a log without a head file: a header cut
    /// short or all zeros is the trace of a crash while creating it.
    Newest,
}

/// Validates one segment whose name says `first_lsn` (module docs).
fn scan_segment(
    path: &Path,
    first_lsn: Lsn,
    data: &[u8],
    position: Position,
) -> Result<SegmentScan, WalError> {
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let newest = position != Position::Older;
    if let Err(reason) = check_header(data, first_lsn) {
        let torn = data.len() < HEADER_LEN || data.iter().all(|&b| b == 0);
        if torn && position == Position::Newest {
            return Ok(SegmentScan {
                valid_end: 0,
                next_lsn: first_lsn,
                end: SegmentEnd::TornHeader,
            });
        }
        if torn && position == Position::NewestStarted {
            return Err(corrupt(
                0,
                format!(
                    "{reason} ({} bytes left) in the newest segment, which the log head file \
                     records as durably started: records in it may have been acknowledged",
                    data.len()
                ),
            ));
        }
        return Err(corrupt(0, reason));
    }
    let mut off = HEADER_LEN;
    let mut expected = first_lsn;
    while off < data.len() {
        match check_record(data, off, expected) {
            Ok(record) => {
                off += record.size;
                expected = expected.saturating_add(1);
            }
            Err(reason) => {
                if !newest {
                    return Err(corrupt(
                        off,
                        format!("{reason} (in a segment that is not the newest)"),
                    ));
                }
                if data[off..].iter().all(|&b| b == 0) {
                    return Ok(SegmentScan {
                        valid_end: off,
                        next_lsn: expected,
                        end: SegmentEnd::Preallocated(off),
                    });
                }
                if let Some(later) = valid_record_after(data, off, expected.saturating_sub(1)) {
                    return Err(corrupt(
                        off,
                        format!("{reason} (a valid record follows at byte offset {later})"),
                    ));
                }
                return Ok(SegmentScan {
                    valid_end: off,
                    next_lsn: expected,
                    end: SegmentEnd::TornTail(off),
                });
            }
        }
    }
    Ok(SegmentScan {
        valid_end: off,
        next_lsn: expected,
        end: SegmentEnd::Clean,
    })
}

/// Validates `segments` (ordered by first LSN) of the log in `dir`, with its head file `head`,
/// as one log for a snapshot at `after_lsn`, visiting records `> after_lsn` segment by segment
/// (each segment is validated before any of its records is visited), and cuts a torn tail when
/// `repair` is `Cut`.
fn recover<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    fs: &dyn Storage,
    dir: &Path,
    segments: &[SegmentFile],
    head: Option<&Head>,
    after_lsn: Lsn,
    repair: Repair,
    mut visit: impl FnMut(Lsn, &[u8]) -> Result<(), E>,
) -> Result<RecoveryReport, WalError> {
    let started = started_segment(dir, segments, head)?;
    let mut report = RecoveryReport {
        segments: segments.len(),
        records_replayed: 0,
        last_lsn: 0,
        torn_tail: None,
    };
    let first_needed = after_lsn.saturating_add(1);
    let mut next_lsn: Option<Lsn> = None;
    // One buffer for every segment: reading a large log into fresh memory per segment cost a
    // page fault per 4 KiB, which slowed replay. It holds every value of the log, so it grows
    // without leaving copies behind and is zeroed when dropped (docs/behaviour.md §6.7).
    let mut data = zeroize::Zeroizing::new(Vec::<u8>::new());
    for (i, segment) in segments.iter().enumerate() {
        let path = &segment.path;
        let position = if i + 1 < segments.len() {
            Position::Older
        } else if started == Some(segment.first_lsn) {
            Position::NewestStarted
        } else {
            Position::Newest
        };
        if segment.first_lsn == 0 {
            return Err(WalError::Corrupt {
                file: path.clone(),
                offset: 0,
                reason: "segment name gives first LSN 0, but LSNs start at 1".to_owned(),
            });
        }
        let expected = next_lsn.unwrap_or(first_needed);
        let continues = match next_lsn {
            None => segment.first_lsn <= first_needed,
            // A jump is allowed only inside the snapshot-covered range (module docs).
            Some(n) => {
                segment.first_lsn == n
                    || (segment.first_lsn > n && segment.first_lsn <= first_needed)
            }
        };
        if !continues {
            return Err(WalError::Gap {
                file: path.clone(),
                expected,
                found: segment.first_lsn,
            });
        }

        data.clear();
        fs.open_read(path)
            .and_then(|mut file| crate::storage::read_to_end_scrubbed(&mut *file, &mut data))
            .map_err(io_err(path))?;
        let scanned = scan_segment(path, segment.first_lsn, &data, position)?;

        let mut off = HEADER_LEN;
        while off < scanned.valid_end {
            let Ok((record, _)) = read_record(&data, off) else {
                break;
            };
            if record.lsn > after_lsn {
                visit(record.lsn, record.payload).map_err(|e| WalError::Replay {
                    lsn: record.lsn,
                    source: e.into(),
                })?;
                report.records_replayed += 1;
            }
            off += record.size;
        }
        next_lsn = Some(scanned.next_lsn);

        // Where the newest segment is cut (only when `repair` is `Cut`), and whether what goes
        // is a torn tail (reported, with a warning) or preallocated zeros (silently).
        let (cut_at, torn, header) = match scanned.end {
            SegmentEnd::Clean => continue,
            SegmentEnd::Preallocated(offset) => (offset, false, None),
            SegmentEnd::TornTail(offset) => (offset, true, None),
            SegmentEnd::TornHeader => (0, true, Some(segment.first_lsn)),
        };
        if repair == Repair::Cut {
            cut_newest(fs, path, cut_at as u64, header)?;
        }
        if torn {
            let tail = TornTail {
                file: path.clone(),
                offset: cut_at as u64,
                bytes_cut: (data.len() - cut_at) as u64,
            };
            if repair == Repair::Cut {
                tracing::warn!(
                    file = %path.display(),
                    offset = tail.offset,
                    bytes_cut = tail.bytes_cut,
                    "cut torn tail of the newest log segment (docs/behaviour.md §8)"
                );
            }
            report.torn_tail = Some(tail);
        }
    }
    report.last_lsn = next_lsn.map_or(0, |n| n - 1);
    Ok(report)
}

/// Truncates the newest segment at `path` to `offset` (the end of its last valid record: a torn
/// tail or preallocated zeros go) and fsyncs it; with `header`, the segment's header was torn:
/// the file is cut to nothing and a fresh header for that first LSN is written. The writer
/// preallocates again as it appends.
fn cut_newest(
    fs: &dyn Storage,
    path: &Path,
    offset: u64,
    header: Option<Lsn>,
) -> Result<(), WalError> {
    let mut file = fs.open_write(path, false).map_err(io_err(path))?;
    file.set_len(offset).map_err(io_err(path))?;
    if let Some(first_lsn) = header {
        file.write_all_at(0, &encode_header(first_lsn))
            .map_err(io_err(path))?;
    }
    file.sync_all().map_err(io_err(path))
}

/// The log after recovery, ready for the writer thread.
pub(super) struct Recovered {
    /// What recovery found.
    pub(super) report: RecoveryReport,
    /// The LSN the next append gets: `max(report.last_lsn, after_lsn) + 1`.
    pub(super) next_lsn: Lsn,
    /// Every segment, oldest first; the last one is `active`.
    pub(super) segments: VecDeque<SegmentFile>,
    /// The segment the writer appends to.
    pub(super) active: ActiveSegment,
}

/// Recovery for [`Wal::open_with`](super::Wal::open_with): creates `dir` if missing, validates
/// and replays every segment ([`recover`], cutting a torn tail), then reopens the newest segment
/// for appending, or creates one named after the next LSN when there is none or the log ends
/// below `after_lsn`; finally makes the head file name that segment (`head.rs`) before any
/// record can be written to it.
pub(super) fn open_segments<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    fs: &dyn Storage,
    dir: &Path,
    after_lsn: Lsn,
    visit: impl FnMut(Lsn, &[u8]) -> Result<(), E>,
) -> Result<Recovered, WalError> {
    fs.create_dir_all(dir).map_err(io_err(dir))?;
    // The directory's own entry must survive a crash too: without this fsync of the parent,
    // a new `DIR/wal` (and every acknowledged record in it) could vanish on power loss.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(fs, parent)?;
    }
    let segments = list_segments(fs, dir)?;
    let head = read_head(fs, dir)?;
    let report = recover(
        fs,
        dir,
        &segments,
        head.as_ref(),
        after_lsn,
        Repair::Cut,
        visit,
    )?;

    let next_lsn = report.last_lsn.max(after_lsn).saturating_add(1);
    let mut segments: VecDeque<SegmentFile> = segments.into();
    let active = match segments.back() {
        Some(newest) if report.last_lsn >= after_lsn => resume_segment(fs, dir, newest)?,
        _ => {
            let active = create_segment(fs, dir, next_lsn)?;
            segments.push_back(SegmentFile {
                first_lsn: next_lsn,
                path: active.path.clone(),
            });
            active
        }
    };
    if head.is_none_or(|h| h.first_lsn != active.first_lsn) {
        write_head(fs, dir, active.first_lsn)?;
    }

    Ok(Recovered {
        report,
        next_lsn,
        segments,
        active,
    })
}

/// Reopens the newest recovered segment as the active one. Recovery has cut any torn tail and
/// preallocated zeros, so the file ends with its last record (or its header). Its records may
/// be in the page cache only (a crash between write and fsync, or `--fsync never`); they are
/// about to be reported durable, so the file and the directory are fsynced first.
fn resume_segment(
    fs: &dyn Storage,
    dir: &Path,
    newest: &SegmentFile,
) -> Result<ActiveSegment, WalError> {
    let mut file = fs
        .open_write(&newest.path, false)
        .map_err(io_err(&newest.path))?;
    let size = file.len().map_err(io_err(&newest.path))?;
    file.sync_all().map_err(io_err(&newest.path))?;
    sync_dir(fs, dir)?;
    Ok(ActiveSegment {
        file,
        path: newest.path.clone(),
        first_lsn: newest.first_lsn,
        size,
        allocated: size,
    })
}

#[cfg(test)]
mod tests;
