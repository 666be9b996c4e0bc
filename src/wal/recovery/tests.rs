//! Unit tests of `wal::recovery`.

use super::*;
use crate::wal::format::test_frames::{frame, segment};

fn corrupt_offset(result: Result<SegmentScan, WalError>) -> u64 {
    match result {
        Err(WalError::Corrupt { offset, .. }) => offset,
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got Ok"),
    }
}

#[test]
fn valid_record_after_finds_misaligned_records_and_ignores_noise() {
    let (mut data, offsets) = segment(1, &[b"aaaa", b"bbbb", b"cccc"]);
    // Record 2 damaged: record 3 (LSN 3) is found after it.
    data[offsets[1] + 17] ^= 1;
    assert_eq!(valid_record_after(&data, offsets[1], 1), Some(offsets[2]));
    // LSNs at or below last_good do not count (a stale copy is not "later").
    assert_eq!(valid_record_after(&data, offsets[1], 3), None);
    // A record placed at an odd offset inside garbage is still found.
    let mut noisy = encode_header(1).to_vec();
    noisy.extend([0xFF, 0x13, 0x00]);
    noisy.extend(frame(1, b"x"));
    assert_eq!(
        valid_record_after(&noisy, HEADER_LEN, 0),
        Some(HEADER_LEN + 3)
    );
    // Zeros and short tails hold nothing.
    let mut zeros = encode_header(1).to_vec();
    zeros.extend([0u8; 100]);
    assert_eq!(valid_record_after(&zeros, HEADER_LEN, 0), None);
    assert_eq!(valid_record_after(&zeros[..30], HEADER_LEN, 0), None);
}

#[test]
fn scan_segment_tells_torn_tail_from_corruption() {
    let p = Path::new("/x/00000000000000000005.wal");
    let (data, offsets) = segment(5, &[b"one", b"two", b"three"]);
    let ok = scan_segment(p, 5, &data, Position::Newest).unwrap();
    assert_eq!((ok.valid_end, ok.next_lsn), (data.len(), 8));
    assert!(matches!(ok.end, SegmentEnd::Clean));

    // Incomplete last record: torn in the newest segment, corrupt in an older one.
    let cut = &data[..data.len() - 1];
    let torn = scan_segment(p, 5, cut, Position::Newest).unwrap();
    assert!(matches!(torn.end, SegmentEnd::TornTail(o) if o == offsets[2]));
    assert_eq!(torn.next_lsn, 7);
    assert_eq!(
        corrupt_offset(scan_segment(p, 5, cut, Position::Older)),
        offsets[2] as u64
    );

    // Damage followed by a valid record: corrupt even in the newest segment.
    let mut mid = data.clone();
    mid[offsets[1] + 5] ^= 0x10;
    assert_eq!(
        corrupt_offset(scan_segment(p, 5, &mid, Position::Newest)),
        offsets[1] as u64
    );

    // A valid record with the wrong LSN is corruption when followed by valid records.
    let mut skipped = encode_header(5).to_vec();
    skipped.extend(frame(5, b"a"));
    let bad_at = skipped.len();
    skipped.extend(frame(9, b"b"));
    skipped.extend(frame(6, b"c"));
    assert_eq!(
        corrupt_offset(scan_segment(p, 5, &skipped, Position::Newest)),
        bad_at as u64
    );

    // Header: short or all zeros in the newest segment is torn; otherwise corrupt at 0.
    assert!(matches!(
        scan_segment(p, 5, &data[..10], Position::Newest)
            .unwrap()
            .end,
        SegmentEnd::TornHeader
    ));
    assert!(matches!(
        scan_segment(p, 5, &[0u8; 64], Position::Newest)
            .unwrap()
            .end,
        SegmentEnd::TornHeader
    ));
    assert_eq!(
        corrupt_offset(scan_segment(p, 5, &data[..10], Position::Older)),
        0
    );
    // A segment the head file records as started keeps its header: a header cut short or
    // zeroed is corruption there, while a torn tail of records is still cut.
    for damaged in [&data[..0], &data[..10], &[0u8; 64][..]] {
        assert_eq!(
            corrupt_offset(scan_segment(p, 5, damaged, Position::NewestStarted)),
            0
        );
    }
    assert!(matches!(
        scan_segment(p, 5, cut, Position::NewestStarted).unwrap().end,
        SegmentEnd::TornTail(o) if o == offsets[2]
    ));
    assert_eq!(
        corrupt_offset(scan_segment(p, 4, &data, Position::Newest)),
        0
    );
    let mut bad_magic = data.clone();
    bad_magic[0] = b'X';
    assert_eq!(
        corrupt_offset(scan_segment(p, 5, &bad_magic, Position::Newest)),
        0
    );
}

#[test]
fn scanning_arbitrary_bytes_never_panics() {
    // Deterministic xorshift noise after a valid header, at many lengths.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut noise = Vec::new();
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push(x as u8);
    }
    let p = Path::new("/x/00000000000000000001.wal");
    for len in (0..noise.len()).step_by(37) {
        let mut data = encode_header(1).to_vec();
        data.extend(&noise[..len]);
        for position in [Position::Older, Position::NewestStarted, Position::Newest] {
            let _ = scan_segment(p, 1, &data, position);
            let _ = scan_segment(p, u64::MAX, &data, position);
        }
        let _ = scan_segment(p, 1, &noise[..len], Position::Newest);
    }
}
