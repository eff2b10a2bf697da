//! What a client listing costs the shard serving it (issue #11: "a 1 M-client listing
//! pages without stalling a shard"): registers N devices on one shard (default 500 000,
//! one shard's share of 1 M on two shards), then pages through all of them 1000 at a time
//! exactly as the shard's control task does — one budget of name-index buckets per turn,
//! the datagram loop running between turns — and reports the longest turn (the longest the
//! shard's datagram pipeline can wait behind a listing), the time per page, and a filtered
//! count over every endpoint.
//!
//! `cargo run --release --example list_clients -- [devices]`

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lwm2m_gateway::config::Config;
use lwm2m_gateway::session::{ClientCursor, ClientFilter, ListStep, Shard, ShardConfig};

#[path = "../benches/support/mod.rs"]
mod support;

/// The control task's budget of buckets per turn (`runtime/driver.rs`, `LIST_BUDGET`).
const BUDGET: usize = 16 * 1024;

/// Clients per page, the API's maximum.
const LIMIT: usize = 1000;

fn addr(i: u32) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(0x7f00_0001 + (i >> 14))),
        10_000 + (i & 0x3fff) as u16,
    )
}

fn main() {
    let devices: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("device count"))
        .unwrap_or(500_000);
    let mut config = Config::default_config();
    config.gateway.shards = 2;
    config.udp.max_conn_rate = u32::MAX / 2;
    let registry = lwm2m_gateway::lwm2m::Registry::load_dir(std::path::Path::new("lwm2m_xml"))
        .expect("lwm2m_xml loads");
    let start = Instant::now();
    let mut shard = Shard::new(
        ShardConfig::new(&config, 0, std::sync::Arc::new(registry)),
        start,
        1,
    );
    let mut buf = Vec::new();
    for i in 0..devices {
        let now = start + Duration::from_micros(u64::from(i) * 40);
        support::register(i, 86_400, &mut buf);
        shard.handle_datagram(now, addr(i), &buf);
        shard.drain_transmits(|_, d| {
            std::hint::black_box(d);
        });
        while shard.poll_publish().is_some() {}
    }
    assert_eq!(shard.registered(), devices as usize);
    let now = start + Duration::from_secs(60);

    // Page through everything, one budget per turn.
    let filter = ClientFilter::default();
    let (mut turns, mut longest, mut pages, mut listed) = (0u64, Duration::ZERO, 0u64, 0usize);
    let mut page_times = Vec::new();
    let mut cursor = Some(ClientCursor::default());
    let began = Instant::now();
    while let Some(mut at) = cursor.take() {
        let page_began = Instant::now();
        let mut items = Vec::with_capacity(LIMIT);
        loop {
            let t = Instant::now();
            let step = shard.list_clients(now, &filter, at, LIMIT, BUDGET, &mut items);
            let took = t.elapsed();
            turns += 1;
            longest = longest.max(took);
            match step {
                ListStep::Full(next) => {
                    cursor = Some(next);
                    break;
                }
                ListStep::End => break,
                ListStep::Paused(next) => at = next,
            }
        }
        listed += items.len();
        pages += 1;
        page_times.push(page_began.elapsed());
        std::hint::black_box(items);
    }
    let all = began.elapsed();
    assert_eq!(listed, devices as usize, "every client listed once");
    page_times.sort();
    let pct = |p: f64| page_times[((page_times.len() - 1) as f64 * p) as usize];

    // A filtered count over every endpoint, one budget per turn.
    let like = ClientFilter {
        like: Some("-4242".into()),
        ..ClientFilter::default()
    };
    let (mut count, mut from, mut count_longest) = (0, Some(0), Duration::ZERO);
    let count_began = Instant::now();
    while let Some(at) = from {
        let t = Instant::now();
        let (n, next) = shard.count_clients(&like, at, BUDGET);
        count_longest = count_longest.max(t.elapsed());
        count += n;
        from = next;
    }
    let count_all = count_began.elapsed();
    println!(
        "{devices} endpoints on one shard: {pages} pages of {LIMIT} in {:.0} ms ({turns} turns); \
         page p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; longest turn {:.0} µs",
        all.as_secs_f64() * 1e3,
        pct(0.5).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        pct(1.0).as_secs_f64() * 1e6,
        longest.as_secs_f64() * 1e6,
    );
    println!(
        "filtered count (like, {count} matches): {:.0} ms in all, longest turn {:.0} µs",
        count_all.as_secs_f64() * 1e3,
        count_longest.as_secs_f64() * 1e6,
    );
}
