//! The bodies of the fuzz targets, shared by the cargo-fuzz targets in `fuzz/fuzz_targets/`
//! (`#[path = "../fuzz_bodies.rs"] mod fuzz_bodies;`) and by the main crate's
//! `tests/it/fuzz_smoke.rs` (`#[path = "../../fuzz/fuzz_bodies.rs"]`), so CI checks exactly the
//! properties the fuzzers check.
//!
//! Every body takes arbitrary bytes, must never panic, and asserts the properties that must hold
//! for its input (see each function). Besides `idrecon` they use only `bincode` and `crc32fast`
//! (dependencies of `idrecon` too, at the same versions).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use idrecon::contact::{Email, Phone, Timestamp};
use idrecon::event::{Event, NewContact};
use idrecon::graph::IdentityGraph;
use idrecon::phone_region::{Normalizer, PhoneRegion};
use idrecon::rows::{self, ImportError, RowFormat};
use idrecon::snapshot::{self, SnapshotDir, SnapshotError, SnapshotItem};
use idrecon::wal::{self, WalError};

// ---------------------------------------------------------------------------------------------
// Scratch directories
// ---------------------------------------------------------------------------------------------

/// An empty directory private to this call, removed on drop. Under `/dev/shm` when it exists
/// (no disk I/O per fuzz input), else the system temp directory.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var_os("IDRECON_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let shm = Path::new("/dev/shm");
                if shm.is_dir() {
                    shm.to_path_buf()
                } else {
                    std::env::temp_dir()
                }
            });
        let dir = base.join(format!(
            "idrecon-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch directory");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Shared checks
// ---------------------------------------------------------------------------------------------

/// docs/behaviour.md §4 for a normalized email.
pub fn check_email(email: &Email) {
    let e = email.as_str();
    assert!(!e.is_empty(), "empty email");
    assert_eq!(e, e.trim(), "email not trimmed: {e:?}");
    assert_eq!(e, e.to_lowercase(), "email not lowercase: {e:?}");
    assert!(
        e.len() <= idrecon::contact::MAX_EMAIL_BYTES,
        "email too long"
    );
    assert!(
        !e.chars().any(|c| c.is_whitespace() || c.is_control()),
        "white space or control character in email {e:?}"
    );
    let (local, domain) = e.split_once('@').expect("email without '@'");
    assert!(!local.is_empty() && !domain.is_empty(), "empty side: {e:?}");
    assert!(!domain.contains('@'), "more than one '@': {e:?}");
    // Normalization is idempotent.
    assert_eq!(Email::parse(e).unwrap().as_ref(), Some(email));
}

/// docs/behaviour.md §4 for a normalized phone number.
pub fn check_phone(phone: &Phone) {
    let p = phone.as_str();
    assert!(!p.is_empty(), "empty phone");
    assert_eq!(p, p.trim(), "phone not trimmed: {p:?}");
    assert!(p.chars().count() <= idrecon::contact::MAX_PHONE_CHARS);
    assert!(
        p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '+' | '-' | '(' | ')' | '.')),
        "phone has a forbidden character: {p:?}"
    );
    assert_eq!(Phone::parse(p).unwrap().as_ref(), Some(phone));
}

