//! Heap held per endpoint another node holds (cluster mode, README "Several nodes"): feeds
//! N presence records of four other nodes to one sans-IO shard, as the retained replay after
//! a subscribe does, and reports the live heap bytes per remembered endpoint and the time
//! per record.
//!
//! `cargo run --release --example presence_memory -- [records]` (default 1000000). Names
//! are IMEI URNs (`urn:imei:` + 15 digits, 24 bytes). Bytes are counted as requested from
//! the allocator plus its per-chunk overhead (glibc: 8 bytes, 16-byte granularity, 32
//! minimum).

use std::time::Instant;

use lwm2m_gateway::config::Config;
use lwm2m_gateway::session::{presence_bucket, Shard, ShardConfig};

#[path = "../benches/support/mod.rs"]
mod support;

#[global_allocator]
static GLOBAL: support::CountingAlloc = support::CountingAlloc;

const PREFIX: &str = "lwm2m-cluster";
const NODES: [&str; 4] = ["gw-b", "gw-c", "gw-d", "gw-e"];

fn main() {
    let records: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("record count"))
        .unwrap_or(1_000_000);
    let mut config = Config::default_config();
    config.gateway.shards = 1;
    config.udp.max_connections = 1024;
    let registry = lwm2m_gateway::lwm2m::Registry::load_dir(std::path::Path::new("lwm2m_xml"))
        .expect("lwm2m_xml loads");
    let start = Instant::now();
    let mut shard = Shard::new(
        ShardConfig::new(&config, 0, std::sync::Arc::new(registry)),
        start,
        1,
    );
    shard.enable_cluster("gw-a", PREFIX, 1_700_000_000_000);
    shard.handle_broker_connected(start);
    shard.drain_retained(|_, _| {});
    let (base, base_chunks) = support::live();
    let (mut topic, mut payload) = (String::new(), String::new());
    let began = Instant::now();
    for i in 0..records {
        use std::fmt::Write;
        let ep = format!("urn:imei:{:015}", 350_000_000_000_000u64 + u64::from(i));
        topic.clear();
        let _ = write!(topic, "{PREFIX}/presence/{}/{ep}", presence_bucket(&ep));
        payload.clear();
        let node = NODES[i as usize % NODES.len()];
        let _ = write!(
            payload,
            r#"{{"node":"{node}","registered":{}}}"#,
            1_700_000_000_000u64 + u64::from(i)
        );
        shard.handle_command(start, &topic, payload.as_bytes());
    }
    let took = began.elapsed();
    let stats = shard.cluster_stats().expect("cluster mode");
    assert_eq!(
        stats.remote_endpoints,
        u64::from(records),
        "every record remembered"
    );
    let (bytes, chunks) = support::live();
    let (bytes, chunks) = (bytes - base, chunks - base_chunks);
    let n = f64::from(records);
    println!(
        "{records} remote endpoints: {:.1} MiB live heap, {:.0} B and {:.1} allocations per endpoint, {:.2} µs per record",
        bytes as f64 / f64::from(1 << 20),
        bytes as f64 / n,
        chunks as f64 / n,
        took.as_secs_f64() * 1e6 / n,
    );
}
