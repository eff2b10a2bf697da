//! Heap held per registered endpoint (SPEC §7 P4): registers N wakaama-style devices on one
//! shard, as `loadgen register-storm` does, and reports the live heap bytes per endpoint.
//!
//! `cargo run --release --example register_memory -- [devices]` (default 500000, one
//! shard's share of 1 M endpoints on two shards). Bytes are counted as requested from the
//! allocator plus its per-chunk overhead (glibc: 8 bytes, 16-byte granularity, 32 minimum).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use lwm2m_gateway::coap::{option, Code, MessageType, MessageWriter};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::session::{Shard, ShardConfig};

const OBJECTS: &[u8] = b"</>;rt=\"oma.lwm2m\";ct=110,</1>;ver=1.1,</1/0>,</2/0>,</3/0>,</4/0>,</5/0>,</6/0>,</7/0>,</31024>;ver=1.0,</31024/10>,</31024/11>,</31024/12>";

/// Live heap bytes, allocator chunk overhead included.
static LIVE: AtomicI64 = AtomicI64::new(0);
/// Live heap allocations.
static CHUNKS: AtomicI64 = AtomicI64::new(0);

/// Size of the malloc chunk that serves a request of `size` bytes.
fn chunk(size: usize) -> i64 {
    ((size + 8).max(32).div_ceil(16) * 16) as i64
}

struct CountingAlloc;

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        CHUNKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        CHUNKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(chunk(new_size) - chunk(layout.size()), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn register(i: u32, buf: &mut Vec<u8>) {
    buf.clear();
    let ep = format!("ep=loadgen-{i}");
    let mut w = MessageWriter::new(
        buf,
        MessageType::Con,
        Code::POST,
        i as u16,
        &i.to_be_bytes(),
    );
    w.option(option::URI_PATH, b"rd")
        .uint_option(option::CONTENT_FORMAT, 40)
        .option(option::URI_QUERY, b"lwm2m=1.1")
        .option(option::URI_QUERY, ep.as_bytes())
        .option(option::URI_QUERY, b"b=U")
        .option(option::URI_QUERY, b"lt=3600")
        .payload(OBJECTS);
    w.finish();
}

fn addr(i: u32) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(0x7f00_0001 + (i >> 14))),
        10_000 + (i & 0x3fff) as u16,
    )
}

fn live() -> (i64, i64) {
    (LIVE.load(Ordering::Relaxed), CHUNKS.load(Ordering::Relaxed))
}

fn main() {
    let devices: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("device count"))
        .unwrap_or(500_000);
    let mut config = Config::default_config();
    config.gateway.shards = 1;
    config.udp.max_conn_rate = u32::MAX / 2;
    config.udp.max_connections = 100_000_000;
    let registry = lwm2m_gateway::lwm2m::Registry::load_dir(std::path::Path::new("lwm2m_xml"))
        .expect("lwm2m_xml loads");
    let start = Instant::now();
    let mut shard = Shard::new(
        ShardConfig::new(&config, 0, std::sync::Arc::new(registry)),
        start,
        1,
    );
    let (base, base_chunks) = live();
    let mut buf = Vec::new();
    let began = Instant::now();
    for i in 0..devices {
        // 25 k registrations per second, as the register-storm runs.
        let now = start + Duration::from_micros(u64::from(i) * 40);
        register(i, &mut buf);
        shard.handle_datagram(now, addr(i), &buf);
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
    let (bytes, chunks) = live();
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