/// A decoded event re-encodes to exactly the payload it came from (the log format has one
/// encoding per event), and replaying it into a graph returns Ok or Err, never panics.
fn check_event(payload: &[u8], graph: &mut IdentityGraph) -> Result<(), String> {
    let event = Event::decode(payload).map_err(|e| e.to_string())?;
    assert_eq!(
        event.encode().expect("encode a decoded event"),
        payload,
        "decode/encode is not the identity for {event:?}"
    );
    let _ = graph.apply(&event);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (a) WAL segments
// ---------------------------------------------------------------------------------------------

const WAL_MAGIC: &[u8; 8] = b"IDRWAL\r\n";

/// The 24-byte segment header of `src/wal/format.rs` (format version 1).
pub fn wal_header(first_lsn: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(WAL_MAGIC);
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// One framed record (`len`, `crc`, `lsn`, payload) with a correct CRC.
pub fn wal_record(lsn: u64, payload: &[u8]) -> Vec<u8> {
    let mut data = lsn.to_le_bytes().to_vec();
    data.extend_from_slice(payload);
    let crc = crc32(&data);
    let mut r = Vec::with_capacity(16 + payload.len());
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    r.extend_from_slice(&crc.to_le_bytes());
    r.extend_from_slice(&lsn.to_le_bytes());
    r.extend_from_slice(payload);
    r
}

/// CRC-32 (IEEE), as the log and snapshot code computes it.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// Target (a): log record decoding.
///
/// Input layout: `[mode, lsn_sel, body...]`.
/// * `mode & 3`: 0 = valid header + fuzzed body; 1 = the whole file fuzzed; 2 = valid header +
///   records framed from the body (`[len, payload[len]]*`, correct CRCs and consecutive LSNs,
///   so the payloads reach `Event::decode`); 3 = as 2, then one fuzzed byte flipped.
/// * `mode >> 2 & 7`: the snapshot LSN `after_lsn` given to the scan.
/// * `mode & 0x20`: the file is not the newest segment (an empty segment follows it).
/// * `lsn_sel`: the segment's first LSN (1..=4, or 0 which is invalid).
///
/// Properties: `scan` returns Ok or `Corrupt`/`Gap`, never panics or reports I/O errors, and
/// modifies nothing; `replay_read_only` with `Event::decode` in the visitor agrees with `scan`
/// (same report when every payload decodes, else `Replay`), visits consecutive LSNs above
/// `after_lsn`; decoded events re-encode to their payload.
pub fn wal_segment(data: &[u8]) {
    let [mode, lsn_sel, body @ ..] = data else {
        return;
    };
    let first_lsn = u64::from(*lsn_sel % 5);
    let after_lsn = u64::from((mode >> 2) & 7);
    let file = match mode & 3 {
        0 => [wal_header(first_lsn), body.to_vec()].concat(),
        1 => body.to_vec(),
        _ => {
            let mut file = wal_header(first_lsn);
            let mut rest = body;
            let mut lsn = first_lsn;
            while let [len, tail @ ..] = rest {
                let n = usize::from(*len).min(tail.len());
                file.extend_from_slice(&wal_record(lsn, &tail[..n]));
                rest = &tail[n..];
                lsn += 1;
            }
            if mode & 3 == 3 && !body.is_empty() {
                let at = usize::from(body[0]) * 7 % file.len();
                file[at] ^= 1 << (body[body.len() - 1] % 8);
            }
            file
        }
    };
    let scratch = Scratch::new();
    let dir = scratch.path();
    let seg = dir.join(format!("{first_lsn:020}.wal"));
    fs::write(&seg, &file).unwrap();
    if mode & 0x20 != 0 {
        // A later, newest segment: `seg` must now be valid to its last byte.
        let next = first_lsn + 1 + u64::from(*lsn_sel / 5 % 4);
        fs::write(dir.join(format!("{next:020}.wal")), wal_header(next)).unwrap();
    }
    // A file that is not a segment is ignored.
    fs::write(dir.join("notes.txt"), b"not a segment").unwrap();

    let scanned = wal::scan(dir, after_lsn);
    match &scanned {
        Ok(report) => {
            assert_eq!(report.segments, 1 + usize::from(mode & 0x20 != 0));
            assert!(report.records_replayed <= file.len() as u64 / 16);
            if let Some(t) = &report.torn_tail {
                assert_eq!(t.file, seg, "torn tail outside the newest segment");
                assert_eq!(t.offset + t.bytes_cut, file.len() as u64);
                assert!(t.bytes_cut > 0 || t.offset == 0);
            }
        }
        Err(WalError::Corrupt {
            file: f, offset, ..
        }) => {
            assert!(f.starts_with(dir));
            assert!(*offset <= file.len() as u64);
        }
        Err(WalError::Gap { .. }) => {}
        Err(other) => panic!("scan returned an unexpected error: {other}"),
    }
    assert_eq!(fs::read(&seg).unwrap(), file, "scan modified the segment");

    let mut graph = IdentityGraph::new();
    let mut visited = Vec::new();
    let replayed = wal::replay_read_only(dir, after_lsn, |lsn, payload| {
        visited.push(lsn);
        check_event(payload, &mut graph)
    });
    if let Some(w) = visited.windows(2).find(|w| w[1] != w[0] + 1) {
        panic!("visited LSNs not consecutive: {w:?}");
    }
    if let Some(&first) = visited.first() {
        assert!(
            first > after_lsn,
            "visited LSN {first} <= after_lsn {after_lsn}"
        );
    }
    match (&scanned, &replayed) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            assert_eq!(visited.len() as u64, a.records_replayed);
        }
        (Ok(a), Err(WalError::Replay { lsn, .. })) => {
            assert_eq!(Some(lsn), visited.last());
            assert!(visited.len() as u64 <= a.records_replayed);
        }
        // Segments are validated before their records are visited, so a Corrupt/Gap log may
        // still fail in a visitor of an earlier segment first.
        (Err(_), Err(WalError::Replay { .. })) => {}
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("scan {a:?} but replay_read_only {b:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// (b) Snapshots
// ---------------------------------------------------------------------------------------------

/// Target (b): snapshot decoding.
///
/// Input layout: `[mode, body...]`. `mode & 1 == 0`: the body is the whole file. Else a valid
/// 40-byte header (LSN and next id from `mode`, the contact count from the number of decoded
/// contacts when `mode & 2`, else 0) and chunks framed from the body (`[len, payload[len]]*`,
/// correct CRCs), a correct trailer, then the fuzzed byte at `mode >> 2` flipped when
/// `mode & 0x80`.
///
/// Properties: `verify` and `read` return Ok or `Corrupt` (never `Io`, never panic), agree with
/// each other, `read` visits exactly `contacts` contacts when Ok, the header counters are
/// `<= MAX_COUNTER`, and re-encoding the contacts read gives a file that reads back the same.
pub fn snapshot_file(data: &[u8]) {
    let [mode, body @ ..] = data else {
        return;
    };
    let file = if mode & 1 == 0 {
        body.to_vec()
    } else {
        let mut chunks = Vec::new();
        let (mut count, mut nchunks) = (0u64, 0u64);
        let mut rest = body;
        while let [len, tail @ ..] = rest {
            let n = usize::from(*len).min(tail.len());
            let payload = &tail[..n];
            rest = &tail[n..];
            if n == 0 {
                continue;
            }
            // Count how many contacts the chunk decodes to (as the reader will).
            let mut r = payload;
            while !r.is_empty() {
                match decode_contact(&mut r) {
                    Some(_) => count += 1,
                    None => break,
                }
            }
            chunks.extend_from_slice(&(n as u32).to_le_bytes());
            chunks.extend_from_slice(&crc32(payload).to_le_bytes());
            chunks.extend_from_slice(payload);
            nchunks += 1;
        }
        let contacts = if mode & 2 != 0 { count } else { 0 };
        let mut file = Vec::new();
        file.extend_from_slice(b"IDRSNAP\n");
        file.extend_from_slice(&1u32.to_le_bytes());
        file.extend_from_slice(&u64::from(mode >> 4).to_le_bytes());
        file.extend_from_slice(&u64::from(mode >> 2).to_le_bytes());
        file.extend_from_slice(&contacts.to_le_bytes());
        let crc = crc32(&file);
        file.extend_from_slice(&crc.to_le_bytes());
        file.extend_from_slice(&chunks);
        let mut t = contacts.to_le_bytes().to_vec();
        t.extend_from_slice(&nchunks.to_le_bytes());
        file.extend_from_slice(&0u32.to_le_bytes());
        file.extend_from_slice(&crc32(&t).to_le_bytes());
        if mode & 0x80 != 0 {
            let at = usize::from(mode >> 2) * 13 % file.len();
            file[at] ^= 0x10;
        }
        file
    };
    let scratch = Scratch::new();
    let snapshots = SnapshotDir::on_disk(scratch.path());
    let path = snapshots.path_for(7);
    fs::write(&path, &file).unwrap();

    let verified = snapshots.verify(&path);
    let mut contacts = Vec::new();
    let read = snapshots.read(&path, |c: SnapshotItem<'_>| {
        contacts.push(c.to_entry());
        Ok::<(), std::convert::Infallible>(())
    });
    match (&verified, &read) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            assert_eq!(contacts.len() as u64, a.entries);
            assert!(a.lsn <= snapshot::MAX_COUNTER && a.next_id <= snapshot::MAX_COUNTER);
            assert!(file.len() >= 48);
            // Re-encoding reads back to the same header and contacts.
            let again = snapshot::encode(a.lsn, a.next_id, contacts.iter().cloned()).unwrap();
            let path2 = snapshots.path_for(8);
            fs::write(&path2, &again).unwrap();
            let mut back = Vec::new();
            let info = snapshots
                .read(&path2, |c: SnapshotItem<'_>| {
                    back.push(c.to_entry());
                    Ok::<(), std::convert::Infallible>(())
                })
                .expect("a re-encoded snapshot reads back");
            assert_eq!(&info, a);
            assert_eq!(back, contacts);
            // Rebuilding a graph from it returns Ok or Err, never panics.
            let mut graph = IdentityGraph::new();
            for c in contacts {
                if graph.load_snapshot_item(c.as_item()).is_err() {
                    break;
                }
            }
        }
        (
            Err(SnapshotError::Corrupt {
                file: f, offset, ..
            }),
            Err(SnapshotError::Corrupt { .. }),
        ) => {
            assert_eq!(f, &path);
            assert!(*offset <= file.len() as u64);
            assert_eq!(
                verified.as_ref().unwrap_err().to_string(),
                read.as_ref().unwrap_err().to_string()
            );
        }
        (a, b) => panic!("verify {a:?} / read {b:?}: expected Ok or Corrupt from both"),
    }
}

