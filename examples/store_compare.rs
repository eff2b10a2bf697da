//! The measurement behind persisting registrations in an append-only journal rather than
//! an embedded store: the same records written in the same batches (one per flush interval
//! of a 25 k/s register storm) and read back at start, through the gateway's journal and
//! through redb (a copy-on-write B-tree, durable commit per batch).
//!
//! ```sh
//! cargo run --release --features store-compare --example store_compare -- 1000000 /tmp/stores
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use lwm2m_gateway::lwm2m::{ObjectLink, ObjectList};
use lwm2m_gateway::persist::{self, JournalWriter, Record, StoredEndpoint};
use redb::{Database, ReadableTable, TableDefinition};

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("registrations");

/// Registrations per write batch: one flush interval of a 25 k/s storm.
const BATCH: usize = 25_000;

fn record(i: u64, list: &Arc<ObjectList>) -> Vec<u8> {
    let e = StoredEndpoint {
        key: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        home: (i % 2) as u8,
        generation: 1,
        ep: format!("urn:imei:{:015}", 350_000_000_000_000 + i),
        addr: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5683)),
        registered_unix: 1_800_000_000,
        expires_unix: 1_800_086_400,
        lifetime: 86_400,
        version: "1.1".into(),
        binding: "U".into(),
        params: Vec::new(),
        object_list: Some(Arc::clone(list)),
        observations: Vec::new(),
    };
    let mut out = Vec::new();
    Record::Endpoint(Box::new(e)).encode(&mut out);
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = Path::new(args.get(2).map_or("/tmp/stores", String::as_str));
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("dir");
    let list = Arc::new(ObjectList {
        alternate_path: "/".into(),
        content_formats: vec![110],
        links: [
            "/1/0",
            "/2/0",
            "/3/0",
            "/4/0",
            "/5/0",
            "/6/0",
            "/7/0",
            "/31024/10",
        ]
        .iter()
        .map(|p| ObjectLink {
            path: (*p).into(),
            version: None,
        })
        .collect(),
        pins: Box::default(),
    });
    let records: Vec<Vec<u8>> = (0..n).map(|i| record(i, &list)).collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    println!("{n} records, {} B each", bytes / n as usize);

    // The journal: batches appended and synced by the writer thread.
    let jdir = dir.join("journal");
    let t = Instant::now();
    let writer = JournalWriter::start(persist::load(&jdir).expect("empty")).expect("writer");
    let sender = writer.sender();
    for chunk in records.chunks(BATCH) {
        sender.append(chunk.concat());
    }
    writer.stop();
    let write_journal = t.elapsed();
    let t = Instant::now();
    let loaded = persist::load(&jdir).expect("loads");
    assert_eq!(loaded.merge.len() as u64, n);
    let read_journal = t.elapsed();
    let journal_size = std::fs::metadata(jdir.join("snapshot")).map_or(0, |m| m.len());
    drop(loaded);

    // redb: one durable write transaction per batch, keyed by location key.
    let path = dir.join("redb");
    let t = Instant::now();
    let db = Database::create(&path).expect("redb");
    for (c, chunk) in records.chunks(BATCH).enumerate() {
        let tx = db.begin_write().expect("tx");
        {
            let mut table = tx.open_table(TABLE).expect("table");
            for (j, r) in chunk.iter().enumerate() {
                let key = ((c * BATCH + j) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                table.insert(key, r.as_slice()).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let write_redb = t.elapsed();
    drop(db);
    let t = Instant::now();
    let db = Database::open(&path).expect("open");
    let tx = db.begin_read().expect("read");
    let table = tx.open_table(TABLE).expect("table");
    let mut merge = persist::Merge::new();
    // Decoded exactly as the journal's loader does, object lists shared.
    let mut lists = persist::record::ListCache::default();
    for row in table.iter().expect("iter") {
        let (_, v) = row.expect("row");
        let frame = v.value();
        let record = persist::record::decode_payload_shared(frame[3], &frame[12..], &mut lists);
        merge.apply(record.expect("decodes"));
    }
    assert_eq!(merge.len() as u64, n);
    let read_redb = t.elapsed();
    let redb_size = std::fs::metadata(&path).map_or(0, |m| m.len());

    println!(
        "journal: write {:.2} s ({:.0}/s) incl. compaction at stop, restore-read {:.2} s, {:.0} MiB on disk",
        write_journal.as_secs_f64(),
        n as f64 / write_journal.as_secs_f64(),
        read_journal.as_secs_f64(),
        journal_size as f64 / 1048576.0
    );
    println!(
        "redb:    write {:.2} s ({:.0}/s), restore-read {:.2} s, {:.0} MiB on disk",
        write_redb.as_secs_f64(),
        n as f64 / write_redb.as_secs_f64(),
        read_redb.as_secs_f64(),
        redb_size as f64 / 1048576.0
    );
}
