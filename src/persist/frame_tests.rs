//! The frame reader over damaged input: torn tails, flipped bytes, garbage, lies about
//! sizes, and a newer format.

use super::*;
use crate::persist::record::encode_removed;
use crate::persist::record::tests::{encode_all, records, scan_all};

#[test]
fn a_torn_tail_loses_only_the_unfinished_record() {
    let records = records();
    let bytes = encode_all(&records);
    let last_start = encode_all(&records[..2]).len();
    for cut in last_start..bytes.len() {
        let (got, report) = scan_all(&bytes[..cut]);
        assert_eq!(got, records[..2], "cut at {cut}");
        assert_eq!(report.records, 2);
        assert_eq!(report.corrupt, 0, "cut at {cut}");
        assert_eq!(report.torn_tail, cut - last_start, "cut at {cut}");
    }
}

#[test]
fn a_corrupted_record_is_skipped_and_the_rest_kept() {
    let records = records();
    let bytes = encode_all(&records);
    let first_len = encode_all(&records[..1]).len();
    // Flip one byte anywhere in the first record: header, length, checksum or payload.
    for at in 0..first_len {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        let (got, report) = scan_all(&damaged);
        assert_eq!(got, records[1..], "byte {at} flipped");
        assert_eq!(report.corrupt, 1, "byte {at} flipped");
        assert_eq!(report.corrupt_bytes, first_len, "byte {at} flipped");
        assert_eq!(report.torn_tail, 0);
    }
    // Garbage between records.
    let mut spliced = encode_all(&records[..1]);
    spliced.extend_from_slice(b"LW\x01garbage LW LW\x00\x00");
    spliced.extend_from_slice(&encode_all(&records[1..]));
    let (got, report) = scan_all(&spliced);
    assert_eq!(got, records);
    assert_eq!(report.corrupt, 1);
}

#[test]
fn a_record_of_a_newer_format_is_refused() {
    let mut bytes = encode_all(&records());
    let mut newer = Vec::new();
    encode_removed(&mut newer, 1, 1, 1);
    newer[2] = FORMAT_VERSION + 1;
    // Re-seal it so only the version differs from a valid frame.
    let crc = {
        let mut h = crc32fast::Hasher::new();
        h.update(&newer[2..8]);
        h.update(&newer[HEADER_LEN..]);
        h.finalize()
    };
    newer[8..12].copy_from_slice(&crc.to_le_bytes());
    let offset = bytes.len();
    bytes.extend_from_slice(&newer);
    let err = scan(&bytes, |_| {}).expect_err("refused");
    assert_eq!(
        err,
        NewerFormat {
            offset,
            found: FORMAT_VERSION + 1
        }
    );
    assert!(err.to_string().contains("format 2"), "{err}");
}

#[test]
fn payloads_that_lie_about_their_sizes_are_corrupt_not_fatal() {
    // A frame whose payload claims a 4 GiB string: framed and sealed, but undecodable.
    let mut payload = Vec::new();
    payload.extend_from_slice(&1u64.to_le_bytes());
    payload.push(0);
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut frame = b"LW\x01\x01".to_vec();
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&frame[2..8]);
    h.update(&payload);
    frame.extend_from_slice(&h.finalize().to_le_bytes());
    frame.extend_from_slice(&payload);
    let (got, report) = scan_all(&frame);
    assert!(got.is_empty());
    assert_eq!((report.records, report.corrupt), (0, 1));
}