/// The snapshot reader's per-contact decoding (bincode 1, fixint, trailing bytes allowed).
fn decode_contact(rest: &mut &[u8]) -> Option<NewContact> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(rest.len() as u64)
        .deserialize_from(rest)
        .ok()
}

// ---------------------------------------------------------------------------------------------
// (c) /identify bodies
// ---------------------------------------------------------------------------------------------

/// Target (c): request parsing and normalization.
///
/// Properties: never panics; Ok has an email or a phone, each normalized per docs/behaviour.md §4
/// (email trimmed, lowercase, exactly one '@' with non-empty sides, no white space, at most
/// 254 bytes; phone trimmed, 1–32 allowed characters), and re-sending the normalized values
/// parses to the same request; an error has one of the documented codes and a `field` that
/// matches its code. With `--phone-region IN` too: never panics, and an Ok phone is E.164
/// (`+` and 2–15 digits) that re-parses to itself.
pub fn identify_body(data: &[u8]) {
    identify_body_in_region(data);
    match idrecon::http::identify::parse_identify_body(data, &Normalizer::default()) {
        Ok(req) => {
            assert!(req.email().is_some() || req.phone().is_some());
            if let Some(e) = req.email() {
                check_email(e);
            }
            if let Some(p) = req.phone() {
                check_phone(p);
            }
            let again = format!(
                "{{\"email\":{},\"phoneNumber\":{}}}",
                json_str(req.email().map(Email::as_str)),
                json_str(req.phone().map(Phone::as_str)),
            );
            let back = idrecon::http::identify::parse_identify_body(
                again.as_bytes(),
                &Normalizer::default(),
            )
            .expect("normalized request re-parses");
            assert_eq!(back.email(), req.email());
            assert_eq!(back.phone(), req.phone());
        }
        Err(e) => {
            let expected_field = match e.code {
                "invalid_json" | "missing_contact" => None,
                "invalid_email" => Some("email"),
                "invalid_phone_number" => Some("phoneNumber"),
                other => panic!("undocumented error code {other:?}"),
            };
            assert_eq!(e.field, expected_field, "{e:?}");
            assert!(!e.message.is_empty());
        }
    }
}

