//! The journal directory on a real file system: load, lock, damage, compaction.

use std::path::PathBuf;

use super::*;
use crate::persist::record::tests::endpoint;
use crate::persist::Record;

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lwm2m-gw-journal-{test}-{}-{}",
        std::process::id(),
        unix_now()
    ));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn live_keys(loaded: Loaded) -> Vec<(u64, u32)> {
    let mut keys: Vec<(u64, u32)> = loaded
        .merge
        .into_live()
        .map(|e| (e.key, e.generation))
        .collect();
    keys.sort();
    keys
}

fn bytes_of(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.encode(&mut out);
    }
    out
}

#[test]
fn merge_keeps_the_highest_generation_in_any_order() {
    let records = [
        Record::Endpoint(Box::new(endpoint(1, 1, "a"))),
        Record::Endpoint(Box::new(endpoint(1, 3, "a"))),
        Record::Endpoint(Box::new(endpoint(2, 1, "b"))),
        Record::Removed {
            key: 2,
            generation: 2,
            at_unix: unix_now(),
        },
        Record::Endpoint(Box::new(endpoint(3, 5, "c"))),
    ];
    // Every rotation of the order, as shards' buffers may interleave.
    for shift in 0..records.len() {
        let mut merge = Merge::new();
        for r in records.iter().cycle().skip(shift).take(records.len()) {
            merge.apply(r.clone());
        }
        let mut live: Vec<(u64, u32)> = merge.into_live().map(|e| (e.key, e.generation)).collect();
        live.sort();
        assert_eq!(live, vec![(1, 3), (3, 5)], "rotation {shift}");
    }
}

#[test]
fn load_keeps_intact_records_of_damaged_files_and_locks_the_directory() {
    let dir = temp_dir("load");
    fs::create_dir_all(&dir).expect("dir");
    let mut snapshot = bytes_of(&[
        Record::Endpoint(Box::new(endpoint(1, 1, "a"))),
        Record::Endpoint(Box::new(endpoint(2, 1, "b"))),
        Record::Endpoint(Box::new(endpoint(5, 1, "e"))),
    ]);
    // A damaged byte inside the second record of the snapshot.
    let first = bytes_of(&[Record::Endpoint(Box::new(endpoint(1, 1, "a")))]).len();
    snapshot[first + 20] ^= 0xff;
    fs::write(dir.join(SNAPSHOT), &snapshot).expect("write");
    let mut segment = bytes_of(&[
        Record::Endpoint(Box::new(endpoint(3, 1, "c"))),
        Record::Endpoint(Box::new(endpoint(1, 2, "a"))),
    ]);
    // A torn last write.
    let torn = bytes_of(&[Record::Endpoint(Box::new(endpoint(4, 1, "d")))]);
    segment.extend_from_slice(&torn[..torn.len() / 2]);
    fs::write(dir.join("journal-00000003"), &segment).expect("write");
    fs::write(dir.join(SNAPSHOT_TMP), b"half a compaction").expect("write");

    let loaded = load(&dir).expect("loads");
    assert_eq!(loaded.report.records, 4);
    assert_eq!(loaded.report.corrupt, 1);
    assert_eq!(loaded.report.torn_tail, torn.len() / 2);
    assert_eq!(loaded.next_segment, 4);
    assert!(
        !dir.join(SNAPSHOT_TMP).exists(),
        "an unfinished compaction is discarded"
    );

    // A second gateway on the same directory is refused, naming the holder.
    let err = load(&dir).expect_err("locked");
    assert!(
        err.to_string()
            .contains("in use by another running gateway"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );

    assert_eq!(live_keys(loaded), vec![(1, 2), (3, 1), (5, 1)]);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_newer_format_refuses_to_start() {
    let dir = temp_dir("newer");
    fs::create_dir_all(&dir).expect("dir");
    let mut frame = Vec::new();
    crate::persist::encode_removed(&mut frame, 1, 1, 1);
    frame[2] = FORMAT_VERSION + 1;
    let mut h = crc32fast::Hasher::new();
    h.update(&frame[2..8]);
    h.update(&frame[12..]);
    let crc = h.finalize();
    frame[8..12].copy_from_slice(&crc.to_le_bytes());
    fs::write(dir.join("journal-00000000"), &frame).expect("write");
    let err = load(&dir).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("journal-00000000"), "{text}");
    assert!(text.contains("format 2"), "{text}");
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn writer_appends_and_compaction_folds_everything_into_the_snapshot() {
    let dir = temp_dir("compact");
    let writer = JournalWriter::start(load(&dir).expect("empty dir loads")).expect("writer");
    let sender = writer.sender();
    let now = unix_now();
    sender.append(bytes_of(&[
        Record::Endpoint(Box::new(endpoint(1, 1, "a"))),
        Record::Endpoint(Box::new(endpoint(2, 1, "b"))),
        Record::Endpoint(Box::new(endpoint(3, 1, "c"))),
    ]));
    sender.append(bytes_of(&[
        Record::Endpoint(Box::new(endpoint(1, 2, "a"))),
        Record::Removed {
            key: 2,
            generation: 2,
            at_unix: now,
        },
        // A tombstone old enough to be forgotten.
        Record::Removed {
            key: 9,
            generation: 4,
            at_unix: now - 2 * super::super::restore::TOMBSTONE_RETENTION_SECS,
        },
    ]));
    writer.stop();

    let names: Vec<String> = fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK)
        .collect();
    assert_eq!(
        names,
        vec![SNAPSHOT.to_owned()],
        "one file after a clean stop"
    );
    let loaded = load(&dir).expect("loads");
    assert_eq!(loaded.merge.tombstones(), 1, "the recent tombstone is kept");
    assert_eq!(live_keys(loaded), vec![(1, 2), (3, 1)]);
    fs::remove_dir_all(&dir).expect("cleanup");
}
