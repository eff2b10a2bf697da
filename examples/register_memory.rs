//! Heap held per registered endpoint (SPEC §7 P4): registers N wakaama-style devices on one
//! shard, as `loadgen register-storm` does, and reports the live heap bytes per endpoint.
//!
//! `cargo run --release --example register_memory -- [devices]` (default 500000, one
//! shard's share of 1 M endpoints on two shards). Bytes are counted as requested from the
//! allocator plus its per-chunk overhead (glibc: 8 bytes, 16-byte granularity, 32 minimum),
//! the shard's tables (sized for the device count) included.

use std::time::{Duration, Instant};

use lwm2m_gateway::config::Config;
use lwm2m_gateway::session::{Shard, ShardConfig};

#[path = "../benches/support/mod.rs"]
mod support;

#[global_allocator]
static GLOBAL: support::CountingAlloc = support::CountingAlloc;

fn main() {
    let devices: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("device count"))
        .unwrap_or(500_000);
    let mut config = Config::default_config();
    config.gateway.shards = 1;
    config.udp.max_conn_rate = u32::MAX / 2;
    // Tables are sized for max_connections up front: size them for exactly this count and
    // count them (the baseline is taken before the shard exists).
    config.udp.max_connections = devices as usize;
    let registry = lwm2m_gateway::lwm2m::Registry::load_dir(std::path::Path::new("lwm2m_xml"))
        .expect("lwm2m_xml loads");
    let start = Instant::now();
    let (base, base_chunks) = support::live();
    let mut shard = Shard::new(
        ShardConfig::new(&config, 0, std::sync::Arc::new(registry)),
        start,
        1,
    );
    let mut buf = Vec::new();
    let began = Instant::now();
    for i in 0..devices {
        // 25 k registrations per second, as the register-storm runs.
        let now = start + Duration::from_micros(u64::from(i) * 40);
        support::register(i, 3600, &mut buf);
        shard.handle_datagram(now, support::addr(i), &buf);
        shard.drain_transmits(|_, d| {
            std::hint::black_box(d);
        });
        while let Some(p) = shard.poll_publish() {
            std::hint::black_box(p);
        }
        shard.handle_timeout(now);
    }
    let took = began.elapsed();
    assert_eq!(
        shard.registered(),
        devices as usize,
        "every device registered"
    );
    let (bytes, chunks) = support::live();
    let (bytes, chunks) = (bytes - base, chunks - base_chunks);
    let n = f64::from(devices);
    println!(
        "{devices} endpoints: {:.1} MiB live heap, {:.0} B and {:.1} allocations per endpoint, {:.2} µs per Register",
        bytes as f64 / f64::from(1 << 20),
        bytes as f64 / n,
        chunks as f64 / n,
        took.as_secs_f64() * 1e6 / n,
    );
}