fn identify_body_in_region(data: &[u8]) {
    let region: PhoneRegion = "IN".parse().expect("IN is a region");
    let normalizer = Normalizer::new(Some(region));
    let Ok(req) = idrecon::http::identify::parse_identify_body(data, &normalizer) else {
        return;
    };
    if let Some(p) = req.phone() {
        let text = p.as_str();
        assert!(text.starts_with('+'), "{text:?}");
        assert!((3..=16).contains(&text.len()), "{text:?}");
        assert!(text[1..].bytes().all(|b| b.is_ascii_digit()), "{text:?}");
        assert_eq!(
            normalizer.phone(text).expect("E.164 re-parses").as_ref(),
            Some(p)
        );
    }
}

fn json_str(s: Option<&str>) -> String {
    match s {
        None => "null".to_owned(),
        Some(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (d) Row import
// ---------------------------------------------------------------------------------------------

/// Target (d): CSV / JSON Lines import.
///
/// Input layout: `[mode, file...]`; `mode & 1` picks CSV or JSONL.
///
/// Properties: `read_rows` never panics; Ok rows have positive ids, at least one contact value,
/// normalized values, and lines within the file; `write_rows` of them reads back to the same
/// rows (lines aside); `plan_import` returns Ok or `Invalid` at a line of the file; an Ok plan
/// has one contact per row, ids strictly increasing, every link to a smaller id in the plan,
/// `identities <= rows`, and its events apply to an empty graph without error.
pub fn import_rows(data: &[u8]) {
    let [mode, file @ ..] = data else {
        return;
    };
    let format = if mode & 1 == 0 {
        RowFormat::Csv
    } else {
        RowFormat::Jsonl
    };
    let max_line = file.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let rows = match rows::read_rows(file, format) {
        Ok(rows) => rows,
        Err(ImportError::Invalid { line, message }) => {
            assert!(
                line <= max_line + 1,
                "line {line} beyond the file ({max_line}): {message}"
            );
            return;
        }
        Err(e @ ImportError::Io { .. }) => panic!("I/O error reading a byte slice: {e}"),
    };
    for row in &rows {
        assert!(row.id > 0);
        assert!(row.line >= 1 && row.line <= max_line);
        assert!(row.email.is_some() || row.phone.is_some());
        if let Some(e) = &row.email {
            check_email(e);
        }
        if let Some(p) = &row.phone {
            check_phone(p);
        }
        assert_ne!(row.linked_id, Some(0));
    }
    // Round trip through the writer, in both formats.
    for out_format in [RowFormat::Csv, RowFormat::Jsonl] {
        let mut out = Vec::new();
        rows::write_rows(
            &mut out,
            out_format,
            rows.iter().map(|r| r.to_contact_row()),
        )
        .unwrap();
        let back = rows::read_rows(out.as_slice(), out_format).expect("written rows read back");
        assert_eq!(back.len(), rows.len());
        for (a, b) in rows.iter().zip(&back) {
            assert_eq!(a.to_contact_row(), b.to_contact_row());
        }
    }

    let n = rows.len();
    let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
    match rows::plan_import(rows, Timestamp(1_700_000_000_000)) {
        Ok(plan) => {
            assert_eq!(plan.rows, n);
            assert_eq!(plan.contacts.len(), n);
            assert!(plan.identities <= n && (n == 0 || plan.identities >= 1));
            assert!(plan.primaries_changed <= n);
            assert!(plan.contacts.windows(2).all(|w| w[0].id < w[1].id));
            let ids: std::collections::HashSet<u64> = plan.contacts.iter().map(|c| c.id).collect();
            for c in &plan.contacts {
                if let Some(l) = c.link {
                    assert!(l < c.id && ids.contains(&l), "bad link {l} of {}", c.id);
                }
            }
            let mut graph = IdentityGraph::new();
            for c in plan.contacts {
                let id = c.id;
                graph
                    .apply(&Event::ContactInserted(c))
                    .unwrap_or_else(|e| panic!("planned contact {id} does not apply: {e}"));
            }
            assert_eq!(graph.len(), n);
        }
        Err(ImportError::Invalid { line, .. }) => assert!(lines.contains(&line)),
        Err(e) => panic!("plan_import: unexpected error {e}"),
    }
}
